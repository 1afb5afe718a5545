//! The request path's Prometheus metrics (prometheus-client), on the node's one registry, which
//! the admin listener serves as OpenMetrics text; the control side registers its own beside them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::FastMap;

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
struct WorkerLabels {
    worker: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcceptLabels {
    listener: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassthroughLabels {
    destination: String,
    cluster: String,
    priority: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassthroughBytesLabels {
    destination: String,
    direction: &'static str,
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
    /// Locked only to register a family (at start) and to encode a scrape.
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, ShardedCounter>,
    request_duration: HistogramFamily,
    retries: Family<RetryLabels, Counter>,
    retry_budget_exhausted: Family<DestinationLabels, Counter>,
    try_failures: Family<TryFailureLabels, Counter>,
    requests_refused: Family<RequestRefusalLabels, Counter>,
    internal_headers_removed: Counter,
    retry_buffer_full: Counter,
    parked: Counter,
    unparked: Counter,
    worker_connections: Family<WorkerLabels, Gauge>,
    max_connections: Gauge,
    cap_reached: Counter,
    accept_errors: Family<AcceptLabels, Counter>,
    h2_closed_idle: Counter,
    drained: Counter,
    tls_handshake_failures: Family<HandshakeLabels, Counter>,
    upgraded: Gauge,
    access_log_dropped: Counter,
    passthrough_connections: Family<PassthroughLabels, Counter>,
    passthrough_refused: Family<HandshakeLabels, Counter>,
    passthrough_bytes: Family<PassthroughBytesLabels, Counter>,
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
        let try_failures = Family::<TryFailureLabels, Counter>::default();
        let requests_refused = Family::<RequestRefusalLabels, Counter>::default();
        let internal_headers_removed = Counter::default();
        let retry_buffer_full = Counter::default();
        let parked = Counter::default();
        let worker_connections = Family::<WorkerLabels, Gauge>::default();
        let unparked = Counter::default();
        let max_connections = Gauge::default();
        let cap_reached = Counter::default();
        let accept_errors = Family::<AcceptLabels, Counter>::default();
        let h2_closed_idle = Counter::default();
        let drained = Counter::default();
        let tls_handshake_failures = Family::<HandshakeLabels, Counter>::default();
        let upgraded = Gauge::default();
        let access_log_dropped = Counter::default();
        let passthrough_connections = Family::<PassthroughLabels, Counter>::default();
        let passthrough_refused = Family::<HandshakeLabels, Counter>::default();
        let passthrough_bytes = Family::<PassthroughBytesLabels, Counter>::default();

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
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on HTTPS listeners that did not complete, by reason (error: refused by either side; timeout: not done within 10 s or the idle timeout; drained: closed to make room at the connection cap)",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "passthrough_connections",
            "TLS passthrough connections spliced to an endpoint, by destination and the cluster and priority of the endpoint",
            passthrough_connections.clone(),
        );
        registry.register(
            "passthrough_refused",
            "TLS passthrough connections closed without reaching an endpoint, by reason (no_sni, no_route, not_tls, too_large, timeout, closed, io, no_endpoint: every connect failed)",
            passthrough_refused.clone(),
        );
        registry.register(
            "passthrough_bytes",
            "Bytes carried on TLS passthrough connections, by destination and direction (upstream: from clients; downstream: to clients)",
            passthrough_bytes.clone(),
        );
        for reason in ["error", "timeout"] {
            drop(tls_handshake_failures.get_or_create(&HandshakeLabels { reason }));
        }
        registry.register(
            "upgraded_connections",
            "Client connections that switched protocols (WebSocket) and are spliced to an upstream connection now",
            upgraded.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer's queue was full (the request path never waits for it)",
            access_log_dropped.clone(),
        );
        for kind in ["emfile", "enfile"] {
            drop(accept_errors.get_or_create(&AcceptLabels { listener: "gateway", kind }));
        }
        Metrics {
            registry: Mutex::new(registry),
            requests,
            request_duration,
            retries,
            retry_budget_exhausted,
            try_failures,
            requests_refused,
            internal_headers_removed,
            retry_buffer_full,
            parked,
            unparked,
            worker_connections,
            max_connections,
            cap_reached,
            accept_errors,
            h2_closed_idle,
            drained,
            tls_handshake_failures,
            upgraded,
            access_log_dropped,
            passthrough_connections,
            passthrough_refused,
            passthrough_bytes,
        }
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

    /// A TLS handshake did not complete: `reason` is error, timeout or drained.
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures.get_or_create(&HandshakeLabels { reason }).inc();
    }

    /// A passthrough connection reached an endpoint of `destination`.
    pub fn passthrough_connection(&self, destination: &str, cluster: &str, priority: u32) {
        self.passthrough_connections
            .get_or_create(&PassthroughLabels { destination: destination.to_owned(), cluster: cluster.to_owned(), priority })
            .inc();
    }

    /// A passthrough connection was closed before reaching an endpoint; see the family's help.
    pub fn passthrough_refused(&self, reason: &'static str) {
        self.passthrough_refused.get_or_create(&HandshakeLabels { reason }).inc();
    }

    /// Bytes a passthrough connection to `destination` carried each way.
    pub fn passthrough_bytes(&self, destination: &str, upstream: u64, downstream: u64) {
        for (direction, n) in [("upstream", upstream), ("downstream", downstream)] {
            self.passthrough_bytes.get_or_create(&PassthroughBytesLabels { destination: destination.to_owned(), direction }).inc_by(n);
        }
    }

    pub fn connection_drained(&self) {
        self.drained.inc();
    }

    /// The count of client connections spliced to an upstream after switching protocols.
    pub fn upgraded_connections(&self) -> &Gauge {
        &self.upgraded
    }

    /// The counter of access log lines dropped for a full queue.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Registers the node's other families (the control side's, the DNS server's) on the same
    /// registry, so one scrape shows them all.
    pub fn register(&self, with: impl FnOnce(&mut Registry)) {
        with(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Every metric as OpenMetrics text, `# EOF` terminated.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error could only come from an encoder bug,
        // and a partial scrape is more useful than none.
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests;
