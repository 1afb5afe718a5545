//! The catalog a node serves its peers (its own cluster's endpoints and their health as its own
//! checks see them), and how what its peers send replaces their clusters' endpoints in the
//! inventory it routes by.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use veer_core::names::ClusterName;
use veer_core::topology::EndpointKey;
use veer_core::topology::Locality;
use veer_model::inventory::{EndpointKind, EndpointRecord, EndpointSource, Inventory};
use veer_model::set::ManifestSet;

/// One cluster's endpoints as its node announces them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub cluster: String,
    /// Grows with every change the announcing node makes; lets a receiver skip repeats.
    pub generation: u64,
    pub entries: Vec<CatalogEntry>,
    /// The endpoints (`ip:port` on the wire) the announcing node's own checks hold unhealthy. A
    /// catalog naming anything else is refused whole, as any line that does not parse is.
    #[serde(with = "wire_keys")]
    pub unhealthy: BTreeSet<EndpointKey>,
}

/// A WorkloadEntry, or an EndpointSlice's endpoint (it names its Service), as it crosses the wire.
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
    /// The Service whose EndpointSlice lists this endpoint; absent for a WorkloadEntry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
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

/// Endpoint keys as a catalog carries them: `ip:port` strings, parsed on the way in.
mod wire_keys {
    use std::collections::BTreeSet;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};
    use veer_core::topology::EndpointKey;

    pub fn serialize<S: Serializer>(keys: &BTreeSet<EndpointKey>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<EndpointKey>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|k| k.parse().map_err(|_| D::Error::custom(format!("unhealthy endpoint {k:?} is not an ip:port"))))
            .collect()
    }
}

// === impl Catalog ===

impl Catalog {
    /// The catalog of `cluster` from its endpoints in `inventory`, with the endpoint keys its
    /// checks hold down.
    pub fn local(inventory: &Inventory, cluster: &str, generation: u64, unhealthy: BTreeSet<EndpointKey>) -> Catalog {
        let entries = inventory.get(cluster).map_or_else(Vec::new, |l| l.records().iter().map(CatalogEntry::from_record).collect());
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

    /// Whether `records` are exactly this catalog's entries, in order.
    fn lists(&self, records: &[EndpointRecord]) -> bool {
        self.entries.len() == records.len() && self.entries.iter().zip(records).all(|(e, r)| e.describes(r))
    }
}

impl CatalogEntry {
    fn from_record(r: &EndpointRecord) -> CatalogEntry {
        CatalogEntry {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            address: r.address,
            ports: r.ports.clone(),
            labels: r.labels.clone(),
            locality: r.locality.as_ref().map(|l| WireLocality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                subzone: l.subzone.clone(),
            }),
            network: r.network.clone(),
            weight: r.weight,
            service: r.service.clone(),
        }
    }

