//! The control loop: it alone owns mutable routing state (manifests, outlier detectors, health
//! checks, re-admission probes) and publishes a new snapshot whenever any of it changes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use veer_core::health::{answer_verdict, failure_verdict, HealthRun, ProbeVerdict, Thresholds, Transition};
use veer_core::names::{ClusterName, DestinationName};
use veer_core::outlier::{EjectionReason, OutlierConfig, OutlierDetector, Verdict};
use veer_core::policy::{ActiveHealthCheck, CheckProtocol};
use veer_core::readmission::{readmission, Readmission, SweepSchedule, PROBE_AGAIN_AFTER, PROBE_TIMEOUT};
use veer_core::slowstart::SlowStart;
use veer_core::topology::EndpointKey;
use veer_core::topology::Labels;
use veer_model::inventory::{EndpointSource, Inventory};
use veer_model::resolve::View;
use veer_model::set::ManifestSet;

use crate::clock::{self, Rng};
use crate::events::{EventKind, Events, NewEvent};
use crate::external::External;
use crate::grpc_probe;
use crate::manifests::{Baseline, Reload, Watcher};
use crate::mesh::catalog::{self, Catalog};
use crate::mesh::peers::{Aging, Change, PeerMsg, Peers};
use crate::metrics::ControlMetrics;
use crate::status::ControlStatus;
use veer_core::outcome::TryEnd;
use veer_gateway::failure::client_failure;
use veer_gateway::link::{PeerLink, X_VEER_EASTWEST_ERROR};
use veer_gateway::remote::Remote;
use veer_gateway::shared::{OutcomeReport, Shared};
use veer_gateway::snapshot::{DestState, Snapshot, Unhealthy, Warming};
use veer_gateway::upstream::tls::TlsClient;

/// Where the node's manifests come from and who it is.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub files: Vec<PathBuf>,
    pub cluster: ClusterName,
    pub labels: Labels,
    /// How often [`crate::manifests`] looks at the manifest files besides inotify's wake-ups
    /// (their metadata; their contents are read when it changed, and every 20 looks regardless).
    pub reload_every: Duration,
    /// Where every accepted set is saved, for a restart whose files do not validate.
    pub state_dir: Option<PathBuf>,
    /// The addresses of `spec.gateway.ports` the node bound at start (as configured): a set
    /// that needs others is refused, since its routes would be served on sockets that do not
    /// exist (or no longer should).
    pub listener_addrs: Vec<std::net::SocketAddr>,
    /// Set when the node is meshed with peer nodes.
    pub mesh: Option<MeshSetup>,
    /// Manifests and this cluster's endpoints from an API server, beside the files.
    pub external: Option<External>,
}

/// What a meshed node's control loop needs: how to age peers, how to reach them, and where to
/// publish its own catalog.
#[derive(Clone)]
pub struct MeshSetup {
    pub aging: Aging,
    pub client: Arc<rustls::ClientConfig>,
    pub catalog: watch::Sender<Arc<Catalog>>,
}

impl std::fmt::Debug for MeshSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshSetup").field("aging", &self.aging).finish_non_exhaustive()
    }
}

/// Results of probes and health checks, sent back to the loop by the tasks that run them.
#[derive(Debug)]
enum Msg {
    /// What a re-admission probe decided: readmit, or eject again for this reason (a probe
    /// that could not be sent is tried again by its task, and never reported).
    Readmission {
        dest: DestinationName,
        endpoint: EndpointKey,
        rule: Result<(), EjectionReason>,
        detail: String,
    },
    Health {
        dest: DestinationName,
        endpoint: EndpointKey,
        ok: bool,
        detail: String,
    },
}

/// An endpoint warming up after it came back: when, under which settings, and when its tables
/// are rebuilt next (times since the loop started).
#[derive(Clone, Copy, Debug)]
struct Warmup {
    since: Duration,
    slow_start: SlowStart,
    next: Duration,
}

#[derive(Debug)]
struct HealthState {
    run: HealthRun,
    task: JoinHandle<()>,
}

