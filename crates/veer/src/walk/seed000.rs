//! Seed 000's walkthrough (Gloo Platform priority labels): two clusters, `central-pp-rs` and
//! `test-pp-rs`, each with its VirtualDestination, FailoverPolicy (`priorityLabels`), servers and
//! a client of its own. The remote server is labelled to serve central, central is scaled to 0
//! and its clients are served by test, test is scaled to 3 and 9 (the split follows), central is
//! restored, and the inverted policy with the AVG label moves central's clients to AVG.
//!
//! One veer node per cluster (standalone: it reaches every endpoint directly), each reading its
//! own copy of the manifests; a step rewrites one file in both copies, as `kubectl apply` would
//! reach both clusters' proxies. Scaling is WorkloadEntries removed or added, plus the server
//! processes stopped or started (examples/000-gloo-priority-labels/README.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use veer_node::node::{Node, NodeConfig};

use super::{Lab, Split, Traffic, Walk, WalkOptions};

const BASE: &str = "examples/000-gloo-priority-labels";
const STEPS: &str = "examples/steps/000-gloo-priority-labels";

/// The starting state, as shipped in `examples/000-gloo-priority-labels` (the seed's resources
/// verbatim in `seed.yaml`, their twins for central, and the topology they imply).
const START: [(&str, &str); 6] = [
    ("seed.yaml", include_str!("../../../../examples/000-gloo-priority-labels/seed.yaml")),
    ("clusters.yaml", include_str!("../../../../examples/000-gloo-priority-labels/clusters.yaml")),
    ("vd-for-central.yaml", include_str!("../../../../examples/000-gloo-priority-labels/vd-for-central.yaml")),
    ("policy-for-central.yaml", include_str!("../../../../examples/000-gloo-priority-labels/policy-for-central.yaml")),
    ("server-central.yaml", include_str!("../../../../examples/000-gloo-priority-labels/server-central.yaml")),
    ("server-test.yaml", include_str!("../../../../examples/000-gloo-priority-labels/server-test.yaml")),
];
/// The files each later step changes (`examples/steps/000-gloo-priority-labels/<step>/<file>`).
const TEST_LABELLED: &str = include_str!("../../../../examples/steps/000-gloo-priority-labels/2-remote-labelled/server-test.yaml");
const CENTRAL_SCALED_0: &str = include_str!("../../../../examples/steps/000-gloo-priority-labels/3-central-scaled-0/server-central.yaml");
const TEST_3: &str = include_str!("../../../../examples/steps/000-gloo-priority-labels/4-test-3-replicas/server-test.yaml");
const TEST_9: &str = include_str!("../../../../examples/steps/000-gloo-priority-labels/5-test-9-replicas/server-test.yaml");
const POLICY_INVERTED: &str =
    include_str!("../../../../examples/steps/000-gloo-priority-labels/7-inverted-with-avg/policy-for-central.yaml");

/// (cluster, VirtualDestination host its clients call, the client's label for priorityLabels,
/// first three octets of its servers' WorkloadEntry addresses, backend name prefix).
const CENTRAL: Side = Side {
    cluster: "central-pp-rs",
    host: "go-vuderani-algebra.infra.svc.central-pp-rs",
    label: ("mesh.opentable.com/serves-central-pp-rs", "true"),
    net: [127, 0, 1],
    prefix: "central-",
};
const TEST: Side = Side {
    cluster: "test-pp-rs",
    host: "go-vuderani-algebra.infra.svc.test-pp-rs",
    label: ("mesh.opentable.com/serves-test-pp-rs", "true"),
    net: [127, 0, 2],
    prefix: "test-",
};
/// The servers' WorkloadEntry port (the Service's targetPort).
const PORT: u16 = 8080;
/// The longest a switch may take before the step counts as failed.
const SWITCH_LIMIT: Duration = Duration::from_secs(15);
/// How long a steady state is watched.
const WATCH: Duration = Duration::from_secs(2);
/// How long a split is measured to compare it with the endpoint count.
const MEASURE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy)]
struct Side {
    cluster: &'static str,
    host: &'static str,
    label: (&'static str, &'static str),
    net: [u8; 3],
    prefix: &'static str,
}

