use super::*;
use proptest::prelude::*;

fn retries_available(b: &RetryBudget) -> usize {
    std::iter::from_fn(|| b.withdraw().then_some(())).count()
}

#[test]
fn one_roll_in_sixteen_deposits_for_sixteen_requests() {
    let b = RetryBudget::new();
    assert_eq!(retries_available(&b), 10, "the reserve pays for 10 retries");
    for roll in 1..16 {
        b.deposit(roll);
    }
    assert_eq!(retries_available(&b), 0, "rolls that are not a multiple of 16 deposit nothing");
    b.deposit(32);
    // 16 requests x 20% = 3.2 retries.
    assert_eq!(retries_available(&b), 3);
}

#[test]
fn over_every_roll_each_request_adds_a_fifth_of_a_retry() {
    let b = RetryBudget::new();
    let _ = retries_available(&b);
    // 400 consecutive rolls hold each residue mod 16 equally often, as uniform rolls do on
    // average: 400 requests x 20% = 80 retries, exactly.
    for roll in 1000..1400 {
        b.deposit(roll);
    }
    assert_eq!(retries_available(&b), 80);
}

#[test]
fn the_budget_never_exceeds_its_cap() {
    let b = RetryBudget::new();
    for _ in 0..10_000 {
        b.deposit(0);
    }
    assert!(retries_available(&b) <= (RetryBudget::CAP / RetryBudget::PER_RETRY) as usize + 3);
}

#[test]
fn a_refill_tops_up_to_the_reserve_and_never_takes_away() {
    let b = RetryBudget::new();
    let _ = retries_available(&b);
    b.refill();
    assert_eq!(retries_available(&b), 10, "an empty budget is topped up to the reserve");
    b.refill();
    for _ in 0..20 {
        b.deposit(0);
    }
    b.refill();
    // The reserve and 20 deposits of 16 requests x 20% (64 retries), all kept.
    assert_eq!(retries_available(&b), 10 + 64);
}

#[test]
fn a_failed_withdrawal_takes_nothing() {
    let b = RetryBudget::new();
    let _ = retries_available(&b);
    assert!(!b.withdraw());
    assert!(!b.withdraw());
    b.deposit(0);
    // 16 x 200 = 3,200 milli-tokens: three retries, had the refusals above taken nothing.
    assert_eq!(retries_available(&b), 3);
}

#[test]
fn only_a_retry_into_a_priority_already_tried_spends_the_budget() {
    let mut tried = Tried::default();
    assert!(!spends_budget(&tried, 0), "a first try never spends");
    tried.record(4, 0);
    assert!(spends_budget(&tried, 0), "a retry in the tried priority spends");
    assert!(!spends_budget(&tried, 1), "failing over to an untried priority does not");
    tried.record(7, 1);
    assert!(spends_budget(&tried, 1));
    assert!(!spends_budget(&tried, 2));
}

fn on(f: impl FnOnce(&mut RetryOn)) -> RetryOn {
    let mut on = RetryOn::default();
    f(&mut on);
    on
}

#[test]
fn an_answer_is_retried_only_when_it_is_a_5xx_the_policy_names() {
    let five_xx = on(|o| o.five_xx = true);
    assert!(retriable_answer(&five_xx, 500) && retriable_answer(&five_xx, 599));
    assert!(!retriable_answer(&five_xx, 499) && !retriable_answer(&five_xx, 600) && !retriable_answer(&five_xx, 200));

    let gateway = on(|o| o.gateway_error = true);
    assert_eq!((500..=505).filter(|&s| retriable_answer(&gateway, s)).collect::<Vec<_>>(), vec![502, 503, 504]);

    // A listed code counts only when it is a 5xx: a 4xx is the upstream's answer to the client.
    let listed = on(|o| o.retriable_status_codes = vec![409, 503]);
    assert!(retriable_answer(&listed, 503));
    assert!(!retriable_answer(&listed, 409));
    assert!(!retriable_answer(&listed, 502));
    assert!(!retriable_answer(&RetryOn::default(), 503));
}

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        per_try_timeout: None,
        retry_on: RetryOn { connect_failure: true, reset: true, five_xx: true, ..RetryOn::default() },
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        other_priorities: true,
    }
}

/// A retriable failure of the first of three endpoints' tries, everything allowing a retry.
fn failed_first() -> TryState {
    TryState { end: TryEnd::UpstreamReset, attempts: 1, endpoints: 3, idempotent: true, replayable: true, deadline_passed: false }
}

#[test]
fn a_retry_to_an_untried_host_goes_at_once() {
    assert_eq!(after_try(&policy(2), failed_first(), 0.9), Next::RetryNow);
    assert_eq!(after_try(&policy(2), TryState { attempts: 2, ..failed_first() }, 0.9), Next::RetryNow);
}

