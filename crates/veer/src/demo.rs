//! `veer demo`: a two-cluster world on loopback showing failover and failback live.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use veer_control::events::{Event, EventKind, Events};
use veer_node::node::{Node, NodeConfig};
use veer_testkit::{Backend, LoadReport, LoadSpec, Mode, Sample};

/// How the demo runs.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    pub phase: Duration,
    pub rate: u32,
    pub plain: bool,
}

/// What the client calls: the Service's cluster-local name and port.
const HOST: &str = "echo.demo.svc.cluster.local:8080";
/// (cluster, region, backends, last octet of the first backend's 127.0.0.x address).
const CLUSTERS: [(&str, &str, usize, u8); 2] = [("west", "us-west", 3, 11), ("east", "us-east", 5, 21)];
/// Failover and failback count as done once a window this long is (almost) all on one cluster.
const SETTLE_WINDOW: Duration = Duration::from_millis(200);
/// Load keeps running this long after the last phase so the end of the recovery is seen whole.
const TAIL: Duration = Duration::from_secs(1);
/// The live bars look at answers completed within this much of now.
const RECENT: Duration = Duration::from_secs(1);
const BAR_WIDTH: usize = 40;
/// Live lines are cut to the terminal's width (this, when it does not say): a wrapped line
/// would break the redraw.
const DEFAULT_WIDTH: usize = 80;

/// One echo backend and the cluster it belongs to.
struct Echo {
    cluster: &'static str,
    backend: Arc<Backend>,
}

/// Everything the demo started, so that it can all be stopped whatever went wrong.
struct World {
    dir: PathBuf,
    echoes: Vec<Echo>,
    /// West's node first, then east's.
    nodes: Vec<Node>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Steady,
    Outage,
    Recovery,
}

impl Phase {
    fn number(self) -> u8 {
        match self {
            Phase::Steady => 1,
            Phase::Outage => 2,
            Phase::Recovery => 3,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Phase::Steady => "steady: west serves its own clients",
            Phase::Outage => "west is down (connections refused): east takes over",
            Phase::Recovery => "west is back: veer re-admits it once a probe answers",
        }
    }
}

pub async fn run(opts: DemoOptions) -> Result<ExitCode, String> {
    if opts.rate == 0 {
        return Err("--rate must be at least 1 request per second".into());
    }
    if opts.phase < Duration::from_secs(1) {
        return Err("--phase-seconds must be at least 1".into());
    }
    let mut world =
        World { dir: std::env::temp_dir().join(format!("veer-demo-{}", std::process::id())), echoes: Vec::new(), nodes: Vec::new() };
    let result = match world.build(opts.phase).await {
        Ok(()) => drive(&world, opts).await,
        Err(e) => Err(e),
    };
    world.shutdown().await;
    result
}

