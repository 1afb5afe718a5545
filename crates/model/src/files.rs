//! Reading manifest sources from files, directories (recursively, `.yaml`/`.yml`/`.json`, and `.pem` certificates) and stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::yaml::MAX_INPUT_BYTES;

/// How deep a directory walk goes. A link to a directory above it (`sub/up -> ..`) would
/// otherwise make the walk endless and overflow the stack, which no error can report.
const MAX_DEPTH: usize = 32;

/// Why a manifest source could not be read; it always names the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    /// The file as given or found in a directory (`<stdin>` for `-`).
    pub path: String,
    pub kind: ReadErrorKind,
}

/// What was wrong with the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadErrorKind {
    /// The file system's own answer (no such file, permission denied…).
    Io(String),
    /// A FIFO, socket or device: not a manifest, and never opened (opening a FIFO waits for
    /// a writer, which would stall `veer validate` or a node's reloads for good).
    NotAFile(&'static str),
    /// Over the cap: its size in bytes (what it had grown to, if it grew while being read).
    TooLarge(u64),
    /// The first byte that is not UTF-8: where it is (1-based line and column, the column in
    /// characters as YAML errors count it) and its value.
    NotUtf8 { line: usize, col: usize, byte: u8 },
    /// Directories nested deeper than veer walks (a link loop, most likely).
    TooDeep,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = &self.path;
        match &self.kind {
            ReadErrorKind::Io(e) => write!(f, "{path}: {e}"),
            ReadErrorKind::NotAFile(what) => {
                write!(f, "{path}: is {what}, not a regular file; veer reads manifests only from regular files")
            }
            ReadErrorKind::TooLarge(len) => write!(f, "{path}: file is {len} bytes; veer reads at most {MAX_INPUT_BYTES} bytes per file"),
            // Located like every other problem in a file's content, so editors jump to it.
            ReadErrorKind::NotUtf8 { line, col, byte } => {
                write!(f, "{path}:{line}:{col}: error: not UTF-8 text: byte 0x{byte:02x}; manifests must be UTF-8")
            }
            ReadErrorKind::TooDeep => write!(f, "{path}: directories nested more than {MAX_DEPTH} deep (a link to a directory above it?)"),
        }
    }
}

impl std::error::Error for ReadError {}

impl ReadError {
    /// Whether the file was read but its content is wrong (not UTF-8), as opposed to not being
    /// readable at all: `veer validate` reports the first like any error in a manifest.
    pub fn is_content(&self) -> bool {
        matches!(self.kind, ReadErrorKind::NotUtf8 { .. })
    }
}

impl From<ReadError> for String {
    fn from(e: ReadError) -> String {
        e.to_string()
    }
}

fn error(path: &Path, kind: ReadErrorKind) -> ReadError {
    ReadError { path: path.display().to_string(), kind }
}

/// Reads every manifest under `paths`; `-` is stdin. Names are the paths as given. FIFOs,
/// sockets and devices are refused from their metadata, without being opened.
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<(String, String)>, ReadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(MAX_INPUT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| ReadError { path: "<stdin>".into(), kind: ReadErrorKind::Io(e.to_string()) })?;
            out.push(("<stdin>".to_string(), utf8(Path::new("<stdin>"), bytes)?));
        } else {
            collect(p, 0, &mut out)?;
        }
    }
    Ok(out)
}

/// What the manifest files under `paths` look like from their metadata alone (name, size,
/// modification time, inode), in the order `read_paths` reads them: checking this costs a few
/// `stat` calls, so a reloader can look often and read only when something changed. Stdin
/// has no metadata and is left out.
pub fn fingerprint(paths: &[PathBuf]) -> Result<Vec<FileStamp>, ReadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() != "-" {
            stamp(p, 0, &mut out)?;
        }
    }
    Ok(out)
}

/// The directories `read_paths` reads manifests from: each directory given with every
/// subdirectory, and the directory of each file given (a change there, such as a link renamed
/// over the file, replaces it). For a watcher to be told of changes; what cannot be listed is
/// left out, since `read_paths` reports it.
pub fn directories(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| p.as_os_str() != "-") {
        if p.is_dir() {
            subdirectories(p, 0, &mut out);
        } else if let Some(parent) = p.parent() {
            out.push(if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() });
        }
    }
    out
}

/// Whether a directory walk reads a file of this name (`.yaml`, `.yml`, `.json`, and `.pem`:
/// certificates HTTPS listeners name as `PEMFile`s, read and watched with the manifests).
pub fn is_manifest_name(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json" || x == "pem")
}

