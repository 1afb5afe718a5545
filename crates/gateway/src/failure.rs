//! What a failed try ended as, read from the error that ended it: the upstream's fault, the
//! client's, or this node's own (out of descriptors or memory).

use veer_core::outcome::TryEnd;

/// A connect that failed because this node ran out of something is the node's fault, not the
/// endpoint's: file descriptors (EMFILE, ENFILE), buffers (ENOBUFS) or memory (ENOMEM).
pub fn connect_failure(e: &std::io::Error) -> TryEnd {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOMEM: i32 = 12;
    const ENOBUFS: i32 = 105;
    match e.raw_os_error() {
        Some(EMFILE | ENFILE | ENOMEM | ENOBUFS) => TryEnd::LocalResources,
        _ if e.kind() == std::io::ErrorKind::TimedOut => TryEnd::ConnectTimeout,
        _ => TryEnd::ConnectRefused,
    }
}

pub(crate) fn request_failure(e: &crate::upstream::UpstreamError) -> TryEnd {
    use crate::upstream::UpstreamError;
    match e {
        UpstreamError::Malformed(_) => TryEnd::UpstreamMalformed,
        // The pool found the client's body broken before the upload state said so.
        UpstreamError::RequestBody(_) => TryEnd::ClientBodyMalformed,
        UpstreamError::Io(_) | UpstreamError::Closed => TryEnd::UpstreamReset,
    }
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
