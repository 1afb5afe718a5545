//! Failover in Kubernetes' own terms: a `v1 Event` on the resource that defines a destination
//! (the route, VirtualDestination, FailoverService or Service read from the API server) each
//! time its traffic moves to another priority and back, so `kubectl describe` shows it.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};
use veer_control::events::{Event, EventKind, Events};
use veer_gateway::snapshot::Snapshot;
use veer_model::explain::SourceView;

/// How often the node's event log is read for new priority changes.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The reason and type Kubernetes shows for a priority change from `from` to `to` (lower is
/// preferred; `None`: no priority has a healthy endpoint).
pub fn reason(from: Option<u32>, to: Option<u32>) -> (&'static str, &'static str) {
    match (from, to) {
        (_, None) => ("NoHealthyUpstream", "Warning"),
        (Some(f), Some(t)) if t < f => ("FailedBack", "Normal"),
        (None, Some(_)) => ("Recovered", "Normal"),
        _ => ("FailedOver", "Warning"),
    }
}

/// The Event for `event` on the first of `sources` read from the API server (`kubernetes:`
/// documents), or `None` when the destination comes from files only. `uid` finds the object's
/// uid (`kubectl describe` lists the events naming it).
pub fn kube_event(
    event: &Event,
    sources: &[SourceView],
    uid: impl Fn(&str, &str, &str) -> Option<String>,
    instance: &str,
    now: &str,
) -> Option<Value> {
    if event.kind != EventKind::PriorityChange {
        return None;
    }
    let source = sources.iter().find(|s| s.file.starts_with("kubernetes:"))?;
    // A move within one priority number goes by the rule's priorities instead.
    let (reason, kind) = match (event.from_rank, event.to_rank) {
        (Some(from), Some(to)) => reason(Some(from), Some(to)),
        _ => reason(event.from_priority, event.to_priority),
    };
    let show = |p: Option<u32>| p.map_or("none".to_string(), |p| p.to_string());
    let destination = event.destination.as_deref().unwrap_or("?");
    let message = match (event.from_rank, event.to_rank) {
        (Some(from), Some(to)) => format!("traffic for {destination} moved from the rule's priority {from} to {to}: {}", event.reason),
        _ => format!(
            "traffic for {destination} moved from priority {} to {}: {}",
            show(event.from_priority),
            show(event.to_priority),
            event.reason
        ),
    };
    let mut involved = json!({"kind": source.kind, "name": source.name, "namespace": source.namespace});
    if let Some(uid) = uid(&source.kind, &source.namespace, &source.name) {
        involved["uid"] = uid.into();
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", source.name), "namespace": source.namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "veer", "host": instance},
        "reportingComponent": "veer",
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }))
}

/// Posts an Event for every priority change `events` records from now on, for as long as the
/// task lives. `snapshot` gives the node's routing state, whose reports name each destination's
/// resources; `uid` the uid of an object the source read.
pub async fn publish(
    client: Client,
    events: Arc<Events>,
    snapshot: impl Fn() -> Arc<Snapshot> + Send + 'static,
    uid: impl Fn(&str, &str, &str) -> Option<String> + Send + 'static,
    instance: String,
) {
    let mut seen = events.last_seq();
    let mut tick = tokio::time::interval(LOOK_EVERY);
    loop {
        tick.tick().await;
        let new = events.since(seen);
        let Some(last) = new.last() else { continue };
        seen = last.seq;
        let state = snapshot();
        for event in new.iter().filter(|e| e.kind == EventKind::PriorityChange) {
            let Some(dest) = state.destinations.iter().find(|d| Some(d.key.as_str()) == event.destination.as_deref()) else { continue };
            let Some(object) = kube_event(event, &dest.report.sources, &uid, &instance, &crate::clock::rfc3339_now()) else { continue };
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
            let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &namespace);
            let posted = match serde_json::from_value(object) {
                Ok(e) => api.create(&PostParams::default(), &e).await.map(drop),
                Err(e) => Err(kube::Error::SerdeError(e)),
            };
            if let Err(e) = posted {
                tracing::warn!(target: "veer::kube", "cannot post the Event for {:?}: {e}", event.destination);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(from: Option<u32>, to: Option<u32>) -> Event {
        Event {
            seq: 1,
            time_unix_ms: 0,
            kind: EventKind::PriorityChange,
            destination: Some("www.example.com/test".into()),
            endpoint: None,
            cluster: None,
            from_priority: from,
            to_priority: to,
            from_rank: None,
            to_rank: None,
            reason: "priority 0 has no healthy endpoint".into(),
            count: 1,
        }
    }

    fn source(file: &str) -> SourceView {
        SourceView {
            kind: "HTTPRoute".into(),
            namespace: "default".into(),
            name: "ha".into(),
            file: file.into(),
            line: 1,
            role: "route".into(),
        }
    }

    #[test]
    fn a_move_down_is_a_warning_and_a_move_back_normal() {
        assert_eq!(reason(Some(0), Some(1)), ("FailedOver", "Warning"));
        assert_eq!(reason(Some(1), Some(0)), ("FailedBack", "Normal"));
        assert_eq!(reason(Some(0), None), ("NoHealthyUpstream", "Warning"));
        assert_eq!(reason(None, Some(0)), ("Recovered", "Normal"));
    }

    #[test]
    fn a_move_within_one_priority_number_goes_by_the_rules_priorities() {
        let uid = |_: &str, _: &str, _: &str| None;
        let mut moved = event(Some(0), Some(0));
        (moved.from_rank, moved.to_rank) = (Some(0), Some(3));
        let e = kube_event(&moved, &[source("kubernetes:HTTPRoute/default/ha")], uid, "veer-1", "t").expect("an Event");
        assert_eq!((e["reason"].as_str(), e["type"].as_str()), (Some("FailedOver"), Some("Warning")), "{e}");
        assert!(e["message"].as_str().is_some_and(|m| m.contains("moved from the rule's priority 0 to 3")), "{e}");
        (moved.from_rank, moved.to_rank) = (Some(3), Some(0));
        let e = kube_event(&moved, &[source("kubernetes:HTTPRoute/default/ha")], uid, "veer-1", "t").expect("an Event");
        assert_eq!(e["reason"], "FailedBack", "{e}");
    }

    #[test]
    fn the_event_names_the_api_object_and_only_an_api_object() {
        let uid = |_: &str, _: &str, _: &str| Some("u-1".to_string());
        let e =
            kube_event(&event(Some(0), Some(1)), &[source("routes.yaml"), source("kubernetes:HTTPRoute/default/ha")], uid, "veer-1", "t")
                .unwrap();
        assert_eq!(e["involvedObject"], json!({"kind": "HTTPRoute", "name": "ha", "namespace": "default", "uid": "u-1"}));
        assert_eq!(e["reason"], "FailedOver");
        assert!(e["message"].as_str().unwrap().contains("from priority 0 to 1"), "{e}");
        assert_eq!(kube_event(&event(Some(0), Some(1)), &[source("routes.yaml")], uid, "veer-1", "t"), None);
    }
}
