//! From text to typed resources: documents are dispatched by apiVersion and kind, read strictly,
//! and every problem is collected with its location.

use std::sync::Arc;

use crate::decode::{Ctx, Obj};
use crate::diag::{did_you_mean, Diagnostic, Diagnostics, Severity};
pub use crate::meta::about;
use crate::meta::Meta;
use crate::yaml::{self, Node};
use crate::{externaldns, gateway, gloo, istio, router, smh, tls, tlsroute, topology, upstream_tls};

/// A resource veer acts on, read and checked on its own (references are checked by [`crate::set`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    Cluster(topology::Cluster),
    Service(topology::Service),
    WorkloadEntry(topology::WorkloadEntry),
    VirtualDestination(gloo::VirtualDestination),
    FailoverPolicy(gloo::FailoverPolicy),
    OutlierDetectionPolicy(gloo::OutlierDetectionPolicy),
    FailoverService(smh::FailoverService),
    TrafficPolicy(smh::TrafficPolicy),
    VirtualMesh(smh::VirtualMesh),
    DestinationRule(istio::DestinationRule),
    IstioGateway(istio::IstioGateway),
    Backend(gateway::Backend),
    BackendTrafficPolicy(gateway::BackendTrafficPolicy),
    Gateway(gateway::Gateway),
    HttpRoute(gateway::HttpRoute),
    ClusterIdentity(router::ClusterIdentity),
    DnsConfiguration(router::DnsConfiguration),
    DnsPolicy(router::DnsPolicy),
    ServiceRoute(router::ServiceRoute),
    RouterGateway(router::RouterGateway),
    DnsEndpoint(externaldns::DnsEndpoint),
    TlsRoute(tlsroute::TlsRoute),
    ConfigMap(upstream_tls::ConfigMap),
    BackendTlsPolicy(upstream_tls::BackendTlsPolicy),
    Secret(tls::Secret),
    DnsZone(crate::dnszone::DnsZone),
}

type Reader = fn(&Obj<'_>, Meta) -> Option<Resource>;

/// A group veer handles: its versions, the kinds it reads, and kinds it knows but does not act on.
struct Group {
    name: &'static str,
    versions: &'static [&'static str],
    kinds: &'static [(&'static str, Reader)],
    known_ignored: &'static [&'static str],
}

