//! The per-client priority table: endpoints grouped by priority, the load each priority gets,
//! and each endpoint's expected share of requests.

use crate::load::{priority_load, priority_load_warming, LevelHealth, LoadSettings, PriorityLoad, Warming};
use crate::priority::{rank, renumber, PriorityRule, Why};
use crate::topology::{Client, Endpoint, Health};

/// How load inside a priority is spread over groups (localities or backendRefs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GroupWeighting {
    /// Endpoints share a priority's load by their own weight.
    #[default]
    Off,
    /// Envoy locality-weighted LB: groups first (by explicit weight, or the sum of their
    /// endpoint weights), scaled down by their health (§1.5), then endpoints inside a group.
    On,
}

/// One endpoint's place in the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// Index into the endpoints the table was built from.
    pub endpoint: usize,
    pub priority: usize,
    pub raw_priority: u32,
    pub why: Why,
    /// Group weight in effect (distribute or explicit), if any.
    pub group_weight: Option<u32>,
    /// Expected share of all requests, in percent.
    pub share_percent: f64,
    /// The slow start factor its weight is scaled by, while it warms up (`None`: steady).
    pub warmup: Option<f64>,
}

/// The full decision for one client and destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Endpoints with traffic possible, ordered by priority then input order.
    pub placements: Vec<Placement>,
    /// Endpoints the rule gives no traffic at all (e.g. outside every `distribute` target).
    pub excluded: Vec<usize>,
    pub levels: usize,
    pub load: PriorityLoad,
    /// Host counts per priority that `load` was computed from.
    pub level_health: Vec<LevelHealth>,
    pub settings: LoadSettings,
    /// The group weighting in effect (`distribute` always weights groups).
    pub weighting: GroupWeighting,
}

/// Builds the table for `client` over `endpoints`.
pub fn build(client: &Client, endpoints: &[Endpoint], rule: &PriorityRule, settings: LoadSettings, weighting: GroupWeighting) -> Table {
    build_warming(client, endpoints, rule, settings, weighting, &[])
}

/// [`build`] with some endpoints warming up: `warm[i]` is endpoint `i`'s slow start factor
/// (`crate::slowstart`), 1 for a steady one; an empty `warm` means all are steady. A warming
/// endpoint's weight is scaled by its factor, its group's weight by its members' mean factor,
/// and its priority's availability ramps (`priority_load_warming`).
pub fn build_warming(
    client: &Client,
    endpoints: &[Endpoint],
    rule: &PriorityRule,
    settings: LoadSettings,
    weighting: GroupWeighting,
    warm: &[f64],
) -> Table {
    let ranked = rank(client, endpoints, rule);
    let raw: Vec<Option<u32>> = ranked.iter().map(|r| r.as_ref().map(|(p, _)| *p)).collect();
    let finals = renumber(&raw);
    let levels = finals.iter().flatten().max().map_or(0, |m| m + 1);

    let mut placements = Vec::new();
    let mut excluded = Vec::new();
    for (i, (r, f)) in ranked.into_iter().zip(&finals).enumerate() {
        match (r, f) {
            (Some((raw_priority, why)), Some(p)) => {
                let group_weight = match &why {
                    Why::Distribute { weight, .. } => Some(*weight),
                    _ => endpoints[i].group_weight,
                };
                let warmup = warm.get(i).copied().filter(|f| *f < 1.0 && endpoints[i].health != Health::Unhealthy);
                placements.push(Placement { endpoint: i, priority: *p, raw_priority, why, group_weight, share_percent: 0.0, warmup });
            }
            _ => excluded.push(i),
        }
    }
    placements.sort_by_key(|p| (p.priority, p.endpoint));

    let health: Vec<LevelHealth> = (0..levels)
        .map(|lvl| {
            let mut h = LevelHealth::default();
            for p in placements.iter().filter(|p| p.priority == lvl) {
                h.hosts += 1;
                match endpoints[p.endpoint].health {
                    Health::Healthy => h.healthy += 1,
                    Health::Degraded => h.degraded += 1,
                    Health::Unhealthy => {}
                }
            }
            h
        })
        .collect();
    let warming: Vec<Warming> = (0..levels)
        .map(|lvl| {
            let factors: Vec<f64> = placements
                .iter()
                .filter(|p| p.priority == lvl && endpoints[p.endpoint].health == Health::Healthy)
                .filter_map(|p| p.warmup)
                .collect();
            let hosts = factors.len() as u32;
            Warming { hosts, factor: if hosts == 0 { 1.0 } else { factors.iter().sum::<f64>() / f64::from(hosts) } }
        })
        .collect();
    let load = if warming.iter().any(|w| w.hosts > 0) {
        priority_load_warming(&health, &warming, settings)
    } else {
        priority_load(&health, settings)
    };
    let weighting = if matches!(rule, PriorityRule::Distribute(_)) { GroupWeighting::On } else { weighting };
    assign_shares(&mut placements, endpoints, &load, settings, weighting);
    Table { placements, excluded, levels, load, level_health: health, settings, weighting }
}

