//! gRPC health checks against a real gRPC server (Python grpcio with grpcio-health-checking):
//! a backend whose health says NOT_SERVING is taken out with no client error, and comes back
//! once it says SERVING.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

use super::{cluster, count, NodeWorld, WAIT};
use veer_control::events::EventKind;
use veer_testkit::{wait_until_async, World};

const SERVICE: &str = "veer.test.Echo";

/// One `grpc_health_server.py`, killed when dropped.
struct GrpcServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl GrpcServer {
    fn start(name: &str, ip: IpAddr) -> GrpcServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/grpc_health_server.py");
        let mut child = Command::new("python3")
            .args([script, name, &ip.to_string(), SERVICE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (pip install grpcio grpcio-health-checking)");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the server says its port");
        let port: u16 = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line:?}"));
        GrpcServer { child, stdin, stdout, addr: SocketAddr::new(ip, port) }
    }

    /// Sets the health the server reports, and waits for it to say it did.
    fn set(&mut self, status: &str) {
        writeln!(self.stdin, "{status}").expect("write");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("ack");
        assert_eq!(line.trim(), format!("OK {status}"));
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers seen by a client calling /veer.test.Echo/Who through the node: who answered, or
/// the error.
type Seen = Arc<Mutex<Vec<Result<String, String>>>>;

/// Calls /veer.test.Echo/Who through the node over one HTTP/2 connection until `stop`.
async fn call_loop(node: SocketAddr, seen: Seen, stop: Arc<AtomicBool>) {
    let tcp = tokio::net::TcpStream::connect(node).await.expect("connect");
    let (mut client, conn) =
        hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    while !stop.load(Ordering::Relaxed) {
        // An empty message: the flag byte and a zero length.
        let mut req = http::Request::post(format!("http://www.example.com/{SERVICE}/Who"))
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .expect("request");
        req.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        req.headers_mut().insert("te", http::HeaderValue::from_static("trailers"));
        let answer = match client.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let backend = resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).map(str::to_string);
                match resp.into_body().collect().await {
                    Ok(c) => {
                        let grpc = c.trailers().and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok()).map(str::to_string);
                        match (status.as_u16(), grpc.as_deref(), backend) {
                            (200, Some("0"), Some(b)) => Ok(b),
                            other => Err(format!("{other:?}")),
                        }
                    }
                    Err(e) => Err(format!("body: {e}")),
                }
            }
            Err(e) => Err(format!("send: {e}")),
        };
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(answer);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether the last `n` answers all came from `backend`.
fn last_from(seen: &Seen, n: usize, backend: &str) -> bool {
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    seen.len() >= n && seen[seen.len() - n..].iter().all(|a| a.as_deref() == Ok(backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_grpc_health_says_not_serving_is_ejected_without_errors_and_readmitted() {
    let w = World::new();
    let mut active = GrpcServer::start("active", w.ip(1, 1));
    let passive = GrpcServer::start("passive", w.ip(2, 1));
    let backend = |name: &str, addr: SocketAddr, fallback: bool| {
        format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata:\n  name: {name}\nspec:\n  fallback: {fallback}\n  endpoints:\n  - ip:\n      address: {}\n      port: {}\n---\n",
            addr.ip(),
            addr.port()
        )
    };
    let mut m = cluster("local", "r", "z", "");
    m.push_str(&backend("active", active.addr, false));
    m.push_str(&backend("passive", passive.addr, true));
    m.push_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  gatewayClassName: veer\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  hostnames:\n  - www.example.com\n  parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - group: gateway.envoyproxy.io\n      kind: Backend\n      name: active\n    - group: gateway.envoyproxy.io\n      kind: Backend\n      name: passive\n---\n",
    );
    m.push_str(&format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata:\n  name: grpc-check\nspec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    name: echo\n  healthCheck:\n    active:\n      type: GRPC\n      interval: 200ms\n      timeout: 150ms\n      unhealthyThreshold: 2\n      healthyThreshold: 1\n      grpc:\n        service: {SERVICE}\n"
    ));
    w.write("world.yaml", &m);
    let node = w.node("local").await;

    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = tokio::spawn(call_loop(node.listen, seen.clone(), stop.clone()));
    wait_until_async("the active backend answers", WAIT, || async { last_from(&seen, 20, "active") }).await;

    active.set("NOT_SERVING");
    let endpoint = active.addr.to_string();
    let failed = |node: &veer_node::node::Node| {
        node.events.all().iter().any(|e| e.kind == EventKind::HealthCheckFailed && e.endpoint.as_deref() == Some(endpoint.as_str()))
    };
    wait_until_async("the gRPC check takes the active backend out", WAIT, || async { failed(&node) }).await;
    wait_until_async("the passive backend takes the calls", WAIT, || async { last_from(&seen, 20, "passive") }).await;

    active.set("SERVING");
    wait_until_async("the active backend passes its check again", WAIT, || async { count(&node, EventKind::HealthCheckPassed) >= 1 }).await;
    wait_until_async("the active backend takes the calls again", WAIT, || async { last_from(&seen, 20, "active") }).await;

    stop.store(true, Ordering::Relaxed);
    calls.await.expect("calls");
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let errors: Vec<&String> = seen.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    assert!(seen.iter().any(|a| a.as_deref() == Ok("passive")), "the passive backend served during the outage");
    drop(passive);
}
