//! Seed 000 (Gloo Platform priority labels) with one API server per cluster: `central-pp-rs`,
//! whose server is also the management cluster the seed applies its VirtualDestinations and
//! FailoverPolicies to, and `test-pp-rs`. Each cluster's veer node reads its own server and the
//! other's as a remote (as Gloo's management plane reads every registered cluster), with a client
//! carrying its cluster's `serves` label. The test server labelled to serve central, then central
//! scaled to 0: central's clients go to test with no failed request, and come back.

use std::net::SocketAddr;

use veer_kube::{KubeSource, Remote};
use veer_node::node::{Node, NodeConfig};
use veer_testkit::kube::KubeApi;
use veer_testkit::{wait_until_async, Backends};

use super::{
    admin_client, api_servers, apply, apply_files, deploy, failures, files_table, runtime, scale, steady_load, wait_for_table, PodAt, WAIT,
};

const BASE: &str = "examples/000-gloo-priority-labels";
const STEPS: &str = "examples/steps/000-gloo-priority-labels";
const PORT: u16 = 8080;
const APP: (&str, &str) = ("app", "vuderani-vd-server");
const SERVES_CENTRAL: (&str, &str) = ("mesh.opentable.com/serves-central-pp-rs", "true");
const SERVES_TEST: (&str, &str) = ("mesh.opentable.com/serves-test-pp-rs", "true");

/// One cluster: its name, the VirtualDestination host its clients call, its clients' label, and
/// where its servers run (the example's WorkloadEntry addresses, `127.0.<net>.<i>:8080`).
struct Side {
    cluster: &'static str,
    host: &'static str,
    label: (&'static str, &'static str),
    net: u8,
}

const CENTRAL: Side = Side { cluster: "central-pp-rs", host: "go-vuderani-algebra.infra.svc.central-pp-rs", label: SERVES_CENTRAL, net: 1 };
const TEST: Side = Side { cluster: "test-pp-rs", host: "go-vuderani-algebra.infra.svc.test-pp-rs", label: SERVES_TEST, net: 2 };

impl Side {
    fn server(&self, i: u8) -> (String, SocketAddr) {
        (format!("{}-{i}", self.cluster), SocketAddr::from(([127, 0, self.net, i], PORT)))
    }
}

/// The example's two Clusters (`clusters.yaml`), applied to both servers.
const CLUSTERS: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "central-pp-rs", "namespace": "default"},
   "spec": {"network": "pp-net", "locality": {"region": "pp", "zone": "rs", "subzone": "central"}, "gateway": {"address": "127.0.0.1:15001"}}},
  {"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "test-pp-rs", "namespace": "default"},
   "spec": {"network": "pp-net", "locality": {"region": "pp", "zone": "rs", "subzone": "avg"}, "gateway": {"address": "127.0.0.1:15002"}}}]}"#;

/// The server Deployment of `side`: its Service and `replicas` Pods labelled `labels` (the
/// Service carries them too, as the seed's manifests have it), all ready.
fn servers(api: &KubeApi, side: &Side, replicas: u8, labels: &[(&str, &str)]) {
    let mut service_labels: serde_json::Map<String, serde_json::Value> = labels.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
    service_labels.insert("app".into(), "vuderani-vd-server".into());
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "vuderani-vd-server", "namespace": "infra", "labels": service_labels},
        "spec": {"selector": {"app": "vuderani-vd-server"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    });
    apply(api, "server-service.json", &service.to_string());
    with_pods(side, replicas, labels, |pods| deploy(api, "infra", "vuderani-vd-server", "http", pods));
}

/// `kubectl scale deployment vuderani-vd-server --replicas=N` of `side`, as its slice says.
fn scale_servers(api: &KubeApi, side: &Side, replicas: u8, labels: &[(&str, &str)]) {
    with_pods(side, replicas, labels, |pods| scale(api, "infra", "vuderani-vd-server", "http", pods));
}

