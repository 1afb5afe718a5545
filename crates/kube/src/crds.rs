//! `veer crds`: a CustomResourceDefinition for every custom kind veer reads, for clusters where
//! the owning project (Gloo, SMH, Istio, Envoy Gateway, Gateway API, the Service Router
//! Operator) is not installed, and for veer's own `Cluster`.
//!
//! Other projects' kinds keep their fields open (`x-kubernetes-preserve-unknown-fields`): their
//! own CRDs define them, and veer checks every field when it reads the object, with a located
//! message. veer's `Cluster` has a structural schema of its own.

use serde_json::{json, Value};

/// The group suffix the API server keeps for Kubernetes' own APIs: a CRD in such a group must
/// say it is not an approved API, or the server refuses it.
const RESERVED_SUFFIX: &str = ".k8s.io";

/// Kinds that have no namespace.
const CLUSTER_SCOPED: &[(&str, &str)] = &[("veer.io", "Cluster"), ("gateway.networking.k8s.io", "GatewayClass")];

/// Every CRD, as one `v1 List` (`kubectl apply -f` takes it as it is).
pub fn all() -> Value {
    let mut items = Vec::new();
    for (group, versions, kind) in veer_model::load::read_kinds() {
        if group.is_empty() {
            continue;
        }
        items.push(definition(group, versions, kind));
    }
    // Gateways name a class; a cluster without Gateway API has no GatewayClass kind either.
    items.push(definition("gateway.networking.k8s.io", &["v1", "v1beta1"], "GatewayClass"));
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// `kind`'s plural as Kubernetes spells resource names (lower case).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    let consonant_y = lower.strip_suffix('y').filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']));
    if let Some(stem) = consonant_y {
        format!("{stem}ies")
    } else if lower.ends_with('s') || lower.ends_with("sh") || lower.ends_with('x') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

fn definition(group: &str, versions: &[&str], kind: &str) -> Value {
    let plural = plural(kind);
    let scope = if CLUSTER_SCOPED.contains(&(group, kind)) { "Cluster" } else { "Namespaced" };
    let schema = if group == "veer.io" && kind == "Cluster" { cluster_schema() } else { open_schema() };
    let versions: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v,
                "served": true,
                // The newest version veer reads is the one stored.
                "storage": i == 0,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
            })
        })
        .collect();
    let mut metadata = json!({"name": format!("{plural}.{group}"), "labels": {"app.kubernetes.io/managed-by": "veer"}});
    if group.ends_with(RESERVED_SUFFIX) {
        metadata["annotations"] =
            json!({"api-approved.kubernetes.io": "unapproved, defined by veer for clusters without the owning project"});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {
            "group": group,
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": kind.to_ascii_lowercase()},
            "scope": scope,
            "versions": versions,
        }
    })
}

fn open_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// veer's Cluster, field by field (`veer_model::topology::read_cluster` reads the same).
fn cluster_schema() -> Value {
    let address = json!({"type": "string", "description": "ip:port"});
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "locality": {
                        "type": "object",
                        "properties": {"region": {"type": "string"}, "zone": {"type": "string"}, "subzone": {"type": "string"}},
                    },
                    "network": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "gateway": {
                        "type": "object",
                        "properties": {
                            "address": address,
                            "ports": {"type": "object", "additionalProperties": address, "description": "Gateway listener port → ip:port"},
                        },
                    },
                    "eastWest": {"type": "object", "properties": {"address": address}},
                    "admin": {"type": "object", "properties": {"address": address}},
                    "dns": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                },
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_spelled_as_kubernetes_spells_them() {
        for (kind, plural) in [
            ("VirtualMesh", "virtualmeshes"),
            ("DNSPolicy", "dnspolicies"),
            ("ClusterIdentity", "clusteridentities"),
            ("BackendTLSPolicy", "backendtlspolicies"),
            ("HTTPRoute", "httproutes"),
            ("Gateway", "gateways"),
        ] {
            assert_eq!(super::plural(kind), plural);
        }
    }

    #[test]
    fn every_custom_kind_has_one_definition_storing_one_version() {
        let list = all();
        let items = list["items"].as_array().unwrap();
        let custom = veer_model::load::read_kinds().filter(|(g, _, _)| !g.is_empty()).count();
        assert_eq!(items.len(), custom + 1);
        for crd in items {
            let versions = crd["spec"]["versions"].as_array().unwrap();
            assert_eq!(versions.iter().filter(|v| v["storage"] == true).count(), 1, "{}", crd["metadata"]["name"]);
            let reserved = crd["spec"]["group"].as_str().unwrap().ends_with(".k8s.io");
            assert_eq!(crd["metadata"]["annotations"].get("api-approved.kubernetes.io").is_some(), reserved);
        }
    }

    #[test]
    fn the_deploy_role_lets_veer_read_every_kind_and_write_its_status() {
        let role = include_str!("../../../deploy/rbac.yaml");
        for (group, _, kind) in veer_model::load::read_kinds() {
            if group.is_empty() {
                continue;
            }
            let plural = plural(kind);
            let rule = role.lines().skip_while(|l| !l.contains(&format!("apiGroups: [{group}]"))).nth(1).unwrap_or_default();
            let resources: Vec<&str> = rule.split(['[', ']']).nth(1).unwrap_or_default().split(", ").collect();
            assert!(resources.contains(&plural.as_str()), "deploy/rbac.yaml lists no {plural} for {group}");
            let status = format!("{plural}/status");
            assert!(resources.contains(&status.as_str()) || kind == "DNSEndpoint", "deploy/rbac.yaml lets veer write no {status}");
        }
    }
}
