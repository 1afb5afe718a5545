use super::*;
use crate::topology::{keys, with_topology_labels, Address, Health, Labels};

fn ep(loc: &str, network: &str, labels: &[(&str, &str)]) -> Endpoint {
    let locality = Locality::parse(loc);
    let own: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Endpoint {
        cluster: "c".into(),
        address: Address::Dns { host: "h".into(), port: 80 },
        labels: with_topology_labels(own, "c", &locality, network),
        locality,
        network: network.into(),
        weight: 1,
        health: Health::Healthy,
        tier: None,
        group: String::new(),
        group_weight: None,
        origin: String::new(),
    }
}

fn client(loc: &str, network: &str, labels: &[(&str, &str)]) -> Client {
    let locality = Locality::parse(loc);
    let own: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Client { cluster: "c".into(), labels: with_topology_labels(own, "c", &locality, network), locality, network: network.into() }
}

fn final_prios(c: &Client, eps: &[Endpoint], rule: &PriorityRule) -> Vec<Option<usize>> {
    let raw: Vec<Option<u32>> = rank(c, eps, rule).into_iter().map(|r| r.map(|(p, _)| p)).collect();
    renumber(&raw)
}

#[test]
fn failover_priority_network_region_zone_example() {
    // Reference §4.4: [network, region, zone], proxy at n1/r1/z1.
    let rule = PriorityRule::Istio {
        labels: [keys::NETWORK, keys::REGION, keys::ZONE].iter().map(|k| LabelMatch { key: k.to_string(), value: None }).collect(),
        locality: None,
    };
    let c = client("r1/z1", "n1", &[]);
    let eps = [ep("r1/z1", "n1", &[]), ep("r1/z2", "n1", &[]), ep("r2/z1", "n1", &[]), ep("r1/z1", "n2", &[])];
    let raw: Vec<u32> = rank(&c, &eps, &rule).into_iter().map(|r| r.map(|(p, _)| p).unwrap_or(99)).collect();
    assert_eq!(raw, vec![0, 5, 10, 15]);
    assert_eq!(final_prios(&c, &eps, &rule), vec![Some(0), Some(1), Some(2), Some(3)]);
    // Without an n1/r1/z2 endpoint the values 0, 2, 3 renumber to 0, 1, 2.
    let eps = [ep("r1/z1", "n1", &[]), ep("r2/z1", "n1", &[]), ep("r1/z1", "n2", &[])];
    assert_eq!(final_prios(&c, &eps, &rule), vec![Some(0), Some(1), Some(2)]);
}

#[test]
fn failover_priority_overrides_compare_with_the_given_value() {
    // Proto example: ["version=v1", "topology.istio.io/cluster=clusterA"].
    let rule = PriorityRule::Istio {
        labels: vec![
            LabelMatch { key: "version".into(), value: Some("v1".into()) },
            LabelMatch { key: keys::CLUSTER.into(), value: Some("clusterA".into()) },
        ],
        locality: None,
    };
    let c = client("r/z", "", &[("version", "v9")]);
    let mut a = ep("r/z", "", &[("version", "v1")]);
    a.labels.insert(keys::CLUSTER.into(), "clusterA".into());
    let mut b = ep("r/z", "", &[("version", "v1")]);
    b.labels.insert(keys::CLUSTER.into(), "clusterB".into());
    let mut d = ep("r/z", "", &[("version", "v2")]);
    d.labels.insert(keys::CLUSTER.into(), "clusterA".into());
    assert_eq!(final_prios(&c, &[a, b, d], &rule), vec![Some(0), Some(1), Some(2)]);
}

#[test]
fn missing_labels_match_each_other() {
    let rule = PriorityRule::Istio { labels: vec![LabelMatch { key: "tier".into(), value: None }], locality: None };
    let c = client("r/z", "", &[]);
    let eps = [ep("r/z", "", &[]), ep("r/z", "", &[("tier", "gold")])];
    assert_eq!(final_prios(&c, &eps, &rule), vec![Some(0), Some(1)]);
}

