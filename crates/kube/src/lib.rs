//! veer in Kubernetes: the manifests and this cluster's endpoints read from an API server, as
//! feeds the control side checks exactly as it checks files.
//!
//! - [`source`]: discovery, one watch per kind, and the feeds built from their stores.
//! - [`crds`]: `veer crds`, definitions of the custom kinds veer reads.
//! - [`render`]: an API object as a manifest document (named `kubernetes:Kind/ns/name`).
//! - [`slices`]: EndpointSlices, Pods and Nodes as the inventory's endpoint records.

pub mod crds;
pub mod render;
pub mod slices;
pub mod source;

pub use source::{client, KubeError, KubeSource};
