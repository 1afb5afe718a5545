//! Seed 002's operator job, for real: the NEU cluster's resources applied to its API server,
//! veer (in the Service Router Operator's place) writing the DNSEndpoints an ExternalDNS picks
//! up; adopting WEU adds WEU's, dropping the adoption removes them, deleting the ServiceRoute
//! removes its own; the DNSPolicy's status lists its active controllers.

use std::collections::BTreeSet;

use veer_kube::leader::Election;
use veer_kube::writer::Checks;
use veer_kube::{KubeSource, StatusConfig};
use veer_testkit::kube::{KubeApi, KubeUser};
use veer_testkit::wait_until_async;

use super::{api_with_crds, kubectl, repo, runtime, WAIT};

const CLUSTER: &str = "aks-neu-01";

/// The documents of `files` (in `dir`) that the NEU cluster's API server holds: those labelled
/// for it, and the veer Clusters.
fn neu_documents(dir: &str, files: &[&str]) -> String {
    let mut out = String::new();
    for file in files {
        let text = std::fs::read_to_string(repo().join(dir).join(file)).expect("an example file");
        for doc in text.split("\n---\n") {
            let labelled = doc.contains("topology.istio.io/cluster:");
            let ours = doc.contains(&format!("topology.istio.io/cluster: {CLUSTER}"));
            if ours || (!labelled && doc.contains("kind: Cluster\n")) {
                out.push_str(doc.trim());
                out.push_str("\n---\n");
            }
        }
    }
    out
}

fn apply_documents(api: &KubeApi, name: &str, yaml: &str) {
    let path = api.dir().join(name);
    std::fs::write(&path, yaml).expect("write");
    kubectl(api, &["apply", "-f", path.to_str().expect("a UTF-8 path")]);
}

/// Every DNSEndpoint on the server, as a `List`.
fn dns_endpoints(api: &KubeApi) -> serde_json::Value {
    serde_json::from_str(&kubectl(api, &["get", "dnsendpoints.externaldns.k8s.io", "--all-namespaces", "-o", "json"])).expect("JSON")
}

fn names(list: &serde_json::Value) -> BTreeSet<String> {
    list["items"].as_array().into_iter().flatten().filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string)).collect()
}

fn route_endpoints(api: &KubeApi) -> BTreeSet<String> {
    names(&dns_endpoints(api)).into_iter().filter(|n| n.starts_with("web-")).collect()
}

#[test]
fn the_operators_dnsendpoints_follow_adoption_and_the_route() {
    let api = api_with_crds();
    let dir = "examples/002-dns-regional-takeover";
    let files = ["clusters.yaml", "operator.yaml", "neu-identity.yaml", "neu-frc.yaml", "app.yaml"];
    let documents = neu_documents(dir, &files);
    // The namespaces the objects live in exist before them, as a cluster's do.
    let namespaces: BTreeSet<&str> = documents.lines().filter_map(|l| l.trim().strip_prefix("namespace: ")).collect();
    for ns in namespaces {
        kubectl(&api, &["create", "namespace", ns]);
    }
    apply_documents(&api, "neu.yaml", &documents);
    let runtime = runtime();
    runtime.block_on(async {
        let client = veer_kube::client(Some(&api.kubeconfig(KubeUser::Admin))).await.expect("client");
        let status = StatusConfig {
            election: Election { namespace: "default".into(), name: "veer-neu".into(), identity: "neu-1".into() },
            checks: Checks { files: Vec::new(), cluster: CLUSTER.into(), labels: Default::default() },
        };
        let _source = KubeSource::start_with(client, CLUSTER, Some(status)).await.expect("the source starts");

        // Active mode, own region: the route's CNAME for NEU's ExternalDNS only.
        let own = BTreeSet::from(["web-external-dns-neu".to_string()]);
        wait_until_async("NEU's route endpoint exists", WAIT, || async { route_endpoints(&api) == own }).await;
        let list = dns_endpoints(&api);
        let web = list["items"].as_array().unwrap().iter().find(|o| o["metadata"]["name"] == "web-external-dns-neu").unwrap().clone();
        assert_eq!(web["metadata"]["labels"]["app.kubernetes.io/managed-by"], "service-router-operator", "{web:#}");
        assert_eq!(web["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/controller"], "external-dns-neu", "{web:#}");
        let route_uid = kubectl(&api, &["get", "serviceroute.routing.router.io", "web", "-n", "myapp", "-o", "jsonpath={.metadata.uid}"]);
        assert_eq!(web["metadata"]["ownerReferences"][0]["kind"], "ServiceRoute", "{web:#}");
        assert_eq!(web["metadata"]["ownerReferences"][0]["uid"], route_uid.trim(), "{web:#}");
        assert_eq!(web["spec"]["endpoints"][0]["recordType"], "CNAME", "{web:#}");
        let policy = |api: &KubeApi| -> serde_json::Value {
            serde_json::from_str::<serde_json::Value>(&kubectl(
                api,
                &["get", "dnspolicy.routing.router.io", "default", "-n", "myapp", "-o", "json"],
            ))
            .expect("JSON")["status"]
                .clone()
        };
        wait_until_async("the DNSPolicy lists NEU's controller", WAIT, || async {
            policy(&api)["activeControllers"] == serde_json::json!(["external-dns-neu"])
        })
        .await;

        // Step 1 of the seed: NEU adopts WEU, so the route is published in WEU's zone too.
        let step = "examples/steps/002-dns-regional-takeover/2-neu-adopts-weu";
        apply_documents(&api, "adopt.yaml", &neu_documents(step, &["neu-identity.yaml"]));
        let both = BTreeSet::from(["web-external-dns-neu".to_string(), "web-external-dns-weu".to_string()]);
        wait_until_async("WEU's route endpoint is created", WAIT, || async { route_endpoints(&api) == both }).await;
        let active = policy(&api)["activeControllers"].clone();
        wait_until_async("the DNSPolicy lists both controllers", WAIT, || async {
            policy(&api)["activeControllers"] == serde_json::json!(["external-dns-neu", "external-dns-weu"])
        })
        .await;
        assert_ne!(active, serde_json::Value::Null);

        // The adoption is removed: WEU's endpoint goes.
        let step = "examples/steps/002-dns-regional-takeover/3-adoption-removed";
        apply_documents(&api, "release.yaml", &neu_documents(step, &["neu-identity.yaml"]));
        wait_until_async("WEU's route endpoint is deleted", WAIT, || async { route_endpoints(&api) == own }).await;

        // The ServiceRoute is deleted: so are its endpoints; the gateway's A records stay.
        kubectl(&api, &["delete", "serviceroute.routing.router.io", "web", "-n", "myapp"]);
        wait_until_async("the route's endpoints are deleted", WAIT, || async { route_endpoints(&api).is_empty() }).await;
        let left = names(&dns_endpoints(&api));
        assert!(
            !left.is_empty() && left.iter().all(|n| n.starts_with("gateway-controller-")),
            "the gateway's A records are still published: {left:?}"
        );
    });
}
