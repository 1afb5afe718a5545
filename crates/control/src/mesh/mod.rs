//! Multi-cluster: nodes that know each other. Each node serves its cluster's catalog to its
//! peers over an mTLS east-west listener, watches theirs, and reaches remote endpoints only
//! through their cluster's east-west listener.
//!
//! - [`catalog`]: what a node announces, and how announcements replace remote endpoints.
//! - [`peers`]: peer state (fresh, stale, unhealthy, forgotten) and the watch tasks.
//! - [`eastwest`]: the listener peers connect to.

pub mod catalog;
pub mod eastwest;
pub mod peers;
