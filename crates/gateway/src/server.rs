//! Listeners: accept connections up to a node-wide cap, terminate TLS on HTTPS listeners'
//! sockets, serve HTTP/1.1 and HTTP/2 (ALPN over TLS, h2c prior knowledge in plain) on each,
//! cap concurrent requests, park idle HTTP/1.1 connections without buffers, close idle and slow
//! clients, and drain gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{Instant, Sleep};

use crate::body::Guarded;
use crate::clock;
use crate::forward::{handle, overloaded};
use crate::responses::{local_response, ResponseBody};
use crate::shared::{Shared, Upstreams};

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
    /// An HTTP/2 connection with no stream open this long is sent GOAWAY and closed.
    pub idle_timeout: Duration,
    /// Client connections the node holds at once, across its workers. At the cap the workers
    /// stop accepting (new clients wait in the kernel's queue) until one closes. Default:
    /// [`max_connections_for`] the file limit.
    pub max_connections: usize,
    /// Bytes of request bodies the node holds in memory at once so that they can be resent on
    /// a retry. A body that would go past it streams instead, with a single try.
    pub retry_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_concurrent_requests: 10_000,
            drain: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: max_connections_for(nofile_limit().0),
            // 1,024 bodies of the largest size buffered (64 KiB), as many as Envoy's default
            // circuit breakers let be in flight to one cluster.
            retry_buffer_bytes: 64 << 20,
        }
    }
}

/// Files kept for everything but client connections when the cap is derived from the file
/// limit: the listeners, the runtimes' epoll and event descriptors, the manifest watcher, DNS
/// sockets, peer links, admin connections, and upstream connections not matched one-for-one
/// by a client (health checks, probes, idle keep-alive pools).
const FILE_RESERVE: u64 = 256;
/// Linux's default `fs.nr_open`, the most files a process can have, for an unlimited limit.
const NR_OPEN: u64 = 1 << 20;

/// The client connections a node may hold by default under a file limit of `soft` (`None`:
/// unlimited): half of it, since each client with a request in flight holds an upstream
/// connection too, and at least `FILE_RESERVE` (256) files for the rest. Under a very low limit a
/// quarter still goes to clients, so the node serves something.
pub fn max_connections_for(soft: Option<u64>) -> usize {
    let soft = soft.unwrap_or(NR_OPEN).min(NR_OPEN);
    let cap = (soft / 2).min(soft.saturating_sub(FILE_RESERVE)).max(soft / 4).max(1);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// The process's file limit, (soft, hard); `None` means unlimited (or unknown off Linux).
pub fn nofile_limit() -> (Option<u64>, Option<u64>) {
    #[cfg(target_os = "linux")]
    {
        let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        (l.current, l.maximum)
    }
    #[cfg(not(target_os = "linux"))]
    {
        (None, None)
    }
}

/// Raises the soft file limit to the hard one, as Go's runtime does at start: the soft limit
/// (often 1024) exists for old `select()` users, and a gateway with a few hundred clients
/// would otherwise run out of files. Returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{setrlimit, Resource, Rlimit};
        let (soft, hard) = nofile_limit();
        if soft != hard && setrlimit(Resource::Nofile, Rlimit { current: hard, maximum: hard }).is_ok() {
            return hard;
        }
        soft
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// How long the workers stop accepting after an accept failed for want of files, buffers or
/// memory (nginx waits 500 ms too): retrying at once would spin, since the connection that
/// could not be accepted is still queued and the listener still reads as ready. Also the
/// longest a worker at the cap waits before looking again without being told a slot is free.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(500);

/// At most one log line about failed accepts per this long, per node.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

/// What a failed `accept` says: its label for metrics and logs, and whether accepting must
/// pause (the process or the system is out of a resource: the queued connection stays queued
/// and the next accept would fail the same way) or can go on at once (the error belonged to
/// one connection, which the kernel has already dropped from the queue).
pub fn accept_error(errno: Option<i32>) -> (&'static str, bool) {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::Errno;
        let known = [
            (Errno::MFILE, "emfile", true),
            (Errno::NFILE, "enfile", true),
            (Errno::NOBUFS, "enobufs", true),
            (Errno::NOMEM, "enomem", true),
            (Errno::CONNABORTED, "econnaborted", false),
            (Errno::PERM, "eperm", false),
            (Errno::PROTO, "eproto", false),
            (Errno::INTR, "eintr", false),
        ];
        if let Some(&(_, kind, pause)) = known.iter().find(|(e, _, _)| Some(e.raw_os_error()) == errno) {
            return (kind, pause);
        }
    }
    let _ = errno;
    // Unknown: pausing costs a client half a second; not pausing could spin.
    ("other", true)
}

/// Whether a log line is due, `every` after the last (`None`: never logged).
pub fn log_due(last: Option<Duration>, now: Duration, every: Duration) -> bool {
    last.is_none_or(|last| now.saturating_sub(last) >= every)
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
    /// How long shutdown waits for connections: a passthrough connection, which veer cannot
    /// ask to close, gets this long to finish once the node stops.
    drain: Duration,
}

