//! Seed 004 (Envoy Gateway active/passive fallback) from the API server: the seed's YAML applied
//! as it stands, its Deployment scaled to zero and back as its EndpointSlice says.

use std::net::SocketAddr;
use std::time::Duration;

use veer_control::events::EventKind;
use veer_node::node::{Node, NodeConfig};
use veer_testkit::{wait_until_async, LoadSpec, World};

use super::{
    api_with_crds, apply, apply_seed004, kubectl, pod, repo, route_report, runtime, slice, slice_version, steady_load, table, BROKEN_ROUTE,
    WAIT,
};

const HOST: &str = "www.example.com";

/// `veer explain --host www.example.com --from local --path /test` on the seed's files.
fn files_report(pods: &[(&str, SocketAddr)]) -> serde_json::Value {
    let seed = std::fs::read_to_string(repo().join("examples/004-envoy-gateway-fallback/seed.yaml")).expect("the seed");
    let mut topology =
        String::from("apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {name: local}\nspec: {locality: {region: local}}\n");
    for (name, addr) in pods {
        let app = name.split('-').next().expect("the app");
        topology += &format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec: {{address: {}, ports: {{http: {}}}, labels: {{app: {app}, version: v1}}}}\n",
            addr.ip(),
            addr.port()
        );
    }
    let set = veer_model::from_sources(&[("seed.yaml".into(), seed), ("topology.yaml".into(), topology)])
        .unwrap_or_else(|r| panic!("{r}"))
        .into_set();
    let inventory = veer_model::inventory::Inventory::from_manifests(&set);
    let view = veer_model::resolve::View::new(&set, &inventory);
    let dest = veer_model::resolve::resolve(view, HOST, None, "local", "/test").expect("the route resolves");
    let client = veer_model::resolve::client(&set, "local", &Default::default()).expect("the client");
    serde_json::to_value(veer_model::explain::explain(&dest, &client)).expect("JSON")
}

