//! Envoy outlier detection (consecutive-error ejection) as a state machine over injected time and randomness.
//!
//! Mirrors `DetectorImpl` / `DetectorHostMonitorImpl` from Envoy's `outlier_detection_impl.cc`
//! (failover-semantics.md §2): per-host consecutive 5xx, gateway-failure and local-origin
//! counters, the cluster-wide ejection cap, ejection backoff and un-ejection at interval sweeps.
//!
//! Success-rate and failure-percentage ejection (§2.5) are out of scope: their configuration
//! fields are absent and sweeps only un-eject and decay backoff.
//!
//! Envoy counts on worker threads and ejects on the main thread; here both happen inside
//! [`OutlierDetector::record`], in the order the main thread would see the ejection requests.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

/// Envoy's lower bound for the default `max_ejection_time`.
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// Envoy outlier detection config with Envoy's defaults (§2.1) in [`Default`].
///
/// Percentages above 100 act as 100. Thresholds of 0 never fire, as in Envoy (`++counter == 0`
/// is never true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    /// Only counted when `split_external_local_origin_errors` is set.
    pub consecutive_local_origin_failure: u32,
    pub enforcing_consecutive_5xx: u32,
    /// Envoy's default is 0: gateway failures are detected but not enforced.
    pub enforcing_consecutive_gateway_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    /// How often the caller runs [`OutlierDetector::sweep`].
    pub interval: Duration,
    pub base_ejection_time: Duration,
    /// Envoy defaults an unset value to `max(300 s, base_ejection_time)`, see
    /// [`OutlierConfig::default_max_ejection_time`]; below base is a config error.
    pub max_ejection_time: Duration,
    /// Jitter is drawn in whole milliseconds from `0..=max_ejection_time_jitter`.
    pub max_ejection_time_jitter: Duration,
    pub max_ejection_percent: u32,
    /// Lets the first ejection through even when it would exceed `max_ejection_percent`.
    pub always_eject_one_host: bool,
    /// Count connect failures and timeouts separately instead of as 503/504.
    pub split_external_local_origin_errors: bool,
}

/// A config Envoy would reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlierConfigError {
    MaxEjectionTimeBelowBase { base: Duration, max: Duration },
}

/// What one request to a host ended as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// An HTTP response with this status code.
    Http(u16),
    /// Local origin: the connection could not be established.
    ConnectFailed,
    /// Local origin: the request timed out.
    Timeout,
    /// Local origin: the connection was established (the response is reported separately).
    ConnectSucceeded,
    /// A non-HTTP failure of the upstream itself.
    ExternalFailure,
}

/// Source of randomness, injected (for jitter and enforcing percentages).
///
/// Closures `FnMut() -> u32` implement it, so a test can pass `&mut || 0`.
pub trait Random {
    fn next_u32(&mut self) -> u32;
}

/// Which consecutive-error detector asked for an ejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EjectionReason {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    /// veer's own rule: a refused connect or a reset is decisive on its first occurrence.
    ConnectFailure,
    /// veer's own rule: a host whose ejection ended failed its re-admission probe.
    ReadmissionProbeFailed,
}

/// An enforced ejection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ejection<K> {
    pub host: K,
    pub reason: EjectionReason,
    /// `min(base·backoff, max) + jitter`: the earliest sweep at or after `now + duration`
    /// un-ejects the host.
    pub duration: Duration,
    /// How many times this host has been ejected, this ejection included.
    pub ejections_total: u32,
}

/// What an ejection request turned into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<K> {
    /// No request, or it was ignored because the host is already ejected or unknown.
    None,
    Ejected(Ejection<K>),
    /// The cap refused it (Envoy's `ejections_overflow` stat).
    Overflow {
        host: K,
        reason: EjectionReason,
    },
    /// Allowed by the cap but not picked by the `enforcing_*` percentage roll.
    NotEnforced {
        host: K,
        reason: EjectionReason,
    },
}

