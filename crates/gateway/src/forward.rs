//! The request path: route by host and path, pick an endpoint from the snapshot, forward,
//! retry what is safe to retry on another endpoint and priority, and report outcomes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use veer_core::outcome::{retry_wanted, Blame, TryEnd};

use crate::hop_by_hop::strip_hop_by_hop;
use crate::mesh::eastwest::X_VEER_EASTWEST_ERROR;
use crate::mesh::link::LinkError;
use crate::metrics::{Metrics, RequestCache};
use crate::snapshot::{DestState, Miss, Snapshot, Tried};
use crate::upload::{after_upload, BufferBudget, ClientBody, Upload};
use crate::upstream::{ConnCaps, H1Pool, PoolError, RequestBody, RequestHead, UpstreamBody};
use veer_core::policy::CircuitBreakers;

/// Body type on both sides of the proxy.
pub type Body = BoxBody<Bytes, BodyError>;

/// Why a body failed part-way: it came from hyper (the client side, hyper's clients) or from
/// veer's own upstream pool.
#[derive(Debug)]
pub enum BodyError {
    Hyper(hyper::Error),
    Upstream(crate::upstream::UpstreamError),
    /// The client sent no part of its body for this long.
    UploadStalled(Duration),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Hyper(e) => e.fmt(f),
            BodyError::Upstream(e) => e.fmt(f),
            BodyError::UploadStalled(idle) => write!(f, "the client sent nothing of its request body for {idle:?}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Hyper(e) => Some(e),
            BodyError::Upstream(e) => Some(e),
            BodyError::UploadStalled(_) => None,
        }
    }
}

impl From<hyper::Error> for BodyError {
    fn from(e: hyper::Error) -> Self {
        BodyError::Hyper(e)
    }
}

impl From<crate::upstream::UpstreamError> for BodyError {
    fn from(e: crate::upstream::UpstreamError) -> Self {
        BodyError::Upstream(e)
    }
}

/// Largest request body buffered so the request can be retried.
pub const MAX_RETRY_BODY: u64 = 64 * 1024;

const X_VEER_CLUSTER: HeaderName = HeaderName::from_static("x-veer-cluster");
const X_VEER_ATTEMPTS: HeaderName = HeaderName::from_static("x-veer-attempts");

/// An outcome the control loop must see: every failure, and a success that ends a run of them.
#[derive(Clone, Debug)]
pub struct OutcomeReport {
    pub destination: Arc<str>,
    pub endpoint: Arc<str>,
    pub outcome: veer_core::outlier::Outcome,
    /// A refused connect or a reset: veer ejects on the first one.
    pub decisive: bool,
    /// Set when a peer cluster's gateway could not be reached: (cluster, why). The whole
    /// cluster is down, not this endpoint.
    pub gateway: Option<(Arc<str>, Arc<str>)>,
}

/// Retry budget of one destination: retries within a priority may add at most ~20% to the
/// request rate (plus a small reserve topped up by the control loop), so a dying cluster cannot
/// multiply load. Retries that fail over to a priority not tried yet are not charged.
#[derive(Debug)]
pub struct RetryBudget {
    milli_tokens: AtomicI64,
}

impl RetryBudget {
    const PER_REQUEST: i64 = 200;
    const PER_RETRY: i64 = 1000;
    const DEPOSIT_EVERY: u32 = 16;
    const CAP: i64 = 100_000;
    /// What the control loop tops the budget up to every second (10 retries).
    pub const RESERVE: i64 = 10_000;

    pub fn new() -> Self {
        RetryBudget { milli_tokens: AtomicI64::new(Self::RESERVE) }
    }

    /// Credits one request. Every worker writes here, and a write pulls the line away from the
    /// other workers' cores, so one request in [`Self::DEPOSIT_EVERY`] (drawn by `roll`, uniform)
    /// deposits for that many: the same credit on average, a sixteenth of the writes.
    fn deposit(&self, roll: u32) {
        if roll.is_multiple_of(Self::DEPOSIT_EVERY) && self.milli_tokens.load(Ordering::Relaxed) < Self::CAP {
            self.milli_tokens.fetch_add(Self::PER_REQUEST * i64::from(Self::DEPOSIT_EVERY), Ordering::Relaxed);
        }
    }

