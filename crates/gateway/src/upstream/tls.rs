//! TLS to a destination's endpoints: hyper's client over rustls, one per destination, with its own keep-alive pool.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use veer_model::upstream_tls::UpstreamTls;

use crate::body::Body;

/// A destination's TLS client. Cloning shares the pool.
#[derive(Clone)]
pub struct TlsClient {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// What it was built from: a reload with an equal setting keeps this client and its pool.
    pub setting: Arc<UpstreamTls>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("server_name", &self.setting.server_name).finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client that offers HTTP/2 by ALPN when `http2`, HTTP/1.1 otherwise, and sends the
    /// setting's name as SNI whatever address it connects to.
    pub fn new(setting: &Arc<UpstreamTls>, http2: bool, connect_timeout: Duration) -> TlsClient {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config((*setting.config).clone())
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(setting.server_name.clone()));
        let connector = if http2 { builder.enable_http2().wrap_connector(tcp) } else { builder.enable_http1().wrap_connector(tcp) };
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).http2_only(http2).build(connector);
        TlsClient { client, setting: setting.clone() }
    }

    pub fn request(&self, req: http::Request<Body>) -> ResponseFuture {
        self.client.request(req)
    }
}
