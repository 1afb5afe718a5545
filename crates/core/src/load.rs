//! Envoy's priority-load maths: how a cluster's traffic is split across priority levels (overprovisioning, spill-over, panic).
//!
//! This mirrors `recalculatePerPriorityState`, `distributeLoad`, `recalculatePerPriorityPanic`,
//! `recalculateLoadInTotalPanic` and `choosePriority` from Envoy's
//! `load_balancer_impl.cc` (failover-semantics.md §1). All maths is integer, multiplying before
//! dividing, because the exact rounding decides which level receives the last few percent.

/// Envoy's default `overprovisioning_factor`: a level counts as fully healthy down to 100/1.4 ≈ 72%.
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

/// Envoy's default `healthy_panic_threshold`, in percent. Istio sets 0, which disables panic.
pub const DEFAULT_PANIC_THRESHOLD: u32 = 50;

/// Per-cluster load settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSettings {
    /// Percent; 140 means a level's health is its healthy share times 1.4, capped at 100.
    pub overprovisioning_factor: u32,
    /// Percent of available hosts below which a level is in panic; values above 100 act as 100.
    pub panic_threshold: u32,
}

/// Health of one priority level: counts of hosts.
///
/// `hosts` excludes hosts Envoy would exclude from load balancing. `healthy` and `degraded` are
/// disjoint subsets of `hosts`; inconsistent counts are clamped (healthy first) rather than
/// rejected, because a snapshot taken mid-update must still produce a usable split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelHealth {
    pub hosts: u32,
    pub healthy: u32,
    pub degraded: u32,
}

/// The load each priority level receives, in percent, and how its hosts are picked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorityLoad {
    /// `L_h[p]`: percent of requests sent to level `p`'s healthy hosts.
    pub healthy: Vec<u32>,
    /// `L_d[p]`: percent of requests sent to level `p`'s degraded hosts.
    pub degraded: Vec<u32>,
    /// Level `p` is in panic: a request routed there picks from all its hosts, unhealthy included.
    pub panic: Vec<bool>,
    /// Every level is in panic, so the split follows host counts and ignores health.
    pub total_panic: bool,
    /// Some share of requests lands on a level with no host it may pick, so those requests fail
    /// with 503 ("no healthy upstream"). With the outcomes [`priority_load`] produces that share
    /// is always all of the traffic: the threshold-0 case with nothing available, or no hosts.
    pub no_healthy: bool,
}

/// Which hosts of the chosen level a request may pick from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostSource {
    /// The level is in panic: every host, whatever its health.
    All,
    Healthy,
    Degraded,
}

// === impl LoadSettings ===

impl Default for LoadSettings {
    fn default() -> Self {
        Self { overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR, panic_threshold: DEFAULT_PANIC_THRESHOLD }
    }
}

// === impl LevelHealth ===

impl LevelHealth {
    pub const fn new(hosts: u32, healthy: u32, degraded: u32) -> Self {
        Self { hosts, healthy, degraded }
    }

    /// A level whose hosts are all healthy.
    pub const fn all_healthy(hosts: u32) -> Self {
        Self::new(hosts, hosts, 0)
    }

    fn clamped(self) -> Self {
        let healthy = self.healthy.min(self.hosts);
        let degraded = self.degraded.min(self.hosts - healthy);
        Self::new(self.hosts, healthy, degraded)
    }
}

// === impl PriorityLoad ===

impl PriorityLoad {
    /// Number of priority levels.
    pub fn len(&self) -> usize {
        self.healthy.len()
    }

    pub fn is_empty(&self) -> bool {
        self.healthy.is_empty()
    }

    /// `L_h[p] + L_d[p]`, or 0 for a level that does not exist.
    pub fn level_total(&self, priority: usize) -> u32 {
        let healthy = self.healthy.get(priority).copied().unwrap_or(0);
        let degraded = self.degraded.get(priority).copied().unwrap_or(0);
        healthy + degraded
    }

