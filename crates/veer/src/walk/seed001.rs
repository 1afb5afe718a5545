//! Seed 001's walkthrough (Service Mesh Hub FailoverService): bookinfo's reviews with v1 and v2
//! in `mgmt-cluster` and v3 in `remote-cluster`. The seed's three resources are applied in its
//! order (outlier detection, the FailoverService, the traffic shift), then v1's and v2's web
//! servers stop while their pods live on (connections refused: `Mode::Refuse`), traffic moves to
//! v3 without a client error, and comes back to v1 and v2 once they serve again.
//!
//! One veer node, for `mgmt-cluster`, where the seed's client (productpage) runs; a standalone
//! node reaches every endpoint, remote-cluster's v3 included, directly.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use veer_node::node::{Node, NodeConfig};
use veer_testkit::Mode;

use super::{Lab, Split, Traffic, Walk, WalkOptions};

const BASE: &str = "examples/001-smh-failover-service";
/// The seed's resources verbatim, in the order the seed applies them.
const SEED: &str = include_str!("../../../../examples/001-smh-failover-service/seed.yaml");
/// The two clusters, their reviews Services and one WorkloadEntry per pod.
const TOPOLOGY: &str = include_str!("../../../../examples/001-smh-failover-service/topology.yaml");

const CLUSTER: &str = "mgmt-cluster";
/// What productpage calls, and the FailoverService's own hostname.
const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local:9080";
const FAILOVER_HOST: &str = "reviews-failover.bookinfo.global:9080";
/// The reviews pods at their WorkloadEntry addresses (the Service's port 9080).
const V1: (&str, Ipv4Addr) = ("reviews-v1", Ipv4Addr::new(127, 0, 3, 1));
const V2: (&str, Ipv4Addr) = ("reviews-v2", Ipv4Addr::new(127, 0, 3, 2));
const V3: (&str, Ipv4Addr) = ("reviews-v3", Ipv4Addr::new(127, 0, 3, 3));
const PORT: u16 = 9080;
/// The longest a failover may take before the step counts as failed.
const SWITCH_LIMIT: Duration = Duration::from_secs(15);
/// Failing back waits for the ejection to end: SMH's default baseEjectionTime is 30 s.
const BACK_LIMIT: Duration = Duration::from_secs(45);
const WATCH: Duration = Duration::from_secs(2);

