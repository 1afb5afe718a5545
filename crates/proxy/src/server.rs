//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (h2c prior knowledge) on each,
//! cap concurrent requests, park idle HTTP/1.1 connections without buffers, and drain
//! gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::StatusCode;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Sleep;

use crate::forward::{handle, local_response, Guarded, ResponseBody, Shared, Upstreams};

/// Limits applied to downstream traffic.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list), bytes.
    pub max_header_bytes: usize,
    /// Requests in flight across all connections; more get 503 at once.
    pub max_concurrent_requests: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain: Duration,
    /// A client gets this long to send a request head, and an idle connection stays open this
    /// long without one: a slow-loris or an abandoned client cannot hold a connection forever.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_header_bytes: 64 * 1024, max_concurrent_requests: 10_000, drain: Duration::from_secs(10), idle_timeout: Duration::from_secs(30) }
    }
}

/// A keep-alive connection silent this long between requests is parked: hyper's state and its
/// two 8 KiB buffers are dropped and only the socket is watched, so idle clients cost a few
/// hundred bytes instead of ~20 KiB. Short enough that idle fleets shrink fast, long enough
/// that a busy connection (next request within microseconds) never pays for a new one.
const PARK_AFTER: Duration = Duration::from_millis(250);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every connection of a listener shares.
struct Listener {
    shared: Arc<Shared>,
    upstreams: Upstreams,
    /// Requests being handled on this listener, against `limit`.
    in_flight: Arc<AdmissionLimit>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    idle_timeout: Duration,
}

/// The worker threads serving one gateway address, and how many client connections each holds.
///
/// The kernel spreads connections over the workers' SO_REUSEPORT listeners by a hash, which
/// for a handful of long-lived connections (HTTP/2 clients, a few keep-alive pools) can leave
/// one worker with most of them while another idles. So a worker that accepts a connection
/// while another holds fewer hands it over: the counts never differ by more than one.
pub struct Workers {
    slots: Box<[WorkerSlot]>,
}

struct WorkerSlot {
    open: AtomicUsize,
    gauge: Gauge,
    handoff: mpsc::UnboundedSender<(std::net::TcpStream, Open)>,
}

/// One worker's place among [`Workers`]: its index and the connections handed to it.
pub struct WorkerSeat {
    index: usize,
    workers: Arc<Workers>,
    handed: mpsc::UnboundedReceiver<(std::net::TcpStream, Open)>,
}

impl Workers {
    /// Seats for `n` workers, in worker order.
    pub fn seats(n: usize, metrics: &crate::metrics::Metrics) -> Vec<WorkerSeat> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
        let slots = senders.into_iter().enumerate().map(|(i, handoff)| WorkerSlot { open: AtomicUsize::new(0), gauge: metrics.worker_connections(i), handoff }).collect();
        let workers = Arc::new(Workers { slots });
        receivers.into_iter().enumerate().map(|(index, handed)| WorkerSeat { index, workers: workers.clone(), handed }).collect()
    }
}

impl WorkerSeat {
    /// Keeps a connection this worker accepted, or hands it to the worker holding the fewest.
    fn place(&self, stream: TcpStream) -> Option<(TcpStream, Open)> {
        let slots = &self.workers.slots;
        let count = |i: usize| slots[i].open.load(Ordering::Relaxed);
        let least = (0..slots.len()).min_by_key(|&i| count(i)).unwrap_or(self.index);
        if count(least) < count(self.index) {
            // A connection that cannot leave this runtime (rare: deregistering failed) is lost
            // with its error, as a failed accept would be.
            let std = stream.into_std().ok()?;
            let open = Open::new(&self.workers, least);
            match slots[least].handoff.send((std, open)) {
                Ok(()) => return None,
                // That worker has stopped (shutdown): serve it here.
                Err(back) => return TcpStream::from_std(back.0 .0).ok().map(|s| (s, Open::new(&self.workers, self.index))),
            }
        }
        Some((stream, Open::new(&self.workers, self.index)))
    }
}

/// One client connection counted on a worker, until dropped.
pub struct Open {
    workers: Arc<Workers>,
    index: usize,
}

impl Open {
    fn new(workers: &Arc<Workers>, index: usize) -> Open {
        let slot = &workers.slots[index];
        slot.open.fetch_add(1, Ordering::Relaxed);
        slot.gauge.inc();
        Open { workers: workers.clone(), index }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let slot = &self.workers.slots[self.index];
        slot.open.fetch_sub(1, Ordering::Relaxed);
        slot.gauge.dec();
    }
}

