//! Pure decisions of the manifest watcher, with time passed in: whether the files may be read
//! (no writer is still at one of them) and whether the watcher itself is still alive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use veer_model::files::FileStamp;

/// Without word from inotify, how long a file's size, modification time and inode must hold
/// still before it is read. A writer that pauses longer than this between two writes cannot be
/// told from one that is done, so it is long enough for a tool writing a file in several calls
/// (with a garbage collection or a slow disk in between) and short enough that a change made
/// on a file system inotify does not see (NFS, some FUSE and overlay mounts) is served within
/// about a second of its last write. Where inotify sees the directory, a close or a rename
/// says a file is done, and this wait does not apply.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A writer that keeps a manifest open this long is named in a warning: the set waits for it.
pub const WRITER_WARN_AFTER: Duration = Duration::from_secs(30);

/// What inotify said about one manifest file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Written to (or truncated): its writer may not be done.
    Written(PathBuf),
    /// Closed after writing, or renamed into place: done, as `stamp` (taken when the event was
    /// read) shows it. A later change, seen or not, gives another stamp.
    Closed(PathBuf, Option<FileStamp>),
    /// Deleted or renamed away.
    Gone(PathBuf),
    /// inotify's queue overflowed: events were lost, so no writer is known any more and every
    /// file must hold still for [`SETTLE`] before it is read.
    Lost,
}

/// Why the set is not read yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// inotify saw the file written and not yet closed; since when.
    Writing(PathBuf, Duration),
    /// Its metadata changed less than [`SETTLE`] ago and nothing said its writer is done.
    Settling(PathBuf),
}

/// What the watcher knows of one file besides its contents.
#[derive(Debug, Default)]
struct Track {
    /// The file's metadata at the last look, and since when it has been so (`None`: since
    /// before the watcher started, when the node read it).
    seen: Option<(FileStamp, Option<Duration>)>,
    /// Written and not closed since, from when.
    writing: Option<Duration>,
    /// The file as it was when inotify last said its writer was done with it.
    closed_as: Option<FileStamp>,
}

/// Whether the manifest files may be read. The whole set waits while any file is not ready:
/// manifests refer to each other (a Service in one file, its endpoints in another, a policy in a
/// third), so the other files' new contents without the one still being written would be a set
/// nobody wrote.
#[derive(Debug)]
pub struct Gate {
    settle: Duration,
    tracks: HashMap<PathBuf, Track>,
}

/// inotify names files by their directory's path joined with the name; a file given as
/// `a.yaml` is watched through `.`, so `./a.yaml` and `a.yaml` are one file.
fn key(path: &Path) -> PathBuf {
    path.strip_prefix(".").unwrap_or(path).to_path_buf()
}

impl Gate {
    pub fn new(settle: Duration) -> Gate {
        Gate { settle, tracks: HashMap::new() }
    }

    /// A gate that knows the files as `stamps` show them were read when the node started, so
    /// they need not settle again.
    pub fn with_baseline(settle: Duration, stamps: &[FileStamp]) -> Gate {
        let tracks = stamps.iter().map(|s| (key(s.path()), Track { seen: Some((s.clone(), None)), ..Track::default() })).collect();
        Gate { settle, tracks }
    }

    /// Takes in what inotify said, at `now`.
    pub fn note(&mut self, change: Change, now: Duration) {
        match change {
            Change::Written(p) => {
                let t = self.tracks.entry(key(&p)).or_default();
                t.writing.get_or_insert(now);
                t.closed_as = None;
            }
            Change::Closed(p, stamp) => {
                let t = self.tracks.entry(key(&p)).or_default();
                t.writing = None;
                t.closed_as = stamp;
            }
            Change::Gone(p) => {
                self.tracks.remove(&key(&p));
            }
            Change::Lost => {
                for t in self.tracks.values_mut() {
                    t.writing = None;
                    t.closed_as = None;
                }
            }
        }
    }

    /// Whether any of `stamps`' files is being written, as far as inotify said.
    pub fn writing(&self, stamps: &[FileStamp]) -> bool {
        stamps.iter().any(|s| self.tracks.get(&key(s.path())).is_some_and(|t| t.writing.is_some()))
    }

