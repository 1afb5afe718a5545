//! Access logs of a running node: one line per request, whatever became of it (answered,
//! retried on another priority, failed after its retries, routed nowhere), as JSON or in
//! Envoy's text format, and none when sampled at 0.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use veer_gateway::access_log::{AccessLogConfig, AccessLogFormat, AccessLogTarget};
use veer_testkit::{wait_until, Mode, TempDir, World};

use super::{read_response, seed000_world, NodeWorld, WAIT};

fn logging(path: &Path, format: AccessLogFormat, sample: f64) -> impl FnOnce(&mut veer_node::node::NodeConfig) {
    let path = path.to_path_buf();
    move |c| c.access_log = Some(AccessLogConfig::new(AccessLogTarget::File(path), format, sample))
}

/// One GET on a connection of its own; its status and body length.
async fn get(node: &veer_node::node::Node, host: &str, id: &str) -> (u16, usize) {
    request(node, "GET", host, id, "").await
}

async fn request(node: &veer_node::node::Node, method: &str, host: &str, id: &str, body: &str) -> (u16, usize) {
    let mut s = tokio::net::TcpStream::connect(node.listen).await.expect("connect");
    let len = body.len();
    let req = format!("{method} /p?q=1 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: veer-test\r\nX-Forwarded-For: 192.0.2.7\r\nX-Request-Id: {id}\r\nContent-Length: {len}\r\n\r\n{body}");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let (status, head) = tokio::time::timeout(WAIT, read_response(&mut s, &mut buf)).await.expect("answer in time");
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    (status, len)
}

