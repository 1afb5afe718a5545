//! A test backend server that names itself in every answer and fails on command (status, refuse, blackhole, delay).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, SERVER};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How a [`Backend`] answers from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200, body `"<name>\n"`.
    Ok,
    /// Every request gets this status, body `"<name> <code>\n"`. Codes outside 200..=999 are answered as 500,
    /// because hyper cannot send an informational (1xx) status as a final answer.
    Status(u16),
    /// Listener closed and every open connection closed: new connects get ECONNREFUSED.
    Refuse,
    /// Connections are accepted and kept, but no request is ever answered while this mode lasts;
    /// a held request is answered under the new mode once the mode changes.
    Blackhole,
    /// Answers 200 after this delay.
    Delay(Duration),
}

/// A running test backend. Dropping it without [`Backend::stop`] still tears everything down (without waiting).
pub struct Backend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The accept loop of the current listener; `None` while in [`Mode::Refuse`] or after stop.
    /// An async mutex so that concurrent `set_mode` calls cannot bind or stop twice.
    server: tokio::sync::Mutex<Option<Server>>,
}

/// State every connection and request handler sees.
struct Shared {
    name: String,
    /// A watch rather than a plain lock so that blackholed requests can wait for the mode to change.
    mode: watch::Sender<Mode>,
    served: AtomicU64,
    received: Mutex<HashMap<String, u64>>,
}

/// One listener generation: its accept loop owns every connection task it spawned.
struct Server {
    /// Sending `true` (or dropping) tells the accept loop, every connection and every held request to end.
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    fn start(listener: TcpListener, shared: Arc<Shared>) -> Server {
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared, rx));
        Server { shutdown, task }
    }

    /// Returns once the listener is closed and every connection task has ended (its socket dropped).
    async fn stop(self) {
        self.shutdown.send_replace(true);
        // The accept loop only ends after it has closed the listener and joined all connections;
        // an error here can only mean it was cancelled or panicked, and either way it is gone.
        let _ = self.task.await;
    }
}

impl Backend {
    /// Binds `addr` (port 0 allowed) and serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge) in [`Mode::Ok`].
    pub async fn start(name: &str, addr: SocketAddr) -> io::Result<Backend> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Ok);
        let shared = Arc::new(Shared { name: name.to_string(), mode, served: AtomicU64::new(0), received: Mutex::new(HashMap::new()) });
        let server = Server::start(listener, Arc::clone(&shared));
        Ok(Backend { shared, addr, server: tokio::sync::Mutex::new(Some(server)) })
    }

    /// The name this backend puts in `x-backend` and in its bodies.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The bound address; it stays the same across [`Mode::Refuse`] and back.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches mode. Switching to [`Mode::Refuse`] returns only after the listener and every
    /// connection are closed; switching away from it re-binds the same port first (so an error
    /// here means the port could not be had again, and the backend stays refusing).
    pub async fn set_mode(&self, mode: Mode) -> io::Result<()> {
        let mut server = self.server.lock().await;
        if mode == Mode::Refuse {
            // Set the mode first so that requests arriving on connections about to be closed are held, not answered.
            self.shared.mode.send_replace(mode);
            if let Some(running) = server.take() {
                running.stop().await;
            }
        } else {
            if server.is_none() {
                let listener = rebind(self.addr).await?;
                *server = Some(Server::start(listener, Arc::clone(&self.shared)));
            }
            self.shared.mode.send_replace(mode);
        }
        Ok(())
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode.borrow().clone()
    }

    /// Requests answered so far, whatever the status.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Requests received so far (answered or not) with this method; the method is matched ignoring ASCII case.
    pub fn received_by_method(&self, method: &str) -> u64 {
        let received = self.shared.received.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        received.get(&method.to_ascii_uppercase()).copied().unwrap_or(0)
    }

    /// Stops the listener and every connection and frees the port.
    pub async fn stop(self) {
        let running = self.server.lock().await.take();
        if let Some(running) = running {
            running.stop().await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Nobody can await here: aborting the accept loop drops its JoinSet, which aborts every connection.
        if let Some(running) = self.server.get_mut().take() {
            running.shutdown.send_replace(true);
            running.task.abort();
        }
    }
}

/// Backends started together, read as a slice. Dropping the set stops every server (each
/// [`Backend`]'s drop, without waiting); [`Backends::stop`] waits until every port is free.
pub struct Backends(Vec<Backend>);

impl Backends {
    /// Starts one backend per `(name, address)`; panics if one cannot bind.
    pub async fn start(backends: impl IntoIterator<Item = (String, SocketAddr)>) -> Backends {
        let mut started = Vec::new();
        for (name, addr) in backends {
            started.push(Backend::start(&name, addr).await.unwrap_or_else(|e| panic!("backend {name} on {addr}: {e}")));
        }
        Backends(started)
    }

    /// Stops every server and returns once all their ports are free.
    pub async fn stop(self) {
        for b in self.0 {
            b.stop().await;
        }
    }
}

impl std::ops::Deref for Backends {
    type Target = [Backend];

