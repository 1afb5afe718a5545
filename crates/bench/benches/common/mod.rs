//! The mesh both control-plane benchmarks measure, and the operations they time or weigh.

use std::sync::OnceLock;

use veer_bench::{cluster_name, service_host, world, Scale};
use veer_core::table::{self, Table};
use veer_core::topology::EndpointKey;
use veer_core::topology::{Client, Health, Labels};
use veer_gateway::snapshot::{Snapshot, Unhealthy};
use veer_model::inventory::Inventory;
use veer_model::resolve::{self, Destination, View};
use veer_model::set::ManifestSet;

/// The node whose snapshot is built, and the cluster that fails.
pub const NODE: usize = 0;
pub const FAILED: usize = 1;

pub struct Prepared {
    pub scale: Scale,
    pub sources: Vec<(String, String)>,
    pub set: ManifestSet,
    /// The set's WorkloadEntries, as a node without peers routes to them.
    pub inventory: Inventory,
    pub clients: Vec<Client>,
    pub dests: Vec<Destination>,
    /// Snapshot destination key -> endpoint keys in the failed cluster.
    pub down: Unhealthy,
}

pub fn prepare(scale: Scale) -> Prepared {
    let sources = world(scale);
    let set = match veer_model::from_sources(&sources) {
        Ok(accepted) => accepted.into_set(),
        Err(rejected) => panic!("the generated mesh has errors: {:?}", rejected.errors().next().map(ToString::to_string)),
    };
    let inventory = Inventory::from_manifests(&set);
    let clients: Vec<Client> =
        (0..scale.clusters).map(|c| resolve::client(&set, &cluster_name(c), &Labels::new()).expect("client")).collect();
    let dests: Vec<Destination> = (0..scale.services)
        .map(|s| resolve::resolve(View::new(&set, &inventory), &service_host(s), Some(80), &cluster_name(NODE), "").expect("resolves"))
        .collect();
    let failed = cluster_name(FAILED);
    let mut down = Unhealthy::new();
    for d in &dests {
        let keys: Vec<EndpointKey> =
            d.endpoints.iter().filter(|e| e.cluster == failed).map(|e| EndpointKey::new(e.address.clone())).collect();
        if !keys.is_empty() {
            down.insert(format!("{}:{}", d.host, d.port).into(), keys);
        }
    }
    assert!(!down.is_empty(), "the failed cluster runs no service");
    Prepared { scale, sources, set, inventory, clients, dests, down }
}

pub fn issue() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| prepare(Scale::ISSUE))
}

#[allow(dead_code)] // only the memory report offers the full mesh
pub fn full_mesh() -> Option<&'static Prepared> {
    static P: OnceLock<Option<Prepared>> = OnceLock::new();
    P.get_or_init(|| std::env::var_os("VEER_BENCH_FULL_MESH").filter(|v| v != "0").map(|_| prepare(Scale::FULL_MESH))).as_ref()
}

// --- the operations --------------------------------------------------------------------

pub fn tables_for(p: &Prepared, client: &Client) -> Vec<Table> {
    p.dests.iter().map(|d| table::build(client, &d.endpoints, &d.rule, d.resilience.load, d.weighting)).collect()
}

pub fn tables_all_clients(p: &Prepared) -> Vec<Vec<Table>> {
    p.clients.iter().map(|c| tables_for(p, c)).collect()
}

pub fn snapshot(p: &Prepared, node: usize, unhealthy: &Unhealthy) -> Snapshot {
    Snapshot::build(View::new(&p.set, &p.inventory), &cluster_name(node), &Labels::new(), unhealthy, 1).expect("snapshot")
}

pub fn snapshot_all_nodes(p: &Prepared) -> Vec<Snapshot> {
    (0..p.scale.clusters).map(|n| snapshot(p, n, &Unhealthy::new())).collect()
}

/// Only the destinations with endpoints in the failed cluster, their endpoints marked down.
pub fn cluster_down_tables(p: &Prepared, client: &Client) -> Vec<Table> {
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
