//! Gateway API (`Gateway`, `HTTPRoute`, and the order a host's route rules are tried in) and Envoy Gateway (`Backend`, `BackendTrafficPolicy`).

use std::net::IpAddr;
use std::time::Duration;

use veer_core::outlier::OutlierConfig;
use veer_core::policy::{ActiveHealthCheck, CheckProtocol, RetryOn, RetryPolicy};
use veer_core::slowstart::SlowStart;

use crate::decode::Obj;
use crate::diag::Pos;
use crate::httpmatch::{HeaderMatch, Method, Pattern, QueryMatch, RouteMatch, ValueMatch};
use crate::meta::Meta;

pub use crate::httpmatch::PathMatch;

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
    /// `circuitBreaker`, as the caps veer applies per endpoint.
    pub circuit_breakers: Option<veer_core::policy::CircuitBreakers>,
    /// `loadBalancer.slowStart.window`: `None` when unset or zero: slow start
    /// off, as in Envoy.
    pub slow_start: Option<SlowStart>,
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
    /// The cluster whose node serves its listeners (set by `ManifestSet::build`).
    pub cluster: String,
    pub class: String,
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    pub hostname: Option<String>,
    /// `allowedRoutes.namespaces.from: All` (default `Same`: routes of the Gateway's namespace).
    pub all_namespaces: bool,
    /// `allowedRoutes.kinds` admits HTTPRoute (it does when the list is absent).
    pub admits_http_routes: bool,
    /// `allowedRoutes.kinds` admits TLSRoute (it does when the list is absent).
    pub admits_tls_routes: bool,
    /// A `TLS` listener with `tls.mode: Passthrough`: it routes connections by SNI, unread, to
    /// the TLSRoutes attached to it (the only kind of `TLS` listener veer serves).
    pub passthrough: bool,
    /// `tls` of an `HTTPS` listener: the certificates it terminates TLS with.
    pub tls: Option<ListenerTls>,
    pub pos: Pos,
}

/// An `HTTPS` listener's `tls` (mode `Terminate`, the only mode veer serves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// Never empty: the first is the listener's default (for clients that send no SNI, or a
    /// name no certificate carries).
    pub certificate_refs: Vec<CertificateRef>,
}

/// A `certificateRefs` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRef {
    pub source: CertificateSource,
    pub pos: Pos,
}

/// Where a listener's certificate is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateSource {
    /// A `kubernetes.io/tls` Secret of the Gateway's namespace.
    Secret { namespace: String, name: String },
    /// veer's extension (group `veer.io`, kind `PEMFile`): a PEM file holding the chain and its
    /// key, its `name` a path relative to the manifest that names it, read with the manifests
    /// (a directory walk reads `.pem` files), so a rewrite reloads like a manifest's.
    PemFile { path: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    pub meta: Meta,
    pub parents: Vec<ParentRef>,
    /// `spec.hostnames`, as written (lower case).
    pub hostnames: Vec<String>,
    pub rules: Vec<RouteRule>,
    /// Where veer serves this route: the names its Gateway listeners accept it under (Gateway
    /// API attachment: parent, section, port, protocol, allowed namespaces and kinds, hostname
    /// intersection), exact names only, each with the cluster whose Gateway accepts it. Set by
    /// `ManifestSet::build`; empty until then.
    pub served: Vec<Served>,
}

/// A host an HTTPRoute is served on, by the node of `cluster` (its Gateway's cluster), on the
/// socket of Gateway listener port `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub cluster: String,
    pub host: String,
    /// The accepting listener's port: the node serves the host on that port's socket only.
    pub port: u16,
}

