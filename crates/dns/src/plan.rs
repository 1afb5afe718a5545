//! The record plan of a cluster exactly as the Service Router Operator computes it: which
//! DNSPolicies are active, which ExternalDNS controllers they activate, one DNSEndpoint per
//! ServiceRoute and controller, and the gateway's A record in every regional zone. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use veer_model::router::{ClusterIdentity, DnsConfiguration, DnsMode, DnsPolicy, RouterGateway};
use veer_model::set::ManifestSet;

/// Label and annotation keys the operator writes on its DNSEndpoints.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const OPERATOR: &str = "service-router-operator";
pub const CONTROLLER_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/controller";

/// Settings the operator leaves implicit and veer makes explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// TTL of every record, in seconds. The operator sets none on route CNAMEs (so the
    /// provider's default applies) and 300 on gateway A records; veer sets this one on both.
    pub ttl: u32,
    /// Gateway addresses of Clusters whose `spec.gateway.address` names no specific IP (a
    /// running node knows the address it listens on). They never override the spec: what a
    /// node serves and what `veer dns endpoints` hands to ExternalDNS must be one address.
    pub gateways: BTreeMap<String, IpAddr>,
}

/// The address clients are told for `cluster`'s gateway: its `spec.gateway.address` (veer's
/// stand-in for the LoadBalancer IP), unless that is a wildcard IP. `--listen` only moves the
/// socket; a node falls back to its listen address only when this is `None`.
pub fn advertised_gateway(set: &ManifestSet, cluster: &str) -> Option<IpAddr> {
    set.cluster(cluster).and_then(|c| c.gateway).map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { ttl: 60, gateways: BTreeMap::new() }
    }
}

/// A regional zone: the ExternalDNS zone of one region for one domain.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub struct ZoneId {
    pub domain: String,
    pub region: String,
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.domain)
    }
}

/// The record types the operator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RecordKind {
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    #[allow(clippy::upper_case_acronyms)]
    CNAME,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "A",
            RecordKind::AAAA => "AAAA",
            RecordKind::CNAME => "CNAME",
        }
    }
}

/// Why a DNSEndpoint exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A ServiceRoute's CNAME (ServiceRoute controller).
    Route { namespace: String, name: String },
    /// The gateway's A record (IngressDNS controller).
    Gateway { controller: String, postfix: String },
}

/// One `externaldns.k8s.io/v1alpha1 DNSEndpoint` with its single record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The ExternalDNS controller (DNSConfiguration entry) this endpoint is for.
    pub controller: String,
    pub zone: ZoneId,
    pub source: Source,
    pub dns_name: String,
    pub record_type: RecordKind,
    pub target: String,
    pub ttl: u32,
}

/// Phase of a resource as the operator reports it in its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    Active,
    Inactive,
    Pending,
    Failed,
}

/// A DNSPolicy's status: `isPolicyActive` and `determineActiveControllers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyStatus {
    pub namespace: String,
    pub name: String,
    pub mode: &'static str,
    pub phase: Phase,
    pub active: bool,
    pub active_controllers: Vec<String>,
    pub reason: String,
}

/// A ServiceRoute's status and the endpoints it writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    pub namespace: String,
    pub name: String,
    pub phase: Phase,
    pub reason: String,
    pub endpoints: Vec<String>,
}

/// What one cluster's operator writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterPlan {
    /// The veer `Cluster` (the `topology.istio.io/cluster` label).
    pub cluster: String,
    /// ClusterIdentity: region, cluster, domain, environment letter.
    pub region: Option<String>,
    pub identity_cluster: Option<String>,
    pub domain: Option<String>,
    pub adopts_regions: Vec<String>,
    pub gateway_ip: Option<IpAddr>,
    pub policies: Vec<PolicyStatus>,
    pub routes: Vec<RouteStatus>,
    pub endpoints: Vec<Endpoint>,
    pub notes: Vec<String>,
}

