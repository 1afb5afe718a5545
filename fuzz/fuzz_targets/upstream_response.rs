//! Feeds arbitrary bytes to veer's upstream HTTP/1.1 response reader as a backend would send
//! them, cut where the fuzzer says: a head and its body must parse or be refused, never panic,
//! and a chunked body must decode the same whether it arrives whole or in two reads. The same
//! bytes as the answer to a WebSocket handshake: a 101 leaves what follows its head alone.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use veer_gateway::upstream::codec::{
    decode_chunked, parse_response_head, parse_upgrade_response_head, ChunkState, Decoded, ResponseFraming,
};

fn chunked(wire: &[u8], cut: usize) -> Option<Vec<u8>> {
    let mut state = ChunkState::Size;
    let mut buf = BytesMut::from(&wire[..cut]);
    let mut rest = &wire[cut..];
    let mut body = Vec::new();
    loop {
        match decode_chunked(&mut state, &mut buf).ok()? {
            Decoded::Data(d) => body.extend_from_slice(&d),
            Decoded::End => return Some(body),
            Decoded::NeedMore if rest.is_empty() => return None,
            Decoded::NeedMore => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, wire)) = data.split_first() else { return };
    let cut = usize::from(cut).min(wire.len());
    let mut buf = BytesMut::from(&wire[..cut]);
    let head = match parse_response_head(&mut buf, &http::Method::GET) {
        Ok(Some(h)) => Some(h),
        Ok(None) => {
            buf.extend_from_slice(&wire[cut..]);
            parse_response_head(&mut buf, &http::Method::GET).ok().flatten()
        }
        Err(_) => None,
    };
    let mut upgrade = BytesMut::from(wire);
    if let Ok(Some(h)) = parse_upgrade_response_head(&mut upgrade, &http::Method::GET) {
        if h.status == http::StatusCode::SWITCHING_PROTOCOLS {
            assert!(wire.ends_with(&upgrade), "a 101 took bytes of the new protocol");
        }
    }
    if let Some(h) = head {
        if h.framing == ResponseFraming::Chunked {
            let body = buf.to_vec();
            let whole = chunked(&body, body.len());
            for split in [0, body.len() / 2, body.len().saturating_sub(1)] {
                assert_eq!(chunked(&body, split), whole, "decoding depends on where the reads split");
            }
        }
    }
});
