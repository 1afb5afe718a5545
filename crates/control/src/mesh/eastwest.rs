//! The east-west listener: peers' nodes connect here over mutually authenticated TLS 1.3 to
//! watch this cluster's catalog and to reach this cluster's own endpoints, and only those (never
//! onward to a third cluster, so there are no loops), as Istio's AUTO_PASSTHROUGH gateway does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use veer_model::set::ManifestSet;

use super::catalog::{Catalog, WatchLine};
use crate::events::{EventKind, Events};
use crate::metrics::ControlMetrics;
use veer_core::outcome::EastWestError;
use veer_gateway::body::{Body, BodyError};
use veer_gateway::failure::client_failure;
use veer_gateway::link::{X_VEER_EASTWEST_ERROR, X_VEER_ENDPOINT, X_VEER_UPSTREAM_H2};
use veer_gateway::responses::local_response;
use veer_gateway::shared::Shared;

/// The cluster a watching node claims to be; must match its certificate.
pub const X_VEER_PEER: HeaderName = HeaderName::from_static("x-veer-peer");
pub const CATALOG_PATH: &str = "/veer/v1/catalog/watch";

/// What the listener needs, shared by its connections.
pub struct EastWest {
    pub cluster: String,
    /// The node's accepted manifests: clusters that may connect, and what this cluster exposes.
    pub set: watch::Receiver<Arc<ManifestSet>>,
    pub catalog: watch::Receiver<Arc<Catalog>>,
    pub shared: Arc<Shared>,
    pub events: Arc<Events>,
    pub metrics: Arc<ControlMetrics>,
    pub heartbeat: Duration,
}

/// Accepts peers until `shutdown` turns true.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, ew: Arc<EastWest>, mut shutdown: watch::Receiver<bool>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(target: "veer::mesh", "east-west accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => if *shutdown.borrow() { return } else { continue },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, ew, mut stop) = (acceptor.clone(), ew.clone(), shutdown.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return ew.refuse(remote, "handshake", &format!("TLS handshake failed: {e}")),
                Err(_) => return ew.refuse(remote, "handshake", "TLS handshake not completed within 5s"),
            };
            // The verifier already chained the certificate to the shared root; what is left is
            // whose it is.
            let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(veer_pki::peer_cluster);
            let peer: Arc<str> = match peer {
                Some(p) if p != ew.cluster && ew.set.borrow().cluster(&p).is_some() => Arc::from(p.as_str()),
                Some(p) => {
                    return ew.refuse(
                        remote,
                        "unknown_cluster",
                        &format!("certificate names cluster {p:?}, which is this node or not a Cluster of the manifests"),
                    )
                }
                None => {
                    return ew.refuse(
                        remote,
                        "unknown_cluster",
                        "certificate names no cluster (expected a SAN URI spiffe://veer/cluster/NAME)",
                    )
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let (ew, peer) = (ew.clone(), peer.clone());
                async move { Ok::<_, std::convert::Infallible>(ew.handle(&peer, remote, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(target: "veer::mesh", "east-west connection from {remote} ended: {e}") },
                _ = stop.changed() => {}
            }
        });
    }
}

impl EastWest {
    fn refuse(&self, remote: SocketAddr, reason: &'static str, detail: &str) {
        self.metrics.eastwest_refused(reason);
        tracing::warn!(target: "veer::mesh", "east-west: refused {remote}: {detail}");
        // One event per reason per second, with a count: a flood of refusals cannot wash out the history.
        self.events.record_refusal(EventKind::PeerRefused, reason, None, None, format!("refused {remote}: {detail}"));
    }

    async fn handle(&self, peer: &str, remote: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() == CATALOG_PATH {
            return self.watch(peer, remote, &req);
        }
        let Some(target) = req.headers().get(&X_VEER_ENDPOINT).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<SocketAddr>().ok())
        else {
            return refused(StatusCode::BAD_REQUEST, "an east-west request names its endpoint in x-veer-endpoint (IP:PORT)");
        };
        // Address and port: an announced address is no licence to reach its other ports
        // (an admin port, a database beside the service).
        if !self.catalog.borrow().has_address(target.ip()) || !self.shared.snapshot.load().has_endpoint(&self.cluster, target) {
            self.refuse(remote, "not_local", &format!("{peer} asked for {target}, which is not an endpoint of cluster {}", self.cluster));
            return refused(
                StatusCode::FORBIDDEN,
                &format!("{target} is not an endpoint of cluster {}; east-west traffic only reaches local endpoints", self.cluster),
            );
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_string();
        if let Some(why) = self.not_exposed(peer, &host) {
            self.refuse(remote, "not_exposed", &why);
            return refused(StatusCode::FORBIDDEN, &why);
        }
        let resp = self.forward(target, &host, req).await;
        self.metrics.eastwest_request(peer, resp.status().as_u16());
        resp
    }

