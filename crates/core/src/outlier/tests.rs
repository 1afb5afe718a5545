use super::*;
use proptest::prelude::*;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Always rolls 0: every enforcing percentage above 0 enforces, jitter is 0.
fn zero() -> impl FnMut() -> u32 {
    || 0
}

/// Replays `values`, then 0.
fn seq(values: &[u32]) -> impl FnMut() -> u32 + '_ {
    let mut values = values.iter().copied();
    move || values.next().unwrap_or(0)
}

fn config(max_ejection_percent: u32) -> OutlierConfig {
    OutlierConfig { max_ejection_percent, ..OutlierConfig::default() }
}

/// Sends `n` responses with `code` and returns the last verdict.
fn send(
    detector: &mut OutlierDetector<&'static str>,
    host: &'static str,
    n: usize,
    outcome: Outcome,
    now: Duration,
) -> Verdict<&'static str> {
    let mut rng = zero();
    let mut last = Verdict::None;
    for _ in 0..n {
        last = detector.record(&host, outcome, now, &mut rng);
    }
    last
}

fn ejected(verdict: &Verdict<&'static str>) -> Ejection<&'static str> {
    match verdict {
        Verdict::Ejected(ejection) => ejection.clone(),
        other => panic!("expected an ejection, got {other:?}"),
    }
}

#[test]
fn defaults_are_envoys() {
    let c = OutlierConfig::default();
    assert_eq!((c.consecutive_5xx, c.consecutive_gateway_failure, c.consecutive_local_origin_failure), (5, 5, 5));
    assert_eq!(
        (c.enforcing_consecutive_5xx, c.enforcing_consecutive_gateway_failure, c.enforcing_consecutive_local_origin_failure),
        (100, 0, 100)
    );
    assert_eq!(c.interval, secs(10));
    assert_eq!(c.base_ejection_time, secs(30));
    assert_eq!(c.max_ejection_time, secs(300));
    assert_eq!(c.max_ejection_time_jitter, Duration::ZERO);
    assert_eq!(c.max_ejection_percent, 10);
    assert!(!c.always_eject_one_host);
    assert!(!c.split_external_local_origin_errors);
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn max_ejection_time_defaults_to_at_least_base() {
    assert_eq!(OutlierConfig::default_max_ejection_time(secs(30)), secs(300));
    assert_eq!(OutlierConfig::default_max_ejection_time(secs(600)), secs(600));
    let c = OutlierConfig::default().with_base_ejection_time(secs(400));
    assert_eq!((c.base_ejection_time, c.max_ejection_time), (secs(400), secs(400)));
    let bad = OutlierConfig { max_ejection_time: secs(10), ..OutlierConfig::default() };
    assert_eq!(bad.validate(), Err(OutlierConfigError::MaxEjectionTimeBelowBase { base: secs(30), max: secs(10) }));
    assert!(bad.validate().is_err_and(|e| e.to_string().contains("max_ejection_time")));
}

// §2.3 gate examples.

#[test]
fn four_hosts_at_ten_percent_eject_nothing() {
    let mut d = OutlierDetector::new(config(10), ["a", "b", "c", "d"]);
    let verdict = send(&mut d, "a", 5, Outcome::Http(500), secs(1));
    assert_eq!(verdict, Verdict::Overflow { host: "a", reason: EjectionReason::Consecutive5xx });
    assert!(!d.is_ejected(&"a"));
    assert_eq!(d.ejected_count(), 0);
    // The overflowing request still reset the counter.
    assert_eq!(d.host_status(&"a").map(|s| s.consecutive_5xx), Some(0));
}

#[test]
fn ten_hosts_at_ten_percent_eject_one() {
    let hosts = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    let mut d = OutlierDetector::new(config(10), hosts);
    assert!(send(&mut d, "0", 5, Outcome::Http(500), secs(1)).is_ejected());
    assert!(matches!(send(&mut d, "1", 5, Outcome::Http(500), secs(1)), Verdict::Overflow { .. }));
}

#[test]
fn always_eject_one_host_lets_the_first_through() {
    let c = OutlierConfig { always_eject_one_host: true, ..config(10) };
    let mut d = OutlierDetector::new(c, ["a", "b", "c", "d"]);
    assert!(send(&mut d, "a", 5, Outcome::Http(500), secs(1)).is_ejected());
    assert!(matches!(send(&mut d, "b", 5, Outcome::Http(500), secs(1)), Verdict::Overflow { host: "b", .. }));
    assert_eq!(d.ejected_count(), 1);
}

#[test]
fn three_hosts_at_fifty_percent_allow_one() {
    let mut d = OutlierDetector::new(config(50), ["a", "b", "c"]);
    assert!(send(&mut d, "a", 5, Outcome::Http(500), secs(1)).is_ejected());
    assert!(matches!(send(&mut d, "b", 5, Outcome::Http(500), secs(1)), Verdict::Overflow { host: "b", .. }));
    assert_eq!(d.ejected_hosts().copied().collect::<Vec<_>>(), vec!["a"]);
}

#[test]
fn cap_is_cluster_wide_across_priorities() {
    // P0 = a, b, c and P1 = x, y, z: the cap sees six hosts, so all of P0 can go.
    let mut d = OutlierDetector::new(config(50), ["a", "b", "c", "x", "y", "z"]);
    for host in ["a", "b", "c"] {
        assert!(send(&mut d, host, 5, Outcome::Http(500), secs(1)).is_ejected(), "{host}");
    }
    assert!(matches!(send(&mut d, "x", 5, Outcome::Http(500), secs(1)), Verdict::Overflow { .. }));
    assert_eq!(d.ejected_count(), 3);
    assert_eq!(d.host_count(), 6);
}

#[test]
fn cap_compares_exact_percentages() {
    // 1 of 3 is 33.3%, above 33 even though it floors to 33.
    let mut d = OutlierDetector::new(config(33), ["a", "b", "c"]);
    assert!(matches!(send(&mut d, "a", 5, Outcome::Http(500), secs(1)), Verdict::Overflow { .. }));
    let mut d = OutlierDetector::new(config(34), ["a", "b", "c"]);
    assert!(send(&mut d, "a", 5, Outcome::Http(500), secs(1)).is_ejected());
}

// §2.4 timing.

#[test]
fn unejected_only_at_the_first_sweep_after_the_ejection_time() {
    let mut d = OutlierDetector::new(config(100), ["a", "b"]);
    let ejection = ejected(&send(&mut d, "a", 5, Outcome::Http(500), secs(3)));
    assert_eq!(ejection.duration, secs(30));
    assert_eq!(ejection.ejections_total, 1);
    assert_eq!(d.ejection_ends_at(&"a"), Some(secs(33)));
    for t in [10, 20, 30] {
        assert!(d.sweep(secs(t)).is_empty(), "t={t}");
        assert!(d.is_ejected(&"a"));
    }
    assert_eq!(d.sweep(secs(40)), vec!["a"]);
    assert!(!d.is_ejected(&"a"));
    assert_eq!(d.ejected_count(), 0);
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!(status.last_unejection, Some(secs(40)));
    assert_eq!(status.last_ejection, Some(secs(3)));
    assert_eq!(d.ejection_ends_at(&"a"), None);
}

#[test]
fn ejection_duration_is_inclusive() {
    let mut d = OutlierDetector::new(config(100), ["a"]);
    send(&mut d, "a", 5, Outcome::Http(500), secs(10));
    assert!(d.sweep(secs(40) - Duration::from_millis(1)).is_empty());
    assert_eq!(d.sweep(secs(40)), vec!["a"]);
}

#[test]
fn repeated_ejections_back_off_to_the_cap() {
    let mut d = OutlierDetector::new(config(100), ["a", "b"]);
    let mut now = secs(0);
    let mut durations = Vec::new();
    for _ in 0..13 {
        let ejection = ejected(&send(&mut d, "a", 5, Outcome::Http(500), now));
        durations.push(ejection.duration.as_secs());
        now += ejection.duration;
        // Re-failing straight after the un-ejection keeps the backoff.
        assert_eq!(d.sweep(now), vec!["a"]);
    }
    assert_eq!(durations, vec![30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300, 300]);
    // The backoff stops one step past the cap: 11·30 = 330 is not below 300 + 30.
    assert_eq!(d.host_status(&"a").map(|s| s.backoff), Some(11));
    assert_eq!(d.host_status(&"a").map(|s| s.num_ejections), Some(13));
}

#[test]
fn backoff_decays_one_step_per_calm_sweep() {
    let mut d = OutlierDetector::new(config(100), ["a"]);
    let mut now = secs(0);
    for _ in 0..3 {
        let ejection = ejected(&send(&mut d, "a", 5, Outcome::Http(500), now));
        now += ejection.duration;
        assert_eq!(d.sweep(now), vec!["a"]);
    }
    let backoff = |d: &OutlierDetector<&str>| d.host_status(&"a").map(|s| s.backoff);
    // The un-ejecting sweep itself does not decay (0 s since the un-ejection).
    assert_eq!(backoff(&d), Some(3));
    d.sweep(now + secs(5));
    assert_eq!(backoff(&d), Some(3));
    d.sweep(now + secs(10));
    assert_eq!(backoff(&d), Some(2));
    d.sweep(now + secs(20));
    assert_eq!(backoff(&d), Some(1));
    let ejection = ejected(&send(&mut d, "a", 5, Outcome::Http(500), now + secs(25)));
    assert_eq!(ejection.duration, secs(60));
    // No decay while ejected.
    d.sweep(now + secs(30));
    assert_eq!(backoff(&d), Some(2));
    // And never below zero.
    let mut fresh = OutlierDetector::new(config(100), ["a"]);
    send(&mut fresh, "a", 5, Outcome::Http(500), secs(0));
    fresh.sweep(secs(30));
    for t in 1..10 {
        fresh.sweep(secs(30 + 10 * t));
    }
    assert_eq!(backoff(&fresh), Some(0));
}

#[test]
fn jitter_is_drawn_in_milliseconds_after_the_enforcement_roll() {
    let c = OutlierConfig { max_ejection_time_jitter: Duration::from_secs(1), ..config(100) };
    let mut d = OutlierDetector::new(c, ["a"]);
    let mut rng = seq(&[99, 1234]);
    let mut verdict = Verdict::None;
    for _ in 0..5 {
        verdict = d.record(&"a", Outcome::Http(500), secs(0), &mut rng);
    }
    // Roll 99 < 100 enforces; jitter 1234 % 1001 = 233 ms.
    let ejection = ejected(&verdict);
    assert_eq!(ejection.duration, Duration::from_millis(30_233));
    assert_eq!(d.host_status(&"a").map(|s| s.jitter), Some(Duration::from_millis(233)));
    assert!(d.sweep(secs(30)).is_empty());
    assert_eq!(d.sweep(secs(40)), vec!["a"]);
}

#[test]
fn enforcing_percentage_is_rolled() {
    let c = OutlierConfig { enforcing_consecutive_5xx: 50, ..config(100) };
    let mut d = OutlierDetector::new(c, ["a"]);
    let mut rng = seq(&[150]); // 150 % 100 = 50, not below 50
    for _ in 0..4 {
        assert_eq!(d.record(&"a", Outcome::Http(500), secs(0), &mut rng), Verdict::None);
    }
    assert_eq!(
        d.record(&"a", Outcome::Http(500), secs(0), &mut rng),
        Verdict::NotEnforced { host: "a", reason: EjectionReason::Consecutive5xx }
    );
    // The request reset the counter: four more errors are not enough.
    let mut rng = seq(&[49]);
    for _ in 0..4 {
        assert_eq!(d.record(&"a", Outcome::Http(500), secs(1), &mut rng), Verdict::None);
    }
    assert!(d.record(&"a", Outcome::Http(500), secs(1), &mut rng).is_ejected());
}

#[test]
fn health_check_unejects_and_resets_counters() {
    let mut d = OutlierDetector::new(config(100), ["a", "b"]);
    assert!(!d.uneject_by_health_check(&"a", secs(1)));
    assert!(!d.uneject_by_health_check(&"zzz", secs(1)));
    send(&mut d, "a", 5, Outcome::Http(500), secs(1));
    send(&mut d, "a", 3, Outcome::Http(503), secs(2));
    assert!(d.uneject_by_health_check(&"a", secs(5)));
    assert!(!d.is_ejected(&"a"));
    assert_eq!(d.ejected_count(), 0);
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!((status.consecutive_5xx, status.consecutive_gateway_failure, status.consecutive_local_origin_failure), (0, 0, 0));
    assert_eq!(status.last_unejection, Some(secs(5)));
    assert!(d.sweep(secs(40)).is_empty());
}

// §2.2 counting.

#[test]
fn thresholds_fire_on_equality_only() {
    let mut d = OutlierDetector::new(config(100), ["a"]);
    assert!(send(&mut d, "a", 5, Outcome::Http(500), secs(0)).is_ejected());
    // While ejected the counter keeps counting; its request at 5 is ignored and leaves it at 5,
    // so the 6th and later errors never fire again.
    for n in 1..=8u32 {
        assert_eq!(send(&mut d, "a", 1, Outcome::Http(500), secs(1)), Verdict::None);
        assert_eq!(d.host_status(&"a").map(|s| s.consecutive_5xx), Some(n));
    }
    assert!(d.uneject_by_health_check(&"a", secs(2)));
    // Un-ejection reset it: 4 errors are quiet, the 5th fires.
    assert_eq!(send(&mut d, "a", 4, Outcome::Http(500), secs(3)), Verdict::None);
    assert!(send(&mut d, "a", 1, Outcome::Http(500), secs(3)).is_ejected());
}

#[test]
fn successes_and_non_5xx_reset_both_http_counters() {
    let mut d = OutlierDetector::new(config(100), ["a"]);
    for code in [200u16, 404, 499, 302, 600] {
        send(&mut d, "a", 4, Outcome::Http(503), secs(0));
        assert_eq!(send(&mut d, "a", 1, Outcome::Http(code), secs(0)), Verdict::None);
        let status = d.host_status(&"a").unwrap_or_default();
        assert_eq!((status.consecutive_5xx, status.consecutive_gateway_failure), (0, 0), "{code}");
    }
    assert!(!d.is_ejected(&"a"));
}

#[test]
fn gateway_errors_count_separately_and_are_not_enforced_by_default() {
    let c = OutlierConfig { consecutive_gateway_failure: 3, ..config(100) };
    let mut d = OutlierDetector::new(c, ["a"]);
    send(&mut d, "a", 1, Outcome::Http(502), secs(0));
    send(&mut d, "a", 1, Outcome::Http(504), secs(0));
    let verdict = send(&mut d, "a", 1, Outcome::Http(503), secs(0));
    assert_eq!(verdict, Verdict::NotEnforced { host: "a", reason: EjectionReason::ConsecutiveGatewayFailure });
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!((status.consecutive_gateway_failure, status.consecutive_5xx), (0, 3));
    // A non-gateway 5xx resets the gateway counter but keeps counting 5xx.
    send(&mut d, "a", 1, Outcome::Http(500), secs(0));
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!((status.consecutive_gateway_failure, status.consecutive_5xx), (0, 4));
    let verdict = send(&mut d, "a", 1, Outcome::Http(502), secs(0));
    assert_eq!(verdict.reason(), Some(EjectionReason::Consecutive5xx));
    assert!(d.is_ejected(&"a"));
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!((status.consecutive_gateway_failure, status.consecutive_5xx), (1, 0));
}

#[test]
fn one_gateway_error_can_raise_two_requests() {
    // Default enforcing_consecutive_gateway_failure = 0: the gateway request is not enforced,
    // then the 5xx request for the same response ejects.
    let mut d = OutlierDetector::new(config(100), ["a"]);
    send(&mut d, "a", 4, Outcome::Http(503), secs(0));
    let all = d.record_all(&"a", Outcome::Http(503), secs(0), &mut zero());
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], Verdict::NotEnforced { host: "a", reason: EjectionReason::ConsecutiveGatewayFailure });
    assert_eq!(all[1].reason(), Some(EjectionReason::Consecutive5xx));
    assert!(all[1].is_ejected());

    // Enforced gateway ejection wins; the 5xx request is then ignored and its counter kept.
    let c = OutlierConfig { enforcing_consecutive_gateway_failure: 100, ..config(100) };
    let mut d = OutlierDetector::new(c, ["a"]);
    send(&mut d, "a", 4, Outcome::Http(503), secs(0));
    let verdict = d.record(&"a", Outcome::Http(503), secs(0), &mut zero());
    assert_eq!(verdict.reason(), Some(EjectionReason::ConsecutiveGatewayFailure));
    assert!(verdict.is_ejected());
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!((status.consecutive_gateway_failure, status.consecutive_5xx), (0, 5));
}