/// The outlier state of one host, as kept by the detector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStatus {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    pub ejected: bool,
    pub num_ejections: u32,
    /// Multiplier of `base_ejection_time` for the current or next ejection.
    pub backoff: u32,
    pub last_ejection: Option<Duration>,
    pub last_unejection: Option<Duration>,
    /// Jitter drawn at the last ejection.
    pub jitter: Duration,
    /// What asked for the last ejection.
    pub last_reason: Option<EjectionReason>,
}

/// Per-cluster detector; the ejection cap counts every host of the cluster across all priorities.
#[derive(Clone, Debug)]
pub struct OutlierDetector<K: Eq + Hash + Clone> {
    config: OutlierConfig,
    // Insertion order, so sweeps report un-ejections deterministically.
    order: Vec<K>,
    hosts: HashMap<K, HostStatus>,
    ejected: usize,
}

/// Which counters one outcome pushed onto their threshold.
#[derive(Clone, Copy, Debug, Default)]
struct Triggers {
    gateway: bool,
    five_xx: bool,
    local_origin: bool,
}

// === impl OutlierConfig ===

impl Default for OutlierConfig {
    fn default() -> Self {
        let base_ejection_time = Duration::from_secs(30);
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            interval: Duration::from_secs(10),
            base_ejection_time,
            max_ejection_time: Self::default_max_ejection_time(base_ejection_time),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10,
            always_eject_one_host: false,
            split_external_local_origin_errors: false,
        }
    }
}

impl OutlierConfig {
    /// Whether the max-ejection-percent cap lets one more of `hosts` be ejected while `active`
    /// are (failover-semantics.md §2.3). Envoy compares `100.0·(active+1)/hosts ≤ max%` in
    /// floating point; cross-multiplying gives the same answer without rounding. The cap is
    /// cluster-wide, across all priorities; `always_eject_one_host` lets the first through.
    pub fn cap_allows(&self, active: u64, hosts: u64) -> bool {
        let max_percent = u64::from(self.max_ejection_percent.min(100));
        let within_cap = 100 * (active + 1) <= max_percent * hosts;
        within_cap || (self.always_eject_one_host && active == 0)
    }

    /// Whether anything can ever be ejected from a cluster of `hosts`: the first ejection
    /// needs `100 ≤ max% · hosts`, so 10% (Envoy's and Envoy Gateway's default) ejects nothing
    /// below 10 hosts, and 25% nothing below 4.
    pub fn can_eject_any(&self, hosts: u64) -> bool {
        hosts > 0 && self.cap_allows(0, hosts)
    }

    /// Envoy's `max_ejection_time` when the field is unset: `max(300 s, base)`.
    pub fn default_max_ejection_time(base_ejection_time: Duration) -> Duration {
        DEFAULT_MAX_EJECTION_TIME.max(base_ejection_time)
    }

    /// Sets `base_ejection_time` and, as Envoy does for an unset `max_ejection_time`,
    /// `max_ejection_time = max(300 s, base)`.
    pub fn with_base_ejection_time(self, base_ejection_time: Duration) -> Self {
        Self { base_ejection_time, max_ejection_time: Self::default_max_ejection_time(base_ejection_time), ..self }
    }

    /// Envoy refuses a cluster whose `max_ejection_time` is below `base_ejection_time`.
    pub fn validate(&self) -> Result<(), OutlierConfigError> {
        if self.max_ejection_time < self.base_ejection_time {
            return Err(OutlierConfigError::MaxEjectionTimeBelowBase { base: self.base_ejection_time, max: self.max_ejection_time });
        }
        Ok(())
    }

    fn enforcing(&self, reason: EjectionReason) -> u32 {
        match reason {
            EjectionReason::Consecutive5xx => self.enforcing_consecutive_5xx,
            EjectionReason::ConsecutiveGatewayFailure => self.enforcing_consecutive_gateway_failure,
            EjectionReason::ConsecutiveLocalOriginFailure => self.enforcing_consecutive_local_origin_failure,
            EjectionReason::ConnectFailure | EjectionReason::ReadmissionProbeFailed => 100,
        }
    }

    /// `min(base·backoff, max) + jitter`, saturating instead of overflowing.
    fn ejection_duration(&self, backoff: u32, jitter: Duration) -> Duration {
        let scaled = self.base_ejection_time.checked_mul(backoff).unwrap_or(Duration::MAX);
        scaled.min(self.max_ejection_time).saturating_add(jitter)
    }

