//! TLS from veer to its upstreams (Istio DestinationRule `trafficPolicy.tls`) against the real
//! `openssl s_server`: verification by the configured CA and name, client certificates for
//! MUTUAL, and a wrong CA refused.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::listeners::get_path;
use super::{cluster, count, NodeWorld, WAIT};
use veer_control::events::EventKind;
use veer_testkit::{wait_until, wait_until_async, World};

const HOST: &str = "server.infra.svc.cluster.local";

/// A CA that signs certificates for the test, kept in memory.
pub(super) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    pub(super) fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("self-signed").pem();
        TestCa { issuer: Issuer::new(params, key), pem }
    }

    /// A certificate for `name` and its key, as PEM.
    pub(super) fn leaf(&self, name: &str) -> (String, String) {
        self.leaf_for(&[name])
    }

    /// A certificate for `names` and its key, as PEM.
    pub(super) fn leaf_for(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names).expect("params").signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    pub(super) fn pem(&self) -> &str {
        &self.pem
    }
}

/// `openssl s_server -www` on `ip` (it answers `GET /` with a page that names itself), stopped
/// when dropped.
pub(super) struct SServer {
    child: Child,
    pub(super) addr: SocketAddr,
}

impl SServer {
    pub(super) fn start(dir: &Path, ip: std::net::IpAddr, cert: &str, key: &str, extra: &[&str]) -> SServer {
        let addr = std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).expect("a free port");
        let tag = addr.port();
        std::fs::write(dir.join(format!("s-{tag}.crt")), cert).expect("cert");
        std::fs::write(dir.join(format!("s-{tag}.key")), key).expect("key");
        let child = Command::new("openssl")
            .arg("s_server")
            .arg("-accept")
            .arg(addr.to_string())
            .arg("-cert")
            .arg(dir.join(format!("s-{tag}.crt")))
            .arg("-key")
            .arg(dir.join(format!("s-{tag}.key")))
            .arg("-www")
            .arg("-quiet")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server runs (the PKI tests need openssl too; .ci/run installs it)");
        wait_until(format!("s_server listening on {addr}"), WAIT, || std::net::TcpStream::connect(addr).is_ok());
        SServer { child, addr }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One cluster whose Service `server.infra` has the endpoint at `addr`, and a DestinationRule
/// for it with `tls` (YAML under `trafficPolicy.tls`, indented by six).
fn world_with_tls(w: &World, addr: SocketAddr, tls: &str) {
    let mut m = cluster("central", "pp", "rs", "central");
    m.push_str("apiVersion: v1\nkind: Service\nmetadata:\n  name: server\n  namespace: infra\n  labels:\n    topology.istio.io/cluster: central\nspec:\n  selector:\n    app: server\n  ports:\n  - name: https\n    port: 443\n    targetPort: https\n---\n");
    m.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: s0\n  namespace: infra\n  labels:\n    topology.istio.io/cluster: central\nspec:\n  address: {}\n  ports:\n    https: {}\n  labels:\n    app: server\n---\n",
        addr.ip(),
        addr.port()
    ));
    w.write("topology.yaml", &m);
    w.write(
        "dr.yaml",
        &format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: server\n  namespace: infra\nspec:\n  host: {HOST}\n  trafficPolicy:\n    tls:\n{tls}"),
    );
}

