//! Each Gateway listener port on its own socket: a client of one Gateway's socket reaches only
//! the routes attached to that Gateway's listeners, and the mesh's names only on the gateway.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use veer_control::events::EventKind;

use super::{count, service, NodeWorld, WAIT};
use veer_testkit::{wait_until_async, Backend, World};

/// Cluster `edge`: Gateway `public` (port 80, a.example.com → Service a) and Gateway
/// `internal` (port 8443, `b_host` → Service b), the two ports mapped to `public` and
/// `internal`, each a loopback IP of the world with an ephemeral port.
fn edge(a: &[Backend], b: &[Backend], public: SocketAddr, internal: SocketAddr, b_parent: &str) -> String {
    let mut m = format!(
        "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {{name: edge}}\nspec:\n  locality: {{region: r, zone: z}}\n  gateway:\n    ports:\n      \"80\": {public}\n      \"8443\": {internal}\n---\n"
    );
    m.push_str(&service("edge", "default", "a", &[], a));
    m.push_str(&service("edge", "default", "b", &[], b));
    m.push_str(&format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: public}}
spec:
  gatewayClassName: veer
  listeners: [{{name: http, protocol: HTTP, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: internal}}
spec:
  gatewayClassName: veer
  listeners: [{{name: http, protocol: HTTP, port: 8443}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: a}}
spec:
  parentRefs: [{{name: public}}]
  hostnames: [a.example.com]
  rules: [{{backendRefs: [{{name: a, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: b}}
spec:
  parentRefs: [{{name: {b_parent}}}]
  hostnames: [b.example.com]
  rules: [{{backendRefs: [{{name: b, port: 80}}]}}]
"
    ));
    m
}

/// `GET /` for `host` on the socket at `addr`: the status and the body (a testkit backend
/// answers with its name).
async fn get(addr: SocketAddr, host: &str) -> (u16, String) {
    get_path(addr, host, "/").await
}

pub(super) async fn get_path(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req =
        http::Request::get(format!("http://{addr}{path}")).header(http::header::HOST, host).body(Full::new(Bytes::new())).expect("request");
    let resp = client.request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).trim().to_string())
}

async fn assert_no_host(addr: SocketAddr, host: &str) {
    let (status, body) = get(addr, host).await;
    assert_eq!(status, 404, "{host} on {addr}: {body}");
    assert!(body.contains(&format!("no route for host {host:?}")), "{host} on {addr}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gateway_listener_port_serves_only_its_routes_on_its_own_socket() {
    let w = World::new();
    let a = w.backends("a", 1, 1).await;
    let b = w.backends("b", 2, 1).await;
    let ip = |last: u8| w.ip(9, last);
    let (public_ip, internal_ip) = (ip(1), ip(2));
    w.write("edge.yaml", &edge(&a, &b, SocketAddr::new(public_ip, 0), SocketAddr::new(internal_ip, 0), "internal"));
    // Two workers: a connection handed from one to the other keeps its socket.
    let node = w.node_with("edge", |c| c.workers = 2).await;
    assert_eq!(node.listeners.len(), 3, "{:?}", node.listeners);
    let socket = |ip: IpAddr| *node.listeners.iter().find(|a| a.ip() == ip).expect("socket bound");
    let (gateway, public, internal) = (node.listen, socket(public_ip), socket(internal_ip));

    // Public: its own route; internal's host is no host here, and its backend hears nothing.
    for _ in 0..4 {
        assert_eq!(get(public, "a.example.com").await, (200, "a-1".to_string()));
        assert_no_host(public, "b.example.com").await;
    }
    assert_eq!(b[0].served(), 0, "a request for internal's host on the public socket reached internal's backend");
    // Internal: the reverse.
    let a_before = a[0].served();
    for _ in 0..4 {
        assert_eq!(get(internal, "b.example.com").await, (200, "b-1".to_string()));
        assert_no_host(internal, "a.example.com").await;
    }
    assert_eq!(a[0].served(), a_before, "a request for public's host on the internal socket reached public's backend");
    // The mesh's names are the gateway's; the Gateways' hosts are not.
    assert_eq!(get(gateway, "a.default.svc.cluster.local").await, (200, "a-1".to_string()));
    assert_eq!(get(gateway, "b.default.svc.cluster.local").await, (200, "b-1".to_string()));
    for on in [public, internal] {
        assert_no_host(on, "a.default.svc.cluster.local").await;
        assert_no_host(on, "b.default.svc.cluster.local").await;
    }
    assert_no_host(gateway, "a.example.com").await;
    assert_no_host(gateway, "b.example.com").await;

    // `/status` says which socket serves which Gateway listener port.
    let (code, body) = get_path(node.admin, "admin", "/status").await;
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    let on = |addr: SocketAddr| {
        status["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["address"] == addr.to_string())
            .map(|l| (l["gateway"].clone(), l["gateway_listener_ports"].clone()))
    };
    assert_eq!(on(gateway), Some((true.into(), serde_json::json!([]))), "{status}");
    assert_eq!(on(public), Some((false.into(), serde_json::json!([80]))), "{status}");
    assert_eq!(on(internal), Some((false.into(), serde_json::json!([8443]))), "{status}");

    // A reload that keeps the addresses moves route b to the public Gateway.
    w.write("edge.yaml", &edge(&a, &b, SocketAddr::new(public_ip, 0), SocketAddr::new(internal_ip, 0), "public"));
    wait_until_async("route b moved to the public Gateway", WAIT, || async { count(&node, EventKind::ConfigReloaded) >= 1 }).await;
    assert_eq!(get(public, "b.example.com").await, (200, "b-1".to_string()));
    assert_no_host(internal, "b.example.com").await;

    // One that needs another address is refused, and the last good set keeps serving.
    w.write("edge.yaml", &edge(&a, &b, SocketAddr::new(public_ip, 0), SocketAddr::new(ip(3), 0), "internal"));
    wait_until_async("the moved socket is refused", WAIT, || async { count(&node, EventKind::ConfigRejected) >= 1 }).await;
    let why = node.events.all().into_iter().find(|e| e.kind == EventKind::ConfigRejected).map(|e| e.reason).unwrap_or_default();
    assert!(why.contains("listener addresses changed") && why.contains("restart the node"), "{why}");
    assert_eq!(get(public, "b.example.com").await, (200, "b-1".to_string()));
    assert_no_host(internal, "b.example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_mapped_onto_the_gateways_socket_is_refused_at_start() {
    let w = World::new();
    let a = w.backends("a", 1, 1).await;
    let b = w.backends("b", 2, 1).await;
    let gateway = SocketAddr::new(w.ip(9, 9), 18080);
    // 0.0.0.0:18080 would share the gateway's connections (SO_REUSEPORT), each routed by the
    // other socket's routes.
    let public = SocketAddr::new(w.ip(9, 1), 0);
    w.write("edge.yaml", &edge(&a, &b, public, "0.0.0.0:18080".parse().expect("address"), "internal"));
    let mut cfg = veer_node::node::NodeConfig::new(vec![w.dir().to_path_buf()], "edge");
    cfg.listen = Some(gateway);
    cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.workers = 2;
    let err = veer_node::node::Node::start(cfg).await.err().map(|e| e.to_string()).expect("refused");
    assert!(err.contains("0.0.0.0:18080 of spec.gateway.ports overlaps the gateway"), "{err}");
}
