//! The failover event log: a bounded in-memory ring of ejections, priority changes and reloads, mirrored to tracing.
//!
//! Refusals (a peer connection refused, an ejection refused) can come by the thousand a second
//! under attack or overload; [`Events::record_refusal`] folds those of the same kind and reason
//! within one second into one event with a `count`, so a flood cannot push every earlier event
//! out of the ring.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// One recorded failover-relevant event, as served by the admin `/events` endpoint.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct Event {
    /// Position in the log, increasing from 1; never reused, so clients can poll with `since`.
    pub seq: u64,
    /// Wall clock when recorded, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    pub kind: EventKind,
    /// The destination as `host:port`.
    pub destination: Option<String>,
    /// The endpoint as `ip:port`.
    pub endpoint: Option<String>,
    pub cluster: Option<String>,
    pub from_priority: Option<u32>,
    pub to_priority: Option<u32>,
    /// For a move within one priority number: the rule's priorities (before empty levels are
    /// dropped, as `veer explain`'s why column ranks them) of the level that served before and of
    /// the one serving now. Priorities are numbered without gaps, as Istio hands them to Envoy, so
    /// when every endpoint of the serving level goes (a Deployment scaled to 0), the next level
    /// takes its number; the traffic has moved all the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_rank: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_rank: Option<u32>,
    pub reason: String,
    /// How many occurrences this event stands for: 1, or more for a refusal that others of the
    /// same kind and reason within the following second were folded into (they are not listed,
    /// and are not logged one by one). The event keeps its `seq`, `time_unix_ms` and `reason`
    /// (those of the first occurrence); a client polling with `since` sees the count as it was when
    /// it read the event.
    pub count: u64,
}

/// What a new event says, before [`Events::record`] numbers and stamps it: built by the
/// constructor for what it is about, so no caller lines up seven positional fields.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    kind: EventKind,
    destination: Option<&'a str>,
    endpoint: Option<&'a str>,
    cluster: Option<&'a str>,
    from_priority: Option<u32>,
    to_priority: Option<u32>,
    ranks: Option<(u32, u32)>,
    reason: String,
}

impl<'a> NewEvent<'a> {
    /// About the node as a whole: a reload, a start, a shutdown.
    pub fn node(kind: EventKind, reason: impl Into<String>) -> Self {
        NewEvent {
            kind,
            destination: None,
            endpoint: None,
            cluster: None,
            from_priority: None,
            to_priority: None,
            ranks: None,
            reason: reason.into(),
        }
    }

    /// About one cluster: a peer's state, a DNS zone's writer, the node's own cluster.
    pub fn cluster(kind: EventKind, cluster: &'a str, reason: impl Into<String>) -> Self {
        NewEvent { cluster: Some(cluster), ..Self::node(kind, reason) }
    }

    /// About one endpoint of a destination: an ejection, a re-admission, a health check.
    pub fn endpoint(kind: EventKind, destination: &'a str, endpoint: &'a str, reason: impl Into<String>) -> Self {
        NewEvent { destination: Some(destination), endpoint: Some(endpoint), ..Self::node(kind, reason) }
    }

    /// A destination's active priority moved (`None`: no priority had or has load).
    pub fn priority_change(destination: &'a str, from: Option<u32>, to: Option<u32>, reason: impl Into<String>) -> Self {
        NewEvent { destination: Some(destination), from_priority: from, to_priority: to, ..Self::node(EventKind::PriorityChange, reason) }
    }

    /// A destination's traffic moved to another level of its rule while its active priority kept
    /// its number `priority` (see [`Event::from_rank`]): from rule priority `from` to `to`.
    pub fn level_change(destination: &'a str, priority: u32, from: u32, to: u32, reason: impl Into<String>) -> Self {
        NewEvent { ranks: Some((from, to)), ..Self::priority_change(destination, Some(priority), Some(priority), reason) }
    }

    /// Names the cluster the event's endpoint is in.
    pub fn in_cluster(self, cluster: &'a str) -> Self {
        NewEvent { cluster: Some(cluster), ..self }
    }
}

/// Refusals of the same kind and reason are folded together for this long after the first.
pub const FOLD_WINDOW_MS: u64 = 1000;

/// What to do with a refusal recorded at `now_ms`, given the open aggregate of its kind and
/// reason, if any (`seq` and the time of its first occurrence) and the oldest seq the ring still
/// holds: the seq of the event to fold it into, or `None` for a new event. Pure, for tests.
pub fn fold_into(open: Option<(u64, u64)>, oldest_seq: Option<u64>, now_ms: u64) -> Option<u64> {
    let (seq, since_ms) = open?;
    let in_ring = oldest_seq.is_some_and(|oldest| seq >= oldest);
    // A clock that stepped back still folds (saturating), rather than opening events on every step.
    (in_ring && now_ms.saturating_sub(since_ms) < FOLD_WINDOW_MS).then_some(seq)
}

