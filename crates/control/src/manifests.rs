//! The manifest watcher: on a thread of its own, below the workers' priority, it notices changed
//! manifest files, reads and checks them once they are complete, and hands the control loop
//! each set that passes (or why one did not), so that reading 10,000 resources neither stalls
//! the control loop's failure handling nor takes CPU time the workers need. On Linux, inotify
//! wakes it as soon as a file is closed after writing, renamed into place or removed, and tells
//! it which files a writer still has open: the set is not read while one is. It also looks
//! every `reload_every`, for file systems inotify does not see; there a changed file is read
//! once its metadata has held still for [`ready::SETTLE`].

pub mod ready;
pub mod writers;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock;
use crate::external::Documents;

use tokio::sync::mpsc;
use veer_core::topology::Labels;
use veer_model::files::FileStamp;
use veer_model::set::ManifestSet;

use ready::{Change, Gate, Phase, Wait};

/// Looks at the manifest files' metadata between two full reads of their contents.
const READ_ANYWAY_EVERY: u32 = 20;

/// How much lower than the workers the watcher runs (a nice value). At 10 it gets about a tenth
/// of a CPU that a worker also wants, so a reload at scale still lands within seconds while
/// the workers keep almost all of their time.
const NICENESS: i32 = 10;

/// What the watcher found in changed files.
#[derive(Debug)]
pub enum Reload {
    /// A set that passed every check: the control loop puts it in force. Boxed: it is large,
    /// and it only passes through the channel.
    Accepted(Box<ManifestSet>),
    /// Files that could not be read or did not pass; the set in force stays. Every error, each
    /// with its location, joined with ` | ` for the event an operator reads.
    Rejected(String),
}

/// What the node started with: the sources of the set in force and the files' metadata taken
/// before they were read (`None`: unknown, so every file settles before its first read).
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    pub sources: Vec<(String, String)>,
    pub stamps: Option<Vec<FileStamp>>,
}

/// Checks `sources` exactly as `veer validate` does, and that `cluster` can be served from
/// them: the set, or every error with its location.
pub fn check(sources: &[(String, String)], cluster: &str, labels: &Labels) -> Result<ManifestSet, Vec<String>> {
    let accepted = veer_model::from_sources(sources).map_err(|r| r.errors().map(|d| d.to_string()).collect::<Vec<_>>())?;
    veer_model::resolve::client(accepted.set(), cluster, labels).map_err(|e| vec![e.to_string()])?;
    Ok(accepted.into_set())
}

/// The watcher's pulse, shared with `/ready` and the metrics: whether its thread runs and when
/// it last looked at the files.
#[derive(Debug)]
pub struct WatcherHealth {
    base: Instant,
    phase: AtomicU8,
    /// Milliseconds from `base` to the last look.
    last_look_ms: AtomicU64,
    every_ms: AtomicU64,
    /// Files the next read waits for (open for writing).
    waiting: AtomicU64,
}

impl Default for WatcherHealth {
    fn default() -> Self {
        WatcherHealth::new()
    }
}

