//! What every connection of a node shares (the snapshot, the control side's clients, the
//! outcome channel), and each worker's own upstream clients and in-flight counts.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use veer_core::names::{ClusterName, DestinationName};
use veer_core::topology::EndpointKey;

use crate::access_log::AccessLog;
use crate::body::Body;
use crate::metrics::{Metrics, RequestCache};
use crate::snapshot::Snapshot;
use crate::upload::BufferBudget;
use crate::upstream::H1Pool;

/// An outcome the control loop must see: every failure, and a success that ends a run of them.
#[derive(Clone, Debug)]
pub struct OutcomeReport {
    pub destination: DestinationName,
    pub endpoint: EndpointKey,
    pub outcome: veer_core::outlier::Outcome,
    /// A refused connect or a reset: veer ejects on the first one.
    pub decisive: bool,
    /// Set when a peer cluster's gateway could not be reached: (cluster, why). The whole
    /// cluster is down, not this endpoint.
    pub gateway: Option<(ClusterName, Arc<str>)>,
}

/// Upstream HTTP clients with their keep-alive pools. Each worker thread has its own, so a
/// request and the upstream connection it uses live on the same thread.
#[derive(Clone)]
pub struct Upstreams {
    /// HTTP/1.1 to endpoint addresses (the common case).
    pub pool: Arc<H1Pool>,
    /// HTTP/1.1 to endpoints named by DNS.
    pub http1: Client<HttpConnector, Body>,
    pub http2: Client<HttpConnector, Body>,
    /// This worker's handles to the request metrics.
    pub request_metrics: Arc<RequestCache>,
    /// This worker's tries waiting for a response head, by endpoint, for the circuit breakers.
    pub tries: Arc<TriesInFlight>,
    /// Workers of the node: each applies its share of every cap.
    pub workers: u32,
}

/// One worker's count of tries in flight to each endpoint. Only that worker's requests take
/// its lock, so it is never contended and no other core writes the counts.
#[derive(Debug, Default)]
pub struct TriesInFlight(std::sync::Mutex<crate::FastMap<EndpointKey, u32>>);

/// Endpoints whose count may stay at zero in [`TriesInFlight`]: below this, an entry is kept
/// when its last try ends, so steady traffic to an endpoint touches no reference count per request.
const KEEP_IDLE_COUNTS: usize = 4096;

impl TriesInFlight {
    /// Counts a try to `endpoint` unless `cap` are already in flight.
    pub(crate) fn admit<'a>(&'a self, endpoint: &'a EndpointKey, cap: u32) -> Option<TryPermit<'a>> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(endpoint) {
            Some(n) if *n >= cap => return None,
            Some(n) => *n += 1,
            None if cap == 0 => return None,
            None => {
                counts.insert(endpoint.clone(), 1);
            }
        }
        Some(TryPermit { tries: self, endpoint })
    }
}

/// One try counted in [`TriesInFlight`] until dropped.
pub(crate) struct TryPermit<'a> {
    tries: &'a TriesInFlight,
    endpoint: &'a EndpointKey,
}

impl Drop for TryPermit<'_> {
    fn drop(&mut self) {
        let mut counts = self.tries.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(self.endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 && counts.len() > KEEP_IDLE_COUNTS {
                counts.remove(self.endpoint);
            }
        }
    }
}

/// State shared by every connection of a node.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// The control loop's clients (probes, health checks) and the east-west listener's.
    pub http1: Client<HttpConnector, Body>,
    pub http2: Client<HttpConnector, Body>,
    pub outcomes: mpsc::UnboundedSender<OutcomeReport>,
    pub metrics: Arc<Metrics>,
    /// Longest a client may go without sending any of its request body: past it the request is
    /// answered 408 and no upstream is blamed.
    pub upload_idle_timeout: Duration,
    /// Request bodies held in memory for retries, node-wide.
    pub retry_buffers: Arc<BufferBudget>,
    /// The access log, when one is kept (`None`: requests pay one branch for it).
    pub access_log: Option<Arc<AccessLog>>,
}

/// Builds the upstream HTTP/1.1 and HTTP/2 clients (keep-alive pools, connect timeout).
pub fn clients(connect_timeout: Duration, workers: usize) -> Upstreams {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    let h1 = Client::builder(TokioExecutor::new())
        .http1_writev(false)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector.clone());
    let h2 = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).http2_only(true).build(connector);
    Upstreams {
        pool: H1Pool::new(connect_timeout),
        http1: h1,
        http2: h2,
        request_metrics: Arc::default(),
        tries: Arc::default(),
        workers: u32::try_from(workers.max(1)).unwrap_or(u32::MAX),
    }
}
