//! One worker's HTTP/1.1 keep-alive connections to its upstream endpoints: a plain stack of idle
//! connections per address, checked out and returned without crossing threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::forward::{Body, Guarded};

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

/// An idle connection and when it became idle.
type Idle = (SendRequest<Body>, Instant);

/// A worker's HTTP/1.1 connections.
pub struct H1Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    connect_timeout: Duration,
}

impl H1Pool {
    pub fn new(connect_timeout: Duration) -> Arc<H1Pool> {
        Arc::new(H1Pool { idle: Mutex::new(HashMap::new()), connect_timeout })
    }

    /// Sends `req` to `addr` on an idle connection, or a new one. A request that a dead idle
    /// connection refused before sending anything goes out again on a fresh connection.
    pub async fn send(self: &Arc<Self>, addr: SocketAddr, mut req: Request<Body>) -> Result<Response<Pooled>, PoolError> {
        while let Some(mut sender) = self.checkout(addr) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.pooled(resp, sender, addr)),
                Err(mut e) => match e.take_message() {
                    // Never sent: the connection was closed under us; try another.
                    Some(back) => req = back,
                    None => return Err(PoolError::Request(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(addr).await?;
        match sender.send_request(req).await {
            Ok(resp) => Ok(self.pooled(resp, sender, addr)),
            Err(e) => Err(PoolError::Request(e)),
        }
    }

    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let stack = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some((sender, since)) = stack.pop() {
            if !sender.is_closed() && now.duration_since(since) < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let stack = idle.entry(addr).or_default();
        if stack.len() < MAX_IDLE_PER_ADDR {
            stack.push((sender, Instant::now()));
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Body>, PoolError> {
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(PoolError::Connect(e)),
            Err(_) => return Err(PoolError::Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))),
        };
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            // Small messages: one flat buffer and one write() cost less than a writev.
            .writev(false)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(PoolError::Request)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn pooled(self: &Arc<Self>, resp: Response<Incoming>, sender: SendRequest<Body>, addr: SocketAddr) -> Response<Pooled> {
        resp.map(|body| Guarded { body, guard: Checkin { sender: Some(sender), pool: self.clone(), addr } })
    }
}

/// A response body that returns its connection to the pool when it is done with.
pub type Pooled = Guarded<Incoming, Checkin>;

/// An upstream connection on its way back to its pool.
pub struct Checkin {
    sender: Option<SendRequest<Body>>,
    pool: Arc<H1Pool>,
    addr: SocketAddr,
}

impl Drop for Checkin {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-message: hyper closes it,
        // and the next checkout skips it (`ready` fails).
        if let Some(sender) = self.sender.take() {
            self.pool.checkin(self.addr, sender);
        }
    }
}