    /// Judges the files as `stamps` shows them at `now`: every file that is not ready yet (an
    /// empty list: read them). Records what it saw, so a file's settling runs from the look
    /// that first saw its current metadata.
    pub fn judge(&mut self, stamps: &[FileStamp], now: Duration) -> Vec<Wait> {
        let mut waits = Vec::new();
        for s in stamps {
            let t = self.tracks.entry(key(s.path())).or_default();
            let since = match &t.seen {
                Some((old, since)) if old == s => *since,
                _ => Some(now),
            };
            t.seen = Some((s.clone(), since));
            if let Some(from) = t.writing {
                waits.push(Wait::Writing(s.path().to_path_buf(), from));
                continue;
            }
            let closed = t.closed_as.as_ref() == Some(s);
            let settled = since.is_none_or(|since| now.saturating_sub(since) >= self.settle);
            if !closed && !settled {
                waits.push(Wait::Settling(s.path().to_path_buf()));
            }
        }
        // Files no longer there are forgotten; one being written is kept until its writer closes
        // it or it goes (it may have been created after `stamps` was taken).
        let present: std::collections::HashSet<PathBuf> = stamps.iter().map(|s| key(s.path())).collect();
        self.tracks.retain(|p, t| present.contains(p) || t.writing.is_some());
        waits
    }
}

/// How long without a look before the watcher counts as stalled: far longer than a look and a
/// read of a large set take (seconds at 10,000 resources, at the watcher's low priority).
pub fn stall_after(every: Duration) -> Duration {
    (every * 30).max(Duration::from_secs(30))
}

/// The watcher's life as its thread reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet (or it could not be).
    Starting,
    Running,
    /// Its thread ended: manifest changes are no longer applied.
    Ended,
}

/// Why the watcher is not alive, as `/ready` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherDown {
    /// Its thread ended.
    Stopped,
    /// It has not started this long after the node did.
    NotStarted { after: Duration },
    /// It has not looked at the files for `idle`, though it looks every `every`.
    Stalled { idle: Duration, every: Duration },
}

impl std::fmt::Display for WatcherDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatcherDown::Stopped => f.write_str("the manifest watcher has stopped: manifest changes are no longer applied"),
            WatcherDown::NotStarted { after } => write!(f, "the manifest watcher has not started after {:.0} s", after.as_secs_f64()),
            WatcherDown::Stalled { idle, every } => {
                write!(f, "the manifest watcher has not looked at the files for {:.0} s (it looks every {every:?})", idle.as_secs_f64())
            }
        }
    }
}

impl std::error::Error for WatcherDown {}

