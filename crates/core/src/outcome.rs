//! Who is to blame for how one try of a request ended: the upstream, the client, or veer itself.
//!
//! Every signal that can move traffic (outlier detection, retries, re-admission probes) reads
//! this one classification, so a client that sends a broken body, hangs up mid-request or
//! uploads slowly, or a node that runs out of file descriptors, can never make veer eject a
//! healthy backend. Envoy draws the same line: downstream resets and local overflows are not
//! upstream failures, and its per-try timeout starts once the request has been sent in full.

use crate::outlier::Outcome;
use crate::policy::RetryOn;

/// How one try of a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TryEnd {
    /// The upstream answered with this status code.
    Response(u16),
    /// The connection could not be made (refused, unreachable, reset during the handshake):
    /// nothing was sent.
    ConnectRefused,
    /// The connection was not made within the connect timeout: nothing was sent.
    ConnectTimeout,
    /// The connection broke once the request was (or may have been) sent.
    UpstreamReset,
    /// The upstream's answer did not parse as HTTP.
    UpstreamMalformed,
    /// The request was sent in full and no response head came within the per-try timeout.
    UpstreamTimeout,
    /// The client's body broke its own framing: a bad chunk size or chunk line, or more or
    /// fewer bytes than it declared.
    ClientBodyMalformed,
    /// The client closed, reset or cancelled the request before it was complete.
    ClientAborted,
    /// The client's upload stalled longer than the upload idle timeout.
    ClientUploadTimeout,
    /// This node could not open a connection: out of file descriptors, buffers or memory.
    LocalResources,
    /// This node's own caps refused the try (connections, pending or concurrent requests to
    /// the endpoint): a circuit breaker, not a sign that the endpoint is failing.
    LocalOverflow,
}

/// Whose fault a try's end was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Blame {
    /// The upstream or the path to it: the only blame health signals count.
    Upstream,
    /// The downstream client: answered (400, 408) or dropped, never counted against anyone.
    Client,
    /// This node: answered 503, counted in veer's own metrics, never against the endpoint.
    Local,
}

/// What the outlier detector is told about a try that the upstream is to blame for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorInput {
    pub outcome: Outcome,
    /// veer ejects on the first refused connect or reset, without waiting for a run of them.
    pub decisive: bool,
}

/// Which `retry_on` condition a failed try falls under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryCause {
    /// Nothing reached the upstream: safe to resend whatever the method.
    ConnectFailure,
    Reset,
    Timeout,
    Status(u16),
}

impl TryEnd {
    /// Every kind, for tables and tests that must cover them all.
    pub const ALL: [TryEnd; 11] = [
        TryEnd::Response(200),
        TryEnd::ConnectRefused,
        TryEnd::ConnectTimeout,
        TryEnd::UpstreamReset,
        TryEnd::UpstreamMalformed,
        TryEnd::UpstreamTimeout,
        TryEnd::ClientBodyMalformed,
        TryEnd::ClientAborted,
        TryEnd::ClientUploadTimeout,
        TryEnd::LocalResources,
        TryEnd::LocalOverflow,
    ];

    pub fn blame(self) -> Blame {
        match self {
            TryEnd::Response(_)
            | TryEnd::ConnectRefused
            | TryEnd::ConnectTimeout
            | TryEnd::UpstreamReset
            | TryEnd::UpstreamMalformed
            | TryEnd::UpstreamTimeout => Blame::Upstream,
            TryEnd::ClientBodyMalformed | TryEnd::ClientAborted | TryEnd::ClientUploadTimeout => Blame::Client,
            TryEnd::LocalResources | TryEnd::LocalOverflow => Blame::Local,
        }
    }

    /// What the outlier detector counts; `None` for anything the upstream is not to blame for.
    pub fn detector_input(self) -> Option<DetectorInput> {
        let (outcome, decisive) = match self {
            TryEnd::Response(code) => (Outcome::Http(code), false),
            TryEnd::ConnectRefused | TryEnd::ConnectTimeout => (Outcome::ConnectFailed, true),
            TryEnd::UpstreamReset | TryEnd::UpstreamMalformed => (Outcome::ExternalFailure, true),
            TryEnd::UpstreamTimeout => (Outcome::Timeout, false),
            TryEnd::ClientBodyMalformed
            | TryEnd::ClientAborted
            | TryEnd::ClientUploadTimeout
            | TryEnd::LocalResources
            | TryEnd::LocalOverflow => return None,
        };
        Some(DetectorInput { outcome, decisive })
    }

    /// Whether the try failed at all (a 5xx counts; any other response does not).
    pub fn is_failure(self) -> bool {
        !matches!(self, TryEnd::Response(code) if code < 500)
    }

    /// The retry condition it falls under; `None` for a success and for anything the
    /// upstream is not to blame for: a client's broken request would break again, and a local
    /// cap or shortage is the node's to relieve, not a reason to send more.
    pub fn retry_cause(self) -> Option<RetryCause> {
        match self {
            TryEnd::Response(code) if code >= 500 => Some(RetryCause::Status(code)),
            TryEnd::Response(_) => None,
            TryEnd::ConnectRefused | TryEnd::ConnectTimeout => Some(RetryCause::ConnectFailure),
            TryEnd::UpstreamReset | TryEnd::UpstreamMalformed => Some(RetryCause::Reset),
            TryEnd::UpstreamTimeout => Some(RetryCause::Timeout),
            TryEnd::ClientBodyMalformed
            | TryEnd::ClientAborted
            | TryEnd::ClientUploadTimeout
            | TryEnd::LocalResources
            | TryEnd::LocalOverflow => None,
        }
    }

