//! The endpoints each cluster has, kept apart from the policy that selects them: per cluster one list, with where it came from.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use veer_core::topology::Locality;

use crate::set::ManifestSet;
use crate::topology::{PortRef, Service, ServicePort, WorkloadEntry};

/// Where one cluster's endpoints came from. Further sources (DNS, Kubernetes, xDS) become
/// variants here; resolution reads every list alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// WorkloadEntries read from the manifest files.
    Manifests,
    /// What the cluster's own node announced, in its catalog of this generation.
    Peer { generation: u64 },
    /// The cluster's API server: its EndpointSlices, beside the WorkloadEntries of the manifests
    /// (files and custom resources).
    Kubernetes,
}

/// What an endpoint is in its source's terms: the word `veer explain` names it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointKind {
    /// An Istio WorkloadEntry, read from a file or announced by a peer that read it from its own.
    WorkloadEntry,
    /// An endpoint of a Kubernetes EndpointSlice (`name` is its Pod's, or the slice's when it
    /// names no Pod); it serves the one Service its slice belongs to.
    EndpointSlice,
}

/// One endpoint: an instance, its ports and labels, whatever source listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    pub kind: EndpointKind,
    pub namespace: String,
    pub name: String,
    pub address: IpAddr,
    /// Named ports, which a Service's `targetPort` may refer to.
    pub ports: BTreeMap<String, u16>,
    /// What Service selectors match.
    pub labels: BTreeMap<String, String>,
    /// `None`: its cluster's.
    pub locality: Option<Locality>,
    /// `None`: its cluster's.
    pub network: Option<String>,
    pub weight: u32,
    /// The Service this endpoint was listed for (an EndpointSlice's `kubernetes.io/service-name`):
    /// it serves that Service alone, whatever its labels; `None`: Service selectors pick it.
    pub service: Option<String>,
}

/// One cluster's endpoints and their source. Shared between inventories: replacing another
/// cluster's list copies nothing of this one, and its index survives.
#[derive(Debug)]
pub struct ClusterEndpoints {
    source: EndpointSource,
    records: Vec<EndpointRecord>,
    /// Positions in `records` by (namespace, label key, label value), built on first use: a
    /// snapshot resolves every Service, and scanning every endpoint for each was most of a
    /// reload of 2,000 Services x 5 endpoints (~0.7 s). Keys are hashes: a collision only adds
    /// candidates, and every candidate is checked in full, so it cannot change an answer.
    /// Positions are ascending, so answers keep the source's order.
    index: OnceLock<HashMap<u64, Vec<u32>>>,
}

/// The endpoints of every cluster. A cluster without a list has no endpoints.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    clusters: BTreeMap<String, Arc<ClusterEndpoints>>,
}

// === impl EndpointRecord ===

impl EndpointRecord {
    pub fn from_workload_entry(e: &WorkloadEntry) -> EndpointRecord {
        EndpointRecord {
            kind: EndpointKind::WorkloadEntry,
            namespace: e.meta.namespace.clone(),
            name: e.meta.name.clone(),
            address: e.address,
            ports: e.ports.clone(),
            labels: e.labels.clone(),
            locality: e.locality.clone(),
            network: e.network.clone(),
            weight: e.weight,
            service: None,
        }
    }

    /// Where this endpoint came from, after `of` (the resource that selected it), as `veer
    /// explain` prints it. One literal per kind: a snapshot formats this for every endpoint, and
    /// formatting the kind as an argument instead cost 2% of building one.
    pub fn origin(&self, of: &str) -> String {
        match self.kind {
            EndpointKind::WorkloadEntry => format!("{of}; WorkloadEntry {}/{}", self.namespace, self.name),
            EndpointKind::EndpointSlice => format!("{of}; EndpointSlice endpoint {}/{}", self.namespace, self.name),
        }
    }

    /// The port this endpoint serves a Service port on: the target port by number, or by name
    /// among its named ports; with no target port, its port named as the Service port is, else
    /// the Service port itself. `None`: the named target port is not one of its ports.
    pub fn port_for(&self, service_port: &ServicePort) -> Option<u16> {
        // A slice's ports are the Service's, by the Service port's name, already resolved to
        // the target port (an unnamed port when the Service has one port).
        if self.kind == EndpointKind::EndpointSlice {
            return self.ports.get(&service_port.name).copied();
        }
        match &service_port.target_port {
            Some(PortRef::Number(n)) => Some(*n),
            Some(PortRef::Name(name)) => self.ports.get(name).copied(),
            None => {
                if !service_port.name.is_empty() {
                    if let Some(p) = self.ports.get(&service_port.name) {
                        return Some(*p);
                    }
                }
                Some(service_port.port)
            }
        }
    }
}