impl Side {
    /// The backend standing for WorkloadEntry `vuderani-vd-server-<i>` of this cluster.
    fn server(&self, i: u8) -> (String, SocketAddr) {
        let [a, b, c] = self.net;
        (format!("{}{i}", self.prefix), SocketAddr::from((Ipv4Addr::new(a, b, c, i), PORT)))
    }
}

pub async fn walk(walk: &mut Walk, lab: &mut Lab, opts: WalkOptions) -> Result<(), String> {
    // Step 1 of the seed: the servers (central at 9 replicas, test at 1) and a client in each cluster.
    for i in 1..=9 {
        start_server(lab, &CENTRAL, i).await?;
    }
    start_server(lab, &TEST, 1).await?;
    let mut folders = Vec::new();
    let mut gateways = Vec::new();
    for side in [CENTRAL, TEST] {
        let dir = lab.folder(side.cluster)?;
        for (file, contents) in START {
            lab.write(&dir, file, contents)?;
        }
        let mut cfg = NodeConfig::new(vec![dir.clone()], side.cluster);
        cfg.labels.insert(side.label.0.to_string(), side.label.1.to_string());
        cfg.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        cfg.admin = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let node = lab.start_node(side.cluster, cfg).await?;
        walk.info(&format!(
            "veer node for cluster `{}` on {} (client label {}={}), reading {BASE}",
            side.cluster, node.listen, side.label.0, side.label.1
        ));
        gateways.push(node.listen);
        folders.push(dir);
    }
    walk.info("servers: WorkloadEntry vuderani-vd-server-N of central-pp-rs is backend central-N on 127.0.1.N:8080, of test-pp-rs test-N on 127.0.2.N:8080");
    let central = Traffic::start("central client", gateways[0], CENTRAL.host, "/", opts.rate);
    let test = Traffic::start("test client", gateways[1], TEST.host, "/", opts.rate);
    walk.info(&format!("clients: one in each cluster, {} requests/s each, calling its own VirtualDestination's host", opts.rate));

    walk.step(
        "servers, clients, VirtualDestinations and FailoverPolicies in both clusters (seed steps 1-3)",
        "requests are routed to services in the same cluster as the client",
    );
    let (c, t) = watch_both(walk, &central, &test, WATCH).await;
    walk.check(c.all_from(&[CENTRAL.prefix]), &format!("central client: {c}"));
    walk.check(t.all_from(&[TEST.prefix]), &format!("test client: {t}"));
    split_figure(walk, &c, &t);

    walk.step(
        "label the remote server: test-pp-rs's server also serves central (seed steps 4-5)",
        "mesh.opentable.com/serves-central-pp-rs: \"true\" lets test's server handle central's requests; the routing remains the same, requests are still routed to the local cluster",
    );
    apply_both(walk, lab, &folders, "2-remote-labelled", "server-test.yaml", TEST_LABELLED).await?;
    let table = tiers(lab.node(CENTRAL.cluster)?, CENTRAL.host);
    walk.check(
        table.len() == 2 && table[0].iter().all(|c| c == CENTRAL.cluster) && table[1] == [TEST.cluster],
        &format!("central's priorities: {}", show_tiers(&table)),
    );
    let (c, t) = watch_both(walk, &central, &test, WATCH).await;
    walk.check(c.all_from(&[CENTRAL.prefix]), &format!("central client: {c}"));
    walk.check(t.all_from(&[TEST.prefix]), &format!("test client: {t}"));
    split_figure(walk, &c, &t);

    walk.step(
        "scale central's server to 0 replicas: its entries go, then its 9 processes stop (seed step 6)",
        "requests from the central-pp-rs cluster are now routed to the test-pp-rs cluster; requests from test-pp-rs continue to be served locally",
    );
    let from = central.now();
    apply_both(walk, lab, &folders, "3-central-scaled-0", "server-central.yaml", CENTRAL_SCALED_0).await?;
    for i in 1..=9 {
        lab.remove_backend(&CENTRAL.server(i).0).await;
    }
    let took = central.settle(walk, from, SWITCH_LIMIT, |s| s.all_from(&[TEST.prefix])).await;
    super::report_switch(walk, &central, from, took, "central's clients to test-pp-rs");
    let (c, t) = watch_both(walk, &central, &test, WATCH).await;
    walk.check(c.all_from(&[TEST.prefix]), &format!("central client: {c}"));
    walk.check(t.all_from(&[TEST.prefix]), &format!("test client: {t}"));
    split_figure(walk, &c, &t);

    for (n, step_dir, file, seed_step) in [(3u8, "4-test-3-replicas", TEST_3, "6.1"), (9, "5-test-9-replicas", TEST_9, "6.2")] {
        walk.step(
            &format!("scale the remote (test-pp-rs) server to {n} replicas (seed step {seed_step})"),
            "the distribution of requests should reflect the number of available endpoints",
        );
        for i in 1..=n {
            if lab.backend_named(&TEST.server(i).0).is_none() {
                start_server(lab, &TEST, i).await?;
            }
        }
        let from = central.now();
        apply_both(walk, lab, &folders, step_dir, "server-test.yaml", file).await?;
        // Wait until the new endpoints answer too; the split is measured after.
        let took = central.settle(walk, from, SWITCH_LIMIT, |s| s.all_from(&[TEST.prefix]) && s.by_backend.len() == usize::from(n)).await;
        walk.check(took.is_some(), &format!("central client lately: {}", central.lately()));
        let (c, t) = watch_both(walk, &central, &test, MEASURE).await;
        walk.check(c.all_from(&[TEST.prefix]), &format!("central client: {c}"));
        even_check(walk, "central client", &c, n);
        walk.check(t.all_from(&[TEST.prefix]), &format!("test client: {t}"));
        even_check(walk, "test client", &t, n);
    }

    walk.step(
        "restore central: its 9 servers start, then their entries return (seed step 7)",
        "requests from the central-pp-rs cluster should be routed back to the local services",
    );
    for i in 1..=9 {
        start_server(lab, &CENTRAL, i).await?;
    }
    let from = central.now();
    apply_both(walk, lab, &folders, "6-central-restored", "server-central.yaml", START[4].1).await?;
    let took = central.settle(walk, from, SWITCH_LIMIT, |s| s.all_from(&[CENTRAL.prefix])).await;
    super::report_switch(walk, &central, from, took, "central's clients back to central-pp-rs");
    let (c, t) = watch_both(walk, &central, &test, WATCH).await;
    walk.check(c.all_from(&[CENTRAL.prefix]), &format!("central client: {c}"));
    walk.check(t.all_from(&[TEST.prefix]), &format!("test client: {t}"));
    split_figure(walk, &c, &t);

    walk.step(
        "install the FailoverPolicy with inverted priorityLabels and the AVG label (seed step 8)",
        "the inverted policy prioritizes mesh.opentable.com/serves-central-pp-rs over topology.istio.io/subzone (=avg), which changes the routing: central's clients now prefer the servers in AVG (test-pp-rs) that serve central",
    );
    let from = central.now();
    apply_both(walk, lab, &folders, "7-inverted-with-avg", "policy-for-central.yaml", POLICY_INVERTED).await?;
    let took = central.settle(walk, from, SWITCH_LIMIT, |s| s.all_from(&[TEST.prefix])).await;
    super::report_switch(walk, &central, from, took, "central's clients to the AVG servers");
    let table = tiers(lab.node(CENTRAL.cluster)?, CENTRAL.host);
    walk.check(
        table.len() == 2 && table[0].iter().all(|c| c == TEST.cluster) && table[1].iter().all(|c| c == CENTRAL.cluster),
        &format!("central's priorities: {}", show_tiers(&table)),
    );
    let (c, t) = watch_both(walk, &central, &test, WATCH).await;
    walk.check(c.all_from(&[TEST.prefix]), &format!("central client: {c}"));
    walk.check(t.all_from(&[TEST.prefix]), &format!("test client: {t}"));
    split_figure(walk, &c, &t);

    let c = central.stop(walk).await;
    let t = test.stop(walk).await;
    walk.check(c.errors == 0 && t.errors == 0, &format!("whole walk: central client {c}; test client {t}"));
    Ok(())
}

