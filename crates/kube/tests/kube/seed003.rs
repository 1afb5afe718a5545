//! Seed 003 (Istio multi-primary, two networks, locality failover) with one API server per
//! cluster: each cluster's veer node reads its own server and the other's as a remote (the
//! seed's `istioctl create-remote-secret`), and the two nodes are meshed over east-west mTLS.
//! The seed's Gateway is applied to cluster2 and its DestinationRule to cluster1, as it applies
//! them; helloworld-v1 scaled to 0 in cluster1 fails over to v2 through cluster2's east-west
//! listener, and back.

use std::net::SocketAddr;

use veer_kube::{KubeSource, Remote};
use veer_node::node::{MeshConfig, Node, NodeConfig};
use veer_testkit::{wait_until_async, Backends, TempDir};

use super::{
    admin_client, api_servers, apply, apply_files, deploy, failures, files_table, runtime, scale, steady_load, wait_for_table, PodAt, WAIT,
};

/// What the seed's `curl helloworld.sample:5000/hello` reaches.
const SERVICE: &str = "helloworld.sample.svc.cluster.local:5000";
const BASE: &str = "examples/003-istio-locality-failover";
const STEPS: &str = "examples/steps/003-istio-locality-failover";
/// The pods at the example's WorkloadEntry addresses, so its tables are the ones to compare.
const V1: (&str, [u8; 4]) = ("helloworld-v1-69ff8fc747-vlzg9", [127, 0, 2, 1]);
const V2: (&str, [u8; 4]) = ("helloworld-v2-779454bb5f-4z665", [127, 0, 2, 2]);
const PORT: u16 = 5000;
/// Each node's loopback address, as the example's Clusters place them.
const NODES: [(&str, [u8; 4]); 2] = [("cluster1", [127, 0, 3, 1]), ("cluster2", [127, 0, 3, 2])];

/// The example's two Clusters (`topology.yaml`), applied to both servers.
const CLUSTERS: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "cluster1", "namespace": "default"},
   "spec": {"network": "network1", "locality": {"region": "region1", "zone": "zone1"},
            "gateway": {"address": "127.0.3.1:8080"}, "eastWest": {"address": "127.0.3.1:15443"}, "admin": {"address": "127.0.3.1:9901"}}},
  {"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "cluster2", "namespace": "default"},
   "spec": {"network": "network2", "locality": {"region": "region2", "zone": "zone1"},
            "gateway": {"address": "127.0.3.2:8080"}, "eastWest": {"address": "127.0.3.2:15443"}, "admin": {"address": "127.0.3.2:9901"}}}]}"#;
/// The sample's helloworld Service, in each cluster.
const HELLOWORLD: &str = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "helloworld", "namespace": "sample", "labels": {"app": "helloworld", "service": "helloworld"}},
  "spec": {"ports": [{"port": 5000, "name": "http"}], "selector": {"app": "helloworld"}}}"#;

