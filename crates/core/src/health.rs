//! Active health checks: what a probe's result says of the endpoint, and when runs of them
//! move it in or out of the table.

use crate::outcome::{Blame, EastWestError, TryEnd};
use crate::policy::ActiveHealthCheck;

/// What one probe (a health check or a re-admission probe) says of the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeVerdict {
    Passed,
    Failed,
    /// This node (or the east-west listener's node in front of the endpoint) could not send it:
    /// out of descriptors or memory. It says nothing of the endpoint, so it is no verdict.
    NotSent,
}

impl ProbeVerdict {
    /// Whether the endpoint passed; `None` when the probe is no verdict on it.
    pub fn passed(self) -> Option<bool> {
        match self {
            ProbeVerdict::Passed => Some(true),
            ProbeVerdict::Failed => Some(false),
            ProbeVerdict::NotSent => None,
        }
    }
}

/// The verdict on a probe that was answered with `status`. `eastwest_error` is the answer's
/// `x-veer-eastwest-error` field, when it has one: the east-west listener wrote the answer
/// itself, so it failed behind the listener (whatever the status), unless the listener's own
/// node was short of resources. Otherwise the endpoint passes when its status is in `expected`,
/// or below 500 when `expected` is empty.
pub fn answer_verdict(status: u16, eastwest_error: Option<&[u8]>, expected: &[(u16, u16)]) -> ProbeVerdict {
    match eastwest_error.map(EastWestError::parse) {
        Some(Some(EastWestError::Local)) => ProbeVerdict::NotSent,
        Some(_) => ProbeVerdict::Failed,
        None => {
            let passed = if expected.is_empty() { status < 500 } else { expected.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) };
            if passed {
                ProbeVerdict::Passed
            } else {
                ProbeVerdict::Failed
            }
        }
    }
}

/// The verdict on a probe that got no answer, ended as `end` (a failed connect, a broken
/// connection, a timeout): the endpoint failed, unless this node is to blame.
pub fn failure_verdict(end: TryEnd) -> ProbeVerdict {
    if end.blame() == Blame::Upstream {
        ProbeVerdict::Failed
    } else {
        ProbeVerdict::NotSent
    }
}

/// How many results in a row move an endpoint: passes to come back, failures to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

impl From<&ActiveHealthCheck> for Thresholds {
    fn from(check: &ActiveHealthCheck) -> Self {
        Thresholds { healthy: check.healthy_threshold, unhealthy: check.unhealthy_threshold }
    }
}

/// One endpoint's health as its active checks see it. It starts healthy, as Envoy's does once
/// an endpoint is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthRun {
    healthy: bool,
    ok_run: u32,
    fail_run: u32,
}

/// A move in or out of the table that a check's result caused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Healthy again after this many passes in a row.
    Healthy { passes: u32 },
    /// Unhealthy after this many failures in a row.
    Unhealthy { failures: u32 },
}

impl Default for HealthRun {
    fn default() -> Self {
        HealthRun { healthy: true, ok_run: 0, fail_run: 0 }
    }
}

impl HealthRun {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Counts one check's result; a result breaks the other kind's run. The endpoint moves
    /// when a run reaches its threshold, and only if it is not already where the run points.
    pub fn observe(&mut self, ok: bool, thresholds: Thresholds) -> Option<Transition> {
        if ok {
            self.ok_run = self.ok_run.saturating_add(1);
            self.fail_run = 0;
            if !self.healthy && self.ok_run >= thresholds.healthy {
                self.healthy = true;
                return Some(Transition::Healthy { passes: self.ok_run });
            }
        } else {
            self.fail_run = self.fail_run.saturating_add(1);
            self.ok_run = 0;
            if self.healthy && self.fail_run >= thresholds.unhealthy {
                self.healthy = false;
                return Some(Transition::Unhealthy { failures: self.fail_run });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
