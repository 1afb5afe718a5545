//! End-to-end checks of the test backend's modes and of the load generator, all on 127.0.0.1.

/// The network-namespace lab (one test binary per crate).
#[cfg(target_os = "linux")]
#[path = "lab/netns.rs"]
mod netns;

/// The real Kubernetes API server (etcd and kube-apiserver, built by `scripts/kube-apiserver`).
#[path = "lab/kube.rs"]
mod kube;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use veer_testkit::{run, wait_until, wait_until_async, Backend, LoadSpec, Mode, TempDir, World};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A fresh HTTP/1 keep-alive connection; the driver task's handle tells when the connection ends.
async fn h1(addr: SocketAddr) -> (http1::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, driver)
}

async fn h2(addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).header("host", "test.local").body(Full::new(Bytes::new())).unwrap()
}

/// Sends one request on a fresh connection and returns status, x-backend and body.
async fn fetch(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, String, String) {
    let (mut sender, _driver) = h1(addr).await;
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let backend = resp.headers()["x-backend"].to_str().unwrap().to_string();
    assert_eq!(resp.headers()["server"], "veer-testkit");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, backend, String::from_utf8(body.to_vec()).unwrap())
}

fn spec(target: SocketAddr, rate: u32, duration: Duration, http2: bool) -> LoadSpec {
    LoadSpec {
        target,
        host: "app.test".to_string(),
        path: "/".to_string(),
        method: Method::GET,
        rate_per_sec: rate,
        duration,
        connections: 4,
        timeout: Duration::from_millis(500),
        http2,
    }
}

#[tokio::test]
async fn ok_and_status_modes() {
    let b = Backend::start("alpha", any_port()).await.unwrap();
    assert_eq!(b.name(), "alpha");
    assert_ne!(b.addr().port(), 0);
    let (status, name, body) = fetch(b.addr(), get("/")).await;
    assert_eq!((status, name.as_str(), body.as_str()), (StatusCode::OK, "alpha", "alpha\n"));

    b.set_mode(Mode::Status(503)).await.unwrap();
    assert_eq!(b.mode(), Mode::Status(503));
    let (status, name, body) = fetch(b.addr(), get("/healthz")).await;
    assert_eq!((status, name.as_str(), body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "alpha", "alpha 503\n"));
    assert_eq!(b.served(), 2);
    assert_eq!(b.received_by_method("GET"), 2);
}

