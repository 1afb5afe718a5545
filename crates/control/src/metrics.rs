//! The control side's Prometheus metrics (ejections, health, failover, reloads, peers, the
//! east-west listener, the manifest watcher), registered on the gateway's registry so one
//! scrape shows the whole node.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Unit;
use veer_gateway::metrics::Metrics;

use crate::manifests::WatcherHealth;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EjectionLabels {
    destination: String,
    endpoint: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    destination: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    destination: String,
    from: u32,
    to: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    destination: String,
    endpoint: String,
    cluster: String,
    priority: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EastWestLabels {
    peer: String,
    status: u16,
}

/// A gauge of the manifest watcher, read from its pulse at each scrape (the watcher's thread
/// does not touch the registry).
#[derive(Debug)]
struct WatcherGauge {
    health: Arc<WatcherHealth>,
    what: WatcherValue,
}

#[derive(Clone, Copy, Debug)]
enum WatcherValue {
    Up,
    LastLookAge,
    Waiting,
}

impl TypedMetric for WatcherGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for WatcherGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self.what {
            WatcherValue::Up => encoder.encode_gauge(&i64::from(self.health.check().is_ok())),
            WatcherValue::LastLookAge => encoder.encode_gauge(&self.health.last_look_age().as_secs_f64()),
            WatcherValue::Waiting => encoder.encode_gauge(&i64::try_from(self.health.waiting()).unwrap_or(i64::MAX)),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The control side's families.
#[derive(Debug)]
pub struct ControlMetrics {
    ejections: Family<EjectionLabels, Counter>,
    unejections: Family<EndpointLabels, Counter>,
    active_priority: Family<DestinationLabels, Gauge>,
    failover_events: Family<FailoverLabels, Counter>,
    endpoint_healthy: Family<HealthLabels, Gauge>,
    config_reloads: Family<ReloadLabels, Counter>,
    peer_up: Family<PeerLabels, Gauge>,
    peer_age_ms: Family<PeerLabels, Gauge>,
    eastwest_refused: Family<RefusalLabels, Counter>,
    eastwest_requests: Family<EastWestLabels, Counter>,
    manifest_watcher: Arc<WatcherHealth>,
}

impl ControlMetrics {
    /// Every family registered on `metrics`' registry (and empty apart from the reload counters
    /// and the east-west refusals).
    pub fn new(metrics: &Metrics) -> Self {
        let ejections = Family::<EjectionLabels, Counter>::default();
        let unejections = Family::<EndpointLabels, Counter>::default();
        let active_priority = Family::<DestinationLabels, Gauge>::default();
        let failover_events = Family::<FailoverLabels, Counter>::default();
        let endpoint_healthy = Family::<HealthLabels, Gauge>::default();
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        let peer_up = Family::<PeerLabels, Gauge>::default();
        let peer_age_ms = Family::<PeerLabels, Gauge>::default();
        let eastwest_refused = Family::<RefusalLabels, Counter>::default();
        let eastwest_requests = Family::<EastWestLabels, Counter>::default();
        let manifest_watcher = Arc::new(WatcherHealth::new());
        metrics.register(|registry| {
            registry.register("ejections", "Endpoints ejected by outlier detection", ejections.clone());
            registry.register("unejections", "Endpoints returned to service after an ejection", unejections.clone());
            registry.register("active_priority", "The lowest priority level currently receiving load (-1: none)", active_priority.clone());
            registry.register("failover_events", "Changes of the active priority level", failover_events.clone());
            registry.register(
                "endpoint_healthy",
                "Whether an endpoint is currently eligible for load (1) or not (0)",
                endpoint_healthy.clone(),
            );
            registry.register("config_reloads", "Configuration reload attempts, by outcome", config_reloads.clone());
            registry.register(
                "peer_up",
                "Whether a peer cluster is usable (1: fresh or stale data and a reachable gateway; 0: unhealthy, forgotten or never heard)",
                peer_up.clone(),
            );
            registry.register("peer_data_age_milliseconds", "Age of the last word from a peer cluster's node", peer_age_ms.clone());
            registry.register(
                "eastwest_refused",
                "Connections and requests refused by the east-west listener, by reason",
                eastwest_refused.clone(),
            );
            registry.register(
                "eastwest_requests",
                "Requests the east-west listener forwarded to local endpoints for peer clusters, by peer and status",
                eastwest_requests.clone(),
            );
            let watcher_gauge = |what| WatcherGauge { health: manifest_watcher.clone(), what };
            registry.register("manifest_watcher_up", "Whether the manifest watcher runs and has looked at the files recently (0: its thread ended or stalled, so manifest changes are not applied)", watcher_gauge(WatcherValue::Up));
            registry.register_with_unit(
                "manifest_watcher_last_look_age",
                "Time since the manifest watcher last looked at the files",
                Unit::Seconds,
                watcher_gauge(WatcherValue::LastLookAge),
            );
            registry.register(
                "manifest_files_open_for_writing",
                "Manifest files a writer has not closed yet; no change is applied until they are",
                watcher_gauge(WatcherValue::Waiting),
            );
        });
        for reason in ["handshake", "unknown_cluster", "claim_mismatch", "not_local", "not_exposed"] {
            drop(eastwest_refused.get_or_create(&RefusalLabels { reason }));
        }

        // Pre-create both outcomes so `rate()` and alerts see a 0 before the first reload.
        for result in ["ok", "rejected"] {
            drop(config_reloads.get_or_create(&ReloadLabels { result }));
        }

        ControlMetrics {
            ejections,
            unejections,
            active_priority,
            failover_events,
            endpoint_healthy,
            config_reloads,
            peer_up,
            peer_age_ms,
            eastwest_refused,
            eastwest_requests,
            manifest_watcher,
        }
    }

    /// The manifest watcher's pulse, which its gauges report (the watcher beats it).
    pub fn manifest_watcher(&self) -> Arc<WatcherHealth> {
        self.manifest_watcher.clone()
    }

    /// An endpoint was ejected.
    pub fn ejection(&self, destination: &str, endpoint: &str, reason: &str) {
        self.ejections
            .get_or_create(&EjectionLabels {
                destination: destination.to_owned(),
                endpoint: endpoint.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// An endpoint returned to service after an ejection.
    pub fn unejection(&self, destination: &str, endpoint: &str) {
        self.unejections.get_or_create(&EndpointLabels { destination: destination.to_owned(), endpoint: endpoint.to_owned() }).inc();
    }

    /// The lowest priority with load, -1 when none.
    pub fn set_active_priority(&self, destination: &str, priority: i64) {
        self.active_priority.get_or_create(&DestinationLabels { destination: destination.to_owned() }).set(priority);
    }

    /// The active priority moved from `from` to `to`.
    pub fn failover_event(&self, destination: &str, from: u32, to: u32) {
        self.failover_events.get_or_create(&FailoverLabels { destination: destination.to_owned(), from, to }).inc();
    }

    /// Whether an endpoint is eligible for load.
    pub fn set_endpoint_health(&self, destination: &str, endpoint: &str, cluster: &str, priority: u32, healthy: bool) {
        self.endpoint_healthy
            .get_or_create(&HealthLabels {
                destination: destination.to_owned(),
                endpoint: endpoint.to_owned(),
                cluster: cluster.to_owned(),
                priority,
            })
            .set(i64::from(healthy));
    }

    /// Drops an endpoint's health series, for endpoints that left the configuration or DNS,
    /// so a stale "1" does not linger. Returns whether the series existed.
    pub fn remove_endpoint_health(&self, destination: &str, endpoint: &str, cluster: &str, priority: u32) -> bool {
        self.endpoint_healthy.remove(&HealthLabels {
            destination: destination.to_owned(),
            endpoint: endpoint.to_owned(),
            cluster: cluster.to_owned(),
            priority,
        })
    }

    /// A configuration reload was applied (`ok`) or rejected.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.config_reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    pub fn peer(&self, peer: &str, up: bool, age_ms: Option<u64>) {
        let labels = PeerLabels { peer: peer.to_string() };
        self.peer_up.get_or_create(&labels).set(i64::from(up));
        self.peer_age_ms.get_or_create(&labels).set(age_ms.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX)));
    }

    /// `reason`: handshake, unknown_cluster, claim_mismatch, not_local or not_exposed.
    pub fn eastwest_refused(&self, reason: &'static str) {
        self.eastwest_refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    pub fn eastwest_request(&self, peer: &str, status: u16) {
        self.eastwest_requests.get_or_create(&EastWestLabels { peer: peer.to_string(), status }).inc();
    }
}

#[cfg(test)]
mod tests;
