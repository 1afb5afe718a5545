//! Access logs: one line per request, as JSON or in Envoy's default text format, written by a
//! thread of their own from a bounded queue, so the request path never waits on a disk.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Version};
use prometheus_client::metrics::counter::Counter;
use veer_core::outcome::TryEnd;

use crate::clock;
use crate::snapshot::DestState;

/// Lines waiting for the writer at most, by default; past it lines are dropped and counted
/// (`veer_access_log_dropped`), never waited for.
pub const QUEUE_LINES: usize = 8192;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Envoy's default format string, followed by veer's own fields.
    Envoy,
}

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    /// Appended to (created if missing).
    File(PathBuf),
}

/// An access log as `veer run` asks for it.
#[derive(Clone, Debug)]
pub struct AccessLogConfig {
    pub target: AccessLogTarget,
    pub format: AccessLogFormat,
    /// The share of requests logged, in [0, 1]: 1 logs every request, 0 none.
    pub sample: f64,
    /// Lines waiting for the writer at most ([`QUEUE_LINES`]).
    pub queue_lines: usize,
}

impl AccessLogConfig {
    pub fn new(target: AccessLogTarget, format: AccessLogFormat, sample: f64) -> AccessLogConfig {
        AccessLogConfig { target, format, sample, queue_lines: QUEUE_LINES }
    }
}

/// Why the access log could not start.
#[derive(Debug)]
pub enum AccessLogError {
    Open { path: PathBuf, source: io::Error },
    Thread(io::Error),
    Sample(f64),
}

impl std::fmt::Display for AccessLogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogError::Open { path, source } => write!(f, "cannot open the access log {}: {source}", path.display()),
            AccessLogError::Thread(e) => write!(f, "cannot start the access log's writer thread: {e}"),
            AccessLogError::Sample(r) => write!(f, "access log sample rate {r} is not between 0 and 1"),
        }
    }
}

impl std::error::Error for AccessLogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AccessLogError::Open { source, .. } | AccessLogError::Thread(source) => Some(source),
            AccessLogError::Sample(_) => None,
        }
    }
}

/// A running access log: the request path's end of the queue to its writer thread.
pub struct AccessLog {
    tx: SyncSender<Box<Entry>>,
    sample: f64,
    dropped: Counter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").field("sample", &self.sample).finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Opens the target and starts the writer thread (`veer-access-log`), which ends once
    /// every handle to the log is gone, after writing what was queued. `dropped` counts the
    /// lines the full queue refused.
    pub fn start(cfg: &AccessLogConfig, dropped: Counter) -> Result<AccessLog, AccessLogError> {
        if !(0.0..=1.0).contains(&cfg.sample) {
            return Err(AccessLogError::Sample(cfg.sample));
        }
        let out: Box<dyn Write + Send> = match &cfg.target {
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError::Open { path: path.clone(), source })?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(cfg.queue_lines.max(1));
        let format = cfg.format;
        std::thread::Builder::new()
            .name("veer-access-log".into())
            .spawn(move || write_lines(rx, io::BufWriter::with_capacity(64 * 1024, out), format))
            .map_err(AccessLogError::Thread)?;
        Ok(AccessLog { tx, sample: cfg.sample, dropped })
    }

    /// Whether this request is logged (a random draw, unless every request or none is).
    pub fn sampled(&self) -> bool {
        self.sample >= 1.0 || (self.sample > 0.0 && clock::random_f64() < self.sample)
    }

    /// What a line records of the request as it came in (before veer changed anything).
    pub(crate) fn begin<B>(req: &http::Request<B>) -> Box<Entry> {
        let header = |name: &HeaderName| req.headers().get(name).cloned();
        let authority = match req.uri().authority() {
            Some(a) => Some(HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static("-"))),
            None => header(&header::HOST),
        };
        Box::new(Entry {
            start: clock::wall_now(),
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            version: req.version(),
            authority,
            x_forwarded_for: header(&X_FORWARDED_FOR),
            user_agent: header(&header::USER_AGENT),
            request_id: header(&X_REQUEST_ID),
            bytes_received: 0,
            status: 0,
            flags: Flags::NONE,
            bytes_sent: 0,
            duration: Duration::ZERO,
            dest: None,
            answered_by: None,
            attempts: 0,
            retried_for: None,
        })
    }

    /// Queues a finished line; a full queue drops it (counted): the request path never waits.
    pub(crate) fn send(&self, entry: Box<Entry>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(entry) {
            self.dropped.inc();
        }
    }
}

