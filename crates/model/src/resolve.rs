//! From a host a client calls to a destination: its endpoints, its priority rule and its
//! resilience settings, whichever dialect defined it. This is where the dialects meet.

use std::net::SocketAddr;

use veer_core::load::LoadSettings;
use veer_core::names::{ClusterName, DestinationName};
use veer_core::outlier::OutlierConfig;
use veer_core::policy::Resilience;
use veer_core::priority::{DistributeEntry, FailoverEntry, PriorityRule};
use veer_core::table::GroupWeighting;
use veer_core::topology::{with_topology_labels, Address, Client, Endpoint, Health, Labels, Locality};

use crate::gateway::{self, BackendEndpoint, HttpRoute};
use crate::httpmatch::Plain;
use crate::inventory::Inventory;
use crate::istio::host_matches;
use crate::meta::Meta;
use crate::set::{cluster_local_service, ManifestSet, IMPLICIT_CLUSTER};
use crate::topology::{PortRef, Service, ServicePort};

/// What resolution reads: the policy (what the manifests say) and the endpoints each cluster
/// has (from the manifests, or from the cluster's own node). Destinations are the set's alone
/// ([`destinations`]); their endpoints are the inventory's.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub set: &'a ManifestSet,
    pub inventory: &'a Inventory,
}

/// A resource that shaped a destination, and what it decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub file: String,
    pub line: usize,
    pub role: String,
}

/// Everything needed to route to one host:port, independent of the client.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    pub endpoints: Vec<Endpoint>,
    pub rule: PriorityRule,
    pub weighting: GroupWeighting,
    pub resilience: Resilience,
    /// Upstreams speak HTTP/2 (a GRPC or HTTP2 port protocol).
    pub http2: bool,
    /// Upstreams speak TLS, as a DestinationRule's `trafficPolicy.tls` says.
    pub tls: Option<std::sync::Arc<crate::upstream_tls::UpstreamTls>>,
    pub sources: Vec<SourceRef>,
    /// Plain-language remarks: inert settings, defaults applied, unreachable endpoints.
    pub notes: Vec<String>,
}

/// One destination a set serves on the node of a cluster, before it is resolved
/// ([`resolve_key`] turns it into a [`Destination`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationKey<'s> {
    /// Its name in metrics, events and the admin API, unique among the keys of one set:
    /// `host:port`; for a route rule the host and the rule's first path (`shop.example.com/`),
    /// followed by ` (namespace/name rule i)` when an earlier rule already has that name.
    pub name: DestinationName,
    /// The host it is resolved under: a VirtualDestination's first host, a FailoverService's
    /// hostname, the first host the cluster serves a route on, a Service's
    /// `name.namespace.svc.cluster.local`.
    pub host: String,
    /// The other hosts the set gives it: a VirtualDestination's further hosts, a route's further
    /// hosts in the cluster.
    pub aliases: Vec<String>,
    /// `None` for a route rule: a route is served on the ports of the listeners that accept it.
    pub port: Option<u16>,
    pub kind: DestinationKind<'s>,
}

/// What defines a [`DestinationKey`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DestinationKind<'s> {
    /// A Gloo VirtualDestination, at one of its ports.
    VirtualDestination,
    /// A Service Mesh Hub FailoverService.
    FailoverService,
    /// One rule of an HTTPRoute.
    RouteRule { route: &'s HttpRoute, rule: usize },
    /// A TLSRoute: connections by SNI, passed through unread (no `Host` reaches it).
    TlsRoute { route: &'s crate::tlsroute::TlsRoute },
    /// The Services of one namespace and name, every cluster's, at one of their ports.
    Service,
}

/// Why a host could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveError(pub String);

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResolveError {}

// === impl View ===

impl<'a> View<'a> {
    pub fn new(set: &'a ManifestSet, inventory: &'a Inventory) -> View<'a> {
        View { set, inventory }
    }
}

// === impl DestinationKey ===

impl DestinationKey<'_> {
    /// Its host, then its aliases: the names the set gives it.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.host.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    /// Every `Host` a request may name it by: [`Self::hosts`], and for a Service also the
    /// shorter names a pod's DNS search path completes (`name.namespace`, `name.namespace.svc`).
    pub fn request_hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = self.hosts().map(str::to_string).collect();
        if let (DestinationKind::Service, Some(short)) = (self.kind, self.host.strip_suffix(".svc.cluster.local")) {
            out.push(short.to_string());
            out.push(format!("{short}.svc"));
        }
        out
    }
}

