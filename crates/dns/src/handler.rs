//! Answers DNS questions from the zones in force: the handler every transport (UDP, TCP)
//! shares, its counters, and answers encoded ahead for the usual questions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use serde::Serialize;

use crate::fast::Compiled;
pub use crate::rrl::{AnswerClass, Rrl, RrlVerdict};
use crate::transfer::{self};
use crate::zone::{Outcome, Zones};
use hickory_proto::rr::TSigner;

/// Response codes counted each on its own in [`DnsStats::responses`], by their lowercase names;
/// any other is counted as "other", the last entry.
pub const RCODES: [&str; 8] = ["noerror", "formerr", "servfail", "nxdomain", "notimp", "refused", "badvers", "other"];

fn rcode_index(code: ResponseCode) -> usize {
    match code {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        ResponseCode::BADVERS => 6,
        _ => 7,
    }
}

/// Counters of the request path: plain atomics, which a node's metrics read on every scrape
/// (this crate knows nothing of metrics). Shared by the UDP loop and the TCP side.
#[derive(Debug, Default)]
pub struct DnsCounters {
    udp_queries: AtomicU64,
    tcp_queries: AtomicU64,
    malformed_dropped: AtomicU64,
    /// Rate-limited UDP answers by [`AnswerClass`]: dropped, slipped.
    rrl_dropped: [AtomicU64; AnswerClass::ALL.len()],
    rrl_slipped: [AtomicU64; AnswerClass::ALL.len()],
    truncated: AtomicU64,
    refused: AtomicU64,
    nxdomain: AtomicU64,
    responses: [AtomicU64; RCODES.len()],
    transfers: AtomicU64,
    transfers_refused: AtomicU64,
    pub(crate) notifies_acked: AtomicU64,
    pub(crate) notifies_failed: AtomicU64,
    pub(crate) tcp_refused: AtomicU64,
}

impl DnsCounters {
    /// The counters now.
    pub fn stats(&self) -> DnsStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DnsStats {
            udp_queries: l(&self.udp_queries),
            tcp_queries: l(&self.tcp_queries),
            malformed_dropped: l(&self.malformed_dropped),
            rrl_dropped: self.rrl_dropped.iter().map(l).sum(),
            rrl_slipped: self.rrl_slipped.iter().map(l).sum(),
            rrl_by_class: std::array::from_fn(|i| (l(&self.rrl_dropped[i]), l(&self.rrl_slipped[i]))),
            truncated: l(&self.truncated),
            refused: l(&self.refused),
            nxdomain: l(&self.nxdomain),
            responses: std::array::from_fn(|i| l(&self.responses[i])),
            transfers: l(&self.transfers),
            transfers_refused: l(&self.transfers_refused),
            notifies_acked: l(&self.notifies_acked),
            notifies_failed: l(&self.notifies_failed),
            tcp_refused: l(&self.tcp_refused),
        }
    }
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsStats {
    /// Well-formed queries received over UDP (answered, slipped or dropped by the rate limit).
    pub udp_queries: u64,
    /// Queries received over TCP.
    pub tcp_queries: u64,
    /// UDP datagrams dropped unanswered: undecodable, a response, or not exactly one question.
    pub malformed_dropped: u64,
    /// UDP answers the rate limit dropped.
    pub rrl_dropped: u64,
    /// UDP answers the rate limit sent empty with TC set ("slip").
    pub rrl_slipped: u64,
    /// (dropped, slipped) by answer class, in the order of [`AnswerClass::ALL`].
    pub rrl_by_class: [(u64, u64); AnswerClass::ALL.len()],
    /// UDP answers cut to fit and sent with TC set.
    pub truncated: u64,
    /// Questions outside veer's zones or class IN (also in `responses` as "refused").
    pub refused: u64,
    pub nxdomain: u64,
    /// Answers by response code, in the order of [`RCODES`].
    pub responses: [u64; RCODES.len()],
    /// Zone transfers served (AXFR, IXFR), each signed.
    pub transfers: u64,
    /// Transfer requests refused: over UDP, unsigned, or with a bad key, signature or time.
    pub transfers_refused: u64,
    /// NOTIFY messages a secondary acknowledged.
    pub notifies_acked: u64,
    /// NOTIFY messages that got no answer after every retry, or an error.
    pub notifies_failed: u64,
    /// TCP connections closed as soon as accepted: over the cap in all, or from one address.
    pub tcp_refused: u64,
}

