//! The one error type of veer-pki: which file, what is wrong with it, and what would be valid.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, for callers that act on the class of a failure (the message is for people).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A cluster name that cannot be a DNS label (it goes into `C.cluster.veer`).
    InvalidClusterName,
    /// A file that should be there is not.
    Missing,
    /// A file veer would write is already there (veer never overwrites keys or certificates).
    AlreadyExists,
    /// Reading or writing failed for another reason (permissions, disk).
    Io,
    /// No certificate, bad PEM, or DER that is not an X.509 certificate.
    BadCertificate,
    /// No private key, or one veer cannot use (encrypted, unsupported algorithm or encoding).
    BadKey,
    /// The private key does not belong to the certificate next to it.
    KeyMismatch,
    /// A certificate is outside its validity period (expired, or not valid yet).
    Expired,
    /// The certificate chain does not verify against the root (other root, expired, not a CA…).
    Untrusted,
    /// The node certificate names another cluster, or none.
    WrongIdentity,
    /// Making a certificate failed.
    Generate,
    /// rustls refused the configuration.
    Tls,
}

/// An error of veer-pki, shown as `PATH: what is wrong (what would be valid)`.
#[derive(Debug)]
pub struct PkiError {
    kind: ErrorKind,
    path: Option<PathBuf>,
    message: String,
}

// === impl PkiError ===

impl PkiError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PkiError { kind, path: None, message: message.into() }
    }

    pub(crate) fn at(kind: ErrorKind, path: &Path, message: impl Into<String>) -> Self {
        PkiError { kind, path: Some(path.to_path_buf()), message: message.into() }
    }

    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What is wrong, without the path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PkiError {}