#[test]
fn record_prefers_the_most_significant_verdict() {
    // Cap refuses both requests of one response: record reports the first overflow.
    let c = OutlierConfig { enforcing_consecutive_gateway_failure: 100, ..config(0) };
    let mut d = OutlierDetector::new(c, ["a"]);
    send(&mut d, "a", 4, Outcome::Http(502), secs(0));
    assert_eq!(d.record_all(&"a", Outcome::Http(502), secs(0), &mut zero()).len(), 2);
    send(&mut d, "a", 4, Outcome::Http(502), secs(0));
    assert_eq!(
        d.record(&"a", Outcome::Http(502), secs(0), &mut zero()),
        Verdict::Overflow { host: "a", reason: EjectionReason::ConsecutiveGatewayFailure }
    );
}

#[test]
fn unsplit_local_origin_errors_map_to_http_codes() {
    let mut d = OutlierDetector::new(config(100), ["a"]);
    // connect-fail = 503 and timeout = 504: both are gateway errors.
    send(&mut d, "a", 2, Outcome::ConnectFailed, secs(0));
    send(&mut d, "a", 1, Outcome::Timeout, secs(0));
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!((status.consecutive_5xx, status.consecutive_gateway_failure), (3, 3));
    assert_eq!(status.consecutive_local_origin_failure, 0);
    // connect-success is not reported.
    send(&mut d, "a", 1, Outcome::ConnectSucceeded, secs(0));
    assert_eq!(d.host_status(&"a"), Some(status));
    // external failure = 500: resets the gateway counter.
    send(&mut d, "a", 1, Outcome::ExternalFailure, secs(0));
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!((status.consecutive_5xx, status.consecutive_gateway_failure), (4, 0));
    let verdict = send(&mut d, "a", 1, Outcome::Timeout, secs(0));
    assert_eq!(verdict.reason(), Some(EjectionReason::Consecutive5xx));
    assert!(verdict.is_ejected());
}

