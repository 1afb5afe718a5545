//! The status veer writes on each object it reads, the way the object's own project writes it:
//! Gateway API conditions (per parent for routes, per ancestor for policies), SMH's `state`, and
//! a `Ready` condition for the others. Each reason is veer's located message. Pure: the verdicts
//! come from the check of the whole set, the time is an argument.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use veer_model::diag::{Diagnostic, Severity};

/// The controller name veer writes where Gateway API asks for one.
pub const CONTROLLER: &str = "veer.io/gateway-controller";

/// What the check of the set says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// In force, with these warnings.
    Accepted { warnings: Vec<String> },
    /// Refused: its own errors.
    Invalid { errors: Vec<String> },
    /// Correct as far as it goes, but not in force: the set it belongs to has errors elsewhere
    /// (the first is named), so the last good set serves.
    Pending { because: String },
}

/// The verdict on each of `sources` (the API objects' document names) from the diagnostics of
/// the check of the whole set; `refused`: why the set cannot serve though its checks pass.
pub fn verdicts<'a>(
    diagnostics: &[Diagnostic],
    refused: Option<&str>,
    sources: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, Verdict> {
    let mut by_source: BTreeMap<&str, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for d in diagnostics {
        let entry = by_source.entry(&d.file).or_default();
        match d.severity {
            Severity::Error => entry.0.push(d.to_string()),
            Severity::Warning => entry.1.push(d.to_string()),
            Severity::Ignored => {}
        }
    }
    let first_error = diagnostics.iter().find(|d| d.severity == Severity::Error).map(ToString::to_string).or(refused.map(str::to_string));
    let accepted = first_error.is_none();
    sources
        .into_iter()
        .map(|s| {
            let (errors, warnings) = by_source.get(s).cloned().unwrap_or_default();
            let verdict = if !errors.is_empty() {
                Verdict::Invalid { errors }
            } else if accepted {
                Verdict::Accepted { warnings }
            } else {
                Verdict::Pending { because: first_error.clone().unwrap_or_default() }
            };
            (s.to_string(), verdict)
        })
        .collect()
}

/// An object as the status is written for it.
pub struct Object<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
    pub generation: Option<i64>,
    /// The object's body (for routes' `parentRefs` and policies' `targetRefs`).
    pub body: &'a Value,
    /// Its status now, whose condition times are kept for conditions that did not change.
    pub current: Option<&'a Value>,
}

