//! Waiting on a condition: poll it until it holds, or fail the test saying what did not happen.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::clock;

/// How often a condition is asked again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Asks `condition` at once and then every [`POLL_EVERY`] until it holds; returns how long that
/// took. Panics with "`what`: not within `limit`" if it still does not hold after `limit`.
/// For threads without a runtime; in async code use [`wait_until_async`].
#[track_caller]
pub fn wait_until(what: impl fmt::Display, limit: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = clock::std_now();
    loop {
        if condition() {
            return clock::std_since(start);
        }
        let elapsed = clock::std_since(start);
        if elapsed >= limit {
            panic!("{what}: not within {limit:?}");
        }
        std::thread::sleep(POLL_EVERY.min(limit - elapsed));
    }
}

/// [`wait_until`] for async code: `condition` is a future made afresh for each try, and time is
/// tokio's, so a test on paused time waits no real time.
pub async fn wait_until_async<F, Fut>(what: impl fmt::Display, limit: Duration, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = clock::now();
    loop {
        if condition().await {
            return clock::since(start);
        }
        let elapsed = clock::since(start);
        if elapsed >= limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(POLL_EVERY.min(limit - elapsed)).await;
    }
}

/// A `what` worked out only if the wait fails, from what the condition last saw: a log, the
/// last answer.
pub fn lazy<F: Fn() -> String>(describe: F) -> impl fmt::Display {
    struct Lazy<F>(F);
    impl<F: Fn() -> String> fmt::Display for Lazy<F> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&(self.0)())
        }
    }
    Lazy(describe)
}
