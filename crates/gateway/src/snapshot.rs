//! The routing snapshot: one immutable value per update holding every route, destination,
//! priority table and pick weights. The request path only reads it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use veer_core::names::{ClusterName, DestinationName};
use veer_core::outcome::FailureRun;
use veer_core::pick::{Picks, Tried};
use veer_core::policy::{Resilience, RetryOn, RetryPolicy};
use veer_core::retry::RetryBudget;
use veer_core::table::{self, Table};
use veer_core::topology::EndpointKey;
use veer_core::topology::{Address, Client, Endpoint, Health, Labels};
use veer_model::explain::{self, Report};
use veer_model::gateway::{self, HttpRoute};
use veer_model::httpmatch::{self, RouteMatch};
use veer_model::resolve::{self, Destination, DestinationKind, View};
use veer_model::set::Listeners;

use crate::FastMap;

use crate::link::PeerLink;
use crate::remote::Remote;
use crate::tls::SocketTls;
use crate::upstream::tls::TlsClient;

/// Timeouts applied to a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub per_try: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(1), per_try: Duration::from_secs(3), request: Duration::from_secs(15) }
    }
}

/// One upstream endpoint as the request path needs it.
#[derive(Debug)]
pub struct Upstream {
    /// The key outlier detection and health use: the endpoint's address.
    pub key: EndpointKey,
    pub authority: http::uri::Authority,
    /// The endpoint's socket address, when it has one (not a DNS name).
    pub socket: Option<std::net::SocketAddr>,
    pub cluster: ClusterName,
    /// `cluster` as a response header value, built once.
    pub cluster_header: http::HeaderValue,
    pub priority: usize,
    /// The peer cluster's east-west link this endpoint is reached through; `None`: direct.
    pub via: Option<Arc<PeerLink>>,
    /// Failures reported since the last success: lets the request path report a success only
    /// when it resets something, so healthy traffic sends nothing to the control loop.
    pub recent_failures: FailureRun,
}

/// A destination with its table for this node's client.
#[derive(Debug)]
pub struct DestState {
    /// `host:port` (plus the path for route rules).
    pub key: DestinationName,
    pub upstreams: Vec<Upstream>,
    pub endpoints: Vec<Endpoint>,
    pub table: Table,
    /// The table's pick weights: first tries, and retries moving to each priority.
    picks: Picks,
    pub resilience: Resilience,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    pub http2: bool,
    pub report: Report,
    /// This destination's retry budget. It lives as long as the destination does, across
    /// health updates and reloads (see [`Snapshot::build_after`]), and requests reach it
    /// through the destination without a reference count of their own.
    pub budget: Arc<RetryBudget>,
    /// The client for endpoints that speak TLS (a DestinationRule's `trafficPolicy.tls`); it
    /// lives as long as the setting does, so its connections survive health updates.
    pub tls: Option<TlsClient>,
    /// The endpoint keys held down when this state was built, sorted: a reload that resolves
    /// the destination as before, with the same ones down, keeps this state as it is.
    down: Vec<EndpointKey>,
    /// The endpoints warming up (slow start) when this state was built, with their factors,
    /// sorted: a reload keeps this state only if they are the same.
    warm: Vec<(EndpointKey, f64)>,
    /// The destination as resolved from the manifests, before health: what a health-only
    /// update rebuilds this state from without resolving the manifests again.
    resolved: Destination,
}

#[derive(Debug)]
struct Route {
    port: Option<u16>,
    /// The client sockets this route is served on, one bit per socket ([`GATEWAY`]: the
    /// node's gateway): a host served on another socket only is not served on this one.
    sockets: u64,
    /// An HTTPRoute rule's match; `None`: the destination takes every request on its host.
    matched: Option<RouteMatch>,
    dest: usize,
}

/// The SNI names of a node's passthrough sockets (`TLS` listeners in `Passthrough` mode) and
/// the destinations they go to.
#[derive(Debug, Default)]
struct SniRoutes {
    /// One bit per passthrough socket: a connection there is routed by its ClientHello.
    sockets: u64,
    /// Exact names (lower case) → (sockets, destination).
    exact: FastMap<String, Vec<(u64, usize)>>,
    /// `*.` names with their sockets and destinations, longest first: the most specific
    /// wildcard that takes a name wins.
    wildcards: Vec<(String, u64, usize)>,
}

