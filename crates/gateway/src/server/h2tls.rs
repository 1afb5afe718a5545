//! HTTP/2 over TLS: what h2 writes, gathered into one TLS record per flush.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS stream as HTTP/2 writes to it: one TLS record and one `writev` per flush. h2 sends a
/// DATA frame's payload with a write (and a flush) of its own from 256 B up on a stream that
/// writes vectored, as tokio-rustls' does (every response of 256 B to 1 KiB was then a record
/// and a system call of its own), from 1 KiB up on one that does not, as this one. What h2
/// writes is gathered here, up to a record's worth, and sealed when h2 flushes: a record
/// copies its plaintext anyway, so a vectored write saves no copy, and sealing each write would
/// make a large payload and its frame's head two records.
pub(super) struct H2Tls {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    /// Plaintext written and not yet sealed: at most one record's (16 KiB).
    gathered: Vec<u8>,
}

const TLS_RECORD_PLAINTEXT: usize = 16 * 1024;

impl H2Tls {
    pub(super) fn new(tls: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        H2Tls { tls, gathered: Vec::new() }
    }

    /// Seals what was gathered into rustls' buffer of records (sending them first if that is
    /// full, 64 KiB).
    fn poll_seal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            match io::Write::write(&mut self.tls.get_mut().1.writer(), &self.gathered)? {
                0 => std::task::ready!(Pin::new(&mut self.tls).poll_flush(cx))?,
                n => drop(self.gathered.drain(..n)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl super::ClientStream for H2Tls {
    fn tcp(&self) -> &TcpStream {
        self.tls.get_ref().0
    }
}

impl AsyncRead for H2Tls {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for H2Tls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.gathered.len() >= TLS_RECORD_PLAINTEXT {
            std::task::ready!(self.poll_seal(cx))?;
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(TLS_RECORD_PLAINTEXT);
        }
        let n = buf.len().min(TLS_RECORD_PLAINTEXT - self.gathered.len());
        self.gathered.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_seal(cx))?;
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_seal(cx))?;
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client's TCP stream that keeps every byte it reads, to count the TLS records sent.
    struct Seen {
        tcp: TcpStream,
        bytes: Arc<Mutex<Vec<u8>>>,
    }

    impl AsyncRead for Seen {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut self.tcp).poll_read(cx, buf))?;
            self.bytes.lock().unwrap().extend_from_slice(&buf.filled()[before..]);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Seen {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.tcp).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    /// A TLS 1.3 connection on loopback, handshake done: the server's end as HTTP/2 writes to
    /// it, the client's, and the bytes the client's socket has read since the handshake.
    async fn pair() -> (H2Tls, tokio_rustls::client::TlsStream<Seen>, Arc<Mutex<Vec<u8>>>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).unwrap().self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        // No session tickets: nothing reaches the client after the handshake but what is written.
        server.send_tls13_tickets = 0;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(cert.der().to_vec())).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tcp, accepted) = tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let seen = Seen { tcp: tcp.unwrap(), bytes: bytes.clone() };
        let name = ServerName::try_from("a.example.com").unwrap();
        let (client, server) = tokio::join!(
            tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, seen),
            tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(accepted.unwrap().0),
        );
        bytes.lock().unwrap().clear();
        (H2Tls::new(server.unwrap()), client.unwrap(), bytes)
    }

    /// The TLS application-data records in `bytes`, a whole number of records.
    fn records(bytes: &[u8]) -> usize {
        let (mut at, mut n) = (0, 0);
        while at + 5 <= bytes.len() {
            n += usize::from(bytes[at] == 23);
            at += 5 + usize::from(u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]));
        }
        assert_eq!(at, bytes.len(), "a partial record");
        n
    }

    #[tokio::test]
    async fn what_http2_writes_between_flushes_leaves_in_one_record() {
        let (mut server, mut client, seen) = pair().await;
        // h2 copies a DATA payload under 1 KiB into its frame buffer, with the frames before and
        // after it, only on a stream that does not write vectored.
        assert!(!server.is_write_vectored());
        // As h2 writes a frame buffer and a large payload chained to it, then the next frames.
        let writes: [&[u8]; 3] = [&[1; 300], &[2; 5000], &[3; 900]];
        for w in writes {
            server.write_all(w).await.unwrap();
        }
        server.flush().await.unwrap();
        let mut got = vec![0; 6200];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, writes.concat());
        assert_eq!(records(&seen.lock().unwrap()), 1);
    }

    #[tokio::test]
    async fn more_than_rustls_buffers_written_at_once_all_arrives() {
        let (mut server, mut client, _) = pair().await;
        // 200 KB: twelve records gathered, rustls' 64 KiB of them sent when full, the rest at the flush.
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 200_000];
            client.read_exact(&mut got).await.map(|_| got)
        });
        let write = async {
            server.write_all(&sent).await?;
            server.flush().await
        };
        tokio::time::timeout(Duration::from_secs(30), write).await.expect("the write finishes").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("the reader gets it all").unwrap().unwrap();
        assert!(got == sent, "the bytes read differ from those written");
    }
}