pub async fn walk(walk: &mut Walk, lab: &mut Lab, opts: WalkOptions) -> Result<(), String> {
    let docs: Vec<&str> = SEED.split("\n---\n").collect();
    let [outlier, failover_service, shift] = docs.as_slice() else {
        return Err(format!("{BASE}/seed.yaml should hold the seed's 3 resources, not {}", docs.len()));
    };
    for (name, ip) in [V1, V2, V3] {
        lab.backend_at(name, SocketAddr::from((ip, PORT))).await?;
    }
    let dir = lab.folder(CLUSTER)?;
    lab.write(&dir, "topology.yaml", TOPOLOGY)?;
    let mut cfg = NodeConfig::new(vec![dir.clone()], CLUSTER);
    cfg.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    cfg.admin = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let gateway = lab.start_node(CLUSTER, cfg).await?.listen;
    walk.info(&format!(
        "veer node for cluster `{CLUSTER}` on {gateway}, reading {BASE}/topology.yaml, then the seed's resources one by one"
    ));
    walk.info(&format!(
        "pods: {} on {}:{PORT} and {} on {}:{PORT} (mgmt-cluster), {} on {}:{PORT} (remote-cluster)",
        V1.0, V1.1, V2.0, V2.1, V3.0, V3.1
    ));
    let client = Traffic::start("productpage", gateway, REVIEWS, "/", opts.rate);
    walk.info(&format!("client: productpage in {CLUSTER}, {} requests/s to {REVIEWS}", opts.rate));

    walk.step(
        "bookinfo as the multicluster setup guide leaves it, before the seed's resources",
        "reviews-v1 and reviews-v2 only exist on the mgmt-cluster and reviews-v3 only exists on the remote-cluster",
    );
    let split = client.watch(walk, WATCH).await;
    walk.check(split.errors == 0 && split.by_backend.len() == 3, &format!("productpage → reviews: {split}"));
    walk.figure(&shares(&split));

    walk.step(
        "configure outlier detection: TrafficPolicy mgmt-reviews-outlier (consecutiveErrors: 1)",
        "the TrafficPolicy is valid (state: ACCEPTED) and has been translated into mesh-specific config for reviews in mgmt-cluster and remote-cluster",
    );
    if !accepted(walk, lab.apply(CLUSTER, || lab.write(&dir, "seed-1-outlier.yaml", outlier)).await) {
        return Ok(());
    }
    // The mesh-specific config is a DestinationRule with outlierDetection for reviews, and with
    // it Istio's locality load balancing: productpage's requests stay in its own cluster's zone.
    let from = client.now();
    let took = client.settle(walk, from, Duration::from_secs(5), |s| s.all_from(&["reviews-v1", "reviews-v2"])).await;
    walk.check(
        took.is_some(),
        "productpage → reviews stays in mgmt-cluster (v1, v2): outlier detection turns on Istio's locality failover",
    );
    let split = client.watch(walk, WATCH).await;
    walk.check(split.all_from(&["reviews-v1", "reviews-v2"]), &format!("productpage → reviews: {split}"));

    walk.step(
        "create the FailoverService reviews-failover (reviews in mgmt-cluster, then in remote-cluster)",
        "state: ACCEPTED; composed of the reviews service on mgmt-cluster in first priority and on remote-cluster in second priority",
    );
    if !accepted(walk, lab.apply(CLUSTER, || lab.write(&dir, "seed-2-failover-service.yaml", failover_service)).await) {
        return Ok(());
    }
    let node = lab.node(CLUSTER)?;
    let (table, sources) = routes(node, FAILOVER_HOST);
    walk.check(
        table == [vec![V1.1, V2.1], vec![V3.1]].map(|t| t.iter().map(|ip| format!("{ip}:{PORT}")).collect::<Vec<_>>()),
        &format!("{FAILOVER_HOST}: {}", show(&table)),
    );
    walk.check(
        sources.iter().any(|s| s == "TrafficPolicy/service-mesh-hub/mgmt-reviews-outlier"),
        &format!("its outlier detection: TrafficPolicy mgmt-reviews-outlier among the resources that decided it ({})", sources.join(", ")),
    );
    let direct = Traffic::start("curl reviews-failover", gateway, FAILOVER_HOST, "/", opts.rate.min(50));
    let split = direct.watch(walk, Duration::from_secs(1)).await;
    direct.stop(walk).await;
    walk.check(split.all_from(&[V1.0, V2.0]), &format!("requests to {FAILOVER_HOST}: {split}"));

    walk.step(
        "traffic shift: TrafficPolicy reviews-shift-failover sends reviews (mgmt-cluster) to the FailoverService",
        "reloading the productpage shows no stars (reviews-v1) or black stars (reviews-v2): it routes to the first service listed in the FailoverService",
    );
    let from = client.now();
    if !accepted(walk, lab.apply(CLUSTER, || lab.write(&dir, "seed-3-traffic-shift.yaml", shift)).await) {
        return Ok(());
    }
    let took = client.settle(walk, from, SWITCH_LIMIT, |s| s.all_from(&[V1.0, V2.0])).await;
    super::report_switch(walk, &client, from, took, "to reviews-v1/v2 only");
    let split = client.watch(walk, WATCH).await;
    walk.check(split.all_from(&[V1.0, V2.0]) && split.by_backend.len() == 2, &format!("productpage → reviews: {split}"));
    walk.figure(&shares(&split));

    walk.step(
        "disable the web servers of reviews-v1 and reviews-v2 (`sleep 20h`: the pods live on, nothing listens on 9080)",
        "reviews with red stars, corresponding to reviews-v3, which only exists on remote-cluster: the requests fail over to the second service in the list",
    );
    let from = client.now();
    let (seen, at) = (lab.node(CLUSTER)?.events.last_seq(), veer_control::events::unix_ms());
    set_mode(walk, lab, &[V1.0, V2.0], Mode::Refuse).await?;
    let took = client.settle(walk, from, SWITCH_LIMIT, |s| s.all_from(&[V3.0])).await;
    super::report_switch(walk, &client, from, took, "to reviews-v3 (remote-cluster)");
    show_events(walk, lab.node(CLUSTER)?, seen, at);
    let split = client.watch(walk, WATCH).await;
    walk.check(split.all_from(&[V3.0]), &format!("productpage → reviews: {split}"));
    walk.figure(&shares(&split));

    walk.step(
        "restore reviews-v1 and reviews-v2 (the command patch removed: their web servers listen again)",
        "reviews with no stars or black stars: the failover service is routing requests to the first listed service in the mgmt-cluster",
    );
    walk.info("veer re-admits an ejected endpoint once its ejection ends (baseEjectionTime: SMH's default 30 s, checked every interval: 10 s) and a probe passes");
    let from = client.now();
    let (seen, at) = (lab.node(CLUSTER)?.events.last_seq(), veer_control::events::unix_ms());
    set_mode(walk, lab, &[V1.0, V2.0], Mode::Ok).await?;
    let took = client.settle(walk, from, BACK_LIMIT, |s| s.all_from(&[V1.0, V2.0])).await;
    super::report_switch(walk, &client, from, took, "back to reviews-v1/v2");
    show_events(walk, lab.node(CLUSTER)?, seen, at);
    let split = client.watch(walk, WATCH).await;
    walk.check(split.all_from(&[V1.0, V2.0]) && split.by_backend.len() == 2, &format!("productpage → reviews: {split}"));
    walk.figure(&shares(&split));

    let total = client.stop(walk).await;
    walk.check(total.errors == 0, &format!("whole walk: {total}"));
    Ok(())
}

