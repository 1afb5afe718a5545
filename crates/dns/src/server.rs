//! The authoritative DNS server of a node (hickory-server): UDP and TCP on one address, answers
//! from the current [`Zones`], reconciled from the manifest set on every change; malformed
//! packets are dropped, UDP answers fit 512 bytes or the EDNS size (TC set otherwise), and
//! response rate limiting of identical answers ([`crate::rrl`]) keeps the server from being an
//! amplifier without starving a resolver.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, Record};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use veer_model::set::ManifestSet;

use crate::ownership::{self, Publication, Registry, Transition, ZoneStore};
use crate::plan::{self, Endpoint, PlanOptions};
pub use crate::rrl::{AnswerClass, Rrl, RrlConfig, RrlVerdict};
use crate::transfer::{self, TransferConfig};
use crate::zone::{destination_hosts, socket_ips, RegionalZone, ZoneInput, Zones};
use hickory_proto::rr::TSigner;

/// How a node's DNS server runs.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// UDP and TCP address (port 0 picks a free port, the same for both).
    pub listen: SocketAddr,
    /// The veer `Cluster` this node serves.
    pub cluster: String,
    /// The local gateway address destination hosts and this cluster's gateway records resolve
    /// to when the Cluster's `spec.gateway.address` names no specific IP (which wins otherwise).
    pub gateway: IpAddr,
    /// TTL of every record (the operator sets none on CNAMEs).
    pub ttl: u32,
    /// ExternalDNS `--txt-prefix` of the ownership records (seed 002: `_external-dns-owner.`).
    pub txt_prefix: String,
    /// Largest UDP answer veer sends even when a client offers more (DNS Flag Day 2020: 1232).
    pub max_udp_payload: u16,
    pub rrl: RrlConfig,
    /// Caps on TCP connections, in all and per client address, and their idle timeout.
    pub tcp: crate::tcp::TcpLimits,
    /// Where zone epochs are kept across restarts (none: they restart from the baseline).
    pub state_file: Option<PathBuf>,
    /// The address served as `ns.<zone>` in every zone (the NS RRset's glue); `None`: the
    /// server's own address once bound, or the gateway's when it listens on a wildcard.
    pub nameserver: Option<IpAddr>,
    /// Zone transfers (TSIG key) and NOTIFY to secondaries.
    pub transfer: TransferConfig,
    /// The node's etcd lease loop, when it runs one (`--etcd`): the writers of zones whose
    /// DNSZone has a `takeover`. Without it such zones are written by no one on this node.
    pub leases: Option<crate::takeover::LeaseFeed>,
}

/// What a node's operator tunes (`veer run --dns-*` flags), beside what the node derives.
#[derive(Clone, Debug, Default)]
pub struct DnsSettings {
    pub rrl: RrlConfig,
    pub transfer: TransferConfig,
    pub tcp: crate::tcp::TcpLimits,
}

impl DnsConfig {
    /// `settings` applied to this config.
    pub fn with(mut self, settings: &DnsSettings) -> Self {
        self.rrl = settings.rrl.clone();
        self.transfer = settings.transfer.clone();
        self.tcp = settings.tcp;
        self
    }

    pub fn new(listen: SocketAddr, cluster: &str, gateway: IpAddr) -> Self {
        DnsConfig {
            listen,
            cluster: cluster.to_string(),
            gateway,
            ttl: PlanOptions::default().ttl,
            txt_prefix: "_external-dns-owner.".into(),
            max_udp_payload: 1232,
            rrl: RrlConfig::default(),
            tcp: crate::tcp::TcpLimits::default(),
            state_file: None,
            nameserver: None,
            transfer: TransferConfig::default(),
            leases: None,
        }
    }
}

use crate::handler::compile;
pub use crate::handler::{answer_datagram, answer_datagram_into, classify, DnsCounters, DnsStats, Handler, Reply, RCODES};

