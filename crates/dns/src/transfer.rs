//! Zone transfers to secondaries: AXFR, and IXFR answered with the whole zone (RFC 5936, RFC
//! 1995 §4), over TCP only and only with a valid TSIG signature (RFC 8945); NOTIFY (RFC 1996)
//! to the configured secondaries when the zones change.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use hickory_proto::op::{Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigResponseContext, TSigner};
use hickory_server::server::Request;
use tokio::net::UdpSocket;

use crate::zone::Zones;

/// Seconds of clock difference a signature may have (RFC 8945 recommends 300).
pub const FUDGE: u16 = 300;

/// A TSIG key shared with the secondaries. Its secret never appears in `Debug`.
#[derive(Clone)]
pub struct TsigKey {
    pub name: Name,
    pub algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey").field("name", &self.name).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// Why a key file cannot be used.
#[derive(Debug)]
pub enum KeyError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `at` is `file:line`.
    Format {
        at: String,
        why: String,
    },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Read { path, source } => write!(f, "cannot read TSIG key file {}: {source}", path.display()),
            KeyError::Format { at, why } => write!(f, "{at}: {why}"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { source, .. } => Some(source),
            KeyError::Format { .. } => None,
        }
    }
}

/// The algorithms accepted: the HMAC-SHA2 family (MD5 and SHA-1 are deprecated by RFC 8945).
const ALGORITHMS: [(&str, TsigAlgorithm); 4] = [
    ("hmac-sha224", TsigAlgorithm::HmacSha224),
    ("hmac-sha256", TsigAlgorithm::HmacSha256),
    ("hmac-sha384", TsigAlgorithm::HmacSha384),
    ("hmac-sha512", TsigAlgorithm::HmacSha512),
];

// === impl TsigKey ===

impl TsigKey {
    pub fn new(name: Name, algorithm: TsigAlgorithm, secret: Vec<u8>) -> Self {
        TsigKey { name, algorithm, secret }
    }

    /// Reads a key file: one line `algorithm:name:base64-secret`, the form `dig -y` and
    /// `kdig -y` take (blank lines and `#` comments aside).
    pub fn load(path: &Path) -> Result<TsigKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_path_buf(), source })?;
        TsigKey::parse(&text, &path.display().to_string())
    }

    /// Parses a key file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<TsigKey, KeyError> {
        let mut found = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{origin}:{}", i + 1);
            let fail = |why: String| KeyError::Format { at: at.clone(), why };
            if found.is_some() {
                return Err(fail("one key per file".into()));
            }
            let mut parts = line.splitn(3, ':');
            let (Some(alg), Some(name), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(fail("expected algorithm:name:base64-secret (as dig -y)".into()));
            };
            let algorithm = ALGORITHMS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(alg))
                .map(|(_, a)| a.clone())
                .ok_or_else(|| fail(format!("algorithm {alg:?} is not one of {}", ALGORITHMS.map(|(n, _)| n).join(", "))))?;
            let mut key_name = Name::from_ascii(name).map_err(|e| fail(format!("key name {name:?}: {e}")))?;
            key_name.set_fqdn(true);
            let secret = base64::engine::general_purpose::STANDARD
                .decode(secret.trim())
                .map_err(|e| fail(format!("the secret is not base64: {e}")))?;
            if secret.len() < 16 {
                return Err(fail(format!("the secret has {} bytes; at least 16 are needed", secret.len())));
            }
            found = Some(TsigKey { name: key_name, algorithm, secret });
        }
        found.ok_or_else(|| KeyError::Format { at: format!("{origin}:1"), why: "no key in the file".into() })
    }

    /// The signer hickory checks and signs with.
    pub fn signer(&self) -> Option<TSigner> {
        TSigner::new(self.secret.clone(), self.algorithm.clone(), self.name.clone(), FUDGE).ok()
    }
}

/// Transfers and NOTIFY (`veer run --dns-tsig-key-file`, `--dns-notify`).
#[derive(Clone, Debug, Default)]
pub struct TransferConfig {
    /// Transfers are refused without a key, and need a request signed with it.
    pub key: Option<TsigKey>,
    /// Secondaries told of every change of the zones (NOTIFY over UDP, signed with the key).
    pub notify: Vec<SocketAddr>,
}

/// Whether a question asks for a transfer.
pub fn is_transfer(qtype: RecordType) -> bool {
    matches!(qtype, RecordType::AXFR | RecordType::IXFR)
}

/// The answer to a transfer request: header, records (SOA … SOA), and the context that signs
/// the response (none for an unsigned refusal).
pub struct TransferReply {
    pub metadata: Metadata,
    pub answers: Vec<Record>,
    pub signer: Option<TSigResponseContext>,
}

