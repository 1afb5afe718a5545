//! Seed 003's walkthrough (Istio locality failover): two clusters on two networks, each with a
//! veer node, meshed over east-west mTLS with a PKI made on the spot (a shared root, an
//! intermediate per cluster). helloworld-v1 runs in cluster1, v2 in cluster2; a client in
//! cluster1 sees only v1 until cluster2's AUTO_PASSTHROUGH Gateway exposes v2, then both; the
//! DestinationRule keeps it on v1 (region1) and fails over to v2 (region2) when v1 is scaled to
//! 0, and back when v1 returns.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use veer_control::events::EventKind;
use veer_node::node::{MeshConfig, Node, NodeConfig};

use super::{Lab, Split, Traffic, Walk, WalkOptions};

/// The seed's resources as shipped in `examples/003-istio-locality-failover` (its starting
/// state) and `examples/steps/003-istio-locality-failover` (what later steps apply).
const SEED: &str = include_str!("../../../../examples/003-istio-locality-failover/seed.yaml");
const TOPOLOGY: &str = include_str!("../../../../examples/003-istio-locality-failover/topology.yaml");
const V1_ENTRY: &str = include_str!("../../../../examples/003-istio-locality-failover/helloworld-v1.yaml");
const V2_ENTRY: &str = include_str!("../../../../examples/003-istio-locality-failover/helloworld-v2.yaml");
const EXPOSE: &str = include_str!("../../../../examples/steps/003-istio-locality-failover/2-expose-helloworld/seed-expose-helloworld.yaml");
const RULE: &str = include_str!("../../../../examples/steps/003-istio-locality-failover/3-destination-rule/seed-destination-rule.yaml");

/// The pods the seed's output names, at the WorkloadEntry addresses of the example.
const V1: (&str, Ipv4Addr) = ("helloworld-v1-69ff8fc747-vlzg9", Ipv4Addr::new(127, 0, 2, 1));
const V2: (&str, Ipv4Addr) = ("helloworld-v2-779454bb5f-4z665", Ipv4Addr::new(127, 0, 2, 2));
const PORT: u16 = 5000;
/// Each node's loopback address (its east-west listener is on port 15443 there, as the
/// example's Clusters say; gateway and admin take any free port).
const NODES: [(&str, Ipv4Addr); 2] = [("cluster1", Ipv4Addr::new(127, 0, 3, 1)), ("cluster2", Ipv4Addr::new(127, 0, 3, 2))];
/// What the seed's `curl helloworld.sample:5000/hello` sends.
const HOST: &str = "helloworld.sample:5000";
const SERVICE: &str = "helloworld.sample.svc.cluster.local:5000";
const SWITCH_LIMIT: Duration = Duration::from_secs(15);