    fn withdraw(&self) -> bool {
        if self.milli_tokens.fetch_sub(Self::PER_RETRY, Ordering::Relaxed) >= Self::PER_RETRY {
            true
        } else {
            self.milli_tokens.fetch_add(Self::PER_RETRY, Ordering::Relaxed);
            false
        }
    }

    /// Tops the budget up to the reserve.
    pub fn refill(&self) {
        let _ = self.milli_tokens.fetch_max(Self::RESERVE, Ordering::Relaxed);
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
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
pub struct TriesInFlight(std::sync::Mutex<crate::FastMap<Box<str>, u32>>);

/// Endpoints whose count may stay at zero in [`TriesInFlight`]: below this, an entry is kept
/// when its last try ends, so steady traffic to an endpoint allocates no key per request.
const KEEP_IDLE_COUNTS: usize = 4096;

impl TriesInFlight {
    /// Counts a try to `endpoint` unless `cap` are already in flight.
    fn admit<'a>(&'a self, endpoint: &'a str, cap: u32) -> Option<TryPermit<'a>> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(endpoint) {
            Some(n) if *n >= cap => return None,
            Some(n) => *n += 1,
            None if cap == 0 => return None,
            None => {
                counts.insert(Box::from(endpoint), 1);
            }
        }
        Some(TryPermit { tries: self, endpoint })
    }
}

/// One try counted in [`TriesInFlight`] until dropped.
struct TryPermit<'a> {
    tries: &'a TriesInFlight,
    endpoint: &'a str,
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
    /// Peer clusters as the control loop last saw them (empty when not meshed), for `veer status`.
    pub peer_status: ArcSwap<Vec<crate::mesh::peers::PeerStatus>>,
    /// What holds endpoints out of the tables, as the control loop last saw it, for `veer status`.
    pub holds: ArcSwap<crate::holds::Holds>,
    /// Longest a client may go without sending any of its request body: past it the request is
    /// answered 408 and no upstream is blamed.
    pub upload_idle_timeout: Duration,
    /// Request bodies held in memory for retries, node-wide.
    pub retry_buffers: Arc<BufferBudget>,
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

/// A response veer writes itself.
pub fn local_response(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("veer: {text}\n"))).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// A body that holds `guard` until hyper is done with it: the guard's `Drop` says what then
/// happens (a downstream connection's count of responses in flight goes down).
pub struct Guarded<B, G> {
    pub body: B,
    pub guard: G,
}

impl<B, G> hyper::body::Body for Guarded<B, G>
where
    B: hyper::body::Body<Data = Bytes, Error = BodyError> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What a client receives: a body from this worker's own pool, passed on as it is (no box
/// per response), or any other.
pub enum ResponseBody {
    Pool(UpstreamBody),
    Other(Body),
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Pool(b) => std::pin::Pin::new(b).poll_frame(cx),
            ResponseBody::Other(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Pool(b) => b.is_end_stream(),
            ResponseBody::Other(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ResponseBody::Pool(b) => b.size_hint(),
            ResponseBody::Other(b) => b.size_hint(),
        }
    }
}

/// A response veer writes itself, as a client receives it.
fn local(status: StatusCode, text: &str) -> Response<ResponseBody> {
    local_response(status, text).map(ResponseBody::Other)
}

/// How a try failed: what it ended as, and either the upstream's own answer (a retriable 5xx,
/// boxed: kept across the retry loop and rare, it would otherwise enlarge every request) or
/// why, for the client.
enum Failure {
    Answer(TryEnd, Box<Response<ResponseBody>>),
    Other(TryEnd, String),
}

impl Failure {
    fn end(&self) -> TryEnd {
        match self {
            Failure::Answer(end, _) | Failure::Other(end, _) => *end,
        }
    }

    fn other(end: TryEnd, why: impl Into<String>) -> Failure {
        Failure::Other(end, why.into())
    }
}

