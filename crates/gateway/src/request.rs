//! What a downstream request must be before it is routed: one authority (RFC 9110 §7.2, RFC
//! 9112 §3.2), a transfer coding veer can frame (RFC 9112 §6.1), a normalized path (RFC 3986
//! §6.2.2, as Envoy Gateway normalizes by default), and none of veer's own `x-veer-*` fields,
//! which only veer may set.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName};
use http::{StatusCode, Version};

/// Why a request is refused before routing: the status, a metric label, and the words the
/// client reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    pub text: &'static str,
}

impl Refusal {
    const fn new(status: StatusCode, reason: &'static str, text: &'static str) -> Refusal {
        Refusal { status, reason, text }
    }
}

const TWO_HOSTS: Refusal = Refusal::new(StatusCode::BAD_REQUEST, "two_hosts", "a request carries one Host field (RFC 9110 §7.2)");
const NO_HOST: Refusal = Refusal::new(StatusCode::BAD_REQUEST, "no_host", "an HTTP/1.1 request carries a Host field (RFC 9112 §3.2)");
const BAD_HOST: Refusal = Refusal::new(StatusCode::BAD_REQUEST, "bad_host", "the Host field is not a valid authority");
const HOST_MISMATCH: Refusal =
    Refusal::new(StatusCode::BAD_REQUEST, "host_mismatch", "the Host field and the request's authority name different hosts");
const TRANSFER_CODING: Refusal =
    Refusal::new(StatusCode::NOT_IMPLEMENTED, "transfer_coding", "the only transfer coding veer accepts is chunked (RFC 9112 §6.1)");
const ABOVE_ROOT: Refusal = Refusal::new(StatusCode::BAD_REQUEST, "path_above_root", "the path climbs above the root with \"..\"");
const BAD_ESCAPE: Refusal =
    Refusal::new(StatusCode::BAD_REQUEST, "bad_percent_encoding", "the path has a '%' not followed by two hex digits");

/// Checks the request's framing and authority fields. Returns the authority to route by:
/// the request target's (absolute form, or HTTP/2's `:authority`, which RFC 9112 §3.2.2 and RFC
/// 9113 §8.3.1 put first), else the Host field.
pub fn check_head<'a>(version: Version, uri_authority: Option<&'a str>, headers: &'a HeaderMap) -> Result<&'a str, Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(TWO_HOSTS);
    }
    if let Some(te) = headers.get(header::TRANSFER_ENCODING) {
        // hyper has already refused a request whose final coding is not chunked; a coding
        // before it (gzip, chunked) is one veer would have to undo or pass on as it is, and
        // passing it on re-framed would corrupt the body.
        if headers.get_all(header::TRANSFER_ENCODING).iter().count() > 1 || !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(TRANSFER_CODING);
        }
    }
    let host = match host {
        Some(h) => Some(h.to_str().map_err(|_| BAD_HOST)?),
        None => None,
    };
    match (uri_authority, host) {
        (Some(authority), Some(host)) if version == Version::HTTP_2 && !authority.eq_ignore_ascii_case(host) => Err(HOST_MISMATCH),
        (Some(authority), _) => Ok(authority),
        (None, Some(host)) => Ok(host),
        (None, None) if version == Version::HTTP_11 => Err(NO_HOST),
        (None, None) => Ok(""),
    }
}

/// Removes every `x-veer-*` field. veer's nodes speak to each other with them (the endpoint a
/// peer picked, whether it speaks HTTP/2, what failed behind a gateway), so one a client sets
/// could steer a hop or make veer blame a healthy endpoint. Returns whether any was there.
pub fn remove_internal(headers: &mut HeaderMap) -> bool {
    if !headers.keys().any(is_internal) {
        return false;
    }
    let internal: Vec<HeaderName> = headers.keys().filter(|n| is_internal(n)).cloned().collect();
    for name in internal {
        headers.remove(name);
    }
    true
}

fn is_internal(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-veer-")
}

/// The path as routes see it and as the upstream receives it: percent-encoded unreserved
/// characters decoded, other escapes in upper case, `.` and `..` segments resolved and runs
/// of `/` merged (Envoy Gateway's defaults: `normalize_path` and `merge_slashes`). Encoded
/// slashes (`%2F`) stay encoded: decoding them would change which segments there are.
/// A path already normal (almost every one) comes back borrowed, without a copy.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, Refusal> {
    if !path.starts_with('/') || !needs_normalizing(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path.as_bytes())?;
    let segments: Vec<&[u8]> = decoded[1..].split(|&b| b == b'/').collect();
    // "/a/", "/a/." and "/a/b/.." all end in a directory: the result keeps its slash.
    let directory = segments.last().is_some_and(|s| matches!(*s, b"" | b"." | b".."));
    let mut out: Vec<&[u8]> = Vec::with_capacity(segments.len());
    for seg in segments {
        match seg {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(ABOVE_ROOT);
                }
            }
            s => out.push(s),
        }
    }
    let mut normal = Vec::with_capacity(decoded.len());
    for seg in &out {
        normal.push(b'/');
        normal.extend_from_slice(seg);
    }
    if directory || normal.is_empty() {
        normal.push(b'/');
    }
    if normal == path.as_bytes() {
        return Ok(Cow::Borrowed(path));
    }
    // Only ASCII went in (escapes stay escaped, decoded bytes are unreserved ASCII).
    Ok(Cow::Owned(String::from_utf8(normal).map_err(|_| BAD_ESCAPE)?))
}