/// The worker threads serving one gateway address, and how many client connections each holds.
///
/// The kernel spreads connections over the workers' SO_REUSEPORT listeners by a hash, which
/// for a handful of long-lived connections (HTTP/2 clients, a few keep-alive pools) can leave
/// one worker with most of them while another idles. So a worker that accepts a connection
/// while another holds fewer hands it over: the counts never differ by more than one.
///
/// They also share the node's cap on client connections. A worker takes a slot before each
/// accept and gives it back if nothing was accepted, so the cap holds exactly however many
/// workers accept at once; this shared count is written once per connection, not per request.
pub struct Workers {
    slots: Box<[WorkerSlot]>,
    /// Client connections open on the node, plus slots taken by accepts under way.
    open: AtomicUsize,
    cap: usize,
    /// Told when a connection closes while the node is at its cap.
    freed: Notify,
    /// Bumped when a worker finds the node at its cap: connections idle for [`DRAIN_IDLE_AFTER`]
    /// close to make room (see [`Workers::drain_idle`]).
    drain: watch::Sender<()>,
    /// When the last line about failed accepts was logged, in ms since `born` (`u64::MAX`: never).
    logged_ms: AtomicU64,
    born: Instant,
    metrics: Arc<crate::metrics::Metrics>,
}

/// What one accept got.
enum Accepted {
    /// A connection, holding one of the node's slots, and the socket it came in on.
    Stream(TcpStream, usize),
    /// The node holds `max_connections`: nothing was accepted.
    AtCap,
    Failed(io::Error),
}

struct WorkerSlot {
    open: AtomicUsize,
    gauge: Gauge,
    handoff: mpsc::UnboundedSender<Handed>,
}

/// One worker's place among [`Workers`]: its index and the connections handed to it.
pub struct WorkerSeat {
    index: usize,
    workers: Arc<Workers>,
    handed: mpsc::UnboundedReceiver<Handed>,
}

/// A connection handed to another worker: the socket it came in on goes with it, since that
/// decides what it may reach.
type Handed = (std::net::TcpStream, Open, usize);

impl Workers {
    /// Seats for `n` workers, in worker order, sharing a cap of `max_connections` clients.
    pub fn seats(n: usize, max_connections: usize, metrics: &Arc<crate::metrics::Metrics>) -> Vec<WorkerSeat> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
        let slots = senders
            .into_iter()
            .enumerate()
            .map(|(i, handoff)| WorkerSlot { open: AtomicUsize::new(0), gauge: metrics.worker_connections(i), handoff })
            .collect();
        metrics.set_max_connections(max_connections);
        let workers = Arc::new(Workers {
            slots,
            open: AtomicUsize::new(0),
            cap: max_connections.max(1),
            freed: Notify::new(),
            drain: watch::Sender::new(()),
            logged_ms: AtomicU64::new(u64::MAX),
            born: clock::now(),
            metrics: metrics.clone(),
        });
        receivers.into_iter().enumerate().map(|(index, handed)| WorkerSeat { index, workers: workers.clone(), handed }).collect()
    }

    /// Accepts a connection on one of `listeners` (socket i is `listeners[i]`) if the node is
    /// below its cap, looking at socket `first` first so that a busy socket cannot starve the
    /// others.
    fn poll_accept(&self, listeners: &[TcpListener], first: usize, cx: &mut Context<'_>) -> Poll<Accepted> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Poll::Ready(Accepted::AtCap);
        }
        let mut accepted = Poll::Pending;
        for i in (0..listeners.len()).map(|k| (first + k) % listeners.len()) {
            match listeners[i].poll_accept(cx) {
                // The slot stays taken: the connection's `Open` gives it back.
                Poll::Ready(Ok((stream, _))) => return Poll::Ready(Accepted::Stream(stream, i)),
                Poll::Ready(Err(e)) => {
                    accepted = Poll::Ready(Accepted::Failed(e));
                    break;
                }
                Poll::Pending => {}
            }
        }
        // Given back without telling waiters: it was never a connection, and waking a worker
        // that waits at the cap for it could bounce two workers off each other.
        self.open.fetch_sub(1, Ordering::Relaxed);
        accepted
    }

    /// At the cap, asks every connection idle for [`DRAIN_IDLE_AFTER`] to close, as nginx closes
    /// its idle keep-alive connections when it runs out (`ngx_drain_connections`): otherwise
    /// clients that open connections and say nothing (10,000 idle HTTP/2 connections) would
    /// hold every slot and keep out the clients with requests to send. A connection that is
    /// sending or awaiting a request keeps its slot.
    fn drain_idle(&self) {
        self.drain.send_replace(());
    }

    /// Waits until the node may be below its cap: told by a closing connection, or after
    /// [`ACCEPT_PAUSE`] in case a slot freed between a check and the wait.
    async fn slot_freed(&self) {
        let notified = self.freed.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.open.load(Ordering::Relaxed) < self.cap {
            return;
        }
        let _ = tokio::time::timeout(ACCEPT_PAUSE, notified).await;
    }

    /// Counts a failed accept and logs it, at most once per [`ACCEPT_LOG_EVERY`] for the node;
    /// returns whether accepting must pause.
    fn accept_failed(&self, e: &io::Error) -> bool {
        let (kind, pause) = accept_error(e.raw_os_error());
        self.metrics.accept_error("gateway", kind);
        let now = clock::since(self.born);
        let last = self.logged_ms.load(Ordering::Relaxed);
        let last_at = (last != u64::MAX).then(|| Duration::from_millis(last));
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX - 1);
        if log_due(last_at, now, ACCEPT_LOG_EVERY)
            && self.logged_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let open = self.open.load(Ordering::Relaxed);
            if pause {
                tracing::warn!(target: "veer::server", "accept failed ({kind}: {e}) with {open} client connections open; not accepting for {ACCEPT_PAUSE:?}");
            } else {
                tracing::info!(target: "veer::server", "accept failed ({kind}: {e}); going on");
            }
        }
        pause
    }
}

