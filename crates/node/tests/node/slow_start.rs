//! Slow start on failback: a priority that came back takes its load back over the window, as
//! `/routes` shows it (the priority's load, the endpoint's warm-up) and real traffic lands.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{cluster, count, failures, service, spec, NodeWorld, WAIT};
use veer_control::events::EventKind;
use veer_testkit::{wait_until_async, Mode, World};

/// The failover route's P0 load and its endpoint's warm-up percent, as `/routes` has them.
async fn p0(admin: SocketAddr) -> (u64, Option<f64>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let resp = client.get(format!("http://{admin}/routes").parse().expect("uri")).await.expect("GET /routes");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let routes: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let report = routes
        .as_array()
        .and_then(|r| r.iter().find(|d| d["host"] == "www.example.com"))
        .unwrap_or_else(|| panic!("no report for the route: {routes}"));
    let p0 = &report["priorities"][0];
    (p0["load_percent"].as_u64().unwrap_or(0), p0["endpoints"][0]["warmup_percent"].as_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_priority_takes_its_load_back_over_the_slow_start_window() {
    let w = World::new();
    let active = w.backends("active", 1, 1).await;
    let passive = w.backends("passive", 2, 1).await;
    // Three failed checks of 150 ms each take the backend out: one slow answer on a loaded
    // machine must not take it out again mid-ramp, which would make its load fall.
    let mut m = cluster("local", "r", "z", "");
    m.push_str(&service("local", "default", "active", &[], &active));
    m.push_str(&service("local", "default", "passive", &[], &passive));
    m.push_str(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata:\n  name: passive\nspec:\n  fallback: true\n  endpoints:\n  - fqdn:\n      hostname: passive.default.svc.cluster.local\n      port: 80\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata:\n  name: active\nspec:\n  endpoints:\n  - fqdn:\n      hostname: active.default.svc.cluster.local\n      port: 80\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  gatewayClassName: veer\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: ha\n  namespace: default\nspec:\n  hostnames:\n  - www.example.com\n  parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - group: gateway.envoyproxy.io\n      kind: Backend\n      name: active\n      port: 80\n    - group: gateway.envoyproxy.io\n      kind: Backend\n      name: passive\n      port: 80\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata:\n  name: ha\nspec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    name: ha\n  healthCheck:\n    active:\n      type: HTTP\n      interval: 200ms\n      timeout: 150ms\n      unhealthyThreshold: 3\n      healthyThreshold: 1\n      http:\n        path: /health\n  loadBalancer:\n    type: RoundRobin\n    slowStart:\n      window: 3s\n",
    );
    w.write("world.yaml", &m);
    let node = w.node("local").await;
    assert_eq!(p0(node.admin).await, (100, None), "a node's first endpoints do not warm up");

    active[0].set_mode(Mode::Status(503)).await.expect("503");
    wait_until_async("the active backend fails its check", WAIT, || async { count(&node, EventKind::HealthCheckFailed) >= 1 }).await;
    wait_until_async("the passive backend has all the load", WAIT, || async { p0(node.admin).await.0 == 0 }).await;

    let traffic = tokio::spawn(veer_testkit::run(spec(&node, "www.example.com", "/", 200, 4.5)));
    active[0].set_mode(Mode::Ok).await.expect("restore");
    // Every `/routes` reading until P0 is steady again: its load, and the endpoint's warm-up.
    let seen = std::sync::Mutex::new(Vec::new());
    wait_until_async("the active backend is steady again", WAIT, || async {
        let now = p0(node.admin).await;
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(now);
        now == (100, None)
    })
    .await;
    let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
    let ramp: Vec<(u64, f64)> = seen.iter().filter_map(|(load, warm)| warm.map(|w| (*load, w))).collect();
    let mut steps: Vec<u64> = ramp.iter().map(|(load, _)| *load).collect();
    steps.dedup();
    assert!(steps.len() >= 3, "P0 takes its load back in steps, not at once: {seen:?}");
    assert!(steps.windows(2).all(|s| s[0] < s[1]), "P0's load only grows: {seen:?}");
    assert!(steps.iter().all(|&l| (1..100).contains(&l)), "below full until the window ends: {seen:?}");
    assert!(ramp.windows(2).all(|r| r[0].1 <= r[1].1) && ramp.iter().all(|(_, w)| (10.0..100.0).contains(w)), "{ramp:?}");

    let r = traffic.await.expect("load");
    assert!(failures(&r).is_empty(), "{:?}", failures(&r));
    // Once the active backend had its first request back, the passive one kept a part of the
    // load while the active one warmed up (without slow start it would have had none).
    let from = |prefix: &'static str| r.samples.iter().filter(move |s| s.backend.as_deref().is_some_and(|b| b.starts_with(prefix)));
    let back_at = from("active-").map(|s| s.sent_at).min().expect("the active backend served again");
    let after = from("passive-").filter(|s| s.sent_at > back_at).count();
    assert!(after >= 20, "the passive backend served {after} requests after the active one came back: {:?}", r.by_backend());
}
