//! Certificates a Gateway listener serves to clients: a chain and its key checked together once, at load, into what rustls presents.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_parser::extensions::GeneralName;

use crate::date::date;
use crate::error::{ErrorKind, PkiError};
use crate::files::{pem_problem, what_is_there};

/// A certificate chain and its private key, checked: the key belongs to the first
/// certificate, every certificate of the chain is within its validity period, and the key is
/// one rustls signs with. Built once per load; every handshake shares it.
#[derive(Clone)]
pub struct ServingCert {
    /// What rustls presents: the chain and the signing key.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's DNS names (subjectAltName dNSName entries), lower case, wildcards as `*.rest`.
    pub names: Vec<String>,
    /// When the leaf expires, as `veer pki inspect` writes dates.
    pub not_after: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").field("names", &self.names).field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

impl PartialEq for ServingCert {
    /// The same chain: a key that signs for it is the same key.
    fn eq(&self, other: &Self) -> bool {
        self.certified.cert == other.certified.cert
    }
}

/// Which half of a pair an error is about, so a caller can point at the field that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Certificate,
    Key,
}

/// Reads and checks a serving pair from PEM text: `cert_pem` holds the chain (leaf first),
/// `key_pem` its private key (PKCS#8, PKCS#1 or SEC1). The two may be the same text (one file
/// holding both, as HAProxy's). `now` is the time validity is judged at. An error says which
/// half is at fault.
pub fn serving_cert(cert_pem: &[u8], key_pem: &[u8], now: UnixTime) -> Result<ServingCert, (Part, PkiError)> {
    let cert_err = |kind, msg: String| (Part::Certificate, PkiError::new(kind, msg));
    let key_err = |kind, msg: String| (Part::Key, PkiError::new(kind, msg));
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for item in CertificateDer::pem_slice_iter(cert_pem) {
        chain.push(item.map_err(|e| cert_err(ErrorKind::BadCertificate, format!("is not valid PEM: {}", pem_problem(&e))))?);
    }
    if chain.is_empty() {
        return Err(cert_err(
            ErrorKind::BadCertificate,
            format!("no certificate found ({})", what_is_there(cert_pem, "a PEM 'CERTIFICATE' block")),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => key_err(
            ErrorKind::BadKey,
            format!(
                "no private key found ({})",
                what_is_there(key_pem, "a PEM 'PRIVATE KEY', 'EC PRIVATE KEY' or 'RSA PRIVATE KEY' block")
            ),
        ),
        e => key_err(ErrorKind::BadKey, format!("is not valid PEM: {}", pem_problem(&e))),
    })?;
    let mut names = Vec::new();
    let mut not_after = String::new();
    for (i, c) in chain.iter().enumerate() {
        let (_, x) = x509_parser::parse_x509_certificate(c)
            .map_err(|e| cert_err(ErrorKind::BadCertificate, format!("certificate #{} is not a valid X.509 certificate ({e})", i + 1)))?;
        let v = x.validity();
        let at = now.as_secs();
        let (from, until) = (v.not_before.timestamp(), v.not_after.timestamp());
        let which = if i == 0 {
            format!("the certificate \"{}\"", x.subject())
        } else {
            format!("chain certificate #{} \"{}\"", i + 1, x.subject())
        };
        if i64::try_from(at).is_ok_and(|at| at > until) {
            return Err(cert_err(ErrorKind::Expired, format!("{which} expired on {}; renew it", date(v.not_after.to_datetime()))));
        }
        if i64::try_from(at).is_ok_and(|at| at < from) {
            return Err(cert_err(
                ErrorKind::Expired,
                format!("{which} is not valid before {} (is this machine's clock right?)", date(v.not_before.to_datetime())),
            ));
        }
        if i == 0 {
            not_after = date(v.not_after.to_datetime());
            if let Ok(Some(san)) = x.subject_alternative_name() {
                names = san
                    .value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect();
            }
        }
    }
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => key_err(
            ErrorKind::KeyMismatch,
            "does not belong to the certificate (its public key differs from the certificate's); use the key that was made with that certificate".into(),
        ),
        other => key_err(ErrorKind::BadKey, format!("cannot be used for TLS ({other}); expected an ECDSA P-256/P-384, Ed25519 or RSA key")),
    })?;
    Ok(ServingCert { certified: Arc::new(certified), names, not_after })
}

/// Whether certificate name `pattern` (a DNS name, or `*.rest` covering one label) covers `host`.
pub fn name_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(rest) => host.split_once('.').is_some_and(|(label, parent)| !label.is_empty() && parent.eq_ignore_ascii_case(rest)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str], not_after: time::OffsetDateTime) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.not_before = not_after - time::Duration::days(30);
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn a_good_pair_gives_its_names() {
        let (c, k) = pair(&["a.example", "*.b.example"], time::OffsetDateTime::now_utc() + time::Duration::days(10));
        let s = serving_cert(c.as_bytes(), k.as_bytes(), now()).unwrap();
        assert_eq!(s.names, ["a.example", "*.b.example"]);
        // One text holding both halves (HAProxy's crt file) reads too.
        let both = format!("{c}{k}");
        assert!(serving_cert(both.as_bytes(), both.as_bytes(), now()).is_ok());
    }

    #[test]
    fn an_expired_certificate_is_refused_with_its_date() {
        let (c, k) = pair(&["a.example"], time::OffsetDateTime::now_utc() - time::Duration::days(1));
        let (part, e) = serving_cert(c.as_bytes(), k.as_bytes(), now()).unwrap_err();
        assert_eq!((part, e.kind()), (Part::Certificate, ErrorKind::Expired));
        assert!(e.message().contains("expired on"), "{e}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let later = time::OffsetDateTime::now_utc() + time::Duration::days(10);
        let (c, _) = pair(&["a.example"], later);
        let (_, other) = pair(&["a.example"], later);
        let (part, e) = serving_cert(c.as_bytes(), other.as_bytes(), now()).unwrap_err();
        assert_eq!((part, e.kind()), (Part::Key, ErrorKind::KeyMismatch));
    }

    #[test]
    fn garbage_is_named_as_such() {
        let (part, e) = serving_cert(b"hello", b"hello", now()).unwrap_err();
        assert_eq!((part, e.kind()), (Part::Certificate, ErrorKind::BadCertificate));
        let (c, _) = pair(&["a.example"], time::OffsetDateTime::now_utc() + time::Duration::days(10));
        let (part, e) = serving_cert(c.as_bytes(), c.as_bytes(), now()).unwrap_err();
        assert_eq!((part, e.kind()), (Part::Key, ErrorKind::BadKey));
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("*.example.com", "a.example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(name_covers("A.example.com", "a.EXAMPLE.com"));
    }
}
