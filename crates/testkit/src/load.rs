//! An open-loop fixed-rate HTTP load generator that records the outcome of every request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::clock;

/// What load to send, where, and how.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    /// Host header (HTTP/1) or `:authority` (HTTP/2); empty means the target address.
    pub host: String,
    pub path: String,
    pub method: http::Method,
    pub rate_per_sec: u32,
    pub duration: Duration,
    /// Keep-alive connections the requests are spread over round-robin (0 is taken as 1). An HTTP/1
    /// connection carries one request at a time, so a request queues behind slow answers on its
    /// connection (the wait counts in its latency and timeout): give at least rate × latency connections.
    pub connections: usize,
    /// Per request, counted from its scheduled send time.
    pub timeout: Duration,
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When the request was scheduled, since the start of the run (open loop: this is also when it was due to be sent).
    pub sent_at: Duration,
    /// From the scheduled send time to the end of the response body, so time spent waiting for a
    /// busy HTTP/1 connection counts (no coordinated omission). Timeouts record about `timeout`.
    pub latency: Duration,
    /// `None` = transport error or timeout.
    pub status: Option<u16>,
    /// The `x-backend` header of the answer.
    pub backend: Option<String>,
    /// What went wrong, when the request got no complete answer.
    pub error: Option<String>,
}

/// Every sample of a run, in schedule order, and how long the run took.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

impl LoadReport {
    /// Requests without a status (transport error, timeout) or with a status >= 500.
    pub fn errors(&self) -> usize {
        self.samples.iter().filter(|s| s.status.is_none_or(|code| code >= 500)).count()
    }

    /// Requests answered with a 2xx or 3xx status.
    pub fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.status.is_some_and(|code| (200..400).contains(&code))).count()
    }

    /// Answers per `x-backend` name, whatever their status; samples without the header are left out.
    pub fn by_backend(&self) -> BTreeMap<String, usize> {
        count_backends(self.samples.iter())
    }

    /// Like [`LoadReport::by_backend`], for requests scheduled in `[from, to)`.
    pub fn by_backend_between(&self, from: Duration, to: Duration) -> BTreeMap<String, usize> {
        count_backends(self.between(from, to))
    }

    /// The largest latency (errors and timeouts included) of requests scheduled in `[from, to)`; zero if none.
    pub fn max_latency_between(&self, from: Duration, to: Duration) -> Duration {
        self.between(from, to).map(|s| s.latency).max().unwrap_or(Duration::ZERO)
    }

    /// Nearest-rank percentile of all latencies (errors and timeouts included); zero if there are no samples.
    /// `p` in `[0, 1]` is a fraction (0.99), `p` in `(1, 100]` a percent (99.0); values beyond are clamped.
    pub fn latency_percentile(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let fraction = if p.is_nan() {
            1.0
        } else if p <= 1.0 {
            p.max(0.0)
        } else {
            (p / 100.0).min(1.0)
        };
        let mut latencies: Vec<Duration> = self.samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let rank = (fraction * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1]
    }

    fn between(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.sent_at >= from && s.sent_at < to)
    }
}

