use super::*;
use proptest::prelude::*;

const ENVOY_GATEWAY: Thresholds = Thresholds { healthy: 1, unhealthy: 3 };

#[test]
fn thresholds_come_from_the_check() {
    let check = ActiveHealthCheck { healthy_threshold: 2, unhealthy_threshold: 5, ..ActiveHealthCheck::default() };
    assert_eq!(Thresholds::from(&check), Thresholds { healthy: 2, unhealthy: 5 });
}

#[test]
fn an_endpoint_goes_after_a_run_of_failures_and_returns_after_a_run_of_passes() {
    let t = Thresholds { healthy: 2, unhealthy: 3 };
    let mut h = HealthRun::new();
    assert!(h.is_healthy(), "an endpoint starts healthy");
    assert_eq!(h.observe(false, t), None);
    assert_eq!(h.observe(false, t), None);
    assert_eq!(h.observe(false, t), Some(Transition::Unhealthy { failures: 3 }));
    assert!(!h.is_healthy());
    assert_eq!(h.observe(false, t), None, "already out: no second transition");
    assert_eq!(h.observe(true, t), None);
    assert_eq!(h.observe(true, t), Some(Transition::Healthy { passes: 2 }));
    assert!(h.is_healthy());
    assert_eq!(h.observe(true, t), None, "already in: no second transition");
}

#[test]
fn a_result_breaks_the_other_kinds_run() {
    let mut h = HealthRun::new();
    for _ in 0..10 {
        assert_eq!(h.observe(false, ENVOY_GATEWAY), None);
        assert_eq!(h.observe(false, ENVOY_GATEWAY), None);
        assert_eq!(h.observe(true, ENVOY_GATEWAY), None, "two failures, then a pass: the run starts again");
    }
    assert!(h.is_healthy());
}

#[test]
fn a_single_pass_brings_an_endpoint_back_under_envoy_gateways_defaults() {
    let mut h = HealthRun::new();
    for _ in 0..3 {
        h.observe(false, ENVOY_GATEWAY);
    }
    assert!(!h.is_healthy());
    assert_eq!(h.observe(true, ENVOY_GATEWAY), Some(Transition::Healthy { passes: 1 }));
}

#[test]
fn an_answer_passes_by_its_status() {
    assert_eq!(answer_verdict(200, None, &[]), ProbeVerdict::Passed);
    assert_eq!(answer_verdict(404, None, &[]), ProbeVerdict::Passed, "no list: anything below 500");
    assert_eq!(answer_verdict(500, None, &[]), ProbeVerdict::Failed);
    let expected = [(200, 204), (302, 302)];
    assert_eq!(answer_verdict(204, None, &expected), ProbeVerdict::Passed);
    assert_eq!(answer_verdict(302, None, &expected), ProbeVerdict::Passed);
    assert_eq!(answer_verdict(404, None, &expected), ProbeVerdict::Failed, "a list: only its codes");
    assert_eq!(answer_verdict(503, None, &[(500, 599)]), ProbeVerdict::Passed);
}

#[test]
fn an_answer_the_east_west_listener_wrote_fails_unless_its_node_was_short() {
    for value in ["connect", "refused", "reset", "something new"] {
        // Whatever the status: the listener's own answer is never the endpoint's.
        assert_eq!(answer_verdict(200, Some(value.as_bytes()), &[]), ProbeVerdict::Failed, "{value}");
    }
    assert_eq!(answer_verdict(503, Some(b"local"), &[]), ProbeVerdict::NotSent);
}

#[test]
fn a_probe_without_an_answer_fails_unless_this_node_is_to_blame() {
    for end in [TryEnd::ConnectRefused, TryEnd::ConnectTimeout, TryEnd::UpstreamReset, TryEnd::UpstreamTimeout] {
        assert_eq!(failure_verdict(end), ProbeVerdict::Failed, "{end:?}");
    }
    for end in [TryEnd::LocalResources, TryEnd::LocalOverflow] {
        assert_eq!(failure_verdict(end), ProbeVerdict::NotSent, "{end:?}");
    }
    assert_eq!(ProbeVerdict::Passed.passed(), Some(true));
    assert_eq!(ProbeVerdict::Failed.passed(), Some(false));
    assert_eq!(ProbeVerdict::NotSent.passed(), None);
}

proptest! {
    /// Health follows the results: it turns only at a threshold's run, turns to the side the run
    /// points at, and after `unhealthy` failures in a row (or `healthy` passes) the endpoint is
    /// on that side, whatever came before.
    #[test]
    fn health_turns_only_at_a_full_run(
        results in proptest::collection::vec(any::<bool>(), 0..60),
        healthy in 0u32..5,
        unhealthy in 0u32..5,
    ) {
        let t = Thresholds { healthy, unhealthy };
        let mut h = HealthRun::new();
        let mut run: (bool, u32) = (true, 0);
        for ok in results {
            run = if run.0 == ok && run.1 > 0 { (ok, run.1 + 1) } else { (ok, 1) };
            let before = h.is_healthy();
            match h.observe(ok, t) {
                Some(Transition::Healthy { passes }) => {
                    prop_assert!(ok && !before && passes == run.1 && passes >= healthy);
                }
                Some(Transition::Unhealthy { failures }) => {
                    prop_assert!(!ok && before && failures == run.1 && failures >= unhealthy);
                }
                None => prop_assert_eq!(h.is_healthy(), before),
            }
            if ok && run.1 >= healthy {
                prop_assert!(h.is_healthy());
            }
            if !ok && run.1 >= unhealthy {
                prop_assert!(!h.is_healthy());
            }
        }
    }
}
