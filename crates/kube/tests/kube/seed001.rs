//! Seed 001 (Service Mesh Hub FailoverService) across two API servers: `mgmt-cluster`, where
//! the seed's resources are applied and the one veer node runs, and `remote-cluster`, which the
//! node reads as a remote (as SMH reads a registered cluster). reviews v1 and v2 are mgmt's, v3 is
//! the remote's; mgmt's Deployments scaled to 0 move productpage's traffic to v3 and back.

use std::net::SocketAddr;

use veer_kube::leader::Election;
use veer_kube::writer::Checks;
use veer_kube::{KubeSource, Remote, StatusConfig};
use veer_node::node::{Node, NodeConfig};
use veer_testkit::{wait_until_async, Backends};

use super::{
    admin_client, api_servers, apply, apply_files, deploy, failures, files_table, kubectl, route_report, runtime, scale, steady_load,
    table, PodAt, WAIT,
};

/// What productpage calls (the seed's traffic shift sends it to the FailoverService).
const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local:9080";
/// The example's files: the same resources, with one WorkloadEntry per pod.
const FILES: &[&str] = &["examples/001-smh-failover-service"];
/// The pods at the example's WorkloadEntry addresses, so its tables are the ones to compare.
const V1: (&str, [u8; 4]) = ("reviews-v1", [127, 0, 3, 1]);
const V2: (&str, [u8; 4]) = ("reviews-v2", [127, 0, 3, 2]);
const V3: (&str, [u8; 4]) = ("reviews-v3", [127, 0, 3, 3]);
const PORT: u16 = 9080;

fn at(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((ip, PORT))
}

/// The example's two Clusters (applied to both servers, as the mesh's topology is everywhere)
/// and its VirtualMesh, which the seed's setup guide creates on the management cluster.
const CLUSTERS: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "mgmt-cluster", "namespace": "default"},
   "spec": {"network": "network1", "locality": {"region": "us-east1", "zone": "us-east1-b"}, "gateway": {"address": "127.0.0.1:15011"}}},
  {"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "remote-cluster", "namespace": "default"},
   "spec": {"network": "network1", "locality": {"region": "us-west1", "zone": "us-west1-a"}, "gateway": {"address": "127.0.0.1:15012"}}}]}"#;
const VIRTUAL_MESH: &str = r#"{"apiVersion": "networking.smh.solo.io/v1alpha2", "kind": "VirtualMesh", "metadata": {"name": "virtual-mesh", "namespace": "service-mesh-hub"},
  "spec": {"meshes": [{"name": "istiod-istio-system-mgmt-cluster", "namespace": "service-mesh-hub"}, {"name": "istiod-istio-system-remote-cluster", "namespace": "service-mesh-hub"}]}}"#;
/// bookinfo's reviews Service, as each cluster holds it (no cluster label: the server says).
const SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "bookinfo", "labels": {"app": "reviews", "service": "reviews"}},
  "spec": {"ports": [{"port": 9080, "name": "http"}], "selector": {"app": "reviews"}}}"#;

