//! The TCP side of the server: a connection's queries are read as they queue up (several per
//! read), answered in order — the pre-encoded answers copied as over UDP — and their answers
//! written together, with no task per query. Connections are capped, in all and per client
//! address, and one that sends no whole query within the timeout closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::handler::Handler;

/// Answers written at once at most (a client that pipelines many queries and reads nothing
/// holds at most this much of ours, plus one answer).
const WRITE_AT: usize = 64 * 1024;

/// What one client, and all of them, may hold of the TCP side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// Open connections at most (BIND's `tcp-clients`, Knot's `tcp-max-clients`); one more is
    /// closed as soon as it is accepted.
    pub max_connections: usize,
    /// Open connections from one IP address at most, so that one client cannot hold every
    /// connection and lock the others out.
    pub max_per_address: usize,
    /// A connection closes when this passes without a whole query from it, or while an answer
    /// waits to be read. Counted from the last whole query, not the last byte: a client that
    /// trickles a byte at a time does not keep a connection open.
    pub idle: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits { max_connections: 1000, max_per_address: 64, idle: Duration::from_secs(10) }
    }
}

/// Open connections, in all and by client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Open {
    /// Counts a connection from `ip` in, unless either cap is reached.
    fn admit(&mut self, ip: IpAddr, limits: &TcpLimits) -> bool {
        if self.total >= limits.max_connections || self.by_address.get(&ip).is_some_and(|&n| n >= limits.max_per_address) {
            return false;
        }
        *self.by_address.entry(ip).or_default() += 1;
        self.total += 1;
        true
    }

    fn close(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&ip);
            }
        }
    }
}

/// Serves `listener` until `stop` changes.
pub(crate) async fn serve(listener: TcpListener, handler: Arc<Handler>, limits: TcpLimits, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut open = Open::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, src)) if open.admit(src.ip(), &limits) => {
                    let handler = handler.clone();
                    connections.spawn(async move {
                        connection(stream, src, handler, limits.idle).await;
                        src.ip()
                    });
                }
                // Dropped: closed at once, so the client learns now rather than at its timeout.
                Ok((_, src)) => {
                    handler.counters().tcp_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(target: "veer::dns", "tcp connection from {src} refused: {} open, {} from its address", open.total, open.by_address.get(&src.ip()).copied().unwrap_or(0));
                }
                Err(e) => tracing::debug!(target: "veer::dns", "tcp accept: {e}"),
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(ip) = done {
                    open.close(ip);
                }
            }
            _ = stop.changed() => break,
        }
    }
    connections.shutdown().await;
}

async fn connection(mut stream: TcpStream, src: SocketAddr, handler: Arc<Handler>, idle: Duration) {
    // Answers go out as soon as a batch is answered.
    let _ = stream.set_nodelay(true);
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut deadline = Instant::from_std(crate::clock::now()) + idle;
    loop {
        if input.capacity() - input.len() < 1024 {
            input.reserve(4096);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut input)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, failed, or no whole query in time.
            _ => return,
        }
        // Every whole message (two bytes of length, then the message) in the order received.
        let mut pos = 0;
        while let Some(&[hi, lo]) = input.get(pos..pos + 2) {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            let Some(message) = input.get(pos + 2..pos + 2 + len) else { break };
            let start = out.len();
            out.extend_from_slice(&[0, 0]);
            if handler.answer_tcp(message, src, &mut out) {
                // Encoded within u16::MAX bytes.
                let n = u16::try_from(out.len() - start - 2).unwrap_or(u16::MAX);
                out[start..start + 2].copy_from_slice(&n.to_be_bytes());
            } else {
                out.truncate(start);
            }
            pos += 2 + len;
            if out.len() >= WRITE_AT && !write(&mut stream, &mut out, idle).await {
                return;
            }
        }
        if pos > 0 {
            deadline = Instant::from_std(crate::clock::now()) + idle;
        }
        input.drain(..pos);
        if !out.is_empty() && !write(&mut stream, &mut out, idle).await {
            return;
        }
    }
}

/// Writes and empties `out`: whether the connection is still good.
async fn write(stream: &mut TcpStream, out: &mut Vec<u8>, idle: Duration) -> bool {
    let ok = matches!(tokio::time::timeout(idle, stream.write_all(out)).await, Ok(Ok(())));
    out.clear();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_all_and_per_address_and_closing_frees_a_place() {
        let limits = TcpLimits { max_connections: 3, max_per_address: 2, idle: Duration::from_secs(1) };
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into(), [127, 0, 0, 3].into());
        let mut open = Open::default();
        assert!(open.admit(a, &limits) && open.admit(a, &limits));
        assert!(!open.admit(a, &limits), "a third from one address");
        assert!(open.admit(b, &limits), "another address still gets in");
        assert!(!open.admit(c, &limits), "over the cap in all");
        assert!(!open.by_address.contains_key(&c), "a refused address leaves no entry");
        open.close(a);
        assert!(open.admit(a, &limits), "a closed connection frees its place");
        for ip in [a, a, b] {
            open.close(ip);
        }
        assert_eq!((open.total, open.by_address.len()), (0, 0));
    }
}
