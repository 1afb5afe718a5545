//! Istio `networking.istio.io`: `DestinationRule` (locality LB, outlier detection) and the east-west `Gateway`.

use std::time::Duration;

use veer_core::outlier::OutlierConfig;
use veer_core::priority::{DistributeEntry, FailoverEntry, LabelMatch};
use veer_core::slowstart::SlowStart;

use crate::decode::Obj;
use crate::diag::Pos;
use crate::gloo::check_outlier_timing;
use crate::meta::Meta;

#[derive(Clone, Debug, PartialEq)]
pub struct DestinationRule {
    pub meta: Meta,
    pub host: String,
    pub host_pos: Pos,
    pub locality: Option<LocalityLbSetting>,
    pub outlier: Option<IstioOutlier>,
    /// `trafficPolicy.connectionPool`, as the caps veer applies per endpoint.
    pub circuit_breakers: Option<veer_core::policy::CircuitBreakers>,
    /// `trafficPolicy.tls`, its files read: `None` when TLS is off.
    pub tls: Option<std::sync::Arc<crate::upstream_tls::UpstreamTls>>,
    /// `trafficPolicy.loadBalancer.warmupDurationSecs` (or `warmup`): `None` when unset or
    /// set to 0: slow start off, as in Envoy.
    pub slow_start: Option<SlowStart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalityLbSetting {
    pub enabled: bool,
    pub failover: Vec<FailoverEntry>,
    pub failover_priority: Vec<LabelMatch>,
    pub distribute: Vec<DistributeEntry>,
    pub pos: Pos,
}

/// Istio outlierDetection translated to Envoy, plus the panic threshold it implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstioOutlier {
    pub config: OutlierConfig,
    /// `minHealthPercent`, default 0: Istio turns Envoy's panic mode off unless asked.
    pub min_health_percent: u32,
    pub pos: Pos,
}