fn lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_exactly_one_json_line_saying_how_it_was_served() {
    let w = World::new();
    let (central, test) = seed000_world(&w, 1, 1).await;
    // No outlier detection: every request tries central (priority 0) first.
    w.remove("odp.yaml");
    let logs = TempDir::new("access-log");
    let path = logs.join("access.log");
    let node = w.node_with("central", logging(&path, AccessLogFormat::Json, 1.0)).await;

    let mut sent = Vec::new();
    for id in ["ok-1", "ok-2"] {
        sent.push((id, get(&node, "go.infra.global", id).await));
    }
    sent.push(("ok-3", request(&node, "PUT", "go.infra.global", "ok-3", "hello").await));
    central[0].set_mode(Mode::Status(503)).await.expect("503");
    for id in ["retried-1", "retried-2"] {
        sent.push((id, get(&node, "go.infra.global", id).await));
    }
    test[0].set_mode(Mode::Status(503)).await.expect("503");
    sent.push(("failed", get(&node, "go.infra.global", "failed").await));
    sent.push(("no-route", get(&node, "nowhere.example", "no-route").await));
    wait_until("a line for each of the 7 requests", WAIT, || lines(&path).len() >= 7);
    // A last request, logged after the others: once its line is in, a second line for any of
    // them would be too.
    sent.push(("last", get(&node, "nowhere.example", "last").await));
    wait_until("the last request's line", WAIT, || lines(&path).iter().any(|l| l.contains("\"last\"")));

    let parsed: Vec<serde_json::Value> = lines(&path).iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(parsed.len(), sent.len(), "one line per request: {parsed:#?}");
    let central_addr = central[0].addr().to_string();
    let test_addr = test[0].addr().to_string();
    for (id, (status, body_len)) in &sent {
        let of_id: Vec<&serde_json::Value> = parsed.iter().filter(|v| v["request_id"] == *id).collect();
        assert_eq!(of_id.len(), 1, "one line for {id}: {parsed:#?}");
        let v = of_id[0];
        assert_eq!(v["response_code"], *status, "{v}");
        assert_eq!(v["bytes_sent"], *body_len as u64, "{v}");
        let (method, received) = if *id == "ok-3" { ("PUT", 5) } else { ("GET", 0) };
        assert_eq!((v["method"].as_str(), v["path"].as_str(), v["protocol"].as_str()), (Some(method), Some("/p?q=1"), Some("HTTP/1.1")));
        assert_eq!((v["user_agent"].as_str(), v["x_forwarded_for"].as_str()), (Some("veer-test"), Some("192.0.2.7")));
        assert_eq!(v["bytes_received"], received, "{v}");
        assert!(v["start_time"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z')), "{v}");
        assert!(v["duration"].as_u64().is_some(), "{v}");
        let expect = |code: u16,
                      flags: &str,
                      attempts: u64,
                      host: Option<&str>,
                      cluster: Option<&str>,
                      priority: Option<u64>,
                      retry: Option<&str>| {
            assert_eq!(*status, code, "{id}: {v}");
            assert_eq!(v["response_flags"], flags, "{id}: {v}");
            assert_eq!(v["attempts"], attempts, "{id}: {v}");
            assert_eq!(v["upstream_host"].as_str(), host, "{id}: {v}");
            assert_eq!(v["cluster"].as_str(), cluster, "{id}: {v}");
            assert_eq!(v["priority"].as_u64(), priority, "{id}: {v}");
            assert_eq!(v["retry_reason"].as_str(), retry, "{id}: {v}");
        };
        match *id {
            "ok-1" | "ok-2" | "ok-3" => expect(200, "-", 1, Some(&central_addr), Some("central"), Some(0), None),
            "retried-1" | "retried-2" => expect(200, "-", 2, Some(&test_addr), Some("test"), Some(1), Some("5xx")),
            // Both priorities tried, then the last retry the default policy allows (3 tries).
            "failed" if v["cluster"] == "test" => expect(503, "URX", 3, Some(&test_addr), Some("test"), Some(1), Some("5xx")),
            "failed" => expect(503, "URX", 3, Some(&central_addr), Some("central"), Some(0), Some("5xx")),
            _ => {
                expect(404, "NR", 0, None, None, None, None);
                assert!(v["destination"].is_null() && v["authority"] == "nowhere.example", "{v}");
                continue;
            }
        }
        assert_eq!((v["destination"].as_str(), v["authority"].as_str()), (Some("go.infra.global:80"), Some("go.infra.global")), "{v}");
    }
    assert!(node.metrics.encode().contains("veer_access_log_dropped_total 0"), "nothing dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_lines_follow_its_default_format_and_sampling_at_zero_logs_nothing() {
    let w = World::new();
    let (central_backends, _test) = seed000_world(&w, 1, 1).await;
    let logs = TempDir::new("access-log");
    let envoy = logs.join("envoy.log");
    let node = w.node_with("central", logging(&envoy, AccessLogFormat::Envoy, 1.0)).await;
    assert_eq!(get(&node, "go.infra.global", "e-1").await.0, 200);
    wait_until("the request's line", WAIT, || lines(&envoy).len() == 1);
    let line = &lines(&envoy)[0];
    let rest = line.strip_prefix('[').and_then(|l| l.split_once("] ")).map(|(_, r)| r).unwrap_or_else(|| panic!("{line}"));
    let body_len = "central-1\n".len();
    assert!(
        rest.starts_with(&format!("\"GET /p?q=1 HTTP/1.1\" 200 - 0 {body_len} ")),
        "method, path, protocol, status, flags, bytes: {line}"
    );
    let (duration, tail) =
        rest[format!("\"GET /p?q=1 HTTP/1.1\" 200 - 0 {body_len} ").len()..].split_once(' ').unwrap_or_else(|| panic!("{line}"));
    assert!(duration.parse::<u64>().is_ok(), "duration in ms: {line}");
    let central = central_backends[0].addr();
    assert_eq!(
        tail,
        format!("- \"192.0.2.7\" \"veer-test\" \"e-1\" \"go.infra.global\" \"{central}\" \"go.infra.global:80\" \"central\" 0 1 -"),
        "no service time, the request's fields, the endpoint, then veer's own: {line}"
    );
    node.stop().await;

    let none = logs.join("none.log");
    let node = w.node_with("central", logging(&none, AccessLogFormat::Json, 0.0)).await;
    for i in 0..20 {
        assert_eq!(get(&node, "go.infra.global", &format!("s-{i}")).await.0, 200);
    }
    node.stop().await;
    assert!(lines(&none).is_empty(), "sampled at 0, nothing is logged: {:?}", lines(&none));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_reader_drops_lines_and_counts_them_but_never_holds_a_request() {
    let w = World::new();
    let (_central, _test) = seed000_world(&w, 1, 1).await;
    let logs = TempDir::new("access-log");
    // A FIFO whose reader reads nothing until the end: the writer thread blocks once the pipe's
    // buffer is full, then the queue (16 lines here) fills.
    let fifo = logs.join("access.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs").success());
    let reader = {
        let fifo = fifo.clone();
        // Opening a FIFO's read end waits for a writer: the node opens it as it starts.
        tokio::task::spawn_blocking(move || std::fs::File::open(fifo).expect("open the FIFO"))
    };
    let node = w
        .node_with("central", |c| {
            let mut log = AccessLogConfig::new(AccessLogTarget::File(fifo.clone()), AccessLogFormat::Json, 1.0);
            log.queue_lines = 16;
            c.access_log = Some(log);
        })
        .await;
    let reader = reader.await.expect("reader");
    let metrics = node.metrics.clone();
    let dropped =
        || metrics.encode().lines().find_map(|l| l.strip_prefix("veer_access_log_dropped_total ").and_then(|v| v.parse::<u64>().ok()));
    // Each answered in time while the log is stuck (`get` fails past its timeout), until lines
    // are being dropped.
    let mut sent = 0u64;
    while dropped().unwrap_or(0) == 0 {
        assert!(sent < 5_000, "no line dropped after {sent} requests");
        assert_eq!(get(&node, "go.infra.global", &format!("q-{sent}")).await.0, 200);
        sent += 1;
    }
    // Stopped, every request has ended: its line is queued or counted as dropped.
    node.stop().await;
    let dropped = dropped().unwrap_or(0);
    // Every line not dropped comes out once the reader reads: nothing lost uncounted.
    let read = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(reader).lines().take((sent - dropped) as usize).count() as u64
    });
    let read = tokio::time::timeout(WAIT, read).await.expect("the queued lines come out").expect("read");
    assert_eq!(read + dropped, sent, "{read} lines read and {dropped} dropped of {sent}");
}
