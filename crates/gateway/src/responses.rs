//! What a client receives: an upstream's body passed on, or an answer veer writes itself (a
//! refused request, no route, a request whose last try failed), each mapped from why in this
//! one place.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use veer_core::outcome::TryEnd;

use std::sync::Arc;

use crate::access_log::{AccessLog, Entry};
use crate::body::{Body, BodyError};
use crate::clock;
use crate::shared::Shared;
use crate::upstream::UpstreamBody;

/// A response veer writes itself.
pub fn local_response(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("veer: {text}\n"))).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// A response veer writes itself, as a client receives it.
pub(crate) fn local(status: StatusCode, text: &str) -> Response<ResponseBody> {
    local_response(status, text).map(ResponseBody::Other)
}

pub(crate) fn refuse(shared: &Shared, refusal: &crate::request::Refusal) -> Response<ResponseBody> {
    shared.metrics.request_refused(refusal.reason);
    let mut resp = local(refusal.status, refusal.text);
    // The connection may carry more of what the refused request was framed by; start afresh.
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// What the client receives when the last try failed without an answer of the upstream's.
pub(crate) fn failure_response(end: TryEnd, why: &str) -> Response<ResponseBody> {
    match end {
        TryEnd::ConnectRefused | TryEnd::ConnectTimeout => local(StatusCode::SERVICE_UNAVAILABLE, "upstream connect failed"),
        TryEnd::UpstreamTimeout => local(StatusCode::GATEWAY_TIMEOUT, "upstream did not answer in time"),
        TryEnd::LocalResources => {
            local(StatusCode::SERVICE_UNAVAILABLE, "veer could not open an upstream connection (out of file descriptors or memory)")
        }
        TryEnd::LocalOverflow => local(StatusCode::SERVICE_UNAVAILABLE, "upstream connection limit reached"),
        TryEnd::ClientBodyMalformed | TryEnd::ClientAborted | TryEnd::ClientUploadTimeout => client_fault_response(end),
        TryEnd::UpstreamReset | TryEnd::UpstreamMalformed | TryEnd::Response(_) => local(StatusCode::BAD_GATEWAY, why),
    }
}

/// What the client receives when it is to blame for how its request ended.
pub(crate) fn client_fault_response(end: TryEnd) -> Response<ResponseBody> {
    let mut resp = match end {
        TryEnd::ClientUploadTimeout => local(StatusCode::REQUEST_TIMEOUT, "request body not received in time"),
        TryEnd::ClientBodyMalformed => local(StatusCode::BAD_REQUEST, "request body is malformed (chunk framing or declared length)"),
        _ => local(StatusCode::BAD_REQUEST, "request body could not be read"),
    };
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// What a client receives: a body from this worker's own pool, passed on as it is (no box
/// per response), or any other.
pub enum ResponseBody {
    Pool(UpstreamBody),
    Other(Body),
    /// Any of these, with its request's access log line (only when the request is logged).
    Logged(Box<Logged>),
}

impl ResponseBody {
    /// `body`, sending `entry` to `log` once it is done.
    pub(crate) fn logged(body: ResponseBody, entry: Box<Entry>, log: &Arc<AccessLog>, started: std::time::Instant) -> ResponseBody {
        ResponseBody::Logged(Box::new(Logged { body, entry: Some(entry), log: log.clone(), sent: 0, ended: false, started }))
    }
}

/// A response body that counts what it sends and sends its request's access log line when
/// dropped (the body ended, or the client left first).
pub struct Logged {
    body: ResponseBody,
    entry: Option<Box<Entry>>,
    log: Arc<AccessLog>,
    sent: u64,
    ended: bool,
    started: std::time::Instant,
}

impl Logged {
    fn poll_frame(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        let polled = hyper::body::Body::poll_frame(std::pin::Pin::new(&mut self.body), cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => self.sent += frame.data_ref().map_or(0, |d| d.len() as u64),
            std::task::Poll::Ready(None) => self.ended = true,
            _ => {}
        }
        polled
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let Some(mut entry) = self.entry.take() else { return };
        let client_left = !self.ended && !hyper::body::Body::is_end_stream(&self.body);
        entry.finished(self.sent, clock::std_since(self.started), client_left);
        self.log.send(entry);
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Pool(b) => std::pin::Pin::new(b).poll_frame(cx),
            ResponseBody::Other(b) => std::pin::Pin::new(b).poll_frame(cx),
            ResponseBody::Logged(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Pool(b) => b.is_end_stream(),
            ResponseBody::Other(b) => b.is_end_stream(),
            ResponseBody::Logged(b) => b.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ResponseBody::Pool(b) => b.size_hint(),
            ResponseBody::Other(b) => b.size_hint(),
            ResponseBody::Logged(b) => b.body.size_hint(),
        }
    }
}
