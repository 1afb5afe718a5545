//! Control-plane scale, time: how long veer takes to turn a large mesh into priority tables and
//! routing snapshots (`cargo bench -p veer-bench`; `control_plane_memory` weighs the same work).
//!
//! The mesh is [`Scale::ISSUE`]: 50 clusters, 200 services, 10 endpoints per service in each
//! of the 5 clusters that run it, 10,000 endpoints, Istio locality failover on every service.
//!
//! - `tables_*`: `veer_core::table::build` alone, over destinations resolved beforehand (all
//!   clusters share one network, so a service resolves to the same endpoints for every client).
//! - `snapshot_*`: `veer_gateway::snapshot::Snapshot::build`, what a node does at start and for
//!   every destination a reload changes: resolve every host, build its table, pick weights and
//!   explain report.
//! - `reload_unchanged_one_node`: a reload that changes no destination
//!   (`Snapshot::build_after`): every host is resolved again and every state kept.
//! - `cluster_down_*`: one cluster's endpoints all fail (c01, in the node's region): the
//!   snapshot veer rebuilds (it has no partial update), and the least work possible (only the
//!   tables of the destinations with endpoints there, for one client).
//!
//! Timed with mimalloc, the allocator the `veer` binary runs with. The peak heap of each
//! operation is `control_plane_memory`'s, which needs a counting allocator of its own.

use divan::Bencher;

mod common;
use common::{cluster_down_tables, issue, snapshot, snapshot_all_nodes, tables_all_clients, tables_for, NODE};
use std::sync::Arc;

use veer_core::topology::Labels;
use veer_gateway::snapshot::{Snapshot, Unhealthy, Warming};
use veer_model::resolve::View;

// glibc's allocator hands the tables' tens of MiB back to the kernel after every run and faults
// them in again on the next, which is a fifth of these timings and nothing veer does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn parse_and_check_manifests(b: Bencher) {
    let p = issue();
    b.bench(|| veer_model::from_sources(&p.sources));
}

/// What a node reading an API server checks after every change of its objects: 5,000 Services
/// and a DestinationRule for each, as `veer_kube` renders them (one JSON document per object,
/// with the server's metadata). Rules × Services once cost 27 s here (debug build).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn parse_and_check_api_objects(b: Bencher) {
    let cluster = r#"{"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "c1", "namespace": "default"}, "spec": {"locality": {"region": "r1"}}}"#;
    let mut sources = vec![("kubernetes:Cluster/default/c1".to_string(), cluster.to_string())];
    for i in 0..5000 {
        let ns = format!("ns-{}", i % 50);
        let service = format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "svc-{i}", "namespace": "{ns}", "uid": "0-{i}", "labels": {{"app": "svc-{i}", "topology.istio.io/cluster": "c1"}}}},
  "spec": {{"ports": [{{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}}], "selector": {{"app": "svc-{i}"}}, "clusterIP": "None"}}}}"#
        );
        let rule = format!(
            r#"{{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {{"name": "dr-{i}", "namespace": "{ns}", "uid": "1-{i}", "generation": 1}},
  "spec": {{"host": "svc-{i}.{ns}.svc.cluster.local", "trafficPolicy": {{"loadBalancer": {{"localityLbSetting": {{"enabled": true}}}}, "outlierDetection": {{"consecutive5xxErrors": 1}}}}}}}}"#
        );
        sources.push((format!("kubernetes:Service/{ns}/svc-{i}"), service));
        sources.push((format!("kubernetes:DestinationRule/{ns}/dr-{i}"), rule));
    }
    b.bench(|| veer_model::from_sources(&sources));
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn tables_every_client(b: Bencher) {
    let p = issue();
    b.bench(|| tables_all_clients(p));
}

#[divan::bench(sample_count = 50)]
fn tables_one_client(b: Bencher) {
    let p = issue();
    b.bench(|| tables_for(p, &p.clients[NODE]));
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn snapshot_one_node(b: Bencher) {
    let p = issue();
    b.bench(|| snapshot(p, NODE, &Unhealthy::new()));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn snapshot_every_node(b: Bencher) {
    let p = issue();
    b.bench(|| snapshot_all_nodes(p));
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn cluster_down_snapshot_one_node(b: Bencher) {
    let p = issue();
    b.bench(|| snapshot(p, NODE, &p.down));
}

/// A reload whose manifests resolve as before: the destinations are resolved and compared with
/// the previous snapshot's, whose states are kept.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn reload_unchanged_one_node(b: Bencher) {
    let p = issue();
    let base = snapshot(p, NODE, &Unhealthy::new());
    let cluster = veer_bench::cluster_name(NODE);
    b.bench(|| {
        Snapshot::build_after(
            &base,
            View::new(&p.set, &p.inventory),
            &cluster,
            &Labels::new(),
            &Unhealthy::new(),
            &Warming::new(),
            Arc::default(),
            2,
        )
        .expect("snapshot")
    });
}

/// What the control loop does now when a cluster fails: `Snapshot::with_health` rebuilds only
/// the destinations whose health changed and shares the rest with the previous snapshot.
#[divan::bench(sample_count = 50)]
fn cluster_down_incremental_one_node(b: Bencher) {
    let p = issue();
    let base = snapshot(p, NODE, &Unhealthy::new());
    let changed: std::collections::HashSet<veer_core::names::DestinationName> = p.down.keys().cloned().collect();
    b.bench(|| base.with_health(&p.down, &Warming::new(), &changed, 2));
}

#[divan::bench(sample_count = 50)]
fn cluster_down_tables_one_client(b: Bencher) {
    let p = issue();
    b.bench(|| cluster_down_tables(p, &p.clients[NODE]));
}