    /// The endpoint as the receiving node routes to it: a WorkloadEntry of the announcing
    /// node's own, or an endpoint of one of its EndpointSlices.
    fn to_record(&self) -> EndpointRecord {
        EndpointRecord {
            kind: self.kind(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
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
            service: self.service.clone(),
        }
    }

    fn kind(&self) -> EndpointKind {
        if self.service.is_some() {
            EndpointKind::EndpointSlice
        } else {
            EndpointKind::WorkloadEntry
        }
    }

    /// Whether `r` is this entry, without building one to compare.
    fn describes(&self, r: &EndpointRecord) -> bool {
        let same_locality = match (&self.locality, &r.locality) {
            (None, None) => true,
            (Some(w), Some(l)) => w.region == l.region && w.zone == l.zone && w.subzone == l.subzone,
            _ => false,
        };
        r.kind == self.kind()
            && self.service == r.service
            && self.namespace == r.namespace
            && self.name == r.name
            && self.address == r.address
            && self.ports == r.ports
            && self.labels == r.labels
            && same_locality
            && self.network == r.network
            && self.weight == r.weight
    }
}

/// Brings a meshed node's inventory in line with its peers: every cluster the manifests define,
/// but its own, has exactly what that cluster's node announced (nothing before it has spoken,
/// nothing once it is forgotten, nothing from this node's files), so a node never routes to
/// endpoints nobody vouches for. A catalog replaces its cluster's list; a cluster whose
/// announced endpoints are already listed keeps its list, index and all. Returns whether any
/// list changed.
pub fn apply_peers(inventory: &mut Inventory, set: &ManifestSet, own: &str, peers: &BTreeMap<ClusterName, Arc<Catalog>>) -> bool {
    let routed = |cluster: &str| cluster != own && set.cluster(cluster).is_some();
    let mut changed = false;
    inventory.retain(|cluster, _| {
        let keep = cluster == own || (routed(cluster) && peers.contains_key(cluster));
        changed |= !keep;
        keep
    });
    for (cluster, catalog) in peers.iter().filter(|(c, _)| routed(c)) {
        let listed =
            inventory.get(cluster).is_some_and(|l| matches!(l.source(), EndpointSource::Peer { .. }) && catalog.lists(l.records()));
        if !listed {
            inventory.replace(
                cluster,
                EndpointSource::Peer { generation: catalog.generation },
                catalog.entries.iter().map(CatalogEntry::to_record).collect(),
            );
            changed = true;
        }
    }
    changed
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
        let c = Catalog::local(&Inventory::from_manifests(&set()), "c2", 7, BTreeSet::from(["127.0.2.1:80".parse().unwrap()]));
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].name, "b");
        assert_eq!(c.entries[0].weight, 3);
        assert!(c.has_address("127.0.2.1".parse().unwrap()));
        assert!(!c.has_address("127.0.1.1".parse().unwrap()));
    }

    /// Each cluster's list: its source and the names of its endpoints.
    fn lists(inventory: &Inventory) -> Vec<(&str, EndpointSource, Vec<&str>)> {
        inventory.clusters().map(|(c, l)| (c, l.source().clone(), l.records().iter().map(|r| r.name.as_str()).collect())).collect()
    }

    #[test]
    fn peers_replace_remote_endpoints_with_what_they_announce() {
        let s = set();
        // No peer has spoken: only the own cluster's endpoints remain.
        let mut inventory = Inventory::from_manifests(&s);
        assert!(apply_peers(&mut inventory, &s, "c1", &BTreeMap::new()));
        assert_eq!(lists(&inventory), vec![("c1", EndpointSource::Manifests, vec!["a"])]);
        // c2 announces its endpoint (through the wire format).
        let announced = Catalog::local(&Inventory::from_manifests(&s), "c2", 1, BTreeSet::new());
        let line = serde_json::to_string(&WatchLine::Catalog(announced.clone())).unwrap();
        let WatchLine::Catalog(back) = serde_json::from_str(&line).unwrap() else { panic!("not a catalog") };
        assert_eq!(back, announced);
        let peers = BTreeMap::from([("c2".into(), Arc::new(back))]);
        assert!(apply_peers(&mut inventory, &s, "c1", &peers));
        let c2 = inventory.get("c2").expect("c2's list");
        assert_eq!(c2.source(), &EndpointSource::Peer { generation: 1 });
        let b = &c2.records()[0];
        assert_eq!((b.address.to_string().as_str(), b.weight, b.name.as_str()), ("127.0.2.1", 3, "b"));
        // The same endpoints again (a health change, a later generation): nothing to redo.
        let again = Catalog { generation: 2, unhealthy: BTreeSet::from(["127.0.2.1:80".parse().unwrap()]), ..announced.clone() };
        assert!(!apply_peers(&mut inventory, &s, "c1", &BTreeMap::from([("c2".into(), Arc::new(again))])));
        // The peer is forgotten: its endpoints go.
        assert!(apply_peers(&mut inventory, &s, "c1", &BTreeMap::new()));
        assert_eq!(lists(&inventory), vec![("c1", EndpointSource::Manifests, vec!["a"])]);
        // An announcement from a cluster the manifests do not define is not routed to.
        let rogue = Catalog { cluster: "c9".into(), ..announced };
        apply_peers(&mut inventory, &s, "c1", &BTreeMap::from([("c9".into(), Arc::new(rogue))]));
        assert_eq!(lists(&inventory), vec![("c1", EndpointSource::Manifests, vec!["a"])]);
    }

    #[test]
    fn a_catalog_naming_an_unhealthy_endpoint_that_is_not_ip_port_is_refused_whole() {
        let line = |down: &str| format!(r#"{{"type":"catalog","cluster":"c2","generation":1,"entries":[],"unhealthy":[{down}]}}"#);
        let WatchLine::Catalog(ok) = serde_json::from_str(&line(r#""127.0.2.1:80""#)).expect("an ip:port parses") else {
            panic!("not a catalog")
        };
        assert!(ok.unhealthy.contains(&"127.0.2.1:80".parse().unwrap()));
        for bad in [r#""backend:80""#, r#""127.0.2.1""#, r#""""#, "80"] {
            let err = serde_json::from_str::<WatchLine>(&line(bad)).expect_err(bad).to_string();
            assert!(err.contains("unhealthy endpoint") || err.contains("invalid type"), "{bad}: {err}");
        }
    }
}