/// Each endpoint's share (percent) of one priority's traffic once that priority is picked: what
/// a retry that moves to this priority uses, whatever load the priority has in the table.
pub fn level_shares(table: &Table, endpoints: &[Endpoint], level: usize) -> Vec<(usize, f64)> {
    let mut members: Vec<Placement> = table.placements.iter().filter(|p| p.priority == level).cloned().collect();
    for m in &mut members {
        m.share_percent = 0.0;
        // Reindex into `members` so assign_shares sees a single level 0.
        m.priority = 0;
    }
    let has_healthy = members.iter().any(|m| endpoints[m.endpoint].health == Health::Healthy);
    let load = PriorityLoad {
        healthy: vec![if has_healthy { 100 } else { 0 }],
        degraded: vec![if has_healthy { 0 } else { 100 }],
        panic: vec![table.load.total_panic || table.load.panic.get(level).copied().unwrap_or(false)],
        total_panic: false,
        no_healthy: false,
    };
    assign_shares(&mut members, endpoints, &load, table.settings, table.weighting);
    members.into_iter().map(|m| (m.endpoint, m.share_percent)).collect()
}

fn assign_shares(
    placements: &mut [Placement],
    endpoints: &[Endpoint],
    load: &PriorityLoad,
    settings: LoadSettings,
    weighting: GroupWeighting,
) {
    if load.no_healthy {
        return;
    }
    let levels = load.healthy.len();
    for lvl in 0..levels {
        let in_panic = load.total_panic || load.panic.get(lvl).copied().unwrap_or(false);
        let members: Vec<usize> = (0..placements.len()).filter(|&i| placements[i].priority == lvl).collect();
        let healthy_load = f64::from(load.healthy[lvl]);
        let degraded_load = f64::from(load.degraded.get(lvl).copied().unwrap_or(0));
        if in_panic {
            // A priority in panic picks from all its hosts, ignoring health and groups.
            spread(placements, endpoints, &members, healthy_load + degraded_load, |_| true);
            continue;
        }
        match weighting {
            GroupWeighting::Off => {
                spread(placements, endpoints, &members, healthy_load, |h| h == Health::Healthy);
                spread(placements, endpoints, &members, degraded_load, |h| h == Health::Degraded);
            }
            GroupWeighting::On => {
                spread_by_group(placements, endpoints, &members, healthy_load, Health::Healthy, settings);
                spread_by_group(placements, endpoints, &members, degraded_load, Health::Degraded, settings);
            }
        }
    }
}

/// Spreads `amount` percent over the members whose health passes `eligible`, by endpoint weight.
fn spread(placements: &mut [Placement], endpoints: &[Endpoint], members: &[usize], amount: f64, eligible: impl Fn(Health) -> bool) {
    if amount <= 0.0 {
        return;
    }
    let total: f64 = members
        .iter()
        .filter(|&&i| eligible(endpoints[placements[i].endpoint].health))
        .map(|&i| pick_weight(&placements[i], endpoints))
        .sum();
    if total <= 0.0 {
        return;
    }
    for &i in members {
        let e = &endpoints[placements[i].endpoint];
        if eligible(e.health) {
            placements[i].share_percent += amount * pick_weight(&placements[i], endpoints) / total;
        }
    }
}

/// An endpoint's weight as picks use it: scaled by its slow start factor while it warms up.
fn pick_weight(p: &Placement, endpoints: &[Endpoint]) -> f64 {
    f64::from(endpoints[p.endpoint].weight) * p.warmup.unwrap_or(1.0)
}

/// Locality-weighted spread (§1.5): eff(g) = weight(g) · min(1, OPF/100 · eligible_g / hosts_g).
fn spread_by_group(
    placements: &mut [Placement],
    endpoints: &[Endpoint],
    members: &[usize],
    amount: f64,
    class: Health,
    settings: LoadSettings,
) {
    if amount <= 0.0 {
        return;
    }
    let mut groups: Vec<&str> = members.iter().map(|&i| endpoints[placements[i].endpoint].group.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    let effective: Vec<f64> = groups
        .iter()
        .map(|g| {
            let in_group: Vec<usize> = members.iter().copied().filter(|&i| endpoints[placements[i].endpoint].group == *g).collect();
            let hosts = in_group.len() as f64;
            let eligible = in_group.iter().filter(|&&i| endpoints[placements[i].endpoint].health == class).count() as f64;
            let weight = in_group
                .iter()
                .find_map(|&i| placements[i].group_weight)
                .map(f64::from)
                .unwrap_or_else(|| in_group.iter().map(|&i| f64::from(endpoints[placements[i].endpoint].weight)).sum());
            let scale = (f64::from(settings.overprovisioning_factor) / 100.0 * eligible / hosts).min(1.0);
            // A group whose members warm up takes its load back with them (veer's addition:
            // Envoy scales hosts inside a locality only).
            let (sum, scaled) = in_group
                .iter()
                .filter(|&&i| endpoints[placements[i].endpoint].health == class)
                .map(|&i| (f64::from(endpoints[placements[i].endpoint].weight), pick_weight(&placements[i], endpoints)))
                .fold((0.0, 0.0), |(a, b), (w, s)| (a + w, b + s));
            let warm = if sum > 0.0 { scaled / sum } else { 1.0 };
            weight * scale * warm
        })
        .collect();
    let total: f64 = effective.iter().sum();
    if total <= 0.0 {
        return;
    }
    for (g, eff) in groups.iter().zip(&effective) {
        let in_group: Vec<usize> = members.iter().copied().filter(|&i| endpoints[placements[i].endpoint].group == *g).collect();
        spread(placements, endpoints, &in_group, amount * eff / total, |h| h == class);
    }
}

#[cfg(test)]
mod tests;
