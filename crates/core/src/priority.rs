//! Priority rules: how a client's position and labels rank each endpoint (Istio semantics).
//!
//! Every dialect ends up here: Gloo `priorityLabels` and Istio `failoverPriority` are
//! [`LabelMatch`] lists; Gloo `localityMappings` and Istio `failover` are [`FailoverEntry`]
//! lists; SMH backing-service order and Envoy Gateway `fallback` are fixed tiers on the endpoints.

use crate::topology::{Client, Endpoint, Locality};

/// One entry of Istio's `failoverPriority` / Gloo's `priorityLabels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMatch {
    pub key: String,
    /// `key=value` form: compare the endpoint's label with this value instead of the client's.
    pub value: Option<String>,
}

/// An ordered `failover` entry: clients in `from` region fail over to `to` before elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverEntry {
    pub from: String,
    pub to: String,
}

/// Istio `distribute` entry: for clients matching `from`, spread load over `to` patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributeEntry {
    pub from: String,
    pub to: Vec<(String, u32)>,
}

/// How endpoints are ranked for a client.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PriorityRule {
    /// Everything at priority 0 (no failover configured, or failover inert).
    #[default]
    Flat,
    /// Fixed tiers carried by the endpoints (`Endpoint::tier`).
    Tiers,
    /// Istio locality load balancing with failover enabled: `failoverPriority` labels (may be
    /// empty) and, when `locality` is set, the region/zone/subzone ranking combined as ×5.
    Istio { labels: Vec<LabelMatch>, locality: Option<Vec<FailoverEntry>> },
    /// Istio `distribute`: weights only, all at priority 0.
    Distribute(Vec<DistributeEntry>),
}

/// One label comparison made for an endpoint, for explanations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelCheck {
    pub key: String,
    /// The value compared against: the client's label, or the `key=value` override.
    pub wanted: String,
    pub from_override: bool,
    pub actual: String,
    pub matched: bool,
}

/// Why an endpoint sits at its raw priority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    Flat,
    Tier(u32),
    Istio {
        /// Checks up to and including the first mismatch (later labels do not count).
        checks: Vec<LabelCheck>,
        label_rank: u32,
        locality_rank: Option<LocalityRank>,
    },
    Distribute {
        pattern: String,
        weight: u32,
    },
}

/// Istio's locality ranking (§4.3 of the semantics reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LocalityRank {
    SameSubzone = 0,
    SameZone = 1,
    SameRegion = 2,
    OtherRegion = 3,
    NotFailoverTarget = 4,
}

/// Raw (not yet renumbered) priority of each endpoint, or `None` if the rule gives it no traffic
/// at all (a `distribute` rule that does not cover its locality), with the reason.
pub fn rank(client: &Client, endpoints: &[Endpoint], rule: &PriorityRule) -> Vec<Option<(u32, Why)>> {
    match rule {
        PriorityRule::Flat => endpoints.iter().map(|_| Some((0, Why::Flat))).collect(),
        PriorityRule::Tiers => endpoints
            .iter()
            .map(|e| {
                let t = e.tier.unwrap_or(0);
                Some((t, Why::Tier(t)))
            })
            .collect(),
        PriorityRule::Istio { labels, locality } => endpoints
            .iter()
            .map(|e| {
                let (label_rank, checks) = label_rank(client, e, labels);
                let loc = locality.as_ref().map(|fo| locality_rank(&client.locality, &e.locality, fo));
                let raw = label_rank * 5 + loc.map_or(0, |l| l as u32);
                Some((raw, Why::Istio { checks, label_rank, locality_rank: loc }))
            })
            .collect(),
        PriorityRule::Distribute(entries) => {
            let weights = distribute_weights(&client.locality, endpoints, entries);
            weights.into_iter().map(|w| w.map(|(pattern, weight)| (0, Why::Distribute { pattern, weight }))).collect()
        }
    }
}