impl WorkerSeat {
    /// Keeps a connection this worker accepted (holding a node slot), or hands it to the
    /// worker holding the fewest.
    fn place(&self, stream: TcpStream, socket: usize) -> Option<(TcpStream, Open)> {
        // Counted from here, so the node's slot comes back however this ends.
        let open = Open::new(&self.workers, self.index);
        let slots = &self.workers.slots;
        let count = |i: usize| slots[i].open.load(Ordering::Relaxed);
        let least = (0..slots.len()).min_by_key(|&i| count(i)).unwrap_or(self.index);
        if count(least) + 1 < count(self.index) {
            // A connection that cannot leave this runtime (rare: deregistering failed) is lost
            // with its error, as a failed accept would be.
            let std = stream.into_std().ok()?;
            match slots[least].handoff.send((std, open.rehome(least), socket)) {
                Ok(()) => return None,
                // That worker has stopped (shutdown): serve it here.
                Err(back) => {
                    let (std, open, _) = back.0;
                    return TcpStream::from_std(std).ok().map(|s| (s, open.rehome(self.index)));
                }
            }
        }
        Some((stream, open))
    }
}

/// One client connection counted on a worker and holding one of the node's slots, until dropped.
pub struct Open {
    workers: Arc<Workers>,
    index: usize,
}

impl Open {
    /// Counts a connection that already holds a node slot on worker `index`.
    fn new(workers: &Arc<Workers>, index: usize) -> Open {
        let slot = &workers.slots[index];
        slot.open.fetch_add(1, Ordering::Relaxed);
        slot.gauge.inc();
        Open { workers: workers.clone(), index }
    }

    /// The same connection, counted on worker `index` instead.
    fn rehome(mut self, index: usize) -> Open {
        let (from, to) = (&self.workers.slots[self.index], &self.workers.slots[index]);
        from.open.fetch_sub(1, Ordering::Relaxed);
        from.gauge.dec();
        to.open.fetch_add(1, Ordering::Relaxed);
        to.gauge.inc();
        self.index = index;
        self
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let slot = &self.workers.slots[self.index];
        slot.open.fetch_sub(1, Ordering::Relaxed);
        slot.gauge.dec();
        if self.workers.open.fetch_sub(1, Ordering::Relaxed) >= self.workers.cap {
            self.workers.freed.notify_waiters();
        }
    }
}

