//! veer's `DNSZone` kind: where a regional zone lives on a real DNS server (RFC 2136 updates and
//! AXFR signed with a TSIG key from a core Secret, as ExternalDNS's rfc2136 provider takes it).
//!
//! Why a kind in the manifest set rather than flags: the writer of a regional zone is elected
//! from the set every node reads, and changes at a takeover; the node that takes the zone over
//! must know where it lives and hold its key, so that knowledge belongs in the same set.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;

use crate::decode::Obj;
use crate::diag::{Diagnostics, Pos, Severity};
use crate::meta::{about, Meta};
use crate::tls::{Secret, OPAQUE_SECRET_TYPE};

/// The Secret key ExternalDNS's charts keep the TSIG secret under (`rfc2136_tsig_secret`).
pub const DEFAULT_SECRET_KEY: &str = "rfc2136_tsig_secret";

/// HMACs a TSIG key may use (RFC 8945 §6: SHA-256 is mandatory; MD5 and SHA-1 are refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    pub const NAMES: [&'static str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    fn parse(s: &str) -> Option<TsigAlgorithm> {
        match s {
            "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
            "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
            "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
            _ => None,
        }
    }
}

/// A `veer.io/v1alpha1 DNSZone` as read; its Secret is looked up when the set is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsZone {
    pub meta: Meta,
    /// The region whose zone this is (a ClusterIdentity's `region`).
    pub region: String,
    /// The zone's origin on the server, lower case, without the final dot.
    pub zone: String,
    /// The primary server that takes updates and transfers (`IP:port`; port 53 by default).
    pub server: SocketAddr,
    /// ExternalDNS `--txt-owner-id` of the zone's records (default `external-dns-<region>`, the
    /// seed's per-region owner), so a zone moves between ExternalDNS and veer.
    pub owner: String,
    pub key_name: String,
    pub algorithm: TsigAlgorithm,
    /// The Secret in the DNSZone's namespace, and the data key holding the base64 secret.
    pub secret_name: String,
    pub secret_key: String,
    pub secret_pos: Pos,
    /// Automatic takeover on etcd leases; `None`: the writer is elected from the manifests.
    pub takeover: Option<Takeover>,
}

/// `spec.takeover`: the zone's writer holds a lease on etcd; standbys take the zone when the
/// home region cannot serve, and hand it back after the hold-down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// Clusters that may take the zone, in order of preference: veer cluster names, the
    /// `topology.istio.io/cluster` of their ClusterIdentity (seed 002's identities all say
    /// `cluster: aks01`; the region tells them apart, the owning cluster names them).
    pub standbys: Vec<String>,
    pub standbys_pos: Pos,
    /// The lease's TTL: a dead or cut-off writer's zone moves after at most this long.
    pub lease_ttl: Duration,
    /// How long the home must have stood ready before a standby hands its zone back.
    pub hold_down: Duration,
}

/// Takeover defaults: a lease of 10 s (Kubernetes' leader-election lease is 15 s; DNS answers
/// are cached for their TTL on top anyway) and a hold-down of 5 minutes.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(300);
/// etcd grants no lease under its election timeout; 2 s is etcd's smallest useful TTL.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);
const MAX_HOLD_DOWN: Duration = Duration::from_secs(86_400);

/// A DNSZone with its key found and decoded (by `ManifestSet::build`).
#[derive(Clone, PartialEq, Eq)]
pub struct ZoneTarget {
    pub zone: DnsZone,
    /// The TSIG key's bytes.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ZoneTarget {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneTarget").field("zone", &self.zone).finish_non_exhaustive()
    }
}

/// Whether `s` is a DNS name veer writes (letters, digits, `-`, `_`, labels of 1 to 63 bytes).
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

