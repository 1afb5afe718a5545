//! Unit tests of the request path: garbage dropped, what each node answers.

use super::*;
use crate::zone::Outcome;
use std::time::Duration;

#[test]
fn garbage_gets_no_answer_and_no_panic() {
    let h = Handler::new(Zones::default(), 1232);
    let src = SocketAddr::from(([127, 0, 0, 1], 5353));
    for p in [&[][..], &[0u8; 11][..], &[0xffu8; 300][..], &[0u8; 12][..]] {
        assert!(answer_datagram(&h, None, p, src, crate::clock::now()).is_none());
    }
    assert_eq!(h.stats().malformed_dropped, 4);
}

/// Seed 002's example at one of its steps, as every node reads it.
fn seed002_step(step: &str) -> ManifestSet {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(step);
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "yaml") {
            sources.push((path.display().to_string(), std::fs::read_to_string(&path).expect("read")));
        }
    }
    veer_model::from_sources(&sources).unwrap_or_else(|r| panic!("{r}")).into_set()
}

fn answer(cluster: &str, gateway: [u8; 4], set: &ManifestSet) -> Outcome {
    let cfg = DnsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), cluster, IpAddr::from(gateway));
    let zones = Reconciler::new(cfg, None).run(set);
    let name = hickory_proto::rr::LowerName::new(&hickory_proto::rr::Name::from_ascii("web-ns-p-prod-myapp.example.com.").expect("name"));
    zones.lookup(&name, hickory_proto::rr::RecordType::A)
}

#[test]
fn a_route_name_served_by_the_gateway_is_still_answered_only_by_its_zone_writer() {
    // The app's HTTPRoute for the ServiceRoute's own name is on every cluster's gateway. While
    // neu's adoption of weu stands, the returning weu node must not answer the name with its
    // own gateway (a second writer); neu answers with its CNAME.
    let adopted = seed002_step("steps/002-dns-regional-takeover/2-neu-adopts-weu");
    assert_eq!(answer("aks-weu-01", [127, 0, 3, 11], &adopted), Outcome::Refused);
    let Outcome::Authoritative { answers, .. } = answer("aks-neu-01", [127, 0, 3, 12], &adopted) else { panic!("neu writes its zone") };
    assert_eq!(answers.first().map(|r| r.record_type()), Some(hickory_proto::rr::RecordType::CNAME), "{answers:?}");
    // Under RegionBound only weu writes, so the spokes answer nothing for the name.
    let bound = seed002_step("steps/002-dns-regional-takeover/4-regionbound");
    for (cluster, gw) in [("aks-neu-01", [127, 0, 3, 12]), ("aks-frc-01", [127, 0, 3, 13])] {
        assert_eq!(answer(cluster, gw, &bound), Outcome::Refused, "{cluster}");
    }
}

#[test]
fn the_serial_follows_unix_time_and_always_grows() {
    assert_eq!(next_serial(0, 1_700_000_000), 1_700_000_000);
    assert_eq!(next_serial(1_700_000_000, 1_700_000_000), 1_700_000_001, "two changes in one second");
    assert_eq!(next_serial(1_700_000_005, 1_700_000_001), 1_700_000_006, "ahead of the clock: +1");
    // Serial arithmetic wraps (RFC 1982).
    assert_eq!(next_serial(u32::MAX, 3), 3);
    assert_eq!(next_serial(u32::MAX, u32::MAX - 10), 1);
}

#[test]
fn the_serial_moves_when_the_answers_change_and_only_then() {
    let set = seed002_step("002-dns-regional-takeover");
    let cfg = DnsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "aks-neu-01", IpAddr::from([127, 0, 3, 12]));
    let mut r = Reconciler::new(cfg, None);
    let first = r.run(&set).serial().expect("zones served");
    assert_eq!(r.run(&set).serial(), Some(first), "the same set: the same serial");
    let adopted = seed002_step("steps/002-dns-regional-takeover/2-neu-adopts-weu");
    let after = r.run(&adopted).serial().expect("serial");
    assert!((after.wrapping_sub(first) as i32) > 0, "{first} -> {after}");
}