impl HttpRoute {
    /// The hosts the node of `cluster` serves this route on, each once (a host accepted on two
    /// ports has two `served` entries).
    pub fn hosts_in<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let served = &self.served;
        served
            .iter()
            .enumerate()
            .filter(move |(i, s)| s.cluster == cluster && !served[..*i].iter().any(|e| e.cluster == cluster && e.host == s.host))
            .map(|(_, s)| s.host.as_str())
    }

    /// The Gateway listener ports on which the node of `cluster` serves this route on `host`.
    pub fn ports_of<'a>(&'a self, cluster: &'a str, host: &'a str) -> impl Iterator<Item = u16> + 'a {
        self.served.iter().filter(move |s| s.cluster == cluster && s.host == host).map(|s| s.port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    pub name: String,
    pub namespace: String,
    /// `sectionName`: one listener of the Gateway, by name.
    pub section: Option<String>,
    /// `port`: the Gateway's listeners on this port.
    pub port: Option<u16>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteRule {
    /// Never empty: a rule without `matches` has [`RouteMatch::any`].
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<BackendRef>,
    pub retry: Option<RetryPolicy>,
    pub timeout: Option<Duration>,
    pub pos: Pos,
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
    let kind = o.one_of("kind", &["HTTPRoute", "Gateway", "GRPCRoute", "TLSRoute"]).map(|(k, _)| k.to_string());
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
            let kind = a.one_of("type", &["HTTP", "TCP", "GRPC"]).map(|(t, pos)| {
                if t == "TCP" {
                    a.ctx().error(pos, &a.field_path("type"), "TCP health checks are not supported yet; use HTTP or GRPC");
                }
                t
            });
            if kind == Some("GRPC") {
                let mut service = String::new();
                if let Some(g) = a.obj("grpc") {
                    if let Some((s, _)) = g.string("service") {
                        service = s;
                    }
                    g.finish();
                }
                check.protocol = CheckProtocol::Grpc { service };
                if a.has("http") {
                    a.ctx().error(a.pos_of("http"), &a.field_path("http"), "a GRPC health check takes grpc, not http");
                }
            } else if a.has("grpc") {
                a.ctx().error(a.pos_of("grpc"), &a.field_path("grpc"), "grpc is for type GRPC");
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
            } else if kind == Some("HTTP") {
                a.ctx().error(a.pos(), &a.field_path("http"), "an HTTP health check needs http.path");
            }
            if check.timeout >= check.interval {
                a.ctx().warn(a.pos(), &a.field_path("timeout"), "timeout is not shorter than interval; probes may overlap");
            }
            a.tolerate("tcp", "TCP health checks are not supported yet");
            a.raw("grpc");
            a.raw("http");
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
    let circuit_breakers = spec.obj("circuitBreaker").map(|cb| {
        let mut caps = veer_core::policy::CircuitBreakers::default();
        if let Some(n) = cb.u32("maxConnections", 1, u32::MAX) {
            caps.max_connections = n;
        }
        if let Some(n) = cb.u32("maxPendingRequests", 1, u32::MAX) {
            caps.max_pending_requests = n;
        }
        if let Some(n) = cb.u32("maxParallelRequests", 1, u32::MAX) {
            caps.max_requests = n;
        }
        for t in ["maxParallelRetries", "maxRequestsPerConnection", "perEndpoint"] {
            cb.tolerate(t, "this circuitBreaker setting is not applied; veer applies maxConnections, maxPendingRequests and maxParallelRequests per endpoint");
        }
        cb.finish();
        caps
    });
    let slow_start = spec.obj("loadBalancer").and_then(|lb| read_load_balancer(&lb)).flatten();
    for t in [
        "timeout",
        "tcpKeepalive",
        "connection",
        "proxyProtocol",
        "faultInjection",
        "rateLimit",
        "useClientProtocol",
        "dns",
        "http2",
        "compression",
        "responseOverride",
        "mergeType",
        "requestBuffer",
        "telemetry",
    ] {
        spec.tolerate(t, "this BackendTrafficPolicy field is not part of failover");
    }
    Some(BackendTrafficPolicy { meta, targets, passive, active, retry, circuit_breakers, slow_start })
}

/// `loadBalancer`: veer picks by weight whatever the `type`, so only `slowStart` acts; Envoy
/// Gateway allows it with RoundRobin and LeastRequest only. A zero window turns it off.
fn read_load_balancer(lb: &Obj<'_>) -> Option<Option<SlowStart>> {
    let kind = lb.one_of("type", &["RoundRobin", "LeastRequest", "Random", "ConsistentHash"]);
    if !lb.has("type") {
        lb.ctx().error(lb.pos(), &lb.field_path("type"), "required field is missing");
    }
    lb.tolerate("consistentHash", "consistent hashing is not modelled; endpoints are picked by weight");
    lb.tolerate("zoneAware", "zone-aware routing is not modelled; priorities come from the Backends' fallback");
    lb.tolerate("endpointOverride", "endpoint override is not modelled");
    let slow = lb.obj("slowStart").and_then(|s| {
        let window = s.duration("window");
        if !s.has("window") {
            s.ctx().error(s.pos(), &s.field_path("window"), "required field is missing");
        }
        if let Some((t @ ("Random" | "ConsistentHash"), _)) = kind {
            s.ctx().error(s.pos(), s.path(), format!("slowStart is only supported with RoundRobin and LeastRequest, not {t}"));
        }
        s.finish();
        window.map(|w| if w.is_zero() { None } else { Some(SlowStart::with_window(w)) })
    });
    lb.finish();
    slow
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
        let hostname = l.string("hostname").map(|(h, _)| h.to_ascii_lowercase());
        let mut passthrough = false;
        let tls = match (protocol.as_str(), l.obj("tls")) {
            ("HTTPS", Some(t)) => read_listener_tls(&t, &meta.namespace),
            ("HTTPS", None) => {
                l.ctx().error(l.pos(), &l.field_path("tls"), "an HTTPS listener needs tls.certificateRefs: the certificates it presents");
                None
            }
            ("HTTP", Some(t)) => {
                t.ctx().error(t.pos(), t.path(), "tls belongs to HTTPS listeners; set protocol: HTTPS to terminate TLS here");
                None
            }
            ("TLS", t) => {
                passthrough = read_passthrough_tls(&l, t.as_ref());
                None
            }
            (_, _) => {
                l.tolerate("tls", "only HTTPS and TLS listeners use tls");
                None
            }
        };
        let (mut all_namespaces, mut admits_http_routes, mut admits_tls_routes) = (false, true, true);
        if let Some(a) = l.obj("allowedRoutes") {
            if let Some(n) = a.obj("namespaces") {
                match n.one_of("from", &["Same", "All", "Selector"]).map(|(f, _)| f) {
                    Some("All") => all_namespaces = true,
                    Some("Selector") => {
                        // veer reads no Namespace labels: admitting by selector would be a guess.
                        n.ctx().error(
                            n.pos_of("from"),
                            &n.field_path("from"),
                            "veer cannot apply a namespace selector (it reads no Namespace labels); use Same or All",
                        );
                    }
                    _ => {}
                }
                n.skip("selector");
                n.finish();
            }
            let kinds: Vec<Obj<'_>> = a.objs("kinds");
            if a.has("kinds") {
                let admitted: Vec<String> = kinds
                    .iter()
                    .filter_map(|k| {
                        let group = k.string("group").map_or_else(|| "gateway.networking.k8s.io".to_string(), |(g, _)| g);
                        let kind = k.required_string("kind").map(|(k, _)| k).unwrap_or_default();
                        k.finish();
                        (group == "gateway.networking.k8s.io").then_some(kind)
                    })
                    .collect();
                admits_http_routes = admitted.iter().any(|k| k == "HTTPRoute");
                admits_tls_routes = admitted.iter().any(|k| k == "TLSRoute");
            }
            a.finish();
        }
        l.finish();
        if let Some(port) = port {
            listeners.push(Listener {
                name,
                protocol,
                port,
                hostname,
                all_namespaces,
                admits_http_routes,
                admits_tls_routes,
                passthrough,
                tls,
                pos: l.pos(),
            });
        }
    }
    if !spec.has("listeners") {
        spec.ctx().error(spec.pos(), "spec.listeners", "a Gateway needs at least one listener");
    }
    spec.tolerate("addresses", "veer listens where the Cluster says");
    spec.tolerate("infrastructure", "not used");
    Some(Gateway { meta, cluster: String::new(), class, listeners })
}

