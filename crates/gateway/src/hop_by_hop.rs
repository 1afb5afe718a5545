//! Hop-by-hop header fields (RFC 9110 §7.6.1): what a proxy must not pass on, and how to tell
//! them cheaply on the request path.

use http::header::{self, HeaderMap, HeaderName};

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those the Connection header names.
/// Runs on every request, so the common cases cost one pass over the names: none at all, or
/// only `Connection: keep-alive` (what most backends send), which names no other header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut only_connection = true;
    let mut any = false;
    for name in headers.keys().filter(|n| is_hop_by_hop(n)) {
        any = true;
        only_connection &= *name == header::CONNECTION;
    }
    if !any {
        return;
    }
    if only_connection && headers.get_all(header::CONNECTION).iter().all(|v| !names_a_header(v.as_bytes())) {
        headers.remove(header::CONNECTION);
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|t| names_a_header(t.as_bytes()))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        // The request was routed by its Host: a Connection option cannot take it away from
        // the upstream (RFC 9110 §7.6.1 lets a proxy keep what it needs).
        .filter(|n| *n != header::HOST)
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::PROXY_AUTHORIZATION, header::PROXY_AUTHENTICATE] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    // `TE: trailers` is end-to-end for gRPC.
    if headers.get(header::TE).is_some_and(|v| v.as_bytes() != b"trailers") {
        headers.remove(header::TE);
    }
}

/// Whether a Connection option names a header to remove: anything but `keep-alive` and `close`.
pub fn names_a_header(option: &[u8]) -> bool {
    !option.is_empty() && !option.eq_ignore_ascii_case(b"keep-alive") && !option.eq_ignore_ascii_case(b"close")
}

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::PROXY_AUTHORIZATION
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::TE
        // Not standard names: compare the length first, which rules out almost every header.
        || matches!(name.as_str().len(), 10 | 16) && (name.as_str() == "keep-alive" || name.as_str() == "proxy-connection")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("host", "a"),
            ("connection", "keep-alive, X-Trace, close"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["host", "x-kept"]);
        // Connection cannot take Host away: the request was routed by it.
        let mut h = map(&[("host", "a"), ("connection", "host, x-trace"), ("x-trace", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["host"]);
        // `TE: trailers` is end-to-end for gRPC and stays; a message without hop-by-hop headers is untouched.
        let mut h = map(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        // The common case: only `Connection: keep-alive`, which goes alone.
        let mut h = map(&[("connection", "Keep-Alive"), ("date", "x"), ("x-kept", "yes")]);
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("connection") && h.len() == 2);
        // Only a Connection header, but one naming another header (in its second value).
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-trace"));
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x-kept"]);
    }
}