/// Serves `listeners` (socket i is `listeners[i]`; see [`crate::snapshot::GATEWAY`]) and
/// connections other workers hand over, until `shutdown` turns true, then drains. Every socket
/// gets the same caps, timeouts and limits.
pub async fn serve(
    listeners: Vec<TcpListener>,
    mut seat: WorkerSeat,
    shared: Arc<Shared>,
    upstreams: Upstreams,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // Small responses: one flat buffer and one write() cost less than a writev of head and body.
    // Half-close: a client that shuts its sending side after the request still gets the answer
    // (RFC 9112 §9.6 lets it). It also spares hyper's probe for an early end of input while a
    // request is in flight, which reallocated the 8 KiB read buffer on every request.
    // No hyper header-read timeout: it would arm a timer for every request. `ParkableIo`
    // enforces the same limit with the one timer a connection already has.
    http1.keep_alive(true).half_close(true).writev(false).max_buf_size(limits.max_header_bytes.max(8192)).header_read_timeout(None);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // What one HTTP/2 connection may make veer hold, whatever the client does (Envoy's advice
    // for edge proxies): 100 streams at once (a client needing more opens another connection;
    // each stream is a request in flight with its own task and upstream try); 64 KiB of
    // request body per stream and 1 MiB per connection received and not yet forwarded (flow
    // control windows; fixed, not hyper's adaptive window, which grows them with the client's
    // bandwidth); 64 KiB of response per stream queued for a client that reads slowly (the
    // upstream waits meanwhile); header blocks as large as an HTTP/1.1 head may be.
    // Rapid reset (CVE-2023-44487): streams the client opens and cancels before veer picks
    // them up wait in a queue; more than 20 of them ends the connection (GOAWAY
    // ENHANCE_YOUR_CALM). And a client whose streams veer has to reset for its protocol
    // errors is cut off after 1024 of them (RUSTSEC-2024-0003): each reset costs a frame
    // and state kept for a while. Both are today's defaults, set here so that an upgrade that
    // changes them does not change veer silently.
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_send_buf_size(64 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        // RFC 8441: WebSockets over HTTP/2 streams (`crate::upgrade`).
        .enable_connect_protocol();
    let ctx = Arc::new(Listener {
        shared,
        upstreams,
        in_flight: Arc::new(AdmissionLimit { active: AtomicUsize::new(0), limit: limits.max_concurrent_requests }),
        http1,
        http2,
        idle_timeout: limits.idle_timeout,
        drain: limits.drain,
    });
    // Every connection task holds a sender; when all are gone, the drain is over.
    let (live, mut drained) = mpsc::channel::<()>(1);
    let workers = seat.workers.clone();
    // Why this worker is not accepting, if it is not.
    let mut paused: Option<Paused> = None;
    // The socket looked at first on the next accept: the one after the last that gave one.
    let mut first = 0;
    loop {
        tokio::select! {
            accepted = std::future::poll_fn(|cx| workers.poll_accept(&listeners, first, cx)), if paused.is_none() => match accepted {
                Accepted::Stream(stream, socket) => {
                    first = socket + 1;
                    let _ = stream.set_nodelay(true);
                    if let Some((stream, open)) = seat.place(stream, socket) {
                        tokio::spawn(connection(stream, socket, ctx.clone(), shutdown.clone(), (live.clone(), open)));
                    }
                }
                // New clients wait in the kernel's accept queue (and beyond it, retry their
                // SYN) rather than being accepted and closed: a short burst over the cap is
                // served late instead of refused, and the listener costs nothing meanwhile.
                Accepted::AtCap => {
                    workers.metrics.connections_cap_reached();
                    workers.drain_idle();
                    paused = Some(Paused::AtCap);
                }
                Accepted::Failed(e) => {
                    if workers.accept_failed(&e) {
                        paused = Some(Paused::Until(clock::now() + ACCEPT_PAUSE));
                    }
                }
            },
            () = async {
                match paused {
                    Some(Paused::AtCap) => workers.slot_freed().await,
                    Some(Paused::Until(at)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if paused.is_some() => paused = None,
            Some((std, open, socket)) = seat.handed.recv() => {
                // Registered with this worker's runtime from here on.
                if let Ok(stream) = TcpStream::from_std(std) {
                    tokio::spawn(connection(stream, socket, ctx.clone(), shutdown.clone(), (live.clone(), open)));
                }
            }
            // A node dropped without stop() drops the sender: that ends the worker too.
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break; }
            }
        }
    }
    drop(listeners);
    drop(live);
    let _ = tokio::time::timeout(limits.drain, drained.recv()).await;
}

/// Streams one HTTP/2 connection may have open at once; see `serve`.
const H2_MAX_STREAMS: u32 = 100;

/// How long an HTTP/2 connection sent GOAWAY for being idle may take to close: h2 waits for
/// the client to answer a PING (streams it opened meanwhile are still served) before its
/// final GOAWAY, and a client that never answers must not keep the connection.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// At the node's cap, a connection idle this long (no request in flight, nothing sent) closes
/// to make room. Long enough that a client between two requests of a burst keeps its
/// connection, short enough that a client waiting for a slot waits about this long.
const DRAIN_IDLE_AFTER: Duration = Duration::from_secs(2);

/// Why a worker is not accepting.
#[derive(Clone, Copy)]
enum Paused {
    /// The node holds `max_connections`; until one closes.
    AtCap,
    /// An accept failed for want of a resource; until then.
    Until(Instant),
}

/// One downstream connection, from accept to close.
async fn connection(stream: TcpStream, socket: usize, ctx: Arc<Listener>, mut stop: watch::Receiver<bool>, held: (mpsc::Sender<()>, Open)) {
    let mut drain = held.1.workers.drain.subscribe();
    drain.mark_unchanged();
    // A connection gets `idle_timeout` to send a first request head, counted from now.
    let deadline = clock::now() + ctx.idle_timeout;
    // The socket's TLS as of now: a reload changes it for the handshakes after it.
    let (tls, passthrough) = {
        let snap = ctx.shared.snapshot.load();
        (snap.listener_tls(socket).cloned(), snap.is_passthrough(socket))
    };
    if passthrough {
        // Boxed, as a TLS connection is: its state would otherwise size every task.
        return Box::pin(pass_through(stream, socket, ctx, stop, held)).await;
    }
    if let Some(tls) = tls {
        // Boxed: a TLS connection's state is large and would otherwise size every task.
        return Box::pin(async move {
            let Some((stream, h2, served)) = handshake(stream, &tls, deadline, &mut stop, &mut drain, &ctx.shared.metrics).await else {
                return;
            };
            drop(tls);
            serve_connection(stream, h2, served, socket, ctx, stop, held, drain, deadline).await;
        })
        .await;
    }
    let Some(h2) = is_h2(&stream, deadline, &mut stop, &mut drain, &ctx.shared.metrics).await else { return };
    serve_connection(stream, h2, None, socket, ctx, stop, held, drain, deadline).await;
}

/// A connection on a passthrough socket (a `TLS` listener in `Passthrough` mode): its
/// ClientHello's server name picks the destination, and its bytes go unread to an endpoint the
/// destination picks. Without a name, or a route for it, it is closed (counted by reason). Held
/// and counted as any connection; once the node stops it gets the drain period to finish.
async fn pass_through(
    mut stream: TcpStream,
    socket: usize,
    ctx: Arc<Listener>,
    mut stop: watch::Receiver<bool>,
    held: (mpsc::Sender<()>, Open),
) {
    let _held = held;
    let metrics = &ctx.shared.metrics;
    let hello = tokio::select! {
        h = crate::passthrough::read_hello(&mut stream, HANDSHAKE_TIMEOUT.min(ctx.idle_timeout)) => h,
        _ = stopped(&mut stop) => return,
    };
    let hello = match hello {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(target: "veer::server", "passthrough connection closed: {e}");
            metrics.passthrough_refused(crate::passthrough::hello_reason(&e));
            return;
        }
    };
    let Some(name) = hello.server_name.as_deref() else {
        metrics.passthrough_refused("no_sni");
        return;
    };
    let Some(dest) = ctx.shared.snapshot.load().sni_route(socket, name).cloned() else {
        metrics.passthrough_refused("no_route");
        return;
    };
    let Some((mut upstream, ep)) = crate::passthrough::connect(&ctx.shared, &dest).await else {
        metrics.passthrough_refused("no_endpoint");
        return;
    };
    let picked = &dest.upstreams[ep];
    metrics.passthrough_connection(&dest.key, &picked.cluster, u32::try_from(picked.priority).unwrap_or(u32::MAX));
    let mut carried = (0, 0);
    tokio::select! {
        r = crate::passthrough::splice(&mut stream, &mut upstream, &hello.bytes, ctx.idle_timeout, &mut carried) => {
            if let Err(e) = r {
                tracing::debug!(target: "veer::server", "passthrough connection to {} ended: {e}", dest.key);
            }
        }
        () = async {
            stopped(&mut stop).await;
            tokio::time::sleep(ctx.drain).await;
        } => {}
    }
    metrics.passthrough_bytes(&dest.key, carried.0, carried.1);
}

/// A client connection's bytes: plain TCP, or TLS over it. A parked connection waits on the
/// TCP socket either way (a TLS stream that read nothing holds no plaintext back).
trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl ClientStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// How long a client gets to complete its TLS handshake (or the idle timeout, if shorter): one
/// that opens a connection and sends nothing, or dribbles its hello, must not hold a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of a TLS handshake, bounded in time; then whether ALPN chose HTTP/2, and
/// which certificate was presented when the socket has several (see
/// [`crate::tls::SocketTls::served`]). `None` (counted) if it failed, timed out or was drained.
async fn handshake(
    stream: TcpStream,
    tls: &crate::tls::SocketTls,
    deadline: Instant,
    stop: &mut watch::Receiver<bool>,
    drain: &mut watch::Receiver<()>,
    metrics: &crate::metrics::Metrics,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, bool, Option<crate::tls::Served>)> {
    let opened = clock::now();
    let accept = tokio_rustls::TlsAcceptor::from(tls.config.clone()).accept(stream);
    let mut accept = std::pin::pin!(tokio::time::timeout_at(deadline.min(opened + HANDSHAKE_TIMEOUT), accept));
    let stream = loop {
        tokio::select! {
            biased;
            r = &mut accept => match r {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) => {
                    tracing::debug!(target: "veer::server", "TLS handshake failed: {e}");
                    metrics.tls_handshake_failed("error");
                    return None;
                }
                Err(_) => {
                    metrics.tls_handshake_failed("timeout");
                    return None;
                }
            },
            _ = stopped(stop) => return None,
            Ok(()) = drain.changed() => if clock::since(opened) >= DRAIN_IDLE_AFTER {
                metrics.connection_drained();
                metrics.tls_handshake_failed("drained");
                return None;
            },
        }
    };
    let conn = stream.get_ref().1;
    let h2 = conn.alpn_protocol() == Some(b"h2");
    let served = tls.served(conn.server_name());
    Some((stream, h2, served))
}