const GROUPS: &[Group] = &[
    Group {
        name: "",
        versions: &["v1"],
        // Secrets and ConfigMaps have no spec: `read_document` reads them whole, and these readers are never called.
        kinds: &[
            ("Service", |s, m| topology::read_service(s, m).map(Resource::Service)),
            ("Secret", |_, _| None),
            ("ConfigMap", |_, _| None),
        ],
        known_ignored: &[
            "Namespace",
            "ServiceAccount",
            "Pod",
            "Endpoints",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "Node",
            "LimitRange",
            "ResourceQuota",
            "ReplicationController",
            "Event",
        ],
    },
    Group {
        name: "veer.io",
        versions: &["v1alpha1"],
        kinds: &[
            ("Cluster", |s, m| topology::read_cluster(s, m).map(Resource::Cluster)),
            ("DNSZone", |s, m| crate::dnszone::read_dns_zone(s, m).map(Resource::DnsZone)),
        ],
        known_ignored: &[],
    },
    Group {
        name: "networking.gloo.solo.io",
        versions: &["v2"],
        kinds: &[("VirtualDestination", |s, m| gloo::read_virtual_destination(s, m).map(Resource::VirtualDestination))],
        known_ignored: &["VirtualGateway", "RouteTable", "ExternalService", "ExternalEndpoint"],
    },
    Group {
        name: "resilience.policy.gloo.solo.io",
        versions: &["v2"],
        kinds: &[
            ("FailoverPolicy", |s, m| gloo::read_failover_policy(s, m).map(Resource::FailoverPolicy)),
            ("OutlierDetectionPolicy", |s, m| gloo::read_outlier_detection_policy(s, m).map(Resource::OutlierDetectionPolicy)),
        ],
        known_ignored: &[
            "RetryTimeoutPolicy",
            "ConnectionPolicy",
            "FaultInjectionPolicy",
            "ListenerConnectionPolicy",
            "ActiveHealthCheckPolicy",
        ],
    },
    Group {
        name: "networking.smh.solo.io",
        versions: &["v1alpha2"],
        kinds: &[
            ("FailoverService", |s, m| smh::read_failover_service(s, m).map(Resource::FailoverService)),
            ("TrafficPolicy", |s, m| smh::read_traffic_policy(s, m).map(Resource::TrafficPolicy)),
            ("VirtualMesh", |s, m| smh::read_virtual_mesh(s, m).map(Resource::VirtualMesh)),
        ],
        known_ignored: &["AccessPolicy"],
    },
    Group {
        name: "networking.istio.io",
        versions: &["v1", "v1beta1", "v1alpha3"],
        kinds: &[
            ("DestinationRule", |s, m| istio::read_destination_rule(s, m).map(Resource::DestinationRule)),
            ("Gateway", |s, m| istio::read_istio_gateway(s, m).map(Resource::IstioGateway)),
            ("WorkloadEntry", |s, m| topology::read_workload_entry(s, m).map(Resource::WorkloadEntry)),
        ],
        known_ignored: &["VirtualService", "ServiceEntry", "Sidecar", "EnvoyFilter", "WorkloadGroup", "ProxyConfig"],
    },
    Group {
        name: "gateway.envoyproxy.io",
        versions: &["v1alpha1"],
        kinds: &[
            ("Backend", |s, m| gateway::read_backend(s, m).map(Resource::Backend)),
            ("BackendTrafficPolicy", |s, m| gateway::read_backend_traffic_policy(s, m).map(Resource::BackendTrafficPolicy)),
        ],
        known_ignored: &[
            "EnvoyProxy",
            "ClientTrafficPolicy",
            "SecurityPolicy",
            "EnvoyPatchPolicy",
            "EnvoyExtensionPolicy",
            "HTTPRouteFilter",
        ],
    },
    Group {
        name: "gateway.networking.k8s.io",
        versions: &["v1", "v1beta1", "v1alpha3", "v1alpha2"],
        kinds: &[
            ("Gateway", |s, m| gateway::read_gateway(s, m).map(Resource::Gateway)),
            ("HTTPRoute", |s, m| gateway::read_http_route(s, m).map(Resource::HttpRoute)),
            ("TLSRoute", |s, m| tlsroute::read_tls_route(s, m).map(Resource::TlsRoute)),
            ("BackendTLSPolicy", |s, m| upstream_tls::read_backend_tls_policy(s, m).map(Resource::BackendTlsPolicy)),
        ],
        known_ignored: &["GatewayClass", "GRPCRoute", "ReferenceGrant", "TCPRoute", "UDPRoute"],
    },
    Group {
        name: "cluster.router.io",
        versions: &["v1alpha1"],
        kinds: &[
            ("ClusterIdentity", |s, m| router::read_cluster_identity(s, m).map(Resource::ClusterIdentity)),
            ("DNSConfiguration", |s, m| router::read_dns_configuration(s, m).map(Resource::DnsConfiguration)),
        ],
        known_ignored: &[],
    },
    Group {
        name: "routing.router.io",
        versions: &["v1alpha1"],
        kinds: &[
            ("DNSPolicy", |s, m| router::read_dns_policy(s, m).map(Resource::DnsPolicy)),
            ("ServiceRoute", |s, m| router::read_service_route(s, m).map(Resource::ServiceRoute)),
            ("Gateway", |s, m| router::read_router_gateway(s, m).map(Resource::RouterGateway)),
        ],
        known_ignored: &[],
    },
    Group {
        name: "externaldns.k8s.io",
        versions: &["v1alpha1"],
        kinds: &[("DNSEndpoint", |s, m| externaldns::read_dns_endpoint(s, m).map(Resource::DnsEndpoint))],
        known_ignored: &[],
    },
];

/// Every apiVersion veer reads, for messages and `--help`.
pub fn supported_api_versions() -> Vec<String> {
    GROUPS
        .iter()
        .flat_map(|g| g.versions.iter().map(move |v| if g.name.is_empty() { v.to_string() } else { format!("{}/{v}", g.name) }))
        .collect()
}