/// Serves `listener` (and connections other workers hand over) until `shutdown` turns true,
/// then drains.
pub async fn serve(listener: TcpListener, mut seat: WorkerSeat, shared: Arc<Shared>, upstreams: Upstreams, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // Small responses: one flat buffer and one write() cost less than a writev of head and body.
    // Half-close: a client that shuts its sending side after the request still gets the answer
    // (RFC 9112 §9.6 lets it). It also spares hyper's probe for an early end of input while a
    // request is in flight, which reallocated the 8 KiB read buffer on every request.
    // No hyper header-read timeout: it would arm a timer for every request. `ParkableIo`
    // enforces the same limit with the one timer a connection already has.
    http1.keep_alive(true).half_close(true).writev(false).max_buf_size(limits.max_header_bytes.max(8192)).header_read_timeout(None);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new()).max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX)).max_concurrent_streams(1024);
    let ctx = Arc::new(Listener { shared, upstreams, in_flight: Arc::new(AdmissionLimit { active: AtomicUsize::new(0), limit: limits.max_concurrent_requests }), http1, http2, idle_timeout: limits.idle_timeout });
    // Every connection task holds a sender; when all are gone, the drain is over.
    let (live, mut drained) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                if let Some((stream, open)) = seat.place(stream) {
                    tokio::spawn(connection(stream, ctx.clone(), shutdown.clone(), (live.clone(), open)));
                }
            }
            Some((std, open)) = seat.handed.recv() => {
                // Registered with this worker's runtime from here on.
                if let Ok(stream) = TcpStream::from_std(std) {
                    tokio::spawn(connection(stream, ctx.clone(), shutdown.clone(), (live.clone(), open)));
                }
            }
            // A node dropped without stop() drops the sender: that ends the worker too.
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break; }
            }
        }
    }
    drop(listener);
    drop(live);
    let _ = tokio::time::timeout(limits.drain, drained.recv()).await;
}