impl DnsStats {
    /// (response code name, answers) for every code of [`RCODES`].
    pub fn responses_by_rcode(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RCODES.iter().copied().zip(self.responses.iter().copied())
    }

    /// (answer class name, dropped, slipped) for every class of [`AnswerClass::ALL`].
    pub fn rate_limited_by_class(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        AnswerClass::ALL.iter().zip(self.rrl_by_class.iter()).map(|(c, (d, s))| (c.as_str(), *d, *s))
    }
}

/// An answer before encoding.
#[derive(Debug)]
pub struct Reply {
    pub metadata: Metadata,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    pub edns: Option<Edns>,
}

/// A [`Reply`] as hickory's encoder takes it.
type Response<'a> = MessageResponse<'a, 'a, Records<'a>, Records<'a>, std::iter::Empty<&'a Record>, Records<'a>>;
type Records<'a> = std::slice::Iter<'a, Record>;

impl Reply {
    /// This reply to the questions `queries`, ready to encode (UDP and TCP alike).
    fn response<'a>(&'a self, queries: &'a Queries) -> Response<'a> {
        MessageResponseBuilder::new(queries, self.edns.as_ref()).build(
            self.metadata,
            self.answers.iter(),
            self.authority.iter(),
            std::iter::empty(),
            self.additional.iter(),
        )
    }
}

/// The request path: answers from the current zones.
pub struct Handler {
    zones: ArcSwap<Zones>,
    pub(crate) max_udp_payload: u16,
    counters: Arc<DnsCounters>,
    /// The key transfers must be signed with; none: transfers are refused.
    tsig: Option<TSigner>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("zones", &self.zones)
            .field("max_udp_payload", &self.max_udp_payload)
            .field("transfer_key", &self.tsig.as_ref().map(|k| k.signer_name().to_string()))
            .finish_non_exhaustive()
    }
}

// === impl Handler ===

impl Handler {
    pub fn new(zones: Zones, max_udp_payload: u16) -> Self {
        Handler::uncompiled(compile(zones, max_udp_payload), max_udp_payload)
    }

    /// A handler that answers every query the ordinary way (unless `zones` were compiled).
    pub(crate) fn uncompiled(zones: Zones, max_udp_payload: u16) -> Self {
        Handler { zones: ArcSwap::from_pointee(zones), max_udp_payload: max_udp_payload.max(512), counters: Arc::default(), tsig: None }
    }

    pub fn zones(&self) -> Arc<Zones> {
        self.zones.load_full()
    }

    /// Transfers need requests signed with `key`.
    pub fn with_transfer_key(mut self, key: Option<TSigner>) -> Self {
        self.tsig = key;
        self
    }

    /// Serves `zones` from now on (their answers encoded ahead here unless they already are).
    pub fn set_zones(&self, zones: Zones) {
        let zones = if zones.compiled().is_empty() { compile(zones, self.max_udp_payload) } else { zones };
        self.zones.store(Arc::new(zones));
    }

    /// The answer to a decoded request (counted by its response code).
    pub fn reply(&self, request: &Request) -> Reply {
        let reply = self.answer(request);
        self.count(&reply);
        reply
    }

    /// Counts an answer that is sent, by its response code.
    fn count(&self, reply: &Reply) {
        self.count_code(reply.metadata.response_code);
    }

    fn count_code(&self, code: ResponseCode) {
        self.counters.responses[rcode_index(code)].fetch_add(1, Ordering::Relaxed);
    }

