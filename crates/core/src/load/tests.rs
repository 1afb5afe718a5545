use super::*;
use proptest::prelude::*;

fn envoy() -> LoadSettings {
    LoadSettings::default()
}

fn istio() -> LoadSettings {
    LoadSettings { panic_threshold: 0, ..LoadSettings::default() }
}

fn healthy_of(hosts: u32, healthy: u32) -> LevelHealth {
    LevelHealth::new(hosts, healthy, 0)
}

fn sum(load: &PriorityLoad) -> u32 {
    load.healthy.iter().chain(&load.degraded).sum()
}

#[test]
fn defaults_are_envoys() {
    assert_eq!(LoadSettings::default(), LoadSettings { overprovisioning_factor: 140, panic_threshold: 50 });
}

// §1.6 worked examples, in table order.

#[test]
fn example_1_two_of_three_spills_seven_percent() {
    let levels = [healthy_of(3, 2), healthy_of(3, 3)];
    assert_eq!(availability(levels[0], 140), (93, 0));
    let load = priority_load(&levels, envoy());
    assert_eq!(load.healthy, vec![93, 7]);
    assert_eq!(load.degraded, vec![0, 0]);
    assert_eq!(load.panic, vec![false, false]);
    assert!(!load.total_panic && !load.no_healthy);
}

#[test]
fn example_2_one_of_three() {
    let load = priority_load(&[healthy_of(3, 1), healthy_of(3, 3)], envoy());
    assert_eq!(load.healthy, vec![46, 54]);
    assert_eq!(load.panic, vec![false, false]);
}

#[test]
fn example_3_nothing_healthy_in_p0_but_nta_100_means_no_panic() {
    let load = priority_load(&[healthy_of(3, 0), healthy_of(3, 3)], envoy());
    assert_eq!(load.healthy, vec![0, 100]);
    // P0 is 0% healthy, yet NTA = 100 keeps it out of panic.
    assert_eq!(load.panic, vec![false, false]);
    assert!(!load.no_healthy);
}

#[test]
fn example_4_seventy_one_percent_is_still_fully_healthy() {
    let levels = [healthy_of(7, 5), healthy_of(3, 3)];
    assert_eq!(availability(levels[0], 140), (100, 0));
    let load = priority_load(&levels, envoy());
    assert_eq!(load.healthy, vec![100, 0]);
}

#[test]
fn example_5_seventy_one_of_a_hundred_spills_one_percent() {
    let levels = [healthy_of(100, 71), healthy_of(3, 3)];
    assert_eq!(availability(levels[0], 140), (99, 0));
    let load = priority_load(&levels, envoy());
    assert_eq!(load.healthy, vec![99, 1]);
}

#[test]
fn example_6_total_panic_splits_by_host_count() {
    let levels = [healthy_of(4, 1), healthy_of(5, 1)];
    assert_eq!(availability(levels[0], 140), (35, 0));
    assert_eq!(availability(levels[1], 140), (28, 0));
    let load = priority_load(&levels, envoy());
    assert_eq!(load.panic, vec![true, true]);
    assert!(load.total_panic);
    // 400/9 = 44 and 500/9 = 55; the leftover 1 goes to the first non-empty level.
    assert_eq!(load.healthy, vec![45, 55]);
    assert_eq!(load.degraded, vec![0, 0]);
    assert_eq!(load.host_source(0, false), HostSource::All);
    assert!(!load.no_healthy);
}

#[test]
fn example_6_with_istio_threshold_zero_uses_health() {
    let load = priority_load(&[healthy_of(4, 1), healthy_of(5, 1)], istio());
    // 3500/63 = 55, 2800/63 = 44, leftover 1 to the first healthy level.
    assert_eq!(load.healthy, vec![56, 44]);
    assert_eq!(load.panic, vec![false, false]);
    assert!(!load.total_panic && !load.no_healthy);
    assert_eq!(load.host_source(1, false), HostSource::Healthy);
}

#[test]
fn example_7_only_the_empty_healthy_level_panics() {
    let levels = [healthy_of(2, 0), healthy_of(4, 2)];
    assert_eq!(availability(levels[1], 140), (70, 0));
    let load = priority_load(&levels, envoy());
    assert_eq!(load.healthy, vec![0, 100]);
    // 50% is not below 50.
    assert_eq!(load.panic, vec![true, false]);
    assert!(!load.total_panic && !load.no_healthy);
    assert_eq!(load.host_source(1, false), HostSource::Healthy);
}