pub async fn walk(walk: &mut Walk, lab: &mut Lab, opts: WalkOptions) -> Result<(), String> {
    walk.step(
        "deploy: two clusters on two networks, a shared root CA with an intermediate per cluster, east-west gateways, helloworld-v1 in cluster1 and v2 in cluster2",
        "control planes ready in each cluster, each trusting the other's intermediate through the shared root",
    );
    // What Kubernetes and `openssl` did in the seed: the shared root and one intermediate per
    // cluster (plus each node's certificate), the manifests, the two pods.
    let certs = lab.folder("certs")?;
    veer_pki::create_mesh(&certs, &["cluster1", "cluster2"]).map_err(|e| format!("cannot make the mesh's certificates: {e}"))?;
    walk.info(&format!(
        "PKI made with `veer pki mesh`: a shared root, and for cluster1 and cluster2 an intermediate and a node certificate, in {}",
        certs.display()
    ));
    lab.backend_at(V1.0, SocketAddr::from((V1.1, PORT))).await?;
    lab.backend_at(V2.0, SocketAddr::from((V2.1, PORT))).await?;
    let dir = lab.folder("manifests")?;
    lab.write(&dir, "seed.yaml", SEED)?;
    lab.write(&dir, "topology.yaml", TOPOLOGY)?;
    lab.write(&dir, "helloworld-v1.yaml", V1_ENTRY)?;
    lab.write(&dir, "helloworld-v2.yaml", V2_ENTRY)?;

    // cluster2 first, so cluster1's node finds its peer listening.
    for (cluster, ip) in NODES.iter().rev() {
        let mut cfg = NodeConfig::new(vec![dir.clone()], cluster);
        cfg.listen = Some(SocketAddr::from((*ip, 0)));
        cfg.admin = Some(SocketAddr::from((*ip, 0)));
        cfg.mesh = Some(MeshConfig { certs: certs.join(cluster), aging: Default::default(), east_west: None });
        let node = lab.start_node(cluster, cfg).await?;
        let (listen, east_west) = (node.listen, node.east_west.map(|a| a.to_string()).unwrap_or_default());
        let network = if *cluster == "cluster1" { "network1, region1" } else { "network2, region2" };
        walk.info(&format!("veer node of {cluster} ({network}): gateway {listen}, east-west mTLS listener {east_west}"));
    }
    walk.info(&format!("backends: {} (cluster1) on {}:{PORT}, {} (cluster2) on {}:{PORT}", V1.0, V1.1, V2.0, V2.1));
    let heard = peer_connected(lab.node("cluster1")?, "cluster2", Duration::from_secs(10)).await;
    walk.check(
        heard,
        if heard {
            "cluster1's node is connected to cluster2's over mTLS (peer_recovered: cluster cluster2 is connected)"
        } else {
            "cluster1's node never heard cluster2's"
        },
    );

    let gateway = lab.node("cluster1")?.listen;
    let client = Traffic::start("sleep in cluster1", gateway, HOST, "/hello", opts.rate);

    walk.step(
        "curl helloworld.sample:5000/hello from cluster1 (before the east-west exposure)",
        "responses only from helloworld-v1 deployed in cluster-1",
    );
    let split = client.watch(walk, Duration::from_secs(2)).await;
    walk.check(split.all_from(&["helloworld-v1-"]), &format!("{split}"));
    walk.figure(&format!("split: {}", shares(&split)));
    // v2 is not left out because cluster2 is silent: its node announced v2, and cluster1 keeps
    // it out of the table because nothing exposes it to network1.
    let table = endpoints(lab.node("cluster1")?);
    let only_v1 = table == [(V1.1, "cluster1".to_string())];
    walk.check(only_v1, &format!("cluster1's table for {SERVICE}: {}; v2 is unreachable, not exposed to network1", describe(&table)));

    walk.step(
        "apply the cross-network-gateway Gateway in cluster2 (AUTO_PASSTHROUGH on 15443 for helloworld.sample.svc.cluster.local)",
        "responses from both clusters: helloworld-v2 and helloworld-v1",
    );
    let at = client.now();
    lab.apply_all(&["cluster1", "cluster2"], || lab.write(&dir, "seed-expose-helloworld.yaml", EXPOSE)).await?;
    walk.figure(&format!("both nodes applied the Gateway {:.0} ms after it was written", (client.now() - at).as_secs_f64() * 1000.0));
    let table = endpoints(lab.node("cluster1")?);
    walk.check(
        table == [(V1.1, "cluster1".to_string()), (V2.1, "cluster2".to_string())],
        &format!("cluster1's table for {SERVICE}: {}", describe(&table)),
    );
    let both = |s: &Split| {
        s.errors == 0 && s.share(|n| n.starts_with("helloworld-v1-")) >= 0.2 && s.share(|n| n.starts_with("helloworld-v2-")) >= 0.2
    };
    let took = client.settle(walk, at, SWITCH_LIMIT, both).await;
    if let Some(first) = client.first_from(at, |n| n.starts_with("helloworld-v2-")) {
        walk.figure(&format!(
            "first answer from helloworld-v2 (through cluster2's east-west listener) {:.0} ms after the Gateway was written",
            first.as_secs_f64() * 1000.0
        ));
    }
    match took {
        Some(d) => {
            let during = client.split(at, at + d + super::traffic::WINDOW);
            walk.check(during.errors == 0, &format!("while v2 joined: {during}"));
        }
        None => {
            walk.check(false, &format!("helloworld-v2 did not join within {SWITCH_LIMIT:?}: lately {}", client.lately()));
        }
    }
    let split = client.watch(walk, Duration::from_secs(2)).await;
    let v1 = split.share(|n| n.starts_with("helloworld-v1-"));
    let v2 = split.share(|n| n.starts_with("helloworld-v2-"));
    walk.check(split.errors == 0 && (0.3..=0.7).contains(&v1) && (0.3..=0.7).contains(&v2) && v1 + v2 >= 1.0, &format!("{split}"));
    walk.figure(&format!("split: {}", shares(&split)));

    walk.step(
        "apply the DestinationRule in cluster1 (localityLbSetting failover region1 → region2, outlierDetection)",
        "traffic is being sent to helloworld-v1",
    );
    let at = client.now();
    lab.apply_all(&["cluster1", "cluster2"], || lab.write(&dir, "seed-destination-rule.yaml", RULE)).await?;
    let took = client.settle(walk, at, SWITCH_LIMIT, |s| s.all_from(&["helloworld-v1-"])).await;
    super::report_switch(walk, &client, at, took, "to helloworld-v1 only");
    let split = client.watch(walk, Duration::from_secs(2)).await;
    walk.check(split.all_from(&["helloworld-v1-"]), &format!("{split}"));
    walk.figure(&format!("split: {}", shares(&split)));

    walk.step(
        "kubectl scale deployment helloworld-v1 --replicas=0 in cluster1 (its pod stops, its endpoint goes)",
        "responses from cluster-2: helloworld-v2",
    );
    let at = client.now();
    // The pod dies first, then Kubernetes withdraws its endpoint: the worst order for clients.
    lab.remove_backend(V1.0).await;
    lab.apply_all(&["cluster1", "cluster2"], || lab.remove(&dir, "helloworld-v1.yaml")).await?;
    let table = endpoints(lab.node("cluster1")?);
    walk.check(table == [(V2.1, "cluster2".to_string())], &format!("cluster1's table for {SERVICE}: {}", describe(&table)));
    let took = client.settle(walk, at, SWITCH_LIMIT, |s| s.all_from(&["helloworld-v2-"])).await;
    super::report_switch(walk, &client, at, took, "to helloworld-v2 (fail over)");
    let split = client.watch(walk, Duration::from_secs(2)).await;
    walk.check(split.all_from(&["helloworld-v2-"]), &format!("{split}"));
    walk.figure(&format!("split: {}", shares(&split)));

    walk.step(
        "kubectl scale deployment helloworld-v1 --replicas=1 in cluster1 (its pod starts, its endpoint returns)",
        "responses from cluster-1 again",
    );
    let at = client.now();
    lab.backend_at(V1.0, SocketAddr::from((V1.1, PORT))).await?;
    lab.apply_all(&["cluster1", "cluster2"], || lab.write(&dir, "helloworld-v1.yaml", V1_ENTRY)).await?;
    let took = client.settle(walk, at, SWITCH_LIMIT, |s| s.all_from(&["helloworld-v1-"])).await;
    super::report_switch(walk, &client, at, took, "back to helloworld-v1 (fail back)");
    let split = client.watch(walk, Duration::from_secs(2)).await;
    walk.check(split.all_from(&["helloworld-v1-"]), &format!("{split}"));
    walk.figure(&format!("split: {}", shares(&split)));

    let total = client.stop(walk).await;
    walk.check(total.errors == 0, &format!("whole walk: {total}"));
    Ok(())
}