/// A `TLS` listener's `tls`: whether it is in `Passthrough` mode, the only one veer serves on a
/// `TLS` listener (terminating TLS is what `HTTPS` listeners are for); errors otherwise.
fn read_passthrough_tls(l: &Obj<'_>, t: Option<&Obj<'_>>) -> bool {
    let Some(t) = t else {
        // Gateway API's default mode is Terminate: a listener without `tls` would need
        // certificates to terminate with.
        l.ctx().error(
            l.pos(),
            &l.field_path("tls"),
            "a TLS listener needs tls.mode: Passthrough (veer terminates TLS on HTTPS listeners only)",
        );
        return false;
    };
    let mode = t.one_of("mode", &["Terminate", "Passthrough"]);
    let ok = match mode {
        Some(("Passthrough", _)) => true,
        Some((_, pos)) => {
            t.ctx().error(
                pos,
                &t.field_path("mode"),
                "veer serves TLS listeners in Passthrough mode only; terminate TLS on an HTTPS listener",
            );
            false
        }
        None if !t.has("mode") => {
            t.ctx().error(
                t.pos(),
                &t.field_path("mode"),
                "a TLS listener's mode defaults to Terminate, which veer serves on HTTPS listeners only: set mode: Passthrough",
            );
            false
        }
        None => false,
    };
    if t.has("certificateRefs") {
        t.ctx().error(
            t.pos_of("certificateRefs"),
            &t.field_path("certificateRefs"),
            "a Passthrough listener presents no certificate: the backends terminate TLS",
        );
    }
    t.skip("certificateRefs");
    t.tolerate("options", "a Passthrough listener reads only the ClientHello's server name");
    t.finish();
    ok
}

