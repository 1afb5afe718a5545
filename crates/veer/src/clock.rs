//! The `veer` command's one clock: the demo and the seed walkthroughs read the time here, to
//! pace their steps and say how long each took.

// The one place clippy.toml's ban on reading the clock is lifted in this crate.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use tokio::time::Instant;

/// Now, on tokio's clock (the one its timers run on).
#[inline]
pub fn now() -> Instant {
    Instant::now()
}

/// The time since `earlier`, zero if it is in the future.
#[inline]
pub fn since(earlier: Instant) -> Duration {
    earlier.elapsed()
}
