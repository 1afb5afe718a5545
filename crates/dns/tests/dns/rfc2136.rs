//! veer writing regional zones into real BIND 9 and Knot servers (RFC 2136 + TSIG), started on
//! loopback with a zone file and a key: fenced first write, update, a stale writer refused by
//! the server itself, adoption of a zone ExternalDNS wrote, and failed reads that delete nothing.
//! Every outcome is read back from the server by a TSIG-signed AXFR.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, Record, RecordType};
use veer_dns::ownership::parse_txt_value;
use veer_dns::plan::{Endpoint, RecordKind, Source, ZoneId};
use veer_dns::update::{plan_change, read_fence, Desired, Fence, UpdateError, ZoneContents, ZoneServer};
use veer_testkit::{wait_until_async, World};

use super::NodeWorld;

/// The test key's secret, base64 as tsig-keygen prints it.
const SECRET: &str = "dmVlci10ZXN0LXRzaWcta2V5LW9mLTMyLWJ5dGVzISE=";
const OTHER_SECRET: &str = "YW5vdGhlci1rZXktdGhhdC1pcy1ub3QtdGhlLXJpZ2h0";
const ZONE: &str = "example.com";
const PORT: u16 = 5353;

use veer_testkit::authdns::{AuthKind as Kind, AuthServer, ZoneSpec};

/// A primary server for `example.com` on its own loopback address, stopped (by its PID) on drop.
struct Primary {
    addr: SocketAddr,
    _server: AuthServer,
}

/// A port free for TCP and UDP on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

const ZONE_HEAD: &str = "$ORIGIN example.com.
$TTL 60
@ IN SOA ns.example.com. hostmaster.example.com. 1 60 60 600 60
@ IN NS ns.example.com.
ns IN A 192.0.2.53
";

impl Primary {
    /// Starts the server with `records` (zone file lines) after the SOA and NS; `None` when the
    /// binary is absent outside CI (CI installs it: `.ci/run`), which the test says loudly.
    async fn start(world: &World, kind: Kind, group: u8, records: &str) -> Option<Primary> {
        // named listens only on addresses an interface carries, and loopback carries 127.0.0.1
        // alone: BIND gets a free port there, Knot the world's own address.
        let addr = match kind {
            Kind::Bind => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), free_port()),
            Kind::Knot => SocketAddr::new(world.ip(group, 53), PORT),
        };
        let spec =
            ZoneSpec { zone: ZONE.into(), text: format!("{ZONE_HEAD}{records}"), key_name: "veer-key".into(), secret: SECRET.into() };
        let Some(server) = AuthServer::start(kind, addr, &spec, None).unwrap_or_else(|e| panic!("start {kind:?}: {e}")) else {
            eprintln!("SKIPPED: {kind:?} is not installed (apt-get install bind9 knot); this test did not run");
            return None;
        };
        let primary = Primary { addr, _server: server };
        let zs = primary.writer(SECRET);
        wait_until_async(format!("{kind:?} serves {ZONE} by AXFR on {addr}"), Duration::from_secs(20), || {
            let zs = zs.clone();
            async move { zs.read().await.is_ok() }
        })
        .await;
        Some(primary)
    }

    /// The DNSZone of this server's zone and its Secret holding `secret`, as a node reads them.
    fn manifests(&self, secret: &str) -> String {
        format!(
            "apiVersion: veer.io/v1alpha1
kind: DNSZone
metadata:
  name: weu
  namespace: dns
spec:
  region: weu
  zone: {ZONE}
  server: {addr}
  tsig:
    keyName: veer-key
    secretRef:
      name: tsig
---
apiVersion: v1
kind: Secret
metadata:
  name: tsig
  namespace: dns
stringData:
  rfc2136_tsig_secret: {secret}
",
            addr = self.addr
        )
    }

    /// A writer of this server's zone with `secret`, configured from [`Primary::manifests`].
    fn writer(&self, secret: &str) -> ZoneServer {
        let set = veer_model::from_sources(&[("zone.yaml".into(), self.manifests(secret))]).expect("the DNSZone is accepted").into_set();
        ZoneServer::new(&set.dns_zones[0], "_external-dns-owner.").expect("writer")
    }
}

fn endpoint(name: &str, kind: RecordKind, target: &str) -> Endpoint {
    Endpoint {
        name: format!("{}-external-dns-weu", name.split('.').next().unwrap_or(name)),
        namespace: "myapp".into(),
        labels: Default::default(),
        annotations: Default::default(),
        controller: "external-dns-weu".into(),
        zone: ZoneId { domain: ZONE.into(), region: "weu".into() },
        source: Source::Route { namespace: "myapp".into(), name: "web".into() },
        dns_name: name.into(),
        record_type: kind,
        target: target.into(),
        ttl: 60,
    }
}

