//! Real test parts for veer: backend servers that name themselves and fail on command, an open-loop load generator, and a network-namespace lab.

pub mod backend;
pub mod clock;
pub mod load;
#[cfg(target_os = "linux")]
pub mod netns;

pub use backend::{Backend, Mode};
pub use load::{run, run_live, LoadReport, LoadSpec, Sample};
