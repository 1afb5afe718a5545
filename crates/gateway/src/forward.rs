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

use crate::access_log::{AccessLog, Flags, Served};
use crate::body::BodyError;
use crate::clock;
use crate::failure::{client_failure, connect_failure, request_failure};
use crate::hop_by_hop::strip_hop_by_hop;
use crate::link::{LinkError, X_VEER_EASTWEST_ERROR};
use crate::responses::{client_fault_response, failure_response, local, refuse, ResponseBody};
use crate::shared::{OutcomeReport, Shared, Upstreams};
use crate::snapshot::{DestState, Miss};
use crate::upgrade::TunnelSlot;
use crate::upload::{after_upload, ClientBody, Upload};
use crate::upstream::{ConnCaps, PoolError, RequestBody, RequestHead, Upgrade, UpstreamBody};

/// Largest request body buffered so the request can be retried.
pub const MAX_RETRY_BODY: u64 = 64 * 1024;

const X_VEER_CLUSTER: HeaderName = HeaderName::from_static("x-veer-cluster");
const X_VEER_ATTEMPTS: HeaderName = HeaderName::from_static("x-veer-attempts");
const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

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

/// Handles one downstream request that arrived on client socket `socket` (see
/// [`crate::snapshot::GATEWAY`]). A request that switches protocols leaves its upstream
/// connection in `tunnel`, for the connection's task to splice once the 101 is sent.
pub async fn handle(
    shared: &Shared,
    upstreams: &Upstreams,
    socket: usize,
    tunnel: &TunnelSlot,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let start = clock::std_now();
    // With no access log this is the one thing logging costs a request: this branch.
    let Some(log) = shared.access_log.as_ref().filter(|log| log.sampled()) else {
        return route(shared, upstreams, socket, tunnel, req, start).await.0;
    };
    let entry = AccessLog::begin(&req);
    let (response, dest, served) = route(shared, upstreams, socket, tunnel, req, start).await;
    let entry = entry.served(dest, served, response.status());
    response.map(|body| ResponseBody::logged(body, entry, log, start))
}

