//! A node's lease loop: for every leased regional zone, read its keys in etcd, decide with
//! `veer_dns::takeover::decide`, and grant, take, renew or revoke as the rule says.
//!
//! Every look costs one read per zone, plus a renewal per lease held; looks come a tenth of the
//! shortest TTL apart (100 ms to 1 s).
//!
//! Each zone has two keys under `<prefix>zones/<region>/<origin>/`: `writer`, created only while
//! absent and bound to the holder's lease (its `create_revision` is the zone's epoch), and
//! `home-ready`, which the home keeps under a lease of its own while it can serve, so that
//! standbys can time the hold-down before handing the zone back. What the loop sees goes out
//! twice: on a watch that changes only when a holder, an epoch or a right to write does (the DNS
//! reconcile loop follows it), and in [`LiveLeases`], stored at every look with the newest
//! deadline, which a zone writer checks the instant before it sends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use veer_dns::takeover::{decide, Intent, LeaseStatus, LeaseView, LeaseZone, Leases, LiveLeases, ReadySince, Tenure, View, ZoneKey};

use crate::{clock, Etcd, EtcdError, KeepAlive, LeaseId, Take};

/// How often the loop looks at every zone: a tenth of the shortest lease TTL, within these bounds
/// (a renewal per look keeps a tenure far from its deadline; a free lease is seen within a look).
const MIN_STEP: Duration = Duration::from_millis(100);
const MAX_STEP: Duration = Duration::from_secs(1);

fn step(zones: &[LeaseZone]) -> Duration {
    zones.iter().map(|z| z.params.ttl / 10).min().unwrap_or(MAX_STEP).clamp(MIN_STEP, MAX_STEP)
}

/// What the lease loop needs to know of its node.
#[derive(Clone, Debug)]
pub struct LeaseLoopConfig {
    /// This node's cluster, as ClusterIdentities and takeovers name it.
    pub me: String,
    pub endpoints: Vec<String>,
    /// Where veer's keys live, ending with `/` (`/veer/` by default).
    pub prefix: String,
    /// Longest wait for one etcd call: keep it well under the shortest lease TTL.
    pub timeout: Duration,
}

/// Called when a zone's holder, epoch or this node's right to write changes (hand-overs).
pub type OnChange = Arc<dyn Fn(&ZoneKey, Option<&LeaseStatus>, &LeaseStatus) + Send + Sync>;

/// A running lease loop.
pub struct LeaseLoop {
    /// Every zone's status; changes on hand-overs, not on renewals.
    pub leases: watch::Receiver<Arc<Leases>>,
    pub live: LiveLeases,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// One zone's lease state on this node.
#[derive(Default)]
struct ZoneState {
    /// The writer lease this node holds, with its keep-alive stream (`None` in the stream slot
    /// after the stream ended: it is opened again at the next renewal).
    held: Option<(LeaseId, Option<KeepAlive>)>,
    /// The home's readiness lease.
    ready: Option<(LeaseId, KeepAlive)>,
    free_since: Option<Instant>,
    /// Whether this node has seen the writer key held since it started: until it has, a free
    /// lease may only mean the home is starting too, and a standby gives it one TTL first.
    seen_held: bool,
    /// The holder and epoch the last successful read found.
    last_read: Option<(Option<String>, u64)>,
    home_ready: ReadySince,
    tenure: Option<Tenure>,
}

// === impl LeaseLoop ===

impl LeaseLoop {
    /// Starts the loop: it connects (and reconnects) by itself, follows `zones` and `healthy`,
    /// and runs until [`LeaseLoop::stop`].
    pub fn spawn(
        cfg: LeaseLoopConfig,
        zones: watch::Receiver<Vec<LeaseZone>>,
        healthy: watch::Receiver<bool>,
        on_change: Option<OnChange>,
    ) -> LeaseLoop {
        let (tx, leases) = watch::channel(Arc::new(Leases::new()));
        let live = LiveLeases::default();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(cfg, zones, healthy, on_change, tx, live.clone(), stop_rx));
        LeaseLoop { leases, live, stop, task }
    }

