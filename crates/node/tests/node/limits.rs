//! Bounded resources under abuse: idle and slow clients of either protocol are closed on time,
//! the node holds at most `max_connections` clients, and the admin listener answers throughout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// How long a test waits for a connection veer should close before calling it held open.
const HELD: Duration = Duration::from_secs(8);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// One HTTP/2 frame as read off the wire: (type, flags, payload).
type Frame = (u8, u8, Vec<u8>);

fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame").to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    out.extend_from_slice(payload);
    out
}

/// The next frame, or `None` once the connection is closed (end of stream or a reset).
async fn next_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], payload))
}

/// An h2c client that says hello (preface and SETTINGS) and then nothing: reads frames until
/// veer closes the connection, answering PINGs when `pong`. Returns whether a GOAWAY came
/// and how long the connection lived.
async fn idle_h2c(addr: SocketAddr, pong: bool) -> (bool, Duration) {
    let start = veer_testkit::clock::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, &[]));
    s.write_all(&hello).await.expect("preface");
    let mut goaway = false;
    let closed = tokio::time::timeout(HELD, async {
        while let Some((kind, flags, payload)) = next_frame(&mut s).await {
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let _ = s.write_all(&frame(SETTINGS, ACK, &[])).await;
                }
                PING if flags & ACK == 0 && pong => {
                    let _ = s.write_all(&frame(PING, ACK, &payload)).await;
                }
                GOAWAY => goaway = true,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle h2c connection is still open after {HELD:?}");
    (goaway, veer_testkit::clock::since(start))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2c_connection_gets_goaway_and_is_closed_after_the_idle_timeout() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let idle = Duration::from_millis(800);
    let node = w.node_with("central", |cfg| cfg.limits.idle_timeout = idle).await;
    // A well-behaved client answers the PING that comes with the first GOAWAY (h2 waits one
    // round trip for streams in flight), then gets the final GOAWAY and the close.
    let (goaway, lived) = idle_h2c(node.listen, true).await;
    assert!(goaway, "closed without a GOAWAY");
    assert!(lived >= idle / 2, "closed after {lived:?}, before the idle timeout of {idle:?}");
    // One that never answers (nor sends anything else) is closed all the same.
    let (goaway, lived) = idle_h2c(node.listen, false).await;
    assert!(goaway, "closed without a GOAWAY");
    assert!(lived >= idle / 2, "closed after {lived:?}, before the idle timeout of {idle:?}");
    assert_eq!(counter(&node, "veer_h2_connections_closed_idle_total"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_is_not_closed_while_a_stream_is_open_and_is_once_idle() {
    let w = World::new();
    let (central, _test) = seed000_world(&w, 1, 1).await;
    // The answer takes several idle timeouts.
    central[0].set_mode(Mode::Delay(Duration::from_millis(2000))).await.expect("slow backend");
    let node = w.node_with("central", |cfg| cfg.limits.idle_timeout = Duration::from_millis(500)).await;
    let stream = TcpStream::connect(node.listen).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let get = || http::Request::get("http://go.infra.global/").body(Full::new(Bytes::new())).expect("request");
    let slow = send.send_request(get()).await.expect("the long stream is answered");
    assert_eq!(slow.status(), 200);
    assert!(!conn.is_finished(), "the connection closed under an open stream");
    // No GOAWAY came while the stream was open: the connection takes another request.
    central[0].set_mode(Mode::Ok).await.expect("backend answers at once");
    send.ready().await.expect("the connection is still usable");
    assert_eq!(send.send_request(get()).await.expect("a second request on the same connection").status(), 200);
    // Once nothing is open, it is closed.
    let _ = tokio::time::timeout(HELD, conn).await.expect("the idle connection is closed");
    assert_eq!(counter(&node, "veer_h2_connections_closed_idle_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_cancels_does_not_keep_an_h2_connection_open() {
    let w = World::new();
    let (central, _test) = seed000_world(&w, 1, 1).await;
    central[0].set_mode(Mode::Blackhole).await.expect("backend that never answers");
    let node = w.node_with("central", |cfg| cfg.limits.idle_timeout = Duration::from_millis(500)).await;
    let stream = TcpStream::connect(node.listen).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let pending = send.send_request(http::Request::get("http://go.infra.global/").body(Full::new(Bytes::new())).expect("request"));
    tokio::select! {
        r = pending => panic!("answered by a backend that never answers: {r:?}"),
        _ = wait_until_async("the backend to receive the request", WAIT, || async { central[0].received_by_method("GET") >= 1 }) => {}
    }
    // The response future is gone: the client resets the stream (RST_STREAM CANCEL), and
    // veer drops the request. Nothing is open any more, so the connection goes idle.
    let _ = tokio::time::timeout(HELD, conn).await.expect("a cancelled stream kept the connection open");
    assert_eq!(counter(&node, "veer_h2_connections_closed_idle_total"), 1);
    central[0].set_mode(Mode::Ok).await.expect("mode");
}

/// Writes `bytes` one write every `every` (cycling) until veer closes the connection; panics if
/// it is still open after [`HELD`]. Returns how long it lived and what veer sent.
async fn trickle(addr: SocketAddr, bytes: &[u8], chunk: usize, every: Duration) -> (Duration, String) {
    let start = veer_testkit::clock::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    let mut tick = tokio::time::interval(every);
    let mut chunks = bytes.chunks(chunk).cycle();
    let closed = tokio::time::timeout(HELD, async {
        loop {
            let mut buf = [0u8; 1024];
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = tick.tick() => {
                    if s.write_all(chunks.next().unwrap_or_default()).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a client sending {:?} is still served after {HELD:?}", String::from_utf8_lossy(bytes));
    (veer_testkit::clock::since(start), String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lines_slow_heads_and_silence_do_not_keep_an_http1_connection_open() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let idle = Duration::from_secs(1);
    let node = w.node_with("central", |cfg| cfg.limits.idle_timeout = idle).await;
    // Empty lines before a request line are allowed (RFC 9112 §2.2), but they are not a request.
    let (lived, got) = trickle(node.listen, b"\r\n", 2, Duration::from_millis(100)).await;
    assert!(lived >= idle / 2 && !got.contains("200"), "{lived:?} {got:?}");
    // A slow-loris: a head, one byte every 150 ms (it would take ~8 s); the wait for it is
    // counted from its first byte, not from the latest.
    let head = b"GET / HTTP/1.1\r\nHost: go.infra.global\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n";
    let (lived, got) = trickle(node.listen, head, 1, Duration::from_millis(150)).await;
    assert!(lived >= idle / 2 && !got.contains("200"), "{lived:?} {got:?}");
    // The same after a request served and the connection parked.
    let mut s = TcpStream::connect(node.listen).await.expect("connect");
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: go.infra.global\r\n\r\n").await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    wait_until_async("the connection to be parked", WAIT, || async { counter(&node, "veer_connections_parked_total") >= 1 }).await;
    let start = veer_testkit::clock::now();
    let closed = tokio::time::timeout(HELD, async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"\r\n").await.is_err() {
                return;
            }
            let mut one = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut one)).await {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a parked connection sending empty lines is still open after {HELD:?}");
    assert!(veer_testkit::clock::since(start) >= idle / 2, "{:?}", veer_testkit::clock::since(start));
    // Silence, and half an HTTP/2 preface, are closed too.
    for hello in [&b""[..], &H2_PREFACE[..16]] {
        let mut s = TcpStream::connect(node.listen).await.expect("connect");
        s.write_all(hello).await.expect("write");
        let mut rest = Vec::new();
        let r = tokio::time::timeout(HELD, s.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "a connection that sent {hello:?} is still open after {HELD:?}");
    }
}

/// GET `path` on the admin listener: the status, or `None` if it did not answer in 2 s.
async fn admin_get(node: &Node, path: &str) -> Option<u16> {
    let ask = async {
        let mut s = TcpStream::connect(node.admin).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out).split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), ask).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_wait_and_admin_answers() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    // Two workers: the cap is the node's, shared by both.
    let node = w
        .node_with("central", |cfg| {
            cfg.workers = 2;
            cfg.limits.max_connections = 20;
        })
        .await;
    let get = b"GET / HTTP/1.1\r\nHost: go.infra.global\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(node.listen).await.expect("connect");
        let mut buf = Vec::new();
        s.write_all(get).await.expect("write");
        assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
        held.push(s);
    }
    // The 21st waits in the kernel's queue: veer does not take it while it holds twenty.
    let mut late = TcpStream::connect(node.listen).await.expect("the kernel still completes the handshake");
    late.write_all(get).await.expect("write");
    let mut one = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(700), late.read(&mut one)).await;
    assert!(early.is_err(), "the 21st connection was served (or closed) at the cap: {early:?}");
    assert!(counter(&node, "veer_connections_cap_reached_total") >= 1);
    // The admin listener has no part in the cap.
    assert_eq!(admin_get(&node, "/healthz").await, Some(200), "admin answers at the cap");
    // One client leaves: the waiting one is served.
    drop(held.pop());
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut late, &mut buf).await.0, 200, "served once a slot is free");
    assert_eq!(admin_get(&node, "/healthz").await, Some(200));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_idle_connections_make_room_for_a_client_with_a_request() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let node = w.node_with("central", |cfg| cfg.limits.max_connections = 20).await;
    // Twenty clients take every slot and say nothing: ten silent, ten with the HTTP/2 preface.
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(node.listen).await.expect("connect");
        if i % 2 == 1 {
            s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.expect("preface");
        }
        idle.push(s);
    }
    // A client with a request to send is served once the idle ones have made room (they are
    // closed after 2 s of silence), well before the idle timeout (30 s) would free a slot.
    let mut client = TcpStream::connect(node.listen).await.expect("the kernel completes the handshake");
    client.write_all(b"GET / HTTP/1.1\r\nHost: go.infra.global\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let served = tokio::time::timeout(Duration::from_secs(10), read_response(&mut client, &mut buf)).await;
    assert_eq!(served.expect("served while idle clients held every slot").0, 200);
    assert!(counter(&node, "veer_connections_drained_total") >= 1, "the room came from draining idle connections");
    // The drained ones were closed: their reads end.
    let mut closed = 0;
    for s in &mut idle {
        let mut sink = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    assert!(closed >= 1, "no idle connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_must_finish_its_next_head_within_the_idle_timeout_of_parking() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let idle = Duration::from_secs(3);
    let node = w.node_with("central", |cfg| cfg.limits.idle_timeout = idle).await;
    let mut s = TcpStream::connect(node.listen).await.expect("connect");
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: go.infra.global\r\n\r\n").await.expect("write");
    assert_eq!(read_response(&mut s, &mut buf).await.0, 200);
    wait_until_async("the connection to be parked", WAIT, || async { counter(&node, "veer_connections_parked_total") >= 1 }).await;
    let parked = veer_testkit::clock::now();
    // A client that comes back late with a slow head gets what is left of the idle time, not
    // a fresh idle timeout: ~0.5 s here (a fresh one would be 3 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let closed = tokio::time::timeout(HELD, async {
        for b in b"GET / HTTP/1.1\r\nHost: go.infra.global\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            let mut one = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut one)).await {
                return;
            }
        }
        panic!("the whole slow head was read");
    })
    .await;
    assert!(closed.is_ok(), "still open after {HELD:?}");
    let lived = veer_testkit::clock::since(parked);
    assert!(lived < idle + Duration::from_millis(1500), "closed {lived:?} after parking, idle timeout {idle:?}");
}
