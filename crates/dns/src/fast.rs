//! Answers encoded once per zone change, as Knot pre-compiles its zone: for every name veer serves
//! and the question types clients ask most, the whole UDP answer is encoded by the ordinary path
//! (decode, lookup, encode) when the zones are swapped in, and a query asking exactly that
//! question is answered by copying those bytes with its ID and flags patched in. Anything else —
//! another type, a name in another case, a name not served (NXDOMAIN), EDNS options, a
//! compression pointer, trailing bytes — misses and takes the ordinary path, so the bytes sent
//! are the same either way.

use std::collections::HashMap;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::rrl::AnswerClass;

/// The header's flag bits an answer copies from the query (hickory's `response_from_request`):
/// RD in the first flag byte, CD in the second.
const RD: u8 = 0x01;
const CD: u8 = 0x10;
/// The OPT record veer adds to an answer when the query had one (version 0, no options, its
/// largest UDP payload), in the additional section's last place.
const OPT_LEN: usize = 11;

/// Question types answered from bytes: at every name, the address and text types and CNAME,
/// HTTPS (browsers ask it beside A and AAAA); at a zone's apex, SOA and NS too.
const TYPES: [RecordType; 5] = [RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::CNAME, RecordType::HTTPS];
const APEX_TYPES: [RecordType; 2] = [RecordType::SOA, RecordType::NS];

/// One pre-encoded answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The whole answer to the query with ID 0 and no flags, without EDNS.
    bytes: Box<[u8]>,
    /// The same with the OPT record veer answers an EDNS query with (none if it would not fit).
    edns: Option<Box<[u8]>>,
    pub rcode: ResponseCode,
    /// What the rate limiter keys on: the answer's class, the question's name and type.
    pub class: AnswerClass,
    pub qname: LowerName,
    pub qtype: RecordType,
}

/// The pre-encoded answers of one set of zones, keyed by the question's bytes (lower-case name,
/// type, class IN) as a query carries them.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    answers: HashMap<Box<[u8]>, Answer>,
}

/// A query the pre-encoded answers can serve: where its question is, and whether it has EDNS.
struct Shape {
    question_end: usize,
    edns: bool,
}

/// The shape of a plain query: a header with QR clear, opcode QUERY, one question and no
/// records but at most an OPT without options; a name of uncompressed labels; nothing after.
/// `None` for anything else (the ordinary path decides what that gets).
fn shape(packet: &[u8]) -> Option<Shape> {
    let header = packet.get(..12)?;
    // QR (a response) or another opcode.
    if header[2] & 0xf8 != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = usize::from(*packet.get(i)?);
        if len == 0 {
            break;
        }
        // A compression pointer (or a reserved label type): the ordinary path.
        if len > 63 {
            return None;
        }
        i += 1 + len;
    }
    let question_end = i + 1 + 4;
    let rest = packet.get(question_end..)?;
    match (count(10), rest) {
        (0, []) => Some(Shape { question_end, edns: false }),
        // OPT: root name, type 41, payload, extended RCODE, version 0, flags, no data.
        (1, [0, 0, 41, _, _, _, 0, _, _, 0, 0]) => Some(Shape { question_end, edns: true }),
        _ => None,
    }
}

// === impl Compiled ===

impl Compiled {
    /// Encodes, for every name of `owners` (with whether it is a zone's apex), the answer to
    /// each usual question type with `encode`, the ordinary path: it gets a whole query (ID 0,
    /// no flags) and gives the answer it would send, or `None`. Answers larger than 512 bytes
    /// (which would be cut for a client without EDNS) and negative answers are left to it.
    pub fn build<'a>(owners: impl Iterator<Item = (&'a LowerName, bool)>, mut encode: impl FnMut(&[u8]) -> Option<Vec<u8>>) -> Compiled {
        let mut answers = HashMap::new();
        let (mut query, mut name) = (Vec::with_capacity(300), Vec::with_capacity(256));
        for (owner, apex) in owners {
            name.clear();
            // Lower case, uncompressed: a fresh encoder has nothing to point at.
            if owner.emit(&mut BinEncoder::new(&mut name)).is_err() {
                continue;
            }
            let types = TYPES.iter().chain(if apex { &APEX_TYPES[..] } else { &[] });
            for &qtype in types {
                query.clear();
                query.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
                query.extend_from_slice(&name);
                query.extend_from_slice(&u16::from(qtype).to_be_bytes());
                query.extend_from_slice(&1u16.to_be_bytes());
                let Some(plain) = encode(&query) else { continue };
                // Flags: QR, AA, RCODE 0 (NOERROR) in the answer with no TC: a positive
                // answer or NODATA that fits.
                if plain.len() > 512 || plain.get(2..4) != Some(&[0x84, 0][..]) {
                    continue;
                }
                let key: Box<[u8]> = query[12..].into();
                query.extend_from_slice(&[0, 0, 41, 0x02, 0, 0, 0, 0, 0, 0, 0]);
                let edns = encode(&query).filter(|e| e.len() <= 512 && e.len() == plain.len() + OPT_LEN).map(Vec::into_boxed_slice);
                let answered = u16::from_be_bytes([plain[6], plain[7]]) > 0;
                answers.insert(
                    key,
                    Answer {
                        bytes: plain.into_boxed_slice(),
                        edns,
                        rcode: ResponseCode::NoError,
                        class: if answered { AnswerClass::Answer } else { AnswerClass::NoData },
                        qname: owner.clone(),
                        qtype,
                    },
                );
            }
        }
        Compiled { answers }
    }

    /// How many questions are answered from bytes.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The pre-encoded answer to `packet`, if it is a plain query for one of them.
    pub fn get(&self, packet: &[u8]) -> Option<Hit<'_>> {
        let shape = shape(packet)?;
        let answer = self.answers.get(&packet[12..shape.question_end])?;
        let bytes = if shape.edns { answer.edns.as_deref()? } else { &answer.bytes };
        Some(Hit { answer, bytes })
    }
}

/// A query answered from bytes.
pub struct Hit<'a> {
    pub answer: &'a Answer,
    bytes: &'a [u8],
}

impl Hit<'_> {
    /// Appends the answer to `query` to `out`: the pre-encoded bytes with the query's ID and
    /// its RD and CD flags.
    pub fn write(&self, query: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(self.bytes);
        let head = &mut out[start..start + 4];
        head[0] = query[0];
        head[1] = query[1];
        head[2] |= query[2] & RD;
        head[3] |= query[3] & CD;
    }
}