/// An Istio `Gateway`; veer reads the `AUTO_PASSTHROUGH` servers that expose hosts across networks.
#[derive(Clone, Debug, PartialEq)]
pub struct IstioGateway {
    pub meta: Meta,
    pub selector: std::collections::BTreeMap<String, String>,
    pub servers: Vec<IstioServer>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstioServer {
    pub port: u16,
    pub protocol: String,
    pub tls_mode: Option<String>,
    pub hosts: Vec<String>,
    pub pos: crate::diag::Pos,
}

impl IstioServer {
    /// `tls.mode: PASSTHROUGH`: veer routes its connections by SNI to the destination of the
    /// same host name at the server's port, unread.
    pub fn passthrough(&self) -> bool {
        self.tls_mode.as_deref() == Some("PASSTHROUGH")
    }
}

pub(crate) fn read_destination_rule(spec: &Obj<'_>, meta: Meta) -> Option<DestinationRule> {
    let (host, host_pos) = spec.required_string("host")?;
    let mut locality = None;
    let mut outlier = None;
    let mut circuit_breakers = None;
    let mut tls = None;
    let mut slow_start = None;
    if let Some(tp) = spec.obj("trafficPolicy") {
        if let Some(lb) = tp.obj("loadBalancer") {
            lb.one_of("simple", &["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"]);
            lb.tolerate("consistentHash", "consistent hashing is not modelled; endpoints are picked by weight");
            slow_start = read_warmup(&lb).flatten();
            if let Some(l) = lb.obj("localityLbSetting") {
                locality = Some(read_locality_lb(&l));
                l.finish();
            }
            lb.finish();
        }
        if let Some(o) = tp.obj("outlierDetection") {
            outlier = Some(read_outlier(&o));
            o.finish();
        }
        if let Some(cp) = tp.obj("connectionPool") {
            circuit_breakers = Some(read_connection_pool(&cp));
            cp.finish();
        }
        if let Some(t) = tp.obj("tls") {
            tls = crate::upstream_tls::read_client_tls(
                &t,
                &host,
                &format!("DestinationRule {}/{} trafficPolicy.tls", meta.namespace, meta.name),
            )
            .map(std::sync::Arc::new);
        }
        for t in ["portLevelSettings", "tunnel", "proxyProtocol", "retryBudget"] {
            tp.tolerate(t, "not part of veer's failover model yet");
        }
        tp.finish();
    }
    spec.tolerate("subsets", "subsets are not modelled");
    spec.tolerate("exportTo", "every destination is visible to every cluster");
    spec.tolerate("workloadSelector", "DestinationRules apply to every client");
    Some(DestinationRule { meta, host, host_pos, locality, outlier, circuit_breakers, tls, slow_start })
}

/// Istio's slow start: `warmupDurationSecs` (a duration, as istiod maps it to Envoy's
/// `slow_start_window` with aggression 1), or the newer `warmup` with its own `aggression` and
/// `minimumPercent`. Setting both is refused, as Istio's validation does. A zero window turns
/// slow start off.
fn read_warmup(lb: &Obj<'_>) -> Option<Option<SlowStart>> {
    let on = |s: SlowStart| if s.window.is_zero() { None } else { Some(s) };
    if lb.has("warmupDurationSecs") && lb.has("warmup") {
        lb.ctx().error(lb.pos_of("warmup"), &lb.field_path("warmup"), "set warmup or warmupDurationSecs, not both");
        lb.raw("warmupDurationSecs");
        lb.raw("warmup");
        return None;
    }
    if let Some(window) = lb.duration("warmupDurationSecs") {
        return Some(on(SlowStart::with_window(window)));
    }
    let w = lb.obj("warmup")?;
    let window = w.duration("duration");
    if !w.has("duration") {
        w.ctx().error(w.pos(), &w.field_path("duration"), "required field is missing");
    }
    let mut s = SlowStart::with_window(window.unwrap_or_default());
    if let Some(a) = w.number("aggression", 1.0, 1000.0) {
        s.aggression_milli = (a * 1000.0).round() as u32;
    }
    if let Some(m) = w.number("minimumPercent", 0.0, 100.0) {
        s.min_weight_percent = m.round() as u32;
    }
    w.finish();
    window.map(|_| on(s))
}

/// Istio's connectionPool as Envoy's circuit breakers (what istiod translates it to):
/// `tcp.maxConnections`, `http.http1MaxPendingRequests`, `http.http2MaxRequests`. Unset
/// fields keep Envoy's defaults (1,024).
fn read_connection_pool(cp: &Obj<'_>) -> veer_core::policy::CircuitBreakers {
    let mut caps = veer_core::policy::CircuitBreakers::default();
    if let Some(tcp) = cp.obj("tcp") {
        if let Some(n) = tcp.u32("maxConnections", 1, u32::MAX) {
            caps.max_connections = n;
        }
        tcp.tolerate("connectTimeout", "the connect timeout is the data plane's own (1 s)");
        tcp.tolerate("tcpKeepalive", "TCP keep-alive is not configured per destination");
        tcp.tolerate("maxConnectionDuration", "upstream connections live until idle for 50 s");
        tcp.tolerate("idleTimeout", "upstream connections are closed after 50 s idle");
        tcp.finish();
    }
    if let Some(http) = cp.obj("http") {
        if let Some(n) = http.u32("http1MaxPendingRequests", 1, u32::MAX) {
            caps.max_pending_requests = n;
        }
        if let Some(n) = http.u32("http2MaxRequests", 1, u32::MAX) {
            caps.max_requests = n;
        }
        for t in ["maxRequestsPerConnection", "maxRetries", "idleTimeout", "h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"] {
            http.tolerate(
                t,
                "this connectionPool setting is not applied; veer applies maxConnections, http1MaxPendingRequests and http2MaxRequests",
            );
        }
        http.finish();
    }
    caps
}

fn read_locality_lb(l: &Obj<'_>) -> LocalityLbSetting {
    let enabled = l.bool("enabled").unwrap_or(true);
    let failover: Vec<FailoverEntry> = l
        .objs("failover")
        .into_iter()
        .filter_map(|f| {
            let from = f.required_string("from");
            let to = f.required_string("to");
            if let (Some((a, _)), Some((b, pos))) = (&from, &to) {
                if a == b {
                    f.ctx().error(*pos, &f.field_path("to"), format!("failover from {a:?} to itself does nothing"));
                }
                if a.contains('/') || b.contains('/') {
                    f.ctx().error(f.pos(), f.path(), "failover from/to are regions, without '/'");
                }
            }
            f.finish();
            Some(FailoverEntry { from: from?.0, to: to?.0 })
        })
        .collect();
    let failover_priority: Vec<LabelMatch> = l
        .strings("failoverPriority")
        .into_iter()
        .filter_map(|(s, pos)| match s.split('=').collect::<Vec<_>>().as_slice() {
            [k, v] if !k.is_empty() => Some(LabelMatch { key: (*k).into(), value: Some((*v).into()) }),
            [k] if !k.is_empty() => Some(LabelMatch { key: (*k).into(), value: None }),
            _ => {
                l.ctx().error(pos, &l.field_path("failoverPriority"), format!("{s:?} is not a label key or key=value"));
                None
            }
        })
        .collect();
    let distribute: Vec<DistributeEntry> = l
        .objs("distribute")
        .into_iter()
        .filter_map(|d| {
            let from = d.required_string("from");
            let to: Vec<(String, u32)> = d.int_map("to", 0, 100).into_iter().map(|(k, v, _)| (k, u32::try_from(v).unwrap_or(0))).collect();
            let sum: u32 = to.iter().map(|t| t.1).sum();
            if sum != 100 {
                d.ctx().error(d.pos(), &d.field_path("to"), format!("weights sum to {sum}; they must sum to 100"));
            }
            d.finish();
            Some(DistributeEntry { from: from?.0, to })
        })
        .collect();
    if !distribute.is_empty() && !failover.is_empty() {
        l.ctx().error(
            l.pos(),
            l.path(),
            "distribute and failover cannot both be set (Istio rejects it); use failoverPriority with distribute weights in separate rules, or veer's own policy",
        );
    }
    if !enabled && (!failover.is_empty() || !distribute.is_empty() || !failover_priority.is_empty()) {
        l.ctx().warn(
            l.pos(),
            l.path(),
            "enabled: false turns locality load balancing off; the failover, failoverPriority and distribute settings here are not used",
        );
    }
    LocalityLbSetting { enabled, failover, failover_priority, distribute, pos: l.pos() }
}

fn read_outlier(o: &Obj<'_>) -> IstioOutlier {
    // Istio starts from Envoy's defaults and copies what is set (reference §4.6).
    let mut c = OutlierConfig { enforcing_consecutive_gateway_failure: 0, ..OutlierConfig::default() };
    let legacy = o.u32("consecutiveErrors", 0, u32::MAX);
    if let Some(v) = legacy {
        c.consecutive_gateway_failure = v;
        c.enforcing_consecutive_gateway_failure = if v > 0 { 100 } else { 0 };
        c.enforcing_consecutive_5xx = 0;
    }
    if let Some(v) = o.u32("consecutive5xxErrors", 0, u32::MAX) {
        c.consecutive_5xx = v;
        c.enforcing_consecutive_5xx = if v > 0 { 100 } else { 0 };
    }
    if let Some(v) = o.u32("consecutiveGatewayErrors", 0, u32::MAX) {
        c.consecutive_gateway_failure = v;
        c.enforcing_consecutive_gateway_failure = if v > 0 { 100 } else { 0 };
    }
    if let Some(v) = o.duration("interval") {
        c.interval = v;
    }
    if let Some(v) = o.duration("baseEjectionTime") {
        c.base_ejection_time = v;
        c.max_ejection_time = c.max_ejection_time.max(v);
    }
    if let Some(v) = o.u32("maxEjectionPercent", 0, 100) {
        if v > 0 {
            c.max_ejection_percent = v;
        }
    }
    if let Some(split) = o.bool("splitExternalLocalOriginErrors") {
        c.split_external_local_origin_errors = split;
    }
    if let Some(v) = o.u32("consecutiveLocalOriginFailures", 0, u32::MAX) {
        if v > 0 {
            c.consecutive_local_origin_failure = v;
        }
    }
    let min_health_percent = o.u32("minHealthPercent", 0, 100).unwrap_or(0);
    check_outlier_timing(o, &c);
    // A cap too small for the destination's endpoints is found by `ejection::warnings`, which
    // knows how many endpoints the rule applies to.
    let _ = Duration::ZERO;
    IstioOutlier { config: c, min_health_percent, pos: o.pos() }
}

pub(crate) fn read_istio_gateway(spec: &Obj<'_>, meta: Meta) -> Option<IstioGateway> {
    let selector = spec.string_map("selector");
    let mut servers = Vec::new();
    for s in spec.objs("servers") {
        let (port, protocol) = match s.obj("port") {
            Some(p) => {
                let n = p.port("number");
                p.string("name");
                let proto = p.one_of("protocol", &["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"]).map(|(s, _)| s.to_string());
                p.port("targetPort");
                p.finish();
                (n, proto.unwrap_or_else(|| "HTTP".into()))
            }
            None => {
                s.ctx().error(s.pos(), &s.field_path("port"), "required field is missing");
                (None, String::new())
            }
        };
        let tls_mode = s.obj("tls").and_then(|t| {
            let m = t
                .one_of("mode", &["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"])
                .map(|(m, _)| m.to_string());
            for k in [
                "credentialName",
                "httpsRedirect",
                "serverCertificate",
                "privateKey",
                "caCertificates",
                "subjectAltNames",
                "minProtocolVersion",
                "maxProtocolVersion",
                "cipherSuites",
                "credentialNames",
            ] {
                t.skip(k);
            }
            t.finish();
            m
        });
        let hosts: Vec<String> = s.strings("hosts").into_iter().map(|(h, _)| h).collect();
        if hosts.is_empty() {
            s.ctx().error(s.pos(), &s.field_path("hosts"), "a server needs at least one host");
        }
        s.skip("name");
        s.tolerate("bind", "veer binds where the Cluster says");
        s.tolerate("defaultEndpoint", "not used");
        let pos = s.pos();
        s.finish();
        if let Some(port) = port {
            servers.push(IstioServer { port, protocol, tls_mode, hosts, pos });
        }
    }
    Some(IstioGateway { meta, selector, servers })
}

/// Whether an Istio host pattern (`*`, `*.example.com`, `ns/host`) matches `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.rsplit_once('/').map_or(pattern, |(_, h)| h);
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}