/// The answer to a request over the node's cap on requests in flight (logged if logs are on).
pub fn overloaded<B>(shared: &Shared, req: &Request<B>) -> Response<ResponseBody> {
    let response = local(StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight");
    match shared.access_log.as_ref().filter(|log| log.sampled()) {
        Some(log) => {
            let entry = AccessLog::begin(req).served(None, Served::flagged(Flags::OM), response.status());
            response.map(|body| ResponseBody::logged(body, entry, log, clock::std_now()))
        }
        None => response,
    }
}

/// Routes and forwards one request; returns the response, the destination it was routed to
/// and what the access log says of how it was served.
async fn route(
    shared: &Shared,
    upstreams: &Upstreams,
    socket: usize,
    tunnel: &TunnelSlot,
    mut req: Request<Incoming>,
    start: Instant,
) -> (Response<ResponseBody>, Option<Arc<DestState>>, Served) {
    if crate::request::remove_internal(req.headers_mut()) {
        shared.metrics.internal_headers_removed();
    }
    let refused = |resp| (resp, None, Served::flagged(Flags::DPE));
    // The upstream receives the authority the request is routed by (an absolute-form target's
    // or `:authority`, which win over Host) and the path it is routed by, normalized.
    let routed_host = match crate::request::check_head(req.version(), req.uri().authority().map(|a| a.as_str()), req.headers()) {
        Ok(host) if req.headers().get(header::HOST).is_some_and(|h| h.as_bytes() != host.as_bytes()) => HeaderValue::from_str(host).ok(),
        Ok(_) => None,
        Err(refusal) => return refused(refuse(shared, &refusal)),
    };
    // hyper marks every HTTP/1.1 request with an Upgrade field, and every HTTP/2 CONNECT (and
    // only those): most requests pass this test on an empty extension map.
    let upgrade = match req.extensions().get::<hyper::upgrade::OnUpgrade>() {
        None => None,
        Some(_) => match crate::upgrade::extended_connect(&req) {
            crate::upgrade::ExtendedConnect::No => crate::upgrade::requested(req.version(), req.headers()).map(|p| (p, None)),
            // RFC 8441: routed and sent upstream as the HTTP/1.1 handshake it stands for.
            crate::upgrade::ExtendedConnect::WebSocket(p) => {
                let stream = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
                *req.method_mut() = Method::GET;
                req.headers_mut().insert(SEC_WEBSOCKET_KEY, crate::upgrade::websocket_key(clock::random_u64));
                Some((p, stream))
            }
            crate::upgrade::ExtendedConnect::Other => {
                return refused(local(StatusCode::NOT_IMPLEMENTED, "veer passes on extended CONNECT for websocket only"));
            }
        },
    };
    // Before routing, not after: a Connection option could otherwise take away a field a rule
    // matched on, and the upstream would see another request than the one routed.
    strip_hop_by_hop(req.headers_mut());
    if let Some((protocol, _)) = &upgrade {
        req.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(header::UPGRADE, protocol.clone());
    }
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
                Err(_) => return refused(local(StatusCode::BAD_REQUEST, "bad request path")),
            }
        }
        Err(refusal) => return refused(refuse(shared, &refusal)),
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
                let resp = local(
                    StatusCode::NOT_FOUND,
                    &format!("no route for host {host:?}; veer only forwards to the destinations of its manifests"),
                );
                return (resp, None, Served::flagged(Flags::NR));
            }
            Err(Miss::NoRule) => {
                let text = format!(
                    "host {host:?} has no route for {} {}; no HTTPRoute rule on it matches the request's method, path, headers and query",
                    req.method(),
                    req.uri().path()
                );
                return (local(StatusCode::NOT_FOUND, &text), None, Served::flagged(Flags::NR));
            }
        }
    };
    dest.budget.deposit(clock::random_u32());
    let (parts, body) = req.into_parts();
    let (response, served) = match upgrade {
        None => forward(shared, upstreams, &dest, parts, body, start).await,
        Some((protocol, h2_stream)) => {
            let switch = Switch { protocol, tunnel, h2_stream };
            Box::pin(forward_upgrade(shared, upstreams, &dest, parts, body, switch, start)).await
        }
    };
    let (priority, cluster) = served.answered_by.map_or((0, ""), |ep| (dest.upstreams[ep].priority, &*dest.upstreams[ep].cluster));
    shared.metrics.request(
        &upstreams.request_metrics,
        &dest.key,
        cluster,
        priority as u32,
        response.status().as_u16(),
        clock::std_since(start).as_secs_f64(),
    );
    (response, Some(dest), served)
}

/// Returns the response and how it was served: the endpoint whose answer (or failure) it
/// carries, if one was tried, the tries, and the response flags of a failure.
async fn forward(
    shared: &Shared,
    upstreams: &Upstreams,
    dest: &DestState,
    parts: http::request::Parts,
    body: Incoming,
    start: Instant,
) -> (Response<ResponseBody>, Served) {
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
                    return (client_fault_response(end), Served::flagged(Flags::of(end)));
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
    let mut retried_for = None;
    let received = |served: Served| Served {
        received: buffered.as_ref().map_or_else(|| upload.as_ref().map_or(0, |u| u.received()), |b| b.len() as u64),
        ..served
    };
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
        // veer's own pool drops hop-by-hop and x-veer-* fields as it parses; hyper's clients do not.
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
                    ClientAttempt::BadPath => return (local(StatusCode::BAD_REQUEST, "bad request path"), Served::flagged(Flags::DPE)),
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
                    let served = Served { answered_by: Some(ep), attempts: tried.attempts() as u32, retried_for, ..Served::default() };
                    return (respond(resp, upstream, tried.attempts(), !hop_by_hop_removed), received(served));
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
            Blame::Client => {
                let served =
                    Served { answered_by: Some(ep), attempts: tried.attempts() as u32, retried_for, flags: Flags::of(end), received: 0 };
                return (client_fault_response(end), received(served));
            }
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
            Next::RetryNow => {
                retried_for = Some(end);
                shared.metrics.retry(&dest.key, end.name());
            }
            Next::RetryAfter(backoff) => {
                retried_for = Some(end);
                shared.metrics.retry(&dest.key, end.name());
                tokio::time::sleep_until((clock::now() + backoff).min(deadline)).await;
            }
        }
    }
    let attempts = tried.attempts() as u32;
    let retries_ran_out = if attempts > 1 { Flags::URX } else { Flags::NONE };
    let failed = |ep, flags| received(Served { answered_by: Some(ep), attempts, retried_for, flags, received: 0 });
    match last {
        Some((Failure::Answer(_, resp), ep)) => (respond(*resp, &dest.upstreams[ep], tried.attempts(), true), failed(ep, retries_ran_out)),
        Some((Failure::Other(end, why), ep)) => (failure_response(end, &why), failed(ep, Flags::of(end).union(retries_ran_out))),
        None => (
            local(StatusCode::SERVICE_UNAVAILABLE, &format!("no healthy upstream for {}", dest.key)),
            received(Served { attempts, flags: Flags::UH, ..Served::default() }),
        ),
    }
}

