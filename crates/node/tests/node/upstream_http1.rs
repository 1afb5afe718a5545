//! veer's own HTTP/1.1 upstream client against real servers on loopback: a hyper server for
//! bodies streamed both ways, and a server written byte by byte for what hyper would never
//! send (bodies delimited by the close, informational responses, idle connections closed
//! under the pool, malformed heads).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{cluster, read_response, NodeWorld, VD};
use veer_testkit::World;

/// Manifests routing `go.infra.global` to the servers at `addrs` (one cluster, no policy).
fn route_to(w: &World, addrs: &[SocketAddr]) {
    let mut m = cluster("central", "pp", "rs", "central");
    m.push_str("apiVersion: v1\nkind: Service\nmetadata:\n  name: server\n  namespace: infra\n  labels:\n    topology.istio.io/cluster: central\n    app: server\nspec:\n  selector:\n    app: server\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n---\n");
    for (i, a) in addrs.iter().enumerate() {
        m.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: s{i}\n  namespace: infra\n  labels:\n    topology.istio.io/cluster: central\nspec:\n  address: {}\n  ports:\n    http: {}\n  labels:\n    app: server\n---\n",
            a.ip(),
            a.port()
        ));
    }
    w.write("topology.yaml", &m);
    w.write("vd.yaml", VD);
}

/// What the hyper backend saw of each request: method, framing headers, body length.
#[derive(Clone, Debug, Default)]
struct Seen {
    method: String,
    content_length: Option<String>,
    transfer_encoding: Option<String>,
    body_len: usize,
}

/// A hyper server: `/echo` answers the request body back; `/stream/N` answers N chunks of
/// 1 KiB, 5 ms apart, with no length (so chunked); `/empty` answers 204; anything else "ok".
async fn hyper_backend(ip: IpAddr) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen2, conns2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            conns2.fetch_add(1, Ordering::Relaxed);
            let seen = seen2.clone();
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let header = |n: http::header::HeaderName| req.headers().get(n).map(|v| v.to_str().unwrap_or("?").to_string());
                    let mut s = Seen {
                        method: req.method().to_string(),
                        content_length: header(http::header::CONTENT_LENGTH),
                        transfer_encoding: header(http::header::TRANSFER_ENCODING),
                        body_len: 0,
                    };
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                    s.body_len = body.len();
                    seen.lock().expect("seen").push(s);
                    type B = http_body_util::combinators::BoxBody<Bytes, Infallible>;
                    let resp: http::Response<B> = if path == "/echo" {
                        http::Response::new(Full::new(body).boxed())
                    } else if let Some(n) = path.strip_prefix("/stream/") {
                        let n: usize = n.parse().unwrap_or(1);
                        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
                        tokio::spawn(async move {
                            for i in 0..n {
                                let chunk = Bytes::from(vec![b'a' + (i % 26) as u8; 1024]);
                                if tx.send(chunk).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        });
                        http::Response::new(ChannelBody(rx).boxed())
                    } else if path == "/empty" {
                        let mut r = http::Response::new(Full::new(Bytes::new()).boxed());
                        *r.status_mut() = http::StatusCode::NO_CONTENT;
                        r
                    } else {
                        http::Response::new(Full::new(Bytes::from_static(b"ok")).boxed())
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        }
    });
    (addr, seen, connections)
}

/// A body fed from a channel, of unknown length; it ends when the sender is dropped.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Sends one request to the node for `go.infra.global`; the response as the client sees it.
async fn start_request(
    node_addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{node_addr}{path}"))
        .header(http::header::HOST, "go.infra.global")
        .body(Full::new(body))
        .expect("request");
    client.request(req).await
}

