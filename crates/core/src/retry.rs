//! Whether a failed try is tried again, when, and whether the destination's retry budget pays.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::outcome::{retry_wanted, TryEnd};
use crate::pick::Tried;
use crate::policy::{RetryOn, RetryPolicy};

/// Retry budget of one destination: retries within a priority may add at most ~20% to the
/// request rate (plus a small reserve topped up by the control loop), so a dying cluster cannot
/// multiply load. Retries that fail over to a priority not tried yet are not charged (see
/// [`spends_budget`]).
///
/// Atomic because every worker of a node shares it: it is the destination's, not a worker's.
#[derive(Debug)]
pub struct RetryBudget {
    milli_tokens: AtomicI64,
}

impl RetryBudget {
    const PER_REQUEST: i64 = 200;
    const PER_RETRY: i64 = 1000;
    const DEPOSIT_EVERY: u32 = 16;
    const CAP: i64 = 100_000;
    /// What the control loop tops the budget up to every second (10 retries).
    pub const RESERVE: i64 = 10_000;

    pub fn new() -> Self {
        RetryBudget { milli_tokens: AtomicI64::new(Self::RESERVE) }
    }

    /// Credits one request; `roll` is a uniform random draw. Every worker writes here, and a
    /// write pulls the line away from the other workers' cores, so one request in sixteen
    /// deposits for sixteen: the same credit on average, a sixteenth of the writes.
    #[inline]
    pub fn deposit(&self, roll: u32) {
        if roll.is_multiple_of(Self::DEPOSIT_EVERY) && self.milli_tokens.load(Ordering::Relaxed) < Self::CAP {
            self.milli_tokens.fetch_add(Self::PER_REQUEST * i64::from(Self::DEPOSIT_EVERY), Ordering::Relaxed);
        }
    }

    /// Takes one retry's worth; `false` (and nothing taken) when the budget cannot pay.
    #[inline]
    pub fn withdraw(&self) -> bool {
        if self.milli_tokens.fetch_sub(Self::PER_RETRY, Ordering::Relaxed) >= Self::PER_RETRY {
            true
        } else {
            self.milli_tokens.fetch_add(Self::PER_RETRY, Ordering::Relaxed);
            false
        }
    }

    /// Tops the budget up to the reserve.
    pub fn refill(&self) {
        let _ = self.milli_tokens.fetch_max(Self::RESERVE, Ordering::Relaxed);
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a try to `priority` must be paid for from the retry budget. The budget guards a
/// failing priority against retry storms: a retry that stays in a priority already tried spends
/// it; one that fails over to a priority not yet tried is what failover is for, and adds at most
/// one try per request to a healthy tier. A first try never spends.
#[inline]
pub fn spends_budget(tried: &Tried, priority: usize) -> bool {
    tried.attempts() > 0 && tried.has_priority(priority)
}

/// Whether an upstream's answer with `status` counts as a failed try that may be retried rather
/// than the answer the client receives: only a 5xx, and only one the destination's `retry_on`
/// names (any 5xx, the gateway errors 502-504, or a listed code).
#[inline]
pub fn retriable_answer(on: &RetryOn, status: u16) -> bool {
    (500..600).contains(&status)
        && (on.five_xx || (on.gateway_error && matches!(status, 502..=504)) || on.retriable_status_codes.contains(&status))
}

/// What became of a try, as the retry decision reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TryState {
    pub end: TryEnd,
    /// Tries made so far, this one included.
    pub attempts: usize,
    /// The destination's endpoints: once as many tries were made, a retry reuses a tried host.
    pub endpoints: usize,
    /// Whether the method may be sent twice (GET, HEAD, OPTIONS, TRACE, PUT, DELETE).
    pub idempotent: bool,
    /// Whether the body can be sent again (it was buffered, not streamed).
    pub replayable: bool,
    /// Whether the request's whole timeout has run out.
    pub deadline_passed: bool,
}

/// What follows a failed try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// No retry: the client receives what the last try ended as.
    Stop,
    /// Retry at once.
    RetryNow,
    /// Retry after this back-off (the caller ends it at the request's deadline).
    RetryAfter(Duration),
}

/// The retry decision for a try that failed: stop when the policy's tries are spent, the
/// failure is not one its `retry_on` (and the method) allows retrying, the body cannot be sent
/// again, or the request is out of time. A retry to a host not tried yet goes at once: it is a
/// different failure domain. Only a retry that must reuse a tried host waits a jittered
/// back-off, drawn with `rand_f64` (uniform in `[0, 1)`).
pub fn after_try(policy: &RetryPolicy, t: TryState, rand_f64: f64) -> Next {
    let wanted = t.end.retry_cause().is_some_and(|cause| retry_wanted(cause, &policy.retry_on, t.idempotent));
    if t.attempts >= max_tries(policy) || !wanted || !t.replayable || t.deadline_passed {
        return Next::Stop;
    }
    if t.endpoints > t.attempts {
        return Next::RetryNow;
    }
    Next::RetryAfter(backoff(policy, t.attempts, rand_f64))
}

/// Tries a request may take under `policy`: the first and its retries.
#[inline]
pub fn max_tries(policy: &RetryPolicy) -> usize {
    1 + policy.attempts as usize
}

/// The jittered back-off after `attempts` tries: uniform below `base·(2^attempts − 1)` (the
/// exponent capped at 10), itself capped at `max`, as Envoy's fully jittered back-off.
pub fn backoff(policy: &RetryPolicy, attempts: usize, rand_f64: f64) -> Duration {
    let n = u32::try_from(attempts).unwrap_or(u32::MAX).min(10);
    let cap = policy.backoff_base.saturating_mul((1u32 << n) - 1).min(policy.backoff_max);
    // A draw outside [0, 1) (or NaN) would make `mul_f64` panic or overshoot the cap.
    let r = if rand_f64.is_nan() { 0.0 } else { rand_f64.clamp(0.0, 1.0) };
    cap.mul_f64(r)
}

#[cfg(test)]
mod tests;