/// The control loop's state.
pub struct Control {
    cfg: ControlConfig,
    shared: Arc<Shared>,
    events: Arc<Events>,
    metrics: Arc<ControlMetrics>,
    /// What `veer status` shows of the loop's state, published here.
    status: Arc<ControlStatus>,
    /// The policy: what the manifests say.
    set: ManifestSet,
    /// The endpoints each cluster has: from the manifests, except on a meshed node, where
    /// every other cluster's are what its node announced (`catalog::apply_peers`).
    inventory: Inventory,
    /// What `set` was read from, until `run` hands it to the watcher.
    baseline: Baseline,
    detectors: HashMap<DestinationName, OutlierDetector<EndpointKey>>,
    next_sweep: HashMap<DestinationName, SweepSchedule>,
    /// Hosts whose ejection ended but whose re-admission probe has not answered yet.
    pending: HashSet<(DestinationName, EndpointKey)>,
    health: HashMap<(DestinationName, EndpointKey), HealthState>,
    /// Endpoints in slow start, by (destination, endpoint).
    warming: HashMap<(DestinationName, EndpointKey), Warmup>,
    /// Each destination's active priority, and the level serving at it.
    active: HashMap<DestinationName, (i64, Option<ActiveLevel>)>,
    /// Destinations whose health changed since the last snapshot; `None`: rebuild everything
    /// (start, reload).
    dirty: Option<HashSet<DestinationName>>,
    generation: u64,
    start: Instant,
    rng: Rng,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Every accepted manifest set, for those that follow it (the DNS server's records, the
    /// east-west listener); created when the first subscribes.
    manifests: Option<watch::Sender<Arc<ManifestSet>>>,
    /// Peer clusters, when meshed.
    peers: Option<Peers>,
    peer_rx: Option<mpsc::UnboundedReceiver<PeerMsg>>,
    /// Remote health changed since the last snapshot: every table is rebuilt.
    remote_dirty: bool,
}

/// The outlier detection veer applies when a destination configures none: only decisive
/// failures (refused connects, resets) eject, for 30 s, at most half the endpoints.
/// Why a destination's active priority moved from `before` to `active` (-1: no priority gets
/// load), `serving` being the healthy endpoints at `active`. From none to some is neither a
/// loss nor a recovery of one priority: the destination now has endpoints (the first time, or
/// again), and -1 is never printed as if it were a priority.
fn priority_change_reason(before: i64, active: i64, serving: usize) -> String {
    let endpoints = if serving == 1 { "endpoint" } else { "endpoints" };
    if active < 0 {
        "no healthy endpoint left".to_string()
    } else if before < 0 {
        format!("now has {serving} healthy {endpoints} at priority {active}")
    } else if active > before {
        format!("priority {before} lost its healthy endpoints")
    } else {
        format!("priority {active} is healthy again")
    }
}

/// The level of a destination's rule that serves at its active priority.
#[derive(Clone, Debug)]
struct ActiveLevel {
    /// The rule's priority, before empty levels are dropped.
    rank: u32,
    /// Why its endpoints sit there, as `veer explain` says it.
    why: String,
    endpoints: Vec<veer_core::topology::EndpointKey>,
}

/// Why traffic moved when the active priority kept its number `priority` but another level of
/// the rule now serves at it (priorities are numbered without gaps, as Istio hands them to
/// Envoy: when a whole level goes, the next takes its number), or `None` if it did not move:
/// some endpoint serves on (a scale-down, a new rule for the same endpoints), or the new
/// endpoints sit at the same level (a rolling update).
fn level_change_reason(priority: u32, from: &ActiveLevel, to: &ActiveLevel) -> Option<String> {
    if from.rank == to.rank || from.endpoints.iter().any(|e| to.endpoints.contains(e)) {
        return None;
    }
    Some(if to.rank > from.rank {
        format!("priority {priority}'s endpoints ({}) are gone; priority {priority} is now {}", from.why, to.why)
    } else {
        format!("priority {priority} is {} again, which the rule prefers to {}", to.why, from.why)
    })
}

fn fallback_outlier() -> OutlierConfig {
    OutlierConfig {
        enforcing_consecutive_5xx: 0,
        enforcing_consecutive_gateway_failure: 0,
        enforcing_consecutive_local_origin_failure: 0,
        max_ejection_percent: 50,
        interval: Duration::from_secs(1),
        ..OutlierConfig::default()
    }
}

impl Control {
    pub fn new(
        cfg: ControlConfig,
        shared: Arc<Shared>,
        events: Arc<Events>,
        metrics: Arc<ControlMetrics>,
        status: Arc<ControlStatus>,
        set: ManifestSet,
        baseline: Baseline,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut c = Control {
            cfg,
            shared,
            events,
            metrics,
            status,
            set,
            inventory: Inventory::default(),
            baseline,
            detectors: HashMap::new(),
            next_sweep: HashMap::new(),
            pending: HashSet::new(),
            health: HashMap::new(),
            warming: HashMap::new(),
            active: HashMap::new(),
            dirty: None,
            generation: 0,
            start: clock::now(),
            rng: Rng::new(),
            tx,
            rx,
            manifests: None,
            peers: None,
            peer_rx: None,
            remote_dirty: false,
        };
        if let Some(mesh) = &c.cfg.mesh {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut peers = Peers::new(&c.cfg.cluster, mesh.aging, mesh.client.clone(), tx, c.events.clone(), c.metrics.clone());
            peers.sync(&c.set);
            c.peers = Some(peers);
            c.peer_rx = Some(rx);
        }
        c.take_file_endpoints();
        c.rebuild();
        c
    }

    /// Takes the endpoints the manifests list: every cluster's, or on a meshed node only its
    /// own cluster's, since each peer announces its own (the next full rebuild applies them).
    fn take_file_endpoints(&mut self) {
        if self.peers.is_some() {
            self.inventory.replace_from_manifests(&self.set, &self.cfg.cluster);
        } else {
            self.inventory = Inventory::from_manifests(&self.set);
        }
        self.take_slice_endpoints();
    }

    /// Makes each read cluster's list its WorkloadEntries and its API server's EndpointSlice
    /// endpoints. On a meshed node only its own cluster's: as with WorkloadEntries, each peer
    /// announces its own cluster's endpoints, with their health.
    fn take_slice_endpoints(&mut self) {
        let Some(slices) = self.cfg.external.as_ref().and_then(|e| e.endpoints.borrow().clone()) else { return };
        let own = self.cfg.cluster.as_str();
        for (cluster, records) in slices.iter().filter(|(c, _)| self.peers.is_none() || c.as_str() == own) {
            self.inventory.replace_from_manifests_and(&self.set, cluster, EndpointSource::Kubernetes, records);
        }
    }

