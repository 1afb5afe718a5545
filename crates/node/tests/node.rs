//! End-to-end tests of a running veer node: real backend servers on loopback, real sockets,
//! real manifests on disk, real failures (refused connects, 503s, blackholes, reloads).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use veer_control::events::EventKind;
use veer_node::node::{Node, NodeConfig};
use veer_testkit::{wait_until_async, Backend, Backends, LoadReport, LoadSpec, Mode, World};

#[path = "node/upstream_http1.rs"]
mod upstream_http1;
#[path = "node/watcher.rs"]
mod watcher;

#[path = "node/edge.rs"]
mod edge;

#[path = "node/limits.rs"]
mod limits;

#[path = "node/listeners.rs"]
mod listeners;

#[path = "node/tls.rs"]
mod tls;
#[path = "node/upstream_tls.rs"]
mod upstream_tls;
// TLS passthrough by SNI (TLSRoute on a TLS Passthrough listener): failover with zero failed
// connections, refusals counted.
#[path = "node/passthrough.rs"]
mod passthrough;

#[path = "node/grpc_health.rs"]
mod grpc_health;

#[path = "node/slow_start.rs"]
mod slow_start;

#[path = "node/upgrade.rs"]
mod upgrade;

#[path = "node/access_log.rs"]
mod access_log;

/// Held by the tests that load the machine most (hundreds of connections, floods), so that two
/// of them never share its two cores: each measures a proxy with a CPU to spare, as it would
/// run alone.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a test waits for what the node should do at once (a reload, a count, a peer).
const WAIT: Duration = Duration::from_secs(5);

/// Starts veer nodes in a test [`World`]: testkit's world knows no node (veer-node is one of
/// testkit's users, not the other way round).
trait NodeWorld {
    async fn node(&self, cluster: &str) -> Node;
    /// A node on loopback ports, with `tune` applied to its configuration.
    async fn node_with(&self, cluster: &str, tune: impl FnOnce(&mut NodeConfig)) -> Node;
}

impl NodeWorld for World {
    async fn node(&self, cluster: &str) -> Node {
        self.node_with(cluster, |_| {}).await
    }

    async fn node_with(&self, cluster: &str, tune: impl FnOnce(&mut NodeConfig)) -> Node {
        let mut cfg = NodeConfig::new(vec![self.dir().to_path_buf()], cluster);
        cfg.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.reload_every = Duration::from_millis(100);
        tune(&mut cfg);
        Node::start(cfg).await.expect("node starts")
    }
}

fn cluster(name: &str, region: &str, zone: &str, subzone: &str) -> String {
    format!("apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  locality:\n    region: {region}\n    zone: {zone}\n    subzone: {subzone}\n---\n")
}

/// A Service named `name` in `cluster` with labels, and one WorkloadEntry per backend.
fn service(cluster: &str, ns: &str, name: &str, labels: &[(&str, &str)], backends: &[Backend]) -> String {
    let mut labels_yaml = String::new();
    for (k, v) in labels {
        labels_yaml.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    topology.istio.io/cluster: {cluster}\n{labels_yaml}spec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n---\n"
    );
    // The entries' `app` is the Service's selector; any other label is theirs too (a second
    // `app` key would be a duplicate, which the reader refuses).
    let entry_labels: String = labels.iter().filter(|(k, _)| *k != "app").map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    for b in backends {
        out.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {}\n  namespace: {ns}\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n  address: {}\n  ports:\n    http: {}\n  labels:\n    app: {name}\n{}---\n",
            b.name(),
            b.addr().ip(),
            b.addr().port(),
            entry_labels
        ));
    }
    out
}

async fn load(node: &Node, host: &str, path: &str, rate: u32, secs: f64) -> LoadReport {
    veer_testkit::run(spec(node, host, path, rate, secs)).await
}

fn spec(node: &Node, host: &str, path: &str, rate: u32, secs: f64) -> LoadSpec {
    LoadSpec {
        target: node.listen,
        host: host.to_string(),
        path: path.to_string(),
        method: http::Method::GET,
        rate_per_sec: rate,
        duration: Duration::from_secs_f64(secs),
        connections: 16,
        timeout: Duration::from_secs(5),
        http2: false,
    }
}

fn share(report: &LoadReport, prefix: &str) -> f64 {
    let total = report.samples.len().max(1) as f64;
    report.samples.iter().filter(|s| s.backend.as_deref().is_some_and(|b| b.starts_with(prefix))).count() as f64 / total
}

fn count(node: &Node, kind: EventKind) -> usize {
    node.events.all().iter().filter(|e| e.kind == kind).count()
}