fn count_backends<'a>(samples: impl Iterator<Item = &'a Sample>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sample in samples {
        if let Some(name) = &sample.backend {
            *counts.entry(name.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Runs the load; stops by itself after `duration` and waits at most `timeout` for stragglers.
pub async fn run(spec: LoadSpec) -> LoadReport {
    run_inner(spec, None).await
}

/// Same, but also sends each Sample to `live` as it completes (for live displays); never blocks on a full channel (drop if full).
pub async fn run_live(spec: LoadSpec, live: mpsc::Sender<Sample>) -> LoadReport {
    run_inner(spec, Some(live)).await
}

/// Extra time past the last deadline for completed samples to reach the collector before it gives up.
const GRACE: Duration = Duration::from_millis(250);

/// What every worker needs; the results sender lives only here so the collector sees the channel
/// close exactly when the last worker and in-flight request are done.
struct Ctx {
    target: SocketAddr,
    authority: String,
    path: String,
    method: Method,
    timeout: Duration,
    http2: bool,
    start: Instant,
    results: mpsc::UnboundedSender<(usize, Sample)>,
}

/// One scheduled request.
struct Job {
    index: usize,
    at: Instant,
}

async fn run_inner(spec: LoadSpec, live: Option<mpsc::Sender<Sample>>) -> LoadReport {
    let total = request_count(spec.rate_per_sec, spec.duration);
    let rate = u128::from(spec.rate_per_sec.max(1));
    let offset = move |index: usize| Duration::from_nanos((index as u128 * 1_000_000_000 / rate) as u64);
    let connections = spec.connections.max(1);
    let authority = if spec.host.is_empty() { spec.target.to_string() } else { spec.host.clone() };
    let path = if spec.path.starts_with('/') { spec.path.clone() } else { format!("/{}", spec.path) };

    let start = clock::now();
    let (results_tx, mut results) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        target: spec.target,
        authority,
        path,
        method: spec.method.clone(),
        timeout: spec.timeout,
        http2: spec.http2,
        start,
        results: results_tx,
    });

    // One worker per connection slot; the job queues are bounded by `total`.
    let mut workers = JoinSet::new();
    let mut queues = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (tx, rx) = mpsc::unbounded_channel();
        queues.push(tx);
        workers.spawn(worker(Arc::clone(&ctx), rx));
    }
    drop(ctx);

    // The dispatcher sends each job at its fixed time whatever happened to earlier ones: open loop.
    let dispatcher = tokio::spawn(async move {
        for index in 0..total {
            let at = start + offset(index);
            if at > clock::now() {
                tokio::time::sleep_until(at).await;
            }
            // A closed queue means its worker is gone; the collector will record the job as missing.
            let _ = queues[index % queues.len()].send(Job { index, at });
        }
    });

    let last_deadline = start + offset(total.saturating_sub(1)) + spec.timeout + GRACE;
    let mut slots: Vec<Option<Sample>> = vec![None; total];
    loop {
        tokio::select! {
            received = results.recv() => match received {
                Some((index, sample)) => {
                    if let Some(live) = &live {
                        // A slow display must never slow the load: drop the sample for it instead.
                        let _ = live.try_send(sample.clone());
                    }
                    if let Some(slot) = slots.get_mut(index) {
                        *slot = Some(sample);
                    }
                }
                // Every worker and in-flight request has finished.
                None => break,
            },
            _ = tokio::time::sleep_until(last_deadline) => break,
        }
    }
    dispatcher.abort();
    // Dropping the workers aborts them, their in-flight requests and their connections.
    drop(workers);

    let samples = slots
        .into_iter()
        .enumerate()
        .map(|(index, slot)| {
            slot.unwrap_or_else(|| Sample {
                sent_at: offset(index),
                latency: spec.timeout,
                status: None,
                backend: None,
                error: Some("not completed before the end of the run".to_string()),
            })
        })
        .collect();
    LoadReport { samples, elapsed: clock::since(start) }
}

/// rate × duration, in integers so 200/s for 1 s is exactly 200.
fn request_count(rate_per_sec: u32, duration: Duration) -> usize {
    let count = u128::from(rate_per_sec) * duration.as_nanos() / 1_000_000_000;
    usize::try_from(count).unwrap_or(usize::MAX)
}

/// A live connection of one slot.
enum Conn {
    /// HTTP/1 carries one request at a time; the handle aborts its driver task to really drop the socket.
    H1(http1::SendRequest<Empty<Bytes>>, AbortHandle),
    /// HTTP/2 multiplexes; `broken` is set by any in-flight request that failed on it.
    H2(http2::SendRequest<Empty<Bytes>>, Arc<AtomicBool>),
}