/// What the request path learnt of a request, for its line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Served {
    /// The endpoint (an index into the destination's upstreams) whose answer or failure the
    /// response carries.
    pub answered_by: Option<usize>,
    /// Tries made.
    pub attempts: u32,
    /// How the try before the last retry ended.
    pub retried_for: Option<TryEnd>,
    pub flags: Flags,
    /// Bytes of request body read from the client.
    pub received: u64,
}

impl Served {
    pub(crate) fn flagged(flags: Flags) -> Served {
        Served { flags, ..Served::default() }
    }
}

/// Envoy's response flags that veer can set, as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u16);

impl Flags {
    pub const NONE: Flags = Flags(0);
    /// No healthy upstream.
    pub const UH: Flags = Flags(1);
    /// Upstream connection failure.
    pub const UF: Flags = Flags(1 << 1);
    /// Upstream overflow: a circuit breaker.
    pub const UO: Flags = Flags(1 << 2);
    /// No route.
    pub const NR: Flags = Flags(1 << 3);
    /// The retries ran out (or were not allowed) and the request failed.
    pub const URX: Flags = Flags(1 << 4);
    /// Upstream request timeout.
    pub const UT: Flags = Flags(1 << 5);
    /// Upstream connection termination.
    pub const UC: Flags = Flags(1 << 6);
    /// Downstream connection termination: the client left before the response ended.
    pub const DC: Flags = Flags(1 << 7);
    /// Downstream protocol error: the request broke HTTP's rules.
    pub const DPE: Flags = Flags(1 << 8);
    /// Upstream protocol error.
    pub const UPE: Flags = Flags(1 << 9);
    /// Stream idle timeout: the client's upload stalled.
    pub const SI: Flags = Flags(1 << 10);
    /// Overload: the node's cap on requests in flight.
    pub const OM: Flags = Flags(1 << 11);

    const NAMES: [(Flags, &'static str); 12] = [
        (Flags::UH, "UH"),
        (Flags::UF, "UF"),
        (Flags::UO, "UO"),
        (Flags::NR, "NR"),
        (Flags::URX, "URX"),
        (Flags::UT, "UT"),
        (Flags::UC, "UC"),
        (Flags::DC, "DC"),
        (Flags::DPE, "DPE"),
        (Flags::UPE, "UPE"),
        (Flags::SI, "SI"),
        (Flags::OM, "OM"),
    ];

    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flag a failed try's end sets.
    pub fn of(end: TryEnd) -> Flags {
        match end {
            TryEnd::Response(_) => Flags::NONE,
            TryEnd::ConnectRefused | TryEnd::ConnectTimeout | TryEnd::LocalResources => Flags::UF,
            TryEnd::UpstreamReset => Flags::UC,
            TryEnd::UpstreamMalformed => Flags::UPE,
            TryEnd::UpstreamTimeout => Flags::UT,
            TryEnd::ClientBodyMalformed => Flags::DPE,
            TryEnd::ClientAborted => Flags::DC,
            TryEnd::ClientUploadTimeout => Flags::SI,
            TryEnd::LocalOverflow => Flags::UO,
        }
    }

    /// Envoy's spelling: the flags joined by commas, `-` for none.
    fn write(self, out: &mut String) {
        let start = out.len();
        for (flag, name) in Flags::NAMES {
            if self.contains(flag) {
                if out.len() > start {
                    out.push(',');
                }
                out.push_str(name);
            }
        }
        if out.len() == start {
            out.push('-');
        }
    }
}

/// One request's line, filled in as the request goes.
pub struct Entry {
    start: SystemTime,
    method: Method,
    path: Option<http::uri::PathAndQuery>,
    version: Version,
    authority: Option<HeaderValue>,
    x_forwarded_for: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    bytes_received: u64,
    status: u16,
    flags: Flags,
    bytes_sent: u64,
    duration: Duration,
    /// The destination routed to: its name, and the names of its endpoints, are read by the
    /// writer thread, not copied on the request path.
    dest: Option<Arc<DestState>>,
    answered_by: Option<usize>,
    attempts: u32,
    retried_for: Option<TryEnd>,
}

impl Entry {
    /// Records how the request was served; the line is sent once the response body is done.
    pub(crate) fn served(mut self: Box<Self>, dest: Option<Arc<DestState>>, served: Served, status: http::StatusCode) -> Box<Entry> {
        self.dest = dest;
        self.answered_by = served.answered_by;
        self.attempts = served.attempts;
        self.retried_for = served.retried_for;
        self.flags = served.flags;
        self.bytes_received = served.received;
        self.status = status.as_u16();
        self
    }