fn failures(report: &LoadReport) -> Vec<String> {
    report
        .samples
        .iter()
        .filter(|s| s.status.is_none_or(|c| c >= 500))
        .map(|s| format!("{:?} {:?} {:?} {:?}", s.sent_at, s.status, s.backend, s.error))
        .collect()
}

const VD: &str = "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata:\n  name: vd\n  namespace: infra\nspec:\n  hosts:\n  - go.infra.global\n  ports:\n  - number: 80\n    protocol: HTTP\n    targetPort:\n      name: http\n  services:\n  - labels:\n      app: server\n    namespace: infra\n---\n";

fn failover_policy(labels: &[&str]) -> String {
    let mut out = String::from("apiVersion: resilience.policy.gloo.solo.io/v2\nkind: FailoverPolicy\nmetadata:\n  name: fp\n  namespace: infra\nspec:\n  applyToDestinations:\n  - kind: VIRTUAL_DESTINATION\n    selector:\n      name: vd\n  config:\n    priorityLabels:\n      labels:\n");
    for l in labels {
        out.push_str(&format!("      - {l}\n"));
    }
    out
}

const ODP: &str = "apiVersion: resilience.policy.gloo.solo.io/v2\nkind: OutlierDetectionPolicy\nmetadata:\n  name: od\n  namespace: infra\nspec:\n  config:\n    consecutiveErrors: 1\n    interval: 200ms\n    baseEjectionTime: 1s\n    maxEjectionPercent: 100\n";

/// Seed 000's shape: central (subzone central) and test (subzone avg), one VirtualDestination
/// over both, priority by subzone.
async fn seed000_world(w: &World, central_n: u8, test_n: u8) -> (Backends, Backends) {
    let central = w.backends("central", 1, central_n).await;
    let test = w.backends("test", 2, test_n).await;
    let mut topo = cluster("central", "pp", "rs", "central");
    topo.push_str(&cluster("test", "pp", "rs", "avg"));
    topo.push_str(&service("central", "infra", "server", &[("app", "server")], &central));
    topo.push_str(&service("test", "infra", "server", &[("app", "server")], &test));
    w.write("topology.yaml", &topo);
    w.write("vd.yaml", VD);
    w.write("fp.yaml", &failover_policy(&["topology.istio.io/subzone"]));
    w.write("odp.yaml", ODP);
    (central, test)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_first_with_seed000_labels_and_replicas_share_by_count() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 3, 9).await;
    let node = w.node("central").await;
    let r = load(&node, "go.infra.global", "/", 400, 1.5).await;
    assert!(failures(&r).is_empty(), "{:?}", failures(&r));
    assert_eq!(share(&r, "central-"), 1.0, "{:?}", r.by_backend());

    // Without a FailoverPolicy all twelve share priority 0: 3 and 9 replicas get 1/4 and 3/4.
    let reloads = count(&node, EventKind::ConfigReloaded);
    w.remove("fp.yaml");
    wait_until_async("the policy's removal is in force", WAIT, || async { count(&node, EventKind::ConfigReloaded) > reloads }).await;
    let r = load(&node, "go.infra.global", "/", 1000, 2.4).await;
    assert!(failures(&r).is_empty(), "{:?}", failures(&r));
    let central = share(&r, "central-");
    assert!((central - 0.25).abs() < 0.04, "central share {central}, {:?}", r.by_backend());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_central_backends_stopped_fails_over_with_zero_errors_and_returns() {
    let w = World::new();
    let (central, _test) = seed000_world(&w, 3, 2).await;
    let node = w.node("central").await;
    let traffic = tokio::spawn(veer_testkit::run(spec(&node, "go.infra.global", "/", 300, 6.0)));
    // A timeline, not waits: the windows checked below are measured from the load's start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for b in &central {
        b.set_mode(Mode::Refuse).await.expect("refuse");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for b in &central {
        b.set_mode(Mode::Ok).await.expect("restore");
    }
    let r = traffic.await.expect("load task");
    assert!(failures(&r).is_empty(), "client-visible errors: {:?}", failures(&r));
    let during = r.by_backend_between(Duration::from_millis(1700), Duration::from_millis(2900));
    assert!(!during.is_empty() && during.keys().all(|b| b.starts_with("test-")), "during the outage: {during:?}");
    let after = r.by_backend_between(Duration::from_millis(5000), Duration::from_millis(6000));
    assert!(!after.is_empty() && after.keys().all(|b| b.starts_with("central-")), "after recovery: {after:?}");
    let changes: Vec<(Option<u32>, Option<u32>)> =
        node.events.all().iter().filter(|e| e.kind == EventKind::PriorityChange).map(|e| (e.from_priority, e.to_priority)).collect();
    assert!(changes.contains(&(Some(0), Some(1))) && changes.contains(&(Some(1), Some(0))), "{changes:?}");
}