    fn answer(&self, request: &Request) -> Reply {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // Never recursive: veer only answers for its own zones.
        metadata.recursion_available = false;
        metadata.authoritative = false;
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(self.max_udp_payload);
            e.set_version(0);
            e
        });
        let mut reply = Reply { metadata, answers: Vec::new(), authority: Vec::new(), additional: Vec::new(), edns };
        let fail = |mut reply: Reply, code: ResponseCode| {
            reply.metadata.response_code = code;
            reply
        };
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return fail(reply, ResponseCode::BADVERS);
        }
        if request.metadata.op_code != OpCode::Query {
            return fail(reply, ResponseCode::NotImp);
        }
        let queries = request.queries.queries();
        let [query] = queries else {
            return fail(reply, ResponseCode::FormErr);
        };
        if transfer::is_transfer(query.query_type()) {
            // Transfers go over TCP only (the TCP side answers them before this).
            self.counters.transfers_refused.fetch_add(1, Ordering::Relaxed);
            return fail(reply, ResponseCode::Refused);
        }
        if query.query_class() != DNSClass::IN {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return fail(reply, ResponseCode::Refused);
        }
        match self.zones.load().lookup(query.name(), query.query_type()) {
            Outcome::Refused => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                fail(reply, ResponseCode::Refused)
            }
            Outcome::Authoritative { rcode, answers, authority, additional } => {
                if rcode == ResponseCode::NXDomain {
                    self.counters.nxdomain.fetch_add(1, Ordering::Relaxed);
                }
                reply.metadata.authoritative = true;
                reply.metadata.response_code = rcode;
                reply.answers = answers;
                reply.authority = authority;
                reply.additional = additional;
                reply
            }
        }
    }

    /// Encodes a reply for UDP: at most 512 bytes, or the client's EDNS size capped at ours;
    /// what does not fit is cut and TC set (hickory's encoder does both).
    pub fn encode_udp(&self, request: &Request, reply: &Reply) -> Option<Vec<u8>> {
        let limit = match &request.edns {
            Some(e) => e.max_payload().clamp(512, self.max_udp_payload),
            None => 512,
        };
        let response = reply.response(&request.queries);
        let mut buf = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_max_size(limit);
        match response.destructive_emit(&mut enc) {
            Ok(info) => {
                if info.truncation {
                    self.counters.truncated.fetch_add(1, Ordering::Relaxed);
                }
                Some(buf)
            }
            Err(e) => {
                tracing::debug!(target: "veer::dns", "cannot encode an answer: {e}");
                None
            }
        }
    }

    /// An empty answer with TC set: RRL's "slip", which sends a real client to TCP.
    fn encode_slip(&self, request: &Request) -> Option<Vec<u8>> {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.truncation = true;
        metadata.recursion_available = false;
        let response = MessageResponseBuilder::new(&request.queries, None).build_no_records(metadata);
        let mut buf = Vec::with_capacity(64);
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_max_size(512);
        response.destructive_emit(&mut enc).ok().map(|_| buf)
    }

    pub fn stats(&self) -> DnsStats {
        self.counters.stats()
    }

    /// The live counters, shared: a metrics collector reads them on every scrape.
    pub fn counters(&self) -> Arc<DnsCounters> {
        self.counters.clone()
    }
}

/// `zones` with the answers to the usual questions encoded ahead ([`crate::fast`]) by the
/// ordinary path, so that both give the same bytes.
pub(crate) fn compile(zones: Zones, max_udp_payload: u16) -> Zones {
    let scratch = Handler::uncompiled(zones, max_udp_payload);
    let src = SocketAddr::from(([127, 0, 0, 1], 53));
    let now = crate::clock::now();
    let compiled = {
        let zones = scratch.zones.load();
        Compiled::build(zones.owners(), |query| answer_datagram(&scratch, None, query, src, now))
    };
    let mut zones = Arc::unwrap_or_clone(scratch.zones.into_inner());
    zones.set_compiled(compiled);
    zones
}

/// Decodes and answers one UDP datagram: `None` when nothing is to be sent (malformed, a
/// response rather than a query, or rate limited). Used by the server and the fuzz target.
pub fn answer_datagram(handler: &Handler, rrl: Option<&mut Rrl>, packet: &[u8], src: SocketAddr, now: Instant) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    answer_datagram_into(handler, rrl, packet, src, now, &mut out).then_some(out)
}