#[test]
fn a_failover_service_over_two_api_servers_is_accepted_routes_as_its_files_do_and_fails_over_to_the_remote_cluster() {
    let [mgmt, remote] = api_servers::<2>();
    for api in [&mgmt, &remote] {
        api.create_namespace("bookinfo").expect("namespace");
        apply(api, "clusters.json", CLUSTERS);
        apply(api, "reviews.json", SERVICE);
    }
    // The remote is read with deploy/remote-reader.yaml's role only (the test's `veer` user
    // stands in for its ServiceAccount).
    apply_files(&remote, &["deploy/00-namespace.yaml", "deploy/remote-reader.yaml"]);
    kubectl(&remote, &["create", "clusterrolebinding", "veer-user", "--clusterrole", "veer-remote-reader", "--user", "veer"]);
    mgmt.create_namespace("service-mesh-hub").expect("namespace");
    apply(&mgmt, "virtual-mesh.json", VIRTUAL_MESH);
    let (v1_labels, v2_labels, v3_labels) =
        ([("app", "reviews"), ("version", "v1")], [("app", "reviews"), ("version", "v2")], [("app", "reviews"), ("version", "v3")]);
    let mgmt_pods = [PodAt { name: V1.0, addr: at(V1.1), labels: &v1_labels }, PodAt { name: V2.0, addr: at(V2.1), labels: &v2_labels }];
    deploy(&mgmt, "bookinfo", "reviews", "http", &mgmt_pods);
    deploy(&remote, "bookinfo", "reviews", "http", &[PodAt { name: V3.0, addr: at(V3.1), labels: &v3_labels }]);
    // The seed's three resources, as it applies them: on the management cluster.
    apply_files(&mgmt, &["examples/001-smh-failover-service/seed.yaml"]);

    runtime().block_on(async {
        let backends = Backends::start([V1, V2, V3].map(|(name, ip)| (name.to_string(), at(ip)))).await;
        let status = StatusConfig {
            election: Election { namespace: "default".into(), name: "veer-mgmt-cluster".into(), identity: "veer-0".into() },
            checks: Checks { files: Vec::new(), cluster: "mgmt-cluster".into(), labels: Default::default() },
        };
        let reader = veer_kube::client(Some(&remote.kubeconfig(veer_testkit::kube::KubeUser::Veer))).await.expect("client");
        let remotes = vec![Remote { cluster: "remote-cluster".into(), client: reader }];
        let source = KubeSource::start_with_remotes(admin_client(&mgmt).await, "mgmt-cluster", &[], Some(status), remotes)
            .await
            .expect("the source starts");
        let mut cfg = NodeConfig::new(Vec::new(), "mgmt-cluster");
        cfg.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.external = Some(source.feeds());
        let node = Node::start(cfg).await.expect("the node starts from what the two servers hold");

        // The table is the one `veer explain` gives on the example's files, v3 from the remote's
        // EndpointSlice included.
        let served = table(&route_report(node.admin, REVIEWS).await);
        let files = files_table(FILES, REVIEWS, "mgmt-cluster", &[]);
        assert_eq!(served, files, "served: {served:#}\nfiles: {files:#}");
        let addresses = served.to_string();
        assert!(addresses.contains("127.0.3.3"), "the remote cluster's v3 is in the table: {served:#}");

        // Each of the seed's resources is ACCEPTED, the way SMH says it, on the management cluster.
        for (what, namespace) in [
            ("failoverservice.networking.smh.solo.io/reviews-failover", "service-mesh-hub"),
            ("trafficpolicy.networking.smh.solo.io/mgmt-reviews-outlier", "service-mesh-hub"),
            ("trafficpolicy.networking.smh.solo.io/reviews-shift-failover", "bookinfo"),
        ] {
            wait_until_async(&format!("{what} is ACCEPTED"), WAIT, || async {
                let object = kubectl(&mgmt, &["get", what, "-n", namespace, "-o", "json"]);
                serde_json::from_str::<serde_json::Value>(&object).expect("JSON")["status"]["state"] == "ACCEPTED"
            })
            .await;
        }

        let spec = steady_load(node.listen, REVIEWS, "/");
        let traffic = tokio::spawn(veer_testkit::run(spec));
        wait_until_async("mgmt's reviews serve productpage", WAIT, || async { backends[0].served() + backends[1].served() >= 50 }).await;
        assert_eq!(backends[2].served(), 0, "with mgmt's reviews ready, the remote's v3 has nothing");

        // kubectl scale --replicas=0 of reviews-v1 and reviews-v2 on mgmt: its slice empties.
        scale(&mgmt, "bookinfo", "reviews", "http", &[]);
        let before = backends[2].served();
        wait_until_async("the remote cluster's v3 takes the traffic", WAIT, || async { backends[2].served() >= before + 50 }).await;
        let mgmt_then = backends[0].served() + backends[1].served();
        scale(&mgmt, "bookinfo", "reviews", "http", &mgmt_pods);
        wait_until_async("mgmt's reviews have the traffic back", WAIT, || async {
            backends[0].served() + backends[1].served() >= mgmt_then + 50
        })
        .await;

        let report = traffic.await.expect("the load ran");
        let failed = failures(&report);
        assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), report.samples.len());
        let mut runs: Vec<&str> =
            report.samples.iter().filter_map(|s| s.backend.as_deref()).map(|b| if b == V3.0 { "remote" } else { "mgmt" }).collect();
        runs.dedup();
        assert_eq!(runs, ["mgmt", "remote", "mgmt"], "mgmt, then the remote cluster, then mgmt again");
        node.stop().await;
    });
}
