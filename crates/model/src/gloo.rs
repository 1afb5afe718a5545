//! Gloo Mesh 2.x: `VirtualDestination`, `FailoverPolicy`, `OutlierDetectionPolicy`.

use std::collections::BTreeMap;
use std::time::Duration;

use veer_core::outlier::OutlierConfig;
use veer_core::priority::LabelMatch;

use crate::decode::Obj;
use crate::diag::Pos;
use crate::meta::Meta;
use crate::topology::{read_port_ref, PortRef};

pub const PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"];

/// Gloo's ObjectSelector: every set field must match.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObjectSelector {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub cluster: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VirtualDestination {
    pub meta: Meta,
    pub hosts: Vec<String>,
    pub services: Vec<ObjectSelector>,
    pub ports: Vec<VdPort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VdPort {
    pub number: u16,
    pub protocol: String,
    pub target_port: Option<PortRef>,
    pub pos: Pos,
}

/// Which destinations a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationRef {
    pub selector: ObjectSelector,
    pub port: Option<u16>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FailoverPolicy {
    pub meta: Meta,
    pub apply_to: Vec<DestinationRef>,
    pub priority_labels: Vec<LabelMatch>,
    pub locality_mappings: Vec<LocalityMapping>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalityMapping {
    pub from: (String, String, String),
    pub to: Vec<(String, String, String, Option<u32>)>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetectionPolicy {
    pub meta: Meta,
    pub apply_to: Vec<DestinationRef>,
    pub config: OutlierConfig,
}

/// Gloo's OutlierDetectionPolicy defaults (reference §6): 5 errors, 10 s, 30 s, 100 %.
pub fn gloo_default_outlier() -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: 5,
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 100,
        // Gloo and Istio set no gateway-error enforcement.
        enforcing_consecutive_gateway_failure: 0,
        ..OutlierConfig::default()
    }
}

pub(crate) fn read_selector(o: &Obj<'_>) -> ObjectSelector {
    let s = ObjectSelector {
        name: o.string("name").map(|(s, _)| s),
        namespace: o.string("namespace").map(|(s, _)| s),
        cluster: o.string("cluster").map(|(s, _)| s),
        labels: o.string_map("labels"),
        pos: o.pos(),
    };
    o.tolerate("workspace", "veer has no workspaces; every resource is in one");
    s
}

pub(crate) fn read_virtual_destination(spec: &Obj<'_>, meta: Meta) -> Option<VirtualDestination> {
    let hosts: Vec<String> = spec.strings("hosts").into_iter().map(|(h, _)| h).collect();
    let services = spec
        .objs("services")
        .into_iter()
        .map(|o| {
            let s = read_selector(&o);
            o.finish();
            s
        })
        .collect();
    let mut ports = Vec::new();
    for p in spec.objs("ports") {
        let number = p.port("number");
        if !p.has("number") {
            p.ctx().error(p.pos(), &p.field_path("number"), "required field is missing");
        }
        let protocol = p.one_of("protocol", PROTOCOLS).map(|(s, _)| s.to_string()).unwrap_or_else(|| "HTTP".into());
        let target_port = read_port_ref(&p, "targetPort");
        let pos = p.pos();
        p.finish();
        if let Some(number) = number {
            ports.push(VdPort { number, protocol, target_port, pos });
        }
    }
    let ports_given_but_none_valid = ports.is_empty() && spec.ctx().diags.borrow().errors().next().is_none();
    if !spec.has("ports") || ports_given_but_none_valid {
        spec.ctx().error(spec.pos(), "spec.ports", "a VirtualDestination needs at least one port (Gloo marks it INVALID)");
    }
    if !spec.has("services") && !spec.has("externalServices") {
        spec.ctx().error(spec.pos(), "spec.services", "select at least one Service (services) to back this destination");
    }
    spec.tolerate("externalServices", "ExternalService backing is not modelled yet");
    spec.tolerate("clientMode", "veer always terminates at its own gateway");
    Some(VirtualDestination { meta, hosts, services, ports })
}

fn read_apply_to(spec: &Obj<'_>) -> Vec<DestinationRef> {
    let mut out = Vec::new();
    for d in spec.objs("applyToDestinations") {
        if let Some((kind, pos)) = d.one_of("kind", &["VIRTUAL_DESTINATION", "SERVICE", "EXTERNAL_SERVICE"]) {
            if kind != "VIRTUAL_DESTINATION" {
                d.ctx().error(
                    pos,
                    &d.field_path("kind"),
                    format!("{kind} destinations are not supported; failover applies to VIRTUAL_DESTINATION"),
                );
            }
        }
        let selector = d.obj("selector").map(|s| {
            let sel = read_selector(&s);
            s.finish();
            sel
        });
        let port = d.obj("port").and_then(|p| {
            let n = p.port("number");
            p.tolerate("name", "select ports by number");
            p.finish();
            n
        });
        let pos = d.pos();
        d.tolerate("ref", "use selector");
        d.finish();
        out.push(DestinationRef { selector: selector.unwrap_or_default(), port, pos });
    }
    out
}