    /// The lowest priority that gets load; `None` when no request can be served.
    pub fn active_priority(&self) -> Option<usize> {
        if self.no_healthy {
            return None;
        }
        self.healthy.iter().zip(&self.degraded).position(|(h, d)| h + d > 0)
    }

    /// The hosts a request routed to `priority` (as healthy or `degraded`, see
    /// [`choose_priority`]) picks from.
    pub fn host_source(&self, priority: usize, degraded: bool) -> HostSource {
        if self.panic.get(priority).copied().unwrap_or(false) {
            HostSource::All
        } else if degraded {
            HostSource::Degraded
        } else {
            HostSource::Healthy
        }
    }
}

// === functions ===

/// `(health_p, degraded_p)`: each class's share of the level times the overprovisioning factor,
/// capped at 100; 0 for an empty level.
pub fn availability(level: LevelHealth, overprovisioning_factor: u32) -> (u32, u32) {
    let level = level.clamped();
    if level.hosts == 0 {
        return (0, 0);
    }
    // u64 because OPF·count can exceed u32 for large clusters.
    let scaled = |count: u32| {
        let value = u64::from(overprovisioning_factor) * u64::from(count) / u64::from(level.hosts);
        // ≤ 100 after the cap, so the narrowing cannot truncate.
        value.min(100) as u32
    };
    (scaled(level.healthy), scaled(level.degraded))
}

/// Whether a level is below the panic threshold, from raw counts (no overprovisioning factor).
///
/// This is Envoy's `isHostSetInPanic` alone; [`priority_load`] also clears panic everywhere when
/// the normalized total availability is 100. Envoy sums the healthy and degraded percentages as
/// doubles and compares them with the integer threshold; `100·(healthy+degraded) < T·hosts` is the
/// same comparison without rounding, whereas flooring each percentage first could report panic
/// (e.g. 1 healthy + 2 degraded of 3 hosts at T=100) where Envoy does not.
pub fn is_in_panic(level: LevelHealth, panic_threshold: u32) -> bool {
    let level = level.clamped();
    let threshold = u64::from(panic_threshold.min(100));
    if level.hosts == 0 {
        // An empty level counts as 0% available.
        return threshold > 0;
    }
    let available = u64::from(level.healthy) + u64::from(level.degraded);
    100 * available < threshold * u64::from(level.hosts)
}

/// Splits 100% of a cluster's requests across its priority levels the way Envoy does (§1.2–1.3).
///
/// Loads always sum to exactly 100 when `levels` is non-empty; an empty `levels` gives empty
/// vectors and `no_healthy`.
pub fn priority_load(levels: &[LevelHealth], settings: LoadSettings) -> PriorityLoad {
    let levels: Vec<LevelHealth> = levels.iter().map(|level| level.clamped()).collect();
    let (health, degraded): (Vec<u32>, Vec<u32>) =
        levels.iter().map(|level| availability(*level, settings.overprovisioning_factor)).unzip();
    split(&levels, health, degraded, settings)
}

/// A priority's healthy hosts that are warming up (slow start): how many, and their mean factor.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Warming {
    pub hosts: u32,
    pub factor: f64,
}

/// [`priority_load`] while some levels' healthy hosts warm up: each such level's availability
/// climbs from what it is without them to what it is with them by their factor
/// ([`crate::slowstart::ramp_availability`]), and the split follows. Panic is decided on the
/// host counts as ever: a host warming up is healthy, and must not push its level into panic.
pub fn priority_load_warming(levels: &[LevelHealth], warming: &[Warming], settings: LoadSettings) -> PriorityLoad {
    let levels: Vec<LevelHealth> = levels.iter().map(|level| level.clamped()).collect();
    let opf = settings.overprovisioning_factor;
    let (health, degraded): (Vec<u32>, Vec<u32>) = levels
        .iter()
        .enumerate()
        .map(|(p, level)| {
            let (warm, degraded) = availability(*level, opf);
            let health = match warming.get(p) {
                Some(w) if w.hosts > 0 => {
                    let cold = LevelHealth { healthy: level.healthy.saturating_sub(w.hosts), ..*level };
                    crate::slowstart::ramp_availability(availability(cold, opf).0, warm, w.factor)
                }
                _ => warm,
            };
            (health, degraded)
        })
        .unzip();
    split(&levels, health, degraded, settings)
}

