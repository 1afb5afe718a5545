//! The identity convention: cluster C is `C.cluster.veer` (SAN DNS) and `spiffe://veer/cluster/C` (SAN URI).

use std::fmt;

use rustls_pki_types::{CertificateDer, DnsName, ServerName};

use crate::error::{ErrorKind, PkiError};

/// The parent domain of every node's DNS name.
pub const DNS_SUFFIX: &str = ".cluster.veer";
/// The prefix of every node's SPIFFE ID (trust domain `veer`).
pub const URI_PREFIX: &str = "spiffe://veer/cluster/";

/// The SAN DNS name of cluster `cluster`'s nodes.
pub fn dns_name(cluster: &str) -> String {
    format!("{cluster}{DNS_SUFFIX}")
}

/// The SAN URI (SPIFFE ID) of cluster `cluster`'s nodes.
pub fn spiffe_id(cluster: &str) -> String {
    format!("{URI_PREFIX}{cluster}")
}

/// Checks that `cluster` can name a cluster: one lowercase DNS label (RFC 1123), because it
/// becomes the first label of `C.cluster.veer` and a directory name.
pub fn validate_cluster_name(cluster: &str) -> Result<(), PkiError> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !cluster.starts_with('-')
        && !cluster.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PkiError::new(
            ErrorKind::InvalidClusterName,
            format!("{cluster:?} is not a valid cluster name: use 1 to 63 lowercase letters, digits and '-', not starting or ending with '-' (it becomes the DNS name {cluster}{DNS_SUFFIX})"),
        ))
    }
}

/// The name a client verifies when it connects to cluster `cluster`: `C.cluster.veer`.
///
/// Never panics: for a string that is no valid cluster name it returns
/// `invalid-cluster-name.invalid` (RFC 6761), which no veer certificate carries, so the handshake
/// fails on the name. Check names up front with [`try_server_name`] or [`validate_cluster_name`].
pub fn server_name(cluster: &str) -> ServerName<'static> {
    try_server_name(cluster)
        .unwrap_or_else(|_| ServerName::DnsName(DnsName::try_from("invalid-cluster-name.invalid").expect("a valid DNS name")))
}

/// [`server_name`], with an error for a string that is no valid cluster name.
pub fn try_server_name(cluster: &str) -> Result<ServerName<'static>, PkiError> {
    validate_cluster_name(cluster)?;
    DnsName::try_from(dns_name(cluster))
        .map(ServerName::DnsName)
        .map_err(|e| PkiError::new(ErrorKind::InvalidClusterName, format!("{cluster:?}: {e}")))
}

/// The cluster a verified peer certificate names (from its SAN URI `spiffe://veer/cluster/C`,
/// cross-checked with the SAN DNS name `C.cluster.veer`); `None` if it names none, or more than one.
pub fn peer_cluster(end_entity: &CertificateDer<'_>) -> Option<String> {
    named_cluster(end_entity).ok()
}

/// Whether a (verified) peer certificate names `cluster`.
pub fn names_cluster(end_entity: &CertificateDer<'_>, cluster: &str) -> bool {
    named_cluster(end_entity).is_ok_and(|c| c == cluster)
}

/// Why a certificate names no cluster, for load errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameProblem {
    NotX509(String),
    NoClusterUri { dns: Vec<String>, uris: Vec<String> },
    SeveralClusters(Vec<String>),
    BadClusterName(String),
    DnsMissing { cluster: String, dns: Vec<String> },
}