impl ClusterPlan {
    /// Endpoints of ServiceRoutes (the records takeover moves) in `zone`.
    pub fn route_endpoints<'a>(&'a self, zone: &'a ZoneId) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| matches!(e.source, Source::Route { .. }) && e.zone == *zone)
    }

    /// Every zone this plan writes into, with whether a route record is among them.
    pub fn zones(&self) -> BTreeSet<ZoneId> {
        self.endpoints.iter().map(|e| e.zone.clone()).collect()
    }
}

/// The clusters of `set` that have a ClusterIdentity, in name order.
pub fn identified_clusters(set: &ManifestSet) -> Vec<String> {
    let names: BTreeSet<String> = set.cluster_identities.iter().map(|(c, _)| c.clone()).collect();
    names.into_iter().collect()
}

/// Plans of every cluster with a ClusterIdentity.
pub fn all(set: &ManifestSet, opts: &PlanOptions) -> Vec<ClusterPlan> {
    identified_clusters(set).iter().map(|c| cluster(set, c, opts)).collect()
}

/// The singleton of a cluster: the object named `preferred`, else the first by name.
fn singleton<'a, T>(items: impl Iterator<Item = (&'a str, &'a T)>, preferred: &str, what: &str, notes: &mut Vec<String>) -> Option<&'a T> {
    let mut all: Vec<(&str, &T)> = items.collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    if all.len() > 1 {
        notes.push(format!(
            "{} {what} objects; the operator expects one (SingletonViolation); using {:?}",
            all.len(),
            all.iter().find(|(n, _)| *n == preferred).unwrap_or(&all[0]).0
        ));
    }
    all.iter().find(|(n, _)| *n == preferred).or(all.first()).map(|(_, t)| *t)
}

/// The record plan of `cluster` (a veer `Cluster` name, or the implicit one).
pub fn cluster(set: &ManifestSet, cluster: &str, opts: &PlanOptions) -> ClusterPlan {
    let mut notes = Vec::new();
    let identity: Option<&ClusterIdentity> = singleton(
        set.cluster_identities.iter().filter(|(c, _)| c == cluster).map(|(_, ci)| (ci.meta.name.as_str(), ci)),
        "cluster-identity",
        "ClusterIdentity",
        &mut notes,
    );
    let config: Option<&DnsConfiguration> = singleton(
        set.dns_configurations.iter().filter(|(c, _)| c == cluster).map(|(_, d)| (d.meta.name.as_str(), d)),
        "dns-config",
        "DNSConfiguration",
        &mut notes,
    );
    // veer's stand-in for the LoadBalancer Service IP of the ingress gateway.
    let gateway_ip = advertised_gateway(set, cluster).or_else(|| opts.gateways.get(cluster).copied());

    let mut namespaces: BTreeSet<&str> = BTreeSet::new();
    for (c, p) in &set.dns_policies {
        if c == cluster {
            namespaces.insert(&p.meta.namespace);
        }
    }
    let mut policies = Vec::new();
    for ns in &namespaces {
        let mut in_ns: Vec<&DnsPolicy> =
            set.dns_policies.iter().filter(|(c, p)| c == cluster && p.meta.namespace == *ns).map(|(_, p)| p).collect();
        in_ns.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        for p in in_ns {
            policies.push(policy_status(p, identity, config));
        }
    }

    let mut endpoints = Vec::new();
    let mut routes = Vec::new();
    let mut srs: Vec<_> = set.service_routes.iter().filter(|(c, _)| c == cluster).map(|(_, r)| r).collect();
    srs.sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    for sr in srs {
        let (phase, reason, eps) = route_plan(set, cluster, sr, &policies, identity, config, opts);
        routes.push(RouteStatus {
            namespace: sr.meta.namespace.clone(),
            name: sr.meta.name.clone(),
            phase,
            reason,
            endpoints: eps.iter().map(|e| e.name.clone()).collect(),
        });
        endpoints.extend(eps);
    }
    endpoints.extend(gateway_endpoints(set, cluster, identity, config, gateway_ip, opts, &mut notes));

    ClusterPlan {
        cluster: cluster.to_string(),
        region: identity.map(|i| i.region.clone()),
        identity_cluster: identity.map(|i| i.cluster.clone()),
        domain: identity.map(|i| i.domain.clone()),
        adopts_regions: identity.map(|i| i.adopts_regions.iter().map(|(r, _)| r.clone()).collect()).unwrap_or_default(),
        gateway_ip,
        policies,
        routes,
        endpoints,
        notes,
    }
}