/// The status `object` should have for `verdict` at `now` (RFC 3339); `None` for kinds whose
/// status is not veer's to write (Services, Secrets).
pub fn desired(object: &Object<'_>, verdict: &Verdict, now: &str) -> Option<Value> {
    if object.group.is_empty() {
        return None;
    }
    let message = message(verdict);
    let generation = object.generation.unwrap_or(0);
    let status = match (object.group, object.kind) {
        ("networking.smh.solo.io", _) => {
            let state = match verdict {
                Verdict::Accepted { .. } => "ACCEPTED",
                Verdict::Invalid { .. } => "INVALID",
                Verdict::Pending { .. } => "PENDING",
            };
            let mut status = json!({"observedGeneration": generation, "state": state});
            if let Verdict::Invalid { errors } = verdict {
                status["errors"] = json!(errors);
            }
            status
        }
        ("gateway.networking.k8s.io", "GatewayClass") => {
            // Only a class naming veer's controller is veer's to accept.
            if object.body.get("spec").and_then(|s| s.get("controllerName")).and_then(Value::as_str) != Some(CONTROLLER) {
                return None;
            }
            let old = old_conditions(object.current, None);
            json!({"conditions": [condition(&old, "Accepted", ("True", "Accepted"), "veer serves the Gateways of this class", generation, now)]})
        }
        ("gateway.networking.k8s.io", "Gateway") => {
            let (accepted, programmed) = match verdict {
                Verdict::Accepted { .. } => (("True", "Accepted"), ("True", "Programmed")),
                Verdict::Invalid { .. } => (("False", "Invalid"), ("False", "Invalid")),
                Verdict::Pending { .. } => (("Unknown", "Pending"), ("False", "Pending")),
            };
            let old = old_conditions(object.current, None);
            json!({"conditions": [
                condition(&old, "Accepted", accepted, &message, generation, now),
                condition(&old, "Programmed", programmed, &message, generation, now),
            ]})
        }
        ("gateway.networking.k8s.io", "HTTPRoute" | "TLSRoute") => {
            let (accepted, resolved) = match verdict {
                Verdict::Accepted { .. } => (("True", "Accepted"), ("True", "ResolvedRefs")),
                Verdict::Invalid { errors } if errors.iter().any(|e| e.contains("backendRefs")) => {
                    (("False", "UnsupportedValue"), ("False", "BackendNotFound"))
                }
                Verdict::Invalid { .. } => (("False", "UnsupportedValue"), ("True", "ResolvedRefs")),
                Verdict::Pending { .. } => (("Unknown", "Pending"), ("Unknown", "Pending")),
            };
            let parents: Vec<Value> = refs(object.body, "parentRefs", object.namespace)
                .into_iter()
                .map(|parent| {
                    let old = old_conditions(object.current.and_then(|c| c.get("parents")), Some(("parentRef", &parent)));
                    json!({
                        "parentRef": parent,
                        "controllerName": CONTROLLER,
                        "conditions": [
                            condition(&old, "Accepted", accepted, &message, generation, now),
                            condition(&old, "ResolvedRefs", resolved, &message, generation, now),
                        ],
                    })
                })
                .collect();
            json!({"parents": parents})
        }
        ("gateway.networking.k8s.io", _) => {
            let accepted = match verdict {
                Verdict::Accepted { .. } => ("True", "Accepted"),
                Verdict::Invalid { .. } => ("False", "Invalid"),
                Verdict::Pending { .. } => ("Unknown", "Pending"),
            };
            let ancestors: Vec<Value> = refs(object.body, "targetRefs", object.namespace)
                .into_iter()
                .map(|target| {
                    let old = old_conditions(object.current.and_then(|c| c.get("ancestors")), Some(("ancestorRef", &target)));
                    json!({
                        "ancestorRef": target,
                        "controllerName": CONTROLLER,
                        "conditions": [condition(&old, "Accepted", accepted, &message, generation, now)],
                    })
                })
                .collect();
            json!({"ancestors": ancestors})
        }
        _ => {
            let ready = match verdict {
                Verdict::Accepted { .. } => ("True", "Accepted"),
                Verdict::Invalid { .. } => ("False", "Invalid"),
                Verdict::Pending { .. } => ("False", "Pending"),
            };
            let old = old_conditions(object.current, None);
            json!({"observedGeneration": generation, "conditions": [condition(&old, "Ready", ready, &message, generation, now)]})
        }
    };
    Some(status)
}

/// What a condition's message says: every error or warning, or why the object waits.
fn message(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Accepted { warnings } if warnings.is_empty() => "accepted by veer and in force".into(),
        Verdict::Accepted { warnings } => format!("accepted by veer and in force, with warnings: {}", warnings.join(" | ")),
        Verdict::Invalid { errors } => errors.join(" | "),
        Verdict::Pending { because } => {
            format!("not in force: the set it belongs to has errors, so the last good set still serves: {because}")
        }
    }
}

/// The references an object lists under `field` (routes' parents, policies' targets), each
/// with its namespace filled in as Gateway API defaults it (the object's own).
fn refs(body: &Value, field: &str, namespace: Option<&str>) -> Vec<Value> {
    let list = body.get("spec").and_then(|s| s.get(field)).and_then(Value::as_array).cloned().unwrap_or_default();
    list.into_iter()
        .map(|mut r| {
            if let (Some(fields), Some(ns)) = (r.as_object_mut(), namespace) {
                fields.entry("namespace").or_insert_with(|| Value::from(ns));
            }
            r
        })
        .collect()
}

/// The conditions now in `current` (or, with `entry`, in the element of the list `current` whose
/// `entry.0` equals `entry.1`).
fn old_conditions(current: Option<&Value>, entry: Option<(&str, &Value)>) -> Vec<Value> {
    let holder = match entry {
        None => current.cloned(),
        Some((key, want)) => current.and_then(Value::as_array).and_then(|list| list.iter().find(|e| e.get(key) == Some(want)).cloned()),
    };
    holder.and_then(|h| h.get("conditions").and_then(Value::as_array).cloned()).unwrap_or_default()
}

