//! The node's one clock and randomness source: every module of the gateway, the control side,
//! the node and the `veer` command reads the time and draws random numbers here (the others
//! re-export it as their `clock`), and veer-core's decisions receive them as arguments.

// This module is where the clock is read and the global generator drawn from (clippy.toml
// disallows both everywhere else), so the request path's inputs from the outside world are in one
// place. Each function is one call, inlined: routing through here costs the request path nothing.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

/// Now, on tokio's clock (the one its timers and timeouts run on).
#[inline]
pub fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Now, as a std instant (what a request's start is kept as).
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

/// The wall clock: what an access log line says a request started at.
#[inline]
pub fn wall_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// A uniform `u32`, from this thread's generator.
#[inline]
pub fn random_u32() -> u32 {
    fastrand::u32(..)
}

/// A uniform `u64`, from this thread's generator.
#[inline]
pub fn random_u64() -> u64 {
    fastrand::u64(..)
}

/// A uniform `f64` in `[0, 1)`, from this thread's generator.
#[inline]
pub fn random_f64() -> f64 {
    fastrand::f64()
}

/// The outlier detector's randomness (ejection jitter, enforcement rolls): a generator of the
/// control loop's own, seeded from the thread's.
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn new() -> Self {
        Rng(fastrand::Rng::new())
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl veer_core::outlier::Random for Rng {
    fn next_u32(&mut self) -> u32 {
        self.0.u32(..)
    }
}
