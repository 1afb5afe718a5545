//! Who writes each regional zone, with an epoch that grows at every hand-over, so a zone never
//! has two live writers: an adoption outranks the home cluster, a recovering cluster waits until
//! the adoption is removed, and no publication ever replaces one of a higher epoch. Pure.
//!
//! Why this shape: the seed's takeover relies on every cluster running an ExternalDNS with the
//! same owner ID, so two live writers of one zone delete each other's records (ExternalDNS's
//! `sync` policy). veer decides the writer of a zone from the claims every node reads in the
//! same manifest set (a deterministic function, so every node reaches the same answer without
//! talking to the others), and numbers hand-overs with an epoch that fences stale writers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::plan::{ClusterPlan, Endpoint, Source, ZoneId};

/// How a cluster comes to write a zone, in increasing precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// The zone of the cluster's own region (DNSPolicy mode Active).
    Home,
    /// Another region's zone through a RegionBound DNSPolicy.
    RegionBound,
    /// A region listed in the cluster's `adoptsRegions`: the explicit failover decision.
    Adoption,
}

impl ClaimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::Home => "home",
            ClaimKind::RegionBound => "region_bound",
            ClaimKind::Adoption => "adoption",
        }
    }
}

/// One cluster's claim on a zone: its plan puts ServiceRoute records there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Claim {
    pub cluster: String,
    pub kind: ClaimKind,
}

/// The claims on every zone that any plan writes route records into.
pub fn claims(plans: &[ClusterPlan]) -> BTreeMap<ZoneId, Vec<Claim>> {
    let mut out: BTreeMap<ZoneId, Vec<Claim>> = BTreeMap::new();
    for p in plans {
        let Some(region) = &p.region else { continue };
        let zones: BTreeSet<&ZoneId> =
            p.endpoints.iter().filter(|e| matches!(e.source, crate::plan::Source::Route { .. })).map(|e| &e.zone).collect();
        for z in zones {
            let kind = if z.region == *region {
                ClaimKind::Home
            } else if p.adopts_regions.contains(&z.region) {
                ClaimKind::Adoption
            } else {
                ClaimKind::RegionBound
            };
            out.entry(z.clone()).or_default().push(Claim { cluster: p.cluster.clone(), kind });
        }
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

/// The outcome of an election: the writer, and the claims it beat at the same precedence
/// (a configuration conflict the operator should hear about).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Election {
    pub writer: Option<Claim>,
    pub conflicts: Vec<String>,
}

/// The writer of a zone: the claim of highest precedence; among equals, the lowest cluster
/// name. Deterministic in the claims alone (no history, no stickiness), so every node that
/// reads the same manifests elects the same writer.
pub fn elect(claims: &[Claim]) -> Election {
    let Some(top) = claims.iter().map(|c| c.kind).max() else {
        return Election { writer: None, conflicts: Vec::new() };
    };
    let mut best: Vec<&Claim> = claims.iter().filter(|c| c.kind == top).collect();
    best.sort();
    best.dedup();
    let writer = best.first().map(|c| (*c).clone());
    let conflicts = best.iter().skip(1).map(|c| c.cluster.clone()).collect();
    Election { writer, conflicts }
}

/// The state of one zone as a node knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneState {
    pub writer: Option<String>,
    pub kind: Option<ClaimKind>,
    /// Grows by one at every change of writer (including to and from no writer).
    pub epoch: u64,
    /// Other clusters claiming the zone at the writer's precedence.
    #[serde(default)]
    pub conflicts: Vec<String>,
}

/// A change of writer, for logs and events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub zone: ZoneId,
    pub from: Option<String>,
    pub to: Option<String>,
    pub kind: Option<ClaimKind>,
    pub epoch: u64,
    pub conflicts: Vec<String>,
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |w: &Option<String>| w.clone().unwrap_or_else(|| "nobody".into());
        write!(
            f,
            "zone {}: writer {} -> {} ({}), epoch {}",
            self.zone,
            name(&self.from),
            name(&self.to),
            self.kind.map_or("no claim", ClaimKind::as_str),
            self.epoch
        )?;
        if !self.conflicts.is_empty() {
            write!(f, "; CONFLICT: also claimed by {} at the same precedence", self.conflicts.join(", "))?;
        }
        Ok(())
    }
}

/// The zones a node knows, with their writers and epochs. Serializable, so a node can keep its
/// epochs across restarts in a state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RegistryFile", from = "RegistryFile")]
pub struct Registry {
    pub zones: BTreeMap<ZoneId, ZoneState>,
}