/// What a fresh node answers for [`HOST`] when its DestinationRule verifies the backend (a
/// certificate for `backend.test` from `ca`) with `tls`. Each case has its own node, so an
/// ejection left by one case cannot answer for the next.
async fn answer_with(tls: &str) -> (u16, String) {
    let w = World::new();
    let (ca, other) = (TestCa::new("backend ca"), TestCa::new("someone else"));
    std::fs::write(w.dir().join("ca.pem"), &ca.pem).expect("ca");
    std::fs::write(w.dir().join("other-ca.pem"), &other.pem).expect("other ca");
    let (cert, key) = ca.leaf("backend.test");
    let server = SServer::start(w.dir(), w.ip(1, 1), &cert, &key, &[]);
    world_with_tls(&w, server.addr, tls);
    let node = w.node("central").await;
    let answer = get_path(node.listen, HOST, "/").await;
    node.stop().await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_reaches_a_backend_its_ca_vouches_for_and_a_wrong_ca_or_name_is_refused() {
    let (status, body) = answer_with("      mode: SIMPLE\n      caCertificates: ca.pem\n      sni: backend.test\n").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("s_server"), "the TLS backend answered: {body}");
    // The same backend, verified against a CA that did not sign it: no request reaches it.
    let (status, body) = answer_with("      mode: SIMPLE\n      caCertificates: other-ca.pem\n      sni: backend.test\n").await;
    assert!(status >= 500 && !body.contains("s_server"), "a certificate the CA did not sign is refused: {status} {body}");
    // The right CA but another name: refused too (veer verifies the name it sends).
    let (status, body) = answer_with("      mode: SIMPLE\n      caCertificates: ca.pem\n      sni: elsewhere.test\n").await;
    assert!(status >= 500 && !body.contains("s_server"), "a certificate for another name is refused: {status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate_a_backend_requires() {
    let w = World::new();
    let (ca, clients) = (TestCa::new("backend ca"), TestCa::new("client ca"));
    std::fs::write(w.dir().join("ca.pem"), &ca.pem).expect("ca");
    std::fs::write(w.dir().join("client-ca.pem"), &clients.pem).expect("client ca");
    let (client_cert, client_key) = clients.leaf("veer.client");
    std::fs::write(w.dir().join("client.pem"), client_cert).expect("client cert");
    std::fs::write(w.dir().join("client-key.pem"), client_key).expect("client key");
    let (cert, key) = ca.leaf("backend.test");
    let client_ca = w.dir().join("client-ca.pem");
    let server = SServer::start(w.dir(), w.ip(1, 1), &cert, &key, &["-Verify", "1", "-CAfile", client_ca.to_str().expect("utf-8 path")]);
    world_with_tls(
        &w,
        server.addr,
        "      mode: MUTUAL\n      caCertificates: ca.pem\n      clientCertificate: client.pem\n      privateKey: client-key.pem\n      sni: backend.test\n",
    );
    let node = w.node("central").await;
    let (status, body) = get_path(node.listen, HOST, "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("s_server"), "{body}");

    // Without the client certificate the backend ends the handshake.
    world_with_tls(&w, server.addr, "      mode: SIMPLE\n      caCertificates: ca.pem\n      sni: backend.test\n");
    wait_until_async("the reload", WAIT, || async { count(&node, EventKind::ConfigReloaded) >= 1 }).await;
    let (status, body) = get_path(node.listen, HOST, "/").await;
    assert!(status >= 500, "no client certificate, no answer: {status} {body}");
    node.stop().await;
}

/// What a fresh node answers for `shop.test`, routed by an HTTPRoute to Service `server` whose
/// endpoint is an s_server with a certificate for `backend.test` from one CA, when a
/// BackendTLSPolicy verifies it against the ConfigMap holding `trusted`'s certificate.
async fn answer_with_policy(trust_the_signer: bool) -> (u16, String) {
    let w = World::new();
    let (ca, other) = (TestCa::new("backend ca"), TestCa::new("someone else"));
    let (cert, key) = ca.leaf("backend.test");
    let server = SServer::start(w.dir(), w.ip(1, 1), &cert, &key, &[]);
    world_with_tls(&w, server.addr, "      mode: DISABLE\n");
    w.remove("dr.yaml");
    let trusted = if trust_the_signer { &ca.pem } else { &other.pem };
    let indented: String = trusted.lines().map(|l| format!("    {l}\n")).collect();
    w.write(
        "gateway.yaml",
        &format!(
            "apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca, namespace: infra}}
data:
  ca.crt: |
{indented}---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {{name: server-tls, namespace: infra}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: server, sectionName: https}}]
  validation:
    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: backend-ca}}]
    hostname: backend.test
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: public, namespace: infra}}
spec:
  gatewayClassName: veer
  listeners: [{{name: http, protocol: HTTP, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: infra}}
spec:
  parentRefs: [{{name: public}}]
  hostnames: [shop.test]
  rules: [{{backendRefs: [{{name: server, port: 443}}]}}]
"
        ),
    );
    let node = w.node("central").await;
    let answer = get_path(node.listen, "shop.test", "/").await;
    node.stop().await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_tls_policy_verifies_the_route_backends_certificate_against_its_configmap() {
    let (status, body) = answer_with_policy(true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("s_server"), "the TLS backend answered: {body}");
    let (status, body) = answer_with_policy(false).await;
    assert!(status >= 500 && !body.contains("s_server"), "a CA that did not sign the backend's certificate refuses it: {status} {body}");
}
