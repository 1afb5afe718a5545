//! The request path: route by host and path, pick an endpoint from the snapshot, forward,
//! retry what is safe to retry on another endpoint and priority, and report outcomes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use veer_core::outcome::{Blame, EastWestError, TryEnd};
use veer_core::pick::Tried;
use veer_core::policy::CircuitBreakers;
use veer_core::retry::{after_try, max_tries, retriable_answer, spends_budget, Next, TryState};

use crate::body::BodyError;
use crate::clock;
use crate::failure::{client_failure, connect_failure, request_failure};
use crate::hop_by_hop::strip_hop_by_hop;
use crate::link::{LinkError, X_VEER_EASTWEST_ERROR};
use crate::responses::{client_fault_response, failure_response, local, refuse, ResponseBody};
use crate::shared::{OutcomeReport, Shared, Upstreams};
use crate::snapshot::{DestState, Miss};
use crate::upload::{after_upload, ClientBody, Upload};
use crate::upstream::{ConnCaps, PoolError, RequestBody, RequestHead};

/// Largest request body buffered so the request can be retried.
pub const MAX_RETRY_BODY: u64 = 64 * 1024;

const X_VEER_CLUSTER: HeaderName = HeaderName::from_static("x-veer-cluster");
const X_VEER_ATTEMPTS: HeaderName = HeaderName::from_static("x-veer-attempts");

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
    let start = clock::std_now();
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
    dest.budget.deposit(clock::random_u32());
    let (parts, body) = req.into_parts();
    let (response, answered_by) = forward(shared, upstreams, &dest, parts, body, start).await;
    let (priority, cluster) = answered_by.map_or((0, ""), |ep| (dest.upstreams[ep].priority, &*dest.upstreams[ep].cluster));
    shared.metrics.request(
        &upstreams.request_metrics,
        &dest.key,
        cluster,
        priority as u32,
        response.status().as_u16(),
        clock::std_since(start).as_secs_f64(),
    );
    response
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
            received = clock::std_now();
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

    let max_attempts = max_tries(&dest.retry);
    let mut tried = Tried::default();
    let mut last: Option<(Failure, usize)> = None;
    while let Some(ep) = dest.pick(&tried, clock::random_u64(), clock::random_f64()) {
        let upstream = &dest.upstreams[ep];
        if spends_budget(&tried, upstream.priority) && !dest.budget.withdraw() {
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
        let try_start = if tried.attempts() == 1 { deadline - dest.timeouts.request } else { clock::now() };
        let try_deadline = (try_start + dest.timeouts.per_try).min(deadline);
        let caps = &dest.resilience.circuit_breakers;
        let share = |cap| CircuitBreakers::per_worker(cap, upstreams.workers);
        let permit = upstreams.tries.admit(&upstream.key, share(caps.max_requests));
        let attempt = match (&upstream.via, upstream.socket) {
            // This worker already waits on its share of the endpoint's concurrent requests.
            _ if permit.is_none() => Err(Failure::other(TryEnd::LocalOverflow, "")),
            // HTTP/1.1 to an address: this worker's own pool, no lock shared with other threads.
            // It borrows the head, so no try copies the headers.
            (None, Some(addr)) if !use_h2 && dest.tls.is_none() => {
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
            // Every other way (HTTP/2, TLS, a name, a peer's gateway) has its own function, boxed, so its
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
                if retriable_answer(&dest.retry.retry_on, status.as_u16()) {
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
        last = Some((failure, ep));
        let state = TryState {
            end,
            attempts: tried.attempts(),
            endpoints: dest.upstreams.len(),
            idempotent,
            replayable: buffered.is_some(),
            deadline_passed: clock::now() >= deadline,
        };
        match after_try(&dest.retry, state, clock::random_f64()) {
            Next::Stop => break,
            Next::RetryNow => shared.metrics.retry(&dest.key, end.name()),
            Next::RetryAfter(backoff) => {
                shared.metrics.retry(&dest.key, end.name());
                tokio::time::sleep_until((clock::now() + backoff).min(deadline)).await;
            }
        }
    }
    match last {
        Some((Failure::Answer(_, resp), ep)) => (respond(*resp, &dest.upstreams[ep], tried.attempts(), true), Some(ep)),
        Some((Failure::Other(end, why), ep)) => (failure_response(end, &why), Some(ep)),
        None => (local(StatusCode::SERVICE_UNAVAILABLE, &format!("no healthy upstream for {}", dest.key)), None),
    }
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
    via: Option<&Arc<crate::link::PeerLink>>,
    send: SendArgs<'_>,
) -> ClientAttempt {
    let SendArgs { method, path_and_query, headers, body, use_h2, try_deadline, upload } = send;
    let mut uri_parts = http::uri::Parts::default();
    uri_parts.scheme = Some(if dest.tls.is_some() && via.is_none() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP });
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
    let per_try = try_deadline.saturating_duration_since(clock::now());
    match via {
        None => {
            let sent = match &dest.tls {
                Some(tls) => tls.request(up),
                None if use_h2 => upstreams.http2.request(up),
                None => upstreams.http1.request(up),
            };
            let result = match upload {
                None => tokio::time::timeout_at(try_deadline, sent).await.ok(),
                Some(up) => after_upload(sent, up, per_try).await,
            };
            ClientAttempt::Done(match result {
                Some(Ok(resp)) => Ok(resp.map(|b| ResponseBody::Other(b.map_err(BodyError::from).boxed()))),
                Some(Err(e)) => match client_failure(&e) {
                    TryEnd::UpstreamReset => Err(Failure::other(TryEnd::UpstreamReset, format!("upstream connection failed: {e}"))),
                    end => Err(Failure::other(end, "upstream connect failed")),
                },
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
                Some(Ok(resp)) => {
                    ClientAttempt::Done(match resp.headers().get(&X_VEER_EASTWEST_ERROR).and_then(|v| EastWestError::parse(v.as_bytes())) {
                        // The remote gateway answered for one endpoint behind it (or for its own
                        // node's shortage, which blames nobody's endpoint).
                        Some(error) => Err(Failure::other(error.try_end(), eastwest_why(error))),
                        None => Ok(resp.map(|b| ResponseBody::Other(b.map_err(BodyError::from).boxed()))),
                    })
                }
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

/// What the client is told when a peer's east-west listener answered with `error`.
fn eastwest_why(error: EastWestError) -> &'static str {
    match error {
        EastWestError::Connect | EastWestError::Refused => "upstream connect failed",
        EastWestError::Reset => "the remote gateway's upstream connection failed",
        EastWestError::Local => "the remote gateway could not open a connection (out of file descriptors or memory)",
    }
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
    let upstream = &dest.upstreams[ep];
    let Some(input) = upstream.recent_failures.report(end) else { return };
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
