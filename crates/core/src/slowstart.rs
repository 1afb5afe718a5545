//! Slow start: the share of its weight an endpoint that came back gets while it warms up, and
//! how a priority that came back takes its load back over the same window.
//!
//! Envoy's slow start (`slow_start_config`) scales a host's weight for `window` after it joined
//! or turned healthy: `weight · max(min_weight_percent, (t / window)^(1/aggression))`. veer applies
//! the same factor wherever capacity is weighed: an endpoint among its priority's others, a
//! locality or backendRef group among its priority's groups (Envoy does not scale locality
//! weights; veer does, since a recovered *cluster* is often a group of its own), and a priority
//! among the priorities (see [`ramp_availability`]). Time is an argument: the control loop passes
//! how long an endpoint has been back, and rebuilds the tables at a few [`STEPS`] over the window,
//! so the request path reads fixed pick weights and computes nothing per request.

use std::time::Duration;

/// A destination's slow start settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowStart {
    pub window: Duration,
    /// Envoy's `aggression` in thousandths (1000 = 1.0, linear); above 1000 ramps faster early.
    pub aggression_milli: u32,
    /// The least share of its weight an endpoint in slow start gets, in percent (Envoy: 10).
    pub min_weight_percent: u32,
}

/// How many table rebuilds a window is cut into: the factor moves by about 1/STEPS between two
/// (for aggression 1), which is finer than the noise of a few hundred requests, while a warming
/// destination costs the control loop at most STEPS + 1 table rebuilds.
pub const STEPS: u32 = 20;

/// The shortest time between two rebuilds of a warming destination, however short its window.
pub const MIN_STEP: Duration = Duration::from_millis(100);

impl SlowStart {
    /// Envoy's defaults (aggression 1.0, 10% minimum) over `window`.
    pub const fn with_window(window: Duration) -> SlowStart {
        SlowStart { window, aggression_milli: 1000, min_weight_percent: 10 }
    }

    /// The factor (in `(0, 1]`) an endpoint's weight is scaled by `since` after it came back;
    /// `None` once the window is over (the endpoint is steady: factor 1).
    pub fn factor(&self, since: Duration) -> Option<f64> {
        if self.window.is_zero() || since >= self.window {
            return None;
        }
        // Envoy floors the time at 1 ms, so a host counted at once still gets the minimum.
        let t = since.max(Duration::from_millis(1)).as_secs_f64() / self.window.as_secs_f64();
        let aggression = f64::from(self.aggression_milli.max(1)) / 1000.0;
        let min = f64::from(self.min_weight_percent.min(100)) / 100.0;
        Some(t.powf(1.0 / aggression).max(min).clamp(f64::MIN_POSITIVE, 1.0))
    }

    /// When (time since the endpoint came back) its tables are next rebuilt after `since`: the
    /// next step boundary, or the window's end, after which it is steady. `None`: past the window.
    pub fn next_step(&self, since: Duration) -> Option<Duration> {
        if self.window.is_zero() || since >= self.window {
            return None;
        }
        let step = (self.window / STEPS).max(MIN_STEP);
        let n = (since.as_nanos() / step.as_nanos()) as u32 + 1;
        Some(step.saturating_mul(n).min(self.window))
    }
}