impl Conn {
    fn usable(&self) -> bool {
        match self {
            Conn::H1(sender, _) => !sender.is_closed(),
            Conn::H2(sender, broken) => !sender.is_closed() && !broken.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // An HTTP/2 connection is left to finish its in-flight streams (each bounded by its deadline)
        // and ends when its last sender is dropped; HTTP/1 has nothing in flight worth keeping.
        if let Conn::H1(_, driver) = self {
            driver.abort();
        }
    }
}

/// Result of one exchange: status and `x-backend`, or what failed.
type Outcome = Result<(u16, Option<String>), String>;

async fn worker(ctx: Arc<Ctx>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut conn: Option<Conn> = None;
    // Connection driver tasks and HTTP/2 in-flight requests; dropping these sets aborts them.
    let mut drivers = JoinSet::new();
    let mut in_flight = JoinSet::new();
    while let Some(job) = jobs.recv().await {
        while drivers.try_join_next().is_some() {}
        while in_flight.try_join_next().is_some() {}

        let deadline = job.at + ctx.timeout;
        if clock::now() >= deadline {
            // It waited its whole timeout behind earlier requests on this connection.
            record(&ctx, &job, Err("timed out waiting for a free connection".to_string()));
            continue;
        }
        if conn.as_ref().is_some_and(|c| !c.usable()) {
            conn = None;
        }
        if conn.is_none() {
            match tokio::time::timeout_at(deadline, connect(&ctx, &mut drivers)).await {
                Ok(Ok(fresh)) => conn = Some(fresh),
                Ok(Err(e)) => {
                    record(&ctx, &job, Err(e));
                    continue;
                }
                Err(_) => {
                    record(&ctx, &job, Err("timed out connecting".to_string()));
                    continue;
                }
            }
        }
        let request = match build_request(&ctx) {
            Ok(request) => request,
            Err(e) => {
                record(&ctx, &job, Err(e));
                continue;
            }
        };
        match &mut conn {
            Some(Conn::H1(sender, _)) => {
                let outcome = match tokio::time::timeout_at(deadline, exchange_h1(sender, request)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err("timed out".to_string()),
                };
                if outcome.is_err() {
                    // The connection is in an unknown state (maybe a response still on its way): use a fresh one.
                    conn = None;
                }
                record(&ctx, &job, outcome);
            }
            Some(Conn::H2(sender, broken)) => {
                let sender = sender.clone();
                let broken = Arc::clone(broken);
                let ctx = Arc::clone(&ctx);
                in_flight.spawn(async move {
                    let outcome = match tokio::time::timeout_at(deadline, exchange_h2(sender, request)).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err("timed out".to_string()),
                    };
                    if outcome.is_err() {
                        broken.store(true, Ordering::Relaxed);
                    }
                    record(&ctx, &job, outcome);
                });
            }
            None => record(&ctx, &job, Err("no connection".to_string())),
        }
    }
    // Each in-flight request ends by its own deadline.
    while in_flight.join_next().await.is_some() {}
}

fn record(ctx: &Ctx, job: &Job, outcome: Outcome) {
    let (status, backend, error) = match outcome {
        Ok((status, backend)) => (Some(status), backend, None),
        Err(e) => (None, None, Some(e)),
    };
    let sample = Sample { sent_at: job.at.saturating_duration_since(ctx.start), latency: clock::since(job.at), status, backend, error };
    // The collector stops listening only once the run is over; a late sample is then simply not wanted.
    let _ = ctx.results.send((job.index, sample));
}

async fn connect(ctx: &Ctx, drivers: &mut JoinSet<()>) -> Result<Conn, String> {
    let stream = TcpStream::connect(ctx.target).await.map_err(|e| format!("connect: {e}"))?;
    // Connecting to a free port in the ephemeral range can connect the socket to itself (TCP simultaneous open).
    if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) {
        if local == peer {
            return Err("connect: connected to itself (nothing listening)".to_string());
        }
    }
    // Small requests should not wait for Nagle; failure only costs latency.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    if ctx.http2 {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.map_err(|e| format!("http2 handshake: {e}"))?;
        drivers.spawn(async move {
            // The connection's end is seen by its requests and by `is_closed`.
            let _ = connection.await;
        });
        Ok(Conn::H2(sender, Arc::new(AtomicBool::new(false))))
    } else {
        let (sender, connection) = http1::handshake(io).await.map_err(|e| format!("http1 handshake: {e}"))?;
        let driver = drivers.spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn::H1(sender, driver))
    }
}

fn build_request(ctx: &Ctx) -> Result<Request<Empty<Bytes>>, String> {
    let mut builder = Request::builder().method(ctx.method.clone());
    if ctx.http2 {
        // HTTP/2 takes the authority from the URI (`:authority`), and needs a scheme.
        let uri: Uri = format!("http://{}{}", ctx.authority, ctx.path).parse().map_err(|e| format!("bad uri: {e}"))?;
        builder = builder.uri(uri);
    } else {
        let uri: Uri = ctx.path.parse().map_err(|e| format!("bad path: {e}"))?;
        let host = HeaderValue::from_str(&ctx.authority).map_err(|e| format!("bad host: {e}"))?;
        builder = builder.uri(uri).header(HOST, host);
    }
    builder.body(Empty::new()).map_err(|e| format!("bad request: {e}"))
}

async fn exchange_h1(sender: &mut http1::SendRequest<Empty<Bytes>>, request: Request<Empty<Bytes>>) -> Outcome {
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    drain(response).await
}

async fn exchange_h2(mut sender: http2::SendRequest<Empty<Bytes>>, request: Request<Empty<Bytes>>) -> Outcome {
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    drain(response).await
}

/// Reads the whole body (discarding it) so the answer is complete and the HTTP/1 connection reusable.
async fn drain(response: http::Response<Incoming>) -> Outcome {
    let status = response.status().as_u16();
    let backend = response.headers().get("x-backend").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| format!("reading body after status {status}: {e}"))?;
    }
    Ok((status, backend))
}