/// Every kind veer acts on, as (API group, the versions veer reads newest first, kind); the
/// core group is `""`. What a source that lists objects by kind (an API server) asks for.
pub fn read_kinds() -> impl Iterator<Item = (&'static str, &'static [&'static str], &'static str)> {
    GROUPS.iter().flat_map(|g| g.kinds.iter().map(move |(k, _)| (g.name, g.versions, *k)))
}

/// Every kind veer acts on, as `apiVersion kind` lines.
pub fn supported_kinds() -> Vec<String> {
    GROUPS
        .iter()
        .flat_map(|g| {
            g.kinds.iter().map(move |(k, _)| {
                let group = if g.name.is_empty() { "v1".to_string() } else { format!("{}/{}", g.name, g.versions.join("|")) };
                format!("{group} {k}")
            })
        })
        .collect()
}

/// Reads every document of one source text.
pub fn parse_source(file: &Arc<str>, text: &str) -> (Vec<Resource>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut out = Vec::new();
    let (docs, err) = yaml::load(text);
    for doc in &docs {
        for d in &doc.duplicates {
            // Two resources pasted together without `---` repeat apiVersion and kind at the top.
            let hint = if matches!(d.path.as_str(), "apiVersion" | "kind") {
                "; if two resources were pasted together, separate them with a `---` line"
            } else {
                ""
            };
            let message = format!("duplicate key (first at {}:{}){hint}", d.first.line, d.first.col);
            diags.push(Diagnostic {
                severity: Severity::Error,
                file: file.clone(),
                pos: d.pos,
                resource: label(&doc.root),
                field: d.path.clone(),
                message,
            });
        }
        let mut read = Vec::new();
        read_document(file, &doc.root, &mut read, &mut diags, 0);
        // A document with a repeated key is not what its author meant, whichever copy would win.
        if doc.duplicates.is_empty() {
            out.extend(read);
        }
    }
    if let Some(e) = err {
        diags.push(Diagnostic {
            severity: Severity::Error,
            file: file.clone(),
            pos: e.pos,
            resource: None,
            field: String::new(),
            message: e.message,
        });
    }
    (out, diags)
}

/// `Kind/namespace/name` of a document, when it names its kind.
fn label(root: &Node) -> Option<String> {
    let kind = root.get("kind").and_then(Node::scalar)?;
    let name = root.get("metadata").and_then(|m| m.get("name")).and_then(Node::scalar).unwrap_or("?");
    let namespace = root.get("metadata").and_then(|m| m.get("namespace")).and_then(Node::scalar).unwrap_or("default");
    Some(format!("{kind}/{namespace}/{name}"))
}

fn read_document(file: &Arc<str>, root: &Node, out: &mut Vec<Resource>, diags: &mut Diagnostics, depth: usize) {
    if root.is_null() {
        return; // an empty document between `---` separators
    }
    let head = Ctx::new(file.clone(), None);
    let Some(doc) = head.obj(root, "") else {
        diags.extend(head.into_diagnostics());
        return;
    };
    let api_version = doc.required_string("apiVersion");
    let kind = doc.required_string("kind");
    let (Some((api_version, av_pos)), Some((kind, kind_pos))) = (api_version, kind) else {
        diags.extend(head.into_diagnostics());
        return;
    };
    let name = root.get("metadata").and_then(|m| m.get("name")).and_then(Node::scalar).unwrap_or("?");
    let namespace = root.get("metadata").and_then(|m| m.get("namespace")).and_then(Node::scalar).unwrap_or("default");
    let label = format!("{kind}/{namespace}/{name}");
    let (group, version) = match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version.as_str()),
    };

    if kind == "List" && group.is_empty() && depth == 0 {
        if let Some(items) = root.get("items") {
            if let crate::yaml::Value::Seq(items) = &items.value {
                for item in items {
                    read_document(file, item, out, diags, depth + 1);
                }
            }
        }
        return;
    }

    let ignored = |diags: &mut Diagnostics, why: String| {
        diags.push(Diagnostic {
            severity: Severity::Ignored,
            file: file.clone(),
            pos: root.pos,
            resource: Some(label.clone()),
            field: String::new(),
            message: why,
        });
    };
    let Some(g) = GROUPS.iter().find(|g| g.name == group) else {
        if let Some(close) = did_you_mean(group, GROUPS.iter().map(|g| g.name).filter(|n| !n.is_empty())) {
            head.error(
                av_pos,
                "apiVersion",
                format!("unknown API group {group:?}; did you mean {close:?}? veer reads: {}", supported_api_versions().join(", ")),
            );
            diags.extend(head.into_diagnostics());
            return;
        }
        ignored(diags, format!("{api_version} is not an API group veer acts on"));
        return;
    };
    if !g.versions.contains(&version) {
        head.error(
            av_pos,
            "apiVersion",
            format!(
                "unsupported version {api_version:?}; {} is read as: {}",
                if g.name.is_empty() { "core" } else { g.name },
                g.versions.join(", ")
            ),
        );
        diags.extend(head.into_diagnostics());
        return;
    }
    let Some((canonical, reader)) = g.kinds.iter().find(|(k, _)| *k == kind) else {
        if g.known_ignored.contains(&kind.as_str()) {
            ignored(diags, format!("veer does not act on {kind}"));
            return;
        }
        let candidates = g.kinds.iter().map(|(k, _)| *k).chain(g.known_ignored.iter().copied());
        let handled: Vec<&str> = g.kinds.iter().map(|(k, _)| *k).collect();
        match did_you_mean(&kind, candidates) {
            Some(s) => head.error(kind_pos, "kind", format!("unknown kind {kind:?} in {api_version}; did you mean {s:?}?")),
            None if g.name.is_empty() => {
                ignored(diags, format!("veer does not act on v1 {kind}"));
                return;
            }
            None => head.error(kind_pos, "kind", format!("unknown kind {kind:?} in {api_version}; veer reads: {}", handled.join(", "))),
        }
        diags.extend(head.into_diagnostics());
        return;
    };

    let ctx = Ctx::new(file.clone(), Some(label));
    let Some(doc) = ctx.obj(root, "") else { return };
    doc.skip("apiVersion");
    doc.skip("kind");
    doc.skip("status");
    let meta = Meta::read(&doc, canonical, &api_version);
    // Secrets and ConfigMaps have no spec: their readers take the whole document.
    let specless = g.name.is_empty() && matches!(*canonical, "Secret" | "ConfigMap");
    let resource = match (meta, if specless { None } else { doc.obj("spec") }) {
        (Some(meta), _) if *canonical == "Secret" && specless => tls::read_secret(&doc, meta).map(Resource::Secret),
        (Some(meta), _) if specless => upstream_tls::read_config_map(&doc, meta).map(Resource::ConfigMap),
        (Some(meta), Some(spec)) => {
            let r = reader(&spec, meta);
            spec.finish();
            r
        }
        (Some(_), None) => {
            ctx.error(root.pos, "spec", "required field is missing");
            None
        }
        // Without metadata the spec is not read, so its fields are not reported as unknown.
        (None, _) => None,
    };
    doc.finish();
    let found = ctx.into_diagnostics();
    let failed = found.has_errors();
    // `head` saw the same root mapping; `ctx` has already reported its problems with the
    // resource named, so `head`'s copies are dropped.
    drop(head);
    diags.extend(found);
    if let (Some(r), false) = (resource, failed) {
        out.push(r);
    }
}

