//! The node's one clock: the admin listener and the node's start-up read the time here.

// The one place clippy.toml's ban on reading the clock is lifted in this crate.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

/// Now.
#[inline]
pub fn now() -> Instant {
    Instant::now()
}

/// The time since `earlier`, zero if it is in the future.
#[inline]
pub fn since(earlier: Instant) -> Duration {
    earlier.elapsed()
}