const ROUTE: &str = "web-ns-p-prod-myapp.example.com";

/// What the writer of `cluster` (gateway `ip`) puts in the zone at `epoch`.
fn desired(cluster: &str, short: &str, ip: &str, epoch: u64) -> Desired {
    let gateway = format!("{short}-internal.example.com");
    Desired {
        writer: cluster.into(),
        epoch,
        endpoints: vec![endpoint(ROUTE, RecordKind::CNAME, &gateway), endpoint(&gateway, RecordKind::A, ip)],
    }
}

/// Every record but the SOA, as sorted `name type data` lines.
fn lines(contents: &ZoneContents) -> Vec<String> {
    let mut out: Vec<String> = contents
        .records
        .iter()
        .filter(|r| r.record_type() != RecordType::SOA)
        .map(|r| format!("{} {} {}", r.name.to_ascii().to_ascii_lowercase(), r.record_type(), r.data))
        .collect();
    out.sort();
    out
}

fn at<'a>(contents: &'a ZoneContents, name: &str, t: RecordType) -> Vec<&'a Record> {
    let want = format!("{name}.");
    contents.records.iter().filter(|r| r.name.to_ascii().eq_ignore_ascii_case(&want) && r.record_type() == t).collect()
}

fn target_of(contents: &ZoneContents, name: &str) -> Option<String> {
    at(contents, name, RecordType::CNAME).first().and_then(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.to_ascii().to_ascii_lowercase()),
        _ => None,
    })
}

fn fence(zs: &ZoneServer, contents: &ZoneContents) -> Option<Fence> {
    read_fence(&zs.origin, &zs.owner, contents).expect("the epoch record is veer's").map(|(f, _)| f)
}

/// First write, a no-op rewrite, a takeover at a higher epoch, and the stale writers refused by
/// the server: a first write raced by another (YXDOMAIN) and an old epoch's update (NXRRSET).
async fn fenced_writes(kind: Kind) {
    let world = World::new();
    let Some(primary) = Primary::start(&world, kind, 1, "foreign IN A 192.0.2.1\n").await else { return };
    let zs = primary.writer(SECRET);

    let empty = zs.read().await.expect("read");
    assert_eq!(fence(&zs, &empty), None);
    let weu = desired("aks-weu-01", "aks01-weu", "127.0.3.11", 1);
    // A second writer that read the empty zone too: its first write must find the name free.
    let raced = plan_change(&zs, &empty, &desired("aks-frc-01", "aks01-frc", "127.0.3.13", 1)).expect("plan").expect("a change");

    let pushed = zs.push(&weu).await.expect("first write");
    assert!(pushed.sent && pushed.skipped.is_empty(), "{pushed:?}");
    let first = zs.read().await.expect("read");
    assert_eq!(fence(&zs, &first), Some(Fence { epoch: 1, writer: "aks-weu-01".into() }));
    assert_eq!(target_of(&first, ROUTE).as_deref(), Some("aks01-weu-internal.example.com."));
    assert_eq!(at(&first, "foreign.example.com", RecordType::A).len(), 1, "a record veer does not own stays");
    let registry = at(&first, "_external-dns-owner.cname-web-ns-p-prod-myapp.example.com", RecordType::TXT);
    assert_eq!(registry.len(), 1, "{:#?}", lines(&first));

    match zs.send(&raced, 1).await {
        Err(UpdateError::Fenced { rcode: Some(ResponseCode::YXDomain), .. }) => {}
        other => panic!("{kind:?}: a racing first write must be refused with YXDOMAIN, got {other:?}"),
    }
    assert_eq!(lines(&zs.read().await.expect("read")), lines(&first), "the refused update changed nothing");

    let again = zs.push(&weu).await.expect("rewrite");
    assert!(!again.sent, "the zone already holds it: no update");

    // WEU's node, still at epoch 1, reads the zone and prepares an update (a new gateway
    // address) just before NEU takes over at epoch 2.
    let stale = plan_change(&zs, &first, &desired("aks-weu-01", "aks01-weu", "127.0.3.99", 1)).expect("plan").expect("a change");
    let neu = desired("aks-neu-01", "aks01-neu", "127.0.3.12", 2);
    assert!(zs.push(&neu).await.expect("takeover").sent);
    let taken = zs.read().await.expect("read");
    assert_eq!(fence(&zs, &taken), Some(Fence { epoch: 2, writer: "aks-neu-01".into() }));
    assert_eq!(target_of(&taken, ROUTE).as_deref(), Some("aks01-neu-internal.example.com."));
    assert!(at(&taken, "aks01-weu-internal.example.com", RecordType::A).is_empty(), "the old writer's gateway record is gone");
    assert_eq!(at(&taken, "foreign.example.com", RecordType::A).len(), 1);

    match zs.send(&stale, 1).await {
        Err(UpdateError::Fenced { rcode: Some(ResponseCode::NXRRSet), .. }) => {}
        other => panic!("{kind:?}: the stale writer's update must be refused with NXRRSET, got {other:?}"),
    }
    assert_eq!(lines(&zs.read().await.expect("read")), lines(&taken), "the refused update changed nothing");

    // Through the whole path the stale writer is refused before sending, and says why.
    let err = zs.push(&desired("aks-weu-01", "aks01-weu", "127.0.3.11", 1)).await.expect_err("fenced");
    assert_eq!(err.to_string(), "fenced: the zone's epoch is 2 (written by aks-neu-01), we hold 1");
    assert_eq!(lines(&zs.read().await.expect("read")), lines(&taken));
}

