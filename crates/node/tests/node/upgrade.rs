//! Protocol upgrades through a node: a real Python `websockets` echo server behind veer, its
//! client (and a client speaking the frames byte by byte) in front; either side's close ends
//! the spliced connection, shutdown closes it, and an `h2c` upgrade is never passed on.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use veer_testkit::{wait_until, World};

use super::{cluster, read_response, NodeWorld, VD, WAIT};

/// A WebSocket echo server (Python `websockets`, as .ci/run installs it) on `ip`: it echoes
/// every message, closes the connection when told `close-please`, and answers `headers` with
/// the handshake's Upgrade and Host fields. Killed when dropped.
async fn python_echo_server(ip: IpAddr) -> (tokio::process::Child, SocketAddr) {
    const SERVER: &str = r#"
import asyncio, sys
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

async def echo(ws):
    try:
        async for message in ws:
            if message == "close-please":
                await ws.close()
                return
            if message == "headers":
                h = ws.request.headers
                await ws.send(f"{h.get('Upgrade')} {h.get('Host')}")
                continue
            await ws.send(message)
    except ConnectionClosed:
        pass  # The tests also drop connections without a close frame.

async def main():
    async with serve(echo, sys.argv[1], 0, max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", SERVER, &ip.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (.ci/run installs it with the websockets package)");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the echo server says its port in time (is the Python websockets package installed?)")
        .expect("read the port");
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("a port, got {line:?}"));
    (child, SocketAddr::new(ip, port))
}

/// Manifests routing `go.infra.global` to `addr` (one cluster, no policy).
fn route_to(w: &World, addr: SocketAddr) {
    let mut m = cluster("central", "pp", "rs", "central");
    m.push_str("apiVersion: v1\nkind: Service\nmetadata:\n  name: server\n  namespace: infra\n  labels:\n    topology.istio.io/cluster: central\n    app: server\nspec:\n  selector:\n    app: server\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n---\n");
    m.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: s0\n  namespace: infra\n  labels:\n    topology.istio.io/cluster: central\nspec:\n  address: {}\n  ports:\n    http: {}\n  labels:\n    app: server\n---\n",
        addr.ip(),
        addr.port()
    ));
    w.write("topology.yaml", &m);
    w.write("vd.yaml", VD);
}

