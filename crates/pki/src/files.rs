//! Reading and writing the PEM files of a mesh, with errors that say which command makes a file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{ErrorKind, PkiError};

/// The shared root's certificate (in the root directory, and copied into every cluster's).
pub const ROOT_CERT: &str = "root-cert.pem";
/// The shared root's key; it stays in the root directory.
pub const ROOT_KEY: &str = "root-key.pem";
/// A cluster's intermediate CA certificate.
pub const CA_CERT: &str = "ca-cert.pem";
/// A cluster's intermediate CA key.
pub const CA_KEY: &str = "ca-key.pem";
/// The intermediate followed by the root, as Istio's `cacerts` secret wants it.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// A node's certificate followed by its cluster's intermediate: the chain the node presents.
pub const NODE_CERT: &str = "node-cert.pem";
/// A node's private key (PKCS#8).
pub const NODE_KEY: &str = "node-key.pem";

/// How a file veer expects comes to be, for "missing" errors.
pub(crate) fn how_to_make(name: &str) -> &'static str {
    match name {
        ROOT_CERT => "`veer pki root --out DIR` creates it (or seed 003's openssl steps); `veer pki intermediate` copies it into each cluster's directory",
        ROOT_KEY => "`veer pki root --out DIR` creates it (or seed 003's `openssl genrsa -out root-key.pem 4096`)",
        CA_CERT | CA_KEY | CERT_CHAIN => "`veer pki intermediate --root DIR --cluster NAME` creates it (or seed 003's openssl steps)",
        NODE_CERT | NODE_KEY => "`veer pki node --dir DIR/NAME --cluster NAME` creates it",
        _ => "",
    }
}

/// Reads a whole file; a missing one is named with the command that makes it.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let hint = how_to_make(name);
            let msg = if hint.is_empty() { "not found".to_string() } else { format!("not found; {hint}") };
            PkiError::at(ErrorKind::Missing, path, msg)
        }
        _ => PkiError::at(ErrorKind::Io, path, format!("cannot read: {e}")),
    })
}

/// Every certificate of a PEM file, in order; at least one, each a parseable X.509 certificate.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read(path)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|e| PkiError::at(ErrorKind::BadCertificate, path, format!("is not valid PEM: {}", pem_problem(&e))))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(PkiError::at(
            ErrorKind::BadCertificate,
            path,
            format!(
                "no certificate found ({})",
                what_is_there(&bytes, "a PEM 'CERTIFICATE' block, as `veer pki` or `openssl x509` writes")
            ),
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(c) {
            return Err(PkiError::at(
                ErrorKind::BadCertificate,
                path,
                format!("certificate #{} is not a valid X.509 certificate ({e})", i + 1),
            ));
        }
    }
    Ok(certs)
}

/// The first private key of a PEM file, in any encoding rustls reads (PKCS#8, PKCS#1, SEC1).
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Ok(k),
        Err(pem::Error::NoItemsFound) => Err(PkiError::at(
            ErrorKind::BadKey,
            path,
            format!(
                "no private key found ({})",
                what_is_there(&bytes, "a PEM 'PRIVATE KEY' block, as `veer pki node` or `openssl genrsa` writes")
            ),
        )),
        Err(e) => Err(PkiError::at(ErrorKind::BadKey, path, format!("is not valid PEM: {}", pem_problem(&e)))),
    }
}

/// A CA key for rcgen to sign with. ring signs only with PKCS#8 keys, so an RSA key in PKCS#1
/// (`RSA PRIVATE KEY`, what `openssl genrsa` of OpenSSL 1.1 writes) is rewrapped here.
pub(crate) fn read_signing_key(path: &Path) -> Result<rcgen::KeyPair, PkiError> {
    let pkcs8 = match read_key(path)? {
        PrivateKeyDer::Pkcs8(k) => k,
        PrivateKeyDer::Pkcs1(k) => PrivatePkcs8KeyDer::from(rsa_pkcs1_to_pkcs8(k.secret_pkcs1_der())),
        PrivateKeyDer::Sec1(_) => {
            return Err(PkiError::at(
                ErrorKind::BadKey,
                path,
                "is an 'EC PRIVATE KEY' (SEC1); veer signs with PKCS#8 keys: convert it with `openssl pkcs8 -topk8 -nocrypt -in ca-key.pem -out ca-key.pk8.pem` and use that file",
            ))
        }
        _ => return Err(PkiError::at(ErrorKind::BadKey, path, "holds a private key in an encoding veer does not read (expected PKCS#8 'PRIVATE KEY')")),
    };
    rcgen::KeyPair::try_from(&pkcs8).map_err(|e| {
        PkiError::at(
            ErrorKind::BadKey,
            path,
            format!("cannot sign with this key ({e}); veer signs with ECDSA P-256 or P-384, Ed25519, or RSA keys of 2048 to 4096 bits"),
        )
    })
}

