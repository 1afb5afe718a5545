//! One worker's HTTP/1.1 keep-alive connections to its upstream endpoints: a stack of idle
//! connections per address, checked out and returned without crossing threads. The request
//! using a connection drives it directly (write the request, read the response), and a
//! response whose body came in with its head gives the connection back before it is even
//! sent on to the client.

pub mod codec;
pub mod tls;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::{HeaderMap, Method, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{Body, BodyError};
use crate::clock;
use crate::FastMap;
pub use codec::UpstreamError;
use codec::{ChunkState, Decoded, RequestFraming, ResponseFraming, ResponseHead};

/// Idle connections kept per address at most; more are closed when returned.
const MAX_IDLE_PER_ADDR: usize = 1024;
/// An idle connection older than this is closed rather than reused (backends commonly drop
/// idle keep-alive connections after 60–120 s, and reusing one they just dropped costs a retry).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Free space made in the read buffer before reading a response head; a body streams in
/// larger reads.
const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 32 * 1024;
/// A request body is written in pieces of about this size.
const WRITE_BATCH: usize = 64 * 1024;

/// Why a request through the pool failed.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made: nothing was sent.
    Connect(std::io::Error),
    /// The connection failed once the request was (or may have been) sent.
    Request(UpstreamError),
    /// This worker already holds its share of the endpoint's connection cap, every one busy,
    /// or its share of connects in progress: nothing was sent, and the endpoint is not to blame.
    Overflow,
}

/// The parts of a request the pool writes. Borrowed: a request that may be retried keeps its
/// head for the next try instead of copying it for each one.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Origin form: the path and query only.
    pub path_and_query: &'a str,
    /// With Host set; Content-Length and Transfer-Encoding are ignored (the body frames itself).
    pub headers: &'a HeaderMap,
}

/// A request body for the pool: in memory (written with the head, no body polled), or
/// streaming in from the client.
pub enum RequestBody {
    Buffered(Bytes),
    Streaming(Body),
}

impl RequestBody {
    /// The same body as any hyper client takes it.
    pub fn boxed(self) -> Body {
        match self {
            RequestBody::Buffered(b) => Full::new(b).map_err(|never| match never {}).boxed(),
            RequestBody::Streaming(body) => body,
        }
    }
}

/// One upstream HTTP/1.1 connection and its buffers, kept across requests.
struct UpstreamConn {
    io: TcpStream,
    /// Counted among its address's open connections until dropped.
    _open: OpenSlot,
    /// Bytes read and not yet consumed. Response heads and bodies are split off it and
    /// shared, not copied.
    buf: BytesMut,
    /// The request being written.
    out: Vec<u8>,
}

