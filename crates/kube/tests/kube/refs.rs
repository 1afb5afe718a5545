//! The Secrets and ConfigMaps veer reads only because a resource names them: a DNSZone's TSIG
//! Secret and a BackendTLSPolicy's CA ConfigMap are watched by name, join the set when they
//! exist, and are let go when nothing names them; other Opaque Secrets are never read.

use veer_kube::KubeSource;
use veer_testkit::wait_until_async;

use super::{admin_client, api_with_crds, apply, kubectl, runtime, WAIT};

const CLUSTER: &str =
    r#"{"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "local"}, "spec": {"locality": {"region": "weu"}}}"#;
const ZONE: &str = r#"{"apiVersion": "veer.io/v1alpha1", "kind": "DNSZone", "metadata": {"name": "weu", "namespace": "dns"},
  "spec": {"region": "weu", "zone": "example.com", "server": "127.0.0.1:53", "tsig": {"keyName": "veer-key", "algorithm": "hmac-sha256", "secretRef": {"name": "tsig"}}}}"#;
/// The key as `tsig-keygen` prints it (32 bytes, base64), in the entry ExternalDNS's charts use.
const SECRET: &str = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tsig", "namespace": "dns"}, "type": "Opaque",
  "stringData": {"rfc2136_tsig_secret": "c2l4dGVlbi1ieXRlcy1vZi1rZXktbWF0ZXJpYWwtMzI="}}"#;
const UNNAMED_SECRET: &str = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-password", "namespace": "dns"}, "type": "Opaque",
  "stringData": {"password": "hunter2"}}"#;
const POLICY: &str = r#"{"apiVersion": "gateway.networking.k8s.io/v1alpha3", "kind": "BackendTLSPolicy", "metadata": {"name": "to-web", "namespace": "dns"},
  "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}], "validation": {"hostname": "web.example.com", "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "web-ca"}]}}}"#;
const CONFIG_MAP: &str =
    r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-ca", "namespace": "dns"}, "data": {"ca.crt": "not yet"}}"#;

#[test]
fn a_zones_tsig_secret_and_a_policys_ca_config_map_are_read_by_name_and_no_other_secret_is() {
    let api = api_with_crds();
    api.create_namespace("dns").expect("namespace");
    apply(&api, "cluster.json", CLUSTER);
    apply(&api, "other-secret.json", UNNAMED_SECRET);
    apply(&api, "zone.json", ZONE);
    runtime().block_on(async {
        let source = KubeSource::start(admin_client(&api).await, "local").await.expect("the source starts");
        let mut feeds = source.feeds();
        assert!(feeds.first_sync().await, "the source lists everything once");
        let names = || -> Vec<String> { feeds.documents_now().iter().map(|(n, _)| n.clone()).collect() };
        let errors = || -> Vec<String> {
            let d = veer_model::from_sources_even_if_invalid(&feeds.documents_now()).diagnostics.into_sorted();
            d.iter().filter(|d| d.severity == veer_model::diag::Severity::Error).map(ToString::to_string).collect()
        };
        // Named but not there yet: the zone's error says so, where it names the Secret.
        let missing = errors();
        assert!(missing.iter().any(|e| e.starts_with("kubernetes:DNSZone/dns/weu:") && e.contains("no Secret dns/tsig")), "{missing:?}");
        assert!(!names().iter().any(|n| n.contains("app-password")), "an Opaque Secret nothing names is never read: {:?}", names());

        apply(&api, "secret.json", SECRET);
        wait_until_async(
            veer_testkit::lazy(|| format!("the Secret joins the set and the zone is whole: {:?}", errors())),
            WAIT,
            || async { names().iter().any(|n| n == "kubernetes:Secret/dns/tsig") && errors().is_empty() },
        )
        .await;

        apply(&api, "policy.json", POLICY);
        apply(&api, "ca.json", CONFIG_MAP);
        wait_until_async("the policy's ConfigMap joins the set", WAIT, || async {
            names().iter().any(|n| n == "kubernetes:ConfigMap/dns/web-ca")
        })
        .await;

        // Nothing names the Secret any more: it leaves the set with the zone.
        kubectl(&api, &["delete", "dnszone.veer.io", "weu", "-n", "dns"]);
        wait_until_async("the Secret leaves with the zone", WAIT, || async {
            let n = names();
            !n.iter().any(|n| n.contains("Secret/dns/tsig")) && !n.iter().any(|n| n.contains("DNSZone"))
        })
        .await;
        assert!(source.problems().is_empty(), "{:?}", source.problems());
    });
}
