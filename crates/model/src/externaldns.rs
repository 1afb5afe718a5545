//! ExternalDNS `DNSEndpoint` (`externaldns.k8s.io/v1alpha1`): what `veer dns endpoints` writes
//! for an existing ExternalDNS deployment, read back so `veer validate` can check it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::decode::Obj;
use crate::diag::Pos;
use crate::meta::Meta;

/// Record types ExternalDNS manages (A, AAAA and CNAME by default; the others need
/// `--managed-record-types`).
pub const RECORD_TYPES: &[&str] = &["A", "AAAA", "CNAME", "TXT", "SRV", "NS", "PTR", "MX", "NAPTR", "CAA"];

/// A `DNSEndpoint`: a list of records for ExternalDNS's CRD source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsEndpoint {
    pub meta: Meta,
    pub endpoints: Vec<EndpointRecord>,
}

/// One entry of `spec.endpoints`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    pub dns_name: String,
    pub targets: Vec<String>,
    pub record_type: String,
    pub record_ttl: Option<u32>,
    pub set_identifier: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub pos: Pos,
}

fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

pub(crate) fn read_dns_endpoint(spec: &Obj<'_>, meta: Meta) -> Option<DnsEndpoint> {
    let items = spec.objs("endpoints");
    if items.is_empty() && !spec.has("endpoints") {
        spec.ctx().error(spec.pos(), "spec.endpoints", "required field is missing");
    }
    let endpoints = items.iter().filter_map(read_record).collect();
    Some(DnsEndpoint { meta, endpoints })
}

fn read_record(e: &Obj<'_>) -> Option<EndpointRecord> {
    let pos = e.pos();
    let dns_name = e.required_string("dnsName");
    if let Some((n, p)) = &dns_name {
        if !is_hostname(n) {
            e.ctx().error(*p, &e.field_path("dnsName"), format!("{n:?} is not a DNS name"));
        }
    }
    let record_type = e.required_string("recordType").and_then(|(t, p)| {
        if RECORD_TYPES.contains(&t.as_str()) {
            Some(t)
        } else {
            e.ctx().error(
                p,
                &e.field_path("recordType"),
                format!("{t:?} is not a record type ExternalDNS manages; expected one of: {}", RECORD_TYPES.join(", ")),
            );
            None
        }
    });
    let targets = e.strings("targets");
    if targets.is_empty() {
        e.ctx().error(e.pos_of("targets"), &e.field_path("targets"), "list at least one target");
    }
    if let Some(t) = &record_type {
        for (target, p) in &targets {
            let problem = match t.as_str() {
                "A" if target.ends_with('.') => Some("an A target must not end with a dot (ExternalDNS rejects it)".to_string()),
                "A" if target.parse::<Ipv4Addr>().is_err() => Some(format!("{target:?} is not an IPv4 address")),
                "AAAA" if target.parse::<Ipv6Addr>().is_err() => Some(format!("{target:?} is not an IPv6 address")),
                "CNAME" | "NS" | "PTR" if !is_hostname(target) => Some(format!("{target:?} is not a DNS name")),
                _ => None,
            };
            if let Some(m) = problem {
                e.ctx().error(*p, &e.field_path("targets"), m);
            }
        }
    }
    let record_ttl = e.u32("recordTTL", 0, i32::MAX as u32);
    let set_identifier = e.string("setIdentifier").map(|(s, _)| s);
    let labels = e.string_map("labels");
    e.tolerate("providerSpecific", "provider-specific settings are passed to ExternalDNS as they are");
    e.finish();
    Some(EndpointRecord {
        dns_name: dns_name?.0,
        targets: targets.into_iter().map(|(t, _)| t).collect(),
        record_type: record_type?,
        record_ttl,
        set_identifier,
        labels,
        pos,
    })
}
