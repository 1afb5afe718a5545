use super::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use veer_control::events::{EventKind, NewEvent};

struct Admin {
    addr: SocketAddr,
    state: Arc<AdminState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Admin {
    let metrics = Arc::new(Metrics::new());
    let events = Arc::new(Events::new(3));
    let state = Arc::new(AdminState::new(metrics, events, || serde_json::json!([{ "destination": "api.example:443", "levels": [] }])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    Admin { addr, state, stop: Some(stop), task }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    allow: Option<String>,
    body: String,
}

async fn call(addr: SocketAddr, method: Method, path: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::builder().method(method).uri(format!("http://{addr}{path}")).body(Empty::new()).unwrap();
    let resp = client.request(req).await.unwrap();
    let header = |name| resp.headers().get(name).map(|v: &HeaderValue| v.to_str().unwrap().to_owned());
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let allow = header(ALLOW);
    assert_eq!(header(CACHE_CONTROL).as_deref(), Some("no-store"));
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer { status, content_type, allow, body: String::from_utf8(body.to_vec()).unwrap() }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, Method::GET, path).await
}

#[tokio::test]
async fn healthz_and_ready() {
    let admin = start().await;
    let a = get(admin.addr, "/healthz").await;
    assert_eq!((a.status, a.body.trim()), (StatusCode::OK, "ok"));
    assert!(a.content_type.starts_with("text/plain"));

    let a = get(admin.addr, "/ready").await;
    assert_eq!((a.status, a.body.trim()), (StatusCode::SERVICE_UNAVAILABLE, "not ready"));
    admin.state.ready.store(true, Ordering::Release);
    let a = get(admin.addr, "/ready").await;
    assert_eq!((a.status, a.body.trim()), (StatusCode::OK, "ready"));
}

/// A node whose manifest watcher ended is not ready: its manifests no longer follow the files.
#[tokio::test]
async fn ready_is_503_with_the_reason_once_the_manifest_watcher_has_died() {
    let metrics = Arc::new(Metrics::new());
    let health = veer_control::metrics::ControlMetrics::new(&metrics).manifest_watcher();
    let mut state = AdminState::new(metrics.clone(), Arc::new(Events::new(3)), || serde_json::Value::Null);
    state.ready = AtomicBool::new(true);
    let h = health.clone();
    state.ready_check = Some(Box::new(move || h.check()));
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let a = get(addr, "/ready").await;
    assert_eq!((a.status, a.body.trim()), (StatusCode::OK, "ready"), "a watcher starting now is given time");
    assert!(get(addr, "/metrics").await.body.contains("veer_manifest_watcher_up 1\n"));
    health.end();
    let a = get(addr, "/ready").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.starts_with("not ready: the manifest watcher has stopped"), "{}", a.body);
    let m = get(addr, "/metrics").await.body;
    assert!(m.contains("veer_manifest_watcher_up 0\n") && m.contains("veer_manifest_watcher_last_look_age_seconds "), "{m}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let admin = start().await;
    admin.state.metrics.request(&veer_gateway::metrics::RequestCache::default(), "api.example:443", "east", 0, 200, 0.01);
    veer_control::metrics::ControlMetrics::new(&admin.state.metrics).failover_event("api.example:443", 0, 1);
    let a = get(admin.addr, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(
        a.body.contains(r#"veer_requests_total{destination="api.example:443",cluster="east",priority="0",status="200"} 1"#),
        "{}",
        a.body
    );
    assert!(a.body.contains(r#"veer_failover_events_total{destination="api.example:443",from="0",to="1"} 1"#));
    assert!(a.body.contains("# TYPE veer_request_duration_seconds histogram"));
    assert!(a.body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn routes_serve_the_callback_json() {
    let admin = start().await;
    let a = get(admin.addr, "/routes").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v, serde_json::json!([{ "destination": "api.example:443", "levels": [] }]));
}

#[tokio::test]
async fn events_all_since_and_bad_since() {
    let admin = start().await;
    let a = get(admin.addr, "/events").await;
    assert_eq!((a.status, a.body.trim()), (StatusCode::OK, "[]"));

    for n in 0..4u32 {
        admin
            .state
            .events
            .record(NewEvent::endpoint(EventKind::ReEjection, "api.example:443", "10.0.0.1:443", format!("n{n}")).in_cluster("east"));
    }
    let seqs = |body: &str| -> Vec<u64> {
        let v: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
        v.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    };
    let a = get(admin.addr, "/events").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type, "application/json");
    assert_eq!(seqs(&a.body), vec![2, 3, 4], "capacity 3 drops the oldest");
    assert!(a.body.contains(r#""kind": "re_ejection""#), "{}", a.body);

    let a = get(admin.addr, "/events?since=3").await;
    assert_eq!(seqs(&a.body), vec![4]);
    let a = get(admin.addr, "/events?foo=1&since=0").await;
    assert_eq!(seqs(&a.body), vec![2, 3, 4]);
    let a = get(admin.addr, "/events?since=4").await;
    assert_eq!(seqs(&a.body), Vec::<u64>::new());

    let a = get(admin.addr, "/events?since=abc").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = get(admin.addr, "/events?since=-1").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let admin = start().await;
    for path in ["/", "/nope", "/metrics/extra", "/healthz/"] {
        let a = get(admin.addr, path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        for endpoint in ["/healthz", "/ready", "/metrics", "/routes", "/events"] {
            assert!(a.body.contains(endpoint), "{path}: {}", a.body);
        }
    }
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::HEAD] {
        let a = call(admin.addr, method.clone(), "/healthz").await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(a.allow.as_deref(), Some("GET"));
    }
}

#[tokio::test]
async fn shutdown_stops_serving_even_with_idle_keepalive() {
    let mut admin = start().await;
    // The pooled client keeps an idle keep-alive connection open across shutdown.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let resp = client.get(format!("http://{}/healthz", admin.addr).parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();

    admin.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(3), &mut admin.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "serve should return promptly");
    assert!(tokio::net::TcpStream::connect(admin.addr).await.is_err(), "listener closed");
}
