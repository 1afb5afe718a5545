//! EndpointSlices (`discovery.k8s.io/v1`, and `v1beta1` on servers older than 1.21) as the
//! inventory's endpoint records: ready endpoints only, with their Pod's labels and their
//! locality (zone from the slice, region and zone from the Node's topology labels).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;
use veer_core::topology::Locality;
use veer_model::inventory::{EndpointKind, EndpointRecord};

/// The label that ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// v1beta1 names the node in the endpoint's topology map.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The parts of a slice veer reads; the rest is ignored, as it is by kube-proxy.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Slice {
    address_type: String,
    #[serde(default)]
    endpoints: Vec<SliceEndpoint>,
    #[serde(default)]
    ports: Option<Vec<SlicePort>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceEndpoint {
    addresses: Vec<String>,
    #[serde(default)]
    conditions: Conditions,
    target_ref: Option<TargetRef>,
    /// v1.
    zone: Option<String>,
    /// v1.
    node_name: Option<String>,
    /// v1beta1: zone and host name as labels.
    #[serde(default)]
    topology: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct Conditions {
    ready: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct TargetRef {
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlicePort {
    name: Option<String>,
    port: Option<u16>,
    protocol: Option<String>,
}

/// One slice as the watch listed it: where it lives and its body (everything but metadata).
pub struct SliceObject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub body: &'a Value,
}

/// What the records are built from besides the slices: labels of Pods (by namespace and name)
/// and of Nodes (by name).
pub trait Lookup {
    fn pod_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>>;
}

/// The ready endpoints of `slices`, one record per Service and address (an address two slices
/// of one Service list, as while the controller moves it, is listed once), sorted. Each slice
/// veer cannot use is named in the second list with why (once per slice, for a warning).
pub fn records<'a>(slices: impl IntoIterator<Item = SliceObject<'a>>, lookup: &impl Lookup) -> (Vec<EndpointRecord>, Vec<String>) {
    let mut out: BTreeMap<(String, String, IpAddr), EndpointRecord> = BTreeMap::new();
    let mut problems = Vec::new();
    for s in slices {
        let at = format!("EndpointSlice {}/{}", s.namespace, s.name);
        let Some(service) = s.labels.get(SERVICE_NAME_LABEL) else {
            // A slice no Service owns serves nothing a route can name.
            continue;
        };
        let slice: Slice = match serde_json::from_value(s.body.clone()) {
            Ok(slice) => slice,
            Err(e) => {
                problems.push(format!("{at}: not read: {e}"));
                continue;
            }
        };
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            problems.push(format!("{at}: addressType {} is not served (IPv4 and IPv6 are)", slice.address_type));
            continue;
        }
        // A port with no number means "all ports" (a Service without ports): nothing to route to.
        let ports: BTreeMap<String, u16> = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.port?)))
            .collect();
        for (i, ep) in slice.endpoints.iter().enumerate() {
            // Kubernetes reads a missing condition as ready.
            if ep.conditions.ready == Some(false) {
                continue;
            }
            let pod = ep.target_ref.as_ref().filter(|t| t.kind.as_deref() == Some("Pod"));
            let pod_name = pod.and_then(|t| t.name.clone());
            let labels =
                pod.and_then(|t| lookup.pod_labels(t.namespace.as_deref().unwrap_or(s.namespace), t.name.as_deref()?)).unwrap_or_default();
            let node = ep.node_name.as_deref().or(ep.topology.get(HOSTNAME_LABEL).map(String::as_str));
            let node_labels = node.and_then(|n| lookup.node_labels(n)).unwrap_or_default();
            let zone = ep.zone.clone().or_else(|| ep.topology.get(ZONE_LABEL).cloned()).or_else(|| node_labels.get(ZONE_LABEL).cloned());
            let region = node_labels.get(REGION_LABEL).cloned();
            // Without either, the endpoint is where its cluster is.
            let locality = (zone.is_some() || region.is_some()).then(|| Locality {
                region: region.unwrap_or_default(),
                zone: zone.unwrap_or_default(),
                subzone: String::new(),
            });
            for address in &ep.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    problems.push(format!("{at}: endpoint {i}: {address:?} is not an IP address"));
                    continue;
                };
                let name = pod_name.clone().unwrap_or_else(|| format!("{}[{i}]", s.name));
                out.entry((s.namespace.to_string(), service.clone(), ip)).or_insert_with(|| EndpointRecord {
                    kind: EndpointKind::EndpointSlice,
                    namespace: s.namespace.to_string(),
                    name,
                    address: ip,
                    ports: ports.clone(),
                    labels: labels.clone(),
                    locality: locality.clone(),
                    network: None,
                    weight: 1,
                    service: Some(service.clone()),
                });
            }
        }
    }
    let problems: BTreeSet<String> = problems.into_iter().collect();
    (out.into_values().collect(), problems.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Cluster;

    impl Lookup for Cluster {
        fn pod_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
            (namespace == "shop" && name == "web-1")
                .then(|| BTreeMap::from([("app".into(), "web".into()), ("version".into(), "v1".into())]))
        }
        fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
            (name == "node-a").then(|| BTreeMap::from([(REGION_LABEL.into(), "us-east".into()), (ZONE_LABEL.into(), "us-east-1a".into())]))
        }
    }

    fn slice_labels(service: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), service.to_string())])
    }

    #[test]
    fn ready_endpoints_become_records_with_pod_labels_and_node_locality() {
        let body = json!({
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}, "nodeName": "node-a"},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "web-2"}},
                {"addresses": ["10.0.0.3"], "zone": "us-east-1b"}
            ]
        });
        let labels = slice_labels("web");
        let (records, problems) = records([SliceObject { namespace: "shop", name: "web-abc", labels: &labels, body: &body }], &Cluster);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(records.len(), 2, "the endpoint that is not ready is left out");
        let first = &records[0];
        assert_eq!((first.name.as_str(), first.address.to_string().as_str()), ("web-1", "10.0.0.1"));
        assert_eq!(first.service.as_deref(), Some("web"));
        assert_eq!(first.ports, BTreeMap::from([("http".to_string(), 8080)]), "UDP ports are not served");
        assert_eq!(first.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(first.locality.as_ref().map(|l| (l.region.as_str(), l.zone.as_str())), Some(("us-east", "us-east-1a")));
        let second = &records[1];
        assert_eq!(second.name, "web-abc[2]");
        assert_eq!(second.locality.as_ref().map(|l| (l.region.as_str(), l.zone.as_str())), Some(("", "us-east-1b")));
    }

    #[test]
    fn v1beta1_topology_gives_zone_and_node() {
        let body = json!({
            "addressType": "IPv4",
            "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.0.0.9"], "topology": {HOSTNAME_LABEL: "node-a", ZONE_LABEL: "z9"}}]
        });
        let labels = slice_labels("web");
        let (records, _) = records([SliceObject { namespace: "shop", name: "s", labels: &labels, body: &body }], &Cluster);
        let l = records[0].locality.clone().unwrap();
        assert_eq!((l.region.as_str(), l.zone.as_str()), ("us-east", "z9"), "the slice's zone wins over the node's");
        assert_eq!(records[0].ports, BTreeMap::from([(String::new(), 80)]));
    }

    #[test]
    fn one_address_in_two_slices_of_a_service_is_one_record_and_bad_slices_are_named() {
        let body = json!({"addressType": "IPv4", "ports": [{"port": 80}], "endpoints": [{"addresses": ["10.0.0.1"]}]});
        let fqdn = json!({"addressType": "FQDN", "endpoints": [{"addresses": ["a.example"]}]});
        let broken = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["not-an-ip"]}, {"addresses": "10.0.0.1"}]});
        let bad_ip = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.300"]}]});
        let web = slice_labels("web");
        let none = BTreeMap::new();
        let slices = [
            SliceObject { namespace: "shop", name: "a", labels: &web, body: &body },
            SliceObject { namespace: "shop", name: "b", labels: &web, body: &body },
            SliceObject { namespace: "shop", name: "orphan", labels: &none, body: &body },
            SliceObject { namespace: "shop", name: "fqdn", labels: &web, body: &fqdn },
            SliceObject { namespace: "shop", name: "broken", labels: &web, body: &broken },
            SliceObject { namespace: "shop", name: "bad-ip", labels: &web, body: &bad_ip },
        ];
        let (records, problems) = records(slices, &Cluster);
        assert_eq!(records.len(), 1);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("EndpointSlice shop/fqdn: addressType FQDN")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("EndpointSlice shop/broken: not read")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"10.0.0.300\" is not an IP address")), "{problems:?}");
    }
}
