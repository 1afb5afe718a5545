//! veer's DNS end to end: real veer nodes on loopback answering real DNS queries over UDP and
//! TCP, regional takeover and hand-back through manifest edits, and hostile input.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use veer_dns::{DnsConfig, DnsError, DnsServer, RrlConfig};
use veer_node::node::{Node, NodeConfig};
use veer_testkit::{wait_until_async, World};

#[path = "dns/rfc2136.rs"]
mod rfc2136;
#[path = "dns/transfer.rs"]
mod transfer;

/// Starts veer nodes in a test [`World`] (the node is veer-node's; the world knows none).
trait NodeWorld {
    /// A node of `cluster` with its gateway on 127.{net}.{group}.1 and DNS on 127.{net}.{group}.53.
    async fn node(&self, cluster: &str, group: u8) -> Node;
    /// The same, its DNS server tuned with `settings`.
    async fn node_with(&self, cluster: &str, group: u8, settings: veer_dns::DnsSettings) -> Node;
}

impl NodeWorld for World {
    async fn node(&self, cluster: &str, group: u8) -> Node {
        self.node_with(cluster, group, veer_dns::DnsSettings::default()).await
    }

    async fn node_with(&self, cluster: &str, group: u8, mut settings: veer_dns::DnsSettings) -> Node {
        // The tests poll with the same question many times a second from 127.0.0.1, which the
        // rate limit would rightly hold back; its own tests ask from other addresses.
        settings.rrl.exempt.push("127.0.0.1/32".parse().expect("network"));
        let mut cfg = NodeConfig::new(vec![self.dir().to_path_buf()], cluster);
        cfg.listen = Some(SocketAddr::new(self.ip(group, 1), 0));
        cfg.admin = Some(SocketAddr::new(self.ip(group, 1), 0));
        cfg.dns = Some(SocketAddr::new(self.ip(group, 53), 0));
        cfg.reload_every = Duration::from_millis(100);
        cfg.dns_settings = settings;
        Node::start(cfg).await.expect("node starts")
    }
}

fn dns_addr(node: &Node) -> SocketAddr {
    node.dns.expect("the node runs DNS")
}

// === raw queries: messages built and read by hickory-proto, sent over real sockets ===

fn query_message(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(veer_testkit::clock::random_u16(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
    m.metadata.recursion_desired = true;
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

async fn udp_exchange(server: SocketAddr, from: IpAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).await.expect("bind client");
    sock.send_to(packet, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

async fn udp(server: SocketAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> (Message, usize) {
    let q = query_message(name, qtype, edns);
    let bytes = udp_exchange(server, IpAddr::V4(Ipv4Addr::LOCALHOST), &q.to_vec().expect("encode"), Duration::from_secs(2))
        .await
        .expect("an answer over UDP");
    let m = Message::from_vec(&bytes).expect("decodable answer");
    assert_eq!(m.metadata.id, q.metadata.id);
    (m, bytes.len())
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let q = query_message(name, qtype, None).to_vec().expect("encode");
    let mut s = TcpStream::connect(server).await.expect("connect");
    // RFC 1035 4.2.2: a two-byte length before each message.
    s.write_all(&u16::try_from(q.len()).expect("small").to_be_bytes()).await.expect("write");
    s.write_all(&q).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut len)).await.expect("answer in time").expect("read");
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).await.expect("read");
    Message::from_vec(&body).expect("decodable answer")
}

fn a_records(m: &Message) -> Vec<IpAddr> {
    m.answers.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(IpAddr::V4(a.0)) } else { None }).collect()
}

fn cname(m: &Message) -> Option<String> {
    m.answers.iter().find_map(|r| if let RData::CNAME(c) = &r.data { Some(c.0.to_string()) } else { None })
}

fn txts(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| {
            if let RData::TXT(t) = &r.data {
                Some(t.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<String>())
            } else {
                None
            }
        })
        .collect()
}

// === seed 002 worlds ===

const SERVICE_NAME: &str = "web-ns-p-prod-myapp.example.com.";
const OWNER_TXT: &str = "_external-dns-owner.cname-web-ns-p-prod-myapp.example.com.";
const REGIONS: [(&str, &str, u8); 3] = [("aks-weu-01", "weu", 1), ("aks-neu-01", "neu", 2), ("aks-frc-01", "frc", 3)];