/// An `HTTPS` listener's `tls`: mode `Terminate` with at least one certificate; `None` (with
/// errors reported) otherwise.
fn read_listener_tls(t: &Obj<'_>, namespace: &str) -> Option<ListenerTls> {
    let mut ok = true;
    if let Some(("Passthrough", pos)) = t.one_of("mode", &["Terminate", "Passthrough"]) {
        t.ctx().error(pos, &t.field_path("mode"), "veer terminates TLS on HTTPS listeners (mode: Terminate); passthrough is not supported");
        ok = false;
    }
    let mut certificate_refs = Vec::new();
    for r in t.objs("certificateRefs") {
        let group = r.string("group").map(|(g, _)| g).unwrap_or_default();
        let kind = r.string("kind").map(|(k, _)| k).unwrap_or_else(|| "Secret".into());
        let name = r.required_string("name");
        let ns = r.string("namespace");
        r.finish();
        match (group.as_str(), kind.as_str()) {
            ("" | "core", "Secret") => {}
            ("veer.io", "PEMFile") => {
                if let Some((_, pos)) = ns {
                    r.ctx().error(
                        pos,
                        &r.field_path("namespace"),
                        "a PEMFile has no namespace: its name is a path relative to this manifest",
                    );
                    ok = false;
                }
                if let Some((name, _)) = name {
                    let path = crate::files::beside(&t.ctx().file, &name);
                    certificate_refs.push(CertificateRef { source: CertificateSource::PemFile { path }, pos: r.pos() });
                }
                continue;
            }
            _ => {
                r.ctx().error(
                    r.pos(),
                    r.path(),
                    format!(
                        "certificateRef {group}/{kind} is not supported; use a core Secret of type kubernetes.io/tls, or veer.io PEMFile"
                    ),
                );
                ok = false;
                continue;
            }
        }
        let namespace = match ns {
            Some((n, pos)) if n != namespace => {
                // Gateway API lets a ReferenceGrant in the Secret's namespace allow this; veer
                // reads no ReferenceGrant, and taking a Secret of another namespace without one
                // would hand one namespace's keys to another's Gateway.
                r.ctx().error(
                    pos,
                    &r.field_path("namespace"),
                    format!("a certificate of namespace {n} for a Gateway of namespace {namespace} needs a ReferenceGrant, which veer does not read; put the Secret in namespace {namespace}"),
                );
                ok = false;
                continue;
            }
            _ => namespace.to_string(),
        };
        if let Some((name, _)) = name {
            certificate_refs.push(CertificateRef { source: CertificateSource::Secret { namespace, name }, pos: r.pos() });
        }
    }
    if certificate_refs.is_empty() && ok {
        t.ctx().error(t.pos(), &t.field_path("certificateRefs"), "an HTTPS listener needs at least one certificateRef");
        ok = false;
    }
    t.tolerate("options", "veer applies rustls' safe defaults (TLS 1.2 and 1.3), not implementation-specific options");
    if t.has("frontendValidation") {
        // Accepting clients without the certificate check the manifest asks for would let in
        // clients it means to keep out.
        t.ctx().error(
            t.pos_of("frontendValidation"),
            &t.field_path("frontendValidation"),
            "client certificate validation is not supported; remove it or terminate mTLS elsewhere",
        );
        ok = false;
    }
    t.skip("frontendValidation");
    t.finish();
    Some(ListenerTls { certificate_refs }).filter(|_| ok)
}

