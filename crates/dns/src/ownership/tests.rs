//! Unit and property tests of zone ownership: election, epochs, fencing, TXT registry format.

use proptest::prelude::*;

use super::*;

fn zone(r: &str) -> ZoneId {
    ZoneId { domain: "example.com".into(), region: r.into() }
}

fn claim(c: &str, kind: ClaimKind) -> Claim {
    Claim { cluster: c.into(), kind }
}

fn claims_of(list: &[(&str, &str, ClaimKind)]) -> BTreeMap<ZoneId, Vec<Claim>> {
    let mut out: BTreeMap<ZoneId, Vec<Claim>> = BTreeMap::new();
    for (z, c, k) in list {
        out.entry(zone(z)).or_default().push(claim(c, *k));
    }
    out
}

#[test]
fn adoption_outranks_home_and_hands_back_when_removed() {
    let mut r = Registry::default();
    r.reconcile(&claims_of(&[("weu", "weu-1", ClaimKind::Home)]));
    assert_eq!(r.get(&zone("weu")).map(|s| (s.writer.clone(), s.epoch)), Some((Some("weu-1".into()), 1)));
    let t = r.reconcile(&claims_of(&[("weu", "weu-1", ClaimKind::Home), ("weu", "neu-1", ClaimKind::Adoption)]));
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to.as_deref(), Some("neu-1"));
    assert_eq!(t[0].epoch, 2);
    // Nothing changes while the adoption stands, however often it is reconciled.
    assert!(r.reconcile(&claims_of(&[("weu", "weu-1", ClaimKind::Home), ("weu", "neu-1", ClaimKind::Adoption)])).is_empty());
    let t = r.reconcile(&claims_of(&[("weu", "weu-1", ClaimKind::Home)]));
    assert_eq!((t[0].to.as_deref(), t[0].epoch), (Some("weu-1"), 3));
}

#[test]
fn a_node_that_missed_the_adoption_numbers_it_like_the_others() {
    let mut fresh = Registry::default();
    fresh.reconcile(&claims_of(&[("weu", "weu-1", ClaimKind::Home), ("weu", "neu-1", ClaimKind::Adoption)]));
    assert_eq!(fresh.get(&zone("weu")).map(|s| s.epoch), Some(2));
}

#[test]
fn equal_claims_are_a_flagged_conflict_with_one_deterministic_writer() {
    let e = elect(&[claim("b", ClaimKind::Adoption), claim("a", ClaimKind::Adoption), claim("c", ClaimKind::Home)]);
    assert_eq!(e.writer, Some(claim("a", ClaimKind::Adoption)));
    assert_eq!(e.conflicts, ["b"]);
}

#[test]
fn the_store_refuses_lower_epochs_and_a_second_writer_of_one_epoch() {
    let mut s = ZoneStore::default();
    let z = zone("weu");
    assert_eq!(s.publish(&z, Publication { writer: "neu".into(), epoch: 2, records: 1 }), Ok(true));
    assert_eq!(s.publish(&z, Publication { writer: "weu".into(), epoch: 1, records: 2 }), Err(Refusal::Stale { held: 2, offered: 1 }));
    assert_eq!(
        s.publish(&z, Publication { writer: "frc".into(), epoch: 2, records: 3 }),
        Err(Refusal::SplitBrain { holder: "neu".into(), epoch: 2 })
    );
    assert_eq!(s.withdraw(&z, 1), Err(Refusal::Stale { held: 2, offered: 1 }));
    assert_eq!(s.withdraw(&z, 3), Ok(true));
    assert_eq!(s.publish(&z, Publication { writer: "neu".into(), epoch: 2, records: 1 }), Err(Refusal::Stale { held: 3, offered: 2 }));
}

#[test]
fn txt_registry_names_and_values_match_externaldns() {
    assert_eq!(txt_name("_external-dns-owner.", "web.example.com", "CNAME"), "_external-dns-owner.cname-web.example.com");
    assert_eq!(txt_name("", "web.example.com", "A"), "a-web.example.com");
    assert_eq!(txt_name("%{record_type}-x.", "web.example.com", "A"), "a-x.web.example.com");
    let v = txt_value("external-dns-weu", "crd/myapp/web-external-dns-weu", "aks-neu-01", 2);
    assert!(v.starts_with("heritage=external-dns,external-dns/owner=external-dns-weu,external-dns/resource=crd/myapp/web-external-dns-weu"));
    let labels = parse_txt_value(&v).unwrap_or_default();
    assert_eq!(labels.get("veer-epoch").map(String::as_str), Some("2"));
    assert_eq!(labels.get("veer-writer").map(String::as_str), Some("aks-neu-01"));
    assert_eq!(parse_txt_value("heritage=other,external-dns/owner=x"), None);
}

