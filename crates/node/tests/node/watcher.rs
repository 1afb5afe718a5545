//! The manifest watcher in a running node: files that cannot be manifests are refused by name
//! without stalling later reloads, its pulse shows in `/ready` and the metrics, and with
//! `--state-dir` a node whose files do not pass at start serves the set it last accepted; a
//! node does not start from a file still open for writing.

use super::*;
use veer_testkit::TempDir;

/// One cluster, one Service `cart` served by `backends`.
fn cart_world(backends: &[Backend]) -> String {
    let mut m = cluster("one", "r", "z", "");
    m.push_str(&service("one", "shop", "cart", &[], backends));
    m
}

const CART: &str = "cart.shop.svc.cluster.local";

fn reasons(node: &Node, kind: EventKind) -> Vec<String> {
    node.events.all().into_iter().filter(|e| e.kind == kind).map(|e| e.reason).collect()
}

/// GET `path` on the node's admin listener: (status, body).
async fn admin_get(node: &Node, path: &str) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(format!("http://{}{path}", node.admin).parse().expect("uri")).await.expect("admin answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_an_oversized_manifest_is_refused_by_name_and_later_changes_still_apply() {
    let w = World::new();
    let first = w.backends("first", 1, 1).await;
    let second = w.backends("second", 2, 1).await;
    w.write("world.yaml", &cart_world(&first));
    let node = w.node("one").await;
    assert_eq!(send(&node, http::Method::GET, CART, "").await, (200, "first-1\n".to_string()));

    // A FIFO named like a manifest: opening it would wait for a writer, for ever.
    let fifo = w.dir().join("pipe.yaml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs").success());
    wait_until_async("the FIFO is refused by name", WAIT, || async {
        reasons(&node, EventKind::ConfigRejected).iter().any(|r| r.contains("pipe.yaml") && r.contains("FIFO"))
    })
    .await;
    std::fs::remove_file(&fifo).expect("rm fifo");

    // Over the 16 MiB cap (sparse, so nothing is written).
    let big = std::fs::File::create(w.dir().join("big.yaml")).expect("create");
    big.set_len(16 * 1024 * 1024 + 1).expect("grow");
    drop(big);
    wait_until_async("the oversized file is refused with its size", WAIT, || async {
        reasons(&node, EventKind::ConfigRejected).iter().any(|r| r.contains("big.yaml") && r.contains("16777217 bytes"))
    })
    .await;
    std::fs::remove_file(w.dir().join("big.yaml")).expect("rm big");

    // The watcher did not block: a later change is applied and served.
    w.write("world.yaml", &cart_world(&second));
    wait_until_async("the change is applied", WAIT, || async { count(&node, EventKind::ConfigReloaded) >= 1 }).await;
    assert_eq!(send(&node, http::Method::GET, CART, "").await, (200, "second-1\n".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_the_metrics_follow_the_manifest_watchers_pulse() {
    let w = World::new();
    let b = w.backends("b", 1, 1).await;
    w.write("world.yaml", &cart_world(&b));
    let node = w.node("one").await;
    assert_eq!(admin_get(&node, "/ready").await, (200, "ready\n".to_string()));
    let metrics = admin_get(&node, "/metrics").await.1;
    assert!(metrics.contains("veer_manifest_watcher_up 1\n") && metrics.contains("veer_manifest_files_open_for_writing 0\n"), "{metrics}");
    // What the watcher's thread does as it ends, however it ends.
    node.control_metrics.manifest_watcher().end();
    let (status, body) = admin_get(&node, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("manifest watcher has stopped"), "{body}");
    assert!(admin_get(&node, "/metrics").await.1.contains("veer_manifest_watcher_up 0\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_state_dir_a_node_whose_files_do_not_pass_serves_the_last_accepted_set() {
    let w = World::new();
    let b = w.backends("b", 1, 1).await;
    let state = TempDir::new("state");
    let good = cart_world(&b);
    w.write("world.yaml", &good);
    let with_state = |cfg: &mut NodeConfig| cfg.state_dir = Some(state.to_path_buf());

    // A good start saves its set.
    let node = w.node_with("one", with_state).await;
    let saved = state.join(veer_control::state::STATE_FILE);
    assert!(saved.is_file(), "the accepted set is saved");
    // And so is each set a reload accepts.
    w.write("world.yaml", &format!("# reloaded\n{good}"));
    wait_until_async("the reloaded set is saved", WAIT, || async {
        std::fs::read_to_string(&saved).is_ok_and(|s| s.contains("# reloaded"))
    })
    .await;
    node.stop().await;

    // The files break while the node is down.
    w.write("world.yaml", &good.replace("port: 80", "port: eighty"));
    let mut cfg = NodeConfig::new(vec![w.dir().to_path_buf()], "one");
    cfg.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let refused = Node::start(cfg.clone()).await.err().map(|e| e.to_string()).expect("without a state dir it refuses to start");
    assert!(refused.contains("world.yaml:") && refused.contains("eighty"), "{refused}");
    let empty = TempDir::new("empty-state");
    cfg.state_dir = Some(empty.to_path_buf());
    let refused = Node::start(cfg).await.err().map(|e| e.to_string()).expect("with no saved set it refuses to start");
    assert!(refused.contains("no saved set to serve instead"), "{refused}");

    // With the state, it serves the saved set, and says so.
    let node = w.node_with("one", with_state).await;
    let why = reasons(&node, EventKind::StartedFromState);
    assert_eq!(why.len(), 1, "{:?}", node.events.all());
    assert!(why[0].contains("world.yaml:") && why[0].contains("manifests.json"), "{}", why[0]);
    assert_eq!(send(&node, http::Method::GET, CART, "").await, (200, "b-1\n".to_string()));

    // The files are still watched: once fixed, they take over.
    w.write("world.yaml", &good);
    wait_until_async("the fixed files take over", WAIT, || async { count(&node, EventKind::ConfigReloaded) >= 1 }).await;
    assert_eq!(send(&node, http::Method::GET, CART, "").await, (200, "b-1\n".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_does_not_start_from_a_manifest_still_open_for_writing() {
    use std::io::Write;
    let w = World::new();
    let carts = w.backends("cart", 1, 1).await;
    let tills = w.backends("till", 2, 1).await;
    // The first half is a set that passes on its own, so only the gate can tell it is not all.
    let first_half = cart_world(&carts);
    let second_half = format!("---\n{}", service("one", "shop", "till", &[], &tills));
    let path = w.dir().join("world.yaml");
    let mut writer = std::fs::File::create(&path).expect("create");
    writer.write_all(first_half.as_bytes()).expect("write the first half");
    writer.flush().expect("flush");

    let mut starting = tokio::spawn({
        let dir = w.dir().to_path_buf();
        async move {
            let mut cfg = NodeConfig::new(vec![dir], "one");
            cfg.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            cfg.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            Node::start(cfg).await
        }
    });
    // However long the writer pauses, the node waits; a bound is the only way to see a wait.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut starting).await.is_err(),
        "the node started while its manifest was open for writing"
    );
    writer.write_all(second_half.as_bytes()).expect("write the rest");
    drop(writer);
    let node = starting.await.expect("start task").expect("node starts");
    assert_eq!(
        send(&node, http::Method::GET, "till.shop.svc.cluster.local", "").await,
        (200, "till-1\n".to_string()),
        "the node started from the whole file"
    );
    assert_eq!(send(&node, http::Method::GET, CART, "").await, (200, "cart-1\n".to_string()));
}