pub(crate) fn read_http_route(spec: &Obj<'_>, meta: Meta) -> Option<HttpRoute> {
    let parents = read_parent_refs(spec, &meta);
    let hostnames = spec.strings("hostnames").into_iter().map(|(h, _)| h.to_ascii_lowercase()).collect();
    let mut rules = Vec::new();
    for r in spec.objs("rules") {
        let entries = r.objs("matches");
        let mut matches: Vec<RouteMatch> = entries.iter().filter_map(read_route_match).collect();
        if entries.is_empty() {
            matches.push(RouteMatch::any());
        }
        let backends = r.objs("backendRefs").iter().filter_map(|b| read_backend_ref(b, &meta)).collect();
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
        refuse_filters(&r);
        r.tolerate("sessionPersistence", "not supported");
        r.skip("name");
        let pos = r.pos();
        r.finish();
        // A rule whose every match was refused is dropped with the resource (errors were
        // reported); it must never become a catch-all.
        if !matches.is_empty() {
            rules.push(RouteRule { matches, backends, retry, timeout, pos });
        }
    }
    Some(HttpRoute { meta, parents, hostnames, rules, served: Vec::new() })
}

/// A route's `parentRefs` (Gateways, by name, section or port); the namespace defaults to the route's.
pub(crate) fn read_parent_refs(spec: &Obj<'_>, meta: &Meta) -> Vec<ParentRef> {
    spec.objs("parentRefs")
        .into_iter()
        .filter_map(|p| {
            p.skip("group");
            p.one_of("kind", &["Gateway"]);
            let name = p.required_string("name");
            let namespace = p.string("namespace").map(|(n, _)| n).unwrap_or_else(|| meta.namespace.clone());
            let section = p.string("sectionName").map(|(s, _)| s);
            let port = p.port("port");
            let pos = p.pos();
            p.finish();
            Some(ParentRef { name: name?.0, namespace, section, port, pos })
        })
        .collect()
}

/// One `backendRefs` entry: a core Service or an Envoy Gateway Backend; filters are refused.
pub(crate) fn read_backend_ref(b: &Obj<'_>, meta: &Meta) -> Option<BackendRef> {
    let group = b.string("group").map(|(g, _)| g).unwrap_or_default();
    let kind = b.string("kind").map(|(k, _)| k).unwrap_or_else(|| "Service".into());
    match (group.as_str(), kind.as_str()) {
        ("" | "core", "Service") | ("gateway.envoyproxy.io", "Backend") => {}
        _ => b.ctx().error(
            b.pos(),
            b.path(),
            format!("backendRef {group}/{kind} is not supported; use a core Service or a gateway.envoyproxy.io Backend"),
        ),
    }
    let name = b.required_string("name");
    let namespace = b.string("namespace").map(|(n, _)| n).unwrap_or_else(|| meta.namespace.clone());
    let port = b.port("port");
    let weight = b.u32("weight", 0, 1_000_000).unwrap_or(1);
    refuse_filters(b);
    let pos = b.pos();
    b.finish();
    Some(BackendRef { kind, name: name?.0, namespace, port, weight, pos })
}

