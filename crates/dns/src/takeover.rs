//! Automatic regional takeover, pure: who should hold a zone's writer lease, when a standby
//! hands the zone back, and until when a holder may write. Time is passed in; no I/O.
//!
//! The lease lives in etcd (`veer-etcd`); the writer key is created only while absent and is
//! bound to the holder's lease, so its `create_revision` is new at every hand-over and serves as
//! the zone's epoch (the fencing token written beside the records). Safety rests on one rule: a
//! holder counts its lease from the moment it *sent* the renewal the server granted, and stops
//! writing `drift_margin` before that lease can end. The server counts from when it received
//! the renewal, which is later, so the holder's own deadline falls before the lease can have
//! expired in the majority's view, even with clocks running apart by up to the margin over one
//! TTL; and no other node can create the writer key before that expiry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use veer_model::set::ManifestSet;

/// The clusters that may write one regional zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The cluster of the zone's own region.
    pub home: String,
    /// Clusters named to take the zone when its home cannot, in order of preference.
    pub standbys: Vec<String>,
    /// A cluster whose `adoptsRegions` lists the region: the manual override, which wins.
    pub adopter: Option<String>,
}

/// Timing of leases and hand-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The lease TTL asked of etcd.
    pub ttl: Duration,
    /// Subtracted from every write deadline: covers clocks running apart over one TTL.
    pub drift_margin: Duration,
    /// How long the home must have stood ready, unbroken, before a standby hands it the zone.
    pub hold_down: Duration,
    /// How much longer each later standby waits after the lease fell free than the one before it.
    pub stagger: Duration,
}

/// The writer lease of a zone as this node last read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// No writer key; free since this node saw it so (its own clock).
    Free { since: Instant },
    /// The writer key stands, created at `epoch` by `holder`.
    Held { holder: String, epoch: u64 },
}

/// What this node sees of one zone at the moment of deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View<'a> {
    pub me: &'a str,
    /// This node can serve: its gateway is up and its health checks find healthy endpoints.
    pub healthy: bool,
    pub lease: LeaseView,
    /// Since when (this node's clock) the home's readiness key has stood without a break.
    pub home_ready_since: Option<Instant>,
}

/// What this node should do about the zone's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Try to create the writer key (it may lose the transaction to another node).
    Contend,
    /// Hold the lease and keep renewing it.
    Keep,
    /// Stop writing, then revoke the lease so the right node can take the zone.
    Release,
    /// Do nothing: another node should hold it, or nobody may yet.
    Wait,
}

/// An intent and why, for `/status` and `/events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub intent: Intent,
    pub reason: &'static str,
}

/// The rule: an adopter named by `adoptsRegions` holds the zone whatever the health says (an
/// operator's explicit decision); otherwise the home while it can serve; otherwise a standby, the
/// first listed first; and a standby holds on until the home has been ready for the hold-down,
/// so a flapping home does not move the zone back and forth.
pub fn decide(roles: &Roles, params: &Params, view: &View<'_>, now: Instant) -> Decision {
    let holding = matches!(&view.lease, LeaseView::Held { holder, .. } if holder == view.me);
    let free_since = match &view.lease {
        LeaseView::Free { since } => Some(*since),
        LeaseView::Held { .. } => None,
    };
    let d = |intent, reason| Decision { intent, reason };
    if let Some(adopter) = &roles.adopter {
        return match (adopter == view.me, holding, free_since) {
            (true, true, _) => d(Intent::Keep, "adoptsRegions names this cluster"),
            (true, false, Some(_)) => d(Intent::Contend, "adoptsRegions names this cluster"),
            (true, false, None) => d(Intent::Wait, "adoptsRegions names this cluster; waiting for the holder to release"),
            (false, true, _) => d(Intent::Release, "adoptsRegions names another cluster"),
            (false, false, _) => d(Intent::Wait, "adoptsRegions names another cluster"),
        };
    }
    if !view.healthy {
        return if holding { d(Intent::Release, "this cluster cannot serve") } else { d(Intent::Wait, "this cluster cannot serve") };
    }
    if roles.home == view.me {
        return match (holding, free_since) {
            (true, _) => d(Intent::Keep, "home region, serving"),
            (false, Some(_)) => d(Intent::Contend, "home region, serving; lease free"),
            (false, None) => d(Intent::Wait, "home region ready; the standby hands back after the hold-down"),
        };
    }
    let Some(rank) = roles.standbys.iter().position(|s| s == view.me) else {
        return if holding { d(Intent::Release, "not named for this region") } else { d(Intent::Wait, "not named for this region") };
    };
    let home_settled = view.home_ready_since.is_some_and(|t| now.saturating_duration_since(t) >= params.hold_down);
    if holding {
        return if home_settled {
            d(Intent::Release, "home ready for the hold-down: handing back")
        } else {
            d(Intent::Keep, "standby holding for the home region")
        };
    }
    match free_since {
        Some(_) if view.home_ready_since.is_some() => d(Intent::Wait, "lease free and the home is ready: the home takes it"),
        // `since` may lie ahead: a node that has not yet seen the lease held gives the home
        // time to claim it (see `veer_etcd::zones`).
        Some(since) if now >= since + params.stagger * rank_u32(rank) => {
            d(Intent::Contend, "lease free and the home is not ready: standby takes over")
        }
        Some(_) => d(Intent::Wait, "lease free: an earlier standby goes first"),
        None => d(Intent::Wait, "another cluster holds the zone"),
    }
}

