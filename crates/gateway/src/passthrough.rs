//! TLS passthrough: the name a client's ClientHello asks for, read without decrypting anything, and the client's bytes carried unchanged to the endpoint chosen for it.
//!
//! rustls parses the ClientHello (veer does not read TLS records itself); veer keeps a copy of
//! every byte it fed it, so the endpoint receives exactly what the client sent. Until the first
//! byte goes upstream nothing is lost by trying another endpoint: a refused connect moves on to
//! the next pick, as an HTTP try would.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use veer_core::outcome::{Blame, TryEnd};
use veer_core::outlier::Outcome;
use veer_core::pick::Tried;
use veer_core::retry::max_tries;

use crate::clock;
use crate::failure::connect_failure;
use crate::shared::{OutcomeReport, Shared};
use crate::snapshot::{DestState, Upstream};

/// The most veer reads of a client before its ClientHello is whole. A ClientHello is one
/// handshake message of at most 2^24 bytes in theory; in practice a few hundred bytes, and
/// post-quantum key shares keep it under 2 KiB. 16 KiB leaves room for large extension lists
/// while bounding what a client that never finishes can make veer hold.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// Why a passthrough connection has no name to route by.
#[derive(Debug)]
pub enum HelloError {
    /// The client closed (or reset) before its ClientHello was whole.
    Closed,
    /// More than [`MAX_HELLO_BYTES`] without a whole ClientHello.
    TooLarge,
    /// Not a TLS ClientHello: rustls's reason.
    NotTls(rustls::Error),
    /// The ClientHello did not come in time.
    Timeout,
    Io(io::Error),
}

/// What a client's ClientHello asked for, and every byte read from it so far (to be sent on
/// first).
#[derive(Debug)]
pub struct Hello {
    /// The SNI host name, lower case; `None` when the client sent none.
    pub server_name: Option<String>,
    pub bytes: Vec<u8>,
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::Closed => f.write_str("the client closed before its TLS ClientHello was complete"),
            HelloError::TooLarge => write!(f, "no complete TLS ClientHello in the first {MAX_HELLO_BYTES} bytes"),
            HelloError::NotTls(e) => write!(f, "not a TLS ClientHello: {e}"),
            HelloError::Timeout => f.write_str("the TLS ClientHello did not arrive in time"),
            HelloError::Io(e) => write!(f, "reading the TLS ClientHello: {e}"),
        }
    }
}

impl std::error::Error for HelloError {}

/// Reads `client` until its ClientHello is whole, within `limit`.
pub async fn read_hello<S: AsyncRead + Unpin>(client: &mut S, limit: Duration) -> Result<Hello, HelloError> {
    tokio::time::timeout(limit, read_hello_unbounded(client)).await.map_err(|_| HelloError::Timeout)?
}

async fn read_hello_unbounded<S: AsyncRead + Unpin>(client: &mut S) -> Result<Hello, HelloError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await.map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => HelloError::Closed,
            _ => HelloError::Io(e),
        })?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        if bytes.len() + n > MAX_HELLO_BYTES {
            return Err(HelloError::TooLarge);
        }
        bytes.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            // The acceptor buffers at most one record's worth at a time; whatever it does not
            // take now it takes after `accept` has parsed what it holds.
            if acceptor.read_tls(&mut fresh).map_err(HelloError::Io)? == 0 {
                break;
            }
            match acceptor.accept() {
                Ok(None) => {}
                Ok(Some(accepted)) => {
                    let server_name = accepted.client_hello().server_name().map(str::to_ascii_lowercase);
                    return Ok(Hello { server_name, bytes });
                }
                Err((e, _alert)) => return Err(HelloError::NotTls(e)),
            }
        }
    }
}