/// The host a request names: its absolute-form or :authority authority, else its Host.
fn request_host<B>(req: &hyper::Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()),
    }
}

/// Serves one connection's requests, HTTP/2 or HTTP/1.1, until it closes.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S: ClientStream>(
    stream: S,
    h2: bool,
    served: Option<crate::tls::Served>,
    socket: usize,
    ctx: Arc<Listener>,
    mut stop: watch::Receiver<bool>,
    held: (mpsc::Sender<()>, Open),
    mut drain: watch::Receiver<()>,
    deadline: Instant,
) {
    let _held = held;
    let state = Arc::new(ConnState::new(h2, crate::upgrade::TunnelSlot::new(stop.clone(), ctx.idle_timeout)));
    let service = {
        let (ctx, state) = (ctx.clone(), state.clone());
        service_fn(move |req: hyper::Request<Incoming>| {
            let (ctx, state) = (ctx.clone(), state.clone());
            // A TLS connection serves the names its certificate stands for; another listener's
            // name needs a handshake of its own. (`None` on plain sockets and on TLS sockets
            // with one certificate, where no request can be misdirected.)
            let misdirected = served.as_ref().is_some_and(|s| request_host(&req).is_some_and(|h| s.misdirected(h)));
            let permit = AdmissionLimit::try_admit(&ctx.in_flight);
            // Held by the future until the response exists, then by its body: a request
            // whose future is dropped (an HTTP/2 stream the client reset) is not counted on.
            let guard = ConnState::begin(&state, &req);
            // Boxed here, once: hyper moves a request's future several times before it first
            // polls it (more for HTTP/2 streams), and a pointer moves cheaper than its ~1 KiB.
            let response: ServiceFuture = Box::pin(async move {
                let resp = match permit {
                    Some(_permit) if misdirected => {
                        ctx.shared.metrics.request_refused("misdirected");
                        local_response(
                            StatusCode::MISDIRECTED_REQUEST,
                            "this connection's certificate is another listener's; connect again for this host",
                        )
                        .map(ResponseBody::Other)
                    }
                    Some(_permit) => handle(&ctx.shared, &ctx.upstreams, socket, &guard.0.tunnel, req).await,
                    None => overloaded(&ctx.shared, &req),
                };
                Ok::<_, Infallible>(resp.map(|body| Guarded { body, guard }))
            });
            response
        })
    };
    if h2 {
        // Boxed: the HTTP/2 state is large and would otherwise size every connection's task.
        let mut conn = Box::pin(ctx.http2.serve_connection(TokioIo::new(stream), service));
        let idle = loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopping(&stop) => break false,
                () = state.idle_for(ctx.idle_timeout) => break true,
                Ok(()) = drain.changed() => if state.idle_longer_than(DRAIN_IDLE_AFTER) {
                    ctx.shared.metrics.connection_drained();
                    break true;
                },
            }
        };
        // GOAWAY: the client opens no more streams; those open are finished.
        conn.as_mut().graceful_shutdown();
        if !idle {
            let _ = conn.await;
            return;
        }
        ctx.shared.metrics.h2_closed_idle();
        tokio::select! {
            _ = conn.as_mut() => {}
            () = state.idle_for(GOAWAY_GRACE) => {}
        }
        return;
    }
    let mut parked = (stream, Bytes::new(), deadline);
    loop {
        // Nothing of hyper's survives this call: a parked task holds the socket only.
        let Some((stream, leftover)) = serve_http1(parked, &ctx, &state, &service, &mut stop).await else { return };
        ctx.shared.metrics.connection_parked();
        let parked_at = clock::now();
        let deadline = parked_at + ctx.idle_timeout;
        {
            let mut readable = std::pin::pin!(tokio::time::timeout_at(deadline, stream.tcp().readable()));
            loop {
                tokio::select! {
                    // First: a client whose next request is already here is never drained.
                    biased;
                    r = &mut readable => if matches!(r, Ok(Ok(()))) { break } else { return },
                    _ = stopped(&mut stop) => return,
                    Ok(()) = drain.changed() => if clock::since(parked_at) + PARK_AFTER >= DRAIN_IDLE_AFTER {
                        ctx.shared.metrics.connection_drained();
                        return;
                    },
                }
            }
        }
        ctx.shared.metrics.connection_unparked();
        parked = (stream, leftover, deadline);
    }
}