/// `isPolicyActive` + `determineActiveControllers` (DNSPolicy controller).
fn policy_status(p: &DnsPolicy, identity: Option<&ClusterIdentity>, config: Option<&DnsConfiguration>) -> PolicyStatus {
    let mode = match p.mode {
        DnsMode::Active => "Active",
        DnsMode::RegionBound => "RegionBound",
    };
    let status = |phase, active, active_controllers, reason: String| PolicyStatus {
        namespace: p.meta.namespace.clone(),
        name: p.meta.name.clone(),
        mode,
        phase,
        active,
        active_controllers,
        reason,
    };
    let Some(ci) = identity else {
        return status(
            Phase::Pending,
            false,
            Vec::new(),
            "ClusterIdentityNotAvailable: waiting for ClusterIdentity to be configured".into(),
        );
    };
    let Some(cfg) = config else {
        return status(
            Phase::Pending,
            false,
            Vec::new(),
            "DNSConfigurationNotAvailable: waiting for DNSConfiguration to be configured".into(),
        );
    };
    if cfg.controllers.is_empty() {
        return status(
            Phase::Failed,
            false,
            Vec::new(),
            "ValidationFailed: at least one ExternalDNS controller must be defined in DNSConfiguration".into(),
        );
    }
    if let Some(r) = p.source_region.as_deref().filter(|r| !r.is_empty()) {
        if r != ci.region {
            return status(Phase::Inactive, false, Vec::new(), format!("SourceRegion '{r}' does not match cluster region '{}'", ci.region));
        }
    }
    if let Some(c) = p.source_cluster.as_deref().filter(|c| !c.is_empty()) {
        if c != ci.cluster {
            return status(Phase::Inactive, false, Vec::new(), format!("SourceCluster '{c}' does not match cluster name '{}'", ci.cluster));
        }
    }
    let mut active: Vec<String> = Vec::new();
    match p.mode {
        DnsMode::Active => {
            active.extend(cfg.controllers.iter().filter(|(_, r)| *r == ci.region).map(|(n, _)| n.clone()));
            for (adopted, _) in &ci.adopts_regions {
                active.extend(cfg.controllers.iter().filter(|(_, r)| r == adopted).map(|(n, _)| n.clone()));
            }
        }
        DnsMode::RegionBound => active.extend(cfg.controllers.iter().map(|(n, _)| n.clone())),
    }
    let why = match p.mode {
        DnsMode::Active if ci.adopts_regions.is_empty() => format!("Active: the controllers of region {}", ci.region),
        DnsMode::Active => format!(
            "Active: the controllers of region {} and of adopted region(s) {}",
            ci.region,
            ci.adopts_regions.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ")
        ),
        DnsMode::RegionBound => "RegionBound: every controller of DNSConfiguration".into(),
    };
    status(Phase::Active, true, active, why)
}

