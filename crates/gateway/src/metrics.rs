//! Prometheus metrics for the gateway (prometheus-client), exposed as OpenMetrics text on the admin listener.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::manifests::WatcherHealth;
use crate::FastMap;

mod dns;

/// Smallest request-duration bucket: half a millisecond, below which a proxied request is not plausible.
const DURATION_START: f64 = 0.0005;
/// Doubling buckets; 18 of them reach ~65 s, enough to see requests that ran into a 60 s timeout.
const DURATION_FACTOR: f64 = 2.0;
const DURATION_BUCKETS: u16 = 18;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    destination: String,
    cluster: String,
    priority: u32,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    destination: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TryFailureLabels {
    destination: String,
    blame: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestRefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EjectionLabels {
    destination: String,
    endpoint: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    destination: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    destination: String,
    from: u32,
    to: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    destination: String,
    endpoint: String,
    cluster: String,
    priority: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcceptLabels {
    listener: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EastWestLabels {
    peer: String,
    status: u16,
}

/// A gauge of the manifest watcher, read from its pulse at each scrape (the watcher's thread
/// does not touch the registry).
#[derive(Debug)]
struct WatcherGauge {
    health: Arc<WatcherHealth>,
    what: WatcherValue,
}

#[derive(Clone, Copy, Debug)]
enum WatcherValue {
    Up,
    LastLookAge,
    Waiting,
}

impl TypedMetric for WatcherGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for WatcherGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self.what {
            WatcherValue::Up => encoder.encode_gauge(&i64::from(self.health.check().is_ok())),
            WatcherValue::LastLookAge => encoder.encode_gauge(&self.health.last_look_age().as_secs_f64()),
            WatcherValue::Waiting => encoder.encode_gauge(&i64::try_from(self.health.waiting()).unwrap_or(i64::MAX)),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type HistogramFamily = Family<DestinationLabels, DurationHistogram, fn() -> DurationHistogram>;

fn duration_histogram() -> DurationHistogram {
    DurationHistogram::new(exponential_buckets(DURATION_START, DURATION_FACTOR, DURATION_BUCKETS))
}

/// The cells of one metric, one per worker, so that no two workers add to the same cache line
/// (such a line moves between their cores on every add); a scrape reads them all.
#[derive(Debug)]
struct WorkerCells<T>(Mutex<Vec<Arc<T>>>);

impl<T> Default for WorkerCells<T> {
    fn default() -> Self {
        WorkerCells(Mutex::new(Vec::new()))
    }
}

impl<T> WorkerCells<T> {
    /// Hands `cell` to one worker; it is read by every scrape from now on.
    fn hand_out(&self, cell: T) -> Arc<T> {
        let cell = Arc::new(cell);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::clone(&cell));
        cell
    }

    fn for_each(&self, f: impl FnMut(&Arc<T>)) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().for_each(f);
    }
}

/// A histogram that every worker updates with plain atomic adds on cells of its own.
/// prometheus-client's own takes a mutex on each observation; and cells two workers both add
/// to would move between their cores on every request. A scrape sums the workers' cells.
#[derive(Clone, Debug)]
pub struct DurationHistogram(Arc<HistogramShards>);

#[derive(Debug)]
struct HistogramShards {
    /// Upper bounds, ascending; the last bucket (+Inf) has none.
    bounds: Arc<[f64]>,
    /// One set of cells per worker that has observed into this histogram.
    shards: WorkerCells<HistogramCells>,
}

#[derive(Debug)]
struct HistogramCells {
    bounds: Arc<[f64]>,
    /// Observations per bucket (not cumulative), one more than `bounds`.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations in nanoseconds: an integer, so one `fetch_add` adds it.
    sum_nanos: AtomicU64,
}

/// One worker's cells of a [`DurationHistogram`].
#[derive(Debug)]
pub struct HistogramShard(Arc<HistogramCells>);

impl DurationHistogram {
    fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let bounds: Arc<[f64]> = bounds.filter(|b| b.is_finite()).collect();
        DurationHistogram(Arc::new(HistogramShards { bounds, shards: WorkerCells::default() }))
    }

    /// New cells for one worker, counted in every scrape from now on.
    pub fn shard(&self) -> HistogramShard {
        let bounds = self.0.bounds.clone();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        HistogramShard(self.0.shards.hand_out(HistogramCells { bounds, counts, sum_nanos: AtomicU64::new(0) }))
    }
}

impl HistogramShard {
    /// Records one observation of `seconds` (finite and not negative).
    pub fn observe(&self, seconds: f64) {
        let cells = &*self.0;
        let bucket = cells.bounds.partition_point(|b| *b < seconds);
        cells.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // `as` saturates: a duration beyond u64 nanoseconds (584 years) cannot wrap the sum.
        cells.sum_nanos.fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut counts = vec![0u64; self.0.bounds.len() + 1];
        let mut sum_nanos = 0u64;
        self.0.shards.for_each(|cells| {
            for (total, c) in counts.iter_mut().zip(cells.counts.iter()) {
                *total += c.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.saturating_add(cells.sum_nanos.load(Ordering::Relaxed));
        });
        let buckets: Vec<(f64, u64)> = self.0.bounds.iter().copied().chain(std::iter::once(f64::INFINITY)).zip(counts).collect();
        // The count is the buckets' total, so a scrape never shows them disagree.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(sum_nanos as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One worker's cell of a [`ShardedCounter`].
type CounterCell = Arc<AtomicU64>;

/// A counter that every worker increments in a cell of its own; a scrape sums the cells.
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter(Arc<WorkerCells<AtomicU64>>);

impl ShardedCounter {
    /// A new cell for one worker, counted in every scrape from now on.
    pub fn shard(&self) -> CounterCell {
        self.0.hand_out(AtomicU64::new(0))
    }

    pub fn get(&self) -> u64 {
        let mut total = 0;
        self.0.for_each(|c| total += c.load(Ordering::Relaxed));
        total
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Handles to one destination's request metrics, shared (same atomics) with the registered families.
///
/// `Family` lookups need an owned label set, i.e. two `String` allocations per request;
/// this cache is keyed so it can be probed with the borrowed `&str`s instead.
#[derive(Debug)]
struct DestinationCache {
    duration: HistogramShard,
    /// cluster → (priority, status) → this worker's cell of the counter.
    requests: FastMap<Box<str>, FastMap<(u32, u16), CounterCell>>,
}

/// Every metric veer exports, registered under the `veer_` prefix.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, ShardedCounter>,
    request_duration: HistogramFamily,
    retries: Family<RetryLabels, Counter>,
    retry_budget_exhausted: Family<DestinationLabels, Counter>,
    try_failures: Family<TryFailureLabels, Counter>,
    requests_refused: Family<RequestRefusalLabels, Counter>,
    internal_headers_removed: Counter,
    retry_buffer_full: Counter,
    ejections: Family<EjectionLabels, Counter>,
    unejections: Family<EndpointLabels, Counter>,
    active_priority: Family<DestinationLabels, Gauge>,
    failover_events: Family<FailoverLabels, Counter>,
    endpoint_healthy: Family<HealthLabels, Gauge>,
    config_reloads: Family<ReloadLabels, Counter>,
    peer_up: Family<PeerLabels, Gauge>,
    peer_age_ms: Family<PeerLabels, Gauge>,
    eastwest_refused: Family<RefusalLabels, Counter>,
    eastwest_requests: Family<EastWestLabels, Counter>,
    parked: Counter,
    unparked: Counter,
    worker_connections: Family<WorkerLabels, Gauge>,
    manifest_watcher: Arc<WatcherHealth>,
    max_connections: Gauge,
    cap_reached: Counter,
    accept_errors: Family<AcceptLabels, Counter>,
    h2_closed_idle: Counter,
    drained: Counter,
    dns: dns::DnsSource,
}

/// Handles to the request metrics of the destinations one worker has served, looked up with
/// the borrowed names of the request path. Each worker has its own, so recording a request
/// takes no lock another worker holds; the handles share their atomics with the families.
#[derive(Debug, Default)]
pub struct RequestCache(Mutex<FastMap<Box<str>, DestinationCache>>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered (and empty apart from the reload counters).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("veer");
        let requests = Family::<RequestLabels, ShardedCounter>::default();
        let request_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let retries = Family::<RetryLabels, Counter>::default();
        let retry_budget_exhausted = Family::<DestinationLabels, Counter>::default();
        let ejections = Family::<EjectionLabels, Counter>::default();
        let try_failures = Family::<TryFailureLabels, Counter>::default();
        let requests_refused = Family::<RequestRefusalLabels, Counter>::default();
        let internal_headers_removed = Counter::default();
        let retry_buffer_full = Counter::default();
        let unejections = Family::<EndpointLabels, Counter>::default();
        let active_priority = Family::<DestinationLabels, Gauge>::default();
        let failover_events = Family::<FailoverLabels, Counter>::default();
        let endpoint_healthy = Family::<HealthLabels, Gauge>::default();
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        let peer_up = Family::<PeerLabels, Gauge>::default();
        let peer_age_ms = Family::<PeerLabels, Gauge>::default();
        let eastwest_refused = Family::<RefusalLabels, Counter>::default();
        let eastwest_requests = Family::<EastWestLabels, Counter>::default();
        let parked = Counter::default();
        let worker_connections = Family::<WorkerLabels, Gauge>::default();
        let unparked = Counter::default();
        let max_connections = Gauge::default();
        let cap_reached = Counter::default();
        let accept_errors = Family::<AcceptLabels, Counter>::default();
        let h2_closed_idle = Counter::default();
        let drained = Counter::default();

        registry.register(
            "requests",
            "Requests finished, by the cluster and priority that served them and the status sent to the client (0: no status was sent)",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from receiving a request to finishing its response, retries included",
            Unit::Seconds,
            request_duration.clone(),
        );
        registry.register("retries", "Attempts retried, by the failure that caused the retry", retries.clone());
        registry.register(
            "retry_budget_exhausted",
            "Retries skipped because the destination's retry budget was spent",
            retry_budget_exhausted.clone(),
        );
        registry.register("ejections", "Endpoints ejected by outlier detection", ejections.clone());
        registry.register(
            "try_failures",
            "Tries that failed, by who is to blame (upstream, client, local) and how; only upstream failures count towards ejection",
            try_failures.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused before routing because they break HTTP's rules (RFC 9110/9112), by reason",
            requests_refused.clone(),
        );
        registry.register(
            "internal_headers_removed",
            "Requests that arrived carrying x-veer-* header fields, which the gateway removed",
            internal_headers_removed.clone(),
        );
        registry.register(
            "retry_buffer_full",
            "Small request bodies streamed with a single try because the node's allowance for bodies held for retries was spent",
            retry_buffer_full.clone(),
        );
        registry.register("unejections", "Endpoints returned to service after an ejection", unejections.clone());
        registry.register("active_priority", "The lowest priority level currently receiving load (-1: none)", active_priority.clone());
        registry.register("failover_events", "Changes of the active priority level", failover_events.clone());
        registry.register(
            "endpoint_healthy",
            "Whether an endpoint is currently eligible for load (1) or not (0)",
            endpoint_healthy.clone(),
        );
        registry.register("config_reloads", "Configuration reload attempts, by outcome", config_reloads.clone());

        registry.register(
            "peer_up",
            "Whether a peer cluster is usable (1: fresh or stale data and a reachable gateway; 0: unhealthy, forgotten or never heard)",
            peer_up.clone(),
        );
        registry.register("peer_data_age_milliseconds", "Age of the last word from a peer cluster's node", peer_age_ms.clone());
        registry.register(
            "eastwest_refused",
            "Connections and requests refused by the east-west listener, by reason",
            eastwest_refused.clone(),
        );
        registry.register(
            "eastwest_requests",
            "Requests the east-west listener forwarded to local endpoints for peer clusters, by peer and status",
            eastwest_requests.clone(),
        );
        registry.register(
            "worker_connections",
            "Client connections open on each worker thread (connections are balanced across workers when accepted)",
            worker_connections.clone(),
        );
        registry.register(
            "connections_parked",
            "Idle HTTP/1.1 connections parked (hyper state and buffers dropped, socket watched)",
            parked.clone(),
        );
        registry.register("connections_unparked", "Parked connections that sent another request", unparked.clone());
        let manifest_watcher = Arc::new(WatcherHealth::new());
        let watcher_gauge = |what| WatcherGauge { health: manifest_watcher.clone(), what };
        registry.register("manifest_watcher_up", "Whether the manifest watcher runs and has looked at the files recently (0: its thread ended or stalled, so manifest changes are not applied)", watcher_gauge(WatcherValue::Up));
        registry.register_with_unit(
            "manifest_watcher_last_look_age",
            "Time since the manifest watcher last looked at the files",
            Unit::Seconds,
            watcher_gauge(WatcherValue::LastLookAge),
        );
        registry.register(
            "manifest_files_open_for_writing",
            "Manifest files a writer has not closed yet; no change is applied until they are",
            watcher_gauge(WatcherValue::Waiting),
        );
        registry.register(
            "connections_max",
            "Client connections the node holds at most (max_connections); more wait in the kernel's accept queue",
            max_connections.clone(),
        );
        registry.register(
            "connections_cap_reached",
            "Times a worker stopped accepting because the node held max_connections client connections",
            cap_reached.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts, by listener and error (emfile, enfile, enobufs and enomem pause accepting for 500 ms)",
            accept_errors.clone(),
        );
        registry.register(
            "h2_connections_closed_idle",
            "HTTP/2 client connections sent GOAWAY and closed after the idle timeout without an open stream",
            h2_closed_idle.clone(),
        );
        registry.register(
            "connections_drained",
            "Idle client connections closed to make room while the node held max_connections",
            drained.clone(),
        );
        for kind in ["emfile", "enfile"] {
            drop(accept_errors.get_or_create(&AcceptLabels { listener: "gateway", kind }));
        }
        let dns = dns::DnsSource::default();
        registry.register_collector(Box::new(dns.clone()));
        for reason in ["handshake", "unknown_cluster", "claim_mismatch", "not_local", "not_exposed"] {
            drop(eastwest_refused.get_or_create(&RefusalLabels { reason }));
        }

        // Pre-create both outcomes so `rate()` and alerts see a 0 before the first reload.
        for result in ["ok", "rejected"] {
            drop(config_reloads.get_or_create(&ReloadLabels { result }));
        }

        Metrics {
            registry,
            requests,
            request_duration,
            retries,
            retry_budget_exhausted,
            try_failures,
            requests_refused,
            internal_headers_removed,
            retry_buffer_full,
            ejections,
            unejections,
            active_priority,
            failover_events,
            endpoint_healthy,
            config_reloads,
            peer_up,
            peer_age_ms,
            eastwest_refused,
            eastwest_requests,
            parked,
            unparked,
            worker_connections,
            manifest_watcher,
            max_connections,
            cap_reached,
            accept_errors,
            h2_closed_idle,
            drained,
            dns,
        }
    }

    /// The manifest watcher's pulse, which its gauges report (the watcher beats it).
    pub fn manifest_watcher(&self) -> Arc<WatcherHealth> {
        self.manifest_watcher.clone()
    }

    /// Serves the counters of the node's DNS server (`veer_dns_*`) from now on.
    pub fn watch_dns(&self, counters: Arc<veer_dns::DnsCounters>) {
        self.dns.set(counters);
    }

    /// A request finished: `status` is the HTTP status sent to the client (0 if the connection failed before any status).
    pub fn request(&self, cache: &RequestCache, destination: &str, cluster: &str, priority: u32, status: u16, seconds: f64) {
        // Negative or non-finite durations (clock oddities) would poison the histogram sum.
        let seconds = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        // Poisoning cannot leave the cache half-updated in a harmful way: worst case an
        // entry is missing and is recreated from the family.
        let mut hot = cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dest) = hot.get(destination) {
            if let Some(counter) = dest.requests.get(cluster).and_then(|by_key| by_key.get(&(priority, status))) {
                counter.fetch_add(1, Ordering::Relaxed);
                dest.duration.observe(seconds);
                return;
            }
        }
        self.request_slow(&mut hot, destination, cluster, priority, status, seconds);
    }

    /// First request for this label combination: populate the cache from the families.
    #[cold]
    fn request_slow(
        &self,
        hot: &mut FastMap<Box<str>, DestinationCache>,
        destination: &str,
        cluster: &str,
        priority: u32,
        status: u16,
        seconds: f64,
    ) {
        let dest = hot.entry(Box::from(destination)).or_insert_with(|| DestinationCache {
            duration: self.request_duration.get_or_create(&DestinationLabels { destination: destination.to_owned() }).shard(),
            requests: FastMap::default(),
        });
        let counter = dest.requests.entry(Box::from(cluster)).or_default().entry((priority, status)).or_insert_with(|| {
            self.requests
                .get_or_create(&RequestLabels { destination: destination.to_owned(), cluster: cluster.to_owned(), priority, status })
                .shard()
        });
        counter.fetch_add(1, Ordering::Relaxed);
        dest.duration.observe(seconds);
    }

    /// An attempt is being retried; `reason` is one of "connect_failure", "5xx", "reset", "timeout", "refused_stream".
    pub fn retry(&self, destination: &str, reason: &str) {
        self.retries.get_or_create(&RetryLabels { destination: destination.to_owned(), reason: reason.to_owned() }).inc();
    }

    /// A try failed; `blame` and `reason` come from `veer_core::outcome`.
    pub fn try_failure(&self, destination: &str, blame: &'static str, reason: &'static str) {
        self.try_failures.get_or_create(&TryFailureLabels { destination: destination.to_owned(), blame, reason }).inc();
    }

    /// A request was refused before routing; `reason` names the rule it broke.
    pub fn request_refused(&self, reason: &'static str) {
        self.requests_refused.get_or_create(&RequestRefusalLabels { reason }).inc();
    }

    /// A small body streamed because the retry buffer allowance was spent.
    pub fn retry_buffer_full(&self) {
        self.retry_buffer_full.inc();
    }

    /// A request arrived with x-veer-* fields, which were removed.
    pub fn internal_headers_removed(&self) {
        self.internal_headers_removed.inc();
    }

    /// A retry was skipped because the destination's retry budget was spent.
    pub fn retry_budget_exhausted(&self, destination: &str) {
        self.retry_budget_exhausted.get_or_create(&DestinationLabels { destination: destination.to_owned() }).inc();
    }

    /// An endpoint was ejected.
    pub fn ejection(&self, destination: &str, endpoint: &str, reason: &str) {
        self.ejections
            .get_or_create(&EjectionLabels {
                destination: destination.to_owned(),
                endpoint: endpoint.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// An endpoint returned to service after an ejection.
    pub fn unejection(&self, destination: &str, endpoint: &str) {
        self.unejections.get_or_create(&EndpointLabels { destination: destination.to_owned(), endpoint: endpoint.to_owned() }).inc();
    }

    /// The lowest priority with load, -1 when none.
    pub fn set_active_priority(&self, destination: &str, priority: i64) {
        self.active_priority.get_or_create(&DestinationLabels { destination: destination.to_owned() }).set(priority);
    }

    /// The active priority moved from `from` to `to`.
    pub fn failover_event(&self, destination: &str, from: u32, to: u32) {
        self.failover_events.get_or_create(&FailoverLabels { destination: destination.to_owned(), from, to }).inc();
    }

    /// Whether an endpoint is eligible for load.
    pub fn set_endpoint_health(&self, destination: &str, endpoint: &str, cluster: &str, priority: u32, healthy: bool) {
        self.endpoint_healthy
            .get_or_create(&HealthLabels {
                destination: destination.to_owned(),
                endpoint: endpoint.to_owned(),
                cluster: cluster.to_owned(),
                priority,
            })
            .set(i64::from(healthy));
    }

    /// Drops an endpoint's health series, for endpoints that left the configuration or DNS,
    /// so a stale "1" does not linger. Returns whether the series existed.
    pub fn remove_endpoint_health(&self, destination: &str, endpoint: &str, cluster: &str, priority: u32) -> bool {
        self.endpoint_healthy.remove(&HealthLabels {
            destination: destination.to_owned(),
            endpoint: endpoint.to_owned(),
            cluster: cluster.to_owned(),
            priority,
        })
    }

    /// A configuration reload was applied (`ok`) or rejected.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.config_reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    pub fn peer(&self, peer: &str, up: bool, age_ms: Option<u64>) {
        let labels = PeerLabels { peer: peer.to_string() };
        self.peer_up.get_or_create(&labels).set(i64::from(up));
        self.peer_age_ms.get_or_create(&labels).set(age_ms.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX)));
    }

    /// `reason`: handshake, unknown_cluster, claim_mismatch, not_local or not_exposed.
    pub fn eastwest_refused(&self, reason: &'static str) {
        self.eastwest_refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    pub fn eastwest_request(&self, peer: &str, status: u16) {
        self.eastwest_requests.get_or_create(&EastWestLabels { peer: peer.to_string(), status }).inc();
    }

    /// The handle to worker `worker`'s count of open client connections.
    pub fn worker_connections(&self, worker: usize) -> Gauge {
        self.worker_connections.get_or_create_owned(&WorkerLabels { worker: u32::try_from(worker).unwrap_or(u32::MAX) })
    }

    pub fn connection_parked(&self) {
        self.parked.inc();
    }

    pub fn connection_unparked(&self) {
        self.unparked.inc();
    }

    pub fn set_max_connections(&self, n: usize) {
        self.max_connections.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn connections_cap_reached(&self) {
        self.cap_reached.inc();
    }

    /// `listener`: gateway or admin; `kind`: see [`crate::server::accept_error`].
    pub fn accept_error(&self, listener: &'static str, kind: &'static str) {
        self.accept_errors.get_or_create(&AcceptLabels { listener, kind }).inc();
    }

    pub fn h2_closed_idle(&self) {
        self.h2_closed_idle.inc();
    }

    pub fn connection_drained(&self) {
        self.drained.inc();
    }

    /// Every metric as OpenMetrics text, `# EOF` terminated.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error could only come from an encoder bug,
        // and a partial scrape is more useful than none.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests;
