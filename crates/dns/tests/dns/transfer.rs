//! Zone transfers and NOTIFY: TSIG-signed AXFR/IXFR over TCP from a Rust client, refusals of
//! every unsigned or badly signed request, and real Knot (Debian's `knot`) as a secondary of
//! veer's zone: it transfers it, serves the same answers, and follows a change by NOTIFY.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use veer_dns::transfer::{TransferConfig, TsigKey};
use veer_dns::DnsSettings;
use veer_testkit::{wait_until_async, TempDir, World};

use crate::{active_policy, regional_cluster, write_active_world, NodeWorld, OWNER_TXT, SERVICE_NAME};

/// The test key (32 bytes, base64), as a key file and for the clients.
const SECRET: &str = "dmVlci10ZXN0LWtleS0zMi1ieXRlcy1sb25nLW9rIQ==";
const KEY_NAME: &str = "veer-xfr.";

fn key() -> TsigKey {
    TsigKey::parse(&format!("hmac-sha256:{KEY_NAME}:{SECRET}"), "test").expect("key")
}

fn signer(secret: &[u8]) -> TSigner {
    TSigner::new(secret.to_vec(), TsigAlgorithm::HmacSha256, Name::from_ascii(KEY_NAME).expect("name"), 300).expect("signer")
}

fn secret() -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(SECRET).expect("base64")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs()
}

fn xfr_message(zone: &str, qtype: RecordType, ixfr_serial: Option<u32>) -> Message {
    let mut m = Message::new(veer_testkit::clock::random_u16(), MessageType::Query, OpCode::Query);
    let zone = Name::from_ascii(zone).expect("zone");
    m.add_query(Query::query(zone.clone(), qtype));
    if let Some(serial) = ixfr_serial {
        let soa = SOA::new(zone.clone(), zone.clone(), serial, 60, 60, 600, 60);
        m.add_authority(Record::from_rdata(zone, 0, RData::SOA(soa)));
    }
    m
}

/// One message over TCP, and the bytes of the one answer.
async fn tcp_exchange(server: SocketAddr, q: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server).await.expect("connect");
    s.write_all(&u16::try_from(q.len()).expect("small").to_be_bytes()).await.expect("write");
    s.write_all(q).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.expect("answer in time").expect("read");
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).await.expect("read");
    body
}

