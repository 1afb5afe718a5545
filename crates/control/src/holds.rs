//! Why an endpoint is out of a destination's table, and why a destination has no endpoint at
//! all: what `/status` and `veer status` say, so "healthy" never hides an ejection.
//!
//! The control loop publishes what only it knows (ejections and their end, re-admission probes,
//! failed health checks, remote health) at every rebuild; `/status` joins it with the snapshot.

use std::collections::HashMap;

use serde::Serialize;
use veer_core::names::DestinationName;
use veer_core::outlier::EjectionReason;
use veer_core::topology::EndpointKey;

use crate::mesh::peers::{PeerStatus, Phase};
use veer_gateway::remote::RemoteHealth;

/// What this node itself holds an endpoint out for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalHold {
    /// Ejected by outlier detection until this Unix time (ms), the earliest sweep may end it.
    Ejected { until_unix_ms: u64, reason: Option<EjectionReason> },
    /// Its ejection is over; it returns once a re-admission probe passes.
    ProbePending,
    /// Its active health check fails.
    HealthCheckFailed,
}

/// Everything the control loop knows about held endpoints, published at each rebuild.
#[derive(Debug, Default)]
pub struct Holds {
    /// Destination key → endpoint key → why this node holds it out.
    pub local: HashMap<DestinationName, HashMap<EndpointKey, LocalHold>>,
    /// Peer clusters' health (empty when not meshed).
    pub remote: RemoteHealth,
}

/// Why one endpoint is out of the table, for `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Held {
    /// `ejected`, `readmission_probe`, `health_check`, `peer_unhealthy`, `peer_reports_unhealthy`.
    pub reason: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_unix_ms: Option<u64>,
}

fn reason_text(r: Option<EjectionReason>) -> &'static str {
    match r {
        Some(EjectionReason::Consecutive5xx) => "consecutive 5xx",
        Some(EjectionReason::ConsecutiveGatewayFailure) => "consecutive gateway errors",
        Some(EjectionReason::ConsecutiveLocalOriginFailure) => "consecutive local-origin failures",
        Some(EjectionReason::ConnectFailure) => "a refused connect or a reset",
        Some(EjectionReason::ReadmissionProbeFailed) => "a failed re-admission probe",
        None => "failures",
    }
}

/// What holds `address` of `cluster` out of destination `dest`, if anything. This node's own
/// reasons come first: they hold an endpoint out whatever its peer says.
pub fn held(holds: &Holds, peers: &[PeerStatus], own: &str, dest: &str, cluster: &str, address: &EndpointKey) -> Option<Held> {
    if let Some(h) = holds.local.get(dest).and_then(|m| m.get(address)) {
        return Some(match *h {
            LocalHold::Ejected { until_unix_ms, reason } => Held {
                reason: "ejected",
                detail: format!("ejected by outlier detection after {}", reason_text(reason)),
                until_unix_ms: Some(until_unix_ms),
            },
            LocalHold::ProbePending => Held {
                reason: "readmission_probe",
                detail: "ejection over; back once a re-admission probe passes".into(),
                until_unix_ms: None,
            },
            LocalHold::HealthCheckFailed => {
                Held { reason: "health_check", detail: "failed its active health check".into(), until_unix_ms: None }
            }
        });
    }
    if cluster == own || own.is_empty() {
        return None;
    }
    if holds.remote.down.contains(cluster) {
        let how = peers.iter().find(|p| p.cluster == cluster).map_or_else(String::new, |p| {
            let why = if p.reachable { "silent too long" } else { "its east-west gateway cannot be reached" };
            format!(" ({why}{})", p.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())
        });
        return Some(Held {
            reason: "peer_unhealthy",
            detail: format!("peer {cluster} is unhealthy{how}: all its endpoints are out"),
            until_unix_ms: None,
        });
    }
    if holds.remote.unhealthy.get(cluster).is_some_and(|u| u.contains(address)) {
        return Some(Held {
            reason: "peer_reports_unhealthy",
            detail: format!("{cluster}'s own node holds it unhealthy"),
            until_unix_ms: None,
        });
    }
    None
}

/// A remark on an endpoint that is routed but whose data is aging: its peer went stale.
pub fn note(peers: &[PeerStatus], own: &str, cluster: &str) -> Option<String> {
    if cluster == own {
        return None;
    }
    let p = peers.iter().find(|p| p.cluster == cluster)?;
    (p.phase == Phase::Stale).then(|| format!("peer {cluster} is stale (no word for a while); still routed until it turns unhealthy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(address: &str) -> EndpointKey {
        address.parse().expect("an ip:port")
    }

    fn peer(cluster: &str, phase: Phase, reachable: bool) -> PeerStatus {
        PeerStatus {
            cluster: cluster.into(),
            east_west: "127.0.0.1:15443".parse().expect("addr"),
            phase,
            reachable,
            heard_unix_ms: None,
            endpoints: 1,
            unhealthy_endpoints: 0,
            catalog_generation: None,
            last_error: Some("connection refused".into()),
        }
    }

    #[test]
    fn each_reason_an_endpoint_is_out_is_named_and_local_reasons_come_first() {
        let mut holds = Holds::default();
        holds
            .local
            .entry("d".into())
            .or_default()
            .insert(ep("10.0.0.1:80"), LocalHold::Ejected { until_unix_ms: 5_000, reason: Some(EjectionReason::Consecutive5xx) });
        holds.local.entry("d".into()).or_default().insert(ep("10.0.0.2:80"), LocalHold::HealthCheckFailed);
        holds.local.entry("d".into()).or_default().insert(ep("10.0.0.3:80"), LocalHold::ProbePending);
        holds.remote.down.insert("c2".into());
        holds.remote.unhealthy.insert("c3".into(), [ep("10.0.3.1:80")].into_iter().collect());
        let peers = [peer("c2", Phase::Unhealthy, false), peer("c3", Phase::Stale, true)];
        let at = |cluster: &str, address: &str| held(&holds, &peers, "c1", "d", cluster, &ep(address));
        assert_eq!(at("c1", "10.0.0.1:80").map(|h| (h.reason, h.until_unix_ms)), Some(("ejected", Some(5_000))));
        assert!(at("c1", "10.0.0.1:80").is_some_and(|h| h.detail.contains("consecutive 5xx")));
        assert_eq!(at("c1", "10.0.0.2:80").map(|h| h.reason), Some("health_check"));
        assert_eq!(at("c1", "10.0.0.3:80").map(|h| h.reason), Some("readmission_probe"));
        assert!(at("c2", "10.0.2.1:80")
            .is_some_and(|h| h.reason == "peer_unhealthy" && h.detail.contains("cannot be reached: connection refused")));
        assert_eq!(at("c3", "10.0.3.1:80").map(|h| h.reason), Some("peer_reports_unhealthy"));
        assert_eq!(at("c3", "10.0.3.2:80"), None);
        assert!(note(&peers, "c1", "c3").is_some_and(|n| n.contains("stale")));
        assert_eq!(note(&peers, "c1", "c1"), None);
    }
}
