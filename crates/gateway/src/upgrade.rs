//! Protocol upgrades (WebSocket over HTTP/1.1, and over HTTP/2 by extended CONNECT): which
//! requests may switch protocols, and the copy between the client's connection (or stream) and
//! the upstream connection once both have switched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::upstream::Tunnel;

/// The protocols a client may switch to through veer. Only WebSocket: its frames are opaque to
/// a proxy and it needs nothing of it but the copy. `h2c` (RFC 7540's cleartext upgrade,
/// removed by RFC 9113) would hand the upstream an HTTP/2 connection veer neither routes nor
/// limits; any other protocol is unknown to veer, and an unknown protocol is not passed on.
const ALLOWED: &[&str] = &["websocket"];

/// The `Upgrade` field to pass on if the request asks to switch to an allowed protocol: HTTP/1.1,
/// `Connection` naming `upgrade`, and an `Upgrade` field naming exactly one protocol, allowed.
/// Anything else is not an upgrade (its hop-by-hop fields are removed as for any request).
pub fn requested(version: http::Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let mut values = headers.get_all(header::UPGRADE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let protocol = value.to_str().ok()?.trim();
    if !ALLOWED.iter().any(|p| protocol.eq_ignore_ascii_case(p)) {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")));
    asks.then(|| value.clone())
}

/// What an HTTP/2 request asks for with extended CONNECT (RFC 8441), as [`requested`] reads it.
pub enum ExtendedConnect {
    /// Not an extended CONNECT.
    No,
    /// `:protocol websocket`: the protocol, to ask the upstream for over HTTP/1.1.
    WebSocket(HeaderValue),
    /// An extended CONNECT for a protocol veer does not pass on.
    Other,
}

/// Reads an HTTP/2 request's extended CONNECT (`:protocol`, RFC 8441 §4).
pub fn extended_connect<B>(req: &http::Request<B>) -> ExtendedConnect {
    if req.version() != http::Version::HTTP_2 || req.method() != http::Method::CONNECT {
        return ExtendedConnect::No;
    }
    match req.extensions().get::<hyper::ext::Protocol>() {
        None => ExtendedConnect::No,
        Some(p) if ALLOWED.iter().any(|a| p.as_str().eq_ignore_ascii_case(a)) => {
            HeaderValue::from_str(p.as_str()).map_or(ExtendedConnect::Other, ExtendedConnect::WebSocket)
        }
        Some(_) => ExtendedConnect::Other,
    }
}

/// A `Sec-WebSocket-Key` for the HTTP/1.1 handshake veer makes for an HTTP/2 client, which
/// sends none (RFC 8441 §5): 16 random bytes in base64 (RFC 6455 §4.1). Drawn directly as
/// base64 digits: 21 of them carry 126 bits, the 22nd two more (its low four bits are zero, so
/// it is one of `AQgw`), then the padding.
pub fn websocket_key(mut random: impl FnMut() -> u64) -> HeaderValue {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut key = [b'='; 24];
    let mut bits = random();
    for (i, d) in key[..21].iter_mut().enumerate() {
        if i == 10 {
            bits = random();
        }
        *d = DIGITS[(bits & 63) as usize];
        bits >>= 6;
    }
    key[21] = b"AQgw"[(random() & 3) as usize];
    HeaderValue::from_bytes(&key).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// Whether the protocol an upstream's 101 switched to is the one the client asked for.
pub fn same_protocol(asked: &HeaderValue, answered: Option<&HeaderValue>) -> bool {
    answered.is_some_and(|a| a.as_bytes().trim_ascii().eq_ignore_ascii_case(asked.as_bytes().trim_ascii()))
}

/// What the request path needs of a client connection to switch it: where an HTTP/1.1
/// request leaves its upstream connection for the connection's task (which owns the client's
/// socket once hyper has written the 101), and, for an HTTP/2 stream (spliced by a task of its
/// own), the node's stop signal and the idle timeout.
pub struct TunnelSlot {
    slot: Mutex<Option<Tunnel>>,
    stop: watch::Receiver<bool>,
    idle: Duration,
    /// HTTP/2 streams of this connection spliced now: the connection is not idle meanwhile.
    h2_open: Arc<AtomicU32>,
}

impl TunnelSlot {
    pub fn new(stop: watch::Receiver<bool>, idle: Duration) -> TunnelSlot {
        TunnelSlot { slot: Mutex::new(None), stop, idle, h2_open: Arc::default() }
    }

    pub fn put(&self, tunnel: Tunnel) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
    }

    pub fn take(&self) -> Option<Tunnel> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// HTTP/2 streams of this connection spliced now.
    pub fn h2_open(&self) -> u32 {
        self.h2_open.load(Ordering::Relaxed)
    }

    /// Splices an HTTP/2 stream that switched (extended CONNECT) to `tunnel`, on a task of its
    /// own: the stream is the client's side once hyper has sent the 200.
    pub fn spawn_h2(&self, client: hyper::upgrade::OnUpgrade, tunnel: Tunnel, open: Gauge) {
        let (mut stop, idle) = (self.stop.clone(), self.idle);
        let counted = OpenStream::new(&self.h2_open);
        tokio::spawn(async move {
            let _counted = counted;
            let stopping = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            // The stream never comes when the client reset it before the 200 went out.
            if let Ok(stream) = client.await {
                splice(hyper_util::rt::TokioIo::new(stream), Bytes::new(), tunnel, idle, &open, stopping).await;
            }
        });
    }
}

/// One spliced HTTP/2 stream, counted on its connection until dropped.
struct OpenStream(Arc<AtomicU32>);

impl OpenStream {
    fn new(count: &Arc<AtomicU32>) -> OpenStream {
        count.fetch_add(1, Ordering::Relaxed);
        OpenStream(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for TunnelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelSlot")
    }
}

/// How a spliced connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceEnd {
    /// A side closed (its close was passed on to the other, then both were closed).
    Closed,
    /// A side failed (reset, write error): both were closed.
    Failed,
    /// Nothing went either way for the idle timeout.
    Idle,
    /// The node is shutting down.
    Stopped,
}

/// Copies bytes both ways between the client and the upstream until either side closes (its
/// close is passed on to the other side, and then both are closed) or fails, nothing moves for
/// `idle` (closed after `idle` to 1¼ × `idle` of silence), or `stop` resolves. `open` counts
/// the connection meanwhile. `client_early` is what the client sent after its request head
/// (read by hyper), which goes first to the upstream; the upstream's early bytes go first to
/// the client.
pub async fn splice<C: AsyncRead + AsyncWrite + Unpin>(
    client: C,
    client_early: Bytes,
    tunnel: Tunnel,
    idle: Duration,
    open: &Gauge,
    stop: impl Future<Output = ()>,
) -> SpliceEnd {
    open.inc();
    let end = splice_counted(client, client_early, tunnel, idle, stop).await;
    open.dec();
    end
}

async fn splice_counted<C: AsyncRead + AsyncWrite + Unpin>(
    mut client: C,
    client_early: Bytes,
    tunnel: Tunnel,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> SpliceEnd {
    let Tunnel { io: mut upstream, early, .. } = tunnel;
    let moved = AtomicU64::new(0);
    let run = async {
        if !client_early.is_empty() {
            upstream.write_all(&client_early).await?;
        }
        if !early.is_empty() {
            client.write_all(&early).await?;
            client.flush().await?;
        }
        let (client_in, mut client_out) = tokio::io::split(client);
        let (upstream_in, mut upstream_out) = upstream.split();
        // Not a half-closed tunnel: once one side has closed, a WebSocket has ended (its close
        // handshake comes before), and a side that never closes would hold both connections.
        let up = async {
            tokio::io::copy(&mut Counted { io: client_in, moved: &moved }, &mut upstream_out).await?;
            upstream_out.shutdown().await
        };
        let down = async {
            tokio::io::copy(&mut Counted { io: upstream_in, moved: &moved }, &mut client_out).await?;
            client_out.shutdown().await
        };
        tokio::select! {
            r = up => r,
            r = down => r,
        }
    };
    tokio::select! {
        r = run => if r.is_ok() { SpliceEnd::Closed } else { SpliceEnd::Failed },
        () = silent_for(&moved, idle) => SpliceEnd::Idle,
        () = stop => SpliceEnd::Stopped,
    }
}

/// Resolves once `moved` has not changed for `idle`, looked at every quarter of it: one timer
/// for the connection, not one reset per read.
async fn silent_for(moved: &AtomicU64, idle: Duration) {
    let tick = (idle / 4).max(Duration::from_millis(1));
    let mut quiet = 0;
    let mut seen = moved.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(tick).await;
        let now = moved.load(Ordering::Relaxed);
        quiet = if now == seen { quiet + 1 } else { 0 };
        seen = now;
        if quiet >= 4 {
            return;
        }
    }
}

/// The reading half of a side of the splice, counting its reads so that the idle watch sees
/// traffic either way.
struct Counted<'a, R> {
    io: R,
    moved: &'a AtomicU64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<'_, R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn only_a_websocket_upgrade_over_http11_is_passed_on() {
        let v11 = http::Version::HTTP_11;
        let ws = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")]);
        assert_eq!(requested(v11, &ws).unwrap(), "WebSocket");
        assert!(requested(http::Version::HTTP_10, &ws).is_none());
        // h2c, an unknown protocol, two protocols, no Connection: upgrade: not upgrades.
        for h in [
            map(&[("connection", "upgrade, http2-settings"), ("upgrade", "h2c"), ("http2-settings", "AAA")]),
            map(&[("connection", "upgrade"), ("upgrade", "tls/1.2")]),
            map(&[("connection", "upgrade"), ("upgrade", "websocket, h2c")]),
            map(&[("upgrade", "websocket")]),
            map(&[("connection", "upgraded"), ("upgrade", "websocket")]),
        ] {
            assert!(requested(v11, &h).is_none(), "{h:?}");
        }
        let asked = HeaderValue::from_static("websocket");
        let mut draws = [u64::MAX, 0, 2].into_iter();
        let key = websocket_key(|| draws.next().unwrap_or(0));
        // 21 digits of all-ones bits then zeros, the 22nd of two bits, then the padding: the
        // base64 of 16 bytes, as RFC 6455 asks.
        assert_eq!(key, "//////////AAAAAAAAAAAg==");
        assert!(same_protocol(&asked, Some(&HeaderValue::from_static("WebSocket"))));
        assert!(!same_protocol(&asked, Some(&HeaderValue::from_static("h2c"))));
        assert!(!same_protocol(&asked, None));
    }
}
