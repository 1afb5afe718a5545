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

use std::time::{Duration, Instant};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        Some(since) if now.saturating_duration_since(since) >= params.stagger * rank_u32(rank) => {
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

#[cfg(test)]
mod tests;
