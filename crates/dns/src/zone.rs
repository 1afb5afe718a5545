//! The answers one node serves, built once per reconcile and read lock-free by the request
//! path: destination hosts pointing at the local gateway, the regional zones this node writes
//! with their ExternalDNS ownership TXT records, and the lookup rules (REFUSED outside any zone,
//! NXDOMAIN or NODATA inside one with the zone's SOA, CNAME chains followed). Every zone has an
//! SOA and an NS RRset at its apex (`ns.<zone>`, with its address as an in-zone A/AAAA record:
//! the glue), and can be listed whole for a zone transfer. Pure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use veer_model::resolve::{destinations, DestinationKind};
use veer_model::set::ManifestSet;

use crate::fast::Compiled;
use crate::ownership::{txt_name, txt_value};
use crate::plan::{Endpoint, RecordKind, ZoneId};

/// What a node writes into one regional zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionalZone {
    pub zone: ZoneId,
    pub writer: String,
    pub epoch: u64,
    pub endpoints: Vec<Endpoint>,
}

/// Everything the answers are built from.
#[derive(Clone, Debug)]
pub struct ZoneInput {
    /// Hosts of VirtualDestinations, FailoverServices and HTTPRoutes (`*.` wildcards allowed).
    pub hosts: Vec<String>,
    /// The local gateway address the hosts resolve to.
    pub gateway: IpAddr,
    /// Hosts that resolve elsewhere: HTTPRoute hosts served on a `spec.gateway.ports` socket
    /// with an IP of its own (the gateway answers 404 for them).
    pub elsewhere: BTreeMap<String, IpAddr>,
    pub ttl: u32,
    pub regional: Vec<RegionalZone>,
    /// ExternalDNS `--txt-prefix`.
    pub txt_prefix: String,
    /// SOA serial: changes whenever the answers do.
    pub serial: u32,
    /// The address of this server, served as `ns.<zone>` (the NS RRset's glue); `None`: the NS
    /// RRset is served without an address (a resolver must find it elsewhere).
    pub nameserver: Option<IpAddr>,
}

/// The destination hosts the node of `cluster` serves ([`veer_model::resolve::destinations`]
/// but Services): every VirtualDestination and FailoverService host, and the HTTPRoute hosts its
/// own Gateways accept for a route with rules (a name the gateway would answer 404 for is not
/// pointed at it).
pub fn destination_hosts(set: &ManifestSet, cluster: &str) -> Vec<String> {
    let keys = destinations(set, cluster);
    // `*.svc.cluster.local` is each cluster's own DNS to answer.
    let mut hosts: Vec<String> =
        // TLSRoute names are served on a socket of their own, not the gateway's, and may be wildcards.
        keys.iter()
            .filter(|k| k.kind != DestinationKind::Service && !matches!(k.kind, DestinationKind::TlsRoute { .. }))
            .flat_map(|k| k.hosts().map(str::to_string))
            .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The HTTPRoute hosts of `cluster` served on a socket of `spec.gateway.ports` whose IP is
/// not the gateway's, with that IP: the first such socket of the host, in port order (a
/// wildcard IP says nothing about where clients reach it: those keep the gateway's).
pub fn socket_ips(set: &ManifestSet, cluster: &str) -> BTreeMap<String, IpAddr> {
    let Ok(listeners) = set.listeners(cluster) else { return BTreeMap::new() };
    let mut out = BTreeMap::new();
    for r in &set.routes {
        for host in r.hosts_in(cluster) {
            let mut ports: Vec<u16> = r.ports_of(cluster, host).collect();
            ports.sort_unstable();
            // Served on the gateway too: the gateway's IP reaches it.
            if ports.iter().any(|p| listeners.ports.get(p) == Some(&0)) {
                continue;
            }
            let ip = ports
                .iter()
                .filter_map(|p| listeners.ports.get(p))
                .filter_map(|&i| listeners.extra.get(i.checked_sub(1)?))
                .map(|a| a.ip())
                .find(|ip| !ip.is_unspecified());
            if let Some(ip) = ip {
                out.entry(host.to_ascii_lowercase()).or_insert(ip);
            }
        }
    }
    out
}

#[derive(Clone, Debug)]
struct Zone {
    origin: LowerName,
    soa: Record,
    /// The apex NS RRset.
    ns: Vec<Record>,
}

/// The outcome of one lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The name is in no zone this node serves: not ours to answer (never recursive).
    Refused,
    /// An authoritative answer: NOERROR with records or NODATA, or NXDOMAIN; `additional`
    /// carries the addresses of the name servers of an NS answer.
    Authoritative { rcode: ResponseCode, answers: Vec<Record>, authority: Vec<Record>, additional: Vec<Record> },
}