#[test]
fn degraded_code_comment_example() {
    // 14 hosts per level: 1 host is 10 health points, 2 hosts are 20.
    let levels = [LevelHealth::new(14, 1, 2), LevelHealth::new(14, 2, 1), LevelHealth::new(14, 1, 0)];
    let avail: Vec<_> = levels.iter().map(|l| availability(*l, 140)).collect();
    assert_eq!(avail, vec![(10, 20), (20, 10), (10, 0)]);
    let load = priority_load(&levels, istio());
    assert_eq!(load.healthy, vec![16, 28, 14]);
    assert_eq!(load.degraded, vec![28, 14, 0]);
    assert_eq!(sum(&load), 100);
}

#[test]
fn leftover_goes_to_first_degraded_level_when_nothing_is_healthy() {
    // Degraded availability 35 and 28 (example 6's numbers), no healthy host anywhere.
    let levels = [LevelHealth::new(4, 0, 1), LevelHealth::new(5, 0, 1)];
    let load = priority_load(&levels, istio());
    assert_eq!(load.healthy, vec![0, 0]);
    assert_eq!(load.degraded, vec![56, 44]);
    assert!(!load.no_healthy);
}

#[test]
fn threshold_zero_and_nothing_available_parks_load_on_p0_and_fails() {
    let load = priority_load(&[healthy_of(3, 0), healthy_of(2, 0)], istio());
    assert_eq!(load.healthy, vec![100, 0]);
    assert_eq!(load.degraded, vec![0, 0]);
    assert_eq!(load.panic, vec![false, false]);
    assert!(!load.total_panic);
    assert!(load.no_healthy);
}

#[test]
fn nothing_available_with_a_threshold_is_total_panic() {
    let load = priority_load(&[healthy_of(3, 0), healthy_of(2, 0)], envoy());
    assert!(load.total_panic);
    assert_eq!(load.healthy, vec![60, 40]);
    // Panic picks any host, so requests are still sent.
    assert!(!load.no_healthy);
}

#[test]
fn no_hosts_at_all() {
    for settings in [envoy(), istio()] {
        let load = priority_load(&[LevelHealth::default(), LevelHealth::default()], settings);
        assert_eq!(load.healthy, vec![100, 0], "{settings:?}");
        assert!(load.no_healthy, "{settings:?}");
    }
}

#[test]
fn empty_level_list() {
    let load = priority_load(&[], envoy());
    assert!(load.is_empty());
    assert!(load.panic.is_empty() && load.degraded.is_empty());
    assert!(load.no_healthy);
    assert!(!load.total_panic);
    assert_eq!(choose_priority(&load, 42), (0, false));
}

#[test]
fn empty_levels_count_as_zero_percent_healthy() {
    let load = priority_load(&[LevelHealth::default(), healthy_of(10, 4)], envoy());
    // NTA = 56: P1 takes everything, both levels are in panic.
    assert!(load.total_panic);
    assert_eq!(load.healthy, vec![0, 100]);
    assert!(!load.no_healthy);
}

#[test]
fn panic_compares_exact_percentages() {
    // 33.3% + 66.7% = 100%: Envoy's doubles say not in panic, floored percentages would say 99%.
    assert!(!is_in_panic(LevelHealth::new(3, 1, 2), 100));
    assert!(is_in_panic(LevelHealth::new(3, 1, 1), 100));
    assert!(!is_in_panic(LevelHealth::new(4, 2, 0), 50));
    assert!(is_in_panic(LevelHealth::new(0, 0, 0), 1));
    assert!(!is_in_panic(LevelHealth::new(0, 0, 0), 0));
    // Thresholds above 100 act as 100.
    assert!(!is_in_panic(LevelHealth::all_healthy(3), 250));
}

#[test]
fn calm_level_without_availability_after_a_small_factor() {
    // OPF 50: one healthy host of 100 is 0 availability but 1% healthy, so P0 is not in panic at
    // T=1 while P1 is. Envoy would keep stale loads; we split by host count.
    let settings = LoadSettings { overprovisioning_factor: 50, panic_threshold: 1 };
    let load = priority_load(&[healthy_of(100, 1), healthy_of(1, 0)], settings);
    assert_eq!(load.panic, vec![false, true]);
    assert!(!load.total_panic);
    assert_eq!(load.healthy, vec![100, 0]);
    assert!(!load.no_healthy);

    let degraded_only = priority_load(&[LevelHealth::new(100, 0, 1), healthy_of(1, 0)], settings);
    assert_eq!(degraded_only.healthy, vec![0, 0]);
    assert_eq!(degraded_only.degraded, vec![100, 0]);
    assert!(!degraded_only.no_healthy);
}

