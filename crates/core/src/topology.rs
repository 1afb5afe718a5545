//! Where things run: clusters, localities, labels, and the endpoints a destination resolves to.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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

/// One endpoint as health, outlier detection and holds know it: the address traffic goes to.
/// Two endpoints of different destinations at one address are one key: an address that refuses
/// connections refuses them whichever destination sent the try.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey(Arc<Address>);

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

// === impl EndpointKey ===

impl EndpointKey {
    pub fn new(address: Address) -> EndpointKey {
        EndpointKey(Arc::new(address))
    }

    pub fn address(&self) -> &Address {
        &self.0
    }

    /// The socket address, when the endpoint has one rather than a DNS name.
    pub fn socket(&self) -> Option<std::net::SocketAddr> {
        match *self.0 {
            Address::Socket(s) => Some(s),
            Address::Dns { .. } => None,
        }
    }
}

impl From<Address> for EndpointKey {
    fn from(address: Address) -> EndpointKey {
        EndpointKey::new(address)
    }
}

impl From<std::net::SocketAddr> for EndpointKey {
    fn from(socket: std::net::SocketAddr) -> EndpointKey {
        EndpointKey::new(Address::Socket(socket))
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointKey({})", self.0)
    }
}

impl std::str::FromStr for EndpointKey {
    type Err = std::net::AddrParseError;

    /// What a peer's catalog or an east-west header names: `ip:port`. A `host:port` with a DNS
    /// name is not an endpoint a peer can announce, so it is refused here.
    fn from_str(s: &str) -> Result<EndpointKey, Self::Err> {
        s.parse::<std::net::SocketAddr>().map(EndpointKey::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_compare_by_address() {
        let a: EndpointKey = "127.0.0.1:80".parse().unwrap();
        let b = EndpointKey::new(Address::Socket("127.0.0.1:80".parse().unwrap()));
        assert_eq!(a, b);
        assert_ne!(a, EndpointKey::new(Address::Dns { host: "127.0.0.1".into(), port: 80 }));
        assert_eq!(a.to_string(), "127.0.0.1:80");
        assert!("backend:80".parse::<EndpointKey>().is_err());
    }
}
