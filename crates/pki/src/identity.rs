//! A node's loaded identity: the chain it presents, the root it trusts, and the rustls configs for east-west mTLS.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::date::date;
use crate::error::{ErrorKind, PkiError};
use crate::files::{self, NODE_CERT, NODE_KEY, ROOT_CERT};
use crate::names::{dns_name, named_cluster, server_name, validate_cluster_name};

/// ALPN a node's server offers: east-west traffic is HTTP/2, HTTP/1.1 for plain tools.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// ALPN a node's client asks for: nodes talk HTTP/2 to each other.
const CLIENT_ALPN: [&[u8]; 1] = [b"h2"];

/// Loaded identity of one node: what it presents and what it trusts.
///
/// Both configs speak TLS 1.3 only and trust only the mesh's root; the server requires a client
/// certificate chained to that root. Which cluster a verified peer is comes from
/// [`crate::peer_cluster`] on the peer's end-entity certificate.
#[derive(Clone)]
pub struct MeshIdentity {
    cluster: String,
    chain: Vec<CertificateDer<'static>>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for MeshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIdentity").field("cluster", &self.cluster).field("chain_len", &self.chain.len()).finish_non_exhaustive()
    }
}

/// Why a node chain is refused.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// The root file holds something that cannot be a trust anchor.
    BadRoot(String),
    /// The node certificate names another cluster, or none.
    WrongIdentity(String),
    /// The chain does not verify (other root, expired, wrong usage…).
    Untrusted(String),
}

/// Shown after `veer pki node`'s own context, naming the root file when it is at fault.
impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::BadRoot(why) => write!(f, "the root file: {why}"),
            Rejection::WrongIdentity(why) | Rejection::Untrusted(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Rejection {}

// === impl MeshIdentity ===

impl MeshIdentity {
    /// Reads `root-cert.pem`, `node-cert.pem` and `node-key.pem` from `cluster_dir`, and checks
    /// them as a peer would: the key belongs to the node certificate, the certificate names
    /// `cluster`, and the chain verifies against the root for both server and client use.
    ///
    /// A directory holding a cert-manager Secret instead (`tls.crt` with the chain, `tls.key`,
    /// `ca.crt`) is read the same way; `ca.crt` must then be the shared root (a trust-manager
    /// bundle, or an Issuer whose CA is the root), since it is what peers are checked against.
    pub fn load(cluster_dir: &Path, cluster: &str) -> Result<MeshIdentity, PkiError> {
        validate_cluster_name(cluster)?;
        let cert_manager = !cluster_dir.join(NODE_CERT).exists() && cluster_dir.join("tls.crt").exists();
        let (root_path, cert_path, key_path) = if cert_manager {
            let root = if cluster_dir.join(ROOT_CERT).exists() { cluster_dir.join(ROOT_CERT) } else { cluster_dir.join("ca.crt") };
            (root, cluster_dir.join("tls.crt"), cluster_dir.join("tls.key"))
        } else {
            (cluster_dir.join(ROOT_CERT), cluster_dir.join(NODE_CERT), cluster_dir.join(NODE_KEY))
        };
        let roots = files::read_certs(&root_path)?;
        let chain = files::read_certs(&cert_path)?;
        let key = files::read_key(&key_path)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => PkiError::at(
                ErrorKind::KeyMismatch,
                &key_path,
                format!("does not belong to {} (its public key differs from the node certificate's); use the key that was made with that certificate", cert_path.display()),
            ),
            other => PkiError::at(ErrorKind::BadKey, &key_path, format!("cannot be used for TLS ({other}); expected an ECDSA P-256/P-384, Ed25519 or RSA key")),
        })?;

        let (server_verifier, client_verifier) = verifiers(&roots, &provider).map_err(|r| rejection(r, &root_path, &cert_path))?;
        check_chain(&server_verifier, &client_verifier, &roots, &chain, cluster).map_err(|r| rejection(r, &root_path, &cert_path))?;

        let tls = |e: rustls::Error| PkiError::new(ErrorKind::Tls, format!("rustls refused the configuration: {e}"));
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(tls)?;
        server.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain.clone(), key)
            .map_err(tls)?;
        client.alpn_protocols = CLIENT_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(MeshIdentity { cluster: cluster.to_string(), chain, server: Arc::new(server), client: Arc::new(client) })
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The chain this node presents: its certificate, then its cluster's intermediate.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// TLS 1.3 only; a client certificate chained to the root is required; ALPN `h2`, `http/1.1`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// TLS 1.3 only; trusts only the root; presents the node chain; ALPN `h2`. Connect with
    /// [`crate::server_name`] of the cluster you mean to reach.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

// === verification ===

fn rejection(r: Rejection, root_path: &Path, cert_path: &Path) -> PkiError {
    match r {
        Rejection::BadRoot(why) => PkiError::at(ErrorKind::BadCertificate, root_path, why),
        Rejection::WrongIdentity(why) => PkiError::at(ErrorKind::WrongIdentity, cert_path, why),
        Rejection::Untrusted(why) => {
            PkiError::at(ErrorKind::Untrusted, cert_path, format!("does not verify against {}: {why}", root_path.display()))
        }
    }
}