fn source(meta: &Meta, role: impl Into<String>) -> SourceRef {
    SourceRef {
        kind: meta.kind.to_string(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        file: meta.file.to_string(),
        line: meta.pos.line,
        role: role.into(),
    }
}

/// The client as veer sees it: a proxy in `cluster` with extra labels.
pub fn client(set: &ManifestSet, cluster: &str, extra: &Labels) -> Result<Client, ResolveError> {
    let (locality, network, mut labels) = match set.cluster(cluster) {
        Some(c) => (c.locality.clone(), c.network.clone(), c.labels.clone()),
        None if set.clusters.is_empty() && cluster == IMPLICIT_CLUSTER => (Locality::default(), String::new(), Labels::new()),
        None => {
            let known: Vec<&str> = set.clusters.iter().map(|c| c.meta.name.as_str()).collect();
            return Err(ResolveError(format!(
                "cluster {cluster:?} is not defined; known clusters: {}",
                if known.is_empty() { IMPLICIT_CLUSTER.to_string() } else { known.join(", ") }
            )));
        }
    };
    labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let labels = with_topology_labels(labels, cluster, &locality, &network);
    Ok(Client { cluster: ClusterName::new(cluster), locality, network, labels })
}

/// Every destination the node of `cluster` serves from `set`, in the order a node tries their
/// hosts: VirtualDestination ports, FailoverServices, HTTPRoute rules (routes the cluster's
/// Gateways accept, each rule once), then Service ports. A VirtualDestination without hosts
/// and a route the cluster does not serve give none.
pub fn destinations<'s>(set: &'s ManifestSet, cluster: &str) -> Vec<DestinationKey<'s>> {
    let mut out = Vec::new();
    for vd in &set.virtual_destinations {
        let Some((host, aliases)) = vd.hosts.split_first() else { continue };
        for p in &vd.ports {
            out.push(DestinationKey {
                name: format!("{host}:{}", p.number).into(),
                host: host.clone(),
                aliases: aliases.to_vec(),
                port: Some(p.number),
                kind: DestinationKind::VirtualDestination,
            });
        }
    }
    for fs in &set.failover_services {
        out.push(DestinationKey {
            name: format!("{}:{}", fs.hostname, fs.port).into(),
            host: fs.hostname.clone(),
            aliases: Vec::new(),
            port: Some(fs.port),
            kind: DestinationKind::FailoverService,
        });
    }
    let mut names = std::collections::HashSet::new();
    for route in &set.routes {
        let mut hosts = route.hosts_in(cluster);
        let Some(host) = hosts.next() else { continue };
        let aliases: Vec<String> = hosts.map(str::to_string).collect();
        for (i, rule) in route.rules.iter().enumerate() {
            // Metrics have always named a rule by its first path; a second rule with the same
            // name says which rule it is.
            let mut name = format!("{host}{}", rule.matches.first().map_or("/", |m| m.path.value()));
            if !names.insert(name.clone()) {
                name = format!("{name} ({}/{} rule {i})", route.meta.namespace, route.meta.name);
                names.insert(name.clone());
            }
            out.push(DestinationKey {
                name: name.into(),
                host: host.to_string(),
                aliases: aliases.clone(),
                port: None,
                kind: DestinationKind::RouteRule { route, rule: i },
            });
        }
    }
    for route in &set.tls_routes {
        let mut hosts = route.hosts_in(cluster);
        let Some(host) = hosts.next() else { continue };
        let aliases: Vec<String> = hosts.map(str::to_string).collect();
        let mut name = format!("tls:{host}");
        if !names.insert(name.clone()) {
            name = format!("{name} ({}/{})", route.meta.namespace, route.meta.name);
            names.insert(name.clone());
        }
        out.push(DestinationKey {
            name: name.into(),
            host: host.to_string(),
            aliases,
            port: None,
            kind: DestinationKind::TlsRoute { route },
        });
    }
    // One key per namespace and name: resolving it gathers every cluster's Service.
    let mut seen = std::collections::BTreeSet::new();
    for (_, svc) in set.services() {
        if !seen.insert((svc.meta.namespace.as_str(), svc.meta.name.as_str())) {
            continue;
        }
        let fqdn = format!("{}.{}.svc.cluster.local", svc.meta.name, svc.meta.namespace);
        for p in &svc.ports {
            out.push(DestinationKey {
                name: format!("{fqdn}:{}", p.port).into(),
                host: fqdn.clone(),
                aliases: Vec::new(),
                port: Some(p.port),
                kind: DestinationKind::Service,
            });
        }
    }
    out
}

/// Resolves one of [`destinations`] for a client in `cluster`.
pub fn resolve_key(view: View<'_>, key: &DestinationKey<'_>, cluster: &str) -> Result<Destination, ResolveError> {
    match key.kind {
        DestinationKind::RouteRule { route, rule } => resolve_route_rule(view, route, rule, &key.host, None),
        DestinationKind::TlsRoute { route } => resolve_tls_route(view, route, &key.host, cluster),
        _ => resolve(view, &key.host, key.port, cluster, ""),
    }
}