/// One cluster of seed 002 as every node reads it: labelled with its cluster, all three
/// ExternalDNS controllers configured (the seed's "pre-configured" instances).
fn regional_cluster(w: &World, cluster: &str, region: &str, group: u8, adopts: &[&str], policy: &str) -> String {
    let adopts = if adopts.is_empty() { "[]".to_string() } else { format!("[{}]", adopts.join(", ")) };
    format!(
        "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {cluster}\nspec:\n  locality:\n    region: {region}\n  gateway:\n    address: {gw}:8080\n---\n\
apiVersion: cluster.router.io/v1alpha1\nkind: ClusterIdentity\nmetadata:\n  name: cluster-identity\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n  region: {region}\n  cluster: aks01\n  domain: example.com\n  environmentLetter: p\n  adoptsRegions: {adopts}\n---\n\
apiVersion: cluster.router.io/v1alpha1\nkind: DNSConfiguration\nmetadata:\n  name: dns-config\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n  externalDNSControllers:\n  - name: external-dns-weu\n    region: weu\n  - name: external-dns-neu\n    region: neu\n  - name: external-dns-frc\n    region: frc\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: Gateway\nmetadata:\n  name: default-gateway\n  namespace: istio-ingress\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n  controller: aks-istio-ingressgateway-internal\n  credentialName: cert-aks-ingress\n  targetPostfix: internal\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: ServiceRoute\nmetadata:\n  name: web\n  namespace: myapp\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n  serviceName: web\n  gatewayName: default-gateway\n  gatewayNamespace: istio-ingress\n  environment: prod\n  application: myapp\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: DNSPolicy\nmetadata:\n  name: default\n  namespace: myapp\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n{policy}",
        gw = w.ip(group, 1),
    )
}

fn active_policy(region: &str) -> String {
    format!("  mode: Active\n  sourceRegion: {region}\n")
}

const REGION_BOUND: &str = "  mode: RegionBound\n  sourceRegion: weu\n  sourceCluster: aks01\n";

fn write_active_world(w: &World, neu_adopts: &[&str]) {
    for (cluster, region, group) in REGIONS {
        let adopts = if region == "neu" { neu_adopts } else { &[] };
        w.write(&format!("{region}.yaml"), &regional_cluster(w, cluster, region, group, adopts, &active_policy(region)));
    }
}

/// The owner TXT values of the route record, as labels.
fn owners(m: &Message) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut out: Vec<_> = txts(m).iter().filter_map(|t| veer_dns::ownership::parse_txt_value(t)).collect();
    out.sort_by(|a, b| a.get("owner").cmp(&b.get("owner")));
    out
}

