//! One worker's HTTP/1.1 keep-alive connections to its upstream endpoints: a stack of idle
//! connections per address, checked out and returned without crossing threads, each driven by
//! the request using it rather than by a task of its own.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::forward::Body;
use crate::FastMap;

/// Idle connections kept per address at most; more are closed when returned.
const MAX_IDLE_PER_ADDR: usize = 1024;
/// An idle connection older than this is closed rather than reused (backends commonly drop
/// idle keep-alive connections after 60–120 s, and reusing one they just dropped costs a retry).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Why a request through the pool failed.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made: nothing was sent.
    Connect(std::io::Error),
    /// The connection failed once the request was (or may have been) sent.
    Request(hyper::Error),
}

/// One upstream HTTP/1.1 connection: hyper's request handle and the connection state machine
/// behind it.
///
/// hyper expects the connection future to run as a task of its own, so every request would
/// hop between two tasks four times (request handed over, written, response read, handed
/// back). Here whoever uses the connection polls it: the request future while it waits for the
/// response head, the response body while it streams. The hand-over channels are then polled
/// with a no-op waker, because the connection is polled right before them in the same task and
/// is what completes them; the task is woken by the socket only.
struct UpstreamConn {
    sender: SendRequest<Body>,
    /// `None` once the connection has finished (the socket is closed). Dropping it at once
    /// matters: a request still queued for it comes back, to go out on another connection.
    driver: Option<Driver>,
}

impl UpstreamConn {
    /// Advances the connection as far as it can go now; its wake-ups go to `cx`.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if self.driver.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
            self.driver = None;
        }
    }

    /// Settles a connection whose response has been read: it goes idle and says whether it
    /// can carry another request. Nothing waits on it while it is idle, so its wake-ups go
    /// nowhere; a close by the backend is seen when the next request is sent on it, which then
    /// comes back unsent and goes out on another connection.
    fn settle(&mut self) -> bool {
        let mut idle = Context::from_waker(Waker::noop());
        self.drive(&mut idle);
        self.driver.is_some() && matches!(self.sender.poll_ready(&mut idle), Poll::Ready(Ok(())))
    }
}

/// hyper's state machine for one HTTP/1.1 connection.
type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Body>>>;

/// An idle connection and when it became idle.
type Idle = (UpstreamConn, Instant);

/// A worker's HTTP/1.1 connections.
pub struct H1Pool {
    idle: Mutex<FastMap<SocketAddr, VecDeque<Idle>>>,
    connect_timeout: Duration,
}

impl H1Pool {
    pub fn new(connect_timeout: Duration) -> Arc<H1Pool> {
        Arc::new(H1Pool { idle: Mutex::new(FastMap::default()), connect_timeout })
    }

    /// Sends `req` to `addr` on an idle connection, or a new one. A request that a dead idle
    /// connection refused before sending anything goes out again on a fresh connection.
    pub async fn send(self: &Arc<Self>, addr: SocketAddr, mut req: Request<Body>) -> Result<Response<Pooled>, PoolError> {
        while let Some(conn) = self.checkout(addr) {
            match exchange(conn, req).await {
                Ok((resp, conn)) => return Ok(self.pooled(resp, conn, addr)),
                Err((Some(back), _)) => req = back,
                Err((None, e)) => return Err(PoolError::Request(e)),
            }
        }
        let conn = Box::pin(self.connect(addr)).await?;
        match exchange(conn, req).await {
            Ok((resp, conn)) => Ok(self.pooled(resp, conn, addr)),
            Err((_, e)) => Err(PoolError::Request(e)),
        }
    }

    fn checkout(&self, addr: SocketAddr) -> Option<UpstreamConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let stack = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some((conn, since)) = stack.pop_back() {
            // Settled when it came back: ready unless the backend has closed it since.
            if now.duration_since(since) < IDLE_TIMEOUT && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, mut conn: UpstreamConn) {
        if !conn.settle() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let stack = idle.entry(addr).or_default();
        let now = Instant::now();
        // Connections no one has needed for a while sit at the front: close the expired ones
        // here, since nothing else visits them.
        while stack.front().is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT) {
            stack.pop_front();
        }
        if stack.len() < MAX_IDLE_PER_ADDR {
            stack.push_back((conn, now));
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<UpstreamConn, PoolError> {
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(PoolError::Connect(e)),
            Err(_) => return Err(PoolError::Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))),
        };
        let _ = tcp.set_nodelay(true);
        let (sender, driver) = hyper::client::conn::http1::Builder::new()
            // Small messages: one flat buffer and one write() cost less than a writev.
            .writev(false)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(PoolError::Request)?;
        Ok(UpstreamConn { sender, driver: Some(Box::pin(driver)) })
    }

    fn pooled(self: &Arc<Self>, resp: Response<Incoming>, conn: UpstreamConn, addr: SocketAddr) -> Response<Pooled> {
        resp.map(|body| Pooled { body, conn: Some(conn), pool: self.clone(), addr, ended: false })
    }
}

/// Sends one request on `conn` and drives the connection until the response head is in.
/// On failure the request comes back when hyper never started sending it.
async fn exchange(mut conn: UpstreamConn, req: Request<Body>) -> Result<(Response<Incoming>, UpstreamConn), (Option<Request<Body>>, hyper::Error)> {
    let mut response = std::pin::pin!(conn.sender.try_send_request(req));
    let result = std::future::poll_fn(|cx| {
        conn.drive(cx);
        // Only the connection completes the response: polled just above, it woke nothing.
        response.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    })
    .await;
    match result {
        Ok(resp) => Ok((resp, conn)),
        Err(mut e) => Err((e.take_message(), e.into_error())),
    }
}

/// A response body that drives its connection while it streams, and returns the connection
/// to the pool once the body has been read to its end.
pub struct Pooled {
    body: Incoming,
    conn: Option<UpstreamConn>,
    pool: Arc<H1Pool>,
    addr: SocketAddr,
    /// The body has been read to its end (a chunked body says so only by ending).
    ended: bool,
}

impl hyper::body::Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match this.conn.as_mut() {
            Some(conn) => {
                // A small body usually came in with the head: then there is nothing to drive.
                let mut quiet = Context::from_waker(Waker::noop());
                match Pin::new(&mut this.body).poll_frame(&mut quiet) {
                    Poll::Pending => {
                        conn.drive(cx);
                        Pin::new(&mut this.body).poll_frame(&mut quiet)
                    }
                    ready => ready,
                }
            }
            None => Pin::new(&mut this.body).poll_frame(cx),
        };
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-message: it is closed.
        if let Some(conn) = self.conn.take() {
            if self.ended || self.body.is_end_stream() {
                self.pool.checkin(self.addr, conn);
            }
        }
    }
}
