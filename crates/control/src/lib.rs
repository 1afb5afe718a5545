//! veer's control side: it reads and watches the manifests, runs the control loop (outlier
//! ejection, active health checks, re-admission probes), follows peer clusters' catalogs, and
//! publishes each change as a new gateway snapshot. It never touches a client request.
//!
//! Layout:
//! - [`manifests`]: the manifest watcher, which reads and checks changed files off the loop.
//! - [`control`]: the control loop; it turns outcomes, probe results and reloads into
//!   snapshots.
//! - [`mesh`]: peer clusters, their catalogs, and the east-west listener peers connect to.
//! - [`holds`]: what holds endpoints out of the tables, for `veer status`.
//! - [`status`]: what the control loop last published for operators (peers, holds).
//! - [`state`]: what survives a restart (ejections in force).
//! - [`events`], [`metrics`]: what an operator sees of the control side's decisions.

pub mod control;
pub mod events;
pub mod holds;
pub mod manifests;
pub mod mesh;
pub mod metrics;
pub mod state;
pub mod status;
