use super::*;
use crate::load::LoadSettings;
use crate::priority::PriorityRule;
use crate::table::{build, GroupWeighting};
use crate::topology::{Address, Client, Health, Labels, Locality};
use proptest::prelude::*;

fn ep(cluster: &str, tier: u32, last_octet: u8, health: Health) -> Endpoint {
    Endpoint {
        cluster: cluster.into(),
        address: Address::Socket(std::net::SocketAddr::from(([127, 0, 0, last_octet], 80))),
        labels: Labels::new(),
        locality: Locality::default(),
        network: String::new(),
        weight: 1,
        health,
        tier: Some(tier),
        group: cluster.into(),
        group_weight: None,
        origin: String::new(),
    }
}

/// Istio turns panic off (threshold 0) unless a DestinationRule sets minHealthPercent.
const ISTIO: LoadSettings = LoadSettings { overprovisioning_factor: 140, panic_threshold: 0 };

/// The failover world the proxy's snapshot tests resolve from manifests: one endpoint in the
/// client's cluster (west, priority 0), two in the next (east, priority 1).
fn world(health: [Health; 3], settings: LoadSettings) -> (Vec<Endpoint>, Table, Picks) {
    let eps = vec![ep("west", 0, 1, health[0]), ep("east", 1, 2, health[1]), ep("east", 1, 3, health[2])];
    let table = build(&Client::default(), &eps, &PriorityRule::Tiers, settings, GroupWeighting::Off);
    let picks = Picks::new(&table, &eps);
    (eps, table, picks)
}

/// Draws spread evenly over what `pick` reads: every priority hash modulo 100, and the endpoint
/// draw across [0, 1).
fn draws() -> impl Iterator<Item = (u64, f64)> {
    (0..400u64).map(|i| (i * 37 % 100, i as f64 / 400.0))
}

const HEALTHY: Health = Health::Healthy;
const DOWN: Health = Health::Unhealthy;

