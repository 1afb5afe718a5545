//! Unit and property tests of the limiter, with time passed in.

use super::*;
use hickory_proto::rr::Name;
use proptest::prelude::*;

fn n(s: &str) -> LowerName {
    LowerName::new(&Name::from_ascii(s).expect("name"))
}

fn cfg(rate: u32, slip: u32) -> RrlConfig {
    RrlConfig { responses_per_second: rate, nxdomains_per_second: rate, errors_per_second: rate, slip, ..RrlConfig::default() }
}

const A: RecordType = RecordType::A;

#[test]
fn identical_answers_get_one_second_of_credit_then_every_second_limited_one_slips() {
    let mut rrl = Rrl::new(cfg(5, 2));
    let t0 = crate::clock::now();
    let ip = IpAddr::from([192, 0, 2, 1]);
    let name = n("www.example.com.");
    let verdicts: Vec<RrlVerdict> = (0..9).map(|_| rrl.check(ip, AnswerClass::Answer, Some(&name), A, t0)).collect();
    assert_eq!(&verdicts[..5], [RrlVerdict::Send; 5]);
    assert_eq!(&verdicts[5..], [RrlVerdict::Drop, RrlVerdict::Slip, RrlVerdict::Drop, RrlVerdict::Slip]);
    // The same /24 shares the account; another netblock, another type or name does not.
    assert_ne!(rrl.check(IpAddr::from([192, 0, 2, 200]), AnswerClass::Answer, Some(&name), A, t0), RrlVerdict::Send);
    assert_eq!(rrl.check(IpAddr::from([192, 0, 3, 1]), AnswerClass::Answer, Some(&name), A, t0), RrlVerdict::Send);
    assert_eq!(rrl.check(ip, AnswerClass::Answer, Some(&name), RecordType::TXT, t0), RrlVerdict::Send);
    assert_eq!(rrl.check(ip, AnswerClass::Answer, Some(&n("api.example.com.")), A, t0), RrlVerdict::Send);
}

#[test]
fn a_flood_is_remembered_for_the_window_then_forgiven() {
    let mut rrl = Rrl::new(RrlConfig { window: Duration::from_secs(2), ..cfg(10, 0) });
    let t0 = crate::clock::now();
    let ip = IpAddr::from([198, 51, 100, 7]);
    let name = n("www.example.com.");
    for _ in 0..1000 {
        rrl.check(ip, AnswerClass::Answer, Some(&name), A, t0);
    }
    // The account owes 2 s of its rate (20), not the 990 over it: one second later it still
    // owes, just past the window it is clear again.
    let at = |ms| t0 + Duration::from_millis(ms);
    assert_eq!(rrl.check(ip, AnswerClass::Answer, Some(&name), A, at(1000)), RrlVerdict::Drop);
    assert_eq!(rrl.check(ip, AnswerClass::Answer, Some(&name), A, at(2300)), RrlVerdict::Send);
}

#[test]
fn nxdomain_is_counted_per_zone_and_errors_per_netblock() {
    let mut rrl = Rrl::new(cfg(3, 0));
    let t0 = crate::clock::now();
    let ip = IpAddr::from([203, 0, 113, 9]);
    let zone = n("example.com.");
    // Random names under one zone all come back as NXDOMAIN keyed by the zone: limited.
    let v: Vec<_> = (0..5).map(|_| rrl.check(ip, AnswerClass::NxDomain, Some(&zone), A, t0)).collect();
    assert_eq!(v, [RrlVerdict::Send, RrlVerdict::Send, RrlVerdict::Send, RrlVerdict::Drop, RrlVerdict::Drop]);
    assert_eq!(rrl.check(ip, AnswerClass::NxDomain, Some(&n("example.org.")), A, t0), RrlVerdict::Send);
    // Errors ignore the name: one account per netblock.
    let v: Vec<_> = (0..4).map(|i| rrl.check(ip, AnswerClass::Error, Some(&n(&format!("x{i}.org."))), A, t0)).collect();
    assert_eq!(v[3], RrlVerdict::Drop, "{v:?}");
}