/// Tells the secondaries of every change (NOTIFY), each zone to each secondary, with retries.
struct Notifier {
    from: IpAddr,
    secondaries: Vec<SocketAddr>,
    key: Option<TSigner>,
}

/// Tries per NOTIFY (1 + 2 + 4 + 8 + 16 s of waiting at most).
const NOTIFY_TRIES: u32 = 5;

// === impl Notifier ===

impl Notifier {
    /// Starts one round of NOTIFY for `zones`, counted in `counters`; the caller drops (aborts)
    /// the round when a newer one starts.
    fn send(&self, zones: &Zones, counters: Arc<DnsCounters>) -> tokio::task::JoinSet<()> {
        let mut set = tokio::task::JoinSet::new();
        for origin in zones.origins() {
            let zone = Name::from(origin);
            let soa = zones.soa(origin).cloned();
            for &secondary in &self.secondaries {
                let id = crate::clock::random_id();
                let bytes = match transfer::signed_notify(id, &zone, soa.as_ref(), self.key.as_ref(), crate::clock::unix_time()) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(target: "veer::dns", zone = %zone, "cannot build a NOTIFY: {e}");
                        continue;
                    }
                };
                let (from, zone, counters) = (self.from, zone.clone(), counters.clone());
                set.spawn(async move {
                    let result = transfer::notify(from, secondary, &bytes, id, NOTIFY_TRIES).await;
                    let n = if result.is_ok() { &counters.notifies_acked } else { &counters.notifies_failed };
                    n.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(()) => tracing::info!(target: "veer::dns", zone = %zone, %secondary, "NOTIFY acknowledged"),
                        Err(e) => tracing::warn!(target: "veer::dns", zone = %zone, %secondary, "NOTIFY: {e}"),
                    }
                });
            }
        }
        set
    }
}

/// Called with every change of zone writer (for logs and the node's event log).
pub type Notify = Arc<dyn Fn(&Transition) + Send + Sync>;

/// State the reconcile loop owns.
struct Reconciler {
    cfg: DnsConfig,
    registry: Registry,
    store: ZoneStore<Vec<Endpoint>>,
    serial: u32,
    /// What the serial stands for: the records served at that serial.
    content: Vec<Record>,
    notify: Option<Notify>,
    /// Where the zones this node writes go when a DNSZone places them on a DNS server.
    writes: Option<crate::update::Writes>,
}

// === impl Reconciler ===

