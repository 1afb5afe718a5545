//! veer-pki end to end: real files, the real `openssl` binary, and real TLS 1.3 over 127.0.0.1.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use veer_pki::{
    create_intermediate, create_mesh, create_node, create_root, inspect, names_cluster, peer_cluster, server_name, ErrorKind, MeshIdentity,
};
use veer_testkit::TempDir;

// === test parts ===

/// Runs the real openssl in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl binary is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openssl {} failed:\n{text}", args.join(" "));
    text
}

/// The first PEM block of a file (openssl verify checks only the first certificate of a file).
fn first_pem_block(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    let end = "-----END CERTIFICATE-----\n";
    let at = text.find(end).expect("a certificate block") + end.len();
    text[..at].to_string()
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).expect("pem").collect::<Result<_, _>>().expect("certs")
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("key")
}

fn roots(path: &Path) -> RootCertStore {
    let mut store = RootCertStore::empty();
    for c in certs(path) {
        store.add(c).expect("root");
    }
    store
}

/// A client config outside veer-pki, to play misbehaving peers.
fn custom_client(versions: &[&'static rustls::SupportedProtocolVersion], trust: &Path, identity: Option<&Path>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots(trust));
    let mut cfg = match identity {
        Some(dir) => b.with_client_auth_cert(certs(&dir.join("node-cert.pem")), key(&dir.join("node-key.pem"))).expect("client cert"),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// What the server side saw of a completed handshake.
#[derive(Debug)]
struct Seen {
    peer_cluster: Option<String>,
    version: Option<ProtocolVersion>,
    alpn: Option<Vec<u8>>,
}

/// One connection over a real socket on 127.0.0.1: the server answers "ping" with "pong".
/// Returns what each side got; an error is the side's handshake or I/O error as text.
async fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> (Result<Seen, String>, Result<Seen, String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        Ok::<_, String>(Seen {
            peer_cluster: conn.peer_certificates().and_then(|c| c.first()).and_then(peer_cluster),
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        })
    });
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        // In TLS 1.3 the server judges the client's certificate after the client has finished
        // its handshake: a refusal shows up here, as an alert on the first read.
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err(format!("unexpected answer {buf:?}"));
        }
        let (_, conn) = tls.get_ref();
        Ok(Seen {
            peer_cluster: conn.peer_certificates().and_then(|c| c.first()).and_then(peer_cluster),
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        })
    };
    let limit = Duration::from_secs(5);
    let client_result = tokio::time::timeout(limit, client_side).await.unwrap_or_else(|_| Err("client timed out".into()));
    let server_result = match tokio::time::timeout(limit, server_side).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(format!("server task failed: {join}")),
        Err(_) => Err("server timed out".into()),
    };
    (server_result, client_result)
}

fn mesh(dir: &Path, clusters: &[&str]) -> Vec<MeshIdentity> {
    create_mesh(dir, clusters).expect("mesh");
    clusters.iter().map(|c| MeshIdentity::load(&dir.join(c), c).expect("load")).collect()
}

// === making a mesh ===

#[test]
fn mesh_of_three_clusters_verifies_with_openssl() {
    let tmp = TempDir::new("mesh3");
    let dir = tmp.path();
    create_mesh(dir, &["cluster1", "cluster2", "cluster3"]).expect("mesh");
    for f in ["root-cert.pem", "root-key.pem"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    for c in ["cluster1", "cluster2", "cluster3"] {
        let cd = dir.join(c);
        for f in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem", "node-cert.pem", "node-key.pem"] {
            assert!(cd.join(f).is_file(), "{c}/{f}");
        }
        // Seed 003: cert-chain.pem is the intermediate followed by the root.
        let chain = certs(&cd.join("cert-chain.pem"));
        assert_eq!(chain, [certs(&cd.join("ca-cert.pem")), certs(&dir.join("root-cert.pem"))].concat());
        // node-cert.pem is the node certificate followed by the intermediate.
        let presented = certs(&cd.join("node-cert.pem"));
        assert_eq!(presented.len(), 2);
        assert_eq!(presented[1], certs(&cd.join("ca-cert.pem"))[0]);

        std::fs::write(cd.join("leaf.pem"), first_pem_block(&cd.join("node-cert.pem"))).expect("write");
        for purpose in ["sslserver", "sslclient"] {
            let out = openssl(&cd, &["verify", "-purpose", purpose, "-CAfile", "root-cert.pem", "-untrusted", "ca-cert.pem", "leaf.pem"]);
            assert!(out.contains("leaf.pem: OK"), "{out}");
        }
        let text =
            openssl(&cd, &["x509", "-in", "leaf.pem", "-noout", "-subject", "-ext", "subjectAltName,basicConstraints,extendedKeyUsage"]);
        assert!(text.contains(&format!("CN = {c}")), "{text}");
        assert!(text.contains(&format!("DNS:{c}.cluster.veer")), "{text}");
        assert!(text.contains(&format!("URI:spiffe://veer/cluster/{c}")), "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"), "{text}");
        let ca = openssl(&cd, &["x509", "-in", "ca-cert.pem", "-noout", "-subject", "-ext", "basicConstraints"]);
        assert!(ca.contains(&format!("O = Istio, CN = Intermediate CA, L = {c}")), "{ca}");
        assert!(ca.contains("CA:TRUE, pathlen:0"), "{ca}");
    }
    let root = openssl(dir, &["x509", "-in", "root-cert.pem", "-noout", "-subject", "-ext", "basicConstraints,keyUsage"]);
    assert!(root.contains("O = Istio, CN = Root CA"), "{root}");
    assert!(root.contains("CA:TRUE") && root.contains("Certificate Sign"), "{root}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("cluster1/node-key.pem")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "keys are private to their owner");
    }
}

