//! veer's pure decision core: who serves a client, with how much load, and when a host is ejected.
//!
//! Nothing here does I/O, reads a clock or draws random numbers on its own: time and randomness
//! are arguments, so every decision is reproducible in a unit test.
//!
//! Layout:
//! - [`topology`]: endpoints, localities and the labels that describe where they run.
//! - [`names`]: the typed names of clusters and destinations that key health and metrics (an
//!   endpoint's is [`topology::EndpointKey`]).
//! - [`priority`]: Istio's failoverPriority, locality failover and `distribute` rules that
//!   turn a client's position into a priority for each endpoint.
//! - [`load`]: Envoy's priority-load maths (overprovisioning, spill-over, panic).
//! - [`table`]: the per-client priority table and each endpoint's expected share of requests.
//! - [`outlier`]: outlier detection as a state machine over injected time.
//! - [`outcome`]: who is to blame for how a try ended (upstream, client, or this node), and
//!   what the detector and retries make of it; connect errors, codec failures and the
//!   east-west listener's error field, classified.
//! - [`pick`]: which endpoint a try goes to, first try and retries (previous_priorities).
//! - [`retry`]: whether a failed try is retried, after what back-off, and the retry budget.
//! - [`health`]: what a probe's result says, and the active health check's thresholds.
//! - [`readmission`]: when ejected hosts are swept, and the probe that lets them back.
//! - [`slowstart`]: how much of its weight an endpoint that came back gets while it warms up.
//! - [`policy`]: the resilience settings every dialect translates into.

pub mod health;
pub mod load;
pub mod names;
pub mod outcome;
pub mod outlier;
pub mod pick;
pub mod policy;
pub mod priority;
pub mod readmission;
pub mod retry;
pub mod slowstart;
pub mod table;
pub mod topology;
