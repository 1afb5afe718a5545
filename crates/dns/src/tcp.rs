//! The TCP side of the server: a connection's queries are read as they queue up (several per
//! read), answered in order — the pre-encoded answers copied as over UDP — and their answers
//! written together, with no task per query; an idle connection closes after the timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::handler::Handler;

/// Answers written at once at most (a client that pipelines many queries and reads nothing
/// holds at most this much of ours, plus one answer).
const WRITE_AT: usize = 64 * 1024;

/// Serves `listener` until `stop` changes; each connection closes after `idle` without a query.
pub(crate) async fn serve(listener: TcpListener, handler: Arc<Handler>, idle: Duration, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, src)) => {
                    connections.spawn(connection(stream, src, handler.clone(), idle));
                }
                Err(e) => tracing::debug!(target: "veer::dns", "tcp accept: {e}"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
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
    loop {
        if input.capacity() - input.len() < 1024 {
            input.reserve(4096);
        }
        match tokio::time::timeout(idle, stream.read_buf(&mut input)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, failed, or idle too long.
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
