//! What a failed try ended as, read from the error that ended it: the facts are taken from the
//! error here, and veer-core's `outcome` classifies them (the upstream's fault, the client's, or
//! this node's own).

use veer_core::outcome::{self, TryEnd, UpstreamFailure};

/// A failed connect, by the OS error and whether it timed out.
pub fn connect_failure(e: &std::io::Error) -> TryEnd {
    outcome::connect_failure(e.raw_os_error(), e.kind() == std::io::ErrorKind::TimedOut)
}

/// A failed request through hyper's client: a connect that failed, or a connection that broke
/// once the request was (or may have been) sent.
pub fn client_failure(e: &hyper_util::client::legacy::Error) -> TryEnd {
    if e.is_connect() {
        io_source(e).map_or(TryEnd::ConnectRefused, connect_failure)
    } else {
        TryEnd::UpstreamReset
    }
}

pub(crate) fn request_failure(e: &crate::upstream::UpstreamError) -> TryEnd {
    use crate::upstream::UpstreamError;
    let failure = match e {
        UpstreamError::Malformed(_) => UpstreamFailure::Malformed,
        UpstreamError::RequestBody(_) => UpstreamFailure::RequestBody,
        UpstreamError::Io(_) => UpstreamFailure::Io,
        UpstreamError::Closed => UpstreamFailure::Closed,
    };
    failure.try_end()
}

/// The io error under a hyper (or hyper-util) client error, if any.
pub fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}