/// Handles one downstream request that arrived on client socket `socket` (see [`crate::snapshot::GATEWAY`]).
pub async fn handle(shared: &Shared, upstreams: &Upstreams, socket: usize, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let start = Instant::now();
    if crate::request::remove_internal(req.headers_mut()) {
        shared.metrics.internal_headers_removed();
    }
    // The upstream receives the authority the request is routed by (an absolute-form target's
    // or `:authority`, which win over Host) and the path it is routed by, normalized.
    let routed_host = match crate::request::check_head(req.version(), req.uri().authority().map(|a| a.as_str()), req.headers()) {
        Ok(host) if req.headers().get(header::HOST).is_some_and(|h| h.as_bytes() != host.as_bytes()) => HeaderValue::from_str(host).ok(),
        Ok(_) => None,
        Err(refusal) => return refuse(shared, &refusal),
    };
    // Before routing, not after: a Connection option could otherwise take away a field a rule
    // matched on, and the upstream would see another request than the one routed.
    strip_hop_by_hop(req.headers_mut());
    match crate::request::normalize_path(req.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => {}
        Ok(std::borrow::Cow::Owned(normal)) => {
            let pq = match req.uri().query() {
                Some(q) => format!("{normal}?{q}"),
                None => normal,
            };
            match http::uri::PathAndQuery::try_from(pq) {
                Ok(pq) => {
                    let mut parts = std::mem::take(req.uri_mut()).into_parts();
                    parts.path_and_query = Some(pq);
                    *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
                }
                Err(_) => return local(StatusCode::BAD_REQUEST, "bad request path"),
            }
        }
        Err(refusal) => return refuse(shared, &refusal),
    }
    if let Some(h) = routed_host {
        req.headers_mut().insert(header::HOST, h);
    }
    let host =
        req.uri().authority().map(|a| a.as_str()).or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok())).unwrap_or("");
    let dest = {
        let snap = shared.snapshot.load();
        match snap.route(socket, host, &req) {
            Ok(d) => d.clone(),
            Err(Miss::NoHost) => {
                let host = host.to_string();
                return local(
                    StatusCode::NOT_FOUND,
                    &format!("no route for host {host:?}; veer only forwards to the destinations of its manifests"),
                );
            }
            Err(Miss::NoRule) => {
                let text = format!(
                    "host {host:?} has no route for {} {}; no HTTPRoute rule on it matches the request's method, path, headers and query",
                    req.method(),
                    req.uri().path()
                );
                return local(StatusCode::NOT_FOUND, &text);
            }
        }
    };
    dest.budget.deposit(fastrand::u32(..));
    let (parts, body) = req.into_parts();
    let (response, answered_by) = forward(shared, upstreams, &dest, parts, body, start).await;
    let (priority, cluster) = answered_by.map_or((0, ""), |ep| (dest.upstreams[ep].priority, &*dest.upstreams[ep].cluster));
    shared.metrics.request(
        &upstreams.request_metrics,
        &dest.key,
        cluster,
        priority as u32,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

fn refuse(shared: &Shared, refusal: &crate::request::Refusal) -> Response<ResponseBody> {
    shared.metrics.request_refused(refusal.reason);
    let mut resp = local(refusal.status, refusal.text);
    // The connection may carry more of what the refused request was framed by; start afresh.
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Returns the response and the endpoint whose answer (or failure) it carries, if one was tried.
async fn forward(
    shared: &Shared,
    upstreams: &Upstreams,
    dest: &DestState,
    parts: http::request::Parts,
    body: Incoming,
    start: Instant,
) -> (Response<ResponseBody>, Option<usize>) {
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE);
    let grpc = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/grpc"));
    let use_h2 = dest.http2 || (grpc && parts.version == Version::HTTP_2);

    // Buffer small bodies so a retry can resend them; stream the rest with a single try.
    // Either way each piece of the body must come within the upload idle timeout, and the
    // request's own timeouts start once it has come in full (Envoy's rule): a slow client is
    // never an upstream that did not answer in time.
    let size = body.size_hint();
    let buffered: Option<Bytes>;
    let mut streaming: Option<ClientBody> = None;
    let mut upload: Option<Arc<Upload>> = None;
    let mut received = start;
    // Held until the request is done: the buffered body lives that long.
    let buffer_grant: Option<crate::upload::BufferGrant>;
    if body.is_end_stream() {
        buffered = Some(Bytes::new());
        buffer_grant = None;
    } else {
        let (body, state) = ClientBody::new(body, shared.upload_idle_timeout);
        // Past the node's allowance a small body streams too: no retry, but no memory held.
        buffer_grant = size.upper().filter(|&u| u <= MAX_RETRY_BODY).and_then(|u| {
            shared.retry_buffers.take(u as usize).or_else(|| {
                shared.metrics.retry_buffer_full();
                None
            })
        });
        if buffer_grant.is_some() {
            match Box::pin(body.collect()).await {
                Ok(c) => buffered = Some(c.to_bytes()),
                Err(_) => {
                    let end = state.client_fault().unwrap_or(TryEnd::ClientAborted);
                    shared.metrics.try_failure(&dest.key, Blame::Client.name(), end.name());
                    return (client_fault_response(end), None);
                }
            }
            received = Instant::now();
        } else {
            buffered = None;
            streaming = Some(body);
            upload = Some(state);
        }
    }
    let _held_while_buffered = buffer_grant;
    // One deadline for the whole request; each try gets min(per-try timeout, time left), so a
    // request costs one timer, not two.
    let deadline = tokio::time::Instant::from_std(received) + dest.timeouts.request;

    // PathAndQuery is reference-counted: cloning it per attempt copies nothing.
    let path_and_query = parts.uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut headers = parts.headers;
    if !headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                headers.insert(header::HOST, v);
            }
        }
    }

    let max_attempts = 1 + dest.retry.attempts as usize;
    let mut tried = Tried::default();
    let mut last: Option<(Failure, usize)> = None;
    while let Some(ep) = dest.pick(&tried, fastrand::u64(..), fastrand::f64()) {
        let upstream = &dest.upstreams[ep];
        // The budget guards a failing priority against retry storms: a retry that stays in a
        // priority already tried spends it; one that fails over to a priority not yet tried is
        // what failover is for, and adds at most one try per request to a healthy tier.
        if tried.attempts() > 0 && tried.has_priority(upstream.priority) && !dest.budget.withdraw() {
            shared.metrics.retry_budget_exhausted(&dest.key);
            break;
        }
        let body = match (&buffered, streaming.take()) {
            (Some(b), _) => RequestBody::Buffered(b.clone()),
            (None, Some(s)) => RequestBody::Streaming(s.boxed()),
            (None, None) => break,
        };
        // The last possible try may take the headers; an earlier one must leave them for the next.
        let last_try = tried.attempts() + 1 >= max_attempts || buffered.is_none();
        tried.record(ep, upstream.priority);
        let mut gateway_failed = false;
        // veer's own pool drops hop-by-hop fields as it parses; hyper's clients do not.
        let mut hop_by_hop_removed = false;
        let try_start = if tried.attempts() == 1 { deadline - dest.timeouts.request } else { tokio::time::Instant::now() };
        let try_deadline = (try_start + dest.timeouts.per_try).min(deadline);
        let caps = &dest.resilience.circuit_breakers;
        let share = |cap| CircuitBreakers::per_worker(cap, upstreams.workers);
        let permit = upstreams.tries.admit(&upstream.key, share(caps.max_requests));
        let attempt = match (&upstream.via, upstream.socket) {
            // This worker already waits on its share of the endpoint's concurrent requests.
            _ if permit.is_none() => Err(Failure::other(TryEnd::LocalOverflow, "")),
            // HTTP/1.1 to an address: this worker's own pool, no lock shared with other threads.
            // It borrows the head, so no try copies the headers.
            (None, Some(addr)) if !use_h2 => {
                let head = RequestHead { method: &parts.method, path_and_query: path_and_query.as_str(), headers: &headers };
                let conn_caps = ConnCaps { max_connections: share(caps.max_connections), max_connecting: share(caps.max_pending_requests) };
                let sent = upstreams.pool.send(addr, head, body, try_start, conn_caps);
                let result = match &upload {
                    None => tokio::time::timeout_at(try_deadline, sent).await.ok(),
                    Some(up) => Box::pin(after_upload(sent, up, dest.timeouts.per_try.min(dest.timeouts.request))).await,
                };
                match result {
                    Some(Ok(resp)) => {
                        hop_by_hop_removed = true;
                        Ok(resp.map(ResponseBody::Pool))
                    }
                    Some(Err(PoolError::Connect(e))) => Err(Failure::other(connect_failure(&e), "upstream connect failed")),
                    Some(Err(PoolError::Request(e))) => Err(Failure::other(request_failure(&e), e.to_string())),
                    Some(Err(PoolError::Overflow)) => Err(Failure::other(TryEnd::LocalOverflow, "")),
                    None => Err(Failure::other(TryEnd::UpstreamTimeout, "upstream did not answer in time")),
                }
            }
            // Every other way (HTTP/2, a name, a peer's gateway) has its own function, boxed, so its
            // state does not enlarge every request's future.
            (via, _) => {
                let head = if last_try { std::mem::take(&mut headers) } else { headers.clone() };
                let send = SendArgs {
                    method: &parts.method,
                    path_and_query: &path_and_query,
                    headers: head,
                    body,
                    use_h2,
                    try_deadline,
                    upload: upload.as_deref(),
                };
                match Box::pin(send_by_client(shared, upstreams, dest, upstream, via.as_ref(), send)).await {
                    ClientAttempt::Done(result) => result,
                    ClientAttempt::GatewayFailed(failure) => {
                        gateway_failed = true;
                        Err(failure)
                    }
                    ClientAttempt::BadPath => return (local(StatusCode::BAD_REQUEST, "bad request path"), None),
                }
            }
        };
        let failure = match attempt {
            Ok(resp) => {
                let status = resp.status();
                if status.is_server_error() && retriable_status(dest, status.as_u16()) {
                    Failure::Answer(TryEnd::Response(status.as_u16()), Box::new(resp))
                } else {
                    report(shared, dest, ep, TryEnd::Response(status.as_u16()));
                    return (respond(resp, upstream, tried.attempts(), !hop_by_hop_removed), Some(ep));
                }
            }
            Err(f) => f,
        };
        drop(permit);
        // Whatever the upstream side said, a client whose upload broke or stalled caused it.
        let failure = match upload.as_ref().and_then(|u| u.client_fault()) {
            Some(fault) => Failure::other(fault, ""),
            None => failure,
        };
        let end = failure.end();
        shared.metrics.try_failure(&dest.key, end.blame().name(), end.name());
        match end.blame() {
            Blame::Client => return (client_fault_response(end), Some(ep)),
            Blame::Upstream if !gateway_failed => report(shared, dest, ep, end),
            Blame::Upstream | Blame::Local => {}
        }
        let wanted = end.retry_cause().is_some_and(|cause| retry_wanted(cause, &dest.retry.retry_on, idempotent));
        let replayable = buffered.is_some();
        last = Some((failure, ep));
        if tried.attempts() >= max_attempts || !wanted || !replayable || tokio::time::Instant::now() >= deadline {
            break;
        }
        shared.metrics.retry(&dest.key, end.name());
        // A retry to a host not tried yet goes at once: it is a different failure domain.
        // Only a retry that must reuse a tried host waits a jittered back-off.
        if dest.upstreams.len() <= tried.attempts() {
            let n = tried.attempts() as u32;
            let cap = dest.retry.backoff_base.saturating_mul((1u32 << n.min(10)) - 1).min(dest.retry.backoff_max);
            tokio::time::sleep_until((tokio::time::Instant::now() + cap.mul_f64(fastrand::f64())).min(deadline)).await;
        }
    }
    match last {
        Some((Failure::Answer(_, resp), ep)) => (respond(*resp, &dest.upstreams[ep], tried.attempts(), true), Some(ep)),
        Some((Failure::Other(end, why), ep)) => (failure_response(end, &why), Some(ep)),
        None => (local(StatusCode::SERVICE_UNAVAILABLE, &format!("no healthy upstream for {}", dest.key)), None),
    }
}

