//! veer's DNS: the Service Router Operator's record plan (seed 002), zone ownership with
//! epochs so a regional takeover never leaves two writers, and an authoritative server that
//! answers destination hosts with the local gateway and serves the regional zones a node writes.
//!
//! Layout:
//! - [`plan`]: what each cluster's operator writes (DNSEndpoints), pure.
//! - [`ownership`]: who writes each regional zone, epochs, fencing, ExternalDNS TXT registry
//!   names and values, pure.
//! - `tcp`: the TCP side, a connection's queued queries answered together.
//! - [`takeover`]: automatic takeover on etcd leases: who should hold a zone's writer lease,
//!   the hand-back's hold-down, and until when a holder may write, pure.
//! - [`zone`]: the answers one node serves and the lookup rules, pure.
//! - [`fast`]: answers encoded once per zone change for the usual questions, copied per query.
//! - [`rrl`]: response rate limiting of identical answers per client netblock, pure.
//! - [`server`]: the request path (hickory-proto's wire format), the reconcile loop.
//! - `udp`: the UDP side, queries received and answered in batches.
//! - [`transfer`]: AXFR/IXFR to secondaries with TSIG, NOTIFY.
//! - [`update`]: a regional zone written into a real DNS server (RFC 2136 + TSIG), fenced by epoch.
//! - [`yaml`]: DNSEndpoint objects as YAML for ExternalDNS.
//! - [`clock`]: the crate's one clock.

#![forbid(unsafe_code)]

pub mod clock;
pub mod fast;
mod handler;
pub mod ownership;
pub mod plan;
pub mod rrl;
pub mod server;
pub mod takeover;
mod tcp;
pub mod transfer;
mod udp;
pub mod update;
pub mod yaml;
pub mod zone;

pub use server::{DnsConfig, DnsCounters, DnsError, DnsServer, DnsSettings, DnsStats, Notify, RrlConfig, RCODES};
pub use tcp::TcpLimits;
