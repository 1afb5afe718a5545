//! Which processes hold a manifest file open for writing, read from `/proc`: at start inotify
//! has seen nothing yet, so this is how the first read knows a file is still being written.

use std::collections::HashSet;
use std::path::PathBuf;

use veer_model::files::FileStamp;

/// One manifest file open for writing, and who has it open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub path: PathBuf,
    pub pid: u32,
    /// The process's name (`/proc/PID/comm`), for the log line.
    pub command: String,
}

/// The files of `stamps` (the manifest files as the node reads them, from
/// `veer_model::files::fingerprint`) that some process has open for writing. Processes whose
/// `/proc` entries this process may not read (another user's, without privileges) are not
/// seen; neither is anything on systems without `/proc`.
pub fn open_for_writing(stamps: &[FileStamp]) -> Vec<Writer> {
    let wanted: HashSet<PathBuf> = stamps.iter().filter_map(|s| std::fs::canonicalize(s.path()).ok()).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for proc_entry in procs.flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            // The link names the open file; a file renamed or deleted since reads differently
            // and is not the one the node is about to read.
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            if !wanted.contains(&target) {
                continue;
            }
            let info = proc_entry.path().join("fdinfo").join(fd.file_name());
            if std::fs::read_to_string(&info).ok().and_then(|text| access_mode(&text)).is_some_and(|mode| mode != O_RDONLY) {
                let command = std::fs::read_to_string(proc_entry.path().join("comm")).map(|c| c.trim().to_string()).unwrap_or_default();
                found.push(Writer { path: target, pid, command });
            }
        }
    }
    found.sort_by(|a, b| (&a.path, a.pid).cmp(&(&b.path, b.pid)));
    found.dedup();
    found
}

/// The access mode of a file opened only for reading.
const O_RDONLY: u32 = 0;

/// The access mode (the low two bits of `flags:`, in octal) of an `fdinfo` text.
fn access_mode(fdinfo: &str) -> Option<u32> {
    let flags = fdinfo.lines().find_map(|line| line.strip_prefix("flags:"))?;
    u32::from_str_radix(flags.trim(), 8).ok().map(|f| f & 0o3)
}

/// The writers in one line, for a log.
pub fn describe(writers: &[Writer]) -> String {
    writers.iter().map(|w| format!("{} (pid {} {})", w.path.display(), w.pid, w.command)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_access_mode_is_read_from_fdinfo_flags_in_octal() {
        assert_eq!(access_mode("pos:\t0\nflags:\t0100002\nmnt_id:\t25\n"), Some(2));
        assert_eq!(access_mode("pos:\t0\nflags:\t02100001\n"), Some(1));
        assert_eq!(access_mode("pos:\t0\nflags:\t0100000\n"), Some(0));
        assert_eq!(access_mode("pos:\t0\n"), None);
        assert_eq!(access_mode("flags:\tnot-octal\n"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_file_open_for_writing_is_found_and_a_reader_or_a_closed_file_is_not() {
        let tmp = veer_testkit::TempDir::new("writers");
        let dir = tmp.to_path_buf();
        let file = dir.join("a.yaml");
        std::fs::write(&file, "kind: Service\n").unwrap();
        let reader = std::fs::File::open(&file).unwrap();
        assert_eq!(
            open_for_writing(&veer_model::files::fingerprint(std::slice::from_ref(&dir)).unwrap()),
            vec![],
            "a reader is not a writer"
        );
        let mut writer = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
        writer.write_all(b"metadata:\n").unwrap();
        let found = open_for_writing(&veer_model::files::fingerprint(std::slice::from_ref(&dir)).unwrap());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, std::process::id());
        assert_eq!(found[0].path, std::fs::canonicalize(&file).unwrap());
        drop(writer);
        assert_eq!(open_for_writing(&veer_model::files::fingerprint(std::slice::from_ref(&dir)).unwrap()), vec![], "closed");
        drop(reader);
    }
}