#[test]
fn a_retry_that_must_reuse_a_tried_host_backs_off() {
    let t = TryState { endpoints: 1, ..failed_first() };
    // One try made: the back-off is below 25 ms x (2^1 - 1).
    assert_eq!(after_try(&policy(2), t, 0.5), Next::RetryAfter(Duration::from_micros(12_500)));
    let t = TryState { attempts: 2, endpoints: 2, ..failed_first() };
    assert_eq!(after_try(&policy(3), t, 0.5), Next::RetryAfter(Duration::from_micros(37_500)));
}

#[test]
fn every_reason_to_stop_stops() {
    let p = policy(2);
    assert_eq!(after_try(&p, TryState { attempts: 3, ..failed_first() }, 0.0), Next::Stop, "tries spent");
    assert_eq!(after_try(&policy(0), failed_first(), 0.0), Next::Stop, "a policy of no retries");
    assert_eq!(after_try(&p, TryState { replayable: false, ..failed_first() }, 0.0), Next::Stop, "a streamed body");
    assert_eq!(after_try(&p, TryState { deadline_passed: true, ..failed_first() }, 0.0), Next::Stop, "out of time");
    assert_eq!(after_try(&p, TryState { idempotent: false, ..failed_first() }, 0.0), Next::Stop, "a reset POST");
    let off = RetryPolicy { retry_on: RetryOn::default(), ..policy(2) };
    assert_eq!(after_try(&off, failed_first(), 0.0), Next::Stop, "retry_on does not name resets");
    for end in [TryEnd::ClientAborted, TryEnd::ClientBodyMalformed, TryEnd::LocalOverflow, TryEnd::LocalResources, TryEnd::Response(200)] {
        assert_eq!(after_try(&p, TryState { end, ..failed_first() }, 0.0), Next::Stop, "{end:?} is never retried");
    }
}

#[test]
fn a_connect_failure_is_retried_whatever_the_method() {
    let t = TryState { end: TryEnd::ConnectRefused, idempotent: false, ..failed_first() };
    assert_eq!(after_try(&policy(2), t, 0.0), Next::RetryNow);
    let t = TryState { end: TryEnd::Response(503), idempotent: false, ..failed_first() };
    assert_eq!(after_try(&policy(2), t, 0.0), Next::Stop, "the upstream may have acted on it");
}

#[test]
fn the_back_off_exponent_stops_growing_at_ten() {
    let p = RetryPolicy { backoff_max: Duration::from_secs(3600), ..policy(100) };
    let near_one = 1.0 - f64::EPSILON;
    let at = |n| backoff(&p, n, near_one);
    assert!(at(10) > at(9));
    assert_eq!(at(11), at(10));
    assert_eq!(at(usize::MAX), at(10));
}

proptest! {
    /// The back-off is fully jittered below its cap: zero at a draw of 0, never past
    /// base·(2^n − 1) nor the policy's max, and it grows with the draw.
    #[test]
    fn backoff_stays_within_its_cap(
        base_ms in 0u64..10_000,
        max_ms in 0u64..100_000,
        attempts in 0usize..40,
        r in 0.0f64..1.0,
        s in 0.0f64..1.0,
    ) {
        let p = RetryPolicy { backoff_base: Duration::from_millis(base_ms), backoff_max: Duration::from_millis(max_ms), ..policy(3) };
        let cap = p.backoff_base.saturating_mul((1u32 << attempts.min(10)) - 1).min(p.backoff_max);
        let d = backoff(&p, attempts, r);
        prop_assert!(d <= cap);
        prop_assert_eq!(backoff(&p, attempts, 0.0), Duration::ZERO);
        let (lo, hi) = if r <= s { (r, s) } else { (s, r) };
        prop_assert!(backoff(&p, attempts, lo) <= backoff(&p, attempts, hi));
    }

    /// Whatever the draw, a draw outside [0, 1) does not panic or pass the cap.
    #[test]
    fn a_draw_out_of_range_is_clamped(r in proptest::num::f64::ANY) {
        let p = policy(3);
        prop_assert!(backoff(&p, 3, r) <= p.backoff_max);
    }

    /// The decision never retries past the policy's tries, and backs off exactly when no
    /// untried host is left.
    #[test]
    fn the_decision_keeps_to_the_policy(
        attempts in 1usize..8,
        endpoints in 0usize..8,
        policy_attempts in 0u32..6,
        r in 0.0f64..1.0,
    ) {
        let p = policy(policy_attempts);
        let t = TryState { attempts, endpoints, ..failed_first() };
        match after_try(&p, t, r) {
            Next::Stop => prop_assert!(attempts >= max_tries(&p)),
            Next::RetryNow => prop_assert!(attempts < max_tries(&p) && endpoints > attempts),
            Next::RetryAfter(d) => {
                prop_assert!(attempts < max_tries(&p) && endpoints <= attempts);
                prop_assert_eq!(d, backoff(&p, attempts, r));
            }
        }
    }
}
