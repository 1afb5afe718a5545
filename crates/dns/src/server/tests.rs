//! Unit tests of the request path: garbage dropped, what each node answers.

use super::*;

#[test]
fn garbage_gets_no_answer_and_no_panic() {
    let h = Handler::new(Zones::default(), 1232);
    let src = SocketAddr::from(([127, 0, 0, 1], 5353));
    for p in [&[][..], &[0u8; 11][..], &[0xffu8; 300][..], &[0u8; 12][..]] {
        assert!(answer_datagram(&h, None, p, src, crate::clock::now()).is_none());
    }
    assert_eq!(h.stats().malformed_dropped, 4);
}

/// Seed 002's example at one of its steps, as every node reads it.
fn seed002_step(step: &str) -> ManifestSet {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(step);
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "yaml") {
            sources.push((path.display().to_string(), std::fs::read_to_string(&path).expect("read")));
        }
    }
    veer_model::from_sources(&sources).unwrap_or_else(|r| panic!("{r}")).into_set()
}

fn answer(cluster: &str, gateway: [u8; 4], set: &ManifestSet) -> Outcome {
    let cfg = DnsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), cluster, IpAddr::from(gateway));
    let zones = Reconciler::new(cfg, None).run(set);
    let name = hickory_proto::rr::LowerName::new(&hickory_proto::rr::Name::from_ascii("web-ns-p-prod-myapp.example.com.").expect("name"));
    zones.lookup(&name, hickory_proto::rr::RecordType::A)
}

#[test]
fn a_route_name_served_by_the_gateway_is_still_answered_only_by_its_zone_writer() {
    // The app's HTTPRoute for the ServiceRoute's own name is on every cluster's gateway. While
    // neu's adoption of weu stands, the returning weu node must not answer the name with its
    // own gateway (a second writer); neu answers with its CNAME.
    let adopted = seed002_step("steps/002-dns-regional-takeover/2-neu-adopts-weu");
    assert_eq!(answer("aks-weu-01", [127, 0, 3, 11], &adopted), Outcome::Refused);
    let Outcome::Authoritative { answers, .. } = answer("aks-neu-01", [127, 0, 3, 12], &adopted) else { panic!("neu writes its zone") };
    assert_eq!(answers.first().map(|r| r.record_type()), Some(hickory_proto::rr::RecordType::CNAME), "{answers:?}");
    // Under RegionBound only weu writes, so the spokes answer nothing for the name.
    let bound = seed002_step("steps/002-dns-regional-takeover/4-regionbound");
    for (cluster, gw) in [("aks-neu-01", [127, 0, 3, 12]), ("aks-frc-01", [127, 0, 3, 13])] {
        assert_eq!(answer(cluster, gw, &bound), Outcome::Refused, "{cluster}");
    }
}

#[test]
fn the_serial_follows_unix_time_and_always_grows() {
    assert_eq!(next_serial(0, 1_700_000_000), 1_700_000_000);
    assert_eq!(next_serial(1_700_000_000, 1_700_000_000), 1_700_000_001, "two changes in one second");
    assert_eq!(next_serial(1_700_000_005, 1_700_000_001), 1_700_000_006, "ahead of the clock: +1");
    // Serial arithmetic wraps (RFC 1982).
    assert_eq!(next_serial(u32::MAX, 3), 3);
    assert_eq!(next_serial(u32::MAX, u32::MAX - 10), 1);
}

#[test]
fn the_serial_moves_when_the_answers_change_and_only_then() {
    let set = seed002_step("002-dns-regional-takeover");
    let cfg = DnsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "aks-neu-01", IpAddr::from([127, 0, 3, 12]));
    let mut r = Reconciler::new(cfg, None);
    let first = r.run(&set).serial().expect("zones served");
    assert_eq!(r.run(&set).serial(), Some(first), "the same set: the same serial");
    let adopted = seed002_step("steps/002-dns-regional-takeover/2-neu-adopts-weu");
    let after = r.run(&adopted).serial().expect("serial");
    assert!((after.wrapping_sub(first) as i32) > 0, "{first} -> {after}");
}