/// Renumbers raw priorities to 0..k−1 without gaps, keeping their order.
pub fn renumber(raw: &[Option<u32>]) -> Vec<Option<usize>> {
    let mut distinct: Vec<u32> = raw.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    raw.iter().map(|r| r.and_then(|v| distinct.binary_search(&v).ok())).collect()
}

/// Istio failoverPriority: prio = N − j where j is the first label that does not match.
fn label_rank(client: &Client, endpoint: &Endpoint, labels: &[LabelMatch]) -> (u32, Vec<LabelCheck>) {
    let n = labels.len() as u32;
    let mut checks = Vec::new();
    for (j, m) in labels.iter().enumerate() {
        let (wanted, from_override) = match &m.value {
            Some(v) => (v.as_str(), true),
            None => (client.labels.get(&m.key).map_or("", String::as_str), false),
        };
        let actual = endpoint.labels.get(&m.key).map_or("", String::as_str);
        let matched = wanted == actual;
        checks.push(LabelCheck { key: m.key.clone(), wanted: wanted.to_string(), from_override, actual: actual.to_string(), matched });
        if !matched {
            return (n - j as u32, checks);
        }
    }
    (0, checks)
}

fn locality_rank(client: &Locality, endpoint: &Locality, failover: &[FailoverEntry]) -> LocalityRank {
    if client.region == endpoint.region {
        if client.zone == endpoint.zone {
            if client.subzone == endpoint.subzone {
                LocalityRank::SameSubzone
            } else {
                LocalityRank::SameZone
            }
        } else {
            LocalityRank::SameRegion
        }
    } else {
        match failover.iter().find(|f| f.from == client.region) {
            Some(f) if f.to != endpoint.region => LocalityRank::NotFailoverTarget,
            _ => LocalityRank::OtherRegion,
        }
    }
}

/// Istio `distribute` (§4.5): the first entry whose `from` matches the client decides; each
/// `to` pattern claims the not-yet-claimed localities it matches and splits its weight over
/// them with ceil(orig·w / Σorig). Returns, per endpoint, the pattern and its locality weight.
fn distribute_weights(client: &Locality, endpoints: &[Endpoint], entries: &[DistributeEntry]) -> Vec<Option<(String, u32)>> {
    let Some(entry) = entries.iter().find(|d| locality_matches(&d.from, client)) else {
        // No entry for this client: Istio leaves weights alone.
        return endpoints.iter().map(|_| Some(("*".to_string(), 1))).collect();
    };
    let mut localities: Vec<&Locality> = endpoints.iter().map(|e| &e.locality).collect();
    localities.sort();
    localities.dedup();
    let mut claimed: Vec<Option<(String, u32)>> = vec![None; localities.len()];
    for (pattern, weight) in &entry.to {
        let matches: Vec<usize> =
            (0..localities.len()).filter(|&i| claimed[i].is_none() && locality_matches(pattern, localities[i])).collect();
        // Each locality's original weight is unset in veer's topology, so it counts as 1.
        let total = matches.len() as u64;
        for i in matches {
            let w = (u64::from(*weight)).div_ceil(total.max(1));
            claimed[i] = Some((pattern.clone(), u32::try_from(w).unwrap_or(u32::MAX)));
        }
    }
    endpoints
        .iter()
        .map(|e| {
            let i = localities.iter().position(|l| **l == e.locality)?;
            claimed[i].clone()
        })
        .collect()
}

/// Matches Istio locality patterns: `*`, `region`, `region/zone`, `region/zone/subzone`, each part
/// possibly `*`; missing or empty parts match anything.
pub fn locality_matches(pattern: &str, locality: &Locality) -> bool {
    let mut parts = pattern.split('/');
    let mut part_ok = |actual: &str| match parts.next() {
        None | Some("") | Some("*") => true,
        Some(p) => p == actual,
    };
    part_ok(&locality.region) && part_ok(&locality.zone) && part_ok(&locality.subzone)
}

#[cfg(test)]
mod tests;
