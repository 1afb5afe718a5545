//! Gateway API (`Gateway`, `HTTPRoute`) and Envoy Gateway (`Backend`, `BackendTrafficPolicy`).

use std::net::IpAddr;
use std::time::Duration;

use veer_core::outlier::OutlierConfig;
use veer_core::policy::{ActiveHealthCheck, RetryOn, RetryPolicy};

use crate::decode::Obj;
use crate::diag::Pos;
use crate::meta::Meta;

#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub meta: Meta,
    pub endpoints: Vec<BackendEndpoint>,
    pub fallback: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendEndpoint {
    Fqdn { hostname: String, port: u16 },
    Ip { address: IpAddr, port: u16 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendTrafficPolicy {
    pub meta: Meta,
    pub targets: Vec<TargetRef>,
    pub passive: Option<OutlierConfig>,
    pub active: Option<ActiveHealthCheck>,
    pub retry: Option<RetryPolicy>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gateway {
    pub meta: Meta,
    pub class: String,
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    pub hostname: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    pub meta: Meta,
    pub parents: Vec<ParentRef>,
    pub hostnames: Vec<String>,
    pub rules: Vec<RouteRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    pub name: String,
    pub namespace: String,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteRule {
    pub matches: Vec<PathMatch>,
    pub backends: Vec<BackendRef>,
    pub retry: Option<RetryPolicy>,
    pub timeout: Option<Duration>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendRef {
    /// `Backend` (Envoy Gateway) or `Service` (core).
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub port: Option<u16>,
    pub weight: u32,
    pub pos: Pos,
}

/// Envoy Gateway's passive health check defaults (reference §5.2).
pub fn eg_default_passive() -> OutlierConfig {
    OutlierConfig {
        interval: Duration::from_secs(3),
        consecutive_local_origin_failure: 5,
        consecutive_gateway_failure: 0,
        enforcing_consecutive_gateway_failure: 0,
        consecutive_5xx: 5,
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 10,
        split_external_local_origin_errors: false,
        ..OutlierConfig::default()
    }
}

pub(crate) fn read_backend(spec: &Obj<'_>, meta: Meta) -> Option<Backend> {
    let mut endpoints = Vec::new();
    for e in spec.objs("endpoints") {
        // Count what is set, not what parsed: a malformed fqdn is still the one kind given.
        let kinds = ["fqdn", "ip", "unix"].iter().filter(|k| e.has(k)).count();
        if let Some(f) = e.obj("fqdn") {
            let host = f.required_string("hostname");
            let port = f.port("port");
            if !f.has("port") {
                f.ctx().error(f.pos(), &f.field_path("port"), "required field is missing");
            }
            if let Some((h, pos)) = &host {
                if h.parse::<IpAddr>().is_ok() {
                    f.ctx().error(*pos, &f.field_path("hostname"), "an IP address belongs in an ip endpoint, not fqdn");
                }
            }
            f.finish();
            if let (Some((hostname, _)), Some(port)) = (host, port) {
                endpoints.push(BackendEndpoint::Fqdn { hostname, port });
            }
        }
        if let Some(i) = e.obj("ip") {
            let address = i.required_string("address").and_then(|(a, pos)| match a.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    i.ctx().error(pos, &i.field_path("address"), format!("{a:?} is not an IP address"));
                    None
                }
            });
            let port = i.port("port");
            if !i.has("port") {
                i.ctx().error(i.pos(), &i.field_path("port"), "required field is missing");
            }
            i.finish();
            if let (Some(address), Some(port)) = (address, port) {
                endpoints.push(BackendEndpoint::Ip { address, port });
            }
        }
        e.tolerate("unix", "unix socket endpoints are not supported");
        if kinds != 1 {
            e.ctx().error(e.pos(), e.path(), "set exactly one of fqdn, ip or unix");
        }
        e.skip("zone");
        e.skip("hostname");
        e.finish();
    }
    if !spec.has("endpoints") {
        spec.ctx().error(spec.pos(), "spec.endpoints", "a Backend needs at least one endpoint");
    }
    let fallback = spec.bool("fallback").unwrap_or(false);
    spec.tolerate("appProtocols", "the protocol is detected per connection");
    spec.tolerate("tls", "upstream TLS to Backends is not supported yet");
    Some(Backend { meta, endpoints, fallback })
}

fn read_target_ref(o: &Obj<'_>) -> Option<TargetRef> {
    let group = o.string("group").map(|(s, _)| s).unwrap_or_default();
    let kind = o.one_of("kind", &["HTTPRoute", "Gateway", "GRPCRoute"]).map(|(k, _)| k.to_string());
    let name = o.required_string("name");
    o.skip("sectionName");
    o.skip("namespace");
    let pos = o.pos();
    o.finish();
    Some(TargetRef { group, kind: kind?, name: name?.0, pos })
}

pub(crate) fn read_backend_traffic_policy(spec: &Obj<'_>, meta: Meta) -> Option<BackendTrafficPolicy> {
    let mut targets: Vec<TargetRef> = spec.objs("targetRefs").iter().filter_map(read_target_ref).collect();
    if let Some(t) = spec.obj("targetRef") {
        targets.extend(read_target_ref(&t));
    }
    if !spec.has("targetRefs") && !spec.has("targetRef") && !spec.has("targetSelectors") {
        spec.ctx().error(spec.pos(), "spec.targetRefs", "name the HTTPRoute or Gateway this policy applies to");
    }
    spec.tolerate("targetSelectors", "select targets by name with targetRefs");
    let mut passive = None;
    let mut active = None;
    if let Some(hc) = spec.obj("healthCheck") {
        if let Some(p) = hc.obj("passive") {
            let mut c = eg_default_passive();
            if let Some(v) = p.bool("splitExternalLocalOriginErrors") {
                c.split_external_local_origin_errors = v;
            }
            if let Some(v) = p.duration("interval") {
                c.interval = v;
            }
            if let Some(v) = p.u32("consecutiveLocalOriginFailures", 0, u32::MAX) {
                c.consecutive_local_origin_failure = v;
            }
            if let Some(v) = p.u32("consecutiveGatewayErrors", 0, u32::MAX) {
                c.consecutive_gateway_failure = v;
                if v > 0 {
                    p.ctx().warn(
                        p.pos(),
                        &p.field_path("consecutiveGatewayErrors"),
                        "Envoy Gateway sets no enforcement for gateway errors, so Envoy counts them but never ejects; use consecutive5XxErrors",
                    );
                }
            }
            if let Some(v) = p.u32("consecutive5XxErrors", 0, u32::MAX) {
                c.consecutive_5xx = v;
                c.enforcing_consecutive_5xx = if v > 0 { 100 } else { 0 };
            }
            if let Some(v) = p.duration("baseEjectionTime") {
                c.base_ejection_time = v;
                c.max_ejection_time = c.max_ejection_time.max(v);
            }
            if let Some(v) = p.u32("maxEjectionPercent", 0, 100) {
                if v > 0 {
                    c.max_ejection_percent = v;
                }
            }
            crate::gloo::check_outlier_timing(&p, &c);
            p.finish();
            passive = Some(c);
        }
        if let Some(a) = hc.obj("active") {
            let mut check = ActiveHealthCheck::default();
            if let Some((t, pos)) = a.one_of("type", &["HTTP", "TCP", "GRPC"]) {
                if t != "HTTP" {
                    a.ctx().error(pos, &a.field_path("type"), format!("{t} health checks are not supported yet; use HTTP"));
                }
            }
            if let Some(v) = a.duration("interval") {
                check.interval = v;
            }
            if let Some(v) = a.duration("timeout") {
                check.timeout = v;
            }
            if let Some(v) = a.u32("healthyThreshold", 1, 1000) {
                check.healthy_threshold = v;
            }
            if let Some(v) = a.u32("unhealthyThreshold", 1, 1000) {
                check.unhealthy_threshold = v;
            }
            if let Some(h) = a.obj("http") {
                if let Some((p, pos)) = h.required_string("path") {
                    if !p.starts_with('/') {
                        h.ctx().error(pos, &h.field_path("path"), "must start with '/'");
                    }
                    check.path = p;
                }
                h.one_of("method", &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"]);
                let statuses = h.seq("expectedStatuses");
                if !statuses.is_empty() {
                    check.expected_statuses = statuses
                        .iter()
                        .filter_map(|(n, path)| match n.scalar().and_then(|s| s.parse::<u16>().ok()) {
                            Some(c) if (100..600).contains(&c) => Some((c, c)),
                            _ => {
                                h.ctx().error(n.pos, path, "expected an HTTP status code 100..=599");
                                None
                            }
                        })
                        .collect();
                }
                h.tolerate("expectedResponse", "only status codes are checked");
                h.finish();
            } else if a.has("type") {
                a.ctx().error(a.pos(), &a.field_path("http"), "an HTTP health check needs http.path");
            }
            if check.timeout >= check.interval {
                a.ctx().warn(a.pos(), &a.field_path("timeout"), "timeout is not shorter than interval; probes may overlap");
            }
            a.tolerate("tcp", "TCP health checks are not supported yet");
            a.tolerate("grpc", "gRPC health checks are not supported yet");
            a.finish();
            active = Some(check);
        }
        hc.finish();
    }
    let retry = spec.obj("retry").map(|r| {
        let mut p = RetryPolicy { attempts: 2, ..RetryPolicy::istio_default() };
        if let Some(n) = r.u32("numRetries", 0, 100) {
            p.attempts = n;
        }
        if let Some(on) = r.obj("retryOn") {
            let mut flags = RetryOn::default();
            for (t, pos) in on.strings("triggers") {
                match t.as_str() {
                    "5xx" => flags.five_xx = true,
                    "gateway-error" => flags.gateway_error = true,
                    "reset" => flags.reset = true,
                    "connect-failure" => flags.connect_failure = true,
                    "retriable-4xx" => flags.retriable_4xx = true,
                    "refused-stream" => flags.refused_stream = true,
                    "retriable-status-codes" | "cancelled" | "deadline-exceeded" | "internal" | "resource-exhausted" | "unavailable" => {}
                    other => on.ctx().error(pos, &on.field_path("triggers"), format!("{other:?} is not a retry trigger; expected 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes or a gRPC status")),
                }
            }
            flags.retriable_status_codes = on
                .seq("httpStatusCodes")
                .iter()
                .filter_map(|(n, _)| n.scalar().and_then(|s| s.parse().ok()))
                .collect();
            on.finish();
            p.retry_on = flags;
        }
        if let Some(per) = r.obj("perRetry") {
            p.per_try_timeout = per.duration("timeout");
            if let Some(b) = per.obj("backOff") {
                if let Some(v) = b.duration("baseInterval") {
                    p.backoff_base = v;
                    p.backoff_max = v * 10;
                }
                if let Some(v) = b.duration("maxInterval") {
                    p.backoff_max = v;
                }
                b.finish();
            }
            per.finish();
        }
        r.finish();
        p
    });
    for t in ["loadBalancer", "circuitBreaker", "timeout", "tcpKeepalive", "connection", "proxyProtocol", "faultInjection", "rateLimit", "useClientProtocol", "dns", "http2", "compression", "responseOverride", "mergeType", "requestBuffer", "telemetry"] {
        spec.tolerate(t, "this BackendTrafficPolicy field is not part of failover");
    }
    Some(BackendTrafficPolicy { meta, targets, passive, active, retry })
}

pub(crate) fn read_gateway(spec: &Obj<'_>, meta: Meta) -> Option<Gateway> {
    let class = spec.required_string("gatewayClassName").map(|(c, _)| c).unwrap_or_default();
    let mut listeners = Vec::new();
    for l in spec.objs("listeners") {
        let name = l.required_string("name").map(|(n, _)| n).unwrap_or_default();
        let protocol = l.one_of("protocol", &["HTTP", "HTTPS", "TLS", "TCP", "UDP"]).map(|(p, _)| p.to_string()).unwrap_or_default();
        let port = l.port("port");
        if !l.has("port") {
            l.ctx().error(l.pos(), &l.field_path("port"), "required field is missing");
        }
        let hostname = l.string("hostname").map(|(h, _)| h);
        l.tolerate("tls", "TLS listeners are not supported yet");
        l.skip("allowedRoutes");
        l.finish();
        if let Some(port) = port {
            listeners.push(Listener { name, protocol, port, hostname });
        }
    }
    if !spec.has("listeners") {
        spec.ctx().error(spec.pos(), "spec.listeners", "a Gateway needs at least one listener");
    }
    spec.tolerate("addresses", "veer listens where the Cluster says");
    spec.tolerate("infrastructure", "not used");
    Some(Gateway { meta, class, listeners })
}

pub(crate) fn read_http_route(spec: &Obj<'_>, meta: Meta) -> Option<HttpRoute> {
    let parents = spec
        .objs("parentRefs")
        .into_iter()
        .filter_map(|p| {
            p.skip("group");
            p.one_of("kind", &["Gateway"]);
            let name = p.required_string("name");
            let namespace = p.string("namespace").map(|(n, _)| n).unwrap_or_else(|| meta.namespace.clone());
            p.skip("sectionName");
            p.skip("port");
            let pos = p.pos();
            p.finish();
            Some(ParentRef { name: name?.0, namespace, pos })
        })
        .collect();
    let hostnames = spec.strings("hostnames").into_iter().map(|(h, _)| h.to_ascii_lowercase()).collect();
    let mut rules = Vec::new();
    for r in spec.objs("rules") {
        let mut matches = Vec::new();
        for m in r.objs("matches") {
            if let Some(p) = m.obj("path") {
                let t = p.one_of("type", &["Exact", "PathPrefix", "RegularExpression"]).map(|(t, _)| t).unwrap_or("PathPrefix");
                let v = p.string("value").map(|(v, _)| v).unwrap_or_else(|| "/".into());
                if !v.starts_with('/') && t != "RegularExpression" {
                    p.ctx().error(p.pos(), &p.field_path("value"), "a path must start with '/'");
                }
                p.finish();
                matches.push(match t {
                    "Exact" => PathMatch::Exact(v),
                    "RegularExpression" => PathMatch::Regex(v),
                    _ => PathMatch::Prefix(v),
                });
            } else {
                matches.push(PathMatch::Prefix("/".into()));
            }
            m.tolerate("headers", "header matches are not supported yet");
            m.tolerate("queryParams", "query matches are not supported yet");
            m.tolerate("method", "method matches are not supported yet");
            m.finish();
        }
        if matches.is_empty() {
            matches.push(PathMatch::Prefix("/".into()));
        }
        let mut backends = Vec::new();
        for b in r.objs("backendRefs") {
            let group = b.string("group").map(|(g, _)| g).unwrap_or_default();
            let kind = b.string("kind").map(|(k, _)| k).unwrap_or_else(|| "Service".into());
            match (group.as_str(), kind.as_str()) {
                ("" | "core", "Service") | ("gateway.envoyproxy.io", "Backend") => {}
                _ => b.ctx().error(b.pos(), b.path(), format!("backendRef {group}/{kind} is not supported; use a core Service or a gateway.envoyproxy.io Backend")),
            }
            let name = b.required_string("name");
            let namespace = b.string("namespace").map(|(n, _)| n).unwrap_or_else(|| meta.namespace.clone());
            let port = b.port("port");
            let weight = b.u32("weight", 0, 1_000_000).unwrap_or(1);
            b.tolerate("filters", "per-backend filters are not supported");
            let pos = b.pos();
            b.finish();
            if let Some((name, _)) = name {
                backends.push(BackendRef { kind, name, namespace, port, weight, pos });
            }
        }
        let retry = r.obj("retry").map(|rt| {
            let mut p = RetryPolicy::istio_default();
            if let Some(n) = rt.u32("attempts", 0, 100) {
                p.attempts = n;
            }
            let codes: Vec<u16> = rt.seq("codes").iter().filter_map(|(n, _)| n.scalar().and_then(|s| s.parse().ok())).collect();
            if !codes.is_empty() {
                p.retry_on.retriable_status_codes = codes;
            }
            if let Some(b) = rt.duration("backoff") {
                p.backoff_base = b;
            }
            rt.finish();
            p
        });
        let timeout = r.obj("timeouts").and_then(|t| {
            let v = t.duration("request");
            t.duration("backendRequest");
            t.finish();
            v
        });
        r.tolerate("filters", "route filters are not supported yet");
        r.tolerate("sessionPersistence", "not supported");
        r.skip("name");
        let pos = r.pos();
        r.finish();
        rules.push(RouteRule { matches, backends, retry, timeout, pos });
    }
    Some(HttpRoute { meta, parents, hostnames, rules })
}
