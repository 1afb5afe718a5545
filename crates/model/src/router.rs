//! Service Router Operator (seed 002): `ClusterIdentity`, `DNSConfiguration`, `DNSPolicy`,
//! `ServiceRoute` and its `Gateway`. Parsed and validated here; DNS behaviour comes later.

use crate::decode::Obj;
use crate::diag::Pos;
use crate::meta::Meta;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub meta: Meta,
    pub region: String,
    pub cluster: String,
    pub domain: String,
    pub environment_letter: String,
    pub adopts_regions: Vec<(String, Pos)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfiguration {
    pub meta: Meta,
    /// ExternalDNS controllers: (name, region).
    pub controllers: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsMode {
    Active,
    RegionBound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPolicy {
    pub meta: Meta,
    pub mode: DnsMode,
    pub source_region: Option<String>,
    pub source_cluster: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRoute {
    pub meta: Meta,
    pub service_name: String,
    pub gateway_name: String,
    pub gateway_namespace: String,
    pub environment: String,
    pub application: String,
    /// Where `gatewayName` is, for reference errors.
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterGateway {
    pub meta: Meta,
    pub controller: String,
    pub credential_name: String,
    pub target_postfix: String,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_domain(s: &str) -> bool {
    s.split('.').count() >= 2 && s.split('.').all(is_dns_label)
}

pub(crate) fn read_cluster_identity(spec: &Obj<'_>, meta: Meta) -> Option<ClusterIdentity> {
    let region = spec.required_string("region");
    let cluster = spec.required_string("cluster");
    let domain = spec.required_string("domain");
    let letter = spec.required_string("environmentLetter");
    for (v, field, what) in [(&region, "spec.region", "region"), (&cluster, "spec.cluster", "cluster")] {
        if let Some((s, pos)) = v {
            if !is_dns_label(s) {
                spec.ctx().error(*pos, field, format!("{what} {s:?} must be a DNS label: lowercase letters, digits and '-'"));
            }
        }
    }
    if let Some((d, pos)) = &domain {
        if !is_domain(d) {
            spec.ctx().error(*pos, "spec.domain", format!("{d:?} is not a domain such as example.com"));
        }
    }
    if let Some((l, pos)) = &letter {
        if l.len() != 1 || !l.bytes().all(|b| b.is_ascii_lowercase()) {
            spec.ctx().error(*pos, "spec.environmentLetter", format!("{l:?} must be one lowercase letter (^[a-z]$)"));
        }
    }
    let adopts_regions = spec.strings("adoptsRegions");
    if let Some((r, _)) = &region {
        for (a, pos) in &adopts_regions {
            if a == r {
                spec.ctx().error(*pos, "spec.adoptsRegions", format!("a cluster cannot adopt its own region {a:?}"));
            }
        }
    }
    Some(ClusterIdentity { meta, region: region?.0, cluster: cluster?.0, domain: domain?.0, environment_letter: letter?.0, adopts_regions })
}

pub(crate) fn read_dns_configuration(spec: &Obj<'_>, meta: Meta) -> Option<DnsConfiguration> {
    let controllers: Vec<(String, String)> = spec
        .objs("externalDNSControllers")
        .into_iter()
        .filter_map(|c| {
            let name = c.required_string("name");
            let region = c.required_string("region");
            c.finish();
            Some((name?.0, region?.0))
        })
        .collect();
    if controllers.is_empty() {
        spec.ctx().error(spec.pos(), "spec.externalDNSControllers", "list at least one ExternalDNS controller");
    }
    Some(DnsConfiguration { meta, controllers })
}

pub(crate) fn read_dns_policy(spec: &Obj<'_>, meta: Meta) -> Option<DnsPolicy> {
    let mode = match spec.one_of("mode", &["Active", "RegionBound"]) {
        Some(("RegionBound", _)) => DnsMode::RegionBound,
        _ => DnsMode::Active,
    };
    let source_region = spec.string("sourceRegion").map(|(s, _)| s);
    let source_cluster = spec.string("sourceCluster").map(|(s, _)| s);
    if mode == DnsMode::RegionBound && source_region.is_none() {
        spec.ctx().warn(
            spec.pos(),
            "spec.sourceRegion",
            "a RegionBound policy without sourceRegion is active in every cluster, so every cluster writes every region's records",
        );
    }
    Some(DnsPolicy { meta, mode, source_region, source_cluster })
}

pub(crate) fn read_service_route(spec: &Obj<'_>, meta: Meta) -> Option<ServiceRoute> {
    let service_name = spec.required_string("serviceName");
    let gateway_name = spec.required_string("gatewayName");
    let gateway_pos = spec.pos_of("gatewayName");
    let gateway_namespace = spec.string("gatewayNamespace").map(|(s, _)| s).unwrap_or_else(|| meta.namespace.clone());
    let environment = spec.required_string("environment");
    let application = spec.required_string("application");
    for (v, field) in [(&service_name, "spec.serviceName"), (&environment, "spec.environment"), (&application, "spec.application")] {
        if let Some((s, pos)) = v {
            if !is_dns_label(s) {
                spec.ctx().error(*pos, field, format!("{s:?} becomes part of a DNS name; use lowercase letters, digits and '-'"));
            }
        }
    }
    Some(ServiceRoute {
        pos: gateway_pos,
        meta,
        service_name: service_name?.0,
        gateway_name: gateway_name?.0,
        gateway_namespace,
        environment: environment?.0,
        application: application?.0,
    })
}

pub(crate) fn read_router_gateway(spec: &Obj<'_>, meta: Meta) -> Option<RouterGateway> {
    let controller = spec.required_string("controller").map(|(s, _)| s).unwrap_or_default();
    let credential_name = spec.string("credentialName").map(|(s, _)| s).unwrap_or_default();
    let target_postfix = spec.required_string("targetPostfix");
    if let Some((p, pos)) = &target_postfix {
        if !is_dns_label(p) {
            spec.ctx().error(
                *pos,
                "spec.targetPostfix",
                format!("{p:?} becomes part of a DNS name; use lowercase letters, digits and '-'"),
            );
        }
    }
    Some(RouterGateway { meta, controller, credential_name, target_postfix: target_postfix?.0 })
}
