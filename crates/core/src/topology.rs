//! Where things run: clusters, localities, labels, and the endpoints a destination resolves to.

use std::collections::BTreeMap;
use std::fmt;

use crate::names::ClusterName;

/// Labels as Kubernetes has them: ordered so output is stable.
pub type Labels = BTreeMap<String, String>;

/// Well-known topology label keys, as Istio adds them to both proxies and endpoints.
pub mod keys {
    pub const REGION: &str = "topology.kubernetes.io/region";
    pub const ZONE: &str = "topology.kubernetes.io/zone";
    pub const SUBZONE: &str = "topology.istio.io/subzone";
    pub const CLUSTER: &str = "topology.istio.io/cluster";
    pub const NETWORK: &str = "topology.istio.io/network";
}

/// A region/zone/subzone triple; empty parts are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

/// How an endpoint is reached: a socket address, or a name resolved through DNS when traffic runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    Socket(std::net::SocketAddr),
    Dns { host: String, port: u16 },
}

/// Health as the load balancer sees it (EDS HEALTHY/UNKNOWN, DEGRADED, or anything unhealthy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

/// One instance behind a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub cluster: ClusterName,
    pub address: Address,
    /// The instance's own labels plus the topology labels of [`with_topology_labels`].
    pub labels: Labels,
    pub locality: Locality,
    pub network: String,
    pub weight: u32,
    pub health: Health,
    /// A fixed priority tier set by the dialect (SMH backing-service order, Envoy Gateway
    /// `fallback`); `None` when priorities come from the client's position.
    pub tier: Option<u32>,
    /// Load-balancing group inside a priority (a locality, or an Envoy Gateway backendRef) and
    /// its explicit weight, when the dialect sets one.
    pub group: String,
    pub group_weight: Option<u32>,
    /// Which resource put this endpoint here, for `explain`.
    pub origin: String,
}

/// The calling proxy: its cluster, position and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    pub cluster: ClusterName,
    pub locality: Locality,
    pub network: String,
    /// Own labels plus topology labels.
    pub labels: Labels,
}

// === impl Locality ===

impl Locality {
    /// Parses Istio's `region/zone/subzone` form; missing parts are empty.
    pub fn parse(s: &str) -> Locality {
        let mut parts = s.splitn(3, '/');
        let mut next = || parts.next().unwrap_or("").to_string();
        Locality { region: next(), zone: next(), subzone: next() }
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.zone, self.subzone)
    }
}

// === impl Address ===

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Socket(s) => write!(f, "{s}"),
            Address::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Adds the labels Istio derives from topology (locality parts, cluster, and the network
/// unless already set) so label-based priorities can compare them on both sides.
pub fn with_topology_labels(mut labels: Labels, cluster: &str, locality: &Locality, network: &str) -> Labels {
    let mut put = |k: &str, v: &str| {
        labels.insert(k.to_string(), v.to_string());
    };
    put(keys::REGION, &locality.region);
    put(keys::ZONE, &locality.zone);
    put(keys::SUBZONE, &locality.subzone);
    put(keys::CLUSTER, cluster);
    if !network.is_empty() {
        labels.entry(keys::NETWORK.to_string()).or_insert_with(|| network.to_string());
    }
    labels
}