fn rank_u32(rank: usize) -> u32 {
    u32::try_from(rank).unwrap_or(u32::MAX)
}

/// Until when a holder may write after the server granted `ttl` to a renewal (or grant) that
/// this node sent at `sent_at`: strictly before the lease can end in the server's view.
pub fn write_deadline(sent_at: Instant, ttl: Duration, params: &Params) -> Instant {
    sent_at + ttl.saturating_sub(params.drift_margin)
}

/// A holder's right to write, renewed by every granted renewal and lapsing by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenure {
    pub epoch: u64,
    pub until: Instant,
}

impl Tenure {
    /// The tenure a lease grant or renewal sent at `sent_at` and granted `ttl` gives.
    pub fn granted(epoch: u64, sent_at: Instant, ttl: Duration, params: &Params) -> Tenure {
        Tenure { epoch, until: write_deadline(sent_at, ttl, params) }
    }

    /// A later granted renewal; a renewal answered late never shortens what an earlier gave.
    pub fn renewed(self, sent_at: Instant, ttl: Duration, params: &Params) -> Tenure {
        Tenure { epoch: self.epoch, until: self.until.max(write_deadline(sent_at, ttl, params)) }
    }

    pub fn may_write(&self, now: Instant) -> bool {
        now < self.until
    }
}

/// Since when the home's readiness has stood unbroken, as a standby sees it: any gap (the key
/// deleted, its lease expired, the home reporting unready) starts the hold-down over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadySince(Option<Instant>);

impl ReadySince {
    pub fn observe(&mut self, ready: bool, now: Instant) {
        self.0 = match (ready, self.0) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(now),
        };
    }

    pub fn get(&self) -> Option<Instant> {
        self.0
    }
}

/// The highest epoch seen in a zone: a write under an older one is refused, so the epoch in the
/// zone never goes back (the DNS server enforces the same through the update's prerequisite).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fence {
    highest: u64,
}

impl Fence {
    /// Records `epoch` as seen; whether a write under it may go out.
    pub fn admit(&mut self, epoch: u64) -> bool {
        if epoch < self.highest {
            return false;
        }
        self.highest = epoch;
        true
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }
}

/// A regional zone whose writer holds an etcd lease (a DNSZone with `spec.takeover`), and who
/// may hold it, as every node reads them from the same manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseZone {
    pub key: ZoneKey,
    pub roles: Roles,
    pub params: Params,
}

/// A leased zone's name: the DNSZone's region and origin.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ZoneKey {
    pub region: String,
    pub origin: String,
}

impl std::fmt::Display for ZoneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.origin, self.region)
    }
}

impl ZoneKey {
    /// The etcd key of the zone's writer, under `prefix` (which ends with `/`).
    pub fn writer_key(&self, prefix: &str) -> String {
        format!("{prefix}zones/{}/{}/writer", self.region, self.origin)
    }

    /// The key the home keeps while it can serve, which standbys time the hold-down by.
    pub fn ready_key(&self, prefix: &str) -> String {
        format!("{prefix}zones/{}/{}/home-ready", self.region, self.origin)
    }

    /// Whether a regional zone's `domain` of `region` lies in this zone (at or below its origin).
    pub fn covers(&self, region: &str, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        region == self.region && (d == self.origin || d.strip_suffix(&self.origin).is_some_and(|rest| rest.ends_with('.')))
    }
}

/// Added to a standby's wait per rank, so the first listed standby takes a free lease first.
const STAGGER: Duration = Duration::from_secs(1);