pub(crate) fn read_dns_zone(spec: &Obj<'_>, meta: Meta) -> Option<DnsZone> {
    let region = spec.required_string("region");
    let zone = spec.required_string("zone").and_then(|(z, pos)| {
        let z = z.trim_end_matches('.').to_ascii_lowercase();
        if is_dns_name(&z) {
            Some(z)
        } else {
            spec.ctx().error(pos, "spec.zone", format!("{z:?} is not a zone name such as example.com"));
            None
        }
    });
    let server = spec.required_string("server").and_then(|(s, pos)| {
        let parsed = s.parse::<SocketAddr>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
        if parsed.is_none() {
            spec.ctx().error(
                pos,
                "spec.server",
                format!("{s:?} is not IP:port (or an IP, port 53); veer does not resolve the server's name"),
            );
        }
        parsed
    });
    let owner = match spec.string("ownerId") {
        Some((o, pos)) if o.is_empty() || o.contains([',', '=', '"']) => {
            spec.ctx().error(pos, "spec.ownerId", format!("{o:?} cannot be an ExternalDNS owner ID (no ',', '=' or '\"')"));
            None
        }
        Some((o, _)) => Some(o),
        None => region.as_ref().map(|(r, _)| format!("external-dns-{r}")),
    };
    let tsig = spec.obj("tsig");
    if tsig.is_none() {
        spec.ctx().error(spec.pos(), "spec.tsig", "required field is missing: veer sends only TSIG-signed updates");
    }
    let tsig = tsig?;
    let key_name = tsig.required_string("keyName").and_then(|(k, pos)| {
        let k = k.trim_end_matches('.').to_ascii_lowercase();
        if is_dns_name(&k) {
            Some(k)
        } else {
            tsig.ctx().error(pos, "spec.tsig.keyName", format!("{k:?} is not a key name (a DNS name)"));
            None
        }
    });
    let algorithm = match tsig.string("algorithm") {
        None => Some(TsigAlgorithm::HmacSha256),
        Some((a, pos)) => {
            let parsed = TsigAlgorithm::parse(&a.to_ascii_lowercase());
            if parsed.is_none() {
                tsig.ctx().error(pos, "spec.tsig.algorithm", format!("{a:?} is not one of {}", TsigAlgorithm::NAMES.join(", ")));
            }
            parsed
        }
    };
    let secret = tsig.obj("secretRef");
    if secret.is_none() {
        tsig.ctx().error(tsig.pos(), "spec.tsig.secretRef", "required field is missing: the Secret holding the key");
    }
    let secret = secret?;
    let secret_name = secret.required_string("name");
    let secret_key = secret.string("key").map_or_else(|| DEFAULT_SECRET_KEY.to_string(), |(k, _)| k);
    let secret_pos = secret.pos();
    secret.finish();
    tsig.finish();
    let takeover = match spec.obj("takeover") {
        None => Some(None),
        Some(t) => read_takeover(&t).map(Some),
    };
    Some(DnsZone {
        meta,
        region: region?.0,
        zone: zone?,
        server: server?,
        owner: owner?,
        key_name: key_name?,
        algorithm: algorithm?,
        secret_name: secret_name?.0,
        secret_key,
        secret_pos,
        takeover: takeover?,
    })
}

fn read_takeover(t: &Obj<'_>) -> Option<Takeover> {
    let standbys_pos = t.pos_of("standbys");
    let mut standbys: Vec<String> = Vec::new();
    let mut ok = true;
    for (name, pos) in t.strings("standbys") {
        if name.is_empty() || standbys.contains(&name) {
            t.ctx().error(pos, "spec.takeover.standbys", format!("{name:?} is empty or listed twice"));
            ok = false;
        } else {
            standbys.push(name);
        }
    }
    if standbys.is_empty() && ok {
        t.ctx().error(t.pos(), "spec.takeover.standbys", "names no cluster: a takeover needs a standby to take the zone");
        ok = false;
    }
    let bounded = |key: &'static str, default: Duration, min: Duration, max: Duration| -> Option<Duration> {
        let Some(d) = t.duration(key) else { return (!t.has(key)).then_some(default) };
        if d < min || d > max || (key == "leaseTTL" && d.subsec_nanos() != 0) {
            let whole = if key == "leaseTTL" { " in whole seconds (etcd's lease unit)" } else { "" };
            t.ctx().error(t.pos_of(key), &t.field_path(key), format!("{d:?} is outside {min:?} to {max:?}{whole}"));
            return None;
        }
        Some(d)
    };
    let lease_ttl = bounded("leaseTTL", DEFAULT_LEASE_TTL, MIN_LEASE_TTL, MAX_LEASE_TTL);
    let hold_down = bounded("holdDown", DEFAULT_HOLD_DOWN, Duration::ZERO, MAX_HOLD_DOWN);
    t.finish();
    ok.then_some(Takeover { standbys, standbys_pos, lease_ttl: lease_ttl?, hold_down: hold_down? })
}