/// Waits until `node` records that `peer` is connected (its first catalog arrived over mTLS).
async fn peer_connected(node: &Node, peer: &str, limit: Duration) -> bool {
    let deadline = crate::clock::now() + limit;
    let wanted = format!("cluster {peer} is connected");
    loop {
        if node.events.all().iter().any(|e| e.kind == EventKind::PeerRecovered && e.reason.contains(&wanted)) {
            return true;
        }
        if crate::clock::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The endpoints (address, cluster) of the helloworld destination in `node`'s live table.
fn endpoints(node: &Node) -> Vec<(Ipv4Addr, String)> {
    let snap = node.snapshot();
    let Some(d) = snap.destinations.iter().find(|d| d.key.starts_with(SERVICE)) else { return Vec::new() };
    let mut out: Vec<(Ipv4Addr, String)> = d
        .endpoints
        .iter()
        .filter_map(|e| match e.address {
            veer_core::topology::Address::Socket(std::net::SocketAddr::V4(a)) => Some((*a.ip(), e.cluster.to_string())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn describe(table: &[(Ipv4Addr, String)]) -> String {
    if table.is_empty() {
        return "no endpoints".into();
    }
    table.iter().map(|(ip, c)| format!("{ip}:{PORT} ({c})")).collect::<Vec<_>>().join(", ")
}

/// "v1 51% / v2 49%".
fn shares(split: &Split) -> String {
    let v1 = split.share(|n| n.starts_with("helloworld-v1-")) * 100.0;
    let v2 = split.share(|n| n.starts_with("helloworld-v2-")) * 100.0;
    format!("v1 {v1:.0}% / v2 {v2:.0}% of {} requests, {} errors", split.total, split.errors)
}