// === impl ClusterEndpoints ===

impl ClusterEndpoints {
    pub fn source(&self) -> &EndpointSource {
        &self.source
    }

    /// In the order the source listed them.
    pub fn records(&self) -> &[EndpointRecord] {
        &self.records
    }

    fn index(&self) -> &HashMap<u64, Vec<u32>> {
        self.index.get_or_init(|| {
            let mut index: HashMap<u64, Vec<u32>> = HashMap::new();
            for (i, r) in self.records.iter().enumerate() {
                if let Some(service) = &r.service {
                    index.entry(key_of(&r.namespace, SERVICE_KEY, service)).or_default().push(i as u32);
                    continue;
                }
                for (k, v) in &r.labels {
                    let list = index.entry(key_of(&r.namespace, k, v)).or_default();
                    // Two of one record's labels whose keys collide share a list: list it once.
                    if list.last() != Some(&(i as u32)) {
                        list.push(i as u32);
                    }
                }
            }
            index
        })
    }

    /// The records `service`'s selector matches (same namespace, labels ⊇ selector), then the
    /// ones listed for it by name (EndpointSlices: Kubernetes did the selecting).
    fn selected<'a>(&'a self, service: &'a Service) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        // A record that matches carries the selector's first label, so that label's list holds
        // every match; an empty or missing selector matches nothing.
        let ns = &service.meta.namespace;
        let selector = service.selector.as_ref();
        let first = selector.and_then(|sel| sel.iter().next());
        let positions = first.and_then(|(k, v)| self.index().get(&key_of(ns, k, v))).map_or(&[][..], |p| p.as_slice());
        let by_selector = positions
            .iter()
            .map(|&i| &self.records[i as usize])
            .filter(move |r| r.namespace == *ns && selector.is_some_and(|sel| sel.iter().all(|(k, v)| r.labels.get(k) == Some(v))));
        let listed = self.index().get(&key_of(ns, SERVICE_KEY, &service.meta.name)).map_or(&[][..], |p| p.as_slice());
        let by_name = listed
            .iter()
            .map(|&i| &self.records[i as usize])
            .filter(move |r| r.namespace == *ns && r.service.as_deref() == Some(service.meta.name.as_str()));
        by_selector.chain(by_name)
    }
}

/// The index key under which a record listed for a Service is found (no label key holds a NUL).
const SERVICE_KEY: &str = "\0service";

fn key_of(namespace: &str, key: &str, value: &str) -> u64 {
    // `new` gives every instance the same keys, so equal parts always meet.
    let mut h = std::hash::DefaultHasher::new();
    (namespace, key, value).hash(&mut h);
    h.finish()
}

// === impl Inventory ===

impl Inventory {
    /// Every cluster's WorkloadEntries in `set`: the endpoints of a node without peers, and of
    /// `veer explain`.
    pub fn from_manifests(set: &ManifestSet) -> Inventory {
        let mut lists: BTreeMap<&str, Vec<EndpointRecord>> = BTreeMap::new();
        for (cluster, e) in set.entries() {
            lists.entry(cluster).or_default().push(EndpointRecord::from_workload_entry(e));
        }
        let mut inventory = Inventory::default();
        for (cluster, records) in lists {
            inventory.replace(cluster, EndpointSource::Manifests, records);
        }
        inventory
    }

    /// Replaces `cluster`'s list with its WorkloadEntries in `set`: a meshed node's own
    /// cluster, the only one whose endpoints it takes from its files.
    pub fn replace_from_manifests(&mut self, set: &ManifestSet, cluster: &str) {
        self.replace_from_manifests_and(set, cluster, EndpointSource::Manifests, &[]);
    }