/// The one cluster a certificate names, or why it names none.
pub(crate) fn named_cluster(end_entity: &CertificateDer<'_>) -> Result<String, NameProblem> {
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| NameProblem::NotX509(format!("{e:?}")))?;
    let uris: Vec<&str> = cert.valid_uri_names().collect();
    let clusters: Vec<&str> = uris.iter().filter_map(|u| u.strip_prefix(URI_PREFIX)).collect();
    let cluster = match clusters.as_slice() {
        [c] => *c,
        [] => {
            return Err(NameProblem::NoClusterUri {
                dns: cert.valid_dns_names().map(str::to_string).collect(),
                uris: uris.iter().map(|u| u.to_string()).collect(),
            })
        }
        several => return Err(NameProblem::SeveralClusters(several.iter().map(|c| c.to_string()).collect())),
    };
    if validate_cluster_name(cluster).is_err() {
        return Err(NameProblem::BadClusterName(cluster.to_string()));
    }
    // webpki's own matcher, not a string compare: it is what a handshake uses.
    let Ok(name) = ServerName::try_from(dns_name(cluster)) else { return Err(NameProblem::BadClusterName(cluster.to_string())) };
    if cert.verify_is_valid_for_subject_name(&name).is_err() {
        return Err(NameProblem::DnsMissing { cluster: cluster.to_string(), dns: cert.valid_dns_names().map(str::to_string).collect() });
    }
    Ok(cluster.to_string())
}

// === impl NameProblem ===

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        match self {
            NameProblem::NotX509(e) => write!(f, "is not a certificate webpki can read ({e})"),
            NameProblem::NoClusterUri { dns, uris } => {
                write!(f, "names no cluster: it has no SAN URI {URI_PREFIX}NAME (SAN DNS: {}; SAN URI: {})", list(dns), list(uris))
            }
            NameProblem::SeveralClusters(c) => write!(f, "names several clusters ({}); a node certificate names exactly one", c.join(", ")),
            NameProblem::BadClusterName(c) => write!(f, "names cluster {c:?}, which is not a valid cluster name"),
            NameProblem::DnsMissing { cluster, dns } => {
                write!(
                    f,
                    "has SAN URI {} but not SAN DNS {} (SAN DNS: {}); both must name the same cluster",
                    spiffe_id(cluster),
                    dns_name(cluster),
                    list(dns)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(sans: &[rcgen::SanType]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans.to_vec();
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn dns(s: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(s.try_into().expect("ia5"))
    }

    fn uri(s: &str) -> rcgen::SanType {
        rcgen::SanType::URI(s.try_into().expect("ia5"))
    }

    #[test]
    fn cluster_names_are_dns_labels() {
        for ok in ["cluster1", "east", "a", "eu-west-1", &"x".repeat(63)] {
            assert!(validate_cluster_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Cluster1", "a.b", "a b", "a_b", &"x".repeat(64), "ü"] {
            let e = validate_cluster_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidClusterName, "{bad}");
        }
    }

    #[test]
    fn server_name_is_cluster_veer_and_never_panics() {
        assert_eq!(server_name("cluster2").to_str(), "cluster2.cluster.veer");
        assert_eq!(server_name("No Good").to_str(), "invalid-cluster-name.invalid");
        assert!(try_server_name("No Good").is_err());
    }

    #[test]
    fn peer_cluster_needs_uri_and_matching_dns() {
        let both = leaf(&[dns("cluster1.cluster.veer"), uri("spiffe://veer/cluster/cluster1")]);
        assert_eq!(peer_cluster(&both).as_deref(), Some("cluster1"));
        assert!(names_cluster(&both, "cluster1"));
        assert!(!names_cluster(&both, "cluster2"));

        let dns_only = leaf(&[dns("cluster1.cluster.veer")]);
        assert_eq!(peer_cluster(&dns_only), None);
        assert!(matches!(named_cluster(&dns_only), Err(NameProblem::NoClusterUri { .. })));

        let crossed = leaf(&[dns("cluster2.cluster.veer"), uri("spiffe://veer/cluster/cluster1")]);
        assert_eq!(peer_cluster(&crossed), None);
        assert!(named_cluster(&crossed).unwrap_err().to_string().contains("cluster1.cluster.veer"));

        let two = leaf(&[dns("a.cluster.veer"), dns("b.cluster.veer"), uri("spiffe://veer/cluster/a"), uri("spiffe://veer/cluster/b")]);
        assert_eq!(peer_cluster(&two), None);

        let istio = leaf(&[uri("spiffe://cluster.local/ns/default/sa/x")]);
        assert_eq!(peer_cluster(&istio), None);

        assert_eq!(peer_cluster(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
