//! The catalog a node serves its peers (its own cluster's endpoints and their health as its own
//! checks see them), and how a node merges what its peers send into the manifests it routes by.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use veer_core::topology::Locality;
use veer_model::diag::Pos;
use veer_model::meta::Meta;
use veer_model::set::ManifestSet;
use veer_model::topology::WorkloadEntry;

/// One cluster's endpoints as its node announces them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub cluster: String,
    /// Grows with every change the announcing node makes; lets a receiver skip repeats.
    pub generation: u64,
    pub entries: Vec<CatalogEntry>,
    /// `ip:port` keys the announcing node's own checks hold unhealthy.
    pub unhealthy: BTreeSet<String>,
}

/// A WorkloadEntry as it crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub namespace: String,
    pub name: String,
    pub address: IpAddr,
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub locality: Option<WireLocality>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLocality {
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub subzone: String,
}

fn one() -> u32 {
    1
}

/// One line of the watch stream: a full catalog when something changed, otherwise a heartbeat
/// that proves the peer is alive and its last catalog still stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchLine {
    Catalog(Catalog),
    Heartbeat { cluster: String, generation: u64 },
}

// === impl Catalog ===

impl Catalog {
    /// The catalog of `cluster` from its manifests, with the endpoint keys its checks hold down.
    pub fn local(set: &ManifestSet, cluster: &str, generation: u64, unhealthy: BTreeSet<String>) -> Catalog {
        let entries = set
            .entries()
            .iter()
            .filter(|(c, _)| c == cluster)
            .map(|(_, e)| CatalogEntry {
                namespace: e.meta.namespace.clone(),
                name: e.meta.name.clone(),
                address: e.address,
                ports: e.ports.clone(),
                labels: e.labels.clone(),
                locality: e.locality.as_ref().map(|l| WireLocality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    subzone: l.subzone.clone(),
                }),
                network: e.network.clone(),
                weight: e.weight,
            })
            .collect();
        Catalog { cluster: cluster.to_string(), generation, entries, unhealthy }
    }

    /// The same content, ignoring the generation: whether a receiver must rebuild its tables.
    pub fn same_endpoints(&self, other: &Catalog) -> bool {
        self.cluster == other.cluster && self.entries == other.entries
    }

    /// Whether `ip` is one of this cluster's endpoints: the east-west listener forwards only there.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.entries.iter().any(|e| e.address == ip)
    }
}

impl CatalogEntry {
    fn to_workload_entry(&self, cluster: &str) -> WorkloadEntry {
        let mut labels = BTreeMap::new();
        labels.insert("topology.istio.io/cluster".to_string(), cluster.to_string());
        WorkloadEntry {
            meta: Meta {
                kind: "WorkloadEntry",
                api_version: "networking.istio.io/v1".into(),
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                labels,
                file: Arc::from(format!("peer:{cluster}").as_str()),
                pos: Pos::default(),
                created: None,
            },
            address: self.address,
            ports: self.ports.clone(),
            labels: self.labels.clone(),
            locality: self.locality.as_ref().map(|l| Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                subzone: l.subzone.clone(),
            }),
            network: self.network.clone(),
            weight: self.weight,
        }
    }
}

/// The manifests a meshed node routes by: its own files, except that every other cluster's
/// endpoints are exactly what that cluster's node announced (none before it has spoken, none
/// once its data is forgotten), so a node never routes to endpoints nobody vouches for.
pub fn merge(local: &ManifestSet, own_cluster: &str, peers: &BTreeMap<String, Arc<Catalog>>) -> ManifestSet {
    let mut set = local.clone();
    set.entries_mut().retain(|(c, _)| c == own_cluster);
    for (cluster, catalog) in peers {
        if cluster == own_cluster || local.cluster(cluster).is_none() {
            continue;
        }
        set.entries_mut().extend(catalog.entries.iter().map(|e| (cluster.clone(), e.to_workload_entry(cluster))));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ManifestSet {
        let text = r#"
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: c1}
spec: {network: n1, locality: {region: r1}}
---
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: c2}
spec: {network: n2, locality: {region: r2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: a, namespace: ns, labels: {topology.istio.io/cluster: c1}}
spec: {address: 127.0.1.1, labels: {app: a}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: b, namespace: ns, labels: {topology.istio.io/cluster: c2}}
spec: {address: 127.0.2.1, labels: {app: a}, weight: 3}
"#;
        veer_model::from_sources(&[("t.yaml".to_string(), text.to_string())]).unwrap_or_else(|r| panic!("{r}")).into_set()
    }

    #[test]
    fn local_catalog_holds_only_the_own_cluster() {
        let c = Catalog::local(&set(), "c2", 7, BTreeSet::from(["127.0.2.1:80".to_string()]));
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].name, "b");
        assert_eq!(c.entries[0].weight, 3);
        assert!(c.has_address("127.0.2.1".parse().unwrap()));
        assert!(!c.has_address("127.0.1.1".parse().unwrap()));
    }

    #[test]
    fn merge_replaces_remote_entries_with_what_peers_announce() {
        let s = set();
        // No peer has spoken: only the own cluster's endpoints remain.
        let none = merge(&s, "c1", &BTreeMap::new());
        assert_eq!(none.entries().iter().map(|(c, e)| (c.as_str(), e.meta.name.as_str())).collect::<Vec<_>>(), vec![("c1", "a")]);
        // c2 announces its endpoint (through the wire format).
        let announced = Catalog::local(&s, "c2", 1, BTreeSet::new());
        let line = serde_json::to_string(&WatchLine::Catalog(announced.clone())).unwrap();
        let WatchLine::Catalog(back) = serde_json::from_str(&line).unwrap() else { panic!("not a catalog") };
        assert_eq!(back, announced);
        let merged = merge(&s, "c1", &BTreeMap::from([("c2".to_string(), Arc::new(back))]));
        let b = merged.entries().iter().find(|(c, _)| c == "c2").map(|(_, e)| e).expect("c2's entry");
        assert_eq!((b.address.to_string().as_str(), b.weight, &*b.meta.file), ("127.0.2.1", 3, "peer:c2"));
        // An announcement from a cluster the manifests do not define is not routed to.
        let rogue = Catalog { cluster: "c9".into(), ..announced };
        let merged = merge(&s, "c1", &BTreeMap::from([("c9".to_string(), Arc::new(rogue))]));
        assert!(merged.entries().iter().all(|(c, _)| c == "c1"));
    }
}