/// The node's gateway socket: the mesh's names, and the Gateway listener ports mapped to it.
pub const GATEWAY: usize = 0;

/// Sockets a node may serve, the gateway included: one bit each in a route's `sockets`.
pub const MAX_SOCKETS: usize = 64;

/// Why a request has no destination: what its 404 says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No destination serves this host (and port, when the request names one).
    NoHost,
    /// The host is served, but no HTTPRoute rule on it matches the request's method, path,
    /// headers and query.
    NoRule,
}

/// A request as HTTPRoute matching reads it.
struct Head<'a, B>(&'a http::Request<B>);

impl<B> httpmatch::Request for Head<'_, B> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    fn path(&self) -> &str {
        self.0.uri().path()
    }

    fn query(&self) -> Option<&str> {
        self.0.uri().query()
    }

    fn header_values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.0.headers().get_all(name).iter().map(|v| v.as_bytes())
    }
}

/// Why no snapshot could be built for a node: the set it was given cannot serve that node's
/// cluster (the watcher's checks refuse such a set before it gets here).
#[derive(Debug)]
pub enum SnapshotError {
    /// The node's cluster is not in the set, or its client labels cannot be read.
    Client(resolve::ResolveError),
    /// Gateway listener ports the node serves have no socket.
    Listeners(veer_model::set::UnmappedPorts),
    /// `spec.gateway.ports` maps more addresses than a route's socket mask holds.
    TooManySockets(usize),
    /// A socket's TLS config could not be made.
    Tls(crate::tls::TlsConfigError),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Client(e) => e.fmt(f),
            SnapshotError::Listeners(e) => e.fmt(f),
            SnapshotError::Tls(e) => e.fmt(f),
            SnapshotError::TooManySockets(n) => {
                write!(f, "spec.gateway.ports maps {n} addresses; a node serves at most {} besides its gateway", MAX_SOCKETS - 1)
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Everything the request path reads, swapped atomically on every change.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    /// Shared between snapshots that differ only in health.
    routes: Arc<FastMap<String, Vec<Route>>>,
    /// The client sockets these routes are for: the gateway and `spec.gateway.ports`.
    pub listeners: Arc<Listeners>,
    /// Per socket (index = socket number), its TLS when it serves HTTPS listeners.
    tls: Arc<[Option<Arc<SocketTls>>]>,
    /// The passthrough sockets and their SNI names.
    sni: Arc<SniRoutes>,
    pub destinations: Vec<Arc<DestState>>,
    client: Client,
    /// Peer links and remote health (empty when the node is not meshed).
    remote: Arc<Remote>,
}

/// Endpoint health as the control loop knows it: destination key → endpoint keys that are down.
pub type Unhealthy = HashMap<DestinationName, Vec<EndpointKey>>;

/// Endpoints warming up after they came back (slow start): destination → (endpoint, the factor
/// its weight is scaled by now, in `(0, 1)`). The control loop computes the factors
/// (`veer_core::slowstart`) and rebuilds the tables at a few steps over the window, so a
/// request reads fixed pick weights.
pub type Warming = HashMap<DestinationName, Vec<(EndpointKey, f64)>>;

/// veer's retry policy when none is configured: retry what is safe on another endpoint,
/// moving to the next priority once one has failed.
pub fn default_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        per_try_timeout: None,
        retry_on: RetryOn {
            connect_failure: true,
            refused_stream: true,
            reset: true,
            gateway_error: true,
            retriable_status_codes: vec![503],
            ..RetryOn::default()
        },
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        other_priorities: true,
    }
}

// === impl DestState ===

impl DestState {
    /// Picks an endpoint (veer-core's [`Picks::pick`] over this destination's table and retry
    /// policy): by the table on a first attempt; on a retry, away from priorities and hosts
    /// already tried. `None`: nothing to pick.
    #[inline]
    pub fn pick(&self, tried: &Tried, rand: u64, rand_f: f64) -> Option<usize> {
        self.picks.pick(&self.table, tried, self.retry.other_priorities, rand, rand_f)
    }

