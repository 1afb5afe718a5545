//! Real test parts for veer: backend servers that name themselves and fail on command, and an open-loop load generator.

pub mod backend;
pub mod load;

pub use backend::{Backend, Mode};
pub use load::{run, run_live, LoadReport, LoadSpec, Sample};
