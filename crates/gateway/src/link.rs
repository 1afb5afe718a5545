//! The link to one peer cluster's east-west listener: a single mutually authenticated TLS 1.3
//! connection carrying HTTP/2, shared by the catalog watch and every request sent there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use http::header::{self, HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use veer_core::names::ClusterName;
use veer_core::topology::EndpointKey;

use crate::body::Body;

/// The endpoint (`ip:port`) a peer's node picked; the listener forwards only to its own ones.
pub const X_VEER_ENDPOINT: HeaderName = HeaderName::from_static("x-veer-endpoint");
/// Set by the client node when the destination speaks HTTP/2 to its endpoints.
pub const X_VEER_UPSTREAM_H2: HeaderName = HeaderName::from_static("x-veer-upstream-h2");
/// On an answer the listener wrote itself: what failed behind it, so the client node blames
/// that one endpoint and not the whole cluster, or that the listener's node could not open a
/// connection, which blames no one. Its values are veer-core's `outcome::EastWestError`.
pub const X_VEER_EASTWEST_ERROR: HeaderName = HeaderName::from_static("x-veer-eastwest-error");

/// Why a request through a link failed.
#[derive(Debug)]
pub enum LinkError {
    /// The gateway could not be reached or did not complete the handshake: nothing was sent.
    Connect(String),
    /// The connection broke while the request was in flight.
    Broken(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Connect(e) => write!(f, "cannot reach the east-west gateway: {e}"),
            LinkError::Broken(e) => write!(f, "east-west connection broke: {e}"),
        }
    }
}

/// A peer cluster's east-west gateway as this node reaches it.
pub struct PeerLink {
    pub cluster: ClusterName,
    pub addr: SocketAddr,
    /// The name the peer's certificate must carry.
    server_name: ServerName<'static>,
    tls: TlsConnector,
    current: ArcSwapOption<SendRequest<Body>>,
    /// Serialises reconnects so a burst of requests after a failure opens one connection.
    connecting: tokio::sync::Mutex<()>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink").field("cluster", &self.cluster).field("addr", &self.addr).finish()
    }
}

impl PeerLink {
    /// `server_name`: the name the peer's certificate must carry (the PKI's name for `cluster`).
    pub fn new(
        cluster: &str,
        server_name: ServerName<'static>,
        addr: SocketAddr,
        client: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Self {
        PeerLink {
            cluster: ClusterName::new(cluster),
            server_name,
            addr,
            tls: TlsConnector::from(client),
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            connect_timeout,
        }
    }

    /// Sends a request over the link, connecting first when there is no live connection.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, LinkError> {
        let mut sender = self.sender().await?;
        if sender.ready().await.is_err() {
            self.forget_if_closed();
            sender = self.sender().await?;
        }
        match sender.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.forget_if_closed();
                Err(LinkError::Broken(e.to_string()))
            }
        }
    }

    /// Sends `req` to `endpoint` behind this peer's east-west listener. The request keeps its
    /// authority (Host header, else URI) and names the endpoint this node picked, so priorities
    /// and weights stay exact across the hop; `h2` says the endpoint speaks HTTP/2.
    pub async fn send_to(&self, endpoint: &EndpointKey, h2: bool, mut req: Request<Body>) -> Result<Response<Incoming>, LinkError> {
        let host =
            req.headers_mut().remove(header::HOST).or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        if let Some(authority) = host.as_ref().and_then(|h| h.to_str().ok()).and_then(|h| http::uri::Authority::try_from(h).ok()) {
            parts.authority = Some(authority);
        }
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = http::Version::HTTP_2;
        if let Ok(v) = HeaderValue::from_str(&endpoint.to_string()) {
            req.headers_mut().insert(X_VEER_ENDPOINT, v);
        }
        if h2 {
            req.headers_mut().insert(X_VEER_UPSTREAM_H2, HeaderValue::from_static("1"));
        }
        self.send(req).await
    }

    /// Drops the connection (a test cutting links, or a peer that changed address).
    pub fn reset(&self) {
        self.current.store(None);
    }

    /// Drops the shared connection once it is closed, so the next request reconnects.
    fn forget_if_closed(&self) {
        if self.current.load().as_ref().is_some_and(|c| c.is_closed()) {
            self.current.store(None);
        }
    }

    async fn sender(&self) -> Result<SendRequest<Body>, LinkError> {
        if let Some(s) = self.current.load_full() {
            if !s.is_closed() {
                return Ok((*s).clone());
            }
        }
        let _one = self.connecting.lock().await;
        if let Some(s) = self.current.load_full() {
            if !s.is_closed() {
                return Ok((*s).clone());
            }
        }
        let sender = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| LinkError::Connect(format!("{} did not answer within {:?}", self.addr, self.connect_timeout)))??;
        self.current.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<Body>, LinkError> {
        let tcp = TcpStream::connect(self.addr).await.map_err(|e| LinkError::Connect(format!("{}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| LinkError::Connect(format!("TLS with {} ({}): {e}", self.addr, self.cluster)))?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Pings find a link that went silent (a cut cable sends no reset) within ~2 s.
            .keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| LinkError::Connect(format!("HTTP/2 with {}: {e}", self.addr)))?;
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target: "veer::mesh", "east-west connection to {cluster} ended: {e}");
            }
        });
        Ok(sender)
    }
}