    /// The lowest priority that gets load, -1 when none does.
    pub fn active_priority(&self) -> i64 {
        self.table.load.active_priority().map_or(-1, |p| p as i64)
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// The destination for a request's host (Host header or :authority, port optional) that
    /// arrived on client socket `socket`, or why there is none. A host served only on other
    /// sockets is no host here. A host's routes are in precedence order (HTTPRoute matches as
    /// Gateway API orders them), so the first that fits decides; nothing is allocated or locked.
    pub fn route<B>(&self, socket: usize, host: &str, req: &http::Request<B>) -> Result<&Arc<DestState>, Miss> {
        let on = socket_bit(socket);
        let (name, port) = split_host_port(host);
        let name = name.trim_end_matches('.');
        let routes = match self.routes.get(name) {
            Some(r) => r,
            None => self.routes.get(&name.to_ascii_lowercase()).ok_or(Miss::NoHost)?,
        };
        let head = Head(req);
        let mut port_served = false;
        for r in routes.iter() {
            if r.sockets & on == 0 || port.is_some_and(|p| r.port.is_some_and(|rp| rp != p)) {
                continue;
            }
            port_served = true;
            if r.matched.as_ref().is_none_or(|m| m.matches(&head)) {
                return self.destinations.get(r.dest).ok_or(Miss::NoHost);
            }
        }
        Err(if port_served { Miss::NoRule } else { Miss::NoHost })
    }

    /// Whether client socket `socket` passes TLS through by SNI (a `TLS` Passthrough listener's).
    #[inline]
    pub fn is_passthrough(&self, socket: usize) -> bool {
        self.sni.sockets & socket_bit(socket) != 0
    }

    /// The destination of SNI `name` (lower case) on passthrough socket `socket`: an exact
    /// name first, else the longest wildcard that takes it.
    pub fn sni_route(&self, socket: usize, name: &str) -> Option<&Arc<DestState>> {
        let on = socket_bit(socket);
        let exact = self.sni.exact.get(name).and_then(|list| list.iter().find(|(s, _)| s & on != 0));
        let dest = match exact {
            Some(&(_, dest)) => dest,
            None => self.sni.wildcards.iter().find(|(pattern, s, _)| s & on != 0 && veer_model::tlsroute::sni_matches(pattern, name))?.2,
        };
        self.destinations.get(dest)
    }

    /// The TLS of client socket `socket`, when it terminates TLS.
    #[inline]
    pub fn listener_tls(&self, socket: usize) -> Option<&Arc<SocketTls>> {
        self.tls.get(socket).and_then(Option::as_ref)
    }

    /// Whether `addr` (address *and* port) is an endpoint of `cluster` in some destination: the
    /// east-west listener forwards a peer's request only there. A scan, not an index: it runs
    /// on the east-west path only, once per forwarded request.
    pub fn has_endpoint(&self, cluster: &str, addr: std::net::SocketAddr) -> bool {
        self.destinations
            .iter()
            .any(|d| d.endpoints.iter().any(|e| e.address == veer_core::topology::Address::Socket(addr) && e.cluster == cluster))
    }

    /// The TLS client of a destination `addr` is an endpoint of, when that destination speaks
    /// TLS to it: the east-west listener reaches a peer's pick as this node's own requests would.
    pub fn tls_for(&self, addr: std::net::SocketAddr) -> Option<TlsClient> {
        let key = EndpointKey::from(addr);
        self.destinations.iter().filter(|d| d.tls.is_some()).find(|d| d.upstreams.iter().any(|u| u.key == key)).and_then(|d| d.tls.clone())
    }

    /// Builds the snapshot for a node in `cluster` from a validated manifest set and the
    /// endpoints of its clusters.
    pub fn build(
        view: View<'_>,
        cluster: &str,
        labels: &Labels,
        unhealthy: &Unhealthy,
        generation: u64,
    ) -> Result<Snapshot, SnapshotError> {
        Self::build_meshed(view, cluster, labels, unhealthy, Arc::default(), generation)
    }

    /// [`Snapshot::build`] for a meshed node: endpoints of peer clusters are reached through
    /// their links and are unhealthy when their cluster is down or their node says so.
    pub fn build_meshed(
        view: View<'_>,
        cluster: &str,
        labels: &Labels,
        unhealthy: &Unhealthy,
        remote: Arc<Remote>,
        generation: u64,
    ) -> Result<Snapshot, SnapshotError> {
        Self::build_with(view, cluster, labels, unhealthy, &Warming::new(), remote, generation, None)
    }

    /// [`Snapshot::build_meshed`] for new manifests, after `previous`. A destination that
    /// resolves exactly as before, for the same client, remote health and endpoints down, keeps
    /// its state (table, retry budget, failure counts), so a reload that changes a few
    /// destinations rebuilds only those; any other keeps the retry budget of its key, so a
    /// reload neither refills nor empties a budget.
    #[allow(clippy::too_many_arguments)]
    pub fn build_after(
        previous: &Snapshot,
        view: View<'_>,
        cluster: &str,
        labels: &Labels,
        unhealthy: &Unhealthy,
        warming: &Warming,
        remote: Arc<Remote>,
        generation: u64,
    ) -> Result<Snapshot, SnapshotError> {
        Self::build_with(view, cluster, labels, unhealthy, warming, remote, generation, Some(previous))
    }

    #[allow(clippy::too_many_arguments)]
    fn build_with(
        view: View<'_>,
        cluster: &str,
        labels: &Labels,
        unhealthy: &Unhealthy,
        warming: &Warming,
        remote: Arc<Remote>,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, SnapshotError> {
        let set = view.set;
        let client = resolve::client(set, cluster, labels).map_err(SnapshotError::Client)?;
        let listeners = set.listeners(cluster).map_err(SnapshotError::Listeners)?;
        if listeners.extra.len() >= MAX_SOCKETS {
            return Err(SnapshotError::TooManySockets(listeners.extra.len()));
        }
        // The sockets that serve a route's host: those of the ports its listeners are on.
        let sockets_of = |route: &HttpRoute, host: &str| {
            route.ports_of(cluster, host).filter_map(|p| listeners.ports.get(&p)).fold(0u64, |m, &s| m | socket_bit(s))
        };
        let mut snap = Snapshot { generation, ..Snapshot::default() };
        let mut routes: FastMap<String, Vec<Route>> = FastMap::default();
        let before: FastMap<&str, &Arc<DestState>> =
            previous.map(|p| p.destinations.iter().map(|d| (d.key.as_str(), d)).collect()).unwrap_or_default();
        // A state built for another client or other remote health has other tables.
        let reusable = previous.is_some_and(|p| p.client == client && same_remote(&p.remote, &remote));
        let state_for = |key: DestinationName, dest: Destination| -> Arc<DestState> {
            let prev = before.get(key.as_str());
            match prev {
                Some(p)
                    if reusable && p.resolved == dest && p.down == sorted_down(unhealthy, &key) && p.warm == sorted_warm(warming, &key) =>
                {
                    Arc::clone(p)
                }
                _ => Arc::new(dest_state(key, dest, &client, unhealthy, warming, &remote, prev.map(|p| &***p))),
            }
        };
        let add = |snap: &mut Snapshot,
                   routes: &mut FastMap<String, Vec<Route>>,
                   hosts: &[String],
                   port: Option<u16>,
                   key: DestinationName,
                   dest: Destination| {
            let idx = snap.destinations.len();
            snap.destinations.push(state_for(key, dest));
            for h in hosts {
                // The mesh's names, on the gateway only.
                routes.entry(h.to_ascii_lowercase()).or_default().push(Route {
                    port,
                    sockets: socket_bit(GATEWAY),
                    matched: None,
                    dest: idx,
                });
            }
            idx
        };
        // What the set serves, in the order a host's routes are tried: VirtualDestination and
        // FailoverService ports, HTTPRoute rules, Service ports.
        let keys = resolve::destinations(set, cluster);
        let (services, others): (Vec<_>, Vec<_>) = keys.iter().partition(|k| k.kind == DestinationKind::Service);
        // HTTPRoutes: one destination per rule; each host's matches, of every route naming the
        // host, in Gateway API's precedence order.
        let mut rule_dest: FastMap<(*const HttpRoute, usize), usize> = FastMap::default();
        let mut sni = SniRoutes::default();
        let passthrough_ports = set
            .gateways
            .iter()
            .filter(|g| g.cluster == cluster)
            .flat_map(|g| &g.listeners)
            .filter(|l| l.passthrough)
            .map(|l| l.port)
            .chain(set.istio_passthrough(cluster).map(|s| s.port));
        for port in passthrough_ports {
            // The set refuses a passthrough port on the gateway's socket, which stays plain HTTP.
            if let Some(&socket) = listeners.ports.get(&port).filter(|&&s| s != GATEWAY) {
                sni.sockets |= socket_bit(socket);
            }
        }
        // Istio PASSTHROUGH servers: an SNI name goes to the destination of that host at the
        // server's port (a Service's `name.namespace.svc.cluster.local`, a VirtualDestination's
        // or FailoverService's host), as AUTO_PASSTHROUGH does on the east-west listener.
        let istio: Vec<(u16, u64, &[String])> = set
            .istio_passthrough(cluster)
            .filter_map(|s| {
                let bit = listeners.ports.get(&s.port).map_or(0, |&socket| socket_bit(socket) & sni.sockets);
                (bit != 0).then_some((s.port, bit, s.hosts.as_slice()))
            })
            .collect();
        let istio_sni = |sni: &mut SniRoutes, key: &resolve::DestinationKey<'_>, dest: usize| {
            for (port, bit, patterns) in &istio {
                if key.port != Some(*port) {
                    continue;
                }
                for h in key.hosts() {
                    if patterns.iter().any(|p| veer_model::istio::host_matches(p, h)) {
                        sni.exact.entry(h.to_ascii_lowercase()).or_default().push((*bit, dest));
                    }
                }
            }
        };
        let mut by_host: std::collections::BTreeMap<&str, Vec<&HttpRoute>> = std::collections::BTreeMap::new();
        for key in others {
            let Ok(d) = resolve::resolve_key(view, key, cluster) else { continue };
            match key.kind {
                DestinationKind::RouteRule { route, rule } => {
                    rule_dest.insert((route as *const HttpRoute, rule), add(&mut snap, &mut routes, &[], None, key.name.clone(), d));
                    for h in key.hosts() {
                        let list = by_host.entry(h).or_default();
                        if !list.iter().any(|r| std::ptr::eq(*r, route)) {
                            list.push(route);
                        }
                    }
                }
                DestinationKind::TlsRoute { route } => {
                    let dest = add(&mut snap, &mut routes, &[], None, key.name.clone(), d);
                    for s in route.served.iter().filter(|s| s.cluster == cluster) {
                        let Some(&socket) = listeners.ports.get(&s.port) else { continue };
                        let bit = socket_bit(socket) & sni.sockets;
                        if s.host.starts_with("*.") {
                            sni.wildcards.push((s.host.clone(), bit, dest));
                        } else {
                            sni.exact.entry(s.host.clone()).or_default().push((bit, dest));
                        }
                    }
                }
                _ => {
                    let dest = add(&mut snap, &mut routes, &key.request_hosts(), key.port, key.name.clone(), d);
                    istio_sni(&mut sni, key, dest);
                }
            }
        }
        // Stable: among wildcards of one length, the first route in the set's order wins.
        sni.wildcards.sort_by_key(|(pattern, _, _)| std::cmp::Reverse(pattern.len()));
        for (host, list) in &by_host {
            let entry = routes.entry(host.to_string()).or_default();
            for c in gateway::ordered(list) {
                if let Some(&dest) = rule_dest.get(&(c.route as *const HttpRoute, c.rule)) {
                    entry.push(Route { port: None, sockets: sockets_of(c.route, host), matched: Some(c.matched.clone()), dest });
                }
            }
        }
        for key in services {
            if let Ok(d) = resolve::resolve_key(view, key, cluster) {
                let dest = add(&mut snap, &mut routes, &key.request_hosts(), key.port, key.name.clone(), d);
                istio_sni(&mut sni, key, dest);
            }
        }
        snap.routes = Arc::new(routes);
        snap.sni = Arc::new(sni);
        snap.tls = socket_tls(set, cluster, &listeners, previous.map(|p| &*p.tls))?;
        snap.listeners = Arc::new(listeners);
        snap.client = client;
        snap.remote = remote;
        Ok(snap)
    }

    /// The same routes and destinations with new health for the destinations in `changed`; the
    /// others are shared with `self`. This is the update a failure or recovery causes: it
    /// resolves no manifest and rebuilds only the tables that moved.
    pub fn with_health(
        &self,
        unhealthy: &Unhealthy,
        warming: &Warming,
        changed: &std::collections::HashSet<DestinationName>,
        generation: u64,
    ) -> Snapshot {
        self.rebuilt(unhealthy, warming, self.remote.clone(), |key| changed.contains(key), generation)
    }

    /// The same routes with new remote health: every destination's table is rebuilt.
    pub fn with_remote(&self, unhealthy: &Unhealthy, warming: &Warming, remote: Arc<Remote>, generation: u64) -> Snapshot {
        self.rebuilt(unhealthy, warming, remote, |_| true, generation)
    }

    fn rebuilt(
        &self,
        unhealthy: &Unhealthy,
        warming: &Warming,
        remote: Arc<Remote>,
        rebuild: impl Fn(&DestinationName) -> bool,
        generation: u64,
    ) -> Snapshot {
        let destinations = self
            .destinations
            .iter()
            .map(|d| {
                if rebuild(&d.key) {
                    Arc::new(dest_state(d.key.clone(), d.resolved.clone(), &self.client, unhealthy, warming, &remote, Some(d)))
                } else {
                    d.clone()
                }
            })
            .collect();
        Snapshot {
            generation,
            routes: self.routes.clone(),
            listeners: self.listeners.clone(),
            tls: self.tls.clone(),
            sni: self.sni.clone(),
            destinations,
            client: self.client.clone(),
            remote,
        }
    }

    /// Every destination's report, for `/routes`.
    pub fn reports(&self) -> Vec<&Report> {
        self.destinations.iter().map(|d| &d.report).collect()
    }
}

/// Each socket's TLS: the HTTPS listeners of `cluster` whose ports it serves (the set has
/// checked that none is the gateway's and that no HTTP port shares one).
fn socket_tls(
    set: &veer_model::set::ManifestSet,
    cluster: &str,
    listeners: &Listeners,
    previous: Option<&[Option<Arc<SocketTls>>]>,
) -> Result<Arc<[Option<Arc<SocketTls>>]>, SnapshotError> {
    let mut per_socket: Vec<Vec<&veer_model::set::TlsListener>> = vec![Vec::new(); listeners.extra.len() + 1];
    for l in set.tls_listeners.iter().filter(|l| l.cluster == cluster && !l.certs.is_empty()) {
        if let Some(&socket) = listeners.ports.get(&l.port) {
            if socket != GATEWAY {
                per_socket[socket].push(l);
            }
        }
    }
    per_socket
        .iter()
        .enumerate()
        .map(|(socket, ls)| {
            if ls.is_empty() {
                return Ok(None);
            }
            // Unchanged certificates keep their config: resumption by session ID survives.
            if let Some(same) = previous.and_then(|p| p.get(socket)).and_then(Option::as_ref).filter(|t| t.built_from(ls)) {
                return Ok(Some(same.clone()));
            }
            SocketTls::build(ls).map(|t| Some(Arc::new(t))).map_err(SnapshotError::Tls)
        })
        .collect()
}

/// The `x-veer-cluster` value for a cluster name. Every response carries one; a value made from
/// a static string is copied without touching a reference count, which two workers would
/// otherwise both write on every response. Names are interned, so memory is bounded by the
/// distinct names ever seen, not by reloads.
fn static_header_value(cluster: &str) -> http::HeaderValue {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let name: &'static str = match names.get(cluster) {
        Some(n) => n,
        None => {
            if http::HeaderValue::from_str(cluster).is_err() {
                return http::HeaderValue::from_static("invalid");
            }
            let n: &'static str = Box::leak(cluster.to_owned().into_boxed_str());
            names.insert(n);
            n
        }
    };
    // Only names a header value can hold are interned, so `from_static` cannot panic here.
    http::HeaderValue::from_static(name)
}

