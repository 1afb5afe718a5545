//! The testkit's one clock and randomness source, and the one veer's test crates read the time
//! and draw random numbers through.

// The one place clippy.toml's ban on reading the clock and the global generator is lifted in
// this crate: load runs and labs measure the time they take, and tests draw ids, all through here.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

/// Now, on tokio's clock (the one its timers run on).
#[inline]
pub fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Now, as a std instant.
#[inline]
pub fn std_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// The time since `earlier` (on tokio's clock), zero if it is in the future.
#[inline]
pub fn since(earlier: tokio::time::Instant) -> Duration {
    earlier.elapsed()
}

/// The time since `earlier` (a std instant), zero if it is in the future.
#[inline]
pub fn std_since(earlier: std::time::Instant) -> Duration {
    earlier.elapsed()
}

/// A uniform `u16`, from this thread's generator.
#[inline]
pub fn random_u16() -> u16 {
    fastrand::u16(..)
}