/// The node's ejections, re-admissions and priority changes since `seen`, timed from `at`.
fn show_events(walk: &mut Walk, node: &Node, seen: u64, at: u64) {
    use veer_control::events::EventKind::{Ejection, PriorityChange, ReEjection, Unejection};
    for e in node.events.since(seen).into_iter().filter(|e| matches!(e.kind, Ejection | ReEjection | Unejection | PriorityChange)) {
        let secs = e.time_unix_ms.saturating_sub(at) as f64 / 1000.0;
        let what = e.endpoint.clone().or(e.destination.clone()).unwrap_or_default();
        walk.info(&format!("event +{secs:.2}s: {} {what}: {}", e.kind.as_str(), e.reason));
    }
}

/// Checks a node accepted a change, as `kubectl get -oyaml` shows `state: ACCEPTED`.
fn accepted(walk: &mut Walk, applied: Result<(), String>) -> bool {
    match applied {
        Ok(()) => walk.check(true, "the node accepted it and reloaded"),
        Err(why) => walk.check(false, &why),
    }
}

async fn set_mode(walk: &mut Walk, lab: &Lab, names: &[&str], mode: Mode) -> Result<(), String> {
    for name in names {
        let backend = lab.backend_named(name).ok_or_else(|| format!("no backend {name}"))?;
        backend.set_mode(mode.clone()).await.map_err(|e| format!("cannot switch {name} to {mode:?}: {e}"))?;
    }
    walk.info(&format!("{} now {mode:?}", names.join(" and ")));
    Ok(())
}

/// The endpoint addresses of each priority of `host`'s table in `node`'s live routes (its
/// `/routes`), and the resources that decided it, as `Kind/namespace/name`.
fn routes(node: &Node, host_port: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, ""));
    let port: u64 = port.parse().unwrap_or(0);
    let all = serde_json::to_value(node.snapshot().reports()).unwrap_or_default();
    let Some(report) = all.as_array().into_iter().flatten().find(|r| r["host"] == host && r["port"] == port) else {
        return (Vec::new(), Vec::new());
    };
    let table = report["priorities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["endpoints"].as_array().into_iter().flatten().filter_map(|e| e["address"].as_str().map(String::from)).collect())
        .collect();
    let sources = report["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!("{}/{}/{}", s["kind"].as_str().unwrap_or("?"), s["namespace"].as_str().unwrap_or(""), s["name"].as_str().unwrap_or("?"))
        })
        .collect();
    (table, sources)
}

fn show(table: &[Vec<String>]) -> String {
    if table.is_empty() {
        return "not served".into();
    }
    table.iter().enumerate().map(|(i, t)| format!("P{i} {}", t.join(" "))).collect::<Vec<_>>().join(", ")
}

/// Who served the requests, as a figure.
fn shares(split: &Split) -> String {
    let parts: Vec<String> = [V1.0, V2.0, V3.0].iter().map(|name| format!("{name} {:.0}%", split.share(|b| b == *name) * 100.0)).collect();
    parts.join(", ")
}
