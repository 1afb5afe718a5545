//! TLS from veer to a destination's endpoints (Istio DestinationRule `trafficPolicy.tls`, Gateway API BackendTLSPolicy), read into a ready client configuration.
//!
//! Certificates and keys are read and checked when the manifests load, so a missing file, a
//! file that holds no certificate, or a key that does not fit its certificate is an error at the
//! field that names it, and the last good set keeps serving. The request path only picks the
//! configuration built here.

use std::path::{Path, PathBuf};

use crate::meta::Meta;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::decode::Obj;
use crate::diag::Pos;

/// How veer speaks TLS to one destination's endpoints.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// Sent as SNI and checked against the endpoint's certificate.
    pub server_name: ServerName<'static>,
    /// What the endpoint's certificate is checked against.
    pub trust: Trust,
    /// Whether veer presents a client certificate (Istio `MUTUAL`).
    pub client_certificate: bool,
    /// Built once, when the manifests load. ALPN is left to the connection that uses it.
    pub config: Arc<rustls::ClientConfig>,
    /// The resource and field that set it, for `explain`.
    pub origin: String,
    /// The files' contents, so that a reload with the same files is the same setting.
    material: Vec<Vec<u8>>,
}

/// What an upstream certificate is verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The certificates of a CA file or ConfigMap (`from` names it).
    Roots { from: String, certificates: usize },
    /// The operating system's trust store (no `caCertificates`).
    System,
}

/// The `tls` of a DestinationRule's `trafficPolicy`, before its files are read: mode and paths
/// with where each was written.
struct ClientTlsFields {
    mode: &'static str,
    mode_pos: Pos,
    ca: Option<(String, Pos)>,
    cert: Option<(String, Pos)>,
    key: Option<(String, Pos)>,
    sni: Option<(String, Pos)>,
    subject_alt_names: Vec<(String, Pos)>,
}

// === impl UpstreamTls ===

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name
            && self.trust == other.trust
            && self.client_certificate == other.client_certificate
            && self.material == other.material
    }
}

impl UpstreamTls {
    /// In `explain`: `TLS to <name>, verified against <what>[, with a client certificate]`.
    pub fn describe(&self) -> String {
        let trust = match &self.trust {
            Trust::Roots { from, certificates } => format!("the {certificates} CA certificate(s) of {from}"),
            Trust::System => "the system's trust store".into(),
        };
        let name = match &self.server_name {
            ServerName::DnsName(n) => n.as_ref().to_string(),
            other => format!("{other:?}"),
        };
        let client = if self.client_certificate { ", presenting a client certificate" } else { "" };
        format!("TLS to {name}, verified against {trust}{client} ({})", self.origin)
    }
}