    /// A short stable name, for metric labels and events.
    pub fn name(self) -> &'static str {
        match self {
            TryEnd::Response(code) if code >= 500 => "5xx",
            TryEnd::Response(_) => "response",
            TryEnd::ConnectRefused => "connect_failure",
            TryEnd::ConnectTimeout => "connect_timeout",
            TryEnd::UpstreamReset => "reset",
            TryEnd::UpstreamMalformed => "malformed_response",
            TryEnd::UpstreamTimeout => "timeout",
            TryEnd::ClientBodyMalformed => "client_body_malformed",
            TryEnd::ClientAborted => "client_aborted",
            TryEnd::ClientUploadTimeout => "client_upload_timeout",
            TryEnd::LocalResources => "local_resources",
            TryEnd::LocalOverflow => "local_overflow",
        }
    }
}

impl Blame {
    pub fn name(self) -> &'static str {
        match self {
            Blame::Upstream => "upstream",
            Blame::Client => "client",
            Blame::Local => "local",
        }
    }
}

/// Whether a failed try is retried, given the destination's `retry_on` and whether the
/// request is idempotent. A try that never reached the upstream may be resent whatever the
/// method; any other only when the method is idempotent. A timeout and a retriable status are
/// always wanted (the destination's status list decides which 5xx come back as failures).
pub fn retry_wanted(cause: RetryCause, on: &RetryOn, idempotent: bool) -> bool {
    match cause {
        RetryCause::ConnectFailure => on.connect_failure || on.five_xx,
        RetryCause::Reset => idempotent && (on.reset || on.five_xx),
        RetryCause::Timeout | RetryCause::Status(_) => idempotent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per kind: who is to blame, what the detector sees, whether it is a failure and
    /// whether a retry (with every condition on, idempotent) may follow.
    #[test]
    fn every_outcome_kind_is_classified_once() {
        use Blame::*;
        let decisive = |outcome| Some(DetectorInput { outcome, decisive: true });
        let counted = |outcome| Some(DetectorInput { outcome, decisive: false });
        let table: [(TryEnd, Blame, Option<DetectorInput>, bool, bool); 12] = [
            (TryEnd::Response(200), Upstream, counted(Outcome::Http(200)), false, false),
            (TryEnd::Response(503), Upstream, counted(Outcome::Http(503)), true, true),
            (TryEnd::ConnectRefused, Upstream, decisive(Outcome::ConnectFailed), true, true),
            (TryEnd::ConnectTimeout, Upstream, decisive(Outcome::ConnectFailed), true, true),
            (TryEnd::UpstreamReset, Upstream, decisive(Outcome::ExternalFailure), true, true),
            (TryEnd::UpstreamMalformed, Upstream, decisive(Outcome::ExternalFailure), true, true),
            (TryEnd::UpstreamTimeout, Upstream, counted(Outcome::Timeout), true, true),
            (TryEnd::ClientBodyMalformed, Client, None, true, false),
            (TryEnd::ClientAborted, Client, None, true, false),
            (TryEnd::ClientUploadTimeout, Client, None, true, false),
            (TryEnd::LocalResources, Local, None, true, false),
            (TryEnd::LocalOverflow, Local, None, true, false),
        ];
        let all_on = RetryOn {
            five_xx: true,
            gateway_error: true,
            reset: true,
            connect_failure: true,
            retriable_4xx: true,
            refused_stream: true,
            retriable_status_codes: vec![],
        };
        for (end, blame, input, failure, retried) in table {
            assert_eq!(end.blame(), blame, "{end:?}");
            assert_eq!(end.detector_input(), input, "{end:?}");
            assert_eq!(end.is_failure(), failure, "{end:?}");
            assert_eq!(end.retry_cause().is_some_and(|c| retry_wanted(c, &all_on, true)), retried, "{end:?}");
        }
        // The table covers every kind there is.
        for end in TryEnd::ALL {
            assert!(table.iter().any(|row| std::mem::discriminant(&row.0) == std::mem::discriminant(&end)), "{end:?} has no row");
        }
    }

    #[test]
    fn only_the_upstream_is_ever_counted_or_retried() {
        for end in TryEnd::ALL.into_iter().chain([TryEnd::Response(500), TryEnd::Response(404)]) {
            if end.blame() != Blame::Upstream {
                assert_eq!(end.detector_input(), None, "{end:?}");
                assert_eq!(end.retry_cause(), None, "{end:?}");
            }
        }
    }

    #[test]
    fn a_request_that_may_have_reached_the_upstream_is_resent_only_when_idempotent() {
        let on = RetryOn { reset: true, connect_failure: true, ..RetryOn::default() };
        assert!(retry_wanted(RetryCause::ConnectFailure, &on, false));
        assert!(!retry_wanted(RetryCause::Reset, &on, false));
        assert!(retry_wanted(RetryCause::Reset, &on, true));
        assert!(!retry_wanted(RetryCause::Timeout, &on, false));
        assert!(!retry_wanted(RetryCause::Status(503), &on, false));
        let none = RetryOn::default();
        assert!(!retry_wanted(RetryCause::ConnectFailure, &none, false));
        assert!(!retry_wanted(RetryCause::Reset, &none, true));
    }
}
