//! The DNS crate's one clock: the server reads the time here and hands it to the rate limiter
//! and the answers it decides.

// The one place clippy.toml's ban on reading the clock is lifted in this crate.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

/// Now.
#[inline]
pub fn now() -> Instant {
    Instant::now()
}

/// Seconds since the Unix epoch, cut to 32 bits: the base of SOA serials, so they keep growing
/// across restarts (as Knot's `serial-policy: unixtime`).
pub fn unix_seconds() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Serial arithmetic (RFC 1982) wraps at 2^32 anyway.
    (secs & u64::from(u32::MAX)) as u32
}

/// Seconds since the Unix epoch: TSIG signatures carry it.
pub fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random message ID (NOTIFY): a secondary matches answers by it.
pub fn random_id() -> u16 {
    fastrand::u16(..)
}