impl Reconciler {
    fn new(cfg: DnsConfig, notify: Option<Notify>) -> Self {
        let mut registry = Registry::default();
        if let Some(path) = &cfg.state_file {
            match std::fs::read_to_string(path) {
                Ok(text) => match serde_json::from_str::<Registry>(&text) {
                    Ok(persisted) => registry.merge_floor(&persisted),
                    Err(e) => tracing::warn!(target: "veer::dns", "ignoring DNS state file {}: {e}", path.display()),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(target: "veer::dns", "cannot read DNS state file {}: {e}", path.display()),
            }
        }
        Reconciler { cfg, registry, store: ZoneStore::default(), serial: 0, content: Vec::new(), notify, writes: None }
    }

    /// One reconcile: plans of every cluster, claims, writers and epochs, then this node's
    /// publications and the answers it serves.
    fn run(&mut self, set: &ManifestSet) -> Zones {
        // The one gateway address: the Cluster's, as `veer dns endpoints` gives it; the node's
        // own only when the Cluster names none.
        let gateway = plan::advertised_gateway(set, &self.cfg.cluster).unwrap_or(self.cfg.gateway);
        let opts = PlanOptions { ttl: self.cfg.ttl, gateways: BTreeMap::from([(self.cfg.cluster.clone(), gateway)]) };
        let plans = plan::all(set, &opts);
        // Zones whose DNSZone has a takeover are written under an etcd lease, not elected here.
        let lease_zones = crate::takeover::lease_zones(set);
        let leased = |z: &plan::ZoneId| lease_zones.iter().find(|lz| lz.key.covers(&z.region, &z.domain)).map(|lz| lz.key.clone());
        let mut claims = ownership::claims(&plans);
        let leased_zones: Vec<(plan::ZoneId, crate::takeover::ZoneKey)> =
            claims.keys().filter_map(|z| Some((z.clone(), leased(z)?))).collect();
        claims.retain(|z, _| leased(z).is_none());
        let transitions = self.registry.reconcile(&claims);
        let leases = self.cfg.leases.as_ref().map(|f| f.leases.borrow().clone());
        let now = crate::clock::now();
        let own = plans.iter().find(|p| p.cluster == self.cfg.cluster);
        // A standby holding another region's lease writes that zone as an adoption would.
        let taken: Vec<&str> = leased_zones
            .iter()
            .filter(|(z, key)| {
                leases.as_ref().and_then(|l| l.get(key)).and_then(|s| s.writable(now)).is_some()
                    && own.is_some_and(|p| p.region.as_deref() != Some(z.region.as_str()) && !p.adopts_regions.contains(&z.region))
            })
            .map(|(z, _)| z.region.as_str())
            .collect();
        let mine: Vec<Endpoint> = if taken.is_empty() {
            own.map(|p| p.endpoints.clone()).unwrap_or_default()
        } else {
            plan::cluster(&plan::adopting(set, &self.cfg.cluster, &taken), &self.cfg.cluster, &opts).endpoints
        };
        for (zone, key) in &leased_zones {
            let status = leases.as_ref().and_then(|l| l.get(key));
            let result = match status.and_then(|s| s.writable(now)) {
                Some(epoch) => {
                    let records: Vec<Endpoint> = mine.iter().filter(|e| e.zone == *zone).cloned().collect();
                    self.store.publish(zone, Publication { writer: self.cfg.cluster.clone(), epoch, records })
                }
                None => {
                    let epoch = status.map_or(0, |s| s.epoch).max(self.store.floor(zone));
                    self.store.withdraw(zone, epoch)
                }
            };
            if let Err(refusal) = result {
                tracing::error!(target: "veer::dns", zone = %zone, "{refusal}");
            }
        }
        let zones: Vec<_> = self.registry.zones.iter().filter(|(z, _)| leased(z).is_none()).map(|(z, s)| (z.clone(), s.clone())).collect();
        for (zone, state) in zones {
            let result = if state.writer.as_deref() == Some(self.cfg.cluster.as_str()) {
                let records: Vec<Endpoint> = mine.iter().filter(|e| e.zone == zone).cloned().collect();
                self.store.publish(&zone, Publication { writer: self.cfg.cluster.clone(), epoch: state.epoch, records })
            } else {
                self.store.withdraw(&zone, state.epoch)
            };
            if let Err(refusal) = result {
                tracing::error!(target: "veer::dns", zone = %zone, "{refusal}");
            }
        }
        if let Some(w) = &self.writes {
            let live = self.cfg.leases.as_ref().map(|f| &f.live);
            w.set(crate::update::jobs(set, self.store.iter(), &self.cfg.cluster, &self.cfg.txt_prefix, live));
        }
        for t in &transitions {
            let me = Some(self.cfg.cluster.as_str());
            let role = if t.to.as_deref() == me {
                "this node now writes the zone"
            } else if t.from.as_deref() == me {
                "this node stops writing the zone"
            } else {
                "another cluster writes the zone"
            };
            if t.conflicts.is_empty() {
                tracing::info!(target: "veer::dns", zone = %t.zone, epoch = t.epoch, "{t}; {role}");
            } else {
                tracing::warn!(target: "veer::dns", zone = %t.zone, epoch = t.epoch, "{t}; {role}");
            }
            if let Some(n) = &self.notify {
                n(t);
            }
        }
        if !transitions.is_empty() {
            self.persist();
        }
        let regional = self
            .store
            .iter()
            .map(|(z, p)| RegionalZone { zone: z.clone(), writer: p.writer.clone(), epoch: p.epoch, endpoints: p.records.clone() })
            .collect();
        // A name a regional zone publishes is that zone's writer's to answer: pointing it at
        // this node's gateway too (an HTTPRoute for the route's own name) would be a second
        // writer, outside the election (the returning cluster during an adoption, every spoke
        // under RegionBound).
        let regional_names: std::collections::BTreeSet<String> =
            plans.iter().flat_map(|p| p.endpoints.iter().map(|e| e.dns_name.trim_end_matches('.').to_ascii_lowercase())).collect();
        let hosts = destination_hosts(set, &self.cfg.cluster)
            .into_iter()
            .filter(|h| !regional_names.contains(&h.trim_end_matches('.').to_ascii_lowercase()))
            .collect();
        let input = ZoneInput {
            hosts,
            gateway,
            elsewhere: socket_ips(set, &self.cfg.cluster),
            ttl: self.cfg.ttl,
            regional,
            txt_prefix: self.cfg.txt_prefix.clone(),
            serial: self.serial,
            nameserver: self.cfg.nameserver,
        };
        let mut zones = Zones::build(&input);
        let content = zones.content();
        if content != self.content || self.serial == 0 {
            self.serial = next_serial(self.serial, crate::clock::unix_seconds());
            self.content = content;
        }
        zones.set_serial(self.serial);
        for s in &zones.skipped {
            tracing::warn!(target: "veer::dns", "not served: {s}");
        }
        zones
    }

    fn persist(&self) {
        let Some(path) = &self.cfg.state_file else { return };
        let text = match serde_json::to_string_pretty(&self.registry) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(target: "veer::dns", "cannot encode the DNS state: {e}");
                return;
            }
        };
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path)) {
            tracing::error!(target: "veer::dns", "cannot write DNS state file {}: {e}", path.display());
        }
    }
}