    /// Stops the loop as a crashed node stops: nothing is revoked, so its leases run out by
    /// themselves (what tests of a killed holder need).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Stops the loop, revoking the leases it holds so the next writer takes over at once
    /// rather than after the TTL (a killed node's leases run out by themselves).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run(
    cfg: LeaseLoopConfig,
    mut zones_rx: watch::Receiver<Vec<LeaseZone>>,
    healthy: watch::Receiver<bool>,
    on_change: Option<OnChange>,
    tx: watch::Sender<Arc<Leases>>,
    live: LiveLeases,
    mut stop: watch::Receiver<bool>,
) {
    let mut etcd: Option<Etcd> = None;
    let mut states: BTreeMap<ZoneKey, ZoneState> = BTreeMap::new();
    let mut connect_error: Option<String> = None;
    let mut every = MIN_STEP;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let zones = zones_rx.borrow_and_update().clone();
        every = step(&zones);
        if etcd.is_none() {
            match Etcd::connect(&cfg.endpoints, cfg.timeout).await {
                Ok(c) => {
                    tracing::info!(target: "veer::takeover", endpoints = ?cfg.endpoints, "connected to etcd");
                    etcd = Some(c);
                    connect_error = None;
                }
                Err(e) => {
                    if connect_error.as_deref() != Some(&e.to_string()) {
                        tracing::warn!(target: "veer::takeover", "cannot reach etcd: {e}");
                    }
                    connect_error = Some(e.to_string());
                }
            }
        }
        let now_healthy = *healthy.borrow();
        let mut next = Leases::new();
        for zone in &zones {
            let state = states.entry(zone.key.clone()).or_default();
            let status = match etcd.as_mut() {
                Some(client) => look(client, &cfg, zone, state, now_healthy).await,
                None => unreachable_status(state, connect_error.clone().unwrap_or_default()),
            };
            next.insert(zone.key.clone(), status);
        }
        // Zones no longer leased (a takeover removed from the manifests): give them up.
        let gone: Vec<ZoneKey> = states.keys().filter(|k| !zones.iter().any(|z| z.key == **k)).cloned().collect();
        for key in gone {
            if let (Some(state), Some(client)) = (states.remove(&key), etcd.as_mut()) {
                release(client, state).await;
            }
        }
        live.store(next.clone());
        let before = tx.borrow().clone();
        if veer_dns::takeover::differs(&before, &next) {
            if let Some(f) = &on_change {
                for (key, status) in &next {
                    let old = before.get(key);
                    if old.map(|o| (&o.holder, o.epoch, o.tenure.is_some()))
                        != Some((&status.holder, status.epoch, status.tenure.is_some()))
                    {
                        f(key, old, status);
                    }
                }
            }
            tx.send_replace(Arc::new(next));
        }
    }
    if let Some(client) = etcd.as_mut() {
        for (_, state) in std::mem::take(&mut states) {
            release(client, state).await;
        }
    }
}

/// What a zone's status says while etcd cannot be reached: the tenure lapses by itself, and
/// the holder last read stands (with the error beside it) until a read says otherwise.
fn unreachable_status(state: &mut ZoneState, error: String) -> LeaseStatus {
    let now = clock::now();
    if state.tenure.is_some_and(|t| !t.may_write(now)) {
        state.tenure = None;
    }
    let (holder, epoch) = state.last_read.clone().unwrap_or_default();
    LeaseStatus {
        holder,
        epoch,
        intent: Intent::Wait,
        reason: "etcd unreachable: no decision until it answers",
        home_ready: false,
        error: Some(error),
        tenure: state.tenure,
    }
}

