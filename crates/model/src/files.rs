//! Reading manifest sources from files, directories (recursively, `.yaml`/`.yml`/`.json`) and stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::yaml::MAX_INPUT_BYTES;

/// Reads every manifest under `paths`; `-` is stdin. Names are the paths as given.
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_INPUT_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| format!("<stdin>: {e}"))?;
            out.push(("<stdin>".to_string(), text));
        } else {
            collect(p, &mut out)?;
        }
    }
    Ok(out)
}

/// What the manifest files under `paths` look like from their metadata alone (name, size,
/// modification time, inode), in the order `read_paths` reads them: checking this costs a few
/// `stat` calls, so a reloader can look often and read only when something changed. Stdin
/// has no metadata and is left out.
pub fn fingerprint(paths: &[PathBuf]) -> Result<Vec<FileStamp>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() != "-" {
            stamp(p, &mut out)?;
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
            subdirectories(p, &mut out);
        } else if let Some(parent) = p.parent() {
            out.push(if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() });
        }
    }
    out
}

fn subdirectories(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    for e in manifest_entries(dir).unwrap_or_default().iter().filter(|e| e.is_dir()) {
        subdirectories(e, out);
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

fn stamp(path: &Path, out: &mut Vec<FileStamp>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        for e in manifest_entries(path)? {
            stamp(&e, out)?;
        }
        return Ok(());
    }
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    out.push(FileStamp { path: path.to_path_buf(), len: meta.len(), modified: meta.modified().ok(), inode });
    Ok(())
}

/// A directory's manifest files and subdirectories, sorted.
fn manifest_entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|e| e.is_dir() || e.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
        .collect();
    entries.sort();
    Ok(entries)
}

fn collect(path: &Path, out: &mut Vec<(String, String)>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        for e in manifest_entries(path)? {
            collect(&e, out)?;
        }
        return Ok(());
    }
    if meta.len() > MAX_INPUT_BYTES as u64 {
        return Err(format!("{}: file is {} bytes; veer reads at most {MAX_INPUT_BYTES} bytes per file", path.display(), meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8 text (byte {})", path.display(), e.utf8_error().valid_up_to()))?;
    out.push((path.display().to_string(), text));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_when_a_manifest_is_replaced_and_ignores_other_files() {
        let dir = std::env::temp_dir().join(format!("veer-fingerprint-{}", std::process::id()));
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
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn directories_are_those_read_from_and_those_holding_a_given_file() {
        let dir = std::env::temp_dir().join(format!("veer-directories-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub/deeper")).expect("dir");
        std::fs::create_dir_all(dir.join("other")).expect("dir");
        std::fs::write(dir.join("other/c.yaml"), "c: 1\n").expect("write");
        let mut dirs = directories(&[dir.join("sub"), dir.join("other/c.yaml"), PathBuf::from("-"), PathBuf::from("top.yaml")]);
        dirs.sort();
        let mut want = vec![dir.join("sub"), dir.join("sub/deeper"), dir.join("other"), PathBuf::from(".")];
        want.sort();
        assert_eq!(dirs, want);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
