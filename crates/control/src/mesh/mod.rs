//! Multi-cluster: nodes that know each other. Each node serves its cluster's catalog to its
//! peers over an mTLS east-west listener, watches theirs, and reaches remote endpoints only
//! through their cluster's east-west listener.
//!
//! - [`catalog`]: what a node announces, and how announcements replace remote endpoints.
//! - [`peers`]: peer state (fresh, stale, unhealthy, forgotten) and the watch tasks.
//! - [`link`]: one TLS + HTTP/2 connection to a peer's east-west listener.
//! - [`eastwest`]: the listener peers connect to.

pub mod catalog;
pub mod eastwest;
pub mod link;
pub mod peers;

use std::collections::HashMap;
use std::sync::Arc;

/// What the snapshot needs of the mesh: how to reach each peer cluster and which are down.
#[derive(Debug, Default)]
pub struct Remote {
    /// The node's own cluster; empty when the node is not meshed.
    pub own: String,
    pub links: HashMap<String, Arc<link::PeerLink>>,
    pub health: peers::RemoteHealth,
}