#[test]
fn split_local_origin_errors_count_on_their_own() {
    let c = OutlierConfig { split_external_local_origin_errors: true, ..config(100) };
    let mut d = OutlierDetector::new(c, ["a"]);
    send(&mut d, "a", 3, Outcome::ConnectFailed, secs(0));
    send(&mut d, "a", 1, Outcome::Timeout, secs(0));
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!(status.consecutive_local_origin_failure, 4);
    assert_eq!((status.consecutive_5xx, status.consecutive_gateway_failure), (0, 0));
    // An HTTP success does not reset the local-origin counter; a connect success does.
    send(&mut d, "a", 1, Outcome::Http(200), secs(0));
    assert_eq!(d.host_status(&"a").map(|s| s.consecutive_local_origin_failure), Some(4));
    send(&mut d, "a", 1, Outcome::ConnectSucceeded, secs(0));
    assert_eq!(d.host_status(&"a").map(|s| s.consecutive_local_origin_failure), Some(0));
    // External failures go to the HTTP counters as 503.
    send(&mut d, "a", 1, Outcome::ExternalFailure, secs(0));
    let status = d.host_status(&"a").unwrap_or_default();
    assert_eq!((status.consecutive_5xx, status.consecutive_gateway_failure), (1, 1));
    assert_eq!(status.consecutive_local_origin_failure, 0);

    let verdict = send(&mut d, "a", 5, Outcome::Timeout, secs(0));
    let ejection = ejected(&verdict);
    assert_eq!(ejection.reason, EjectionReason::ConsecutiveLocalOriginFailure);
}

