//! Who is to blame for how one try of a request ended: the upstream, the client, or veer itself.
//!
//! Every signal that can move traffic (outlier detection, retries, re-admission probes) reads
//! this one classification, so a client that sends a broken body, hangs up mid-request or
//! uploads slowly, or a node that runs out of file descriptors, can never make veer eject a
//! healthy backend. Envoy draws the same line: downstream resets and local overflows are not
//! upstream failures, and its per-try timeout starts once the request has been sent in full.

use std::sync::atomic::{AtomicU32, Ordering};

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

/// An endpoint's failures reported since its last success, shared by every worker of a node.
/// The outlier detector counts runs of consecutive failures, so it needs every failure, but of
/// the successes only the one that ends a run: healthy traffic then tells the control loop
/// nothing.
#[derive(Debug, Default)]
pub struct FailureRun(AtomicU32);

impl FailureRun {
    /// What the outlier detector must be told of a try that ended as `end`, if anything: never
    /// what the upstream is not to blame for; every failure; a success only when it ends a run.
    #[inline]
    pub fn report(&self, end: TryEnd) -> Option<DetectorInput> {
        let input = end.detector_input()?;
        if end.is_failure() {
            self.0.fetch_add(1, Ordering::Relaxed);
        } else if self.0.load(Ordering::Relaxed) == 0 || self.0.swap(0, Ordering::Relaxed) == 0 {
            // Looked at before it is written: every worker reads this on every success, and a
            // write would pull the line away from the other workers' cores each time.
            return None;
        }
        Some(input)
    }
}

/// How a connect failed, from what the socket layer said: running out of something on this
/// node is the node's fault, not the endpoint's: file descriptors (EMFILE, ENFILE), buffers
/// (ENOBUFS) or memory (ENOMEM). Anything else that kept the connection from being made is the
/// endpoint's (or its path's), told apart only by whether the connect timed out.
///
/// `errno` is the raw OS error (Linux numbering), `None` when the failure carried none.
pub fn connect_failure(errno: Option<i32>, timed_out: bool) -> TryEnd {
    match errno {
        Some(errno::EMFILE | errno::ENFILE | errno::ENOMEM | errno::ENOBUFS) => TryEnd::LocalResources,
        _ if timed_out => TryEnd::ConnectTimeout,
        _ => TryEnd::ConnectRefused,
    }
}

/// Linux's numbers for the errors that say this node ran out of something; veer-core has no
/// libc to ask, and veer runs on Linux.
pub mod errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOBUFS: i32 = 105;
}

/// How an exchange with an upstream broke once its connection was made (veer's own HTTP/1.1
/// codec says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamFailure {
    /// The upstream's bytes are not HTTP/1.x.
    Malformed,
    /// The client's body broke while it was being sent: found by the codec before the upload
    /// state said so, and the client's fault all the same.
    RequestBody,
    /// The connection failed (an I/O error).
    Io,
    /// The upstream closed the connection mid-message.
    Closed,
}

impl UpstreamFailure {
    pub fn try_end(self) -> TryEnd {
        match self {
            UpstreamFailure::Malformed => TryEnd::UpstreamMalformed,
            UpstreamFailure::RequestBody => TryEnd::ClientBodyMalformed,
            UpstreamFailure::Io | UpstreamFailure::Closed => TryEnd::UpstreamReset,
        }
    }
}

/// What a peer cluster's east-west listener says failed behind it, on an answer it wrote
/// itself (the `x-veer-eastwest-error` field): the client node blames the one endpoint behind
/// it, or nobody, never the whole cluster. The field's bytes are read and written here only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EastWestError {
    /// The endpoint refused or did not accept the connection.
    Connect,
    /// The listener refused the request itself (not an endpoint of its cluster, not exposed,
    /// a malformed request): the endpoint named cannot be reached that way.
    Refused,
    /// The endpoint's connection broke once the request was sent.
    Reset,
    /// The listener's node could not open a connection (out of descriptors or memory): no
    /// endpoint failed.
    Local,
}

impl EastWestError {
    pub const ALL: [EastWestError; 4] = [EastWestError::Connect, EastWestError::Refused, EastWestError::Reset, EastWestError::Local];

    /// The field's value; `None` for one this node does not know (the answer then stands as the
    /// upstream's own).
    pub fn parse(value: &[u8]) -> Option<EastWestError> {
        match value {
            b"connect" => Some(EastWestError::Connect),
            b"refused" => Some(EastWestError::Refused),
            b"reset" => Some(EastWestError::Reset),
            b"local" => Some(EastWestError::Local),
            _ => None,
        }
    }

