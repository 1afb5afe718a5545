//! Core `v1 Secret`s, where HTTPS listeners' certificates come from, and the checked serving pair they become (checked by `veer-pki` when the set is built).

use base64::Engine;

/// The checked serving pair HTTPS listeners hold, and its check (the request path names them
/// through the model, not the PKI crate).
pub use veer_pki::{serving_cert, ServingCert};

use crate::decode::Obj;
use crate::diag::Pos;
use crate::meta::Meta;

/// The Secret type a listener's certificate must have.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The type of a Secret of arbitrary entries, the API server's default.
pub const OPAQUE_SECRET_TYPE: &str = "Opaque";

/// A core Secret as `kubectl get secret -o yaml` prints it. A `kubernetes.io/tls` Secret keeps
/// its pair; an `Opaque` one its entries (a DNSZone's TSIG key); others keep no data, and are
/// read so that a listener naming one gets a precise error.
#[derive(Clone, PartialEq)]
pub struct Secret {
    pub meta: Meta,
    /// `type` (`Opaque` when absent, as the API server defaults it).
    pub kind: String,
    pub kind_pos: Pos,
    /// `tls.crt`, as written (base64 under `data`, text under `stringData`), with where.
    pub cert: Option<Field>,
    /// `tls.key`, likewise.
    pub key: Option<Field>,
    /// An `Opaque` Secret's entries (`data` and `stringData`), by key.
    pub entries: Vec<(String, Field)>,
}

/// One data entry of a Secret, decoded only when a listener uses it: a Secret nothing refers
/// to cannot fail a set.
#[derive(Clone, PartialEq)]
pub struct Field {
    pub text: String,
    pub base64: bool,
    pub pos: Pos,
    /// `data.tls.crt` or `stringData.tls.crt`.
    pub path: String,
}

impl std::fmt::Debug for Secret {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret").field("meta", &self.meta).field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Field {
    /// The bytes the entry holds: base64-decoded for `data` (the API's encoding).
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        if !self.base64 {
            return Ok(self.text.as_bytes().to_vec());
        }
        // `kubectl` prints one line; a hand-folded value may carry line breaks.
        let compact: String = self.text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| format!("is not base64 ({e}); data values are base64 (use stringData for PEM text)"))
    }
}

pub(crate) fn read_secret(doc: &Obj<'_>, meta: Meta) -> Option<Secret> {
    let (kind, kind_pos) = doc.string("type").unwrap_or_else(|| ("Opaque".into(), doc.pos()));
    doc.skip("immutable");
    let (mut cert, mut key, mut entries) = (None, None, Vec::new());
    if kind == OPAQUE_SECRET_TYPE {
        for (section, base64) in [("data", true), ("stringData", false)] {
            for (k, _, text, pos) in doc.located_string_map(section) {
                let path = format!("{section}[{k:?}]");
                entries.push((k, Field { text, base64, pos, path }));
            }
        }
        return Some(Secret { meta, kind, kind_pos, cert, key, entries });
    }
    if kind != TLS_SECRET_TYPE {
        // Other Secrets are none of veer's business: their data is not even kept.
        doc.skip("data");
        doc.skip("stringData");
        return Some(Secret { meta, kind, kind_pos, cert, key, entries });
    }
    for (section, base64) in [("data", true), ("stringData", false)] {
        let Some(d) = doc.obj(section) else { continue };
        let field = |k: &'static str| d.string(k).map(|(text, pos)| Field { text, base64, pos, path: d.field_path(k) });
        if let Some(f) = field("tls.crt") {
            cert = Some(f);
        }
        if let Some(f) = field("tls.key") {
            key = Some(f);
        }
        // A CA bundle beside the pair (cert-manager writes one) is for clients, not served.
        d.skip("ca.crt");
        d.finish();
    }
    if cert.is_none() || key.is_none() {
        doc.ctx().error(doc.pos(), "data", "a kubernetes.io/tls Secret holds tls.crt and tls.key");
        return None;
    }
    Some(Secret { meta, kind, kind_pos, cert, key, entries })
}