    /// The manifest set in force now and every one a reload accepts later.
    pub fn watch_manifests(&mut self) -> watch::Receiver<Arc<ManifestSet>> {
        let set = &self.set;
        self.manifests.get_or_insert_with(|| watch::channel(Arc::new(set.clone())).0).subscribe()
    }

    fn now(&self) -> Duration {
        clock::since(self.start)
    }

    /// Notes that `dest`'s health changed (a full rebuild pending covers it anyway).
    fn touch(&mut self, dest: &DestinationName) {
        if let Some(d) = &mut self.dirty {
            d.insert(dest.clone());
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut outcomes: mpsc::UnboundedReceiver<OutcomeReport>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        // The watcher's thread ends when `_stop_watcher` is dropped with this loop.
        let (found, mut reloads) = mpsc::channel(1);
        let (_stop_watcher, stop) = std::sync::mpsc::channel::<()>();
        let watcher = Watcher::new(
            self.cfg.files.clone(),
            self.cfg.cluster.to_string(),
            self.cfg.labels.clone(),
            self.cfg.reload_every,
            std::mem::take(&mut self.baseline),
        )
        .with_health(self.metrics.manifest_watcher())
        .with_state_dir(self.cfg.state_dir.clone());
        let watcher = match &self.cfg.external {
            Some(e) => watcher.with_outside(e.documents.clone()),
            None => watcher,
        };
        let mut slices = self.cfg.external.as_ref().map(|e| e.endpoints.clone());
        if let Err(e) = watcher.spawn(found, stop) {
            tracing::error!(target: "veer::reload", "cannot start the manifest watcher, so manifest changes are not applied: {e}");
        }
        let mut refill = tokio::time::interval(Duration::from_secs(1));
        let mut peer_rx = self.peer_rx.take();
        loop {
            tokio::select! {
                Some(m) = async { match &mut peer_rx { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    let now = self.now();
                    let mut change = Change::default();
                    if let Some(p) = &mut self.peers {
                        change = p.on_msg(m, now);
                        while let Some(Ok(m)) = peer_rx.as_mut().map(|rx| rx.try_recv()) {
                            change = change.or(p.on_msg(m, now));
                        }
                    }
                    if self.apply(change) { self.rebuild(); }
                }
                Some(o) = outcomes.recv() => {
                    let mut changed = self.on_outcome(o);
                    // Drain what is already queued so a burst costs one rebuild.
                    while let Ok(o) = outcomes.try_recv() {
                        changed |= self.on_outcome(o);
                    }
                    if changed { self.rebuild(); }
                }
                Some(m) = self.rx.recv() => {
                    if self.on_msg(m) { self.rebuild(); }
                }
                _ = tick.tick() => {
                    let now = self.now();
                    let aged = self.peers.as_mut().map(|p| p.tick(now)).unwrap_or_default();
                    let peers_changed = self.apply(aged);
                    let stepped = self.warm_steps();
                    if self.sweep() || peers_changed || stepped { self.rebuild(); }
                    self.publish_status();
                }
                Some(r) = reloads.recv() => self.reload(r),
                changed = async { match &mut slices { Some(rx) => rx.changed().await, None => std::future::pending().await } } => {
                    if changed.is_err() {
                        // The source is gone (the node is stopping): its last endpoints stay.
                        slices = None;
                        continue;
                    }
                    // The EndpointSlices changed: this cluster's endpoints, resolved again.
                    self.take_slice_endpoints();
                    self.dirty = None;
                    self.rebuild();
                }
                _ = refill.tick() => {
                    for d in &self.shared.snapshot.load().destinations { d.budget.refill(); }
                }
                // A node dropped without stop() drops the sender: that ends the loop too.
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() { break; }
                }
            }
        }
        for (_, h) in self.health.drain() {
            h.task.abort();
        }
        if let Some(p) = &mut self.peers {
            p.stop();
        }
    }

    /// Notes what a peer change requires; returns whether a rebuild is due.
    fn apply(&mut self, change: Change) -> bool {
        if change.endpoints {
            self.dirty = None;
        } else if change.health {
            self.remote_dirty = true;
        }
        change.endpoints || change.health
    }

    /// Peers and active priorities for `veer status`.
    fn publish_status(&self) {
        let Some(p) = &self.peers else { return };
        self.status.peers.store(Arc::new(p.status()));
    }

    fn on_outcome(&mut self, o: OutcomeReport) -> bool {
        let now = self.now();
        if let Some((cluster, why)) = &o.gateway {
            let change = match &mut self.peers {
                Some(p) => p.gateway_failed(cluster, why, now),
                None => Change::default(),
            };
            return self.apply(change);
        }
        let Some(det) = self.detectors.get_mut(&o.destination) else { return false };
        let verdict = if o.decisive {
            det.eject_now(&o.endpoint, EjectionReason::ConnectFailure, now, &mut self.rng)
        } else {
            det.record(&o.endpoint, o.outcome, now, &mut self.rng)
        };
        let endpoint = o.endpoint.to_string();
        match verdict {
            Verdict::Ejected(e) => {
                let reason =
                    format!("{:?} after {:?}; ejected for {:?} (ejection #{})", e.reason, o.outcome, e.duration, e.ejections_total);
                self.metrics.ejection(&o.destination, &endpoint, &format!("{:?}", e.reason));
                self.events.record(NewEvent::endpoint(EventKind::Ejection, &o.destination, &endpoint, reason));
                self.touch(&o.destination);
                true
            }
            Verdict::Overflow { reason, .. } => {
                let why = format!("{reason:?}: not ejected, max_ejection_percent {}% reached", det.config().max_ejection_percent);
                self.events.record_refusal(EventKind::EjectionRefused, &why, Some(&o.destination), Some(&endpoint), why.clone());
                false
            }
            Verdict::NotEnforced { .. } | Verdict::None => false,
        }
    }

    fn on_msg(&mut self, m: Msg) -> bool {
        let now = self.now();
        match m {
            Msg::Readmission { dest, endpoint, rule, detail } => {
                if !self.pending.remove(&(dest.clone(), endpoint.clone())) {
                    return false;
                }
                self.touch(&dest);
                match rule {
                    Ok(()) => {
                        self.metrics.unejection(&dest, &endpoint.to_string());
                        self.events.record(NewEvent::endpoint(
                            EventKind::Unejection,
                            &dest,
                            &endpoint.to_string(),
                            format!("ejection time over and re-admission probe passed ({detail})"),
                        ));
                    }
                    Err(why) => {
                        if let Some(det) = self.detectors.get_mut(&dest) {
                            let v = det.eject_now(&endpoint, why, now, &mut self.rng);
                            let reason = match &v {
                                Verdict::Ejected(e) => {
                                    format!("re-admission probe failed ({detail}); ejected again for {:?}", e.duration)
                                }
                                _ => format!("re-admission probe failed ({detail}) but the ejection cap refused a new ejection"),
                            };
                            let endpoint = endpoint.to_string();
                            self.metrics.ejection(&dest, &endpoint, &format!("{why:?}"));
                            self.events.record(NewEvent::endpoint(EventKind::ReEjection, &dest, &endpoint, reason));
                        }
                    }
                }
                true
            }
            Msg::Health { dest, endpoint, ok, detail } => {
                let Some(check) = self.dest_health_check(&dest) else { return false };
                // A health transition below returns true; touching on every result is harmless.
                self.touch(&dest);
                let key = (dest.clone(), endpoint.clone());
                let Some(h) = self.health.get_mut(&key) else { return false };
                match h.run.observe(ok, Thresholds::from(&check)) {
                    Some(Transition::Healthy { passes }) => {
                        self.events.record(NewEvent::endpoint(
                            EventKind::HealthCheckPassed,
                            &dest,
                            &endpoint.to_string(),
                            format!("{passes} passing checks"),
                        ));
                        if let Some(det) = self.detectors.get_mut(&dest) {
                            if det.uneject_by_health_check(&endpoint, now) {
                                self.metrics.unejection(&dest, &endpoint.to_string());
                                self.events.record(NewEvent::endpoint(
                                    EventKind::Unejection,
                                    &dest,
                                    &endpoint.to_string(),
                                    "active health check passed",
                                ));
                            }
                        }
                        true
                    }
                    Some(Transition::Unhealthy { failures }) => {
                        self.events.record(NewEvent::endpoint(
                            EventKind::HealthCheckFailed,
                            &dest,
                            &endpoint.to_string(),
                            format!("{failures} failed checks: {detail}"),
                        ));
                        true
                    }
                    None => false,
                }
            }
        }
    }

    fn dest_health_check(&self, dest: &DestinationName) -> Option<ActiveHealthCheck> {
        self.shared.snapshot.load().destinations.iter().find(|d| d.key == *dest).and_then(|d| d.resilience.active_health_check.clone())
    }

    /// Runs due sweeps; hosts whose ejection ended get a re-admission probe before they return.
    fn sweep(&mut self) -> bool {
        let now = self.now();
        let mut changed = false;
        let mut probes = Vec::new();
        for (dest, det) in self.detectors.iter_mut() {
            if !self.next_sweep.entry(dest.clone()).or_default().due(now, det.config().interval) {
                continue;
            }
            for endpoint in det.sweep(now) {
                self.pending.insert((dest.clone(), endpoint.clone()));
                probes.push((dest.clone(), endpoint));
                changed = true;
            }
        }
        for (dest, endpoint) in probes {
            self.touch(&dest);
            self.spawn_probe(dest, endpoint);
        }
        changed
    }

    fn spawn_probe(&self, dest: DestinationName, endpoint: EndpointKey) {
        let snap = self.shared.snapshot.load();
        let d = snap.destinations.iter().find(|d| d.key == dest);
        let path = d.and_then(|d| d.resilience.active_health_check.as_ref().map(|c| c.path.clone())).unwrap_or_else(|| "/".into());
        // A gRPC-checked destination is probed the same way on re-admission.
        let grpc = d.and_then(|d| d.resilience.active_health_check.as_ref()).and_then(|c| match &c.protocol {
            CheckProtocol::Grpc { service } => Some(service.clone()),
            CheckProtocol::Http => None,
        });
        let h2 = d.is_some_and(|d| d.http2);
        let host = d.and_then(|d| d.report.host.clone().into());
        let via = d.and_then(|d| d.upstreams.iter().find(|u| u.key == endpoint)).and_then(|u| u.via.clone());
        let tls = d.and_then(|d| d.tls.clone());
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let (rule, detail) = loop {
                let (verdict, detail) = match &grpc {
                    Some(service) => grpc_probe::probe(shared.clone(), &endpoint, via.clone(), service, PROBE_TIMEOUT).await,
                    None => {
                        probe_with(&shared, &endpoint, via.as_deref(), tls.as_ref(), &path, host.as_deref(), h2, PROBE_TIMEOUT, &[]).await
                    }
                };
                match readmission(verdict) {
                    Readmission::ProbeAgain => {
                        tracing::warn!(target: "veer::health", "re-admission probe of {endpoint} for {dest} not sent: {detail}; trying again in {PROBE_AGAIN_AFTER:?}");
                        tokio::time::sleep(PROBE_AGAIN_AFTER).await;
                    }
                    Readmission::Readmit => break (Ok(()), detail),
                    Readmission::EjectAgain(why) => break (Err(why), detail),
                }
            };
            let _ = tx.send(Msg::Readmission { dest, endpoint, rule, detail });
        });
    }

