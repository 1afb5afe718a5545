//! The control side's one clock and randomness source: the control loop, the manifest watcher
//! and the probes read the time and draw random numbers here, and hand them to veer-core.

// The one place clippy.toml's ban on reading the clock and the global generator is lifted in
// this crate, so every moment and random draw the control loop decides on comes from here.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use veer_core::outlier::Random;

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

impl Random for Rng {
    fn next_u32(&mut self) -> u32 {
        self.0.u32(..)
    }
}
