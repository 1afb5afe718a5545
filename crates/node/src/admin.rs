//! The admin HTTP listener: health, readiness, Prometheus metrics, live priority tables and the failover event log.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use veer_control::events::Events;
use veer_control::manifests::ready::WatcherDown;
use veer_gateway::metrics::Metrics;

/// The content type Prometheus negotiates for OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Shown on 404 so someone poking at the port with curl learns what is there.
const INDEX: &str =
    "veer admin endpoints:\n  GET /healthz\n  GET /ready\n  GET /metrics\n  GET /routes\n  GET /events[?since=N]\n  GET /status\n";

/// A client that never finishes its request headers must not pin a connection forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight admin responses may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Back-off after a failed accept (typically EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line about failed accepts per this long.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

/// What the admin endpoints serve.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub events: Arc<Events>,
    /// The live priority tables as JSON (same shape as `veer explain -o json`, one per destination).
    pub routes: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// The node at a glance for `veer status`: its cluster, its peers and the age of their
    /// data, the active priority of each destination.
    pub status: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
    pub ready: AtomicBool,
    /// Asked at each `/ready` once `ready` is set: `Err` says why the node is not ready after
    /// all (its manifest watcher died or stalled, so changes would not be applied).
    pub ready_check: Option<Box<dyn Fn() -> Result<(), WatcherDown> + Send + Sync>>,
}

impl AdminState {
    /// State that reports not ready until `ready` is set.
    pub fn new(metrics: Arc<Metrics>, events: Arc<Events>, routes: impl Fn() -> serde_json::Value + Send + Sync + 'static) -> Self {
        AdminState {
            metrics,
            events,
            routes: Box::new(routes),
            status: Box::new(|| serde_json::Value::Null),
            ready: AtomicBool::new(false),
            ready_check: None,
        }
    }
}

/// Serves until `shutdown` resolves. Routes: GET /healthz → 200 "ok"; GET /ready → 200 "ready" or 503 "not ready"
/// (with the reason when `ready_check` gave one);
/// GET /metrics → OpenMetrics text; GET /routes → JSON from `routes`; GET /events (optional `?since=N`) → JSON array
/// of events; anything else → 404 listing the endpoints; a known path with a method other than GET → 405.
///
/// Accept errors are counted, logged (once a second at most) and retried rather than returned: the admin
/// port going away over a transient EMFILE would be worse than a brief stall. The listener keeps one file
/// in reserve: when the process is out of files (the gateway's clients took them all), it gives that file
/// up to accept an operator's connection, and takes it back when that connection closes, so `/healthz`
/// and `/metrics` still answer then. After `shutdown`, the listener is closed, idle keep-alive
/// connections are closed, and in-flight responses get a few seconds to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let mut shutdown = std::pin::pin!(shutdown);
    let reserve = Arc::new(Reserve::default());
    reserve.refill();
    let mut logged: Option<std::time::Instant> = None;

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                let (kind, _) = veer_gateway::server::accept_error(e.raw_os_error());
                state.metrics.accept_error("admin", kind);
                let out_of_files = matches!(kind, "emfile" | "enfile");
                if out_of_files && reserve.release() {
                    // One file is free now: a connection waiting in the queue gets it. Out
                    // of files, accept fails even when none waits: then the file is taken
                    // back at once, before another thread takes it.
                    match std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await {
                        Poll::Ready(Ok(conn)) => conn,
                        _ => {
                            reserve.refill();
                            continue;
                        }
                    }
                } else {
                    if logged.is_none_or(|at| crate::clock::since(at) >= ACCEPT_LOG_EVERY) {
                        logged = Some(crate::clock::now());
                        tracing::warn!(error = %e, "admin accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            }
        };
        let reserve = reserve.clone();
        let state = state.clone();
        let service = service_fn(move |req| {
            let response = handle(&state, &req);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Clients hanging up mid-response are routine for scrapers; not worth a warning.
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
            // The connection's file is closed: take it back as the reserve, if that was given up.
            reserve.refill();
        });
    }

    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::debug!("admin connections still open after the drain timeout; abandoning them");
    }
    Ok(())
}

/// A file held open only to be given up when the process has no other, so that the admin
/// listener can still accept one connection.
#[derive(Default)]
struct Reserve(std::sync::Mutex<Option<std::fs::File>>);

impl Reserve {
    /// Takes a file as the reserve unless one is held (fails quietly while files are short).
    fn refill(&self) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none() {
            *held = std::fs::File::open("/dev/null").ok();
        }
    }

    /// Closes the reserve file; whether there was one.
    fn release(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take().is_some()
    }
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/healthz" | "/ready" | "/metrics" | "/routes" | "/events" | "/status");
    if !known {
        return respond(StatusCode::NOT_FOUND, TEXT, INDEX);
    }
    if req.method() != Method::GET {
        let mut response = respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed; use GET\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match path {
        "/healthz" => respond(StatusCode::OK, TEXT, "ok\n"),
        "/ready" => {
            if !state.ready.load(Ordering::Acquire) {
                return respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n");
            }
            match state.ready_check.as_ref().map_or(Ok(()), |check| check()) {
                Ok(()) => respond(StatusCode::OK, TEXT, "ready\n"),
                Err(why) => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("not ready: {why}\n")),
            }
        }
        "/metrics" => respond(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, state.metrics.encode()),
        "/routes" => json(&(state.routes)()),
        "/status" => json(&(state.status)()),
        "/events" => match since(req.uri().query()) {
            Ok(Some(seq)) => json(&state.events.since(seq)),
            Ok(None) => json(&state.events.all()),
            Err(invalid) => respond(StatusCode::BAD_REQUEST, TEXT, invalid.to_string()),
        },
        // Unreachable given `known`, but a 404 is the honest answer if the lists ever drift apart.
        _ => respond(StatusCode::NOT_FOUND, TEXT, INDEX),
    }
}

/// A `since` query parameter that is not an event seq; its text is the 400's body.
#[derive(Debug)]
struct InvalidSince(String);

impl std::fmt::Display for InvalidSince {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid since={:?}: expected a non-negative integer event seq", self.0)
    }
}

/// The `since` query parameter, if present; other parameters are ignored.
fn since(query: Option<&str>) -> Result<Option<u64>, InvalidSince> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "since" {
            return value.parse::<u64>().map(Some).map_err(|_| InvalidSince(value.to_string()));
        }
    }
    Ok(None)
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            respond(StatusCode::OK, JSON, body)
        }
        Err(e) => {
            tracing::error!(error = %e, "admin: serializing JSON failed");
            respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "internal error\n")
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer reflects live state; a cached /ready or /events would mislead.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests;
