//! DNSEndpoint objects as YAML, as `veer dns endpoints` writes them for ExternalDNS's CRD source.
//!
//! Each object is written by serde_json: JSON is YAML, and every string in it is double-quoted.
//! A YAML 1.1 reader (kubectl's) reads a plain `Yes`, `ON`, `y`, `0x1F`, `1e3`, `~`, `.inf` or
//! `012` as a boolean, number or null; quoting only the words a hand-written emitter thought of
//! let such a label value or target change type on its way to the cluster.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::Endpoint;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Object<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    spec: Spec<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Spec<'a> {
    endpoints: [Record<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    dns_name: &'a str,
    record_type: &'static str,
    #[serde(rename = "recordTTL")]
    record_ttl: u32,
    targets: [&'a str; 1],
}

/// One YAML document per endpoint, `---`-separated.
pub fn endpoints(eps: &[Endpoint]) -> String {
    let mut out = String::new();
    for (i, e) in eps.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_json::to_string_pretty(&object(e)).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The DNSEndpoint object of `e`, as the API server takes it.
pub fn object(e: &Endpoint) -> serde_json::Value {
    let object = Object {
        api_version: "externaldns.k8s.io/v1alpha1",
        kind: "DNSEndpoint",
        metadata: Metadata { name: &e.name, namespace: &e.namespace, labels: &e.labels, annotations: &e.annotations },
        spec: Spec {
            endpoints: [Record { dns_name: &e.dns_name, record_type: e.record_type.as_str(), record_ttl: e.ttl, targets: [&e.target] }],
        },
    };
    // Serializing these structs (strings, maps of strings, a number) cannot fail.
    serde_json::to_value(&object).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{RecordKind, Source, ZoneId};

    /// What a YAML 1.1 reader (PyYAML, go-yaml v2 behind kubectl) resolves as a bool, an int, a
    /// float or null when written plain.
    const YAML11_NOT_STRINGS: &[&str] = &[
        "Yes",
        "YES",
        "yes",
        "No",
        "ON",
        "On",
        "on",
        "off",
        "OFF",
        "y",
        "Y",
        "n",
        "N",
        "true",
        "True",
        "FALSE",
        "0x1F",
        "1e3",
        "~",
        "null",
        "Null",
        "NULL",
        ".inf",
        "-.inf",
        ".NaN",
        "012",
        "0b1010",
        "1_000",
        "190:20:30",
        "+12",
        "3.",
        "",
    ];

    fn endpoint(value: &str) -> Endpoint {
        Endpoint {
            name: value.to_string(),
            namespace: value.to_string(),
            labels: [("app".to_string(), value.to_string()), (value.to_string(), "x".to_string())].into_iter().collect(),
            annotations: [("note".to_string(), value.to_string())].into_iter().collect(),
            controller: "c".into(),
            zone: ZoneId { domain: "example.com".into(), region: "weu".into() },
            source: Source::Route { namespace: "ns".into(), name: "r".into() },
            dns_name: value.to_string(),
            record_type: RecordKind::CNAME,
            target: value.to_string(),
            ttl: 60,
        }
    }

    /// Every scalar of `node` with its text and whether it was quoted.
    fn scalars(node: &veer_model::yaml::Node, out: &mut Vec<(String, bool)>) {
        match &node.value {
            veer_model::yaml::Value::Scalar { text, plain } => out.push((text.clone(), *plain)),
            veer_model::yaml::Value::Seq(items) => items.iter().for_each(|n| scalars(n, out)),
            veer_model::yaml::Value::Map(entries) => entries.iter().for_each(|(k, v)| {
                scalars(k, out);
                scalars(v, out);
            }),
        }
    }

    #[test]
    fn strings_a_yaml_1_1_reader_would_take_for_other_types_are_quoted_and_read_back_as_written() {
        let eps: Vec<Endpoint> = YAML11_NOT_STRINGS.iter().map(|v| endpoint(v)).collect();
        let text = endpoints(&eps);
        let (docs, err) = veer_model::yaml::load(&text);
        assert!(err.is_none(), "{err:?}\n{text}");
        assert_eq!(docs.len(), YAML11_NOT_STRINGS.len());
        for (doc, value) in docs.iter().zip(YAML11_NOT_STRINGS) {
            let mut found = Vec::new();
            scalars(&doc.root, &mut found);
            // name, namespace, a label key and value, an annotation value, dnsName, target.
            let copies: Vec<&(String, bool)> = found.iter().filter(|(t, _)| t == value).collect();
            assert_eq!(copies.len(), 7, "{value:?} in {found:?}");
            assert!(copies.iter().all(|(_, plain)| !plain), "{value:?} is written plain:\n{text}");
            // The only plain scalar is the TTL, a number on purpose.
            let plain: Vec<&String> = found.iter().filter(|(_, p)| *p).map(|(t, _)| t).collect();
            assert_eq!(plain, vec!["60"], "{text}");
        }
    }
}
