//! The edge as an attacker tries it: clients that send broken, abandoned or slow bodies must not
//! eject a healthy backend; veer's own x-veer-* fields stay internal; requests that break
//! HTTP's rules are refused before routing; paths are routed and forwarded normalized.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{cluster, counter, failures, read_response, service, share, spec, NodeWorld, WAIT};
use veer_control::events::EventKind;
use veer_node::node::Node;
use veer_testkit::{wait_until_async, Backend, Backends, World};

const HOST: &str = "cart.shop.svc.cluster.local";

/// `near` (the node's cluster) and `far` each run one cart backend; the DestinationRule ejects
/// on the first 5xx and the first local-origin failure, so any blame at all would show.
async fn strict_world(w: &World) -> (Backends, Backends) {
    let near = w.backends("near", 1, 1).await;
    let far = w.backends("far", 2, 1).await;
    let mut m = cluster("near", "r1", "z1", "");
    m.push_str(&cluster("far", "r2", "z2", ""));
    m.push_str(&service("near", "shop", "cart", &[], &near));
    m.push_str(&service("far", "shop", "cart", &[], &far));
    m.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: cart, namespace: shop}\nspec:\n  host: cart.shop.svc.cluster.local\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 1, consecutiveLocalOriginFailures: 1, splitExternalLocalOriginErrors: true, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n---\n",
    );
    w.write("topology.yaml", &m);
    (near, far)
}

/// Sends `head` then `body` on a fresh connection and returns the status veer answered (0 if
/// the connection closed without one).
async fn raw(node: &Node, head: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(node.listen).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(body).await.expect("write body");
    status_of(&mut s).await
}

async fn status_of(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return String::from_utf8_lossy(&buf[..end]).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return 0,
        }
    }
}

/// A request body that sends one piece and then never another.
struct Stalling(bool);

impl hyper::body::Body for Stalling {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if std::mem::replace(&mut self.0, true) {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"part of a body")))))
    }
}

/// An HTTP/2 request whose client cancels it (RST_STREAM) mid-body.
async fn h2_cancel(listen: SocketAddr) {
    let client: hyper_util::client::legacy::Client<_, Stalling> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let req =
        http::Request::post(format!("http://{listen}/upload")).header(http::header::HOST, HOST).body(Stalling(false)).expect("request");
    // Dropping the response future resets the stream.
    let _ = tokio::time::timeout(Duration::from_millis(200), client.request(req)).await;
}