    pub fn as_header_value(self) -> &'static str {
        match self {
            EastWestError::Connect => "connect",
            EastWestError::Refused => "refused",
            EastWestError::Reset => "reset",
            EastWestError::Local => "local",
        }
    }

    /// How the try through the listener ended.
    pub fn try_end(self) -> TryEnd {
        match self {
            EastWestError::Connect | EastWestError::Refused => TryEnd::ConnectRefused,
            EastWestError::Reset => TryEnd::UpstreamReset,
            EastWestError::Local => TryEnd::LocalResources,
        }
    }

    /// What the listener says of a try it made that failed without an answer: a shortage of its
    /// own node, a connect that failed (timed out or refused), or anything else as a reset.
    pub fn for_failed_try(end: TryEnd) -> EastWestError {
        match end.blame() {
            Blame::Local => EastWestError::Local,
            _ if matches!(end, TryEnd::ConnectRefused | TryEnd::ConnectTimeout) => EastWestError::Connect,
            _ => EastWestError::Reset,
        }
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

    #[test]
    fn a_connect_that_ran_out_of_something_on_this_node_blames_the_node() {
        for errno in [errno::EMFILE, errno::ENFILE, errno::ENOMEM, errno::ENOBUFS] {
            assert_eq!(connect_failure(Some(errno), false), TryEnd::LocalResources, "{errno}");
            // A shortage wins over the timeout the connect may also have hit.
            assert_eq!(connect_failure(Some(errno), true), TryEnd::LocalResources, "{errno}");
        }
        assert_eq!(connect_failure(Some(110), true), TryEnd::ConnectTimeout, "ETIMEDOUT");
        assert_eq!(connect_failure(None, true), TryEnd::ConnectTimeout);
        assert_eq!(connect_failure(Some(111), false), TryEnd::ConnectRefused, "ECONNREFUSED");
        assert_eq!(connect_failure(Some(113), false), TryEnd::ConnectRefused, "EHOSTUNREACH");
        assert_eq!(connect_failure(None, false), TryEnd::ConnectRefused);
    }

    #[test]
    fn a_broken_exchange_blames_the_upstream_unless_the_clients_body_broke_it() {
        assert_eq!(UpstreamFailure::Malformed.try_end(), TryEnd::UpstreamMalformed);
        assert_eq!(UpstreamFailure::RequestBody.try_end(), TryEnd::ClientBodyMalformed);
        assert_eq!(UpstreamFailure::RequestBody.try_end().blame(), Blame::Client);
        assert_eq!(UpstreamFailure::Io.try_end(), TryEnd::UpstreamReset);
        assert_eq!(UpstreamFailure::Closed.try_end(), TryEnd::UpstreamReset);
    }

    #[test]
    fn east_west_errors_round_trip_and_blame_one_endpoint_or_nobody() {
        for e in EastWestError::ALL {
            assert_eq!(EastWestError::parse(e.as_header_value().as_bytes()), Some(e), "{e:?}");
        }
        assert_eq!(EastWestError::parse(b"connect").map(EastWestError::try_end), Some(TryEnd::ConnectRefused));
        assert_eq!(EastWestError::parse(b"refused").map(EastWestError::try_end), Some(TryEnd::ConnectRefused));
        assert_eq!(EastWestError::parse(b"reset").map(EastWestError::try_end), Some(TryEnd::UpstreamReset));
        assert_eq!(EastWestError::parse(b"local").map(EastWestError::try_end), Some(TryEnd::LocalResources));
        assert_eq!(EastWestError::Local.try_end().blame(), Blame::Local, "the remote node's shortage blames no endpoint");
        // Values are compared exactly: another value, or another case, is not the listener's.
        for unknown in [&b""[..], b"Local", b"connect ", b"timeout"] {
            assert_eq!(EastWestError::parse(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn the_listener_reports_a_failed_try_as_its_shortage_a_connect_or_a_reset() {
        assert_eq!(EastWestError::for_failed_try(TryEnd::LocalResources), EastWestError::Local);
        assert_eq!(EastWestError::for_failed_try(TryEnd::ConnectRefused), EastWestError::Connect);
        assert_eq!(EastWestError::for_failed_try(TryEnd::ConnectTimeout), EastWestError::Connect);
        assert_eq!(EastWestError::for_failed_try(TryEnd::UpstreamReset), EastWestError::Reset);
        assert_eq!(EastWestError::for_failed_try(TryEnd::UpstreamMalformed), EastWestError::Reset);
        // What the client node makes of it again: the same blame the listener's own try had.
        for end in [TryEnd::LocalResources, TryEnd::ConnectRefused, TryEnd::ConnectTimeout, TryEnd::UpstreamReset] {
            assert_eq!(EastWestError::for_failed_try(end).try_end().blame(), end.blame(), "{end:?}");
        }
    }

    #[test]
    fn a_success_is_reported_only_when_it_ends_a_run_of_failures() {
        let run = FailureRun::default();
        assert_eq!(run.report(TryEnd::Response(200)), None, "no run to end");
        let failed = run.report(TryEnd::Response(503));
        assert_eq!(failed, Some(DetectorInput { outcome: Outcome::Http(503), decisive: false }), "every failure");
        assert_eq!(run.report(TryEnd::ConnectRefused), Some(DetectorInput { outcome: Outcome::ConnectFailed, decisive: true }));
        assert_eq!(run.report(TryEnd::Response(204)), Some(DetectorInput { outcome: Outcome::Http(204), decisive: false }), "ends the run");
        assert_eq!(run.report(TryEnd::Response(200)), None, "the run is over");
    }

    #[test]
    fn what_the_upstream_is_not_to_blame_for_is_never_reported_nor_counted() {
        let run = FailureRun::default();
        for end in
            [TryEnd::ClientAborted, TryEnd::ClientBodyMalformed, TryEnd::ClientUploadTimeout, TryEnd::LocalResources, TryEnd::LocalOverflow]
        {
            assert_eq!(run.report(end), None, "{end:?}");
        }
        assert_eq!(run.report(TryEnd::Response(200)), None, "those ended no run, as none was started");
    }
}