/// A priority's availability (Envoy's `health_p`, §1.1) while some of its healthy hosts warm up:
/// it climbs from `cold` (the availability without them) towards `warm` (with them) by `factor`,
/// so a priority that came back takes load from those that served meanwhile step by step rather
/// than all at once. Never below `cold` nor above `warm`.
pub fn ramp_availability(cold: u32, warm: u32, factor: f64) -> u32 {
    if warm <= cold {
        return warm;
    }
    let f = if factor.is_nan() { 1.0 } else { factor.clamp(0.0, 1.0) };
    let up = (f64::from(warm - cold) * f).round() as u32;
    cold + up.min(warm - cold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envoy_linear_ramp_with_its_ten_percent_floor() {
        let s = SlowStart::with_window(Duration::from_secs(60));
        assert_eq!(s.factor(Duration::ZERO), Some(0.1));
        assert_eq!(s.factor(Duration::from_secs(3)), Some(0.1));
        assert!((s.factor(Duration::from_secs(30)).unwrap() - 0.5).abs() < 1e-9);
        assert!((s.factor(Duration::from_secs(45)).unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(s.factor(Duration::from_secs(60)), None);
        // aggression 2: sqrt(t / window).
        let fast = SlowStart { aggression_milli: 2000, ..s };
        assert!((fast.factor(Duration::from_secs(15)).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn steps_cut_the_window_and_stop_at_its_end() {
        let s = SlowStart::with_window(Duration::from_secs(10));
        assert_eq!(s.next_step(Duration::ZERO), Some(Duration::from_millis(500)));
        assert_eq!(s.next_step(Duration::from_millis(500)), Some(Duration::from_secs(1)));
        assert_eq!(s.next_step(Duration::from_millis(9_900)), Some(Duration::from_secs(10)));
        assert_eq!(s.next_step(Duration::from_secs(10)), None);
        let short = SlowStart::with_window(Duration::from_millis(300));
        assert_eq!(short.next_step(Duration::ZERO), Some(MIN_STEP));
        assert_eq!(short.next_step(Duration::from_millis(250)), Some(Duration::from_millis(300)));
        assert_eq!(SlowStart::with_window(Duration::ZERO).factor(Duration::ZERO), None);
    }

    #[test]
    fn a_priority_that_came_back_climbs_from_cold_to_warm() {
        assert_eq!(ramp_availability(0, 100, 0.1), 10);
        assert_eq!(ramp_availability(0, 100, 1.0), 100);
        assert_eq!(ramp_availability(93, 100, 0.5), 97);
        assert_eq!(ramp_availability(50, 40, 0.5), 40);
        assert_eq!(ramp_availability(0, 100, f64::NAN), 100);
    }

    proptest! {
        #[test]
        fn factor_is_bounded_and_grows_with_time(
            window_ms in 1u64..600_000,
            aggression_milli in 1u32..10_000,
            min in 0u32..=100,
            a in 0u64..700_000,
            b in 0u64..700_000,
        ) {
            let s = SlowStart { window: Duration::from_millis(window_ms), aggression_milli, min_weight_percent: min };
            let (early, late) = (Duration::from_millis(a.min(b)), Duration::from_millis(a.max(b)));
            let f = |t| s.factor(t).unwrap_or(1.0);
            prop_assert!(f(early) > 0.0 && f(early) <= 1.0);
            prop_assert!(f(early) >= f64::from(min) / 100.0 - 1e-12);
            prop_assert!(f(early) <= f(late) + 1e-12);
            // Below 1 only inside the window.
            if late >= s.window { prop_assert!(s.factor(late).is_none()); }
        }

        #[test]
        fn steps_move_forward_and_end_at_the_window(window_ms in 1u64..600_000, at in 0u64..700_000) {
            let s = SlowStart::with_window(Duration::from_millis(window_ms));
            let since = Duration::from_millis(at);
            match s.next_step(since) {
                Some(next) => {
                    prop_assert!(next > since);
                    prop_assert!(next <= s.window);
                }
                None => prop_assert!(since >= s.window),
            }
        }

        #[test]
        fn ramped_availability_is_monotone_and_between_its_ends(cold in 0u32..=100, warm in 0u32..=100, f in 0.0f64..=1.0, g in 0.0f64..=1.0) {
            let (lo, hi) = (f.min(g), f.max(g));
            let (a, b) = (ramp_availability(cold, warm, lo), ramp_availability(cold, warm, hi));
            prop_assert!(a <= b);
            prop_assert!(b <= warm.max(cold));
            prop_assert!(a >= cold.min(warm));
        }
    }
}