/// A regional zone as seed 002 writes it (a route's CNAME to the gateway's A record, ownership
/// TXTs), a destination host, a wildcard and the glue.
fn sample_zones() -> Zones {
    use crate::plan::{test_endpoint as ep, RecordKind, ZoneId};
    use crate::zone::{RegionalZone, ZoneInput};
    let zone = ZoneId { domain: "example.com".into(), region: "weu".into() };
    let mut zones = Zones::build(&ZoneInput {
        hosts: vec!["reviews.bookinfo.global".into(), "*.wild.example".into()],
        gateway: IpAddr::from([127, 0, 0, 1]),
        elsewhere: Default::default(),
        ttl: 60,
        regional: vec![RegionalZone {
            zone: zone.clone(),
            writer: "aks-weu-01".into(),
            epoch: 2,
            endpoints: vec![
                ep("web-ns-p-prod-myapp.example.com", RecordKind::CNAME, "aks01-weu-internal.example.com"),
                ep("aks01-weu-internal.example.com", RecordKind::A, "127.0.0.1"),
                ep("out-ns-p-prod-myapp.example.com", RecordKind::CNAME, "lb.elsewhere.net"),
            ],
        }],
        txt_prefix: "_external-dns-owner.".into(),
        serial: 1,
        nameserver: Some(IpAddr::from([127, 0, 0, 53])),
    });
    zones.set_serial(1_700_000_000);
    zones
}

/// A query as a client writes it: `name` in its own case, flag bytes, and an OPT record with
/// `edns` (payload size, DO flag) when given; `tail` bytes after it.
fn query(id: u16, name: &str, qtype: u16, flags: [u8; 2], edns: Option<(u16, bool)>, tail: &[u8]) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&flags);
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some((size, dnssec_ok)) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    q.extend_from_slice(tail);
    q
}

#[test]
fn answers_encoded_ahead_are_the_bytes_the_ordinary_path_sends() {
    let fast = Handler::new(sample_zones(), 1232);
    let slow = Handler::uncompiled(sample_zones(), 1232);
    assert!(slow.zones().compiled().is_empty());
    assert!(fast.zones().compiled().len() >= 30, "{}", fast.zones().compiled().len());
    let src = SocketAddr::from(([127, 0, 0, 1], 5353));
    let names = [
        "web-ns-p-prod-myapp.example.com",
        "Web-NS-p-prod-myapp.example.com",
        "out-ns-p-prod-myapp.example.com",
        "aks01-weu-internal.example.com",
        "_external-dns-owner.cname-web-ns-p-prod-myapp.example.com",
        "example.com",
        "ns.example.com",
        "missing.example.com",
        "ns-p-prod-myapp.example.com",
        "a.wild.example",
        "reviews.bookinfo.global",
        "other.org",
    ];
    // A, NS, CNAME, SOA, MX, TXT, AAAA, HTTPS, ANY, AXFR.
    let types = [1u16, 2, 5, 6, 15, 16, 28, 65, 255, 252];
    let flags = [[0, 0], [1, 0], [1, 0x10], [0x05, 0x20], [0x80, 0], [0x28, 0]];
    let edns = [None, Some((512, false)), Some((4096, true)), Some((100, false))];
    let tails: [&[u8]; 2] = [&[], &[0]];
    let (mut hits, mut cases) = (0, 0);
    for (i, name) in names.iter().enumerate() {
        for &qtype in &types {
            for &f in &flags {
                for &e in &edns {
                    for tail in tails {
                        let q = query(i as u16 * 1000 + qtype, name, qtype, f, e, tail);
                        hits += usize::from(fast.zones().compiled().get(&q).is_some());
                        cases += 1;
                        let (a, b) = (
                            answer_datagram(&fast, None, &q, src, crate::clock::now()),
                            answer_datagram(&slow, None, &q, src, crate::clock::now()),
                        );
                        assert_eq!(a, b, "{name} type {qtype} flags {f:?} edns {e:?} tail {tail:?}");
                    }
                }
            }
        }
    }
    assert!(hits >= 100, "{hits} of {cases} answered from bytes");
    assert_eq!(fast.stats(), slow.stats(), "the same counters either way");
}

