//! veer's control side: it reads and watches the manifests, runs the control loop (outlier
//! ejection, active health checks, re-admission probes), follows peer clusters' catalogs, and
//! publishes each change as a new gateway snapshot. It never touches a client request.
//!
//! Layout:
//! - [`manifests`]: the manifest watcher, which reads and checks changed files off the loop.
//! - [`external`]: manifests and endpoints from an outside source (an API server), as feeds.
//! - [`control`]: the control loop; it turns outcomes, probe results and reloads into
//!   snapshots.
//! - `grpc_probe`: the gRPC health check (`grpc.health.v1`), beside the control loop's HTTP one.
//! - [`mesh`]: peer clusters, their catalogs, and the east-west listener peers connect to.
//! - [`holds`]: what holds endpoints out of the tables, for `veer status`.
//! - [`status`]: what the control loop last published for operators (peers, holds).
//! - [`state`]: what survives a restart (ejections in force).
//! - [`events`], [`metrics`]: what an operator sees of the control side's decisions.
//! - [`clock`]: the crate's one clock and randomness source.

pub mod clock;
pub mod control;
pub mod events;
pub mod external;
mod grpc_probe;
pub mod holds;
pub mod manifests;
pub mod mesh;
pub mod metrics;
pub mod state;
pub mod status;
