//! The control side's clock and randomness: the gateway's one source, as std instants.

pub use veer_gateway::clock::{std_now as now, std_since as since, Rng};
