//! Peer clusters as the snapshot needs them: the link to each one's east-west gateway, and
//! which of their endpoints are down. The control side builds it from its peers' catalogs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use veer_core::names::ClusterName;
use veer_core::topology::EndpointKey;

use crate::link::PeerLink;

/// What the snapshot needs of the mesh: how to reach each peer cluster and which are down.
#[derive(Debug, Default)]
pub struct Remote {
    /// The node's own cluster; empty when the node is not meshed.
    pub own: ClusterName,
    pub links: HashMap<ClusterName, Arc<PeerLink>>,
    pub health: RemoteHealth,
}

/// The health of remote clusters as the tables need it.
#[derive(Debug, Default)]
pub struct RemoteHealth {
    /// Clusters whose endpoints are all unhealthy (gateway unreachable or silent too long).
    pub down: HashSet<ClusterName>,
    /// Per cluster, endpoint keys its own node holds unhealthy.
    pub unhealthy: HashMap<ClusterName, BTreeSet<EndpointKey>>,
}
