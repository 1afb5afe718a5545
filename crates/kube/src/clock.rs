//! The crate's one clock: wall time, as Leases and status conditions carry it, and the runtime's
//! clock for deadlines.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Now, as a time since the Unix epoch.
pub fn unix_now() -> Duration {
    let now = Timestamp::now();
    Duration::new(now.as_second().max(0) as u64, now.subsec_nanosecond().max(0) as u32)
}

/// Now, in RFC 3339 to the second, as conditions' `lastTransitionTime` is written.
pub fn rfc3339_now() -> String {
    Timestamp::from_second(Timestamp::now().as_second()).map(|t| t.to_string()).unwrap_or_default()
}

/// The runtime's now, for deadlines the source waits on.
#[allow(clippy::disallowed_methods)]
pub fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}
