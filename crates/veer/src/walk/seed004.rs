//! Seed 004's walkthrough (Envoy Gateway fallback): an HTTPRoute with an active Backend and a
//! `fallback: true` one; the active server moves to another port, traffic goes to the passive
//! one without a client error, and comes back when the active one listens again.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use veer_node::node::NodeConfig;

use super::{Lab, Traffic, Walk, WalkOptions};

/// The seed's resources, as shipped in `examples/004-envoy-gateway-fallback`.
const SEED: &str = include_str!("../../../../examples/004-envoy-gateway-fallback/seed.yaml");
/// Its cluster without Kubernetes: the gateway and one WorkloadEntry per Deployment's pod.
const TOPOLOGY: &str = include_str!("../../../../examples/004-envoy-gateway-fallback/topology.yaml");

/// The pods the seed's output names, at the WorkloadEntry addresses of `TOPOLOGY`.
const ACTIVE: (&str, Ipv4Addr) = ("active-8cf8787d5-klpgv", Ipv4Addr::new(127, 0, 0, 11));
const PASSIVE: (&str, Ipv4Addr) = ("passive-f894bd7cf-8gkqr", Ipv4Addr::new(127, 0, 0, 12));
/// The Services' port, and the one the seed moves the active server to.
const PORT: u16 = 3000;
const MOVED_PORT: u16 = 5000;
const HOST: &str = "www.example.com";
/// The longest a switch may take before the step counts as failed.
const SWITCH_LIMIT: Duration = Duration::from_secs(15);

pub async fn walk(walk: &mut Walk, lab: &mut Lab, opts: WalkOptions) -> Result<(), String> {
    lab.backend_at(ACTIVE.0, SocketAddr::from((ACTIVE.1, PORT))).await?;
    lab.backend_at(PASSIVE.0, SocketAddr::from((PASSIVE.1, PORT))).await?;
    let dir = lab.folder("local")?;
    lab.write(&dir, "seed.yaml", SEED)?;
    lab.write(&dir, "topology.yaml", TOPOLOGY)?;
    let mut cfg = NodeConfig::new(vec![dir], "local");
    cfg.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    cfg.admin = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let gateway = lab.start_node("local", cfg).await?.listen;
    walk.info(&format!("veer node for cluster `local` on {gateway}: HTTPRoute ha-failover, {HOST}/test → Backend active (priority 0), Backend passive (fallback)"));
    walk.info(&format!("backends: {} on {}:{PORT}, {} on {}:{PORT}", ACTIVE.0, ACTIVE.1, PASSIVE.0, PASSIVE.1));

    let client = Traffic::start("client", gateway, HOST, "/test", opts.rate);

    walk.step("curl www.example.com/test through the gateway", "they all go to the active backend");
    let split = client.watch(walk, Duration::from_secs(2)).await;
    walk.check(split.all_from(&["active-"]), &format!("{split}"));

    walk.step("the active server moves to port 5000 (its pod lives on; nothing listens on 3000)", "they all go to the passive backend");
    let moved_at = client.now();
    lab.remove_backend(ACTIVE.0).await;
    lab.backend_at("active-8cf8787d5-klpgv:5000", SocketAddr::from((ACTIVE.1, MOVED_PORT))).await?;
    let took = client.settle(walk, moved_at, SWITCH_LIMIT, |s| s.all_from(&["passive-"])).await;
    super::report_switch(walk, &client, moved_at, took, "to passive");
    let split = client.watch(walk, Duration::from_secs(2)).await;
    walk.check(split.all_from(&["passive-"]), &format!("{split}"));

    walk.step(
        "the active server listens on 3000 again (beyond the seed: veer moves traffic back by itself)",
        "they all go to the active backend again, once its ejection ends (baseEjectionTime 10s)",
    );
    let back_at = client.now();
    lab.remove_backend("active-8cf8787d5-klpgv:5000").await;
    lab.backend_at(ACTIVE.0, SocketAddr::from((ACTIVE.1, PORT))).await?;
    let took = client.settle(walk, back_at, SWITCH_LIMIT * 2, |s| s.all_from(&["active-"])).await;
    super::report_switch(walk, &client, back_at, took, "back to active");

    let total = client.stop(walk).await;
    walk.check(total.errors == 0, &format!("whole walk: {total}"));
    Ok(())
}
