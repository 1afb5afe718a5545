use super::*;
use crate::priority::{FailoverEntry, LabelMatch};
use crate::topology::{with_topology_labels, Address, Labels, Locality};

fn ep(cluster: &str, loc: &str, group: &str, health: Health) -> Endpoint {
    let locality = Locality::parse(loc);
    Endpoint {
        cluster: cluster.into(),
        address: Address::Dns { host: format!("{cluster}.example"), port: 80 },
        labels: with_topology_labels(Labels::new(), cluster, &locality, ""),
        locality,
        network: String::new(),
        weight: 1,
        health,
        tier: None,
        group: group.into(),
        group_weight: None,
        origin: String::new(),
    }
}

fn client(cluster: &str, loc: &str) -> Client {
    let locality = Locality::parse(loc);
    Client {
        cluster: cluster.into(),
        labels: with_topology_labels(Labels::new(), cluster, &locality, ""),
        locality,
        network: String::new(),
    }
}

fn share_of(t: &Table, eps: &[Endpoint], cluster: &str) -> f64 {
    t.placements.iter().filter(|p| eps[p.endpoint].cluster == cluster).map(|p| p.share_percent).sum()
}

#[test]
fn three_and_nine_replicas_get_a_quarter_and_three_quarters() {
    let mut eps: Vec<Endpoint> = (0..3).map(|_| ep("a", "r/z", "a", Health::Healthy)).collect();
    eps.extend((0..9).map(|_| ep("b", "r/z", "b", Health::Healthy)));
    for weighting in [GroupWeighting::Off, GroupWeighting::On] {
        let t = build(&client("a", "r/z"), &eps, &PriorityRule::Flat, LoadSettings::default(), weighting);
        assert!((share_of(&t, &eps, "a") - 25.0).abs() < 1e-9);
        assert!((share_of(&t, &eps, "b") - 75.0).abs() < 1e-9);
    }
}

#[test]
fn locality_failover_moves_load_when_local_endpoints_fail() {
    let rule = PriorityRule::Istio { labels: vec![], locality: Some(vec![FailoverEntry { from: "region1".into(), to: "region2".into() }]) };
    let settings = LoadSettings { overprovisioning_factor: 140, panic_threshold: 0 };
    let healthy = [ep("c1", "region1/z", "region1/z", Health::Healthy), ep("c2", "region2/z", "region2/z", Health::Healthy)];
    let t = build(&client("c1", "region1/z"), &healthy, &rule, settings, GroupWeighting::On);
    assert_eq!(t.levels, 2);
    assert_eq!(t.load.healthy, vec![100, 0]);
    assert!((share_of(&t, &healthy, "c1") - 100.0).abs() < 1e-9);

    let down = [ep("c1", "region1/z", "region1/z", Health::Unhealthy), healthy[1].clone()];
    let t = build(&client("c1", "region1/z"), &down, &rule, settings, GroupWeighting::On);
    assert_eq!(t.load.healthy, vec![0, 100]);
    assert!((share_of(&t, &down, "c2") - 100.0).abs() < 1e-9);
}

#[test]
fn everything_down_without_panic_means_no_share_anywhere() {
    let rule = PriorityRule::Istio { labels: vec![LabelMatch { key: "x".into(), value: None }], locality: None };
    let settings = LoadSettings { overprovisioning_factor: 140, panic_threshold: 0 };
    let eps = [ep("a", "r/z", "", Health::Unhealthy), ep("b", "r/z", "", Health::Unhealthy)];
    let t = build(&client("a", "r/z"), &eps, &rule, settings, GroupWeighting::Off);
    assert!(t.load.no_healthy);
    assert!(t.placements.iter().all(|p| p.share_percent == 0.0));
}

#[test]
fn panic_spreads_over_all_hosts_of_the_level() {
    // Example 6 of §1.6 with Envoy's threshold 50: total panic, loads by host count 4/9 and 5/9.
    let mut eps = vec![ep("p0", "r/z", "", Health::Healthy)];
    eps.extend((0..3).map(|_| ep("p0", "r/z", "", Health::Unhealthy)));
    let mut p1: Vec<Endpoint> = (0..4).map(|_| ep("p1", "r/z", "", Health::Unhealthy)).collect();
    p1.push(ep("p1", "r/z", "", Health::Healthy));
    for e in &mut eps {
        e.tier = Some(0);
    }
    for e in &mut p1 {
        e.tier = Some(1);
    }
    eps.extend(p1);
    let t = build(&client("x", "r/z"), &eps, &PriorityRule::Tiers, LoadSettings::default(), GroupWeighting::Off);
    assert!(t.load.total_panic);
    assert_eq!(t.load.healthy, vec![45, 55]);
    // Unhealthy hosts get traffic in panic.
    let unhealthy_share: f64 = t.placements.iter().filter(|p| eps[p.endpoint].health == Health::Unhealthy).map(|p| p.share_percent).sum();
    assert!(unhealthy_share > 0.0);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_endpoints() -> impl Strategy<Value = Vec<(u8, u8, bool)>> {
        // (region index, tier, healthy)
        prop::collection::vec((0u8..3, 0u8..3, any::<bool>()), 1..12)
    }

    proptest! {
        #[test]
        fn shares_sum_to_100_and_unhealthy_endpoints_get_none_outside_panic(
            spec in arb_endpoints(),
            panic_threshold in prop_oneof![Just(0u32), Just(50u32)],
            use_tiers in any::<bool>(),
        ) {
            let eps: Vec<Endpoint> = spec.iter().map(|(r, tier, healthy)| {
                let mut e = ep(&format!("c{r}"), &format!("region{r}/z"), &format!("region{r}/z"), if *healthy { Health::Healthy } else { Health::Unhealthy });
                e.tier = Some(u32::from(*tier));
                e
            }).collect();
            let rule = if use_tiers { PriorityRule::Tiers } else { PriorityRule::Istio { labels: vec![], locality: Some(vec![]) } };
            let settings = LoadSettings { overprovisioning_factor: 140, panic_threshold };
            let t = build(&client("c0", "region0/z"), &eps, &rule, settings, GroupWeighting::On);
            let sum: u32 = t.load.healthy.iter().chain(&t.load.degraded).sum();
            prop_assert_eq!(sum, 100);
            let total: f64 = t.placements.iter().map(|p| p.share_percent).sum();
            if t.load.no_healthy {
                prop_assert_eq!(total, 0.0);
            } else {
                prop_assert!((total - 100.0).abs() < 1e-6, "shares sum to {}", total);
            }
            for p in &t.placements {
                let in_panic = t.load.total_panic || t.load.panic[p.priority];
                if eps[p.endpoint].health == Health::Unhealthy && !in_panic {
                    prop_assert_eq!(p.share_percent, 0.0);
                }
            }
            // Priorities have no gaps.
            for lvl in 0..t.levels {
                prop_assert!(t.placements.iter().any(|p| p.priority == lvl));
            }
        }
    }
}