/// A zone ExternalDNS wrote (TXT registry, owner `external-dns-weu`) is adopted: veer rewrites
/// its owner's records, keeps every other record, and leaves registry records ExternalDNS reads
/// as its own.
async fn adopts_an_external_dns_zone(kind: Kind) {
    let world = World::new();
    let registry =
        |owner: &str, resource: &str| format!("\"heritage=external-dns,external-dns/owner={owner},external-dns/resource={resource}\"");
    let zone = format!(
        "web-ns-p-prod-myapp IN CNAME aks01-weu-internal
_external-dns-owner.cname-web-ns-p-prod-myapp IN TXT {ours}
old-app IN A 192.0.2.7
_external-dns-owner.a-old-app IN TXT {old}
other IN A 192.0.2.8
_external-dns-owner.a-other IN TXT {theirs}
manual IN A 192.0.2.9
aks01-neu-internal IN A 192.0.2.10
_external-dns-owner.a-aks01-neu-internal IN TXT {blocking}
",
        ours = registry("external-dns-weu", "crd/myapp/web-external-dns-weu"),
        old = registry("external-dns-weu", "crd/myapp/old-external-dns-weu"),
        theirs = registry("external-dns-neu", "crd/myapp/other-external-dns-neu"),
        blocking = registry("someone-else", "service/default/x"),
    );
    let Some(primary) = Primary::start(&world, kind, 2, &zone).await else { return };
    let zs = primary.writer(SECRET);
    let before = zs.read().await.expect("read");

    let pushed = zs.push(&desired("aks-neu-01", "aks01-neu", "127.0.3.12", 2)).await.expect("adoption");
    assert_eq!(pushed.skipped, vec!["aks01-neu-internal.example.com. A: a record veer does not own is there".to_string()]);
    let after = zs.read().await.expect("read");
    assert_eq!(target_of(&after, ROUTE).as_deref(), Some("aks01-neu-internal.example.com."));
    assert!(at(&after, "old-app.example.com", RecordType::A).is_empty(), "a record of the zone's owner the plan no longer has is removed");
    for (name, t) in [
        ("other.example.com", RecordType::A),
        ("_external-dns-owner.a-other.example.com", RecordType::TXT),
        ("manual.example.com", RecordType::A),
        ("aks01-neu-internal.example.com", RecordType::A),
        ("_external-dns-owner.a-aks01-neu-internal.example.com", RecordType::TXT),
    ] {
        let (b, a): (Vec<String>, Vec<String>) = (
            at(&before, name, t).iter().map(|r| r.data.to_string()).collect(),
            at(&after, name, t).iter().map(|r| r.data.to_string()).collect(),
        );
        assert!(!b.is_empty() && a == b, "{kind:?}: {name} {t} is not veer's and must stay as it was: {b:?} -> {a:?}");
    }
    // The registry record still reads as ExternalDNS's own (its owner and resource), with
    // veer's writer and epoch beside them: ExternalDNS can take the zone back.
    let txt = at(&after, "_external-dns-owner.cname-web-ns-p-prod-myapp.example.com", RecordType::TXT);
    let RData::TXT(t) = &txt[0].data else { panic!("not a TXT") };
    let text: String = t.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect();
    let labels = parse_txt_value(&text).expect("an ExternalDNS registry value");
    assert_eq!(labels.get("owner").map(String::as_str), Some("external-dns-weu"));
    assert_eq!(labels.get("resource").map(String::as_str), Some("crd/myapp/web-ns-p-prod-myapp-external-dns-weu"));
    assert_eq!(labels.get("veer-epoch").map(String::as_str), Some("2"));
}

