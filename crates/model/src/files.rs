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

fn collect(path: &Path, out: &mut Vec<(String, String)>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            let is_manifest = e.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json");
            if e.is_dir() || is_manifest {
                collect(&e, out)?;
            }
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