#[test]
fn unknown_and_ejected_hosts_are_ignored() {
    let mut d = OutlierDetector::new(config(100), ["a"]);
    assert_eq!(send(&mut d, "zzz", 10, Outcome::Http(500), secs(0)), Verdict::None);
    assert_eq!(d.host_status(&"zzz"), None);
    assert!(!d.is_ejected(&"zzz"));
    send(&mut d, "a", 5, Outcome::Http(500), secs(0));
    assert_eq!(send(&mut d, "a", 20, Outcome::Http(500), secs(1)), Verdict::None);
    assert_eq!(d.host_status(&"a").map(|s| s.num_ejections), Some(1));
}

#[test]
fn set_hosts_keeps_survivors_and_forgets_the_rest() {
    let mut d = OutlierDetector::new(config(100), ["a", "b", "c"]);
    send(&mut d, "a", 5, Outcome::Http(500), secs(0));
    send(&mut d, "b", 5, Outcome::Http(500), secs(0));
    send(&mut d, "c", 3, Outcome::Http(500), secs(0));
    assert_eq!(d.ejected_count(), 2);

    d.set_hosts(["c", "a", "d", "a"]);
    assert_eq!(d.hosts().copied().collect::<Vec<_>>(), vec!["c", "a", "d"]);
    assert_eq!(d.host_count(), 3);
    assert_eq!(d.ejected_count(), 1);
    assert!(d.is_ejected(&"a"));
    assert!(!d.is_ejected(&"b"));
    assert_eq!(d.host_status(&"b"), None);
    assert_eq!(d.host_status(&"c").map(|s| s.consecutive_5xx), Some(3));
    assert_eq!(d.host_status(&"d"), Some(HostStatus::default()));

    // A host that comes back starts clean.
    d.set_hosts(["a", "b"]);
    assert_eq!(d.host_status(&"b"), Some(HostStatus::default()));
    assert_eq!(d.sweep(secs(30)), vec!["a"]);
}