/// Reads a DestinationRule's `trafficPolicy.tls` (Istio `ClientTLSSettings`) for `host`.
/// `None` when TLS is off (no `tls`, or `mode: DISABLE`) or when the setting has errors, which
/// are reported on `t`'s context.
pub(crate) fn read_client_tls(t: &Obj<'_>, host: &str, origin: &str) -> Option<UpstreamTls> {
    let fields = read_fields(t)?;
    t.tolerate("caCrl", "revocation lists are not checked");
    t.finish();
    if fields.mode == "DISABLE" {
        return None;
    }
    if fields.mode == "ISTIO_MUTUAL" {
        t.ctx().error(
            fields.mode_pos,
            &t.field_path("mode"),
            "ISTIO_MUTUAL is the mesh's own certificate, which veer does not hold; between clusters veer uses its east-west mTLS, and to a backend use SIMPLE or MUTUAL with files",
        );
        return None;
    }
    let base = Path::new(&*t.ctx().file).parent().unwrap_or(Path::new("."));
    let read = |(path, pos): &(String, Pos), field: &str| -> Option<(PathBuf, Vec<u8>)> {
        let full = base.join(path);
        match crate::files::read_referenced(&full) {
            Ok(text) => Some((full, text.into_bytes())),
            Err(why) => {
                t.ctx().error(*pos, &t.field_path(field), format!("cannot read {why}"));
                None
            }
        }
    };
    let mut material = Vec::new();
    let roots = match &fields.ca {
        Some(ca) => {
            let (file, bytes) = read(ca, "caCertificates")?;
            let certs = certificates(&bytes);
            if certs.is_empty() {
                t.ctx().error(ca.1, &t.field_path("caCertificates"), format!("{} holds no PEM certificate", file.display()));
                return None;
            }
            let mut store = rustls::RootCertStore::empty();
            let (added, refused) = store.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                t.ctx().error(
                    ca.1,
                    &t.field_path("caCertificates"),
                    format!("none of the {refused} certificates of {} is a usable CA", file.display()),
                );
                return None;
            }
            material.push(bytes);
            (store, Trust::Roots { from: file.display().to_string(), certificates: added })
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut store = rustls::RootCertStore::empty();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                t.ctx().error(
                    fields.mode_pos,
                    &t.field_path("caCertificates"),
                    "no caCertificates, and this machine's trust store has no certificate to verify the upstream by",
                );
                return None;
            }
            (store, Trust::System)
        }
    };
    let name =
        fields.sni.clone().or_else(|| fields.subject_alt_names.first().cloned()).unwrap_or_else(|| (host.to_string(), fields.mode_pos));
    let server_name = match ServerName::try_from(name.0.clone()) {
        Ok(n) => n,
        Err(_) => {
            t.ctx().error(name.1, &t.field_path("sni"), format!("{:?} is not a DNS name or IP address to verify the upstream by", name.0));
            return None;
        }
    };
    if fields.subject_alt_names.len() > 1 {
        t.ctx().warn(
            fields.subject_alt_names[1].1,
            &t.field_path("subjectAltNames"),
            "veer verifies one name (sni, else the first subjectAltName, else the host); the others are not checked",
        );
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots.0);
    let mutual = fields.mode == "MUTUAL";
    let config = if mutual {
        let (Some(cert), Some(key)) = (&fields.cert, &fields.key) else {
            t.ctx().error(fields.mode_pos, &t.field_path("mode"), "MUTUAL needs clientCertificate and privateKey");
            return None;
        };
        let (cert_file, cert_bytes) = read(cert, "clientCertificate")?;
        let (key_file, key_bytes) = read(key, "privateKey")?;
        let chain = certificates(&cert_bytes);
        if chain.is_empty() {
            t.ctx().error(cert.1, &t.field_path("clientCertificate"), format!("{} holds no PEM certificate", cert_file.display()));
            return None;
        }
        let Ok(private) = PrivateKeyDer::from_pem_slice(&key_bytes) else {
            t.ctx().error(key.1, &t.field_path("privateKey"), format!("{} holds no PEM private key", key_file.display()));
            return None;
        };
        material.push(cert_bytes);
        material.push(key_bytes);
        match builder.with_client_auth_cert(chain, private) {
            Ok(c) => c,
            Err(e) => {
                t.ctx().error(
                    key.1,
                    &t.field_path("privateKey"),
                    format!("{} does not fit {}: {e}", key_file.display(), cert_file.display()),
                );
                return None;
            }
        }
    } else {
        for (f, name) in [(&fields.cert, "clientCertificate"), (&fields.key, "privateKey")] {
            if let Some((_, pos)) = f {
                t.ctx().warn(*pos, &t.field_path(name), "only MUTUAL presents a client certificate; this one is not sent");
            }
        }
        builder.with_no_client_auth()
    };
    Some(UpstreamTls {
        server_name,
        trust: roots.1,
        client_certificate: mutual,
        config: Arc::new(config),
        origin: origin.to_string(),
        material,
    })
}

fn read_fields(t: &Obj<'_>) -> Option<ClientTlsFields> {
    let (mode, mode_pos) = match t.one_of("mode", &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]) {
        Some(m) => m,
        None if !t.has("mode") => {
            t.ctx().error(t.pos(), &t.field_path("mode"), "required field is missing (DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL)");
            return None;
        }
        None => return None,
    };
    if t.bool("insecureSkipVerify") == Some(true) {
        t.ctx().error(
            t.pos_of("insecureSkipVerify"),
            &t.field_path("insecureSkipVerify"),
            "veer always verifies upstream certificates; give caCertificates",
        );
    }
    if t.has("credentialName") {
        t.ctx().error(
            t.pos_of("credentialName"),
            &t.field_path("credentialName"),
            "veer reads upstream TLS material from files: use caCertificates, clientCertificate and privateKey",
        );
    }
    Some(ClientTlsFields {
        mode,
        mode_pos,
        ca: t.string("caCertificates"),
        cert: t.string("clientCertificate"),
        key: t.string("privateKey"),
        sni: t.string("sni"),
        subject_alt_names: t.strings("subjectAltNames"),
    })
}

fn certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// Why a BackendTLSPolicy gives no client configuration.
#[derive(Debug)]
pub enum BackendTlsError {
    /// The ConfigMaps named (this text) hold no usable CA certificate under `ca.crt`.
    NoUsableCa(String),
    EmptySystemStore,
    BadHostname(String),
}

impl std::fmt::Display for BackendTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendTlsError::NoUsableCa(from) => write!(f, "{from} holds no usable PEM CA certificate under ca.crt"),
            BackendTlsError::EmptySystemStore => f.write_str("wellKnownCACertificates: System, but this machine's trust store is empty"),
            BackendTlsError::BadHostname(h) => write!(f, "hostname {h:?} is not a DNS name"),
        }
    }
}

impl std::error::Error for BackendTlsError {}