#[test]
fn answers_encoded_ahead_are_rate_limited_as_the_others() {
    let fast = Handler::new(sample_zones(), 1232);
    let slow = Handler::uncompiled(sample_zones(), 1232);
    let cfg = RrlConfig { responses_per_second: 2, slip: 2, ..RrlConfig::default() };
    let (mut rrl_fast, mut rrl_slow) = (Rrl::new(cfg.clone()), Rrl::new(cfg));
    let src = SocketAddr::from(([192, 0, 2, 1], 5353));
    let now = crate::clock::now();
    let q = query(7, "web-ns-p-prod-myapp.example.com", 1, [1, 0], None, &[]);
    assert!(fast.zones().compiled().get(&q).is_some());
    for _ in 0..12 {
        let a = answer_datagram(&fast, Some(&mut rrl_fast), &q, src, now);
        let b = answer_datagram(&slow, Some(&mut rrl_slow), &q, src, now);
        assert_eq!(a, b);
    }
    let stats = fast.stats();
    assert!(stats.rrl_dropped > 0 && stats.rrl_slipped > 0, "{stats:?}");
    assert_eq!(stats, slow.stats());
}

#[test]
fn a_zone_change_is_answered_with_its_new_bytes() {
    let h = Handler::new(sample_zones(), 1232);
    let src = SocketAddr::from(([127, 0, 0, 1], 5353));
    let q = query(9, "example.com", 6, [0, 0], None, &[]);
    let before = answer_datagram(&h, None, &q, src, crate::clock::now()).expect("answer");
    let mut zones = sample_zones();
    zones.set_serial(1_700_000_001);
    h.set_zones(zones);
    let after = answer_datagram(&h, None, &q, src, crate::clock::now()).expect("answer");
    assert!(h.zones().compiled().get(&q).is_some());
    assert_ne!(before, after, "the new serial is served");
    let slow = Handler::uncompiled(h.zones().as_ref().clone(), 1232);
    assert_eq!(Some(after), answer_datagram(&slow, None, &q, src, crate::clock::now()));
}

/// The TCP side serving the sample zones under `limits` on a port of its own: the handler,
/// the address, and how to stop it.
async fn tcp_server(limits: crate::TcpLimits) -> (Arc<Handler>, SocketAddr, watch::Sender<bool>, JoinHandle<()>) {
    let handler = Arc::new(Handler::new(sample_zones(), 1232));
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stop_rx) = watch::channel(false);
    let server = tokio::spawn(crate::tcp::serve(listener, handler.clone(), limits, stop_rx));
    (handler, addr, stop, server)
}

#[tokio::test]
async fn tcp_answers_pipelined_queries_in_order_as_udp_does() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (handler, addr, stop, server) = tcp_server(crate::TcpLimits::default()).await;
    let slow = Handler::uncompiled(sample_zones(), 1232);
    let src = SocketAddr::from(([127, 0, 0, 1], 5353));
    // Answered from bytes, by the ordinary path (NXDOMAIN, a name in upper case, EDNS), and a
    // message whose header alone decodes (FORMERR, with no question).
    let queries = [
        query(1, "web-ns-p-prod-myapp.example.com", 1, [1, 0], None, &[]),
        query(2, "missing.example.com", 1, [1, 0], None, &[]),
        query(3, "EXAMPLE.com", 6, [0, 0], Some((1232, false)), &[]),
        query(4, "example.com", 2, [0, 0], None, &[]),
        vec![0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7],
    ];
    let mut framed = Vec::new();
    for q in &queries {
        framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
        framed.extend_from_slice(q);
    }
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // Three and a half queries in one write, the rest in another.
    let cut = framed.len() - queries[4].len() - 5;
    conn.write_all(&framed[..cut]).await.expect("write");
    conn.flush().await.expect("flush");
    tokio::task::yield_now().await;
    conn.write_all(&framed[cut..]).await.expect("write");
    for q in &queries[..4] {
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).await.expect("length");
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut answer).await.expect("answer");
        let udp = answer_datagram(&slow, None, q, src, crate::clock::now()).expect("udp answer");
        assert_eq!(answer, udp, "query {}", q[1]);
    }
    let mut formerr = [0u8; 14];
    conn.read_exact(&mut formerr).await.expect("formerr");
    assert_eq!(formerr, [0, 12, 0, 5, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0], "FORMERR echoing the ID, no question");
    assert_eq!(handler.stats().tcp_queries, 4);
    assert!(handler.zones().compiled().get(&queries[0]).is_some(), "the first was answered from bytes");
    let _ = stop.send(true);
    server.await.expect("server stops");
}