impl WatcherHealth {
    pub fn new() -> WatcherHealth {
        WatcherHealth {
            base: clock::now(),
            phase: AtomicU8::new(0),
            last_look_ms: AtomicU64::new(0),
            every_ms: AtomicU64::new(100),
            waiting: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(clock::since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    fn start(&self, every: Duration) {
        self.every_ms.store(u64::try_from(every.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.beat();
        self.phase.store(1, Ordering::Release);
    }

    fn beat(&self) {
        self.last_look_ms.store(self.elapsed_ms(), Ordering::Release);
    }

    /// The watcher's thread ended (or never started): manifest changes are no longer applied.
    pub fn end(&self) {
        self.phase.store(2, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Ended,
        }
    }

    /// `Ok` while the watcher runs and looks; why not otherwise (see [`ready::liveness`]).
    pub fn check(&self) -> Result<(), ready::WatcherDown> {
        let ms = Duration::from_millis;
        ready::liveness(
            self.phase(),
            ms(self.last_look_ms.load(Ordering::Acquire)),
            ms(self.elapsed_ms()),
            ms(self.every_ms.load(Ordering::Relaxed)),
        )
    }

    /// Time since the last look.
    pub fn last_look_age(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms().saturating_sub(self.last_look_ms.load(Ordering::Acquire)))
    }

    /// Manifest files open for writing that the next read waits for.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Marks the watcher ended when its thread ends, however it ends.
struct EndOnDrop(Arc<WatcherHealth>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The watcher's state: what it last looked at and last read.
pub struct Watcher {
    files: Vec<PathBuf>,
    cluster: String,
    labels: Labels,
    every: Duration,
    /// The contents read last (or a marker for the last read error), compared with the next
    /// read so that an unchanged file set costs no parse.
    sources: Vec<(String, String)>,
    stamps: Option<Vec<FileStamp>>,
    looks_since_read: u32,
    gate: Gate,
    /// Whether `spawn` asks inotify (off: the polling look alone, as on file systems inotify
    /// does not see).
    inotify: bool,
    notifier: Option<Notifier>,
    health: Arc<WatcherHealth>,
    /// Where each accepted set is saved (`veer run --state-dir`).
    state_dir: Option<PathBuf>,
    clock: Instant,
    /// The files the set waits for, as last logged, so a wait is logged once.
    logged_wait: Vec<PathBuf>,
    warned_writer: bool,
    /// Manifests from outside the files (an API server), checked with them as one set.
    outside: Option<tokio::sync::watch::Receiver<Option<Documents>>>,
    /// The outside documents last taken, and whether they changed since the last check.
    outside_now: Documents,
    outside_pending: bool,
}

impl Watcher {
    /// A watcher of `files`, which the node started from as `baseline` says.
    pub fn new(files: Vec<PathBuf>, cluster: String, labels: Labels, every: Duration, baseline: Baseline) -> Watcher {
        let gate = match &baseline.stamps {
            Some(stamps) => Gate::with_baseline(ready::SETTLE, stamps),
            None => Gate::new(ready::SETTLE),
        };
        Watcher {
            files,
            cluster,
            labels,
            every,
            sources: baseline.sources,
            stamps: baseline.stamps,
            looks_since_read: 0,
            gate,
            inotify: true,
            notifier: None,
            health: Arc::new(WatcherHealth::new()),
            state_dir: None,
            clock: clock::now(),
            logged_wait: Vec::new(),
            warned_writer: false,
            outside: None,
            outside_now: Documents::default(),
            outside_pending: false,
        }
    }

    /// Checks the files together with `documents` (an API server's manifests), and again
    /// whenever either changes. The node checked the two at start: until they change, no read.
    pub fn with_outside(mut self, mut documents: tokio::sync::watch::Receiver<Option<Documents>>) -> Watcher {
        self.outside_now = documents.borrow_and_update().clone().unwrap_or_default();
        self.outside = Some(documents);
        self
    }

    /// Takes in a change of the outside documents, if any.
    fn take_outside(&mut self) {
        if let Some(rx) = &mut self.outside {
            if rx.has_changed().unwrap_or(false) {
                if let Some(docs) = rx.borrow_and_update().clone() {
                    self.outside_now = docs;
                    self.outside_pending = true;
                }
            }
        }
    }

    /// The files' sources and the outside ones, as the set is checked from.
    fn all_sources(&self) -> Vec<(String, String)> {
        crate::external::combined(&self.sources, &self.outside_now)
    }

    /// Reports the watcher's pulse to `health` (shared with `/ready` and the metrics).
    pub fn with_health(mut self, health: Arc<WatcherHealth>) -> Watcher {
        self.health = health;
        self
    }

    /// Saves every set it accepts in `dir` (see [`crate::state`]).
    pub fn with_state_dir(mut self, dir: Option<PathBuf>) -> Watcher {
        self.state_dir = dir;
        self
    }

    /// Looks only, without inotify: what a node on a file system inotify does not see does.
    pub fn without_inotify(mut self) -> Watcher {
        self.inotify = false;
        self
    }

    /// How long a change inotify did not explain must hold still before it is read.
    pub fn with_settle(mut self, settle: Duration) -> Watcher {
        let stamps = self.stamps.clone().unwrap_or_default();
        self.gate = if self.stamps.is_some() { Gate::with_baseline(settle, &stamps) } else { Gate::new(settle) };
        self
    }

    /// Starts the watcher's thread. It sends what it finds to `found` and ends when `stop`'s
    /// sender is dropped (or no one receives any more). Its inotify watches are in place when
    /// this returns, so any change made after wakes it.
    pub fn spawn(mut self, found: mpsc::Sender<Reload>, stop: std_mpsc::Receiver<()>) -> std::io::Result<()> {
        if self.inotify {
            self.notifier = Notifier::new(&self.files)
                .inspect_err(|e| tracing::warn!(target: "veer::reload", "manifest changes are noticed by looking every {:?} only, and a changed file is read once it held still for {:?}: {e}", self.every, ready::SETTLE))
                .ok();
        }
        let health = self.health.clone();
        health.start(self.every);
        std::thread::Builder::new()
            .name("veer-manifests".into())
            .spawn(move || self.run(found, stop))
            .map(drop)
            .inspect_err(|_| health.end())
    }

    fn now(&self) -> Duration {
        clock::since(self.clock)
    }

    fn run(mut self, found: mpsc::Sender<Reload>, stop: std_mpsc::Receiver<()>) {
        let _end = EndOnDrop(self.health.clone());
        lower_priority();
        loop {
            // Woken early or not, the files' metadata says whether a manifest changed: a wake-up
            // may be for another file of a watched directory.
            let changes = match &mut self.notifier {
                Some(n) => n.wait(self.every, &self.files),
                None => {
                    std::thread::sleep(self.every);
                    Vec::new()
                }
            };
            let now = self.now();
            for c in changes {
                self.gate.note(c, now);
            }
            if !matches!(stop.try_recv(), Err(std_mpsc::TryRecvError::Empty)) {
                return;
            }
            self.health.beat();
            if let Some(reload) = self.look_guarded(now) {
                let accepted = matches!(reload, Reload::Accepted(_));
                if found.blocking_send(reload).is_err() {
                    return;
                }
                if accepted {
                    self.save_state();
                }
            }
            self.health.beat();
        }
    }

    /// Keeps the set just accepted in the state directory, off the control loop's thread.
    fn save_state(&self) {
        if let Some(dir) = &self.state_dir {
            if let Err(e) = crate::state::save(dir, &self.all_sources()) {
                tracing::warn!(target: "veer::reload", "the accepted manifests could not be saved for a restart: {e}");
            }
        }
    }

    /// Takes in what inotify has queued since, without waiting.
    fn pump(&mut self, now: Duration) {
        if let Some(n) = &mut self.notifier {
            for c in n.pending() {
                self.gate.note(c, now);
            }
        }
    }

    /// [`Self::look_at`], with a panic turned into a rejection (see [`rejecting_panics`]).
    fn look_guarded(&mut self, now: Duration) -> Option<Reload> {
        rejecting_panics(|| self.look_at(now))
    }

    /// One look at the files now: `None` when nothing changed, a file is not ready yet, or an
    /// error repeats.
    pub fn look(&mut self) -> Option<Reload> {
        let now = self.now();
        self.look_at(now)
    }

    /// One look at the files at `now` (time since the watcher was made).
    pub fn look_at(&mut self, now: Duration) -> Option<Reload> {
        self.pump(now);
        self.take_outside();
        // Metadata first: most looks find nothing changed and read nothing. Every so often the
        // files are read anyway, for a change that kept a file's size, time and inode.
        let stamps = veer_model::files::fingerprint(&self.files).ok();
        self.looks_since_read += 1;
        if let Some(stamps) = &stamps {
            // A file still being written, or changed too recently with no word that its writer
            // is done, holds the whole set back (see `Gate`).
            let waits = self.gate.judge(stamps, now);
            self.report_waits(&waits, now);
            if !waits.is_empty() {
                return None;
            }
        }
        if stamps.is_some() && stamps == self.stamps && self.looks_since_read < READ_ANYWAY_EVERY && !self.outside_pending {
            return None;
        }
        // What inotify cannot have said (its queue overflowed, or the file system is one it does
        // not see): a process of this machine with a file open for writing holds the set back.
        let writers = stamps.as_deref().map(writers::open_for_writing).unwrap_or_default();
        if !writers.is_empty() {
            tracing::debug!(target: "veer::reload", "manifests still open for writing: {}", writers::describe(&writers));
            return None;
        }
        let read = veer_model::files::read_paths(&self.files);
        // Nothing may have changed while the files were read: a write that began meanwhile
        // (inotify says so, or the metadata moved) is read once it is done.
        self.pump(now);
        let after = veer_model::files::fingerprint(&self.files).ok();
        if after != stamps || stamps.as_ref().is_some_and(|s| self.gate.writing(s)) {
            return None;
        }
        self.stamps = stamps;
        self.looks_since_read = 0;
        let sources = match read {
            Ok(s) => s,
            Err(e) => {
                // Said once per distinct error, not at every look.
                let e = e.to_string();
                let marker = vec![("<error>".to_string(), e.clone())];
                if self.sources == marker {
                    return None;
                }
                self.sources = marker;
                return Some(Reload::Rejected(e));
            }
        };
        if sources == self.sources && !self.outside_pending {
            return None;
        }
        self.sources = sources;
        self.outside_pending = false;
        match check(&self.all_sources(), &self.cluster, &self.labels) {
            Ok(set) => Some(Reload::Accepted(Box::new(set))),
            Err(errors) => {
                for e in &errors {
                    tracing::error!(target: "veer::reload", "{e}");
                }
                Some(Reload::Rejected(format!("{} error(s): {}", errors.len(), errors.join(" | "))))
            }
        }
    }

    /// Says once which files the set waits for, warns of a writer that keeps one open, and
    /// shows the count in the metrics.
    fn report_waits(&mut self, waits: &[Wait], now: Duration) {
        let writing: Vec<(PathBuf, Duration)> =
            waits.iter().filter_map(|w| if let Wait::Writing(p, since) = w { Some((p.clone(), *since)) } else { None }).collect();
        self.health.waiting.store(writing.len() as u64, Ordering::Relaxed);
        let names: Vec<PathBuf> = writing.iter().map(|(p, _)| p.clone()).collect();
        if names != self.logged_wait {
            if !names.is_empty() {
                tracing::info!(target: "veer::reload", "manifests are read once their writers close them: {} still open for writing", list(&names));
            }
            self.logged_wait = names;
            self.warned_writer = false;
        }
        let longest = writing.iter().map(|(_, since)| now.saturating_sub(*since)).max().unwrap_or_default();
        if !self.warned_writer && longest >= ready::WRITER_WARN_AFTER {
            self.warned_writer = true;
            tracing::warn!(target: "veer::reload", "{} open for writing for {:.0} s: no manifest change is applied until its writer closes it", list(&self.logged_wait), longest.as_secs_f64());
        }
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Runs one look with a panic in reading or checking turned into a rejection: the last good
/// set keeps serving and the operator hears of it, where a dead watcher would stop every later
/// reload without a word. The same files are not read again until they change.
fn rejecting_panics(look: impl FnOnce() -> Option<Reload>) -> Option<Reload> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(look)).unwrap_or_else(|panic| {
        let what =
            panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
        Some(Reload::Rejected(format!(
            "veer failed while reading the manifests ({what}); this is a bug in veer, please report it with the files"
        )))
    })
}

/// What inotify reports for the manifests, in every directory given and each given file's
/// directory: a file written to, closed after writing, moved in or out, created or deleted
/// (Kubernetes swaps a ConfigMap's files by renaming a link in their directory). A file written
/// to and not yet closed is one its writer is not done with.
#[cfg(target_os = "linux")]
struct Notifier {
    fd: rustix::fd::OwnedFd,
    buf: Vec<std::mem::MaybeUninit<u8>>,
    /// Each watch's directory, to name the files its events are about.
    dirs: std::collections::HashMap<i32, PathBuf>,
}

#[cfg(target_os = "linux")]
impl Notifier {
    /// After a first event, how long the files must be quiet before they are read: a burst
    /// (a `git checkout`, several files copied) is read once, complete.
    const SETTLE: Duration = Duration::from_millis(5);
    /// A burst that never ends is read after this.
    const SETTLE_AT_MOST: Duration = Duration::from_millis(100);

    fn new(files: &[PathBuf]) -> std::io::Result<Notifier> {
        use rustix::fs::inotify::{init, CreateFlags};
        let fd = init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        let mut notifier = Notifier { fd, buf: vec![std::mem::MaybeUninit::uninit(); 16 * 1024], dirs: Default::default() };
        notifier.watch(files);
        Ok(notifier)
    }

    /// Watches every directory that holds manifests. Called again after each change, so a new
    /// subdirectory is watched too (watching a directory twice keeps one watch); a directory
    /// that cannot be watched (gone, no permission) is still looked at.
    fn watch(&mut self, files: &[PathBuf]) {
        use rustix::fs::inotify::{add_watch, WatchFlags};
        let flags = WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF;
        for dir in veer_model::files::directories(files) {
            if let Ok(wd) = add_watch(&self.fd, &dir, flags) {
                self.dirs.insert(wd, dir);
            }
        }
    }

    /// Waits up to `timeout` for events; what they said about manifest files (nothing if none
    /// came), once the burst they began is over.
    fn wait(&mut self, timeout: Duration, files: &[PathBuf]) -> Vec<Change> {
        let mut changes = Vec::new();
        if !self.ready(timeout) {
            return changes;
        }
        let burst = clock::now();
        while self.drain(&mut changes) && clock::since(burst) < Self::SETTLE_AT_MOST && self.ready(Self::SETTLE) {}
        self.watch(files);
        changes
    }

    /// What is queued now, without waiting.
    fn pending(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        self.drain(&mut changes);
        changes
    }

    fn ready(&self, timeout: Duration) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let timeout = Timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
        matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
    }

    /// Reads every queued event into `out` (those about manifest files); false if none came.
    fn drain(&mut self, out: &mut Vec<Change>) -> bool {
        use rustix::fs::inotify::{ReadFlags, Reader};
        use std::os::unix::ffi::OsStrExt;
        let Notifier { fd, buf, dirs } = self;
        let mut reader = Reader::new(&*fd, &mut buf[..]);
        let mut any = false;
        // Ends with EAGAIN once the queue is empty (the descriptor does not block).
        while let Ok(event) = reader.next() {
            any = true;
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                out.push(Change::Lost);
                continue;
            }
            if flags.contains(ReadFlags::IGNORED) {
                dirs.remove(&event.wd());
                continue;
            }
            let (Some(name), Some(dir)) = (event.file_name(), dirs.get(&event.wd())) else { continue };
            let path = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            if flags.contains(ReadFlags::ISDIR) || !veer_model::files::is_manifest_name(&path) {
                continue;
            }
            if flags.contains(ReadFlags::MODIFY) {
                out.push(Change::Written(path));
            } else if flags.intersects(ReadFlags::CLOSE_WRITE | ReadFlags::MOVED_TO) {
                // As the file is now: a later write gives it another stamp, and must be closed too.
                let stamp = FileStamp::of(&path);
                out.push(Change::Closed(path, stamp));
            } else if flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM) {
                out.push(Change::Gone(path));
            }
        }
        any
    }
}

/// Elsewhere there is no inotify: the watcher looks every `reload_every`.
#[cfg(not(target_os = "linux"))]
struct Notifier;

#[cfg(not(target_os = "linux"))]
impl Notifier {
    fn new(_: &[PathBuf]) -> std::io::Result<Notifier> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no inotify on this system"))
    }

    fn wait(&mut self, _: Duration, _: &[PathBuf]) -> Vec<Change> {
        Vec::new()
    }

    fn pending(&mut self) -> Vec<Change> {
        Vec::new()
    }
}

/// Lowers the calling thread's priority (on Linux a nice value is a thread's own). A failure
/// only leaves the watcher at the workers' priority, so it is logged and otherwise ignored.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICENESS) {
        tracing::debug!(target: "veer::reload", "manifest watcher keeps the workers' priority: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veer_testkit::TempDir;

    fn watcher(dir: &std::path::Path) -> Watcher {
        // Settling is tested on its own below; here a change is read at the next look.
        Watcher::new(vec![dir.to_path_buf()], "default".into(), Labels::new(), Duration::from_millis(10), Baseline::default())
            .with_settle(Duration::ZERO)
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports: [{port: 80}]\n";

    #[test]
    fn a_changed_file_is_read_once_and_an_unchanged_one_not_again() {
        let dir = TempDir::new("watcher-change");
        std::fs::write(dir.path().join("a.yaml"), SERVICE).expect("write");
        let mut w = watcher(dir.path());
        assert!(matches!(w.look(), Some(Reload::Accepted(set)) if set.service("default", "shop", "web").is_some()));
        assert!(w.look().is_none(), "nothing changed since the last read");
        std::fs::write(dir.path().join("a.yaml"), SERVICE.replace("web", "shop-web")).expect("rewrite");
        assert!(matches!(w.look(), Some(Reload::Accepted(set)) if set.service("default", "shop", "shop-web").is_some()));
    }

    #[test]
    fn a_bad_file_is_rejected_with_its_location_and_the_same_error_is_said_once() {
        let dir = TempDir::new("watcher-bad");
        std::fs::write(dir.path().join("a.yaml"), SERVICE.replace("port: 80", "port: eighty")).expect("write");
        let mut w = watcher(dir.path());
        match w.look() {
            Some(Reload::Rejected(why)) => assert!(why.contains("a.yaml") && why.contains("port"), "names the file and field: {why}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(w.look().is_none(), "an unchanged bad file is not rejected again");
    }

    #[test]
    fn a_reload_of_a_file_that_is_not_utf8_is_rejected_at_its_first_bad_byte() {
        let dir = TempDir::new("watcher-not-utf8");
        std::fs::write(dir.path().join("a.yaml"), SERVICE).expect("write");
        let mut w = watcher(dir.path());
        assert!(matches!(w.look(), Some(Reload::Accepted(_))));
        // Latin-1 "é" (0xE9) in a name on line 3, after "metadata: {name: ".
        let mut bad = SERVICE.replace("web", "caf_").into_bytes();
        let at = bad.iter().position(|&b| b == b'_').expect("marker");
        bad[at] = 0xE9;
        std::fs::write(dir.path().join("a.yaml"), bad).expect("rewrite");
        let a = dir.path().join("a.yaml");
        match w.look() {
            Some(Reload::Rejected(why)) => assert!(why.starts_with(&format!("{}:3:21: error: not UTF-8", a.display())), "{why}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// With a look every 60 s, only inotify can explain a change read within seconds.
    #[cfg(target_os = "linux")]
    #[test]
    fn inotify_wakes_the_watcher_for_a_rename_into_place_and_for_a_rewrite() {
        let dir = TempDir::new("watcher-inotify");
        std::fs::write(dir.path().join("a.yaml"), SERVICE).expect("write");
        let mut w = watcher(dir.path());
        w.every = Duration::from_secs(60);
        let (found, mut rx) = mpsc::channel(1);
        let (_stop, stopped) = std_mpsc::channel();
        w.spawn(found, stopped).expect("spawn");
        let next = |rx: &mut mpsc::Receiver<Reload>| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.ok().flatten() })
        };
        // As an editor or a GitOps agent does: write aside, rename into place.
        std::fs::write(dir.path().join("a.yaml.tmp"), SERVICE.replace("web", "renamed")).expect("write aside");
        std::fs::rename(dir.path().join("a.yaml.tmp"), dir.path().join("a.yaml")).expect("rename");
        assert!(matches!(next(&mut rx), Some(Reload::Accepted(set)) if set.service("default", "shop", "renamed").is_some()));
        // Rewritten in place: read once the writer has closed it.
        std::fs::write(dir.path().join("a.yaml"), SERVICE.replace("web", "rewritten")).expect("rewrite");
        assert!(matches!(next(&mut rx), Some(Reload::Accepted(set)) if set.service("default", "shop", "rewritten").is_some()));
        // A new file in a new subdirectory of a watched directory.
        std::fs::create_dir(dir.path().join("more")).expect("mkdir");
        std::fs::write(dir.path().join("more/b.yaml"), SERVICE.replace("web", "added")).expect("write");
        assert!(matches!(next(&mut rx), Some(Reload::Accepted(set)) if set.service("default", "shop", "added").is_some()));
    }

    /// The next thing the watcher sends, within 10 s.
    fn next(rx: &mut mpsc::Receiver<Reload>) -> Option<Reload> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.ok().flatten() })
    }

    fn services(reload: Option<Reload>) -> Vec<String> {
        match reload {
            Some(Reload::Accepted(set)) => set.services().iter().map(|(_, s)| s.meta.name.clone()).collect(),
            other => panic!("expected an accepted set, got {other:?}"),
        }
    }

    /// A writer writes the first half of a file (a complete document, so the half alone would
    /// pass), pauses for `pause` while the watcher looks every 20 ms, then writes the rest and
    /// closes it. Nothing may be sent before the close; then the whole file is.
    fn a_paused_writer_is_waited_for(name: &str, tune: impl FnOnce(Watcher) -> Watcher, pause: Duration) {
        use std::io::Write;
        let dir = TempDir::new(name);
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, SERVICE).expect("write");
        let w =
            Watcher::new(vec![dir.path().to_path_buf()], "default".into(), Labels::new(), Duration::from_millis(20), Baseline::default());
        let (found, mut rx) = mpsc::channel(1);
        let (_stop, stopped) = std_mpsc::channel();
        tune(w).spawn(found, stopped).expect("spawn");
        assert_eq!(services(next(&mut rx)), vec!["web"], "the first look reads the files");

        let half = SERVICE.replace("web", "one") + "---\n";
        let rest = SERVICE.replace("web", "two");
        let mut writer = std::fs::File::create(&file).expect("open for writing");
        writer.write_all(half.as_bytes()).expect("write half");
        writer.flush().expect("flush");
        std::thread::sleep(pause);
        match rx.try_recv() {
            Err(mpsc::error::TryRecvError::Empty) => {}
            Ok(r) => panic!("read while its writer was still at it: {r:?}"),
            Err(e) => panic!("the watcher ended: {e}"),
        }
        writer.write_all(rest.as_bytes()).expect("write the rest");
        drop(writer);
        let mut got = services(next(&mut rx));
        got.sort();
        assert_eq!(got, vec!["one", "two"], "the whole file, once closed");
    }

    /// With inotify, the writer's pause is longer than the settle period and dozens of looks.
    #[cfg(target_os = "linux")]
    #[test]
    fn with_inotify_a_half_written_file_is_not_read_however_long_its_writer_pauses() {
        a_paused_writer_is_waited_for("watcher-pause-inotify", |w| w, Duration::from_millis(1500));
    }

    /// Without inotify a writer that pauses longer than the settle period cannot be told from
    /// one that is done; so here the settle period is 2 s and the writer pauses 1.5 s: 75 looks
    /// that each see the file changed, none of which may read it.
    #[test]
    fn without_inotify_a_half_written_file_is_read_only_once_it_held_still() {
        a_paused_writer_is_waited_for(
            "watcher-pause-poll",
            |w| w.without_inotify().with_settle(Duration::from_secs(2)),
            Duration::from_millis(1500),
        );
    }

    /// Where inotify says nothing (its queue overflowed, or a file system it does not see), a
    /// writer on this machine is found in `/proc`: with no settle period at all, a writer that
    /// pauses 1.5 s still has its half file left unread.
    #[cfg(target_os = "linux")]
    #[test]
    fn without_inotify_a_local_writer_is_waited_for_however_long_it_pauses() {
        a_paused_writer_is_waited_for(
            "watcher-pause-proc",
            |w| w.without_inotify().with_settle(Duration::ZERO),
            Duration::from_millis(1500),
        );
    }

    #[test]
    fn a_panic_while_reading_is_a_rejection_not_a_dead_watcher() {
        match rejecting_panics(|| panic!("boom in a reader")) {
            Some(Reload::Rejected(why)) => assert!(why.contains("boom in a reader") && why.contains("bug in veer"), "{why}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(rejecting_panics(|| None).is_none(), "a look that finds nothing passes through");
    }

    #[test]
    fn the_thread_ends_when_the_control_loop_stops_it() {
        let dir = TempDir::new("watcher-stop");
        std::fs::write(dir.path().join("a.yaml"), SERVICE).expect("write");
        let (found, mut rx) = mpsc::channel(1);
        let (stop, stopped) = std_mpsc::channel();
        watcher(dir.path()).spawn(found, stopped).expect("spawn");
        assert!(matches!(rx.blocking_recv(), Some(Reload::Accepted(_))), "the first look reads the files");
        drop(stop);
        assert!(rx.blocking_recv().is_none(), "the thread ended and dropped its sender");
    }
}
