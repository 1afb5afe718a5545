//! One veer node (`veer run`): the gateway's workers, the control side that feeds them
//! snapshots, the DNS server and the admin endpoint, wired together and stopped together.
//!
//! - [`node`]: starts and stops a node from its configuration.
//! - [`admin`]: `/status`, `/routes`, `/events`, `/metrics`, `/ready` and `/healthz`.
//! - [`cpus`]: which CPUs the workers may be pinned to.
//! - [`dns_metrics`]: the DNS server's counters on `/metrics`.
//! - [`clock`]: the crate's one clock.

pub mod admin;
pub mod clock;
pub mod cpus;
pub mod dns_metrics;
pub mod node;
pub mod takeover;
