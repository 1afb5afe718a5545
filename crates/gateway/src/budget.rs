//! Each destination's retry budget, shared by every worker's requests to it.

use std::sync::atomic::{AtomicI64, Ordering};

/// Retry budget of one destination: retries within a priority may add at most ~20% to the
/// request rate (plus a small reserve topped up by the control loop), so a dying cluster cannot
/// multiply load. Retries that fail over to a priority not tried yet are not charged.
#[derive(Debug)]
pub struct RetryBudget {
    milli_tokens: AtomicI64,
}

impl RetryBudget {
    const PER_REQUEST: i64 = 200;
    const PER_RETRY: i64 = 1000;
    const DEPOSIT_EVERY: u32 = 16;
    const CAP: i64 = 100_000;
    /// What the control loop tops the budget up to every second (10 retries).
    pub const RESERVE: i64 = 10_000;

    pub fn new() -> Self {
        RetryBudget { milli_tokens: AtomicI64::new(Self::RESERVE) }
    }

    /// Credits one request. Every worker writes here, and a write pulls the line away from the
    /// other workers' cores, so one request in [`Self::DEPOSIT_EVERY`] (drawn by `roll`, uniform)
    /// deposits for that many: the same credit on average, a sixteenth of the writes.
    pub(crate) fn deposit(&self, roll: u32) {
        if roll.is_multiple_of(Self::DEPOSIT_EVERY) && self.milli_tokens.load(Ordering::Relaxed) < Self::CAP {
            self.milli_tokens.fetch_add(Self::PER_REQUEST * i64::from(Self::DEPOSIT_EVERY), Ordering::Relaxed);
        }
    }

    pub(crate) fn withdraw(&self) -> bool {
        if self.milli_tokens.fetch_sub(Self::PER_RETRY, Ordering::Relaxed) >= Self::PER_RETRY {
            true
        } else {
            self.milli_tokens.fetch_add(Self::PER_RETRY, Ordering::Relaxed);
            false
        }
    }

    /// Tops the budget up to the reserve.
    pub fn refill(&self) {
        let _ = self.milli_tokens.fetch_max(Self::RESERVE, Ordering::Relaxed);
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::RetryBudget;

    fn retries_available(b: &RetryBudget) -> usize {
        std::iter::from_fn(|| b.withdraw().then_some(())).count()
    }

    #[test]
    fn one_roll_in_sixteen_deposits_for_sixteen_requests() {
        let b = RetryBudget::new();
        assert_eq!(retries_available(&b), 10, "the reserve pays for 10 retries");
        for roll in 1..16 {
            b.deposit(roll);
        }
        assert_eq!(retries_available(&b), 0, "rolls that are not a multiple of 16 deposit nothing");
        b.deposit(32);
        // 16 requests x 20% = 3.2 retries.
        assert_eq!(retries_available(&b), 3);
    }

    #[test]
    fn over_every_roll_each_request_adds_a_fifth_of_a_retry() {
        let b = RetryBudget::new();
        let _ = retries_available(&b);
        // 400 consecutive rolls hold each residue mod 16 equally often, as uniform rolls do on
        // average: 400 requests x 20% = 80 retries, exactly.
        for roll in 1000..1400 {
            b.deposit(roll);
        }
        assert_eq!(retries_available(&b), 80);
    }

    #[test]
    fn the_budget_never_exceeds_its_cap() {
        let b = RetryBudget::new();
        for _ in 0..10_000 {
            b.deposit(0);
        }
        assert!(retries_available(&b) <= (RetryBudget::CAP / RetryBudget::PER_RETRY) as usize + 3);
    }
}