fn soa_serial(records: &[Record]) -> Option<u32> {
    records.iter().find_map(|r| if let RData::SOA(s) = &r.data { Some(s.serial) } else { None })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_need_tcp_and_a_valid_tsig_signature() {
    let w = World::new();
    write_active_world(&w, &[]);
    let settings = DnsSettings { transfer: TransferConfig { key: Some(key()), notify: Vec::new() }, ..DnsSettings::default() };
    let node = w.node_with("aks-weu-01", 1, settings).await;
    let server = node.dns.expect("dns");

    // Signed AXFR over TCP: the whole zone between two SOAs, and a response signed with the key.
    let mut q = xfr_message("example.com.", RecordType::AXFR, None);
    let mut verifier = q.finalize(&signer(&secret()), unix_now()).expect("sign").expect("a verifier");
    let bytes = tcp_exchange(server, &q.to_vec().expect("encode")).await;
    let answer = verifier.verify(&bytes).expect("the response is signed with the key");
    let m: &Message = &answer;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    let records = &m.answers;
    assert_eq!(records.first().map(|r| r.record_type()), Some(RecordType::SOA));
    assert_eq!(records.last().map(|r| r.record_type()), Some(RecordType::SOA));
    let names: Vec<String> = records.iter().map(|r| format!("{} {}", r.name, r.record_type())).collect();
    for want in [format!("{SERVICE_NAME} CNAME"), format!("{OWNER_TXT} TXT"), "example.com. NS".into(), "ns.example.com. A".into()] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let serial = soa_serial(records).expect("serial");

    // IXFR from a secondary at our serial: the SOA alone; from an older one: the whole zone.
    let mut q = xfr_message("example.com.", RecordType::IXFR, Some(serial));
    q.finalize(&signer(&secret()), unix_now()).expect("sign");
    let m = Message::from_vec(&tcp_exchange(server, &q.to_vec().expect("encode")).await).expect("decode");
    assert_eq!(m.answers.len(), 1, "{m:?}");
    let mut q = xfr_message("example.com.", RecordType::IXFR, Some(serial.wrapping_sub(5)));
    q.finalize(&signer(&secret()), unix_now()).expect("sign");
    let m = Message::from_vec(&tcp_exchange(server, &q.to_vec().expect("encode")).await).expect("decode");
    assert_eq!(m.answers.len(), records.len(), "{m:?}");

    // Unsigned: REFUSED. Another secret under the same key name: NOTAUTH. Over UDP: REFUSED.
    let q = xfr_message("example.com.", RecordType::AXFR, None);
    let m = Message::from_vec(&tcp_exchange(server, &q.to_vec().expect("encode")).await).expect("decode");
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::Refused, 0));
    let mut q = xfr_message("example.com.", RecordType::AXFR, None);
    q.finalize(&signer(b"another-secret-of-32-bytes-long!"), unix_now()).expect("sign");
    let m = Message::from_vec(&tcp_exchange(server, &q.to_vec().expect("encode")).await).expect("decode");
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NotAuth, 0), "{m:?}");
    // A signature from an hour ago: NOTAUTH (BADTIME).
    let mut q = xfr_message("example.com.", RecordType::AXFR, None);
    q.finalize(&signer(&secret()), unix_now() - 3600).expect("sign");
    let m = Message::from_vec(&tcp_exchange(server, &q.to_vec().expect("encode")).await).expect("decode");
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NotAuth, 0), "{m:?}");
    let mut q = xfr_message("example.com.", RecordType::AXFR, None);
    q.finalize(&signer(&secret()), unix_now()).expect("sign");
    let sock = UdpSocket::bind(SocketAddr::new(w.ip(7, 1), 0)).await.expect("bind");
    sock.send_to(&q.to_vec().expect("encode"), server).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await.expect("in time").expect("recv");
    let m = Message::from_vec(&buf[..n]).expect("decode");
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::Refused, 0));
    let stats = node.dns_server().expect("dns").stats();
    assert_eq!((stats.transfers, stats.transfers_refused), (3, 4), "{stats:?}");

    // A node without a key refuses even a signed request.
    let plain = w.node("aks-neu-01", 2).await;
    let mut q = xfr_message("example.com.", RecordType::AXFR, None);
    q.finalize(&signer(&secret()), unix_now()).expect("sign");
    let m = Message::from_vec(&tcp_exchange(plain.dns.expect("dns"), &q.to_vec().expect("encode")).await).expect("decode");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

/// Debian's knotd, killed when dropped.
struct Knot {
    child: Child,
    dir: TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Knot {
    /// A Knot secondary of `zone` on `addr`, transferring from `primary` with the test key and
    /// taking NOTIFY from the primary's address.
    fn secondary(addr: SocketAddr, zone: &str, primary: SocketAddr) -> Knot {
        let dir = TempDir::new("knot").keep_on_failure();
        let d = dir.path().display();
        let conf = format!(
            "server:\n  rundir: \"{d}\"\n  listen: {ip}@{port}\n\
database:\n  storage: \"{d}/db\"\n\
log:\n  - target: \"{d}/knot.log\"\n    any: debug\n\
key:\n  - id: {KEY_NAME}\n    algorithm: hmac-sha256\n    secret: {SECRET}\n\
remote:\n  - id: veer\n    address: {pip}@{pport}\n    key: {KEY_NAME}\n\
acl:\n  - id: notify-from-veer\n    address: {pip}\n    key: {KEY_NAME}\n    action: notify\n\
template:\n  - id: default\n    storage: \"{d}/zones\"\n    zonefile-sync: -1\n    zonefile-load: none\n    journal-content: none\n\
zone:\n  - domain: {zone}\n    master: veer\n    acl: notify-from-veer\n",
            ip = addr.ip(),
            port = addr.port(),
            pip = primary.ip(),
            pport = primary.port(),
        );
        let path = dir.path().join("knot.conf");
        std::fs::write(&path, conf).expect("write knot.conf");
        let knotd = ["/usr/sbin/knotd", "knotd"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok())
            .expect("knotd runs: Debian's `knot` package (.ci/run installs it)");
        let child = Command::new(knotd).arg("-c").arg(&path).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("knotd starts");
        Knot { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }
}

/// A port free for both UDP and TCP on `ip` right now.
async fn free_port(ip: IpAddr) -> SocketAddr {
    for _ in 0..16 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).await.expect("bind");
        let addr = udp.local_addr().expect("addr");
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port on {ip}");
}

/// One question over UDP, `None` when nothing answers in time.
async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let q = crate::query_message(name, qtype, Some(1232));
    let bytes = crate::udp_exchange(server, server.ip(), &q.to_vec().ok()?, Duration::from_millis(500)).await?;
    Message::from_vec(&bytes).ok()
}

