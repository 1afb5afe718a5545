//! Who writes status: one replica at a time, elected with a `coordination.k8s.io/v1` Lease, as
//! Kubernetes' own controllers elect theirs. The decision is pure; time is an argument.

use std::time::Duration;

/// How long a holder's claim lasts without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and a follower looks again: a third of the lease, so two missed
/// renewals still leave it held.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// A Lease as read: who holds it and until when (times since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub holder: Option<String>,
    pub renewed: Option<Duration>,
    pub duration: Duration,
}

/// What a replica does about the Lease now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it, held by me.
    Create,
    /// I hold it: renew it.
    Renew,
    /// Its holder let it lapse (or none holds it): take it over.
    TakeOver,
    /// Another replica holds it for this much longer: follow (serve, write no status).
    Follow { holder: String, for_at_least: Duration },
}

/// The step for replica `me` at `now`, given the Lease as read (`None`: there is none).
pub fn step(lease: Option<&Held>, me: &str, now: Duration) -> Step {
    let Some(lease) = lease else { return Step::Create };
    match (&lease.holder, lease.renewed) {
        (Some(holder), _) if holder == me => Step::Renew,
        (Some(holder), Some(renewed)) => {
            let until = renewed + lease.duration;
            if now < until {
                Step::Follow { holder: holder.clone(), for_at_least: until - now }
            } else {
                Step::TakeOver
            }
        }
        // A Lease with no holder, or one never renewed, is free.
        _ => Step::TakeOver,
    }
}

/// Whether a holder that last renewed at `renewed` may still act as leader at `now`: only while
/// its own claim runs, less a margin for clocks and the time a write takes, so two replicas
/// never both think they lead.
pub fn still_leading(renewed: Duration, now: Duration) -> bool {
    now < renewed + LEASE_DURATION - RENEW_EVERY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(holder: &str, renewed_s: u64) -> Held {
        Held { holder: Some(holder.into()), renewed: Some(Duration::from_secs(renewed_s)), duration: LEASE_DURATION }
    }

    #[test]
    fn a_missing_lease_is_created_and_my_own_renewed() {
        assert_eq!(step(None, "a", Duration::from_secs(100)), Step::Create);
        assert_eq!(step(Some(&held("a", 10)), "a", Duration::from_secs(100)), Step::Renew);
    }

    #[test]
    fn another_holder_is_followed_until_its_lease_lapses_then_taken_over() {
        let lease = held("b", 100);
        assert_eq!(
            step(Some(&lease), "a", Duration::from_secs(104)),
            Step::Follow { holder: "b".into(), for_at_least: Duration::from_secs(11) }
        );
        assert_eq!(step(Some(&lease), "a", Duration::from_secs(115)), Step::TakeOver);
        let empty = Held { holder: None, renewed: None, duration: LEASE_DURATION };
        assert_eq!(step(Some(&empty), "a", Duration::from_secs(1)), Step::TakeOver);
    }

    #[test]
    fn a_leader_stops_acting_before_its_lease_could_be_taken() {
        let renewed = Duration::from_secs(100);
        assert!(still_leading(renewed, Duration::from_secs(109)));
        assert!(!still_leading(renewed, Duration::from_secs(110)));
        // Whenever a follower may take over, the old holder has stopped.
        for t in 100..130 {
            let now = Duration::from_secs(t);
            assert!(!(still_leading(renewed, now) && step(Some(&held("b", 100)), "a", now) == Step::TakeOver), "at {t}");
        }
    }
}
