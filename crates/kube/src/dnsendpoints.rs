//! Seed 002's operator job, for real: the DNSEndpoints the Service Router Operator would write
//! for this cluster (`veer_dns::plan`), created, updated and deleted on the API server so an
//! existing ExternalDNS picks them up. The diff is pure; the writer applies it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use veer_dns::plan::{Endpoint, Source, MANAGED_BY, OPERATOR};

/// A DNSEndpoint the server holds that the operator (veer, in its place) manages.
#[derive(Clone, Debug, PartialEq)]
pub struct Existing {
    pub namespace: String,
    pub name: String,
    /// labels, annotations, ownerReferences and spec, as the comparison sees them.
    pub content: Value,
}

/// One change to make.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Create or update (server-side apply) this object.
    Apply { namespace: String, name: String, object: Value },
    /// Delete this one: no route or gateway calls for it any more.
    Delete { namespace: String, name: String },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Apply { namespace, name, .. } => write!(f, "{namespace}/{name} applied"),
            Change::Delete { namespace, name } => write!(f, "{namespace}/{name} deleted"),
        }
    }
}

/// Whether an object's labels say the operator manages it.
pub fn managed(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(MANAGED_BY)).is_some_and(|v| v == OPERATOR)
}

/// The part of an object the operator owns and compares.
pub fn content(object: &Value) -> Value {
    let meta = &object["metadata"];
    json!({
        "labels": meta.get("labels").cloned().unwrap_or(json!({})),
        "annotations": meta.get("annotations").cloned().unwrap_or(json!({})),
        "ownerReferences": meta.get("ownerReferences").cloned().unwrap_or(json!([])),
        "spec": object.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// The changes that make `existing` what `plan` asks for. `route_uid` gives a ServiceRoute's
/// uid by (namespace, name): its DNSEndpoints name it as their owner, as the operator's do
/// (Kubernetes' garbage collector then deletes them with it); a route not found has none.
pub fn diff(plan: &[Endpoint], existing: &[Existing], route_uid: impl Fn(&str, &str) -> Option<String>) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut wanted = BTreeSet::new();
    for e in plan {
        let mut object = veer_dns::yaml::object(e);
        if let Source::Route { namespace, name } = &e.source {
            if let Some(uid) = route_uid(namespace, name) {
                object["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "routing.router.io/v1alpha1",
                    "kind": "ServiceRoute",
                    "name": name,
                    "uid": uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }]);
            }
        }
        wanted.insert((e.namespace.clone(), e.name.clone()));
        let now = existing.iter().find(|x| x.namespace == e.namespace && x.name == e.name);
        if now.is_none_or(|x| x.content != content(&object)) {
            changes.push(Change::Apply { namespace: e.namespace.clone(), name: e.name.clone(), object });
        }
    }
    for x in existing {
        if !wanted.contains(&(x.namespace.clone(), x.name.clone())) {
            changes.push(Change::Delete { namespace: x.namespace.clone(), name: x.name.clone() });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use veer_dns::plan::{RecordKind, ZoneId};

    use super::*;

    fn endpoint(name: &str, target: &str) -> Endpoint {
        Endpoint {
            name: name.into(),
            namespace: "apps".into(),
            labels: BTreeMap::from([(MANAGED_BY.to_string(), OPERATOR.to_string())]),
            annotations: BTreeMap::new(),
            controller: "external-dns-neu".into(),
            zone: ZoneId { domain: "example.com".into(), region: "neu".into() },
            source: Source::Route { namespace: "apps".into(), name: "web".into() },
            dns_name: "web.example.com".into(),
            record_type: RecordKind::CNAME,
            target: target.into(),
            ttl: 60,
        }
    }

    fn existing_of(e: &Endpoint, uid: &str) -> Existing {
        let mut object = veer_dns::yaml::object(e);
        object["metadata"]["ownerReferences"] = json!([{"apiVersion": "routing.router.io/v1alpha1", "kind": "ServiceRoute", "name": "web", "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
        Existing { namespace: e.namespace.clone(), name: e.name.clone(), content: content(&object) }
    }

    #[test]
    fn new_records_are_applied_with_their_owner_unchanged_ones_left_and_stale_ones_deleted() {
        let uid = |_: &str, _: &str| Some("u-1".to_string());
        let a = endpoint("web-external-dns-neu", "aks01-neu-x.example.com");
        let b = endpoint("web-external-dns-weu", "aks01-neu-x.example.com");
        let first = diff(std::slice::from_ref(&a), &[], uid);
        let [Change::Apply { object, .. }] = first.as_slice() else { panic!("{first:?}") };
        assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(object["spec"]["endpoints"][0]["recordType"], "CNAME");

        let held = vec![existing_of(&a, "u-1")];
        assert_eq!(diff(std::slice::from_ref(&a), &held, uid), vec![], "nothing changed, nothing written");
        let adopted = diff(&[a.clone(), b.clone()], &held, uid);
        assert!(matches!(adopted.as_slice(), [Change::Apply { name, .. }] if name == "web-external-dns-weu"), "{adopted:?}");
        let moved = endpoint("web-external-dns-neu", "elsewhere.example.com");
        assert!(matches!(diff(&[moved], &held, uid).as_slice(), [Change::Apply { .. }]), "a changed target is written");
        let both = vec![existing_of(&a, "u-1"), existing_of(&b, "u-1")];
        assert_eq!(diff(&[a], &both, uid), vec![Change::Delete { namespace: "apps".into(), name: "web-external-dns-weu".into() }]);
    }
}