/// The served answers.
#[derive(Clone, Debug, Default)]
pub struct Zones {
    zones: Vec<Zone>,
    /// Where each zone's origin is in `zones`: a name's zone is found by its ancestors, not by
    /// a scan of every zone (each destination host is a zone of its own, and encoding the
    /// answers ahead looks up every name).
    by_origin: HashMap<LowerName, usize>,
    names: HashMap<LowerName, Vec<Record>>,
    /// Every proper ancestor of a name of `names`: the empty non-terminals among them exist.
    ancestors: HashSet<LowerName>,
    /// `*.suffix` hosts: any name below the suffix answers with the gateway.
    wildcards: Vec<LowerName>,
    gateway: Option<IpAddr>,
    ttl: u32,
    /// Zones this node writes: (zone, writer, epoch), for `/` introspection and tests.
    pub regional: Vec<(ZoneId, String, u64)>,
    /// Names that could not be served (invalid), with why.
    pub skipped: Vec<Unservable>,
    /// The answers encoded ahead for the usual questions (none until the server sets them).
    compiled: Arc<Compiled>,
}

/// A host or record a zone cannot serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unservable {
    /// Not a DNS name: the name and why.
    NotADnsName { name: String, why: String },
    /// An A or AAAA record whose target is not an IP address.
    NotAnAddress(String),
}

impl std::fmt::Display for Unservable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unservable::NotADnsName { name, why } => write!(f, "{name:?} is not a DNS name: {why}"),
            Unservable::NotAnAddress(target) => write!(f, "{target:?} is not an IP address"),
        }
    }
}

impl std::error::Error for Unservable {}

fn name(s: &str) -> Result<Name, Unservable> {
    let mut n = Name::from_ascii(s).map_err(|e| Unservable::NotADnsName { name: s.to_string(), why: e.to_string() })?;
    n.set_fqdn(true);
    Ok(n)
}

fn address_record(owner: Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(owner, ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(owner, ttl, RData::AAAA(AAAA(v6))),
    }
}

// === impl Zones ===