/// The endpoint keys `unhealthy` holds down for `key`, sorted (the control loop gathers them
/// from hash maps, in no fixed order).
fn sorted_down(unhealthy: &Unhealthy, key: &DestinationName) -> Vec<EndpointKey> {
    let mut down = unhealthy.get(key).cloned().unwrap_or_default();
    down.sort_unstable();
    down
}

/// The endpoints `warming` has warming up for `key`, sorted by endpoint.
fn sorted_warm(warming: &Warming, key: &DestinationName) -> Vec<(EndpointKey, f64)> {
    let mut warm = warming.get(key).cloned().unwrap_or_default();
    warm.sort_by(|a, b| a.0.cmp(&b.0));
    warm
}

/// Whether two snapshots' remote parts give the same tables: the same peer links (the same
/// connections, not only the same names) and the same remote health.
fn same_remote(a: &Remote, b: &Remote) -> bool {
    a.own == b.own
        && a.health.down == b.health.down
        && a.health.unhealthy == b.health.unhealthy
        && a.links.len() == b.links.len()
        && a.links.iter().all(|(cluster, link)| b.links.get(cluster).is_some_and(|other| Arc::ptr_eq(link, other)))
}

fn dest_state(
    key: DestinationName,
    resolved: Destination,
    client: &Client,
    unhealthy: &Unhealthy,
    warming: &Warming,
    remote: &Remote,
    previous: Option<&DestState>,
) -> DestState {
    let mut dest = resolved.clone();
    let down = unhealthy.get(&key);
    for e in &mut dest.endpoints {
        let key = EndpointKey::new(e.address.clone());
        let remote_down = e.cluster != remote.own
            && (remote.health.down.contains(&e.cluster) || remote.health.unhealthy.get(&e.cluster).is_some_and(|u| u.contains(&key)));
        if remote_down || down.is_some_and(|d| d.contains(&key)) {
            e.health = Health::Unhealthy;
        }
    }
    let warm = sorted_warm(warming, &key);
    let factors: Vec<f64> = if warm.is_empty() {
        Vec::new()
    } else {
        dest.endpoints.iter().map(|e| warm.iter().find(|(k, _)| *k.address() == e.address).map_or(1.0, |(_, f)| *f)).collect()
    };
    let table = table::build_warming(client, &dest.endpoints, &dest.rule, dest.resilience.load, dest.weighting, &factors);
    let mut priority_of = vec![usize::MAX; dest.endpoints.len()];
    for p in &table.placements {
        priority_of[p.endpoint] = p.priority;
    }
    let upstreams = dest
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key = EndpointKey::new(e.address.clone());
            let authority = match &e.address {
                Address::Socket(s) => http::uri::Authority::try_from(s.to_string().as_str()),
                Address::Dns { host, port } => http::uri::Authority::try_from(format!("{host}:{port}").as_str()),
            }
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid.invalid:1"));
            let cluster_header = static_header_value(&e.cluster);
            let via = if e.cluster == remote.own { None } else { remote.links.get(&e.cluster).cloned() };
            let socket = match &e.address {
                Address::Socket(s) => Some(*s),
                Address::Dns { .. } => None,
            };
            Upstream {
                key,
                authority,
                socket,
                cluster: e.cluster.clone(),
                cluster_header,
                priority: priority_of[i],
                via,
                recent_failures: FailureRun::default(),
            }
        })
        .collect();
    let picks = Picks::new(&table, &dest.endpoints);
    let report = explain::report(&dest, client, &table);
    let mut retry = dest.resilience.retry.clone().unwrap_or_else(default_retry);
    // Whatever the dialect's policy says about counts and conditions, veer's retries always
    // leave the hosts and priorities that already failed (Envoy previous_hosts +
    // previous_priorities): retrying into the same failure domain is what leaks errors.
    retry.other_priorities = true;
    let mut timeouts = Timeouts::default();
    if let Some(t) = dest.resilience.request_timeout {
        timeouts.request = t;
    }
    if let Some(t) = retry.per_try_timeout {
        timeouts.per_try = t.min(timeouts.request);
    }
    // The budget lives as long as the destination; the TLS client as long as its setting.
    let budget = previous.map(|p| p.budget.clone()).unwrap_or_default();
    let tls = match previous.and_then(|p| p.tls.as_ref()) {
        Some(c) if dest.tls.as_ref() == Some(&c.setting) && previous.is_some_and(|p| p.http2 == dest.http2) => Some(c.clone()),
        _ => dest.tls.as_ref().map(|t| TlsClient::new(t, dest.http2, Timeouts::default().connect)),
    };
    DestState {
        budget,
        tls,
        down: sorted_down(unhealthy, &key),
        warm,
        key,
        upstreams,
        endpoints: dest.endpoints.clone(),
        table,
        picks,
        resilience: dest.resilience.clone(),
        retry,
        timeouts,
        http2: dest.http2,
        report,
        resolved,
    }
}

/// Socket `socket`'s bit in a route's `sockets`; none for a socket past [`MAX_SOCKETS`].
fn socket_bit(socket: usize) -> u64 {
    u32::try_from(socket).ok().and_then(|s| 1u64.checked_shl(s)).unwrap_or(0)
}

fn split_host_port(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests;