/// One `HTTPRouteMatch`, or `None` (with errors reported) when veer cannot apply all of it: a
/// match read without one of its conditions would catch traffic the rule must not see.
fn read_route_match(m: &Obj<'_>) -> Option<RouteMatch> {
    let mut ok = true;
    let path = match m.obj("path") {
        Some(p) => {
            let t = p.one_of("type", &["Exact", "PathPrefix", "RegularExpression"]).map(|(t, _)| t);
            if t.is_none() && p.has("type") {
                ok = false;
            }
            let t = t.unwrap_or("PathPrefix");
            let (v, pos) = p.string("value").unwrap_or_else(|| ("/".into(), p.pos()));
            let path = match t {
                "RegularExpression" => {
                    Pattern::new(&v).map(PathMatch::Regex).map_err(|e| format!("not a regular expression veer can run: {e}"))
                }
                _ => path_value_error(&v)
                    .map_or_else(|| Ok(if t == "Exact" { PathMatch::Exact(v.clone()) } else { PathMatch::Prefix(v.clone()) }), Err),
            };
            p.finish();
            match path {
                Ok(path) => Some(path),
                Err(e) => {
                    p.ctx().error(pos, &p.field_path("value"), e);
                    None
                }
            }
        }
        None => Some(PathMatch::Prefix("/".into())),
    };
    let method = m.string("method").and_then(|(v, pos)| {
        let method = Method::parse(&v);
        if method.is_none() {
            m.ctx().error(
                pos,
                &m.field_path("method"),
                format!("{v:?} is not an HTTP method Gateway API names; expected one of: {}", Method::NAMES.join(", ")),
            );
            ok = false;
        }
        method
    });
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for h in m.objs("headers") {
        let Some((name, value)) = read_value_match(&h, 4096, true) else {
            ok = false;
            continue;
        };
        let name = name.to_ascii_lowercase();
        if headers.iter().any(|x| x.name == name) {
            h.ctx().warn(h.pos(), h.path(), format!("ignored: an earlier entry already matches header {name:?} (names compare case-insensitively), and Gateway API considers only the first"));
            continue;
        }
        headers.push(HeaderMatch { name, value });
    }
    let mut query: Vec<QueryMatch> = Vec::new();
    for q in m.objs("queryParams") {
        let Some((name, value)) = read_value_match(&q, 1024, false) else {
            ok = false;
            continue;
        };
        if query.iter().any(|x| x.name == name) {
            q.ctx().warn(
                q.pos(),
                q.path(),
                format!("ignored: an earlier entry already matches query parameter {name:?}, and Gateway API considers only the first"),
            );
            continue;
        }
        query.push(QueryMatch { name, value });
    }
    m.finish();
    Some(RouteMatch { path: path?, method, headers, query }).filter(|_| ok)
}

/// The `name`, `type` and `value` of an `HTTPHeaderMatch` or `HTTPQueryParamMatch`.
fn read_value_match(o: &Obj<'_>, max_len: usize, header: bool) -> Option<(String, ValueMatch)> {
    let t = o.one_of("type", &["Exact", "RegularExpression"]);
    let bad_type = t.is_none() && o.has("type");
    let name = o.required_string("name");
    let value = o.required_string("value");
    o.finish();
    let (name, name_pos) = name?;
    let (value, value_pos) = value?;
    // Header names are tokens (RFC 9110 §5.1): no `:` (HTTP/2 pseudo-headers are not headers),
    // no space. Query names are any non-empty string, as the spec's type allows.
    if name.is_empty() || header && !name.bytes().all(is_token_byte) {
        o.ctx().error(
            name_pos,
            &o.field_path("name"),
            format!("{name:?} is not a valid {} name", if header { "header" } else { "query parameter" }),
        );
        return None;
    }
    if value.is_empty() || value.len() > max_len {
        o.ctx().error(value_pos, &o.field_path("value"), format!("a value must be 1 to {max_len} characters long"));
        return None;
    }
    if bad_type {
        return None;
    }
    let value = match t.map_or("Exact", |(t, _)| t) {
        "RegularExpression" => match Pattern::new(&value) {
            Ok(p) => ValueMatch::Regex(p),
            Err(e) => {
                o.ctx().error(value_pos, &o.field_path("value"), format!("not a regular expression veer can run: {e}"));
                return None;
            }
        },
        _ => ValueMatch::Exact(value),
    };
    Some((name, value))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why an `Exact` or `PathPrefix` value is not a path Gateway API accepts, if it is not.
fn path_value_error(v: &str) -> Option<String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "-/._~!$&'()*+,;=:@%".contains(c);
    if !v.starts_with('/') {
        Some("a path must start with '/'".into())
    } else if v.len() > 1024 {
        Some("a path is at most 1024 characters long".into())
    } else if v.contains("//") || v.contains("/./") || v.contains("/../") || v.ends_with("/.") || v.ends_with("/..") {
        Some("a path must not contain '//', '/./' or '/../', nor end with '/.' or '/..'".into())
    } else if v.to_ascii_lowercase().contains("%2f") {
        Some("a path must not contain an encoded '/' (%2F)".into())
    } else {
        v.chars().find(|c| !valid_char(*c)).map(|c| format!("{c:?} is not allowed in a path; percent-encode it"))
    }
}

