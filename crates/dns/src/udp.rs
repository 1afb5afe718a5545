//! The UDP side of the server: the queries waiting on the socket are received in one system
//! call (recvmmsg), answered, and the answers sent in one more (sendmmsg), so a busy server
//! makes two calls per batch rather than two per query, as Knot and BIND do.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::handler::{answer_datagram_into, Handler};
use crate::rrl::Rrl;

/// Queries taken from the socket at once.
const BATCH: usize = 32;
/// Larger than any query a client may send over UDP; a longer datagram is cut by the kernel,
/// fails to decode and is dropped.
const QUERY_MAX: usize = 4096;
/// Batches served before other tasks of the runtime get a turn.
const BATCHES_PER_TURN: usize = 8;

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
}

/// Buffers reused from batch to batch (not the system calls' headers: they hold raw pointers,
/// which a task cannot keep across an await).
struct Batch {
    queries: Vec<Vec<u8>>,
    /// (length, source) of each query received.
    received: Vec<(usize, SocketAddr)>,
    answers: Vec<Vec<u8>>,
    /// Where each answer goes.
    to: Vec<Option<SockaddrStorage>>,
}

impl Batch {
    fn new() -> Self {
        Batch {
            queries: vec![vec![0u8; QUERY_MAX]; BATCH],
            received: Vec::with_capacity(BATCH),
            answers: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            to: Vec::with_capacity(BATCH),
        }
    }

    /// Receives what is waiting (at least one datagram, or WouldBlock).
    fn receive(&mut self, udp: &UdpSocket) -> io::Result<()> {
        let Batch { queries, received, .. } = self;
        received.clear();
        udp.try_io(Interest::READABLE, || {
            let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = queries.iter_mut().map(|q| [IoSliceMut::new(q)]).collect();
            let msgs = recvmmsg(udp.as_raw_fd(), &mut recv_headers, slices.iter_mut(), MsgFlags::empty(), None).map_err(io::Error::from)?;
            received.extend(msgs.filter_map(|m| Some((m.bytes, to_std(&m.address?)?))));
            Ok(())
        })
    }

    /// Sends the first `n` answers to their clients, in as few calls as the socket takes them.
    async fn send(&mut self, udp: &UdpSocket, n: usize) {
        let mut sent = 0;
        while sent < n {
            let Batch { answers, to, .. } = self;
            let result = udp.try_io(Interest::WRITABLE, || {
                let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(n - sent, None);
                let slices: Vec<[IoSlice<'_>; 1]> = answers[sent..n].iter().map(|a| [IoSlice::new(a)]).collect();
                let done = sendmmsg(
                    udp.as_raw_fd(),
                    &mut send_headers,
                    slices.iter(),
                    &to[sent..n],
                    [] as [ControlMessage<'_>; 0],
                    MsgFlags::empty(),
                )
                .map_err(io::Error::from)?
                .count();
                Ok(done)
            });
            match result {
                Ok(done) => sent += done.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if udp.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // The first datagram could not be sent (say, an ICMP error surfacing): skip it.
                    tracing::debug!(target: "veer::dns", "udp send: {e}");
                    sent += 1;
                }
            }
        }
    }
}

/// Serves `udp` until `stop` changes: every query answered from `handler`, rate limited by `rrl`.
pub(crate) async fn serve(udp: UdpSocket, handler: Arc<Handler>, mut rrl: Rrl, mut stop: watch::Receiver<bool>) {
    let mut batch = Batch::new();
    loop {
        tokio::select! {
            r = udp.readable() => if let Err(e) = r {
                tracing::debug!(target: "veer::dns", "udp socket: {e}");
                break;
            },
            _ = stop.changed() => break,
        }
        for _ in 0..BATCHES_PER_TURN {
            match batch.receive(&udp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; keep serving.
                    tracing::debug!(target: "veer::dns", "udp receive: {e}");
                    continue;
                }
            }
            let now = crate::clock::now();
            let mut n = 0;
            batch.to.clear();
            for i in 0..batch.received.len() {
                let (len, src) = batch.received[i];
                let out = &mut batch.answers[n];
                out.clear();
                if answer_datagram_into(&handler, Some(&mut rrl), &batch.queries[i][..len], src, now, out) {
                    batch.to.push(Some(SockaddrStorage::from(src)));
                    n += 1;
                }
            }
            batch.send(&udp, n).await;
        }
        tokio::task::yield_now().await;
    }
}