/// The state file's form: JSON object keys must be strings, so zones are a list.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    zones: Vec<ZoneEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ZoneEntry {
    zone: ZoneId,
    #[serde(flatten)]
    state: ZoneState,
}

impl From<Registry> for RegistryFile {
    fn from(r: Registry) -> Self {
        RegistryFile { zones: r.zones.into_iter().map(|(zone, state)| ZoneEntry { zone, state }).collect() }
    }
}

impl From<RegistryFile> for Registry {
    fn from(f: RegistryFile) -> Self {
        Registry { zones: f.zones.into_iter().map(|e| (e.zone, e.state)).collect() }
    }
}

// === impl Registry ===

impl Registry {
    /// Applies the current claims: elects each zone's writer and bumps the epoch of every zone
    /// whose writer changed. A zone first seen under an adoption starts at epoch 2 (its home
    /// writer held epoch 1 before), so a node that was down during the adoption numbers it as
    /// the nodes that saw it happen.
    pub fn reconcile(&mut self, claims: &BTreeMap<ZoneId, Vec<Claim>>) -> Vec<Transition> {
        let zones: BTreeSet<ZoneId> = claims.keys().chain(self.zones.keys()).cloned().collect();
        let mut out = Vec::new();
        for zone in zones {
            let e = elect(claims.get(&zone).map_or(&[][..], Vec::as_slice));
            let state = self.zones.entry(zone.clone()).or_default();
            let to = e.writer.as_ref().map(|c| c.cluster.clone());
            let kind = e.writer.as_ref().map(|c| c.kind);
            let conflicts_changed = state.conflicts != e.conflicts;
            state.conflicts = e.conflicts.clone();
            if state.writer == to {
                state.kind = kind;
                if conflicts_changed && !e.conflicts.is_empty() {
                    out.push(Transition { zone, from: state.writer.clone(), to, kind, epoch: state.epoch, conflicts: e.conflicts });
                }
                continue;
            }
            let baseline = match kind {
                Some(ClaimKind::Adoption) => 2,
                Some(_) => 1,
                None => 0,
            };
            let epoch = (state.epoch + 1).max(baseline);
            out.push(Transition { zone, from: state.writer.take(), to: to.clone(), kind, epoch, conflicts: e.conflicts });
            state.writer = to;
            state.kind = kind;
            state.epoch = epoch;
        }
        out
    }

    pub fn get(&self, zone: &ZoneId) -> Option<&ZoneState> {
        self.zones.get(zone)
    }

    /// Raises every epoch to at least the one in `persisted` (a state file from an earlier
    /// run), so epochs never go back across restarts.
    pub fn merge_floor(&mut self, persisted: &Registry) {
        for (zone, old) in &persisted.zones {
            let st = self.zones.entry(zone.clone()).or_default();
            if old.epoch > st.epoch {
                st.epoch = old.epoch;
            }
        }
    }
}

/// Whether a cluster's ExternalDNS controller for an endpoint's zone writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Written: the gateway's A record (every cluster writes its own in every regional zone),
    /// or a ServiceRoute record of a zone this cluster is the elected writer of.
    Written,
    /// A ServiceRoute record of a zone another cluster writes (or nobody does), with that zone's
    /// state: writing it too would make two live writers.
    Withheld(Option<&'a ZoneState>),
}

/// The one rule for which of `plan`'s endpoints its cluster writes, in the plan's order:
/// `veer dns endpoints` prints the written ones and `veer dns plan` lists them under their
/// zones, so the two never disagree about which controllers get records.
pub fn written<'a>(plan: &'a ClusterPlan, registry: &'a Registry) -> impl Iterator<Item = (&'a Endpoint, Verdict<'a>)> + 'a {
    plan.endpoints.iter().map(move |e| {
        let state = registry.get(&e.zone);
        let ours = state.is_some_and(|s| s.writer.as_deref() == Some(plan.cluster.as_str()));
        let verdict = if matches!(e.source, Source::Route { .. }) && !ours { Verdict::Withheld(state) } else { Verdict::Written };
        (e, verdict)
    })
}

/// What a writer publishes into a zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication<T> {
    pub writer: String,
    pub epoch: u64,
    pub records: T,
}

