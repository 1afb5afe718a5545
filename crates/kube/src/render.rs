//! An API object as a manifest document: the JSON the server holds, named after the object, with
//! what the model cannot use taken off and the node's cluster named on per-cluster kinds.

use serde_json::{Map, Value};
use veer_model::meta::CLUSTER_LABEL;

/// The kind an object was listed as: the server's list items carry no `apiVersion`/`kind` of
/// their own, so the watch that listed them says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
}

/// `(source name, text)` for one object: the name is `kubernetes:<Kind>/<namespace>/<name>`
/// (`<Kind>/<name>` when cluster-scoped), which every diagnostic starts with; the text is the
/// object as pretty JSON (YAML's subset, so the model's located reader takes it, and a line
/// number in a message points into `kubectl get -o json`'s layout).
///
/// `cluster` is the node's: objects of per-cluster kinds that do not say which cluster holds
/// them are this API server's, so they get the label `topology.istio.io/cluster` naming it.
pub fn document(listed: &Listed<'_>, object: &Value, cluster: &str) -> (String, String) {
    let mut object = object.clone();
    let fields = match object.as_object_mut() {
        Some(fields) => fields,
        None => return (format!("kubernetes:{}/<not an object>", listed.kind), object.to_string()),
    };
    fields.insert("apiVersion".into(), Value::from(listed.api_version));
    fields.insert("kind".into(), Value::from(listed.kind));
    // What veer writes itself, and what changes with every write: a status write must not make
    // the set look changed (the model reads neither).
    fields.remove("status");
    let metadata = fields.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let (mut namespace, mut name) = (None, String::from("<unnamed>"));
    if let Some(meta) = metadata.as_object_mut() {
        // Bookkeeping of the server's field managers: large, and nothing veer reads.
        meta.remove("managedFields");
        meta.remove("resourceVersion");
        namespace = meta.get("namespace").and_then(Value::as_str).map(str::to_string);
        if let Some(n) = meta.get("name").and_then(Value::as_str) {
            name = n.to_string();
        }
        if veer_model::set::is_per_cluster(listed.kind) {
            let labels = meta.entry("labels").or_insert_with(|| Value::Object(Map::new()));
            if let Some(labels) = labels.as_object_mut() {
                labels.entry(CLUSTER_LABEL).or_insert_with(|| Value::from(cluster));
            }
        }
    }
    let source = source_name(listed.kind, namespace.as_deref(), &name);
    // Serialising a `Value` cannot fail (its keys are strings).
    let text = serde_json::to_string_pretty(&object).unwrap_or_default();
    (source, text)
}

/// The document name of an object: `kubernetes:<Kind>/<namespace>/<name>`, or
/// `kubernetes:<Kind>/<name>` when it has no namespace.
pub fn source_name(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("kubernetes:{kind}/{ns}/{name}"),
        None => format!("kubernetes:{kind}/{name}"),
    }
}

/// The document name of a remote cluster's object: `kubernetes@<cluster>:<Kind>/…` for the
/// `kubernetes:<Kind>/…` of [`source_name`], so a message says which server holds it.
pub fn remote_name(name: &str, cluster: &str) -> String {
    match name.strip_prefix("kubernetes:") {
        Some(rest) => format!("kubernetes@{cluster}:{rest}"),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SERVICE: Listed<'static> = Listed { api_version: "v1", kind: "Service" };

    #[test]
    fn a_listed_object_gets_its_kind_a_name_and_its_cluster() {
        let object = json!({
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}
        });
        let (source, text) = document(&SERVICE, &object, "west");
        assert_eq!(source, "kubernetes:Service/shop/web");
        let read: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(read["apiVersion"], "v1");
        assert_eq!(read["kind"], "Service");
        assert_eq!(read["metadata"]["labels"][CLUSTER_LABEL], "west");
        assert!(read["metadata"].get("managedFields").is_none());
        // A status write, which changes only these, leaves the document as it was.
        assert!(read.get("status").is_none() && read["metadata"].get("resourceVersion").is_none());
        // The model reads it as the files' Service would be read.
        let set = veer_model::from_sources(&[(source, text)]).unwrap_or_else(|r| panic!("{r}")).into_set();
        assert!(set.service("west", "shop", "web").is_some());
    }

    #[test]
    fn a_cluster_named_by_the_object_is_kept_and_cluster_wide_kinds_get_none() {
        let object = json!({"metadata": {"name": "web", "labels": {CLUSTER_LABEL: "east"}}, "spec": {}});
        let (_, text) = document(&SERVICE, &object, "west");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["metadata"]["labels"][CLUSTER_LABEL], "east");
        let listed = Listed { api_version: "networking.smh.solo.io/v1alpha2", kind: "FailoverService" };
        let (source, text) = document(&listed, &json!({"metadata": {"name": "f", "namespace": "n"}}), "west");
        assert_eq!(source, "kubernetes:FailoverService/n/f");
        assert!(serde_json::from_str::<Value>(&text).unwrap()["metadata"].get("labels").is_none());
    }

    #[test]
    fn an_error_in_an_object_names_the_object_and_the_line_of_the_field() {
        let object = json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"ports": [{"port": 80, "colour": "red"}]}});
        let (source, text) = document(&SERVICE, &object, "west");
        let rejected = veer_model::from_sources(&[(source, text)]).expect_err("an unknown field is an error");
        let message = rejected.errors().next().expect("one error").to_string();
        assert!(message.starts_with("kubernetes:Service/shop/web:"), "{message}");
        assert!(message.contains("colour"), "{message}");
    }
}