/// Reads that fail (a wrong key, a stopped server) and an empty plan delete nothing.
async fn failed_reads_delete_nothing(kind: Kind) {
    let world = World::new();
    let Some(primary) = Primary::start(&world, kind, 3, "").await else { return };
    let zs = primary.writer(SECRET);
    zs.push(&desired("aks-weu-01", "aks01-weu", "127.0.3.11", 1)).await.expect("first write");
    let written = lines(&zs.read().await.expect("read"));

    let wrong = primary.writer(OTHER_SECRET);
    let err = wrong.push(&desired("aks-weu-01", "aks01-weu", "127.0.3.11", 3)).await.expect_err("a wrong key is refused");
    assert!(!matches!(err, UpdateError::Fenced { .. }), "{err}");
    assert_eq!(lines(&zs.read().await.expect("read")), written);

    let err = zs.push(&Desired { writer: "aks-weu-01".into(), epoch: 1, endpoints: Vec::new() }).await.expect_err("empty plan");
    assert!(matches!(err, UpdateError::EmptyPlan { owned: 2 }), "{err}");
    assert_eq!(lines(&zs.read().await.expect("read")), written);

    drop(primary);
    let down = zs.push(&desired("aks-neu-01", "aks01-neu", "127.0.3.12", 2)).await.expect_err("no server");
    assert!(matches!(down, UpdateError::Exchange(_)), "{down}");
}

#[tokio::test]
async fn bind9_fences_a_stale_writer_itself() {
    fenced_writes(Kind::Bind).await;
}

#[tokio::test]
async fn knot_fences_a_stale_writer_itself() {
    fenced_writes(Kind::Knot).await;
}

#[tokio::test]
async fn bind9_zone_of_external_dns_is_adopted_without_touching_foreign_records() {
    adopts_an_external_dns_zone(Kind::Bind).await;
}

#[tokio::test]
async fn knot_zone_of_external_dns_is_adopted_without_touching_foreign_records() {
    adopts_an_external_dns_zone(Kind::Knot).await;
}

#[tokio::test]
async fn bind9_failed_reads_and_empty_plans_delete_nothing() {
    failed_reads_delete_nothing(Kind::Bind).await;
}

#[tokio::test]
async fn knot_failed_reads_and_empty_plans_delete_nothing() {
    failed_reads_delete_nothing(Kind::Knot).await;
}

/// Real veer nodes reading one manifest set with a DNSZone for the weu zone: weu's node writes
/// the zone into BIND; weu fails, neu adopts it, and neu's node rewrites the zone at epoch 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_write_their_zone_into_bind_and_an_adoption_moves_it_with_a_new_epoch() {
    let w = World::new();
    let Some(primary) = Primary::start(&w, Kind::Bind, 9, "").await else { return };
    super::write_active_world(&w, &[]);
    w.write("zone.yaml", &primary.manifests(SECRET));
    let zs = primary.writer(SECRET);
    let weu = w.node("aks-weu-01", 1).await;
    let neu = w.node("aks-neu-01", 2).await;
    let holds = |contents: &ZoneContents, writer: &str, epoch: u64, gateway: &str, ip: std::net::IpAddr| {
        let a: Vec<String> = at(contents, gateway, RecordType::A).iter().map(|r| r.data.to_string()).collect();
        fence(&zs, contents) == Some(Fence { epoch, writer: writer.into() })
            && target_of(contents, ROUTE).as_deref() == Some(&format!("{gateway}."))
            && a == vec![ip.to_string()]
    };
    let weu_ip = weu.listen.ip();
    wait_until_async("weu's node writes its zone into BIND", Duration::from_secs(10), || async {
        zs.read().await.is_ok_and(|c| holds(&c, "aks-weu-01", 1, "aks01-weu-internal.example.com", weu_ip))
    })
    .await;

    weu.stop().await;
    w.write("neu.yaml", &super::regional_cluster(&w, "aks-neu-01", "neu", 2, &["weu"], &super::active_policy("neu")));
    let neu_ip = neu.listen.ip();
    let took = wait_until_async("neu's node takes the weu zone over in BIND", Duration::from_secs(10), || async {
        zs.read().await.is_ok_and(|c| holds(&c, "aks-neu-01", 2, "aks01-neu-internal.example.com", neu_ip))
    })
    .await;
    eprintln!("takeover written to BIND {took:?} after the manifest edit");
    let zone = zs.read().await.expect("read");
    assert!(at(&zone, "aks01-weu-internal.example.com", RecordType::A).is_empty(), "{:#?}", lines(&zone));
}