    fn deref(&self) -> &[Backend] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Backends {
    type Item = &'a Backend;
    type IntoIter = std::slice::Iter<'a, Backend>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// SO_REUSEADDR so that the port can be bound again at once after Refuse, despite TIME_WAIT sockets.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Re-binds the same port, retrying briefly: a client socket may hold the port for a moment
/// (for instance a connect that the kernel gave this very number as its ephemeral port).
async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Resolves once shutdown is signalled or the signal's sender is gone.
async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    // Owning every connection task here is what lets Refuse close keep-alive connections for real.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown_signalled(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared), shutdown.clone()));
                }
                // Accept errors are per-connection or resource exhaustion (EMFILE); pause instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow over a long run.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    // Small answers should not wait for Nagle; failure only costs latency.
    let _ = stream.set_nodelay(true);
    let held = shutdown.clone();
    let service = service_fn(move |req| handle(req, Arc::clone(&shared), held.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Connection errors (client went away, bad bytes) end only this connection.
        _ = connection => {}
        _ = shutdown_signalled(&mut shutdown) => {}
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Response<TestBody>, Infallible> {
    {
        let mut received = shared.received.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *received.entry(req.method().as_str().to_ascii_uppercase()).or_insert(0) += 1;
    }
    let grpc = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/grpc"));
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client broke off mid-body; this answer will most likely never arrive.
        Err(_) => return Ok(plain(&shared.name, StatusCode::BAD_REQUEST, 0, Bytes::new())),
    };

    let mut mode_rx = shared.mode.subscribe();
    let mode = loop {
        let mode = mode_rx.borrow_and_update().clone();
        match mode {
            // Refuse is held too: its connections are being closed, and no answer may slip out.
            Mode::Blackhole | Mode::Refuse => {
                tokio::select! {
                    changed = mode_rx.changed() => {
                        if changed.is_err() {
                            // The backend is gone; so is this connection.
                            return Ok(plain(&shared.name, StatusCode::SERVICE_UNAVAILABLE, body.len(), Bytes::new()));
                        }
                    }
                    // HTTP/2 requests run in tasks of their own, so they must end with the server, not just the connection.
                    _ = shutdown_signalled(&mut shutdown) => {
                        return Ok(plain(&shared.name, StatusCode::SERVICE_UNAVAILABLE, body.len(), Bytes::new()));
                    }
                }
            }
            Mode::Delay(delay) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => break mode,
                    _ = shutdown_signalled(&mut shutdown) => {
                        return Ok(plain(&shared.name, StatusCode::SERVICE_UNAVAILABLE, body.len(), Bytes::new()));
                    }
                }
            }
            Mode::Ok | Mode::Status(_) => break mode,
        }
    };

    let response = match (mode, grpc) {
        (Mode::Status(code), false) => {
            let status = status_code(code);
            let text = format!("{} {}\n", shared.name, status.as_u16());
            plain(&shared.name, status, body.len(), Bytes::from(text))
        }
        (Mode::Status(code), true) => {
            // gRPC "trailers-only": HTTP 200 with grpc-status in the one HEADERS frame, as gRPC servers do.
            let mut response = plain(&shared.name, StatusCode::OK, body.len(), Bytes::new());
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(HeaderName::from_static("grpc-status"), HeaderValue::from_static("14"));
            if let Ok(message) = HeaderValue::from_str(&format!("{} {}", shared.name, status_code(code).as_u16())) {
                headers.insert(HeaderName::from_static("grpc-message"), message);
            }
            response
        }
        (_, true) => {
            let mut trailers = HeaderMap::new();
            trailers.insert(HeaderName::from_static("grpc-status"), HeaderValue::from_static("0"));
            trailers.insert(HeaderName::from_static("grpc-message"), HeaderValue::from_static("ok"));
            let len = body.len();
            let mut response = plain(&shared.name, StatusCode::OK, len, Bytes::new());
            *response.body_mut() = TestBody { data: Some(body), trailers: Some(trailers) };
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            response
        }
        (_, false) => {
            let text = format!("{}\n", shared.name);
            plain(&shared.name, StatusCode::OK, body.len(), Bytes::from(text))
        }
    };
    shared.served.fetch_add(1, Ordering::Relaxed);
    Ok(response)
}

fn status_code(code: u16) -> StatusCode {
    match StatusCode::from_u16(code) {
        Ok(status) if code >= 200 => status,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A response with the headers every answer carries.
fn plain(name: &str, status: StatusCode, request_body_bytes: usize, body: Bytes) -> Response<TestBody> {
    // 204 and 304 must not carry a body.
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED { Bytes::new() } else { body };
    let mut response = Response::new(TestBody { data: Some(body), trailers: None });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(name) {
        headers.insert(HeaderName::from_static("x-backend"), value);
    }
    headers.insert(SERVER, HeaderValue::from_static("veer-testkit"));
    headers.insert(HeaderName::from_static("x-request-body-bytes"), HeaderValue::from(request_body_bytes));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// One data frame then optional trailers: enough for plain answers and gRPC without pulling in a stream crate.
struct TestBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