/// Why a store refused a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The zone holds records of a higher epoch.
    Stale { held: u64, offered: u64 },
    /// Another writer holds the same epoch: two writers were elected for one epoch.
    SplitBrain { holder: String, epoch: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Stale { held, offered } => write!(f, "refused: the zone holds epoch {held}, the write is of epoch {offered}"),
            Refusal::SplitBrain { holder, epoch } => write!(f, "refused: {holder} already writes epoch {epoch}"),
        }
    }
}

/// Published zone contents with the fencing rule: a publication or withdrawal of a lower epoch
/// than the one held never takes effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneStore<T> {
    zones: BTreeMap<ZoneId, Publication<T>>,
    /// The highest epoch ever seen per zone, also after a withdrawal.
    floor: BTreeMap<ZoneId, u64>,
}

impl<T> Default for ZoneStore<T> {
    fn default() -> Self {
        ZoneStore { zones: BTreeMap::new(), floor: BTreeMap::new() }
    }
}

// === impl ZoneStore ===

impl<T: PartialEq> ZoneStore<T> {
    /// Publishes `p` into `zone`; returns whether the content changed.
    pub fn publish(&mut self, zone: &ZoneId, p: Publication<T>) -> Result<bool, Refusal> {
        let floor = self.floor.get(zone).copied().unwrap_or(0);
        if p.epoch < floor {
            return Err(Refusal::Stale { held: floor, offered: p.epoch });
        }
        if let Some(cur) = self.zones.get(zone) {
            if cur.epoch == p.epoch && cur.writer != p.writer {
                return Err(Refusal::SplitBrain { holder: cur.writer.clone(), epoch: cur.epoch });
            }
            if *cur == p {
                return Ok(false);
            }
        }
        self.floor.insert(zone.clone(), p.epoch);
        self.zones.insert(zone.clone(), p);
        Ok(true)
    }

    /// Removes the zone's records because the zone moved to epoch `epoch` elsewhere; refused
    /// if the records held are newer.
    pub fn withdraw(&mut self, zone: &ZoneId, epoch: u64) -> Result<bool, Refusal> {
        let floor = self.floor.get(zone).copied().unwrap_or(0);
        if epoch < floor {
            return Err(Refusal::Stale { held: floor, offered: epoch });
        }
        self.floor.insert(zone.clone(), epoch);
        Ok(self.zones.remove(zone).is_some())
    }

    pub fn get(&self, zone: &ZoneId) -> Option<&Publication<T>> {
        self.zones.get(zone)
    }

    /// The highest epoch the zone was published or withdrawn at (0: never).
    pub fn floor(&self, zone: &ZoneId) -> u64 {
        self.floor.get(zone).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ZoneId, &Publication<T>)> {
        self.zones.iter()
    }
}

/// The ExternalDNS TXT registry name of a record: the record type goes into the first label,
/// with `prefix` before it (`%{record_type}` in the prefix takes the type instead).
pub fn txt_name(prefix: &str, dns_name: &str, record_type: &str) -> String {
    let t = record_type.to_ascii_lowercase();
    let (first, rest) = match dns_name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (dns_name, None),
    };
    let label = if prefix.contains("%{record_type}") {
        format!("{}{first}", prefix.replace("%{record_type}", &t))
    } else {
        format!("{prefix}{t}-{first}")
    };
    match rest {
        Some(r) => format!("{label}.{r}"),
        None => label,
    }
}

/// The ExternalDNS TXT registry value, with veer's writer and epoch as extra
/// `external-dns/` labels (ExternalDNS keeps labels it does not know). Keys are sorted, as
/// ExternalDNS writes them.
pub fn txt_value(owner: &str, resource: &str, writer: &str, epoch: u64) -> String {
    format!("heritage=external-dns,external-dns/owner={owner},external-dns/resource={resource},external-dns/veer-epoch={epoch},external-dns/veer-writer={writer}")
}

/// Reads the labels of a TXT registry value (`None` without `heritage=external-dns`), as
/// ExternalDNS's `NewLabelsFromStringPlain` does.
pub fn parse_txt_value(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut heritage = false;
    for token in text.trim_matches('"').split(',') {
        let mut parts = token.split('=');
        let (Some(k), Some(v), None) = (parts.next(), parts.next(), parts.next()) else { continue };
        if k == "heritage" {
            if v != "external-dns" {
                return None;
            }
            heritage = true;
        } else if let Some(key) = k.strip_prefix("external-dns/") {
            labels.insert(key.to_string(), v.to_string());
        }
    }
    heritage.then_some(labels)
}

#[cfg(test)]
mod tests;