/// Position of a resource's metadata, for diagnostics raised about a whole resource.
pub fn meta_of(r: &Resource) -> &Meta {
    match r {
        Resource::Cluster(x) => &x.meta,
        Resource::Service(x) => &x.meta,
        Resource::WorkloadEntry(x) => &x.meta,
        Resource::VirtualDestination(x) => &x.meta,
        Resource::FailoverPolicy(x) => &x.meta,
        Resource::OutlierDetectionPolicy(x) => &x.meta,
        Resource::FailoverService(x) => &x.meta,
        Resource::TrafficPolicy(x) => &x.meta,
        Resource::VirtualMesh(x) => &x.meta,
        Resource::DestinationRule(x) => &x.meta,
        Resource::IstioGateway(x) => &x.meta,
        Resource::Backend(x) => &x.meta,
        Resource::BackendTrafficPolicy(x) => &x.meta,
        Resource::Gateway(x) => &x.meta,
        Resource::HttpRoute(x) => &x.meta,
        Resource::ClusterIdentity(x) => &x.meta,
        Resource::DnsConfiguration(x) => &x.meta,
        Resource::DnsPolicy(x) => &x.meta,
        Resource::ServiceRoute(x) => &x.meta,
        Resource::RouterGateway(x) => &x.meta,
        Resource::DnsEndpoint(x) => &x.meta,
        Resource::TlsRoute(x) => &x.meta,
        Resource::ConfigMap(x) => &x.meta,
        Resource::BackendTlsPolicy(x) => &x.meta,
        Resource::Secret(x) => &x.meta,
        Resource::DnsZone(x) => &x.meta,
    }
}