/// Seed 004's shape with real backends: an active and a fallback Backend behind one HTTPRoute.
async fn seed004_world(w: &World, btp_extra: &str) -> (Backends, Backends) {
    let active = w.backends("active", 1, 1).await;
    let passive = w.backends("passive", 2, 1).await;
    let mut m = cluster("local", "r", "z", "");
    m.push_str(&service("local", "default", "active", &[], &active));
    m.push_str(&service("local", "default", "passive", &[], &passive));
    m.push_str(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata:\n  name: passive\nspec:\n  fallback: true\n  endpoints:\n  - fqdn:\n      hostname: passive.default.svc.cluster.local\n      port: 80\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata:\n  name: active\nspec:\n  endpoints:\n  - fqdn:\n      hostname: active.default.svc.cluster.local\n      port: 80\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  gatewayClassName: veer\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: ha-failover\n  namespace: default\nspec:\n  hostnames:\n  - www.example.com\n  parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - group: gateway.envoyproxy.io\n      kind: Backend\n      name: active\n      port: 80\n    - group: gateway.envoyproxy.io\n      kind: Backend\n      name: passive\n      port: 80\n    matches:\n    - path:\n        type: PathPrefix\n        value: /test\n---\n",
    );
    m.push_str(&format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata:\n  name: passive-health-check\nspec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    name: ha-failover\n  healthCheck:\n    passive:\n      baseEjectionTime: 10s\n      interval: 2s\n      maxEjectionPercent: 100\n      consecutive5XxErrors: 1\n      consecutiveGatewayErrors: 0\n      consecutiveLocalOriginFailures: 1\n      splitExternalLocalOriginErrors: false\n{btp_extra}"
    ));
    w.write("world.yaml", &m);
    (active, passive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_active_backend_moved_away_goes_to_passive_without_errors() {
    let w = World::new();
    let (active, _passive) = seed004_world(&w, "").await;
    let node = w.node("local").await;
    let r = load(&node, "www.example.com", "/test", 200, 0.5).await;
    assert_eq!(share(&r, "active-"), 1.0, "{:?}", r.by_backend());
    // The seed moves the active server to another port: connects to the old one are refused.
    active[0].set_mode(Mode::Refuse).await.expect("refuse");
    let r = load(&node, "www.example.com", "/test", 200, 1.0).await;
    assert!(failures(&r).is_empty(), "{:?}", failures(&r));
    assert_eq!(share(&r, "passive-"), 1.0, "{:?}", r.by_backend());
    assert_eq!(count(&node, EventKind::Ejection), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_503_ejects_after_consecutive_errors_within_max_ejection_percent() {
    let w = World::new();
    let bs = w.backends("b", 1, 4).await;
    let mut m = cluster("one", "r", "z", "");
    m.push_str(&service("one", "shop", "cart", &[], &bs));
    m.push_str("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: cart\nspec:\n  host: cart.shop.svc.cluster.local\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 3\n      interval: 1s\n      baseEjectionTime: 30s\n      maxEjectionPercent: 25\n");
    w.write("world.yaml", &m);
    let node = w.node("one").await;
    bs[0].set_mode(Mode::Status(503)).await.expect("503");
    bs[1].set_mode(Mode::Status(503)).await.expect("503");
    let r = load(&node, "cart.shop.svc.cluster.local", "/", 200, 1.5).await;
    // One of four is 25%: exactly one ejection; the second is refused by the cap.
    assert_eq!(count(&node, EventKind::Ejection), 1, "{:?}", node.events.all());
    assert!(count(&node, EventKind::EjectionRefused) >= 1, "{:?}", node.events.all());
    let ejected = node.events.all().into_iter().find(|e| e.kind == EventKind::Ejection).and_then(|e| e.endpoint).unwrap_or_default();
    let (gone, kept) = if ejected == bs[0].addr().to_string() { (&bs[0], &bs[1]) } else { (&bs[1], &bs[0]) };
    assert_eq!(ejected, gone.addr().to_string());
    // The ejected backend saw only the failures that ejected it (and requests already in flight);
    // the one the cap kept keeps getting its share.
    assert!(gone.served() < 10, "ejected backend served {}", gone.served());
    assert!(kept.served() > 50, "kept backend served {}", kept.served());
    // Client-visible failures, if any, come only from the backend the cap kept in rotation
    // (retries to it are bounded by the retry budget).
    assert!(r.samples.iter().filter(|s| s.status == Some(503)).all(|s| s.backend.as_deref() == Some(kept.name())), "{:?}", failures(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_the_ejection_is_re_ejected_without_client_errors() {
    let w = World::new();
    let (central, _test) = seed000_world(&w, 1, 1).await;
    let node = w.node("central").await;
    let traffic = tokio::spawn(veer_testkit::run(spec(&node, "go.infra.global", "/", 300, 5.0)));
    wait_until_async("central serves the load", WAIT, || async { central[0].served() >= 100 }).await;
    central[0].set_mode(Mode::Refuse).await.expect("refuse");
    // Ejections last 1 s: the backend stays dead until it has been ejected again.
    wait_until_async("the dead backend is ejected again", WAIT, || async { count(&node, EventKind::ReEjection) >= 1 }).await;
    central[0].set_mode(Mode::Ok).await.expect("restore");
    let r = traffic.await.expect("load");
    assert!(failures(&r).is_empty(), "{:?}", failures(&r));
    assert!(count(&node, EventKind::ReEjection) >= 1, "{:?}", node.events.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_backend_is_left_by_the_per_try_timeout() {
    let w = World::new();
    let retry = "  retry:\n    numRetries: 2\n    perRetry:\n      timeout: 300ms\n";
    let (active, _passive) = seed004_world(&w, retry).await;
    let node = w.node("local").await;
    active[0].set_mode(Mode::Blackhole).await.expect("blackhole");
    let r = load(&node, "www.example.com", "/test", 50, 1.0).await;
    assert!(failures(&r).is_empty(), "{:?} {:?}", failures(&r), node.events.all());
    assert_eq!(share(&r, "passive-"), 1.0, "{:?}", r.by_backend());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_changes_apply_live_and_broken_ones_are_refused() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 2, 2).await;
    let node = w.node("central").await;
    let traffic = tokio::spawn(veer_testkit::run(spec(&node, "go.infra.global", "/", 300, 4.0)));
    // A timeline: the windows checked below are measured from the load's start.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Inverted: prefer the AVG data centre.
    w.write("fp.yaml", &failover_policy(&["topology.istio.io/subzone=avg"]));
    let r = traffic.await.expect("load");
    assert!(failures(&r).is_empty(), "{:?}", failures(&r));
    let before = r.by_backend_between(Duration::ZERO, Duration::from_millis(900));
    let after = r.by_backend_between(Duration::from_millis(2000), Duration::from_millis(4000));
    assert!(before.keys().all(|b| b.starts_with("central-")), "{before:?}");
    assert!(!after.is_empty() && after.keys().all(|b| b.starts_with("test-")), "{after:?}");
    assert!(count(&node, EventKind::ConfigReloaded) >= 1);

    // A broken manifest: refused with its location, the last good config keeps serving.
    w.write("fp.yaml", "apiVersion: resilience.policy.gloo.solo.io/v2\nkind: FailoverPolicy\nmetadata:\n  name: fp\n  namespace: infra\nspec:\n  config:\n    priorityLabelz: {}\n");
    wait_until_async("the broken manifest is refused", WAIT, || async { count(&node, EventKind::ConfigRejected) >= 1 }).await;
    let rejected = node.events.all().into_iter().find(|e| e.kind == EventKind::ConfigRejected).map(|e| e.reason).unwrap_or_default();
    assert!(rejected.contains("fp.yaml:8:5") && rejected.contains("did you mean \"priorityLabels\""), "{rejected}");
    let r = load(&node, "go.infra.global", "/", 200, 1.0).await;
    assert!(failures(&r).is_empty(), "{:?}", failures(&r));
    assert_eq!(share(&r, "test-"), 1.0, "{:?}", r.by_backend());
}

async fn send(node: &Node, method: http::Method, host: &str, body: &'static str) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}/", node.listen))
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_reached_a_failing_backend_is_not_retried() {
    let w = World::new();
    let (central, test) = seed000_world(&w, 1, 1).await;
    let node = w.node("central").await;
    central[0].set_mode(Mode::Status(503)).await.expect("503");
    let (status, _) = send(&node, http::Method::POST, "go.infra.global", "order=1").await;
    assert_eq!(status, 503);
    assert_eq!(central[0].received_by_method("POST"), 1);
    assert_eq!(test[0].received_by_method("POST"), 0, "the POST must not be replayed elsewhere");
    // The same failure on a GET is retried on the other priority.
    let (status, body) = send(&node, http::Method::GET, "go.infra.global", "").await;
    assert_eq!((status, body.trim()), (200, "test-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_grpc_pass_with_trailers() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let node = w.node("central").await;
    // The name travels as :authority, as RFC 9113 §8.3.1 has HTTP/2 clients send it (a Host
    // field that differs from :authority is refused), over one connection to the node.
    let tcp = tokio::net::TcpStream::connect(node.listen).await.expect("connect");
    let (mut client, conn) =
        hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get("http://go.infra.global/").body(Full::new(Bytes::new())).expect("request");
    let resp = client.send_request(req).await.expect("h2 response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);

    let mut grpc = http::Request::post("http://go.infra.global/echo.Echo/Say")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .expect("request");
    grpc.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    grpc.headers_mut().insert("te", http::HeaderValue::from_static("trailers"));
    let resp = client.send_request(grpc).await.expect("grpc response");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("grpc body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").and_then(|v| v.to_str().ok()), Some("0"), "{trailers:?}");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_blackholed_under_load_costs_latency_but_no_errors() {
    let _alone = HEAVY.lock().await;
    let w = World::new();
    let retry = "  retry:\n    numRetries: 2\n    perRetry:\n      timeout: 500ms\n";
    let (active, _passive) = seed004_world(&w, retry).await;
    let node = w.node("local").await;
    // Enough connections that the ~500 requests sent while the first try times out are all in
    // flight: more than the retry budget could ever pay for.
    let traffic = tokio::spawn(veer_testkit::run(LoadSpec { connections: 700, ..spec(&node, "www.example.com", "/test", 1000, 3.0) }));
    // A timeline: the window checked below is measured from the load's start.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Every request in flight or sent in the next 500 ms is stuck; each must fail over once its
    // try times out, however many there are (failover retries are not charged to the budget).
    active[0].set_mode(Mode::Blackhole).await.expect("blackhole");
    let r = traffic.await.expect("load");
    assert!(failures(&r).is_empty(), "{} failures: {:?}", failures(&r).len(), failures(&r).iter().take(5).collect::<Vec<_>>());
    let late = r.by_backend_between(Duration::from_millis(1500), Duration::from_millis(3000));
    assert!(!late.is_empty() && late.keys().all(|b| b.starts_with("passive-")), "{late:?}");
}

// === mesh: two meshed nodes on loopback ===

/// Two clusters on separate networks, each with its own veer node meshed over east-west mTLS;
/// `pay` runs only in c2 (two backends), so c1's clients reach it only through c2's gateway.
async fn mesh_world(w: &World) -> (Backends, PathBuf) {
    let pay = w.backends("pay", 2, 2).await;
    let certs = w.dir().join("certs");
    veer_pki::create_mesh(&certs, &["c1", "c2"]).expect("pki");
    let mut topo = String::new();
    for (i, c) in ["c1", "c2"].iter().enumerate() {
        topo.push_str(&format!(
            "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {c}}}\nspec:\n  network: n{i}\n  locality: {{region: r{i}}}\n  eastWest: {{address: \"{}:15443\"}}\n---\n",
            w.ip(9, i as u8 + 1)
        ));
    }
    topo.push_str(&service("c2", "demo", "pay", &[], &pay));
    topo.push_str("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: pay, namespace: demo}\nspec:\n  host: pay.demo.svc.cluster.local\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n---\n");
    topo.push_str("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: eastwest, namespace: istio-system, labels: {topology.istio.io/cluster: c2}}\nspec:\n  servers:\n  - port: {number: 15443, name: tls, protocol: TLS}\n    tls: {mode: AUTO_PASSTHROUGH}\n    hosts: [\"*.demo.svc.cluster.local\"]\n");
    w.write("topology.yaml", &topo);
    (pay, certs)
}

async fn meshed_node(w: &World, cluster: &str, certs: &std::path::Path) -> Node {
    let mut cfg = NodeConfig::new(vec![w.dir().join("topology.yaml")], cluster);
    cfg.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.reload_every = Duration::from_millis(100);
    let aging = veer_control::mesh::peers::Aging {
        stale_after: Duration::from_millis(500),
        unhealthy_after: Duration::from_secs(1),
        ..Default::default()
    };
    cfg.mesh = Some(veer_node::node::MeshConfig { certs: certs.join(cluster), aging, east_west: None });
    Node::start(cfg).await.expect("meshed node starts")
}

fn pay_endpoints(node: &Node) -> Vec<(String, bool)> {
    let snap = node.snapshot();
    let d = snap.destinations.iter().find(|d| d.key.starts_with("pay.demo.svc.cluster.local:80")).expect("pay destination");
    d.upstreams.iter().zip(&d.endpoints).map(|(u, e)| (u.key.to_string(), e.health != veer_core::topology::Health::Unhealthy)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshed_node_routes_only_what_peers_announce_and_blames_one_backend_not_its_gateway() {
    let w = World::new();
    let (pay, certs) = mesh_world(&w).await;
    // c1 alone: c2 has never spoken, so c1 routes to none of c2's endpoints (no stale routes),
    // although its manifests list them.
    let c1 = meshed_node(&w, "c1", &certs).await;
    assert!(pay_endpoints(&c1).is_empty(), "{:?}", pay_endpoints(&c1));
    let (status, _) = send(&c1, http::Method::GET, "pay.demo.svc.cluster.local", "").await;
    assert_eq!(status, 503, "nothing vouched for: no healthy upstream");
    // c2 comes up: its catalog arrives and both endpoints join c1's table.
    let c2 = meshed_node(&w, "c2", &certs).await;
    wait_until_async("c1 learns c2's endpoints", WAIT, || async { pay_endpoints(&c1).len() == 2 }).await;
    let before = load(&c1, "pay.demo.svc.cluster.local", "/", 100, 0.5).await;
    assert_eq!(before.errors(), 0, "{:?}", failures(&before));
    assert!(share(&before, "pay-1") > 0.2 && share(&before, "pay-2") > 0.2, "both c2 backends serve c1: {:?}", before.by_backend());

    // One backend behind c2's healthy gateway refuses: c1 ejects that endpoint only; c2 stays a
    // healthy peer and its other backend takes the traffic, with zero client errors.
    pay[0].set_mode(Mode::Refuse).await.expect("refuse");
    let after = load(&c1, "pay.demo.svc.cluster.local", "/", 200, 1.0).await;
    assert_eq!(after.errors(), 0, "{:?}", failures(&after));
    let late = after.by_backend_between(Duration::from_millis(200), Duration::from_secs(2));
    assert_eq!(late.keys().cloned().collect::<Vec<_>>(), vec!["pay-2".to_string()], "{late:?}");
    let ejected: Vec<String> =
        c1.events.all().iter().filter(|e| e.kind == EventKind::Ejection).filter_map(|e| e.endpoint.clone()).collect();
    assert_eq!(ejected, vec![pay[0].addr().to_string()], "only the refusing backend is ejected");
    assert_eq!(count(&c1, EventKind::PeerUnhealthy), 0, "c2's gateway is not blamed");
    let health = pay_endpoints(&c1);
    assert_eq!(health.iter().filter(|(_, up)| *up).count(), 1, "{health:?}");

    // c2's node stops: its gateway is gone, so all of c2's endpoints go unhealthy at once.
    c2.stop().await;
    wait_until_async("c2 unhealthy as a whole", WAIT, || async { pay_endpoints(&c1).iter().all(|(_, up)| !up) }).await;
    assert!(count(&c1, EventKind::PeerUnhealthy) >= 1);
}

// === idle connections ===

/// Reads one HTTP/1.1 response (head and Content-Length body) from `s`: (status, head).
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (status, head);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.expect("response in time").expect("read");
        assert!(n > 0, "connection closed before a full response; got {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn counter(node: &Node, name: &str) -> u64 {
    node.metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_park_and_serve_again() {
    use tokio::io::AsyncWriteExt;
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let node = w.node("central").await;
    let get = b"GET /a HTTP/1.1\r\nHost: go.infra.global\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(node.listen).await.expect("connect");
    let mut buf = Vec::new();
    s.write_all(get).await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    // Busy connections are not parked; idle ones are, after a quarter of a second.
    assert_eq!(counter(&node, "veer_connections_parked_total"), 0);
    wait_until_async("the idle connection is parked", WAIT, || async { counter(&node, "veer_connections_parked_total") >= 1 }).await;
    assert_eq!(counter(&node, "veer_connections_parked_total"), 1, "the idle connection was parked");
    // The same connection serves again, pipelined requests included, in order.
    s.write_all(get).await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    assert_eq!(counter(&node, "veer_connections_unparked_total"), 1);
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: go.infra.global\r\n\r\nGET /2 HTTP/1.1\r\nHost: go.infra.global\r\n\r\nGET /3 HTTP/1.1\r\nHost: go.infra.global\r\n\r\n").await.expect("write");
    for _ in 0..3 {
        assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    }
    wait_until_async("parked after the pipelined requests", WAIT, || async { counter(&node, "veer_connections_parked_total") >= 2 }).await;
    assert_eq!(counter(&node, "veer_connections_parked_total"), 2);
    // After a request with a body the connection is not parked (the bytes read last do not
    // show where a message with a body ended) until a request without one; it keeps serving.
    s.write_all(b"POST /p HTTP/1.1\r\nHost: go.infra.global\r\nContent-Length: 4\r\n\r\nbody").await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    // Nothing to wait for: longer than the parking delay, and nothing happens.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(counter(&node, "veer_connections_parked_total"), 2, "not parked after the POST");
    s.write_all(get).await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    wait_until_async("parked again after a GET", WAIT, || async { counter(&node, "veer_connections_parked_total") >= 3 }).await;
    assert_eq!(counter(&node, "veer_connections_parked_total"), 3, "parked again after a GET");
    // A request split across writes with a pause longer than the parking delay is not cut.
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: go.in").await.expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"fra.global\r\n\r\n").await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    use tokio::io::AsyncWriteExt;
    let w = World::new();
    let (central, test) = seed000_world(&w, 1, 1).await;
    // The answer takes a while, so the client's end of input arrives while it is being made.
    for b in central.iter().chain(&test) {
        b.set_mode(Mode::Delay(Duration::from_millis(300))).await.expect("mode");
    }
    let node = w.node("central").await;
    let mut s = tokio::net::TcpStream::connect(node.listen).await.expect("connect");
    s.write_all(b"GET /a HTTP/1.1\r\nHost: go.infra.global\r\n\r\n").await.expect("write");
    // Done sending (as `nc -N` and some RPC clients say it): the request still stands.
    s.shutdown().await.expect("half-close");
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200, "the half-closed client lost its answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dropped_without_stop_ends_its_threads_and_tasks() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let node = w.node_with("central", |cfg| cfg.workers = 2).await;
    assert_eq!(send(&node, http::Method::GET, "go.infra.global", "").await.0, 200);
    // Every worker, the control loop and the admin task hold the metrics: when the last of
    // them has ended, nothing does.
    let metrics = std::sync::Arc::downgrade(&node.metrics);
    drop(node);
    wait_until_async("every holder of the dropped node's state to end", WAIT, || async { metrics.strong_count() == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let node = w.node_with("central", |cfg| cfg.limits.idle_timeout = Duration::from_millis(700)).await;
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut rest = Vec::new();
        // Closed means end-of-stream (or a reset), not a response.
        let r =
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await.expect("the connection is closed, not held open");
        assert!(
            r.is_err() || !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"),
            "no response to an unfinished head: {:?}",
            String::from_utf8_lossy(&rest)
        );
    };
    // A slow-loris: part of a head, then nothing.
    let mut s = tokio::net::TcpStream::connect(node.listen).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: go.infra.global\r\nX-Slow: ").await.expect("write");
    closed(s).await;
    // A head split by a pause shorter than the timeout is served.
    let mut s = tokio::net::TcpStream::connect(node.listen).await.expect("connect");
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: go.in").await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"fra.global\r\n\r\n").await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    // After a request with a body, a silent connection is closed once the timeout has passed.
    s.write_all(b"POST /p HTTP/1.1\r\nHost: go.infra.global\r\nContent-Length: 4\r\n\r\nbody").await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    closed(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_cap_get_503_at_once_and_slots_come_back() {
    let w = World::new();
    let (central, _test) = seed000_world(&w, 1, 1).await;
    central[0].set_mode(Mode::Delay(Duration::from_millis(800))).await.expect("slow backend");
    let node = w.node_with("central", |cfg| cfg.limits.max_concurrent_requests = 1).await;
    let over_the_cap = async {
        wait_until_async("the first request holds the slot", WAIT, || async { central[0].received_by_method("GET") >= 1 }).await;
        send(&node, http::Method::GET, "go.infra.global", "").await
    };
    let (slow, (status, body)) = tokio::join!(send(&node, http::Method::GET, "go.infra.global", ""), over_the_cap);
    assert_eq!(status, 503, "the cap is one request: {body}");
    assert!(body.contains("too many requests in flight"), "{body}");
    assert_eq!(slow.0, 200, "the admitted request is served");
    central[0].set_mode(Mode::Ok).await.expect("backend answers at once");
    // Its slot came back with it.
    assert_eq!(send(&node, http::Method::GET, "go.infra.global", "").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_are_balanced_across_workers() {
    use tokio::io::AsyncWriteExt;
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let node = w.node_with("central", |cfg| cfg.workers = 2).await;
    let gauge = |worker: u32| {
        let series = format!(r#"veer_worker_connections{{worker="{worker}"}} "#);
        node.metrics.encode().lines().find_map(|l| l.strip_prefix(series.as_str()).and_then(|v| v.parse::<i64>().ok())).unwrap_or(-1)
    };
    // However the kernel hashes them to the two listeners (an even split of 24 by chance alone
    // is a one-in-six event), the connections end up twelve and twelve.
    let mut conns = Vec::new();
    for _ in 0..24 {
        let mut s = tokio::net::TcpStream::connect(node.listen).await.expect("connect");
        let mut buf = Vec::new();
        s.write_all(b"GET / HTTP/1.1\r\nHost: go.infra.global\r\n\r\n").await.expect("write");
        assert_eq!(read_response(&mut s, &mut buf).await.0, 200, "a handed-over connection is served");
        conns.push(s);
    }
    assert_eq!((gauge(0), gauge(1)), (12, 12));
    drop(conns);
    wait_until_async("both workers to count their connections closed", WAIT, || async { gauge(0) == 0 && gauge(1) == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_share_the_listener_and_stop_together() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 2, 1).await;
    let node = w.node_with("central", |cfg| cfg.workers = 3).await;
    let mut s = spec(&node, "go.infra.global", "/", 300, 1.0);
    s.connections = 48;
    let r = veer_testkit::run(s).await;
    assert_eq!(r.errors(), 0, "{:?}", failures(&r));
    assert!(share(&r, "central") > 0.99, "{:?}", r.by_backend());
    // Every worker drains and exits: stop returns and the port is free again.
    let addr = node.listen;
    tokio::time::timeout(Duration::from_secs(15), node.stop()).await.expect("workers stop");
    tokio::net::TcpListener::bind(addr).await.expect("the port is released by every worker");
}

// === HTTPRoute matches ===

async fn send_with(node: &Node, method: http::Method, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(format!("http://{}{path}", node.listen)).header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Full::new(Bytes::new())).expect("request")).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).trim().to_string())
}

/// Rules in an order where the first that merely fits the path would be wrong: a header rule
/// first (without its condition it would take everything), then the catch-all (which, taken in
/// list order, would shadow the method and query rules after it).
const MATCH_ROUTES: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: veer
  listeners: [{name: http, protocol: HTTP, port: 80}, {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: main, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.example.com]
  rules:
  - matches:
    - headers: [{name: X-Canary, value: \"yes\"}]
    backendRefs: [{name: canary, port: 80}]
  - backendRefs: [{name: main, port: 80}]
  - matches:
    - method: POST
      path: {type: PathPrefix, value: /orders}
    - path: {type: Exact, value: /search}
      queryParams: [{name: q, value: veer}]
    backendRefs: [{name: special, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: gw}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: main, port: 80}]
---
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_matches_pick_their_rule_listeners_serve_what_attaches_and_404s_say_what_missed() {
    let w = World::new();
    let canary = w.backends("canary", 1, 1).await;
    let main = w.backends("main", 2, 1).await;
    let special = w.backends("special", 3, 1).await;
    let mut m = cluster("local", "r", "z", "");
    m.push_str(&service("local", "default", "canary", &[], &canary));
    m.push_str(&service("local", "default", "main", &[], &main));
    m.push_str(&service("local", "default", "special", &[], &special));
    m.push_str(MATCH_ROUTES);
    w.write("world.yaml", &m);
    let node = w.node("local").await;
    use http::Method;
    type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (Method::GET, "/", &[("x-canary", "yes")], "canary-1"),
        (Method::GET, "/", &[], "main-1"),
        (Method::GET, "/", &[("x-canary", "YES")], "main-1"),
        (Method::POST, "/orders/7", &[], "special-1"),
        (Method::GET, "/orders/7", &[], "main-1"),
        (Method::GET, "/search?q=veer", &[], "special-1"),
        (Method::GET, "/search?q=other", &[], "main-1"),
        (Method::GET, "/search", &[], "main-1"),
        // Both rules hold; the path decides first: the longer prefix beats the header rule's "/".
        (Method::POST, "/orders", &[("x-canary", "yes")], "special-1"),
        // A Connection option removes the field before routing, not after: the request is
        // routed as the upstream will see it (without x-canary), never to canary without it.
        (Method::GET, "/", &[("x-canary", "yes"), ("connection", "x-canary")], "main-1"),
    ];
    for (method, path, headers, want) in cases {
        let got = send_with(&node, method.clone(), "shop.example.com", path, headers).await;
        assert_eq!(got, (200, (*want).to_string()), "{method} {path} {headers:?}");
    }
    let (status, body) = send_with(&node, Method::GET, "nope.example.com", "/", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("no route for host \"nope.example.com\""), "{body}");
    let (status, body) = send_with(&node, Method::GET, "api.example.com", "/v2/x", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("host \"api.example.com\" has no route for GET /v2/x"), "{body}");
    assert_eq!(send_with(&node, Method::GET, "api.example.com", "/v1/x", &[]).await, (200, "main-1".to_string()));
    // Attached only to a TLS (passthrough) listener, which veer does not serve: not served on plain HTTP.
    let (status, body) = send_with(&node, Method::GET, "secure.example.com", "/", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("no route for host \"secure.example.com\""), "{body}");
}
