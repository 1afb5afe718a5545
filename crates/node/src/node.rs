//! One veer node (`veer run`): loads the manifests, binds the gateway and admin listeners, and
//! runs the control loop until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use veer_core::topology::Labels;
use veer_model::set::ManifestSet;

use veer_control::control::{Control, ControlConfig, MeshSetup};
use veer_control::events::{EventKind, Events, NewEvent};
use veer_control::external::External;
use veer_control::manifests::{self, Baseline};
use veer_control::mesh::catalog::Catalog;
use veer_control::mesh::eastwest::{self, EastWest};
use veer_control::mesh::peers::Aging;
use veer_control::metrics::ControlMetrics;
use veer_control::state;
use veer_control::status::ControlStatus;
use veer_gateway::metrics::Metrics;
use veer_gateway::server::{self, Limits};
use veer_gateway::shared::{clients, Shared};
use veer_gateway::snapshot::Snapshot;

use crate::admin::{self, AdminState};

/// Why a node did not start. Its text is what `veer run` prints.
#[derive(Debug)]
pub enum NodeError {
    /// The manifests (or the saved set that would stand in for them) do not pass, with every
    /// finding's location, one per line.
    Manifests(String),
    /// What the manifests and flags say cannot be served as asked.
    Config(String),
    /// A socket could not be bound: its address, what it is for, and why.
    Listen { addr: SocketAddr, what: &'static str, source: std::io::Error },
    /// The node's mesh identity (certificates) could not be loaded.
    Identity(veer_pki::PkiError),
    /// The DNS server did not start.
    Dns(String),
    /// A thread or runtime of the node could not be started.
    Thread(&'static str, std::io::Error),
}

impl NodeError {
    fn listen(addr: SocketAddr, what: &'static str, source: std::io::Error) -> NodeError {
        NodeError::Listen { addr, what, source }
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Manifests(m) | NodeError::Config(m) | NodeError::Dns(m) => f.write_str(m),
            NodeError::Listen { addr, what: "", source } => write!(f, "cannot listen on {addr}: {source}"),
            NodeError::Listen { addr, what, source } => write!(f, "cannot listen on {addr} ({what}): {source}"),
            NodeError::Identity(e) => e.fmt(f),
            NodeError::Thread(what, e) => write!(f, "cannot start {what}: {e}"),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Listen { source, .. } | NodeError::Thread(_, source) => Some(source),
            NodeError::Identity(e) => Some(e),
            _ => None,
        }
    }
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub files: Vec<PathBuf>,
    pub cluster: String,
    pub labels: Labels,
    /// Gateway listener; default: the Cluster's `spec.gateway.address`. The addresses of
    /// `spec.gateway.ports` are bound as they are written (a port mapped to the gateway's own
    /// address is served on this one).
    pub listen: Option<SocketAddr>,
    /// Admin listener; default: the Cluster's `spec.admin.address`, else an ephemeral loopback port.
    pub admin: Option<SocketAddr>,
    /// How often the manifest files are looked at besides inotify's wake-ups.
    pub reload_every: Duration,
    pub limits: Limits,
    /// DNS listener (UDP and TCP): destination hosts and this cluster's regional zones.
    pub dns: Option<SocketAddr>,
    /// The DNS server's rate limit, zone transfers and NOTIFY (`--dns-*` flags).
    pub dns_settings: veer_dns::DnsSettings,
    /// Mesh with the peer clusters' nodes (east-west mTLS); `None`: a standalone node that
    /// reaches every endpoint directly.
    pub mesh: Option<MeshConfig>,
    /// Threads serving the gateway listener. The first is the runtime `start` runs on; each
    /// other one runs its own single-threaded runtime with its own listener socket on the same
    /// address (SO_REUSEPORT, the kernel spreads connections) and its own upstream pools, so a
    /// request never crosses threads (thread per core, as nginx and pingora do).
    pub workers: usize,
    /// The CPU each worker is kept on, in worker order (see [`crate::cpus::plan`]); `None`
    /// leaves them to the scheduler. The first worker is the thread `start` runs on: it is
    /// pinned once the node's other threads (control loop included, which stays free) exist.
    pub worker_cpus: Option<Vec<usize>>,
    /// Where the last accepted manifest set is kept (`--state-dir`): saved at start and after
    /// every accepted reload, and served when the files do not validate at start.
    pub state_dir: Option<PathBuf>,
    /// One line per request (`--access-log`); `None`: no access log, at no cost to requests.
    pub access_log: Option<veer_gateway::access_log::AccessLogConfig>,
    /// Manifests and this cluster's endpoints from a Kubernetes API server (`--kubeconfig`),
    /// beside the files. The node starts once the server's objects were all listed once.
    pub external: Option<External>,
    /// Regional zones whose DNSZone has a `takeover` are written under a lease on this etcd
    /// (`--etcd`); needs `dns`. `None`: such zones are written by no node.
    pub etcd: Option<crate::takeover::EtcdSettings>,
}

/// How a node joins the mesh.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The cluster's directory as `veer pki` writes it: root-cert.pem, node-cert.pem, node-key.pem.
    pub certs: PathBuf,
    pub aging: Aging,
    /// East-west listener; default: the Cluster's `spec.eastWest.address`.
    pub east_west: Option<SocketAddr>,
}

