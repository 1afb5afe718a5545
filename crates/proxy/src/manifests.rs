//! The manifest watcher: on a thread of its own, below the workers' priority, it notices changed
//! manifest files, reads and checks them, and hands the control loop each set that passes (or
//! why one did not), so that reading 10,000 resources neither stalls the control loop's failure
//! handling nor takes CPU time the workers need. On Linux, inotify wakes it as soon as a file
//! is written, renamed into place or removed; it also looks every `reload_every`, for file
//! systems inotify does not see.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;
use veer_core::topology::Labels;
use veer_model::files::FileStamp;
use veer_model::set::ManifestSet;

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
}

impl Watcher {
    /// A watcher of `files` whose contents were `sources` when the node started.
    pub fn new(files: Vec<PathBuf>, cluster: String, labels: Labels, every: Duration, sources: Vec<(String, String)>) -> Watcher {
        Watcher { files, cluster, labels, every, sources, stamps: None, looks_since_read: 0 }
    }

    /// Starts the watcher's thread. It sends what it finds to `found` and ends when `stop`'s
    /// sender is dropped (or no one receives any more). Its inotify watches are in place when
    /// this returns, so any change made after wakes it.
    pub fn spawn(self, found: mpsc::Sender<Reload>, stop: std_mpsc::Receiver<()>) -> std::io::Result<()> {
        let notifier = Notifier::new(&self.files)
            .inspect_err(|e| tracing::warn!(target: "veer::reload", "manifest changes are noticed by looking every {:?} only: {e}", self.every))
            .ok();
        std::thread::Builder::new().name("veer-manifests".into()).spawn(move || self.run(notifier, found, stop)).map(drop)
    }

    fn run(mut self, mut notifier: Option<Notifier>, found: mpsc::Sender<Reload>, stop: std_mpsc::Receiver<()>) {
        lower_priority();
        loop {
            // Woken early or not, the files' metadata says whether a manifest changed: a wake-up
            // may be for another file of a watched directory.
            match &mut notifier {
                Some(n) => {
                    n.wait(self.every, &self.files);
                }
                None => std::thread::sleep(self.every),
            }
            if !matches!(stop.try_recv(), Err(std_mpsc::TryRecvError::Empty)) {
                return;
            }
            if let Some(reload) = self.look_guarded() {
                if found.blocking_send(reload).is_err() {
                    return;
                }
            }
        }
    }

    /// [`Self::look`], with a panic turned into a rejection (see [`rejecting_panics`]).
    fn look_guarded(&mut self) -> Option<Reload> {
        rejecting_panics(|| self.look())
    }

    /// One look at the files: `None` when nothing changed (or an error repeats).
    pub fn look(&mut self) -> Option<Reload> {
        // Metadata first: most looks find nothing changed and read nothing. Every so often the
        // files are read anyway, for a change that kept a file's size, time and inode.
        let stamps = veer_model::files::fingerprint(&self.files).ok();
        self.looks_since_read += 1;
        if stamps.is_some() && stamps == self.stamps && self.looks_since_read < READ_ANYWAY_EVERY {
            return None;
        }
        self.stamps = stamps;
        self.looks_since_read = 0;
        let sources = match veer_model::files::read_paths(&self.files) {
            Ok(s) => s,
            Err(e) => {
                // Said once per distinct error, not at every look.
                let marker = vec![("<error>".to_string(), e.clone())];
                if self.sources == marker {
                    return None;
                }
                self.sources = marker;
                return Some(Reload::Rejected(e));
            }
        };
        if sources == self.sources {
            return None;
        }
        self.sources = sources;
        let loaded = veer_model::from_sources(&self.sources);
        if loaded.diagnostics.has_errors() {
            let errors: Vec<String> = loaded.diagnostics.into_sorted().iter().filter(|d| d.severity == veer_model::diag::Severity::Error).map(|d| d.to_string()).collect();
            for e in &errors {
                tracing::error!(target: "veer::reload", "{e}");
            }
            return Some(Reload::Rejected(format!("{} error(s): {}", errors.len(), errors.join(" | "))));
        }
        if let Err(e) = veer_model::resolve::client(&loaded.set, &self.cluster, &self.labels) {
            return Some(Reload::Rejected(e.to_string()));
        }
        Some(Reload::Accepted(Box::new(loaded.set)))
    }
}

/// Runs one look with a panic in reading or checking turned into a rejection: the last good
/// set keeps serving and the operator hears of it, where a dead watcher would stop every later
/// reload without a word. The same files are not read again until they change.
fn rejecting_panics(look: impl FnOnce() -> Option<Reload>) -> Option<Reload> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(look)).unwrap_or_else(|panic| {
        let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
        Some(Reload::Rejected(format!("veer failed while reading the manifests ({what}); this is a bug in veer, please report it with the files")))
    })
}

