//! `veer run --kubeconfig` as a user runs it against a real API server (`veer_testkit::kube`):
//! `veer crds` applied, seed 004 applied, EndpointSlices written; the node routes by what the
//! server holds, writes the Gateway's status and posts the failover as an Event.

use std::io::BufReader;
use std::process::{Command, Stdio};

use veer_testkit::kube::{KubeApi, KubeUser};
use veer_testkit::wait_until;

use super::{root, veer, wait_for_addresses, StopOnDrop};

fn kubectl(api: &KubeApi, args: &[&str]) -> String {
    veer_testkit::kube::output(&mut api.kubectl(args)).unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
}

/// A v1beta1 EndpointSlice (the test server is 1.20) of `service` with one ready address, or none.
fn slice(service: &str, addr: Option<std::net::SocketAddr>) -> String {
    let endpoints: Vec<serde_json::Value> = addr.iter().map(|a| serde_json::json!({"addresses": [a.ip().to_string()]})).collect();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-x1"), "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": addr.map(|a| vec![serde_json::json!({"name": "http", "port": a.port()})]).unwrap_or_default(),
        "endpoints": endpoints,
    })
    .to_string()
}

#[test]
fn veer_run_with_a_kubeconfig_routes_by_the_api_server_and_reports_there() {
    let api = KubeApi::start().unwrap_or_else(|e| panic!("the API server did not start: {e}"));
    let (code, crds, err) = veer(&["crds"]);
    assert_eq!(code, 0, "{err}");
    api.apply_yaml(&crds).expect("veer crds applies");
    kubectl(&api, &["wait", "--for", "condition=established", "--timeout=60s", "crd", "--all"]);
    let seed = root().join("examples/004-envoy-gateway-fallback/seed.yaml");
    kubectl(&api, &["apply", "-f", seed.to_str().expect("a UTF-8 path")]);
    api.apply_yaml(r#"{"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "local"}, "spec": {"locality": {"region": "local"}}}"#)
        .expect("the Cluster applies");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let active = rt.block_on(veer_testkit::Backend::start("active-1", "127.0.0.51:0".parse().expect("addr"))).expect("backend");
    let passive = rt.block_on(veer_testkit::Backend::start("passive-1", "127.0.0.52:0".parse().expect("addr"))).expect("backend");
    api.apply_yaml(&slice("active", Some(active.addr()))).expect("slice");
    api.apply_yaml(&slice("passive", Some(passive.addr()))).expect("slice");

    let kubeconfig = api.kubeconfig(KubeUser::Admin);
    let child = Command::new(env!("CARGO_BIN_EXE_veer"))
        .args([
            "run",
            "--kubeconfig",
            kubeconfig.to_str().expect("a UTF-8 path"),
            "--cluster",
            "local",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn veer run");
    let mut child = StopOnDrop(child);
    let mut stderr = BufReader::new(child.0.stderr.take().expect("stderr"));
    let (gateway, _admin) = wait_for_addresses(&mut stderr);
    // The rest of its log is drained, so the node never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let spec = |secs: f64| veer_testkit::LoadSpec {
        target: gateway.parse().expect("gateway address"),
        host: "www.example.com".into(),
        path: "/test".into(),
        method: Default::default(),
        rate_per_sec: 100,
        duration: std::time::Duration::from_secs_f64(secs),
        connections: 4,
        timeout: std::time::Duration::from_secs(5),
        http2: false,
    };
    let before = rt.block_on(veer_testkit::run(spec(0.5)));
    assert_eq!(before.errors(), 0);
    assert!(before.by_backend().keys().all(|b| b == "active-1"), "{:?}", before.by_backend());

    // Scaled to zero: the traffic moves to the fallback.
    api.apply_yaml(&slice("active", None)).expect("slice");
    wait_until("the fallback serves", std::time::Duration::from_secs(30), || {
        let r = rt.block_on(veer_testkit::run(spec(0.2)));
        r.errors() == 0 && !r.samples.is_empty() && r.by_backend().keys().all(|b| b == "passive-1")
    });
    // What the node wrote back: the Gateway's status (it is the only replica, so it leads), and
    // the Event on the Service whose endpoints went.
    wait_until("the Gateway is Accepted", std::time::Duration::from_secs(30), || {
        kubectl(&api, &["get", "gateway.gateway.networking.k8s.io", "ha-failover-gateway", "-o", "jsonpath={.status.conditions[0].status}"])
            .trim()
            == "True"
    });
    wait_until("the failover is an Event", std::time::Duration::from_secs(30), || {
        kubectl(&api, &["get", "events", "--field-selector", "involvedObject.name=active,involvedObject.kind=Service", "-o", "name"])
            .lines()
            .count()
            >= 1
    });
    let lease = kubectl(&api, &["get", "lease", "veer-local", "-n", "default", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(!lease.trim().is_empty(), "the node holds the Lease");
}

#[test]
fn a_remote_kubeconfig_must_name_another_cluster_once_as_cluster_equals_path() {
    let run = |remote: &[&str]| {
        let mut args = vec!["run", "--kubeconfig", "own.kubeconfig", "--cluster", "cluster1", "--listen", "127.0.0.1:0"];
        for r in remote {
            args.extend(["--remote-kubeconfig", r]);
        }
        veer(&args)
    };
    let (code, _, err) = run(&["cluster2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"cluster2\" is not CLUSTER=KUBECONFIG"), "{err}");
    let (code, _, err) = run(&["cluster1=a.kubeconfig"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("cluster1 is this node's own cluster"), "{err}");
    let (code, _, err) = run(&["cluster2=a.kubeconfig", "cluster2=b.kubeconfig"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("names cluster cluster2 twice"), "{err}");
}