#[test]
fn never_overwrites_keys_or_certificates() {
    let tmp = TempDir::new("overwrite");
    let dir = tmp.path();
    create_mesh(dir, &["cluster1"]).expect("mesh");
    let before = std::fs::read(dir.join("root-key.pem")).expect("read");

    let e = create_root(dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("root-cert.pem: already exists"), "{e}");
    let e = create_mesh(dir, &["cluster1", "cluster2"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("veer pki intermediate"), "{e}");
    assert!(!dir.join("cluster2").exists(), "a refused mesh writes nothing");
    let e = create_node(&dir.join("cluster1"), "cluster1").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(dir.join("root-key.pem")).expect("read"), before);

    // Adding a cluster to the mesh afterwards, step by step.
    create_intermediate(dir, "cluster2", &dir.join("cluster2")).expect("intermediate");
    create_node(&dir.join("cluster2"), "cluster2").expect("node");
    MeshIdentity::load(&dir.join("cluster2"), "cluster2").expect("load");

    assert_eq!(create_mesh(dir, &[]).unwrap_err().kind(), ErrorKind::InvalidClusterName);
    assert_eq!(create_mesh(&dir.join("x"), &["a", "a"]).unwrap_err().kind(), ErrorKind::InvalidClusterName);
    assert_eq!(create_mesh(&dir.join("y"), &["Bad_Name"]).unwrap_err().kind(), ErrorKind::InvalidClusterName);
}

// === real TLS ===

