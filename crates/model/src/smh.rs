//! Service Mesh Hub v1alpha2: `FailoverService`, `TrafficPolicy`, `VirtualMesh`.

use std::collections::BTreeMap;
use std::time::Duration;

use veer_core::outlier::OutlierConfig;

use crate::decode::Obj;
use crate::diag::Pos;
use crate::gloo::{check_outlier_timing, PROTOCOLS};
use crate::meta::Meta;

/// A reference to a Kubernetes Service in a named cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeServiceRef {
    pub name: String,
    pub namespace: String,
    pub cluster: String,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FailoverService {
    pub meta: Meta,
    pub hostname: String,
    pub port: u16,
    pub protocol: String,
    pub meshes: Vec<(String, String, Pos)>,
    /// In decreasing priority: tier i is backing service i.
    pub backing: Vec<KubeServiceRef>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrafficPolicy {
    pub meta: Meta,
    pub has_source_selector: bool,
    pub source_pos: Pos,
    pub destinations: Vec<KubeServiceRef>,
    pub destination_matchers: Vec<ServiceMatcher>,
    pub outlier: Option<(OutlierConfig, Pos)>,
    pub shift_to_failover: Vec<(String, String, Pos)>,
    pub retries: Option<(u32, Option<Duration>)>,
    pub request_timeout: Option<Duration>,
}

/// `kubeServiceMatcher`: services by labels, namespaces and clusters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceMatcher {
    pub labels: BTreeMap<String, String>,
    pub namespaces: Vec<String>,
    pub clusters: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VirtualMesh {
    pub meta: Meta,
    pub meshes: Vec<(String, String)>,
}

/// SMH's name for the Istio mesh of a cluster, as discovery creates it.
pub fn mesh_name_of_cluster(cluster: &str) -> String {
    format!("istiod-istio-system-{cluster}")
}

/// SMH's outlierDetection defaults: 5 errors, 10 s, 30 s, 100 %.
pub fn smh_default_outlier() -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: 5,
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 100,
        enforcing_consecutive_gateway_failure: 0,
        ..OutlierConfig::default()
    }
}

fn read_kube_service(o: &Obj<'_>) -> Option<KubeServiceRef> {
    let name = o.required_string("name");
    let namespace = o.required_string("namespace");
    let cluster = o.required_string("clusterName");
    o.tolerate("subset", "subsets are not modelled");
    o.tolerate("port", "the FailoverService or destination port applies");
    let pos = o.pos();
    o.finish();
    Some(KubeServiceRef { name: name?.0, namespace: namespace?.0, cluster: cluster?.0, pos })
}

pub(crate) fn read_failover_service(spec: &Obj<'_>, meta: Meta) -> Option<FailoverService> {
    let hostname = spec.required_string("hostname").map(|(h, _)| h);
    let (port, protocol) = match spec.obj("port") {
        Some(p) => {
            let n = p.port("number");
            if !p.has("number") {
                p.ctx().error(p.pos(), &p.field_path("number"), "required field is missing");
            }
            let proto = p.one_of("protocol", PROTOCOLS).map(|(s, _)| s.to_string()).unwrap_or_else(|| "HTTP".into());
            p.finish();
            (n, proto)
        }
        None => {
            spec.ctx().error(spec.pos(), "spec.port", "required field is missing");
            (None, String::new())
        }
    };
    let meshes = spec
        .objs("meshes")
        .into_iter()
        .filter_map(|m| {
            let name = m.required_string("name");
            let ns = m.string("namespace").map(|(s, _)| s).unwrap_or_else(|| "service-mesh-hub".into());
            let pos = m.pos();
            m.finish();
            Some((name?.0, ns, pos))
        })
        .collect();
    let mut backing = Vec::new();
    for b in spec.objs("backingServices") {
        if let Some(k) = b.obj("kubeService") {
            if let Some(r) = read_kube_service(&k) {
                backing.push(r);
            }
        } else {
            b.ctx().error(b.pos(), &b.field_path("kubeService"), "required field is missing");
        }
        b.finish();
    }
    if !spec.has("backingServices") {
        spec.ctx().error(spec.pos(), "spec.backingServices", "list at least one backing service");
    }
    Some(FailoverService { meta, hostname: hostname?, port: port?, protocol, meshes, backing })
}