/// A condition; its `lastTransitionTime` is the old one's when its status did not change.
fn condition(old: &[Value], kind: &str, (status, reason): (&str, &str), message: &str, generation: i64, now: &str) -> Value {
    let since = old
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind) && c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").and_then(Value::as_str))
        .unwrap_or(now);
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict_of(text: &str, name: &str) -> Verdict {
        let sources = vec![(name.to_string(), text.to_string())];
        let d = veer_model::from_sources_even_if_invalid(&sources).diagnostics.into_sorted();
        verdicts(&d, None, [name]).remove(name).expect("a verdict")
    }

    const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop, generation: 3}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: missing, port: 80}]}]\n";

    #[test]
    fn an_invalid_route_says_why_on_each_parent_with_its_location() {
        let verdict = verdict_of(ROUTE, "kubernetes:HTTPRoute/shop/r");
        let Verdict::Invalid { errors } = &verdict else { panic!("{verdict:?}") };
        assert!(errors[0].starts_with("kubernetes:HTTPRoute/shop/r:"), "{errors:?}");
        let body: Value = json!({"spec": {"parentRefs": [{"name": "gw"}]}});
        let object = Object {
            group: "gateway.networking.k8s.io",
            kind: "HTTPRoute",
            namespace: Some("shop"),
            generation: Some(3),
            body: &body,
            current: None,
        };
        let status = desired(&object, &verdict, "2026-12-04T10:00:00Z").expect("a status");
        let parent = &status["parents"][0];
        assert_eq!(parent["parentRef"], json!({"name": "gw", "namespace": "shop"}));
        assert_eq!(parent["controllerName"], CONTROLLER);
        assert_eq!(parent["conditions"][0]["type"], "Accepted");
        assert_eq!(parent["conditions"][0]["status"], "False");
        assert_eq!(parent["conditions"][1]["reason"], "BackendNotFound");
        assert_eq!(parent["conditions"][0]["observedGeneration"], 3);
        assert!(parent["conditions"][0]["message"].as_str().unwrap().contains("missing"), "{status}");
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time_and_a_changed_one_takes_now() {
        let body = json!({});
        let accepted = Verdict::Accepted { warnings: vec![] };
        let object = Object { group: "veer.io", kind: "Cluster", namespace: None, generation: Some(1), body: &body, current: None };
        let first = desired(&object, &accepted, "2026-12-04T10:00:00Z").unwrap();
        let again = Object { current: Some(&first), ..object };
        assert_eq!(desired(&again, &accepted, "2026-12-04T11:00:00Z").unwrap(), first, "nothing to write");
        let invalid = Verdict::Invalid { errors: vec!["x".into()] };
        let changed = desired(&again, &invalid, "2026-12-04T11:00:00Z").unwrap();
        assert_eq!(changed["conditions"][0]["lastTransitionTime"], "2026-12-04T11:00:00Z");
        assert_eq!(changed["conditions"][0]["status"], "False");
    }

    #[test]
    fn smh_resources_get_smh_states_and_objects_of_a_refused_set_wait() {
        let body = json!({});
        let object = Object {
            group: "networking.smh.solo.io",
            kind: "FailoverService",
            namespace: Some("n"),
            generation: Some(2),
            body: &body,
            current: None,
        };
        let ok = desired(&object, &Verdict::Accepted { warnings: vec![] }, "t").unwrap();
        assert_eq!(ok, json!({"observedGeneration": 2, "state": "ACCEPTED"}));
        let d = veer_model::from_sources_even_if_invalid(&[("kubernetes:HTTPRoute/shop/r".into(), ROUTE.into())]).diagnostics.into_sorted();
        let all = verdicts(&d, None, ["kubernetes:HTTPRoute/shop/r", "kubernetes:FailoverService/n/f"]);
        let Verdict::Pending { because } = &all["kubernetes:FailoverService/n/f"] else { panic!("{all:?}") };
        assert!(because.starts_with("kubernetes:HTTPRoute/shop/r:"), "{because}");
        assert_eq!(desired(&object, &all["kubernetes:FailoverService/n/f"], "t").unwrap()["state"], "PENDING");
        let core = Object { group: "", kind: "Service", ..object };
        assert_eq!(desired(&core, &Verdict::Accepted { warnings: vec![] }, "t"), None);
    }
}