/// A TCP connection from `from` to `to`, and whether the server answers a query on it.
async fn tcp_query(from: [u8; 4], to: SocketAddr) -> (tokio::net::TcpStream, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind the client's address");
    let mut conn = socket.connect(to).await.expect("connect");
    let q = query(7, "example.com", 6, [0, 0], None, &[]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    // A connection the server closed at once may refuse the write or read nothing.
    let answered = async {
        conn.write_all(&framed).await.ok()?;
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).await.ok()?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut answer).await.ok()?;
        Some(answer[..2] == [0, 7])
    }
    .await
        == Some(true);
    (conn, answered)
}

#[tokio::test]
async fn one_address_cannot_hold_every_tcp_connection() {
    let limits = crate::TcpLimits { max_connections: 5, max_per_address: 3, idle: Duration::from_secs(30) };
    let (handler, addr, stop, server) = tcp_server(limits).await;
    let mut held = Vec::new();
    for i in 0..3 {
        let (conn, answered) = tcp_query([127, 0, 0, 2], addr).await;
        assert!(answered, "connection {i} from the abusive address is served");
        held.push(conn);
    }
    let (_, answered) = tcp_query([127, 0, 0, 2], addr).await;
    assert!(!answered, "a fourth from the same address is refused");
    assert_eq!(handler.stats().tcp_refused, 1);
    // Another client is still served while the first holds its three.
    let (other, answered) = tcp_query([127, 0, 0, 3], addr).await;
    assert!(answered, "another address is served");
    held.push(other);
    let (fifth, answered) = tcp_query([127, 0, 0, 4], addr).await;
    assert!(answered);
    held.push(fifth);
    let (_, answered) = tcp_query([127, 0, 0, 5], addr).await;
    assert!(!answered, "over the cap in all");
    assert_eq!(handler.stats().tcp_refused, 2);
    // Closing one frees its place (the server learns of it when the connection's task ends).
    drop(held.remove(0));
    let mut served = false;
    for _ in 0..200 {
        let (conn, answered) = tcp_query([127, 0, 0, 2], addr).await;
        if answered {
            held.push(conn);
            served = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(served, "a place freed by a closed connection is taken again");
    let _ = stop.send(true);
    server.await.expect("server stops");
}

#[tokio::test]
async fn a_client_trickling_bytes_does_not_keep_its_connection_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idle = Duration::from_millis(600);
    let (handler, addr, stop, server) = tcp_server(crate::TcpLimits { idle, ..crate::TcpLimits::default() }).await;
    let q = query(9, "example.com", 6, [0, 0], None, &[]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // A byte every fifth of the timeout: each read comes well within it, but the whole query
    // would take longer than it.
    let started = tokio::time::Instant::from_std(crate::clock::now());
    let mut sent = 0;
    for byte in &framed {
        if conn.write_all(std::slice::from_ref(byte)).await.is_err() {
            break;
        }
        sent += 1;
        let mut probe = [0u8; 1];
        // Waits a fifth of the timeout for the server to close (read gives 0 or an error).
        // Closed (or, once the query is whole, answered).
        if tokio::time::timeout(idle / 5, conn.read(&mut probe)).await.is_ok() {
            break;
        }
    }
    let took = tokio::time::Instant::from_std(crate::clock::now()) - started;
    assert!(sent < framed.len(), "the server closed the connection before the query was whole ({sent} of {} bytes sent)", framed.len());
    assert!(took >= idle * 9 / 10, "closed at the timeout, not before: {took:?}");
    assert_eq!(handler.stats().tcp_queries, 0);
    // A client that sends whole queries keeps its connection past the timeout.
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for _ in 0..4 {
        conn.write_all(&framed).await.expect("write");
        let mut answer = vec![0u8; 2 + framed.len() * 4];
        let n = conn.read(&mut answer).await.expect("answer");
        assert!(n > 2, "answered");
        tokio::time::sleep(idle / 2).await;
    }
    let _ = stop.send(true);
    server.await.expect("server stops");
}
