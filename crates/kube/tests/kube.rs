//! veer-kube against a real API server (etcd and `kube-apiserver` 1.20, which
//! `scripts/kube-apiserver` builds and `veer_testkit::kube` starts): seeds' resources applied
//! with `kubectl`, EndpointSlices written as the seeds' Deployments would have them, and a veer
//! node routing real traffic by what the server holds.

#[path = "kube/rbac.rs"]
mod rbac;
#[path = "kube/seed002.rs"]
mod seed002;
#[path = "kube/seed004.rs"]
mod seed004;
#[path = "kube/status.rs"]
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use veer_testkit::kube::KubeApi;

/// How long a test waits for what should follow a write to the server.
const WAIT: Duration = Duration::from_secs(30);

/// The repository's root (for the seeds' example files).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kubectl` as the admin, which must succeed; what it printed.
fn kubectl(api: &KubeApi, args: &[&str]) -> String {
    veer_testkit::kube::output(&mut api.kubectl(args)).unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
}

/// A server with `veer crds` applied and established.
fn api_with_crds() -> KubeApi {
    let api = KubeApi::start().unwrap_or_else(|e| panic!("the API server did not start: {e}"));
    let crds = api.dir().join("crds.json");
    std::fs::write(&crds, serde_json::to_string_pretty(&veer_kube::crds::all()).expect("JSON")).expect("write the CRDs");
    kubectl(&api, &["apply", "-f", crds.to_str().expect("a UTF-8 path")]);
    kubectl(&api, &["wait", "--for", "condition=established", "--timeout=60s", "crd", "--all"]);
    // What the service account controller (not running here) makes in every namespace: Pods
    // are refused without it.
    kubectl(&api, &["create", "serviceaccount", "default", "--namespace", "default"]);
    api
}

/// The EndpointSlice version the server serves (v1 from Kubernetes 1.21, v1beta1 before).
fn slice_version(api: &KubeApi) -> &'static str {
    let versions = kubectl(api, &["api-versions"]);
    if versions.lines().any(|l| l.trim() == "discovery.k8s.io/v1") {
        "discovery.k8s.io/v1"
    } else {
        "discovery.k8s.io/v1beta1"
    }
}

/// An EndpointSlice of `service` as the controller writes it for ready Pods (name, address;
/// each serving the Service port named `port_name` on its own port); none: scaled to zero.
fn slice(version: &str, namespace: &str, service: &str, port_name: &str, pods: &[(&str, SocketAddr)]) -> String {
    let port = pods.first().map_or(0, |(_, a)| a.port());
    let endpoints: Vec<serde_json::Value> = pods
        .iter()
        .map(|(pod, a)| {
            serde_json::json!({
                "addresses": [a.ip().to_string()],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
            })
        })
        .collect();
    let mut object = serde_json::json!({
        "apiVersion": version,
        "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-x1"), "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    });
    if port != 0 {
        object["ports"] = serde_json::json!([{"name": port_name, "port": port, "protocol": "TCP"}]);
    }
    object.to_string()
}

/// A Pod as a Deployment's ReplicaSet creates it: its template's labels. No kubelet runs it
/// (the backend stands in for its container), and no token controller runs to mount a token.
fn pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> String {
    let labels: serde_json::Map<String, serde_json::Value> = labels.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "app", "image": "veer.invalid/app"}]},
    })
    .to_string()
}

/// Applies `json` (one object) through a file, as a user would.
fn apply(api: &KubeApi, name: &str, json: &str) {
    let path = api.dir().join(name);
    std::fs::write(&path, json).expect("write the object");
    kubectl(api, &["apply", "-f", path.to_str().expect("a UTF-8 path")]);
}

/// Seed 004's YAML as it stands, and the veer Cluster `local` it runs in.
fn apply_seed004(api: &KubeApi) {
    let seed = repo().join("examples/004-envoy-gateway-fallback/seed.yaml");
    kubectl(api, &["apply", "-f", seed.to_str().expect("a UTF-8 path")]);
    let cluster = r#"{"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "local"}, "spec": {"locality": {"region": "local"}}}"#;
    apply(api, "cluster.json", cluster);
}

/// The runtime a test's node and sources run on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// An HTTPRoute on seed 004's Gateway to a Service that does not exist: an error located in it.
const BROKEN_ROUTE: &str = r#"{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "broken", "namespace": "default"},
    "spec": {"parentRefs": [{"name": "ha-failover-gateway"}], "rules": [{"backendRefs": [{"name": "no-such-service", "port": 80}]}]}}"#;
