//! The resilience settings every dialect translates into: outlier detection, active health
//! checks, retries and load settings for one destination.

use std::time::Duration;

use crate::load::LoadSettings;
use crate::outlier::OutlierConfig;
use crate::slowstart::SlowStart;

/// Everything the data plane needs to know about how a destination handles failure.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Resilience {
    /// Passive health checking; `None` means nothing marks an endpoint unhealthy from traffic.
    pub outlier: Option<OutlierConfig>,
    pub active_health_check: Option<ActiveHealthCheck>,
    /// `None`: no retry policy (Envoy then does not retry); veer's data plane applies its own
    /// safe defaults on top.
    pub retry: Option<RetryPolicy>,
    /// Whole-request timeout covering every try; `None`: the data plane's default.
    pub request_timeout: Option<Duration>,
    pub load: LoadSettings,
    pub circuit_breakers: CircuitBreakers,
    /// How an endpoint that came back (or a priority that did) takes its load back; `None`
    /// (veer's default, as every dialect's): at once, as Envoy does without `slow_start_config`.
    pub slow_start: Option<SlowStart>,
}

/// What one node sends one endpoint at once, at most (Envoy's circuit breakers, whose defaults
/// are 1,024 each). A try over a cap is refused at once as the node's own overflow (a local
/// 503), never counted against the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreakers {
    /// Open upstream connections.
    pub max_connections: u32,
    /// Tries waiting for a connection. veer opens one at once or refuses, so it queues none:
    /// this cap only bounds connects in progress.
    pub max_pending_requests: u32,
    /// Tries waiting for their response head.
    pub max_requests: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024 }
    }
}

impl CircuitBreakers {
    /// One worker's share of a node-wide cap: each of `workers` threads keeps its own counts
    /// (no count is written by two cores), so each gets the cap divided, rounded up.
    pub fn per_worker(cap: u32, workers: u32) -> u32 {
        cap.div_ceil(workers.max(1)).max(1)
    }
}

/// An active health check: an HTTP GET, or a gRPC `grpc.health.v1.Health/Check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveHealthCheck {
    pub protocol: CheckProtocol,
    /// The HTTP check's path (a gRPC check's re-admission probe uses it too).
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expected_statuses: Vec<(u16, u16)>,
}

impl Default for ActiveHealthCheck {
    fn default() -> Self {
        // Envoy Gateway's CRD defaults.
        ActiveHealthCheck {
            protocol: CheckProtocol::Http,
            path: "/".into(),
            interval: Duration::from_secs(3),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            expected_statuses: vec![(200, 200)],
        }
    }
}

/// What an active health check sends.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CheckProtocol {
    /// `GET path`; the status decides.
    #[default]
    Http,
    /// `grpc.health.v1.Health/Check` for `service` (empty: the server as a whole); only
    /// `SERVING` passes.
    Grpc { service: String },
}

/// Conditions a retry fires on (Envoy `retry_on` names).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub retriable_4xx: bool,
    pub refused_stream: bool,
    pub retriable_status_codes: Vec<u16>,
}

/// A retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Move retries away from priorities already tried (Envoy previous_priorities).
    pub other_priorities: bool,
}

impl RetryPolicy {
    /// Istio's default route retry policy (reference §4.7).
    pub fn istio_default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn { connect_failure: true, refused_stream: true, retriable_status_codes: vec![503], ..RetryOn::default() },
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            other_priorities: false,
        }
    }
}