#[test]
fn registry_round_trips_through_the_state_file_form() {
    let mut r = Registry::default();
    r.reconcile(&claims_of(&[("weu", "neu-1", ClaimKind::Adoption)]));
    let text = serde_json::to_string(&r).unwrap_or_default();
    let back: Registry = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(back, r);
    let mut later = Registry::default();
    later.merge_floor(&back);
    later.reconcile(&claims_of(&[("weu", "weu-1", ClaimKind::Home)]));
    assert_eq!(later.get(&zone("weu")).map(|s| s.epoch), Some(3), "epochs never go back across restarts");
}

const CLUSTERS: [&str; 3] = ["weu", "neu", "frc"];

/// Claims on the weu zone: weu's home claim (present or not) and adoptions by neu and frc.
fn claims_strategy() -> impl Strategy<Value = BTreeMap<ZoneId, Vec<Claim>>> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(home, neu, frc, rb)| {
        let mut v = Vec::new();
        if home {
            v.push(claim("weu", ClaimKind::Home));
        }
        if neu {
            v.push(claim("neu", ClaimKind::Adoption));
        }
        if frc {
            v.push(claim("frc", ClaimKind::Adoption));
        }
        if rb {
            v.push(claim("frc", ClaimKind::RegionBound));
        }
        BTreeMap::from([(zone("weu"), v)])
    })
}

proptest! {
    /// Nodes that see the same claims elect the same writer, whatever history each saw (one
    /// node restarted fresh at every step): never two writers.
    #[test]
    fn nodes_agree_on_the_writer_whatever_they_saw(steps in proptest::collection::vec(claims_strategy(), 1..30), restart_at in 0usize..30) {
        let mut steady = Registry::default();
        let mut flaky = Registry::default();
        for (i, c) in steps.iter().enumerate() {
            if i == restart_at {
                flaky = Registry::default();
            }
            steady.reconcile(c);
            flaky.reconcile(c);
            let w1 = steady.get(&zone("weu")).and_then(|s| s.writer.clone());
            let w2 = flaky.get(&zone("weu")).and_then(|s| s.writer.clone());
            prop_assert_eq!(&w1, &w2);
            let writers = CLUSTERS.iter().filter(|n| w1.as_deref() == Some(**n)).count();
            prop_assert!(writers <= 1);
        }
    }

    /// Epochs never decrease; every change of writer raises the epoch; the home cluster never
    /// writes while an adoption claim stands, and writes again once none does.
    #[test]
    fn epochs_grow_and_adoption_fences_the_home_cluster(steps in proptest::collection::vec(claims_strategy(), 1..40)) {
        let mut r = Registry::default();
        let mut last_epoch = 0;
        let mut last_writer: Option<String> = None;
        for c in &steps {
            r.reconcile(c);
            let st = r.get(&zone("weu")).cloned().unwrap_or_default();
            prop_assert!(st.epoch >= last_epoch);
            if st.writer != last_writer {
                prop_assert!(st.epoch > last_epoch);
            }
            let claims = &c[&zone("weu")];
            let adopted = claims.iter().any(|c| c.kind == ClaimKind::Adoption);
            if adopted {
                prop_assert_ne!(st.writer.as_deref(), Some("weu"));
                prop_assert_eq!(st.kind, Some(ClaimKind::Adoption));
            } else if claims.iter().all(|c| c.kind == ClaimKind::Home) && !claims.is_empty() {
                prop_assert_eq!(st.writer.as_deref(), Some("weu"));
            }
            last_epoch = st.epoch;
            last_writer = st.writer.clone();
        }
    }

    /// Whatever order publications and withdrawals arrive in, the store's epoch never goes
    /// down and what it holds is the publication of the highest epoch seen.
    #[test]
    fn the_store_only_moves_forward(ops in proptest::collection::vec((0u64..6, 0usize..3, any::<bool>()), 1..50)) {
        let mut s = ZoneStore::default();
        let z = zone("weu");
        let mut floor = 0;
        for (epoch, w, publish) in ops {
            let writer = CLUSTERS[w].to_string();
            let before = s.get(&z).cloned();
            let result = if publish { s.publish(&z, Publication { writer: writer.clone(), epoch, records: epoch }) } else { s.withdraw(&z, epoch) };
            if epoch < floor {
                prop_assert!(result.is_err());
                prop_assert_eq!(s.get(&z).cloned(), before);
            }
            if result.is_ok() {
                floor = floor.max(epoch);
            }
            if let Some(p) = s.get(&z) {
                prop_assert_eq!(p.epoch, floor);
            }
        }
    }
}