/// [`answer_datagram`] into `out` (appended): whether there is an answer to send.
pub fn answer_datagram_into(
    handler: &Handler,
    rrl: Option<&mut Rrl>,
    packet: &[u8],
    src: SocketAddr,
    now: Instant,
    out: &mut Vec<u8>,
) -> bool {
    let zones = handler.zones.load();
    if let Some(hit) = zones.compiled().get(packet) {
        handler.counters.udp_queries.fetch_add(1, Ordering::Relaxed);
        let a = hit.answer;
        let verdict = rrl.map_or(RrlVerdict::Send, |rrl| rrl.check(src.ip(), a.class, Some(&a.qname), a.qtype, now));
        match verdict {
            RrlVerdict::Send => {
                handler.count_code(a.rcode);
                hit.write(packet, out);
                return true;
            }
            RrlVerdict::Slip => {
                handler.counters.rrl_slipped[a.class.index()].fetch_add(1, Ordering::Relaxed);
                let slip = Request::from_bytes(packet.to_vec(), src, Protocol::Udp).ok().and_then(|r| handler.encode_slip(&r));
                return slip.map(|s| out.extend_from_slice(&s)).is_some();
            }
            RrlVerdict::Drop => {
                handler.counters.rrl_dropped[a.class.index()].fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
    }
    drop(zones);
    let Ok(request) = Request::from_bytes(packet.to_vec(), src, Protocol::Udp) else {
        handler.counters.malformed_dropped.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    // Answering a response would make us a reflector; a query must ask exactly one question.
    if request.metadata.message_type == MessageType::Response || request.queries.len() != 1 {
        handler.counters.malformed_dropped.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    handler.counters.udp_queries.fetch_add(1, Ordering::Relaxed);
    let reply = handler.answer(&request);
    let verdict = match rrl {
        Some(rrl) => {
            let (class, zone) = classify(&reply);
            let qtype = request.queries.queries().first().map_or(hickory_proto::rr::RecordType::NULL, |q| q.query_type());
            let qname = request.queries.queries().first().map(|q| q.name());
            let name = match class {
                AnswerClass::Answer | AnswerClass::NoData => qname,
                _ => zone.as_ref(),
            };
            let verdict = rrl.check(src.ip(), class, name, qtype, now);
            (verdict, class)
        }
        None => (RrlVerdict::Send, AnswerClass::Answer),
    };
    let bytes = match verdict {
        (RrlVerdict::Send, _) => {
            handler.count(&reply);
            handler.encode_udp(&request, &reply)
        }
        (RrlVerdict::Slip, class) => {
            handler.counters.rrl_slipped[class.index()].fetch_add(1, Ordering::Relaxed);
            handler.encode_slip(&request)
        }
        (RrlVerdict::Drop, class) => {
            handler.counters.rrl_dropped[class.index()].fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    bytes.map(|b| out.extend_from_slice(&b)).is_some()
}

/// The rate limiter's view of an answer: its class, and for NXDOMAIN the zone (the owner of the
/// SOA in the authority section), so random names under one zone share an account.
pub fn classify(reply: &Reply) -> (AnswerClass, Option<LowerName>) {
    match reply.metadata.response_code {
        ResponseCode::NoError if reply.answers.is_empty() => (AnswerClass::NoData, None),
        ResponseCode::NoError => (AnswerClass::Answer, None),
        ResponseCode::NXDomain => (AnswerClass::NxDomain, reply.authority.first().map(|r| LowerName::new(&r.name))),
        _ => (AnswerClass::Error, None),
    }
}

/// A message encoded as hickory's server encodes a TCP answer, appended to `out`: up to 64 KiB,
/// or SERVFAIL with the query's ID when it does not fit.
fn emit_tcp<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    id: u16,
    out: &mut Vec<u8>,
) -> bool {
    // Compression pointers count from the message's start: encoded on its own.
    let mut buf = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_max_size(u16::MAX);
    if let Err(e) = response.destructive_emit(&mut enc) {
        tracing::warn!(target: "veer::dns", "cannot encode a TCP answer: {e}");
        let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
        metadata.response_code = ResponseCode::ServFail;
        return emit_header_only(metadata, out);
    }
    out.extend_from_slice(&buf);
    true
}

/// A message of a header alone (no question, no records), appended to `out`.
fn emit_header_only(metadata: Metadata, out: &mut Vec<u8>) -> bool {
    let mut buf = Vec::with_capacity(12);
    if (Header { metadata, counts: HeaderCounts::default() }).emit(&mut BinEncoder::new(&mut buf)).is_err() {
        return false;
    }
    out.extend_from_slice(&buf);
    true
}

// === impl Handler (TCP) ===

impl Handler {
    /// Answers one message received over TCP, appended to `out`: whether there is an answer.
    /// As hickory's server did: FORMERR when only the header decodes, nothing for a response
    /// or less than a header; transfers signed.
    pub(crate) fn answer_tcp(&self, message: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
        let zones = self.zones.load();
        if let Some(hit) = zones.compiled().get(message) {
            self.counters.tcp_queries.fetch_add(1, Ordering::Relaxed);
            self.count_code(hit.answer.rcode);
            hit.write(message, out);
            return true;
        }
        drop(zones);
        let request = match Request::from_bytes(message.to_vec(), src, Protocol::Tcp) {
            Ok(r) => r,
            Err(_) => {
                let Ok(header) = Header::read(&mut BinDecoder::new(message)) else { return false };
                // The header alone, no question (hickory's server's `error_msg` with none).
                let mut metadata = Metadata::response_from_request(&header.metadata);
                metadata.response_code = ResponseCode::FormErr;
                return emit_header_only(metadata, out);
            }
        };
        // Answering a response would make us a reflector.
        if request.metadata.message_type == MessageType::Response {
            return false;
        }
        self.counters.tcp_queries.fetch_add(1, Ordering::Relaxed);
        if request.metadata.op_code == OpCode::Query
            && request.queries.queries().first().is_some_and(|q| transfer::is_transfer(q.query_type()))
        {
            return self.transfer(&request, out);
        }
        let reply = self.reply(&request);
        let response = reply.response(&request.queries);
        emit_tcp(response, request.metadata.id, out)
    }

    /// A whole zone in one signed message (up to 64 KiB: about a thousand records); a zone
    /// past that fails to encode and is answered SERVFAIL, logged.
    fn transfer(&self, request: &Request, out: &mut Vec<u8>) -> bool {
        let zones = self.zones();
        let tr = transfer::answer(&zones, self.tsig.as_ref(), request, crate::clock::unix_time());
        let served = tr.metadata.response_code == ResponseCode::NoError;
        let counter = if served { &self.counters.transfers } else { &self.counters.transfers_refused };
        counter.fetch_add(1, Ordering::Relaxed);
        if !served {
            tracing::info!(target: "veer::dns", src = %request.src(), "zone transfer refused: {}", tr.metadata.response_code);
        }
        self.count_code(tr.metadata.response_code);
        let build = || {
            MessageResponseBuilder::new(&request.queries, None).build(
                tr.metadata,
                tr.answers.iter(),
                std::iter::empty(),
                std::iter::empty(),
                std::iter::empty(),
            )
        };
        let mut response = build();
        if let Some(ctx) = tr.signer {
            let mut tbs = Vec::with_capacity(4096);
            let mut enc = BinEncoder::new(&mut tbs);
            let signed =
                build().destructive_emit(&mut enc).map_err(|e| e.to_string()).and_then(|_| ctx.sign(&tbs).map_err(|e| e.to_string()));
            match signed {
                Ok(sig) => response.set_signature(sig),
                Err(e) => tracing::error!(target: "veer::dns", "cannot sign a zone transfer: {e}"),
            }
        }
        emit_tcp(response, request.metadata.id, out)
    }
}