pub(crate) fn read_traffic_policy(spec: &Obj<'_>, meta: Meta) -> Option<TrafficPolicy> {
    let source_pos = spec.raw("sourceSelector").map(|n| n.pos).unwrap_or_default();
    let sources = spec.seq("sourceSelector");
    let has_source_selector = !sources.is_empty();
    let mut destinations = Vec::new();
    let mut destination_matchers = Vec::new();
    for d in spec.objs("destinationSelector") {
        if let Some(refs) = d.obj("kubeServiceRefs") {
            for s in refs.objs("services") {
                if let Some(r) = read_kube_service(&s) {
                    destinations.push(r);
                }
            }
            refs.finish();
        }
        if let Some(m) = d.obj("kubeServiceMatcher") {
            destination_matchers.push(ServiceMatcher {
                labels: m.string_map("labels"),
                namespaces: m.strings("namespaces").into_iter().map(|(s, _)| s).collect(),
                clusters: m.strings("clusters").into_iter().map(|(s, _)| s).collect(),
            });
            m.finish();
        }
        d.finish();
    }
    let outlier = spec.obj("outlierDetection").map(|o| {
        let mut c = smh_default_outlier();
        if let Some(v) = o.u32("consecutiveErrors", 0, u32::MAX) {
            c.consecutive_5xx = v;
            c.enforcing_consecutive_5xx = if v > 0 { 100 } else { 0 };
        }
        if let Some(v) = o.duration("interval") {
            c.interval = v;
        }
        if let Some(v) = o.duration("baseEjectionTime") {
            c.base_ejection_time = v;
            c.max_ejection_time = c.max_ejection_time.max(v);
        }
        if let Some(v) = o.u32("maxEjectionPercent", 0, 100) {
            c.max_ejection_percent = v;
        }
        check_outlier_timing(&o, &c);
        let pos = o.pos();
        o.finish();
        (c, pos)
    });
    if let (true, Some((_, pos))) = (has_source_selector, &outlier) {
        spec.ctx().error(*pos, "spec.outlierDetection", "outlierDetection cannot be combined with a sourceSelector (SMH marks the policy INVALID); remove sourceSelector or move outlier detection to its own policy");
    }
    let mut shift_to_failover = Vec::new();
    if let Some(shift) = spec.obj("trafficShift") {
        let dests = shift.objs("destinations");
        let mut weights = Vec::new();
        for d in &dests {
            if let Some(fs) = d.obj("failoverService") {
                let name = fs.required_string("name");
                let ns = fs.required_string("namespace");
                fs.tolerate("subset", "subsets are not modelled");
                let pos = fs.pos();
                fs.finish();
                if let (Some(n), Some(ns)) = (name, ns) {
                    shift_to_failover.push((n.0, ns.0, pos));
                }
            }
            d.tolerate("kubeService", "traffic shifts to plain services are not modelled yet; shift to a failoverService");
            if let Some(w) = d.u32("weight", 0, 100) {
                weights.push(w);
            }
        }
        if dests.len() > 1 && weights.iter().sum::<u32>() != 100 {
            shift.ctx().error(
                shift.pos(),
                "spec.trafficShift.destinations",
                format!("weights sum to {}; they must sum to 100", weights.iter().sum::<u32>()),
            );
        }
        for d in dests {
            d.finish();
        }
        shift.finish();
    }
    let retries = spec.obj("retries").map(|r| {
        let attempts = r.u32("attempts", 0, 100).unwrap_or(2);
        let per_try = r.duration("perTryTimeout");
        r.finish();
        (attempts, per_try)
    });
    let request_timeout = spec.duration("requestTimeout");
    for t in ["httpRequestMatchers", "faultInjection", "corsPolicy", "mirror", "headerManipulation", "mtls", "requestMatchers"] {
        spec.tolerate(t, "this TrafficPolicy field is not part of failover");
    }
    Some(TrafficPolicy {
        meta,
        has_source_selector,
        source_pos,
        destinations,
        destination_matchers,
        outlier,
        shift_to_failover,
        retries,
        request_timeout,
    })
}

pub(crate) fn read_virtual_mesh(spec: &Obj<'_>, meta: Meta) -> Option<VirtualMesh> {
    let meshes = spec
        .objs("meshes")
        .into_iter()
        .filter_map(|m| {
            let name = m.required_string("name");
            let ns = m.string("namespace").map(|(s, _)| s).unwrap_or_else(|| "service-mesh-hub".into());
            m.finish();
            Some((name?.0, ns))
        })
        .collect();
    for t in ["mtlsConfig", "federation", "globalAccessPolicy", "enforceAccessControl"] {
        spec.tolerate(t, "veer's own mTLS and federation apply");
    }
    Some(VirtualMesh { meta, meshes })
}