    /// Envoy grows the backoff only while `backoff·base < max + base`, so it stops one step past
    /// the cap instead of growing without bound.
    fn may_grow_backoff(&self, backoff: u32) -> bool {
        let base = self.base_ejection_time.as_nanos();
        let scaled = base.saturating_mul(u128::from(backoff));
        scaled < self.max_ejection_time.as_nanos().saturating_add(base)
    }
}

// === impl OutlierConfigError ===

impl fmt::Display for OutlierConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxEjectionTimeBelowBase { base, max } => {
                write!(f, "max_ejection_time ({max:?}) cannot be smaller than base_ejection_time ({base:?})")
            }
        }
    }
}

impl std::error::Error for OutlierConfigError {}

// === impl Random ===

impl<F: FnMut() -> u32> Random for F {
    fn next_u32(&mut self) -> u32 {
        self()
    }
}

// === impl Verdict ===

impl<K> Verdict<K> {
    pub fn is_ejected(&self) -> bool {
        matches!(self, Self::Ejected(_))
    }

    /// The ejection request's reason, if there was one.
    pub fn reason(&self) -> Option<EjectionReason> {
        match self {
            Self::None => None,
            Self::Ejected(ejection) => Some(ejection.reason),
            Self::Overflow { reason, .. } | Self::NotEnforced { reason, .. } => Some(*reason),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::None => 0,
            Self::NotEnforced { .. } => 1,
            Self::Overflow { .. } => 2,
            Self::Ejected(_) => 3,
        }
    }
}

// === impl HostStatus ===

impl HostStatus {
    /// Bumps the counters one outcome touches (§2.2) and reports which reached their threshold.
    fn count(&mut self, outcome: Outcome, config: &OutlierConfig) -> Triggers {
        if config.split_external_local_origin_errors {
            match outcome {
                Outcome::Http(code) => self.count_http(code, config),
                Outcome::ConnectFailed | Outcome::Timeout => {
                    self.consecutive_local_origin_failure = self.consecutive_local_origin_failure.saturating_add(1);
                    Triggers {
                        local_origin: self.consecutive_local_origin_failure == config.consecutive_local_origin_failure,
                        ..Triggers::default()
                    }
                }
                Outcome::ConnectSucceeded => {
                    self.consecutive_local_origin_failure = 0;
                    Triggers::default()
                }
                Outcome::ExternalFailure => self.count_http(503, config),
            }
        } else {
            match outcome {
                Outcome::Http(code) => self.count_http(code, config),
                Outcome::ConnectFailed => self.count_http(503, config),
                Outcome::Timeout => self.count_http(504, config),
                Outcome::ExternalFailure => self.count_http(500, config),
                // The response that follows is what counts.
                Outcome::ConnectSucceeded => Triggers::default(),
            }
        }
    }

    fn count_http(&mut self, code: u16, config: &OutlierConfig) -> Triggers {
        if !(500..=599).contains(&code) {
            self.consecutive_5xx = 0;
            self.consecutive_gateway_failure = 0;
            return Triggers::default();
        }
        let mut triggers = Triggers::default();
        if matches!(code, 502..=504) {
            self.consecutive_gateway_failure = self.consecutive_gateway_failure.saturating_add(1);
            triggers.gateway = self.consecutive_gateway_failure == config.consecutive_gateway_failure;
        } else {
            self.consecutive_gateway_failure = 0;
        }
        self.consecutive_5xx = self.consecutive_5xx.saturating_add(1);
        triggers.five_xx = self.consecutive_5xx == config.consecutive_5xx;
        triggers
    }

    fn reset_counter(&mut self, reason: EjectionReason) {
        match reason {
            EjectionReason::Consecutive5xx => self.consecutive_5xx = 0,
            EjectionReason::ConsecutiveGatewayFailure => self.consecutive_gateway_failure = 0,
            EjectionReason::ConsecutiveLocalOriginFailure => self.consecutive_local_origin_failure = 0,
            EjectionReason::ConnectFailure | EjectionReason::ReadmissionProbeFailed => {}
        }
    }