#[tokio::test]
async fn cluster1_client_and_cluster2_server_complete_mtls() {
    let tmp = TempDir::new("mtls");
    let ids = mesh(tmp.path(), &["cluster1", "cluster2", "cluster3"]);
    let (c1, c2) = (&ids[0], &ids[1]);
    assert_eq!(c1.cluster(), "cluster1");
    assert_eq!(server_name("cluster2").to_str(), "cluster2.cluster.veer");

    let (server, client) = exchange(c2.server_config(), c1.client_config(), server_name("cluster2")).await;
    let server = server.expect("server side");
    let client = client.expect("client side");
    assert_eq!(server.peer_cluster.as_deref(), Some("cluster1"), "the server knows who called");
    assert_eq!(client.peer_cluster.as_deref(), Some("cluster2"), "the client verified cluster2.cluster.veer");
    assert_eq!(server.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(client.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(server.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(client.alpn.as_deref(), Some(&b"h2"[..]));

    let leaf1 = &c1.chain()[0];
    assert!(names_cluster(leaf1, "cluster1"));
    assert!(!names_cluster(leaf1, "cluster2"));
    assert!(!names_cluster(leaf1, "cluster3"));
}

#[tokio::test]
async fn client_certificate_from_another_root_is_refused() {
    let (tmp_a, tmp_b) = (TempDir::new("root-a"), TempDir::new("root-b"));
    let a = mesh(tmp_a.path(), &["cluster1", "cluster2"]);
    let b = mesh(tmp_b.path(), &["cluster1"]);

    // Trusts mesh A's root (so it accepts cluster2's server) but presents mesh B's cluster1.
    let impostor = custom_client(&[&rustls::version::TLS13], &tmp_a.path().join("root-cert.pem"), Some(&tmp_b.path().join("cluster1")));
    let (server, client) = exchange(a[1].server_config(), impostor, server_name("cluster2")).await;
    let server = server.expect_err("the server refuses a client certificate of another root");
    // Both roots are "O=Istio, CN=Root CA": webpki finds the root by name, then the signature fails.
    assert!(server.contains("BadSignature") || server.contains("UnknownIssuer"), "{server}");
    let client = client.expect_err("and the client sees the refusal");
    assert!(client.contains("alert"), "{client}");

    // Mesh B's own identity: refused both ways.
    let (server, client) = exchange(a[1].server_config(), b[0].client_config(), server_name("cluster2")).await;
    assert!(server.is_err() && client.is_err(), "{server:?} {client:?}");
    let client = client.unwrap_err();
    assert!(client.contains("BadSignature") || client.contains("UnknownIssuer"), "{client}");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let tmp = TempDir::new("nocert");
    let ids = mesh(tmp.path(), &["cluster2"]);
    let anonymous = custom_client(&[&rustls::version::TLS13], &tmp.path().join("root-cert.pem"), None);
    let (server, client) = exchange(ids[0].server_config(), anonymous, server_name("cluster2")).await;
    let server = server.expect_err("a certificate is required");
    assert!(server.contains("certificate"), "{server}");
    let client = client.expect_err("the client sees the refusal");
    assert!(client.contains("CertificateRequired") || client.contains("alert"), "{client}");
}

#[tokio::test]
async fn connecting_to_cluster2_as_if_it_were_cluster3_fails() {
    let tmp = TempDir::new("mismatch");
    let ids = mesh(tmp.path(), &["cluster1", "cluster2", "cluster3"]);
    let (server, client) = exchange(ids[1].server_config(), ids[0].client_config(), server_name("cluster3")).await;
    let client = client.expect_err("cluster2's certificate is not valid for cluster3.cluster.veer");
    assert!(client.contains("cluster3.cluster.veer") || client.contains("NotValidForName"), "{client}");
    assert!(server.is_err(), "{server:?}");
}

#[tokio::test]
async fn tls12_only_client_is_refused() {
    let tmp = TempDir::new("tls12");
    let ids = mesh(tmp.path(), &["cluster1", "cluster2"]);
    let old = custom_client(&[&rustls::version::TLS12], &tmp.path().join("root-cert.pem"), Some(&tmp.path().join("cluster1")));
    let (server, client) = exchange(ids[1].server_config(), old, server_name("cluster2")).await;
    let server = server.expect_err("TLS 1.3 only");
    assert!(server.contains("incompatible") || server.contains("version"), "{server}");
    assert!(client.is_err(), "{client:?}");
}

// === load errors ===

#[test]
fn load_errors_name_the_file_and_what_is_wrong() {
    let (tmp, other) = (TempDir::new("errors"), TempDir::new("errors-other"));
    let dir = tmp.path();
    create_mesh(dir, &["cluster1", "cluster2"]).expect("mesh");
    create_mesh(other.path(), &["cluster1"]).expect("other mesh");
    let c1 = dir.join("cluster1");
    let load = |d: &Path, c: &str| MeshIdentity::load(d, c).unwrap_err();

    // Wrong cluster for the directory.
    let e = load(&c1, "cluster2");
    assert_eq!(e.kind(), ErrorKind::WrongIdentity);
    assert!(e.to_string().ends_with(r#"node-cert.pem: names cluster "cluster1", not "cluster2" (is this cluster2's directory?)"#), "{e}");

    // Missing file: says which command makes it.
    let missing = TempDir::new("missing");
    std::fs::copy(c1.join("root-cert.pem"), missing.path().join("root-cert.pem")).expect("copy");
    std::fs::copy(c1.join("node-cert.pem"), missing.path().join("node-cert.pem")).expect("copy");
    let e = load(missing.path(), "cluster1");
    assert_eq!(e.kind(), ErrorKind::Missing);
    assert_eq!(e.path(), Some(missing.path().join("node-key.pem").as_path()));
    assert!(e.to_string().contains("node-key.pem: not found; `veer pki node --dir DIR/NAME --cluster NAME` creates it"), "{e}");

    // Garbage: no PEM at all, then a damaged block.
    let garbage = TempDir::new("garbage");
    for f in ["root-cert.pem", "node-cert.pem", "node-key.pem"] {
        std::fs::copy(c1.join(f), garbage.path().join(f)).expect("copy");
    }
    std::fs::write(garbage.path().join("node-key.pem"), "hello\n").expect("write");
    let e = load(garbage.path(), "cluster1");
    assert_eq!(e.kind(), ErrorKind::BadKey);
    assert!(e.to_string().contains("node-key.pem: no private key found (expected a PEM 'PRIVATE KEY' block"), "{e}");
    std::fs::copy(c1.join("node-key.pem"), garbage.path().join("node-key.pem")).expect("copy");
    std::fs::write(garbage.path().join("node-cert.pem"), "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n")
        .expect("write");
    let e = load(garbage.path(), "cluster1");
    assert_eq!(e.kind(), ErrorKind::BadCertificate);
    assert!(e.to_string().contains("node-cert.pem: is not valid PEM"), "{e}");
    std::fs::copy(c1.join("node-key.pem"), garbage.path().join("node-cert.pem")).expect("copy");
    let e = load(garbage.path(), "cluster1");
    assert!(e.to_string().contains("node-cert.pem: no certificate found (it holds 'PRIVATE KEY'"), "{e}");

    // A key that does not belong to the certificate.
    let swapped = TempDir::new("swapped");
    for f in ["root-cert.pem", "node-cert.pem"] {
        std::fs::copy(c1.join(f), swapped.path().join(f)).expect("copy");
    }
    std::fs::copy(dir.join("cluster2/node-key.pem"), swapped.path().join("node-key.pem")).expect("copy");
    let e = load(swapped.path(), "cluster1");
    assert_eq!(e.kind(), ErrorKind::KeyMismatch);
    assert!(e.to_string().contains("node-key.pem: does not belong to"), "{e}");

    // A node certificate (and key) from another root, next to this mesh's root.
    let foreign = TempDir::new("foreign");
    std::fs::copy(c1.join("root-cert.pem"), foreign.path().join("root-cert.pem")).expect("copy");
    for f in ["node-cert.pem", "node-key.pem"] {
        std::fs::copy(other.path().join("cluster1").join(f), foreign.path().join(f)).expect("copy");
    }
    let e = load(foreign.path(), "cluster1");
    assert_eq!(e.kind(), ErrorKind::Untrusted);
    assert!(e.to_string().contains("node-cert.pem: does not verify against"), "{e}");
    assert!(e.to_string().contains("another root"), "{e}");

    // Only the node certificate, without its intermediate.
    let lone = TempDir::new("lone");
    std::fs::copy(c1.join("root-cert.pem"), lone.path().join("root-cert.pem")).expect("copy");
    std::fs::copy(c1.join("node-key.pem"), lone.path().join("node-key.pem")).expect("copy");
    std::fs::write(lone.path().join("node-cert.pem"), first_pem_block(&c1.join("node-cert.pem"))).expect("write");
    let e = load(lone.path(), "cluster1");
    assert_eq!(e.kind(), ErrorKind::Untrusted);
    assert!(e.to_string().contains("cat ca-cert.pem >> node-cert.pem"), "{e}");

    // A node cannot be made from an intermediate of another mesh.
    let e = create_node(
        &{
            let d = foreign.path().join("mixed");
            std::fs::create_dir_all(&d).expect("dir");
            std::fs::copy(c1.join("root-cert.pem"), d.join("root-cert.pem")).expect("copy");
            for f in ["ca-cert.pem", "ca-key.pem"] {
                std::fs::copy(other.path().join("cluster1").join(f), d.join(f)).expect("copy");
            }
            d
        },
        "cluster1",
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Untrusted);
    assert!(e.to_string().contains("would not be trusted"), "{e}");
    assert!(!foreign.path().join("mixed/node-cert.pem").exists());

    // inspect shows a good directory and a broken one.
    let good = inspect(&c1, "cluster1");
    let text = good.to_string();
    assert!(good.is_ok(), "{text}");
    for want in [
        "subject  CN=cluster1",
        "DNS cluster1.cluster.veer, URI spiffe://veer/cluster/cluster1",
        "O=Istio, CN=Intermediate CA, L=cluster1  (CA, pathlen 0)",
        "ECDSA P-256",
        "days left",
        "names cluster: cluster1",
        "ok: chains to root",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let bad = inspect(foreign.path(), "cluster1").to_string();
    assert!(bad.contains("error: ") && bad.contains("does not verify against"), "{bad}");
}

// === seed 003's openssl CA ===

/// Seed 003 step 3 (root, RSA 4096) and step 4 (intermediate; RSA 2048 here to keep the test
/// quick: one 4096-bit key is enough to show veer reads them) for cluster `west`.
fn seed_003(dir: &Path) {
    openssl(dir, &["genrsa", "-out", "root-key.pem", "4096"]);
    std::fs::write(
        dir.join("root-ca.conf"),
        "[ req ]\nencrypt_key = no\nprompt = no\nutf8 = yes\ndefault_md = sha256\ndefault_bits = 4096\nreq_extensions = req_ext\nx509_extensions = req_ext\ndistinguished_name = req_dn\n[ req_ext ]\nsubjectKeyIdentifier = hash\nbasicConstraints = critical, CA:true\nkeyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign\n[ req_dn ]\nO = Istio\nCN = Root CA\n",
    )
    .expect("write");
    openssl(dir, &["req", "-sha256", "-new", "-key", "root-key.pem", "-config", "root-ca.conf", "-out", "root-cert.csr"]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "3650",
            "-signkey",
            "root-key.pem",
            "-extensions",
            "req_ext",
            "-extfile",
            "root-ca.conf",
            "-in",
            "root-cert.csr",
            "-out",
            "root-cert.pem",
        ],
    );

    let west = dir.join("west");
    std::fs::create_dir_all(&west).expect("dir");
    openssl(dir, &["genrsa", "-out", "west/ca-key.pem", "2048"]);
    std::fs::write(
        west.join("intermediate.conf"),
        "[ req ]\nencrypt_key = no\nprompt = no\nutf8 = yes\ndefault_md = sha256\ndefault_bits = 4096\nreq_extensions = req_ext\nx509_extensions = req_ext\ndistinguished_name = req_dn\n[ req_ext ]\nsubjectKeyIdentifier = hash\nbasicConstraints = critical, CA:true, pathlen:0\nkeyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign\nsubjectAltName=@san\n[ san ]\nDNS.1 = istiod.istio-system.svc\n[ req_dn ]\nO = Istio\nCN = Intermediate CA\nL = west\n",
    )
    .expect("write");
    openssl(dir, &["req", "-new", "-config", "west/intermediate.conf", "-key", "west/ca-key.pem", "-out", "west/cluster-ca.csr"]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "3650",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-extensions",
            "req_ext",
            "-extfile",
            "west/intermediate.conf",
            "-in",
            "west/cluster-ca.csr",
            "-out",
            "west/ca-cert.pem",
        ],
    );
    let chain = [std::fs::read(west.join("ca-cert.pem")).expect("read"), std::fs::read(dir.join("root-cert.pem")).expect("read")].concat();
    std::fs::write(west.join("cert-chain.pem"), chain).expect("write");
    std::fs::copy(dir.join("root-cert.pem"), west.join("root-cert.pem")).expect("copy");
}

#[tokio::test]
async fn reads_and_signs_with_seed_003_openssl_rsa_cas() {
    let tmp = TempDir::new("seed003");
    let dir = tmp.path();
    seed_003(dir);
    let west = dir.join("west");

    // veer signs a node with openssl's RSA intermediate, and an ECDSA intermediate with its RSA root.
    create_node(&west, "west").expect("node under the openssl intermediate");
    create_intermediate(dir, "east", &dir.join("east")).expect("intermediate under the openssl root");
    create_node(&dir.join("east"), "east").expect("node");
    std::fs::write(west.join("leaf.pem"), first_pem_block(&west.join("node-cert.pem"))).expect("write");
    let out = openssl(&west, &["verify", "-purpose", "sslclient", "-CAfile", "root-cert.pem", "-untrusted", "ca-cert.pem", "leaf.pem"]);
    assert!(out.contains("leaf.pem: OK"), "{out}");

    let w = MeshIdentity::load(&west, "west").expect("west");
    let e = MeshIdentity::load(&dir.join("east"), "east").expect("east");
    let (server, client) = exchange(e.server_config(), w.client_config(), server_name("east")).await;
    assert_eq!(server.expect("server").peer_cluster.as_deref(), Some("west"));
    assert_eq!(client.expect("client").peer_cluster.as_deref(), Some("east"));
    let shown = inspect(&west, "west").to_string();
    assert!(shown.contains("RSA 4096") && shown.contains("RSA 2048") && shown.contains("ok: chains to root"), "{shown}");

    // A node certificate an operator makes with openssl, with the SANs of the convention.
    let op = dir.join("west-openssl");
    std::fs::create_dir_all(&op).expect("dir");
    std::fs::copy(dir.join("root-cert.pem"), op.join("root-cert.pem")).expect("copy");
    openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "west-openssl/node-key.pem"]);
    std::fs::write(
        op.join("node.conf"),
        "[ req ]\nprompt = no\ndistinguished_name = dn\n[ dn ]\nCN = west\n[ ext ]\nbasicConstraints = critical, CA:false\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:west.cluster.veer, URI:spiffe://veer/cluster/west\n",
    )
    .expect("write");
    openssl(
        dir,
        &["req", "-new", "-key", "west-openssl/node-key.pem", "-config", "west-openssl/node.conf", "-out", "west-openssl/node.csr"],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "365",
            "-CA",
            "west/ca-cert.pem",
            "-CAkey",
            "west/ca-key.pem",
            "-CAcreateserial",
            "-extfile",
            "west-openssl/node.conf",
            "-extensions",
            "ext",
            "-in",
            "west-openssl/node.csr",
            "-out",
            "west-openssl/leaf.pem",
        ],
    );
    let presented = [std::fs::read(op.join("leaf.pem")).expect("read"), std::fs::read(west.join("ca-cert.pem")).expect("read")].concat();
    std::fs::write(op.join("node-cert.pem"), presented).expect("write");
    let o = MeshIdentity::load(&op, "west").expect("an operator's openssl node certificate loads");
    let (server, client) = exchange(o.server_config(), e.client_config(), server_name("west")).await;
    assert_eq!(server.expect("server").peer_cluster.as_deref(), Some("east"));
    assert_eq!(client.expect("client").peer_cluster.as_deref(), Some("west"));

    // OpenSSL 1.1's `genrsa` writes PKCS#1 ('RSA PRIVATE KEY'); veer signs with it too.
    let pkcs1 = dir.join("west-pkcs1");
    std::fs::create_dir_all(&pkcs1).expect("dir");
    for f in ["ca-cert.pem", "root-cert.pem"] {
        std::fs::copy(west.join(f), pkcs1.join(f)).expect("copy");
    }
    openssl(dir, &["rsa", "-in", "west/ca-key.pem", "-traditional", "-out", "west-pkcs1/ca-key.pem"]);
    assert!(std::fs::read_to_string(pkcs1.join("ca-key.pem")).expect("read").contains("BEGIN RSA PRIVATE KEY"));
    create_node(&pkcs1, "west").expect("node signed with a PKCS#1 key");
    MeshIdentity::load(&pkcs1, "west").expect("load");

    // A SEC1 EC key cannot sign (ring needs PKCS#8): the error says how to convert it.
    let sec1 = dir.join("sec1");
    std::fs::create_dir_all(&sec1).expect("dir");
    for f in ["ca-cert.pem", "root-cert.pem"] {
        std::fs::copy(dir.join("east").join(f), sec1.join(f)).expect("copy");
    }
    openssl(dir, &["ec", "-in", "east/ca-key.pem", "-out", "sec1/ca-key.pem"]);
    let e = create_node(&sec1, "east").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadKey);
    assert!(e.to_string().contains("openssl pkcs8 -topk8 -nocrypt"), "{e}");
}