    /// Records how the response went: its body's bytes, the request's whole time, and whether
    /// the client left before the body ended.
    pub(crate) fn finished(&mut self, bytes_sent: u64, duration: Duration, client_left: bool) {
        self.bytes_sent = bytes_sent;
        self.duration = duration;
        if client_left {
            self.flags = self.flags.union(Flags::DC);
        }
    }
}

/// The writer thread: formats and writes lines as they come, flushing whenever the queue is
/// empty, so a line is on disk (or stdout) moments after its request ended.
fn write_lines(rx: Receiver<Box<Entry>>, mut out: impl Write, format: AccessLogFormat) {
    let mut line = String::with_capacity(512);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(entry) = next {
            line.clear();
            match format {
                AccessLogFormat::Json => json_line(&mut line, &entry),
                AccessLogFormat::Envoy => envoy_line(&mut line, &entry),
            }
            line.push('\n');
            let written = out.write_all(line.as_bytes());
            report_write(&mut failing, written);
            next = rx.try_recv().ok();
        }
        report_write(&mut failing, out.flush());
    }
}

/// Logs the first of a run of write failures (a full disk would otherwise log one per line).
fn report_write(failing: &mut bool, result: io::Result<()>) {
    match result {
        Ok(()) => *failing = false,
        Err(e) if !*failing => {
            *failing = true;
            tracing::warn!(target: "veer::access_log", "writing the access log failed: {e}");
        }
        Err(_) => {}
    }
}

/// `2016-04-15T20:17:00.310Z`, as Envoy's `%START_TIME%`.
fn start_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// What a line says of the destination and the endpoint that answered.
struct Routed<'a> {
    destination: Option<&'a str>,
    /// Formatted here, on the writer's thread: endpoint keys are addresses, not strings.
    upstream_host: Option<String>,
    cluster: Option<&'a str>,
    priority: Option<usize>,
}

fn routed(e: &Entry) -> Routed<'_> {
    let upstream = e.dest.as_ref().zip(e.answered_by).and_then(|(d, i)| d.upstreams.get(i));
    Routed {
        destination: e.dest.as_ref().map(|d| &*d.key),
        upstream_host: upstream.map(|u| u.key.to_string()),
        cluster: upstream.map(|u| &*u.cluster),
        priority: upstream.map(|u| u.priority),
    }
}

fn lossy(v: &Option<HeaderValue>) -> Option<std::borrow::Cow<'_, str>> {
    v.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()))
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    start_time: String,
    method: &'a str,
    path: Option<&'a str>,
    protocol: &'static str,
    response_code: u16,
    response_flags: String,
    bytes_received: u64,
    bytes_sent: u64,
    /// Milliseconds, as Envoy's `%DURATION%`.
    duration: u64,
    upstream_host: Option<String>,
    x_forwarded_for: Option<std::borrow::Cow<'a, str>>,
    user_agent: Option<std::borrow::Cow<'a, str>>,
    request_id: Option<std::borrow::Cow<'a, str>>,
    authority: Option<std::borrow::Cow<'a, str>>,
    destination: Option<&'a str>,
    cluster: Option<&'a str>,
    priority: Option<usize>,
    attempts: u32,
    retry_reason: Option<&'static str>,
}

fn json_line(out: &mut String, e: &Entry) {
    let r = routed(e);
    let mut flags = String::new();
    e.flags.write(&mut flags);
    let line = JsonLine {
        start_time: start_time(e.start),
        method: e.method.as_str(),
        path: e.path.as_ref().map(|p| p.as_str()),
        protocol: protocol(e.version),
        response_code: e.status,
        response_flags: flags,
        bytes_received: e.bytes_received,
        bytes_sent: e.bytes_sent,
        duration: u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
        upstream_host: r.upstream_host,
        x_forwarded_for: lossy(&e.x_forwarded_for),
        user_agent: lossy(&e.user_agent),
        request_id: lossy(&e.request_id),
        authority: lossy(&e.authority),
        destination: r.destination,
        cluster: r.cluster,
        priority: r.priority,
        attempts: e.attempts,
        retry_reason: e.retried_for.map(TryEnd::name),
    };
    // Serializing plain strings and numbers into a String cannot fail.
    if let Ok(s) = serde_json::to_string(&line) {
        out.push_str(&s);
    }
}