#[test]
fn sweep_reports_in_host_order() {
    let hosts = ["e", "d", "c", "b", "a"];
    let mut d = OutlierDetector::new(config(100), hosts);
    for host in ["a", "c", "e", "b"] {
        send(&mut d, host, 5, Outcome::Http(500), secs(0));
    }
    assert_eq!(d.sweep(secs(30)), vec!["e", "c", "b", "a"]);
}

#[test]
fn zero_threshold_never_fires() {
    let c = OutlierConfig { consecutive_5xx: 0, ..config(100) };
    let mut d = OutlierDetector::new(c, ["a"]);
    assert_eq!(send(&mut d, "a", 50, Outcome::Http(500), secs(0)), Verdict::None);
}

// === properties ===

#[derive(Clone, Debug)]
enum Step {
    Record { host: usize, outcome: Outcome },
    Advance(u64),
    Sweep,
    HealthCheck(usize),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => prop_oneof![Just(500u16), Just(502), Just(503), Just(504), Just(200), Just(404)]
            .prop_map(Outcome::Http),
        1 => Just(Outcome::ConnectFailed),
        1 => Just(Outcome::Timeout),
        1 => Just(Outcome::ConnectSucceeded),
        1 => Just(Outcome::ExternalFailure),
    ]
}

fn step(hosts: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..hosts + 1, outcome()).prop_map(|(host, outcome)| Step::Record { host, outcome }),
        2 => (0u64..15_000).prop_map(Step::Advance),
        2 => Just(Step::Sweep),
        1 => (0..hosts).prop_map(Step::HealthCheck),
    ]
}