#[tokio::test]
async fn loads_a_cert_manager_secret_layout() {
    // What a cert-manager Certificate's Secret looks like mounted as files: tls.crt (leaf and
    // chain), tls.key, ca.crt (here the shared root, as a trust-manager bundle provides it).
    let tmp = TempDir::new("cert-manager");
    let ids = mesh(tmp.path(), &["cluster1", "cluster2"]);
    let secret = tmp.path().join("secret-cluster1");
    std::fs::create_dir_all(&secret).expect("dir");
    let from = tmp.path().join("cluster1");
    std::fs::copy(from.join("node-cert.pem"), secret.join("tls.crt")).expect("copy");
    std::fs::copy(from.join("node-key.pem"), secret.join("tls.key")).expect("copy");
    std::fs::copy(tmp.path().join("root-cert.pem"), secret.join("ca.crt")).expect("copy");
    let c1 = MeshIdentity::load(&secret, "cluster1").expect("cert-manager layout loads");
    let (server, client) = exchange(ids[1].server_config(), c1.client_config(), server_name("cluster2")).await;
    assert_eq!(server.expect("server side").peer_cluster.as_deref(), Some("cluster1"));
    client.expect("client side");
    // The same files naming another cluster are refused at load time.
    let Err(err) = MeshIdentity::load(&secret, "cluster2") else { panic!("the wrong cluster is refused") };
    assert!(err.to_string().contains("tls.crt"), "{err}");
}