/// Forwards a request that asks to switch protocols (a WebSocket handshake, no body) to one
/// endpoint this node reaches directly, on a new connection. A connect that fails, or a
/// circuit breaker, moves on to another endpoint as the retry policy allows, since nothing was
/// sent; once the request is sent it is never resent (a switched connection cannot be replayed,
/// and the upstream may have acted on it). A 101 for the protocol asked leaves the upstream
/// connection in `tunnel`; any other answer goes back as an ordinary response.
async fn forward_upgrade(
    shared: &Shared,
    upstreams: &Upstreams,
    dest: &DestState,
    parts: http::request::Parts,
    body: Incoming,
    switch: Switch<'_>,
    start: Instant,
) -> (Response<ResponseBody>, Served) {
    let Switch { protocol, tunnel, h2_stream } = switch;
    if !body.is_end_stream() {
        return (local(StatusCode::BAD_REQUEST, "a request that asks for an upgrade must have no body"), Served::flagged(Flags::DPE));
    }
    // Its endpoints speak HTTP/2 (h2c): they would take the HTTP/1.1 handshake for garbage.
    if dest.http2 {
        let why = format!("{} speaks HTTP/2 to its endpoints; an upgrade goes over HTTP/1.1 only", dest.key);
        return (local(StatusCode::BAD_GATEWAY, &why), Served::flagged(Flags::UPE));
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    if !headers.contains_key(header::HOST) {
        if let Some(v) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            headers.insert(header::HOST, v);
        }
    }
    let deadline = tokio::time::Instant::from_std(start) + dest.timeouts.request;
    let mut tried = Tried::default();
    let mut retried_for = None;
    let mut last: Option<(TryEnd, usize)> = None;
    let mut indirect = false;
    // Tries made: endpoints passed over as unreachable for an upgrade are not tries.
    let mut attempts = 0usize;
    while let Some(ep) = dest.pick(&tried, clock::random_u64(), clock::random_f64()) {
        let upstream = &dest.upstreams[ep];
        // A peer cluster's gateway is reached over HTTP/2, which carries no HTTP/1.1 upgrade;
        // an endpoint named by DNS goes through hyper's client: neither can be spliced.
        let (None, Some(addr)) = (&upstream.via, upstream.socket) else {
            tried.record(ep, upstream.priority);
            indirect = true;
            continue;
        };
        if attempts > 0 && spends_budget(&tried, upstream.priority) && !dest.budget.withdraw() {
            shared.metrics.retry_budget_exhausted(&dest.key);
            break;
        }
        tried.record(ep, upstream.priority);
        attempts += 1;
        let caps = &dest.resilience.circuit_breakers;
        let share = |cap| CircuitBreakers::per_worker(cap, upstreams.workers);
        let permit = upstreams.tries.admit(&upstream.key, share(caps.max_requests));
        let try_start = clock::now();
        let try_deadline = (try_start + dest.timeouts.per_try).min(deadline);
        let end = if permit.is_none() {
            TryEnd::LocalOverflow
        } else {
            let head = RequestHead { method: &parts.method, path_and_query, headers: &headers };
            let conn_caps = ConnCaps { max_connections: share(caps.max_connections), max_connecting: share(caps.max_pending_requests) };
            match tokio::time::timeout_at(try_deadline, upstreams.pool.upgrade(addr, head, try_start, conn_caps)).await {
                Ok(Ok(Upgrade::Switched(resp, conn))) if crate::upgrade::same_protocol(&protocol, resp.headers().get(header::UPGRADE)) => {
                    report(shared, dest, ep, TryEnd::Response(101));
                    let mut resp = respond(resp.map(|()| ResponseBody::Pool(UpstreamBody::Whole(None))), upstream, attempts, false);
                    match h2_stream {
                        None => {
                            tunnel.put(conn);
                            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                        }
                        // RFC 8441 §5: a 200 opens the stream; HTTP/2 has no Upgrade field, and
                        // the accept key answered veer's own key.
                        Some(stream) => {
                            tunnel.spawn_h2(stream, conn, shared.metrics.upgraded_connections().clone());
                            *resp.status_mut() = StatusCode::OK;
                            resp.headers_mut().remove(header::UPGRADE);
                            resp.headers_mut().remove(SEC_WEBSOCKET_ACCEPT);
                        }
                    }
                    let served = Served { answered_by: Some(ep), attempts: attempts as u32, retried_for, ..Served::default() };
                    return (resp, served);
                }
                Ok(Ok(Upgrade::Switched(..))) => TryEnd::UpstreamMalformed,
                Ok(Ok(Upgrade::Refused(resp))) => {
                    report(shared, dest, ep, TryEnd::Response(resp.status().as_u16()));
                    let served = Served { answered_by: Some(ep), attempts: attempts as u32, retried_for, ..Served::default() };
                    return (respond(resp.map(ResponseBody::Pool), upstream, attempts, false), served);
                }
                Ok(Err(PoolError::Connect(e))) => connect_failure(&e),
                Ok(Err(PoolError::Request(e))) => request_failure(&e),
                Ok(Err(PoolError::Overflow)) => TryEnd::LocalOverflow,
                Err(_) => TryEnd::UpstreamTimeout,
            }
        };
        drop(permit);
        shared.metrics.try_failure(&dest.key, end.blame().name(), end.name());
        if end.blame() == Blame::Upstream {
            report(shared, dest, ep, end);
        }
        last = Some((end, ep));
        // Not idempotent: only a try that sent nothing may be made again.
        let state = TryState {
            end,
            attempts,
            endpoints: dest.upstreams.len(),
            idempotent: false,
            replayable: true,
            deadline_passed: clock::now() >= deadline,
        };
        match after_try(&dest.retry, state, clock::random_f64()) {
            Next::Stop => break,
            Next::RetryNow => {
                retried_for = Some(end);
                shared.metrics.retry(&dest.key, end.name());
            }
            Next::RetryAfter(backoff) => {
                retried_for = Some(end);
                shared.metrics.retry(&dest.key, end.name());
                tokio::time::sleep_until((clock::now() + backoff).min(deadline)).await;
            }
        }
    }
    let attempts = attempts as u32;
    match last {
        Some((end, ep)) => {
            let why = if end == TryEnd::UpstreamMalformed {
                "upstream switched to another protocol than the one asked for"
            } else {
                "upstream connection failed"
            };
            let flags = Flags::of(end).union(if attempts > 1 { Flags::URX } else { Flags::NONE });
            (failure_response(end, why), Served { answered_by: Some(ep), attempts, retried_for, flags, received: 0 })
        }
        None if indirect => (
            local(
                StatusCode::BAD_GATEWAY,
                &format!("{} has no endpoint this node reaches directly; an upgrade is not carried to a peer cluster's gateway", dest.key),
            ),
            Served { attempts: 0, flags: Flags::UH, ..Served::default() },
        ),
        None => (local(StatusCode::SERVICE_UNAVAILABLE, &format!("no healthy upstream for {}", dest.key)), Served::flagged(Flags::UH)),
    }
}

/// What a request that switches protocols needs beyond any request's parts.
struct Switch<'a> {
    /// The protocol asked for, as the upstream is asked for it.
    protocol: HeaderValue,
    tunnel: &'a TunnelSlot,
    /// An HTTP/2 client's stream (extended CONNECT), which becomes its side of the splice.
    h2_stream: Option<hyper::upgrade::OnUpgrade>,
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
    // Only this node says which cluster answered, and nothing of the mesh's own protocol
    // reaches a client, whatever an upstream put there. veer's own pool drops both kinds of
    // field as it parses (`strip` false); hyper's clients keep them.
    if strip {
        strip_hop_by_hop(&mut parts.headers);
        crate::request::remove_internal(&mut parts.headers);
    }
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