fn any_config() -> impl Strategy<Value = OutlierConfig> {
    (
        (1u32..4, 1u32..4, 1u32..4),
        (0u32..=100, 0u32..=100, 0u32..=100),
        (1u64..20, 1u64..40, 0u64..5_000),
        (0u32..=100, any::<bool>(), any::<bool>()),
    )
        .prop_map(|(thresholds, enforcing, times, cap)| OutlierConfig {
            consecutive_5xx: thresholds.0,
            consecutive_gateway_failure: thresholds.1,
            consecutive_local_origin_failure: thresholds.2,
            enforcing_consecutive_5xx: enforcing.0,
            enforcing_consecutive_gateway_failure: enforcing.1,
            enforcing_consecutive_local_origin_failure: enforcing.2,
            interval: secs(times.0),
            base_ejection_time: secs(times.1),
            max_ejection_time: OutlierConfig::default_max_ejection_time(secs(times.1)) / 4,
            max_ejection_time_jitter: Duration::from_millis(times.2),
            max_ejection_percent: cap.0,
            always_eject_one_host: cap.1,
            split_external_local_origin_errors: cap.2,
        })
}

fn scenario() -> impl Strategy<Value = (OutlierConfig, usize, Vec<Step>, u64)> {
    (any_config(), 1usize..12)
        .prop_flat_map(|(config, hosts)| (Just(config), Just(hosts), proptest::collection::vec(step(hosts), 1..300), any::<u64>()))
}