#[test]
fn threshold_zero_with_unavailable_healthy_hosts_can_still_pick() {
    // OPF 50 rounds P0's single healthy host to 0 availability; Envoy parks 100% on P0 and finds it.
    let settings = LoadSettings { overprovisioning_factor: 50, panic_threshold: 0 };
    let load = priority_load(&[healthy_of(100, 1)], settings);
    assert_eq!(load.healthy, vec![100]);
    assert!(!load.no_healthy);
}

#[test]
fn inconsistent_counts_are_clamped() {
    let load = priority_load(&[LevelHealth::new(2, 5, 5)], envoy());
    assert_eq!(load.healthy, vec![100]);
    assert_eq!(load.degraded, vec![0]);
}

#[test]
fn total_panic_can_cost_p0_load_when_it_recovers() {
    // Envoy's maths is not monotone across the total-panic boundary: one more healthy P0 host
    // lifts P0 out of panic, so the split switches from host counts (80/20) to health (72/28).
    let before = priority_load(&[healthy_of(20, 9), healthy_of(5, 1)], envoy());
    assert!(before.total_panic);
    assert_eq!(before.healthy, vec![80, 20]);
    let after = priority_load(&[healthy_of(20, 10), healthy_of(5, 1)], envoy());
    assert!(!after.total_panic);
    assert_eq!(after.panic, vec![false, true]);
    assert_eq!(after.healthy, vec![72, 28]);
}

#[test]
fn choose_priority_walks_healthy_then_degraded() {
    let load = priority_load(&[healthy_of(3, 2), healthy_of(3, 3)], envoy());
    assert_eq!(choose_priority(&load, 0), (0, false));
    assert_eq!(choose_priority(&load, 92), (0, false));
    assert_eq!(choose_priority(&load, 93), (1, false));
    assert_eq!(choose_priority(&load, 99), (1, false));
    assert_eq!(choose_priority(&load, 100), (0, false));
    assert_eq!(choose_priority(&load, u64::MAX), (0, false)); // u64::MAX % 100 = 15

    // Healthy 16/28/14 (cumulative 58), then degraded 28/14/0.
    let levels = [LevelHealth::new(14, 1, 2), LevelHealth::new(14, 2, 1), LevelHealth::new(14, 1, 0)];
    let load = priority_load(&levels, istio());
    assert_eq!(choose_priority(&load, 15), (0, false));
    assert_eq!(choose_priority(&load, 16), (1, false));
    assert_eq!(choose_priority(&load, 57), (2, false));
    assert_eq!(choose_priority(&load, 58), (0, true));
    assert_eq!(choose_priority(&load, 85), (0, true));
    assert_eq!(choose_priority(&load, 86), (1, true));
    assert_eq!(choose_priority(&load, 99), (1, true));
}

#[test]
fn choose_priority_skips_zero_load_levels() {
    let load = priority_load(&[healthy_of(3, 0), healthy_of(3, 3)], envoy());
    for hash in 0..100 {
        assert_eq!(choose_priority(&load, hash), (1, false));
    }
}

// === properties ===

fn level() -> impl Strategy<Value = LevelHealth> {
    (0u32..40).prop_flat_map(|hosts| {
        (0..=hosts).prop_flat_map(move |healthy| (0..=hosts - healthy).prop_map(move |degraded| LevelHealth::new(hosts, healthy, degraded)))
    })
}

fn levels() -> impl Strategy<Value = Vec<LevelHealth>> {
    proptest::collection::vec(level(), 1..6)
}

fn settings() -> impl Strategy<Value = LoadSettings> {
    (prop_oneof![Just(140u32), 0u32..400], prop_oneof![Just(50u32), Just(0u32), 0u32..130])
        .prop_map(|(overprovisioning_factor, panic_threshold)| LoadSettings { overprovisioning_factor, panic_threshold })
}

