//! veer-kube against a real API server (etcd and `kube-apiserver` 1.20, which
//! `scripts/kube-apiserver` builds and `veer_testkit::kube` starts): seeds' resources applied
//! with `kubectl`, EndpointSlices written as the seeds' Deployments would have them, and a veer
//! node routing real traffic by what the server holds.

#[path = "kube/rbac.rs"]
mod rbac;
#[path = "kube/refs.rs"]
mod refs;
#[path = "kube/seed000.rs"]
mod seed000;
#[path = "kube/seed001.rs"]
mod seed001;
#[path = "kube/seed002.rs"]
mod seed002;
#[path = "kube/seed003.rs"]
mod seed003;
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

/// The node's live table for `host` (`name:port` picks the port too), as `/routes` shows it.
async fn route_report(admin: SocketAddr, host: &str) -> serde_json::Value {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let resp = client.get(format!("http://{admin}/routes").parse().expect("uri")).await.expect("GET /routes");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let routes: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    routes
        .as_array()
        .and_then(|r| {
            r.iter().find(|d| match host.rsplit_once(':') {
                Some((name, port)) => d["host"] == name && port.parse().ok() == d["port"].as_u64(),
                None => d["host"] == host,
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no table for {host}: {routes}"))
}

/// What a table decides: per priority its load and each endpoint's address, weight, share,
/// labels and why it is there. Not where the endpoint was read from (the end of `why`), which
/// differs by design, nor the port: seed 004's Service targets port 3000, which its files'
/// endpoints serve on, where a slice carries the port each test backend really listens on.
fn table(report: &serde_json::Value) -> serde_json::Value {
    let priorities: Vec<serde_json::Value> = report["priorities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let endpoints: Vec<serde_json::Value> = p["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let ip = e["address"].as_str().and_then(|a| a.rsplit_once(':')).map(|(ip, _)| ip.to_string());
                    let why = e["why"].as_str().and_then(|w| w.rsplit_once("; ")).map(|(why, _)| why.to_string());
                    serde_json::json!([ip, e["weight"], e["share_percent"], e["labels"], why, e["healthy"]])
                })
                .collect();
            serde_json::json!({"load": p["load_percent"], "endpoints": endpoints})
        })
        .collect();
    serde_json::json!({"priorities": priorities, "panic": report["panic"]})
}

/// One API server per cluster, started side by side, each with `veer crds` applied.
fn api_servers<const N: usize>() -> [KubeApi; N] {
    let started: Vec<KubeApi> = std::thread::scope(|s| {
        let starting: Vec<_> = (0..N).map(|_| s.spawn(api_with_crds)).collect();
        starting.into_iter().map(|t| t.join().expect("an API server started")).collect()
    });
    started.try_into().unwrap_or_else(|_| unreachable!("N servers were started"))
}

/// A client of `api` as its admin.
async fn admin_client(api: &KubeApi) -> kube::Client {
    veer_kube::client(Some(&api.kubeconfig(veer_testkit::kube::KubeUser::Admin))).await.expect("client")
}

/// `kubectl apply -f` of files of the repository, as the seed applies them.
fn apply_files(api: &KubeApi, files: &[&str]) {
    for file in files {
        let path = repo().join(file);
        kubectl(api, &["apply", "-f", path.to_str().expect("a UTF-8 path")]);
    }
}

/// A Pod of a Deployment: its name, where its container listens, its template's labels.
struct PodAt<'a> {
    name: &'a str,
    addr: SocketAddr,
    labels: &'a [(&'a str, &'a str)],
}

/// A Deployment's Pods in `namespace` (one `kubectl apply`) and the EndpointSlice the controller
/// writes for `service` once they are ready (see [`scale`]).
fn deploy(api: &KubeApi, namespace: &str, service: &str, port_name: &str, pods: &[PodAt<'_>]) {
    let items: Vec<serde_json::Value> =
        pods.iter().map(|p| serde_json::from_str(&pod(namespace, p.name, p.labels)).expect("a Pod is JSON")).collect();
    apply(api, &format!("{service}-pods.json"), &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string());
    scale(api, namespace, service, port_name, pods);
}

/// The EndpointSlice the controller writes for `service` (the Service port named `port_name`)
/// listing the ready `pods`: `kubectl scale` as veer sees it; none is the Deployment at 0.
fn scale(api: &KubeApi, namespace: &str, service: &str, port_name: &str, pods: &[PodAt<'_>]) {
    let ready: Vec<(&str, SocketAddr)> = pods.iter().map(|p| (p.name, p.addr)).collect();
    apply(api, &format!("{service}-slice.json"), &slice(slice_version(api), namespace, service, port_name, &ready));
}

/// `veer explain`'s table for `host` (`name` or `name:port`; path `/`) from a client in `cluster` with `labels`, on the
/// manifest files and folders `paths` (of the repository).
fn files_table(paths: &[&str], host: &str, cluster: &str, labels: &[(&str, &str)]) -> serde_json::Value {
    let paths: Vec<PathBuf> = paths.iter().map(|p| repo().join(p)).collect();
    let sources = veer_model::files::read_paths(&paths).unwrap_or_else(|e| panic!("{e}"));
    let set = veer_model::from_sources(&sources).unwrap_or_else(|r| panic!("{r}")).into_set();
    let inventory = veer_model::inventory::Inventory::from_manifests(&set);
    let view = veer_model::resolve::View::new(&set, &inventory);
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port.parse().expect("a port"))),
        None => (host, None),
    };
    let dest = veer_model::resolve::resolve(view, name, port, cluster, "/").expect("the host resolves");
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let client = veer_model::resolve::client(&set, cluster, &labels).expect("the client");
    table(&serde_json::to_value(veer_model::explain::explain(&dest, &client)).expect("JSON"))
}

/// Waits until the node whose admin endpoint is `admin` serves for `host` the table `files`
/// (from [`files_table`]); `expected` names the step in the failure, with both tables.
async fn wait_for_table(admin: SocketAddr, host: &str, files: &serde_json::Value, expected: &str) {
    let served = std::cell::RefCell::new(serde_json::Value::Null);
    let what = veer_testkit::lazy(|| format!("{expected}: the node serves\n{:#}\nwhere the files give\n{files:#}", served.borrow()));
    veer_testkit::wait_until_async(what, WAIT, || async {
        let now = table(&route_report(admin, host).await);
        let same = now == *files;
        *served.borrow_mut() = now;
        same
    })
    .await;
}

/// The steady client a failover test watches: 100 requests a second for 20 s to `target`, for
/// `host` and `path`, over 8 keep-alive connections.
fn steady_load(target: SocketAddr, host: &str, path: &str) -> veer_testkit::LoadSpec {
    veer_testkit::LoadSpec {
        target,
        host: host.into(),
        path: path.into(),
        method: http::Method::GET,
        rate_per_sec: 100,
        duration: Duration::from_secs(20),
        connections: 8,
        timeout: Duration::from_secs(5),
        http2: false,
    }
}

/// Requests that did not get a 200, described.
fn failures(report: &veer_testkit::LoadReport) -> Vec<String> {
    report.samples.iter().filter(|s| s.status != Some(200)).map(|s| format!("{:?} {:?} {:?}", s.sent_at, s.status, s.error)).collect()
}

/// The runtime a test's node and sources run on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// An HTTPRoute on seed 004's Gateway to a Service that does not exist: an error located in it.
const BROKEN_ROUTE: &str = r#"{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "broken", "namespace": "default"},
    "spec": {"parentRefs": [{"name": "ha-failover-gateway"}], "rules": [{"backendRefs": [{"name": "no-such-service", "port": 80}]}]}}"#;