/// One downstream connection, from accept to close.
async fn connection(stream: TcpStream, ctx: Arc<Listener>, mut stop: watch::Receiver<bool>, _held: (mpsc::Sender<()>, Open)) {
    let state = Arc::new(ConnState::default());
    let service = {
        let (ctx, state) = (ctx.clone(), state.clone());
        service_fn(move |req: hyper::Request<Incoming>| {
            let (ctx, state) = (ctx.clone(), state.clone());
            let permit = AdmissionLimit::try_admit(&ctx.in_flight);
            state.begin(&req);
            // Boxed here, once: hyper moves a request's future several times before it first
            // polls it (more for HTTP/2 streams), and a pointer moves cheaper than its ~1 KiB.
            let response: ServiceFuture = Box::pin(async move {
                let resp = match permit {
                    Some(_permit) => handle(&ctx.shared, &ctx.upstreams, req).await,
                    None => local_response(StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight").map(ResponseBody::Other),
                };
                Ok::<_, Infallible>(resp.map(|body| Guarded { body, guard: InFlight(state) }))
            });
            response
        })
    };
    match is_h2(&stream, ctx.idle_timeout, &mut stop).await {
        None => {}
        Some(true) => {
            // Boxed: the HTTP/2 state is large and would otherwise size every connection's task.
            let mut conn = Box::pin(ctx.http2.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopping(&stop) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        Some(false) => {
            let mut parked = (stream, Bytes::new());
            loop {
                // Nothing of hyper's survives this call: a parked task holds the socket only.
                let Some((stream, leftover)) = serve_http1(parked, &ctx, &state, &service, &mut stop).await else { return };
                ctx.shared.metrics.connection_parked();
                tokio::select! {
                    r = tokio::time::timeout(ctx.idle_timeout, stream.readable()) => if !matches!(r, Ok(Ok(()))) { return },
                    _ = stopped(&mut stop) => return,
                }
                ctx.shared.metrics.connection_unparked();
                parked = (stream, leftover);
            }
        }
    }
}

/// Serves HTTP/1.1 requests on a connection until it closes (`None`) or goes idle long enough
/// to be parked: then returns the socket and any bytes hyper read but did not use.
async fn serve_http1<S>(parked: (TcpStream, Bytes), ctx: &Listener, state: &Arc<ConnState>, service: &S, stop: &mut watch::Receiver<bool>) -> Option<(TcpStream, Bytes)>
where
    S: hyper::service::HttpService<Incoming, ResBody = Tracked> + Clone + Unpin + Send + 'static,
    S::Future: Send + 'static,
{
    let io = ParkableIo::new(parked.0, parked.1, state.clone(), ctx.idle_timeout);
    // Boxed so that the future of a parked connection's task holds no hyper state.
    let mut conn = Box::pin(ctx.http1.serve_connection(TokioIo::new(io), service.clone()).without_shutdown());
    let parts = tokio::select! {
        r = conn.as_mut() => r.ok()?,
        _ = stopping(stop) => {
            // Drain: an idle connection closes now; one with a request in flight closes once
            // its response is sent (the I/O then reads end-of-stream).
            state.closing.store(true, Ordering::Relaxed);
            if state.in_flight.load(Ordering::Relaxed) > 0 {
                let _ = conn.await;
            }
            return None;
        }
    };
    let io = parts.io.into_inner();
    if !io.parked {
        return None;
    }
    // `read_buf` shares hyper's 8 KiB buffer even when empty: keep a copy of what is left so
    // the buffer is freed.
    let leftover = if parts.read_buf.is_empty() { Bytes::new() } else { Bytes::copy_from_slice(&parts.read_buf) };
    Some((io.stream, leftover))
}

/// Resolves once the node is stopping. A connection polls it at every wake-up, so after
/// registering with the watch once it only compares the watch's version (the watch's own
/// future takes a lock on each poll).
async fn stopping(stop: &watch::Receiver<bool>) {
    let mut probe = stop.clone();
    let mut waiter = stop.clone();
    let mut wait = std::pin::pin!(async move { stopped(&mut waiter).await });
    let mut registered = false;
    std::future::poll_fn(|cx| {
        // A closed watch reads as changed: `stopped` then decides.
        if registered && !probe.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        registered = true;
        probe.mark_unchanged();
        wait.as_mut().poll(cx)
    })
    .await
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Whether the client opens with the HTTP/2 preface (h2c prior knowledge), peeking without
/// consuming; `None` if it leaves first.
async fn is_h2(stream: &TcpStream, idle_timeout: Duration, stop: &mut watch::Receiver<bool>) -> Option<bool> {
    let mut buf = [0u8; 24];
    let wait = async {
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // A prefix of the preface so far: wait for more bytes.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        r = tokio::time::timeout(idle_timeout, wait) => r.ok().flatten(),
        _ = stopped(stop) => None,
    }
}

/// What the service and the I/O wrapper of one connection share to tell a truly idle
/// connection from one between the bytes of a request or a response.
#[derive(Debug, Default)]
struct ConnState {
    /// Requests whose response body has not been dropped yet.
    in_flight: AtomicU32,
    /// The latest request carried a body: the connection is not parked until a request without
    /// one comes, since the bytes read last do not show where a message with a body ended.
    had_body: AtomicBool,
    /// The node is draining: close at the next idle moment.
    closing: AtomicBool,
}

impl ConnState {
    fn begin(&self, req: &hyper::Request<Incoming>) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        // Requests arrive in order, so a request without a body means any earlier body was read.
        self.had_body.store(!hyper::body::Body::is_end_stream(req.body()), Ordering::Relaxed);
    }
}

/// A cap on the requests a listener handles at once: a counter, not a semaphore, since nothing
/// waits for a slot (a request over the cap gets 503 at once) and a semaphore's release takes a lock.
struct AdmissionLimit {
    active: AtomicUsize,
    limit: usize,
}

impl AdmissionLimit {
    fn try_admit(this: &Arc<AdmissionLimit>) -> Option<Admitted> {
        if this.active.fetch_add(1, Ordering::Relaxed) < this.limit {
            Some(Admitted(this.clone()))
        } else {
            this.active.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

/// One admitted request; its slot is given back when dropped.
struct Admitted(Arc<AdmissionLimit>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that tells its connection when it is done.
type Tracked = Guarded<ResponseBody, InFlight>;

/// A downstream request's whole handling, as hyper holds it.
type ServiceFuture = Pin<Box<dyn Future<Output = Result<hyper::Response<Tracked>, Infallible>> + Send>>;

/// Counts one response in flight on a connection, until dropped with its body.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket of an HTTP/1.1 connection as hyper sees it. When the connection has been idle
/// between requests for [`PARK_AFTER`], a read answers end-of-stream: hyper closes its side
/// cleanly (without touching the socket, through `without_shutdown`) and the connection is
/// parked until the client writes again. A connection that waits for the rest of a request
/// head (or sits idle after a request with a body) longer than the idle timeout gets a
/// timed-out read, and hyper closes it.
struct ParkableIo {
    stream: TcpStream,
    /// Bytes hyper had read but not used when the connection was last parked.
    leftover: Bytes,
    state: Arc<ConnState>,
    /// The last four bytes read: a request head without a body ends with an empty line.
    tail: [u8; 4],
    reads: u64,
    /// The connection's one timer, and what it is set for.
    timer: Option<ConnTimer>,
    idle_timeout: Duration,
    parked: bool,
}

/// [`ParkableIo`]'s timer. Polled on every read that finds nothing, so it is polled only when
/// it could have changed: once after each reset (to register the task) and once it is due.
struct ConnTimer {
    sleep: Pin<Box<Sleep>>,
    armed: Armed,
    /// Polled since the last reset: the task's waker is registered.
    registered: bool,
}

impl ConnTimer {
    fn poll_due(&mut self, cx: &mut Context<'_>) -> bool {
        // The connection's task is always the same, so a registered waker is still the right one.
        if self.registered && !self.sleep.is_elapsed() {
            return false;
        }
        let due = self.sleep.as_mut().poll(cx).is_ready();
        self.registered = !due;
        due
    }

    fn reset(&mut self, armed: Armed, after: Duration) {
        self.armed = armed;
        self.sleep.as_mut().reset(tokio::time::Instant::now() + after);
        self.registered = false;
    }
}

/// What [`ParkableIo`]'s timer is set for.
#[derive(Clone, Copy, PartialEq)]
enum Armed {
    /// Parking, counted from when the read count was this.
    Park(u64),
    /// The end of the wait for a request head.
    HeadDeadline,
}

impl ParkableIo {
    fn new(stream: TcpStream, leftover: Bytes, state: Arc<ConnState>, idle_timeout: Duration) -> Self {
        ParkableIo { stream, leftover, state, tail: *b"\r\n\r\n", reads: 0, timer: None, idle_timeout, parked: false }
    }

    fn idle(&self) -> bool {
        self.leftover.is_empty() && self.tail == *b"\r\n\r\n" && self.state.in_flight.load(Ordering::Relaxed) == 0 && !self.state.had_body.load(Ordering::Relaxed)
    }

    /// The connection's timer, set for `armed` (`after` from now) unless it already is set for
    /// that kind of wait.
    fn timer_for(&mut self, armed: Armed, after: Duration) -> &mut ConnTimer {
        let timer = self.timer.get_or_insert_with(|| ConnTimer { sleep: Box::pin(tokio::time::sleep(after)), armed, registered: false });
        if std::mem::discriminant(&timer.armed) != std::mem::discriminant(&armed) {
            timer.reset(armed, after);
        }
        timer
    }

    /// Whether the connection has been idle for [`PARK_AFTER`]; arms or re-arms the timer
    /// that will wake hyper to ask again.
    fn poll_park(&mut self, cx: &mut Context<'_>) -> bool {
        let reads = self.reads;
        let timer = self.timer_for(Armed::Park(reads), PARK_AFTER);
        if !timer.poll_due(cx) {
            return false;
        }
        if timer.armed == Armed::Park(reads) {
            return true;
        }
        // There was traffic since the timer was armed: count the idle time from now.
        timer.reset(Armed::Park(reads), PARK_AFTER);
        let _ = timer.poll_due(cx);
        false
    }

    /// Keeps the park timer running while a response is in flight; it only wakes the task.
    fn poll_park_timer(&mut self, cx: &mut Context<'_>) {
        let reads = self.reads;
        let timer = self.timer_for(Armed::Park(reads), PARK_AFTER);
        if timer.poll_due(cx) {
            timer.reset(Armed::Park(reads), PARK_AFTER);
            let _ = timer.poll_due(cx);
        }
    }

    /// Whether the wait for a request head has outlasted the idle timeout; arms the deadline
    /// when the wait begins. Requests whose head arrives in one read never get here.
    fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.idle_timeout;
        self.timer_for(Armed::HeadDeadline, timeout).poll_due(cx)
    }
}

impl AsyncRead for ParkableIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.leftover.is_empty() {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = &buf.filled()[before..];
                if !filled.is_empty() {
                    this.reads += 1;
                    let k = filled.len().min(4);
                    this.tail.copy_within(k.., 0);
                    this.tail[4 - k..].copy_from_slice(&filled[filled.len() - k..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.state.closing.load(Ordering::Relaxed) && this.state.in_flight.load(Ordering::Relaxed) == 0 => Poll::Ready(Ok(())),
            Poll::Pending if this.idle() => {
                if this.poll_park(cx) {
                    this.parked = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            // A response in flight: hyper may finish writing it without reading again, so the
            // park timer keeps running to bring hyper back to a read that can see the idle time.
            Poll::Pending if this.state.in_flight.load(Ordering::Relaxed) > 0 => {
                this.poll_park_timer(cx);
                Poll::Pending
            }
            // No response in flight, yet not idle: part of a request head has come, or the
            // last request had a body and nothing has come since.
            Poll::Pending if this.poll_head_deadline(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no complete request head within the idle timeout")))
            }
            other => other,
        }
    }
}

impl AsyncWrite for ParkableIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