impl World {
    /// Starts the backends first (their ports go into the manifests), then one node per cluster.
    async fn build(&mut self, phase: Duration) -> Result<(), String> {
        for (cluster, _, count, first) in CLUSTERS {
            for i in 0..count {
                let name = format!("{cluster}-{}", i + 1);
                let octet = first.saturating_add(u8::try_from(i).unwrap_or(u8::MAX));
                let backend = start_backend(&name, Ipv4Addr::new(127, 0, 0, octet)).await?;
                self.echoes.push(Echo { cluster, backend: Arc::new(backend) });
            }
        }
        // A directory left by an earlier run that had the same pid holds nothing of value.
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let file = self.dir.join("demo.yaml");
        std::fs::write(&file, manifests(&self.echoes, base_ejection(phase)))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        for (cluster, ..) in CLUSTERS {
            let mut cfg = NodeConfig::new(vec![self.dir.clone()], cluster);
            cfg.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
            cfg.admin = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
            let node = Node::start(cfg).await.map_err(|e| format!("cannot start the {cluster} node: {e}"))?;
            self.nodes.push(node);
        }
        Ok(())
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.stop().await;
        }
        for echo in self.echoes {
            // Still shared only if a task holding it was cancelled; dropping it tears it down too.
            if let Ok(backend) = Arc::try_unwrap(echo.backend) {
                backend.stop().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_backend(name: &str, ip: Ipv4Addr) -> Result<Backend, String> {
    match Backend::start(name, SocketAddr::from((ip, 0))).await {
        Ok(backend) => Ok(backend),
        // Some systems (macOS) only configure 127.0.0.1; distinct ports keep the endpoints apart there.
        Err(_) => {
            Backend::start(name, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.map_err(|e| format!("cannot start backend {name}: {e}"))
        }
    }
}

/// The ejection time for a phase length P. Ejections grow as base × n (Envoy's backoff), so the
/// re-admission probes come at about P + b and P + 3b: with b = (P + 1 s) / 3 the first lands
/// inside the outage (it fails, and the event log shows veer keeping a dead cluster out) and the
/// second about a second after west is back. A fixed b would re-admit west only near the end of
/// the recovery phase for some phase lengths, or not at all. Rounded down to 100 ms so the events
/// read well; 3b stays above P, so the second probe still comes after the restore.
fn base_ejection(phase: Duration) -> Duration {
    let ms = (phase.as_millis() + 1000) / 3 / 100 * 100;
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX).max(1000))
}

/// The demo's manifests: two Clusters, the `echo` Service in each with one WorkloadEntry per
/// backend, and a DestinationRule turning on locality failover with outlier detection.
fn manifests(echoes: &[Echo], base_ejection: Duration) -> String {
    let mut docs = Vec::new();
    for (cluster, region, ..) in CLUSTERS {
        docs.push(format!(
            "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {cluster}\nspec:\n  locality:\n    region: {region}\n    zone: a\n"
        ));
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: demo\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n  ports:\n  - name: http\n    port: 8080\n    targetPort: http\n  selector:\n    app: echo\n"
        ));
    }
    for echo in echoes {
        let addr = echo.backend.addr();
        docs.push(format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {}\n  namespace: demo\n  labels:\n    topology.istio.io/cluster: {}\nspec:\n  address: {}\n  ports:\n    http: {}\n  labels:\n    app: echo\n",
            echo.backend.name(),
            echo.cluster,
            addr.ip(),
            addr.port()
        ));
    }
    docs.push(format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: echo\n  namespace: demo\nspec:\n  host: echo.demo.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        enabled: true\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: {}ms\n      maxEjectionPercent: 100\n",
        base_ejection.as_millis()
    ));
    docs.join("---\n")
}

/// Keep-alive connections for the load: an HTTP/1 connection carries one request at a time, so
/// enough of them that a slow answer during the switch does not hold up the ones behind it.
fn connections(rate: u32) -> usize {
    usize::try_from(rate / 10).unwrap_or(usize::MAX).clamp(4, 64)
}