    /// A Kubernetes service host reached from another network needs this cluster's
    /// AUTO_PASSTHROUGH Gateway to expose it (seed 003); other destinations are exported by
    /// their own resources (a VirtualDestination, a FailoverService, a route).
    fn not_exposed(&self, peer: &str, host: &str) -> Option<String> {
        let set = self.set.borrow().clone();
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        veer_model::set::cluster_local_service(name)?;
        let own = set.cluster(&self.cluster).map(|c| c.network.as_str()).unwrap_or("");
        let theirs = set.cluster(peer).map(|c| c.network.as_str()).unwrap_or("");
        (own != theirs && !veer_model::resolve::exposed(&set, &self.cluster, name)).then(|| {
            format!("cluster {} exposes no {name} to network {theirs:?}: no AUTO_PASSTHROUGH Gateway there lists it", self.cluster)
        })
    }

    async fn forward(&self, target: SocketAddr, host: &str, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let h2 = parts.headers.remove(&X_VEER_UPSTREAM_H2).is_some();
        parts.headers.remove(&X_VEER_ENDPOINT);
        let pq = parts.uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let tls = self.shared.snapshot.load().tls_for(target);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let Ok(uri) = Uri::builder().scheme(scheme).authority(target.to_string()).path_and_query(pq).build() else {
            return refused(StatusCode::BAD_REQUEST, "bad request path");
        };
        parts.uri = uri;
        if h2 {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        } else {
            parts.version = Version::HTTP_11;
            if let Ok(v) = HeaderValue::from_str(host) {
                parts.headers.insert(header::HOST, v);
            }
        }
        let up = Request::from_parts(parts, body.map_err(BodyError::from).boxed());
        let sent = match &tls {
            Some(tls) => tls.request(up),
            None if h2 => self.shared.http2.request(up),
            None => self.shared.http1.request(up),
        };
        match sent.await {
            Ok(r) => {
                // Only this listener's own verdict may say what failed behind it: an endpoint
                // that sent x-veer-* fields of its own must not steer the client node.
                let (mut parts, body) = r.into_parts();
                veer_gateway::request::remove_internal(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BodyError::from).boxed())
            }
            Err(e) => match EastWestError::for_failed_try(client_failure(&e)) {
                error @ EastWestError::Local => {
                    failed(StatusCode::SERVICE_UNAVAILABLE, error, &format!("this node could not open a connection to {target}: {e}"))
                }
                error @ (EastWestError::Connect | EastWestError::Refused) => {
                    failed(StatusCode::SERVICE_UNAVAILABLE, error, &format!("{target} refused or did not accept the connection"))
                }
                error @ EastWestError::Reset => failed(StatusCode::BAD_GATEWAY, error, &format!("{target}: {e}")),
            },
        }
    }

    /// The watch stream: the catalog now, again at every change, and a heartbeat in between.
    fn watch(&self, peer: &str, remote: SocketAddr, req: &Request<Incoming>) -> Response<Body> {
        if let Some(claim) = req.headers().get(&X_VEER_PEER).and_then(|v| v.to_str().ok()) {
            if claim != peer {
                self.refuse(remote, "claim_mismatch", &format!("claims to be cluster {claim:?} but its certificate names {peer:?}"));
                return refused(StatusCode::FORBIDDEN, &format!("certificate names cluster {peer:?}, not {claim:?}"));
            }
        }
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let mut catalog = self.catalog.clone();
        let (heartbeat, cluster) = (self.heartbeat, self.cluster.clone());
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(heartbeat);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = catalog.borrow_and_update().clone();
            if tx.send(line(&WatchLine::Catalog((*last).clone()))).await.is_err() {
                return;
            }
            beat.tick().await;
            loop {
                let msg = tokio::select! {
                    r = catalog.changed() => {
                        if r.is_err() { return; }
                        last = catalog.borrow_and_update().clone();
                        WatchLine::Catalog((*last).clone())
                    }
                    _ = beat.tick() => WatchLine::Heartbeat { cluster: cluster.clone(), generation: last.generation },
                };
                if tx.send(line(&msg)).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(ChannelBody(rx).boxed());
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        resp
    }
}

fn line(msg: &WatchLine) -> Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn refused(status: StatusCode, text: &str) -> Response<Body> {
    failed(status, EastWestError::Refused, text)
}

fn failed(status: StatusCode, error: EastWestError, text: &str) -> Response<Body> {
    let mut r = local_response(status, text);
    r.headers_mut().insert(X_VEER_EASTWEST_ERROR, HeaderValue::from_static(error.as_header_value()));
    r
}

/// A response body fed line by line from a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