/// Whether a path may change under [`normalize_path`]: it has an escape, a `.` or `..`
/// segment, or an empty one.
fn needs_normalizing(path: &[u8]) -> bool {
    path.contains(&b'%') || path.windows(2).any(|w| w == b"//" || w == b"/.")
}

fn decode_unreserved(path: &[u8]) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] != b'%' {
            out.push(path[i]);
            i += 1;
            continue;
        }
        let hex = |b: u8| (b as char).to_digit(16);
        let (Some(hi), Some(lo)) = (path.get(i + 1).copied().and_then(hex), path.get(i + 2).copied().and_then(hex)) else {
            return Err(BAD_ESCAPE);
        };
        let byte = (hi * 16 + lo) as u8;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte);
        } else {
            out.push(b'%');
            out.push(path[i + 1].to_ascii_uppercase());
            out.push(path[i + 2].to_ascii_uppercase());
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d/.e", "*"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(q)) if q == p), "{p}");
        }
    }

    #[test]
    fn dot_segments_escapes_and_slashes_are_normalized() {
        let cases = [
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a//b///c", "/a/b/c"),
            ("//", "/"),
            ("/a/", "/a/"),
            ("/%61%62c", "/abc"),
            ("/%7e%2d%2E%5f", "/~-._"),
            ("/a%2fb", "/a%2Fb"),
            ("/%2e%2e/x/../y", "ABOVE"),
            ("/x/%2e%2e/y", "/y"),
            ("/a/b/%2E/", "/a/b/"),
            ("/..", "ABOVE"),
            ("/a/../..", "ABOVE"),
            ("/a/../", "/"),
        ];
        for (input, want) in cases {
            match normalize_path(input) {
                Ok(got) => assert_eq!(got, want, "{input}"),
                Err(r) => assert_eq!((want, r.reason), ("ABOVE", "path_above_root"), "{input}"),
            }
        }
    }

    #[test]
    fn a_broken_escape_is_refused() {
        for p in ["/a%", "/a%4", "/a%zz", "/%G0"] {
            assert_eq!(normalize_path(p).unwrap_err().reason, "bad_percent_encoding", "{p}");
        }
    }

    proptest! {
        /// Normalizing is idempotent, never leaves a dot segment or an empty one inside, and
        /// never lets a path climb above the root.
        #[test]
        fn normalizing_twice_changes_nothing(segs in proptest::collection::vec(prop_oneof!["[a-z]{1,3}", Just(".".to_string()), Just("..".to_string()), Just("".to_string()), Just("%2e".to_string()), Just("%41".to_string())], 0..8)) {
            let path = format!("/{}", segs.join("/"));
            if let Ok(once) = normalize_path(&path) {
                let twice = normalize_path(&once).unwrap();
                prop_assert_eq!(&*twice, &*once);
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.split('/').skip(1).any(|s| s == "." || s == ".."), "{}", once);
                prop_assert!(!once.contains("//"), "{}", once);
            }
        }
    }

    #[test]
    fn one_authority_per_request() {
        let v11 = Version::HTTP_11;
        assert_eq!(check_head(v11, None, &headers(&[("host", "a")])), Ok("a"));
        assert_eq!(check_head(v11, None, &headers(&[("host", "a"), ("host", "b")])).unwrap_err().reason, "two_hosts");
        assert_eq!(check_head(v11, None, &headers(&[])).unwrap_err().reason, "no_host");
        assert_eq!(check_head(Version::HTTP_10, None, &headers(&[])), Ok(""));
        // Absolute form: the target's authority wins over Host (RFC 9112 §3.2.2).
        assert_eq!(check_head(v11, Some("a"), &headers(&[("host", "b")])), Ok("a"));
        assert_eq!(check_head(Version::HTTP_2, Some("a"), &headers(&[])), Ok("a"));
        assert_eq!(check_head(Version::HTTP_2, Some("a"), &headers(&[("host", "A")])), Ok("a"));
        assert_eq!(check_head(Version::HTTP_2, Some("a"), &headers(&[("host", "b")])).unwrap_err().reason, "host_mismatch");
    }

    #[test]
    fn only_chunked_is_a_transfer_coding() {
        let v11 = Version::HTTP_11;
        assert!(check_head(v11, None, &headers(&[("host", "a"), ("transfer-encoding", "chunked")])).is_ok());
        assert!(check_head(v11, None, &headers(&[("host", "a"), ("transfer-encoding", "Chunked ")])).is_ok());
        for te in ["gzip, chunked", "chunked, chunked", "identity"] {
            let refused = check_head(v11, None, &headers(&[("host", "a"), ("transfer-encoding", te)])).unwrap_err();
            assert_eq!((refused.status, refused.reason), (StatusCode::NOT_IMPLEMENTED, "transfer_coding"), "{te}");
        }
        let two =
            check_head(v11, None, &headers(&[("host", "a"), ("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")])).unwrap_err();
        assert_eq!(two.reason, "transfer_coding");
    }

    #[test]
    fn internal_fields_are_removed_and_others_kept() {
        let mut h = headers(&[("x-veer-endpoint", "10.0.0.1:80"), ("X-Veer-Upstream-H2", "1"), ("x-veering", "keep"), ("host", "a")]);
        assert!(remove_internal(&mut h));
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("x-veering") && h.contains_key("host"));
        assert!(!remove_internal(&mut h));
    }
}