/// One look at a zone: keep the home's readiness key, read both keys, decide and act.
async fn look(etcd: &mut Etcd, cfg: &LeaseLoopConfig, zone: &LeaseZone, state: &mut ZoneState, healthy: bool) -> LeaseStatus {
    let me = cfg.me.as_str();
    let (writer_key, ready_key) = (zone.key.writer_key(&cfg.prefix), zone.key.ready_key(&cfg.prefix));
    if zone.roles.home == me {
        state.ready = announce(etcd, zone, ready_key.as_bytes(), me, healthy, state.ready.take()).await;
    }
    let now = clock::now();
    // A tenure past its deadline no longer allows writing; it is kept (not cleared) so a late
    // renewal the server still granted can extend it again.
    let dir = format!("{}zones/{}/{}/", cfg.prefix, zone.key.region, zone.key.origin);
    // One retry: a client balanced over the members may have sent the first try to one that
    // is down.
    let read = match etcd.get_prefix(dir.as_bytes()).await {
        Err(_) => etcd.get_prefix(dir.as_bytes()).await,
        ok => ok,
    };
    let (writer, ready) = match read {
        Ok((_, entries)) => {
            (entries.iter().find(|e| e.key == writer_key.as_bytes()).cloned(), entries.iter().any(|e| e.key == ready_key.as_bytes()))
        }
        Err(e) => {
            // A failed read decides nothing; a holder that cannot renew either stops at its deadline.
            let mut status = unreachable_status(state, e.to_string());
            status.reason = "etcd read failed: no decision until it answers";
            if let Some((_, Some(keep))) = state.held.as_mut() {
                renew(keep, &mut state.tenure, zone).await;
            }
            return status;
        }
    };
    state.home_ready.observe(ready, now);
    let (lease, holder, epoch) = match &writer {
        Some(e) => {
            state.free_since = None;
            state.seen_held = true;
            let holder = String::from_utf8_lossy(&e.value).into_owned();
            let epoch = u64::try_from(e.create_revision).unwrap_or(0);
            (LeaseView::Held { holder: holder.clone(), epoch }, Some(holder), epoch)
        }
        None => {
            let since = if state.seen_held { now } else { now + zone.params.ttl };
            (LeaseView::Free { since: *state.free_since.get_or_insert(since) }, None, 0)
        }
    };
    state.last_read = Some((holder.clone(), epoch));
    // The key names this node but this process holds no lease on it: a previous run's, which
    // runs out by itself; it is not this node's to write under.
    if holder.as_deref() == Some(me) && state.held.is_none() {
        state.tenure = None;
    }
    let view = View { me, healthy, lease, home_ready_since: state.home_ready.get() };
    let decision = decide(&zone.roles, &zone.params, &view, now);
    tracing::trace!(target: "veer::takeover", zone = %zone.key, intent = ?decision.intent, reason = decision.reason, holder = ?holder, epoch, healthy, held = state.held.is_some(), "look");
    let mut holder = holder;
    let mut epoch = epoch;
    match decision.intent {
        Intent::Contend => {
            let sent = clock::now();
            match etcd.grant(zone.params.ttl).await {
                Ok(lease) => match etcd.take_if_absent(writer_key.as_bytes(), me.as_bytes(), lease.id).await {
                    Ok(Take::Taken { revision }) => {
                        let taken = u64::try_from(revision).unwrap_or(0);
                        state.tenure = Some(Tenure::granted(taken, sent, lease.ttl, &zone.params));
                        state.held = Some((lease.id, etcd.keep_alive(lease.id).await.ok()));
                        (holder, epoch) = (Some(me.to_string()), taken);
                        tracing::info!(target: "veer::takeover", zone = %zone.key, epoch = taken, "took the zone's lease: {}", decision.reason);
                    }
                    Ok(Take::Held(e)) => {
                        let _ = etcd.revoke(lease.id).await;
                        (holder, epoch) =
                            (Some(String::from_utf8_lossy(&e.value).into_owned()), u64::try_from(e.create_revision).unwrap_or(0));
                    }
                    Err(e) => {
                        tracing::warn!(target: "veer::takeover", zone = %zone.key, "taking the lease: {e}");
                        let _ = etcd.revoke(lease.id).await;
                    }
                },
                Err(e) => tracing::warn!(target: "veer::takeover", zone = %zone.key, "lease grant: {e}"),
            }
        }
        Intent::Keep => {
            if let Some((lease, keep)) = state.held.as_mut() {
                if keep.is_none() {
                    *keep = etcd.keep_alive(*lease).await.ok();
                }
                if let Some(k) = keep.as_mut() {
                    if !renew(k, &mut state.tenure, zone).await {
                        state.held = None;
                    }
                }
            }
        }
        Intent::Release => {
            state.tenure = None;
            if let Some((lease, _)) = state.held.take() {
                tracing::info!(target: "veer::takeover", zone = %zone.key, "releasing the zone's lease: {}", decision.reason);
                match etcd.revoke(lease).await {
                    Ok(()) => (holder, epoch) = (None, 0),
                    Err(e) => tracing::warn!(target: "veer::takeover", zone = %zone.key, "revoke (the lease runs out by itself): {e}"),
                }
            }
        }
        Intent::Wait => {}
    }
    LeaseStatus { holder, epoch, intent: decision.intent, reason: decision.reason, home_ready: ready, error: None, tenure: state.tenure }
}

/// Renews a held writer lease; false when the server says it is gone (then so is the tenure).
async fn renew(keep: &mut KeepAlive, tenure: &mut Option<Tenure>, zone: &LeaseZone) -> bool {
    let sent = clock::now();
    match keep.renew().await {
        Ok(ttl) => {
            *tenure = tenure.map(|t| t.renewed(sent, ttl, &zone.params));
            true
        }
        Err(EtcdError::LeaseExpired { .. }) => {
            tracing::warn!(target: "veer::takeover", zone = %zone.key, "the zone's lease expired: stopped writing");
            *tenure = None;
            false
        }
        // Not answered: the tenure lapses at its deadline unless a later renewal gets through.
        Err(e) => {
            tracing::warn!(target: "veer::takeover", zone = %zone.key, "renewal: {e}");
            true
        }
    }
}

/// Revokes what a zone's state holds (best effort: a lease not revoked runs out).
async fn release(etcd: &mut Etcd, state: ZoneState) {
    for lease in state.held.map(|(l, _)| l).into_iter().chain(state.ready.map(|(l, _)| l)) {
        let _ = etcd.revoke(lease).await;
    }
}

/// The home's readiness key: present, under a lease of its own, while it can serve; revoked the
/// moment it cannot. Returns the readiness lease now held.
async fn announce(
    etcd: &mut Etcd,
    zone: &LeaseZone,
    ready_key: &[u8],
    me: &str,
    healthy: bool,
    held: Option<(LeaseId, KeepAlive)>,
) -> Option<(LeaseId, KeepAlive)> {
    match (healthy, held) {
        (true, Some((lease, mut keep))) => keep.renew().await.ok().map(|_| (lease, keep)),
        (true, None) => {
            let lease = etcd.grant(zone.params.ttl).await.ok()?;
            match etcd.take_if_absent(ready_key, me.as_bytes(), lease.id).await {
                Ok(Take::Taken { .. }) => Some((lease.id, etcd.keep_alive(lease.id).await.ok()?)),
                _ => {
                    let _ = etcd.revoke(lease.id).await;
                    None
                }
            }
        }
        (false, Some((lease, _))) => {
            let _ = etcd.revoke(lease).await;
            None
        }
        (false, None) => None,
    }
}
