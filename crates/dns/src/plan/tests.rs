//! Unit tests of the operator plan: naming, labels, policy activation, status reasons.

use super::*;

fn set(text: &str) -> ManifestSet {
    veer_model::from_sources(&[("t.yaml".to_string(), text.to_string())]).unwrap_or_else(|r| panic!("{r}")).into_set()
}

const BASE: &str = "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  gateway:\n    address: 10.1.0.1:80\n---\n\
apiVersion: cluster.router.io/v1alpha1\nkind: ClusterIdentity\nmetadata:\n  name: cluster-identity\nspec:\n  region: weu\n  cluster: aks01\n  domain: example.com\n  environmentLetter: p\n  adoptsRegions: [neu]\n---\n\
apiVersion: cluster.router.io/v1alpha1\nkind: DNSConfiguration\nmetadata:\n  name: dns-config\nspec:\n  externalDNSControllers:\n  - name: external-dns-weu\n    region: weu\n  - name: external-dns-neu\n    region: neu\n  - name: external-dns-frc\n    region: frc\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: istio-ingress\nspec:\n  controller: ctl\n  targetPostfix: internal\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: ServiceRoute\nmetadata:\n  name: web\n  namespace: myapp\nspec:\n  serviceName: web\n  gatewayName: gw\n  gatewayNamespace: istio-ingress\n  environment: prod\n  application: shop\n---\n";

fn with_policy(policy: &str) -> ManifestSet {
    set(&format!(
        "{BASE}apiVersion: routing.router.io/v1alpha1\nkind: DNSPolicy\nmetadata:\n  name: default\n  namespace: myapp\nspec:\n{policy}"
    ))
}

#[test]
fn active_mode_writes_own_and_adopted_regions_with_operator_names() {
    let p = cluster(&with_policy("  mode: Active\n"), "c1", &PlanOptions::default());
    let routes: Vec<&Endpoint> = p.endpoints.iter().filter(|e| matches!(e.source, Source::Route { .. })).collect();
    let names: Vec<&str> = routes.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["web-external-dns-weu", "web-external-dns-neu"]);
    let e = routes[1];
    assert_eq!(e.dns_name, "web-ns-p-prod-shop.example.com");
    assert_eq!(e.target, "aks01-weu-internal.example.com");
    assert_eq!(e.record_type, RecordKind::CNAME);
    assert_eq!(e.ttl, 60);
    assert_eq!(e.zone, ZoneId { domain: "example.com".into(), region: "neu".into() });
    assert_eq!(e.annotations.get(CONTROLLER_ANNOTATION).map(String::as_str), Some("external-dns-neu"));
    assert_eq!(e.labels.get("router.io/serviceroute").map(String::as_str), Some("web"));
    assert_eq!(e.labels.get("router.io/region").map(String::as_str), Some("neu"));
    assert_eq!(e.labels.get(MANAGED_BY).map(String::as_str), Some(OPERATOR));
    assert_eq!(p.policies[0].active_controllers, ["external-dns-weu", "external-dns-neu"]);
}

#[test]
fn gateway_a_record_goes_into_every_zone_of_the_configuration() {
    let p = cluster(&with_policy("  mode: Active\n"), "c1", &PlanOptions { ttl: 30, ..PlanOptions::default() });
    let gw: Vec<&Endpoint> = p.endpoints.iter().filter(|e| matches!(e.source, Source::Gateway { .. })).collect();
    assert_eq!(gw.len(), 3);
    assert!(gw.iter().all(|e| e.dns_name == "aks01-weu-internal.example.com"
        && e.target == "10.1.0.1"
        && e.ttl == 30
        && e.record_type == RecordKind::A));
    assert_eq!(gw[0].name, "gateway-controller-ctl-internal-external-dns-weu");
    assert_eq!(gw[0].labels.get("router.io/resource-type").map(String::as_str), Some("gateway-service"));
}

#[test]
fn region_bound_activates_every_controller_and_source_mismatch_deactivates() {
    let p = cluster(&with_policy("  mode: RegionBound\n  sourceRegion: weu\n  sourceCluster: aks01\n"), "c1", &PlanOptions::default());
    assert_eq!(p.policies[0].active_controllers.len(), 3);
    assert_eq!(p.routes[0].endpoints.len(), 3);
    let p = cluster(&with_policy("  mode: RegionBound\n  sourceRegion: neu\n"), "c1", &PlanOptions::default());
    assert_eq!(p.policies[0].phase, Phase::Inactive);
    assert!(p.policies[0].reason.contains("SourceRegion 'neu' does not match cluster region 'weu'"), "{}", p.policies[0].reason);
    assert_eq!(p.routes[0].phase, Phase::Pending);
    assert!(p.routes[0].reason.starts_with("DNSPolicyInactive"));
    let p = cluster(&with_policy("  mode: Active\n  sourceCluster: aks02\n"), "c1", &PlanOptions::default());
    assert!(p.policies[0].reason.contains("SourceCluster 'aks02'"));
}

#[test]
fn a_route_without_policy_waits_and_writes_nothing() {
    let p = cluster(&set(BASE), "c1", &PlanOptions::default());
    assert_eq!(p.routes[0].phase, Phase::Pending);
    assert!(p.routes[0].reason.starts_with("DNSPolicyNotFound"));
    assert!(p.endpoints.iter().all(|e| matches!(e.source, Source::Gateway { .. })));
}

#[test]
fn the_cluster_address_wins_and_a_node_address_fills_in_only_for_a_wildcard_or_none() {
    // A running node's address never overrides the Cluster's: `veer dns endpoints`, which
    // knows no node, must hand ExternalDNS the address the node serves.
    let mut opts = PlanOptions::default();
    opts.gateways.insert("c1".into(), IpAddr::from([127, 9, 9, 9]));
    let targets = |p: &ClusterPlan| -> Vec<String> {
        p.endpoints.iter().filter(|e| matches!(e.source, Source::Gateway { .. })).map(|e| e.target.clone()).collect()
    };
    let p = cluster(&with_policy("  mode: Active\n"), "c1", &opts);
    assert!(!targets(&p).is_empty() && targets(&p).iter().all(|t| t == "10.1.0.1"), "{:?}", targets(&p));
    // spec.gateway.address on a wildcard IP says nothing about where clients reach it.
    let wildcard = set(&format!(
        "{}apiVersion: routing.router.io/v1alpha1\nkind: DNSPolicy\nmetadata:\n  name: default\n  namespace: myapp\nspec:\n  mode: Active\n",
        BASE.replace("10.1.0.1:80", "0.0.0.0:80")
    ));
    assert_eq!(advertised_gateway(&wildcard, "c1"), None);
    let p = cluster(&wildcard, "c1", &PlanOptions::default());
    assert!(targets(&p).is_empty(), "{:?}", targets(&p));
    assert!(p.notes.iter().any(|n| n.contains("no spec.gateway.address with a specific IP")), "{:?}", p.notes);
    let p = cluster(&wildcard, "c1", &opts);
    assert!(!targets(&p).is_empty() && targets(&p).iter().all(|t| t == "127.9.9.9"), "{:?}", targets(&p));
}