#[tokio::test]
async fn refuse_closes_everything_and_ok_rebinds_same_port() {
    let b = Backend::start("beta", any_port()).await.unwrap();
    let addr = b.addr();
    let (mut kept, driver) = h1(addr).await;
    let resp = kept.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();

    b.set_mode(Mode::Refuse).await.unwrap();
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The keep-alive connection opened before is closed by the backend.
    tokio::time::timeout(Duration::from_secs(2), driver).await.expect("kept connection not closed").unwrap();
    assert!(kept.is_closed());

    b.set_mode(Mode::Ok).await.unwrap();
    assert_eq!(b.addr(), addr);
    let (status, name, _) = fetch(addr, get("/")).await;
    assert_eq!((status, name.as_str()), (StatusCode::OK, "beta"));
    b.stop().await;
    // stop frees the port.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn blackhole_accepts_but_never_answers() {
    let b = Backend::start("gamma", any_port()).await.unwrap();
    b.set_mode(Mode::Blackhole).await.unwrap();
    let (mut sender, _driver) = h1(b.addr()).await;
    let waited = tokio::time::timeout(Duration::from_millis(300), sender.send_request(get("/"))).await;
    assert!(waited.is_err(), "blackholed request was answered");
    TcpStream::connect(b.addr()).await.expect("connect must still succeed");
    assert_eq!(b.received_by_method("get"), 1);
    assert_eq!(b.served(), 0);

    // A held request is answered once the mode changes.
    let (mut sender, _driver) = h1(b.addr()).await;
    let pending = tokio::spawn(async move { sender.send_request(get("/")).await.unwrap().status() });
    wait_until_async("the second request reaches the backend", Duration::from_secs(2), || async { b.received_by_method("GET") == 2 }).await;
    b.set_mode(Mode::Ok).await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(2), pending).await.unwrap().unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn delay_and_post() {
    let b = Backend::start("delta", any_port()).await.unwrap();
    b.set_mode(Mode::Delay(Duration::from_millis(200))).await.unwrap();
    let started = veer_testkit::clock::std_now();
    let (status, _, _) = fetch(b.addr(), get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(veer_testkit::clock::std_since(started) >= Duration::from_millis(200));

    b.set_mode(Mode::Ok).await.unwrap();
    let (mut sender, _driver) = h1(b.addr()).await;
    let post = Request::post("/upload").header("host", "x").body(Full::new(Bytes::from_static(b"hello"))).unwrap();
    let resp = sender.send_request(post).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-body-bytes"], "5");
    assert_eq!(b.received_by_method("POST"), 1);
    assert_eq!(b.received_by_method("GET"), 1);
}

#[tokio::test]
async fn http2_and_grpc() {
    let b = Backend::start("epsilon", any_port()).await.unwrap();
    let mut sender = h2(b.addr()).await;
    let req = Request::get(format!("http://{}/", b.addr())).body(Full::new(Bytes::new())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-backend"], "epsilon");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "epsilon\n");

    let grpc = |body: &'static [u8]| {
        Request::post(format!("http://{}/pkg.Svc/Call", b.addr()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    let resp = sender.send_request(grpc(b"\0\0\0\0\x02hi")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x02hi"[..]);

    b.set_mode(Mode::Status(503)).await.unwrap();
    let resp = sender.send_request(grpc(b"")).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert!(resp.into_body().collect().await.unwrap().trailers().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_one_backend() {
    let b = Backend::start("zeta", any_port()).await.unwrap();
    let report = run(spec(b.addr(), 200, Duration::from_secs(1), false)).await;
    assert_eq!(report.samples.len(), 200);
    assert_eq!(report.errors(), 0, "{:?}", report.samples.iter().find(|s| s.error.is_some()));
    assert_eq!(report.ok(), 200);
    assert_eq!(report.by_backend().get("zeta"), Some(&200));
    assert!(report.elapsed < Duration::from_secs(2));
    assert!(report.latency_percentile(50.0) <= report.latency_percentile(0.99));
    assert_eq!(b.served(), 200);

    let report = run(spec(b.addr(), 100, Duration::from_millis(500), true)).await;
    assert_eq!(report.samples.len(), 50);
    assert_eq!(report.errors(), 0);
    assert_eq!(report.by_backend().get("zeta"), Some(&50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_records_errors_when_backend_refuses_halfway() {
    for http2 in [false, true] {
        let b = std::sync::Arc::new(Backend::start("eta", any_port()).await.unwrap());
        let switcher = {
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move {
                // Halfway: once half of the 100 requests are answered (about 500 ms in).
                wait_until_async("half the load answered", Duration::from_secs(3), || async { b.served() >= 50 }).await;
                b.set_mode(Mode::Refuse).await.unwrap();
            })
        };
        let started = veer_testkit::clock::std_now();
        let report = run(spec(b.addr(), 100, Duration::from_secs(1), http2)).await;
        switcher.await.unwrap();
        assert!(veer_testkit::clock::std_since(started) < Duration::from_secs(3), "load run hung");
        assert_eq!(report.samples.len(), 100);
        let late = Duration::from_millis(600);
        assert!(report.samples.iter().filter(|s| s.sent_at >= late).all(|s| s.status.is_none()));
        assert!(report.errors() >= 35, "errors: {}", report.errors());
        assert!(report.by_backend_between(Duration::ZERO, Duration::from_millis(400))["eta"] >= 38);
        assert!(report.by_backend_between(late, Duration::from_secs(2)).is_empty());
        assert!(report.max_latency_between(late, Duration::from_secs(2)) < Duration::from_millis(500));
    }
}

// === the shared test plumbing: waiting, temporary directories, the world ===

#[tokio::test(start_paused = true)]
async fn wait_until_async_polls_on_tokio_time_and_says_how_long_it_took() {
    let tries = std::cell::Cell::new(0);
    let took = wait_until_async("the third try", Duration::from_secs(1), || async {
        tries.set(tries.get() + 1);
        tries.get() == 3
    })
    .await;
    // Asked at once, then every 20 ms of paused time: no real time passes.
    assert_eq!((tries.get(), took), (3, 2 * veer_testkit::wait::POLL_EVERY));
}

#[tokio::test(start_paused = true)]
async fn wait_until_async_gives_up_at_the_limit_and_names_what_it_waited_for() {
    let start = veer_testkit::clock::now();
    let waited = tokio::spawn(wait_until_async("the moon turns blue", Duration::from_secs(1), || async { false })).await;
    let panic = waited.expect_err("the wait must fail").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(message, "the moon turns blue: not within 1s");
    assert_eq!(veer_testkit::clock::since(start), Duration::from_secs(1), "gives up at the limit, not before or a poll after");
}

#[test]
fn wait_until_returns_as_soon_as_the_condition_holds_and_panics_with_what_otherwise() {
    let mut tries = 0;
    let took = wait_until("the second try", Duration::from_secs(5), || {
        tries += 1;
        tries == 2
    });
    assert_eq!(tries, 2);
    assert!(took >= veer_testkit::wait::POLL_EVERY && took < Duration::from_secs(5), "{took:?}");
    let failed =
        std::panic::catch_unwind(|| wait_until(veer_testkit::lazy(|| "never, said late".to_string()), Duration::from_millis(50), || false));
    let panic = failed.expect_err("the wait must fail");
    assert_eq!(panic.downcast_ref::<String>().map(String::as_str), Some("never, said late: not within 50ms"));
}

#[test]
fn a_temp_dir_is_fresh_reads_as_a_path_and_is_removed_with_its_contents_when_dropped() {
    let (a, b) = (TempDir::new("testkit"), TempDir::new("testkit"));
    assert_ne!(a.path(), b.path());
    assert!(a.is_dir() && std::fs::read_dir(&a).unwrap().next().is_none(), "{}", a.display());
    std::fs::create_dir_all(a.join("sub")).unwrap();
    std::fs::write(a.join("sub/file.yaml"), "x: 1\n").unwrap();
    let path = a.to_path_buf();
    drop(a);
    assert!(!path.exists(), "{} left behind", path.display());
    assert!(b.is_dir());
}

#[test]
fn a_temp_dir_kept_on_failure_outlives_a_failing_test_only() {
    let kept = std::panic::catch_unwind(|| {
        let dir = TempDir::new("kept").keep_on_failure();
        std::fs::write(dir.join("node.log"), "what went wrong\n").unwrap();
        panic!("{}", dir.display());
    });
    let path = std::path::PathBuf::from(kept.expect_err("the test fails").downcast_ref::<String>().unwrap());
    assert_eq!(std::fs::read_to_string(path.join("node.log")).unwrap(), "what went wrong\n");
    std::fs::remove_dir_all(&path).unwrap();
    let passed = TempDir::new("kept").keep_on_failure();
    let path = passed.to_path_buf();
    drop(passed);
    assert!(!path.exists(), "removed when the test does not fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_has_its_own_network_writes_whole_manifests_and_cleans_up() {
    let (w, other) = (World::new(), World::new());
    assert_ne!(w.ip(1, 1), other.ip(1, 1));
    assert_ne!(w.dir(), other.dir());
    w.write("a.yaml", "a: 1\n");
    w.write("a.yaml", "a: 2\n");
    let names: Vec<String> = std::fs::read_dir(w.dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["a.yaml"], "no half-written file is left next to it");
    assert_eq!(std::fs::read_to_string(w.dir().join("a.yaml")).unwrap(), "a: 2\n");
    w.remove("a.yaml");
    assert!(!w.dir().join("a.yaml").exists());

    let backends = w.backends("web", 3, 2).await;
    let seen: Vec<(&str, std::net::IpAddr)> = backends.iter().map(|b| (b.name(), b.addr().ip())).collect();
    assert_eq!(seen, vec![("web-1", w.ip(3, 1)), ("web-2", w.ip(3, 2))]);
    let (status, name, _) = fetch(backends[1].addr(), get("/")).await;
    assert_eq!((status, name.as_str()), (StatusCode::OK, "web-2"));
    // Dropping the set stops its servers.
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    drop(backends);
    for addr in addrs {
        wait_until_async(format!("{addr} refuses connections"), Duration::from_secs(2), || async {
            TcpStream::connect(addr).await.is_err()
        })
        .await;
    }
    let dir = w.dir().to_path_buf();
    drop(w);
    assert!(!dir.exists(), "the manifest folder is removed with the world");
}
