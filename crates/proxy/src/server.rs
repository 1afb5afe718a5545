//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (h2c prior knowledge) on each,
//! cap concurrent requests, and drain gracefully on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::forward::{handle, local_response, Shared};

/// Limits applied to downstream traffic.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list), bytes.
    pub max_header_bytes: usize,
    /// Requests in flight across all connections; more get 503 at once.
    pub max_concurrent_requests: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_header_bytes: 64 * 1024, max_concurrent_requests: 10_000, drain: Duration::from_secs(10) }
    }
}

/// Serves `listener` until `shutdown` turns true, then drains.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client gets 30 s to send a request head: a slow-loris cannot hold connections forever.
    builder.http1().keep_alive(true).max_buf_size(limits.max_header_bytes.max(8192)).timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX)).max_concurrent_streams(1024);
    let graceful = GracefulShutdown::new();
    let in_flight = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let in_flight = in_flight.clone();
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let shared = shared.clone();
                    let permit = in_flight.clone().try_acquire_owned();
                    async move {
                        let Ok(_permit) = permit else {
                            return Ok::<_, Infallible>(local_response(StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight"));
                        };
                        Ok(handle(shared, req).await)
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.drain, graceful.shutdown()).await;
}