impl UpstreamConn {
    /// An idle connection can carry a request unless the upstream has closed it or sent
    /// something unasked. The reactor's readiness says so without a syscall in the usual
    /// case (nothing arrived since the last response).
    fn is_reusable(&self) -> bool {
        match self.io.poll_read_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(self.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(HEAD_READ);
        self.io.read_buf(&mut self.buf).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.buf.reserve(BODY_READ);
        std::pin::pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }
}

/// An idle connection and when it became idle.
type Idle = (UpstreamConn, Instant);

/// This worker's connections to one address: the idle ones, and how many are open (idle, in
/// use, or being opened) and being opened, for the circuit breakers.
#[derive(Default)]
struct AddrConns {
    idle: VecDeque<Idle>,
    open: Arc<AtomicU32>,
    connecting: Arc<AtomicU32>,
}

impl AddrConns {
    /// A slot among the open connections and one among the connects in progress, unless
    /// either count is at its cap.
    fn reserve(&self, caps: ConnCaps) -> Option<(OpenSlot, OpenSlot)> {
        if self.open.load(Ordering::Relaxed) >= caps.max_connections || self.connecting.load(Ordering::Relaxed) >= caps.max_connecting {
            return None;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        self.connecting.fetch_add(1, Ordering::Relaxed);
        Some((OpenSlot(self.open.clone()), OpenSlot(self.connecting.clone())))
    }
}

/// One unit of an address's count, given back when dropped (a connection closed, a connect
/// ended). Only this worker's requests touch it, so no other core writes the count.
struct OpenSlot(Arc<AtomicU32>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a request gets from the pool: an idle connection, the slots to open a new one, or
/// nothing, past the caps.
enum Checkout {
    Idle(UpstreamConn),
    Connect(OpenSlot, OpenSlot),
    Overflow,
}

/// The caps one worker applies to its connections to one endpoint: its share of the
/// destination's circuit breakers.
#[derive(Clone, Copy, Debug)]
pub struct ConnCaps {
    pub max_connections: u32,
    pub max_connecting: u32,
}

impl ConnCaps {
    pub const UNLIMITED: ConnCaps = ConnCaps { max_connections: u32::MAX, max_connecting: u32::MAX };
}

/// A worker's HTTP/1.1 connections.
pub struct H1Pool {
    idle: Mutex<FastMap<SocketAddr, AddrConns>>,
    connect_timeout: Duration,
}

impl H1Pool {
    pub fn new(connect_timeout: Duration) -> Arc<H1Pool> {
        Arc::new(H1Pool { idle: Mutex::new(FastMap::default()), connect_timeout })
    }

    /// Sends a request to `addr` on an idle connection, or a new one, and returns once the
    /// response head is in. `now` is the caller's recent reading of the clock: idle ages are
    /// measured against it, which spares a clock read per request.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        head: RequestHead<'_>,
        body: RequestBody,
        now: Instant,
        caps: ConnCaps,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        let mut conn = match self.checkout(addr, now, caps) {
            Checkout::Idle(conn) => conn,
            Checkout::Connect(open, connecting) => Box::pin(self.connect(addr, open, connecting)).await?,
            Checkout::Overflow => return Err(PoolError::Overflow),
        };
        match exchange(&mut conn, head, body).await {
            Ok(head) => Ok(self.response(head, conn, addr, now)),
            Err(e) => Err(PoolError::Request(e)),
        }
    }

    /// Sends a request that asks for an upgrade (its head carries `Connection: upgrade` and
    /// `Upgrade`, and it has no body) on a new connection, and returns once the response head is
    /// in. A 101 hands the connection over, never to come back to the pool; any other answer is
    /// an ordinary response, after which the connection may be kept as usual. Always a new
    /// connection: an idle one the upstream has just closed would fail the request after it was
    /// sent, and a request that switches protocols is not resent.
    pub async fn upgrade(
        self: &Arc<Self>,
        addr: SocketAddr,
        head: RequestHead<'_>,
        now: Instant,
        caps: ConnCaps,
    ) -> Result<Upgrade, PoolError> {
        let (open, connecting) = match self.reserve(addr, caps) {
            Some(slots) => slots,
            None => return Err(PoolError::Overflow),
        };
        let mut conn = Box::pin(self.connect(addr, open, connecting)).await?;
        conn.out.clear();
        codec::encode_request_head(&mut conn.out, head.method, head.path_and_query, head.headers, RequestFraming::None);
        let sent: Result<ResponseHead, UpstreamError> = async {
            conn.io.write_all(&conn.out).await?;
            loop {
                if !conn.buf.is_empty() {
                    if let Some(head) = codec::parse_upgrade_response_head(&mut conn.buf, head.method)? {
                        return Ok(head);
                    }
                }
                if conn.fill().await? == 0 {
                    return Err(UpstreamError::Closed);
                }
            }
        }
        .await;
        let response = sent.map_err(PoolError::Request)?;
        if response.status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Upgrade::Refused(self.response(response, conn, addr, now)));
        }
        let mut resp = Response::new(());
        *resp.status_mut() = response.status;
        *resp.headers_mut() = response.headers;
        let UpstreamConn { io, _open, buf, .. } = conn;
        Ok(Upgrade::Switched(resp, Tunnel { io, early: buf.freeze(), _open }))
    }