/// Resolves `host[:port]` for a client in `client_cluster`; `path` picks an HTTPRoute rule.
pub fn resolve(view: View<'_>, host: &str, port: Option<u16>, client_cluster: &str, path: &str) -> Result<Destination, ResolveError> {
    let set = view.set;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(d) = resolve_virtual_destination(view, &host, port)? {
        return Ok(d);
    }
    if let Some(fs) = set.failover_services.iter().find(|f| f.hostname.eq_ignore_ascii_case(&host)) {
        return resolve_failover_service(view, fs, port, Vec::new());
    }
    if let Some(d) = resolve_route(view, &host, port, client_cluster, path)? {
        return Ok(d);
    }
    // A TLSRoute's SNI names: an exact name before a wildcard, as the proxy matches them.
    let tls_route = |exact: bool| {
        set.tls_routes
            .iter()
            .find(|r| r.hosts_in(client_cluster).any(|h| h.starts_with("*.") != exact && crate::tlsroute::sni_matches(h, &host)))
    };
    if let Some(route) = tls_route(true).or_else(|| tls_route(false)) {
        return resolve_tls_route(view, route, &host, client_cluster);
    }
    if let Some((name, ns)) = cluster_local_service(&host) {
        if set.service_anywhere(ns, name) {
            return resolve_kube_service(view, &host, name, ns, port, client_cluster);
        }
    }
    let keys = destinations(set, client_cluster);
    let mut known: Vec<String> = keys.iter().flat_map(|d| d.hosts().map(str::to_string)).collect();
    known.sort();
    known.dedup();
    Err(ResolveError(format!(
        "no destination serves host {host:?}; known hosts: {}",
        if known.is_empty() { "none".into() } else { known.join(", ") }
    )))
}

/// Endpoints of `service` in `cluster` at the Service port `service_port`: those of the
/// cluster's inventory its selector picks.
fn service_endpoints(view: View<'_>, cluster: &str, service: &Service, service_port: &ServicePort, origin: &str) -> Vec<Endpoint> {
    let cluster_def = view.set.cluster(cluster);
    let cluster_name = ClusterName::new(cluster);
    view.inventory
        .selected(cluster, service)
        .filter_map(|e| {
            let port = e.port_for(service_port)?;
            // An endpoint may know its zone (an EndpointSlice's) but not its region: the cluster's.
            let locality = match (&e.locality, cluster_def) {
                (Some(l), Some(c)) if l.region.is_empty() => Locality { region: c.locality.region.clone(), ..l.clone() },
                (Some(l), _) => l.clone(),
                (None, c) => c.map(|c| c.locality.clone()).unwrap_or_default(),
            };
            let network = e.network.clone().or_else(|| cluster_def.map(|c| c.network.clone())).unwrap_or_default();
            Some(Endpoint {
                cluster: cluster_name.clone(),
                address: Address::Socket(SocketAddr::new(e.address, port)),
                labels: with_topology_labels(e.labels.clone(), cluster, &locality, &network),
                group: locality.to_string(),
                locality,
                network,
                weight: e.weight,
                health: Health::Healthy,
                tier: None,
                group_weight: None,
                origin: e.origin(origin),
            })
        })
        .collect()
}

fn port_by_ref<'a>(service: &'a Service, r: Option<&PortRef>, fallback: u16) -> Option<&'a ServicePort> {
    match r {
        Some(PortRef::Name(n)) => service.ports.iter().find(|p| p.name == *n),
        Some(PortRef::Number(n)) => service.ports.iter().find(|p| p.port == *n),
        None => service.ports.iter().find(|p| p.port == fallback).or_else(|| service.ports.first()),
    }
}