/// Each DNSZone with its key taken from its Secret; a zone whose key cannot be had is an error
/// at the field at fault (the DNSZone's `secretRef`, or the Secret's entry), and is dropped.
pub(crate) fn targets(zones: Vec<DnsZone>, secrets: &[(String, Secret)], diags: &mut Diagnostics) -> Vec<ZoneTarget> {
    let mut out: Vec<ZoneTarget> = Vec::new();
    for z in zones {
        let ns = &z.meta.namespace;
        if let Some(first) = out.iter().find(|t| t.zone.region == z.region && t.zone.zone == z.zone) {
            let at = first.zone.meta.location();
            diags.push(about(
                &z.meta,
                z.meta.pos,
                Severity::Error,
                "spec.zone",
                format!("zone {} of region {} is already described at {at}", z.zone, z.region),
            ));
            continue;
        }
        let error = |field: &str, pos: Pos, msg: String| about(&z.meta, pos, Severity::Error, field, msg);
        let Some((_, secret)) = secrets.iter().find(|(_, s)| s.meta.namespace == *ns && s.meta.name == z.secret_name) else {
            diags.push(error("spec.tsig.secretRef.name", z.secret_pos, format!("no Secret {ns}/{} in the manifests", z.secret_name)));
            continue;
        };
        if secret.kind != OPAQUE_SECRET_TYPE {
            let msg = format!(
                "Secret {ns}/{} (at {}) is of type {}; a TSIG key is an {OPAQUE_SECRET_TYPE} Secret",
                z.secret_name,
                secret.meta.location(),
                secret.kind
            );
            diags.push(error("spec.tsig.secretRef.name", z.secret_pos, msg));
            continue;
        }
        let Some((_, field)) = secret.entries.iter().rev().find(|(k, _)| *k == z.secret_key) else {
            let has: Vec<&str> = secret.entries.iter().map(|(k, _)| k.as_str()).collect();
            let msg = format!(
                "Secret {ns}/{} (at {}) has no entry {:?}; it has: {}",
                z.secret_name,
                secret.meta.location(),
                z.secret_key,
                has.join(", ")
            );
            diags.push(error("spec.tsig.secretRef.key", z.secret_pos, msg));
            continue;
        };
        // The entry is the secret as a BIND key file or ExternalDNS's flag holds it: base64.
        let key = field.bytes().and_then(|text| {
            let text = String::from_utf8(text).map_err(|_| "is not text".to_string())?;
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| format!("is not a base64 TSIG secret ({e}), as tsig-keygen or keymgr print it"))
        });
        match key {
            Ok(key) if key.len() >= 16 => out.push(ZoneTarget { zone: z, key }),
            Ok(key) => diags.push(about(
                &secret.meta,
                field.pos,
                Severity::Error,
                &field.path,
                format!("a TSIG key of {} bytes is too short (at least 16)", key.len()),
            )),
            Err(e) => diags.push(about(&secret.meta, field.pos, Severity::Error, &field.path, e)),
        }
    }
    out
}

/// Standbys named by a takeover: one in the zone's own region is an error (the home takes its
/// zone without being named); one no ClusterIdentity names is a warning, since its identity may
/// join the set later, but until it does no node can take the zone as that standby.
pub(crate) fn check_takeovers(zones: &[ZoneTarget], identities: &[(String, crate::router::ClusterIdentity)], diags: &mut Diagnostics) {
    for z in zones.iter().map(|t| &t.zone) {
        let Some(t) = &z.takeover else { continue };
        for s in &t.standbys {
            match identities.iter().find(|(owner, _)| owner == s) {
                Some((_, ci)) if ci.region == z.region => diags.push(about(
                    &z.meta,
                    t.standbys_pos,
                    Severity::Error,
                    "spec.takeover.standbys",
                    format!(
                        "{s} is in region {} itself (ClusterIdentity at {}): the home writes its zone without being named",
                        z.region,
                        ci.meta.location()
                    ),
                )),
                Some(_) => {}
                None => diags.push(about(
                    &z.meta,
                    t.standbys_pos,
                    Severity::Warning,
                    "spec.takeover.standbys",
                    format!(
                        "no ClusterIdentity of cluster {s} (labelled topology.istio.io/cluster: {s}): it cannot take the zone until one is"
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests;