/// The Python client: through veer (its socket connected to the node, the URI naming the
/// destination), three messages echoed, one of them 256 KiB, and the 101's x-veer-cluster.
async fn python_client(node: SocketAddr) -> String {
    const CLIENT: &str = r#"
import socket, sys
from websockets.sync.client import connect

sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
with connect("ws://go.infra.global/chat", sock=sock, max_size=None) as ws:
    big = bytes(range(256)) * 1024
    ws.send("hello")
    assert ws.recv() == "hello"
    ws.send(big)
    assert ws.recv() == big
    ws.send("headers")
    print(ws.recv(), ws.response.headers.get("x-veer-cluster"), ws.response.headers.get("x-veer-attempts"))
"#;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("python3")
            .args(["-c", CLIENT, &node.ip().to_string(), &node.port().to_string()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client ends in time")
    .expect("python3 runs");
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Opens a WebSocket through the node by hand: the handshake, then the 101's head.
async fn handshake(node: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(node).await.expect("connect");
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: go.infra.global\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, s.read(&mut b)).await.expect("101 in time").expect("read");
        assert!(n == 1, "closed before the 101: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// Sends a short masked text frame (as a client must, RFC 6455 §5.3).
async fn send_text<S: AsyncWrite + Unpin>(s: &mut S, text: &str) {
    send_frame(s, 1, text).await;
}

async fn send_frame<S: AsyncWrite + Unpin>(s: &mut S, opcode: u8, text: &str) {
    assert!(text.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x80 | opcode, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.expect("send frame");
    s.flush().await.expect("flush");
}

/// Reads one short unmasked frame from the server: (opcode, payload).
async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut head)).await.expect("frame in time").expect("frame head");
    let len = usize::from(head[1] & 0x7f);
    assert!(len < 126 && head[1] & 0x80 == 0, "a short unmasked frame, got {head:?}");
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.expect("payload");
    (head[0] & 0x0f, payload)
}

/// Reads until the node closes the connection (or stream); what came before.
async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await.expect("closed in time").expect("read");
    rest
}

fn upgraded_gauge(node: &veer_node::node::Node) -> i64 {
    node.metrics.encode().lines().find_map(|l| l.strip_prefix("veer_upgraded_connections ").and_then(|v| v.parse().ok())).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_through_veer_and_ends_when_either_side_closes() {
    let w = World::new();
    let (_server, addr) = python_echo_server(w.ip(1, 1)).await;
    route_to(&w, addr);
    let node = w.node("central").await;

    // A real client and server: the handshake's fields reach the server, messages come back.
    assert_eq!(python_client(node.listen).await, "websocket go.infra.global central 1");

    // Counted while open; the client's close ends it on both sides.
    let (mut s, head) = handshake(node.listen).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket") && lower.contains("connection: upgrade"), "{head}");
    assert!(lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "the server's accept key passes: {head}");
    wait_until("the upgraded connection is counted", WAIT, || upgraded_gauge(&node) == 1);
    send_text(&mut s, "ping").await;
    assert_eq!(read_frame(&mut s).await, (1, b"ping".to_vec()));
    drop(s);
    wait_until("the client's close ends the upgraded connection", WAIT, || upgraded_gauge(&node) == 0);

    // The server's close reaches the client, and the connection ends.
    let (mut s, _) = handshake(node.listen).await;
    send_text(&mut s, "close-please").await;
    let (opcode, _) = read_frame(&mut s).await;
    assert_eq!(opcode, 8, "the server's close frame is passed on");
    // The client answers the close as RFC 6455 asks; the server then closes the TCP connection.
    send_frame(&mut s, 8, "").await;
    read_to_close(&mut s).await;
    wait_until("the server's close ends the upgraded connection", WAIT, || upgraded_gauge(&node) == 0);

    // Shutdown closes an open upgraded connection rather than waiting for it.
    let (mut s, _) = handshake(node.listen).await;
    send_text(&mut s, "still here").await;
    assert_eq!(read_frame(&mut s).await, (1, b"still here".to_vec()));
    tokio::time::timeout(WAIT, node.stop()).await.expect("shutdown does not wait for the WebSocket");
    read_to_close(&mut s).await;
}

/// A backend that answers every request with the Upgrade field it received ("none" without).
async fn upgrade_reporting_backend(ip: IpAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let seen = req.headers().get(http::header::UPGRADE).map_or("none".to_string(), |v| v.to_str().unwrap_or("?").to_string());
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(seen))))
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_not_passed_on_and_a_refused_websocket_is_an_ordinary_answer() {
    let w = World::new();
    let addr = upgrade_reporting_backend(w.ip(1, 1)).await;
    route_to(&w, addr);
    let node = w.node("central").await;
    let mut s = TcpStream::connect(node.listen).await.expect("connect");
    let mut buf = Vec::new();
    // h2c: the upstream sees a plain request, the client a plain answer on a connection that
    // goes on serving HTTP/1.1.
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: go.infra.global\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .expect("write");
    let (status, head) = read_response(&mut s, &mut buf).await;
    assert_eq!(status, 200, "{head}");
    s.write_all(b"GET / HTTP/1.1\r\nHost: go.infra.global\r\n\r\n").await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200, "the connection still speaks HTTP/1.1");
    // A server that does not switch: its 200 goes back as it is, and the connection goes on.
    s.write_all(b"GET / HTTP/1.1\r\nHost: go.infra.global\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.expect("write");
    let (status, head) = read_response(&mut s, &mut buf).await;
    assert_eq!(status, 200, "{head}");
    s.write_all(b"GET / HTTP/1.1\r\nHost: go.infra.global\r\n\r\n").await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    assert_eq!(upgraded_gauge(&node), 0);

    // What the upstream saw: no Upgrade for h2c, websocket for the WebSocket handshake.
    let body = |raw: &str| {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        let node = node.listen;
        let raw = raw.to_string();
        async move {
            let mut req = http::Request::builder().uri(format!("http://{node}/")).header("host", "go.infra.global");
            for field in raw.split(';').filter(|f| !f.is_empty()) {
                let (k, v) = field.split_once(':').expect("field");
                req = req.header(k, v);
            }
            let resp = client.request(req.body(http_body_util::Full::default()).expect("request")).await.expect("response");
            http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes()
        }
    };
    assert_eq!(&body("connection:Upgrade, HTTP2-Settings;upgrade:h2c;http2-settings:AAMAAABkAARAAAAAAAIAAAAA").await[..], b"none");
    assert_eq!(&body("connection:upgrade;upgrade:websocket").await[..], b"websocket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_fails_the_handshake_over_to_the_next_priority() {
    let w = World::new();
    // Priority 0 (central) refuses connects; priority 1 (test) is the echo server.
    let central = w.backends("central", 1, 1).await;
    central[0].set_mode(veer_testkit::Mode::Refuse).await.expect("refuse");
    let (_server, addr) = python_echo_server(w.ip(2, 1)).await;
    let mut m = cluster("central", "pp", "rs", "central");
    m.push_str(&cluster("test", "pp", "rs", "avg"));
    m.push_str(&super::service("central", "infra", "server", &[("app", "server")], &central));
    m.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: server\n  namespace: infra\n  labels:\n    topology.istio.io/cluster: test\n    app: server\nspec:\n  selector:\n    app: server\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: echo\n  namespace: infra\n  labels:\n    topology.istio.io/cluster: test\nspec:\n  address: {}\n  ports:\n    http: {}\n  labels:\n    app: server\n---\n",
        addr.ip(),
        addr.port()
    ));
    w.write("topology.yaml", &m);
    w.write("vd.yaml", VD);
    w.write("fp.yaml", &super::failover_policy(&["topology.istio.io/subzone"]));
    let node = w.node("central").await;
    // Nothing was sent on the refused connect, so the handshake may go to the next priority.
    let (mut s, head) = handshake(node.listen).await;
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 101") && lower.contains("x-veer-cluster: test") && lower.contains("x-veer-attempts: 2"), "{head}");
    send_text(&mut s, "over there").await;
    assert_eq!(read_frame(&mut s).await, (1, b"over there".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_http2_extended_connect_reaches_an_http11_server_and_outlives_the_idle_timeout() {
    let w = World::new();
    let (_server, addr) = python_echo_server(w.ip(1, 1)).await;
    route_to(&w, addr);
    let idle = Duration::from_millis(400);
    let node = w.node_with("central", |c| c.limits.idle_timeout = idle).await;
    let tcp = TcpStream::connect(node.listen).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.expect("h2");
    tokio::spawn(conn);
    // A first request, answered after the node's SETTINGS (which allow extended CONNECT) are in.
    let plain =
        http::Request::builder().uri("http://go.infra.global/").body(http_body_util::Empty::<bytes::Bytes>::new()).expect("request");
    sender.send_request(plain).await.expect("a plain request");

    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("http://go.infra.global/chat")
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await.expect("answer in time").expect("extended CONNECT");
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.headers().get("x-veer-cluster").map(|v| v.as_bytes()), Some(&b"central"[..]));
    assert!(resp.headers().get("sec-websocket-accept").is_none() && resp.headers().get("upgrade").is_none(), "{resp:?}");
    let mut ws = hyper_util::rt::TokioIo::new(hyper::upgrade::on(resp).await.expect("the stream is the WebSocket"));
    wait_until("the stream is counted", WAIT, || upgraded_gauge(&node) == 1);
    // The server saw an HTTP/1.1 handshake (veer's own key passed its check).
    send_text(&mut ws, "headers").await;
    assert_eq!(read_frame(&mut ws).await, (1, b"websocket go.infra.global".to_vec()));
    // Messages for three idle timeouts: the connection is not closed as idle while its stream
    // is spliced, nor the stream while messages flow.
    let mut ticks = tokio::time::interval(idle / 3);
    for i in 0..9 {
        ticks.tick().await;
        let text = format!("tick {i}");
        send_text(&mut ws, &text).await;
        assert_eq!(read_frame(&mut ws).await, (1, text.into_bytes()));
    }
    // The server closes: the stream ends.
    send_text(&mut ws, "close-please").await;
    assert_eq!(read_frame(&mut ws).await.0, 8);
    send_frame(&mut ws, 8, "").await;
    read_to_close(&mut ws).await;
    wait_until("the server's close ends the stream's splice", WAIT, || upgraded_gauge(&node) == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upgraded_connection_is_closed_after_the_idle_timeout() {
    let w = World::new();
    let (_server, addr) = python_echo_server(w.ip(1, 1)).await;
    route_to(&w, addr);
    let node = w.node_with("central", |c| c.limits.idle_timeout = Duration::from_millis(300)).await;
    let (mut s, head) = handshake(node.listen).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Nothing either way (the Python server pings only every 20 s): closed, and uncounted.
    read_to_close(&mut s).await;
    wait_until("the silent connection is no longer counted", WAIT, || upgraded_gauge(&node) == 0);
}