async fn start_server(lab: &mut Lab, side: &Side, i: u8) -> Result<(), String> {
    let (name, addr) = side.server(i);
    lab.backend_at(&name, addr).await.map(|_| ())
}

/// Writes `file` (as `STEPS/step/file` holds it) in both nodes' folders and waits until each
/// node has applied it.
async fn apply_both(walk: &mut Walk, lab: &Lab, folders: &[PathBuf], step: &str, file: &str, contents: &str) -> Result<(), String> {
    walk.info(&format!("both nodes: {file} as in {STEPS}/{step}"));
    for (side, dir) in [CENTRAL, TEST].iter().zip(folders) {
        lab.apply(side.cluster, || lab.write(dir, file, contents)).await?;
    }
    Ok(())
}

/// Both clients over the same `d`.
async fn watch_both(walk: &mut Walk, a: &Traffic, b: &Traffic, d: Duration) -> (Split, Split) {
    let from = (a.now(), b.now());
    a.watch(walk, d).await;
    (a.since(from.0), b.since(from.1))
}

/// Records where each client's requests went, by cluster.
fn split_figure(walk: &mut Walk, central: &Split, test: &Split) {
    let by_cluster = |s: &Split| {
        let c = s.share(|name| name.starts_with(CENTRAL.prefix)) * 100.0;
        let t = s.share(|name| name.starts_with(TEST.prefix)) * 100.0;
        format!("{c:.0}% central-pp-rs / {t:.0}% test-pp-rs")
    };
    walk.figure(&format!("central client {}; test client {}", by_cluster(central), by_cluster(test)));
}