/// `filters` of a rule or a backendRef: each is an error naming its type. veer applies no
/// filter yet, and forwarding without one (no redirect, no rewrite, no header change, no
/// mirror) would do something other than what the rule says.
fn refuse_filters(o: &Obj<'_>) {
    for (node, path) in o.seq("filters") {
        let kind = o.ctx().obj(node, &path).and_then(|f| {
            // The filter's own fields are not read: the filter is refused as a whole.
            f.string("type").map(|(t, _)| t)
        });
        let what = kind.map_or_else(|| "a filter".to_string(), |t| format!("filter {t}"));
        o.ctx().error(node.pos, &path, format!("{what} is not supported: veer applies no HTTPRoute filters, and routing without it would change what the rule does; remove it or route elsewhere"));
    }
}

/// The hosts a route is accepted under on one listener: Gateway API's intersection of the
/// listener's hostname with the route's. `None`: every host (neither names one).
pub fn listener_hosts(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(l) = listener else {
        return if route.is_empty() { None } else { Some(route.to_vec()) };
    };
    if route.is_empty() {
        return Some(vec![l.to_string()]);
    }
    let covers = |wild: &str, name: &str| wild.strip_prefix('*').is_some_and(|suffix| name.len() > suffix.len() && name.ends_with(suffix));
    Some(
        route
            .iter()
            .filter_map(|r| {
                if r == l || covers(l, r) {
                    Some(r.clone())
                } else if covers(r, l) {
                    Some(l.to_string())
                } else {
                    None
                }
            })
            .collect(),
    )
}

/// One match of one rule of one route: what a request on the route's host is tested against.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'r> {
    pub route: &'r HttpRoute,
    /// The rule's index in the route.
    pub rule: usize,
    pub matched: &'r RouteMatch,
}

/// Every match of every rule of `routes` (the routes of one host), in the order Gateway API
/// tries them: by [`Precedence`](crate::httpmatch::Precedence); on a tie the oldest route (`creationTimestamp`; a route
/// without one counts as newest), then `namespace/name` in alphabetical order; within a route
/// the first rule, and within a rule the first match.
pub fn ordered<'r>(routes: &[&'r HttpRoute]) -> Vec<Candidate<'r>> {
    let mut all: Vec<Candidate<'r>> = routes
        .iter()
        .flat_map(|route| {
            route
                .rules
                .iter()
                .enumerate()
                .flat_map(move |(rule, r)| r.matches.iter().map(move |matched| Candidate { route, rule, matched }))
        })
        .collect();
    // A stable sort: equal keys keep rule and match order.
    all.sort_by(|a, b| {
        // Timestamps are in one fixed UTC form, so text order is time order.
        let age = |c: &Candidate<'r>| (c.route.meta.created.is_none(), c.route.meta.created.as_deref());
        a.matched
            .precedence()
            .cmp(&b.matched.precedence())
            .then_with(|| age(a).cmp(&age(b)))
            .then_with(|| full_name(a.route).cmp(full_name(b.route)))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    all
}

/// `namespace/name` as bytes, compared as the spec's string without building it.
fn full_name(route: &HttpRoute) -> impl Iterator<Item = u8> + '_ {
    route.meta.namespace.bytes().chain(std::iter::once(b'/')).chain(route.meta.name.bytes())
}