/// §1.2–1.3 from each level's availability (`health`, `degraded`) and its (clamped) counts.
fn split(levels: &[LevelHealth], health: Vec<u32>, degraded: Vec<u32>, settings: LoadSettings) -> PriorityLoad {
    let count = levels.len();
    let mut load =
        PriorityLoad { healthy: vec![0; count], degraded: vec![0; count], panic: vec![false; count], total_panic: false, no_healthy: true };
    if count == 0 {
        return load;
    }
    let total: u32 = health.iter().chain(&degraded).sum();
    let nta = total.min(100);

    if nta > 0 {
        let (first_healthy, rest) = distribute(&health, 100, nta, &mut load.healthy);
        let (first_degraded, rest) = distribute(&degraded, rest, nta, &mut load.degraded);
        if rest > 0 {
            // nta > 0 guarantees one of the two exists.
            if let Some(p) = first_healthy {
                load.healthy[p] += rest;
            } else if let Some(p) = first_degraded {
                load.degraded[p] += rest;
            }
        }
    }

    let threshold = settings.panic_threshold.min(100);
    if threshold == 0 && nta == 0 {
        // Envoy keeps the loads summing to 100 by parking everything on P0; with no panic the
        // pick then finds no healthy host there.
        if let Some(first) = load.healthy.first_mut() {
            *first = 100;
        }
    } else {
        for (flag, level) in load.panic.iter_mut().zip(levels) {
            *flag = nta != 100 && is_in_panic(*level, threshold);
        }
        load.total_panic = load.panic.iter().all(|&panic| panic);
        if load.total_panic {
            split_by_host_count(levels, &mut load);
        } else if nta == 0 {
            split_without_availability(levels, &mut load);
        }
    }

    load.no_healthy = has_unservable_share(levels, &load);
    load
}

/// Envoy's `choosePriority`: maps a hash onto the cumulative loads, healthy levels first, then
/// degraded. Returns `(priority, degraded)`.
///
/// Loads that do not reach the hash (only possible for an empty or hand-built `load`) fall back
/// to `(0, false)`, as Envoy does.
pub fn choose_priority(load: &PriorityLoad, hash: u64) -> (usize, bool) {
    let target = hash % 100 + 1;
    let mut cumulative = 0u64;
    let walk = load
        .healthy
        .iter()
        .enumerate()
        .map(|(p, share)| (p, false, share))
        .chain(load.degraded.iter().enumerate().map(|(p, share)| (p, true, share)));
    for (priority, degraded, share) in walk {
        cumulative += u64::from(*share);
        if target <= cumulative {
            return (priority, degraded);
        }
    }
    (0, false)
}