#[test]
fn first_attempt_follows_the_table_and_retries_leave_the_tried_priority() {
    let (eps, table, picks) = world([HEALTHY; 3], ISTIO);
    assert_eq!(table.load.healthy, vec![100, 0]);
    for (h, f) in draws() {
        let ep = picks.pick(&table, &Tried::default(), true, h, f).expect("pick");
        assert_eq!(eps[ep].cluster, "west");
    }
    // After the west endpoint failed, every retry goes to east, spread over both endpoints.
    let mut tried = Tried::default();
    tried.record(0, 0);
    let mut seen = std::collections::BTreeSet::new();
    for (h, f) in draws() {
        let ep = picks.pick(&table, &tried, true, h, f).expect("retry pick");
        assert_eq!(eps[ep].cluster, "east");
        seen.insert(ep);
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn unhealthy_endpoints_get_no_first_attempts() {
    let (eps, table, picks) = world([DOWN, HEALTHY, HEALTHY], ISTIO);
    assert_eq!(table.load.healthy, vec![0, 100]);
    for (h, f) in draws() {
        let ep = picks.pick(&table, &Tried::default(), true, h, f).expect("pick");
        assert_eq!(eps[ep].cluster, "east");
    }
}

/// Envoy's previous_priorities has no panic step: in total panic a first try splits by host
/// count, but a retry after P0 failed goes to the untried priority only.
#[test]
fn in_total_panic_a_retry_goes_to_the_untried_priority_only() {
    let settings = LoadSettings { panic_threshold: 60, ..ISTIO };
    // West (P0) has nothing healthy, east (P1) one of two: both below 60%.
    let (eps, table, picks) = world([DOWN, DOWN, HEALTHY], settings);
    assert!(table.load.total_panic, "{:?}", table.load);
    assert_eq!(table.load.healthy, vec![34, 66]);
    let first: std::collections::BTreeSet<&str> =
        draws().map(|(h, f)| eps[picks.pick(&table, &Tried::default(), true, h, f).expect("pick")].cluster.as_str()).collect();
    assert_eq!(first.len(), 2, "in panic a first try goes to either priority");
    let mut tried = Tried::default();
    tried.record(0, 0);
    for (h, f) in draws() {
        let ep = picks.pick(&table, &tried, true, h, f).expect("retry pick");
        assert_eq!(eps[ep].cluster, "east", "a retry went back to the tried priority");
    }
}

#[test]
fn an_endpoint_without_a_share_has_no_place_among_first_picks() {
    // A place would cost every first try a step of the search, and the clamp at the top of
    // the range could land there.
    let (_, _, picks) = world([DOWN, HEALTHY, HEALTHY], ISTIO);
    assert_eq!(picks.first.iter().map(|(e, _)| *e).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(picks.first.last().map(|(_, c)| *c), Some(100.0));
}

/// The largest draw below 1 a uniform `f64` source gives (53 bits).
const TOP: f64 = 1.0 - f64::EPSILON / 2.0;

#[test]
fn at_the_top_of_the_draw_rounding_never_lands_on_an_endpoint_without_weight() {
    // 0.3 + 0.7 leaves a little over once both are subtracted from TOP x 1.0.
    assert_eq!(pick_weighted(&[(0, 0.3), (1, 0.7), (2, 0.0)], TOP, |_| true), Some(1));
}

#[test]
fn a_retry_leaves_the_hosts_tried_and_returns_to_them_only_when_none_is_left() {
    let eps: Vec<Endpoint> = (1..=3).map(|i| ep("west", 0, i, HEALTHY)).collect();
    let table = build(&Client::default(), &eps, &PriorityRule::Tiers, ISTIO, GroupWeighting::Off);
    let picks = Picks::new(&table, &eps);
    let mut tried = Tried::default();
    tried.record(1, 0);
    let seen: std::collections::BTreeSet<usize> = draws().map(|(h, f)| picks.pick(&table, &tried, true, h, f).expect("pick")).collect();
    assert_eq!(seen, [0, 2].into(), "previous_hosts: the tried host is left out");
    tried.record(0, 0);
    tried.record(2, 0);
    // Every host tried: any of them again rather than none.
    let seen: std::collections::BTreeSet<usize> = draws().map(|(h, f)| picks.pick(&table, &tried, true, h, f).expect("pick")).collect();
    assert_eq!(seen, [0, 1, 2].into());
}

#[test]
fn without_other_priorities_a_retry_keeps_to_the_tables_load() {
    let (eps, table, picks) = world([HEALTHY; 3], ISTIO);
    let mut tried = Tried::default();
    tried.record(0, 0);
    for (h, f) in draws() {
        let ep = picks.pick(&table, &tried, false, h, f).expect("retry pick");
        // P0 keeps all the load; its one host was tried, so it is tried again.
        assert_eq!(eps[ep].cluster, "west");
    }
}

#[test]
fn with_nothing_healthy_a_first_try_has_no_pick_and_a_retry_takes_any_host_not_tried() {
    let (_, table, picks) = world([DOWN; 3], ISTIO);
    assert!(table.load.no_healthy, "{:?}", table.load);
    for (h, f) in draws() {
        assert_eq!(picks.pick(&table, &Tried::default(), true, h, f), None);
    }
    let mut tried = Tried::default();
    tried.record(0, 0);
    // In priority order, whatever the draws.
    assert_eq!(picks.pick(&table, &tried, true, 99, 0.99), Some(1));
    tried.record(1, 1);
    assert_eq!(picks.pick(&table, &tried, true, 0, 0.0), Some(2));
    tried.record(2, 1);
    assert_eq!(picks.pick(&table, &tried, true, 0, 0.0), None, "every host tried");
}

#[test]
fn tried_counts_tries_and_marks_priorities_below_64_only() {
    let mut tried = Tried::default();
    assert_eq!(tried.attempts(), 0);
    assert!(!tried.contains(0));
    tried.record(3, 2);
    tried.record(5, 64);
    tried.record(3, 2);
    assert_eq!(tried.attempts(), 3);
    assert!(tried.contains(3) && tried.contains(5) && !tried.contains(4));
    assert!(tried.has_priority(2));
    assert!(!tried.has_priority(64) && !tried.has_priority(usize::MAX), "past 63 a priority is never marked");
    assert!(!tried.has_priority(0));
}

proptest! {
    /// The first-try pick takes each endpoint with probability share / total: over draws spread
    /// evenly across [0, 1), each endpoint's count is its share to within one draw per endpoint.
    #[test]
    fn first_picks_follow_the_shares(shares in proptest::collection::vec(0.0f64..50.0, 1..8)) {
        let mut cumulative = Vec::new();
        let mut acc = 0.0;
        for (e, s) in shares.iter().enumerate().filter(|(_, s)| **s > 0.0) {
            acc += s;
            cumulative.push((e, acc));
        }
        prop_assume!(acc > 0.0);
        const N: usize = 10_000;
        let mut counts = vec![0usize; shares.len()];
        for i in 0..N {
            counts[pick_cumulative(&cumulative, i as f64 / N as f64).expect("pick")] += 1;
        }
        for (e, s) in shares.iter().enumerate() {
            let expected = s / acc * N as f64;
            prop_assert!((counts[e] as f64 - expected).abs() <= 1.0 + shares.len() as f64, "endpoint {e}: {} of {N}, share {s} of {acc}", counts[e]);
        }
    }

    /// The weighted pick takes only endpoints it admits with a positive weight, in proportion to
    /// their weight, and has nothing to pick exactly when they weigh nothing.
    #[test]
    fn weighted_picks_keep_to_the_admitted_endpoints(
        weights in proptest::collection::vec(0.0f64..50.0, 1..8),
        admitted in proptest::collection::vec(any::<bool>(), 8),
    ) {
        let list: Vec<(usize, f64)> = weights.iter().copied().enumerate().collect();
        let ok = |e: usize| admitted[e];
        let total: f64 = list.iter().filter(|(e, _)| ok(*e)).map(|(_, w)| w).sum();
        const N: usize = 10_000;
        let mut counts = vec![0usize; list.len()];
        for i in 0..N {
            match pick_weighted(&list, i as f64 / N as f64, ok) {
                Some(e) => {
                    prop_assert!(ok(e) && weights[e] > 0.0, "picked {e}");
                    counts[e] += 1;
                }
                None => prop_assert!(total <= 0.0),
            }
        }
        if total > 0.0 {
            for (e, w) in list.iter().filter(|(e, _)| ok(*e)) {
                let expected = w / total * N as f64;
                prop_assert!((counts[*e] as f64 - expected).abs() <= 1.0 + list.len() as f64, "endpoint {e}: {} of {N}", counts[*e]);
            }
        }
    }

    /// A retry with other_priorities never goes back to a tried priority while an untried one
    /// has a healthy host, and never returns a host that has no place in the table.
    #[test]
    fn retries_leave_tried_priorities_while_others_have_healthy_hosts(
        tiers in proptest::collection::vec((0u32..4, any::<bool>()), 1..10),
        first in 0usize..10,
        h in any::<u64>(),
        f in 0.0f64..1.0,
    ) {
        let eps: Vec<Endpoint> =
            tiers.iter().enumerate().map(|(i, (t, up))| ep("c", *t, i as u8, if *up { HEALTHY } else { DOWN })).collect();
        let table = build(&Client::default(), &eps, &PriorityRule::Tiers, ISTIO, GroupWeighting::Off);
        let picks = Picks::new(&table, &eps);
        let first = first % eps.len();
        let priority_of = |e: usize| table.placements.iter().find(|p| p.endpoint == e).map(|p| p.priority);
        let mut tried = Tried::default();
        tried.record(first, priority_of(first).expect("placed"));
        let untried_healthy = table.placements.iter().any(|p| !tried.has_priority(p.priority) && eps[p.endpoint].health == HEALTHY);
        if let Some(e) = picks.pick(&table, &tried, true, h, f) {
            let p = priority_of(e);
            prop_assert!(p.is_some());
            if untried_healthy {
                prop_assert!(!tried.has_priority(p.expect("placed")), "{e} is in a tried priority; table {:?}", table.load);
            }
        }
    }
}
