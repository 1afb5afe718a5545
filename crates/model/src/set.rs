//! The manifest set: every resource read, checked against each other (references, duplicates,
//! ownership, inert settings), ready to be resolved into destinations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use crate::diag::{Diagnostics, Severity};
use crate::externaldns::DnsEndpoint;
use crate::gateway::{Backend, BackendEndpoint, BackendTrafficPolicy, CertificateSource, Gateway, HttpRoute};
use crate::gloo::{FailoverPolicy, ObjectSelector, OutlierDetectionPolicy, VirtualDestination};
use crate::istio::{host_matches, DestinationRule, IstioGateway};
use crate::load::{about, meta_of, Resource};
use crate::meta::Meta;
use crate::router::{ClusterIdentity, DnsConfiguration, DnsPolicy, RouterGateway, ServiceRoute};
use crate::smh::{mesh_name_of_cluster, FailoverService, TrafficPolicy, VirtualMesh};
use crate::tls::Secret;
use crate::topology::{Cluster, Service, WorkloadEntry};

/// The node's gateway socket in [`Listeners`]: the mesh's names, in plain HTTP.
pub const GATEWAY_SOCKET: usize = 0;

/// Name of the cluster that holds objects when a set defines no `Cluster` at all.
pub const IMPLICIT_CLUSTER: &str = "default";

/// Every resource of a validated set, grouped by kind.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    pub clusters: Vec<Cluster>,
    /// Services with the cluster they belong to (read with [`Self::services`]).
    services: Vec<(String, Service)>,
    /// WorkloadEntries with their clusters, as the files list them (read with
    /// [`Self::entries`]). Resolution reads endpoints from an `inventory::Inventory`, which
    /// takes them from here on a node without peers.
    entries: Vec<(String, WorkloadEntry)>,
    pub virtual_destinations: Vec<VirtualDestination>,
    pub failover_policies: Vec<FailoverPolicy>,
    pub outlier_policies: Vec<OutlierDetectionPolicy>,
    pub failover_services: Vec<FailoverService>,
    pub traffic_policies: Vec<TrafficPolicy>,
    pub virtual_meshes: Vec<VirtualMesh>,
    pub destination_rules: Vec<DestinationRule>,
    pub istio_gateways: Vec<(String, IstioGateway)>,
    pub backends: Vec<Backend>,
    pub backend_policies: Vec<BackendTrafficPolicy>,
    pub gateways: Vec<Gateway>,
    pub routes: Vec<HttpRoute>,
    pub tls_routes: Vec<crate::tlsroute::TlsRoute>,
    pub cluster_identities: Vec<(String, ClusterIdentity)>,
    pub dns_configurations: Vec<(String, DnsConfiguration)>,
    pub dns_policies: Vec<(String, DnsPolicy)>,
    pub service_routes: Vec<(String, ServiceRoute)>,
    pub router_gateways: Vec<(String, RouterGateway)>,
    /// ExternalDNS `DNSEndpoint`s (as `veer dns endpoints` writes them) with their clusters.
    pub dns_endpoints: Vec<(String, DnsEndpoint)>,
    /// Core Secrets, with their clusters: the certificates of HTTPS listeners.
    pub secrets: Vec<(String, Secret)>,
    /// Core ConfigMaps with their clusters, of which veer keeps `ca.crt`: BackendTLSPolicies' CAs.
    pub config_maps: Vec<(String, crate::upstream_tls::ConfigMap)>,
    pub backend_tls_policies: Vec<crate::upstream_tls::BackendTlsPolicy>,
    /// Where regional zones live on DNS servers, each with its TSIG key (set by `build`).
    pub dns_zones: Vec<crate::dnszone::ZoneTarget>,
    /// TLS to Services' endpoints, as the BackendTLSPolicies set it, checked (set by `build`).
    pub backend_tls: Vec<BackendTls>,
    /// Every HTTPS listener with its certificates, checked (set by `build`).
    pub tls_listeners: Vec<TlsListener>,
    /// `.pem` sources read with the manifests (name with `.` and `..` folded, text).
    pub pem_files: Vec<(String, String)>,
    /// Built on first use: a snapshot looks up every Service by name, for each destination
    /// that names one.
    lookup: LookupCell,
}

/// An HTTPS listener of a Gateway and the certificates it presents, read from its
/// certificateRefs and checked (key and certificate belong together, both in date).
#[derive(Clone, Debug, PartialEq)]
pub struct TlsListener {
    /// The Gateway's cluster: its node serves the listener.
    pub cluster: String,
    /// `namespace/name` of the Gateway, and the listener's name, for messages.
    pub gateway: String,
    pub listener: String,
    pub port: u16,
    /// The listener's `hostname`, lower case: the SNI names it answers, exactly or by wildcard.
    pub hostname: Option<String>,
    /// In certificateRefs order: the first is the listener's default.
    pub certs: Vec<veer_pki::ServingCert>,
}

/// TLS to the endpoints of a Service (every port, or the one named `section`).
#[derive(Clone, Debug, PartialEq)]
pub struct BackendTls {
    pub namespace: String,
    pub service: String,
    pub section: Option<String>,
    pub tls: std::sync::Arc<crate::upstream_tls::UpstreamTls>,
}

/// The client sockets of one node: its gateway (socket 0) and the other addresses of
/// `spec.gateway.ports` (socket i + 1 is `extra[i]`), with the Gateway listener ports each serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    /// Sorted, so that the same addresses give the same socket numbers after a reload.
    pub extra: Vec<std::net::SocketAddr>,
    /// Gateway listener port → socket. A port not here is served on no socket.
    pub ports: BTreeMap<u16, usize>,
}

/// Why the node of a cluster cannot serve its Gateways: their routes are served on several
/// listener ports, and some of those ports have no socket in `spec.gateway.ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmappedPorts {
    pub cluster: String,
    /// Every listener port with served routes, ascending.
    pub served: Vec<u16>,
    /// Those without a socket, ascending.
    pub unmapped: Vec<u16>,
}

impl std::fmt::Display for UnmappedPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        let (last, rest) = self.served.split_last().map_or((String::new(), &[][..]), |(l, r)| (l.to_string(), r));
        write!(
            f,
            "cluster {}'s Gateways listen on ports {} and {last}; a node serves each port on its own socket: map each in spec.gateway.ports (unmapped: {})",
            self.cluster,
            list(rest),
            list(&self.unmapped)
        )
    }
}

impl std::error::Error for UnmappedPorts {}

/// A set's [`Lookup`], built on first use. A copy starts without one: copying it costs about
/// what building it does, and most copies (the DNS server's, the east-west listener's) never
/// look a Service up by name.
#[derive(Debug, Default)]
struct LookupCell(OnceLock<Lookup>);

impl Clone for LookupCell {
    fn clone(&self) -> Self {
        LookupCell::default()
    }
}

/// Positions in `services` by what resolution asks for. Keys are hashes: a collision only adds
/// candidates, and every candidate is checked in full, so it cannot change an answer.
/// Positions are ascending, so answers keep manifest order.
#[derive(Debug, Default)]
struct Lookup {
    /// By (namespace, name), any cluster.
    services: HashMap<u64, Vec<u32>>,
    /// DestinationRules by their exact host, lowercased.
    rules_by_host: HashMap<String, Vec<u32>>,
    /// DestinationRules whose host is a pattern (`*.…`, `namespace/host`), in manifest order.
    pattern_rules: Vec<u32>,
}

