//! Control-plane scale, memory: the peak heap each operation needs and the heap its result
//! keeps, for the mesh `control_plane` times (`cargo bench -p veer-bench`).
//!
//! Measured with a counting global allocator over the system allocator: peak above the heap in
//! use when the operation starts; retained = the size of its result. Set
//! `VEER_BENCH_FULL_MESH=1` to add every service in every cluster (100,000 endpoints).

use peak_alloc::PeakAlloc;
use veer_gateway::snapshot::Unhealthy;

mod common;
use common::{cluster_down_tables, full_mesh, issue, snapshot, snapshot_all_nodes, tables_all_clients, tables_for, Prepared, NODE};

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

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
    // `cargo test --benches` runs this with --test: nothing to check then.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    memory_report("mesh (the issue's scale)", issue());
    if let Some(p) = full_mesh() {
        memory_report("full mesh", p);
    }
}
