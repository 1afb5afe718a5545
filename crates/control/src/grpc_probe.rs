//! The gRPC health check: `grpc.health.v1.Health/Check` over HTTP/2 (h2c), sent with
//! tonic-health's generated client through the node's own HTTP/2 client or a peer's link.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use veer_core::health::{failure_verdict, ProbeVerdict};
use veer_core::outcome::{EastWestError, TryEnd};
use veer_core::topology::EndpointKey;
use veer_gateway::failure::client_failure;
use veer_gateway::link::{PeerLink, X_VEER_EASTWEST_ERROR};
use veer_gateway::shared::Shared;

/// One gRPC health check of `endpoint` for `service` (empty: the server as a whole), and the
/// verdict: passed only on `SERVING`; `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN`, any other
/// grpc-status and a timeout fail; a check this node could not send is no verdict.
pub(crate) async fn probe(
    shared: Arc<Shared>,
    endpoint: &EndpointKey,
    via: Option<Arc<PeerLink>>,
    service: &str,
    timeout: Duration,
) -> (ProbeVerdict, String) {
    let Ok(origin) = http::Uri::try_from(format!("http://{endpoint}")) else {
        return (ProbeVerdict::Failed, format!("{endpoint} is no authority a gRPC check can name"));
    };
    let hop = Hop { shared, endpoint: endpoint.clone(), via };
    let mut client = HealthClient::with_origin(hop, origin);
    let call = client.check(HealthCheckRequest { service: service.to_string() });
    let named = if service.is_empty() { "the server".to_string() } else { format!("service {service:?}") };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(resp)) => match resp.into_inner().status() {
            ServingStatus::Serving => (ProbeVerdict::Passed, format!("gRPC health of {named}: SERVING")),
            other => (ProbeVerdict::Failed, format!("gRPC health of {named}: {}", other.as_str_name())),
        },
        Ok(Err(status)) => match sent_error(&status) {
            Some(e) if e.verdict == ProbeVerdict::NotSent => (ProbeVerdict::NotSent, e.detail.clone()),
            Some(e) => (ProbeVerdict::Failed, format!("gRPC health check failed: {}", e.detail)),
            None => (ProbeVerdict::Failed, format!("gRPC health check answered {:?}: {}", status.code(), status.message())),
        },
        Err(_) => (failure_verdict(TryEnd::UpstreamTimeout), format!("gRPC health check timed out after {timeout:?}")),
    }
}

/// The [`HopError`] behind a failed call, when the call failed on the way rather than in the
/// server's answer.
fn sent_error(status: &tonic::Status) -> Option<&HopError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(hop) = e.downcast_ref::<HopError>() {
            return Some(hop);
        }
        cause = e.source();
    }
    None
}

/// The way to the endpoint, as the tower service tonic's client calls: directly with the node's
/// HTTP/2 client, or through a peer cluster's east-west link.
#[derive(Clone)]
struct Hop {
    shared: Arc<Shared>,
    endpoint: EndpointKey,
    via: Option<Arc<PeerLink>>,
}

/// Why a check did not get an answer from the endpoint, and whether that is the endpoint's
/// doing ([`ProbeVerdict::Failed`]) or this node's ([`ProbeVerdict::NotSent`]).
#[derive(Debug)]
struct HopError {
    verdict: ProbeVerdict,
    detail: String,
}

impl std::fmt::Display for HopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for HopError {}

impl tower_service::Service<http::Request<tonic::body::Body>> for Hop {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = HopError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, HopError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HopError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let hop = self.clone();
        Box::pin(async move {
            // The request is one small message: collected, so it travels as veer's body type.
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|s| HopError { verdict: ProbeVerdict::NotSent, detail: format!("cannot encode the check: {s}") })?
                .to_bytes();
            let req = http::Request::from_parts(parts, Full::new(bytes).map_err(|never| match never {}).boxed());
            let resp = match &hop.via {
                Some(link) => link
                    .send_to(&hop.endpoint, true, req)
                    .await
                    .map_err(|e| HopError { verdict: ProbeVerdict::Failed, detail: e.to_string() })?,
                None => hop
                    .shared
                    .http2
                    .request(req)
                    .await
                    .map_err(|e| HopError { verdict: failure_verdict(client_failure(&e)), detail: e.to_string() })?,
            };
            // The east-west listener answered for the endpoint: it could not reach it.
            if let Some(v) = resp.headers().get(&X_VEER_EASTWEST_ERROR) {
                let verdict = match EastWestError::parse(v.as_bytes()) {
                    Some(EastWestError::Local) => ProbeVerdict::NotSent,
                    _ => ProbeVerdict::Failed,
                };
                return Err(HopError { verdict, detail: format!("the east-west gateway could not reach it: {}", resp.status()) });
            }
            Ok(resp)
        })
    }
}
