//! The `veer` command's clock (the demo and the walkthroughs pace their steps by it): the
//! gateway's one source, on tokio's clock.

pub use veer_gateway::clock::{now, since};