/// Envoy's default format:
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
/// %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
/// "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
/// "%UPSTREAM_HOST%"`, then veer's own: `"destination" "cluster" priority attempts retry_reason`.
/// veer sets no upstream service time: that field is always `-`. Values a client sent are
/// escaped (`"`, `\`, control and non-ASCII bytes as `\xNN`), so no line can be forged.
fn envoy_line(out: &mut String, e: &Entry) {
    use std::fmt::Write as _;
    let r = routed(e);
    let _ = write!(out, "[{}] \"{} ", start_time(e.start), e.method.as_str());
    quoted_value(out, e.path.as_ref().map(|p| p.as_str().as_bytes()));
    let _ = write!(out, " {}\" {} ", protocol(e.version), e.status);
    e.flags.write(out);
    let _ = write!(out, " {} {} {} - ", e.bytes_received, e.bytes_sent, e.duration.as_millis());
    for v in [&e.x_forwarded_for, &e.user_agent, &e.request_id, &e.authority] {
        out.push('"');
        quoted_value(out, v.as_ref().map(HeaderValue::as_bytes));
        out.push_str("\" ");
    }
    for v in [r.upstream_host.as_deref(), r.destination, r.cluster] {
        out.push('"');
        quoted_value(out, v.map(str::as_bytes));
        out.push_str("\" ");
    }
    match r.priority {
        Some(p) => {
            let _ = write!(out, "{p} ");
        }
        None => out.push_str("- "),
    }
    let _ = write!(out, "{} {}", e.attempts, e.retried_for.map_or("-", TryEnd::name));
}

/// A value as Envoy prints it (`-` when missing or empty), escaped.
fn quoted_value(out: &mut String, v: Option<&[u8]>) {
    use std::fmt::Write as _;
    match v {
        None | Some([]) => out.push('-'),
        Some(bytes) => {
            for &b in bytes {
                match b {
                    b'"' | b'\\' => {
                        out.push('\\');
                        out.push(char::from(b));
                    }
                    0x20..=0x7e => out.push(char::from(b)),
                    _ => {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let req = http::Request::builder()
            .uri("/a?b=1")
            .header("host", "go.infra.global")
            .header("user-agent", "ua \"quoted\"\t\u{e9}")
            .header("x-request-id", "r1")
            .body(())
            .unwrap();
        let mut e = *AccessLog::begin(&req);
        e.start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_460_751_420_310);
        e.status = 503;
        e.flags = Flags::UF.union(Flags::URX);
        e.bytes_sent = 19;
        e.duration = Duration::from_millis(4);
        e.attempts = 2;
        e.retried_for = Some(TryEnd::ConnectRefused);
        e
    }

    #[test]
    fn envoy_lines_follow_envoys_default_format_and_escape_what_clients_sent() {
        let mut out = String::new();
        envoy_line(&mut out, &entry());
        assert_eq!(
            out,
            r#"[2016-04-15T20:17:00.310Z] "GET /a?b=1 HTTP/1.1" 503 UF,URX 0 19 4 - "-" "ua \"quoted\"\x09\xc3\xa9" "r1" "go.infra.global" "-" "-" "-" - 2 connect_failure"#
        );
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut out = String::new();
        json_line(&mut out, &entry());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["start_time"], "2016-04-15T20:17:00.310Z");
        assert_eq!(v["response_flags"], "UF,URX");
        assert_eq!(v["user_agent"], "ua \"quoted\"\t\u{e9}");
        assert_eq!(v["path"], "/a?b=1");
        assert_eq!(v["retry_reason"], "connect_failure");
        assert!(v["upstream_host"].is_null() && v["x_forwarded_for"].is_null());
        let mut none = String::new();
        Flags::NONE.write(&mut none);
        assert_eq!(none, "-");
    }
}