fn resolve_virtual_destination(view: View<'_>, host: &str, port: Option<u16>) -> Result<Option<Destination>, ResolveError> {
    let set = view.set;
    let Some(vd) = set.virtual_destinations.iter().find(|v| v.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))) else {
        return Ok(None);
    };
    let vd_port = match port {
        Some(p) => vd.ports.iter().find(|x| x.number == p).ok_or_else(|| {
            ResolveError(format!(
                "VirtualDestination {} serves {host} on port(s) {}, not {p}",
                vd.meta,
                vd.ports.iter().map(|x| x.number.to_string()).collect::<Vec<_>>().join(", ")
            ))
        })?,
        None => vd.ports.first().ok_or_else(|| ResolveError(format!("VirtualDestination {} has no ports", vd.meta)))?,
    };
    let mut sources = vec![source(&vd.meta, "defines the host and selects the backing Services")];
    let mut endpoints = Vec::new();
    let mut seen = Vec::new();
    for sel in &vd.services {
        for (cluster, svc) in set.select_services(sel) {
            if seen.contains(&(cluster, &svc.meta.name, &svc.meta.namespace)) {
                continue;
            }
            seen.push((cluster, &svc.meta.name, &svc.meta.namespace));
            if let Some(sp) = port_by_ref(svc, vd_port.target_port.as_ref(), vd_port.number) {
                endpoints.extend(service_endpoints(
                    view,
                    cluster,
                    svc,
                    sp,
                    &format!("Service {}/{} in {cluster}", svc.meta.namespace, svc.meta.name),
                ));
            }
            sources.push(source(&svc.meta, format!("backing Service in cluster {cluster}")));
        }
    }
    let mut notes = Vec::new();
    let fps: Vec<_> = set.failover_policies.iter().filter(|fp| set.policy_targets(&fp.apply_to).any(|t| std::ptr::eq(t, vd))).collect();
    let odps: Vec<_> = set.outlier_policies.iter().filter(|p| set.policy_targets(&p.apply_to).any(|t| std::ptr::eq(t, vd))).collect();
    let outlier: Option<OutlierConfig> = match (odps.first(), fps.first()) {
        (Some(o), _) => {
            sources.push(source(&o.meta, "outlier detection (marks endpoints unhealthy)"));
            Some(o.config)
        }
        (None, Some(_)) => {
            notes.push("no OutlierDetectionPolicy selects this destination; Gloo 2.4+ applies its default (5 consecutive errors, 10s interval, 30s ejection, 100%)".into());
            Some(crate::gloo::gloo_default_outlier())
        }
        (None, None) => None,
    };
    let rule = match fps.first() {
        None => {
            notes.push(
                "no FailoverPolicy selects this destination: every endpoint is at priority 0 and requests spread over all of them".into(),
            );
            PriorityRule::Flat
        }
        Some(fp) => {
            if fps.len() > 1 {
                notes.push(format!("{} FailoverPolicies select this destination; {} applies (first by name)", fps.len(), fp.meta));
            }
            if !fp.locality_mappings.is_empty() {
                let weighted = fp.locality_mappings.iter().any(|m| m.to.iter().any(|t| t.3.is_some()));
                sources.push(source(
                    &fp.meta,
                    if weighted { "localityMappings with weights: distribute" } else { "localityMappings: locality failover" },
                ));
                if weighted {
                    PriorityRule::Distribute(
                        fp.locality_mappings
                            .iter()
                            .map(|m| DistributeEntry {
                                from: pattern(&m.from.0, &m.from.1, &m.from.2),
                                to: m.to.iter().map(|t| (pattern(&t.0, &t.1, &t.2), t.3.unwrap_or(0))).collect(),
                            })
                            .collect(),
                    )
                } else {
                    PriorityRule::Istio {
                        labels: Vec::new(),
                        locality: Some(
                            fp.locality_mappings
                                .iter()
                                .flat_map(|m| m.to.iter().map(|t| FailoverEntry { from: m.from.0.clone(), to: t.0.clone() }))
                                .collect(),
                        ),
                    }
                }
            } else if !fp.priority_labels.is_empty() {
                sources.push(source(&fp.meta, "priorityLabels: priority by label match (N − j)"));
                PriorityRule::Istio { labels: fp.priority_labels.clone(), locality: None }
            } else {
                sources.push(source(&fp.meta, "empty config: locality failover (zone, region, elsewhere)"));
                PriorityRule::Istio { labels: Vec::new(), locality: Some(Vec::new()) }
            }
        }
    };
    Ok(Some(Destination {
        host: host.to_string(),
        port: vd_port.number,
        endpoints,
        weighting: if matches!(rule, PriorityRule::Flat) { GroupWeighting::Off } else { GroupWeighting::On },
        rule,
        resilience: Resilience {
            outlier,
            load: LoadSettings { overprovisioning_factor: 140, panic_threshold: 0 },
            ..Resilience::default()
        },
        http2: matches!(vd_port.protocol.as_str(), "GRPC" | "HTTP2"),
        tls: None,
        sources,
        notes,
    }))
}