pub(crate) fn read_failover_policy(spec: &Obj<'_>, meta: Meta) -> Option<FailoverPolicy> {
    let apply_to = read_apply_to(spec);
    let mut priority_labels = Vec::new();
    let mut locality_mappings = Vec::new();
    if let Some(config) = spec.obj("config") {
        if let Some(pl) = config.obj("priorityLabels") {
            let labels = pl.strings("labels");
            let overrides = labels.iter().filter(|(l, _)| l.contains('=')).count();
            if overrides != 0 && overrides != labels.len() {
                pl.ctx().error(
                    pl.pos(),
                    &pl.field_path("labels"),
                    "labels must be all keys or all key=value pairs, never mixed (Gloo marks the policy INVALID)",
                );
            }
            for (l, pos) in &labels {
                match l.split_once('=') {
                    Some((k, v)) if !k.is_empty() && !v.contains('=') => {
                        priority_labels.push(LabelMatch { key: k.into(), value: Some(v.into()) })
                    }
                    None if !l.is_empty() => priority_labels.push(LabelMatch { key: l.clone(), value: None }),
                    _ => pl.ctx().error(*pos, &pl.field_path("labels"), format!("{l:?} is not a label key or key=value")),
                }
            }
            pl.finish();
        }
        for m in config.objs("localityMappings") {
            let from = m.obj("from").map(|f| {
                let t = read_locality(&f);
                f.finish();
                t
            });
            if from.is_none() {
                m.ctx().error(m.pos(), &m.field_path("from"), "required field is missing");
            }
            let mut to = Vec::new();
            for t in m.objs("to") {
                let (r, z, s) = read_locality(&t);
                if r.is_empty() {
                    t.ctx().error(t.pos(), &t.field_path("region"), "required field is missing");
                }
                let w = t.u32("weight", 0, 100);
                to.push((r, z, s, w));
                t.finish();
            }
            let weighted: Vec<u32> = to.iter().filter_map(|t| t.3).collect();
            if !weighted.is_empty() && weighted.iter().sum::<u32>() != 100 {
                m.ctx().error(
                    m.pos(),
                    &m.field_path("to"),
                    format!("weights sum to {}; they must sum to 100", weighted.iter().sum::<u32>()),
                );
            }
            if !weighted.is_empty() && weighted.len() != to.len() {
                m.ctx().error(m.pos(), &m.field_path("to"), "either every target has a weight or none does");
            }
            let pos = m.pos();
            m.finish();
            locality_mappings.push(LocalityMapping { from: from.unwrap_or_default(), to, pos });
        }
        if !priority_labels.is_empty() && !locality_mappings.is_empty() {
            config.ctx().warn(
                config.pos(),
                "spec.config",
                "both localityMappings and priorityLabels are set; localityMappings wins and priorityLabels is not used",
            );
        }
        config.finish();
    }
    Some(FailoverPolicy { meta, apply_to, priority_labels, locality_mappings })
}

fn read_locality(o: &Obj<'_>) -> (String, String, String) {
    (
        o.string("region").map(|(s, _)| s).unwrap_or_default(),
        o.string("zone").map(|(s, _)| s).unwrap_or_default(),
        o.string("subZone").map(|(s, _)| s).unwrap_or_default(),
    )
}

pub(crate) fn read_outlier_detection_policy(spec: &Obj<'_>, meta: Meta) -> Option<OutlierDetectionPolicy> {
    let apply_to = read_apply_to(spec);
    let mut config = gloo_default_outlier();
    if let Some(c) = spec.obj("config") {
        if let Some(v) = c.u32("consecutiveErrors", 0, u32::MAX) {
            config.consecutive_5xx = v;
            config.enforcing_consecutive_5xx = if v > 0 { 100 } else { 0 };
        }
        if let Some(v) = c.duration("interval") {
            config.interval = v;
        }
        if let Some(v) = c.duration("baseEjectionTime") {
            config.base_ejection_time = v;
            config.max_ejection_time = config.max_ejection_time.max(v);
        }
        if let Some(v) = c.u32("maxEjectionPercent", 0, 100) {
            config.max_ejection_percent = v;
        }
        check_outlier_timing(&c, &config);
        c.finish();
    }
    Some(OutlierDetectionPolicy { meta, apply_to, config })
}

/// Rejects outlier timings that cannot work: a zero sweep interval never un-ejects.
pub(crate) fn check_outlier_timing(o: &Obj<'_>, c: &OutlierConfig) {
    if c.interval.is_zero() {
        o.ctx().error(o.pos_of("interval"), &o.field_path("interval"), "must be greater than 0: ejected hosts return only at a sweep");
    }
}
