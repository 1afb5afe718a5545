//! Writes a command's output to stdout, taking a closed pipe as "stop" rather than a failure.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`veer explain … | head -2`),
//! because Rust ignores SIGPIPE and the write then fails with EPIPE. A reader that has seen
//! enough is not an error, so the command ends quietly with status 0, as `head` expects.

use std::io::Write;

/// Writes `text` to stdout and flushes it. On EPIPE the process exits 0 at once: nothing else
/// the command would print can reach anyone. Any other write error is returned.
pub fn write(text: std::fmt::Arguments<'_>) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("cannot write to stdout: {e}")),
    }
}

/// `print!` through [`write()`]: evaluates to `Result<(), String>`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*)) };
}

/// `println!` through [`write()`]: evaluates to `Result<(), String>`.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `println!` for live displays: a closed pipe ends the process quietly (as [`write()`] does), and
/// any other write error is dropped, since a display has nobody to report it to.
macro_rules! say {
    () => {{ let _ = $crate::out::write(format_args!("\n")); }};
    ($($arg:tt)*) => {{ let _ = $crate::out::outln!($($arg)*); }};
}

pub(crate) use {out, outln, say};