#[test]
fn locality_failover_docs_example() {
    // Reference §4.3: proxy region1/zone1, failover region1→region2.
    let rule = PriorityRule::Istio { labels: vec![], locality: Some(vec![FailoverEntry { from: "region1".into(), to: "region2".into() }]) };
    let c = client("region1/zone1", "", &[]);
    let eps = [ep("region1/zone1", "", &[]), ep("region1/zone2", "", &[]), ep("region2/zone1", "", &[]), ep("region3/zone1", "", &[])];
    let raw: Vec<u32> = rank(&c, &eps, &rule).into_iter().map(|r| r.map(|(p, _)| p).unwrap_or(99)).collect();
    assert_eq!(raw, vec![0, 2, 3, 4]);
    assert_eq!(final_prios(&c, &eps, &rule), vec![Some(0), Some(1), Some(2), Some(3)]);
}

#[test]
fn labels_and_locality_combine_times_five() {
    let rule = PriorityRule::Istio { labels: vec![LabelMatch { key: "version".into(), value: Some("v1".into()) }], locality: Some(vec![]) };
    let c = client("r1/z1", "", &[]);
    let eps = [
        ep("r1/z1", "", &[("version", "v1")]), // 0*5+0
        ep("r2/z1", "", &[("version", "v1")]), // 0*5+3
        ep("r1/z1", "", &[("version", "v2")]), // 1*5+0
    ];
    let raw: Vec<u32> = rank(&c, &eps, &rule).into_iter().map(|r| r.map(|(p, _)| p).unwrap_or(99)).collect();
    assert_eq!(raw, vec![0, 3, 5]);
    assert_eq!(final_prios(&c, &eps, &rule), vec![Some(0), Some(1), Some(2)]);
}

#[test]
fn distribute_ceil_weights_and_unclaimed_localities() {
    let rule = PriorityRule::Distribute(vec![DistributeEntry {
        from: "us-west/zone1/*".into(),
        to: vec![("us-west/zone1/*".into(), 80), ("us-west/zone2/*".into(), 20)],
    }]);
    let c = client("us-west/zone1/a", "", &[]);
    let eps =
        [ep("us-west/zone1/a", "", &[]), ep("us-west/zone1/b", "", &[]), ep("us-west/zone2/a", "", &[]), ep("us-east/zone1/a", "", &[])];
    let w: Vec<Option<u32>> = rank(&c, &eps, &rule)
        .into_iter()
        .map(|r| {
            r.map(|(_, why)| match why {
                Why::Distribute { weight, .. } => weight,
                _ => 0,
            })
        })
        .collect();
    assert_eq!(w, vec![Some(40), Some(40), Some(20), None]);
}

#[test]
fn locality_patterns() {
    let l = Locality::parse("r/z/s");
    assert!(locality_matches("*", &l));
    assert!(locality_matches("r", &l));
    assert!(locality_matches("r/*", &l));
    assert!(locality_matches("r/z/s", &l));
    assert!(!locality_matches("r/y", &l));
    assert!(!locality_matches("q/*", &l));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_labels() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(("[abc]", "[xy]"), 0..4)
    }

    proptest! {
        #[test]
        fn an_endpoint_matching_all_priority_labels_is_at_priority_zero(
            keys in prop::collection::vec("[abc]", 1..4),
            client_labels in arb_labels(),
            others in prop::collection::vec(arb_labels(), 0..6),
        ) {
            let rule = PriorityRule::Istio {
                labels: keys.iter().map(|k| LabelMatch { key: k.clone(), value: None }).collect(),
                locality: None,
            };
            let cl: Vec<(&str, &str)> = client_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let c = client("r/z", "", &cl);
            // The twin carries exactly the client's labels, so every key matches.
            let mut eps = vec![ep("r/z", "", &cl)];
            for o in &others {
                let ol: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                eps.push(ep("r/z", "", &ol));
            }
            let prios = final_prios(&c, &eps, &rule);
            prop_assert_eq!(prios[0], Some(0));
        }

        #[test]
        fn renumbered_priorities_have_no_gaps(raw in prop::collection::vec(prop::option::of(0u32..40), 0..20)) {
            let out = renumber(&raw);
            let mut seen: Vec<usize> = out.iter().flatten().copied().collect();
            seen.sort_unstable();
            seen.dedup();
            for (i, p) in seen.iter().enumerate() {
                prop_assert_eq!(i, *p);
            }
            // Order is preserved.
            for (a, ra) in out.iter().zip(&raw) {
                for (b, rb) in out.iter().zip(&raw) {
                    if let (Some(a), Some(ra), Some(b), Some(rb)) = (a, ra, b, rb) {
                        prop_assert_eq!(ra < rb, a < b);
                    }
                }
            }
        }
    }
}