#[test]
fn exempt_networks_and_the_off_switch_are_never_limited() {
    let t0 = crate::clock::now();
    let name = n("www.example.com.");
    let mut rrl = Rrl::new(RrlConfig { exempt: vec!["10.1.0.0/16".parse().expect("net")], ..cfg(1, 1) });
    assert!((0..100).all(|_| rrl.check(IpAddr::from([10, 1, 2, 3]), AnswerClass::Answer, Some(&name), A, t0) == RrlVerdict::Send));
    assert_eq!(rrl.check(IpAddr::from([10, 2, 0, 1]), AnswerClass::Answer, Some(&name), A, t0), RrlVerdict::Send);
    assert_eq!(rrl.check(IpAddr::from([10, 2, 0, 1]), AnswerClass::Answer, Some(&name), A, t0), RrlVerdict::Slip);
    let mut off = Rrl::new(RrlConfig { enabled: false, ..cfg(1, 1) });
    assert!((0..100).all(|_| off.check(IpAddr::from([10, 2, 0, 1]), AnswerClass::Answer, Some(&name), A, t0) == RrlVerdict::Send));
}

#[test]
fn the_table_stays_bounded_under_a_flood_of_random_names() {
    let mut rrl = Rrl::new(RrlConfig::default());
    let t0 = crate::clock::now();
    for i in 0..(RRL_TABLE + 1000) {
        let name = n(&format!("r{i}.example.com."));
        assert_eq!(rrl.check(IpAddr::from([192, 0, 2, 1]), AnswerClass::Answer, Some(&name), A, t0), RrlVerdict::Send);
    }
    assert!(rrl.len() <= RRL_TABLE, "{}", rrl.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A resolver asking varied questions (each distinct name and type at most `rate` times in
    /// any second) is never limited under the defaults, however fast it asks.
    #[test]
    fn a_resolver_asking_varied_questions_is_never_limited(
        questions in proptest::collection::vec((0u32..5000, prop_oneof![Just(RecordType::A), Just(RecordType::AAAA), Just(RecordType::TXT)]), 1..2000),
        step_us in 0u64..2000,
    ) {
        let mut rrl = Rrl::new(RrlConfig::default());
        let t0 = crate::clock::now();
        let ip = IpAddr::from([198, 18, 0, 53]);
        let mut seen = std::collections::HashMap::new();
        for (i, (q, qtype)) in questions.iter().enumerate() {
            let now = t0 + Duration::from_micros(step_us * i as u64);
            // One second's view of this question: how often it was asked.
            let times: &mut Vec<Instant> = seen.entry((*q, *qtype)).or_default();
            times.retain(|t| now.saturating_duration_since(*t) < Duration::from_secs(1));
            times.push(now);
            let name = n(&format!("host{q}.example.com."));
            let class = if *qtype == RecordType::A { AnswerClass::Answer } else { AnswerClass::NoData };
            let verdict = rrl.check(ip, class, Some(&name), *qtype, now);
            // NODATA is keyed by name alone: both non-A types of a name share it.
            let nodata_asks = if class == AnswerClass::NoData {
                [RecordType::AAAA, RecordType::TXT].iter().map(|t| seen.get(&(*q, *t)).map_or(0, |v| v.iter().filter(|t| now.saturating_duration_since(**t) < Duration::from_secs(1)).count())).sum::<usize>()
            } else {
                0
            };
            if seen[&(*q, *qtype)].len() <= 5 && nodata_asks <= 5 {
                prop_assert_eq!(verdict, RrlVerdict::Send, "question {} {} asked {:?}", q, qtype, seen[&(*q, *qtype)].len());
            }
        }
    }

    /// Whatever the arrival times, one netblock never gets more than one second of credit plus
    /// the rate over the elapsed time of identical answers.
    #[test]
    fn identical_answers_never_exceed_the_credit(gaps_ms in proptest::collection::vec(0u64..50, 1..500), rate in 1u32..50) {
        let mut rrl = Rrl::new(cfg(rate, 0));
        let t0 = crate::clock::now();
        let name = n("www.example.com.");
        let mut now = t0;
        let mut sent = 0u64;
        for g in gaps_ms {
            now += Duration::from_millis(g);
            if rrl.check(IpAddr::from([192, 0, 2, 1]), AnswerClass::Answer, Some(&name), A, now) == RrlVerdict::Send {
                sent += 1;
            }
        }
        let allowed = f64::from(rate) * (1.0 + now.duration_since(t0).as_secs_f64());
        prop_assert!(sent as f64 <= allowed + 1e-9, "{} sent, {} allowed", sent, allowed);
    }
}