/// Answers an AXFR or IXFR request that came over TCP, at Unix time `now` (the MAC covers the
/// request's bytes as received).
pub fn answer(zones: &Zones, key: Option<&TSigner>, request: &Request, now: u64) -> TransferReply {
    let metadata = &request.metadata;
    let mut meta = Metadata::response_from_request(metadata);
    meta.recursion_available = false;
    let reply = |mut meta: Metadata, code: ResponseCode, signer: Option<TSigResponseContext>| {
        meta.response_code = code;
        TransferReply { metadata: meta, answers: Vec::new(), signer }
    };
    // No key configured, or an unsigned request: transfers are not offered at all.
    let Some(q) = request.queries.queries().first() else { return reply(meta, ResponseCode::FormErr, None) };
    let (qname, qtype) = (q.name(), q.query_type());
    let (Some(key), Some(tsig)) = (key, request.signature.as_deref()) else { return reply(meta, ResponseCode::Refused, None) };
    if tsig.name != *key.signer_name() || tsig.data.algorithm != *key.algorithm() {
        return reply(meta, ResponseCode::NotAuth, Some(TSigResponseContext::unknown_key(metadata.id, now, tsig.name.clone())));
    }
    let Ok((_, _, valid)) = key.verify_message_byte(request.as_slice(), None, true) else {
        return reply(meta, ResponseCode::NotAuth, Some(TSigResponseContext::bad_signature(metadata.id, now, key.clone())));
    };
    let mac = tsig.data.mac.clone();
    if !valid.contains(&now) {
        let ctx = TSigResponseContext::new(metadata.id, now, key.clone(), mac, Some(hickory_proto::rr::rdata::tsig::TsigError::BadTime));
        return reply(meta, ResponseCode::NotAuth, Some(ctx));
    }
    let signed = TSigResponseContext::new(metadata.id, now, key.clone(), mac, None);
    let Some(records) = zones.transfer(qname) else { return reply(meta, ResponseCode::NotAuth, Some(signed)) };
    meta.authoritative = true;
    // IXFR from a secondary already at our serial: just the SOA (RFC 1995 §2). Otherwise the
    // whole zone, as AXFR: veer keeps no history to send differences from.
    let theirs = request.authorities.iter().find_map(|r| if let RData::SOA(soa) = &r.data { Some(soa.serial) } else { None });
    let ours = records.first().and_then(|r| if let RData::SOA(soa) = &r.data { Some(soa.serial) } else { None });
    let answers = match (qtype, theirs, ours) {
        (RecordType::IXFR, Some(t), Some(o)) if (t.wrapping_sub(o) as i32) >= 0 => records.into_iter().take(1).collect(),
        _ => records,
    };
    TransferReply { metadata: meta, answers, signer: Some(signed) }
}

/// The NOTIFY message for `zone` at `serial` (RFC 1996 §3.7: the SOA in the answer section).
pub fn notify_message(id: u16, zone: &Name, soa: Option<&Record>) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    let mut q = Query::query(zone.clone(), RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if let Some(soa) = soa {
        m.add_answer(soa.clone());
    }
    m
}

/// Why a NOTIFY was not acknowledged.
#[derive(Debug)]
pub enum NotifyError {
    Io(std::io::Error),
    Encode(String),
    /// No answer after every try.
    NoAnswer {
        tries: u32,
    },
    /// The secondary answered with this code.
    Rejected(ResponseCode),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::Io(e) => write!(f, "{e}"),
            NotifyError::Encode(e) => write!(f, "cannot encode: {e}"),
            NotifyError::NoAnswer { tries } => write!(f, "no answer after {tries} tries"),
            NotifyError::Rejected(code) => write!(f, "answered {code}"),
        }
    }
}

impl std::error::Error for NotifyError {}

/// The NOTIFY for `zone`, encoded, signed with `key` at Unix time `now` when given.
pub fn signed_notify(id: u16, zone: &Name, soa: Option<&Record>, key: Option<&TSigner>, now: u64) -> Result<Vec<u8>, NotifyError> {
    let mut m = notify_message(id, zone, soa);
    if let Some(k) = key {
        m.finalize(k, now).map_err(|e| NotifyError::Encode(e.to_string()))?;
    }
    m.to_vec().map_err(|e| NotifyError::Encode(e.to_string()))
}

/// Sends a NOTIFY (`bytes`, of message `id`) to `secondary` from `from` (the server's address,
/// which secondaries check against their primary's), retrying until answered (RFC 1996 §3.6),
/// at most `tries` times.
pub async fn notify(from: IpAddr, secondary: SocketAddr, bytes: &[u8], id: u16, tries: u32) -> Result<(), NotifyError> {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).await.map_err(NotifyError::Io)?;
    let mut buf = vec![0u8; 4096];
    for attempt in 0..tries {
        sock.send_to(bytes, secondary).await.map_err(NotifyError::Io)?;
        // Back off as RFC 1996 suggests: 1 s, 2 s, 4 s…
        let wait = Duration::from_secs(1u64 << attempt.min(5));
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, src)) = r else { break };
                    if src != secondary { continue; }
                    let Ok(reply) = Message::from_vec(&buf[..n]) else { continue };
                    if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response { continue; }
                    return match reply.metadata.response_code {
                        ResponseCode::NoError => Ok(()),
                        code => Err(NotifyError::Rejected(code)),
                    };
                }
                _ = &mut deadline => break,
            }
        }
    }
    Err(NotifyError::NoAnswer { tries })
}

#[cfg(test)]
mod tests;
