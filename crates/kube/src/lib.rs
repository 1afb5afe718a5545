//! veer in Kubernetes: the manifests and this cluster's endpoints read from an API server, as
//! feeds the control side checks exactly as it checks files.
//!
//! - [`source`]: discovery, one watch per kind, and the feeds built from their stores.
//! - [`refs`]: the Secrets and ConfigMaps veer reads because a resource names them.
//! - [`remote`]: remote clusters' API servers read beside the own one, their feeds merged.
//! - [`crds`]: `veer crds`, definitions of the custom kinds veer reads.
//! - [`dnsendpoints`]: the DNSEndpoints seed 002's operator would write, as changes to make.
//! - [`events`]: failover and failback as `v1 Event`s on the resources that define them.
//! - [`lease`]: which replica writes status (a Lease, decided purely).
//! - [`leader`]: the election's I/O.
//! - [`writer`]: writes each object's status while this replica leads.
//! - [`status`]: the status each object gets, in its own project's terms.
//! - [`problems`]: what the source cannot do now, with the server's answer.
//! - [`render`]: an API object as a manifest document (named `kubernetes:Kind/ns/name`).
//! - [`slices`]: EndpointSlices, Pods and Nodes as the inventory's endpoint records.

mod clock;
pub mod crds;
pub mod dnsendpoints;
pub mod events;
pub mod leader;
pub mod lease;
pub mod problems;
pub mod refs;
pub mod remote;
pub mod render;
pub mod slices;
pub mod source;
pub mod status;
pub mod writer;

pub use problems::Problems;
pub use remote::Remote;
pub use source::{client, KubeError, KubeSource, StatusConfig};