fn key_of(parts: &[&str]) -> u64 {
    // `new` gives every instance the same keys, so equal parts always meet.
    let mut h = std::hash::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

impl Lookup {
    fn build(services: &[(String, Service)], rules: &[DestinationRule]) -> Lookup {
        let mut lookup = Lookup::default();
        for (i, (_, s)) in services.iter().enumerate() {
            lookup.services.entry(key_of(&[&s.meta.namespace, &s.meta.name])).or_default().push(i as u32);
        }
        for (i, r) in rules.iter().enumerate() {
            if r.host.starts_with('*') || r.host.contains('/') {
                lookup.pattern_rules.push(i as u32);
            } else {
                lookup.rules_by_host.entry(r.host.to_ascii_lowercase()).or_default().push(i as u32);
            }
        }
        lookup
    }
}

// === impl ManifestSet ===

impl ManifestSet {
    /// Groups `resources` and checks them against each other, adding findings to `diags`.
    /// `now` is the time certificates must be valid at.
    /// `pem` holds the `.pem` sources (name, text) that `PEMFile` certificateRefs may name.
    pub(crate) fn build(
        resources: Vec<Resource>,
        pem: Vec<(String, String)>,
        now: rustls_pki_types::UnixTime,
        diags: &mut Diagnostics,
    ) -> ManifestSet {
        let mut set = ManifestSet { pem_files: pem, ..ManifestSet::default() };
        check_duplicates(&resources, diags);
        for r in &resources {
            if let Resource::Cluster(c) = r {
                set.clusters.push(c.clone());
            }
        }
        let cluster_names: Vec<String> = set.clusters.iter().map(|c| c.meta.name.clone()).collect();
        let mut zones = Vec::new();
        for r in resources {
            let owner = owner_cluster(meta_of(&r), &cluster_names, diags);
            match r {
                Resource::Cluster(_) => {}
                Resource::Service(x) => set.services.push((owner, x)),
                Resource::WorkloadEntry(x) => set.entries.push((owner, x)),
                Resource::VirtualDestination(x) => set.virtual_destinations.push(x),
                Resource::FailoverPolicy(x) => set.failover_policies.push(x),
                Resource::OutlierDetectionPolicy(x) => set.outlier_policies.push(x),
                Resource::FailoverService(x) => set.failover_services.push(x),
                Resource::TrafficPolicy(x) => set.traffic_policies.push(x),
                Resource::VirtualMesh(x) => set.virtual_meshes.push(x),
                Resource::DestinationRule(x) => set.destination_rules.push(x),
                Resource::IstioGateway(x) => set.istio_gateways.push((owner, x)),
                Resource::Backend(x) => set.backends.push(x),
                Resource::BackendTrafficPolicy(x) => set.backend_policies.push(x),
                Resource::Gateway(mut x) => {
                    x.cluster = owner;
                    set.gateways.push(x);
                }
                Resource::HttpRoute(x) => set.routes.push(x),
                Resource::TlsRoute(x) => set.tls_routes.push(x),
                Resource::ClusterIdentity(x) => set.cluster_identities.push((owner, x)),
                Resource::DnsConfiguration(x) => set.dns_configurations.push((owner, x)),
                Resource::DnsPolicy(x) => set.dns_policies.push((owner, x)),
                Resource::ServiceRoute(x) => set.service_routes.push((owner, x)),
                Resource::RouterGateway(x) => set.router_gateways.push((owner, x)),
                Resource::DnsEndpoint(x) => set.dns_endpoints.push((owner, x)),
                Resource::Secret(x) => set.secrets.push((owner, x)),
                Resource::ConfigMap(x) => set.config_maps.push((owner, x)),
                Resource::BackendTlsPolicy(x) => set.backend_tls_policies.push(x),
                Resource::DnsZone(x) => zones.push(x),
            }
        }
        set.check_gloo(diags);
        set.check_smh(diags);
        set.check_istio(diags);
        set.check_gateway(diags);
        set.attach_routes(diags);
        set.attach_tls_routes(diags);
        set.check_listeners(diags);
        set.check_tls(now, diags);
        set.check_passthrough(diags);
        set.check_backend_tls(diags);
        set.check_router(diags);
        set.dns_zones = crate::dnszone::targets(zones, &set.secrets, diags);
        crate::dnszone::check_takeovers(&set.dns_zones, &set.cluster_identities, diags);
        set
    }

    /// Sets each HTTPRoute's `served` hosts from the Gateway listeners it attaches to, and
    /// warns where a route, or one of its parents, ends up serving nothing: a listener serves
    /// only what attaches to it, so such a route is not served rather than served everywhere.
    fn attach_routes(&mut self, diags: &mut Diagnostics) {
        let gateways = &self.gateways;
        for r in &mut self.routes {
            let mut served: Vec<crate::gateway::Served> = Vec::new();
            let mut any_host = false;
            let mut wildcards: Vec<String> = Vec::new();
            if r.parents.is_empty() {
                diags.push(about(
                    &r.meta,
                    r.meta.pos,
                    Severity::Warning,
                    "spec.parentRefs",
                    "NOT SERVED: the route names no Gateway, and a Gateway listener serves only the routes attached to it",
                ));
            }
            for p in &r.parents {
                let Some(g) = gateways.iter().find(|g| g.meta.name == p.name && g.meta.namespace == p.namespace) else { continue };
                let mut why_not = Vec::new();
                let mut attached = false;
                for l in &g.listeners {
                    if p.section.as_ref().is_some_and(|s| *s != l.name) || p.port.is_some_and(|port| port != l.port) {
                        continue;
                    }
                    if l.protocol != "HTTP" && l.protocol != "HTTPS" {
                        why_not.push(format!("listener {:?} is {} and veer serves HTTP and HTTPS listeners only", l.name, l.protocol));
                    } else if !l.admits_http_routes {
                        why_not.push(format!("listener {:?} does not admit HTTPRoutes (allowedRoutes.kinds)", l.name));
                    } else if !l.all_namespaces && g.meta.namespace != r.meta.namespace {
                        why_not.push(format!(
                            "listener {:?} admits routes of namespace {} only (allowedRoutes.namespaces.from: Same)",
                            l.name, g.meta.namespace
                        ));
                    } else {
                        match crate::gateway::listener_hosts(l.hostname.as_deref(), &r.hostnames) {
                            None => any_host = true,
                            Some(hosts) if hosts.is_empty() => why_not.push(format!(
                                "no hostname of the route falls under listener {:?}'s {:?}",
                                l.name,
                                l.hostname.as_deref().unwrap_or_default()
                            )),
                            Some(hosts) => {
                                attached = true;
                                for host in hosts {
                                    if host.starts_with('*') {
                                        if !wildcards.contains(&host) {
                                            wildcards.push(host);
                                        }
                                        continue;
                                    }
                                    let s = crate::gateway::Served { cluster: g.cluster.clone(), host, port: l.port };
                                    if !served.contains(&s) {
                                        served.push(s);
                                    }
                                }
                            }
                        }
                    }
                }
                if !attached && !any_host {
                    let why =
                        if why_not.is_empty() { "no listener of it matches sectionName and port".to_string() } else { why_not.join("; ") };
                    diags.push(about(
                        &r.meta,
                        p.pos,
                        Severity::Warning,
                        "spec.parentRefs",
                        format!("NOT SERVED through Gateway {}/{}: {why}", p.namespace, p.name),
                    ));
                }
            }
            if any_host {
                diags.push(about(&r.meta, r.meta.pos, Severity::Warning, "spec.hostnames", "not served on every host: neither the route nor its listener names a hostname, and veer serves HTTPRoutes on named hosts only"));
            }
            if !wildcards.is_empty() {
                diags.push(about(
                    &r.meta,
                    r.meta.pos,
                    Severity::Warning,
                    "spec.hostnames",
                    format!("not served on {}: veer serves HTTPRoutes on exact hostnames only", wildcards.join(", ")),
                ));
            }
            r.served = served;
        }
    }

    /// Sets each TLSRoute's `served` names from the `TLS` Passthrough listeners it attaches to
    /// (Gateway API attachment, as for HTTPRoutes; wildcards stay wildcards, since SNI is
    /// matched against them per connection), and checks what it names; a route or parent that
    /// ends up serving nothing is warned about, as an HTTPRoute is.
    fn attach_tls_routes(&mut self, diags: &mut Diagnostics) {
        let gateways = &self.gateways;
        for r in &mut self.tls_routes {
            let mut served: Vec<crate::gateway::Served> = Vec::new();
            if r.parents.is_empty() {
                diags.push(about(
                    &r.meta,
                    r.meta.pos,
                    Severity::Warning,
                    "spec.parentRefs",
                    "NOT SERVED: the route names no Gateway, and a Gateway listener serves only the routes attached to it",
                ));
            }
            let hostnames: Vec<String> = r.hostnames.iter().map(|(h, _)| h.clone()).collect();
            for p in &r.parents {
                let Some(g) = gateways.iter().find(|g| g.meta.name == p.name && g.meta.namespace == p.namespace) else {
                    diags.push(about(
                        &r.meta,
                        p.pos,
                        Severity::Error,
                        "spec.parentRefs",
                        format!("Gateway {}/{} does not exist", p.namespace, p.name),
                    ));
                    continue;
                };
                let mut why_not = Vec::new();
                let mut attached = false;
                for l in &g.listeners {
                    if p.section.as_ref().is_some_and(|s| *s != l.name) || p.port.is_some_and(|port| port != l.port) {
                        continue;
                    }
                    if l.protocol != "TLS" || !l.passthrough {
                        why_not.push(format!("listener {:?} is not a TLS listener in Passthrough mode", l.name));
                    } else if !l.admits_tls_routes {
                        why_not.push(format!("listener {:?} does not admit TLSRoutes (allowedRoutes.kinds)", l.name));
                    } else if !l.all_namespaces && g.meta.namespace != r.meta.namespace {
                        why_not.push(format!(
                            "listener {:?} admits routes of namespace {} only (allowedRoutes.namespaces.from: Same)",
                            l.name, g.meta.namespace
                        ));
                    } else {
                        let hosts = crate::gateway::listener_hosts(l.hostname.as_deref(), &hostnames).unwrap_or_default();
                        if hosts.is_empty() {
                            why_not.push(format!(
                                "no hostname of the route falls under listener {:?}'s {:?}",
                                l.name,
                                l.hostname.as_deref().unwrap_or_default()
                            ));
                        }
                        for host in hosts {
                            attached = true;
                            let s = crate::gateway::Served { cluster: g.cluster.clone(), host, port: l.port };
                            if !served.contains(&s) {
                                served.push(s);
                            }
                        }
                    }
                }
                if !attached {
                    let why =
                        if why_not.is_empty() { "no listener of it matches sectionName and port".to_string() } else { why_not.join("; ") };
                    diags.push(about(
                        &r.meta,
                        p.pos,
                        Severity::Warning,
                        "spec.parentRefs",
                        format!("NOT SERVED through Gateway {}/{}: {why}", p.namespace, p.name),
                    ));
                }
            }
            r.served = served;
        }
        for r in &self.tls_routes {
            for b in &r.backends {
                self.check_backend_ref(&r.meta, b, diags);
            }
        }
    }

    /// A route's backendRef (HTTPRoute or TLSRoute) names a Backend or Service that exists, and
    /// a Service's port.
    fn check_backend_ref(&self, route: &Meta, b: &crate::gateway::BackendRef, diags: &mut Diagnostics) {
        let exists = if b.kind == "Backend" {
            self.backends.iter().any(|x| x.meta.name == b.name && x.meta.namespace == b.namespace)
        } else {
            self.service_anywhere(&b.namespace, &b.name)
        };
        if !exists {
            diags.push(about(
                route,
                b.pos,
                Severity::Error,
                "spec.rules.backendRefs",
                format!("{} {}/{} does not exist", b.kind, b.namespace, b.name),
            ));
        }
        if b.kind == "Service" && b.port.is_none() {
            diags.push(about(route, b.pos, Severity::Error, "spec.rules.backendRefs.port", "a Service backendRef needs a port"));
        }
    }

    /// Checks each cluster's `spec.gateway.ports` against its Gateways: several listener ports
    /// with served routes must each be mapped (never merged onto one socket, where each would
    /// serve the other's routes), and a mapped port no HTTP listener uses is flagged.
    fn check_listeners(&self, diags: &mut Diagnostics) {
        let mut names: Vec<&str> = self.clusters.iter().map(|c| c.meta.name.as_str()).collect();
        names.extend(self.gateways.iter().map(|g| g.cluster.as_str()));
        names.sort_unstable();
        names.dedup();
        for name in names {
            let cluster = self.cluster(name);
            if let Err(why) = self.listeners(name) {
                match cluster {
                    Some(c) => diags.push(about(&c.meta, c.meta.pos, Severity::Error, "spec.gateway.ports", why.to_string())),
                    None => {
                        // No Cluster to point at (the implicit one): the Gateways are the cause.
                        if let Some(g) = self.gateways.iter().find(|g| g.cluster == name) {
                            diags.push(about(&g.meta, g.meta.pos, Severity::Error, "spec.listeners", why.to_string()));
                        }
                    }
                }
            }
            let Some(c) = cluster else { continue };
            for p in &c.gateway_ports {
                let used = self
                    .gateways
                    .iter()
                    .filter(|g| g.cluster == name)
                    .flat_map(|g| &g.listeners)
                    .any(|l| l.port == p.port && (l.protocol == "HTTP" || l.protocol == "HTTPS" || l.passthrough))
                    || self.istio_passthrough(name).any(|s| s.port == p.port);
                if !used {
                    diags.push(about(
                        &c.meta,
                        p.pos,
                        Severity::Warning,
                        "spec.gateway.ports",
                        format!(
                            "no HTTP, HTTPS or TLS Passthrough listener of cluster {name}'s Gateways is on port {}: {} is bound and serves nothing",
                            p.port, p.address
                        ),
                    ));
                }
            }
        }
    }

    /// Reads each HTTPS listener's certificates into [`Self::tls_listeners`], checked once per
    /// Secret, and checks where they are served: TLS is a socket's property, so an HTTPS
    /// port needs an address of its own in `spec.gateway.ports`, not the gateway's (which
    /// serves the mesh's names in plain HTTP).
    fn check_tls(&mut self, now: rustls_pki_types::UnixTime, diags: &mut Diagnostics) {
        let mut checked: HashMap<usize, Option<veer_pki::ServingCert>> = HashMap::new();
        let mut pem_checked: HashMap<String, Option<veer_pki::ServingCert>> = HashMap::new();
        let mut out = Vec::new();
        for g in &self.gateways {
            for (li, l) in g.listeners.iter().enumerate() {
                let Some(tls) = l.tls.as_ref().filter(|_| l.protocol == "HTTPS") else { continue };
                let mut certs = Vec::new();
                for (ri, r) in tls.certificate_refs.iter().enumerate() {
                    let field = &format!("spec.listeners[{li}].tls.certificateRefs[{ri}]");
                    let (namespace, name) = match &r.source {
                        CertificateSource::Secret { namespace, name } => (namespace, name),
                        CertificateSource::PemFile { path } => {
                            let cert = pem_checked.entry(path.clone()).or_insert_with(|| {
                                let Some((_, text)) = self.pem_files.iter().find(|(n, _)| n == path) else {
                                    diags.push(about(&g.meta, r.pos, Severity::Error, field, format!("{path} is not among the files read: put it in a manifest directory (veer reads .pem files there) or name it with the manifests")));
                                    return None;
                                };
                                match veer_pki::serving_cert(text.as_bytes(), text.as_bytes(), now) {
                                    Ok(c) => Some(c),
                                    Err((_, e)) => {
                                        diags.push(about(&g.meta, r.pos, Severity::Error, field, format!("{path}: {}", e.message())));
                                        None
                                    }
                                }
                            });
                            certs.extend(cert.clone());
                            continue;
                        }
                    };
                    let found = self.secrets.iter().position(|(c, s)| {
                        s.meta.namespace == *namespace && s.meta.name == *name && s.meta.cluster_label().is_none_or(|_| *c == g.cluster)
                    });
                    let Some(i) = found else {
                        let elsewhere = self.secrets.iter().find(|(_, s)| s.meta.namespace == *namespace && s.meta.name == *name);
                        let why = match elsewhere {
                            Some((c, _)) => {
                                format!("Secret {namespace}/{name} belongs to cluster {c}, not to cluster {} of this Gateway", g.cluster)
                            }
                            None => format!("no Secret {namespace}/{name} in the manifests"),
                        };
                        diags.push(about(&g.meta, r.pos, Severity::Error, field, why));
                        continue;
                    };
                    let secret = &self.secrets[i].1;
                    if secret.kind != crate::tls::TLS_SECRET_TYPE {
                        diags.push(about(
                            &g.meta,
                            r.pos,
                            Severity::Error,
                            field,
                            format!(
                                "Secret {namespace}/{name} (at {}) is of type {}; a listener's certificate is a {} Secret with tls.crt and tls.key",
                                secret.meta.location(),
                                secret.kind,
                                crate::tls::TLS_SECRET_TYPE
                            ),
                        ));
                        continue;
                    }
                    let cert = checked.entry(i).or_insert_with(|| check_secret(secret, now, diags));
                    certs.extend(cert.clone());
                }
                if let (Some(host), false) = (&l.hostname, certs.is_empty()) {
                    let covered = certs.iter().flat_map(|c| &c.names).any(|n| n == host || veer_pki::name_covers(n, host));
                    if !covered {
                        diags.push(about(
                            &g.meta,
                            l.pos,
                            Severity::Warning,
                            &format!("spec.listeners[{li}].hostname"),
                            format!("no certificate of listener {:?} names {host}: clients that check names will refuse it", l.name),
                        ));
                    }
                }
                out.push(TlsListener {
                    cluster: g.cluster.clone(),
                    gateway: format!("{}/{}", g.meta.namespace, g.meta.name),
                    listener: l.name.clone(),
                    port: l.port,
                    hostname: l.hostname.clone(),
                    certs,
                });
            }
        }
        self.tls_listeners = out;
        for g in &self.gateways {
            let Ok(sockets) = self.listeners(&g.cluster) else { continue };
            for (li, l) in g.listeners.iter().enumerate().filter(|(_, l)| l.protocol == "HTTPS" || l.passthrough) {
                let Some(&socket) = sockets.ports.get(&l.port) else { continue };
                // Two ports are never mapped to one address (`Cluster` refuses it), so an HTTPS
                // or Passthrough port shares a socket only with the gateway's names.
                let why = (socket == GATEWAY_SOCKET).then(|| format!("port {} is served on the node's gateway address, which stays plain HTTP for the mesh's names; map it to an address of its own in the Cluster's spec.gateway.ports", l.port));
                if let Some(why) = why {
                    diags.push(about(&g.meta, l.pos, Severity::Error, &format!("spec.listeners[{li}].port"), why));
                }
            }
        }
    }

    /// Whether Gateway listener port `port` of `cluster` passes TLS through by SNI: a `TLS`
    /// Passthrough listener's port, or an Istio Gateway server's with `tls.mode: PASSTHROUGH`.
    pub fn passthrough_port(&self, cluster: &str, port: u16) -> bool {
        self.gateways.iter().filter(|g| g.cluster == cluster).flat_map(|g| &g.listeners).any(|l| l.passthrough && l.port == port)
            || self.istio_passthrough(cluster).any(|s| s.port == port)
    }

    /// The Istio Gateway servers of `cluster` with `tls.mode: PASSTHROUGH`.
    pub fn istio_passthrough<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a crate::istio::IstioServer> + 'a {
        self.istio_gateways.iter().filter(move |(c, _)| c == cluster).flat_map(|(_, g)| &g.servers).filter(|s| s.passthrough())
    }

    /// Checks the ports that pass TLS through: an Istio PASSTHROUGH server's port needs an
    /// address of its own (as a Gateway API one does, see `check_tls`) and hosts some
    /// destination has at that port; no HTTP or HTTPS listener may share a passthrough port,
    /// whose socket reads a ClientHello before anything else.
    fn check_passthrough(&self, diags: &mut Diagnostics) {
        for (cluster, g) in &self.istio_gateways {
            let Ok(sockets) = self.listeners(cluster) else { continue };
            for (si, s) in g.servers.iter().enumerate().filter(|(_, s)| s.passthrough()) {
                let field = format!("spec.servers[{si}].port.number");
                match sockets.ports.get(&s.port) {
                    None => diags.push(about(&g.meta, s.pos, Severity::Warning, &field, format!(
                        "NOT SERVED: port {} has no address in cluster {cluster}'s spec.gateway.ports; map it to an address of its own to pass these hosts through by SNI", s.port))),
                    Some(&GATEWAY_SOCKET) => diags.push(about(&g.meta, s.pos, Severity::Error, &field, format!(
                        "port {} is served on the node's gateway address, which stays plain HTTP for the mesh's names; map it to an address of its own in the Cluster's spec.gateway.ports", s.port))),
                    Some(_) => {}
                }
                let named = |h: &str| s.hosts.iter().any(|p| host_matches(p, h));
                // The hosts `resolve::destinations` gives a node, at this port.
                let routed = self
                    .virtual_destinations
                    .iter()
                    .any(|v| v.ports.iter().any(|p| p.number == s.port) && v.hosts.iter().any(|h| named(h)))
                    || self.failover_services.iter().any(|f| f.port == s.port && named(&f.hostname))
                    || self.services.iter().any(|(_, svc)| {
                        svc.ports.iter().any(|p| p.port == s.port)
                            && named(&format!("{}.{}.svc.cluster.local", svc.meta.name, svc.meta.namespace))
                    });
                if !routed {
                    diags.push(about(&g.meta, s.pos, Severity::Warning, &format!("spec.servers[{si}].hosts"), format!(
                        "no destination has these hosts at port {}: a PASSTHROUGH server routes an SNI name to the Service (or VirtualDestination, FailoverService) host of that name at the server's port", s.port)));
                }
            }
        }
        for g in &self.gateways {
            for (li, l) in g.listeners.iter().enumerate().filter(|(_, l)| l.protocol == "HTTP" || l.protocol == "HTTPS") {
                if self.passthrough_port(&g.cluster, l.port) {
                    diags.push(about(&g.meta, l.pos, Severity::Error, &format!("spec.listeners[{li}].port"), format!(
                        "port {} passes TLS through by SNI (a TLS Passthrough listener or an Istio PASSTHROUGH server is on it); an {} listener needs a port of its own", l.port, l.protocol)));
                }
            }
        }
    }

    /// Turns each BackendTLSPolicy into the client configuration of the Services it targets:
    /// its ConfigMaps' `ca.crt` (same namespace), its hostname. A Service port two policies
    /// target, and a route rule whose Service backends disagree on TLS, are errors: veer would
    /// otherwise have to pick one, and a guess here is plain text sent where TLS was meant.
    fn check_backend_tls(&mut self, diags: &mut Diagnostics) {
        let mut out: Vec<BackendTls> = Vec::new();
        for p in &self.backend_tls_policies {
            let mut pem = String::new();
            let mut from = Vec::new();
            let mut ok = true;
            for (name, pos) in &p.ca_refs {
                let found = self.config_maps.iter().find(|(_, c)| c.meta.namespace == p.meta.namespace && c.meta.name == *name);
                match found.map(|(_, c)| &c.ca_crt) {
                    None => {
                        diags.push(about(
                            &p.meta,
                            *pos,
                            Severity::Error,
                            "spec.validation.caCertificateRefs",
                            format!("no ConfigMap {}/{name} in the manifests", p.meta.namespace),
                        ));
                        ok = false;
                    }
                    Some(None) => {
                        diags.push(about(
                            &p.meta,
                            *pos,
                            Severity::Error,
                            "spec.validation.caCertificateRefs",
                            format!("ConfigMap {}/{name} has no ca.crt", p.meta.namespace),
                        ));
                        ok = false;
                    }
                    Some(Some((text, _))) => {
                        pem.push_str(text);
                        pem.push('\n');
                        from.push(format!("ConfigMap {}/{name}", p.meta.namespace));
                    }
                }
            }
            if !ok {
                continue;
            }
            let ca = (!p.system_roots).then(|| (pem.as_bytes(), from.join(", ")));
            let tls = match crate::upstream_tls::backend_tls(p, ca) {
                Ok(t) => std::sync::Arc::new(t),
                Err(e) => {
                    diags.push(about(&p.meta, p.hostname.1, Severity::Error, "spec.validation", e.to_string()));
                    continue;
                }
            };
            for (service, section, pos) in &p.targets {
                if !self.service_anywhere(&p.meta.namespace, service) {
                    diags.push(about(
                        &p.meta,
                        *pos,
                        Severity::Error,
                        "spec.targetRefs",
                        format!("no Service {}/{service} in the manifests", p.meta.namespace),
                    ));
                    continue;
                }
                let overlaps = out.iter().find(|b| {
                    b.namespace == p.meta.namespace
                        && b.service == *service
                        && (b.section.is_none() || section.is_none() || b.section == *section)
                });
                if let Some(other) = overlaps {
                    diags.push(about(
                        &p.meta,
                        *pos,
                        Severity::Error,
                        "spec.targetRefs",
                        format!("Service {}/{service} is already targeted by {}", p.meta.namespace, other.tls.origin),
                    ));
                    continue;
                }
                out.push(BackendTls {
                    namespace: p.meta.namespace.clone(),
                    service: service.clone(),
                    section: section.clone(),
                    tls: tls.clone(),
                });
            }
        }
        self.backend_tls = out;
        for route in &self.routes {
            for (i, rule) in route.rules.iter().enumerate() {
                let mut seen = rule.backends.iter().filter(|b| b.kind == "Service").map(|b| {
                    let port_name = self
                        .services_named(&b.namespace, &b.name)
                        .find_map(|(_, s)| s.ports.iter().find(|p| Some(p.port) == b.port).map(|p| p.name.clone()));
                    self.backend_tls_for(&b.namespace, &b.name, port_name.as_deref()).map(std::sync::Arc::as_ptr)
                });
                let Some(first) = seen.next() else { continue };
                if seen.any(|t| t != first) {
                    diags.push(about(
                        &route.meta,
                        rule.pos,
                        Severity::Error,
                        &format!("spec.rules[{i}].backendRefs"),
                        "the Services of one rule must agree on TLS (BackendTLSPolicy): veer speaks one protocol to a rule's endpoints",
                    ));
                }
            }
        }
    }

    /// The TLS a BackendTLSPolicy sets for `namespace/service`, at the port named `port_name`.
    pub fn backend_tls_for(
        &self,
        namespace: &str,
        service: &str,
        port_name: Option<&str>,
    ) -> Option<&std::sync::Arc<crate::upstream_tls::UpstreamTls>> {
        self.backend_tls
            .iter()
            .find(|b| b.namespace == namespace && b.service == service && (b.section.is_none() || b.section.as_deref() == port_name))
            .map(|b| &b.tls)
    }

    /// The sockets the node of `cluster` serves and which Gateway listener ports each serves:
    /// every address of `spec.gateway.ports`, and the node's gateway. A port with served routes
    /// and no mapping is served on the gateway only when it is the cluster's one such port;
    /// otherwise the answer is why not.
    pub fn listeners(&self, cluster: &str) -> Result<Listeners, UnmappedPorts> {
        let c = self.cluster(cluster);
        let mapped: &[crate::topology::GatewayPort] = c.map_or(&[], |c| &c.gateway_ports);
        let gateway = c.and_then(|c| c.gateway);
        let mut out = Listeners::default();
        for p in mapped {
            // The gateway's own address is the gateway's socket (and follows `--listen`).
            if Some(p.address) != gateway && !out.extra.contains(&p.address) {
                out.extra.push(p.address);
            }
        }
        out.extra.sort_unstable();
        for p in mapped {
            let socket = out.extra.iter().position(|a| *a == p.address).map_or(0, |i| i + 1);
            out.ports.insert(p.port, socket);
        }
        let served: BTreeSet<u16> = self
            .routes
            .iter()
            .flat_map(|r| &r.served)
            .chain(self.tls_routes.iter().flat_map(|r| &r.served))
            .filter(|s| s.cluster == cluster)
            .map(|s| s.port)
            .collect();
        let unmapped: Vec<u16> = served.iter().copied().filter(|p| !out.ports.contains_key(p)).collect();
        match (served.len(), unmapped.as_slice()) {
            (_, []) => {}
            (1, [only]) => {
                out.ports.insert(*only, 0);
            }
            (_, unmapped) => {
                return Err(UnmappedPorts {
                    cluster: cluster.to_string(),
                    served: served.into_iter().collect(),
                    unmapped: unmapped.to_vec(),
                });
            }
        }
        Ok(out)
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.meta.name == name)
    }

    /// Services a Gloo selector picks, with their clusters.
    pub fn select_services<'a>(&'a self, sel: &'a ObjectSelector) -> impl Iterator<Item = &'a (String, Service)> + 'a {
        self.services.iter().filter(move |(cluster, s)| {
            sel.name.as_ref().is_none_or(|n| *n == s.meta.name)
                && sel.namespace.as_ref().is_none_or(|n| *n == s.meta.namespace)
                && sel.cluster.as_ref().is_none_or(|c| c == cluster)
                && sel.labels.iter().all(|(k, v)| s.meta.labels.get(k) == Some(v))
        })
    }

    /// Every Service, with its cluster.
    pub fn services(&self) -> &[(String, Service)] {
        &self.services
    }

    /// Every WorkloadEntry, with its cluster, in manifest order.
    pub fn entries(&self) -> &[(String, WorkloadEntry)] {
        &self.entries
    }

    fn lookup(&self) -> &Lookup {
        self.lookup.0.get_or_init(|| Lookup::build(&self.services, &self.destination_rules))
    }

    /// The DestinationRule for `host`: the first (in manifest order) naming exactly it, in any
    /// case, else the first whose host pattern matches it. A lookup, not a scan of every rule:
    /// each destination asks, and an API server may hold thousands of rules.
    pub fn destination_rule_for(&self, host: &str) -> Option<&DestinationRule> {
        let lookup = self.lookup();
        let exact = lookup.rules_by_host.get(&host.to_ascii_lowercase()).and_then(|r| r.first());
        let index =
            exact.or_else(|| lookup.pattern_rules.iter().find(|&&i| host_matches(&self.destination_rules[i as usize].host, host)))?;
        self.destination_rules.get(*index as usize)
    }

    /// Every cluster's Service `name.namespace`, in manifest order.
    pub fn services_named<'a: 'k, 'k>(&'a self, namespace: &'k str, name: &'k str) -> impl Iterator<Item = &'a (String, Service)> + 'k {
        let positions = self.lookup().services.get(&key_of(&[namespace, name])).map_or(&[][..], |p| p.as_slice());
        positions.iter().map(|&i| &self.services[i as usize]).filter(move |(_, s)| s.meta.namespace == namespace && s.meta.name == name)
    }

    /// The Service `name.namespace` in `cluster`.
    pub fn service(&self, cluster: &str, namespace: &str, name: &str) -> Option<&Service> {
        self.services_named(namespace, name).find(|(c, _)| c == cluster).map(|(_, s)| s)
    }

    /// Whether any cluster has a Service `name.namespace`.
    pub fn service_anywhere(&self, namespace: &str, name: &str) -> bool {
        self.services_named(namespace, name).next().is_some()
    }

    /// VirtualDestinations a policy's `applyToDestinations` picks (all when empty).
    pub fn policy_targets<'a>(&'a self, apply_to: &'a [crate::gloo::DestinationRef]) -> impl Iterator<Item = &'a VirtualDestination> + 'a {
        self.virtual_destinations.iter().filter(move |vd| {
            apply_to.is_empty()
                || apply_to.iter().any(|d| {
                    let s = &d.selector;
                    s.name.as_ref().is_none_or(|n| *n == vd.meta.name)
                        && s.namespace.as_ref().is_none_or(|n| *n == vd.meta.namespace)
                        && s.labels.iter().all(|(k, v)| vd.meta.labels.get(k) == Some(v))
                        && d.port.is_none_or(|p| vd.ports.iter().any(|vp| vp.number == p))
                })
        })
    }

    fn check_gloo(&self, diags: &mut Diagnostics) {
        for vd in &self.virtual_destinations {
            let mut per_cluster: BTreeMap<&str, Vec<&Service>> = BTreeMap::new();
            for sel in &vd.services {
                for (c, s) in self.select_services(sel) {
                    per_cluster.entry(c.as_str()).or_default().push(s);
                }
            }
            for (cluster, services) in &per_cluster {
                let mut names: Vec<String> = services.iter().map(|s| format!("{}/{}", s.meta.namespace, s.meta.name)).collect();
                names.sort();
                names.dedup();
                if names.len() > 1 {
                    let at = vd.services.first().map_or(vd.meta.pos, |s| s.pos);
                    diags.push(about(&vd.meta, at, Severity::Error, "spec.services", format!(
                        "selects {} Services in cluster {cluster} ({}); a VirtualDestination may have at most one Service per cluster (Gloo marks it INVALID)",
                        names.len(), names.join(", "))));
                }
            }
            if per_cluster.is_empty() && !vd.services.is_empty() {
                diags.push(about(
                    &vd.meta,
                    vd.services[0].pos,
                    Severity::Warning,
                    "spec.services",
                    "selects no Service yet, so the destination has no endpoints",
                ));
            }
            for p in &vd.ports {
                if let Some(crate::topology::PortRef::Name(n)) = &p.target_port {
                    for services in per_cluster.values() {
                        for s in services {
                            if !s.ports.iter().any(|sp| sp.name == *n) {
                                diags.push(about(
                                    &vd.meta,
                                    p.pos,
                                    Severity::Error,
                                    "spec.ports.targetPort",
                                    format!(
                                        "Service {}/{} has no port named {n:?}; every backing Service needs the target port",
                                        s.meta.namespace, s.meta.name
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        for fp in &self.failover_policies {
            if self.policy_targets(&fp.apply_to).next().is_none() {
                let pos = fp.apply_to.first().map_or(fp.meta.pos, |d| d.pos);
                diags.push(about(
                    &fp.meta,
                    pos,
                    Severity::Error,
                    "spec.applyToDestinations",
                    format!("selects no VirtualDestination; known: {}", self.vd_names()),
                ));
            }
        }
        for odp in &self.outlier_policies {
            if !odp.apply_to.is_empty() && self.policy_targets(&odp.apply_to).next().is_none() {
                diags.push(about(
                    &odp.meta,
                    odp.apply_to[0].pos,
                    Severity::Error,
                    "spec.applyToDestinations",
                    format!("selects no VirtualDestination; known: {}", self.vd_names()),
                ));
            }
        }
    }

    fn vd_names(&self) -> String {
        let names: Vec<String> = self.virtual_destinations.iter().map(|v| format!("{}/{}", v.meta.namespace, v.meta.name)).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// TrafficPolicies with outlier detection that select `name.namespace` in `cluster`.
    pub fn smh_outlier_for(&self, cluster: &str, namespace: &str, name: &str) -> Option<&TrafficPolicy> {
        self.traffic_policies.iter().find(|tp| {
            tp.outlier.is_some()
                && (tp.destinations.iter().any(|d| d.cluster == cluster && d.namespace == namespace && d.name == name)
                    || tp.destination_matchers.iter().any(|m| {
                        (m.clusters.is_empty() || m.clusters.iter().any(|c| c == cluster))
                            && (m.namespaces.is_empty() || m.namespaces.iter().any(|n| n == namespace))
                            && self
                                .service(cluster, namespace, name)
                                .is_some_and(|s| m.labels.iter().all(|(k, v)| s.meta.labels.get(k) == Some(v)))
                    }))
        })
    }

    fn known_meshes(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.clusters.iter().map(|c| mesh_name_of_cluster(&c.meta.name)).collect();
        for vm in &self.virtual_meshes {
            out.extend(vm.meshes.iter().map(|(n, _)| n.clone()));
        }
        out
    }

    fn check_smh(&self, diags: &mut Diagnostics) {
        let meshes = self.known_meshes();
        for fs in &self.failover_services {
            for (mesh, _, pos) in &fs.meshes {
                if !meshes.contains(mesh) {
                    diags.push(about(
                        &fs.meta,
                        *pos,
                        Severity::Error,
                        "spec.meshes",
                        format!("mesh {mesh:?} does not exist; known meshes: {}", meshes.iter().cloned().collect::<Vec<_>>().join(", ")),
                    ));
                }
            }
            let mut backing_meshes = BTreeSet::new();
            for b in &fs.backing {
                if self.service(&b.cluster, &b.namespace, &b.name).is_none() {
                    diags.push(about(
                        &fs.meta,
                        b.pos,
                        Severity::Error,
                        "spec.backingServices",
                        format!("Service {}/{} does not exist in cluster {}", b.namespace, b.name, b.cluster),
                    ));
                } else if self.smh_outlier_for(&b.cluster, &b.namespace, &b.name).is_none() {
                    diags.push(about(&fs.meta, b.pos, Severity::Error, "spec.backingServices", format!(
                        "Service {}/{} in cluster {} has no outlier detection; every backing service needs a TrafficPolicy with outlierDetection, or failover can never happen",
                        b.namespace, b.name, b.cluster)));
                }
                backing_meshes.insert(mesh_name_of_cluster(&b.cluster));
            }
            if backing_meshes.len() > 1 {
                let grouped = self.virtual_meshes.iter().any(|vm| backing_meshes.iter().all(|m| vm.meshes.iter().any(|(n, _)| n == m)));
                if !grouped {
                    diags.push(about(
                        &fs.meta,
                        fs.meta.pos,
                        Severity::Error,
                        "spec.backingServices",
                        format!(
                            "backing services are in unrelated meshes ({}); group them in a VirtualMesh",
                            backing_meshes.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        for tp in &self.traffic_policies {
            for d in &tp.destinations {
                if self.service(&d.cluster, &d.namespace, &d.name).is_none() {
                    diags.push(about(
                        &tp.meta,
                        d.pos,
                        Severity::Error,
                        "spec.destinationSelector",
                        format!("Service {}/{} does not exist in cluster {}", d.namespace, d.name, d.cluster),
                    ));
                }
            }
            for (name, ns, pos) in &tp.shift_to_failover {
                if !self.failover_services.iter().any(|f| f.meta.name == *name && f.meta.namespace == *ns) {
                    diags.push(about(
                        &tp.meta,
                        *pos,
                        Severity::Error,
                        "spec.trafficShift.destinations.failoverService",
                        format!("FailoverService {ns}/{name} does not exist"),
                    ));
                }
            }
        }
    }

    fn check_istio(&self, diags: &mut Diagnostics) {
        let regions: BTreeSet<&str> = self.clusters.iter().map(|c| c.locality.region.as_str()).collect();
        // Each Service's host made once: a rule per Service over thousands of Services (an API
        // server's worth) must not cost rules × Services formatted names.
        let service_hosts: BTreeSet<String> = self
            .services
            .iter()
            .map(|(_, s)| format!("{}.{}.svc.cluster.local", s.meta.name, s.meta.namespace).to_ascii_lowercase())
            .collect();
        for dr in &self.destination_rules {
            let pattern = dr.host.rsplit_once('/').map_or(dr.host.as_str(), |(_, h)| h);
            let names_a_service = if pattern.starts_with('*') {
                service_hosts.iter().any(|h| host_matches(&dr.host, h))
            } else {
                service_hosts.contains(&pattern.to_ascii_lowercase())
            };
            let known = names_a_service || self.virtual_destinations.iter().any(|v| v.hosts.iter().any(|h| host_matches(&dr.host, h)));
            if !known {
                diags.push(about(
                    &dr.meta,
                    dr.host_pos,
                    Severity::Warning,
                    "spec.host",
                    format!("{:?} matches no Service or VirtualDestination host; the rule applies to nothing yet", dr.host),
                ));
            }
            if let Some(l) = &dr.locality {
                let fails_over = l.enabled && l.distribute.is_empty();
                if fails_over && dr.outlier.is_none() {
                    diags.push(about(&dr.meta, l.pos, Severity::Warning, "spec.trafficPolicy.loadBalancer.localityLbSetting",
                        "FAILOVER IS INERT: without trafficPolicy.outlierDetection nothing marks an endpoint unhealthy, so Istio keeps every endpoint at priority 0 and never fails over. Add outlierDetection (for example consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100)"));
                }
                if !regions.is_empty() {
                    for f in &l.failover {
                        for r in [&f.from, &f.to] {
                            if !regions.contains(r.as_str()) {
                                let hint = if r.contains('$') { " (was a shell variable left unexpanded?)" } else { "" };
                                diags.push(about(
                                    &dr.meta,
                                    l.pos,
                                    Severity::Warning,
                                    "spec.trafficPolicy.loadBalancer.localityLbSetting.failover",
                                    format!(
                                        "region {r:?} is not the region of any Cluster{hint}; known regions: {}",
                                        regions.iter().copied().collect::<Vec<_>>().join(", ")
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    fn check_gateway(&self, diags: &mut Diagnostics) {
        for b in &self.backends {
            for e in &b.endpoints {
                if let BackendEndpoint::Fqdn { hostname, .. } = e {
                    if let Some((name, ns)) = cluster_local_service(hostname) {
                        if !self.service_anywhere(ns, name) {
                            diags.push(about(
                                &b.meta,
                                b.meta.pos,
                                Severity::Error,
                                "spec.endpoints.fqdn.hostname",
                                format!("{hostname} names Service {ns}/{name}, which no cluster has"),
                            ));
                        }
                    }
                }
            }
        }
        for p in &self.backend_policies {
            for t in &p.targets {
                let exists = match t.kind.as_str() {
                    "HTTPRoute" => self.routes.iter().any(|r| r.meta.name == t.name && r.meta.namespace == p.meta.namespace),
                    "TLSRoute" => self.tls_routes.iter().any(|r| r.meta.name == t.name && r.meta.namespace == p.meta.namespace),
                    "Gateway" => self.gateways.iter().any(|g| g.meta.name == t.name && g.meta.namespace == p.meta.namespace),
                    _ => true,
                };
                if !exists {
                    diags.push(about(
                        &p.meta,
                        t.pos,
                        Severity::Error,
                        "spec.targetRefs",
                        format!("{} {}/{} does not exist", t.kind, p.meta.namespace, t.name),
                    ));
                }
            }
        }
        for r in &self.routes {
            for parent in &r.parents {
                if !self.gateways.iter().any(|g| g.meta.name == parent.name && g.meta.namespace == parent.namespace) {
                    diags.push(about(
                        &r.meta,
                        parent.pos,
                        Severity::Error,
                        "spec.parentRefs",
                        format!("Gateway {}/{} does not exist", parent.namespace, parent.name),
                    ));
                }
            }
            for rule in &r.rules {
                for b in &rule.backends {
                    self.check_backend_ref(&r.meta, b, diags);
                }
                let has_fallback = rule
                    .backends
                    .iter()
                    .any(|b| self.backends.iter().any(|x| x.meta.name == b.name && x.meta.namespace == b.namespace && x.fallback));
                let checked = self.backend_policies.iter().any(|p| {
                    (p.passive.is_some() || p.active.is_some()) && p.targets.iter().any(|t| t.kind == "HTTPRoute" && t.name == r.meta.name)
                });
                if has_fallback && !checked {
                    diags.push(about(&r.meta, rule.pos, Severity::Warning, "spec.rules",
                        "FALLBACK IS INERT: this rule has a fallback Backend but no BackendTrafficPolicy health check (passive or active) targets the route, so nothing marks the active backends unhealthy"));
                }
            }
        }
    }

    fn check_router(&self, diags: &mut Diagnostics) {
        for (cluster, sr) in &self.service_routes {
            if !self
                .router_gateways
                .iter()
                .any(|(c, g)| c == cluster && g.meta.name == sr.gateway_name && g.meta.namespace == sr.gateway_namespace)
            {
                diags.push(about(
                    &sr.meta,
                    sr.pos,
                    Severity::Error,
                    "spec.gatewayName",
                    format!("routing.router.io Gateway {}/{} does not exist in cluster {cluster}", sr.gateway_namespace, sr.gateway_name),
                ));
            }
        }
        for (cluster, ci) in &self.cluster_identities {
            let controllers: Vec<&(String, String)> =
                self.dns_configurations.iter().filter(|(c, _)| c == cluster).flat_map(|(_, d)| &d.controllers).collect();
            if self.dns_configurations.iter().any(|(c, _)| c == cluster) {
                for (r, pos) in &ci.adopts_regions {
                    if !controllers.iter().any(|(_, region)| region == r) {
                        diags.push(about(&ci.meta, *pos, Severity::Warning, "spec.adoptsRegions", format!("no ExternalDNS controller in this cluster's DNSConfiguration writes region {r:?}, so the adoption has no effect (AdoptedRegionNotFound)")));
                    }
                }
            }
        }
    }
}

/// `name.namespace.svc.cluster.local` → (name, namespace).
pub fn cluster_local_service(host: &str) -> Option<(&str, &str)> {
    let rest = host.strip_suffix(".svc.cluster.local")?;
    let (name, ns) = rest.split_once('.')?;
    (!name.is_empty() && !ns.is_empty() && !ns.contains('.')).then_some((name, ns))
}

/// Whether objects of `kind` belong to one cluster (and say which by the label
/// `topology.istio.io/cluster` when several are defined).
pub fn is_per_cluster(kind: &str) -> bool {
    matches!(kind, "Service" | "WorkloadEntry" | "Gateway" | "ClusterIdentity" | "DNSConfiguration" | "DNSPolicy" | "ServiceRoute")
}

/// The cluster an object belongs to (only meaningful for per-cluster kinds).
fn owner_cluster(meta: &Meta, clusters: &[String], diags: &mut Diagnostics) -> String {
    let per_cluster = is_per_cluster(meta.kind);
    match meta.cluster_label() {
        Some(c) => {
            if !clusters.is_empty() && !clusters.iter().any(|k| k == c) {
                diags.push(about(
                    meta,
                    meta.pos,
                    Severity::Error,
                    "metadata.labels[\"topology.istio.io/cluster\"]",
                    format!("cluster {c:?} is not defined; known clusters: {}", clusters.join(", ")),
                ));
            }
            c.to_string()
        }
        None if clusters.len() == 1 => clusters[0].clone(),
        None if clusters.is_empty() => IMPLICIT_CLUSTER.to_string(),
        None => {
            if per_cluster {
                diags.push(about(
                    meta,
                    meta.pos,
                    Severity::Error,
                    "metadata.labels",
                    format!(
                    "several clusters are defined, so say which one holds this {}: add the label topology.istio.io/cluster with one of: {}",
                    meta.kind, clusters.join(", ")),
                ));
            }
            String::new()
        }
    }
}

/// A `kubernetes.io/tls` Secret's pair, checked; errors point at the field at fault.
fn check_secret(secret: &Secret, now: rustls_pki_types::UnixTime, diags: &mut Diagnostics) -> Option<veer_pki::ServingCert> {
    let (cert, key) = (secret.cert.as_ref()?, secret.key.as_ref()?);
    let mut bytes = |f: &crate::tls::Field| match f.bytes() {
        Ok(b) => Some(b),
        Err(e) => {
            diags.push(about(&secret.meta, f.pos, Severity::Error, &f.path, e));
            None
        }
    };
    let (c, k) = (bytes(cert)?, bytes(key)?);
    match veer_pki::serving_cert(&c, &k, now) {
        Ok(s) => Some(s),
        Err((part, e)) => {
            let f = if part == veer_pki::Part::Certificate { cert } else { key };
            diags.push(about(&secret.meta, f.pos, Severity::Error, &f.path, e.message()));
            None
        }
    }
}

fn check_duplicates(resources: &[Resource], diags: &mut Diagnostics) {
    // Hashed, and keyed by borrowed parts: a sorted map of owned keys made this the costliest
    // step of checking 10,000 resources.
    let mut seen: HashMap<(&str, &str, &str, &str, &str), &Meta> = HashMap::with_capacity(resources.len());
    for r in resources {
        let m = meta_of(r);
        let group = m.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let key = (group, m.kind, m.cluster_label().unwrap_or(""), m.namespace.as_str(), m.name.as_str());
        if let Some(first) = seen.get(&key) {
            diags.push(about(
                m,
                m.pos,
                Severity::Error,
                "metadata.name",
                format!("duplicate {} {}/{}; first defined at {}", m.kind, m.namespace, m.name, first.location()),
            ));
        } else {
            seen.insert(key, m);
        }
    }
}
