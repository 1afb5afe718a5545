//! TLS passthrough end to end: a TLSRoute on a `TLS` Passthrough listener routes real TLS
//! clients by SNI to real TLS backends (`openssl s_server`), fails over from a stopped backend
//! to its fallback with no failed connection, and closes (and counts) what it cannot route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veer_control::events::EventKind;
use veer_testkit::{wait_until_async, World};

use super::tls::run;
use super::upstream_tls::{SServer, TestCa};
use super::{count, counter, NodeWorld, WAIT};

const HOST: &str = "shop.example.com";

/// Cluster `edge` serving Gateway listener port 443 on `pass` (a TLS Passthrough listener), and
/// TLSRoute `shop` for [`HOST`] to Backend `primary` at `primary`, with Backend `spare`
/// (`fallback: true`) at `spare`, watched by a passive health check.
fn world(pass: SocketAddr, primary: SocketAddr, spare: SocketAddr) -> String {
    format!(
        "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {{name: edge}}
spec:
  locality: {{region: r, zone: z}}
  gateway:
    ports:
      \"443\": {pass}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: primary}}
spec:
  endpoints: [{{ip: {{address: {}, port: {}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: spare}}
spec:
  fallback: true
  endpoints: [{{ip: {{address: {}, port: {}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: veer
  listeners:
  - name: tls
    protocol: TLS
    port: 443
    tls: {{mode: Passthrough}}
    allowedRoutes: {{kinds: [{{kind: TLSRoute}}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: shop}}
spec:
  parentRefs: [{{name: gw, sectionName: tls}}]
  hostnames: [{HOST}]
  rules:
  - backendRefs:
    - {{group: gateway.envoyproxy.io, kind: Backend, name: primary}}
    - {{group: gateway.envoyproxy.io, kind: Backend, name: spare}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: shop-health}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: TLSRoute, name: shop}}]
  healthCheck:
    passive:
      baseEjectionTime: 30s
      interval: 1s
      maxEjectionPercent: 100
      consecutiveLocalOriginFailures: 1
      splitExternalLocalOriginErrors: true
---
",
        primary.ip(),
        primary.port(),
        spare.ip(),
        spare.port()
    )
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every connection a full handshake, so each shows the certificate of the backend it reached.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One TLS connection through veer naming `sni`, verified end to end against the backends' CA
/// (veer holds no key), and `GET /` over it: which backend answered, by the name only its
/// certificate carries.
async fn fetch(config: &Arc<rustls::ClientConfig>, at: SocketAddr, sni: &str) -> Result<&'static str, String> {
    let go = async {
        let tcp = tokio::net::TcpStream::connect(at).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
        let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await.map_err(|e| format!("write: {e}"))?;
        let mut got = Vec::new();
        // s_server may close without close_notify: what came before the close is the answer.
        let _ = tls.read_to_end(&mut got).await;
        if !got.starts_with(b"HTTP/1.0 200") {
            return Err(format!("answer: {:?}", String::from_utf8_lossy(&got)));
        }
        let has = |n: &[u8]| cert.windows(n.len()).any(|w| w == n);
        Ok(if has(b"primary.test") {
            "primary"
        } else if has(b"spare.test") {
            "spare"
        } else {
            "unknown"
        })
    };
    tokio::time::timeout(Duration::from_secs(10), go).await.map_err(|_| "timed out".to_string())?
}

fn refused(node: &veer_node::node::Node, reason: &str) -> u64 {
    counter(node, &format!("veer_passthrough_refused_total{{reason=\"{reason}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_route_fails_over_from_a_stopped_backend_with_zero_failed_connections() {
    let w = World::new();
    let ca = TestCa::new("backends' CA");
    let (p_cert, p_key) = ca.leaf_for(&[HOST, "primary.test"]);
    let (s_cert, s_key) = ca.leaf_for(&[HOST, "spare.test"]);
    let primary = SServer::start(w.dir(), w.ip(1, 1), &p_cert, &p_key, &[]);
    let spare = SServer::start(w.dir(), w.ip(1, 2), &s_cert, &s_key, &[]);
    let pass = std::net::TcpListener::bind((w.ip(9, 1), 0)).and_then(|l| l.local_addr()).expect("a free port");
    w.write("world.yaml", &world(pass, primary.addr, spare.addr));
    let node = w.node("edge").await;
    let config = client_config(ca.pem());

    let mut reached = Vec::new();
    let mut failed = Vec::new();
    let mut primary = Some(primary);
    for i in 0..40 {
        if i == 10 {
            // Stopped: connects to it are refused from now on.
            drop(primary.take());
        }
        match fetch(&config, pass, HOST).await {
            Ok(which) => reached.push(which),
            Err(e) => failed.push(format!("connection {i}: {e}")),
        }
    }
    assert!(failed.is_empty(), "every connection reached a backend: {failed:?}");
    assert!(reached[..10].iter().all(|b| *b == "primary"), "the primary serves while it runs: {reached:?}");
    assert!(reached[10..].iter().all(|b| *b == "spare"), "then its fallback does: {reached:?}");
    wait_until_async("the stopped backend is ejected", WAIT, || async { count(&node, EventKind::Ejection) >= 1 }).await;
    assert_eq!(refused(&node, "no_endpoint"), 0);
    let spliced =
        counter(&node, &format!("veer_passthrough_connections_total{{destination=\"tls:{HOST}\",cluster=\"edge\",priority=\"1\"}}"));
    assert_eq!(spliced, 30, "the fallback's connections are counted at priority 1");
    assert!(counter(&node, &format!("veer_passthrough_bytes_total{{destination=\"tls:{HOST}\",direction=\"downstream\"}}")) > 0);
    drop(spare);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_socket_closes_unrouted_names_missing_names_and_plain_http_and_counts_them() {
    let w = World::new();
    let ca = TestCa::new("backends' CA");
    let (cert, key) = ca.leaf_for(&[HOST, "primary.test"]);
    let backend = SServer::start(w.dir(), w.ip(1, 1), &cert, &key, &[]);
    let pass = std::net::TcpListener::bind((w.ip(9, 1), 0)).and_then(|l| l.local_addr()).expect("a free port");
    w.write("world.yaml", &world(pass, backend.addr, backend.addr));
    std::fs::write(w.dir().join("ca.pem"), ca.pem()).expect("CA file");
    let ca_file = w.dir().join("ca.pem").display().to_string();
    let node = w.node("edge").await;

    // The real openssl client: the routed name reaches the backend, verified.
    let s_client = |extra: &[&str]| {
        let mut args: Vec<String> = ["s_client", "-connect", &pass.to_string(), "-CAfile", &ca_file, "-verify_return_error"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        run("openssl", args)
    };
    let (ok, out, err) = s_client(&["-servername", HOST]).await;
    assert!(ok && out.contains("Verify return code: 0 (ok)"), "{out}\n{err}");

    // A name no TLSRoute takes: closed before any backend sees it.
    let (ok, out, err) = s_client(&["-servername", "other.example.com"]).await;
    assert!(!ok || !out.contains("Verify return code: 0 (ok)"), "{out}\n{err}");
    assert_eq!(refused(&node, "no_route"), 1);

    // No SNI at all.
    let (ok, out, err) = s_client(&["-noservername"]).await;
    assert!(!ok || !out.contains("Verify return code: 0 (ok)"), "{out}\n{err}");
    assert_eq!(refused(&node, "no_sni"), 1);

    // Plain HTTP on the passthrough socket: no answer, the connection is closed.
    let (ok, out, err) = run(
        "curl",
        ["-sS", "--max-time", "10", "-H", &format!("Host: {HOST}"), &format!("http://{pass}/")].iter().map(|s| s.to_string()).collect(),
    )
    .await;
    assert!(!ok && out.is_empty(), "{out}\n{err}");
    assert_eq!(refused(&node, "not_tls"), 1);
    drop(backend);
    node.stop().await;
}

/// Cluster `edge` (locality r/z) serving port 443 on `pass`, an Istio Gateway with a
/// PASSTHROUGH server on 443 for Service `shop.default`, whose endpoints are `near` (r/z) and
/// `far` (r/z2), and a DestinationRule whose outlier detection turns on locality failover.
fn istio_world(pass: SocketAddr, near: SocketAddr, far: SocketAddr) -> String {
    let entry = |name: &str, at: SocketAddr, zone: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  address: {}\n  locality: r/{zone}\n  ports: {{tls: {}}}\n  labels: {{app: shop}}\n---\n",
            at.ip(),
            at.port()
        )
    };
    format!(
        "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {{name: edge}}
spec:
  locality: {{region: r, zone: z}}
  gateway:
    ports:
      \"443\": {pass}
---
apiVersion: v1
kind: Service
metadata: {{name: shop, namespace: default}}
spec:
  selector: {{app: shop}}
  ports: [{{name: tls, port: 443, targetPort: tls}}]
---
{}{}\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop, namespace: default}}
spec:
  host: {ISTIO_HOST}
  trafficPolicy:
    outlierDetection: {{consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    tls: {{mode: PASSTHROUGH}}
    hosts: [default/{ISTIO_HOST}]
---
",
        entry("near", near, "z"),
        entry("far", far, "z2"),
    )
}

const ISTIO_HOST: &str = "shop.default.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_passthrough_server_fails_over_by_locality_with_zero_failed_connections() {
    let w = World::new();
    let ca = TestCa::new("backends' CA");
    let (n_cert, n_key) = ca.leaf_for(&[ISTIO_HOST, "primary.test"]);
    let (f_cert, f_key) = ca.leaf_for(&[ISTIO_HOST, "spare.test"]);
    let near = SServer::start(w.dir(), w.ip(1, 1), &n_cert, &n_key, &[]);
    let far = SServer::start(w.dir(), w.ip(1, 2), &f_cert, &f_key, &[]);
    let pass = std::net::TcpListener::bind((w.ip(9, 1), 0)).and_then(|l| l.local_addr()).expect("a free port");
    w.write("world.yaml", &istio_world(pass, near.addr, far.addr));
    let node = w.node("edge").await;
    let config = client_config(ca.pem());
    let mut reached = Vec::new();
    let mut failed = Vec::new();
    let mut near = Some(near);
    for i in 0..20 {
        if i == 5 {
            drop(near.take());
        }
        match fetch(&config, pass, ISTIO_HOST).await {
            Ok(which) => reached.push(which),
            Err(e) => failed.push(format!("connection {i}: {e}")),
        }
    }
    assert!(failed.is_empty(), "every connection reached a backend: {failed:?}");
    assert!(reached[..5].iter().all(|b| *b == "primary"), "the same zone's endpoint serves while it runs: {reached:?}");
    assert!(reached[5..].iter().all(|b| *b == "spare"), "then the other zone's: {reached:?}");
    wait_until_async("the stopped endpoint is ejected", WAIT, || async { count(&node, EventKind::Ejection) >= 1 }).await;
    drop(far);
    node.stop().await;
}