    /// The two slots a new connection to `addr` takes, unless the caps are reached.
    fn reserve(&self, addr: SocketAddr, caps: ConnCaps) -> Option<(OpenSlot, OpenSlot)> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).entry(addr).or_default().reserve(caps)
    }

    /// An idle connection to `addr`, or else the two slots a new one takes (one among the open
    /// connections, one among the connects in progress), or `Overflow` past the caps.
    fn checkout(&self, addr: SocketAddr, now: Instant, caps: ConnCaps) -> Checkout {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(addr).or_default();
        while let Some((conn, since)) = conns.idle.pop_back() {
            if now.duration_since(since) < IDLE_TIMEOUT && conn.is_reusable() {
                return Checkout::Idle(conn);
            }
        }
        match conns.reserve(caps) {
            Some((open, connecting)) => Checkout::Connect(open, connecting),
            None => Checkout::Overflow,
        }
    }

    /// Returns a connection whose response has been read to its end. An earlier `now` only
    /// makes the connection look older, so it is closed sooner, never reused too late.
    fn checkin(&self, addr: SocketAddr, conn: UpstreamConn, now: Instant) {
        if !conn.buf.is_empty() {
            // Bytes beyond the response: the upstream is not speaking HTTP/1.1 as agreed.
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let stack = &mut idle.entry(addr).or_default().idle;
        // Connections no one has needed for a while sit at the front: close the expired ones
        // here, since nothing else visits them.
        while stack.front().is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT) {
            stack.pop_front();
        }
        if stack.len() < MAX_IDLE_PER_ADDR {
            stack.push_back((conn, now));
        }
    }

    async fn connect(&self, addr: SocketAddr, open: OpenSlot, _connecting: OpenSlot) -> Result<UpstreamConn, PoolError> {
        let io = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(PoolError::Connect(e)),
            Err(_) => {
                return Err(PoolError::Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {addr} timed out"))))
            }
        };
        let _ = io.set_nodelay(true);
        Ok(UpstreamConn { io, _open: open, buf: BytesMut::new(), out: Vec::new() })
    }

    fn response(self: &Arc<Self>, head: ResponseHead, mut conn: UpstreamConn, addr: SocketAddr, now: Instant) -> Response<UpstreamBody> {
        let ResponseHead { status, version, headers, framing, keep_alive } = head;
        let body = match framing {
            ResponseFraming::Empty => {
                if keep_alive {
                    self.checkin(addr, conn, now);
                }
                UpstreamBody::Whole(None)
            }
            ResponseFraming::Length(n) if conn.buf.len() as u64 >= n => {
                let data = conn.buf.split_to(n as usize).freeze();
                if keep_alive {
                    self.checkin(addr, conn, now);
                }
                UpstreamBody::Whole((n > 0).then_some(data))
            }
            framing => {
                let state = match framing {
                    ResponseFraming::Length(n) => BodyState::Length(n),
                    ResponseFraming::Chunked => BodyState::Chunked(ChunkState::Size),
                    _ => BodyState::UntilClose,
                };
                UpstreamBody::Streaming(Box::new(Streaming { conn: Some(conn), state, keep_alive, pool: self.clone(), addr }))
            }
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        resp
    }
}