/// Serves HTTP/1.1 requests on a connection until it closes (`None`) or goes idle long enough
/// to be parked: then returns the socket and any bytes hyper read but did not use. The first
/// request head must be complete by the deadline given with the socket.
async fn serve_http1<T: ClientStream, S>(
    parked: (T, Bytes, Instant),
    ctx: &Listener,
    state: &Arc<ConnState>,
    service: &S,
    stop: &mut watch::Receiver<bool>,
) -> Option<(T, Bytes)>
where
    S: hyper::service::HttpService<Incoming, ResBody = Tracked> + Clone + Unpin + Send + 'static,
    S::Future: Send + 'static,
{
    let io = ParkableIo::new(parked.0, parked.1, state.clone(), ctx.idle_timeout, parked.2);
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
        // A request switched protocols: hyper has written the 101 and handed the socket back.
        if let Some(tunnel) = state.tunnel.take() {
            let early = [&parts.read_buf[..], &io.leftover[..]].concat();
            let gauge = ctx.shared.metrics.upgraded_connections();
            crate::upgrade::splice(io.stream, early.into(), tunnel, ctx.idle_timeout, gauge, stopping(stop)).await;
        }
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
/// consuming; `None` if it leaves first or says nothing by `deadline`.
async fn is_h2(
    stream: &TcpStream,
    deadline: Instant,
    stop: &mut watch::Receiver<bool>,
    drain: &mut watch::Receiver<()>,
    metrics: &crate::metrics::Metrics,
) -> Option<bool> {
    let opened = clock::now();
    let mut buf = [0u8; 24];
    let wait = async {
        // Peeked bytes keep the socket readable, so the wait for the rest of a split preface
        // is a sleep; a client that stops halfway is looked at less and less often.
        let mut pause = Duration::from_millis(1);
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
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    };
    let mut wait = std::pin::pin!(tokio::time::timeout_at(deadline, wait));
    loop {
        tokio::select! {
            biased;
            r = &mut wait => return r.ok().flatten(),
            _ = stopped(stop) => return None,
            // A client that has said nothing (or a part of the HTTP/2 preface) for a while.
            Ok(()) = drain.changed() => if clock::since(opened) >= DRAIN_IDLE_AFTER {
                metrics.connection_drained();
                return None;
            },
        }
    }
}

/// What the service and the I/O wrapper of one connection share to tell a truly idle
/// connection from one between the bytes of a request or a response.
#[derive(Debug)]
struct ConnState {
    /// Requests whose response body has not been dropped yet.
    in_flight: AtomicU32,
    /// Requests begun on the connection.
    begun: AtomicU64,
    /// The latest request carried a body: the connection is not parked until a request without
    /// one comes, since the bytes read last do not show where a message with a body ended.
    had_body: AtomicBool,
    /// The node is draining: close at the next idle moment.
    closing: AtomicBool,
    /// The upstream connection of a request that switched protocols, until this connection's
    /// task splices it to the client's socket.
    tunnel: crate::upgrade::TunnelSlot,
    /// HTTP/2: when the last stream ended, in µs since `opened` (0: none yet). HTTP/1.1
    /// connections leave it alone (their wrapper has the timer), sparing a clock read per request.
    h2: bool,
    idle_since_us: AtomicU64,
    opened: Instant,
}

impl ConnState {
    fn new(h2: bool, tunnel: crate::upgrade::TunnelSlot) -> Self {
        ConnState {
            in_flight: AtomicU32::new(0),
            begun: AtomicU64::new(0),
            had_body: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            tunnel,
            h2,
            idle_since_us: AtomicU64::new(0),
            opened: clock::now(),
        }
    }

    /// Counts a request in flight until the returned guard is dropped.
    fn begin(this: &Arc<ConnState>, req: &hyper::Request<Incoming>) -> InFlight {
        this.in_flight.fetch_add(1, Ordering::Relaxed);
        this.begun.fetch_add(1, Ordering::Relaxed);
        // Requests arrive in order, so a request without a body means any earlier body was read.
        this.had_body.store(!hyper::body::Body::is_end_stream(req.body()), Ordering::Relaxed);
        InFlight(this.clone())
    }

    /// Resolves once no request has been in flight for `after` (HTTP/2). A stream that begins
    /// and ends while this sleeps moves the end of the wait, found when it wakes.
    /// HTTP/2: when the last stream ended, or the connection opened.
    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_micros(self.idle_since_us.load(Ordering::Relaxed))
    }

    /// HTTP/2: no stream open, and none ended (or the connection opened) within `d`.
    fn idle_longer_than(&self, d: Duration) -> bool {
        self.busy() == 0 && clock::since(self.idle_since()) >= d
    }

    /// Requests in flight, and HTTP/2 streams spliced after an extended CONNECT (hyper has
    /// dropped their response bodies, so they hold no request in flight).
    fn busy(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed) + self.tunnel.h2_open()
    }

    async fn idle_for(&self, after: Duration) {
        loop {
            if self.busy() > 0 {
                tokio::time::sleep(after).await;
                continue;
            }
            let since = self.idle_since();
            if clock::since(since) >= after && self.busy() == 0 {
                return;
            }
            tokio::time::sleep_until(since + after).await;
        }
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
        let state = &*self.0;
        if state.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 && state.h2 {
            let us = u64::try_from(clock::since(state.opened).as_micros()).unwrap_or(u64::MAX);
            state.idle_since_us.fetch_max(us, Ordering::Relaxed);
        }
    }
}

