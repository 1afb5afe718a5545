//! Which endpoint a try goes to: by the table on a first try, away from what failed on a retry.

use std::borrow::Cow;

use crate::load::{choose_priority, retry_load, PriorityLoad};
use crate::table::{self, Table};
use crate::topology::Endpoint;

/// What a request has tried so far: the priorities and the hosts.
#[derive(Clone, Debug, Default)]
pub struct Tried {
    /// One bit per priority below 64; a priority past that is never marked, which only makes a
    /// retry there look untried.
    priorities: u64,
    /// The first try's endpoint, apart, so a request that needs no retry allocates nothing.
    first: Option<usize>,
    retries: Vec<usize>,
}

impl Tried {
    /// Notes a try to `endpoint`, at `priority`.
    #[inline]
    pub fn record(&mut self, endpoint: usize, priority: usize) {
        if priority < 64 {
            self.priorities |= 1 << priority;
        }
        if self.first.is_none() {
            self.first = Some(endpoint);
        } else {
            self.retries.push(endpoint);
        }
    }

    #[inline]
    pub fn attempts(&self) -> usize {
        usize::from(self.first.is_some()) + self.retries.len()
    }

    /// Whether a try already went to `priority`.
    #[inline]
    pub fn has_priority(&self, priority: usize) -> bool {
        priority < 64 && self.priorities & (1 << priority) != 0
    }

    #[inline]
    pub fn contains(&self, endpoint: usize) -> bool {
        self.first == Some(endpoint) || self.retries.contains(&endpoint)
    }
}

/// A destination's pick weights, built once per table: what every try reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Picks {
    /// (endpoint, cumulative share) over every endpoint with a share: a first try's pick is a
    /// binary search.
    first: Vec<(usize, f64)>,
    /// Per priority: (endpoint, share of that priority) for retries moving there.
    levels: Vec<Vec<(usize, f64)>>,
}

impl Picks {
    /// The weights of `table`, built over `endpoints` (those the table was built from).
    pub fn new(table: &Table, endpoints: &[Endpoint]) -> Picks {
        let mut first = Vec::new();
        let mut acc = 0.0;
        for p in &table.placements {
            if p.share_percent > 0.0 {
                acc += p.share_percent;
                first.push((p.endpoint, acc));
            }
        }
        let levels = (0..table.levels).map(|lvl| table::level_shares(table, endpoints, lvl)).collect();
        Picks { first, levels }
    }

    /// Picks an endpoint of `table` (the table these picks were built from): by the table on a
    /// first try; on a retry, away from the hosts already tried, and, with `other_priorities`,
    /// from the priorities already tried (Envoy's previous_hosts and previous_priorities).
    /// `rand_u64` chooses the priority and `rand_f64` (uniform in `[0, 1)`) the endpoint in it.
    /// `None`: nothing to pick.
    #[inline]
    pub fn pick(&self, table: &Table, tried: &Tried, other_priorities: bool, rand_u64: u64, rand_f64: f64) -> Option<usize> {
        if tried.attempts() == 0 {
            return pick_cumulative(&self.first, rand_f64);
        }
        self.pick_retry(table, tried, other_priorities, rand_u64, rand_f64)
    }

    fn pick_retry(&self, table: &Table, tried: &Tried, other_priorities: bool, rand_u64: u64, rand_f64: f64) -> Option<usize> {
        let load = if other_priorities { Cow::Owned(load_without(table, tried.priorities)) } else { Cow::Borrowed(&table.load) };
        if load.no_healthy {
            // Nothing healthy anywhere: any host not tried yet, in priority order.
            return self.levels.iter().flatten().find(|(e, _)| !tried.contains(*e)).map(|(e, _)| *e);
        }
        let (level, _) = choose_priority(&load, rand_u64);
        let picks = self.levels.get(level)?;
        pick_weighted(picks, rand_f64, |e| !tried.contains(e)).or_else(|| pick_weighted(picks, rand_f64, |_| true))
    }
}

/// Envoy previous_priorities ([`retry_load`]): tried priorities lose their availability and the
/// load is spread again over the rest, with no panic step.
fn load_without(table: &Table, tried_priorities: u64) -> PriorityLoad {
    retry_load(&table.level_health, &table.load, |p| p < 64 && tried_priorities & (1 << p) != 0, table.settings)
}

/// The endpoint whose cumulative share first exceeds `r` of the total.
#[inline]
fn pick_cumulative(cumulative: &[(usize, f64)], r: f64) -> Option<usize> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let x = r * total;
    let i = cumulative.partition_point(|(_, c)| *c <= x);
    cumulative.get(i.min(cumulative.len() - 1)).map(|(e, _)| *e)
}

/// A weighted pick among the endpoints `ok` admits; weights need not be cumulative or sum to
/// anything in particular.
fn pick_weighted(weights: &[(usize, f64)], r: f64, ok: impl Fn(usize) -> bool) -> Option<usize> {
    let total: f64 = weights.iter().filter(|(e, _)| ok(*e)).map(|(_, w)| *w).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = r * total;
    let mut last = None;
    for (e, w) in weights.iter().filter(|(e, _)| ok(*e)) {
        if *w <= 0.0 {
            continue;
        }
        last = Some(*e);
        if x < *w {
            return Some(*e);
        }
        x -= w;
    }
    last
}

#[cfg(test)]
mod tests;