/// What the client receives when the last try failed without an answer of the upstream's.
fn failure_response(end: TryEnd, why: &str) -> Response<ResponseBody> {
    match end {
        TryEnd::ConnectRefused | TryEnd::ConnectTimeout => local(StatusCode::SERVICE_UNAVAILABLE, "upstream connect failed"),
        TryEnd::UpstreamTimeout => local(StatusCode::GATEWAY_TIMEOUT, "upstream did not answer in time"),
        TryEnd::LocalResources => {
            local(StatusCode::SERVICE_UNAVAILABLE, "veer could not open an upstream connection (out of file descriptors or memory)")
        }
        TryEnd::LocalOverflow => local(StatusCode::SERVICE_UNAVAILABLE, "upstream connection limit reached"),
        TryEnd::ClientBodyMalformed | TryEnd::ClientAborted | TryEnd::ClientUploadTimeout => client_fault_response(end),
        TryEnd::UpstreamReset | TryEnd::UpstreamMalformed | TryEnd::Response(_) => local(StatusCode::BAD_GATEWAY, why),
    }
}

/// What the client receives when it is to blame for how its request ended.
fn client_fault_response(end: TryEnd) -> Response<ResponseBody> {
    let mut resp = match end {
        TryEnd::ClientUploadTimeout => local(StatusCode::REQUEST_TIMEOUT, "request body not received in time"),
        TryEnd::ClientBodyMalformed => local(StatusCode::BAD_REQUEST, "request body is malformed (chunk framing or declared length)"),
        _ => local(StatusCode::BAD_REQUEST, "request body could not be read"),
    };
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A connect that failed because this node ran out of something is the node's fault, not the
/// endpoint's: file descriptors (EMFILE, ENFILE), buffers (ENOBUFS) or memory (ENOMEM).
pub(crate) fn connect_failure(e: &std::io::Error) -> TryEnd {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOMEM: i32 = 12;
    const ENOBUFS: i32 = 105;
    match e.raw_os_error() {
        Some(EMFILE | ENFILE | ENOMEM | ENOBUFS) => TryEnd::LocalResources,
        _ if e.kind() == std::io::ErrorKind::TimedOut => TryEnd::ConnectTimeout,
        _ => TryEnd::ConnectRefused,
    }
}

fn request_failure(e: &crate::upstream::UpstreamError) -> TryEnd {
    use crate::upstream::UpstreamError;
    match e {
        UpstreamError::Malformed(_) => TryEnd::UpstreamMalformed,
        // The pool found the client's body broken before the upload state said so.
        UpstreamError::RequestBody(_) => TryEnd::ClientBodyMalformed,
        UpstreamError::Io(_) | UpstreamError::Closed => TryEnd::UpstreamReset,
    }
}

/// The io error under a hyper (or hyper-util) client error, if any.
pub(crate) fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// How a try through one of hyper's clients (or a peer link) went.
enum ClientAttempt {
    Done(Result<Response<ResponseBody>, Failure>),
    /// The peer cluster's gateway could not be reached (already reported for the cluster).
    GatewayFailed(Failure),
    /// The request's path makes no URI with the upstream's authority.
    BadPath,
}

/// What one try through a client sends.
struct SendArgs<'a> {
    method: &'a Method,
    path_and_query: &'a http::uri::PathAndQuery,
    headers: http::HeaderMap,
    body: RequestBody,
    use_h2: bool,
    try_deadline: tokio::time::Instant,
    /// The client's streaming upload, if the body is not buffered.
    upload: Option<&'a Upload>,
}

