//! Feeds arbitrary bytes to a node's catalog watch as a peer would send them: a line must be
//! read or refused, never panic, and a read catalog must replace its cluster's endpoints and be
//! routed.

#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use veer_control::mesh::catalog::{apply_peers, WatchLine};
use veer_model::inventory::Inventory;
use veer_model::resolve::View;

const WORLD: &str = "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {name: c1}\nspec: {network: n1, locality: {region: r1}}\n---\napiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {name: c2}\nspec: {network: n2, locality: {region: r2}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns, labels: {topology.istio.io/cluster: c2}}\nspec: {ports: [{name: http, port: 80}], selector: {app: s}}\n";

fuzz_target!(|data: &[u8]| {
    let Ok(WatchLine::Catalog(catalog)) = serde_json::from_slice::<WatchLine>(data) else { return };
    let set = veer_model::from_sources(&[("world.yaml".to_string(), WORLD.to_string())]).expect("the world has no errors").into_set();
    let mut inventory = Inventory::default();
    inventory.replace_from_manifests(&set, "c1");
    apply_peers(&mut inventory, &set, "c1", &BTreeMap::from([("c2".into(), Arc::new(catalog))]));
    let _ = veer_gateway::snapshot::Snapshot::build(View::new(&set, &inventory), "c1", &Default::default(), &Default::default(), 1);
});