/// The fold key: kind, reason key, destination, endpoint.
type FoldKey = (EventKind, String, Option<String>, Option<String>);

/// What happened.
#[derive(Clone, Copy, Debug, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Ejection,
    Unejection,
    ReEjection,
    EjectionRefused,
    PriorityChange,
    HealthCheckFailed,
    HealthCheckPassed,
    ConfigReloaded,
    ConfigRejected,
    /// A regional DNS zone changed writer (takeover or hand-back), with its new epoch.
    DnsOwnership,
    /// A peer cluster's data is older than the stale threshold (still routed, flagged).
    PeerStale,
    /// A peer cluster is unreachable or silent past the unhealthy threshold: all its endpoints
    /// are unhealthy at once.
    PeerUnhealthy,
    /// A peer cluster speaks again: its endpoints return with the health it reports.
    PeerRecovered,
    /// A peer cluster was silent past the forget threshold: its endpoints are dropped.
    PeerForgotten,
    /// A connection to the east-west listener was refused (bad certificate, wrong cluster,
    /// forbidden target).
    PeerRefused,
    Started,
    /// The manifest files did not validate at start, so the node serves the set it last
    /// accepted (`--state-dir`) until a fixed file takes over.
    StartedFromState,
    Stopping,
}

impl EventKind {
    /// The snake_case name, identical to the serialized form (used as the tracing field value).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Ejection => "ejection",
            EventKind::Unejection => "unejection",
            EventKind::ReEjection => "re_ejection",
            EventKind::EjectionRefused => "ejection_refused",
            EventKind::PriorityChange => "priority_change",
            EventKind::HealthCheckFailed => "health_check_failed",
            EventKind::HealthCheckPassed => "health_check_passed",
            EventKind::ConfigReloaded => "config_reloaded",
            EventKind::ConfigRejected => "config_rejected",
            EventKind::DnsOwnership => "dns_ownership",
            EventKind::PeerStale => "peer_stale",
            EventKind::PeerUnhealthy => "peer_unhealthy",
            EventKind::PeerRecovered => "peer_recovered",
            EventKind::PeerForgotten => "peer_forgotten",
            EventKind::PeerRefused => "peer_refused",
            EventKind::Started => "started",
            EventKind::StartedFromState => "started_from_state",
            EventKind::Stopping => "stopping",
        }
    }

    /// Whether the event signals trouble an operator should notice, so it is logged at warn.
    fn is_warning(self) -> bool {
        matches!(
            self,
            EventKind::Ejection
                | EventKind::ReEjection
                | EventKind::ConfigRejected
                | EventKind::HealthCheckFailed
                | EventKind::PeerStale
                | EventKind::PeerUnhealthy
                | EventKind::PeerForgotten
                | EventKind::PeerRefused
                | EventKind::StartedFromState
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bounded ring of [`Event`]s; the oldest are dropped once `capacity` is reached.
#[derive(Debug)]
pub struct Events {
    capacity: usize,
    inner: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// The last seq handed out; kept apart from the ring so seqs stay monotonic after drops.
    last_seq: u64,
    events: VecDeque<Event>,
    /// The refusal aggregates still open for folding: key → (seq, time of the first occurrence).
    /// Entries whose window has passed are dropped when the map grows (see `record_refusal_at`).
    folds: HashMap<FoldKey, (u64, u64)>,
}

impl Events {
    /// An empty log keeping at most `capacity` events (0 keeps none but still numbers and logs them).
    pub fn new(capacity: usize) -> Self {
        Events {
            capacity,
            inner: Mutex::new(Ring {
                last_seq: 0,
                // Cap the up-front allocation: a huge configured capacity should cost memory only when used.
                events: VecDeque::with_capacity(capacity.min(1024)),
                folds: HashMap::new(),
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic elsewhere while holding the lock cannot leave the ring inconsistent
        // (every mutation is a single push/pop), so keep serving after poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event (assigning seq and time) and logs it as one structured tracing line
    /// (info level; warn for Ejection/ReEjection/ConfigRejected/HealthCheckFailed) with every field as a tracing field.
    pub fn record(&self, new: NewEvent<'_>) -> Event {
        let NewEvent { kind, destination, endpoint, cluster, from_priority, to_priority, ranks, reason } = new;
        let mut event = Event {
            seq: 0,
            time_unix_ms: unix_ms(),
            kind,
            destination: destination.map(str::to_owned),
            endpoint: endpoint.map(str::to_owned),
            cluster: cluster.map(str::to_owned),
            from_priority,
            to_priority,
            from_rank: ranks.map(|r| r.0),
            to_rank: ranks.map(|r| r.1),
            reason,
            count: 1,
        };
        self.ring().push(&mut event, self.capacity);
        // Logged after releasing the lock so a slow subscriber never stalls readers of the ring.
        log(&event);
        event
    }

    /// Records a refusal, folding it into the event of the same kind, `reason_key`, destination
    /// and endpoint recorded less than [`FOLD_WINDOW_MS`] before, if that is still in the ring
    /// (its `count` goes up by one; nothing is logged). Otherwise a new event, as [`Events::record`]
    /// (without cluster or priorities). `reason_key` names the reason without the details that
    /// differ from one occurrence to the next (such as the remote address in `reason`).
    /// Returns the event as it is now.
    pub fn record_refusal(
        &self,
        kind: EventKind,
        reason_key: &str,
        destination: Option<&str>,
        endpoint: Option<&str>,
        reason: impl Into<String>,
    ) -> Event {
        self.record_refusal_at(kind, reason_key, destination, endpoint, reason, unix_ms())
    }

    /// [`Events::record_refusal`] at a given wall-clock time (Unix ms): the time is injected for tests.
    pub fn record_refusal_at(
        &self,
        kind: EventKind,
        reason_key: &str,
        destination: Option<&str>,
        endpoint: Option<&str>,
        reason: impl Into<String>,
        now_ms: u64,
    ) -> Event {
        let key: FoldKey = (kind, reason_key.to_owned(), destination.map(str::to_owned), endpoint.map(str::to_owned));
        let event = {
            let mut ring = self.ring();
            let oldest = ring.events.front().map(|e| e.seq);
            if let Some(seq) = fold_into(ring.folds.get(&key).copied(), oldest, now_ms) {
                let first = ring.events.front().map_or(seq, |e| e.seq);
                let at = usize::try_from(seq - first).unwrap_or(usize::MAX);
                if let Some(e) = ring.events.get_mut(at) {
                    e.count = e.count.saturating_add(1);
                    return e.clone();
                }
            }
            // Keep the map small: a key whose window has passed can no longer be folded into.
            if ring.folds.len() >= 64 {
                ring.folds.retain(|_, (_, since)| now_ms.saturating_sub(*since) < FOLD_WINDOW_MS);
            }
            let mut event = Event {
                seq: 0,
                time_unix_ms: now_ms,
                kind,
                destination: key.2.clone(),
                endpoint: key.3.clone(),
                cluster: None,
                from_priority: None,
                to_priority: None,
                from_rank: None,
                to_rank: None,
                reason: reason.into(),
                count: 1,
            };
            ring.push(&mut event, self.capacity);
            ring.folds.insert(key, (event.seq, now_ms));
            event
        };
        log(&event);
        event
    }

    /// Events with `seq` greater than the given one, oldest first.
    pub fn since(&self, seq: u64) -> Vec<Event> {
        let ring = self.ring();
        // Seqs are contiguous within the ring, so the start index is computable without a scan.
        let first = ring.events.front().map_or(0, |e| e.seq);
        let skip = seq.saturating_add(1).saturating_sub(first);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        ring.events.iter().skip(skip).cloned().collect()
    }

    /// Every retained event, oldest first.
    pub fn all(&self) -> Vec<Event> {
        self.ring().events.iter().cloned().collect()
    }

    /// The seq of the most recently recorded event, 0 if none yet (even if it was dropped from the ring).
    pub fn last_seq(&self) -> u64 {
        self.ring().last_seq
    }

    /// The maximum number of events retained.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Ring {
    /// Numbers `event` and appends it, dropping the oldest past `capacity`.
    fn push(&mut self, event: &mut Event, capacity: usize) {
        self.last_seq += 1;
        event.seq = self.last_seq;
        if capacity > 0 {
            while self.events.len() >= capacity {
                self.events.pop_front();
            }
            self.events.push_back(event.clone());
        }
    }
}

fn log(e: &Event) {
    // tracing levels are static per callsite, hence the two near-identical macro calls.
    if e.kind.is_warning() {
        tracing::warn!(
            seq = e.seq,
            time_unix_ms = e.time_unix_ms,
            kind = e.kind.as_str(),
            destination = e.destination.as_deref(),
            endpoint = e.endpoint.as_deref(),
            cluster = e.cluster.as_deref(),
            from_priority = e.from_priority,
            to_priority = e.to_priority,
            reason = e.reason.as_str(),
            "failover event"
        );
    } else {
        tracing::info!(
            seq = e.seq,
            time_unix_ms = e.time_unix_ms,
            kind = e.kind.as_str(),
            destination = e.destination.as_deref(),
            endpoint = e.endpoint.as_deref(),
            cluster = e.cluster.as_deref(),
            from_priority = e.from_priority,
            to_priority = e.to_priority,
            reason = e.reason.as_str(),
            "failover event"
        );
    }
}

/// Wall-clock time in Unix milliseconds, as events and peer ages report it.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        // A clock before 1970 is a broken host, not a reason to lose the event.
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