impl NodeConfig {
    pub fn new(files: Vec<PathBuf>, cluster: &str) -> Self {
        NodeConfig {
            files,
            cluster: cluster.to_string(),
            labels: Labels::new(),
            listen: None,
            admin: None,
            reload_every: Duration::from_millis(100),
            limits: Limits::default(),
            dns: None,
            dns_settings: veer_dns::DnsSettings::default(),
            mesh: None,
            workers: 1,
            worker_cpus: None,
            state_dir: None,
            access_log: None,
            external: None,
            etcd: None,
        }
    }
}

/// A running node.
pub struct Node {
    /// The gateway: the mesh's names, and the Gateway listener ports not mapped elsewhere.
    pub listen: SocketAddr,
    /// Every client socket, as bound, by socket number: `listen` first, then the other
    /// addresses of `spec.gateway.ports` (see `veer_model::set::Listeners`).
    pub listeners: Vec<SocketAddr>,
    pub admin: SocketAddr,
    /// The DNS server's address, when one runs.
    pub dns: Option<SocketAddr>,
    /// The east-west listener's address, when meshed.
    pub east_west: Option<SocketAddr>,
    pub events: Arc<Events>,
    pub metrics: Arc<Metrics>,
    /// The control side's metrics (on the same registry as `metrics`), and its watcher's pulse.
    pub control_metrics: Arc<ControlMetrics>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Extra worker threads (each serves its own listener socket until shutdown).
    threads: Vec<std::thread::JoinHandle<()>>,
    dns_server: Option<veer_dns::DnsServer>,
    takeover: Option<crate::takeover::Takeover>,
}