async fn client_request(
    node_addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let resp = tokio::time::timeout(Duration::from_secs(10), start_request(node_addr, method, path, body))
        .await
        .expect("answer in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    (parts.status, parts.headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_with_lengths_and_chunks_over_reused_connections() {
    let w = World::new();
    let (addr, seen, connections) = hyper_backend(w.ip(1, 1)).await;
    route_to(&w, &[addr]);
    let node = w.node("central").await;

    // 1 MiB up with a length (too big to buffer for retries: it streams), echoed back whole.
    let big: Bytes = (0..1024 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let (status, _, body) = client_request(node.listen, http::Method::POST, "/echo", big.clone()).await;
    assert_eq!(status, 200);
    assert!(body == big, "the echoed body differs ({} bytes back)", body.len());

    // A small body with a length, and none at all on a GET: the framing headers say exactly that.
    let (status, _, body) = client_request(node.listen, http::Method::PUT, "/echo", Bytes::from_static(b"hello")).await;
    assert_eq!((status, &body[..]), (http::StatusCode::OK, &b"hello"[..]));
    let (status, _, body) = client_request(node.listen, http::Method::GET, "/", Bytes::new()).await;
    assert_eq!((status, &body[..]), (http::StatusCode::OK, &b"ok"[..]));

    // A chunked upload of unknown length goes up chunked.
    let mut s = TcpStream::connect(node.listen).await.expect("connect");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: go.infra.global\r\nTransfer-Encoding: chunked\r\n\r\n").await.expect("write");
    let mut sent = Vec::new();
    for i in 0..40u8 {
        let piece = vec![b'0' + i % 10; 2000];
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await.expect("write");
        s.write_all(&piece).await.expect("write");
        s.write_all(b"\r\n").await.expect("write");
        sent.extend_from_slice(&piece);
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    s.write_all(b"0\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let (status, head) = read_response(&mut s, &mut buf).await;
    assert_eq!(status, 200, "{head}");

    // A response of unknown length streams down as it comes, in order.
    let (status, _, body) = client_request(node.listen, http::Method::GET, "/stream/50", Bytes::new()).await;
    assert_eq!(status, 200);
    let expected: Vec<u8> = (0..50).flat_map(|i| vec![b'a' + (i % 26) as u8; 1024]).collect();
    assert!(body[..] == expected[..], "streamed body differs ({} bytes)", body.len());

    // HEAD and 204 carry no body; the HEAD keeps the length the GET would have had.
    let (status, headers, body) = client_request(node.listen, http::Method::HEAD, "/", Bytes::new()).await;
    assert_eq!((status, body.len()), (http::StatusCode::OK, 0));
    assert_eq!(headers.get(http::header::CONTENT_LENGTH).map(|v| v.as_bytes()), Some(&b"2"[..]));
    let (status, _, body) = client_request(node.listen, http::Method::GET, "/empty", Bytes::new()).await;
    assert_eq!((status, body.len()), (http::StatusCode::NO_CONTENT, 0));

    let seen = seen.lock().expect("seen").clone();
    let framing: Vec<(&str, Option<&str>, Option<&str>, usize)> =
        seen.iter().map(|s| (s.method.as_str(), s.content_length.as_deref(), s.transfer_encoding.as_deref(), s.body_len)).collect();
    assert_eq!(
        framing,
        vec![
            ("POST", Some("1048576"), None, 1024 * 1024),
            ("PUT", Some("5"), None, 5),
            ("GET", None, None, 0),
            ("POST", None, Some("chunked"), sent.len()),
            ("GET", None, None, 0),
            ("HEAD", None, None, 0),
            ("GET", None, None, 0),
        ]
    );
    // One request at a time, every body read to its end: one upstream connection carried them all.
    assert_eq!(connections.load(Ordering::Relaxed), 1, "the keep-alive connection was not reused");
}

/// A server written byte by byte: for each request head it reads, it answers with the next
/// reply of its script, then keeps the connection open or closes it.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
enum Then {
    KeepOpen,
    Close,
    /// Keeps the connection for this long, then closes it without a word (as backends with
    /// a short keep-alive timeout do).
    CloseLater(Duration),
}

async fn scripted(ip: IpAddr, reply: impl Fn(usize) -> (Vec<u8>, Then) + Send + Sync + 'static) -> Scripted {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c2, r2, reply) = (connections.clone(), requests.clone(), Arc::new(reply));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c2.fetch_add(1, Ordering::Relaxed);
            let (requests, reply) = (r2.clone(), reply.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Requests here have no body: a head ends the request.
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
                    buf.drain(..end);
                    let (bytes, after) = reply(requests.fetch_add(1, Ordering::Relaxed));
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                    match after {
                        Then::KeepOpen => {}
                        Then::Close => return,
                        Then::CloseLater(d) => {
                            tokio::time::sleep(d).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Scripted { addr, connections, requests }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_end_with_the_connection_and_informational_heads_pass_through() {
    let w = World::new();
    let server = scripted(w.ip(1, 1), |i| match i % 3 {
        // No length, no chunking: the body is everything until the close.
        0 => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close".to_vec(), Then::Close),
        // Informational heads before the final one are read past.
        1 => (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_vec(), Then::KeepOpen),
        // Chunked with an extension and a trailer, and `Connection: close`.
        _ => (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 5\r\n\r\n".to_vec(), Then::Close),
    })
    .await;
    route_to(&w, &[server.addr]);
    let node = w.node("central").await;
    for round in 0..2 {
        for expected in [&b"until the close"[..], b"final", b"abcde"] {
            let (status, headers, body) = client_request(node.listen, http::Method::GET, "/", Bytes::new()).await;
            assert_eq!((status, &body[..]), (http::StatusCode::OK, expected), "round {round}");
            // The upstream's `Connection: close` was for its hop only.
            assert!(headers.get(http::header::CONNECTION).is_none(), "hop-by-hop header leaked: {headers:?}");
        }
    }
    // The close-delimited and `Connection: close` answers each took their connection with them;
    // the one after the 1xx heads left it open, and the next request was free to reuse it.
    assert_eq!(server.requests.load(Ordering::Relaxed), 6);
    assert!(server.connections.load(Ordering::Relaxed) >= 4, "closed connections were reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_backend_closed_are_not_used_again() {
    let w = World::new();
    // Every answer is keep-alive by its headers, yet the server drops the connection 20 ms later.
    let server =
        scripted(w.ip(1, 1), |_| (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), Then::CloseLater(Duration::from_millis(20))))
            .await;
    route_to(&w, &[server.addr]);
    let node = w.node("central").await;
    // POSTs: not retried, so one sent on a dead connection would come back as a 502.
    for i in 0..10 {
        let (status, _, body) = client_request(node.listen, http::Method::POST, "/", Bytes::new()).await;
        assert_eq!(
            (status, String::from_utf8_lossy(&body).as_ref()),
            (http::StatusCode::OK, "ok"),
            "request {i} went out on a dead connection"
        );
        // The next request comes later, once veer has seen the close (no event of the test's says when).
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Each request needed a new connection, and no request was sent twice.
    assert_eq!(server.connections.load(Ordering::Relaxed), 10);
    assert_eq!(server.requests.load(Ordering::Relaxed), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_cut_response_is_a_502_and_the_client_is_told_why() {
    let w = World::new();
    let server = scripted(w.ip(1, 1), |i| match i {
        0 => (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(), Then::Close),
        1 => (b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(), Then::Close),
        // The head promises 100 bytes; 5 come before the close.
        2 => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec(), Then::Close),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), Then::KeepOpen),
    })
    .await;
    route_to(&w, &[server.addr]);
    let node = w.node("central").await;
    // POST is not retried, so each malformed answer reaches the client as what veer made of it.
    for why in ["Content-Length fields disagree", "does not parse as HTTP/1.x"] {
        let (status, _, body) = client_request(node.listen, http::Method::POST, "/", Bytes::new()).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, http::StatusCode::BAD_GATEWAY, "{text}");
        assert!(text.contains(why), "the 502 does not say {why:?}: {text}");
    }
    // A body cut short once the head is in cannot become a 502: the client's response ends
    // early (before or after its head), never passing a truncated body off as whole.
    match start_request(node.listen, http::Method::POST, "/", Bytes::new()).await {
        Ok(resp) => {
            assert_eq!(resp.status(), 200);
            assert!(resp.into_body().collect().await.is_err(), "a cut body must end in an error");
        }
        Err(e) => assert!(format!("{e:?}").contains("IncompleteMessage"), "{e:?}"),
    }
    assert_eq!(server.requests.load(Ordering::Relaxed), 3, "each malformed answer came from one try");
    let (status, _, body) = client_request(node.listen, http::Method::GET, "/", Bytes::new()).await;
    assert_eq!((status, &body[..]), (http::StatusCode::OK, &b"ok"[..]));
}
