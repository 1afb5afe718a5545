//! HTTPS listeners end to end: real `curl` and `openssl s_client` against a node terminating TLS
//! with certificates from Secrets chosen by SNI, ALPN h2, 421 for another listener's host, a
//! handshake that never comes, and a certificate rotated under load.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use veer_control::events::EventKind;
use veer_testkit::{wait_until_async, Backend, TempDir, World};

use super::{count, counter, service, NodeWorld, WAIT};

/// A test CA: clients trust it (curl `--cacert`, s_client `-CAfile`), so every check a real
/// client makes, names included, runs.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "veer test CA");
        let cert = params.self_signed(&key).expect("CA");
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf (ECDSA P-256) named `cn` for `names`: (certificate PEM, key PEM, certificate DER).
    fn leaf(&self, cn: &str, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// A `kubernetes.io/tls` Secret as `kubectl get secret -o yaml` prints it.
fn secret(name: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\n  resourceVersion: \"1\"\n  uid: 6d1f3c1e-0000-0000-0000-000000000000\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
        b64(cert_pem),
        b64(key_pem)
    )
}

/// Cluster `edge` with port 443 on `https` (its own address): Gateway `gw` with two HTTPS
/// listeners on it, `a` (a.example.com, Secret a-cert) and `b` (*.b.example.com, Secret
/// b-cert), each with a route to its Service.
fn world(a: &[Backend], b: &[Backend], https: SocketAddr, a_cert: (&str, &str), b_cert: (&str, &str)) -> String {
    let mut m = format!(
        "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {{name: edge}}\nspec:\n  locality: {{region: r, zone: z}}\n  gateway:\n    ports:\n      \"443\": {https}\n---\n"
    );
    m.push_str(&service("edge", "default", "a", &[], a));
    m.push_str(&service("edge", "default", "b", &[], b));
    m.push_str(&secret("a-cert", a_cert.0, a_cert.1));
    m.push_str(&secret("b-cert", b_cert.0, b_cert.1));
    m.push_str(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: veer
  listeners:
  - name: a
    protocol: HTTPS
    port: 443
    hostname: a.example.com
    tls: {mode: Terminate, certificateRefs: [{kind: Secret, name: a-cert}]}
  - name: b
    protocol: HTTPS
    port: 443
    hostname: '*.b.example.com'
    tls: {certificateRefs: [{name: b-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a}
spec:
  parentRefs: [{name: gw, sectionName: a}]
  hostnames: [a.example.com]
  rules: [{backendRefs: [{name: a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b}
spec:
  parentRefs: [{name: gw, sectionName: b}]
  hostnames: [x.b.example.com]
  rules: [{backendRefs: [{name: b, port: 80}]}]
",
    );
    m
}

/// Runs a real client program to its end (each bounds its own time): status, stdout, stderr.
pub(super) async fn run(program: &str, args: Vec<String>) -> (bool, String, String) {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program} runs (is it installed? .ci/run installs it): {e}"));
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await
    .expect("client task")
}

/// `curl` of `https://{sni}:{port}{path}` reaching `at`, trusting `ca`: (status, body, HTTP version).
async fn curl(ca: &std::path::Path, at: SocketAddr, sni: &str, host: Option<&str>, version: &str) -> (u16, String, String) {
    let mut args = vec![
        "-sS".to_string(),
        "--max-time".into(),
        "10".into(),
        version.into(),
        "--cacert".into(),
        ca.display().to_string(),
        "--resolve".into(),
        format!("{sni}:{}:{}", at.port(), at.ip()),
        "-w".into(),
        "\n%{http_code} %{http_version}".into(),
    ];
    if let Some(h) = host {
        args.extend(["-H".into(), format!("Host: {h}")]);
    }
    args.push(format!("https://{sni}:{}/", at.port()));
    let (ok, out, err) = run("curl", args).await;
    assert!(ok, "curl {sni}: {err}");
    let (body, tail) = out.rsplit_once('\n').unwrap_or_default();
    let (code, http) = tail.split_once(' ').unwrap_or_default();
    (code.parse().unwrap_or(0), body.trim().to_string(), http.to_string())
}

/// `openssl s_client` to `at` with SNI `sni` offering ALPN h2 and http/1.1: (handshake
/// verified, what it printed).
async fn s_client(ca: &std::path::Path, at: SocketAddr, sni: &str) -> (bool, String) {
    let args = [
        "s_client",
        "-connect",
        &at.to_string(),
        "-servername",
        sni,
        "-alpn",
        "h2,http/1.1",
        "-CAfile",
        &ca.display().to_string(),
        "-verify_return_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, out, err) = run("openssl", args).await;
    (ok && out.contains("Verify return code: 0 (ok)"), format!("{out}\n{err}"))
}

fn tls_failures(node: &veer_node::node::Node, reason: &str) -> u64 {
    counter(node, &format!("veer_tls_handshake_failures_total{{reason=\"{reason}\"}}"))
}

struct Setup {
    w: World,
    ca_file: std::path::PathBuf,
    _dir: TempDir,
    ca: Ca,
    a: veer_testkit::Backends,
    b: veer_testkit::Backends,
    https_ip: IpAddr,
}

async fn setup() -> Setup {
    let w = World::new();
    let a = w.backends("a", 1, 1).await;
    let b = w.backends("b", 2, 1).await;
    let ca = Ca::new();
    let dir = TempDir::new("veer-tls-ca");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("CA file");
    let https_ip = w.ip(9, 1);
    Setup { w, ca_file, _dir: dir, ca, a, b, https_ip }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_pick_certificates_by_sni_speak_h2_and_refuse_another_listeners_host() {
    let s = setup().await;
    let (a_crt, a_key, _) = s.ca.leaf("a-cert", &["a.example.com"]);
    let (b_crt, b_key, _) = s.ca.leaf("b-wildcard", &["*.b.example.com"]);
    s.w.write("edge.yaml", &world(&s.a, &s.b, SocketAddr::new(s.https_ip, 0), (&a_crt, &a_key), (&b_crt, &b_key)));
    let node = s.w.node_with("edge", |c| c.limits.idle_timeout = Duration::from_millis(500)).await;
    let https = *node.listeners.iter().find(|l| l.ip() == s.https_ip).expect("HTTPS socket bound");

    // `/status` says the socket terminates TLS.
    let (ok, status, err) =
        run("curl", vec!["-sS".into(), "--max-time".into(), "10".into(), format!("http://{}/status", node.admin)]).await;
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    let tls_of = |addr: SocketAddr| {
        status["listeners"].as_array().into_iter().flatten().find(|l| l["address"] == addr.to_string()).map(|l| l["tls"].clone())
    };
    assert_eq!((tls_of(https), tls_of(node.listen)), (Some(true.into()), Some(false.into())), "{status}");

    // Each name gets its own certificate (curl checks it against the name), each listener's
    // route its backend; ALPN gives HTTP/2 to who asks and HTTP/1.1 to who does not.
    assert_eq!(curl(&s.ca_file, https, "a.example.com", None, "--http2").await, (200, "a-1".into(), "2".into()));
    assert_eq!(curl(&s.ca_file, https, "x.b.example.com", None, "--http2").await, (200, "b-1".into(), "2".into()));
    assert_eq!(curl(&s.ca_file, https, "a.example.com", None, "--http1.1").await, (200, "a-1".into(), "1.1".into()));
    let (ok, out) = s_client(&s.ca_file, https, "a.example.com").await;
    assert!(ok && out.contains("CN = a-cert") && out.contains("ALPN protocol: h2"), "{out}");
    let (ok, out) = s_client(&s.ca_file, https, "y.b.example.com").await;
    assert!(ok && out.contains("CN = b-wildcard"), "{out}");

    // A request for b's host on a's certificate: 421, and b's backend hears nothing; on its
    // own connection it is served. HTTP/2 sends it as :authority.
    for version in ["--http1.1", "--http2"] {
        let (code, body, _) = curl(&s.ca_file, https, "a.example.com", Some("x.b.example.com"), version).await;
        assert_eq!(code, 421, "{version}: {body}");
    }
    assert_eq!(s.b[0].served(), 1, "a misdirected request reached b's backend");
    assert!(counter(&node, "veer_requests_refused_total{reason=\"misdirected\"}") >= 2);

    // A name no listener answers: no certificate, no handshake; counted.
    let before = tls_failures(&node, "error");
    let (ok, out) = s_client(&s.ca_file, https, "other.org").await;
    assert!(!ok, "a handshake for a name no listener has succeeded: {out}");
    wait_until_async("the refused handshake is counted", WAIT, || async { tls_failures(&node, "error") > before }).await;

    // A client that connects and says nothing is closed once the handshake's time is up.
    let mut silent = tokio::net::TcpStream::connect(https).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut silent, &mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a silent client was not closed: {read:?}");
    wait_until_async("the timed-out handshake is counted", WAIT, || async { tls_failures(&node, "timeout") >= 1 }).await;
    node.stop().await;
}

/// A TLS client trusting only `ca_pem`, offering HTTP/1.1, never resuming.
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
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection a full handshake: a resumed session presents no certificate (rustls
    // reports the one of the session it resumed), so it could not show the rotation.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One TLS connection to a.example.com: the certificate presented, and a sender for requests.
async fn connect(
    config: &Arc<rustls::ClientConfig>,
    at: SocketAddr,
) -> Result<(Vec<u8>, hyper::client::conn::http1::SendRequest<Empty<Bytes>>), String> {
    let tcp = tokio::net::TcpStream::connect(at).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("a.example.com").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    Ok((presented, send))
}

async fn get(send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> Result<String, String> {
    let req = http::Request::get("/").header(http::header::HOST, "a.example.com").body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    let body = String::from_utf8_lossy(&body).trim().to_string();
    if status != http::StatusCode::OK {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_under_load_fails_no_request_and_new_handshakes_present_it() {
    let s = setup().await;
    let (b_crt, b_key, _) = s.ca.leaf("b-wildcard", &["*.b.example.com"]);
    let (v1_crt, v1_key, v1_der) = s.ca.leaf("a-v1", &["a.example.com"]);
    let (v2_crt, v2_key, v2_der) = s.ca.leaf("a-v2", &["a.example.com"]);
    s.w.write("edge.yaml", &world(&s.a, &s.b, SocketAddr::new(s.https_ip, 0), (&v1_crt, &v1_key), (&b_crt, &b_key)));
    let node = s.w.node_with("edge", |c| c.workers = 2).await;
    let https = *node.listeners.iter().find(|l| l.ip() == s.https_ip).expect("HTTPS socket bound");
    let config = client_config(&s.ca.pem);

    // A connection made before the rotation, kept across it.
    let (presented, mut kept) = connect(&config, https).await.expect("first connection");
    assert_eq!(presented, v1_der);
    assert_eq!(get(&mut kept).await.as_deref(), Ok("a-1"));

    // Load: 4 clients, each making a new connection (a full handshake) every 5 requests, until
    // told to stop or at 20,000 requests in all.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, saw_v2) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (config, stop, sent, saw_v2, v2_der) = (config.clone(), stop.clone(), sent.clone(), saw_v2.clone(), v2_der.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < 20_000 {
                let (presented, mut send) = match connect(&config, https).await {
                    Ok(c) => c,
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                };
                if presented == v2_der {
                    saw_v2.fetch_add(1, Ordering::Relaxed);
                }
                for _ in 0..5 {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = get(&mut send).await {
                        failures.push(e);
                    }
                }
            }
            failures
        }));
    }
    wait_until_async("load is running", WAIT, || async { sent.load(Ordering::Relaxed) >= 200 }).await;
    assert_eq!(saw_v2.load(Ordering::Relaxed), 0, "the new certificate was served before it was written");

    // Rotate: the Secret's data rewritten in place, as a GitOps agent would.
    s.w.write("edge.yaml", &world(&s.a, &s.b, SocketAddr::new(s.https_ip, 0), (&v2_crt, &v2_key), (&b_crt, &b_key)));
    wait_until_async("the rotation is loaded", WAIT, || async { count(&node, EventKind::ConfigReloaded) >= 1 }).await;
    wait_until_async("new handshakes present the rotated certificate", WAIT, || async { saw_v2.load(Ordering::Relaxed) >= 20 }).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.expect("client"));
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(failures.is_empty(), "{} of {sent} requests failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    eprintln!(
        "rotated under load: {sent} requests, none failed; {} handshakes presented the new certificate",
        saw_v2.load(Ordering::Relaxed)
    );

    // The connection from before the rotation was not dropped: it still serves.
    assert_eq!(get(&mut kept).await.as_deref(), Ok("a-1"));
    // And a real client sees the new one.
    let (ok, out) = s_client(&s.ca_file, https, "a.example.com").await;
    assert!(ok && out.contains("CN = a-v2"), "{out}");

    // A key that is not the certificate's is refused with its place; the rotated pair serves on.
    s.w.write("edge.yaml", &world(&s.a, &s.b, SocketAddr::new(s.https_ip, 0), (&v1_crt, &v2_key), (&b_crt, &b_key)));
    wait_until_async("the mismatched pair is refused", WAIT, || async { count(&node, EventKind::ConfigRejected) >= 1 }).await;
    let why = node.events.all().into_iter().find(|e| e.kind == EventKind::ConfigRejected).map(|e| e.reason).unwrap_or_default();
    assert!(why.contains("edge.yaml:") && why.contains("data.tls.key") && why.contains("does not belong to the certificate"), "{why}");
    let (presented, mut send) = connect(&config, https).await.expect("connection after the refused reload");
    assert_eq!(presented, v2_der);
    assert_eq!(get(&mut send).await.as_deref(), Ok("a-1"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_file_certificate_is_served_and_reloaded_when_the_file_is_rewritten() {
    let s = setup().await;
    let (a_crt, a_key, _) = s.ca.leaf("a-cert", &["a.example.com"]);
    let (b_crt, b_key, _) = s.ca.leaf("b-pem-v1", &["*.b.example.com"]);
    // Listener b's certificate is a PEM file beside the manifest (chain and key in one file).
    let text = world(&s.a, &s.b, SocketAddr::new(s.https_ip, 0), (&a_crt, &a_key), ("unused", "unused"))
        .replace("tls: {certificateRefs: [{name: b-cert}]}", "tls: {certificateRefs: [{group: veer.io, kind: PEMFile, name: ./b.pem}]}");
    let text = text.split("---\n").filter(|doc| !doc.contains("name: b-cert")).collect::<Vec<_>>().join("---\n");
    s.w.write("b.pem", &format!("{b_crt}{b_key}"));
    s.w.write("edge.yaml", &text);
    let node = s.w.node("edge").await;
    let https = *node.listeners.iter().find(|l| l.ip() == s.https_ip).expect("HTTPS socket bound");
    assert_eq!(curl(&s.ca_file, https, "x.b.example.com", None, "--http2").await, (200, "b-1".into(), "2".into()));
    let (ok, out) = s_client(&s.ca_file, https, "x.b.example.com").await;
    assert!(ok && out.contains("CN = b-pem-v1"), "{out}");

    // The file rewritten (renamed into place) is a reload of its own; the manifest is untouched.
    let (b2_crt, b2_key, _) = s.ca.leaf("b-pem-v2", &["*.b.example.com"]);
    s.w.write("b.pem", &format!("{b2_crt}{b2_key}"));
    wait_until_async("the rewritten PEM file is loaded", WAIT, || async { count(&node, EventKind::ConfigReloaded) >= 1 }).await;
    let (ok, out) = s_client(&s.ca_file, https, "x.b.example.com").await;
    assert!(ok && out.contains("CN = b-pem-v2"), "{out}");
    node.stop().await;
}