impl Node {
    /// Loads and checks the manifests, then starts serving. Manifest errors are returned with
    /// their locations, one per line; with a state directory holding a set that passes, the
    /// node serves that instead (see `start_from`).
    pub async fn start(mut cfg: NodeConfig) -> Result<Node, NodeError> {
        wait_for_writers(&cfg.files).await;
        if let Some(external) = &mut cfg.external {
            // Serving before everything was listed would serve a half-read state: routes missing,
            // endpoints absent, traffic failed over for nothing.
            tracing::info!(target: "veer::node", "waiting until the API server's objects have all been listed once");
            if !external.first_sync().await {
                return Err(NodeError::Manifests("the API server source ended before it listed every kind once".into()));
            }
        }
        let (set, baseline, from_state) = start_from(&cfg)?;
        let cluster = set.cluster(&cfg.cluster).cloned();
        let listen = cfg.listen.or_else(|| cluster.as_ref().and_then(|c| c.gateway)).ok_or_else(|| {
            NodeError::Config(format!(
                "no gateway address for cluster {:?}: set spec.gateway.address on its Cluster or pass --listen",
                cfg.cluster
            ))
        })?;
        let admin_addr =
            cfg.admin.or_else(|| cluster.as_ref().and_then(|c| c.admin)).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let workers = cfg.workers.max(1);
        // Which sockets serve which Gateway listener ports; the set passed the same check.
        let plan = set.listeners(&cfg.cluster).map_err(|e| NodeError::Config(e.to_string()))?;
        if plan.extra.len() >= veer_gateway::snapshot::MAX_SOCKETS {
            return Err(NodeError::Config(veer_gateway::snapshot::SnapshotError::TooManySockets(plan.extra.len()).to_string()));
        }
        let listener = bind_shared(listen, workers > 1).map_err(|e| NodeError::listen(listen, "", e))?;
        let admin_listener = TcpListener::bind(admin_addr).await.map_err(|e| NodeError::listen(admin_addr, "admin", e))?;
        let listen = listener.local_addr().map_err(|e| NodeError::listen(listen, "", e))?;
        let mut first_listeners = vec![listener];
        for addr in &plan.extra {
            // With SO_REUSEPORT a second socket on the gateway's address would take half its
            // connections and route them by another port's routes.
            if veer_model::topology::overlaps(*addr, listen) {
                return Err(NodeError::Config(format!("{addr} of spec.gateway.ports overlaps the gateway {listen} (--listen or spec.gateway.address); map the port to the gateway's own address or give it another")));
            }
            first_listeners.push(bind_shared(*addr, workers > 1).map_err(|e| NodeError::listen(*addr, "spec.gateway.ports", e))?);
        }
        let bound: Vec<SocketAddr> =
            first_listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>().map_err(|e| NodeError::listen(listen, "", e))?;
        // The other workers' sockets on the very ports the first one got (they may have been 0).
        let extra_listeners = (1..workers)
            .map(|_| {
                bound.iter().map(|&a| bind_shared(a, true).map_err(|e| NodeError::listen(a, "worker", e))).collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let admin_addr = admin_listener.local_addr().map_err(|e| NodeError::listen(admin_addr, "admin", e))?;
        for line in serving_lines(&set, &cfg.cluster, &plan, &bound) {
            tracing::info!(target: "veer::node", "{line}");
        }

        let control_clients = clients(Duration::from_secs(1), 1);
        let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::new());
        let events = Arc::new(Events::new(1024));
        let access_log = match &cfg.access_log {
            Some(c) => Some(Arc::new(
                veer_gateway::access_log::AccessLog::start(c, metrics.access_log_dropped())
                    .map_err(|e| NodeError::Config(e.to_string()))?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            http1: control_clients.http1,
            http2: control_clients.http2,
            outcomes: outcome_tx,
            metrics: metrics.clone(),
            upload_idle_timeout: cfg.limits.idle_timeout,
            retry_buffers: Arc::new(veer_gateway::upload::BufferBudget::new(cfg.limits.retry_buffer_bytes)),
            access_log,
        });
        // A meshed node proves who it is before it serves anything.
        let mesh = match &cfg.mesh {
            Some(m) => {
                let identity = veer_pki::MeshIdentity::load(&m.certs, &cfg.cluster).map_err(NodeError::Identity)?;
                let ew_addr = m.east_west.or_else(|| cluster.as_ref().and_then(|c| c.east_west)).ok_or_else(|| {
                    NodeError::Config(format!(
                        "no east-west address for cluster {:?}: set spec.eastWest.address on its Cluster or pass --east-west",
                        cfg.cluster
                    ))
                })?;
                let ew_listener = TcpListener::bind(ew_addr).await.map_err(|e| NodeError::listen(ew_addr, "east-west", e))?;
                let (catalog_tx, catalog_rx) = watch::channel(Arc::new(Catalog::default()));
                Some((identity, ew_listener, catalog_tx, catalog_rx, m.aging))
            }
            None => None,
        };
        let control_cfg = ControlConfig {
            files: cfg.files.clone(),
            cluster: cfg.cluster.as_str().into(),
            labels: cfg.labels.clone(),
            reload_every: cfg.reload_every,
            state_dir: cfg.state_dir.clone(),
            listener_addrs: plan.extra.clone(),
            mesh: mesh.as_ref().map(|(identity, _, catalog_tx, _, aging)| MeshSetup {
                aging: *aging,
                client: identity.client_config(),
                catalog: catalog_tx.clone(),
            }),
            external: cfg.external.clone(),
        };
        let control_metrics = Arc::new(ControlMetrics::new(&metrics));
        let control_status = Arc::new(ControlStatus::default());
        let mut control =
            Control::new(control_cfg, shared.clone(), events.clone(), control_metrics.clone(), control_status.clone(), set, baseline);
        if cfg.etcd.is_some() && cfg.dns.is_none() {
            return Err(NodeError::Config("--etcd needs --dns: the DNS reconcile loop writes the zones a lease gives".into()));
        }
        let takeover = cfg.etcd.as_ref().map(|etcd| {
            crate::takeover::Takeover::start(
                etcd,
                &cfg.cluster,
                control.watch_manifests(),
                shared.clone(),
                control_status.clone(),
                listen,
                events.clone(),
            )
        });
        let dns_server = match cfg.dns {
            Some(dns_addr) => {
                // The DNS records follow every manifest set the control loop accepts.
                let set_rx = control.watch_manifests();
                let gateway = if listen.ip().is_unspecified() {
                    cluster.as_ref().and_then(|c| c.gateway).map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip())
                } else {
                    listen.ip()
                };
                let (ev, me) = (events.clone(), cfg.cluster.clone());
                let notify: veer_dns::Notify = Arc::new(move |t| {
                    ev.record(NewEvent::cluster(EventKind::DnsOwnership, &me, format!("dns: {t}")));
                });
                let mut dns_cfg = veer_dns::DnsConfig::new(dns_addr, &cfg.cluster, gateway).with(&cfg.dns_settings);
                // Epochs that go back at a restart would be fenced by the DNS server's epoch record.
                dns_cfg.state_file = cfg.state_dir.as_ref().map(|d| d.join("dns-epochs.json"));
                dns_cfg.leases = takeover.as_ref().map(|t| t.feed.clone());
                let server = veer_dns::DnsServer::start(dns_cfg, set_rx, Some(notify)).await.map_err(|e| NodeError::Dns(e.to_string()))?;
                let source = crate::dns_metrics::DnsSource::default();
                source.set(server.counters());
                metrics.register(|registry| registry.register_collector(Box::new(source)));
                Some(server)
            }
            None => None,
        };
        let dns = dns_server.as_ref().map(|d| d.addr);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut east_west = None;
        if let Some((identity, listener, _tx, catalog, aging)) = mesh {
            let set_rx = control.watch_manifests();
            east_west = listener.local_addr().ok();
            let ew = Arc::new(EastWest {
                cluster: cfg.cluster.clone(),
                set: set_rx,
                catalog,
                shared: shared.clone(),
                events: events.clone(),
                metrics: control_metrics.clone(),
                heartbeat: aging.heartbeat,
            });
            tasks.push(tokio::spawn(eastwest::serve(listener, identity.server_config(), ew, shutdown_rx.clone())));
        }
        // The control loop has a thread of its own: a full rebuild takes tens of milliseconds at
        // scale, and on a worker's thread every connection of that worker would wait for it.
        // (Manifests are read on the watcher's thread, which the loop starts.)
        let mut threads = Vec::new();
        let stop = shutdown_rx.clone();
        let control_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NodeError::Thread("the control loop's runtime", e))?;
        let control_thread = std::thread::Builder::new()
            .name("veer-control".into())
            .spawn(move || control_rt.block_on(control.run(outcome_rx, stop)))
            .map_err(|e| NodeError::Thread("the control thread", e))?;
        threads.push(control_thread);
        let mut limits = cfg.limits;
        limits.max_concurrent_requests = limits.max_concurrent_requests.div_ceil(workers);
        let listeners = first_listeners
            .into_iter()
            .map(|l| TcpListener::from_std(l).map_err(|e| NodeError::listen(listen, "", e)))
            .collect::<Result<Vec<_>, _>>()?;
        // The cap on client connections is the node's, shared by its workers (unlike the
        // in-flight cap, which each worker applies to its share).
        let mut seats = server::Workers::seats(workers, limits.max_connections, &metrics).into_iter();
        let first_seat = seats.next().ok_or_else(|| NodeError::Config("no worker seat".into()))?;
        tasks.push(tokio::spawn(server::serve(
            listeners,
            first_seat,
            shared.clone(),
            clients(Duration::from_secs(1), workers),
            limits,
            shutdown_rx.clone(),
        )));
        for ((i, std_listener), seat) in extra_listeners.into_iter().enumerate().zip(seats) {
            let (shared, stop) = (shared.clone(), shutdown_rx.clone());
            let cpu = cfg.worker_cpus.as_ref().and_then(|c| c.get(i + 1).copied());
            let thread = std::thread::Builder::new()
                .name(format!("veer-worker-{}", i + 1))
                .spawn(move || {
                    if let Some(Err(e)) = cpu.map(crate::cpus::pin_current_thread) {
                        tracing::warn!(target: "veer::node", "worker {} left to the scheduler: {e}", i + 1);
                    }
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => return tracing::error!(target: "veer::node", "worker {} cannot start: {e}", i + 1),
                    };
                    rt.block_on(async move {
                        match std_listener.into_iter().map(TcpListener::from_std).collect::<Result<Vec<_>, _>>() {
                            Ok(listeners) => {
                                server::serve(listeners, seat, shared, clients(Duration::from_secs(1), workers), limits, stop).await
                            }
                            Err(e) => tracing::error!(target: "veer::node", "worker {} cannot listen: {e}", i + 1),
                        }
                    });
                })
                .map_err(|e| NodeError::Thread("worker thread", e))?;
            threads.push(thread);
        }
        if let Some(cpus) = &cfg.worker_cpus {
            match cpus.first().map(|&cpu| crate::cpus::pin_current_thread(cpu)) {
                Some(Ok(())) => tracing::info!(target: "veer::node", "workers pinned to CPUs {cpus:?}"),
                Some(Err(e)) => tracing::warn!(target: "veer::node", "the first worker is left to the scheduler: {e}"),
                None => {}
            }
        }
        let routes_shared = shared.clone();
        let state = Arc::new(AdminState {
            metrics: metrics.clone(),
            events: events.clone(),
            routes: Box::new(move || serde_json::to_value(routes_shared.snapshot.load().reports()).unwrap_or(serde_json::Value::Null)),
            status: Box::new(status(
                cfg.cluster.clone(),
                shared.clone(),
                control_status.clone(),
                bound.clone(),
                takeover.as_ref().map(|t| t.feed.leases.clone()),
            )),
            ready: AtomicBool::new(true),
            ready_check: Some(Box::new({
                let watcher = control_metrics.manifest_watcher();
                move || watcher.check()
            })),
        });
        let mut admin_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                while !*admin_shutdown.borrow() {
                    if admin_shutdown.changed().await.is_err() {
                        break;
                    }
                }
            };
            if let Err(e) = admin::serve(admin_listener, state, stop).await {
                tracing::error!(target: "veer::admin", "admin listener failed: {e}");
            }
        }));
        let others: Vec<String> = bound.iter().skip(1).map(ToString::to_string).collect();
        let others = if others.is_empty() { String::new() } else { format!(", Gateway listener ports on {}", others.join(", ")) };
        events.record(NewEvent::cluster(EventKind::Started, &cfg.cluster, format!("gateway on {listen}{others}, admin on {admin_addr}")));
        if let Some(why) = from_state {
            events.record(NewEvent::cluster(EventKind::StartedFromState, &cfg.cluster, why));
        }
        Ok(Node {
            listen,
            listeners: bound,
            admin: admin_addr,
            dns,
            east_west,
            events,
            metrics,
            control_metrics,
            shared,
            shutdown,
            tasks,
            threads,
            dns_server,
            takeover,
        })
    }

    /// The routing snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// A reader of the snapshot in force that outlives this borrow (for a task that reports on
    /// the node, such as the Kubernetes Events publisher).
    pub fn snapshot_reader(&self) -> impl Fn() -> Arc<Snapshot> + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.snapshot.load_full()
    }

    /// Stops accepting, drains in-flight requests, and stops every task.
    pub async fn stop(self) {
        self.events.record(NewEvent::node(EventKind::Stopping, "shutting down"));
        if let Some(t) = self.takeover {
            t.stop().await;
        }
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if let Some(d) = self.dns_server {
            d.stop().await;
        }
    }

    /// The DNS server, when one runs (its zones, writers and epochs, counters).
    pub fn dns_server(&self) -> Option<&veer_dns::DnsServer> {
        self.dns_server.as_ref()
    }
}