proptest! {
    #[test]
    fn loads_sum_to_100(levels in levels(), settings in settings()) {
        let load = priority_load(&levels, settings);
        prop_assert_eq!(sum(&load), 100);
        prop_assert_eq!(load.len(), levels.len());
        prop_assert_eq!(load.panic.len(), levels.len());
        prop_assert_eq!(load.total_panic, load.panic.iter().all(|&p| p));
    }

    #[test]
    fn fully_healthy_p0_takes_everything(
        hosts in 1u32..50,
        rest in proptest::collection::vec(level(), 0..5),
        opf in 100u32..400,
        threshold in 0u32..130,
    ) {
        let mut all = vec![LevelHealth::all_healthy(hosts)];
        all.extend(rest);
        let load = priority_load(&all, LoadSettings { overprovisioning_factor: opf, panic_threshold: threshold });
        prop_assert_eq!(load.healthy[0], 100);
        prop_assert!(load.panic.iter().all(|&p| !p));
        prop_assert!(!load.no_healthy);
    }

    #[test]
    fn lower_levels_get_load_only_when_higher_ones_fall_short(
        levels in levels(),
        settings in settings(),
    ) {
        let load = priority_load(&levels, settings);
        let mut health_above = 0u32;
        for (p, level) in levels.iter().enumerate() {
            if load.level_total(p) > 0 {
                prop_assert!(health_above < 100, "P{} got load below {} health", p, health_above);
            }
            health_above += availability(*level, settings.overprovisioning_factor).0;
        }
    }

    #[test]
    fn unavailable_levels_get_load_only_in_panic(levels in levels(), settings in settings()) {
        let load = priority_load(&levels, settings);
        for (p, level) in levels.iter().enumerate() {
            if level.healthy == 0 && level.degraded == 0 && load.level_total(p) > 0 {
                prop_assert!(
                    load.panic[p] || load.total_panic || load.no_healthy,
                    "P{} has no available host but gets {:?}", p, load
                );
            }
        }
    }

    #[test]
    fn every_share_is_servable_unless_flagged(levels in levels(), settings in settings()) {
        let load = priority_load(&levels, settings);
        let servable = levels.iter().enumerate().all(|(p, level)| {
            let ok = |degraded| match load.host_source(p, degraded) {
                HostSource::All => level.hosts > 0,
                HostSource::Healthy => level.healthy > 0,
                HostSource::Degraded => level.degraded > 0,
            };
            (load.healthy[p] == 0 || ok(false)) && (load.degraded[p] == 0 || ok(true))
        });
        prop_assert_eq!(load.no_healthy, !servable);
        // Whenever something fails, everything fails.
        if load.no_healthy {
            let picked = (0..100).filter(|&hash| {
                let (p, degraded) = choose_priority(&load, hash);
                let level = levels[p];
                match load.host_source(p, degraded) {
                    HostSource::All => level.hosts > 0,
                    HostSource::Healthy => level.healthy > 0,
                    HostSource::Degraded => level.degraded > 0,
                }
            }).count();
            prop_assert_eq!(picked, 0);
        }
    }

    #[test]
    fn one_more_healthy_p0_host_never_reduces_p0_load(
        levels in levels(),
        settings in settings(),
    ) {
        let mut levels = levels;
        let p0 = &mut levels[0];
        if p0.healthy + p0.degraded == p0.hosts {
            // Give P0 an unhealthy host to turn healthy.
            p0.hosts += 1;
        }
        let mut better = levels.clone();
        better[0].healthy += 1;
        let before = priority_load(&levels, settings);
        let after = priority_load(&better, settings);
        // Across the total-panic boundary the split changes basis (see
        // `total_panic_can_cost_p0_load_when_it_recovers`), so compare within one regime.
        if before.total_panic != after.total_panic {
            return Ok(());
        }
        prop_assert!(
            after.level_total(0) >= before.level_total(0),
            "{:?} -> {:?}", before, after
        );
    }

    #[test]
    fn choose_priority_matches_shares(levels in levels(), settings in settings()) {
        let load = priority_load(&levels, settings);
        let mut hits_healthy = vec![0u32; levels.len()];
        let mut hits_degraded = vec![0u32; levels.len()];
        for hash in 0..100 {
            let (p, degraded) = choose_priority(&load, hash);
            if degraded { hits_degraded[p] += 1 } else { hits_healthy[p] += 1 }
        }
        prop_assert_eq!(hits_healthy, load.healthy);
        prop_assert_eq!(hits_degraded, load.degraded);
    }
}

// === retries: Envoy's previous_priorities ===

#[test]
fn a_retry_in_total_panic_goes_to_the_untried_priority_not_back_by_host_count() {
    // P0 has nothing healthy, P1 one of four: both below 50%, so first tries split by host
    // count (2 of 6 hosts, 4 of 6; the rounding leftover to P0).
    let levels = [healthy_of(2, 0), healthy_of(4, 1)];
    let original = priority_load(&levels, envoy());
    assert!(original.total_panic);
    assert_eq!(original.healthy, vec![34, 66]);
    // After P0 was tried, previous_priorities re-spreads availability (P1: 140·1/4 = 35) with
    // no panic step: all of the retry goes to P1, whose hosts are still picked as in panic.
    let retry = retry_load(&levels, &original, |p| p == 0, envoy());
    assert_eq!((retry.healthy.clone(), retry.degraded.clone()), (vec![0, 100], vec![0, 0]));
    assert_eq!(retry.panic, original.panic);
    assert_eq!(retry.host_source(1, false), HostSource::All);
    assert!(!retry.no_healthy);
}