    /// Puts a set the watcher accepted in force, or says why the files were not taken.
    fn reload(&mut self, found: Reload) {
        let found = match found {
            Reload::Accepted(set) => self.same_listeners(*set),
            rejected => rejected,
        };
        let set = match found {
            Reload::Accepted(set) => *set,
            Reload::Rejected(why) => {
                self.metrics.config_reload(false);
                self.events
                    .record(NewEvent::node(EventKind::ConfigRejected, format!("{why}; still serving generation {}", self.generation)));
                return;
            }
        };
        self.set = set;
        if let Some(tx) = &self.manifests {
            tx.send_replace(Arc::new(self.set.clone()));
        }
        if let Some(p) = &mut self.peers {
            p.sync(&self.set);
        }
        self.take_file_endpoints();
        // New manifests: resolve everything again.
        self.dirty = None;
        self.rebuild();
        self.metrics.config_reload(true);
        self.events.record(NewEvent::node(EventKind::ConfigReloaded, format!("now serving generation {}", self.generation)));
    }

    /// `set`, refused when it needs other client sockets than the node bound. Refused rather
    /// than bound and closed on the fly: a socket that moves takes its clients' connections
    /// with it, which is a restart's business, and until then the last good set keeps every
    /// route on the socket it was served on.
    fn same_listeners(&self, set: ManifestSet) -> Reload {
        match set.listeners(&self.cfg.cluster) {
            Ok(l) if l.extra == self.cfg.listener_addrs => Reload::Accepted(Box::new(set)),
            Ok(l) => {
                let list = |a: &[std::net::SocketAddr]| {
                    if a.is_empty() {
                        "none".to_string()
                    } else {
                        a.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    }
                };
                Reload::Rejected(format!(
                    "listener addresses changed (spec.gateway.ports: bound {}, now {}); restart the node",
                    list(&self.cfg.listener_addrs),
                    list(&l.extra)
                ))
            }
            Err(why) => Reload::Rejected(why.to_string()),
        }
    }

