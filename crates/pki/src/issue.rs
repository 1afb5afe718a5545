//! Making the mesh's certificates: seed 003's root and per-cluster intermediates, and veer's node certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::error::{ErrorKind, PkiError};
use crate::files::{self, CA_CERT, CA_KEY, CERT_CHAIN, NODE_CERT, NODE_KEY, ROOT_CERT, ROOT_KEY};
use crate::identity::verify_node_chain;
use crate::names::{dns_name, spiffe_id, validate_cluster_name};

/// CAs live 10 years, as in seed 003 (`-days 3650`).
const CA_DAYS: i64 = 3650;
/// Node certificates live one year.
const NODE_DAYS: i64 = 365;
/// Certificates start an hour in the past, so that a peer whose clock is a little behind
/// (another cluster, another machine) does not refuse them as "not valid yet".
const BACKDATE: Duration = Duration::hours(1);

/// A CA read from disk: its certificates as written, and an issuer to sign with.
struct Ca {
    certs: Vec<CertificateDer<'static>>,
    issuer: Issuer<'static, KeyPair>,
}

/// Creates the mesh's root CA in `out_dir`: `root-cert.pem` and `root-key.pem` (O=Istio,
/// CN=Root CA, CA:true, keyCertSign; ECDSA P-256, 10 years). Refuses to overwrite either file.
pub fn create_root(out_dir: &Path) -> Result<(), PkiError> {
    let (cert_path, key_path) = (out_dir.join(ROOT_CERT), out_dir.join(ROOT_KEY));
    files::ensure_absent(&[cert_path.clone(), key_path.clone()])?;
    let key = new_key()?;
    let cert = root_params().self_signed(&key).map_err(|e| generate("the root certificate", e))?;
    files::ensure_dir(out_dir)?;
    files::write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
    files::write_new(&cert_path, cert.pem().as_bytes(), false)
}

/// Creates cluster `cluster`'s intermediate CA in `out_dir`, signed by the root in `root_dir`
/// (which may be made by `openssl` as in seed 003): `ca-cert.pem`, `ca-key.pem`,
/// `cert-chain.pem` (intermediate, then root) and a copy of `root-cert.pem`.
pub fn create_intermediate(root_dir: &Path, cluster: &str, out_dir: &Path) -> Result<(), PkiError> {
    validate_cluster_name(cluster)?;
    let root_cert_path = root_dir.join(ROOT_CERT);
    let root = read_ca(&root_cert_path, &root_dir.join(ROOT_KEY))?;
    let targets = [out_dir.join(CA_CERT), out_dir.join(CA_KEY), out_dir.join(CERT_CHAIN)];
    files::ensure_absent(&targets)?;
    // The copy of the root may already be there (out_dir is root_dir, or a second run after a
    // partial one); it must then be this root.
    let root_copy = out_dir.join(ROOT_CERT);
    let copy_root = !same_file_contents(&root_copy, &root_cert_path, &root.certs)?;

    let key = new_key()?;
    let params = intermediate_params(cluster);
    let cert = params.signed_by(&key, &root.issuer).map_err(|e| generate("the intermediate certificate", e))?;
    check_issuer_reproduced(cert.der(), &root.certs[0], &root_cert_path)?;

    let mut chain = vec![cert.der().clone()];
    chain.extend(root.certs.iter().cloned());
    files::ensure_dir(out_dir)?;
    files::write_new(&targets[1], key.serialize_pem().as_bytes(), true)?;
    files::write_new(&targets[0], cert.pem().as_bytes(), false)?;
    files::write_new(&targets[2], files::certs_pem(&chain).as_bytes(), false)?;
    if copy_root {
        files::write_new(&root_copy, files::certs_pem(&root.certs).as_bytes(), false)?;
    }
    Ok(())
}

