//! veer's topology kinds for running without Kubernetes: `Cluster`, `v1 Service`, Istio `WorkloadEntry`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use veer_core::topology::Locality;

use crate::decode::Obj;
use crate::diag::Pos;
use crate::meta::Meta;

/// `veer.io/v1alpha1 Cluster`: one cluster, its place and the address of its gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    pub meta: Meta,
    pub network: String,
    pub locality: Locality,
    pub labels: BTreeMap<String, String>,
    /// Where this cluster's veer gateway listens for its clients (ingress): the mesh's names,
    /// and the Gateway listener ports `gateway_ports` does not map elsewhere.
    pub gateway: Option<SocketAddr>,
    /// `spec.gateway.ports`: where the node serves each Gateway listener port, so that a
    /// listener serves only the routes attached to it (see `ManifestSet::listeners`).
    pub gateway_ports: Vec<GatewayPort>,
    /// Where this cluster's east-west listener (mTLS, for peer nodes) listens: the catalog
    /// stream and the hop to its local endpoints.
    pub east_west: Option<SocketAddr>,
    /// Where this cluster's admin listener listens.
    pub admin: Option<SocketAddr>,
}

/// One entry of `spec.gateway.ports`: the Gateway listeners on `port` are served on `address`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPort {
    pub port: u16,
    pub address: SocketAddr,
    /// The entry's key, for messages about it.
    pub pos: Pos,
}

/// A `v1 Service`: the ports and the selector that picks its endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub meta: Meta,
    pub ports: Vec<ServicePort>,
    /// `None`: no selector (endpoints managed elsewhere), so none are found here.
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: Option<PortRef>,
}

/// A port given by number or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// An Istio `WorkloadEntry`: one instance (a pod, a VM, a local backend server).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadEntry {
    pub meta: Meta,
    pub address: IpAddr,
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    pub locality: Option<Locality>,
    pub network: Option<String>,
    pub weight: u32,
}

pub(crate) fn read_cluster(spec: &Obj<'_>, meta: Meta) -> Option<Cluster> {
    let network = spec.string("network").map(|(n, _)| n).unwrap_or_default();
    let locality = match spec.obj("locality") {
        Some(l) => {
            let loc = Locality {
                region: l.string("region").map(|(s, _)| s).unwrap_or_default(),
                zone: l.string("zone").map(|(s, _)| s).unwrap_or_default(),
                subzone: l.string("subzone").map(|(s, _)| s).unwrap_or_default(),
            };
            if loc.region.is_empty() && !(loc.zone.is_empty() && loc.subzone.is_empty()) {
                spec.ctx().error(l.pos(), "spec.locality.region", "a zone or subzone needs a region");
            }
            l.finish();
            loc
        }
        None => Locality::default(),
    };
    let labels = spec.string_map("labels");
    let mut gateway_ports = Vec::new();
    let gateway = spec.obj("gateway").and_then(|g| {
        let a = socket(&g, "address");
        gateway_ports = read_gateway_ports(&g);
        g.finish();
        a
    });
    let east_west = spec.obj("eastWest").and_then(|g| {
        let a = socket(&g, "address");
        g.finish();
        a
    });
    let admin = spec.obj("admin").and_then(|g| {
        let a = socket(&g, "address");
        g.finish();
        a
    });
    spec.tolerate("dns", "has no effect: a node serves DNS with `veer run --dns`, and a regional zone lives where a DNSZone says");
    Some(Cluster { meta, network, locality, labels, gateway, gateway_ports, east_west, admin })
}

/// `spec.gateway.ports`: Gateway listener port (the key) → local address. Checks that need the
/// Gateways (ports no listener uses, ports left unmapped) are the set's, in `ManifestSet::build`.
fn read_gateway_ports(g: &Obj<'_>) -> Vec<GatewayPort> {
    let mut out: Vec<GatewayPort> = Vec::new();
    for (key, key_pos, value, value_pos) in g.located_string_map("ports") {
        let path = format!("{}[{key:?}]", g.field_path("ports"));
        let port = match key.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                g.ctx().error(key_pos, &path, format!("{key:?} is not a port; keys are Gateway listener port numbers, 1..=65535"));
                continue;
            }
        };
        let Ok(address) = value.parse::<SocketAddr>() else {
            g.ctx().error(value_pos, &path, format!("{value:?} is not an address; expected IP:PORT such as 127.0.0.1:9443"));
            continue;
        };
        if out.iter().any(|p| p.port == port) {
            g.ctx().error(key_pos, &path, format!("port {port} is mapped twice"));
            continue;
        }
        if let Some(first) = out.iter().find(|p| p.address == address || overlaps(p.address, address)) {
            // One socket for two ports would serve each port's routes to the other's clients.
            let how = if first.address == address {
                format!("are both mapped to {address}")
            } else {
                format!("are mapped to {} and {address}, which take each other's connections", first.address)
            };
            g.ctx().error(
                value_pos,
                &path,
                format!("ports {} and {port} {how}; a socket serves one port's routes, so each needs its own address", first.port),
            );
            continue;
        }
        out.push(GatewayPort { port, address, pos: key_pos });
    }
    out
}

