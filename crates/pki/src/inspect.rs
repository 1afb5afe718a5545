//! `veer pki inspect`: what a node's files hold (subjects, issuers, SANs, expiry) and whether they load.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

use crate::date::date;
use crate::error::PkiError;
use crate::files::{self, NODE_CERT, ROOT_CERT};
use crate::identity::MeshIdentity;
use crate::names::peer_cluster;

/// What one certificate says, for people.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    /// `Some(pathlen)` for a CA (`Some(None)`: no path length limit); `None` for an end entity.
    pub ca: Option<Option<u32>>,
    /// "ECDSA P-256", "RSA 4096", …
    pub key: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Everything `veer pki inspect` shows about one node's directory.
#[derive(Debug)]
pub struct Inspection {
    pub cluster: String,
    pub dir: PathBuf,
    /// `node-cert.pem`: the node certificate, then its issuers; empty if unreadable.
    pub presented: Vec<CertSummary>,
    /// `root-cert.pem`: the roots this node trusts; empty if unreadable.
    pub roots: Vec<CertSummary>,
    /// The cluster the node certificate names, if it names one.
    pub names: Option<String>,
    /// Whether [`MeshIdentity::load`] accepts the directory, and if not, why.
    pub outcome: Result<(), PkiError>,
}

/// Reads what it can of `cluster_dir` and checks it with [`MeshIdentity::load`]; never fails,
/// so that a broken directory is still shown.
pub fn inspect(cluster_dir: &Path, cluster: &str) -> Inspection {
    let presented_der = files::read_certs(&cluster_dir.join(NODE_CERT)).unwrap_or_default();
    let roots_der = files::read_certs(&cluster_dir.join(ROOT_CERT)).unwrap_or_default();
    Inspection {
        cluster: cluster.to_string(),
        dir: cluster_dir.to_path_buf(),
        names: presented_der.first().and_then(peer_cluster),
        presented: presented_der.iter().filter_map(summarize).collect(),
        roots: roots_der.iter().filter_map(summarize).collect(),
        outcome: MeshIdentity::load(cluster_dir, cluster).map(|_| ()),
    }
}

/// What a certificate says; `None` if it is no X.509 certificate.
pub fn summarize(der: &CertificateDer<'_>) -> Option<CertSummary> {
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    let (mut dns_names, mut uris) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::URI(u) => uris.push(u.to_string()),
                _ => {}
            }
        }
    }
    let ca = match x.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Some(bc.value.path_len_constraint),
        _ => None,
    };
    let key = match x.public_key().parsed() {
        Ok(PublicKey::RSA(r)) => format!("RSA {}", r.key_size()),
        Ok(PublicKey::EC(p)) => match p.key_size() {
            256 => "ECDSA P-256".to_string(),
            384 => "ECDSA P-384".to_string(),
            n => format!("EC {n} bits"),
        },
        _ if x.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519".to_string(),
        _ => format!("algorithm {}", x.public_key().algorithm.algorithm.to_id_string()),
    };
    Some(CertSummary {
        subject: x.subject().to_string(),
        issuer: x.issuer().to_string(),
        dns_names,
        uris,
        ca,
        key,
        not_before: x.validity().not_before.to_datetime(),
        not_after: x.validity().not_after.to_datetime(),
    })
}

// === impl Inspection ===

impl Inspection {
    /// Whether the directory loads as this cluster's identity.
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cluster {} in {}", self.cluster, self.dir.display())?;
        let now = OffsetDateTime::now_utc();
        writeln!(f, "{NODE_CERT} (the chain this node presents):")?;
        write_certs(f, &self.presented, now)?;
        writeln!(f, "{ROOT_CERT} (the roots this node trusts):")?;
        write_certs(f, &self.roots, now)?;
        match &self.names {
            Some(c) => writeln!(f, "names cluster: {c}")?,
            None => writeln!(f, "names cluster: none")?,
        }
        match &self.outcome {
            Ok(()) => writeln!(f, "ok: chains to root"),
            Err(e) => writeln!(f, "error: {e}"),
        }
    }
}

fn write_certs(f: &mut fmt::Formatter<'_>, certs: &[CertSummary], now: OffsetDateTime) -> fmt::Result {
    if certs.is_empty() {
        return writeln!(f, "  (none readable)");
    }
    for (i, c) in certs.iter().enumerate() {
        let role = match c.ca {
            Some(Some(n)) => format!("  (CA, pathlen {n})"),
            Some(None) => "  (CA)".to_string(),
            None => String::new(),
        };
        writeln!(f, "  [{}] subject  {}{role}", i + 1, c.subject)?;
        writeln!(f, "      issuer   {}", c.issuer)?;
        let sans: Vec<String> = c.dns_names.iter().map(|d| format!("DNS {d}")).chain(c.uris.iter().map(|u| format!("URI {u}"))).collect();
        if !sans.is_empty() {
            writeln!(f, "      SAN      {}", sans.join(", "))?;
        }
        writeln!(f, "      key      {}", c.key)?;
        let left = (c.not_after - now).whole_days();
        let state = if now < c.not_before {
            "not valid yet".to_string()
        } else if left < 0 {
            "EXPIRED".to_string()
        } else {
            format!("{left} days left")
        };
        writeln!(f, "      valid    {} to {} ({state})", date(c.not_before), date(c.not_after))?;
    }
    Ok(())
}