    /// Replaces `cluster`'s list with its WorkloadEntries in `set` followed by `more` (an API
    /// server's EndpointSlice endpoints), as coming from `source`.
    pub fn replace_from_manifests_and(&mut self, set: &ManifestSet, cluster: &str, source: EndpointSource, more: &[EndpointRecord]) {
        let entries = set.entries().iter().filter(|(c, _)| c == cluster).map(|(_, e)| EndpointRecord::from_workload_entry(e));
        self.replace(cluster, source, entries.chain(more.iter().cloned()).collect());
    }

    /// Makes `records` the whole of `cluster`'s endpoints (a peer's new catalog, say).
    pub fn replace(&mut self, cluster: &str, source: EndpointSource, records: Vec<EndpointRecord>) {
        let list = Arc::new(ClusterEndpoints { source, records, index: OnceLock::new() });
        self.clusters.insert(cluster.to_string(), list);
    }

    /// Leaves `cluster` with no endpoints; whether it had a list.
    pub fn remove(&mut self, cluster: &str) -> bool {
        self.clusters.remove(cluster).is_some()
    }

    /// Keeps the lists of the clusters `keep` accepts, and no others.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &ClusterEndpoints) -> bool) {
        self.clusters.retain(|c, list| keep(c, list));
    }

    pub fn get(&self, cluster: &str) -> Option<&ClusterEndpoints> {
        self.clusters.get(cluster).map(|l| &**l)
    }

    /// Every cluster with a list, by name.
    pub fn clusters(&self) -> impl Iterator<Item = (&str, &ClusterEndpoints)> {
        self.clusters.iter().map(|(c, l)| (c.as_str(), &**l))
    }

    /// The endpoints of `cluster` that `service`'s selector picks, in their source's order.
    pub fn selected<'a>(&'a self, cluster: &str, service: &'a Service) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.clusters.get(cluster).into_iter().flat_map(move |l| l.selected(service))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Services and WorkloadEntries in two clusters and two namespaces, over a few labels, so
    /// that selectors overlap, miss, and match across namespaces and clusters they must not.
    fn manifests(services: &[(u8, u8, u8, Option<u8>)], entries: &[(u8, u8, u8, u8)]) -> String {
        let mut out = String::from(
            "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {name: c0}\nspec: {locality: {region: r0}}\n---\napiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {name: c1}\nspec: {locality: {region: r1}}\n",
        );
        for (i, (c, ns, app, tier)) in services.iter().enumerate() {
            let tier = tier.map(|t| format!(", tier: t{t}")).unwrap_or_default();
            out += &format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: n{ns}, labels: {{topology.istio.io/cluster: c{c}}}}}\nspec:\n  selector: {{app: a{app}{tier}}}\n  ports: [{{port: 80}}]\n", c = c % 2, ns = ns % 2, app = app % 3);
        }
        for (i, (c, ns, app, tier)) in entries.iter().enumerate() {
            out += &format!("---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: e{i}, namespace: n{ns}, labels: {{topology.istio.io/cluster: c{c}}}}}\nspec:\n  address: 10.0.0.{i}\n  labels: {{app: a{app}, tier: t{tier}}}\n", c = c % 2, ns = ns % 2, app = app % 3, tier = tier % 2);
        }
        out
    }

    /// What `selected` answers without an index: a scan of every WorkloadEntry of the set that
    /// `inventory` still lists for `cluster`.
    fn scanned<'a>(set: &'a ManifestSet, inventory: &Inventory, cluster: &str, service: &Service) -> Vec<&'a str> {
        let Some(selector) = service.selector.as_ref().filter(|s| !s.is_empty()) else { return Vec::new() };
        if inventory.get(cluster).is_none() {
            return Vec::new();
        }
        set.entries()
            .iter()
            .filter(|(c, e)| {
                c == cluster && e.meta.namespace == service.meta.namespace && selector.iter().all(|(k, v)| e.labels.get(k) == Some(v))
            })
            .map(|(_, e)| e.meta.name.as_str())
            .collect()
    }

    fn agrees(set: &ManifestSet, inventory: &Inventory) -> Result<(), TestCaseError> {
        for (_, svc) in set.services() {
            for cluster in ["c0", "c1"] {
                let indexed: Vec<&str> = inventory.selected(cluster, svc).map(|e| e.name.as_str()).collect();
                prop_assert_eq!(indexed, scanned(set, inventory, cluster, svc), "Service {} in {}", svc.meta.name, cluster);
            }
            let named: Vec<&str> = set.services_named(&svc.meta.namespace, &svc.meta.name).map(|(c, _)| c.as_str()).collect();
            prop_assert_eq!(named.len(), 1, "each generated Service name is unique");
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn indexed_lookups_answer_as_a_scan_would_and_follow_changes(
            services in proptest::collection::vec((0u8..2, 0u8..2, 0u8..3, proptest::option::of(0u8..2)), 1..8),
            entries in proptest::collection::vec((0u8..2, 0u8..2, 0u8..3, 0u8..2), 0..24),
        ) {
            let accepted = crate::from_sources(&[("m.yaml".to_string(), manifests(&services, &entries))])
                .map_err(|r| TestCaseError::fail(format!("{:?}", r.into_diagnostics())))?;
            let set = accepted.into_set();
            prop_assert_eq!(set.entries().len(), entries.len());
            let mut inventory = Inventory::from_manifests(&set);
            prop_assert_eq!(inventory.clusters().map(|(_, l)| l.records().len()).sum::<usize>(), entries.len());
            agrees(&set, &inventory)?;
            // As a peer that is forgotten: a cluster's list goes after lookups were made.
            inventory.retain(|c, _| c == "c0");
            agrees(&set, &inventory)?;
            let copy = inventory.clone();
            agrees(&set, &copy)?;
            // As a peer that speaks again: its list comes back, indexed afresh.
            inventory.replace_from_manifests(&set, "c1");
            agrees(&set, &inventory)?;
        }
    }

    #[test]
    fn an_endpoint_slice_record_serves_its_service_alone_on_the_port_named_as_the_service_port() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: n}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 9999}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: n}\nspec: {selector: {app: web}, ports: [{name: http, port: 80}]}\n";
        let set = crate::from_sources(&[("m.yaml".to_string(), text.to_string())]).unwrap_or_else(|r| panic!("{r}")).into_set();
        let record = |service: &str, ip: &str| EndpointRecord {
            kind: EndpointKind::EndpointSlice,
            namespace: "n".into(),
            name: format!("{service}-pod"),
            address: ip.parse().unwrap(),
            ports: BTreeMap::from([("http".to_string(), 8080)]),
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            locality: None,
            network: None,
            weight: 1,
            service: Some(service.into()),
        };
        let mut inventory = Inventory::default();
        inventory.replace(IMPLICIT, EndpointSource::Kubernetes, vec![record("web", "10.0.0.1"), record("other", "10.0.0.2")]);
        let (_, web) = set.services().iter().find(|(_, s)| s.meta.name == "web").unwrap();
        let picked: Vec<&EndpointRecord> = inventory.selected(IMPLICIT, web).collect();
        assert_eq!(picked.len(), 1, "the other Service's slice is not web's, though its labels match web's selector");
        assert_eq!(picked[0].address.to_string(), "10.0.0.1");
        // The slice's port is already the target port, found by the Service port's name.
        assert_eq!(picked[0].port_for(&web.ports[0]), Some(8080));
    }

    const IMPLICIT: &str = crate::set::IMPLICIT_CLUSTER;

    #[test]
    fn replacing_one_cluster_shares_the_others() {
        let text = "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {name: c0}\nspec: {locality: {region: r0}}\n---\napiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {name: c1}\nspec: {locality: {region: r1}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: n, labels: {topology.istio.io/cluster: c0}}\nspec: {address: 10.0.0.1}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: b, namespace: n, labels: {topology.istio.io/cluster: c1}}\nspec: {address: 10.0.0.2}\n";
        let set = crate::from_sources(&[("m.yaml".to_string(), text.to_string())]).unwrap_or_else(|r| panic!("{r}")).into_set();
        let before = Inventory::from_manifests(&set);
        let mut after = before.clone();
        after.replace("c1", EndpointSource::Peer { generation: 3 }, Vec::new());
        assert!(Arc::ptr_eq(&before.clusters["c0"], &after.clusters["c0"]));
        assert_eq!(after.get("c1").map(|l| (l.source(), l.records().len())), Some((&EndpointSource::Peer { generation: 3 }, 0)));
        assert_eq!(before.get("c1").map(|l| l.source()), Some(&EndpointSource::Manifests));
        assert!(after.remove("c1") && !after.remove("c1"));
        assert!(after.get("c1").is_none());
    }
}
