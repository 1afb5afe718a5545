//! Feeds arbitrary bytes to the manifest reader: it must never panic, whatever the input.
//! NUL bytes split the input into several files, so cross-file checks run too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sources: Vec<(String, String)> = data
        .split(|b| *b == 0)
        .take(4)
        .enumerate()
        .map(|(i, part)| (format!("fuzz-{i}.yaml"), String::from_utf8_lossy(part).into_owned()))
        .collect();
    let diagnostics = match veer_model::from_sources(&sources) {
        Ok(accepted) => accepted.into_parts().1,
        Err(rejected) => rejected.into_diagnostics(),
    };
    for d in diagnostics {
        let _ = d.to_string();
    }
});