/// The socket of an HTTP/1.1 connection as hyper sees it. When the connection has been idle
/// between requests for [`PARK_AFTER`], a read answers end-of-stream: hyper closes its side
/// cleanly (without touching the socket, through `without_shutdown`) and the connection is
/// parked until the client writes again. A connection that waits for the rest of a request
/// head (or sits idle after a request with a body) longer than the idle timeout, counted from
/// the head's first byte, gets a timed-out read, and hyper closes it.
struct ParkableIo<T> {
    stream: T,
    /// Bytes hyper had read but not used when the connection was last parked.
    leftover: Bytes,
    state: Arc<ConnState>,
    /// The last four bytes read: a request head without a body ends with an empty line.
    tail: [u8; 4],
    /// Only empty lines have come since the last request head ended. hyper skips them
    /// (RFC 9112 §2.2), but they are no request: they must not pass for the idle time that
    /// parks a connection, nor keep one open past the wait for a head.
    blank: bool,
    reads: u64,
    /// The connection's one timer, and what it is set for.
    timer: Option<ConnTimer>,
    idle_timeout: Duration,
    /// The latest the first request head on this wrapper may be complete (the connection was
    /// opened, or parked, `idle_timeout` before), while no request has begun since `begun`.
    first_head_by: Instant,
    begun: u64,
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