/// What a resolver takes from an answer: the code, and each section's records as text, sorted.
fn seen(m: &Message) -> (ResponseCode, Vec<String>, Vec<String>) {
    let text = |rs: &[Record]| {
        let mut v: Vec<String> = rs.iter().map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data)).collect();
        v.sort();
        v
    };
    (m.metadata.response_code, text(&m.answers), text(&m.authorities))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_as_a_secondary_serves_veers_zone_and_follows_a_change_by_notify() {
    let w = World::new();
    write_active_world(&w, &[]);
    let knot_addr = free_port(w.ip(5, 53)).await;
    let settings = DnsSettings { transfer: TransferConfig { key: Some(key()), notify: vec![knot_addr] }, ..DnsSettings::default() };
    let node = w.node_with("aks-weu-01", 1, settings).await;
    let veer = node.dns.expect("dns");
    let knot = Knot::secondary(knot_addr, "example.com.", veer);

    let log = || knot.log();
    wait_until_async(
        veer_testkit::lazy(|| format!("knot transfers veer's zone; its log:\n{}", log())),
        Duration::from_secs(20),
        || async {
            ask(knot_addr, SERVICE_NAME, RecordType::A)
                .await
                .is_some_and(|m| m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty())
        },
    )
    .await;
    // Knot answers what veer answers, record for record (TTLs included).
    let questions = [
        (SERVICE_NAME, RecordType::A),
        (SERVICE_NAME, RecordType::AAAA),
        (OWNER_TXT, RecordType::TXT),
        ("aks01-weu-internal.example.com.", RecordType::A),
        ("example.com.", RecordType::NS),
        ("example.com.", RecordType::SOA),
        ("ns.example.com.", RecordType::A),
        ("nope.example.com.", RecordType::A),
    ];
    for (name, qtype) in questions {
        let from_veer = ask(veer, name, qtype).await.expect("veer answers");
        let from_knot = ask(knot_addr, name, qtype).await.expect("knot answers");
        assert_eq!(seen(&from_knot), seen(&from_veer), "{name} {qtype}");
    }

    // A change: a second ServiceRoute in weu's manifests. Knot's refresh timer is the SOA's
    // (60 s), so only the NOTIFY brings it over in time.
    let serial_before = soa_serial(&ask(veer, "example.com.", RecordType::SOA).await.expect("soa").answers).expect("serial");
    let api = "\n---\napiVersion: routing.router.io/v1alpha1\nkind: ServiceRoute\nmetadata:\n  name: api\n  namespace: myapp\n  labels:\n    topology.istio.io/cluster: aks-weu-01\nspec:\n  serviceName: api\n  gatewayName: default-gateway\n  gatewayNamespace: istio-ingress\n  environment: prod\n  application: myapp\n";
    w.write("weu.yaml", &(regional_cluster(&w, "aks-weu-01", "weu", 1, &[], &active_policy("weu")) + api));
    const API: &str = "api-ns-p-prod-myapp.example.com.";
    wait_until_async(
        veer_testkit::lazy(|| format!("knot serves the new name after NOTIFY; its log:\n{}", log())),
        Duration::from_secs(15),
        || async { ask(knot_addr, API, RecordType::A).await.is_some_and(|m| !m.answers.is_empty()) },
    )
    .await;
    let serial_after = soa_serial(&ask(knot_addr, "example.com.", RecordType::SOA).await.expect("soa").answers).expect("serial");
    assert!((serial_after.wrapping_sub(serial_before) as i32) > 0, "{serial_before} -> {serial_after}");
    for (name, qtype) in [(API, RecordType::A), ("example.com.", RecordType::SOA)] {
        let from_veer = ask(veer, name, qtype).await.expect("veer answers");
        let from_knot = ask(knot_addr, name, qtype).await.expect("knot answers");
        assert_eq!(seen(&from_knot), seen(&from_veer), "{name} {qtype}");
    }
    let stats = node.dns_server().expect("dns").stats();
    assert!(stats.notifies_acked >= 1 && stats.transfers >= 2, "{stats:?}");
}
