use super::*;
use crate::diag::Severity;

/// `veer-test-key`'s secret as tsig-keygen prints it (32 bytes).
const SECRET: &str = "dmVlci10ZXN0LXRzaWcta2V5LW9mLTMyLWJ5dGVzISE=";

fn zone_yaml(extra_spec: &str) -> String {
    format!(
        "apiVersion: veer.io/v1alpha1
kind: DNSZone
metadata:
  name: weu
  namespace: dns
spec:
  region: weu
  zone: Example.com.
  server: 127.0.0.1:5300
{extra_spec}  tsig:
    keyName: veer-key
    secretRef:
      name: tsig
"
    )
}

fn secret_yaml(entry: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: tsig\n  namespace: dns\n{entry}")
}

fn load(texts: &[String]) -> Result<Vec<ZoneTarget>, Vec<String>> {
    let sources: Vec<(String, String)> = texts.iter().enumerate().map(|(i, t)| (format!("f{i}.yaml"), t.clone())).collect();
    match crate::from_sources(&sources) {
        Ok(a) => Ok(a.into_set().dns_zones),
        Err(r) => Err(r.into_diagnostics().iter().filter(|d| d.severity == Severity::Error).map(ToString::to_string).collect()),
    }
}

#[test]
fn a_zone_takes_its_key_from_a_string_data_or_data_entry() {
    let base64_of_secret = base64::engine::general_purpose::STANDARD.encode(SECRET);
    for entry in [format!("stringData:\n  rfc2136_tsig_secret: {SECRET}\n"), format!("data:\n  rfc2136_tsig_secret: {base64_of_secret}\n")]
    {
        let zones = load(&[zone_yaml(""), secret_yaml(&entry)]).expect("accepted");
        assert_eq!(zones.len(), 1);
        let t = &zones[0];
        assert_eq!(t.key, b"veer-test-tsig-key-of-32-bytes!!");
        assert_eq!(t.zone.zone, "example.com", "lower case, no final dot");
        assert_eq!(t.zone.owner, "external-dns-weu", "the seed's per-region owner by default");
        assert_eq!(t.zone.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(t.zone.server, "127.0.0.1:5300".parse().expect("addr"));
        assert!(!format!("{t:?}").contains("veer-test"), "Debug never prints the key");
    }
}

#[test]
fn a_missing_secret_or_entry_is_an_error_at_the_secret_ref() {
    let errs = load(&[zone_yaml("")]).expect_err("refused");
    assert!(errs.iter().any(|e| e.contains("f0.yaml:13:") && e.contains("no Secret dns/tsig")), "{errs:?}");
    let errs = load(&[zone_yaml(""), secret_yaml("stringData:\n  other: x\n")]).expect_err("refused");
    assert!(errs.iter().any(|e| e.contains("no entry \"rfc2136_tsig_secret\"; it has: other")), "{errs:?}");
}

#[test]
fn a_secret_that_is_not_base64_is_an_error_at_its_entry() {
    let errs = load(&[zone_yaml(""), secret_yaml("stringData:\n  rfc2136_tsig_secret: not base64!\n")]).expect_err("refused");
    assert!(errs.iter().any(|e| e.contains("f1.yaml:7:") && e.contains("is not a base64 TSIG secret")), "{errs:?}");
    let errs = load(&[zone_yaml(""), secret_yaml("stringData:\n  rfc2136_tsig_secret: c2hvcnQ=\n")]).expect_err("refused");
    assert!(errs.iter().any(|e| e.contains("too short")), "{errs:?}");
}

#[test]
fn bad_fields_are_errors_where_they_are() {
    let secret = secret_yaml(&format!("stringData:\n  rfc2136_tsig_secret: {SECRET}\n"));
    let bad_server = zone_yaml("").replace("127.0.0.1:5300", "dns.example.com:53");
    let errs = load(&[bad_server, secret.clone()]).expect_err("refused");
    assert!(errs.iter().any(|e| e.contains("f0.yaml:9") && e.contains("spec.server")), "{errs:?}");
    let bad_alg = zone_yaml("").replace("keyName: veer-key", "keyName: veer-key\n    algorithm: hmac-md5");
    let errs = load(&[bad_alg, secret.clone()]).expect_err("refused");
    assert!(errs.iter().any(|e| e.contains("spec.tsig.algorithm") && e.contains("hmac-sha256")), "{errs:?}");
    let twice = [zone_yaml(""), zone_yaml("").replace("name: weu", "name: weu-again"), secret];
    let errs = load(&twice).expect_err("refused");
    assert!(errs.iter().any(|e| e.contains("already described at f0.yaml")), "{errs:?}");
}

#[test]
fn an_ip_without_port_means_port_53() {
    let secret = secret_yaml(&format!("stringData:\n  rfc2136_tsig_secret: {SECRET}\n"));
    let zones = load(&[zone_yaml("  ownerId: my-owner\n").replace("127.0.0.1:5300", "127.0.0.9"), secret]).expect("accepted");
    assert_eq!(zones[0].zone.server, "127.0.0.9:53".parse().expect("addr"));
    assert_eq!(zones[0].zone.owner, "my-owner");
}

fn identity(cluster: &str, region: &str) -> String {
    format!(
        "apiVersion: cluster.router.io/v1alpha1\nkind: ClusterIdentity\nmetadata:\n  name: cluster-identity\n  labels: {{topology.istio.io/cluster: {cluster}}}\nspec:\n  region: {region}\n  cluster: aks01\n  domain: example.com\n  environmentLetter: p\n"
    )
}

#[test]
fn a_takeover_names_standbys_and_takes_lease_and_hold_down_or_their_defaults() {
    let secret = secret_yaml(&format!("stringData:\n  rfc2136_tsig_secret: {SECRET}\n"));
    let zones =
        load(&[zone_yaml("  takeover:\n    standbys: [aks-neu-01]\n"), secret.clone(), identity("aks-neu-01", "neu")]).expect("accepted");
    let t = zones[0].zone.takeover.as_ref().expect("a takeover");
    assert_eq!(t.standbys, ["aks-neu-01"]);
    assert_eq!((t.lease_ttl, t.hold_down), (DEFAULT_LEASE_TTL, DEFAULT_HOLD_DOWN));
    let zones = load(&[
        zone_yaml("  takeover:\n    standbys: [aks-neu-01, aks-frc-01]\n    leaseTTL: 3s\n    holdDown: 1m30s\n"),
        secret.clone(),
        identity("aks-neu-01", "neu"),
    ])
    .expect("accepted");
    let t = zones[0].zone.takeover.as_ref().expect("a takeover");
    assert_eq!(t.standbys, ["aks-neu-01", "aks-frc-01"]);
    assert_eq!((t.lease_ttl, t.hold_down), (Duration::from_secs(3), Duration::from_secs(90)));
    assert!(load(&[zone_yaml(""), secret]).expect("accepted")[0].zone.takeover.is_none());
}

#[test]
fn a_bad_takeover_is_an_error_at_its_field() {
    let secret = secret_yaml(&format!("stringData:\n  rfc2136_tsig_secret: {SECRET}\n"));
    for (spec, want) in [
        ("  takeover:\n    standbys: []\n", "spec.takeover.standbys: names no cluster"),
        ("  takeover:\n    standbys: [a, a]\n", "\"a\" is empty or listed twice"),
        ("  takeover:\n    standbys: [a]\n    leaseTTL: 1s\n", "spec.takeover.leaseTTL: 1s is outside 2s to 3600s"),
        ("  takeover:\n    standbys: [a]\n    leaseTTL: 2500ms\n", "in whole seconds"),
        ("  takeover:\n    standbys: [a]\n    holdDown: soon\n", "spec.takeover.holdDown"),
        ("  takeover:\n    standbys: [a]\n    ttl: 3s\n", "spec.takeover.ttl"),
        ("  takeover:\n    standbys: [aks-weu-02]\n", "aks-weu-02 is in region weu itself"),
    ] {
        let errs = load(&[zone_yaml(spec), secret.clone(), identity("aks-weu-02", "weu")]).expect_err(spec);
        assert!(errs.iter().any(|e| e.contains(want) && e.contains("f0.yaml:")), "{spec}: {errs:?}");
    }
}
