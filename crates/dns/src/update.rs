//! Writes a regional zone into a real DNS server: a TSIG-signed AXFR reads the zone back, and
//! each change is one TSIG-signed RFC 2136 UPDATE fenced by the zone's epoch record.
//!
//! Fencing: the zone holds one TXT record, `_veer-epoch.<zone>`, in ExternalDNS's registry
//! format with the writer and epoch (`external-dns/veer-epoch`, `external-dns/veer-writer`).
//! Every UPDATE's prerequisite (RFC 2136 §2.4.2, "RRset exists, value dependent") is that
//! record exactly as the read-back found it, or the name unused (§2.4.5) on a first write, and
//! the same UPDATE replaces the records and that record together. A writer whose epoch is lower
//! than the zone's refuses to write; one that read the zone before a newer writer's UPDATE sends
//! a prerequisite the server no longer finds, and the server itself refuses it (NXRRSET).
//!
//! Ownership follows ExternalDNS's TXT registry (`ownership::txt_name`, `txt_value`): a record
//! is veer's to replace or delete when its registry TXT names the zone's owner ID, so a zone
//! moves from ExternalDNS to veer and back; records of other owners, and records without a
//! registry TXT, are never touched. Deletions only name records the read-back found, and a plan
//! with nothing to write deletes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::{DnsError, DnsHandle, DnsMultiplexer, NetError};
use hickory_proto::op::{DnsRequest, Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType, TSigner};
use tokio::sync::watch;
use veer_model::dnszone::{self, ZoneTarget};
use veer_model::set::ManifestSet;

use crate::ownership::{parse_txt_value, txt_name, txt_value, Publication};
use crate::plan::{Endpoint, RecordKind, ZoneId};
use crate::takeover::{LiveLeases, ZoneKey};

/// The first label of the zone's epoch record.
pub const EPOCH_LABEL: &str = "_veer-epoch";

/// How long one exchange with the server may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Records veer reads back at most: a larger zone is refused rather than held in memory.
const MAX_RECORDS: usize = 100_000;

/// Where a zone lives and how veer writes it: a [`ZoneTarget`] from the manifests, taken apart
/// into DNS names and a TSIG signer once.
#[derive(Clone)]
pub struct ZoneServer {
    pub server: SocketAddr,
    pub origin: Name,
    /// ExternalDNS owner ID of the records veer writes.
    pub owner: String,
    /// ExternalDNS `--txt-prefix` of the registry records.
    pub txt_prefix: String,
    signer: TSigner,
}

impl std::fmt::Debug for ZoneServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneServer")
            .field("server", &self.server)
            .field("origin", &self.origin)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// The epoch record's content: who wrote the zone last, at which epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub epoch: u64,
    pub writer: String,
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} (writer {})", self.epoch, self.writer)
    }
}

/// What a writer wants the zone to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub writer: String,
    pub epoch: u64,
    /// The plan's endpoints of this zone.
    pub endpoints: Vec<Endpoint>,
}

/// A zone as read back by AXFR (the SOA once).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ZoneContents {
    pub records: Vec<Record>,
}

/// One UPDATE to send, and what was left out.
#[derive(Clone, Debug)]
pub struct Change {
    pub message: Message,
    /// The epoch record the prerequisite requires (none: the name must be unused).
    pub expects: Option<Fence>,
    /// Desired records not written because a record veer does not own stands in the way.
    pub skipped: Vec<String>,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Whether an UPDATE was sent (none when the zone already held the desired records).
    pub sent: bool,
    pub skipped: Vec<String>,
}