fn pattern(r: &str, z: &str, s: &str) -> String {
    [r, z, s].iter().take_while(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("/")
}

fn resolve_failover_service(
    view: View<'_>,
    fs: &crate::smh::FailoverService,
    port: Option<u16>,
    mut sources: Vec<SourceRef>,
) -> Result<Destination, ResolveError> {
    let set = view.set;
    if let Some(p) = port {
        if p != fs.port {
            return Err(ResolveError(format!("FailoverService {} serves {} on port {}, not {p}", fs.meta, fs.hostname, fs.port)));
        }
    }
    sources.push(source(&fs.meta, "backing services in priority order (tier i = backing service i)"));
    let mut endpoints = Vec::new();
    let mut outlier = None;
    let mut notes = Vec::new();
    for (tier, b) in fs.backing.iter().enumerate() {
        let Some(svc) = set.service(&b.cluster, &b.namespace, &b.name) else { continue };
        if let Some(sp) = port_by_ref(svc, None, fs.port) {
            let origin = format!("backing service #{} Service {}/{} in {}", tier + 1, b.namespace, b.name, b.cluster);
            for mut e in service_endpoints(view, &b.cluster, svc, sp, &origin) {
                e.tier = Some(tier as u32);
                endpoints.push(e);
            }
        }
        if let Some(tp) = set.smh_outlier_for(&b.cluster, &b.namespace, &b.name) {
            if outlier.is_none() {
                outlier = tp.outlier.as_ref().map(|(c, _)| *c);
                sources.push(source(&tp.meta, "outlier detection for the backing services"));
            }
        }
    }
    // Retries and timeouts: a TrafficPolicy that shifts traffic to this FailoverService, else
    // one that selects its first backing service.
    let mut retry = None;
    let mut request_timeout = None;
    let shifting = set
        .traffic_policies
        .iter()
        .filter(|tp| tp.shift_to_failover.iter().any(|(n, ns, _)| *n == fs.meta.name && *ns == fs.meta.namespace));
    let selecting = fs.backing.first().into_iter().flat_map(|b| {
        set.traffic_policies
            .iter()
            .filter(move |tp| tp.destinations.iter().any(|d| d.cluster == b.cluster && d.namespace == b.namespace && d.name == b.name))
    });
    for tp in shifting.chain(selecting) {
        if retry.is_none() {
            if let Some((attempts, per_try)) = tp.retries {
                retry = Some(veer_core::policy::RetryPolicy {
                    attempts,
                    per_try_timeout: per_try,
                    ..veer_core::policy::RetryPolicy::istio_default()
                });
                sources.push(source(&tp.meta, "retries"));
            }
        }
        if request_timeout.is_none() {
            request_timeout = tp.request_timeout;
        }
    }
    if outlier.is_none() {
        notes.push("no TrafficPolicy gives the backing services outlier detection: nothing marks them unhealthy, so traffic never moves to the next tier".into());
    }
    Ok(Destination {
        host: fs.hostname.clone(),
        port: fs.port,
        endpoints,
        rule: PriorityRule::Tiers,
        weighting: GroupWeighting::Off,
        resilience: Resilience {
            outlier,
            retry,
            request_timeout,
            load: LoadSettings { overprovisioning_factor: 140, panic_threshold: 0 },
            ..Resilience::default()
        },
        http2: matches!(fs.protocol.as_str(), "GRPC" | "HTTP2"),
        tls: None,
        sources,
        notes,
    })
}

/// The HTTPRoute rule a plain request for `host` reaches on the node of `client_cluster`: only
/// routes that cluster's Gateways accept under `host` are candidates.
fn resolve_route(
    view: View<'_>,
    host: &str,
    port: Option<u16>,
    client_cluster: &str,
    path: &str,
) -> Result<Option<Destination>, ResolveError> {
    let set = view.set;
    let routes: Vec<&HttpRoute> = set.routes.iter().filter(|r| r.hosts_in(client_cluster).any(|h| h == host)).collect();
    let Some(first) = routes.first() else { return Ok(None) };
    // With no explicit path, explain the first rule: that is the one users usually ask about.
    // With one, the rule a plain `GET path` (no other header, no query unless the path has
    // one) reaches, by the same precedence the proxy uses.
    let (route, rule) = if path.is_empty() {
        (*first, 0)
    } else {
        let (p, q) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        let req = Plain { method: "GET", path: p, query: q, headers: &[] };
        gateway::ordered(&routes)
            .into_iter()
            .find(|c| c.matched.matches(&req))
            .map(|c| (c.route, c.rule))
            .ok_or_else(|| ResolveError(format!("no HTTPRoute rule for {host} matches GET {path}")))?
    };
    let mut dest = resolve_route_rule(view, route, rule, host, port)?;
    dest.notes.push(served_on(set, client_cluster, route, host));
    Ok(Some(dest))
}

/// Which client sockets of the node of `cluster` serve `route` on `host`: a client of any other
/// socket gets 404 for the host.
fn served_on(set: &ManifestSet, cluster: &str, route: &HttpRoute, host: &str) -> String {
    let listeners = set.listeners(cluster).unwrap_or_default();
    let on: Vec<String> = route
        .ports_of(cluster, host)
        .map(|p| match listeners.ports.get(&p) {
            Some(0) => format!("port {p} on the node's gateway"),
            Some(&i) => listeners.extra.get(i - 1).map_or_else(|| format!("port {p}"), |a| format!("port {p} on {a}")),
            None => format!("port {p}, which has no socket (map it in spec.gateway.ports)"),
        })
        .collect();
    format!("served on Gateway listener {}; a client of another socket of the node gets 404", on.join(" and "))
}

/// A TLSRoute's destination, for a connection naming `host`: resolved as a one-rule HTTPRoute
/// (same backends, priorities and BackendTrafficPolicy), at the port of the listener that
/// accepts it in `cluster`.
fn resolve_tls_route(view: View<'_>, route: &crate::tlsroute::TlsRoute, host: &str, cluster: &str) -> Result<Destination, ResolveError> {
    let port = route.served.iter().find(|s| s.cluster == cluster).map(|s| s.port);
    let mut d = resolve_route_rule(view, &route.as_route_rule(), 0, host, port)?;
    if d.tls.take().is_some() {
        d.notes.push("a BackendTLSPolicy on these backends does not apply: the client's own TLS is passed through to them".into());
    }
    d.notes.push("TLS passthrough: routed by the ClientHello's server name; the endpoints terminate TLS".into());
    Ok(d)
}

/// The destination of rule `rule` of `route`, called by `host`: what the proxy routes a
/// request to once the rule's match has chosen it.
pub fn resolve_route_rule(
    view: View<'_>,
    route: &HttpRoute,
    rule: usize,
    host: &str,
    port: Option<u16>,
) -> Result<Destination, ResolveError> {
    let set = view.set;
    let rule = route.rules.get(rule).ok_or_else(|| ResolveError(format!("HTTPRoute {} has no rule {rule}", route.meta)))?;
    let mut sources = vec![source(&route.meta, format!("routes {host} (rule at line {})", rule.pos.line))];
    let listener_port = route
        .parents
        .iter()
        .filter_map(|p| set.gateways.iter().find(|g| g.meta.name == p.name && g.meta.namespace == p.namespace))
        .flat_map(|g| g.listeners.iter().map(|l| l.port))
        .next();
    for p in &route.parents {
        if let Some(g) = set.gateways.iter().find(|g| g.meta.name == p.name && g.meta.namespace == p.namespace) {
            sources.push(source(&g.meta, "listens for the route"));
        }
    }
    let mut endpoints = Vec::new();
    for b in &rule.backends {
        if b.kind == "Backend" {
            let Some(backend) = set.backends.iter().find(|x| x.meta.name == b.name && x.meta.namespace == b.namespace) else { continue };
            let tier = u32::from(backend.fallback);
            sources
                .push(source(&backend.meta, if backend.fallback { "fallback: true, so priority 1" } else { "active backend, priority 0" }));
            // An endpoint named directly by the Backend (an IP, or a name outside the cluster):
            // no topology of its own, so it sits in the cluster that holds the Backend (its
            // cluster label, else the route's), or the first Cluster when neither says.
            let label = crate::meta::CLUSTER_LABEL;
            let home = backend.meta.labels.get(label).or_else(|| route.meta.labels.get(label)).map(String::as_str);
            let direct = |address: Address, origin: String| Endpoint {
                cluster: ClusterName::new(home.unwrap_or_else(|| set.clusters.first().map_or(IMPLICIT_CLUSTER, |c| c.meta.name.as_str()))),
                address,
                labels: Labels::new(),
                locality: Locality::default(),
                network: String::new(),
                weight: 1,
                health: Health::Healthy,
                tier: Some(tier),
                group: backend.meta.name.clone(),
                group_weight: Some(b.weight),
                origin,
            };
            for e in &backend.endpoints {
                match e {
                    BackendEndpoint::Ip { address, port } => endpoints.push(direct(
                        Address::Socket(SocketAddr::new(*address, *port)),
                        format!("Backend {}/{} ip endpoint", backend.meta.namespace, backend.meta.name),
                    )),
                    BackendEndpoint::Fqdn { hostname, port } => match cluster_local_service(hostname) {
                        Some((name, ns)) => {
                            for (cluster, svc) in set.services_named(ns, name) {
                                if let Some(sp) = port_by_ref(svc, Some(&PortRef::Number(*port)), *port) {
                                    let origin = format!("Backend {}/{} fqdn {hostname}", backend.meta.namespace, backend.meta.name);
                                    for mut ep in service_endpoints(view, cluster, svc, sp, &origin) {
                                        ep.tier = Some(tier);
                                        ep.group = backend.meta.name.clone();
                                        ep.group_weight = Some(b.weight);
                                        endpoints.push(ep);
                                    }
                                }
                            }
                        }
                        None => endpoints.push(direct(
                            Address::Dns { host: hostname.clone(), port: *port },
                            format!(
                                "Backend {}/{} fqdn, resolved through DNS when traffic runs",
                                backend.meta.namespace, backend.meta.name
                            ),
                        )),
                    },
                }
            }
        } else {
            for (cluster, svc) in set.services_named(&b.namespace, &b.name) {
                if let Some(sp) = b.port.and_then(|p| svc.ports.iter().find(|x| x.port == p)) {
                    for mut ep in service_endpoints(view, cluster, svc, sp, &format!("Service {}/{} in {cluster}", b.namespace, b.name)) {
                        ep.tier = Some(0);
                        ep.group = b.name.clone();
                        ep.group_weight = Some(b.weight);
                        endpoints.push(ep);
                    }
                }
            }
        }
    }
    let policy = set.backend_policies.iter().find(|p| {
        p.targets.iter().any(|t| t.kind == route.meta.kind && t.name == route.meta.name && p.meta.namespace == route.meta.namespace)
    });
    let mut resilience = Resilience { load: LoadSettings { overprovisioning_factor: 140, panic_threshold: 50 }, ..Resilience::default() };
    let mut notes = Vec::new();
    if let Some(p) = policy {
        sources.push(source(&p.meta, "health checks and retries for the route's backends"));
        resilience.outlier = p.passive;
        resilience.active_health_check = p.active.clone();
        resilience.retry = p.retry.clone();
        if let Some(caps) = p.circuit_breakers {
            resilience.circuit_breakers = caps;
        }
        resilience.slow_start = p.slow_start;
    } else {
        notes.push("no BackendTrafficPolicy targets this route: no health check marks backends unhealthy".into());
    }
    if let Some(r) = &rule.retry {
        resilience.retry = Some(r.clone());
        notes.push("the HTTPRoute rule's retry overrides the BackendTrafficPolicy retry".into());
    }
    // The rule's Service backends agree on TLS (the set refuses a rule where they do not).
    let tls = rule.backends.iter().filter(|b| b.kind == "Service").find_map(|b| {
        let port_name = set
            .services_named(&b.namespace, &b.name)
            .find_map(|(_, s)| s.ports.iter().find(|p| Some(p.port) == b.port).map(|p| p.name.clone()));
        set.backend_tls_for(&b.namespace, &b.name, port_name.as_deref()).cloned()
    });
    if let Some(t) = &tls {
        notes.push(t.describe());
    }
    resilience.request_timeout = rule.timeout;
    Ok(Destination {
        host: host.to_string(),
        port: port.or(listener_port).unwrap_or(80),
        endpoints,
        rule: PriorityRule::Tiers,
        weighting: GroupWeighting::On,
        resilience,
        http2: false,
        tls,
        sources,
        notes,
    })
}

fn resolve_kube_service(
    view: View<'_>,
    host: &str,
    name: &str,
    ns: &str,
    port: Option<u16>,
    client_cluster: &str,
) -> Result<Destination, ResolveError> {
    let set = view.set;
    // SMH: a TrafficPolicy may shift this service's traffic (as seen from its cluster) to a FailoverService.
    for tp in &set.traffic_policies {
        if tp.destinations.iter().any(|d| d.name == name && d.namespace == ns && d.cluster == client_cluster) {
            if let Some((fs_name, fs_ns, _)) = tp.shift_to_failover.first() {
                if let Some(fs) = set.failover_services.iter().find(|f| f.meta.name == *fs_name && f.meta.namespace == *fs_ns) {
                    let mut d = resolve_failover_service(
                        view,
                        fs,
                        None,
                        vec![source(
                            &tp.meta,
                            format!("trafficShift: {host} from {client_cluster} goes to FailoverService {fs_ns}/{fs_name}"),
                        )],
                    )?;
                    d.host = host.to_string();
                    return Ok(d);
                }
            }
        }
    }
    let client_network = set.cluster(client_cluster).map(|c| c.network.clone()).unwrap_or_default();
    let mut endpoints = Vec::new();
    let mut sources = Vec::new();
    let mut notes = Vec::new();
    let mut chosen_port = None;
    let mut port_name = None;
    for (cluster, svc) in set.services_named(ns, name) {
        let Some(sp) = (match port {
            Some(p) => svc.ports.iter().find(|x| x.port == p),
            None => svc.ports.first(),
        }) else {
            continue;
        };
        chosen_port.get_or_insert(sp.port);
        port_name.get_or_insert_with(|| sp.name.clone());
        let cluster_network = set.cluster(cluster).map(|c| c.network.clone()).unwrap_or_default();
        if cluster_network != client_network && !exposed(set, cluster, host) {
            notes.push(format!(
                "cluster {cluster} is on network {cluster_network:?}, not the client's {client_network:?}, and no AUTO_PASSTHROUGH east-west Gateway there exposes {host}: its endpoints are not reachable"
            ));
            continue;
        }
        endpoints.extend(service_endpoints(view, cluster, svc, sp, &format!("Service {ns}/{name} in {cluster}")));
        sources.push(source(&svc.meta, format!("Service in cluster {cluster}")));
    }
    let port = port.or(chosen_port).ok_or_else(|| ResolveError(format!("Service {ns}/{name} has no such port")))?;
    let dr = set.destination_rule_for(host);
    let mut resilience = Resilience { load: LoadSettings { overprovisioning_factor: 140, panic_threshold: 50 }, ..Resilience::default() };
    // SMH turns a TrafficPolicy's outlierDetection into a DestinationRule for each service it
    // selects, as seen from the client's cluster (else from any cluster the service is in).
    let smh_outlier = || {
        set.smh_outlier_for(client_cluster, ns, name)
            .or_else(|| set.services_named(ns, name).find_map(|(cluster, _)| set.smh_outlier_for(cluster, ns, name)))
    };
    let rule = match dr {
        None => match smh_outlier() {
            Some(tp) => {
                sources.push(source(&tp.meta, "outlier detection (Service Mesh Hub writes it as a DestinationRule)"));
                resilience.outlier = tp.outlier.as_ref().map(|(c, _)| *c);
                // That rule sets no minHealthPercent: Istio's default, 0, turns panic off.
                resilience.load.panic_threshold = 0;
                notes.push("outlierDetection turns on Istio's default locality failover (zone, region, elsewhere)".into());
                PriorityRule::Istio { labels: Vec::new(), locality: Some(Vec::new()) }
            }
            None => {
                notes.push("no DestinationRule: every endpoint is at priority 0".into());
                PriorityRule::Flat
            }
        },
        Some(dr) => {
            sources.push(source(&dr.meta, "locality load balancing and outlier detection"));
            if let Some(o) = &dr.outlier {
                resilience.outlier = Some(o.config);
                resilience.load.panic_threshold = o.min_health_percent;
            }
            if let Some(caps) = dr.circuit_breakers {
                resilience.circuit_breakers = caps;
            }
            resilience.slow_start = dr.slow_start;
            let fail_over = dr.outlier.is_some();
            match &dr.locality {
                Some(l) if !l.enabled => {
                    notes.push("localityLbSetting.enabled is false: locality load balancing is off".into());
                    PriorityRule::Flat
                }
                Some(l) if !l.distribute.is_empty() => PriorityRule::Distribute(l.distribute.clone()),
                Some(l) if fail_over && !l.failover_priority.is_empty() => PriorityRule::Istio {
                    labels: l.failover_priority.clone(),
                    locality: (!l.failover.is_empty()).then(|| l.failover.clone()),
                },
                Some(l) if fail_over => PriorityRule::Istio { labels: Vec::new(), locality: Some(l.failover.clone()) },
                None if fail_over => {
                    notes.push("outlierDetection turns on Istio's default locality failover (zone, region, elsewhere)".into());
                    PriorityRule::Istio { labels: Vec::new(), locality: Some(Vec::new()) }
                }
                _ => {
                    notes.push("FAILOVER IS INERT: no outlierDetection, so Istio keeps every endpoint at priority 0".into());
                    PriorityRule::Flat
                }
            }
        }
    };
    // A DestinationRule's TLS first (Istio's own), else a BackendTLSPolicy on the Service.
    let tls = dr.and_then(|d| d.tls.clone()).or_else(|| set.backend_tls_for(ns, name, port_name.as_deref()).cloned());
    if let Some(t) = &tls {
        notes.push(t.describe());
    }
    Ok(Destination {
        host: host.to_string(),
        port,
        endpoints,
        weighting: if matches!(rule, PriorityRule::Flat) { GroupWeighting::Off } else { GroupWeighting::On },
        rule,
        resilience,
        http2: false,
        tls,
        sources,
        notes,
    })
}

/// Whether `cluster` exposes `host` to other networks through an AUTO_PASSTHROUGH Istio Gateway.
pub fn exposed(set: &ManifestSet, cluster: &str, host: &str) -> bool {
    set.istio_gateways.iter().any(|(c, g)| {
        c == cluster
            && g.servers.iter().any(|s| s.tls_mode.as_deref() == Some("AUTO_PASSTHROUGH") && s.hosts.iter().any(|h| host_matches(h, host)))
    })
}
