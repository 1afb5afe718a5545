//! HTTP/1.1 framing for upstream connections: the request head veer writes, and the response
//! head and body it reads, as pure functions over byte buffers. Parsing is httparse's (the
//! parser hyper itself uses); this module only decides framing as RFC 9112 §6 says.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::hop_by_hop::is_hop_by_hop;

/// Most response header fields accepted (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Largest response head accepted (offsets into it fit in a `u16`).
pub const MAX_HEAD_BYTES: usize = 64 * 1024 - 1;
/// Largest chunk-size line, and largest trailer section, accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why an upstream exchange failed after the connection was made.
#[derive(Debug)]
pub enum UpstreamError {
    Io(std::io::Error),
    /// The upstream closed the connection before the message was complete.
    Closed,
    /// The upstream sent something that is not HTTP/1.x as RFC 9112 defines it.
    Malformed(&'static str),
    /// The request body from the client failed while it was being sent.
    RequestBody(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Io(e) => write!(f, "upstream connection failed: {e}"),
            UpstreamError::Closed => f.write_str("upstream closed the connection mid-message"),
            UpstreamError::Malformed(what) => write!(f, "upstream sent a malformed response: {what}"),
            UpstreamError::RequestBody(e) => write!(f, "request body failed while being sent: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

impl From<std::io::Error> for UpstreamError {
    fn from(e: std::io::Error) -> Self {
        UpstreamError::Io(e)
    }
}

/// How a request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no length header.
    None,
    Length(u64),
    Chunked,
}

/// Appends a request head in origin form. `Content-Length` and `Transfer-Encoding` in
/// `headers` are not written: `framing`, taken from the body itself, decides them, so a
/// client's header cannot disagree with what veer sends.
pub fn encode_request_head(out: &mut Vec<u8>, method: &Method, path_and_query: &str, headers: &HeaderMap, framing: RequestFraming) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_number(out, n, 10);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        // A zero-size chunk would end the body.
        return;
    }
    push_number(out, data.len() as u64, 16);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `n` in base `radix` (10 or 16), lower-case digits.
fn push_number(out: &mut Vec<u8>, mut n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: a response to HEAD, a 204 or a 304.
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head. Its fields are end-to-end only: the hop-by-hop ones, and those
/// its Connection field names, are read for framing and dropped.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// The connection can carry another request once this response's body is read.
    pub keep_alive: bool,
}

/// Parses one response head from the front of `buf` and removes it from `buf`.
/// `Ok(None)`: the head is not complete yet (read more and call again). Informational (1xx)
/// responses are consumed and skipped: this request asked for no upgrade, so a 101 is an error.
pub fn parse_response_head(buf: &mut BytesMut, request_method: &Method) -> Result<Option<ResponseHead>, UpstreamError> {
    loop {
        let Some(head) = parse_one_head(buf, request_method)? else {
            return Ok(None);
        };
        match head.status.as_u16() {
            101 => return Err(UpstreamError::Malformed("101 Switching Protocols to a request that asked for no upgrade")),
            100..=199 => continue,
            _ => return Ok(Some(head)),
        }
    }
}

/// [`parse_response_head`] for a request that asked for an upgrade: a 101 is its answer too,
/// returned with its `Upgrade` field kept (the protocol switched to). The bytes after a 101's
/// head are the new protocol's and stay in `buf`.
pub fn parse_upgrade_response_head(buf: &mut BytesMut, request_method: &Method) -> Result<Option<ResponseHead>, UpstreamError> {
    loop {
        let Some(head) = parse_one_head(buf, request_method)? else {
            return Ok(None);
        };
        match head.status.as_u16() {
            100 | 102..=199 => continue,
            _ => return Ok(Some(head)),
        }
    }
}

/// Where a field's name and value lie in the head's bytes: name start and end, value start
/// and end. Small, because the array of them is zeroed for every response.
type FieldAt = [u16; 4];

fn parse_one_head(buf: &mut BytesMut, request_method: &Method) -> Result<Option<ResponseHead>, UpstreamError> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut at: [FieldAt; MAX_HEADERS] = [[0; 4]; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let (len, code, minor, count) =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
                return Err(UpstreamError::Malformed("response head larger than 64 KiB"))
            }
            Ok(httparse::Status::Complete(len)) => {
                for (slot, field) in at.iter_mut().zip(response.headers.iter()) {
                    // Within the head, so below MAX_HEAD_BYTES: the casts cannot truncate.
                    let name = (field.name.as_ptr() as usize - base) as u16;
                    let value = (field.value.as_ptr() as usize - base) as u16;
                    *slot = [name, name + field.name.len() as u16, value, value + field.value.len() as u16];
                }
                (len, response.code.unwrap_or(0), response.version.unwrap_or(1), response.headers.len())
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(UpstreamError::Malformed("response head larger than 64 KiB"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(UpstreamError::Malformed("more than 100 header fields")),
            Err(_) => return Err(UpstreamError::Malformed("response head does not parse as HTTP/1.x")),
        };
    let status = StatusCode::from_u16(code).map_err(|_| UpstreamError::Malformed("status code outside 100-999"))?;
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    // The head's bytes are shared, not copied, by the header values.
    let raw = buf.split_to(len).freeze();
    // Room for the two fields veer adds (x-veer-cluster, x-veer-attempts) without a regrow.
    let mut headers = HeaderMap::with_capacity(count + 2);
    let mut named_by_connection: Vec<HeaderName> = Vec::new();
    let mut keep_alive = version == Version::HTTP_11;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    for field in &at[..count] {
        let [name_start, name_end, value_start, value_end] = field.map(usize::from);
        let Some(name) = field_name(&raw[name_start..name_end])? else {
            continue;
        };
        // httparse has checked the value's bytes already.
        let value = HeaderValue::from_maybe_shared(raw.slice(value_start..value_end))
            .map_err(|_| UpstreamError::Malformed("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            let n = parse_content_length(value.as_bytes())?;
            if length.is_some_and(|m| m != n) {
                return Err(UpstreamError::Malformed("Content-Length fields disagree"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoded = true;
            // Only the last coding decides whether the body is chunked.
            chunked = last_token(value.as_bytes()).eq_ignore_ascii_case(b"chunked");
            continue;
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive |= version == Version::HTTP_10;
                } else if let Ok(named) = HeaderName::from_bytes(token) {
                    named_by_connection.push(named);
                }
            }
            continue;
        }
        // Hop-by-hop fields end here, so the response needs no second pass to drop them. A
        // 101 keeps the protocol it switched to: the proxy checks and passes it on.
        if is_hop_by_hop(&name) && !(name == header::TE && value.as_bytes() == b"trailers") && !(switching && name == header::UPGRADE) {
            continue;
        }
        headers.append(name, value);
    }
    for named in named_by_connection {
        if !(switching && named == header::UPGRADE) {
            headers.remove(named);
        }
    }
    let framing = if *request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        ResponseFraming::Empty
    } else if transfer_encoded {
        // Transfer-Encoding overrides Content-Length; a body not ending in chunked runs to the close.
        if chunked {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    } else {
        match length {
            Some(n) => ResponseFraming::Length(n),
            None => ResponseFraming::UntilClose,
        }
    };
    if framing == ResponseFraming::UntilClose || transfer_encoded && length.is_some() {
        keep_alive = false;
    }
    Ok(Some(ResponseHead { status, version, headers, framing, keep_alive }))
}

/// A field's name, or `None` for an `x-veer-*` field: those are the mesh's own protocol, and
/// nothing an upstream puts there reaches a client (the proxy adds its own after this).
/// The names nearly every response carries are matched directly: the general path
/// (lower-casing into a buffer, then a table of every standard name) costs several times as
/// much, for each field of each response.
fn field_name(raw: &[u8]) -> Result<Option<HeaderName>, UpstreamError> {
    let known = |name: &'static [u8], value: HeaderName| token_is(raw, name).then_some(value);
    let common = match raw.len() {
        4 => known(b"date", header::DATE).or_else(|| known(b"etag", header::ETAG)),
        6 => known(b"server", header::SERVER),
        10 => known(b"connection", header::CONNECTION),
        12 => known(b"content-type", header::CONTENT_TYPE),
        13 => known(b"last-modified", header::LAST_MODIFIED)
            .or_else(|| known(b"cache-control", header::CACHE_CONTROL))
            .or_else(|| known(b"accept-ranges", header::ACCEPT_RANGES)),
        14 => known(b"content-length", header::CONTENT_LENGTH),
        17 => known(b"transfer-encoding", header::TRANSFER_ENCODING),
        _ => None,
    };
    match common {
        Some(name) => Ok(Some(name)),
        None if raw.len() >= 7 && token_is(&raw[..7], b"x-veer-") => Ok(None),
        None => HeaderName::from_bytes(raw).map(Some).map_err(|_| UpstreamError::Malformed("invalid header name")),
    }
}

/// Whether the name `raw` (token bytes, as httparse has checked) is `lower` in any case.
/// `lower` holds only `a`-`z` and `-`, which have bit 0x20 set, so setting that bit in each byte
/// of `raw` turns its capitals into small letters and changes no byte that could otherwise
/// match: `-` with 0x20 cleared is CR, never in a name. Unlike `eq_ignore_ascii_case`, which
/// folds one byte at a time, this compiles to a few wide operations.
fn token_is(raw: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|b| b.is_ascii_lowercase() || *b == b'-'), "{lower:?}");
    raw.len() == lower.len() && raw.iter().zip(lower).fold(0u8, |diff, (r, l)| diff | ((r | 0x20) ^ l)) == 0
}

fn parse_content_length(value: &[u8]) -> Result<u64, UpstreamError> {
    // A list of equal values ("5, 5") is allowed by RFC 9110 §8.6; anything else is not.
    let mut found: Option<u64> = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(UpstreamError::Malformed("Content-Length is not a number"));
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|m| m != n) {
            return Err(UpstreamError::Malformed("Content-Length fields disagree"));
        }
        found = Some(n);
    }
    found.ok_or(UpstreamError::Malformed("Content-Length is empty"))
}

fn last_token(value: &[u8]) -> &[u8] {
    value.rsplit(|b| *b == b',').next().unwrap_or_default().trim_ascii()
}

/// Where a chunked body's decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (trailer bytes seen so far).
    Trailers(usize),
    Done,
}

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// `buf` holds no complete next piece: read more.
    NeedMore,
    /// The body has ended (trailers are read and dropped: HTTP/1.1 clients rarely ask for them).
    End,
}