    /// Builds and publishes a new snapshot from the current manifests and health.
    fn rebuild(&mut self) {
        let mut unhealthy: Unhealthy = HashMap::new();
        for (dest, det) in &self.detectors {
            unhealthy.entry(dest.clone()).or_default().extend(det.ejected_hosts().cloned());
        }
        for (dest, ep) in &self.pending {
            unhealthy.entry(dest.clone()).or_default().push(ep.clone());
        }
        for ((dest, ep), h) in &self.health {
            if !h.run.is_healthy() {
                unhealthy.entry(dest.clone()).or_default().push(ep.clone());
            }
        }
        self.generation += 1;
        self.publish_holds();
        self.publish_catalog(&unhealthy);
        let remote_dirty = std::mem::take(&mut self.remote_dirty);
        // Before `dirty` is taken: an endpoint whose window ended touches its destination.
        let mut warming = self.warming_now();
        if let Some(changed) = self.dirty.replace(HashSet::new()) {
            self.rebuild_health(&unhealthy, warming, &changed, remote_dirty);
            return;
        }
        if let Some(p) = &self.peers {
            catalog::apply_peers(&mut self.inventory, &self.set, &self.cfg.cluster, &p.catalogs());
        }
        let old = self.shared.snapshot.load_full();
        let snap = match Snapshot::build_after(
            &old,
            View::new(&self.set, &self.inventory),
            &self.cfg.cluster,
            &self.cfg.labels,
            &unhealthy,
            &warming,
            self.remote(),
            self.generation,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "veer::control", "cannot build routing snapshot: {e}");
                return;
            }
        };
        let snap = self.start_warmups(&old, snap, &unhealthy, &mut warming);
        // Keep detectors and health checks in step with the destinations.
        let mut live_checks = HashSet::new();
        let mut keys = HashSet::new();
        for d in &snap.destinations {
            let key = d.key.clone();
            keys.insert(key.clone());
            let config = d.resilience.outlier.unwrap_or_else(fallback_outlier);
            let hosts: Vec<EndpointKey> = d.upstreams.iter().map(|u| u.key.clone()).collect();
            match self.detectors.get_mut(&key) {
                Some(det) if *det.config() == config => det.set_hosts(hosts),
                _ => {
                    self.detectors.insert(key.clone(), OutlierDetector::new(config, hosts));
                }
            }
            if let Some(check) = &d.resilience.active_health_check {
                for u in &d.upstreams {
                    let id = (key.clone(), u.key.clone());
                    live_checks.insert(id.clone());
                    if !self.health.contains_key(&id) {
                        let task = self.spawn_health_check(
                            id.0.clone(),
                            id.1.clone(),
                            u.via.clone(),
                            d.tls.clone(),
                            check.clone(),
                            d.http2,
                            d.report.host.clone(),
                        );
                        self.health.insert(id, HealthState { run: HealthRun::new(), task });
                    }
                }
            }
            self.observe(d);
        }
        self.detectors.retain(|k, _| keys.contains(k));
        self.next_sweep.retain(|k, _| keys.contains(k));
        self.active.retain(|k, _| keys.contains(k));
        self.pending.retain(|(d, _)| keys.contains(d));
        self.warming.retain(|(d, _), _| keys.contains(d));
        self.health.retain(|id, h| {
            let keep = live_checks.contains(id);
            if !keep {
                h.task.abort();
            }
            keep
        });
        self.shared.snapshot.store(Arc::new(snap));
    }

    /// Why each held endpoint is held, for `veer status`: the same sources `rebuild` marks
    /// endpoints unhealthy from, with the time an ejection ends.
    fn publish_holds(&self) {
        let now = clock::since(self.start);
        let now_unix_ms = crate::events::unix_ms();
        let mut holds = crate::holds::Holds::default();
        for ((dest, ep), h) in &self.health {
            if !h.run.is_healthy() {
                holds.local.entry(dest.clone()).or_default().insert(ep.clone(), crate::holds::LocalHold::HealthCheckFailed);
            }
        }
        for (dest, ep) in &self.pending {
            holds.local.entry(dest.clone()).or_default().insert(ep.clone(), crate::holds::LocalHold::ProbePending);
        }
        for (dest, det) in &self.detectors {
            for ep in det.ejected_hosts() {
                let left = det.ejection_ends_at(ep).map_or(Duration::ZERO, |end| end.saturating_sub(now));
                let until_unix_ms = now_unix_ms.saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
                let reason = det.host_status(ep).and_then(|s| s.last_reason);
                holds.local.entry(dest.clone()).or_default().insert(ep.clone(), crate::holds::LocalHold::Ejected { until_unix_ms, reason });
            }
        }
        if let Some(p) = &self.peers {
            holds.remote = p.health();
        }
        self.status.holds.store(Arc::new(holds));
    }

    /// Links and remote health as the snapshot needs them (empty when not meshed).
    fn remote(&self) -> Arc<Remote> {
        match &self.peers {
            Some(p) => Arc::new(Remote { own: self.cfg.cluster.clone(), links: p.links(), health: p.health() }),
            None => Arc::default(),
        }
    }

    /// Announces this cluster's endpoints and their health (as this node's own checks see
    /// them) to the peers, when either changed.
    fn publish_catalog(&self, unhealthy: &Unhealthy) {
        let Some(mesh) = &self.cfg.mesh else { return };
        let current = mesh.catalog.borrow().clone();
        let mut next = Catalog::local(&self.inventory, &self.cfg.cluster, current.generation, Default::default());
        next.unhealthy = unhealthy.values().flatten().filter(|k| k.socket().is_some_and(|a| next.has_address(a.ip()))).cloned().collect();
        if next != *current {
            next.generation += 1;
            mesh.catalog.send_replace(Arc::new(next));
        }
    }

    /// A health-only update: only the destinations in `changed` get new tables (all of them
    /// when a peer cluster's health changed); routes, detectors, budgets and health checks stay
    /// as they are.
    fn rebuild_health(&mut self, unhealthy: &Unhealthy, mut warming: Warming, changed: &HashSet<DestinationName>, remote_changed: bool) {
        let old = self.shared.snapshot.load_full();
        let snap = if remote_changed {
            old.with_remote(unhealthy, &warming, self.remote(), self.generation)
        } else {
            old.with_health(unhealthy, &warming, changed, self.generation)
        };
        let snap = self.start_warmups(&old, snap, unhealthy, &mut warming);
        for d in snap.destinations.iter().filter(|d| remote_changed || changed.contains(&d.key)) {
            self.observe(d);
        }
        self.shared.snapshot.store(Arc::new(snap));
    }

    /// Each warming endpoint's factor now; an endpoint past its window is steady again and
    /// leaves the list, and its destination is rebuilt (if this rebuild does not cover it, the
    /// next one does).
    fn warming_now(&mut self) -> Warming {
        let now = self.now();
        let mut warming = Warming::new();
        let mut steady = Vec::new();
        self.warming.retain(|(dest, ep), w| match w.slow_start.factor(now.saturating_sub(w.since)) {
            Some(f) => {
                warming.entry(dest.clone()).or_default().push((ep.clone(), f));
                true
            }
            None => {
                steady.push(dest.clone());
                false
            }
        });
        for d in steady {
            self.touch(&d);
        }
        warming
    }

    /// Touches every destination whose warming endpoints reached their next step; returns
    /// whether any did. A destination is rebuilt at most [`veer_core::slowstart::STEPS`] + 1
    /// times per window, never per request.
    fn warm_steps(&mut self) -> bool {
        let now = self.now();
        let mut due = Vec::new();
        for ((dest, _), w) in self.warming.iter_mut() {
            if now >= w.since + w.next {
                let since = now.saturating_sub(w.since);
                w.next = w.slow_start.next_step(since).unwrap_or(since);
                due.push(dest.clone());
            }
        }
        let stepped = !due.is_empty();
        for d in due {
            self.touch(&d);
        }
        stepped
    }

    /// Starts slow start for the endpoints `new` has back in service: healthy now and unhealthy
    /// in `old`, or new to a destination `old` had (as Envoy counts a host joining a cluster),
    /// in destinations with slow start. Their destinations are rebuilt with them warming before
    /// anything is published, so no request sees them at full weight. An endpoint that went down
    /// again leaves slow start, and starts over when it comes back.
    fn start_warmups(&mut self, old: &Snapshot, new: Snapshot, unhealthy: &Unhealthy, warming: &mut Warming) -> Snapshot {
        let now = self.now();
        let before: HashMap<&DestinationName, &DestState> = old.destinations.iter().map(|d| (&d.key, &**d)).collect();
        let mut started = HashSet::new();
        for d in &new.destinations {
            let Some(slow_start) = d.resilience.slow_start else { continue };
            let Some(prev) = before.get(&d.key) else { continue };
            for (u, e) in d.upstreams.iter().zip(&d.endpoints) {
                let id = (d.key.clone(), u.key.clone());
                if e.health == veer_core::topology::Health::Unhealthy {
                    self.warming.remove(&id);
                    continue;
                }
                let was_down = match prev.upstreams.iter().position(|p| p.key == u.key) {
                    Some(i) => prev.endpoints[i].health == veer_core::topology::Health::Unhealthy,
                    None => true,
                };
                if was_down && !self.warming.contains_key(&id) {
                    let (Some(factor), Some(next)) = (slow_start.factor(Duration::ZERO), slow_start.next_step(Duration::ZERO)) else {
                        continue;
                    };
                    warming.entry(id.0.clone()).or_default().push((id.1.clone(), factor));
                    self.warming.insert(id, Warmup { since: now, slow_start, next });
                    started.insert(d.key.clone());
                }
            }
        }
        if started.is_empty() {
            return new;
        }
        new.with_health(unhealthy, warming, &started, self.generation)
    }

    /// Publishes a destination's health and records a move to another priority.
    fn observe(&mut self, d: &veer_gateway::snapshot::DestState) {
        let key = d.key.clone();
        let active = d.active_priority();
        let at_active: Vec<&veer_core::table::Placement> =
            d.table.placements.iter().filter(|p| i64::try_from(p.priority).is_ok_and(|p| p == active)).collect();
        let level = at_active.first().map(|first| ActiveLevel {
            rank: first.raw_priority,
            why: veer_model::explain::describe(&first.why, None),
            endpoints: at_active.iter().filter_map(|p| d.upstreams.get(p.endpoint).map(|u| u.key.clone())).collect(),
        });
        let before = self.active.insert(key.clone(), (active, level.clone()));
        self.metrics.set_active_priority(&key, active);
        for (u, e) in d.upstreams.iter().zip(&d.endpoints) {
            self.metrics.set_endpoint_health(
                &key,
                &u.key.to_string(),
                &u.cluster,
                u.priority as u32,
                e.health != veer_core::topology::Health::Unhealthy,
            );
        }
        if let Some((before, before_level)) = before {
            if let (true, Some(from), Some(to), Ok(priority)) = (before == active, &before_level, &level, u32::try_from(active)) {
                if let Some(reason) = level_change_reason(priority, from, to) {
                    self.events.record(NewEvent::level_change(&key, priority, from.rank, to.rank, reason));
                }
            }
            if before != active {
                let serving = d
                    .upstreams
                    .iter()
                    .zip(&d.endpoints)
                    .filter(|(u, e)| {
                        i64::try_from(u.priority).is_ok_and(|p| p == active) && e.health != veer_core::topology::Health::Unhealthy
                    })
                    .count();
                let reason = priority_change_reason(before, active, serving);
                self.events.record(NewEvent::priority_change(&key, u32::try_from(before).ok(), u32::try_from(active).ok(), reason));
                if before >= 0 && active >= 0 {
                    self.metrics.failover_event(&key, before as u32, active as u32);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_health_check(
        &self,
        dest: DestinationName,
        endpoint: EndpointKey,
        via: Option<Arc<PeerLink>>,
        tls: Option<TlsClient>,
        check: ActiveHealthCheck,
        h2: bool,
        host: String,
    ) -> JoinHandle<()> {
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(check.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let (verdict, detail) = match &check.protocol {
                    CheckProtocol::Http => {
                        probe_with(
                            &shared,
                            &endpoint,
                            via.as_deref(),
                            tls.as_ref(),
                            &check.path,
                            Some(&host),
                            h2,
                            check.timeout,
                            &check.expected_statuses,
                        )
                        .await
                    }
                    CheckProtocol::Grpc { service } => {
                        grpc_probe::probe(shared.clone(), &endpoint, via.clone(), service, check.timeout).await
                    }
                };
                let Some(ok) = verdict.passed() else {
                    // Not the endpoint's doing: no verdict this round.
                    tracing::warn!(target: "veer::health", "health check of {endpoint} for {dest} not sent: {detail}");
                    continue;
                };
                if tx.send(Msg::Health { dest: dest.clone(), endpoint: endpoint.clone(), ok, detail }).is_err() {
                    break;
                }
            }
        })
    }
}

/// One HTTP probe, and veer-core's verdict on it (passed, failed, or not sent, which is no
/// verdict on the endpoint) with what it found or why it was not sent. An endpoint of a peer
/// cluster is probed through that cluster's east-west listener.
#[allow(clippy::too_many_arguments)]
async fn probe_with(
    shared: &Shared,
    endpoint: &EndpointKey,
    via: Option<&PeerLink>,
    tls: Option<&TlsClient>,
    path: &str,
    host: Option<&str>,
    h2: bool,
    timeout: Duration,
    expected: &[(u16, u16)],
) -> (ProbeVerdict, String) {
    use http_body_util::{BodyExt, Empty};
    let scheme = if tls.is_some() && via.is_none() { "https" } else { "http" };
    let uri = format!("{scheme}://{endpoint}{path}");
    let mut req = match http::Request::get(uri.as_str()).body(Empty::<bytes::Bytes>::new().map_err(|never| match never {}).boxed()) {
        Ok(r) => r,
        Err(e) => return (ProbeVerdict::Failed, format!("bad probe request: {e}")),
    };
    if let Some(h) = host {
        if let Ok(v) = http::HeaderValue::from_str(h) {
            if !h2 {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
    }
    req.headers_mut().insert(http::header::USER_AGENT, http::HeaderValue::from_static("veer-health-check"));
    let sent = async {
        match via {
            Some(link) => {
                // Across the hop the host travels as the authority, HTTP/2 or not.
                if let Some(v) = host.and_then(|h| http::HeaderValue::from_str(h).ok()) {
                    req.headers_mut().insert(http::header::HOST, v);
                }
                link.send_to(endpoint, h2, req).await.map_err(|e| (TryEnd::UpstreamReset, e.to_string()))
            }
            None => {
                let sent = match tls {
                    Some(tls) => tls.request(req),
                    None if h2 => shared.http2.request(req),
                    None => shared.http1.request(req),
                };
                sent.await.map_err(|e| (client_failure(&e), e.to_string()))
            }
        }
    };
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(resp)) => {
            let eastwest_error = resp.headers().get(&X_VEER_EASTWEST_ERROR).map(|v| v.as_bytes());
            let verdict = answer_verdict(resp.status().as_u16(), eastwest_error, expected);
            let detail = match (eastwest_error, verdict) {
                (Some(_), ProbeVerdict::NotSent) => format!("the east-west gateway could not reach it: {}", resp.status()),
                (Some(_), _) => format!("GET {path} failed behind the east-west gateway: {}", resp.status()),
                (None, _) => format!("GET {path} answered {}", resp.status().as_u16()),
            };
            (verdict, detail)
        }
        Ok(Err((end, e))) => match failure_verdict(end) {
            ProbeVerdict::NotSent => (ProbeVerdict::NotSent, e),
            verdict => (verdict, format!("GET {path} failed: {e}")),
        },
        Err(_) => (failure_verdict(TryEnd::UpstreamTimeout), format!("GET {path} timed out after {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::{level_change_reason, priority_change_reason, ActiveLevel};
    use veer_core::topology::EndpointKey;

    fn level(rank: u32, why: &str, endpoints: &[&str]) -> ActiveLevel {
        let endpoints = endpoints.iter().map(|e| EndpointKey::from(e.parse::<std::net::SocketAddr>().expect("ip:port"))).collect();
        ActiveLevel { rank, why: why.into(), endpoints }
    }

    #[test]
    fn a_whole_level_replaced_at_the_same_priority_number_is_a_move_and_a_scale_or_a_rolling_update_is_not() {
        let v1 = level(0, "same region/zone/subzone", &["127.0.2.1:5000"]);
        let v2 = level(3, "other region", &["127.0.2.2:5000"]);
        assert_eq!(
            level_change_reason(0, &v1, &v2).as_deref(),
            Some("priority 0's endpoints (same region/zone/subzone) are gone; priority 0 is now other region")
        );
        assert_eq!(
            level_change_reason(0, &v2, &v1).as_deref(),
            Some("priority 0 is same region/zone/subzone again, which the rule prefers to other region")
        );
        // Scaled down but one endpoint serves on; a new rule ranking the same endpoints; new pods
        // at the same level (a rolling update): none moves traffic to another level.
        let scaled = level(0, "same region/zone/subzone", &["127.0.2.1:5000", "127.0.2.3:5000"]);
        assert_eq!(level_change_reason(0, &scaled, &v1), None);
        assert_eq!(level_change_reason(0, &level(1, "label rank 0", &["127.0.2.1:5000"]), &v1), None);
        assert_eq!(level_change_reason(0, &v1, &level(0, "same region/zone/subzone", &["127.0.2.9:5000"])), None);
    }

    #[test]
    fn a_destination_gaining_its_first_endpoints_says_so_and_no_reason_names_priority_minus_one() {
        assert_eq!(priority_change_reason(-1, 1, 2), "now has 2 healthy endpoints at priority 1");
        assert_eq!(priority_change_reason(-1, 0, 1), "now has 1 healthy endpoint at priority 0");
        assert_eq!(priority_change_reason(0, 1, 3), "priority 0 lost its healthy endpoints");
        assert_eq!(priority_change_reason(1, 0, 3), "priority 0 is healthy again");
        assert_eq!(priority_change_reason(0, -1, 0), "no healthy endpoint left");
        for before in -1..5 {
            for active in (-1..5).filter(|&a| a != before) {
                let reason = priority_change_reason(before, active, 2);
                assert!(!reason.contains("-1"), "{before} -> {active}: {reason}");
            }
        }
    }
}