/// Writes the request on `conn` and reads until the response head is in.
async fn exchange(conn: &mut UpstreamConn, head: RequestHead<'_>, body: RequestBody) -> Result<ResponseHead, UpstreamError> {
    conn.out.clear();
    match body {
        RequestBody::Buffered(data) => {
            let framing = if data.is_empty() { empty_body_framing(head.headers) } else { RequestFraming::Length(data.len() as u64) };
            codec::encode_request_head(&mut conn.out, head.method, head.path_and_query, head.headers, framing);
            conn.out.extend_from_slice(&data);
        }
        RequestBody::Streaming(body) => write_streaming(conn, &head, body).await?,
    }
    conn.io.write_all(&conn.out).await?;
    loop {
        if !conn.buf.is_empty() {
            if let Some(head) = codec::parse_response_head(&mut conn.buf, head.method)? {
                return Ok(head);
            }
        }
        if conn.fill().await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// A client that said `Content-Length: 0` hears it said again; otherwise no body needs no header.
fn empty_body_framing(headers: &HeaderMap) -> RequestFraming {
    if headers.contains_key(http::header::CONTENT_LENGTH) {
        RequestFraming::Length(0)
    } else {
        RequestFraming::None
    }
}

/// Writes the head and a streaming body, leaving its last piece in `conn.out`.
async fn write_streaming(conn: &mut UpstreamConn, head: &RequestHead<'_>, mut body: Body) -> Result<(), UpstreamError> {
    let framing = if body.is_end_stream() {
        empty_body_framing(head.headers)
    } else {
        match body.size_hint().exact() {
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::Chunked,
        }
    };
    codec::encode_request_head(&mut conn.out, head.method, head.path_and_query, head.headers, framing);
    if framing == RequestFraming::None {
        return Ok(());
    }
    let mut sent = 0u64;
    while let Some(frame) = body.frame().await {
        // Trailers have no place in an HTTP/1.1 request veer writes: only data goes on.
        let Ok(data) = frame.map_err(|e| UpstreamError::RequestBody(e.to_string()))?.into_data() else { continue };
        sent += data.len() as u64;
        match framing {
            RequestFraming::Length(n) if sent > n => return Err(UpstreamError::RequestBody("longer than its Content-Length".into())),
            RequestFraming::Chunked => codec::encode_chunk(&mut conn.out, &data),
            _ => conn.out.extend_from_slice(&data),
        }
        if conn.out.len() >= WRITE_BATCH {
            conn.io.write_all(&conn.out).await?;
            conn.out.clear();
        }
    }
    match framing {
        RequestFraming::Length(n) if sent != n => Err(UpstreamError::RequestBody("shorter than its Content-Length".into())),
        RequestFraming::Chunked => {
            conn.out.extend_from_slice(codec::LAST_CHUNK);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// How an upstream answered a request that asked for an upgrade.
pub enum Upgrade {
    /// 101: the response head (its `Upgrade` field kept) and the connection, now the new protocol's.
    Switched(Response<()>, Tunnel),
    /// Any other answer, passed on as a response.
    Refused(Response<UpstreamBody>),
}

/// An upstream connection that switched protocols: it belongs to its client connection until
/// either closes, and counts among its address's open connections (the circuit breaker's
/// `max_connections`) until then.
pub struct Tunnel {
    pub io: TcpStream,
    /// What the upstream sent after the 101's head, already the new protocol's.
    pub early: Bytes,
    _open: OpenSlot,
}

/// A response body from the pool: already in memory, or still streaming in from its
/// connection, which goes back to the pool once the body has been read to its end.
pub enum UpstreamBody {
    Whole(Option<Bytes>),
    /// Boxed: a response is moved several times on its way out, and most are whole.
    Streaming(Box<Streaming>),
}

/// A body still arriving on its connection.
pub struct Streaming {
    /// `None` once the body has ended or failed.
    conn: Option<UpstreamConn>,
    state: BodyState,
    keep_alive: bool,
    pool: Arc<H1Pool>,
    addr: SocketAddr,
}

enum BodyState {
    /// Bytes left to read.
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
    Done,
}

impl Streaming {
    fn ended(&self) -> bool {
        matches!(self.state, BodyState::Length(0) | BodyState::Done | BodyState::Chunked(ChunkState::Done))
    }

    /// The body has been read to its end: the connection goes back, if it may.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive {
                self.pool.checkin(self.addr, conn, clock::now());
            }
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            let step = match &mut self.state {
                BodyState::Length(0) | BodyState::Done => Ok(Decoded::End),
                BodyState::Length(_) | BodyState::UntilClose if conn.buf.is_empty() => Ok(Decoded::NeedMore),
                BodyState::Length(left) => {
                    let n = (*left).min(conn.buf.len() as u64);
                    *left -= n;
                    Ok(Decoded::Data(conn.buf.split_to(n as usize).freeze()))
                }
                BodyState::UntilClose => Ok(Decoded::Data(conn.buf.split().freeze())),
                BodyState::Chunked(chunk) => codec::decode_chunked(chunk, &mut conn.buf),
            };
            let read: Result<(), UpstreamError> = match step {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Err(e) => Err(e),
                Ok(Decoded::NeedMore) => match ready!(conn.poll_fill(cx)) {
                    Ok(0) if matches!(self.state, BodyState::UntilClose) => {
                        self.keep_alive = false;
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(0) => Err(UpstreamError::Closed),
                    Ok(_) => continue,
                    Err(e) => Err(UpstreamError::Io(e)),
                },
            };
            // A failed body leaves the connection mid-message: it is closed.
            self.conn = None;
            self.state = BodyState::Done;
            return Poll::Ready(read.err().map(Err));
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // Dropped once its last byte was taken: the connection is clean and goes back.
        // Dropped before that, it is closed with the body.
        if self.conn.is_some() && self.ended() {
            self.finish();
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::Streaming(s) => s.poll_data(cx).map(|r| r.map(|d| d.map(Frame::data).map_err(BodyError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Whole(data) => data.is_none(),
            UpstreamBody::Streaming(s) => s.ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Whole(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            UpstreamBody::Streaming(s) => match s.state {
                BodyState::Length(n) => SizeHint::with_exact(n),
                _ if s.ended() => SizeHint::with_exact(0),
                _ => SizeHint::default(),
            },
        }
    }
}