async fn drive(world: &World, opts: DemoOptions) -> Result<ExitCode, String> {
    let [west, east] = world.nodes.as_slice() else {
        return Err("the demo needs exactly two nodes".into());
    };
    let live = !opts.plain && std::io::stdout().is_terminal();
    let duration = opts.phase * 3 + TAIL;
    let spec = LoadSpec {
        target: west.listen,
        host: HOST.to_string(),
        path: "/".to_string(),
        // GET, the method's default: this crate does not depend on `http` to name it.
        method: Default::default(),
        rate_per_sec: opts.rate,
        duration,
        connections: connections(opts.rate),
        timeout: Duration::from_secs(2),
        http2: false,
    };
    print_header(world, west, east, opts);

    // Room for every sample, so the live view never misses one (run_live drops samples when full).
    let expected = u128::from(opts.rate) * duration.as_millis() / 1000;
    let capacity = usize::try_from(expected).unwrap_or(usize::MAX).clamp(1, 1 << 20) + 64;
    let (samples_tx, mut samples) = mpsc::channel(capacity);
    let t0 = Instant::now();
    let t0_unix_ms = unix_ms_now();
    let load = tokio::spawn(veer_testkit::run_live(spec, samples_tx));
    let (phase_tx, mut phase_rx) = watch::channel(Phase::Steady);
    let west_backends: Vec<Arc<Backend>> = world.echoes.iter().filter(|e| e.cluster == "west").map(|e| e.backend.clone()).collect();
    let outage = tokio::spawn(run_outage(west_backends, t0, opts.phase, phase_tx));

    let mut view = View::new(world, live, t0_unix_ms);
    let period = if live { Duration::from_millis(200) } else { Duration::from_secs(1) };
    let mut ticker = tokio::time::interval_at(t0 + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut phases_done = false;
    loop {
        tokio::select! {
            sample = samples.recv() => match sample {
                Some(sample) => view.add(sample),
                // The load is over: run_live drops its sender when it returns.
                None => break,
            },
            changed = phase_rx.changed(), if !phases_done => match changed {
                Ok(()) => {
                    let phase = *phase_rx.borrow_and_update();
                    view.phase = phase;
                    if !live {
                        crate::out::say!("t={:>3.0}s  phase {}/3: {}", t0.elapsed().as_secs_f64(), phase.number(), phase.text());
                    }
                }
                Err(_) => phases_done = true,
            },
            _ = ticker.tick() => view.render(t0.elapsed(), &west.events),
            _ = &mut interrupt => {
                load.abort();
                outage.abort();
                crate::out::say!("interrupted; stopping the demo");
                return Ok(ExitCode::from(130));
            }
        }
    }
    view.render(t0.elapsed(), &west.events);
    let report = load.await.map_err(|e| format!("the load generator stopped: {e}"))?;
    let (stop_at, restore_at) = outage.await.map_err(|e| format!("the outage task stopped: {e}"))??;
    Ok(summary(world, &report, stop_at, restore_at, &west.events.all(), t0_unix_ms))
}

fn print_header(world: &World, west: &Node, east: &Node, opts: DemoOptions) {
    crate::out::say!("veer demo: one service in two clusters, failing over and back on loopback");
    for ((cluster, region, ..), node) in CLUSTERS.iter().zip([west, east]) {
        let names: Vec<&str> = world.echoes.iter().filter(|e| e.cluster == *cluster).map(|e| e.backend.name()).collect();
        crate::out::say!("  {cluster} ({region}, zone a): veer node on {}, backends {}", node.listen, names.join(" "));
    }
    let p = opts.phase.as_secs_f64();
    crate::out::say!("  load: {} req/s from a west client to {HOST}, through the west node", opts.rate);
    crate::out::say!("  plan: {p:.0} s steady, {p:.0} s with west's backends refusing connections, {p:.0} s with them back");
    crate::out::say!();
}

/// Takes west down at t = phase and brings it back at t = 2·phase; returns both moments.
async fn run_outage(
    west: Vec<Arc<Backend>>,
    t0: Instant,
    phase: Duration,
    phase_tx: watch::Sender<Phase>,
) -> Result<(Duration, Duration), String> {
    tokio::time::sleep_until(t0 + phase).await;
    let stop_at = t0.elapsed();
    phase_tx.send_replace(Phase::Outage);
    set_all(&west, Mode::Refuse).await?;
    tokio::time::sleep_until(t0 + phase * 2).await;
    let restore_at = t0.elapsed();
    phase_tx.send_replace(Phase::Recovery);
    set_all(&west, Mode::Ok).await?;
    Ok((stop_at, restore_at))
}

/// Switches every backend at once, as when a whole cluster goes away, rather than one by one.
async fn set_all(backends: &[Arc<Backend>], mode: Mode) -> Result<(), String> {
    let mut tasks = JoinSet::new();
    for backend in backends {
        let backend = backend.clone();
        let mode = mode.clone();
        tasks.spawn(async move { backend.set_mode(mode).await.map_err(|e| format!("backend {}: {e}", backend.name())) });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| format!("switching a backend failed: {e}"))??;
    }
    Ok(())
}