#[test]
fn the_seeds_resources_route_live_traffic_and_an_emptied_slice_fails_over_and_back_with_no_failed_request() {
    let mut api = api_with_crds();
    apply_seed004(&api);
    let version = slice_version(&api);

    let runtime = runtime();
    runtime.block_on(async {
        let w = World::new();
        let active = w.backends("active", 1, 1).await;
        let passive = w.backends("passive", 2, 1).await;
        let (active_pod, passive_pod) = (("active-8cf8787d5-klpgv", active[0].addr()), ("passive-f894bd7cf-8gkqr", passive[0].addr()));
        apply(&api, "active-pod.json", &pod("default", active_pod.0, &[("app", "active"), ("version", "v1")]));
        apply(&api, "passive-pod.json", &pod("default", passive_pod.0, &[("app", "passive"), ("version", "v1")]));
        apply(&api, "active.json", &slice(version, "default", "active", "http", &[active_pod]));
        apply(&api, "passive.json", &slice(version, "default", "passive", "http", &[passive_pod]));

        let client = veer_kube::client(Some(&api.kubeconfig(veer_testkit::kube::KubeUser::Admin))).await.expect("client");
        let source = veer_kube::KubeSource::start(client, "local").await.expect("the source starts");
        let mut cfg = NodeConfig::new(Vec::new(), "local");
        cfg.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.external = Some(source.feeds());
        let node = Node::start(cfg).await.expect("the node starts from what the server holds");
        let events_client = veer_kube::client(Some(&api.kubeconfig(veer_testkit::kube::KubeUser::Admin))).await.expect("client");
        let publisher = tokio::spawn(veer_kube::events::publish(
            events_client,
            node.events.clone(),
            node.snapshot_reader(),
            source.uid_lookup(),
            "veer-test".into(),
        ));

        // The node's table is the one `veer explain` gives for the same seed as files, with the
        // Pods as WorkloadEntries (the seed's topology.yaml, at the backends' addresses).
        let served = route_report(node.admin, HOST).await;
        let files = files_report(&[active_pod, passive_pod]);
        assert_eq!(table(&served), table(&files), "served: {served:#}\nfiles: {files:#}");
        assert_eq!(table(&served)["priorities"].as_array().map(Vec::len), Some(2), "{served:#}");

        // Requests at a steady rate while the Deployment is scaled to zero and back.
        let spec = LoadSpec { duration: Duration::from_secs(12), ..steady_load(node.listen, HOST, "/test") };
        let traffic = tokio::spawn(veer_testkit::run(spec.clone()));
        wait_until_async("the active backend serves the route", WAIT, || async { active[0].served() >= 50 }).await;
        assert_eq!(passive[0].served(), 0, "with the active backend ready, the fallback has nothing");

        // kubectl scale --replicas=0: the controller empties the slice.
        apply(&api, "active.json", &slice(version, "default", "active", "http", &[]));
        let before = passive[0].served();
        wait_until_async("the fallback takes the traffic", WAIT, || async { passive[0].served() >= before + 50 }).await;
        let active_then = active[0].served();

        // Scaled back to one: the slice lists the Pod again.
        apply(&api, "active.json", &slice(version, "default", "active", "http", &[active_pod]));
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
        // Each move of a destination is an Event on the resource that defines it, which
        // `kubectl describe` shows: here the active Service, emptied and restored.
        let reasons = || -> Vec<String> {
            let selector = "involvedObject.kind=Service,involvedObject.name=active";
            let list = kubectl(&api, &["get", "events", "-n", "default", "--field-selector", selector, "-o", "json"]);
            let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
            list["items"].as_array().into_iter().flatten().filter_map(|e| e["reason"].as_str().map(str::to_string)).collect()
        };
        wait_until_async("the failover and the failback are Events", WAIT, || async {
            let r = reasons();
            r.iter().any(|x| x == "NoHealthyUpstream") && r.iter().any(|x| x == "Recovered")
        })
        .await;
        let describe = kubectl(&api, &["describe", "service", "active"]);
        assert!(describe.contains("NoHealthyUpstream") && describe.contains("moved from priority 0 to none"), "{describe}");

        // The API server restarts (every watch cut) under traffic: the node serves on by what it
        // last read, the watches resume without a rebuild of the set, and the next change lands.
        let reloads = |node: &Node| node.events.all().iter().filter(|e| e.kind == EventKind::ConfigReloaded).count();
        let reloads_before = reloads(&node);
        let traffic = tokio::spawn(veer_testkit::run(LoadSpec { duration: Duration::from_secs(20), ..spec.clone() }));
        let served = active[0].served();
        wait_until_async("the active backend serves the second run", WAIT, || async { active[0].served() >= served + 20 }).await;
        tokio::task::block_in_place(|| api.restart()).expect("the API server restarts");
        apply(&api, "active.json", &slice(version, "default", "active", "http", &[]));
        let before = passive[0].served();
        wait_until_async("the fallback takes the traffic after the restart", WAIT, || async { passive[0].served() >= before + 20 }).await;
        assert_eq!(reloads(&node), reloads_before, "a resumed watch of unchanged objects is no new set");
        let report = traffic.await.expect("the load ran");
        let failed = report.samples.iter().filter(|s| s.status != Some(200)).count();
        assert_eq!(
            failed,
            0,
            "requests failed across the API server's restart: {:?}",
            report.samples.iter().find(|s| s.status != Some(200))
        );
        // A broken object on the server is refused with where and why; the last good set
        // keeps serving (here: the fallback, as the emptied slice left it).
        apply(&api, "broken.json", BROKEN_ROUTE);
        let refused = || {
            node.events
                .all()
                .iter()
                .any(|e| e.kind == EventKind::ConfigRejected && e.reason.contains("kubernetes:HTTPRoute/default/broken:"))
        };
        wait_until_async("the broken route is refused, located", WAIT, || async { refused() }).await;
        let report = veer_testkit::run(LoadSpec { duration: Duration::from_secs(1), ..spec }).await;
        assert!(!report.samples.is_empty() && report.samples.iter().all(|s| s.status == Some(200)), "{:?}", report.by_backend());
        assert!(report.by_backend().keys().all(|b| b == "passive-1"), "{:?}", report.by_backend());
        publisher.abort();
        node.stop().await;
    });
}