/// One try through hyper's HTTP/1.1 or HTTP/2 client, or through the link to a peer cluster's
/// gateway.
async fn send_by_client(
    shared: &Shared,
    upstreams: &Upstreams,
    dest: &DestState,
    upstream: &crate::snapshot::Upstream,
    via: Option<&Arc<crate::mesh::link::PeerLink>>,
    send: SendArgs<'_>,
) -> ClientAttempt {
    let SendArgs { method, path_and_query, headers, body, use_h2, try_deadline, upload } = send;
    let mut uri_parts = http::uri::Parts::default();
    uri_parts.scheme = Some(http::uri::Scheme::HTTP);
    uri_parts.authority = Some(upstream.authority.clone());
    uri_parts.path_and_query = Some(path_and_query.clone());
    let Ok(uri) = Uri::from_parts(uri_parts) else {
        return ClientAttempt::BadPath;
    };
    let mut up = Request::new(body.boxed());
    *up.method_mut() = method.clone();
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;
    *up.version_mut() = if use_h2 { Version::HTTP_2 } else { Version::HTTP_11 };
    if use_h2 {
        up.headers_mut().remove(header::HOST);
    }
    let per_try = try_deadline.saturating_duration_since(tokio::time::Instant::now());
    match via {
        None => {
            let client = if use_h2 { &upstreams.http2 } else { &upstreams.http1 };
            let sent = client.request(up);
            let result = match upload {
                None => tokio::time::timeout_at(try_deadline, sent).await.ok(),
                Some(up) => after_upload(sent, up, per_try).await,
            };
            ClientAttempt::Done(match result {
                Some(Ok(resp)) => Ok(resp.map(|b| ResponseBody::Other(b.map_err(BodyError::from).boxed()))),
                Some(Err(e)) if e.is_connect() => {
                    Err(Failure::other(io_source(&e).map_or(TryEnd::ConnectRefused, connect_failure), "upstream connect failed"))
                }
                Some(Err(e)) => Err(Failure::other(TryEnd::UpstreamReset, format!("upstream connection failed: {e}"))),
                None => Err(Failure::other(TryEnd::UpstreamTimeout, "upstream did not answer in time")),
            })
        }
        Some(link) => {
            let sent = link.send_to(&upstream.key, use_h2, up);
            let result = match upload {
                None => tokio::time::timeout_at(try_deadline, sent).await.ok(),
                Some(up) => after_upload(sent, up, per_try).await,
            };
            match result {
                Some(Ok(resp)) => ClientAttempt::Done(match resp.headers().get(&X_VEER_EASTWEST_ERROR).map(|v| v.as_bytes()) {
                    // The remote gateway answered for one endpoint behind it: blame that one.
                    Some(b"connect" | b"refused") => Err(Failure::other(TryEnd::ConnectRefused, "upstream connect failed")),
                    Some(b"reset") => Err(Failure::other(TryEnd::UpstreamReset, "the remote gateway's upstream connection failed")),
                    // The remote node ran out of descriptors or memory: nobody's endpoint failed.
                    Some(b"local") => Err(Failure::other(
                        TryEnd::LocalResources,
                        "the remote gateway could not open a connection (out of file descriptors or memory)",
                    )),
                    _ => Ok(resp.map(|b| ResponseBody::Other(b.map_err(BodyError::from).boxed()))),
                }),
                // A stream the client's own upload broke is no sign of the gateway.
                Some(Err(_)) if upload.and_then(Upload::client_fault).is_some() => {
                    ClientAttempt::Done(Err(Failure::other(TryEnd::ClientAborted, "")))
                }
                Some(Err(e)) => {
                    // The gateway itself is gone: the whole cluster is one failure domain, and
                    // no endpoint behind it is to blame.
                    report_gateway(shared, dest, upstream, &e.to_string());
                    ClientAttempt::GatewayFailed(match e {
                        LinkError::Connect(_) => Failure::other(TryEnd::ConnectRefused, "upstream connect failed"),
                        LinkError::Broken(why) => {
                            Failure::other(TryEnd::UpstreamReset, format!("the link to the remote gateway broke: {why}"))
                        }
                    })
                }
                None => ClientAttempt::Done(Err(Failure::other(TryEnd::UpstreamTimeout, "upstream did not answer in time"))),
            }
        }
    }
}