/// The serial after `prev` when the zones change: the Unix time when that is ahead of `prev`
/// in serial arithmetic (RFC 1982), else `prev + 1`, so it grows with every change and across
/// restarts (unless the zones changed more than once a second on average before one).
pub fn next_serial(prev: u32, unix_now: u32) -> u32 {
    let ahead = (unix_now.wrapping_sub(prev) as i32) > 0;
    let next = if ahead { unix_now } else { prev.wrapping_add(1) };
    // 0 means "no serial yet" here.
    next.max(1)
}

/// The next change of the lease loop's view; never, without one.
async fn lease_change(leases: &mut Option<watch::Receiver<Arc<crate::takeover::Leases>>>) -> Result<(), watch::error::RecvError> {
    match leases {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// A running DNS server.
pub struct DnsServer {
    /// The bound address (UDP and TCP).
    pub addr: SocketAddr,
    handler: Arc<Handler>,
    registry: Arc<ArcSwap<Registry>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Why the DNS server could not start.
#[derive(Debug)]
pub enum DnsError {
    /// A socket could not be bound: its address, `udp` or `tcp`, and why.
    Bind { addr: SocketAddr, protocol: &'static str, source: std::io::Error },
    /// The bound UDP socket's address could not be read.
    LocalAddr(std::io::Error),
    /// Port 0 was asked for, and no port came free for both UDP and TCP: the last TCP error.
    NoCommonPort { ip: IpAddr, last: Option<std::io::Error> },
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::Bind { addr, protocol, source } => write!(f, "cannot listen on {addr}/{protocol} (dns): {source}"),
            DnsError::LocalAddr(e) => write!(f, "{e}"),
            DnsError::NoCommonPort { ip, last } => {
                write!(f, "cannot find one free port for UDP and TCP on {ip}: ")?;
                match last {
                    Some(e) => write!(f, "{e}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for DnsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DnsError::Bind { source, .. } | DnsError::LocalAddr(source) => Some(source),
            DnsError::NoCommonPort { last, .. } => last.as_ref().map(|e| e as _),
        }
    }
}

/// Binds UDP and TCP on the same port (a free one when `addr`'s port is 0).
async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await.map_err(|source| DnsError::Bind { addr, protocol: "udp", source })?;
        let bound = udp.local_addr().map_err(DnsError::LocalAddr)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // With port 0 the TCP port of the same number may be taken: try another.
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(source) => return Err(DnsError::Bind { addr: bound, protocol: "tcp", source }),
        }
    }
    Err(DnsError::NoCommonPort { ip: addr.ip(), last })
}

// === impl DnsServer ===

impl DnsServer {
    /// Reconciles from the current manifest set, binds, and serves until [`DnsServer::stop`];
    /// every later value of `manifests` is reconciled at once (the takeover path).
    pub async fn start(
        cfg: DnsConfig,
        mut manifests: watch::Receiver<Arc<ManifestSet>>,
        notify: Option<Notify>,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind(cfg.listen).await?;
        let addr = udp.local_addr().map_err(DnsError::LocalAddr)?;
        let mut cfg = cfg;
        if cfg.nameserver.is_none() {
            cfg.nameserver = Some(if addr.ip().is_unspecified() { cfg.gateway } else { addr.ip() });
        }
        let mut reconciler = Reconciler::new(cfg.clone(), notify);
        let (writes, writes_task) = crate::update::Writes::spawn();
        reconciler.writes = Some(writes);
        let first = manifests.borrow_and_update().clone();
        let key = cfg.transfer.key.as_ref().and_then(|k| k.signer());
        let first_zones = reconciler.run(&first);
        let notifier = Notifier {
            from: cfg.nameserver.filter(|ip| !ip.is_unspecified()).unwrap_or(addr.ip()),
            secondaries: cfg.transfer.notify.clone(),
            key: key.clone(),
        };
        let handler = Arc::new(Handler::new(first_zones, cfg.max_udp_payload).with_transfer_key(key));
        // A restarted primary tells its secondaries too: they compare serials.
        let mut round = notifier.send(&handler.zones(), handler.counters());
        let registry = Arc::new(ArcSwap::from_pointee(reconciler.registry.clone()));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![writes_task];

        let (h, reg, mut stop) = (handler.clone(), registry.clone(), shutdown_rx.clone());
        let mut leases = cfg.leases.as_ref().map(|f| f.leases.clone());
        tasks.push(tokio::spawn(async move {
            let mut set = first;
            loop {
                tokio::select! {
                    changed = manifests.changed() => {
                        if changed.is_err() { break; }
                        set = manifests.borrow_and_update().clone();
                    }
                    changed = lease_change(&mut leases) => {
                        if changed.is_err() { break; }
                    }
                    _ = stop.changed() => break,
                }
                // Encoded before the NOTIFY: a secondary asks for the SOA at once.
                let zones = compile(reconciler.run(&set), h.max_udp_payload);
                if zones.serial() != h.zones().serial() {
                    // A newer NOTIFY supersedes the retries of the last one.
                    round = notifier.send(&zones, h.counters());
                }
                h.set_zones(zones);
                reg.store(Arc::new(reconciler.registry.clone()));
            }
            round.abort_all();
        }));

        tasks.push(tokio::spawn(crate::udp::serve(udp, handler.clone(), Rrl::new(cfg.rrl.clone()), shutdown_rx.clone())));

        tasks.push(tokio::spawn(crate::tcp::serve(tcp, handler.clone(), cfg.tcp, shutdown_rx)));
        tracing::info!(target: "veer::dns", "DNS on {addr} (udp, tcp) for cluster {}", cfg.cluster);
        Ok(DnsServer { addr, handler, registry, shutdown, tasks })
    }

    /// The answers served now.
    pub fn zones(&self) -> Arc<Zones> {
        self.handler.zones()
    }

    /// Zone writers and epochs as this node knows them.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    pub fn stats(&self) -> DnsStats {
        self.handler.stats()
    }

    /// The live counters, shared (for the node's `/metrics`).
    pub fn counters(&self) -> Arc<DnsCounters> {
        self.handler.counters()
    }

    /// Stops serving and waits for every task.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests;