/// Fails if any of `paths` exists: veer never overwrites keys or certificates, and checks all
/// of a step's files first so that it writes all of them or none.
pub(crate) fn ensure_absent(paths: &[PathBuf]) -> Result<(), PkiError> {
    for p in paths {
        if p.exists() {
            return Err(exists(p));
        }
    }
    Ok(())
}

fn exists(path: &Path) -> PkiError {
    PkiError::at(
        ErrorKind::AlreadyExists,
        path,
        "already exists; veer never overwrites keys or certificates (move it away to make a new one)",
    )
}

pub(crate) fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|e| PkiError::at(ErrorKind::Io, dir, format!("cannot create the directory: {e}")))
}

/// Writes a new file; a key is readable by its owner only.
pub(crate) fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => exists(path),
        _ => PkiError::at(ErrorKind::Io, path, format!("cannot create: {e}")),
    })?;
    f.write_all(contents).and_then(|()| f.sync_all()).map_err(|e| PkiError::at(ErrorKind::Io, path, format!("cannot write: {e}")))
}

/// PEM text of DER certificates, one block each, with LF line ends on every platform (these
/// files are copied between machines).
pub(crate) fn certs_pem(certs: &[CertificateDer<'_>]) -> String {
    let blocks: Vec<::pem::Pem> = certs.iter().map(|c| ::pem::Pem::new("CERTIFICATE", c.as_ref())).collect();
    ::pem::encode_many_config(&blocks, ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF))
}

pub(crate) fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!("a block has no end line {:?}", String::from_utf8_lossy(end_marker)),
        pem::Error::IllegalSectionStart { line } => format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line)),
        pem::Error::Base64Decode(d) => format!("the base64 inside a block is damaged ({d})"),
        other => other.to_string(),
    }
}

/// Says what a file holds instead of what was wanted, and what was wanted.
pub(crate) fn what_is_there(bytes: &[u8], wanted: &str) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return format!("the key is encrypted; veer needs it unencrypted: `openssl pkey -in FILE -out FILE.plain`; expected {wanted}");
    }
    let labels: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("-----BEGIN ")).filter_map(|l| l.strip_suffix("-----")).collect();
    if !labels.is_empty() {
        return format!("it holds {}; expected {wanted}", labels.iter().map(|l| format!("'{l}'")).collect::<Vec<_>>().join(", "));
    }
    if bytes.first() == Some(&0x30) {
        return format!(
            "it looks like binary DER; convert it to PEM with `openssl x509 -inform der` or `openssl pkey -inform der`; expected {wanted}"
        );
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return format!("the file is empty; expected {wanted}");
    }
    format!("expected {wanted}")
}

/// Wraps a PKCS#1 RSAPrivateKey in a PKCS#8 PrivateKeyInfo (RFC 5208): version 0, the
/// rsaEncryption algorithm with NULL parameters, and the key as an OCTET STRING.
pub(crate) fn rsa_pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION: &[u8] = &[0x02, 0x01, 0x00];
    const RSA_ALGORITHM: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut body = Vec::with_capacity(pkcs1.len() + 32);
    body.extend_from_slice(VERSION);
    body.extend_from_slice(RSA_ALGORITHM);
    der_tlv(&mut body, 0x04, pkcs1);
    let mut out = Vec::with_capacity(body.len() + 4);
    der_tlv(&mut out, 0x30, &body);
    out
}

fn der_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_short_and_long_form() {
        let mut v = Vec::new();
        der_tlv(&mut v, 0x04, &[1; 5]);
        assert_eq!(&v[..2], &[0x04, 5]);
        let mut v = Vec::new();
        der_tlv(&mut v, 0x04, &[1; 300]);
        assert_eq!(&v[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut v = Vec::new();
        der_tlv(&mut v, 0x04, &[1; 200]);
        assert_eq!(&v[..3], &[0x04, 0x81, 200]);
    }

    #[test]
    fn pkcs8_wrapper_has_rfc5208_shape() {
        let inner = [0x30, 0x03, 0x02, 0x01, 0x00];
        let w = rsa_pkcs1_to_pkcs8(&inner);
        assert_eq!(w[0], 0x30);
        assert_eq!(usize::from(w[1]), w.len() - 2);
        assert_eq!(&w[2..5], &[0x02, 0x01, 0x00]);
        assert_eq!(&w[w.len() - inner.len()..], &inner);
    }

    #[test]
    fn missing_file_names_the_command_that_makes_it() {
        let e = read(Path::new("no-such-dir-veer-pki/node-key.pem")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Missing);
        assert!(e.to_string().contains("veer pki node"), "{e}");
    }

    #[test]
    fn explains_what_a_file_holds_instead() {
        assert!(what_is_there(b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", "x").contains("'PRIVATE KEY'"));
        assert!(what_is_there(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n", "x").contains("encrypted"));
        assert!(what_is_there(&[0x30, 0x82, 0x01], "x").contains("DER"));
        assert!(what_is_there(b"\n", "x").contains("empty"));
    }
}
