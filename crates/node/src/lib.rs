//! veer's data plane: the gateway that applies the priority tables to real requests, detects
//! failures on its own and fails over and back without client-visible errors.
//!
//! Layout:
//! - [`snapshot`]: the immutable routing state the request path reads (one per update).
//! - [`forward`]: the request path: route, pick, forward, retry, report outcomes.
//! - [`control`]: the control loop: reloads, outlier detection, health checks, re-admission
//!   probes; it publishes snapshots.
//! - [`manifests`]: the manifest watcher, which reads and checks changed files off the loop.
//! - [`request`]: what a request must be before it is routed (one authority, chunked or no
//!   transfer coding, a normalized path, no `x-veer-*` fields).
//! - [`upload`]: a client's request body on its way upstream, bounded by an idle timeout,
//!   and whether the client broke it.
//! - [`hop_by_hop`]: the header fields a proxy must not pass on.
//! - [`upstream`]: a worker's own HTTP/1.1 keep-alive pool and client (framing in
//!   [`upstream::codec`], parsing by httparse).
//! - [`server`]: listeners and connection handling, graceful drain.
//! - [`mesh`]: peer nodes, their catalogs, east-west mTLS links and listener.
//! - [`node`]: wires one veer node together (`veer run`).
//! - [`admin`], [`metrics`], [`events`]: what an operator sees.

pub mod admin;
pub mod control;
pub mod cpus;
pub mod events;
pub mod forward;
pub mod holds;
pub mod hop_by_hop;
pub mod manifests;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod request;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod upload;
pub mod upstream;

/// A hash map for the request path: its keys come from manifests (hosts, destinations,
/// clusters, endpoint addresses), never from clients, so a fast hash is safe and SipHash's
/// flooding resistance buys nothing; per request it saves several hundred instructions.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