/// Whether the watcher is alive at `now`: running (or starting) and having looked at the
/// files within [`stall_after`] of `every`. `Err` says why not, for `/ready`.
pub fn liveness(phase: Phase, last_look: Duration, now: Duration, every: Duration) -> Result<(), WatcherDown> {
    let age = now.saturating_sub(last_look);
    let limit = stall_after(every);
    match phase {
        Phase::Ended => Err(WatcherDown::Stopped),
        _ if age <= limit => Ok(()),
        Phase::Starting => Err(WatcherDown::NotStarted { after: age }),
        Phase::Running => Err(WatcherDown::Stalled { idle: age, every }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veer_testkit::TempDir;

    const MS: Duration = Duration::from_millis(1);

    /// A real stamp of a real file, rewritten with `text` (stamps cannot be made up).
    fn stamp(dir: &Path, name: &str, text: &str) -> FileStamp {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        FileStamp::of(&p).expect("stamp")
    }

    #[test]
    fn without_inotify_a_file_is_read_only_after_its_metadata_held_still_for_the_settle_period() {
        let d = TempDir::new("gate-settle");
        let mut g = Gate::new(SETTLE);
        let half = stamp(&d, "a.yaml", "a: 1\n");
        let t0 = Duration::from_secs(10);
        assert_eq!(g.judge(std::slice::from_ref(&half), t0), vec![Wait::Settling(half.path().into())], "first seen: settling");
        assert!(!g.judge(std::slice::from_ref(&half), t0 + SETTLE - MS).is_empty(), "not yet");
        // The writer goes on before the period ends: the period starts again.
        let full = stamp(&d, "a.yaml", "a: 1\nb: 2\n");
        assert!(!g.judge(std::slice::from_ref(&full), t0 + SETTLE).is_empty(), "changed: settling again");
        assert!(!g.judge(std::slice::from_ref(&full), t0 + 2 * SETTLE - MS).is_empty());
        assert!(g.judge(std::slice::from_ref(&full), t0 + 2 * SETTLE).is_empty(), "held still for the period: ready");
    }

    #[test]
    fn a_file_written_and_not_closed_is_never_ready_and_a_close_makes_it_ready_at_once() {
        let d = TempDir::new("gate-writing");
        let mut g = Gate::new(SETTLE);
        let other = stamp(&d, "b.yaml", "b: 1\n");
        let half = stamp(&d, "a.yaml", "a: 1\n");
        let t0 = Duration::from_secs(1);
        g.note(Change::Written(half.path().into()), t0);
        let both = [half.clone(), other.clone()];
        for later in [t0, t0 + SETTLE, t0 + Duration::from_secs(3600)] {
            let waits = g.judge(&both, later);
            assert!(waits.contains(&Wait::Writing(half.path().into(), t0)), "a writer still at it: however long it pauses ({waits:?})");
        }
        // The other file held still for an hour, but the set waits for the one being written.
        assert!(!g.judge(&both, t0 + Duration::from_secs(7200)).is_empty());
        let full = stamp(&d, "a.yaml", "a: 1\nb: 2\n");
        g.note(Change::Closed(full.path().into(), Some(full.clone())), t0 + Duration::from_secs(7201));
        assert!(
            g.judge(&[full.clone(), other.clone()], t0 + Duration::from_secs(7201)).is_empty(),
            "closed as it is now: ready without settling"
        );
        // Changed again with no event (a file system inotify does not see): settles.
        let again = stamp(&d, "a.yaml", "a: 3\n");
        assert_eq!(g.judge(&[again.clone(), other], t0 + Duration::from_secs(7202)), vec![Wait::Settling(again.path().into())]);
    }

    #[test]
    fn a_rename_into_place_is_ready_and_a_lost_queue_falls_back_to_settling() {
        let d = TempDir::new("gate-rename");
        let mut g = Gate::new(SETTLE);
        let a = stamp(&d, "a.yaml", "a: 1\n");
        g.note(Change::Written(a.path().into()), MS);
        g.note(Change::Lost, 2 * MS);
        assert_eq!(
            g.judge(std::slice::from_ref(&a), 3 * MS),
            vec![Wait::Settling(a.path().into())],
            "no writer known after an overflow; settling"
        );
        g.note(Change::Closed(a.path().into(), Some(a.clone())), 4 * MS);
        assert!(g.judge(std::slice::from_ref(&a), 4 * MS).is_empty());
        // A file given as `a.yaml` is watched through `.`: one file either way.
        let mut g = Gate::new(SETTLE);
        g.note(Change::Written(PathBuf::from("./x.yaml")), MS);
        assert_eq!(key(Path::new("./x.yaml")), key(Path::new("x.yaml")));
        g.note(Change::Gone(PathBuf::from("x.yaml")), MS);
        assert!(g.tracks.is_empty());
    }

    #[test]
    fn the_files_the_node_started_with_need_not_settle_again() {
        let d = TempDir::new("gate-baseline");
        let a = stamp(&d, "a.yaml", "a: 1\n");
        let mut g = Gate::with_baseline(SETTLE, std::slice::from_ref(&a));
        assert!(g.judge(std::slice::from_ref(&a), Duration::ZERO).is_empty());
        let b = stamp(&d, "a.yaml", "a: 22\n");
        assert!(!g.judge(std::slice::from_ref(&b), MS).is_empty(), "changed since: settles");
    }

    #[test]
    fn liveness_needs_a_running_watcher_that_looked_recently() {
        let every = Duration::from_millis(100);
        let s = Duration::from_secs;
        assert_eq!(stall_after(every), s(30));
        assert_eq!(stall_after(s(2)), s(60));
        assert!(liveness(Phase::Running, s(100), s(100), every).is_ok());
        assert!(liveness(Phase::Running, s(100), s(130), every).is_ok());
        let stalled = liveness(Phase::Running, s(100), s(131), every).expect_err("stalled").to_string();
        assert!(stalled.contains("31 s"), "{stalled}");
        assert!(liveness(Phase::Starting, Duration::ZERO, s(5), every).is_ok(), "a starting watcher gets the same grace");
        assert!(liveness(Phase::Starting, Duration::ZERO, s(31), every).expect_err("never started").to_string().contains("not started"));
        let ended = liveness(Phase::Ended, s(100), s(100), every).expect_err("ended").to_string();
        assert!(ended.contains("stopped"), "{ended}");
    }
}