/// The load of a retry under Envoy's `previous_priorities` retry predicate
/// (`PreviousPrioritiesRetryPriority::adjustForAttemptedPriorities`, failover-semantics.md §3):
/// the availability of each priority `tried` says was attempted counts as 0, and 100% is
/// spread again over the others' availability, health first then degraded, in passes until
/// all of it is handed out. There is no panic step: a retry in panic mode goes to the
/// untried priorities, never back over all of them by host count. When no untried priority
/// has availability, Envoy forgets the attempts and spreads over every priority's
/// availability; when nothing has any, the `original` load applies.
///
/// Which hosts of the chosen priority a retry picks from stays `original`'s: Envoy's
/// `hostSourceToUse` reads the load balancer's own panic flags, which the predicate does not
/// touch.
pub fn retry_load(levels: &[LevelHealth], original: &PriorityLoad, tried: impl Fn(usize) -> bool, settings: LoadSettings) -> PriorityLoad {
    let levels: Vec<LevelHealth> = levels.iter().map(|level| level.clamped()).collect();
    let availability: Vec<(u32, u32)> = levels.iter().map(|level| availability(*level, settings.overprovisioning_factor)).collect();
    let adjusted = |skip_tried: bool| -> (Vec<u32>, Vec<u32>) {
        availability.iter().enumerate().map(|(p, &(h, d))| if skip_tried && tried(p) { (0, 0) } else { (h, d) }).unzip()
    };
    let (mut health, mut degraded) = adjusted(true);
    let mut total = health.iter().chain(&degraded).sum::<u32>().min(100);
    if total == 0 {
        (health, degraded) = adjusted(false);
        total = health.iter().chain(&degraded).sum::<u32>().min(100);
    }
    if total == 0 {
        return original.clone();
    }
    let mut load = PriorityLoad {
        healthy: vec![0; levels.len()],
        degraded: vec![0; levels.len()],
        panic: original.panic.clone(),
        total_panic: false,
        no_healthy: false,
    };
    load.panic.resize(levels.len(), false);
    // Envoy's loop: each pass hands out every level's proportional share of what is left, so
    // the rounding leftover goes top-down again. Each pass hands out at least 1 (some level has
    // availability ≥ 1 and total ≤ 100), so the loop ends.
    let mut rest = 100u32;
    while rest > 0 {
        for (share, slot) in health.iter().zip(load.healthy.iter_mut()).chain(degraded.iter().zip(load.degraded.iter_mut())) {
            let delta = rest.min(share * 100 / total);
            *slot += delta;
            rest -= delta;
        }
    }
    load.no_healthy = has_unservable_share(&levels, &load);
    load
}

/// Envoy's `distributeLoad`: hands out `budget` top-down in proportion to availability. Returns
/// the first level with availability and the budget left over by rounding.
fn distribute(availability: &[u32], mut budget: u32, nta: u32, out: &mut [u32]) -> (Option<usize>, u32) {
    let mut first_available = None;
    for (p, (share, slot)) in availability.iter().zip(out.iter_mut()).enumerate() {
        if first_available.is_none() && *share > 0 {
            first_available = Some(p);
        }
        *slot = budget.min(share * 100 / nta);
        budget -= *slot;
    }
    (first_available, budget)
}

/// Total panic ignores health: each level gets its share of all hosts.
fn split_by_host_count(levels: &[LevelHealth], load: &mut PriorityLoad) {
    load.degraded.iter_mut().for_each(|share| *share = 0);
    let total_hosts: u64 = levels.iter().map(|level| u64::from(level.hosts)).sum();
    let Some(first_non_empty) = levels.iter().position(|level| level.hosts > 0) else {
        load.healthy.iter_mut().for_each(|share| *share = 0);
        if let Some(first) = load.healthy.first_mut() {
            *first = 100;
        }
        return;
    };
    let mut rest = 100u32;
    for (share, level) in load.healthy.iter_mut().zip(levels) {
        // ≤ 100 because hosts ≤ total_hosts.
        *share = (100 * u64::from(level.hosts) / total_hosts) as u32;
        rest -= *share;
    }
    load.healthy[first_non_empty] += rest;
}

/// Nothing is available after the overprovisioning factor, yet some level is out of panic. This
/// needs a factor below 100 (a healthy host rounds to 0% availability but still counts towards the
/// panic threshold). Envoy then keeps whatever loads it had before; having no history, we split by
/// host count as total panic does, sending a calm level's share to the class it actually has.
fn split_without_availability(levels: &[LevelHealth], load: &mut PriorityLoad) {
    split_by_host_count(levels, load);
    for (p, level) in levels.iter().enumerate() {
        if !load.panic[p] && level.healthy == 0 {
            load.degraded[p] = load.healthy[p];
            load.healthy[p] = 0;
        }
    }
}

fn has_unservable_share(levels: &[LevelHealth], load: &PriorityLoad) -> bool {
    levels.iter().enumerate().any(|(p, level)| {
        let can_pick = |degraded: bool| match load.host_source(p, degraded) {
            HostSource::All => level.hosts > 0,
            HostSource::Healthy => level.healthy > 0,
            HostSource::Degraded => level.degraded > 0,
        };
        (load.healthy[p] > 0 && !can_pick(false)) || (load.degraded[p] > 0 && !can_pick(true))
    })
}

#[cfg(test)]
mod tests;