/// A Gateway API BackendTLSPolicy: TLS to the Services it targets, verified against the CA
/// certificates of ConfigMaps (or the system's store) under `hostname`.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendTlsPolicy {
    pub meta: Meta,
    /// Services of the policy's namespace: (name, `sectionName`: one port by name, or all).
    pub targets: Vec<(String, Option<String>, Pos)>,
    /// `validation.caCertificateRefs`: ConfigMaps of the policy's namespace, by name.
    pub ca_refs: Vec<(String, Pos)>,
    /// `validation.wellKnownCACertificates: System`.
    pub system_roots: bool,
    /// `validation.hostname`: sent as SNI and verified.
    pub hostname: (String, Pos),
}

/// A core `v1 ConfigMap`, of which veer keeps only `ca.crt` (where a BackendTLSPolicy's CA
/// certificates are).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigMap {
    pub meta: Meta,
    pub ca_crt: Option<(String, Pos)>,
}

pub(crate) fn read_config_map(doc: &Obj<'_>, meta: Meta) -> Option<ConfigMap> {
    doc.skip("immutable");
    doc.skip("binaryData");
    // Other keys are the ConfigMap's own business (a folder read for veer may hold any), so
    // `data` is not finished: its other keys are not reported.
    let ca_crt = doc.obj("data").and_then(|d| d.string("ca.crt"));
    Some(ConfigMap { meta, ca_crt })
}

pub(crate) fn read_backend_tls_policy(spec: &Obj<'_>, meta: Meta) -> Option<BackendTlsPolicy> {
    let mut targets = Vec::new();
    for t in spec.objs("targetRefs") {
        let group = t.string("group").map(|(g, _)| g).unwrap_or_default();
        let kind = t.string("kind").map(|(k, _)| k).unwrap_or_else(|| "Service".into());
        if !matches!(group.as_str(), "" | "core") || kind != "Service" {
            t.ctx().error(
                t.pos(),
                t.path(),
                format!("a BackendTLSPolicy target of kind {group}/{kind} is not supported; target a core Service"),
            );
        }
        let name = t.required_string("name");
        let section = t.string("sectionName").map(|(s, _)| s);
        if let Some((name, _)) = name {
            targets.push((name, section, t.pos()));
        }
        t.finish();
    }
    if targets.is_empty() {
        spec.ctx().error(spec.pos(), &spec.field_path("targetRefs"), "a BackendTLSPolicy needs at least one targetRef (a Service)");
    }
    let Some(v) = spec.obj("validation") else {
        spec.ctx().error(
            spec.pos(),
            &spec.field_path("validation"),
            "required field is missing (hostname, and caCertificateRefs or wellKnownCACertificates)",
        );
        return None;
    };
    let mut ca_refs = Vec::new();
    for r in v.objs("caCertificateRefs") {
        let group = r.string("group").map(|(g, _)| g).unwrap_or_default();
        let kind = r.string("kind").map(|(k, _)| k).unwrap_or_default();
        if !matches!(group.as_str(), "" | "core") || kind != "ConfigMap" {
            r.ctx().error(
                r.pos(),
                r.path(),
                format!("a CA certificate reference of kind {group}/{kind} is not supported; refer to a ConfigMap with ca.crt"),
            );
        }
        if let Some(n) = r.required_string("name") {
            ca_refs.push(n);
        }
        r.finish();
    }
    let system_roots = v.one_of("wellKnownCACertificates", &["System"]).is_some();
    if system_roots != ca_refs.is_empty() {
        v.ctx().error(v.pos(), v.path(), "set exactly one of caCertificateRefs and wellKnownCACertificates");
    }
    let hostname = v.required_string("hostname");
    v.tolerate("subjectAltNames", "veer verifies the hostname; subjectAltNames are not checked");
    v.finish();
    spec.tolerate("options", "no TLS options are applied");
    Some(BackendTlsPolicy { meta, targets, ca_refs, system_roots, hostname: hostname? })
}

/// The client configuration a BackendTLSPolicy makes, its CA certificates taken from `ca_pem`
/// (the ConfigMaps' `ca.crt`, named by `from`) or the system's store; an error says why not.
pub(crate) fn backend_tls(policy: &BackendTlsPolicy, ca_pem: Option<(&[u8], String)>) -> Result<UpstreamTls, BackendTlsError> {
    let material = ca_pem.as_ref().map(|(pem, _)| vec![pem.to_vec()]).unwrap_or_default();
    let (store, trust) = match ca_pem {
        Some((pem, from)) => {
            let certs = certificates(pem);
            let mut store = rustls::RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(BackendTlsError::NoUsableCa(from));
            }
            (store, Trust::Roots { from, certificates: added })
        }
        None => {
            let mut store = rustls::RootCertStore::empty();
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if store.is_empty() {
                return Err(BackendTlsError::EmptySystemStore);
            }
            (store, Trust::System)
        }
    };
    let server_name =
        ServerName::try_from(policy.hostname.0.clone()).map_err(|_| BackendTlsError::BadHostname(policy.hostname.0.clone()))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(UpstreamTls {
        server_name,
        trust,
        client_certificate: false,
        config: Arc::new(config),
        origin: format!("BackendTLSPolicy {}/{}", policy.meta.namespace, policy.meta.name),
        material,
    })
}
