//! Object metadata and the identity every resource carries back to its file and line.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::decode::Obj;
use crate::diag::{Diagnostic, Pos, Severity};

/// Label naming the cluster a namespaced object belongs to.
pub const CLUSTER_LABEL: &str = "topology.istio.io/cluster";

/// Name, namespace, labels and origin of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: &'static str,
    pub api_version: String,
    pub name: String,
    /// `default` when the manifest leaves it out, as `kubectl apply` without `-n` does.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub file: Arc<str>,
    pub pos: Pos,
    /// `metadata.creationTimestamp` (RFC 3339, UTC, as the API server writes it), when given:
    /// Gateway API orders tied routes by age. Its fixed form compares as text.
    pub created: Option<String>,
}

// === impl Meta ===

impl Meta {
    /// Reads `metadata`; `kind` and `api_version` were read by the caller.
    pub fn read(doc: &Obj<'_>, kind: &'static str, api_version: &str) -> Option<Meta> {
        let Some(m) = doc.obj("metadata") else {
            doc.ctx().error(doc.pos(), "metadata", "required field is missing");
            return None;
        };
        let name = m.required_string("name").map(|(n, _)| n);
        let namespace = m.string("namespace").map(|(n, _)| n).unwrap_or_else(|| "default".into());
        let labels = m.string_map("labels");
        m.string_map("annotations");
        let created = m.string("creationTimestamp").and_then(|(t, pos)| {
            if is_utc_timestamp(&t) {
                Some(t)
            } else {
                m.ctx().error(
                    pos,
                    &m.field_path("creationTimestamp"),
                    format!("{t:?} is not a time as the API server writes it (RFC 3339 in UTC, whole seconds, like 2024-01-02T15:04:05Z)"),
                );
                None
            }
        });
        for quiet in [
            "generation",
            "uid",
            "resourceVersion",
            "managedFields",
            "ownerReferences",
            "finalizers",
            "generateName",
            "deletionTimestamp",
            "selfLink",
        ] {
            m.skip(quiet);
        }
        // Point at the document's start (its apiVersion line), where a reader looks first.
        let pos = doc.pos();
        m.finish();
        Some(Meta {
            kind,
            api_version: api_version.to_string(),
            name: name?,
            namespace,
            labels,
            file: doc.ctx().file.clone(),
            pos,
            created,
        })
    }

    /// The cluster this object belongs to, from its `topology.istio.io/cluster` label.
    pub fn cluster_label(&self) -> Option<&str> {
        self.labels.get(CLUSTER_LABEL).map(String::as_str)
    }

    /// `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.pos.line)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`: Kubernetes' form, whose text order is time order.
fn is_utc_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Diagnostic about a resource as a whole or one of its fields.
pub fn about(meta: &Meta, pos: Pos, severity: Severity, field: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        severity,
        file: meta.file.clone(),
        pos,
        resource: Some(meta.to_string()),
        field: field.to_string(),
        message: message.into(),
    }
}