/// Checks that `n` endpoints share `split` evenly: each within four standard deviations of an
/// even share (the node picks at random, weighted), and no other backend answered.
fn even_check(walk: &mut Walk, who: &str, split: &Split, n: u8) {
    let n = usize::from(n);
    let p = 1.0 / n as f64;
    let expected = split.total as f64 * p;
    let tolerance = 4.0 * (split.total as f64 * p * (1.0 - p)).sqrt() + 1.0;
    let counts: Vec<usize> = split.by_backend.values().copied().collect();
    let ok = counts.len() == n && counts.iter().all(|&k| (k as f64 - expected).abs() <= tolerance);
    let shares: Vec<String> = counts.iter().map(|&k| format!("{:.0}%", k as f64 * 100.0 / split.total.max(1) as f64)).collect();
    walk.check(ok, &format!("{who} split over {} endpoints: {} (even: {:.1}% each)", counts.len(), shares.join(" "), p * 100.0));
    walk.figure(&format!("{who}: {} endpoints, {}", counts.len(), shares.join("/")));
}

/// The clusters of each priority of `host`'s table in `node`'s live routes (its `/routes`).
fn tiers(node: &Node, host: &str) -> Vec<Vec<String>> {
    let routes = serde_json::to_value(node.snapshot().reports()).unwrap_or_default();
    let report = routes.as_array().into_iter().flatten().find(|r| r["host"] == host);
    let priorities = report.and_then(|r| r["priorities"].as_array()).cloned().unwrap_or_default();
    priorities
        .iter()
        .map(|p| {
            let mut clusters: Vec<String> =
                p["endpoints"].as_array().into_iter().flatten().filter_map(|e| e["cluster"].as_str().map(String::from)).collect();
            clusters.sort();
            clusters.dedup();
            clusters
        })
        .collect()
}

fn show_tiers(tiers: &[Vec<String>]) -> String {
    if tiers.is_empty() {
        return "none".into();
    }
    tiers.iter().enumerate().map(|(i, t)| format!("P{i} {}", t.join("+"))).collect::<Vec<_>>().join(", ")
}
