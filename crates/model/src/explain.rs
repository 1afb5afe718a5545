//! `veer explain`: a client's priority table for one destination, with the reasons behind it.

use serde::Serialize;

use veer_core::priority::{LocalityRank, Why};
use veer_core::table::{self, Table};
use veer_core::topology::{Address, Client, Health, Labels};

use crate::resolve::{Destination, SourceRef};

/// What a `--down` flag takes down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Down {
    Cluster(String),
    Address(String),
}

/// The stable JSON contract of `veer explain -o json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub host: String,
    pub port: u16,
    pub client: ClientView,
    pub sources: Vec<SourceView>,
    pub panic: bool,
    /// No endpoint can be picked: requests fail with 503.
    pub no_healthy_upstream: bool,
    pub priorities: Vec<PriorityView>,
    /// Endpoints the policy gives no traffic at all.
    pub excluded: Vec<EndpointView>,
    pub notes: Vec<String>,
    /// How an endpoint that comes back takes its load back; absent when slow start is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStartView>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SlowStartView {
    pub window_ms: u64,
    pub aggression: f64,
    pub min_weight_percent: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClientView {
    pub cluster: String,
    pub labels: Labels,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceView {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub file: String,
    pub line: usize,
    pub role: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PriorityView {
    pub priority: usize,
    pub load_percent: u32,
    pub panic: bool,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EndpointView {
    pub cluster: String,
    pub address: String,
    pub weight: u32,
    pub healthy: bool,
    pub share_percent: f64,
    /// While the endpoint warms up (slow start): the percent of its weight it has now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_percent: Option<f64>,
    pub labels: Labels,
    pub why: String,
    pub origin: String,
}

/// A `--down` flag that matched no endpoint of the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownError {
    /// `--down cluster=CLUSTER`: no endpoint of `host` is in that cluster.
    NoEndpointInCluster { cluster: String, host: String },
    /// `--down ADDRESS`: no endpoint of `host` has that address.
    NoEndpointAt { address: String, host: String },
}

impl std::fmt::Display for DownError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownError::NoEndpointInCluster { cluster, host } => {
                write!(f, "--down cluster={cluster}: no endpoint of {host} is in cluster {cluster}")
            }
            DownError::NoEndpointAt { address, host } => write!(f, "--down {address}: no endpoint of {host} has that address"),
        }
    }
}

impl std::error::Error for DownError {}

/// Marks endpoints taken down by `--down`; errors name a flag that matched nothing.
pub fn apply_down(dest: &mut Destination, downs: &[Down]) -> Result<(), DownError> {
    for d in downs {
        let mut hit = false;
        for e in &mut dest.endpoints {
            let matches = match d {
                Down::Cluster(c) => e.cluster == c.as_str(),
                Down::Address(a) => {
                    let full = e.address.to_string();
                    full == *a || matches!(&e.address, Address::Socket(s) if s.ip().to_string() == *a)
                }
            };
            if matches {
                e.health = Health::Unhealthy;
                hit = true;
            }
        }
        if !hit {
            return Err(match d {
                Down::Cluster(c) => DownError::NoEndpointInCluster { cluster: c.clone(), host: dest.host.clone() },
                Down::Address(a) => DownError::NoEndpointAt { address: a.clone(), host: dest.host.clone() },
            });
        }
    }
    Ok(())
}

/// Builds the report for `client` calling `dest`.
pub fn explain(dest: &Destination, client: &Client) -> Report {
    let t: Table = table::build(client, &dest.endpoints, &dest.rule, dest.resilience.load, dest.weighting);
    report(dest, client, &t)
}

