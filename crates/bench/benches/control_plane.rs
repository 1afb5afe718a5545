//! Control-plane scale: how long veer takes, and how much memory it needs, to turn a large mesh
//! into priority tables and routing snapshots (`cargo bench -p veer-bench`).
//!
//! The mesh is [`Scale::ISSUE`]: 50 clusters, 200 services, 10 endpoints per service in each
//! of the 5 clusters that run it, 10,000 endpoints, Istio locality failover on every service.
//! Set `VEER_BENCH_FULL_MESH=1` to add every service in every cluster (100,000 endpoints) to
//! the one-run report printed first.
//!
//! - `tables_*`: `veer_core::table::build` alone, over destinations resolved beforehand (all
//!   clusters share one network, so a service resolves to the same endpoints for every client).
//! - `snapshot_*`: `veer_proxy::snapshot::Snapshot::build`, what a node does on every change:
//!   resolve every host, build its table, pick weights and explain report.
//! - `cluster_down_*`: one cluster's endpoints all fail (c01, in the node's region): the
//!   snapshot veer rebuilds (it has no partial update), and the least work possible (only the
//!   tables of the destinations with endpoints there, for one client).
//!
//! Before the timings, a table of peak heap per operation is printed, measured with a counting
//! global allocator (peak above the heap in use when the operation starts; retained = the size
//! of its result).

use std::sync::OnceLock;

use divan::Bencher;
use peak_alloc::PeakAlloc;
use veer_bench::{cluster_name, service_host, world, Scale};
use veer_core::table::{self, Table};
use veer_core::topology::{Client, Health, Labels};
use veer_model::resolve::{self, Destination};
use veer_model::set::ManifestSet;
use veer_proxy::snapshot::{Snapshot, Unhealthy};

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

/// The node whose snapshot is built, and the cluster that fails.
const NODE: usize = 0;
const FAILED: usize = 1;

struct Prepared {
    scale: Scale,
    sources: Vec<(String, String)>,
    set: ManifestSet,
    clients: Vec<Client>,
    dests: Vec<Destination>,
    /// Snapshot destination key -> endpoint keys in the failed cluster.
    down: Unhealthy,
}

fn prepare(scale: Scale) -> Prepared {
    let sources = world(scale);
    let loaded = veer_model::from_sources(&sources);
    assert!(!loaded.diagnostics.has_errors(), "the generated mesh has errors: {:?}", loaded.diagnostics.into_sorted().first().map(ToString::to_string));
    let set = loaded.set;
    let clients: Vec<Client> = (0..scale.clusters).map(|c| resolve::client(&set, &cluster_name(c), &Labels::new()).expect("client")).collect();
    let dests: Vec<Destination> = (0..scale.services).map(|s| resolve::resolve(&set, &service_host(s), Some(80), &cluster_name(NODE), "").expect("resolves")).collect();
    let failed = cluster_name(FAILED);
    let mut down = Unhealthy::new();
    for d in &dests {
        let keys: Vec<String> = d.endpoints.iter().filter(|e| e.cluster == failed).map(|e| e.address.to_string()).collect();
        if !keys.is_empty() {
            down.insert(format!("{}:{}", d.host, d.port), keys);
        }
    }
    assert!(!down.is_empty(), "the failed cluster runs no service");
    Prepared { scale, sources, set, clients, dests, down }
}

fn issue() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| prepare(Scale::ISSUE))
}

fn full_mesh() -> Option<&'static Prepared> {
    static P: OnceLock<Option<Prepared>> = OnceLock::new();
    P.get_or_init(|| std::env::var_os("VEER_BENCH_FULL_MESH").filter(|v| v != "0").map(|_| prepare(Scale::FULL_MESH))).as_ref()
}

// --- the operations --------------------------------------------------------------------

fn tables_for(p: &Prepared, client: &Client) -> Vec<Table> {
    p.dests.iter().map(|d| table::build(client, &d.endpoints, &d.rule, d.resilience.load, d.weighting)).collect()
}

fn tables_all_clients(p: &Prepared) -> Vec<Vec<Table>> {
    p.clients.iter().map(|c| tables_for(p, c)).collect()
}