/// Whether sockets bound to `a` and `b` would take each other's connections: one address and
/// port, or one port with a wildcard IP (`0.0.0.0`, `::`) on either side. Port 0 is a fresh
/// port each time, so it overlaps nothing.
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn socket(o: &Obj<'_>, key: &'static str) -> Option<SocketAddr> {
    let (s, pos) = o.string(key)?;
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            o.ctx().error(pos, &o.field_path(key), format!("{s:?} is not an address; expected IP:PORT such as 127.0.0.1:8080"));
            None
        }
    }
}

pub(crate) fn read_service(spec: &Obj<'_>, meta: Meta) -> Option<Service> {
    let mut ports = Vec::new();
    for p in spec.objs("ports") {
        let name = p.string("name").map(|(s, _)| s).unwrap_or_default();
        let port = p.port("port");
        if port.is_none() && !p.has("port") {
            p.ctx().error(p.pos(), &p.field_path("port"), "required field is missing");
        }
        let target_port = read_port_ref(&p, "targetPort");
        p.one_of("protocol", &["TCP", "UDP", "SCTP"]);
        p.skip("appProtocol");
        p.skip("nodePort");
        p.finish();
        if let Some(port) = port {
            ports.push(ServicePort { name, port, target_port });
        }
    }
    let selector = spec.has("selector").then(|| spec.string_map("selector"));
    for quiet in [
        "type",
        "clusterIP",
        "clusterIPs",
        "sessionAffinity",
        "ipFamilies",
        "ipFamilyPolicy",
        "internalTrafficPolicy",
        "externalTrafficPolicy",
        "publishNotReadyAddresses",
    ] {
        spec.skip(quiet);
    }
    spec.tolerate("trafficDistribution", "PreferClose is not modelled; use a DestinationRule");
    Some(Service { meta, ports, selector })
}

/// Reads a port given as a number or a name (Kubernetes IntOrString).
pub(crate) fn read_port_ref(o: &Obj<'_>, key: &'static str) -> Option<PortRef> {
    let n = o.raw(key)?;
    if n.kind_name() == "number" {
        return o.port(key).map(PortRef::Number);
    }
    if let Some(text) = n.scalar() {
        return Some(PortRef::Name(text.to_string()));
    }
    // A mapping: Gloo's `targetPort: {name: http}` / `{number: 8080}`.
    let m = o.obj(key)?;
    let r = if m.has("number") { m.port("number").map(PortRef::Number) } else { m.string("name").map(|(s, _)| PortRef::Name(s)) };
    m.finish();
    r
}

pub(crate) fn read_workload_entry(spec: &Obj<'_>, meta: Meta) -> Option<WorkloadEntry> {
    let address = match spec.required_string("address") {
        Some((a, pos)) => match a.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                spec.ctx().error(
                    pos,
                    "spec.address",
                    format!("{a:?} is not an IP address; veer's topology needs the instance's IP (hostnames go in a Backend fqdn)"),
                );
                None
            }
        },
        None => None,
    };
    let ports = spec.int_map("ports", 1, 65535).into_iter().map(|(k, v, _)| (k, u16::try_from(v).unwrap_or(0))).collect();
    let labels = spec.string_map("labels");
    let locality = spec.string("locality").map(|(s, _)| Locality::parse(&s));
    let network = spec.string("network").map(|(s, _)| s);
    let weight = spec.u32("weight", 0, 1_000_000).unwrap_or(1);
    spec.skip("serviceAccount");
    address.map(|address| WorkloadEntry { meta, address, ports, labels, locality, network, weight: weight.max(1) })
}

/// Position of a resource, for messages about it.
pub fn pos_of(meta: &Meta) -> Pos {
    meta.pos
}