fn retriable_status(dest: &DestState, status: u16) -> bool {
    let on = &dest.retry.retry_on;
    on.five_xx || (on.gateway_error && matches!(status, 502..=504)) || on.retriable_status_codes.contains(&status)
}

/// Reports that a peer cluster's gateway could not be reached.
fn report_gateway(shared: &Shared, dest: &DestState, upstream: &crate::snapshot::Upstream, why: &str) {
    let _ = shared.outcomes.send(OutcomeReport {
        destination: dest.key.clone(),
        endpoint: upstream.key.clone(),
        outcome: veer_core::outlier::Outcome::ConnectFailed,
        decisive: true,
        gateway: Some((upstream.cluster.clone(), Arc::from(why))),
    });
}

/// Reports what the upstream did; successes only when they end a run of failures. Anything
/// the upstream is not to blame for is never reported.
fn report(shared: &Shared, dest: &DestState, ep: usize, end: TryEnd) {
    let Some(input) = end.detector_input() else { return };
    let upstream = &dest.upstreams[ep];
    if end.is_failure() {
        upstream.recent_failures.fetch_add(1, Ordering::Relaxed);
    } else if upstream.recent_failures.load(Ordering::Relaxed) == 0 || upstream.recent_failures.swap(0, Ordering::Relaxed) == 0 {
        // Looked at before it is written: every worker reads this on every success, and a
        // write would pull the line away from the other workers' cores each time.
        return;
    }
    let _ = shared.outcomes.send(OutcomeReport {
        destination: dest.key.clone(),
        endpoint: upstream.key.clone(),
        outcome: input.outcome,
        decisive: input.decisive,
        gateway: None,
    });
}

