//! Seed 004 (Envoy Gateway active/passive fallback) from the API server: the seed's YAML applied
//! as it stands, its Deployment scaled to zero and back as its EndpointSlice says.

use std::net::SocketAddr;
use std::time::Duration;

use veer_node::node::{Node, NodeConfig};
use veer_testkit::{wait_until_async, LoadSpec, World};

use super::{api_with_crds, apply, kubectl, repo, slice, slice_version, WAIT};

#[test]
fn the_seeds_resources_route_live_traffic_and_an_emptied_slice_fails_over_and_back_with_no_failed_request() {
    let api = api_with_crds();
    let seed = repo().join("examples/004-envoy-gateway-fallback/seed.yaml");
    kubectl(&api, &["apply", "-f", seed.to_str().expect("a UTF-8 path")]);
    apply(&api, "cluster.json", r#"{"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "local"}, "spec": {"locality": {"region": "local"}}}"#);
    let version = slice_version(&api);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let w = World::new();
        let active = w.backends("active", 1, 1).await;
        let passive = w.backends("passive", 2, 1).await;
        let (active_addr, passive_addr) = (active[0].addr(), passive[0].addr());
        apply(&api, "active.json", &slice(version, "default", "active", "http", &[active_addr]));
        apply(&api, "passive.json", &slice(version, "default", "passive", "http", &[passive_addr]));

        let client = veer_kube::client(Some(&api.kubeconfig(veer_testkit::kube::KubeUser::Admin))).await.expect("client");
        let source = veer_kube::KubeSource::start(client, "local").await.expect("the source starts");
        let mut cfg = NodeConfig::new(Vec::new(), "local");
        cfg.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.external = Some(source.feeds());
        let node = Node::start(cfg).await.expect("the node starts from what the server holds");

        // Requests at a steady rate while the Deployment is scaled to zero and back.
        let spec = LoadSpec {
            target: node.listen,
            host: "www.example.com".into(),
            path: "/test".into(),
            method: http::Method::GET,
            rate_per_sec: 100,
            duration: Duration::from_secs(12),
            connections: 8,
            timeout: Duration::from_secs(5),
            http2: false,
        };
        let traffic = tokio::spawn(veer_testkit::run(spec));
        wait_until_async("the active backend serves the route", WAIT, || async { active[0].served() >= 50 }).await;
        assert_eq!(passive[0].served(), 0, "with the active backend ready, the fallback has nothing");

        // kubectl scale --replicas=0: the controller empties the slice.
        apply(&api, "active.json", &slice(version, "default", "active", "http", &[]));
        let before = passive[0].served();
        wait_until_async("the fallback takes the traffic", WAIT, || async { passive[0].served() >= before + 50 }).await;
        let active_then = active[0].served();

        // Scaled back to one: the slice lists the Pod again.
        apply(&api, "active.json", &slice(version, "default", "active", "http", &[active_addr]));
        wait_until_async("the active backend has the traffic back", WAIT, || async { active[0].served() >= active_then + 50 }).await;

        let report = traffic.await.expect("the load ran");
        let failed: Vec<String> = report
            .samples
            .iter()
            .filter(|s| s.status != Some(200))
            .map(|s| format!("{:?} {:?} {:?}", s.sent_at, s.status, s.error))
            .collect();
        assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), report.samples.len());
        // In order: active, then passive, then active again.
        let mut runs: Vec<&str> = report.samples.iter().filter_map(|s| s.backend.as_deref()).collect();
        runs.dedup();
        assert_eq!(runs.first().copied(), Some("active-1"), "{runs:?}");
        assert_eq!(runs.last().copied(), Some("active-1"), "{runs:?}");
        assert!(runs.contains(&"passive-1"), "{runs:?}");
        node.stop().await;
    });
}