fn at(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Waits until cluster1's node serves the table `veer explain` gives on the step's files.
async fn table_of_step(node: &Node, step: &str, expected: &str) {
    wait_for_table(node.admin, SERVICE, &files_table(&[step], SERVICE, "cluster1", &[]), expected).await;
}

#[test]
fn two_clusters_each_with_its_api_server_fail_over_across_networks_as_their_files_do() {
    let [api1, api2] = api_servers::<2>();
    for api in [&api1, &api2] {
        api.create_namespace("sample").expect("namespace");
        api.create_namespace("istio-system").expect("namespace");
        apply(api, "clusters.json", CLUSTERS);
        apply(api, "helloworld.json", HELLOWORLD);
    }
    let (v1_labels, v2_labels) = ([("app", "helloworld"), ("version", "v1")], [("app", "helloworld"), ("version", "v2")]);
    let v1_pods = [PodAt { name: V1.0, addr: at(V1.1, PORT), labels: &v1_labels }];
    deploy(&api1, "sample", "helloworld", "http", &v1_pods);
    deploy(&api2, "sample", "helloworld", "http", &[PodAt { name: V2.0, addr: at(V2.1, PORT), labels: &v2_labels }]);

    runtime().block_on(async {
        let backends = Backends::start([V1, V2].map(|(name, ip)| (name.to_string(), at(ip, PORT)))).await;
        let certs = TempDir::new("seed003-certs");
        veer_pki::create_mesh(&certs, &["cluster1", "cluster2"]).expect("the mesh's certificates");
        // cluster2 first, so cluster1's node finds its peer listening.
        let mut nodes = Vec::new();
        let mut sources = Vec::new();
        for ((cluster, ip), (own, other, other_name)) in NODES.iter().rev().zip([(&api2, &api1, "cluster1"), (&api1, &api2, "cluster2")]) {
            let remotes = vec![Remote { cluster: other_name.into(), client: admin_client(other).await }];
            let source =
                KubeSource::start_with_remotes(admin_client(own).await, cluster, &[], None, remotes).await.expect("the source starts");
            let mut cfg = NodeConfig::new(Vec::new(), cluster);
            cfg.listen = Some(at(*ip, 0));
            cfg.admin = Some(at(*ip, 0));
            cfg.mesh = Some(MeshConfig { certs: certs.join(cluster), aging: Default::default(), east_west: None });
            cfg.external = Some(source.feeds());
            nodes.push(Node::start(cfg).await.unwrap_or_else(|e| panic!("{cluster}'s node starts: {e}")));
            sources.push(source);
        }
        let cluster1 = &nodes[1];
        // cluster1's failovers, as Events on its own server's objects.
        let publisher = tokio::spawn(veer_kube::events::publish(
            admin_client(&api1).await,
            cluster1.events.clone(),
            cluster1.snapshot_reader(),
            sources[1].uid_lookup(),
            "veer-test".into(),
        ));

        // Before the exposure only v1 is in cluster1's table: v2 is on another network.
        table_of_step(cluster1, BASE, "before the Gateway").await;
        // The seed's cross-network Gateway, applied to cluster2's server: cluster1's node reads it
        // there and takes v2, through cluster2's east-west listener.
        apply_files(&api2, &[&format!("{STEPS}/2-expose-helloworld/seed-expose-helloworld.yaml")]);
        table_of_step(cluster1, &format!("{STEPS}/2-expose-helloworld"), "with cluster2's Gateway").await;
        // The seed's DestinationRule, applied to cluster1's server: region1 first, then region2.
        apply_files(&api1, &[&format!("{STEPS}/3-destination-rule/seed-destination-rule.yaml")]);
        table_of_step(cluster1, &format!("{STEPS}/3-destination-rule"), "with the DestinationRule").await;

        let spec = steady_load(cluster1.listen, "helloworld.sample:5000", "/hello");
        let traffic = tokio::spawn(veer_testkit::run(spec));
        wait_until_async("v1 serves cluster1's client", WAIT, || async { backends[0].served() >= 50 }).await;
        assert_eq!(backends[1].served(), 0, "with v1 ready, v2 has nothing");

        // kubectl scale deployment helloworld-v1 --replicas=0 in cluster1: its slice empties.
        scale(&api1, "sample", "helloworld", "http", &[]);
        let before = backends[1].served();
        wait_until_async("v2, across the networks, takes the traffic", WAIT, || async { backends[1].served() >= before + 50 }).await;
        table_of_step(cluster1, &format!("{STEPS}/4-v1-scaled-to-0"), "v1 scaled to 0").await;
        let v1_then = backends[0].served();
        scale(&api1, "sample", "helloworld", "http", &v1_pods);
        wait_until_async("v1 has the traffic back", WAIT, || async { backends[0].served() >= v1_then + 50 }).await;

        let report = traffic.await.expect("the load ran");
        let failed = failures(&report);
        assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), report.samples.len());
        let mut runs: Vec<&str> = report.samples.iter().filter_map(|s| s.backend.as_deref()).collect();
        runs.dedup();
        assert_eq!(runs, [V1.0, V2.0, V1.0], "v1, then v2 in cluster2, then v1 again");
        // v1's Service in cluster1 says where the traffic went and back, though the table's
        // priority 0 only changed hands (v2's level took its number, as Istio numbers them).
        let events = || -> Vec<(String, String)> {
            let selector = "involvedObject.kind=Service,involvedObject.name=helloworld";
            let list = super::kubectl(&api1, &["get", "events", "-n", "sample", "--field-selector", selector, "-o", "json"]);
            let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
            let text = |e: &serde_json::Value, f: &str| e[f].as_str().unwrap_or_default().to_string();
            list["items"].as_array().into_iter().flatten().map(|e| (text(e, "reason"), text(e, "message"))).collect()
        };
        wait_until_async("the failover and the failback are Events on cluster1's helloworld Service", WAIT, || async {
            let e = events();
            e.iter().any(|(r, m)| r == "FailedOver" && m.contains("priority 0 is now other region"))
                && e.iter().any(|(r, m)| r == "FailedBack" && m.contains("priority 0 is same region/zone/subzone again"))
        })
        .await;
        publisher.abort();
        for node in nodes {
            node.stop().await;
        }
    });
}