fn owner_of<'a>(
    labels: &'a [std::collections::BTreeMap<String, String>],
    owner: &str,
) -> Option<&'a std::collections::BTreeMap<String, String>> {
    labels.iter().find(|l| l.get("owner").map(String::as_str) == Some(owner))
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_destination_names_resolve_to_the_gateway_and_requests_through_them_succeed() {
    let w = World::new();
    let backends = w.backends("reviews", 5, 1).await;
    let backend = &backends[0];
    w.write(
        "world.yaml",
        &format!(
            "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: local\nspec:\n  locality:\n    region: r1\n---\n\
apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: bookinfo\n  labels:\n    app: reviews\nspec:\n  selector:\n    app: reviews\n  ports:\n  - name: http\n    port: 9080\n    targetPort: http\n---\n\
apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: reviews-1\n  namespace: bookinfo\nspec:\n  address: {}\n  ports:\n    http: {}\n  labels:\n    app: reviews\n---\n\
apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  hosts:\n  - reviews-failover.bookinfo.global\n  ports:\n  - number: 9080\n    protocol: HTTP\n    targetPort:\n      name: http\n  services:\n  - labels:\n      app: reviews\n    namespace: bookinfo\n",
            backend.addr().ip(),
            backend.addr().port()
        ),
    );
    let node = w.node("local", 1).await;
    let server = dns_addr(&node);

    // A hickory client, over UDP and over TCP.
    let name = Name::from_str("reviews-failover.bookinfo.global.").expect("name");
    let (mut client, bg) =
        Client::<TokioRuntimeProvider>::from_sender(UdpClientStream::builder(server, TokioRuntimeProvider::default()).build());
    tokio::spawn(bg);
    let udp_answer = client.query(name.clone(), DNSClass::IN, RecordType::A).await.expect("UDP answer");
    let (stream, sender) = TcpClientStream::new(server, None, Some(Duration::from_secs(2)), TokioRuntimeProvider::default());
    let (mut tcp_client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.expect("TCP connect"), sender);
    tokio::spawn(bg);
    let tcp_answer = tcp_client.query(name, DNSClass::IN, RecordType::A).await.expect("TCP answer");
    for m in [&*udp_answer, &*tcp_answer] {
        assert_eq!(a_records(m), vec![node.listen.ip()], "{m:?}");
        assert!(m.metadata.authoritative && !m.metadata.recursion_available, "{:?}", m.metadata);
    }

    // A request through the resolved address reaches the backend.
    let resolved = a_records(&udp_answer)[0];
    let mut s = TcpStream::connect(SocketAddr::new(resolved, node.listen.port())).await.expect("connect to the resolved gateway");
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: reviews-failover.bookinfo.global:9080\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await.expect("answer in time").expect("read");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("reviews-1"), "the backend names itself: {body}");

    // Zone rules: names veer does not serve are refused (never recursive), names under a
    // served host do not exist, and a served name without the asked type is NODATA.
    let (m, _) = udp(server, "www.example.org.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    let (m, _) = udp(server, "nope.reviews-failover.bookinfo.global.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.authorities.iter().any(|r| r.record_type() == RecordType::SOA));
    let (m, _) = udp(server, "reviews-failover.bookinfo.global.", RecordType::AAAA, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "NODATA: {m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_mode_each_regional_node_serves_its_own_zone_with_its_own_gateway() {
    let w = World::new();
    write_active_world(&w, &[]);
    let mut nodes = Vec::new();
    for (cluster, _, group) in REGIONS {
        nodes.push(w.node(cluster, group).await);
    }
    for ((cluster, region, _), node) in REGIONS.iter().zip(&nodes) {
        let server = dns_addr(node);
        for m in [udp(server, SERVICE_NAME, RecordType::A, None).await.0, tcp(server, SERVICE_NAME, RecordType::A).await] {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{cluster}: {m:?}");
            assert_eq!(cname(&m).as_deref(), Some(format!("aks01-{region}-internal.example.com.").as_str()), "{cluster}");
            assert_eq!(a_records(&m), vec![node.listen.ip()], "{cluster} answers with its own gateway");
        }
        let (m, _) = udp(server, OWNER_TXT, RecordType::TXT, Some(1232)).await;
        let labels = owners(&m);
        assert_eq!(labels.len(), 1, "{cluster} writes one zone: {labels:?}");
        let l = &labels[0];
        assert_eq!(l.get("owner").map(String::as_str), Some(format!("external-dns-{region}").as_str()));
        assert_eq!(l.get("resource").map(String::as_str), Some(format!("crd/myapp/web-external-dns-{region}").as_str()));
        assert_eq!(l.get("veer-writer").map(String::as_str), Some(*cluster));
        assert_eq!(l.get("veer-epoch").map(String::as_str), Some("1"));
        // As a zone's primary answers: NS at the apex with its glue (this server's address),
        // and the SOA with a NODATA answer, also at the end of a CNAME.
        let (m, _) = udp(server, "example.com.", RecordType::NS, None).await;
        let ns: Vec<String> =
            m.answers.iter().filter_map(|r| if let RData::NS(n) = &r.data { Some(n.0.to_string()) } else { None }).collect();
        assert_eq!(ns, ["ns.example.com."], "{cluster}: {m:?}");
        let glue: Vec<IpAddr> =
            m.additionals.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(IpAddr::V4(a.0)) } else { None }).collect();
        assert_eq!(glue, [server.ip()], "{cluster}: {m:?}");
        let (m, _) = udp(server, SERVICE_NAME, RecordType::AAAA, None).await;
        assert_eq!((m.metadata.response_code, cname(&m).is_some()), (ResponseCode::NoError, true), "{cluster}: {m:?}");
        assert_eq!(m.authorities.iter().map(|r| r.record_type()).collect::<Vec<_>>(), [RecordType::SOA], "{cluster}: {m:?}");
        // The gateway's A record sits at its own ownership name too.
        let (m, _) = udp(server, &format!("_external-dns-owner.a-aks01-{region}-internal.example.com."), RecordType::TXT, None).await;
        assert_eq!(owners(&m).len(), 1, "{m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_bound_one_node_serves_all_three_zones_and_udp_answers_truncate() {
    let w = World::new();
    for (cluster, region, group) in REGIONS {
        w.write(&format!("{region}.yaml"), &regional_cluster(&w, cluster, region, group, &[], REGION_BOUND));
    }
    let mut nodes = Vec::new();
    for (cluster, _, group) in REGIONS {
        nodes.push(w.node(cluster, group).await);
    }
    let weu = dns_addr(&nodes[0]);
    let (m, _) = udp(weu, SERVICE_NAME, RecordType::A, None).await;
    assert_eq!(cname(&m).as_deref(), Some("aks01-weu-internal.example.com."));
    assert_eq!(a_records(&m), vec![nodes[0].listen.ip()]);
    let registry = nodes[0].dns_server().expect("dns").registry();
    for (_, region, _) in REGIONS {
        let z = registry.zones.iter().find(|(z, _)| z.region == region).map(|(_, s)| s.clone()).expect("zone known");
        assert_eq!(z.writer.as_deref(), Some("aks-weu-01"), "zone {region}");
    }
    // The policy is inactive in neu and frc: they write no zone, so they serve none.
    for n in &nodes[1..] {
        let (m, _) = udp(dns_addr(n), SERVICE_NAME, RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m:?}");
    }

    // Three ownership TXT values (one per zone) exceed 512 bytes: without EDNS the UDP answer
    // is cut and flagged; with EDNS it is whole; over TCP it is whole.
    let (cut, len) = udp(weu, OWNER_TXT, RecordType::TXT, None).await;
    assert!(cut.metadata.truncation, "TC must be set: {cut:?}");
    assert!(len <= 512, "{len} bytes");
    let (whole, len) = udp(weu, OWNER_TXT, RecordType::TXT, Some(1232)).await;
    assert!(!whole.metadata.truncation);
    assert!(len > 512 && len <= 1232, "{len} bytes");
    let labels = owners(&whole);
    for (_, region, _) in REGIONS {
        let l = owner_of(&labels, &format!("external-dns-{region}")).unwrap_or_else(|| panic!("zone {region}: {labels:?}"));
        assert_eq!(l.get("veer-writer").map(String::as_str), Some("aks-weu-01"));
    }
    let (small, len) = udp(weu, OWNER_TXT, RecordType::TXT, Some(600)).await;
    assert!(small.metadata.truncation && len <= 600, "EDNS size honoured: {len} bytes");
    assert_eq!(owners(&tcp(weu, OWNER_TXT, RecordType::TXT).await).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_by_adoption_and_hand_back_without_two_writers() {
    let w = World::new();
    write_active_world(&w, &[]);
    let weu = w.node("aks-weu-01", 1).await;
    let neu = w.node("aks-neu-01", 2).await;
    let frc = w.node("aks-frc-01", 3).await;
    let (weu_ip, neu_ip) = (weu.listen.ip(), neu.listen.ip());
    let neu_dns = dns_addr(&neu);

    // The weu cluster fails; the platform team adds adoptsRegions: [weu] to neu's identity.
    weu.stop().await;
    w.write("neu.yaml", &regional_cluster(&w, "aks-neu-01", "neu", 2, &["weu"], &active_policy("neu")));
    let took = wait_until_async("neu takes over the weu zone", Duration::from_secs(5), || async {
        let (m, _) = udp(neu_dns, OWNER_TXT, RecordType::TXT, Some(1232)).await;
        owner_of(&owners(&m), "external-dns-weu").is_some()
    })
    .await;
    eprintln!("takeover visible in DNS {took:?} after the manifest edit");
    // One reload (100 ms here) plus one reconcile.
    assert!(took < Duration::from_secs(1), "takeover took {took:?}");
    let (m, _) = udp(neu_dns, SERVICE_NAME, RecordType::A, None).await;
    assert_eq!(a_records(&m), vec![neu_ip], "the weu zone answers with neu's gateway");
    let (m, _) = udp(neu_dns, OWNER_TXT, RecordType::TXT, Some(1232)).await;
    let labels = owners(&m);
    let weu_zone = owner_of(&labels, "external-dns-weu").expect("weu zone");
    assert_eq!(weu_zone.get("veer-writer").map(String::as_str), Some("aks-neu-01"));
    assert_eq!(weu_zone.get("veer-epoch").map(String::as_str), Some("2"));
    assert_eq!(weu_zone.get("resource").map(String::as_str), Some("crd/myapp/web-external-dns-weu"));
    let logged = neu
        .events
        .all()
        .iter()
        .any(|e| e.reason.contains("dns: zone weu/example.com: writer aks-weu-01 -> aks-neu-01 (adoption), epoch 2"));
    assert!(logged, "the takeover is an event: {:?}", neu.events.all());

    // weu comes back while the adoption stands: it does not take its records back.
    let weu = w.node("aks-weu-01", 1).await;
    let weu_dns = dns_addr(&weu);
    let (m, _) = udp(weu_dns, SERVICE_NAME, RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "weu must not serve the adopted zone: {m:?}");
    let st = weu.dns_server().expect("dns").registry().zones.iter().find(|(z, _)| z.region == "weu").map(|(_, s)| s.clone()).expect("zone");
    assert_eq!((st.writer.as_deref(), st.epoch), (Some("aks-neu-01"), 2), "weu knows who writes its zone");
    let (m, _) = udp(neu_dns, SERVICE_NAME, RecordType::A, None).await;
    assert_eq!(a_records(&m), vec![neu_ip]);

    // The adoption is removed: weu writes again (a new epoch) and neu stops.
    w.write("neu.yaml", &regional_cluster(&w, "aks-neu-01", "neu", 2, &[], &active_policy("neu")));
    wait_until_async("weu writes its zone again", Duration::from_secs(5), || async {
        let (m, _) = udp(weu_dns, OWNER_TXT, RecordType::TXT, Some(1232)).await;
        owner_of(&owners(&m), "external-dns-weu").is_some_and(|l| {
            l.get("veer-writer").map(String::as_str) == Some("aks-weu-01") && l.get("veer-epoch").map(String::as_str) == Some("3")
        })
    })
    .await;
    wait_until_async("neu stops writing the weu zone", Duration::from_secs(5), || async {
        let (m, _) = udp(neu_dns, OWNER_TXT, RecordType::TXT, Some(1232)).await;
        let l = owners(&m);
        owner_of(&l, "external-dns-weu").is_none() && owner_of(&l, "external-dns-neu").is_some()
    })
    .await;
    let (m, _) = udp(weu_dns, SERVICE_NAME, RecordType::A, None).await;
    assert_eq!(a_records(&m), vec![weu_ip]);
    let m = tcp(neu_dns, SERVICE_NAME, RecordType::A).await;
    assert_eq!(cname(&m).as_deref(), Some("aks01-neu-internal.example.com."), "neu keeps its own zone");
    let (m, _) = udp(dns_addr(&frc), SERVICE_NAME, RecordType::A, None).await;
    assert_eq!(cname(&m).as_deref(), Some("aks01-frc-internal.example.com."), "frc was never touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_the_gateway_address_veer_dns_endpoints_hands_to_externaldns_whatever_listen_says() {
    let w = World::new();
    write_active_world(&w, &[]);
    // A destination host too, answered with the gateway address.
    w.write("vd.yaml", "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata:\n  name: vd\n  namespace: infra\nspec:\n  hosts:\n  - go.infra.global\n  ports:\n  - number: 80\n    protocol: HTTP\n  services:\n  - labels:\n      app: server\n    namespace: infra\n");
    // `--listen` on another address of the machine than the Cluster's spec.gateway.address
    // (127.x.1.1, the load balancer's stand-in).
    let mut cfg = NodeConfig::new(vec![w.dir().to_path_buf()], "aks-weu-01");
    cfg.listen = Some(SocketAddr::new(w.ip(1, 7), 0));
    cfg.admin = Some(SocketAddr::new(w.ip(1, 7), 0));
    cfg.dns = Some(SocketAddr::new(w.ip(1, 53), 0));
    let node = Node::start(cfg).await.expect("node starts");
    let server = dns_addr(&node);

    // What `veer dns endpoints` (and the Kubernetes writer) hand to ExternalDNS.
    let sources: Vec<(String, String)> = ["weu.yaml", "neu.yaml", "frc.yaml", "vd.yaml"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read_to_string(w.dir().join(f)).expect("read")))
        .collect();
    let set = veer_model::from_sources(&sources).unwrap_or_else(|r| panic!("{r}")).into_set();
    let plan = veer_dns::plan::cluster(&set, "aks-weu-01", &veer_dns::plan::PlanOptions::default());
    let handed: Vec<IpAddr> = plan
        .endpoints
        .iter()
        .filter(|e| e.record_type == veer_dns::plan::RecordKind::A && e.dns_name == "aks01-weu-internal.example.com")
        .map(|e| e.target.parse().expect("an IP"))
        .collect();
    assert_eq!(handed.first(), Some(&w.ip(1, 1)), "{:?}", plan.endpoints);

    let (m, _) = udp(server, "aks01-weu-internal.example.com.", RecordType::A, None).await;
    assert_eq!(a_records(&m), vec![handed[0]], "the gateway record veer serves is the one ExternalDNS gets");
    let (m, _) = udp(server, SERVICE_NAME, RecordType::A, None).await;
    assert_eq!(a_records(&m), vec![handed[0]]);
    let (m, _) = udp(server, "go.infra.global.", RecordType::A, None).await;
    assert_eq!(a_records(&m), vec![handed[0]], "destination hosts too");
    assert_eq!(node.listen.ip(), w.ip(1, 7), "the socket moved, the address clients are told did not");
}

fn small_set() -> Arc<veer_model::set::ManifestSet> {
    let text = "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata:\n  name: vd\n  namespace: infra\nspec:\n  hosts:\n  - go.infra.global\n  ports:\n  - number: 80\n    protocol: HTTP\n  services:\n  - labels:\n      app: server\n    namespace: infra\n";
    Arc::new(veer_model::from_sources(&[("vd.yaml".to_string(), text.to_string())]).unwrap_or_else(|r| panic!("{r}")).into_set())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_port_in_use_is_refused_naming_the_address() {
    let w = World::new();
    let taken = UdpSocket::bind(SocketAddr::new(w.ip(1, 54), 0)).await.expect("bind");
    let addr = taken.local_addr().expect("address");
    let (_tx, rx) = tokio::sync::watch::channel(small_set());
    let err = DnsServer::start(DnsConfig::new(addr, "default", w.ip(1, 1)), rx, None).await.err().expect("the port is taken");
    assert!(matches!(err, DnsError::Bind { protocol: "udp", addr: a, .. } if a == addr), "{err:?}");
    assert!(err.to_string().starts_with(&format!("cannot listen on {addr}/udp (dns): ")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_packets_are_dropped_without_harm() {
    let w = World::new();
    let (_tx, rx) = tokio::sync::watch::channel(small_set());
    let dns = DnsServer::start(DnsConfig::new(SocketAddr::new(w.ip(1, 53), 0), "default", w.ip(1, 1)), rx, None).await.expect("dns starts");
    let from = w.ip(7, 1);
    let valid = query_message("go.infra.global.", RecordType::A, None).to_vec().expect("encode");
    let mut as_response = query_message("go.infra.global.", RecordType::A, None);
    as_response.metadata.message_type = MessageType::Response;
    let mut truncated_question = valid.clone();
    truncated_question.truncate(valid.len() - 3);
    let mut bad_counts = valid.clone();
    bad_counts[5] = 9; // nine questions announced, one present
    let mut rng = fastrand::Rng::with_seed(7);
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0; 5],
        vec![0xff; 11],
        truncated_question,
        bad_counts,
        as_response.to_vec().expect("encode"),
        vec![0xAB; 4000],
        vec![0x00; 65_000],
    ];
    for _ in 0..200 {
        let n = rng.usize(12..600);
        let mut p: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
        p[2] &= 0x7f; // a query, so only the body is junk
        garbage.push(p);
    }
    for p in &garbage {
        let sock = UdpSocket::bind(SocketAddr::new(from, 0)).await.expect("bind");
        sock.send_to(p, dns.addr).await.expect("send");
    }
    // None of that gets an answer…
    for p in garbage.iter().take(8) {
        assert!(udp_exchange(dns.addr, from, p, Duration::from_millis(100)).await.is_none(), "{} bytes answered", p.len());
    }
    // …and TCP survives a lying length prefix and junk.
    let mut s = TcpStream::connect(dns.addr).await.expect("connect");
    s.write_all(&[0xff, 0xff, 1, 2, 3]).await.expect("write");
    drop(s);
    let mut s = TcpStream::connect(dns.addr).await.expect("connect");
    s.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.expect("write");
    drop(s);
    // The server still answers, over both transports.
    let (m, _) = udp(dns.addr, "go.infra.global.", RecordType::A, None).await;
    assert_eq!(a_records(&m), vec![w.ip(1, 1)]);
    let m = tcp(dns.addr, "go.infra.global.", RecordType::A).await;
    assert_eq!(a_records(&m), vec![w.ip(1, 1)]);
    let stats = dns.stats();
    assert!(stats.malformed_dropped >= 8, "{stats:?}");
}

/// A VirtualDestination with `n` hosts `h{i}.infra.global`.
fn many_hosts_set(n: usize) -> Arc<veer_model::set::ManifestSet> {
    let hosts: String = (0..n).map(|i| format!("  - h{i}.infra.global\n")).collect();
    let text = format!("apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata:\n  name: vd\n  namespace: infra\nspec:\n  hosts:\n{hosts}  ports:\n  - number: 80\n    protocol: HTTP\n  services:\n  - labels:\n      app: server\n    namespace: infra\n");
    Arc::new(veer_model::from_sources(&[("vd.yaml".to_string(), text)]).unwrap_or_else(|r| panic!("{r}")).into_set())
}

/// Sends `queries` from one socket in batches of 50 and reads every reply to each batch:
/// (full answers, empty truncated answers).
async fn ask_all(sock: &UdpSocket, server: SocketAddr, queries: &[Message]) -> (Vec<Message>, usize) {
    let (mut full, mut slipped) = (Vec::new(), 0usize);
    let mut buf = vec![0u8; 4096];
    for batch in queries.chunks(50) {
        for q in batch {
            sock.send_to(&q.to_vec().expect("encode"), server).await.expect("send");
        }
        let mut got = 0;
        while got < batch.len() {
            let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await else { break };
            got += 1;
            let m = Message::from_vec(&buf[..n]).expect("decodable");
            if m.metadata.truncation && m.answers.is_empty() {
                slipped += 1;
            } else {
                full.push(m);
            }
        }
    }
    (full, slipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_a_resolver_asking_varied_questions_and_limits_a_flood_of_one() {
    let w = World::new();
    let (_tx, rx) = tokio::sync::watch::channel(many_hosts_set(300));
    // The defaults: 10 identical answers per second per /24, slip 2.
    let dns = DnsServer::start(DnsConfig::new(SocketAddr::new(w.ip(1, 53), 0), "default", w.ip(1, 1)), rx, None).await.expect("dns starts");

    // A resolver: one source, 300 names, A and AAAA (NODATA) for each, as fast as it can.
    let resolver = UdpSocket::bind(SocketAddr::new(w.ip(8, 1), 0)).await.expect("bind");
    let questions: Vec<Message> =
        (0..300).flat_map(|i| [RecordType::A, RecordType::AAAA].map(|t| query_message(&format!("h{i}.infra.global."), t, None))).collect();
    let (full, slipped) = ask_all(&resolver, dns.addr, &questions).await;
    assert_eq!((full.len(), slipped), (600, 0), "every question of the resolver is answered");
    assert!(full.iter().all(|m| m.metadata.response_code == ResponseCode::NoError), "{full:?}");
    assert_eq!(full.iter().filter(|m| a_records(m) == vec![w.ip(1, 1)]).count(), 300);

    // A flood of one identical question from one /24 (a spoofed victim's): past ten answers
    // the rest are dropped or, every second one, slipped.
    let flood = UdpSocket::bind(SocketAddr::new(w.ip(9, 1), 0)).await.expect("bind");
    let same: Vec<Message> = (0..400).map(|_| query_message("h7.infra.global.", RecordType::A, None)).collect();
    let (full, slipped) = ask_all(&flood, dns.addr, &same).await;
    assert!(full.len() >= 10, "one second of credit is answered: {}", full.len());
    assert!(full.len() < 100, "the flood is limited: {} full answers of 400", full.len());
    let limited = 400 - full.len();
    assert!(slipped.abs_diff(limited / 2) <= 1, "every other limited answer slips as TC: {slipped} of {limited}");
    // The victim's other questions, another network's, and TCP are not affected.
    let (full, _) = ask_all(&flood, dns.addr, &[query_message("h8.infra.global.", RecordType::A, None)]).await;
    assert_eq!(full.len(), 1);
    let (full, _) = ask_all(&resolver, dns.addr, &[query_message("h7.infra.global.", RecordType::A, None)]).await;
    assert_eq!(full.len(), 1);
    assert_eq!(a_records(&tcp(dns.addr, "h7.infra.global.", RecordType::A).await), vec![w.ip(1, 1)]);
    let stats = dns.stats();
    assert_eq!(stats.rrl_slipped, slipped as u64, "{stats:?}");
    assert_eq!(stats.rrl_dropped, (limited - slipped) as u64, "{stats:?}");
    assert_eq!(stats.rrl_by_class[veer_dns::rrl::AnswerClass::Answer.index()], (stats.rrl_dropped, stats.rrl_slipped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_off_and_exempt_networks_answer_every_identical_question() {
    let w = World::new();
    for (i, rrl) in [
        RrlConfig { enabled: false, ..RrlConfig::default() },
        RrlConfig { exempt: vec![format!("{}/24", w.ip(9, 0)).parse().expect("net")], ..RrlConfig::default() },
    ]
    .into_iter()
    .enumerate()
    {
        let (_tx, rx) = tokio::sync::watch::channel(many_hosts_set(1));
        let mut cfg = DnsConfig::new(SocketAddr::new(w.ip(1, 53), 0), "default", w.ip(1, 1));
        cfg.rrl = rrl;
        let dns = DnsServer::start(cfg, rx, None).await.expect("dns starts");
        let flood = UdpSocket::bind(SocketAddr::new(w.ip(9, 1), 0)).await.expect("bind");
        let same: Vec<Message> = (0..200).map(|_| query_message("h0.infra.global.", RecordType::A, None)).collect();
        let (full, slipped) = ask_all(&flood, dns.addr, &same).await;
        assert_eq!((full.len(), slipped), (200, 0), "case {i}");
        dns.stop().await;
    }
}

/// The value of one sample of the node's `/metrics` (OpenMetrics text), 0 when absent.
fn sample(metrics: &str, name_and_labels: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or_else(|_| panic!("{name_and_labels}: {v}")) as u64)
}

async fn scrape(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).await.expect("connect to admin");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await.expect("answer in time").expect("read");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_counters_are_on_the_node_metrics() {
    let w = World::new();
    for (cluster, region, group) in REGIONS {
        w.write(&format!("{region}.yaml"), &regional_cluster(&w, cluster, region, group, &[], REGION_BOUND));
    }
    let node = w.node("aks-weu-01", 1).await;
    let server = dns_addr(&node);
    let before = scrape(node.admin).await;
    assert!(before.contains("# TYPE veer_dns_queries counter"), "{before}");
    assert_eq!(sample(&before, "veer_dns_queries_total{transport=\"udp\"}"), 0, "{before}");

    // Real queries over both transports: an answer, a refusal, a truncated answer.
    let mut rcodes: Vec<ResponseCode> = Vec::new();
    let (m, _) = udp(server, SERVICE_NAME, RecordType::A, None).await;
    rcodes.push(m.metadata.response_code);
    let (m, _) = udp(server, "www.example.org.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    rcodes.push(m.metadata.response_code);
    let (m, _) = udp(server, OWNER_TXT, RecordType::TXT, None).await;
    assert!(m.metadata.truncation, "{m:?}");
    rcodes.push(m.metadata.response_code);
    let m = tcp(server, SERVICE_NAME, RecordType::A).await;
    rcodes.push(m.metadata.response_code);
    // Malformed datagrams, dropped unanswered.
    let junk = UdpSocket::bind(SocketAddr::new(w.ip(7, 1), 0)).await.expect("bind");
    for p in [vec![0u8; 5], vec![0xff; 11], vec![0xAB; 300]] {
        junk.send_to(&p, server).await.expect("send");
    }
    // A flood from one source network, past the rate limit (50/s, burst 100).
    let flood = UdpSocket::bind(SocketAddr::new(w.ip(9, 1), 0)).await.expect("bind");
    for _ in 0..300 {
        flood.send_to(&query_message(SERVICE_NAME, RecordType::A, None).to_vec().expect("encode"), server).await.expect("send");
    }

    // The server reads what the kernel queued at its own pace, and a loaded machine may drop
    // part of a flood before the server sees it: wait until the counts hold still, past the
    // rate limit's burst.
    // Still: the same count for 100 ms.
    let text = std::cell::RefCell::new(String::new());
    let last = std::cell::Cell::new((u64::MAX, veer_testkit::clock::std_now()));
    let what = veer_testkit::lazy(|| format!("the counters did not move on /metrics: {}", text.borrow()));
    wait_until_async(what, Duration::from_secs(10), || async {
        let scraped = scrape(node.admin).await;
        let udp_queries = sample(&scraped, "veer_dns_queries_total{transport=\"udp\"}");
        let malformed = sample(&scraped, "veer_dns_malformed_dropped_total");
        *text.borrow_mut() = scraped;
        let (before, since) = last.get();
        if udp_queries != before {
            last.set((udp_queries, veer_testkit::clock::std_now()));
            return false;
        }
        malformed >= 3 && udp_queries > 3 + 100 && veer_testkit::clock::std_since(since) >= Duration::from_millis(100)
    })
    .await;
    let text = text.into_inner();
    let stats = node.dns_server().expect("dns").stats();
    assert_eq!(sample(&text, "veer_dns_queries_total{transport=\"udp\"}"), stats.udp_queries, "{text}");
    assert_eq!(sample(&text, "veer_dns_queries_total{transport=\"tcp\"}"), 1, "{text}");
    assert_eq!(sample(&text, "veer_dns_malformed_dropped_total"), 3, "{text}");
    assert!(sample(&text, "veer_dns_truncated_total") >= 1, "{text}");
    assert!(sample(&text, "veer_dns_refused_total") >= 1, "{text}");
    assert!(sample(&text, "veer_dns_rate_limited_total{action=\"dropped\"}") > 0, "{text}");
    assert!(sample(&text, "veer_dns_rate_limited_total{action=\"slipped\"}") > 0, "{text}");
    // Every answer is counted by its response code: the four above and the flood's answered part.
    assert_eq!(sample(&text, "veer_dns_responses_total{rcode=\"refused\"}"), 1, "{text}");
    let answered: u64 = veer_dns::RCODES.iter().map(|r| sample(&text, &format!("veer_dns_responses_total{{rcode=\"{r}\"}}"))).sum();
    let flood_answered = stats.udp_queries - 3 - stats.rrl_dropped - stats.rrl_slipped;
    assert_eq!(answered, 4 + flood_answered, "{rcodes:?} {stats:?} {text}");
}