    fn uneject(&mut self, now: Duration) {
        self.ejected = false;
        // A counter left just below its threshold would otherwise re-eject on very few errors.
        self.consecutive_5xx = 0;
        self.consecutive_gateway_failure = 0;
        self.consecutive_local_origin_failure = 0;
        self.last_unejection = Some(now);
    }

    fn due_for_unejection(&self, now: Duration, config: &OutlierConfig) -> bool {
        let Some(elapsed) = self.last_ejection.and_then(|ejected_at| now.checked_sub(ejected_at)) else {
            return false;
        };
        config.ejection_duration(self.backoff, self.jitter) <= elapsed
    }
}

// === impl OutlierDetector ===

impl<K: Eq + Hash + Clone> OutlierDetector<K> {
    pub fn new(config: OutlierConfig, hosts: impl IntoIterator<Item = K>) -> Self {
        let mut detector = Self { config, order: Vec::new(), hosts: HashMap::new(), ejected: 0 };
        detector.set_hosts(hosts);
        detector
    }

    /// Replace the host set (a config reload): state of hosts that remain is kept, new hosts start
    /// clean, removed hosts are forgotten. Duplicates are kept once, at their first position.
    pub fn set_hosts(&mut self, hosts: impl IntoIterator<Item = K>) {
        let mut previous = std::mem::take(&mut self.hosts);
        self.order.clear();
        for host in hosts {
            if self.hosts.contains_key(&host) {
                continue;
            }
            let status = previous.remove(&host).unwrap_or_default();
            self.hosts.insert(host.clone(), status);
            self.order.push(host);
        }
        self.ejected = self.hosts.values().filter(|status| status.ejected).count();
    }

    /// Feeds one request's outcome to the host's counters and returns the most significant
    /// resulting verdict (ejected, then overflow, then not enforced).
    ///
    /// Outcomes for unknown hosts are ignored; outcomes for ejected hosts still count, but their
    /// ejection requests are ignored and leave the counter as it is.
    pub fn record(&mut self, host: &K, outcome: Outcome, now: Duration, rng: &mut impl Random) -> Verdict<K> {
        self.record_all(host, outcome, now, rng)
            .into_iter()
            .reduce(|best, next| if next.rank() > best.rank() { next } else { best })
            .unwrap_or(Verdict::None)
    }

    /// Like [`record`](Self::record) but returns every ejection request the outcome raised that
    /// was not ignored, in Envoy's order (gateway failure before 5xx). One gateway error can raise
    /// both; when the first ejects the host, the second is ignored.
    pub fn record_all(&mut self, host: &K, outcome: Outcome, now: Duration, rng: &mut impl Random) -> Vec<Verdict<K>> {
        let config = self.config;
        let Some(status) = self.hosts.get_mut(host) else {
            return Vec::new();
        };
        let triggers = status.count(outcome, &config);
        let requests = [
            (triggers.gateway, EjectionReason::ConsecutiveGatewayFailure),
            (triggers.five_xx, EjectionReason::Consecutive5xx),
            (triggers.local_origin, EjectionReason::ConsecutiveLocalOriginFailure),
        ];
        requests.into_iter().filter(|(fired, _)| *fired).filter_map(|(_, reason)| self.request_ejection(host, reason, now, rng)).collect()
    }

    /// Sweep at `now` (the caller runs it every `interval`); returns hosts un-ejected by this
    /// sweep, then decrements the backoff of hosts that have stayed un-ejected for an interval.
    pub fn sweep(&mut self, now: Duration) -> Vec<K> {
        let config = self.config;
        let mut unejected = Vec::new();
        for host in &self.order {
            if let Some(status) = self.hosts.get_mut(host) {
                if status.ejected && status.due_for_unejection(now, &config) {
                    status.uneject(now);
                    unejected.push(host.clone());
                }
            }
        }
        self.ejected = self.ejected.saturating_sub(unejected.len());

        for status in self.hosts.values_mut() {
            let calm_for_an_interval =
                status.last_unejection.and_then(|at| now.checked_sub(at)).is_some_and(|since| since >= config.interval);
            if !status.ejected && calm_for_an_interval {
                status.backoff = status.backoff.saturating_sub(1);
            }
        }
        unejected
    }