fn with_pods(side: &Side, replicas: u8, labels: &[(&str, &str)], f: impl FnOnce(&[PodAt<'_>])) {
    let names: Vec<(String, SocketAddr)> = (1..=replicas).map(|i| side.server(i)).collect();
    let pods: Vec<PodAt<'_>> = names.iter().map(|(name, addr)| PodAt { name, addr: *addr, labels }).collect();
    f(&pods);
}

/// Waits until `node` serves `side`'s client the table `veer explain` gives on `folder`.
async fn table_of(node: &Node, side: &Side, folder: &str, expected: &str) {
    let host = format!("{}:80", side.host);
    let files = files_table(&[folder], &host, side.cluster, &[side.label]);
    wait_for_table(node.admin, &host, &files, &format!("{expected} ({})", side.cluster)).await;
}

#[test]
fn priority_labels_over_two_api_servers_route_as_their_files_do_and_central_scaled_to_0_moves_to_test_and_back() {
    let [central_api, test_api] = api_servers::<2>();
    for api in [&central_api, &test_api] {
        api.create_namespace("infra").expect("namespace");
        apply(api, "clusters.json", CLUSTERS);
    }
    servers(&central_api, &CENTRAL, 9, &[APP, SERVES_CENTRAL]);
    servers(&test_api, &TEST, 1, &[APP, SERVES_TEST]);
    // The seed applies its VirtualDestinations and FailoverPolicies to the management cluster.
    apply_files(
        &central_api,
        &[&format!("{BASE}/seed.yaml"), &format!("{BASE}/vd-for-central.yaml"), &format!("{BASE}/policy-for-central.yaml")],
    );

    runtime().block_on(async {
        let backends = Backends::start((1..=9).map(|i| CENTRAL.server(i)).chain([TEST.server(1)])).await;
        let mut nodes = Vec::new();
        let mut sources = Vec::new();
        for (side, own, other, other_side) in [(&CENTRAL, &central_api, &test_api, &TEST), (&TEST, &test_api, &central_api, &CENTRAL)] {
            let remotes = vec![Remote { cluster: other_side.cluster.into(), client: admin_client(other).await }];
            let source =
                KubeSource::start_with_remotes(admin_client(own).await, side.cluster, &[], None, remotes).await.expect("the source starts");
            let mut cfg = NodeConfig::new(Vec::new(), side.cluster);
            cfg.labels.insert(side.label.0.into(), side.label.1.into());
            cfg.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            cfg.external = Some(source.feeds());
            nodes.push(Node::start(cfg).await.unwrap_or_else(|e| panic!("{}'s node starts: {e}", side.cluster)));
            sources.push(source);
        }
        let (central, test) = (&nodes[0], &nodes[1]);

        // Seed steps 1-3: each cluster's clients served in their own cluster.
        table_of(central, &CENTRAL, BASE, "central, at the start").await;
        table_of(test, &TEST, BASE, "test, at the start").await;
        // Step 4: the test server labelled to serve central too: central's next priority.
        servers(&test_api, &TEST, 1, &[APP, SERVES_TEST, SERVES_CENTRAL]);
        table_of(central, &CENTRAL, &format!("{STEPS}/2-remote-labelled"), "central, test's server labelled").await;

        let spec = steady_load(central.listen, CENTRAL.host, "/");
        let traffic = tokio::spawn(veer_testkit::run(spec));
        let central_served = || backends.iter().take(9).map(|b| b.served()).sum::<u64>();
        let test_served = || backends[9].served();
        wait_until_async("central's servers serve central's client", WAIT, || async { central_served() >= 50 }).await;
        assert_eq!(test_served(), 0, "with central's servers ready, test's has nothing");

        // Step 6: kubectl scale deployment vuderani-vd-server --replicas=0 in central.
        scale_servers(&central_api, &CENTRAL, 0, &[APP, SERVES_CENTRAL]);
        let before = test_served();
        wait_until_async("test's server takes central's traffic", WAIT, || async { test_served() >= before + 50 }).await;
        table_of(central, &CENTRAL, &format!("{STEPS}/3-central-scaled-0"), "central scaled to 0").await;
        // Step 7: back to 9 replicas.
        let central_then = central_served();
        scale_servers(&central_api, &CENTRAL, 9, &[APP, SERVES_CENTRAL]);
        wait_until_async("central's servers have the traffic back", WAIT, || async { central_served() >= central_then + 50 }).await;

        let report = traffic.await.expect("the load ran");
        let failed = failures(&report);
        assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), report.samples.len());
        let mut runs: Vec<&str> = report
            .samples
            .iter()
            .filter_map(|s| s.backend.as_deref())
            .map(|b| if b.starts_with("test-") { "test" } else { "central" })
            .collect();
        runs.dedup();
        assert_eq!(runs, ["central", "test", "central"], "central, then test, then central again");
        for node in nodes {
            node.stop().await;
        }
    });
}
