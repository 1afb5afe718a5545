//! The core objects veer reads only because a resource names them: the Opaque Secret holding a
//! DNSZone's TSIG key and the ConfigMaps holding a BackendTLSPolicy's CA certificates. veer
//! watches each by name rather than every Secret and ConfigMap of the cluster.

use std::collections::BTreeSet;

use serde_json::Value;

/// A core object a resource names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Referenced {
    /// `Secret` or `ConfigMap`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

/// The objects the rendered `documents` (`kubectl get -o json` shapes) name: a DNSZone's
/// `spec.tsig.secretRef` (its namespace defaulting to the zone's), a BackendTLSPolicy's
/// `spec.validation.caCertificateRefs` of kind ConfigMap (in the policy's namespace). A document
/// that is not JSON, or a reference without a name, names nothing: the model reports it.
pub fn referenced<'a>(documents: impl IntoIterator<Item = &'a str>) -> BTreeSet<Referenced> {
    let mut out = BTreeSet::new();
    for text in documents {
        let Ok(object) = serde_json::from_str::<Value>(text) else { continue };
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default");
        match object["kind"].as_str() {
            Some("DNSZone") => {
                let secret = &object["spec"]["tsig"]["secretRef"];
                if let Some(name) = secret["name"].as_str().filter(|n| !n.is_empty()) {
                    let namespace = secret["namespace"].as_str().unwrap_or(namespace);
                    out.insert(Referenced { kind: "Secret", namespace: namespace.to_string(), name: name.to_string() });
                }
            }
            Some("BackendTLSPolicy") => {
                let refs = object["spec"]["validation"]["caCertificateRefs"].as_array().into_iter().flatten();
                for r in refs.filter(|r| r["kind"].as_str() == Some("ConfigMap")) {
                    if let Some(name) = r["name"].as_str().filter(|n| !n.is_empty()) {
                        out.insert(Referenced { kind: "ConfigMap", namespace: namespace.to_string(), name: name.to_string() });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_zones_tsig_secret_and_a_policys_ca_config_maps_are_referenced_and_nothing_else() {
        let zone = json!({"kind": "DNSZone", "metadata": {"name": "weu", "namespace": "dns"},
            "spec": {"tsig": {"keyName": "k", "secretRef": {"name": "tsig"}}}});
        let other_ns = json!({"kind": "DNSZone", "metadata": {"name": "neu", "namespace": "dns"},
            "spec": {"tsig": {"secretRef": {"name": "tsig-neu", "namespace": "keys"}}}});
        let policy = json!({"kind": "BackendTLSPolicy", "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"validation": {"caCertificateRefs": [{"kind": "ConfigMap", "name": "ca"}, {"kind": "Secret", "name": "nope"}]}}});
        let service = json!({"kind": "Service", "metadata": {"name": "tsig", "namespace": "dns"}});
        let texts: Vec<String> = [zone, other_ns, policy, service].iter().map(Value::to_string).chain(["not json".to_string()]).collect();
        let found: Vec<(&str, String, String)> =
            referenced(texts.iter().map(String::as_str)).into_iter().map(|r| (r.kind, r.namespace, r.name)).collect();
        assert_eq!(
            found,
            [
                ("ConfigMap", "shop".to_string(), "ca".to_string()),
                ("Secret", "dns".to_string(), "tsig".to_string()),
                ("Secret", "keys".to_string(), "tsig-neu".to_string()),
            ]
        );
    }
}