/// Why a zone was not written.
#[derive(Debug)]
pub enum UpdateError {
    /// The zone's epoch record is newer than ours, or another writer's at our epoch: found in
    /// the read-back (`rcode` none) or by the server refusing the UPDATE's prerequisite.
    Fenced { rcode: Option<ResponseCode>, zone: Option<Fence>, ours: u64 },
    /// The epoch record holds something veer did not write (several records, or not ours).
    ForeignFence(String),
    /// The plan has nothing for the zone while the zone holds records veer owns: deleting them
    /// all on an empty plan is what ExternalDNS users lost zones to, so veer does not.
    EmptyPlan { owned: usize },
    /// The server answered with an error code (NOTAUTH for a bad key, REFUSED, SERVFAIL…).
    Rcode(ResponseCode),
    /// The transfer did not give a zone (no SOA first and last), or gave too many records.
    BadTransfer(String),
    /// Connecting, sending or a response's TSIG check failed.
    Exchange(NetError),
    /// A name of the plan is not a DNS name.
    Name(String),
    /// The etcd lease this write was to go out under lapsed before it was sent.
    Lapsed { epoch: u64 },
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::Fenced { rcode, zone, ours } => {
                match zone {
                    Some(z) => write!(f, "fenced: the zone's epoch is {} (written by {}), we hold {ours}", z.epoch, z.writer)?,
                    None => write!(f, "fenced: the zone has no epoch record any more, we hold {ours}")?,
                }
                if let Some(rc) = rcode {
                    write!(f, " (the server refused the update: {rc})")?;
                }
                Ok(())
            }
            UpdateError::ForeignFence(why) => write!(f, "the zone's {EPOCH_LABEL} record is not veer's: {why}"),
            UpdateError::EmptyPlan { owned } => {
                write!(f, "nothing to write while the zone holds {owned} records of ours: not deleting them on an empty plan")
            }
            UpdateError::Rcode(rc) => write!(f, "the server answered {rc}"),
            UpdateError::BadTransfer(why) => write!(f, "zone transfer: {why}"),
            UpdateError::Exchange(e) => write!(f, "{e}"),
            UpdateError::Name(why) => write!(f, "{why}"),
            UpdateError::Lapsed { epoch } => write!(f, "not sent: the etcd lease of epoch {epoch} lapsed before the update could go out"),
        }
    }
}

impl std::error::Error for UpdateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpdateError::Exchange(e) => Some(e),
            _ => None,
        }
    }
}

impl From<NetError> for UpdateError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Dns(DnsError::ResponseCode(rc)) => UpdateError::Rcode(rc),
            e => UpdateError::Exchange(e),
        }
    }
}

