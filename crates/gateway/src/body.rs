//! The body types on both sides of the proxy, and the wrapper that keeps a connection's
//! count of responses in flight until hyper has sent the body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

use crate::upstream::codec::UpstreamError;

/// Body type on both sides of the proxy.
pub type Body = BoxBody<Bytes, BodyError>;

/// Why a body failed part-way: it came from hyper (the client side, hyper's clients) or from
/// veer's own upstream pool.
#[derive(Debug)]
pub enum BodyError {
    Hyper(hyper::Error),
    Upstream(UpstreamError),
    /// The client sent no part of its body for this long.
    UploadStalled(Duration),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Hyper(e) => e.fmt(f),
            BodyError::Upstream(e) => e.fmt(f),
            BodyError::UploadStalled(idle) => write!(f, "the client sent nothing of its request body for {idle:?}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Hyper(e) => Some(e),
            BodyError::Upstream(e) => Some(e),
            BodyError::UploadStalled(_) => None,
        }
    }
}

impl From<hyper::Error> for BodyError {
    fn from(e: hyper::Error) -> Self {
        BodyError::Hyper(e)
    }
}

impl From<UpstreamError> for BodyError {
    fn from(e: UpstreamError) -> Self {
        BodyError::Upstream(e)
    }
}

/// A body that holds `guard` until hyper is done with it: the guard's `Drop` says what then
/// happens (a downstream connection's count of responses in flight goes down).
pub struct Guarded<B, G> {
    pub body: B,
    pub guard: G,
}

impl<B, G> hyper::body::Body for Guarded<B, G>
where
    B: hyper::body::Body<Data = Bytes, Error = BodyError> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
