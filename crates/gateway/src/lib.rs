//! veer's request path: it routes each request by the immutable snapshot, picks an endpoint,
//! forwards it through this worker's upstream pools and fails over, and reports what happened.
//! It knows nothing of manifest files or DNS, and takes certificates only as the manifests'
//! load checked them: the control side publishes the snapshots it reads and receives the
//! outcomes it reports.
//!
//! Layout, from the socket inward:
//! - [`server`]: listeners, connection handling, the connection cap and graceful drain.
//! - [`request`]: what a request must be before it is routed (one authority, chunked or no
//!   transfer coding, a normalized path, no `x-veer-*` fields).
//! - [`snapshot`]: the immutable routing state the request path reads (one per update).
//! - [`tls`]: TLS termination on the sockets of HTTPS listeners (certificates by SNI, the
//!   rustls config each snapshot carries, 421 for a request on another certificate's name).
//! - [`forward`]: route, pick, forward, retry, report outcomes.
//! - [`upload`]: a client's request body on its way upstream, bounded by an idle timeout,
//!   and whether the client broke it.
//! - [`upstream`]: a worker's own HTTP/1.1 keep-alive pool and client (framing in
//!   [`upstream::codec`], parsing by httparse).
//! - [`link`]: one mTLS + HTTP/2 connection to a peer cluster's east-west listener, and the
//!   header fields of the east-west protocol.
//! - [`shared`]: what every connection of a node shares (the snapshot, clients, the outcome
//!   channel), and each worker's own upstream clients.
//! - [`responses`]: what a client receives: an upstream's body passed on, or an answer veer
//!   writes itself, each mapped from why in this one place.
//! - [`failure`]: what a failed try ended as, read off the error that ended it (veer-core
//!   classifies it).
//! - [`passthrough`]: TLS passthrough: the SNI of a ClientHello, and the bytes carried unread.
//! - [`remote`]: peer clusters as the snapshot needs them (links, which endpoints are down).
//! - [`body`]: the body types on both sides.
//! - [`clock`]: the node's one clock and randomness source (control, node and `veer` re-export it).
//! - [`hop_by_hop`]: the header fields a proxy must not pass on.
//! - [`metrics`]: the request path's metrics, on the node's registry.
//! - [`upgrade`]: which requests may switch protocols (WebSocket), and the copy both ways
//!   once they have.
//! - [`access_log`]: one line per request, written by a thread of its own.

pub mod access_log;
pub mod body;
pub mod clock;
pub mod failure;
pub mod forward;
pub mod hop_by_hop;
pub mod link;
pub mod metrics;
pub mod passthrough;
pub mod remote;
pub mod request;
pub mod responses;
pub mod server;
pub mod shared;
pub mod snapshot;
pub mod tls;
pub mod upgrade;
pub mod upload;
pub mod upstream;

/// A hash map for the request path: its keys come from manifests (hosts, destinations,
/// clusters, endpoint addresses), never from clients, so a fast hash is safe and SipHash's
/// flooding resistance buys nothing; per request it saves several hundred instructions.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