    pub fn is_ejected(&self, host: &K) -> bool {
        self.hosts.get(host).is_some_and(|status| status.ejected)
    }

    pub fn ejected_count(&self) -> usize {
        self.ejected
    }

    pub fn host_count(&self) -> usize {
        self.order.len()
    }

    /// Un-eject because an active health check passed (successful_active_health_check_uneject_host).
    ///
    /// Returns whether the host was ejected. The caller decides whether that option is on and
    /// whether the host still fails its active health check, as Envoy's callback does.
    pub fn uneject_by_health_check(&mut self, host: &K, now: Duration) -> bool {
        match self.hosts.get_mut(host) {
            Some(status) if status.ejected => {
                status.uneject(now);
                self.ejected = self.ejected.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// The hosts, in the order last given.
    pub fn hosts(&self) -> impl Iterator<Item = &K> + '_ {
        self.order.iter()
    }

    /// The ejected hosts, in host order.
    pub fn ejected_hosts(&self) -> impl Iterator<Item = &K> + '_ {
        self.order.iter().filter(|host| self.is_ejected(host))
    }

    pub fn host_status(&self, host: &K) -> Option<HostStatus> {
        self.hosts.get(host).copied()
    }

    /// When an ejected host becomes eligible for un-ejection; the sweep at or after this time
    /// un-ejects it. `None` when the host is unknown or not ejected.
    pub fn ejection_ends_at(&self, host: &K) -> Option<Duration> {
        let status = self.hosts.get(host).filter(|status| status.ejected)?;
        let duration = self.config.ejection_duration(status.backoff, status.jitter);
        Some(status.last_ejection?.saturating_add(duration))
    }

    /// Ejects `host` at once for a decisive failure (veer's rules: a refused connect or reset, a
    /// failed re-admission probe). The cluster-wide cap still applies; enforcement is always
    /// on; backoff grows as for any ejection. Unknown or already ejected hosts give `None`.
    pub fn eject_now(&mut self, host: &K, reason: EjectionReason, now: Duration, rng: &mut impl Random) -> Verdict<K> {
        self.request_ejection(host, reason, now, rng).unwrap_or(Verdict::None)
    }

    /// Runs the cap, the enforcement roll and the ejection for one request (Envoy's
    /// `onConsecutiveErrorWorker` + `ejectHost`). `None` when the request is ignored.
    fn request_ejection(&mut self, host: &K, reason: EjectionReason, now: Duration, rng: &mut impl Random) -> Option<Verdict<K>> {
        let config = self.config;
        let allowed = self.cap_allows_one_more();
        let status = self.hosts.get_mut(host)?;
        if status.ejected {
            return None;
        }

        let verdict = if !allowed {
            Verdict::Overflow { host: host.clone(), reason }
        } else if rng.next_u32() % 100 >= config.enforcing(reason) {
            Verdict::NotEnforced { host: host.clone(), reason }
        } else {
            status.ejected = true;
            status.last_reason = Some(reason);
            status.num_ejections = status.num_ejections.saturating_add(1);
            status.last_ejection = Some(now);
            let max_jitter_ms = u64::try_from(config.max_ejection_time_jitter.as_millis()).unwrap_or(u64::MAX);
            let jitter_ms = u64::from(rng.next_u32()) % max_jitter_ms.saturating_add(1);
            status.jitter = Duration::from_millis(jitter_ms);
            if config.may_grow_backoff(status.backoff) {
                status.backoff = status.backoff.saturating_add(1);
            }
            let ejection = Ejection {
                host: host.clone(),
                reason,
                duration: config.ejection_duration(status.backoff, status.jitter),
                ejections_total: status.num_ejections,
            };
            self.ejected += 1;
            Verdict::Ejected(ejection)
        };
        // Envoy resets the triggering counter whatever the request became, so another full run
        // of errors is needed before the next request.
        status.reset_counter(reason);
        Some(verdict)
    }

    fn cap_allows_one_more(&self) -> bool {
        self.config.cap_allows(self.ejected as u64, self.hosts.len() as u64)
    }
}

#[cfg(test)]
mod tests;