fn respond(resp: Response<ResponseBody>, upstream: &crate::snapshot::Upstream, attempts: usize, strip: bool) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    if strip {
        strip_hop_by_hop(&mut parts.headers);
    }
    // Only this node says which cluster answered, and nothing of the mesh's own protocol
    // reaches a client, whatever an upstream put there.
    crate::request::remove_internal(&mut parts.headers);
    parts.headers.insert(X_VEER_CLUSTER, upstream.cluster_header.clone());
    parts.headers.insert(X_VEER_ATTEMPTS, attempts_header(attempts));
    Response::from_parts(parts, body)
}

fn attempts_header(n: usize) -> HeaderValue {
    match n {
        1 => HeaderValue::from_static("1"),
        2 => HeaderValue::from_static("2"),
        3 => HeaderValue::from_static("3"),
        n => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::RetryBudget;

    fn retries_available(b: &RetryBudget) -> usize {
        std::iter::from_fn(|| b.withdraw().then_some(())).count()
    }

    #[test]
    fn one_roll_in_sixteen_deposits_for_sixteen_requests() {
        let b = RetryBudget::new();
        assert_eq!(retries_available(&b), 10, "the reserve pays for 10 retries");
        for roll in 1..16 {
            b.deposit(roll);
        }
        assert_eq!(retries_available(&b), 0, "rolls that are not a multiple of 16 deposit nothing");
        b.deposit(32);
        // 16 requests x 20% = 3.2 retries.
        assert_eq!(retries_available(&b), 3);
    }

    #[test]
    fn over_every_roll_each_request_adds_a_fifth_of_a_retry() {
        let b = RetryBudget::new();
        let _ = retries_available(&b);
        // 400 consecutive rolls hold each residue mod 16 equally often, as uniform rolls do on
        // average: 400 requests x 20% = 80 retries, exactly.
        for roll in 1000..1400 {
            b.deposit(roll);
        }
        assert_eq!(retries_available(&b), 80);
    }

    #[test]
    fn the_budget_never_exceeds_its_cap() {
        let b = RetryBudget::new();
        for _ in 0..10_000 {
            b.deposit(0);
        }
        assert!(retries_available(&b) <= (RetryBudget::CAP / RetryBudget::PER_RETRY) as usize + 3);
    }
}