fn snapshot(p: &Prepared, node: usize, unhealthy: &Unhealthy) -> Snapshot {
    Snapshot::build(&p.set, &cluster_name(node), &Labels::new(), unhealthy, 1).expect("snapshot")
}

fn snapshot_all_nodes(p: &Prepared) -> Vec<Snapshot> {
    (0..p.scale.clusters).map(|n| snapshot(p, n, &Unhealthy::new())).collect()
}

/// Only the destinations with endpoints in the failed cluster, their endpoints marked down.
fn cluster_down_tables(p: &Prepared, client: &Client) -> Vec<Table> {
    let failed = cluster_name(FAILED);
    p.dests
        .iter()
        .filter(|d| d.endpoints.iter().any(|e| e.cluster == failed))
        .map(|d| {
            let mut endpoints = d.endpoints.clone();
            for e in endpoints.iter_mut().filter(|e| e.cluster == failed) {
                e.health = Health::Unhealthy;
            }
            table::build(client, &endpoints, &d.rule, d.resilience.load, d.weighting)
        })
        .collect()
}

// --- memory ------------------------------------------------------------------------------

fn measure<T>(name: &str, op: impl FnOnce() -> T) {
    PEAK.reset_peak_usage();
    let before = PEAK.current_usage();
    let start = std::time::Instant::now();
    let out = op();
    let took = start.elapsed();
    let retained = PEAK.current_usage().saturating_sub(before);
    let peak = PEAK.peak_usage().saturating_sub(before);
    drop(out);
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!("{name:<52} {:>10.1} {:>12.1} {:>10.1}", mib(peak), mib(retained), took.as_secs_f64() * 1e3);
}

fn memory_report(label: &str, p: &Prepared) {
    println!("\n{label}: {} clusters, {} services, {} endpoints", p.scale.clusters, p.scale.services, p.scale.endpoints());
    println!("{:<52} {:>10} {:>12} {:>10}", "operation (one run)", "peak MiB", "retained MiB", "once ms");
    measure("parse and check manifests (from_sources)", || veer_model::from_sources(&p.sources));
    measure("tables, all clients (table::build only)", || tables_all_clients(p));
    measure("tables, one client", || tables_for(p, &p.clients[NODE]));
    measure("snapshot, one node (Snapshot::build)", || snapshot(p, NODE, &Unhealthy::new()));
    measure("snapshot, every node", || snapshot_all_nodes(p));
    measure("cluster down: snapshot, one node", || snapshot(p, NODE, &p.down));
    measure("cluster down: affected tables, one client", || cluster_down_tables(p, &p.clients[NODE]));
    let held = PEAK.current_usage();
    println!("{:<52} {:>10.1}", "(heap held by the prepared mesh, MiB)", held as f64 / (1024.0 * 1024.0));
}

fn main() {
    // `cargo test --benches` runs this with --test: keep it quick then.
    let testing = std::env::args().any(|a| a == "--test");
    if !testing {
        memory_report("mesh (the issue's scale)", issue());
        if let Some(p) = full_mesh() {
            memory_report("full mesh", p);
        }
        println!();
    }
    divan::main();
}

// --- timings -------------------------------------------------------------------------------

#[divan::bench(sample_count = 10, sample_size = 1)]
fn parse_and_check_manifests(b: Bencher) {
    let p = issue();
    b.bench(|| veer_model::from_sources(&p.sources));
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

/// What the control loop does now when a cluster fails: `Snapshot::with_health` rebuilds only
/// the destinations whose health changed and shares the rest with the previous snapshot.
#[divan::bench(sample_count = 50)]
fn cluster_down_incremental_one_node(b: Bencher) {
    let p = issue();
    let base = snapshot(p, NODE, &Unhealthy::new());
    let changed: std::collections::HashSet<String> = p.down.keys().cloned().collect();
    b.bench(|| base.with_health(&p.down, &changed, 2));
}

#[divan::bench(sample_count = 50)]
fn cluster_down_tables_one_client(b: Bencher) {
    let p = issue();
    b.bench(|| cluster_down_tables(p, &p.clients[NODE]));
}