#[test]
fn level_shares_give_a_spilled_to_priority_its_own_split_even_at_zero_load() {
    let mut eps = vec![ep("a", "r/z", "a", Health::Healthy)];
    eps.extend((0..3).map(|_| ep("b", "r/z", "b1", Health::Healthy)));
    eps.push(ep("b", "r/z", "b2", Health::Healthy));
    eps[0].tier = Some(0);
    for e in &mut eps[1..] {
        e.tier = Some(1);
    }
    let t = build(&client("a", "r/z"), &eps, &PriorityRule::Tiers, LoadSettings::default(), GroupWeighting::On);
    assert_eq!(t.load.healthy, vec![100, 0]);
    let shares = level_shares(&t, &eps, 1);
    let total: f64 = shares.iter().map(|(_, s)| s).sum();
    assert!((total - 100.0).abs() < 1e-9, "{shares:?}");
    // A group weighs the sum of its endpoint weights (3 and 1), so b1's three endpoints get 75%.
    let b1: f64 = shares.iter().filter(|(i, _)| eps[*i].group == "b1").map(|(_, s)| s).sum();
    assert!((b1 - 75.0).abs() < 1e-9, "{shares:?}");
}

#[test]
fn a_warming_endpoint_gets_its_weight_scaled_and_its_group_with_it() {
    // Two clusters, one endpoint each, as two groups (Envoy Gateway backendRefs) or flat.
    let eps = [ep("a", "r/z", "a", Health::Healthy), ep("b", "r/z", "b", Health::Healthy)];
    for weighting in [GroupWeighting::Off, GroupWeighting::On] {
        let mut last = 0.0;
        for f in [0.1, 0.4, 0.7, 0.99] {
            let t = build_warming(&client("a", "r/z"), &eps, &PriorityRule::Flat, LoadSettings::default(), weighting, &[f, 1.0]);
            let a = share_of(&t, &eps, "a");
            assert!((a - 100.0 * f / (1.0 + f)).abs() < 1e-9, "{weighting:?} factor {f}: {a}");
            assert!(a > last && a < 50.0);
            last = a;
            assert_eq!(t.placements[0].warmup, Some(f));
        }
        let steady = build_warming(&client("a", "r/z"), &eps, &PriorityRule::Flat, LoadSettings::default(), weighting, &[1.0, 1.0]);
        assert!((share_of(&steady, &eps, "a") - 50.0).abs() < 1e-9);
        assert_eq!(steady.placements[0].warmup, None);
    }
}

#[test]
fn a_priority_that_came_back_takes_its_load_back_by_its_factor() {
    let rule = PriorityRule::Istio { labels: vec![], locality: Some(vec![FailoverEntry { from: "region1".into(), to: "region2".into() }]) };
    let settings = LoadSettings { overprovisioning_factor: 140, panic_threshold: 50 };
    let eps = [
        ep("c1", "region1/z", "region1/z", Health::Healthy),
        ep("c1", "region1/z", "region1/z", Health::Healthy),
        ep("c2", "region2/z", "region2/z", Health::Healthy),
    ];
    let mut last = 0;
    for f in [0.1, 0.3, 0.5, 0.9] {
        let t = build_warming(&client("c1", "region1/z"), &eps, &rule, settings, GroupWeighting::On, &[f, f, 1.0]);
        let p0 = t.load.healthy[0];
        assert_eq!(p0, (100.0 * f).round() as u32, "factor {f}");
        assert_eq!(t.load.healthy[1], 100 - p0);
        assert!(!t.load.panic[0], "hosts warming up are healthy: no panic");
        assert!(p0 > last);
        last = p0;
    }
    // One of two P0 hosts back: P0 climbs from 70 (1 of 2 at OPF 140) towards 100.
    let half = [eps[0].clone(), Endpoint { health: Health::Unhealthy, ..eps[1].clone() }, eps[2].clone()];
    let t = build_warming(&client("c1", "region1/z"), &half, &rule, settings, GroupWeighting::On, &[1.0, 0.5, 1.0]);
    assert_eq!(t.load.healthy, vec![70, 30]);
    let both = build_warming(&client("c1", "region1/z"), &eps, &rule, settings, GroupWeighting::On, &[1.0, 0.5, 1.0]);
    assert_eq!(both.load.healthy, vec![85, 15]);
}
