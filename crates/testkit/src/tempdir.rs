//! A fresh directory under the system temp dir that removes itself when dropped.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory `<temp>/veer-<name>-<pid>-<n>`, removed with everything in it when
/// dropped, also when the test fails (unless [`TempDir::keep_on_failure`]). It reads as a [`Path`].
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep_on_failure: bool,
}

impl TempDir {
    /// Creates the directory; `name` says which test it belongs to, for whoever finds it left
    /// over after a killed run. Panics if it cannot be made.
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("veer-{name}-{}-{n}", std::process::id()));
        // A leftover from an earlier process with the same id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("temp dir {}: {e}", path.display()));
        TempDir { path, keep_on_failure: false }
    }

    /// Keeps the directory when it is dropped by a failing test (a panic unwinding), and says
    /// where: for logs worth reading after the failure.
    pub fn keep_on_failure(mut self) -> TempDir {
        self.keep_on_failure = true;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep_on_failure && std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