    fn reset(&mut self, armed: Armed, at: Instant) {
        self.armed = armed;
        self.sleep.as_mut().reset(at);
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

impl<T: ClientStream> ParkableIo<T> {
    fn new(stream: T, leftover: Bytes, state: Arc<ConnState>, idle_timeout: Duration, first_head_by: Instant) -> Self {
        let begun = state.begun.load(Ordering::Relaxed);
        ParkableIo {
            stream,
            leftover,
            state,
            tail: *b"\r\n\r\n",
            blank: false,
            reads: 0,
            timer: None,
            idle_timeout,
            first_head_by,
            begun,
            parked: false,
        }
    }

    fn idle(&self) -> bool {
        self.leftover.is_empty()
            && self.tail == *b"\r\n\r\n"
            && !self.blank
            && self.state.in_flight.load(Ordering::Relaxed) == 0
            && !self.state.had_body.load(Ordering::Relaxed)
    }

    /// The connection's timer, set for `armed` (at `at()`) unless it already is set for that
    /// kind of wait.
    fn timer_for(&mut self, armed: Armed, at: impl FnOnce(&Self) -> Instant) -> &mut ConnTimer {
        if self.timer.as_ref().is_none_or(|t| std::mem::discriminant(&t.armed) != std::mem::discriminant(&armed)) {
            let at = at(self);
            match &mut self.timer {
                Some(timer) => timer.reset(armed, at),
                None => self.timer = Some(ConnTimer { sleep: Box::pin(tokio::time::sleep_until(at)), armed, registered: false }),
            }
        }
        // Always set by now; the fallback only spares an `unwrap`.
        self.timer.get_or_insert_with(|| ConnTimer { sleep: Box::pin(tokio::time::sleep(PARK_AFTER)), armed, registered: false })
    }

    /// Whether the connection has been idle for [`PARK_AFTER`]; arms or re-arms the timer
    /// that will wake hyper to ask again.
    fn poll_park(&mut self, cx: &mut Context<'_>) -> bool {
        let reads = self.reads;
        let timer = self.timer_for(Armed::Park(reads), |_| clock::now() + PARK_AFTER);
        if !timer.poll_due(cx) {
            return false;
        }
        if timer.armed == Armed::Park(reads) {
            return true;
        }
        // There was traffic since the timer was armed: count the idle time from now.
        timer.reset(Armed::Park(reads), clock::now() + PARK_AFTER);
        let _ = timer.poll_due(cx);
        false
    }

    /// Keeps the park timer running while a response is in flight; it only wakes the task.
    fn poll_park_timer(&mut self, cx: &mut Context<'_>) {
        let reads = self.reads;
        let timer = self.timer_for(Armed::Park(reads), |_| clock::now() + PARK_AFTER);
        if timer.poll_due(cx) {
            timer.reset(Armed::Park(reads), clock::now() + PARK_AFTER);
            let _ = timer.poll_due(cx);
        }
    }

    /// Whether the wait for a request head has outlasted the idle timeout; arms the deadline
    /// when the wait begins (just after the head's first byte), and no later than the
    /// deadline of the wrapper's first head. Requests whose head arrives in one read never
    /// get here.
    fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer_for(Armed::HeadDeadline, |io| {
            let by = clock::now() + io.idle_timeout;
            if io.state.begun.load(Ordering::Relaxed) == io.begun {
                by.min(io.first_head_by)
            } else {
                by
            }
        })
        .poll_due(cx)
    }
}

impl<T: ClientStream> AsyncRead for ParkableIo<T> {
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
                    // Stops at the first byte of a request line: costs nothing for real requests.
                    let empty_lines = filled.iter().all(|&b| b == b'\r' || b == b'\n');
                    this.blank = empty_lines && (this.blank || this.tail == *b"\r\n\r\n");
                    let k = filled.len().min(4);
                    this.tail.copy_within(k.., 0);
                    this.tail[4 - k..].copy_from_slice(&filled[filled.len() - k..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.state.closing.load(Ordering::Relaxed) && this.state.in_flight.load(Ordering::Relaxed) == 0 => {
                Poll::Ready(Ok(()))
            }
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
            // No response in flight, yet not idle: part of a request head (or only empty
            // lines) has come, or the last request had a body and nothing has come since.
            Poll::Pending if this.poll_head_deadline(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no complete request head within the idle timeout")))
            }
            other => other,
        }
    }
}

impl<T: ClientStream> AsyncWrite for ParkableIo<T> {
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

#[cfg(test)]
mod tests;