/// ServiceRoute controller: the endpoints of one route, or why there are none.
fn route_plan(
    set: &ManifestSet,
    cluster: &str,
    sr: &veer_model::router::ServiceRoute,
    policies: &[PolicyStatus],
    identity: Option<&ClusterIdentity>,
    config: Option<&DnsConfiguration>,
    opts: &PlanOptions,
) -> (Phase, String, Vec<Endpoint>) {
    // The operator takes the first DNSPolicy the API server lists in the namespace (by name).
    let Some(policy) = policies.iter().find(|p| p.namespace == sr.meta.namespace) else {
        return (Phase::Pending, format!("DNSPolicyNotFound: no DNSPolicy in namespace {}", sr.meta.namespace), Vec::new());
    };
    if !policy.active {
        return (
            Phase::Pending,
            format!(
                "DNSPolicyInactive: DNSPolicy {}/{} is not active here ({}); its DNSEndpoints are removed",
                policy.namespace, policy.name, policy.reason
            ),
            Vec::new(),
        );
    }
    let Some(cfg) = config else {
        return (Phase::Pending, "DNSConfigurationNotAvailable".into(), Vec::new());
    };
    let gateway = set
        .router_gateways
        .iter()
        .find(|(c, g)| c == cluster && g.meta.name == sr.gateway_name && g.meta.namespace == sr.gateway_namespace)
        .map(|(_, g)| g);
    let Some(gateway) = gateway else {
        return (
            Phase::Pending,
            format!("GatewayNotFound: Gateway {} not found in namespace {}", sr.gateway_name, sr.gateway_namespace),
            Vec::new(),
        );
    };
    let Some(ci) = identity else {
        return (Phase::Pending, "ClusterIdentityNotAvailable".into(), Vec::new());
    };
    if policy.active_controllers.is_empty() {
        return (Phase::Failed, "DNSEndpointGenerationFailed: no active controllers in DNSPolicy".into(), Vec::new());
    }
    let source = format!("{}-ns-{}-{}-{}.{}", sr.service_name, ci.environment_letter, sr.environment, sr.application, ci.domain);
    let target = gateway_host(ci, gateway);
    let mut out: Vec<Endpoint> = Vec::new();
    for name in &policy.active_controllers {
        let Some((_, region)) = cfg.controllers.iter().find(|(n, _)| n == name) else { continue };
        let ep_name = format!("{}-{}", sr.meta.name, name);
        if out.iter().any(|e| e.name == ep_name) {
            continue; // the operator's desired map is keyed by name
        }
        let labels = BTreeMap::from([
            (MANAGED_BY.to_string(), OPERATOR.to_string()),
            ("router.io/controller".to_string(), name.clone()),
            ("router.io/region".to_string(), region.clone()),
            ("router.io/serviceroute".to_string(), sr.meta.name.clone()),
            ("router.io/source-namespace".to_string(), sr.meta.namespace.clone()),
        ]);
        out.push(Endpoint {
            name: ep_name,
            namespace: sr.meta.namespace.clone(),
            labels,
            annotations: BTreeMap::from([(CONTROLLER_ANNOTATION.to_string(), format!("external-dns-{region}"))]),
            controller: name.clone(),
            zone: ZoneId { domain: ci.domain.clone(), region: region.clone() },
            source: Source::Route { namespace: sr.meta.namespace.clone(), name: sr.meta.name.clone() },
            dns_name: source.clone(),
            record_type: RecordKind::CNAME,
            target: target.clone(),
            ttl: opts.ttl,
        });
    }
    let reason =
        format!("ReconciliationSucceeded: {} DNSEndpoint(s) for controller(s) {}", out.len(), policy.active_controllers.join(", "));
    (Phase::Active, reason, out)
}

/// `{cluster}-{region}-{postfix}.{domain}`: the gateway host route CNAMEs point at.
pub fn gateway_host(ci: &ClusterIdentity, gateway: &RouterGateway) -> String {
    format!("{}-{}-{}.{}", ci.cluster, ci.region, gateway.target_postfix, ci.domain)
}