/// The leased zones of a manifest set. The home is the cluster of the zone's region (the lowest
/// named when several are; the others stand by first); the adopter is a cluster whose
/// `adoptsRegions` lists the region, the manual override.
pub fn lease_zones(set: &ManifestSet) -> Vec<LeaseZone> {
    let mut out = Vec::new();
    for target in &set.dns_zones {
        let z = &target.zone;
        let Some(t) = &z.takeover else { continue };
        // Clusters by the name their identity is labelled with (seed 002's identities all say
        // `cluster: aks01`).
        let mut in_region: Vec<&str> =
            set.cluster_identities.iter().filter(|(_, ci)| ci.region == z.region).map(|(owner, _)| owner.as_str()).collect();
        in_region.sort_unstable();
        in_region.dedup();
        let home = in_region.first().map_or_else(String::new, |h| (*h).to_string());
        let mut standbys: Vec<String> = in_region.iter().skip(1).map(|c| (*c).to_string()).collect();
        standbys.extend(t.standbys.iter().filter(|s| !in_region.contains(&s.as_str())).cloned());
        let mut adopters: Vec<&str> = set
            .cluster_identities
            .iter()
            .filter(|(_, ci)| ci.adopts_regions.iter().any(|(r, _)| *r == z.region))
            .map(|(owner, _)| owner.as_str())
            .collect();
        adopters.sort_unstable();
        out.push(LeaseZone {
            key: ZoneKey { region: z.region.clone(), origin: z.zone.clone() },
            roles: Roles { home, standbys, adopter: adopters.first().map(|a| (*a).to_string()) },
            params: Params {
                ttl: t.lease_ttl,
                // A tenth of the TTL covers clock rates apart by far more than real clocks drift.
                drift_margin: (t.lease_ttl / 10).max(Duration::from_millis(200)),
                hold_down: t.hold_down,
                stagger: STAGGER,
            },
        });
    }
    out
}

/// One leased zone as this node's lease loop last saw it: for the DNS reconcile loop (whether
/// this node may write, at which epoch) and for `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseStatus {
    /// The cluster whose writer key stands, if any.
    pub holder: Option<String>,
    /// The writer key's `create_revision`: the zone's epoch under this holder (0 when free).
    pub epoch: u64,
    pub intent: Intent,
    pub reason: &'static str,
    /// Whether the home's readiness key stands.
    pub home_ready: bool,
    /// The last etcd failure, while etcd cannot be read (decisions wait; a tenure lapses).
    pub error: Option<String>,
    /// This node's right to write, when it holds the lease.
    #[serde(skip)]
    pub tenure: Option<Tenure>,
}

impl LeaseStatus {
    /// The epoch this node may write under now, if any.
    pub fn writable(&self, now: Instant) -> Option<u64> {
        self.tenure.filter(|t| t.may_write(now)).map(|t| t.epoch)
    }
}

/// Every leased zone's status; absent: the lease loop has not looked yet.
pub type Leases = BTreeMap<ZoneKey, LeaseStatus>;

/// The lease loop's newest view, renewals included, stored at every look: what a zone writer
/// checks the instant before it sends an UPDATE (the watch the reconcile loop follows changes
/// only when a holder, an epoch or a right to write does, not at every renewal).
#[derive(Clone, Debug, Default)]
pub struct LiveLeases(std::sync::Arc<arc_swap::ArcSwap<Leases>>);

impl LiveLeases {
    pub fn store(&self, leases: Leases) {
        self.0.store(std::sync::Arc::new(leases));
    }

    pub fn load(&self) -> std::sync::Arc<Leases> {
        self.0.load_full()
    }

    /// Whether this node may still write `zone` under `epoch` at `now`.
    pub fn may_write(&self, zone: &ZoneKey, epoch: u64, now: Instant) -> bool {
        self.0.load().get(zone).and_then(|s| s.writable(now)) == Some(epoch)
    }
}

/// What the DNS server follows of a node's lease loop.
#[derive(Clone, Debug)]
pub struct LeaseFeed {
    pub leases: tokio::sync::watch::Receiver<std::sync::Arc<Leases>>,
    pub live: LiveLeases,
}

/// Whether two looks differ in what the reconcile loop and operators see (a renewal that only
/// moves a deadline further does not count).
pub fn differs(a: &Leases, b: &Leases) -> bool {
    a.len() != b.len()
        || a.iter().zip(b).any(|((ka, x), (kb, y))| {
            ka != kb
                || x.holder != y.holder
                || x.epoch != y.epoch
                || x.intent != y.intent
                || x.reason != y.reason
                || x.home_ready != y.home_ready
                || x.error != y.error
                || x.tenure.map(|t| t.epoch) != y.tenure.map(|t| t.epoch)
        })
}

#[cfg(test)]
mod tests;
