use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A listener on loopback and a client connected to it: (client side, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (client, server)
}

/// Starts a real rustls handshake for `name` on `stream` (it never completes: nothing answers).
fn hello_from_rustls(stream: TcpStream, name: &'static str) -> tokio::task::JoinHandle<()> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::spawn(async move {
        let _ = connector.connect(rustls::pki_types::ServerName::try_from(name).expect("name"), stream).await;
    })
}

#[tokio::test]
async fn the_server_name_of_a_real_client_hello_is_read_and_its_bytes_kept() {
    let (client, mut server) = pair().await;
    let task = hello_from_rustls(client, "Shop.Example.COM");
    let hello = read_hello(&mut server, Duration::from_secs(5)).await.expect("a ClientHello");
    assert_eq!(hello.server_name.as_deref(), Some("shop.example.com"));
    assert_eq!(hello.bytes[0], 0x16, "a handshake record, as sent");
    assert!(hello.bytes.len() > 100);
    task.abort();
}

#[tokio::test]
async fn plain_http_is_not_a_client_hello_and_an_early_close_says_so() {
    let (mut client, mut server) = pair().await;
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    assert!(matches!(read_hello(&mut server, Duration::from_secs(5)).await, Err(HelloError::NotTls(_))));
    let (mut client, mut server) = pair().await;
    client.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    drop(client);
    assert!(matches!(read_hello(&mut server, Duration::from_secs(5)).await, Err(HelloError::Closed)));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_mid_hello_is_dropped_at_the_limit() {
    let (mut client, mut server) = pair().await;
    client.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.expect("write");
    assert!(matches!(read_hello(&mut server, Duration::from_secs(3)).await, Err(HelloError::Timeout)));
}

#[tokio::test]
async fn a_hello_that_never_ends_is_refused_past_the_cap() {
    let (mut client, mut server) = pair().await;
    // Handshake records of the maximum length that add up to one ClientHello claimed at 1 MiB:
    // valid framing that would never finish.
    let writer = tokio::spawn(async move {
        let mut first = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x10, 0x00, 0x00];
        first.resize(5 + 0x4000, 0);
        let _ = client.write_all(&first).await;
        let mut more = vec![0x16, 0x03, 0x01, 0x40, 0x00];
        more.resize(5 + 0x4000, 0);
        for _ in 0..8 {
            if client.write_all(&more).await.is_err() {
                break;
            }
        }
    });
    assert!(matches!(read_hello(&mut server, Duration::from_secs(5)).await, Err(HelloError::TooLarge)));
    writer.abort();
}

#[tokio::test]
async fn splice_sends_the_hello_first_and_carries_both_ways_until_both_close() {
    let (mut client, mut client_side) = pair().await;
    let (mut upstream_side, mut upstream) = pair().await;
    let proxy = tokio::spawn(async move {
        let mut carried = (0, 0);
        splice(&mut client_side, &mut upstream_side, b"HELLO", Duration::from_secs(5), &mut carried).await.map(|()| carried)
    });
    let mut got = [0u8; 5];
    upstream.read_exact(&mut got).await.expect("first bytes");
    assert_eq!(&got, b"HELLO");
    client.write_all(b"ping").await.expect("write");
    let mut ping = [0u8; 4];
    upstream.read_exact(&mut ping).await.expect("read");
    assert_eq!(&ping, b"ping");
    upstream.write_all(b"pong!").await.expect("write");
    let mut pong = [0u8; 5];
    client.read_exact(&mut pong).await.expect("read");
    assert_eq!(&pong, b"pong!");
    client.shutdown().await.expect("client done");
    assert_eq!(upstream.read(&mut ping).await.expect("eof"), 0, "the client's close reaches the upstream");
    drop(upstream);
    assert_eq!(proxy.await.expect("task").expect("spliced"), (9, 5));
}