/// The report for a table already built for `client` over `dest`'s endpoints (the data plane
/// builds it once and shares it between routing and `/routes`).
pub fn report(dest: &Destination, client: &Client, t: &Table) -> Report {
    let view = |i: usize, why: String, share: f64, warmup: Option<f64>| {
        let e = &dest.endpoints[i];
        EndpointView {
            cluster: e.cluster.to_string(),
            address: e.address.to_string(),
            weight: e.weight,
            healthy: e.health != Health::Unhealthy,
            share_percent: (share * 100.0).round() / 100.0,
            warmup_percent: warmup.map(|f| (f * 1000.0).round() / 10.0),
            labels: e.labels.clone(),
            why,
            origin: e.origin.clone(),
        }
    };
    let mut priorities: Vec<PriorityView> = (0..t.levels)
        .map(|p| PriorityView {
            priority: p,
            load_percent: t.load.healthy.get(p).copied().unwrap_or(0) + t.load.degraded.get(p).copied().unwrap_or(0),
            panic: t.load.total_panic || t.load.panic.get(p).copied().unwrap_or(false),
            endpoints: Vec::new(),
        })
        .collect();
    for pl in &t.placements {
        let why = match pl.why {
            Why::Tier(t) => format!("tier {t}: {}", dest.endpoints[pl.endpoint].origin),
            ref other => describe(other, pl.group_weight),
        };
        priorities[pl.priority].endpoints.push(view(pl.endpoint, why, pl.share_percent, pl.warmup));
    }
    let excluded = t.excluded.iter().map(|&i| view(i, "no distribute target covers its locality".into(), 0.0, None)).collect();
    let mut notes = dest.notes.clone();
    let panic = t.load.total_panic || t.load.panic.iter().any(|p| *p);
    if t.load.no_healthy {
        notes.push(format!(
            "no healthy endpoint{}: requests fail with 503 (panic threshold {}%)",
            if dest.endpoints.is_empty() { " (the destination has no endpoints)" } else { "" },
            dest.resilience.load.panic_threshold
        ));
    } else if panic {
        notes.push(format!("PANIC: healthy share below the panic threshold ({}%); the priority in panic spreads requests over all its endpoints, unhealthy ones included", dest.resilience.load.panic_threshold));
    }
    if dest.resilience.outlier.is_none() && dest.resilience.active_health_check.is_none() && t.levels > 1 {
        notes.push("nothing detects failures here (no outlier detection or health check), so the lower priorities get traffic only if endpoints are removed".into());
    }
    Report {
        host: dest.host.clone(),
        port: dest.port,
        client: ClientView { cluster: client.cluster.to_string(), labels: client.labels.clone() },
        sources: dest.sources.iter().map(source_view).collect(),
        panic,
        no_healthy_upstream: t.load.no_healthy,
        priorities,
        excluded,
        notes,
        slow_start: dest.resilience.slow_start.map(|s| SlowStartView {
            window_ms: u64::try_from(s.window.as_millis()).unwrap_or(u64::MAX),
            aggression: f64::from(s.aggression_milli) / 1000.0,
            min_weight_percent: s.min_weight_percent,
        }),
    }
}

fn source_view(s: &SourceRef) -> SourceView {
    SourceView {
        kind: s.kind.clone(),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        file: s.file.clone(),
        line: s.line,
        role: s.role.clone(),
    }
}

/// One line saying why an endpoint sits where it does.
pub fn describe(why: &Why, group_weight: Option<u32>) -> String {
    match why {
        Why::Flat => "no priority rule: all endpoints share priority 0".into(),
        Why::Tier(t) => format!("fixed tier {t} from the resource order"),
        Why::Distribute { pattern, weight } => format!("distribute: locality matches {pattern:?}, weight {weight}"),
        Why::Istio { checks, label_rank, locality_rank } => {
            let mut parts: Vec<String> = checks
                .iter()
                .map(|c| {
                    let wanted = if c.from_override { format!("={:?}", c.wanted) } else { format!("client {:?}", c.wanted) };
                    format!("{} {:?} {} {wanted}", c.key, c.actual, if c.matched { "matches" } else { "differs from" })
                })
                .collect();
            if !checks.is_empty() {
                parts.push(format!("label rank {label_rank}"));
            }
            if let Some(l) = locality_rank {
                parts.push(
                    match l {
                        LocalityRank::SameSubzone => "same region/zone/subzone",
                        LocalityRank::SameZone => "same region and zone, other subzone",
                        LocalityRank::SameRegion => "same region, other zone",
                        LocalityRank::OtherRegion => "other region",
                        LocalityRank::NotFailoverTarget => "other region, not the failover target",
                    }
                    .to_string(),
                );
            }
            if let Some(w) = group_weight {
                parts.push(format!("group weight {w}"));
            }
            parts.join("; ")
        }
    }
}

/// Renders the report as a table for people.
pub fn render_table(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}:{} as seen from cluster {}", r.host, r.port, r.client.cluster);
    let interesting: Vec<String> = r.client.labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "client labels: {}", interesting.join(", "));
    let _ = writeln!(out, "decided by:");
    for s in &r.sources {
        let _ = writeln!(out, "  {}/{}/{} ({}:{}): {}", s.kind, s.namespace, s.name, s.file, s.line, s.role);
    }
    for p in &r.priorities {
        let _ = writeln!(out, "\nP{}  load {}%{}", p.priority, p.load_percent, if p.panic { "  PANIC" } else { "" });
        let _ = writeln!(out, "  {:<16} {:<24} {:>6} {:<9} {:>8}  why", "cluster", "address", "weight", "health", "share");
        for e in &p.endpoints {
            let health = match (e.healthy, e.warmup_percent) {
                (false, _) => "DOWN".to_string(),
                (true, Some(w)) => format!("warm {w:.0}%"),
                (true, None) => "healthy".to_string(),
            };
            let _ =
                writeln!(out, "  {:<16} {:<24} {:>6} {:<9} {:>7.2}%  {}", e.cluster, e.address, e.weight, health, e.share_percent, e.why);
        }
    }
    if !r.excluded.is_empty() {
        let _ = writeln!(out, "\nno traffic:");
        for e in &r.excluded {
            let _ = writeln!(out, "  {:<16} {:<24} {}", e.cluster, e.address, e.why);
        }
    }
    if let Some(s) = &r.slow_start {
        let _ = writeln!(
            out,
            "\nslow start: an endpoint or priority that comes back takes its load back over {} ms (aggression {}, from {}% of its weight)",
            s.window_ms, s.aggression, s.min_weight_percent
        );
    }
    for n in &r.notes {
        let _ = writeln!(out, "\nnote: {n}");
    }
    out
}