/// Whether a source is PEM text (a `.pem` file) rather than a manifest.
pub fn is_pem_name(name: &str) -> bool {
    Path::new(name).extension().is_some_and(|x| x == "pem")
}

/// `name` (as a manifest gives it) resolved against the directory of the manifest `file`,
/// lexically (`.` and `..` folded, links not followed), as the name of a source would be.
pub fn beside(file: &str, name: &str) -> String {
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    lexical(&dir.join(name))
}

/// A path with `.` and `..` folded away, without touching the file system: two spellings of one
/// file read through the same directory compare equal.
pub fn lexical(path: &Path) -> String {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // Above the root is the root.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out.display().to_string()
}

fn subdirectories(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if depth >= MAX_DEPTH {
        return;
    }
    for e in manifest_entries(dir).unwrap_or_default().iter().filter(|e| e.is_dir()) {
        subdirectories(e, depth + 1, out);
    }
}

/// One file as [`fingerprint`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    /// The file as given or found in a directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path`'s stamp now, if it can be read (following links, as `read_paths` does).
    pub fn of(path: &Path) -> Option<FileStamp> {
        std::fs::metadata(path).ok().map(|meta| FileStamp::from_meta(path, &meta))
    }

    fn from_meta(path: &Path, meta: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        FileStamp { path: path.to_path_buf(), len: meta.len(), modified: meta.modified().ok(), inode }
    }
}

fn stamp(path: &Path, depth: usize, out: &mut Vec<FileStamp>) -> Result<(), ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| error(path, ReadErrorKind::Io(e.to_string())))?;
    if meta.is_dir() {
        if depth >= MAX_DEPTH {
            return Err(error(path, ReadErrorKind::TooDeep));
        }
        for e in manifest_entries(path)? {
            stamp(&e, depth + 1, out)?;
        }
        return Ok(());
    }
    out.push(FileStamp::from_meta(path, &meta));
    Ok(())
}

/// A directory's manifest files and subdirectories, sorted, without hidden entries (names
/// starting with `.`). A ConfigMap mounted as a directory holds each key three times: the
/// top-level link (`a.yaml -> ..data/a.yaml`), `..data` (a link to the current timestamped
/// directory) and that directory (`..2026_12_03_…`); only the first is the manifest. Editors'
/// swap and backup files are hidden too. A hidden file named on the command line is still read.
fn manifest_entries(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| error(dir, ReadErrorKind::Io(e.to_string())))?
        .filter_map(|e| e.ok().filter(|e| !e.file_name().as_encoded_bytes().starts_with(b".")).map(|e| e.path()))
        .filter(|e| e.is_dir() || is_manifest_name(e))
        .collect();
    entries.sort();
    Ok(entries)
}

/// What a file that is neither a regular file nor a directory is, for the error that refuses it.
fn special_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let ft = meta.file_type();
    if ft.is_file() || ft.is_dir() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if ft.is_socket() {
            return Some("a socket");
        }
        if ft.is_block_device() {
            return Some("a block device");
        }
        if ft.is_char_device() {
            return Some("a character device");
        }
    }
    Some("neither a file nor a directory")
}

fn collect(path: &Path, depth: usize, out: &mut Vec<(String, String)>) -> Result<(), ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| error(path, ReadErrorKind::Io(e.to_string())))?;
    if meta.is_dir() {
        if depth >= MAX_DEPTH {
            return Err(error(path, ReadErrorKind::TooDeep));
        }
        for e in manifest_entries(path).map_err(|e| error(path, ReadErrorKind::Io(e.to_string())))? {
            collect(&e, depth + 1, out)?;
        }
        return Ok(());
    }
    // From the metadata, before any open: opening a FIFO waits for a writer.
    if let Some(what) = special_kind(&meta) {
        return Err(error(path, ReadErrorKind::NotAFile(what)));
    }
    if meta.len() > MAX_INPUT_BYTES as u64 {
        return Err(error(path, ReadErrorKind::TooLarge(meta.len())));
    }
    let text = read_regular(path)?;
    out.push((path.display().to_string(), text));
    Ok(())
}

/// Reads one file a manifest names (a certificate, a key): a regular file of at most the
/// manifest cap, refused by name otherwise, like a manifest is.
pub fn read_referenced(path: &Path) -> Result<String, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| error(path, ReadErrorKind::Io(e.to_string())))?;
    if let Some(what) = special_kind(&meta).or(meta.is_dir().then_some("a directory")) {
        return Err(error(path, ReadErrorKind::NotAFile(what)));
    }
    if meta.len() > MAX_INPUT_BYTES as u64 {
        return Err(error(path, ReadErrorKind::TooLarge(meta.len())));
    }
    read_regular(path)
}