/// Sends `first` (the ClientHello and anything after it) to `upstream`, then copies both ways
/// until both sides close or neither sends anything for `idle`. `carried` counts the bytes
/// carried (client to upstream, upstream to client), also when the splice ends in an error.
pub async fn splice<C, U>(client: &mut C, upstream: &mut U, first: &[u8], idle: Duration, carried: &mut (u64, u64)) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    upstream.write_all(first).await?;
    // Boxed: two 16 KiB buffers would otherwise sit in every passthrough connection's task
    // future, and in the future of every connection the same task type serves.
    let mut up = vec![0u8; 16 * 1024].into_boxed_slice();
    let mut down = vec![0u8; 16 * 1024].into_boxed_slice();
    let (sent, received) = carried;
    *sent += first.len() as u64;
    let (mut client_open, mut upstream_open) = (true, true);
    while client_open || upstream_open {
        let step = async {
            tokio::select! {
                r = client.read(&mut up), if client_open => (true, r),
                r = upstream.read(&mut down), if upstream_open => (false, r),
            }
        };
        let Ok((from_client, read)) = tokio::time::timeout(idle, step).await else {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
        };
        match (from_client, read?) {
            (true, 0) => {
                client_open = false;
                upstream.shutdown().await?;
            }
            (true, n) => {
                upstream.write_all(&up[..n]).await?;
                *sent += n as u64;
            }
            (false, 0) => {
                upstream_open = false;
                client.shutdown().await?;
            }
            (false, n) => {
                client.write_all(&down[..n]).await?;
                *received += n as u64;
            }
        }
    }
    Ok(())
}

/// Why a passthrough connection reached no endpoint: its label in `passthrough_refused`.
pub fn hello_reason(e: &HelloError) -> &'static str {
    match e {
        HelloError::Closed => "closed",
        HelloError::TooLarge => "too_large",
        HelloError::NotTls(_) => "not_tls",
        HelloError::Timeout => "timeout",
        HelloError::Io(_) => "io",
    }
}

/// Connects to an endpoint of `dest` for a passthrough connection, by the destination's picks
/// (priorities, weights, health): a failed connect is reported (a refused one decisively, so
/// outlier detection ejects the endpoint at once) and the next pick is tried, away from the
/// endpoints and priorities already tried, up to the retry policy's attempts. Nothing has gone
/// upstream before the connect succeeds, so moving on is always safe. Returns the connection
/// and the endpoint's index; `None` when no try connected.
pub(crate) async fn connect(shared: &Shared, dest: &DestState) -> Option<(TcpStream, usize)> {
    let max = max_tries(&dest.retry);
    let mut tried = Tried::default();
    while tried.attempts() < max {
        let ep = dest.pick(&tried, clock::random_u64(), clock::random_f64())?;
        let upstream = &dest.upstreams[ep];
        tried.record(ep, upstream.priority);
        if upstream.via.is_some() {
            // A peer cluster's endpoint is reached through its east-west link, which carries
            // HTTP requests, not raw bytes.
            continue;
        }
        let connecting = async {
            match upstream.socket {
                Some(addr) => TcpStream::connect(addr).await,
                None => TcpStream::connect(upstream.authority.as_str()).await,
            }
        };
        let end = match tokio::time::timeout(dest.timeouts.connect, connecting).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                // Only a success that ends a run of failures is news to the control loop.
                if upstream.recent_failures.report(TryEnd::Response(200)).is_some() {
                    send(shared, dest, upstream, Outcome::ConnectSucceeded, false);
                }
                return Some((stream, ep));
            }
            Ok(Err(e)) => connect_failure(&e),
            Err(_) => veer_core::outcome::connect_failure(None, true),
        };
        shared.metrics.try_failure(&dest.key, end.blame().name(), end.name());
        if end.blame() == Blame::Upstream {
            if let Some(input) = upstream.recent_failures.report(end) {
                send(shared, dest, upstream, input.outcome, input.decisive);
            }
        }
        shared.metrics.retry(&dest.key, end.name());
    }
    None
}

fn send(shared: &Shared, dest: &DestState, upstream: &Upstream, outcome: Outcome, decisive: bool) {
    let _ = shared.outcomes.send(OutcomeReport {
        destination: dest.key.clone(),
        endpoint: upstream.key.clone(),
        outcome,
        decisive,
        gateway: None,
    });
}

#[cfg(test)]
mod tests;