#[test]
fn a_retry_in_the_table_example_6_leaves_p0() {
    // failover-semantics §1 example 6: total panic, 45/55 by host count.
    let levels = [healthy_of(4, 1), healthy_of(5, 1)];
    let original = priority_load(&levels, envoy());
    assert_eq!(original.healthy, vec![45, 55]);
    assert_eq!(retry_load(&levels, &original, |p| p == 0, envoy()).healthy, vec![0, 100]);
    // P1 tried instead: P0 (35) takes it all.
    assert_eq!(retry_load(&levels, &original, |p| p == 1, envoy()).healthy, vec![100, 0]);
}

#[test]
fn a_retry_spreads_over_the_untried_priorities_in_envoys_passes() {
    // Untried availabilities 33 and 33 (of 66): 50 each. Three untried levels of 33: 33 each,
    // and the leftover 1 to the first in the second pass.
    let third = healthy_of(3, 1); // 140·1/3 = 46
    let levels = [LevelHealth::all_healthy(2), third, third];
    let original = priority_load(&levels, envoy());
    assert_eq!(retry_load(&levels, &original, |p| p == 0, envoy()).healthy, vec![0, 50, 50]);
    let levels = [LevelHealth::all_healthy(1), healthy_of(100, 33), healthy_of(100, 33), healthy_of(100, 33)];
    let istio = istio();
    let original = priority_load(&levels, LoadSettings { overprovisioning_factor: 100, ..istio });
    let retry = retry_load(&levels, &original, |p| p == 0, LoadSettings { overprovisioning_factor: 100, ..istio });
    assert_eq!(retry.healthy, vec![0, 34, 33, 33]);
}

#[test]
fn with_every_priority_tried_a_retry_spreads_over_all_and_with_nothing_available_keeps_the_original() {
    let levels = [healthy_of(2, 0), healthy_of(4, 1)];
    let original = priority_load(&levels, envoy());
    // Envoy forgets the attempts and spreads over every priority's availability, still
    // without the panic step.
    assert_eq!(retry_load(&levels, &original, |_| true, envoy()).healthy, vec![0, 100]);
    let none = [healthy_of(2, 0), healthy_of(3, 0)];
    let original = priority_load(&none, envoy());
    assert_eq!(retry_load(&none, &original, |p| p == 0, envoy()), original);
}

proptest! {
    #[test]
    fn a_retry_sums_to_100_and_puts_nothing_on_a_tried_priority_while_another_has_availability(
        levels in levels(),
        settings in settings(),
        mask in 0u64..64,
    ) {
        let tried = |p: usize| p < 6 && mask & (1 << p) != 0;
        let original = priority_load(&levels, settings);
        let retry = retry_load(&levels, &original, tried, settings);
        prop_assert_eq!(sum(&retry), sum(&original));
        let untried_available = (0..levels.len()).any(|p| !tried(p) && availability(levels[p], settings.overprovisioning_factor) != (0, 0));
        if untried_available {
            for p in (0..levels.len()).filter(|&p| tried(p)) {
                prop_assert_eq!(retry.level_total(p), 0, "{:?} tried {:b}: {:?}", levels, mask, retry);
            }
        }
        prop_assert_eq!(&retry.panic, &original.panic);
    }
}

#[test]
fn the_active_priority_is_the_lowest_with_load_and_none_when_nothing_serves() {
    let settings = istio();
    let load = priority_load(&[healthy_of(2, 0), healthy_of(2, 2), healthy_of(2, 2)], settings);
    assert_eq!(load.active_priority(), Some(1));
    let spilled = priority_load(&[healthy_of(3, 2), healthy_of(3, 3)], settings);
    assert_eq!(spilled.active_priority(), Some(0), "a priority that keeps part of the load is still the active one");
    let degraded_only = priority_load(&[healthy_of(2, 0), LevelHealth::new(2, 0, 2)], settings);
    assert_eq!(degraded_only.active_priority(), Some(1), "degraded load counts");
    assert_eq!(priority_load(&[healthy_of(2, 0), healthy_of(1, 0)], settings).active_priority(), None);
}
