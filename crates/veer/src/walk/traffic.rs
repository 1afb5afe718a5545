//! A client of a walk: steady requests through one veer node, every answer kept, so a step can
//! ask "who answered lately", wait until the answers look as the seed says, and count errors.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use veer_testkit::{LoadSpec, Sample};

use super::Walk;

/// A walk never runs this long; the client stops by itself after it whatever happens.
const LONGEST: Duration = Duration::from_secs(240);
/// How far back "lately" looks, and how long a wanted split must hold to count as reached.
pub const WINDOW: Duration = Duration::from_millis(500);
/// The resolution of a measured switch time.
const STEP_BACK: Duration = Duration::from_millis(10);

/// A running client.
pub struct Traffic {
    name: String,
    started: Instant,
    /// (completed at, sample), in completion order.
    answers: Arc<Mutex<Vec<(Duration, Sample)>>>,
    collector: JoinHandle<()>,
    load: JoinHandle<veer_testkit::LoadReport>,
}

/// Who answered a set of requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub by_backend: BTreeMap<String, usize>,
    /// No answer, or a 5xx.
    pub errors: usize,
    pub total: usize,
}

impl Split {
    /// The share of answers from backends whose name `pick` accepts, in [0, 1].
    pub fn share(&self, pick: impl Fn(&str) -> bool) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let n: usize = self.by_backend.iter().filter(|(name, _)| pick(name)).map(|(_, n)| n).sum();
        n as f64 / self.total as f64
    }

    /// Every answer came from a backend whose name starts with one of `prefixes`, without error.
    pub fn all_from(&self, prefixes: &[&str]) -> bool {
        self.total > 0 && self.errors == 0 && self.share(|name| prefixes.iter().any(|p| name.starts_with(p))) >= 1.0
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.by_backend.iter().map(|(name, n)| format!("{name} {:.0}%", *n as f64 * 100.0 / self.total.max(1) as f64)).collect();
        let who = if parts.is_empty() { "no answers".to_string() } else { parts.join(", ") };
        write!(f, "{who} ({} requests, {} errors)", self.total, self.errors)
    }
}

impl Traffic {
    /// Starts sending `rate` GETs per second of `path` with Host `host` to a node's `target`.
    pub fn start(name: &str, target: SocketAddr, host: &str, path: &str, rate: u32) -> Traffic {
        let spec = LoadSpec {
            target,
            host: host.to_string(),
            path: path.to_string(),
            method: Default::default(),
            rate_per_sec: rate,
            duration: LONGEST,
            connections: usize::try_from(rate / 10).unwrap_or(64).clamp(4, 64),
            timeout: Duration::from_secs(2),
            http2: false,
        };
        // Room for every sample, so none is dropped (run_live drops when the channel is full).
        let capacity = usize::try_from(u64::from(rate) * LONGEST.as_secs()).unwrap_or(1 << 20).clamp(64, 1 << 20);
        let (tx, mut rx) = mpsc::channel::<Sample>(capacity);
        let answers = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&answers);
        let collector = tokio::spawn(async move {
            while let Some(sample) = rx.recv().await {
                let done = sample.sent_at + sample.latency;
                sink.lock().unwrap_or_else(|p| p.into_inner()).push((done, sample));
            }
        });
        let load = tokio::spawn(veer_testkit::run_live(spec, tx));
        Traffic { name: name.to_string(), started: crate::clock::now(), answers, collector, load }
    }

    /// Time since the client started, on the clock of its samples.
    pub fn now(&self) -> Duration {
        crate::clock::since(self.started)
    }

    /// Who answered the requests that completed in `[from, to)`.
    pub fn split(&self, from: Duration, to: Duration) -> Split {
        split_of(&self.answers, from, to)
    }

    /// Who answered in the last [`WINDOW`].
    pub fn lately(&self) -> Split {
        let now = self.now();
        self.split(now.saturating_sub(WINDOW), now)
    }

    /// Every request since `from`.
    pub fn since(&self, from: Duration) -> Split {
        self.split(from, Duration::MAX)
    }

    /// How long after `from` the first answer from a backend whose name `pick` accepts came,
    /// if one did.
    pub fn first_from(&self, from: Duration, pick: impl Fn(&str) -> bool) -> Option<Duration> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .iter()
            .filter(|(done, s)| *done >= from && s.backend.as_deref().is_some_and(&pick))
            .map(|(done, _)| done.saturating_sub(from))
            .min()
    }

    /// Waits until the answers of a whole [`WINDOW`] satisfy `wanted` (at least five of them),
    /// showing the live split meanwhile. Returns how long after `from` the answers began to be as
    /// wanted for good (to 10 ms), or `None` after `timeout`.
    pub async fn settle(&self, walk: &mut Walk, from: Duration, timeout: Duration, wanted: impl Fn(&Split) -> bool) -> Option<Duration> {
        let deadline = crate::clock::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let now = self.now();
            let start = now.saturating_sub(WINDOW).max(from);
            let split = self.split(start, now);
            walk.live(&format!("{} at +{:.1}s: {split}", self.name, now.saturating_sub(from).as_secs_f64()));
            if now >= from + WINDOW && split.total >= 5 && wanted(&split) {
                // Since when has every answer been as wanted? Walk back in small steps.
                let mut since = start;
                while since >= from + STEP_BACK && wanted(&self.split(since - STEP_BACK, now)) {
                    since -= STEP_BACK;
                }
                return Some(since.saturating_sub(from));
            }
            if crate::clock::now() >= deadline {
                return None;
            }
        }
    }

    /// Lets the client run for `d` and returns who answered then.
    pub async fn watch(&self, walk: &mut Walk, d: Duration) -> Split {
        let from = self.now();
        let end = crate::clock::now() + d;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while crate::clock::now() < end {
            tick.tick().await;
            walk.live(&format!("{}: {}", self.name, self.split(from, self.now())));
        }
        self.split(from, self.now())
    }

    /// Stops the client and adds its totals to the walk's (errors fail the walk). Requests still
    /// in flight at the stop are not counted: the stop cut them, not veer.
    pub async fn stop(self, walk: &mut Walk) -> Split {
        self.load.abort();
        let _ = self.load.await;
        let _ = self.collector.await;
        let split = split_of(&self.answers, Duration::ZERO, Duration::MAX);
        walk.count_traffic(split.total, split.errors);
        split
    }
}

fn split_of(answers: &Mutex<Vec<(Duration, Sample)>>, from: Duration, to: Duration) -> Split {
    let answers = answers.lock().unwrap_or_else(|p| p.into_inner());
    let mut split = Split::default();
    for (_, s) in answers.iter().filter(|(done, _)| *done >= from && *done < to) {
        split.total += 1;
        if s.status.is_none_or(|code| code >= 500) {
            split.errors += 1;
        }
        if let Some(name) = &s.backend {
            *split.by_backend.entry(name.clone()).or_insert(0) += 1;
        }
    }
    split
}