/// The live display: counts so far, and which cluster answered recently.
struct View {
    live: bool,
    t0_unix_ms: u64,
    phase: Phase,
    /// Backend names in display order, with their cluster.
    backends: Vec<(&'static str, String)>,
    counts: BTreeMap<String, u64>,
    /// (completion time since the start, cluster) of recent answers.
    recent: VecDeque<(Duration, &'static str)>,
    requests: u64,
    errors: u64,
    /// Names of endpoints by address, for event lines.
    names: BTreeMap<String, String>,
    last_seq: u64,
    last_event: Option<String>,
    /// Lines of the live block on screen, to move back over when redrawing.
    drawn: usize,
}

impl View {
    fn new(world: &World, live: bool, t0_unix_ms: u64) -> View {
        View {
            live,
            t0_unix_ms,
            phase: Phase::Steady,
            backends: world.echoes.iter().map(|e| (e.cluster, e.backend.name().to_string())).collect(),
            counts: BTreeMap::new(),
            recent: VecDeque::new(),
            requests: 0,
            errors: 0,
            names: endpoint_names(world),
            last_seq: 0,
            last_event: None,
            drawn: 0,
        }
    }

    fn add(&mut self, sample: Sample) {
        self.requests += 1;
        if is_error(&sample) {
            self.errors += 1;
        }
        if let Some(name) = sample.backend {
            if let Some(cluster) = CLUSTERS.iter().map(|c| c.0).find(|c| cluster_of(&name) == Some(*c)) {
                self.recent.push_back((sample.sent_at + sample.latency, cluster));
            }
            *self.counts.entry(name).or_insert(0) += 1;
        }
    }

    /// Share of each cluster among the answers of the last second.
    fn shares(&mut self, now: Duration) -> Vec<(&'static str, f64)> {
        let since = now.saturating_sub(RECENT);
        while self.recent.front().is_some_and(|(at, _)| *at < since) {
            self.recent.pop_front();
        }
        let total = self.recent.len();
        CLUSTERS
            .iter()
            .map(|(cluster, ..)| {
                let n = self.recent.iter().filter(|(_, c)| c == cluster).count();
                (*cluster, if total == 0 { 0.0 } else { n as f64 / total as f64 })
            })
            .collect()
    }

    fn render(&mut self, now: Duration, events: &Events) {
        let shares = self.shares(now);
        for event in events.since(self.last_seq) {
            self.last_seq = event.seq;
            if let Some(line) = event_line(&event, self.t0_unix_ms, &self.names) {
                self.last_event = Some(line);
            }
        }
        let mut out = std::io::stdout().lock();
        if !self.live {
            let split: Vec<String> = shares.iter().map(|(c, s)| format!("{c} {:>3.0}%", s * 100.0)).collect();
            drop(out);
            crate::out::say!("t={:>3.0}s  {}   {} requests, {} errors", now.as_secs_f64(), split.join(" | "), self.requests, self.errors);
            return;
        }
        let mut lines = vec![format!("t={:>5.1}s  phase {}/3: {}", now.as_secs_f64(), self.phase.number(), self.phase.text())];
        for (cluster, share) in &shares {
            let filled = ((share * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
            lines.push(format!("  {cluster}  {}{}  {:>3.0}%", "█".repeat(filled), "░".repeat(BAR_WIDTH - filled), share * 100.0));
        }
        for (cluster, ..) in CLUSTERS {
            let counts: Vec<String> = self
                .backends
                .iter()
                .filter(|(c, _)| *c == cluster)
                .map(|(_, name)| format!("{name} {}", self.counts.get(name).copied().unwrap_or(0)))
                .collect();
            lines.push(format!("  {}", counts.join("  ")));
        }
        lines.push(format!("  {} requests, {} errors", self.requests, self.errors));
        lines.push(format!("  last veer event: {}", self.last_event.as_deref().unwrap_or("none yet")));
        if self.drawn > 0 {
            // Back to the first line of the block, to draw over it.
            let _ = write!(out, "\x1b[{}F", self.drawn);
        }
        // Asked at every redraw: the terminal may have been resized.
        let width = crate::walk::terminal_width().unwrap_or(DEFAULT_WIDTH).saturating_sub(1);
        for line in &lines {
            let cut: String = line.chars().take(width).collect();
            let _ = writeln!(out, "\x1b[2K{cut}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
    }
}

fn endpoint_names(world: &World) -> BTreeMap<String, String> {
    world.echoes.iter().map(|e| (e.backend.addr().to_string(), e.backend.name().to_string())).collect()
}

/// The cluster a backend belongs to, from its name (`west-2` is in `west`).
fn cluster_of(backend: &str) -> Option<&str> {
    backend.split_once('-').map(|(cluster, _)| cluster)
}

/// What a client sees as a failure: no answer at all, or a 5xx.
fn is_error(sample: &Sample) -> bool {
    sample.status.is_none_or(|code| code >= 500)
}

fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// One short line for a failover event, `None` for events that are not about failover.
fn event_line(event: &Event, t0_unix_ms: u64, names: &BTreeMap<String, String>) -> Option<String> {
    let what = match event.kind {
        EventKind::Ejection => "ejection",
        EventKind::ReEjection => "re-ejection",
        EventKind::Unejection => "unejection",
        EventKind::EjectionRefused => "ejection refused",
        EventKind::PriorityChange => "priority change",
        EventKind::HealthCheckFailed => "health check failed",
        EventKind::HealthCheckPassed => "health check passed",
        _ => return None,
    };
    let at = event.time_unix_ms.saturating_sub(t0_unix_ms) as f64 / 1000.0;
    let subject = match (&event.endpoint, event.from_priority, event.to_priority) {
        (Some(endpoint), ..) => names.get(endpoint).cloned().unwrap_or_else(|| endpoint.clone()),
        (None, Some(from), Some(to)) => format!("P{from} -> P{to}"),
        (None, ..) => String::new(),
    };
    // Refusals within a second are folded into one event with a count.
    let times = if event.count > 1 { format!(" (×{} within 1 s)", event.count) } else { String::new() };
    Some(format!("+{at:.2}s {what} {subject}: {}{times}", event.reason))
}

/// From `from` to the first request scheduled in `[from, until)` whose 200 ms window (that request
/// and those scheduled after it) has at least 99% of its requests answered by `cluster`.
fn settle_time(samples: &[Sample], from: Duration, until: Duration, cluster: &str) -> Option<Duration> {
    // Prefix counts make each window's share O(1); samples are in schedule order.
    let mut hits = vec![0usize; samples.len() + 1];
    for (i, s) in samples.iter().enumerate() {
        let hit = s.backend.as_deref().and_then(cluster_of) == Some(cluster) && !is_error(s);
        hits[i + 1] = hits[i] + usize::from(hit);
    }
    let mut end = 0;
    for (i, s) in samples.iter().enumerate() {
        if s.sent_at < from {
            continue;
        }
        if s.sent_at >= until {
            break;
        }
        end = end.max(i + 1);
        while samples.get(end).is_some_and(|next| next.sent_at < s.sent_at + SETTLE_WINDOW) {
            end += 1;
        }
        let n = end - i;
        if (hits[end] - hits[i]) * 100 >= n * 99 {
            return Some(s.sent_at.saturating_sub(from));
        }
    }
    None
}

fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn summary(world: &World, report: &LoadReport, stop_at: Duration, restore_at: Duration, events: &[Event], t0_unix_ms: u64) -> ExitCode {
    let total = report.samples.len();
    let errors = report.errors();
    let by_backend = report.by_backend();
    let per_cluster: Vec<String> = CLUSTERS
        .iter()
        .map(|(cluster, ..)| {
            let n: usize = by_backend.iter().filter(|(name, _)| cluster_of(name) == Some(*cluster)).map(|(_, n)| n).sum();
            format!("{cluster} {n}")
        })
        .collect();
    crate::out::say!();
    crate::out::say!("summary");
    crate::out::say!("  requests: {total} ({})", per_cluster.join(", "));
    crate::out::say!("  errors: {errors}");
    match settle_time(&report.samples, stop_at, restore_at, "east") {
        Some(d) => crate::out::say!(
            "  time to fail over: {} after west went down (slowest answer in that second: {})",
            fmt_duration(d),
            fmt_duration(report.max_latency_between(stop_at, stop_at + Duration::from_secs(1)))
        ),
        None => crate::out::say!("  time to fail over: not seen (east never carried 99% of the traffic)"),
    }
    match settle_time(&report.samples, restore_at, Duration::MAX, "west") {
        Some(d) => crate::out::say!("  time to fail back: {} after west came back", fmt_duration(d)),
        None => crate::out::say!("  time to fail back: not within the demo (a longer --phase-seconds leaves more time)"),
    }
    let answers: Vec<String> =
        world.echoes.iter().map(|e| format!("{} {}", e.backend.name(), by_backend.get(e.backend.name()).copied().unwrap_or(0))).collect();
    crate::out::say!("  answers by backend: {}", answers.join(", "));
    let names = endpoint_names(world);
    let lines: Vec<String> = events.iter().filter_map(|e| event_line(e, t0_unix_ms, &names)).collect();
    if lines.is_empty() {
        crate::out::say!("  veer events on the west node: none");
    } else {
        crate::out::say!("  veer events on the west node:");
        for line in lines {
            crate::out::say!("    {line}");
        }
    }
    crate::out::say!();
    if errors == 0 {
        crate::out::say!("zero errors: every request got an answer while west went down and came back");
        return ExitCode::SUCCESS;
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for s in report.samples.iter().filter(|s| is_error(s)) {
        let reason = match (&s.error, s.status) {
            (Some(e), _) => e.clone(),
            (None, Some(code)) => format!("status {code}"),
            (None, None) => "no answer".to_string(),
        };
        *reasons.entry(reason).or_insert(0) += 1;
    }
    eprintln!("veer demo: {errors} of {total} requests failed (no answer, or a 5xx):");
    for (reason, n) in reasons {
        eprintln!("  {n} × {reason}");
    }
    ExitCode::from(1)
}