/// Creates a node certificate for cluster `cluster` in `cluster_dir`, signed by the
/// intermediate there (`ca-cert.pem`, `ca-key.pem`; an RSA one made by openssl works too):
/// `node-cert.pem` (node certificate, then the intermediate) and `node-key.pem` (PKCS#8).
///
/// The node certificate has CN=C, SAN DNS `C.cluster.veer`, SAN URI `spiffe://veer/cluster/C`,
/// EKU serverAuth and clientAuth, is no CA, and lives a year. Before writing anything, the new
/// chain is verified against `cluster_dir/root-cert.pem`, so what is written also loads.
pub fn create_node(cluster_dir: &Path, cluster: &str) -> Result<(), PkiError> {
    validate_cluster_name(cluster)?;
    let (ca_cert_path, ca_key_path) = (cluster_dir.join(CA_CERT), cluster_dir.join(CA_KEY));
    let (cert_path, key_path) = (cluster_dir.join(NODE_CERT), cluster_dir.join(NODE_KEY));
    files::ensure_absent(&[cert_path.clone(), key_path.clone()])?;
    let ca = read_ca(&ca_cert_path, &ca_key_path)?;
    let root_path = cluster_dir.join(ROOT_CERT);
    let roots = files::read_certs(&root_path)?;

    let key = new_key()?;
    let cert = node_params(cluster)?.signed_by(&key, &ca.issuer).map_err(|e| generate("the node certificate", e))?;
    check_issuer_reproduced(cert.der(), &ca.certs[0], &ca_cert_path)?;
    let mut chain = vec![cert.der().clone()];
    chain.extend(ca.certs.iter().cloned());
    verify_node_chain(&roots, &chain, cluster).map_err(|why| {
        PkiError::at(
            ErrorKind::Untrusted,
            &ca_cert_path,
            format!("a node certificate signed by this intermediate would not be trusted by {}: {why}", root_path.display()),
        )
    })?;

    files::write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
    files::write_new(&cert_path, files::certs_pem(&chain).as_bytes(), false)
}

/// Creates a whole mesh in `out_dir`: the root, and for each cluster `out_dir/<cluster>/` with
/// its intermediate and a node certificate. Checks every file first and writes none if one
/// already exists.
pub fn create_mesh(out_dir: &Path, clusters: &[&str]) -> Result<(), PkiError> {
    if clusters.is_empty() {
        return Err(PkiError::new(
            ErrorKind::InvalidClusterName,
            "no cluster given: a mesh needs at least one (`--cluster NAME`, repeatable)",
        ));
    }
    let mut targets: Vec<PathBuf> = vec![out_dir.join(ROOT_CERT), out_dir.join(ROOT_KEY)];
    for (i, c) in clusters.iter().enumerate() {
        validate_cluster_name(c)?;
        if clusters[..i].contains(c) {
            return Err(PkiError::new(ErrorKind::InvalidClusterName, format!("cluster {c:?} is given twice")));
        }
        let dir = out_dir.join(c);
        targets.extend([CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, NODE_CERT, NODE_KEY].map(|f| dir.join(f)));
    }
    files::ensure_absent(&targets).map_err(|e| {
        PkiError::new(e.kind(), format!("{e}; to add a cluster to an existing mesh use `veer pki intermediate` and `veer pki node`"))
    })?;
    create_root(out_dir)?;
    for c in clusters {
        let dir = out_dir.join(c);
        create_intermediate(out_dir, c, &dir)?;
        create_node(&dir, c)?;
    }
    Ok(())
}

// === certificate profiles ===

fn root_params() -> CertificateParams {
    let mut p = base_params();
    p.distinguished_name.push(DnType::OrganizationName, "Istio");
    p.distinguished_name.push(DnType::CommonName, "Root CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (p.not_before, p.not_after) = validity(CA_DAYS);
    p
}

/// Seed 003's intermediate: O=Istio, CN=Intermediate CA, L=<cluster>, CA:true pathlen:0, and
/// the same SAN (istiod uses this CA when the operator pushes it as `cacerts`).
fn intermediate_params(cluster: &str) -> CertificateParams {
    let mut p = base_params();
    p.distinguished_name.push(DnType::OrganizationName, "Istio");
    p.distinguished_name.push(DnType::CommonName, "Intermediate CA");
    p.distinguished_name.push(DnType::LocalityName, cluster);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    if let Ok(name) = "istiod.istio-system.svc".try_into() {
        p.subject_alt_names = vec![SanType::DnsName(name)];
    }
    // openssl builds chains by matching authority to subject key identifiers.
    p.use_authority_key_identifier_extension = true;
    (p.not_before, p.not_after) = validity(CA_DAYS);
    p
}

fn node_params(cluster: &str) -> Result<CertificateParams, PkiError> {
    let ia5 = |s: String| s.try_into().map_err(|e| PkiError::new(ErrorKind::InvalidClusterName, format!("{cluster:?}: {e}")));
    let mut p = base_params();
    p.distinguished_name.push(DnType::CommonName, cluster);
    p.subject_alt_names = vec![SanType::DnsName(ia5(dns_name(cluster))?), SanType::URI(ia5(spiffe_id(cluster))?)];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    (p.not_before, p.not_after) = validity(NODE_DAYS);
    Ok(p)
}

/// rcgen's defaults without its placeholder subject (CN=rcgen self signed cert), so that the
/// subject is exactly the attributes pushed, in seed 003's order.
fn base_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p
}

fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - BACKDATE, now + Duration::days(days))
}

// === helpers ===

/// ECDSA P-256: what veer generates for every key (rcgen on ring cannot generate RSA).
fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::new(ErrorKind::Generate, format!("cannot generate an ECDSA P-256 key: {e}")))
}

fn generate(what: &str, e: rcgen::Error) -> PkiError {
    PkiError::new(ErrorKind::Generate, format!("cannot make {what}: {e}"))
}

/// Reads a CA: its certificate file (the first certificate is the CA; any others follow it in
/// chains) and its key, which must belong to that certificate.
fn read_ca(cert_path: &Path, key_path: &Path) -> Result<Ca, PkiError> {
    let certs = files::read_certs(cert_path)?;
    let key = files::read_signing_key(key_path)?;
    let ca_der = &certs[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| PkiError::at(ErrorKind::BadCertificate, cert_path, format!("is not a valid X.509 certificate ({e})")))?;
    if !parsed.is_ca() {
        return Err(PkiError::at(
            ErrorKind::Untrusted,
            cert_path,
            format!("{} is not a CA (basicConstraints CA:true is missing), so it cannot sign certificates", parsed.subject()),
        ));
    }
    if *parsed.public_key().subject_public_key.data != *key.public_key_raw() {
        return Err(PkiError::at(
            ErrorKind::KeyMismatch,
            key_path,
            format!(
                "does not belong to {} (its public key differs from that of {}); use the key that was made with that certificate",
                cert_path.display(),
                parsed.subject()
            ),
        ));
    }
    let issuer = Issuer::from_ca_cert_der(ca_der, key)
        .map_err(|e| PkiError::at(ErrorKind::BadCertificate, cert_path, format!("cannot sign with this CA certificate: {e}")))?;
    Ok(Ca { certs, issuer })
}

/// rcgen writes the issuer name by re-encoding the CA's subject; a name it cannot reproduce
/// byte for byte (repeated attributes, unusual string types) would break the chain silently.
fn check_issuer_reproduced(issued: &CertificateDer<'_>, ca: &CertificateDer<'_>, ca_path: &Path) -> Result<(), PkiError> {
    let issuer = x509_parser::parse_x509_certificate(issued).map(|(_, c)| c.issuer().as_raw().to_vec());
    let subject = x509_parser::parse_x509_certificate(ca).map(|(_, c)| (c.subject().as_raw().to_vec(), c.subject().to_string()));
    match (issuer, subject) {
        (Ok(i), Ok((s, _))) if i == s => Ok(()),
        (_, Ok((_, name))) => Err(PkiError::at(
            ErrorKind::Generate,
            ca_path,
            format!("cannot sign with this CA: its subject name ({name}) cannot be reproduced exactly (repeated or multi-valued attributes are not supported); make the CA with one attribute of each type, as seed 003 does"),
        )),
        (_, Err(e)) => Err(PkiError::at(ErrorKind::BadCertificate, ca_path, format!("is not a valid X.509 certificate ({e})"))),
    }
}

/// Whether `path` already holds exactly the certificates `certs` (false if it does not exist);
/// an error if it holds others.
fn same_file_contents(path: &Path, source: &Path, certs: &[CertificateDer<'static>]) -> Result<bool, PkiError> {
    if !path.exists() {
        return Ok(false);
    }
    let there = files::read_certs(path)?;
    if there == certs {
        Ok(true)
    } else {
        Err(PkiError::at(
            ErrorKind::AlreadyExists,
            path,
            format!("already exists and holds another root than {}; a cluster belongs to one mesh (move it away first)", source.display()),
        ))
    }
}