fn dns_name(s: &str) -> Result<Name, UpdateError> {
    let mut n = Name::from_ascii(s).map_err(|e| UpdateError::Name(format!("{s:?} is not a DNS name: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The name of a zone's epoch record.
pub fn fence_name(origin: &Name) -> Name {
    Name::from_ascii(EPOCH_LABEL).and_then(|l| l.append_domain(origin)).unwrap_or_else(|_| origin.clone())
}

/// The epoch record's text: ExternalDNS's registry format, so ExternalDNS reads it as a
/// registry entry of its owner and leaves it alone.
pub fn fence_value(owner: &str, origin: &Name, fence: &Fence) -> String {
    let zone = origin.to_ascii();
    txt_value(owner, &format!("veer/zone/{}", zone.trim_end_matches('.')), &fence.writer, fence.epoch)
}

fn txt_text(r: &Record) -> Option<String> {
    match &r.data {
        RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect()),
        _ => None,
    }
}

/// The epoch record of a read-back zone: none, or the one veer wrote.
pub fn read_fence(origin: &Name, owner: &str, contents: &ZoneContents) -> Result<Option<(Fence, Record)>, UpdateError> {
    let name = LowerName::new(&fence_name(origin));
    let at: Vec<&Record> = contents.records.iter().filter(|r| LowerName::new(&r.name) == name).collect();
    match at.as_slice() {
        [] => Ok(None),
        [r] => {
            let text = txt_text(r).ok_or_else(|| UpdateError::ForeignFence(format!("a {} record", r.record_type())))?;
            let labels = parse_txt_value(&text).ok_or_else(|| UpdateError::ForeignFence(format!("{text:?}")))?;
            let epoch = labels.get("veer-epoch").and_then(|e| e.parse().ok());
            match (labels.get("owner"), epoch, labels.get("veer-writer")) {
                (Some(o), Some(epoch), Some(writer)) if o == owner => Ok(Some((Fence { epoch, writer: writer.clone() }, (*r).clone()))),
                _ => Err(UpdateError::ForeignFence(format!("{text:?} is not of owner {owner} with an epoch and a writer"))),
            }
        }
        more => Err(UpdateError::ForeignFence(format!("{} records", more.len()))),
    }
}

/// The record an endpoint asks for.
fn record_of(e: &Endpoint) -> Result<Record, UpdateError> {
    let owner = dns_name(&e.dns_name)?;
    let data = match e.record_type {
        RecordKind::CNAME => RData::CNAME(CNAME(dns_name(&e.target)?)),
        RecordKind::A | RecordKind::AAAA => match e.target.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => RData::A(A(v4)),
            Ok(IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
            Err(_) => return Err(UpdateError::Name(format!("{:?} is not an IP address", e.target))),
        },
    };
    Ok(Record::from_rdata(owner, e.ttl, data))
}

type Key = (LowerName, RecordType);

/// The one UPDATE that makes the zone hold `desired` (none when it already does), from what the
/// read-back found. Pure. Another writer's epoch record at `desired.epoch` or above fences us;
/// our own at a higher epoch is kept (a restart without the state file).
pub fn plan_change(zs: &ZoneServer, contents: &ZoneContents, desired: &Desired) -> Result<Option<Change>, UpdateError> {
    let fence = read_fence(&zs.origin, &zs.owner, contents)?;
    let mut epoch = desired.epoch;
    if let Some((f, _)) = &fence {
        if f.writer == desired.writer {
            // Our own record: a node restarted without its state file numbers the zone from
            // its baseline again; the zone's epoch never goes back, and nobody else's records
            // are at stake.
            epoch = epoch.max(f.epoch);
        } else if f.epoch >= desired.epoch {
            return Err(UpdateError::Fenced { rcode: None, zone: Some(f.clone()), ours: desired.epoch });
        }
    }
    let origin = LowerName::new(&zs.origin);
    let mut current: BTreeMap<Key, Vec<&Record>> = BTreeMap::new();
    for r in &contents.records {
        if r.record_type() != RecordType::SOA {
            current.entry((LowerName::new(&r.name), r.record_type())).or_default().push(r);
        }
    }
    let registry_of = |name: &Name, t: RecordType| -> Result<LowerName, UpdateError> {
        let n = txt_name(&zs.txt_prefix, name.to_ascii().trim_end_matches('.'), &t.to_string());
        Ok(LowerName::new(&dns_name(&n)?))
    };
    // A registry TXT of our owner (veer's or ExternalDNS's) marks its record ours.
    let ours = |txt: &LowerName| -> bool {
        current.get(&(txt.clone(), RecordType::TXT)).is_some_and(|rs| {
            rs.iter().all(|r| txt_text(r).and_then(|t| parse_txt_value(&t)).is_some_and(|l| l.get("owner") == Some(&zs.owner)))
        })
    };

    let mut skipped = Vec::new();
    // What we want: (record, its registry TXT), by key.
    let mut want: BTreeMap<Key, (Vec<Record>, LowerName, Record)> = BTreeMap::new();
    for e in &desired.endpoints {
        let r = record_of(e)?;
        if !origin.zone_of(&LowerName::new(&r.name)) {
            skipped.push(format!("{} is outside zone {}", r.name, zs.origin));
            continue;
        }
        let txt = registry_of(&r.name, r.record_type())?;
        let value = txt_value(&zs.owner, &format!("crd/{}/{}", e.namespace, e.name), &desired.writer, epoch);
        let txt_record = Record::from_rdata(Name::from(&txt), e.ttl, RData::TXT(TXT::new(vec![value])));
        let entry = want.entry((LowerName::new(&r.name), r.record_type())).or_insert_with(|| (Vec::new(), txt, txt_record));
        if !entry.0.contains(&r) {
            entry.0.push(r);
        }
    }
    let owned: Vec<Key> = current
        .keys()
        .filter(|(n, t)| *t != RecordType::TXT || !ours(n))
        .filter(|(n, t)| registry_of(&Name::from(n), *t).is_ok_and(|txt| ours(&txt)))
        .cloned()
        .collect();
    if want.is_empty() && !owned.is_empty() {
        return Err(UpdateError::EmptyPlan { owned: owned.len() });
    }

    let mut deletes: Vec<Record> = Vec::new();
    let mut adds: Vec<Record> = Vec::new();
    // Ours but no longer wanted: the records the read-back found, each by its data, and their
    // registry TXTs.
    for key in &owned {
        if want.contains_key(key) {
            continue;
        }
        for r in current.get(key).into_iter().flatten() {
            deletes.push(delete_exact(r));
        }
        if let Ok(txt) = registry_of(&Name::from(&key.0), key.1) {
            for r in current.get(&(txt, RecordType::TXT)).into_iter().flatten() {
                deletes.push(delete_exact(r));
            }
        }
    }
    for (key, (records, txt, txt_record)) in &want {
        let (name, t) = key;
        let is_ours = ours(txt);
        // Another owner's record of the same name and type, or a CNAME beside other data
        // (RFC 1034 §3.6.2), stands in the way: leave it, as ExternalDNS does.
        let blocked = current.keys().filter(|(n, _)| n == name).any(|(_, other)| {
            let clash = other == t || (*t == RecordType::CNAME && *other != RecordType::TXT) || *other == RecordType::CNAME;
            clash && !owned.contains(&(name.clone(), *other))
        }) || (current.contains_key(&(txt.clone(), RecordType::TXT)) && !is_ours);
        if blocked {
            skipped.push(format!("{} {t}: a record veer does not own is there", Name::from(name)));
            continue;
        }
        let now: Vec<&Record> = current.get(key).cloned().unwrap_or_default();
        if !same(&now, records) {
            if !now.is_empty() {
                deletes.push(delete_rrset(&Name::from(name), *t));
            }
            adds.extend(records.iter().cloned());
        }
        let now_txt: Vec<&Record> = current.get(&(txt.clone(), RecordType::TXT)).cloned().unwrap_or_default();
        if !same(&now_txt, std::slice::from_ref(txt_record)) {
            if !now_txt.is_empty() {
                deletes.push(delete_rrset(&txt_record.name, RecordType::TXT));
            }
            adds.push(txt_record.clone());
        }
    }
    let new_fence = Fence { epoch, writer: desired.writer.clone() };
    let fence_record = Record::from_rdata(
        fence_name(&zs.origin),
        ttl_of(desired),
        RData::TXT(TXT::new(vec![fence_value(&zs.owner, &zs.origin, &new_fence)])),
    );
    let fence_current = fence.as_ref().map(|(_, r)| r);
    if deletes.is_empty() && adds.is_empty() && fence_current.is_some_and(|r| same(&[r], std::slice::from_ref(&fence_record))) {
        return Ok(None);
    }
    if fence_current.is_some() {
        deletes.push(delete_rrset(&fence_record.name, RecordType::TXT));
    }
    adds.push(fence_record);

    let mut message = Message::new(0, MessageType::Query, OpCode::Update);
    let mut zone = Query::new();
    zone.set_name(zs.origin.clone()).set_query_class(DNSClass::IN).set_query_type(RecordType::SOA);
    message.add_zone(zone);
    match &fence {
        Some((_, r)) => {
            // RFC 2136 §2.4.2: the RRset must be exactly this, compared without its TTL.
            let mut pre = r.clone();
            pre.ttl = 0;
            message.add_pre_requisite(pre);
        }
        None => {
            // §2.4.5: the name is in use by no record.
            let mut pre = Record::update0(fence_name(&zs.origin), 0, RecordType::ANY).into_record_of_rdata();
            pre.dns_class = DNSClass::NONE;
            message.add_pre_requisite(pre);
        }
    }
    message.add_updates(deletes);
    message.add_updates(adds);
    Ok(Some(Change { message, expects: fence.map(|(f, _)| f), skipped }))
}

fn ttl_of(desired: &Desired) -> u32 {
    desired.endpoints.iter().map(|e| e.ttl).min().unwrap_or(60)
}

/// Whether the RRset read back is exactly `want` (data and TTL).
fn same(now: &[&Record], want: &[Record]) -> bool {
    let a: BTreeSet<(String, u32)> = now.iter().map(|r| (r.data.to_string(), r.ttl)).collect();
    let b: BTreeSet<(String, u32)> = want.iter().map(|r| (r.data.to_string(), r.ttl)).collect();
    a == b && now.len() == want.len()
}

/// §2.5.4: delete this RR (by its data).
fn delete_exact(r: &Record) -> Record {
    let mut d = r.clone();
    d.dns_class = DNSClass::NONE;
    d.ttl = 0;
    d
}

/// §2.5.2: delete the RRset of this name and type.
fn delete_rrset(name: &Name, t: RecordType) -> Record {
    let mut d = Record::update0(name.clone(), 0, t).into_record_of_rdata();
    d.dns_class = DNSClass::ANY;
    d
}

// === impl ZoneServer ===

impl ZoneServer {
    /// The writer of a zone the manifests describe.
    pub fn new(target: &ZoneTarget, txt_prefix: &str) -> Result<ZoneServer, UpdateError> {
        let z = &target.zone;
        let algorithm = match z.algorithm {
            dnszone::TsigAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            dnszone::TsigAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            dnszone::TsigAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        // RFC 8945 §5.2.3's recommended fudge.
        let signer = TSigner::new(target.key.clone(), algorithm, dns_name(&z.key_name)?, 300)
            .map_err(|e| UpdateError::Name(format!("TSIG key {}: {e}", z.key_name)))?;
        Ok(ZoneServer { server: z.server, origin: dns_name(&z.zone)?, owner: z.owner.clone(), txt_prefix: txt_prefix.to_string(), signer })
    }

    /// Whether this server's zone holds a regional zone's names (`domain` at or below the origin).
    pub fn holds(&self, domain: &str) -> bool {
        dns_name(domain).is_ok_and(|d| self.origin.zone_of(&d))
    }

    async fn client(&self) -> Result<Client<TokioRuntimeProvider>, UpdateError> {
        let (connect, handle) = TcpClientStream::new(self.server, None, Some(EXCHANGE_TIMEOUT), TokioRuntimeProvider::new());
        let stream = connect.await?;
        let mux = DnsMultiplexer::new(stream, handle).with_timeout(EXCHANGE_TIMEOUT).with_signer(self.signer.clone());
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(mux);
        tokio::spawn(background);
        Ok(client)
    }

    /// Reads the zone back with a TSIG-signed AXFR; every message's signature is checked.
    pub async fn read(&self) -> Result<ZoneContents, UpdateError> {
        let mut client = self.client().await?;
        let mut stream = client.zone_transfer(self.origin.clone(), None);
        let mut records: Vec<Record> = Vec::new();
        while let Some(response) = stream.next().await {
            let response = response?;
            if response.response_code != ResponseCode::NoError {
                return Err(UpdateError::Rcode(response.response_code));
            }
            records.extend(response.answers.iter().cloned());
            if records.len() > MAX_RECORDS {
                return Err(UpdateError::BadTransfer(format!("more than {MAX_RECORDS} records")));
            }
        }
        // AXFR opens and closes with the SOA (RFC 5936 §2.2); a stream that does not is cut.
        let soas = records.iter().filter(|r| r.record_type() == RecordType::SOA).count();
        if soas < 2
            || records.first().map(Record::record_type) != Some(RecordType::SOA)
            || records.last().map(Record::record_type) != Some(RecordType::SOA)
        {
            return Err(UpdateError::BadTransfer(format!("{} records without an opening and closing SOA", records.len())));
        }
        records.pop();
        Ok(ZoneContents { records })
    }

    /// Sends one UPDATE; a refused prerequisite is [`UpdateError::Fenced`] with the rcode.
    pub async fn send(&self, change: &Change, ours: u64) -> Result<(), UpdateError> {
        let client = self.client().await?;
        let mut responses = client.send(DnsRequest::from(change.message.clone()));
        let rcode = match responses.next().await {
            Some(Ok(r)) => r.response_code,
            Some(Err(NetError::Dns(DnsError::ResponseCode(rc)))) => rc,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(UpdateError::Exchange(NetError::Timeout)),
        };
        match rcode {
            ResponseCode::NoError => Ok(()),
            ResponseCode::YXRRSet | ResponseCode::NXRRSet | ResponseCode::YXDomain | ResponseCode::NXDomain => {
                Err(UpdateError::Fenced { rcode: Some(rcode), zone: change.expects.clone(), ours })
            }
            rc => Err(UpdateError::Rcode(rc)),
        }
    }

    /// Reads the zone, then writes `desired` with one fenced UPDATE if anything differs. A
    /// refused prerequisite reads the zone again to report the epoch that fenced us.
    pub async fn push(&self, desired: &Desired) -> Result<Pushed, UpdateError> {
        self.push_while(desired, || true).await
    }

    /// [`ZoneServer::push`], sending the UPDATE only if `may_send` still says yes once the
    /// zone is read: a writer whose lease lapsed meanwhile sends nothing.
    pub async fn push_while(&self, desired: &Desired, may_send: impl Fn() -> bool) -> Result<Pushed, UpdateError> {
        let contents = self.read().await?;
        let Some(change) = plan_change(self, &contents, desired)? else {
            return Ok(Pushed { sent: false, skipped: Vec::new() });
        };
        if !may_send() {
            return Err(UpdateError::Lapsed { epoch: desired.epoch });
        }
        match self.send(&change, desired.epoch).await {
            Ok(()) => Ok(Pushed { sent: true, skipped: change.skipped }),
            Err(UpdateError::Fenced { rcode, .. }) => {
                let zone = match self.read().await {
                    Ok(now) => read_fence(&self.origin, &self.owner, &now).ok().flatten().map(|(f, _)| f),
                    Err(_) => None,
                };
                Err(UpdateError::Fenced { rcode, zone, ours: desired.epoch })
            }
            Err(e) => Err(e),
        }
    }
}

/// One zone this node writes, and where.
#[derive(Clone, Debug)]
pub struct Job {
    pub zone: ZoneId,
    pub server: ZoneServer,
    pub desired: Desired,
    /// For a zone written under an etcd lease: the lease to check the instant before sending.
    pub lease: Option<(LiveLeases, ZoneKey)>,
}

impl Job {
    /// Whether the UPDATE may go out now: always for an elected zone; for a leased one, only
    /// while this node's tenure at the job's epoch lasts.
    fn may_send(&self) -> bool {
        self.lease.as_ref().is_none_or(|(live, key)| live.may_write(key, self.desired.epoch, crate::clock::now()))
    }
}

/// The zones of `publications` written by `cluster` that a DNSZone of the set places on a
/// server: what the writer task pushes. A DNSZone veer cannot build a writer of is logged.
pub fn jobs<'a>(
    set: &ManifestSet,
    publications: impl Iterator<Item = (&'a ZoneId, &'a Publication<Vec<Endpoint>>)>,
    cluster: &str,
    txt_prefix: &str,
    live: Option<&LiveLeases>,
) -> Vec<Job> {
    let mut out = Vec::new();
    for (zone, p) in publications.filter(|(_, p)| p.writer == cluster) {
        for target in set.dns_zones.iter().filter(|t| t.zone.region == zone.region) {
            let lease = match (&target.zone.takeover, live) {
                (None, _) => None,
                (Some(_), Some(live)) => {
                    Some((live.clone(), ZoneKey { region: target.zone.region.clone(), origin: target.zone.zone.clone() }))
                }
                // A leased zone is written only under a lease: never by a node without etcd.
                (Some(_), None) => continue,
            };
            match ZoneServer::new(target, txt_prefix) {
                Ok(server) if server.holds(&zone.domain) => out.push(Job {
                    zone: zone.clone(),
                    server,
                    desired: Desired { writer: p.writer.clone(), epoch: p.epoch, endpoints: p.records.clone() },
                    lease,
                }),
                Ok(_) => {}
                Err(e) => tracing::error!(target: "veer::dns", zone = %zone, "DNSZone {}: {e}", target.zone.meta),
            }
        }
    }
    out
}

/// Hands the zones to write to a task of their own, so a slow or unreachable DNS server never
/// holds up the reconcile loop or the answers this node serves.
#[derive(Debug)]
pub struct Writes {
    tx: watch::Sender<Vec<Job>>,
}

/// Longest wait before a failed push is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Writes {
    /// Starts the writer task; it ends when the returned `Writes` is dropped.
    pub fn spawn() -> (Writes, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(Vec::new());
        (Writes { tx }, tokio::spawn(write_zones(rx)))
    }

    /// The zones to write now: the newest list replaces any not yet pushed.
    pub fn set(&self, jobs: Vec<Job>) {
        self.tx.send_replace(jobs);
    }
}

/// Pushes each job whose content differs from what was last written; retries failures with a
/// growing back-off, and starts over at once when the list changes (even mid-push).
async fn write_zones(mut rx: watch::Receiver<Vec<Job>>) {
    let mut written: BTreeMap<(ZoneId, SocketAddr), Desired> = BTreeMap::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        let jobs = rx.borrow_and_update().clone();
        let (mut failed, mut changed) = (false, false);
        for job in &jobs {
            let key = (job.zone.clone(), job.server.server);
            if written.get(&key) == Some(&job.desired) {
                continue;
            }
            let result = tokio::select! {
                r = job.server.push_while(&job.desired, || job.may_send()) => r,
                c = rx.changed() => {
                    if c.is_err() {
                        return;
                    }
                    changed = true;
                    break;
                }
            };
            let (zone, server, epoch) = (&job.zone, job.server.server, job.desired.epoch);
            match result {
                Ok(p) => {
                    for s in &p.skipped {
                        tracing::warn!(target: "veer::dns", zone = %zone, %server, "not written: {s}");
                    }
                    if p.sent {
                        tracing::info!(target: "veer::dns", zone = %zone, %server, epoch, "zone written to its DNS server");
                    }
                    written.insert(key, job.desired.clone());
                }
                // Retrying cannot help: a newer writer holds the zone. A new epoch is a new job.
                Err(e @ UpdateError::Fenced { .. }) => {
                    tracing::error!(target: "veer::dns", zone = %zone, %server, epoch, "{e}");
                    written.insert(key, job.desired.clone());
                }
                Err(e) => {
                    tracing::warn!(target: "veer::dns", zone = %zone, %server, epoch, "cannot write the zone (retrying in {backoff:?}): {e}");
                    failed = true;
                }
            }
        }
        if changed {
            continue;
        }
        if failed {
            tokio::select! {
                c = rx.changed() => if c.is_err() { return },
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = Duration::from_secs(1);
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