/// splitmix64, so a failing case replays from its seed.
fn rng_from(mut state: u64) -> impl FnMut() -> u32 {
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    }
}

proptest! {
    #[test]
    fn ejection_invariants_hold((config, hosts, steps, seed) in scenario()) {
        // The extra index `hosts` is a host the detector does not know.
        let mut d = OutlierDetector::new(config, 0..hosts);
        let mut rng = rng_from(seed);
        let mut now = Duration::ZERO;
        // host -> (ejected at, duration) for the current ejection
        let mut open: Vec<Option<(Duration, Duration)>> = vec![None; hosts];

        for step in steps {
            let before: Vec<bool> = (0..hosts).map(|h| d.is_ejected(&h)).collect();
            let mut unejected_by: Vec<usize> = Vec::new();
            match step {
                Step::Record { host, outcome } => {
                    for verdict in d.record_all(&host, outcome, now, &mut rng) {
                        prop_assert!(host < hosts, "unknown host produced {:?}", verdict);
                        if let Verdict::Ejected(e) = verdict {
                            prop_assert!(!before[host]);
                            prop_assert!(e.duration >= config.base_ejection_time.min(config.max_ejection_time));
                            prop_assert!(e.duration <= config.max_ejection_time + config.max_ejection_time_jitter);
                            open[host] = Some((now, e.duration));
                        }
                    }
                }
                Step::Advance(ms) => now += Duration::from_millis(ms),
                Step::Sweep => {
                    for host in d.sweep(now) {
                        prop_assert!(before[host], "sweep un-ejected {} which was not ejected", host);
                        prop_assert!(open[host].is_some());
                        let (at, duration) = open[host].take().unwrap_or_default();
                        prop_assert!(now - at >= duration, "{} un-ejected after {:?} < {:?}", host, now - at, duration);
                        unejected_by.push(host);
                    }
                }
                Step::HealthCheck(host) => {
                    let was = d.is_ejected(&host);
                    prop_assert_eq!(d.uneject_by_health_check(&host, now), was);
                    if was {
                        open[host] = None;
                        unejected_by.push(host);
                    }
                }
            }

            let ejected: Vec<usize> = (0..hosts).filter(|h| d.is_ejected(h)).collect();
            prop_assert_eq!(ejected.len(), d.ejected_count());
            prop_assert_eq!(d.ejected_hosts().copied().collect::<Vec<_>>(), ejected.clone());
            // Un-ejection only through a sweep or a health check.
            for (h, was_ejected) in before.iter().enumerate() {
                if *was_ejected && !d.is_ejected(&h) {
                    prop_assert!(unejected_by.contains(&h), "{} un-ejected by {:?}", h, step);
                }
            }
            // The cap.
            let count = ejected.len();
            let within = count * 100 / hosts <= config.max_ejection_percent as usize;
            prop_assert!(within || (config.always_eject_one_host && count == 1),
                "{} of {} ejected at {}%", count, hosts, config.max_ejection_percent);
        }
    }

    #[test]
    fn ejection_ends_at_matches_sweeps((config, hosts, steps, seed) in scenario()) {
        let mut d = OutlierDetector::new(config, 0..hosts);
        let mut rng = rng_from(seed);
        let mut now = Duration::ZERO;
        for step in steps {
            match step {
                Step::Record { host, outcome } => { d.record(&host, outcome, now, &mut rng); }
                Step::Advance(ms) => now += Duration::from_millis(ms),
                Step::Sweep | Step::HealthCheck(_) => {
                    let due: Vec<usize> = (0..hosts)
                        .filter(|h| d.ejection_ends_at(h).is_some_and(|end| end <= now))
                        .collect();
                    prop_assert_eq!(d.sweep(now), due);
                }
            }
        }
    }
}