/// IngressDNS controller: the gateway's A record for every controller of DNSConfiguration.
fn gateway_endpoints(
    set: &ManifestSet,
    cluster: &str,
    identity: Option<&ClusterIdentity>,
    config: Option<&DnsConfiguration>,
    ip: Option<IpAddr>,
    opts: &PlanOptions,
    notes: &mut Vec<String>,
) -> Vec<Endpoint> {
    let gateways: Vec<&RouterGateway> = set.router_gateways.iter().filter(|(c, _)| c == cluster).map(|(_, g)| g).collect();
    if gateways.is_empty() {
        return Vec::new();
    }
    let (Some(ci), Some(cfg)) = (identity, config) else {
        notes.push("no gateway A records: the IngressDNS controller needs a ClusterIdentity and a DNSConfiguration".into());
        return Vec::new();
    };
    let Some(ip) = ip else {
        notes.push(format!(
            "no gateway A records: Cluster {cluster:?} has no spec.gateway.address with a specific IP (veer's stand-in for the LoadBalancer IP)"
        ));
        return Vec::new();
    };
    // One record set per distinct (Istio controller, postfix), as the operator aggregates them.
    let mut configs: BTreeMap<(String, String), &RouterGateway> = BTreeMap::new();
    for g in gateways {
        configs.entry((g.controller.clone(), g.target_postfix.clone())).or_insert(g);
    }
    let record_type = if ip.is_ipv4() { RecordKind::A } else { RecordKind::AAAA };
    let mut out = Vec::new();
    for ((controller, postfix), g) in configs {
        let host = gateway_host(ci, g);
        for (ext, region) in &cfg.controllers {
            let labels = BTreeMap::from([
                (MANAGED_BY.to_string(), OPERATOR.to_string()),
                ("router.io/istio-controller".to_string(), controller.clone()),
                ("router.io/region".to_string(), region.clone()),
                ("router.io/resource-type".to_string(), "gateway-service".to_string()),
                ("router.io/target-postfix".to_string(), postfix.clone()),
            ]);
            out.push(Endpoint {
                name: format!("gateway-controller-{controller}-{postfix}-{ext}"),
                // The operator uses the LoadBalancer Service's namespace; veer has no such
                // Service, so it uses the Gateway's.
                namespace: g.meta.namespace.clone(),
                labels,
                // The operator sets no controller annotation here, so an ExternalDNS filtered by
                // annotation (as the seed configures it) never publishes the gateway records;
                // veer sets the same annotation as on route records.
                annotations: BTreeMap::from([(CONTROLLER_ANNOTATION.to_string(), format!("external-dns-{region}"))]),
                controller: ext.clone(),
                zone: ZoneId { domain: ci.domain.clone(), region: region.clone() },
                source: Source::Gateway { controller: controller.clone(), postfix: postfix.clone() },
                dns_name: host.clone(),
                record_type,
                target: ip.to_string(),
                ttl: opts.ttl,
            });
        }
    }
    out
}

/// An endpoint of the `weu` zone's `web` route, for the lookup and update tests.
#[cfg(test)]
pub(crate) fn test_endpoint(dns_name: &str, kind: RecordKind, target: &str) -> Endpoint {
    Endpoint {
        name: "web-external-dns-weu".into(),
        namespace: "myapp".into(),
        labels: Default::default(),
        annotations: Default::default(),
        controller: "external-dns-weu".into(),
        zone: ZoneId { domain: "example.com".into(), region: "weu".into() },
        source: Source::Route { namespace: "myapp".into(), name: "web".into() },
        dns_name: dns_name.into(),
        record_type: kind,
        target: target.into(),
        ttl: 60,
    }
}

/// `set` with `cluster`'s ClusterIdentity adopting `regions` too: what a standby holding those
/// regions' leases writes, and what `veer dns plan --down` shows an adoption would write.
pub fn adopting(set: &ManifestSet, cluster: &str, regions: &[&str]) -> ManifestSet {
    let mut set = set.clone();
    for (_, ci) in set.cluster_identities.iter_mut().filter(|(owner, _)| owner == cluster) {
        for r in regions {
            if !ci.adopts_regions.iter().any(|(a, _)| a == r) {
                ci.adopts_regions.push(((*r).to_string(), ci.meta.pos));
            }
        }
    }
    set
}

#[cfg(test)]
mod tests;
