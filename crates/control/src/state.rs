//! The last accepted manifest set, kept on disk (`veer run --state-dir DIR`): a node whose files
//! do not validate at start serves it, loudly, instead of refusing to start.
//!
//! One file, `DIR/manifests.json`, replaced whole (written aside, synced, renamed into place,
//! directory synced), so a crash leaves the old state or the new one, never a mix. What is read
//! back is untrusted like any manifest: capped in size, refused unless a regular file, and then
//! checked exactly as the files would be.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The state file in the state directory.
pub const STATE_FILE: &str = "manifests.json";

/// The largest state read back. A set is at most a few thousand files of at most 16 MiB each in
/// principle, but one this large is not what anyone runs; a bigger file is refused rather than
/// read into memory.
pub const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// The state's format; another is refused.
const VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    version: u32,
    saved_unix_ms: u64,
    sources: Vec<SavedSource>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSource {
    name: String,
    text: String,
}

/// A set read back from the state directory.
#[derive(Debug)]
pub struct State {
    /// Each file's name (as it was read then) and contents.
    pub sources: Vec<(String, String)>,
    /// When it was saved, in Unix milliseconds.
    pub saved_unix_ms: u64,
    pub path: PathBuf,
}

/// Why no state could be saved or read back.
#[derive(Debug)]
pub enum StateError {
    Io(PathBuf, std::io::Error),
    /// There is no state yet.
    Missing(PathBuf),
    /// Not a regular file (a FIFO, a device…): never opened.
    NotAFile(PathBuf),
    TooLarge(PathBuf, u64),
    /// Not a state veer wrote (bad JSON, another version).
    Corrupt(PathBuf, String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StateError::Missing(p) => write!(f, "{}: no saved state (none was accepted yet)", p.display()),
            StateError::NotAFile(p) => write!(f, "{}: not a regular file", p.display()),
            StateError::TooLarge(p, n) => {
                write!(f, "{}: {n} bytes; veer reads a saved state of at most {MAX_STATE_BYTES} bytes", p.display())
            }
            StateError::Corrupt(p, why) => write!(f, "{}: not a state veer wrote: {why}", p.display()),
        }
    }
}

impl std::error::Error for StateError {}

/// Saves `sources` as the last accepted set in `dir` (made if missing), atomically.
pub fn save(dir: &Path, sources: &[(String, String)]) -> Result<(), StateError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StateError::Io(p, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let saved = Saved {
        version: VERSION,
        saved_unix_ms: crate::events::unix_ms(),
        sources: sources.iter().map(|(name, text)| SavedSource { name: name.clone(), text: text.clone() }).collect(),
    };
    let body = serde_json::to_vec(&saved).map_err(|e| StateError::Corrupt(dir.join(STATE_FILE), e.to_string()))?;
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // The manifests may say more than the world should read; the state is veer's alone.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))?;
        // The rename itself is durable only once the directory is synced.
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io(&dir.join(STATE_FILE)))
}

/// Reads the last accepted set back from `dir`. Only its form is checked here; the caller checks
/// its contents as it would the files'.
pub fn load(dir: &Path) -> Result<State, StateError> {
    let path = dir.join(STATE_FILE);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StateError::Missing(path)),
        Err(e) => return Err(StateError::Io(path, e)),
    };
    if !meta.is_file() {
        return Err(StateError::NotAFile(path));
    }
    if meta.len() > MAX_STATE_BYTES {
        return Err(StateError::TooLarge(path, meta.len()));
    }
    let mut body = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_STATE_BYTES + 1).read_to_end(&mut body))
        .map_err(|e| StateError::Io(path.clone(), e))?;
    if body.len() as u64 > MAX_STATE_BYTES {
        return Err(StateError::TooLarge(path, body.len() as u64));
    }
    let saved: Saved = serde_json::from_slice(&body).map_err(|e| StateError::Corrupt(path.clone(), e.to_string()))?;
    if saved.version != VERSION {
        return Err(StateError::Corrupt(path, format!("format version {}, this veer reads {VERSION}", saved.version)));
    }
    Ok(State { sources: saved.sources.into_iter().map(|s| (s.name, s.text)).collect(), saved_unix_ms: saved.saved_unix_ms, path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use veer_testkit::TempDir;

    #[test]
    fn a_saved_set_reads_back_and_replaces_the_last_one_whole() {
        // A state directory that does not exist yet: saving makes it.
        let tmp = TempDir::new("state-roundtrip");
        let d = tmp.join("state");
        assert!(matches!(load(&d), Err(StateError::Missing(_))));
        save(&d, &[("m/a.yaml".into(), "a: 1\n".into()), ("m/b.yaml".into(), "b: \"ü\"\n".into())]).expect("save");
        save(&d, &[("m/a.yaml".into(), "a: 2\n".into())]).expect("save again");
        let s = load(&d).expect("load");
        assert_eq!(s.sources, vec![("m/a.yaml".to_string(), "a: 2\n".to_string())]);
        assert!(s.saved_unix_ms > 0);
        let names: Vec<_> = std::fs::read_dir(&d).expect("ls").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)], "no temporary file left behind");
    }

    #[test]
    fn a_state_that_is_not_ours_is_refused() {
        let tmp = TempDir::new("state-hostile");
        let d = tmp.join("state");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join(STATE_FILE), "{\"version\": 1, \"sources\": 3}").expect("write");
        assert!(matches!(load(&d), Err(StateError::Corrupt(..))));
        std::fs::write(d.join(STATE_FILE), "{\"version\": 9, \"saved_unix_ms\": 0, \"sources\": []}").expect("write");
        assert!(load(&d).expect_err("version").to_string().contains("version 9"));
        let big = std::fs::File::create(d.join(STATE_FILE)).expect("create");
        big.set_len(MAX_STATE_BYTES + 1).expect("grow");
        assert!(matches!(load(&d), Err(StateError::TooLarge(_, n)) if n == MAX_STATE_BYTES + 1));
        std::fs::remove_file(d.join(STATE_FILE)).expect("rm");
        std::fs::create_dir(d.join(STATE_FILE)).expect("a directory in its place");
        assert!(matches!(load(&d), Err(StateError::NotAFile(_))));
    }
}