/// Decodes the next piece of a chunked body from the front of `buf`.
pub fn decode_chunked(state: &mut ChunkState, buf: &mut BytesMut) -> Result<Decoded, UpstreamError> {
    loop {
        match *state {
            ChunkState::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    *state = if size == 0 { ChunkState::Trailers(0) } else { ChunkState::Data(size) };
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                    return Err(UpstreamError::Malformed("chunk-size line longer than 4 KiB"))
                }
                Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                Err(_) => return Err(UpstreamError::Malformed("invalid chunk-size line")),
            },
            ChunkState::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = left.min(buf.len() as u64);
                *state = if n == left { ChunkState::DataEnd } else { ChunkState::Data(left - n) };
                return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
            }
            ChunkState::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(UpstreamError::Malformed("chunk data longer than its size"));
                }
                buf.advance(2);
                *state = ChunkState::Size;
            }
            ChunkState::Trailers(seen) => {
                let Some(end) = buf.iter().position(|b| *b == b'\n') else {
                    if seen + buf.len() > MAX_TRAILER_BYTES {
                        return Err(UpstreamError::Malformed("trailer section larger than 16 KiB"));
                    }
                    return Ok(Decoded::NeedMore);
                };
                let blank = end == 0 || end == 1 && buf[0] == b'\r';
                buf.advance(end + 1);
                if blank {
                    *state = ChunkState::Done;
                    return Ok(Decoded::End);
                }
                *state = ChunkState::Trailers(seen + end + 1);
            }
            ChunkState::Done => return Ok(Decoded::End),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], method: Method) -> Result<Option<ResponseHead>, UpstreamError> {
        parse_response_head(&mut BytesMut::from(bytes), &method)
    }

    #[test]
    fn request_head_is_origin_form_with_framing_from_the_body() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("svc.local"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::POST, "/p?q=1", &h, RequestFraming::Length(12));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: svc.local\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 12\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::GET, "/", &HeaderMap::new(), RequestFraming::Chunked);
        assert_eq!(out, b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::GET, "/", &HeaderMap::new(), RequestFraming::None);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn chunks_are_hex_sized_and_empty_data_writes_nothing() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'x'; 26]);
        encode_chunk(&mut out, b"");
        assert_eq!(&out[..4], b"1a\r\n");
        assert_eq!(out.len(), 4 + 26 + 2);
        let mut n = Vec::new();
        push_number(&mut n, 0, 10);
        push_number(&mut n, 18_446_744_073_709_551_615, 10);
        push_number(&mut n, u64::MAX, 16);
        assert_eq!(n, b"018446744073709551615ffffffffffffffff");
    }

    #[test]
    fn a_head_arriving_in_pieces_parses_once_complete_and_leaves_the_body() {
        let whole = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc";
        for cut in 1..whole.len() - 3 {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert!(parse_response_head(&mut buf, &Method::GET).unwrap().is_none(), "cut at {cut}");
            buf.extend_from_slice(&whole[cut..]);
            let h = parse_response_head(&mut buf, &Method::GET).unwrap().unwrap();
            assert_eq!((h.status, h.framing, h.keep_alive), (StatusCode::OK, ResponseFraming::Length(3), true));
            assert_eq!(h.headers.get("server").unwrap(), "nginx");
            assert_eq!(&buf[..], b"abc");
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |raw: &[u8], m: Method| head(raw, m).unwrap().map(|h| (h.framing, h.keep_alive)).unwrap();
        assert_eq!(f(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Method::GET), (ResponseFraming::Chunked, true));
        // Transfer-Encoding wins over Content-Length, and such a connection is not reused.
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET),
            (ResponseFraming::Chunked, false)
        );
        assert_eq!(f(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Method::GET), (ResponseFraming::UntilClose, false));
        assert_eq!(f(b"HTTP/1.1 200 OK\r\n\r\n", Method::GET), (ResponseFraming::UntilClose, false));
        assert_eq!(f(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", Method::HEAD), (ResponseFraming::Empty, true));
        assert_eq!(f(b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET), (ResponseFraming::Empty, true));
        assert_eq!(f(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", Method::GET), (ResponseFraming::Empty, true));
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", Method::GET),
            (ResponseFraming::Length(2), false)
        );
        assert_eq!(f(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", Method::GET), (ResponseFraming::Length(2), false));
        assert_eq!(
            f(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\n", Method::GET),
            (ResponseFraming::Length(2), true)
        );
        assert_eq!(f(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", Method::GET), (ResponseFraming::Length(7), true));
    }

    #[test]
    fn common_field_names_match_the_general_path_in_any_case() {
        for name in [
            "date",
            "ETag",
            "Server",
            "CONNECTION",
            "Content-Type",
            "last-modified",
            "Cache-Control",
            "accept-ranges",
            "Content-Length",
            "transfer-encoding",
            "X-Custom",
            "data",
            "servers",
        ] {
            assert_eq!(field_name(name.as_bytes()).unwrap(), Some(HeaderName::from_bytes(name.as_bytes()).unwrap()), "{name}");
        }
        assert!(matches!(field_name(b"bad name"), Err(UpstreamError::Malformed("invalid header name"))));
        for internal in ["x-veer-cluster", "X-Veer-Eastwest-Error", "x-veer-"] {
            assert_eq!(field_name(internal.as_bytes()).unwrap(), None, "{internal}");
        }
        assert!(field_name(b"x-veer").unwrap().is_some());
        assert!(field_name(b"x-veering").unwrap().is_some());
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_dropped() {
        let h = head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Trace\r\nKeep-Alive: timeout=5\r\nX-Trace: 1\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nTE: gzip\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\nTE: trailers\r\n\r\n", Method::GET).unwrap().unwrap();
        let mut left: Vec<String> = h.headers.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        left.sort();
        assert_eq!(left, vec!["te: trailers", "x-kept: yes"]);
        assert_eq!((h.framing, h.keep_alive), (ResponseFraming::Chunked, true));
    }

    #[test]
    fn the_meshs_own_fields_from_an_upstream_are_dropped() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nX-Veer-Cluster: forged\r\nx-veer-eastwest-error: gateway\r\nX-Veering: kept\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        let left: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-veering", "content-length"]);
    }

    #[test]
    fn informational_responses_are_skipped_and_101_refused() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..]);
        let h = parse_response_head(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert!(h.headers.get("link").is_none() && buf.is_empty());
        assert!(matches!(head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET), Err(UpstreamError::Malformed(_))));
    }

    #[test]
    fn an_upgrade_request_takes_the_101_with_its_protocol_and_leaves_the_new_protocols_bytes() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\nKeep-Alive: 5\r\n\r\n\x81\x02hi";
        let mut buf = BytesMut::from(&raw[..]);
        let h = parse_upgrade_response_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(h.headers.get(header::UPGRADE).unwrap(), "websocket");
        assert!(h.headers.get(header::CONNECTION).is_none() && h.headers.get("keep-alive").is_none());
        assert_eq!(h.headers.get("sec-websocket-accept").unwrap(), "x");
        assert_eq!(&buf[..], b"\x81\x02hi");
        // Refused: an ordinary response, whose Upgrade field (hop-by-hop) is dropped as usual.
        let mut buf = BytesMut::from(&b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n"[..]);
        let h = parse_upgrade_response_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(h.status.as_u16(), 426);
        assert!(h.headers.get(header::UPGRADE).is_none());
    }

    #[test]
    fn malformed_heads_are_errors_that_say_what_is_wrong() {
        let err = |raw: &[u8]| match head(raw, Method::GET) {
            Err(UpstreamError::Malformed(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"), "Content-Length fields disagree");
        assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n"), "Content-Length is not a number");
        assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"), "Content-Length is not a number");
        assert_eq!(err(b"SSH-2.0-OpenSSH\r\n\r\n"), "response head does not parse as HTTP/1.x");
        let many: Vec<u8> = [&b"HTTP/1.1 200 OK\r\n"[..], &b"x: y\r\n".repeat(101), b"\r\n"].concat();
        assert_eq!(err(&many), "more than 100 header fields");
        let mut huge = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(err(&huge), "response head larger than 64 KiB");
        // Complete, but too large, in a single read.
        huge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(err(&huge), "response head larger than 64 KiB");
    }

    fn decode_all(mut wire: BytesMut) -> Result<Vec<u8>, UpstreamError> {
        let mut state = ChunkState::Size;
        let mut body = Vec::new();
        loop {
            match decode_chunked(&mut state, &mut wire)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => return Ok(body),
                Decoded::NeedMore => return Err(UpstreamError::Closed),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let body = decode_all(BytesMut::from(&b"5;name=v\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-checksum: 1\r\n\r\nNEXT"[..])).unwrap();
        assert_eq!(body, b"hello world");
        assert!(matches!(
            decode_all(BytesMut::from(&b"3\r\nabcd\r\n0\r\n\r\n"[..])),
            Err(UpstreamError::Malformed("chunk data longer than its size"))
        ));
        assert!(matches!(decode_all(BytesMut::from(&b"zz\r\n"[..])), Err(UpstreamError::Malformed("invalid chunk-size line"))));
    }

    #[test]
    fn a_chunked_body_split_at_every_byte_decodes_the_same() {
        let wire = b"4\r\nwiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            let mut state = ChunkState::Size;
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut body = Vec::new();
            let mut fed = false;
            loop {
                match decode_chunked(&mut state, &mut buf).unwrap() {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::End => break,
                    Decoded::NeedMore => {
                        assert!(!fed, "needs more after the whole body at cut {cut}");
                        buf.extend_from_slice(&wire[cut..]);
                        fed = true;
                    }
                }
            }
            assert_eq!(body, b"wikipedia in \r\n\r\nchunks.", "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    proptest::proptest! {
        /// Whatever the chunk sizes veer writes and wherever the reads split, the decoder
        /// gives back the body that was encoded.
        #[test]
        fn chunked_encoding_round_trips_across_any_read_split(
            pieces in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..12),
            splits in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let mut wire = Vec::new();
            for p in &pieces {
                encode_chunk(&mut wire, p);
            }
            wire.extend_from_slice(LAST_CHUNK);
            let mut state = ChunkState::Size;
            let mut buf = BytesMut::new();
            let (mut fed, mut body, mut next_split) = (0usize, Vec::new(), splits.iter().cycle());
            loop {
                match decode_chunked(&mut state, &mut buf).unwrap() {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::End => break,
                    Decoded::NeedMore => {
                        proptest::prop_assert!(fed < wire.len(), "needs more after the whole body");
                        let n = (*next_split.next().unwrap()).min(wire.len() - fed);
                        buf.extend_from_slice(&wire[fed..fed + n]);
                        fed += n;
                    }
                }
            }
            proptest::prop_assert_eq!(body, pieces.concat());
            proptest::prop_assert!(buf.is_empty() && fed == wire.len());
        }
    }
}