/// One abusive request of kind `i % 6`.
async fn abuse(listen: SocketAddr, i: u32) {
    if i % 6 == 5 {
        return h2_cancel(listen).await;
    }
    let Ok(mut s) = TcpStream::connect(listen).await else { return };
    let post = |extra: &str| format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n");
    let _ = match i % 6 {
        // A chunk size that is not hex.
        0 => s.write_all(format!("{}zz\r\nhello\r\n0\r\n\r\n", post("Transfer-Encoding: chunked\r\n")).as_bytes()).await,
        // A chunk longer than its size line says.
        1 => s.write_all(format!("{}3\r\nhello world\r\n0\r\n\r\n", post("Transfer-Encoding: chunked\r\n")).as_bytes()).await,
        // Half a chunked body, then the client goes away.
        2 => {
            let _ = s.write_all(format!("{}400\r\nabc", post("Transfer-Encoding: chunked\r\n")).as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        // Declares 100 KiB (streamed, not buffered), sends 10 and closes.
        3 => {
            let _ = s.write_all(format!("{}0123456789", post("Content-Length: 102400\r\n")).as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        // A slow upload: longer than the per-try timeout, yet within the upload idle timeout.
        4 => {
            let _ = s.write_all(post("Transfer-Encoding: chunked\r\n").as_bytes()).await;
            for _ in 0..8 {
                let _ = s.write_all(b"1\r\nx\r\n").await;
                tokio::time::sleep(Duration::from_millis(450)).await;
            }
            s.write_all(b"0\r\n\r\n").await
        }
        _ => Ok(()),
    };
    let _ = status_of(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_aborted_and_slow_uploads_never_eject_and_a_normal_client_sees_nothing() {
    let _alone = super::HEAVY.lock().await;
    let w = World::new();
    let (_near, _far) = strict_world(&w).await;
    // The slow uploads outlast the per-try timeout (3 s), which starts once the request is in.
    let node = w.node_with("near", |c| c.limits.idle_timeout = Duration::from_secs(5)).await;
    let normal = tokio::spawn(veer_testkit::run(spec(&node, HOST, "/", 50, 20.0)));
    let listen = node.listen;
    // Twenty abusive requests a second for twenty seconds.
    let attacker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut tasks = Vec::new();
        for i in 0..400u32 {
            tick.tick().await;
            tasks.push(tokio::spawn(abuse(listen, i)));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let r = normal.await.expect("normal client");
    attacker.await.expect("attacker");
    let errors = failures(&r);
    assert!(errors.is_empty(), "the normal client saw {} errors, the first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert_eq!(share(&r, "far-"), 0.0, "traffic moved to the fallback: {:?}", r.by_backend());
    let ejections: Vec<_> = node.events.all().into_iter().filter(|e| e.kind == EventKind::Ejection).map(|e| e.reason).collect();
    assert!(ejections.is_empty(), "a client ejected a healthy backend: {ejections:?}");
    let metrics = node.metrics.encode();
    assert!(
        metrics.lines().any(|l| l.starts_with("veer_try_failures_total{") && l.contains("blame=\"client\"")),
        "client failures are counted as the client's:\n{metrics}"
    );
    assert!(
        !metrics.lines().any(|l| l.starts_with("veer_try_failures_total{") && l.contains("blame=\"upstream\"")),
        "nothing is the upstream's:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_body_is_400_and_a_stalled_upload_408_and_neither_blames_the_backend() {
    let w = World::new();
    let (near, _far) = strict_world(&w).await;
    let node = w.node_with("near", |c| c.limits.idle_timeout = Duration::from_millis(600)).await;
    let head = format!("POST /u HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(raw(&node, &head, b"zz\r\nhello\r\n0\r\n\r\n").await, 400, "a chunk size that is not hex");
    assert_eq!(raw(&node, &head, b"3\r\nhello world\r\n0\r\n\r\n").await, 400, "a chunk longer than its size");
    // A small declared body that stalls is buffered and times out before any try.
    let small = format!("POST /u HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\n");
    assert_eq!(raw(&node, &small, b"01234").await, 408, "a stalled small upload");
    // A streamed body that stalls once the request has gone upstream.
    assert_eq!(raw(&node, &head, b"1\r\nx\r\n").await, 408, "a stalled streamed upload");
    let events: Vec<_> = node.events.all().into_iter().filter(|e| e.kind == EventKind::Ejection).collect();
    assert!(events.is_empty(), "{events:?}");
    // The backend still serves, from priority 0.
    let r = veer_testkit::run(spec(&node, HOST, "/", 50, 0.4)).await;
    assert!(failures(&r).is_empty() && share(&r, "near-") == 1.0, "{:?} {:?}", failures(&r), r.by_backend());
    assert!(near[0].served() > 0);
}

/// A backend that records every request head it reads and answers 200 with the fields veer
/// must never let reach a client.
struct Recorder {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(ip: std::net::IpAddr) -> Recorder {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.lock().unwrap().push(String::from_utf8_lossy(&buf[..end]).into_owned());
                            buf.drain(..end + 4);
                            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-veer-eastwest-error: reset\r\nx-veer-endpoint: 10.0.0.1:1\r\nx-app: kept\r\n\r\nok";
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                });
            }
        });
        Recorder { addr, heads }
    }

    fn last(&self) -> String {
        self.heads.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

/// A world whose `near` cart endpoint is a [`Recorder`].
async fn recorder_world(w: &World) -> Recorder {
    let rec = Recorder::start(w.ip(1, 1)).await;
    let mut m = cluster("near", "r1", "z1", "");
    m.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: cart, namespace: shop, labels: {{topology.istio.io/cluster: near}}}}\nspec:\n  selector: {{app: cart}}\n  ports:\n  - {{name: http, port: 80, targetPort: http}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: rec, namespace: shop, labels: {{topology.istio.io/cluster: near}}}}\nspec:\n  address: {}\n  ports: {{http: {}}}\n  labels: {{app: cart}}\n",
        rec.addr.ip(),
        rec.addr.port()
    ));
    w.write("topology.yaml", &m);
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_veer_fields_stay_internal_both_ways() {
    let w = World::new();
    let rec = recorder_world(&w).await;
    let node = w.node("near").await;
    let mut s = TcpStream::connect(node.listen).await.expect("connect");
    let req = format!("GET /a HTTP/1.1\r\nHost: {HOST}\r\nx-veer-endpoint: 127.0.0.1:9\r\nX-Veer-Upstream-H2: 1\r\nx-veer-anything: 1\r\nx-app: mine\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let (status, head) = read_response(&mut s, &mut buf).await;
    assert_eq!(status, 200, "{head}");
    let sent = rec.last().to_ascii_lowercase();
    assert!(!sent.contains("x-veer-"), "the backend received a client's x-veer-* field:\n{sent}");
    assert!(sent.contains("x-app: mine"), "{sent}");
    let got = head.to_ascii_lowercase();
    assert!(!got.contains("x-veer-eastwest-error") && !got.contains("x-veer-endpoint"), "internal fields reached the client:\n{head}");
    assert!(got.contains("x-app: kept") && got.contains("x-veer-cluster: near"), "{head}");
    assert_eq!(counter(&node, "veer_internal_headers_removed_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_break_http_rules_are_refused_before_routing() {
    let w = World::new();
    let rec = recorder_world(&w).await;
    let node = w.node("near").await;
    let cases = [
        (format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example\r\n\r\n"), 400, "two Host fields"),
        ("GET / HTTP/1.1\r\n\r\n".to_string(), 400, "no Host on HTTP/1.1"),
        (format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 501, "a coding before chunked"),
        (format!("GET /a/../../etc/passwd HTTP/1.1\r\nHost: {HOST}\r\n\r\n"), 400, "a path above the root"),
        (format!("GET /a%zz HTTP/1.1\r\nHost: {HOST}\r\n\r\n"), 400, "a broken escape"),
    ];
    for (req, want, what) in &cases {
        assert_eq!(raw(&node, req, b"").await, *want, "{what}");
    }
    assert!(rec.heads.lock().unwrap().is_empty(), "a refused request reached the backend: {:?}", rec.heads.lock().unwrap());
    // Connection cannot take Host away; the path arrives normalized.
    assert_eq!(raw(&node, &format!("GET /x/./y/../%7Ez//w HTTP/1.1\r\nHost: {HOST}\r\nConnection: host\r\n\r\n"), b"").await, 200);
    let sent = rec.last();
    assert!(sent.starts_with("GET /x/~z/w HTTP/1.1"), "{sent}");
    assert!(sent.to_ascii_lowercase().contains(&format!("host: {HOST}")), "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_retry_buffer_allowance_a_body_streams_with_one_try() {
    let w = World::new();
    let (near, _far) = strict_world(&w).await;
    near[0].set_mode(veer_testkit::Mode::Status(503)).await.expect("503");
    // No allowance at all: the PUT's body streams, so the 503 cannot be retried.
    let tight = w.node_with("near", |c| c.limits.retry_buffer_bytes = 0).await;
    let (status, body) = super::send(&tight, http::Method::PUT, HOST, "hello").await;
    assert_eq!((status, body.trim()), (503, "near-1 503"));
    assert_eq!(counter(&tight, "veer_retry_buffer_full_total"), 1);
    tight.stop().await;
    // The default allowance buffers it, and the retry reaches the other cluster.
    let roomy = w.node("near").await;
    let (status, body) = super::send(&roomy, http::Method::PUT, HOST, "hello").await;
    assert_eq!((status, body.trim()), (200, "far-1"));
    assert_eq!(counter(&roomy, "veer_retry_buffer_full_total"), 0);
}

/// The strict world with `pool` as the DestinationRule's connectionPool.
fn with_connection_pool(w: &World, near: &[Backend], far: &[Backend], pool: &str) {
    let mut m = cluster("near", "r1", "z1", "");
    m.push_str(&cluster("far", "r2", "z2", ""));
    m.push_str(&service("near", "shop", "cart", &[], near));
    m.push_str(&service("far", "shop", "cart", &[], far));
    m.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: cart, namespace: shop}}\nspec:\n  host: cart.shop.svc.cluster.local\n  trafficPolicy:\n    connectionPool: {pool}\n    outlierDetection: {{consecutive5xxErrors: 1, consecutiveLocalOriginFailures: 1, splitExternalLocalOriginErrors: true, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}\n---\n"
    ));
    w.write("topology.yaml", &m);
}

/// Sends `n` GETs at once and returns their statuses, sorted.
async fn concurrent_gets(node: &Node, n: usize) -> Vec<u16> {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let sends = (0..n).map(|_| {
        let req = http::Request::get(format!("http://{}/", node.listen))
            .header(http::header::HOST, HOST)
            .body(http_body_util::Empty::new())
            .expect("request");
        let client = client.clone();
        async move { client.request(req).await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    let mut statuses = futures_join_all(sends).await;
    statuses.sort();
    statuses
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breakers_refuse_the_overflow_locally_and_never_eject() {
    let w = World::new();
    let near = w.backends("near", 1, 1).await;
    let far = w.backends("far", 2, 1).await;
    near[0].set_mode(veer_testkit::Mode::Delay(Duration::from_millis(800))).await.expect("delay");
    with_connection_pool(&w, &near, &far, "{tcp: {maxConnections: 1}}");
    let node = w.node("near").await;
    // One connection to the endpoint at most: the other two requests cannot have one.
    assert_eq!(concurrent_gets(&node, 3).await, vec![200, 503, 503]);
    let overflow = |node: &Node| {
        node.metrics
            .encode()
            .lines()
            .filter(|l| {
                l.starts_with("veer_try_failures_total{") && l.contains("reason=\"local_overflow\"") && l.contains("blame=\"local\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert_eq!(overflow(&node), 2);
    // Two requests in flight at most, over as many connections as they need.
    let reloads = node.events.all().iter().filter(|e| e.kind == EventKind::ConfigReloaded).count();
    with_connection_pool(&w, &near, &far, "{http: {http2MaxRequests: 2}}");
    wait_until_async("the new connectionPool is in force", WAIT, || async {
        node.events.all().iter().filter(|e| e.kind == EventKind::ConfigReloaded).count() > reloads
    })
    .await;
    assert_eq!(concurrent_gets(&node, 4).await, vec![200, 200, 503, 503]);
    assert_eq!(overflow(&node), 4);
    let ejections: Vec<_> = node.events.all().into_iter().filter(|e| e.kind == EventKind::Ejection).map(|e| e.reason).collect();
    assert!(ejections.is_empty(), "an overflow ejected the endpoint: {ejections:?}");
    // The endpoint still serves, from priority 0.
    near[0].set_mode(veer_testkit::Mode::Ok).await.expect("ok");
    let r = veer_testkit::run(spec(&node, HOST, "/", 50, 0.4)).await;
    assert!(failures(&r).is_empty() && share(&r, "near-") == 1.0, "{:?} {:?}", failures(&r), r.by_backend());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_east_west_listener_reaches_only_an_announced_address_and_port() {
    use veer_gateway::link::PeerLink;
    let w = World::new();
    let (pay, certs) = super::mesh_world(&w).await;
    let c2 = super::meshed_node(&w, "c2", &certs).await;
    let ew = c2.east_west.expect("c2's east-west listener");
    // c1's identity, as a peer node would present it.
    let c1 = veer_pki::MeshIdentity::load(&certs.join("c1"), "c1").expect("c1 identity");
    let link = PeerLink::new("c2", veer_pki::server_name("c2"), ew, c1.client_config(), Duration::from_secs(2));
    let get = || {
        let mut req = http::Request::get("/")
            .body(http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(http_body_util::Empty::<bytes::Bytes>::new(), |never| {
                match never {}
            })))
            .expect("request");
        req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("pay.demo.svc.cluster.local"));
        req
    };
    // An announced endpoint, address and port: forwarded.
    let ok = link.send_to(&pay[0].addr().into(), false, get()).await.expect("answer");
    assert_eq!(ok.status(), 200);
    // The same address on another port (an admin port, a database beside the service): refused.
    let other_port = std::net::SocketAddr::new(pay[0].addr().ip(), pay[0].addr().port().wrapping_add(1).max(1));
    let refused = link.send_to(&other_port.into(), false, get()).await.expect("answer");
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.headers().get("x-veer-eastwest-error").map(|v| v.as_bytes()), Some(&b"refused"[..]));
    // An address no endpoint has: refused too.
    let stranger = link.send_to(&"127.0.0.1:22".parse().expect("ip:port"), false, get()).await.expect("answer");
    assert_eq!(stranger.status(), 403);
    assert_eq!(counter(&c2, "veer_eastwest_refused_total{reason=\"not_local\"}"), 2);
}
