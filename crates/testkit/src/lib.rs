//! Real test parts for veer: backend servers that name themselves and fail on command, an open-loop load generator, a network-namespace lab, a real etcd cluster, a real Kubernetes API server, and the plumbing every test shares (a world on loopback, waiting on a condition, temporary directories).

pub mod authdns;
pub mod backend;
pub mod clock;
pub mod etcd;
pub mod kube;
pub mod load;
#[cfg(target_os = "linux")]
pub mod netns;
pub mod tempdir;
pub mod wait;
pub mod world;

pub use backend::{Backend, Backends, Mode};
pub use kube::{KubeApi, KubeUser};
pub use load::{run, run_live, LoadReport, LoadSpec, Sample};
pub use tempdir::TempDir;
pub use wait::{lazy, wait_until, wait_until_async};
pub use world::World;