impl Zones {
    pub fn build(input: &ZoneInput) -> Zones {
        let mut z = Zones { gateway: Some(input.gateway), ttl: input.ttl, ..Zones::default() };
        let mut origins: BTreeMap<String, ()> = BTreeMap::new();
        for host in &input.hosts {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            if let Some(suffix) = host.strip_prefix("*.") {
                match name(suffix) {
                    Ok(n) => {
                        z.wildcards.push(LowerName::new(&n));
                        origins.insert(suffix.to_string(), ());
                    }
                    Err(e) => z.skipped.push(e),
                }
                continue;
            }
            match name(&host) {
                Ok(n) => {
                    z.add(address_record(n, input.ttl, input.elsewhere.get(&host).copied().unwrap_or(input.gateway)));
                    origins.insert(host, ());
                }
                Err(e) => z.skipped.push(e),
            }
        }
        for rz in &input.regional {
            origins.insert(rz.zone.domain.to_ascii_lowercase(), ());
            z.regional.push((rz.zone.clone(), rz.writer.clone(), rz.epoch));
            for e in &rz.endpoints {
                let owner = match name(&e.dns_name) {
                    Ok(n) => n,
                    Err(err) => {
                        z.skipped.push(err);
                        continue;
                    }
                };
                let record = match e.record_type {
                    RecordKind::CNAME => match name(&e.target) {
                        Ok(t) => Record::from_rdata(owner, e.ttl, RData::CNAME(CNAME(t))),
                        Err(err) => {
                            z.skipped.push(err);
                            continue;
                        }
                    },
                    RecordKind::A | RecordKind::AAAA => match e.target.parse::<IpAddr>() {
                        Ok(ip) => address_record(owner, e.ttl, ip),
                        Err(_) => {
                            z.skipped.push(Unservable::NotAnAddress(e.target.clone()));
                            continue;
                        }
                    },
                };
                z.add(record);
                let txt_owner = txt_name(&input.txt_prefix, &e.dns_name, e.record_type.as_str());
                let value = txt_value(
                    &format!("external-dns-{}", rz.zone.region),
                    &format!("crd/{}/{}", e.namespace, e.name),
                    &rz.writer,
                    rz.epoch,
                );
                match name(&txt_owner) {
                    Ok(n) => z.add(Record::from_rdata(n, e.ttl, RData::TXT(TXT::new(vec![value])))),
                    Err(err) => z.skipped.push(err),
                }
            }
        }
        for origin in origins.keys() {
            let Ok(o) = name(origin) else { continue };
            let mname = Name::from_ascii("ns").and_then(|n| n.append_domain(&o)).unwrap_or_else(|_| o.clone());
            let rname = Name::from_ascii("hostmaster").and_then(|n| n.append_domain(&o)).unwrap_or_else(|_| o.clone());
            // Negative answers are cached for the record TTL, so a takeover is not hidden
            // behind a longer negative cache.
            let ttl = i32::try_from(input.ttl).unwrap_or(i32::MAX);
            let soa = Record::from_rdata(
                o.clone(),
                input.ttl,
                RData::SOA(SOA::new(mname.clone(), rname, input.serial, ttl, ttl, ttl.saturating_mul(10), input.ttl)),
            );
            let ns = vec![Record::from_rdata(o.clone(), input.ttl, RData::NS(NS(mname.clone())))];
            // The glue, unless the zone's own data already names `ns.<zone>`.
            if let Some(ip) = input.nameserver {
                if !z.names.contains_key(&LowerName::new(&mname)) {
                    z.add(address_record(mname, input.ttl, ip));
                }
            }
            z.zones.push(Zone { origin: LowerName::new(&o), soa, ns });
        }
        for n in z.names.keys() {
            let mut up = n.base_name();
            while !up.is_root() && z.ancestors.insert(up.clone()) {
                up = up.base_name();
            }
        }
        // Longest origin first, so the most specific zone answers.
        z.zones.sort_by_key(|zone| std::cmp::Reverse(zone.origin.num_labels()));
        for (i, zone) in z.zones.iter().enumerate() {
            z.by_origin.entry(zone.origin.clone()).or_insert(i);
        }
        z
    }

    fn add(&mut self, r: Record) {
        let set = self.names.entry(LowerName::new(&r.name)).or_default();
        if !set.contains(&r) {
            set.push(r);
        }
    }