/// Reads a file that was a regular file of an acceptable size when looked at. It may have been
/// swapped since: it is opened without blocking (a FIFO put in its place does not stall the
/// open), checked again through the open handle, and read no further than the cap.
fn read_regular(path: &Path) -> Result<String, ReadError> {
    let io = |e: std::io::Error| error(path, ReadErrorKind::Io(e.to_string()));
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(what) = special_kind(&meta) {
        return Err(error(path, ReadErrorKind::NotAFile(what)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(MAX_INPUT_BYTES));
    file.take(MAX_INPUT_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(error(path, ReadErrorKind::TooLarge(bytes.len() as u64)));
    }
    utf8(path, bytes)
}

/// `bytes` as text, or where its first byte that is not UTF-8 is.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ReadError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        // Everything before `at` is valid UTF-8, so lines and characters can be counted in it.
        let before = bytes.get(..at).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let kind = ReadErrorKind::NotUtf8 {
            line: before.matches('\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
            byte: bytes.get(at).copied().unwrap_or_default(),
        };
        error(path, kind)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_beside_a_manifest_fold_dots_without_the_file_system() {
        assert_eq!(beside("m/gw.yaml", "../certs/./a.pem"), "certs/a.pem");
        assert_eq!(beside("gw.yaml", "../../a.pem"), "../../a.pem");
        assert_eq!(beside("/etc/veer/gw.yaml", "/../x/a.pem"), "/x/a.pem");
        assert_eq!(beside("<stdin>", "a.pem"), "a.pem");
    }
    use veer_testkit::TempDir;

    #[test]
    fn a_file_that_is_not_utf8_is_an_error_at_the_line_and_column_of_its_first_bad_byte() {
        let dir = TempDir::new("not-utf8");
        let path = dir.join("a.yaml");
        // Two characters of two bytes each before the bad byte: the column counts characters.
        let mut bytes = "a: 1\nb: ‘é’\nc: ".as_bytes().to_vec();
        bytes.extend([b'x', 0xFF, b'\n']);
        std::fs::write(&path, &bytes).expect("write");
        let e = read_paths(std::slice::from_ref(&path)).expect_err("not UTF-8");
        assert_eq!(e.kind, ReadErrorKind::NotUtf8 { line: 3, col: 5, byte: 0xFF });
        assert!(e.is_content());
        assert!(e.to_string().starts_with(&format!("{}:3:5: error: not UTF-8 text: byte 0xff", path.display())), "{e}");
    }

    /// The layout kubelet gives a ConfigMap volume: the data in a timestamped directory,
    /// `..data` linking to it, and each key a top-level link through `..data`.
    #[cfg(unix)]
    #[test]
    fn a_configmap_mounted_as_a_directory_is_read_once_per_key_and_stamped_once() {
        use std::os::unix::fs::symlink;
        let tmp = TempDir::new("configmap");
        let dir = tmp.to_path_buf();
        let stamped = dir.join("..2026_12_03_22_31_07.123456789");
        std::fs::create_dir_all(&stamped).expect("dir");
        std::fs::write(stamped.join("clusters.yaml"), "a: 1\n").expect("write");
        std::fs::write(stamped.join("services.yml"), "b: 1\n").expect("write");
        symlink("..2026_12_03_22_31_07.123456789", dir.join("..data")).expect("link");
        symlink("..data/clusters.yaml", dir.join("clusters.yaml")).expect("link");
        symlink("..data/services.yml", dir.join("services.yml")).expect("link");
        // An editor's leftover is hidden too.
        std::fs::write(dir.join(".clusters.yaml.swp.yaml"), "c: 1\n").expect("write");
        let read = read_paths(std::slice::from_ref(&dir)).expect("read");
        let names: Vec<String> = read.iter().map(|(n, _)| n.clone()).collect();
        let stamps = fingerprint(std::slice::from_ref(&dir)).expect("stamps");
        let watched = directories(std::slice::from_ref(&dir));
        // Named explicitly, a hidden file is read.
        let explicit = read_paths(&[dir.join("..data/clusters.yaml")]).expect("explicit");
        assert_eq!(names, vec![dir.join("clusters.yaml").display().to_string(), dir.join("services.yml").display().to_string()]);
        assert_eq!(
            stamps.iter().map(|s| s.path().to_path_buf()).collect::<Vec<_>>(),
            vec![dir.join("clusters.yaml"), dir.join("services.yml")]
        );
        assert_eq!(watched, vec![dir.clone()]);
        assert_eq!(explicit.len(), 1);
    }

    #[test]
    fn fingerprint_changes_when_a_manifest_is_replaced_and_ignores_other_files() {
        let tmp = TempDir::new("fingerprint");
        let dir = tmp.to_path_buf();
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("a.yaml"), "a: 1\n").expect("write");
        std::fs::write(dir.join("sub/b.yml"), "b: 1\n").expect("write");
        let paths = [dir.clone()];
        let first = fingerprint(&paths).expect("stamps");
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!(fingerprint(&paths).expect("stamps"), first, "nothing changed");
        // Not a manifest: not looked at.
        std::fs::write(dir.join("notes.txt"), "x").expect("write");
        assert_eq!(fingerprint(&paths).expect("stamps"), first);
        // Replaced the way editors and config tools do it: a new file renamed over the old one,
        // same size.
        std::fs::write(dir.join(".a.new"), "a: 2\n").expect("write");
        std::fs::rename(dir.join(".a.new"), dir.join("a.yaml")).expect("rename");
        assert_ne!(fingerprint(&paths).expect("stamps"), first, "the replaced file went unnoticed");
        assert!(fingerprint(&[dir.join("missing.yaml")]).is_err());
    }

    #[test]
    fn directories_are_those_read_from_and_those_holding_a_given_file() {
        let dir = TempDir::new("directories");
        std::fs::create_dir_all(dir.join("sub/deeper")).expect("dir");
        std::fs::create_dir_all(dir.join("other")).expect("dir");
        std::fs::write(dir.join("other/c.yaml"), "c: 1\n").expect("write");
        let mut dirs = directories(&[dir.join("sub"), dir.join("other/c.yaml"), PathBuf::from("-"), PathBuf::from("top.yaml")]);
        dirs.sort();
        let mut want = vec![dir.join("sub"), dir.join("sub/deeper"), dir.join("other"), PathBuf::from(".")];
        want.sort();
        assert_eq!(dirs, want);
    }
    /// A FIFO, a socket and an oversized file in a manifest folder: each refused, named, and
    /// the FIFO never opened (opening it would wait for a writer, and this test would hang).
    #[cfg(unix)]
    #[test]
    fn special_files_and_oversized_files_are_refused_by_name_without_being_opened() {
        let tmp = TempDir::new("special");
        let dir = tmp.to_path_buf();
        std::fs::write(dir.join("a.yaml"), "a: 1\n").expect("write");
        let fifo = dir.join("pipe.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = vec![dir.clone()];
        // On a thread: if the FIFO were opened, the read would block and the receive time out.
        std::thread::spawn(move || tx.send(read_paths(&paths)));
        let err = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("read_paths did not block").expect_err("a FIFO is refused");
        assert_eq!(err.kind, ReadErrorKind::NotAFile("a FIFO (named pipe)"));
        assert!(err.to_string().contains("pipe.yaml") && err.to_string().contains("FIFO"), "{err}");
        // Given directly, too.
        assert!(matches!(read_paths(std::slice::from_ref(&fifo)), Err(ReadError { kind: ReadErrorKind::NotAFile(_), .. })));
        std::fs::remove_file(&fifo).expect("rm fifo");

        let socket = dir.join("sock.yaml");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("socket");
        let err = read_paths(std::slice::from_ref(&dir)).expect_err("a socket is refused");
        assert_eq!(err.kind, ReadErrorKind::NotAFile("a socket"), "{err}");
        std::fs::remove_file(&socket).expect("rm socket");

        // Sparse: over the cap without writing 16 MiB.
        let big = std::fs::File::create(dir.join("big.yaml")).expect("create");
        big.set_len(MAX_INPUT_BYTES as u64 + 1).expect("grow");
        let err = read_paths(std::slice::from_ref(&dir)).expect_err("too large");
        assert_eq!(err.kind, ReadErrorKind::TooLarge(MAX_INPUT_BYTES as u64 + 1));
        assert!(err.to_string().contains("big.yaml") && err.to_string().contains(&(MAX_INPUT_BYTES + 1).to_string()), "{err}");
        std::fs::remove_file(dir.join("big.yaml")).expect("rm");
        assert_eq!(read_paths(std::slice::from_ref(&dir)).expect("only a.yaml left").len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_loop_is_an_error_not_a_stack_overflow() {
        let tmp = TempDir::new("loop");
        let dir = tmp.to_path_buf();
        std::os::unix::fs::symlink(&dir, dir.join("again")).expect("link");
        let err = read_paths(std::slice::from_ref(&dir)).expect_err("too deep");
        assert_eq!(err.kind, ReadErrorKind::TooDeep);
        assert!(fingerprint(std::slice::from_ref(&dir)).is_err());
        assert_eq!(directories(std::slice::from_ref(&dir)).len(), MAX_DEPTH + 1);
    }
}
