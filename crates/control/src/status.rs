//! What the control loop last published for operators (`veer status`, `/status`): peer
//! clusters and what holds endpoints out of the tables. The request path never reads it.

use arc_swap::ArcSwap;

use crate::holds::Holds;
use crate::mesh::peers::PeerStatus;

/// Written by the control loop, read by the admin endpoint.
#[derive(Debug, Default)]
pub struct ControlStatus {
    /// Peer clusters as the control loop last saw them (empty when not meshed).
    pub peers: ArcSwap<Vec<PeerStatus>>,
    /// What holds endpoints out of the tables.
    pub holds: ArcSwap<Holds>,
}