    /// Every record served, for introspection and tests.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.names.values().flatten()
    }

    /// Every name with records and every zone's apex, with whether it is an apex: the names
    /// whose answers can be encoded ahead.
    pub fn owners(&self) -> impl Iterator<Item = (&LowerName, bool)> {
        self.names
            .keys()
            .map(|n| (n, self.by_origin.contains_key(n)))
            .chain(self.zones.iter().filter(|z| !self.names.contains_key(&z.origin)).map(|z| (&z.origin, true)))
    }

    /// The answers encoded ahead.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    pub fn set_compiled(&mut self, compiled: Compiled) {
        self.compiled = Arc::new(compiled);
    }

    /// Whether `qname` falls in a zone this node serves.
    pub fn serves(&self, qname: &LowerName) -> bool {
        self.zone_of(qname).is_some()
    }

    /// The closest zone: the longest origin at or above `qname`.
    fn zone_of(&self, qname: &LowerName) -> Option<&Zone> {
        let mut name = qname.clone();
        loop {
            if let Some(&i) = self.by_origin.get(&name) {
                return Some(&self.zones[i]);
            }
            if name.is_root() {
                return None;
            }
            name = name.base_name();
        }
    }

    /// The zone whose origin is `origin`.
    fn zone(&self, origin: &LowerName) -> Option<&Zone> {
        self.by_origin.get(origin).map(|&i| &self.zones[i])
    }

    /// Answers `qtype` for `qname`.
    pub fn lookup(&self, qname: &LowerName, qtype: RecordType) -> Outcome {
        let Some(zone) = self.zone_of(qname) else { return Outcome::Refused };
        let mut answers = Vec::new();
        let mut current = qname.clone();
        // The zone the chain ends in: its SOA goes with a negative answer (RFC 2308 §2.1).
        let mut last_zone = zone;
        // Whether the last name of the chain had the asked type (or left veer's zones).
        let mut resolved = false;
        // Follow CNAMEs inside our data, as an authoritative server adds the chain it knows.
        for _ in 0..8 {
            let records = self.records_at(&current);
            if current == last_zone.origin && matches!(qtype, RecordType::SOA | RecordType::NS | RecordType::ANY) {
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    answers.push(last_zone.soa.clone());
                }
                if matches!(qtype, RecordType::NS | RecordType::ANY) {
                    answers.extend(last_zone.ns.iter().cloned());
                }
                resolved = true;
            }
            if records.is_empty() {
                break;
            }
            let cname = records.iter().find(|r| r.record_type() == RecordType::CNAME);
            match cname {
                Some(c) if qtype != RecordType::CNAME => {
                    answers.push(c.clone());
                    let RData::CNAME(CNAME(target)) = &c.data else { break };
                    current = LowerName::new(target);
                    match self.zone_of(&current) {
                        Some(z) => last_zone = z,
                        None => {
                            // Out of veer's zones: the resolver follows the rest itself.
                            resolved = true;
                            break;
                        }
                    }
                }
                _ => {
                    let before = answers.len();
                    answers.extend(records.into_iter().filter(|r| qtype == RecordType::ANY || r.record_type() == qtype));
                    resolved |= answers.len() > before;
                    break;
                }
            }
        }
        if resolved {
            let additional = self.glue(&answers);
            return Outcome::Authoritative { rcode: ResponseCode::NoError, answers, authority: Vec::new(), additional };
        }
        // NODATA or NXDOMAIN for the last name of the chain (RFC 6604: the rcode is the last
        // name's), with that zone's SOA.
        let exists = !self.records_at(&current).is_empty() || last_zone.origin == current || self.is_empty_non_terminal(&current);
        let rcode = if exists { ResponseCode::NoError } else { ResponseCode::NXDomain };
        Outcome::Authoritative { rcode, answers, authority: vec![last_zone.soa.clone()], additional: Vec::new() }
    }

    /// The addresses of the name servers an answer names, when veer serves them.
    fn glue(&self, answers: &[Record]) -> Vec<Record> {
        answers
            .iter()
            .filter_map(|r| if let RData::NS(NS(ns)) = &r.data { self.names.get(&LowerName::new(ns)) } else { None })
            .flatten()
            .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            .cloned()
            .collect()
    }

    /// The serial every zone's SOA carries now.
    pub fn serial(&self) -> Option<u32> {
        self.zones.first().and_then(|z| if let RData::SOA(soa) = &z.soa.data { Some(soa.serial) } else { None })
    }

    /// Sets the SOA serial of every zone.
    pub fn set_serial(&mut self, serial: u32) {
        // Encoded with the old serial.
        self.compiled = Arc::default();
        for z in &mut self.zones {
            if let RData::SOA(soa) = &mut z.soa.data {
                soa.serial = serial;
            }
        }
    }

    /// Every record but the SOAs, in a stable order: what a change of the serial stands for.
    pub fn content(&self) -> Vec<Record> {
        let mut out: Vec<Record> = self.names.values().flatten().cloned().collect();
        out.extend(self.wildcards.iter().filter_map(|w| self.wildcard_record(w)));
        out.extend(self.zones.iter().flat_map(|z| z.ns.iter().cloned()));
        out.sort_by(|a, b| (&a.name, a.record_type(), a.data.to_string()).cmp(&(&b.name, b.record_type(), b.data.to_string())));
        out
    }

    fn wildcard_record(&self, suffix: &LowerName) -> Option<Record> {
        let gw = self.gateway?;
        let owner = Name::from_ascii("*").ok()?.append_domain(&Name::from(suffix)).ok()?;
        Some(address_record(owner, self.ttl, gw))
    }

    /// The SOA of zone `origin`.
    pub fn soa(&self, origin: &LowerName) -> Option<&Record> {
        self.zone(origin).map(|z| &z.soa)
    }

    /// The origins of the zones served.
    pub fn origins(&self) -> impl Iterator<Item = &LowerName> {
        self.zones.iter().map(|z| &z.origin)
    }

    /// The whole zone `origin` for a transfer (RFC 5936): the SOA first and last, and between
    /// them every record whose closest zone is this one, plus the NS RRsets of zones veer serves
    /// below it (delegations) with their glue. `None`: not a zone veer serves.
    pub fn transfer(&self, origin: &LowerName) -> Option<Vec<Record>> {
        let zone = self.zone(origin)?;
        let mut body: Vec<Record> = zone.ns.clone();
        let children: Vec<&Zone> = self.zones.iter().filter(|z| z.origin != *origin && origin.zone_of(&z.origin)).collect();
        for z in &children {
            body.extend(z.ns.iter().cloned());
        }
        let glue: Vec<LowerName> = children
            .iter()
            .flat_map(|z| z.ns.iter())
            .filter_map(|r| if let RData::NS(NS(n)) = &r.data { Some(LowerName::new(n)) } else { None })
            .collect();
        for (owner, records) in &self.names {
            let closest = self.zone_of(owner).map(|z| &z.origin);
            if closest == Some(origin) || glue.contains(owner) {
                body.extend(
                    records
                        .iter()
                        .filter(|r| closest == Some(origin) || matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                        .cloned(),
                );
            }
        }
        for w in &self.wildcards {
            if self.zone_of(w).map(|z| &z.origin) == Some(origin) {
                body.extend(self.wildcard_record(w));
            }
        }
        body.sort_by(|a, b| (&a.name, a.record_type(), a.data.to_string()).cmp(&(&b.name, b.record_type(), b.data.to_string())));
        body.dedup();
        let mut out = Vec::with_capacity(body.len() + 2);
        out.push(zone.soa.clone());
        out.extend(body);
        out.push(zone.soa.clone());
        Some(out)
    }

    /// Records at `name`, including those a wildcard host synthesises.
    fn records_at(&self, qname: &LowerName) -> Vec<Record> {
        if let Some(r) = self.names.get(qname) {
            return r.clone();
        }
        match (self.gateway, self.wildcards.iter().any(|w| w.zone_of(qname) && w != qname)) {
            (Some(gw), true) => vec![address_record(Name::from(qname), self.ttl, gw)],
            _ => Vec::new(),
        }
    }

    /// A name with no records but with names below it exists (RFC 8020): NODATA, not NXDOMAIN.
    fn is_empty_non_terminal(&self, qname: &LowerName) -> bool {
        self.ancestors.contains(qname)
    }
}

#[cfg(test)]
mod tests;
