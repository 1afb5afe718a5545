//! Hosts whose ejection ended: when the detector's sweep finds them, and the probe that decides
//! whether they come back.
//!
//! veer does not return an ejected host to the table on the clock alone (Envoy does): a sweep
//! that un-ejects it holds it out until one probe answers, so a host that is still down costs
//! no client a failed try.

use std::time::Duration;

use crate::health::ProbeVerdict;
use crate::outlier::EjectionReason;

/// What a re-admission probe's verdict does to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readmission {
    /// The probe passed: the host is back in the table.
    Readmit,
    /// The probe failed: the host is ejected again at once, for this reason (the cluster-wide
    /// cap still applies).
    EjectAgain(EjectionReason),
    /// This node could not send the probe: no verdict on the host, which stays out and is
    /// probed again after [`PROBE_AGAIN_AFTER`], never ejected harder.
    ProbeAgain,
}

/// How long a re-admission probe waits for its answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The wait before probing again a host this node could not probe.
pub const PROBE_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// The re-admission rule.
pub fn readmission(verdict: ProbeVerdict) -> Readmission {
    match verdict {
        ProbeVerdict::Passed => Readmission::Readmit,
        ProbeVerdict::Failed => Readmission::EjectAgain(EjectionReason::ReadmissionProbeFailed),
        ProbeVerdict::NotSent => Readmission::ProbeAgain,
    }
}

/// When a destination's outlier detector is swept next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepSchedule {
    due: Option<Duration>,
}

impl SweepSchedule {
    /// The shortest time between two sweeps: a detector configured with a zero interval would
    /// otherwise be swept at every tick of the control loop.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

    /// Whether a sweep is due at `now` (time since a fixed start), for a detector swept every
    /// `interval`; when it is, the next is scheduled. The first call only schedules: a detector
    /// just created has nothing to un-eject.
    pub fn due(&mut self, now: Duration, interval: Duration) -> bool {
        let due = *self.due.get_or_insert(now.saturating_add(interval));
        if now < due {
            return false;
        }
        self.due = Some(now.saturating_add(interval.max(Self::MIN_INTERVAL)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_probe_readmits_a_failed_one_ejects_again_and_an_unsent_one_is_tried_again() {
        assert_eq!(readmission(ProbeVerdict::Passed), Readmission::Readmit);
        assert_eq!(readmission(ProbeVerdict::Failed), Readmission::EjectAgain(EjectionReason::ReadmissionProbeFailed));
        assert_eq!(readmission(ProbeVerdict::NotSent), Readmission::ProbeAgain);
    }

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_sweep_comes_one_interval_after_the_detector_is_first_seen() {
        let mut s = SweepSchedule::default();
        assert!(!s.due(ms(1000), ms(500)), "first seen: scheduled, not swept");
        assert!(!s.due(ms(1499), ms(500)));
        assert!(s.due(ms(1500), ms(500)));
        // The next is an interval after the sweep that ran, not after the one scheduled.
        assert!(!s.due(ms(1999), ms(500)));
        assert!(s.due(ms(2000), ms(500)));
        assert!(s.due(ms(2700), ms(500)), "a late tick sweeps at once");
        assert!(!s.due(ms(3100), ms(500)));
    }

    #[test]
    fn a_zero_interval_still_leaves_ten_milliseconds_between_sweeps() {
        let mut s = SweepSchedule::default();
        assert!(s.due(ms(0), Duration::ZERO), "a zero interval is due at once");
        assert!(!s.due(ms(9), Duration::ZERO));
        assert!(s.due(ms(10), Duration::ZERO));
    }
}