/// The verifiers a node's client and server use, over the root file's certificates.
fn verifiers(
    roots: &[CertificateDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<WebPkiServerVerifier>, Arc<dyn ClientCertVerifier>), Rejection> {
    let mut store = RootCertStore::empty();
    for (i, r) in roots.iter().enumerate() {
        store.add(r.clone()).map_err(|e| {
            Rejection::BadRoot(format!("certificate #{} cannot be a trust anchor ({e}); expected the mesh's root CA certificate", i + 1))
        })?;
    }
    let store = Arc::new(store);
    let server = WebPkiServerVerifier::builder_with_provider(store.clone(), provider.clone())
        .build()
        .map_err(|e| Rejection::BadRoot(format!("cannot build a verifier: {e}")))?;
    let client = WebPkiClientVerifier::builder_with_provider(store, provider.clone())
        .build()
        .map_err(|e| Rejection::BadRoot(format!("cannot build a verifier: {e}")))?;
    Ok((server, client))
}

/// Checks a node chain exactly as peers will: it names `cluster`, a server accepts it as a
/// client certificate, and a client connecting to `C.cluster.veer` accepts it as the server's.
pub(crate) fn verify_node_chain(
    roots: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    cluster: &str,
) -> Result<(), Rejection> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    verifiers(roots, &provider).and_then(|(s, c)| check_chain(&s, &c, roots, chain, cluster))
}

fn check_chain(
    server: &WebPkiServerVerifier,
    client: &Arc<dyn ClientCertVerifier>,
    roots: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    cluster: &str,
) -> Result<(), Rejection> {
    let Some((leaf, intermediates)) = chain.split_first() else { return Err(Rejection::Untrusted("no certificate".into())) };
    match named_cluster(leaf) {
        Ok(c) if c == cluster => {}
        Ok(c) => return Err(Rejection::WrongIdentity(format!("names cluster {c:?}, not {cluster:?} (is this {cluster}'s directory?)"))),
        Err(p) => return Err(Rejection::WrongIdentity(p.to_string())),
    }
    let now = UnixTime::now();
    let explain = |e: rustls::Error| Rejection::Untrusted(describe(&e, roots, chain, cluster));
    client.verify_client_cert(leaf, intermediates, now).map_err(explain)?;
    server.verify_server_cert(leaf, intermediates, &server_name(cluster), &[], now).map_err(explain)?;
    Ok(())
}

/// Turns a verification error into what to do about it, naming the certificate at fault where
/// the error does not.
fn describe(e: &rustls::Error, roots: &[CertificateDer<'_>], chain: &[CertificateDer<'_>], cluster: &str) -> String {
    let rustls::Error::InvalidCertificate(ce) = e else { return e.to_string() };
    match ce {
        CertificateError::UnknownIssuer => {
            let root_names: Vec<String> = roots.iter().filter_map(|r| subject_of(r)).collect();
            let issuer = chain.first().and_then(issuer_of).unwrap_or_default();
            if chain.len() == 1 && !root_names.contains(&issuer) {
                format!("it holds only the node certificate, issued by \"{issuer}\"; append that intermediate after it (`cat ca-cert.pem >> node-cert.pem`)")
            } else {
                let tops: Vec<String> = chain.iter().filter_map(issuer_of).collect();
                format!(
                    "the chain does not lead to the root \"{}\" (the certificates are issued by {}): was it made under another root? Re-issue it from this mesh's intermediate (`veer pki node`), or use this mesh's root-cert.pem",
                    root_names.join("\", \""),
                    tops.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ")
                )
            }
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } | CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            out_of_date(roots, chain).unwrap_or_else(|| format!("a certificate is out of its validity period ({ce})"))
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the node certificate must allow both extended key usages serverAuth and clientAuth (a mesh node is server and client)".to_string()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!("the node certificate is not valid for {} ({ce})", dns_name(cluster)),
        // Every seed 003 root is "O=Istio, CN=Root CA", so a chain from another mesh finds this
        // root by name and fails on the signature rather than on the issuer.
        CertificateError::BadSignature => "a signature in the chain does not verify: the certificates name this root as their issuer but were signed by another key. Was it made under another root with the same name (every seed 003 root is \"O=Istio, CN=Root CA\")? Re-issue it from this mesh's intermediate (`veer pki node`), or use this mesh's root-cert.pem".to_string(),
        other => other.to_string(),
    }
}

/// The first certificate (node chain, then roots) that is expired or not yet valid, described.
fn out_of_date(roots: &[CertificateDer<'_>], chain: &[CertificateDer<'_>]) -> Option<String> {
    chain.iter().map(|c| ("in node-cert.pem", c)).chain(roots.iter().map(|c| ("the root", c))).find_map(|(place, c)| {
        let (_, x) = x509_parser::parse_x509_certificate(c).ok()?;
        let v = x.validity();
        if v.is_valid() {
            return None;
        }
        let now = time::OffsetDateTime::now_utc();
        Some(if v.not_before.to_datetime() > now {
            format!("\"{}\" {place} is not valid before {} (is this machine's clock right?)", x.subject(), date(v.not_before.to_datetime()))
        } else {
            format!("\"{}\" {place} expired on {}; issue a new one", x.subject(), date(v.not_after.to_datetime()))
        })
    })
}

fn subject_of(c: &CertificateDer<'_>) -> Option<String> {
    x509_parser::parse_x509_certificate(c).ok().map(|(_, x)| x.subject().to_string())
}

fn issuer_of(c: &CertificateDer<'_>) -> Option<String> {
    x509_parser::parse_x509_certificate(c).ok().map(|(_, x)| x.issuer().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_names_the_root_file_only_when_the_root_is_at_fault() {
        assert_eq!(
            Rejection::BadRoot("certificate #1 cannot be a trust anchor".into()).to_string(),
            "the root file: certificate #1 cannot be a trust anchor"
        );
        assert_eq!(Rejection::Untrusted("no certificate".into()).to_string(), "no certificate");
        assert_eq!(Rejection::WrongIdentity("names cluster \"b\", not \"a\"".into()).to_string(), "names cluster \"b\", not \"a\"");
    }
}