/// The set a node starts with: the files' when they pass; otherwise, with a state directory,
/// the set saved there when it passes the same checks (with why, for the event); otherwise the
/// files' errors. Each accepted start is saved to the state directory.
/// Holds the first read back while a process has a manifest file open for writing, however
/// long it pauses: half a file must never be served, at start as on reload (where inotify
/// tells the watcher what this asks `/proc`).
async fn wait_for_writers(files: &[PathBuf]) {
    let mut said = None;
    loop {
        let Ok(stamps) = veer_model::files::fingerprint(files) else { return };
        let writers = manifests::writers::open_for_writing(&stamps);
        if writers.is_empty() {
            return;
        }
        let now = crate::clock::now();
        if said.is_none_or(|at: std::time::Instant| now.duration_since(at) >= manifests::ready::WRITER_WARN_AFTER) {
            tracing::warn!(target: "veer::node", "waiting to read the manifests until their writers close them: {}", manifests::writers::describe(&writers));
            said = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_from(cfg: &NodeConfig) -> Result<(ManifestSet, Baseline, Option<String>), NodeError> {
    // Taken before reading: a file changed after is seen as changed by the watcher.
    let stamps = veer_model::files::fingerprint(&cfg.files).ok();
    let outside = cfg.external.as_ref().map(External::documents_now).unwrap_or_default();
    let from_files = veer_model::files::read_paths(&cfg.files).map_err(|e| e.to_string()).and_then(|sources| {
        manifests::check(&veer_control::external::combined(&sources, &outside), &cfg.cluster, &cfg.labels)
            .map(|set| (set, sources))
            .map_err(|errors| format!("the manifests have errors:\n{}", errors.join("\n")))
    });
    let files_error = match from_files {
        Ok((set, sources)) => {
            if let Some(dir) = &cfg.state_dir {
                if let Err(e) = state::save(dir, &sources) {
                    tracing::warn!(target: "veer::node", "the manifests could not be saved for a restart whose files do not validate: {e}");
                }
            }
            return Ok((set, Baseline { sources, stamps }, None));
        }
        Err(e) => e,
    };
    let Some(dir) = &cfg.state_dir else { return Err(NodeError::Manifests(files_error)) };
    // The saved state is untrusted input too: checked exactly as the files are.
    let saved =
        state::load(dir).map_err(|e| e.to_string()).and_then(|saved| match manifests::check(&saved.sources, &cfg.cluster, &cfg.labels) {
            Ok(set) => Ok((set, saved)),
            Err(errors) => Err(format!("{}: the saved set does not pass: {}", saved.path.display(), errors.join(" | "))),
        });
    let (set, saved) = saved.map_err(|e| NodeError::Manifests(format!("{files_error}\n(no saved set to serve instead: {e})")))?;
    let age_s = veer_control::events::unix_ms().saturating_sub(saved.saved_unix_ms) / 1000;
    let why = format!(
        "the manifest files do not pass ({}); serving instead the set last accepted, saved {age_s} s ago in {}, until the files are fixed",
        files_error.replace('\n', " | "),
        saved.path.display()
    );
    tracing::error!(target: "veer::node", "{why}");
    // The watcher starts from nothing it read, so the first set the files give that passes
    // takes over from the saved one.
    let baseline = Baseline { sources: vec![("<saved state>".into(), String::new())], stamps: None };
    Ok((set, baseline, Some(why)))
}

/// One line per Gateway listener served: "serving Gateway default/public port 80 on
/// 127.0.0.1:8080", and where the mesh's names are served.
fn serving_lines(set: &ManifestSet, cluster: &str, plan: &veer_model::set::Listeners, bound: &[SocketAddr]) -> Vec<String> {
    let mut lines = vec![format!("serving the mesh's names (VirtualDestinations, FailoverServices, Services) on {}", bound[0])];
    for g in set.gateways.iter().filter(|g| g.cluster == cluster) {
        let mut ports: Vec<u16> = g.listeners.iter().filter(|l| l.protocol == "HTTP").map(|l| l.port).collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            match plan.ports.get(&port).and_then(|&s| bound.get(s)) {
                Some(addr) => lines.push(format!("serving Gateway {}/{} port {port} on {addr}", g.meta.namespace, g.meta.name)),
                None => lines.push(format!("Gateway {}/{} port {port} has no served routes and no socket", g.meta.namespace, g.meta.name)),
            }
        }
    }
    for g in set.gateways.iter().filter(|g| g.cluster == cluster) {
        for l in g.listeners.iter().filter(|l| l.passthrough) {
            if let Some(addr) = plan.ports.get(&l.port).and_then(|&s| bound.get(s)) {
                lines.push(format!(
                    "serving Gateway {}/{} port {} (TLS passthrough by SNI) on {addr}",
                    g.meta.namespace, g.meta.name, l.port
                ));
            }
        }
    }
    for s in set.istio_passthrough(cluster) {
        if let Some(addr) = plan.ports.get(&s.port).and_then(|&i| bound.get(i)) {
            lines.push(format!("serving Istio PASSTHROUGH port {} (TLS passthrough by SNI) on {addr}", s.port));
        }
    }
    lines
}

/// What `/status` answers: the node, its client sockets and the Gateway listener ports each
/// serves, its peers with the age of their data, and the active priority of every destination.
fn status(
    cluster: String,
    shared: Arc<Shared>,
    control: Arc<ControlStatus>,
    bound: Vec<SocketAddr>,
    leases: Option<watch::Receiver<Arc<veer_dns::takeover::Leases>>>,
) -> impl Fn() -> serde_json::Value + Send + Sync {
    move || {
        let now_ms = veer_control::events::unix_ms();
        let snap = shared.snapshot.load();
        let peers: Vec<serde_json::Value> = control
            .peers
            .load()
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                v["age_ms"] = p.heard_unix_ms.map(|h| now_ms.saturating_sub(h)).into();
                v
            })
            .collect();
        let holds = control.holds.load();
        let peer_list = control.peers.load();
        let own = if peer_list.is_empty() { "" } else { cluster.as_str() };
        let destinations: Vec<serde_json::Value> = snap
            .destinations
            .iter()
            .map(|d| {
                let mut by_cluster: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
                let mut endpoints = Vec::new();
                for (u, e) in d.upstreams.iter().zip(&d.endpoints) {
                    let healthy = e.health != veer_core::topology::Health::Unhealthy;
                    let c = by_cluster.entry(&u.cluster).or_default();
                    c.0 += 1;
                    c.1 += usize::from(healthy);
                    let held = veer_control::holds::held(&holds, &peer_list, own, &d.key, &u.cluster, &u.key);
                    let mut v = serde_json::json!({"address": u.key.to_string(), "cluster": &*u.cluster, "priority": i64::try_from(u.priority).unwrap_or(-1), "healthy": healthy && held.is_none(), "held": held});
                    if let Some(n) = veer_control::holds::note(&peer_list, own, &u.cluster) {
                        v["note"] = n.into();
                    }
                    endpoints.push(v);
                }
                // Why nothing serves: no endpoint at all (with the resolver's reasons, such as a
                // remote cluster whose east-west Gateway does not expose the host), or every
                // endpoint held out (each says why).
                let why_none = if d.endpoints.is_empty() {
                    let mut why = vec!["no endpoints".to_string()];
                    why.extend(d.report.notes.iter().cloned());
                    Some(why.join("; "))
                } else if d.active_priority() < 0 {
                    Some("every endpoint is held out (see each endpoint)".to_string())
                } else {
                    None
                };
                serde_json::json!({
                    "destination": &*d.key,
                    "active_priority": d.active_priority(),
                    "clusters": by_cluster.iter().map(|(c, (n, ok))| serde_json::json!({"cluster": c, "endpoints": n, "healthy": ok})).collect::<Vec<_>>(),
                    "endpoints": endpoints,
                    "why_none": why_none,
                })
            })
            .collect();
        let listeners: Vec<serde_json::Value> = bound
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let ports: Vec<u16> = snap.listeners.ports.iter().filter(|(_, &s)| s == i).map(|(&p, _)| p).collect();
                serde_json::json!({ "address": a.to_string(), "gateway": i == veer_gateway::snapshot::GATEWAY, "gateway_listener_ports": ports, "tls": snap.listener_tls(i).is_some() })
            })
            .collect();
        // Each leased zone: who holds its lease at which epoch, what this node means to do and why.
        let dns_leases: Option<Vec<serde_json::Value>> = leases.as_ref().map(|rx| {
            rx.borrow()
                .iter()
                .map(|(zone, s)| {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["zone"] = zone.origin.clone().into();
                    v["region"] = zone.region.clone().into();
                    v["writing"] = s.tenure.is_some().into();
                    v
                })
                .collect()
        });
        serde_json::json!({ "cluster": cluster, "generation": snap.generation, "listeners": listeners, "peers": peers, "destinations": destinations, "dns_leases": dns_leases })
    }
}

/// A listening socket on `addr`; with `shared`, other sockets may listen on the same address
/// (SO_REUSEPORT) and the kernel spreads new connections over them. Returned as a std listener
/// (non-blocking) so it can move to the worker thread whose runtime will own it.
fn bind_shared(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    listener.into_std()
}