/// What inotify reports for the manifests: a file closed after writing, moved in or out,
/// created or deleted (Kubernetes swaps a ConfigMap's files by renaming a link in their
/// directory), in every directory given and each given file's directory. Written-to files are
/// noticed when their writer closes them, not at each write, so a half-written file is not read.
#[cfg(target_os = "linux")]
struct Notifier {
    fd: rustix::fd::OwnedFd,
    buf: Vec<u8>,
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
        let notifier = Notifier { fd, buf: vec![0; 16 * 1024] };
        notifier.watch(files);
        Ok(notifier)
    }

    /// Watches every directory that holds manifests. Called again after each change, so a new
    /// subdirectory is watched too (watching a directory twice keeps one watch); a directory
    /// that cannot be watched (gone, no permission) is still looked at.
    fn watch(&self, files: &[PathBuf]) {
        use rustix::fs::inotify::{add_watch, WatchFlags};
        let flags = WatchFlags::CLOSE_WRITE | WatchFlags::MOVED_TO | WatchFlags::MOVED_FROM | WatchFlags::CREATE | WatchFlags::DELETE | WatchFlags::DELETE_SELF | WatchFlags::MOVE_SELF;
        for dir in veer_model::files::directories(files) {
            let _ = add_watch(&self.fd, &dir, flags);
        }
    }

    /// Waits up to `timeout` for a change; true when one came (and the burst it began is over).
    fn wait(&mut self, timeout: Duration, files: &[PathBuf]) -> bool {
        if !self.ready(timeout) {
            return false;
        }
        let burst = std::time::Instant::now();
        while self.drain() && burst.elapsed() < Self::SETTLE_AT_MOST && self.ready(Self::SETTLE) {}
        self.watch(files);
        true
    }

    fn ready(&self, timeout: Duration) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let timeout = Timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
        matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
    }

    /// Reads every queued event (which ones does not matter: any means "look"); false if none.
    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Ok(n) = rustix::io::read(&self.fd, &mut self.buf[..]) {
            if n == 0 {
                break;
            }
            any = true;
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

    fn wait(&mut self, _: Duration, _: &[PathBuf]) -> bool {
        false
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

    /// A directory of its own for one test, removed when the test ends.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let path = std::env::temp_dir().join(format!("veer-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("test directory");
            Dir(path)
        }

        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn watcher(dir: &std::path::Path) -> Watcher {
        Watcher::new(vec![dir.to_path_buf()], "default".into(), Labels::new(), Duration::from_millis(10), Vec::new())
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports: [{port: 80}]\n";

    #[test]
    fn a_changed_file_is_read_once_and_an_unchanged_one_not_again() {
        let dir = Dir::new("watcher-change");
        std::fs::write(dir.path().join("a.yaml"), SERVICE).expect("write");
        let mut w = watcher(dir.path());
        assert!(matches!(w.look(), Some(Reload::Accepted(set)) if set.service("default", "shop", "web").is_some()));
        assert!(w.look().is_none(), "nothing changed since the last read");
        std::fs::write(dir.path().join("a.yaml"), SERVICE.replace("web", "shop-web")).expect("rewrite");
        assert!(matches!(w.look(), Some(Reload::Accepted(set)) if set.service("default", "shop", "shop-web").is_some()));
    }

    #[test]
    fn a_bad_file_is_rejected_with_its_location_and_the_same_error_is_said_once() {
        let dir = Dir::new("watcher-bad");
        std::fs::write(dir.path().join("a.yaml"), SERVICE.replace("port: 80", "port: eighty")).expect("write");
        let mut w = watcher(dir.path());
        match w.look() {
            Some(Reload::Rejected(why)) => assert!(why.contains("a.yaml") && why.contains("port"), "names the file and field: {why}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(w.look().is_none(), "an unchanged bad file is not rejected again");
    }

    /// With a look every 60 s, only inotify can explain a change read within seconds.
    #[cfg(target_os = "linux")]
    #[test]
    fn inotify_wakes_the_watcher_for_a_rename_into_place_and_for_a_rewrite() {
        let dir = Dir::new("watcher-inotify");
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
        let dir = Dir::new("watcher-stop");
        std::fs::write(dir.path().join("a.yaml"), SERVICE).expect("write");
        let (found, mut rx) = mpsc::channel(1);
        let (stop, stopped) = std_mpsc::channel();
        watcher(dir.path()).spawn(found, stopped).expect("spawn");
        assert!(matches!(rx.blocking_recv(), Some(Reload::Accepted(_))), "the first look reads the files");
        drop(stop);
        assert!(rx.blocking_recv().is_none(), "the thread ended and dropped its sender");
    }
}