#[test]
fn eject_now_ejects_at_once_but_respects_the_cap() {
    let mut d = OutlierDetector::new(config(50), ["a", "b", "c", "d"]);
    // Rolls of 99 would refuse a 99%-or-less enforcement; decisive ejections are always enforced.
    let mut rng = || 99;
    assert!(d.eject_now(&"a", EjectionReason::ConnectFailure, secs(1), &mut rng).is_ejected());
    assert!(d.eject_now(&"b", EjectionReason::ConnectFailure, secs(1), &mut rng).is_ejected());
    assert!(matches!(d.eject_now(&"c", EjectionReason::ConnectFailure, secs(1), &mut rng), Verdict::Overflow { .. }));
    // Already ejected or unknown hosts are ignored.
    assert_eq!(d.eject_now(&"a", EjectionReason::ConnectFailure, secs(1), &mut rng), Verdict::None);
    assert_eq!(d.eject_now(&"zz", EjectionReason::ConnectFailure, secs(1), &mut rng), Verdict::None);
}

#[test]
fn failed_readmission_ejects_again_for_longer() {
    let mut d = OutlierDetector::new(config(100), ["a", "b"]);
    let mut rng = zero();
    let first = ejected(&d.eject_now(&"a", EjectionReason::ConnectFailure, secs(0), &mut rng));
    assert_eq!(first.duration, secs(30));
    assert_eq!(d.sweep(secs(30)), vec!["a"]);
    // The probe failed: ejected again at once, with backoff grown.
    let again = ejected(&d.eject_now(&"a", EjectionReason::ReadmissionProbeFailed, secs(30), &mut rng));
    assert_eq!(again.duration, secs(60));
    assert!(d.is_ejected(&"a"));
}
