//! Automatic regional takeover end to end: seed 002's three clusters as three `veer run` nodes,
//! each in its own network namespace with its own etcd member and its web pod, and BIND (or
//! Knot) as the primary of weu's zone in a fourth namespace. weu's zone has a DNSZone with a
//! takeover naming aks-neu-01 as its standby. Every outcome is read from the DNS server itself
//! (TSIG-signed AXFR, and plain queries), sampled all along: the zone's epoch never goes back and
//! no sample ever holds records of two writers.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::Value;
use veer_dns::ownership::parse_txt_value;
use veer_dns::update::{plan_change, read_fence, Desired, UpdateError, ZoneContents, ZoneServer};
use veer_testkit::authdns::{AuthKind, AuthServer, ZoneSpec};
use veer_testkit::etcd::EtcdCluster;
use veer_testkit::netns::{Lab, NsRuntime};
use veer_testkit::{clock, lazy, wait_until, Backends, TempDir};

use crate::mesh::get;

/// (namespace, veer cluster, the seed's gateway and pod addresses inside that namespace).
const REGIONS: [(&str, &str, &str, &str); 3] = [
    ("weu", "aks-weu-01", "127.0.3.11", "127.0.2.11"),
    ("neu", "aks-neu-01", "127.0.3.12", "127.0.2.12"),
    ("frc", "aks-frc-01", "127.0.3.13", "127.0.2.13"),
];
const ROUTE: &str = "web-ns-p-prod-myapp.example.com";
const SECRET: &str = "dmVlci10ZXN0LXRzaWcta2V5LW9mLTMyLWJ5dGVzISE=";
/// The lease TTL and hold-down the test's takeover asks for.
const TTL: Duration = Duration::from_secs(3);
const HOLD_DOWN: Duration = Duration::from_secs(8);
const WAIT: Duration = Duration::from_secs(60);

/// The zone as ExternalDNS (owner `external-dns-weu`) left it, plus a record nobody owns.
fn zone_file() -> String {
    "$ORIGIN example.com.
$TTL 60
@ IN SOA ns.example.com. hostmaster.example.com. 1 60 60 600 60
@ IN NS ns.example.com.
ns IN A 192.0.2.53
foreign IN A 192.0.2.1
web-ns-p-prod-myapp IN CNAME old-gateway.example.com.
_external-dns-owner.cname-web-ns-p-prod-myapp IN TXT \"heritage=external-dns,external-dns/owner=external-dns-weu,external-dns/resource=service/myapp/web\"
"
    .to_string()
}

struct Region {
    ns: &'static str,
    cluster: &'static str,
    rt: NsRuntime,
    _backends: Backends,
    node: Option<Child>,
    log: PathBuf,
}

/// One zone read from the DNS server: its epoch record and the writers its records name.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    epoch: u64,
    writer: Option<String>,
    /// `veer-writer` of every registry TXT but the epoch record's.
    record_writers: BTreeSet<String>,
}

struct Takeover {
    lab: Lab,
    dir: TempDir,
    etcd: EtcdCluster,
    dns: AuthServer,
    dns_rt: NsRuntime,
    regions: Vec<Region>,
    zone: ZoneServer,
    samples: Arc<Mutex<Vec<Sample>>>,
    sampling: Arc<AtomicBool>,
}

impl Takeover {
    /// The lab, the etcd cluster, the DNS server and the three nodes, up; `None` when the DNS
    /// server is not installed outside CI.
    fn start(kind: AuthKind) -> Option<Takeover> {
        let lab = Lab::new(&["weu", "neu", "frc", "dns"]).expect("network namespaces (run as root)");
        let dns_addr = SocketAddr::new(lab.addr("dns").into(), 53);
        let spec = ZoneSpec { zone: "example.com".into(), text: zone_file(), key_name: "veer-key".into(), secret: SECRET.into() };
        let mut in_dns = std::process::Command::new("ip");
        in_dns.args(["netns", "exec", &lab.ns_name("dns")]);
        let Some(dns) = AuthServer::start(kind, dns_addr, &spec, Some(in_dns)).expect("DNS server") else {
            eprintln!("SKIPPED: {kind:?} is not installed (apt-get install bind9 knot); this test did not run");
            return None;
        };
        let etcd = EtcdCluster::start_in(&lab, &["weu", "neu", "frc"]).expect("etcd, one member per region");
        let dir = TempDir::new("takeover").keep_on_failure();
        let manifests = dir.join("manifests");
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let example = crate::root().join("examples/002-dns-regional-takeover");
        for f in ["app.yaml", "clusters.yaml", "neu-frc.yaml", "neu-identity.yaml", "operator.yaml", "seed.yaml"] {
            std::fs::copy(example.join(f), manifests.join(f)).expect("copy the example");
        }
        std::fs::write(
            manifests.join("takeover.yaml"),
            format!(
                "apiVersion: veer.io/v1alpha1\nkind: DNSZone\nmetadata: {{name: weu, namespace: dns}}\nspec:\n  region: weu\n  zone: example.com\n  server: \"{dns_addr}\"\n  tsig: {{keyName: veer-key, secretRef: {{name: tsig}}}}\n  takeover: {{standbys: [aks-neu-01], leaseTTL: {}s, holdDown: {}s}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tsig, namespace: dns}}\nstringData: {{rfc2136_tsig_secret: {SECRET}}}\n",
                TTL.as_secs(),
                HOLD_DOWN.as_secs()
            ),
        )
        .expect("write takeover.yaml");
        let set = manifest_set(&manifests);
        let zone = ZoneServer::new(&set.dns_zones[0], "_external-dns-owner.").expect("a writer of the zone");
        let regions = REGIONS
            .iter()
            .map(|(ns, cluster, _, pod)| {
                let rt = lab.runtime(ns).expect("namespace runtime");
                let backends = rt.block_on(Backends::start([(format!("web-{ns}"), SocketAddr::new(pod.parse().expect("ip"), 8000))]));
                Region { ns, cluster, rt, _backends: backends, node: None, log: dir.join(format!("{ns}.log")) }
            })
            .collect();
        let dns_rt = lab.runtime("dns").expect("namespace runtime");
        let mut t =
            Takeover { lab, dir, etcd, dns, dns_rt, regions, zone, samples: Arc::default(), sampling: Arc::new(AtomicBool::new(true)) };
        t.sample();
        for ns in ["weu", "neu", "frc"] {
            t.start_node(ns);
        }
        Some(t)
    }

    fn region(&self, ns: &str) -> &Region {
        self.regions.iter().find(|r| r.ns == ns).expect("region")
    }

    fn admin(ns: &str) -> SocketAddr {
        let (_, _, gw, _) = REGIONS.iter().find(|r| r.0 == ns).expect("region");
        SocketAddr::new(gw.parse().expect("ip"), 9901)
    }

    fn start_node(&mut self, ns: &str) {
        let endpoints: Vec<String> = self.etcd.endpoints();
        let manifests = self.dir.join("manifests");
        let i = self.regions.iter().position(|r| r.ns == ns).expect("region");
        let (cluster, log) = (self.regions[i].cluster, self.regions[i].log.clone());
        let dns = format!("{}:53", REGIONS[i].2);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = self
            .lab
            .command(ns, env!("CARGO_BIN_EXE_veer"))
            .args(["run", "-f"])
            .arg(&manifests)
            .args(["--cluster", cluster, "--workers", "1", "--dns", &dns, "--etcd", &endpoints.join(",")])
            .env("RUST_LOG", "info,veer::takeover=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn veer run in its namespace");
        self.regions[i].node = Some(child);
        let rt = &self.regions[i].rt;
        wait_until(lazy(|| format!("node {cluster} ready; log:\n{}", self.log(ns))), WAIT, || {
            get(rt, Self::admin(ns), "/ready").map(|(s, _)| s) == Some(200)
        });
    }

    /// SIGKILL: no goodbye, its lease runs out by itself.
    fn kill_node(&mut self, ns: &str) {
        let r = self.regions.iter_mut().find(|r| r.ns == ns).expect("region");
        if let Some(mut child) = r.node.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self, ns: &str) -> String {
        std::fs::read_to_string(&self.region(ns).log).unwrap_or_default()
    }

    fn logs(&self) -> String {
        REGIONS.iter().map(|(ns, ..)| format!("--- {ns}:\n{}", tail(&self.log(ns), 40))).collect::<Vec<_>>().join("\n")
    }

    fn status(&self, ns: &str) -> Value {
        let (_, body) = get(&self.region(ns).rt, Self::admin(ns), "/status").expect("status");
        serde_json::from_str(&body).expect("status JSON")
    }

    fn events(&self, ns: &str) -> Vec<Value> {
        let (_, body) = get(&self.region(ns).rt, Self::admin(ns), "/events").expect("events");
        serde_json::from_str(&body).expect("events JSON")
    }

    /// Reads the zone from inside the DNS server's namespace, every 100 ms, until the test ends.
    fn sample(&self) {
        let (zone, samples, on) = (self.zone.clone(), self.samples.clone(), self.sampling.clone());
        self.dns_rt.spawn(async move {
            while on.load(Ordering::Relaxed) {
                if let Ok(contents) = zone.read().await {
                    samples.lock().expect("samples").push(summary(&zone, &contents));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    fn latest(&self) -> Option<Sample> {
        self.samples.lock().expect("samples").last().cloned()
    }

    /// Waits until the zone's epoch record names `cluster` and the route's records are its own.
    fn wait_for_writer(&self, cluster: &str) -> Sample {
        wait_until(lazy(|| format!("{cluster} writes weu's zone (last read: {:?}); logs:\n{}", self.latest(), self.logs())), WAIT, || {
            self.latest().is_some_and(|s| s.writer.as_deref() == Some(cluster) && s.record_writers == BTreeSet::from([cluster.to_string()]))
        });
        self.latest().expect("a sample")
    }

    fn read(&self) -> ZoneContents {
        let zone = self.zone.clone();
        self.dns_rt.block_on(async move { zone.read().await }).expect("AXFR")
    }

    /// The route's address as a resolver gets it from the DNS server (CNAME chased in the zone).
    fn resolve(&self) -> Vec<IpAddr> {
        let server = self.dns.addr;
        self.dns_rt.block_on(async move {
            let mut m = Message::new(clock::random_u16(), MessageType::Query, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(format!("{ROUTE}.")).expect("name"), RecordType::A));
            let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await.expect("udp");
            sock.send_to(&m.to_vec().expect("encode"), server).await.expect("send");
            let mut buf = vec![0u8; 4096];
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await.expect("an answer").expect("recv");
            let answer = Message::from_vec(&buf[..n]).expect("decode");
            assert_eq!(answer.response_code, ResponseCode::NoError);
            answer
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect()
        })
    }

    /// Stops sampling and checks every sample: the epoch never goes back, and no sample holds
    /// records of two writers (nor records of one writer under another's epoch record).
    fn check_samples(&self) -> Vec<Sample> {
        self.sampling.store(false, Ordering::Relaxed);
        let samples = self.samples.lock().expect("samples").clone();
        assert!(samples.len() > 10, "the zone was read {} times", samples.len());
        for w in samples.windows(2) {
            assert!(w[1].epoch >= w[0].epoch, "the zone's epoch went back: {:?} then {:?}", w[0], w[1]);
        }
        for s in &samples {
            assert!(s.record_writers.len() <= 1, "records of two writers stood in the zone: {s:?}");
            if let (Some(w), Some(r)) = (&s.writer, s.record_writers.first()) {
                assert_eq!(w, r, "records of one writer under another's epoch record: {s:?}");
            }
        }
        samples
    }

    /// Each change of writer in the samples, with when it was first seen.
    fn hand_overs(samples: &[Sample]) -> Vec<(Instant, Option<String>, u64)> {
        let mut out: Vec<(Instant, Option<String>, u64)> = Vec::new();
        for s in samples {
            if out.last().map(|(_, w, _)| w) != Some(&s.writer) {
                out.push((s.at, s.writer.clone(), s.epoch));
            }
        }
        out
    }

    fn lease_of(&self, ns: &str) -> Value {
        self.status(ns)["dns_leases"].as_array().and_then(|l| l.first()).cloned().unwrap_or(Value::Null)
    }

    /// The etcd member that leads, as the members themselves say (asked from inside their
    /// namespaces: the test's own reaches none).
    fn leader(&self) -> usize {
        let statuses: Vec<veer_etcd::Status> = REGIONS
            .iter()
            .enumerate()
            .map(|(i, (ns, ..))| {
                let url = self.etcd.endpoint(i);
                self.region(ns).rt.block_on(async move {
                    let mut c = veer_etcd::Etcd::connect(&[url], Duration::from_secs(5)).await.expect("connect to a member");
                    c.status().await.expect("member status")
                })
            })
            .collect();
        statuses.iter().position(|s| s.member == statuses[0].leader).expect("one member leads")
    }
}

impl Drop for Takeover {
    fn drop(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        for r in &mut self.regions {
            if let Some(mut c) = r.node.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn summary(zone: &ZoneServer, contents: &ZoneContents) -> Sample {
    let fence = read_fence(&zone.origin, &zone.owner, contents).ok().flatten().map(|(f, _)| f);
    let record_writers = contents
        .records
        .iter()
        .filter(|r| !r.name.to_ascii().starts_with(veer_dns::update::EPOCH_LABEL))
        .filter_map(|r| match &r.data {
            RData::TXT(t) => parse_txt_value(&t.to_string()),
            _ => None,
        })
        .filter_map(|labels| labels.get("veer-writer").cloned())
        .collect();
    Sample { at: clock::std_now(), epoch: fence.as_ref().map_or(0, |f| f.epoch), writer: fence.map(|f| f.writer), record_writers }
}

fn manifest_set(dir: &std::path::Path) -> veer_model::set::ManifestSet {
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).expect("manifests").flatten() {
        sources.push((entry.path().display().to_string(), std::fs::read_to_string(entry.path()).expect("read")));
    }
    sources.sort();
    veer_model::from_sources(&sources).expect("the manifests pass").into_set()
}

fn has(contents: &ZoneContents, name: &str) -> bool {
    contents.records.iter().any(|r| r.name.to_ascii().eq_ignore_ascii_case(&format!("{name}.")))
}

/// The home killed: the standby takes the zone once the lease runs out (clients resolve to its
/// gateway); the home started again gets its zone back after the hold-down, once; the record
/// nobody owns stands throughout.
fn killed_home_and_recovery(kind: AuthKind) {
    let Some(mut t) = Takeover::start(kind) else { return };
    let first = t.wait_for_writer("aks-weu-01");
    assert_eq!(t.resolve(), vec!["127.0.3.11".parse::<IpAddr>().expect("ip")]);
    assert!(has(&t.read(), "foreign.example.com"), "the record nobody owns was deleted");
    let neu = t.lease_of("neu");
    assert_eq!((neu["holder"].as_str(), neu["intent"].as_str()), (Some("aks-weu-01"), Some("wait")), "{neu}");

    let killed = clock::std_now();
    t.kill_node("weu");
    let taken = t.wait_for_writer("aks-neu-01");
    let took = taken.at.duration_since(killed);
    eprintln!("{kind:?}: takeover {took:?} after the home was killed (lease TTL {TTL:?}); epoch {} -> {}", first.epoch, taken.epoch);
    assert!(taken.epoch > first.epoch, "the epoch grew at the hand-over");
    assert_eq!(t.resolve(), vec!["127.0.3.12".parse::<IpAddr>().expect("ip")], "clients get the standby's gateway");
    assert!(has(&t.read(), "foreign.example.com"), "the record nobody owns was deleted");

    let restarted = clock::std_now();
    t.start_node("weu");
    let back = t.wait_for_writer("aks-weu-01");
    let after = back.at.duration_since(restarted);
    eprintln!("{kind:?}: hand-back {after:?} after the home restarted (hold-down {HOLD_DOWN:?}); epoch {}", back.epoch);
    assert!(after >= HOLD_DOWN, "the home got its zone back before the hold-down: {after:?}");
    assert_eq!(t.resolve(), vec!["127.0.3.11".parse::<IpAddr>().expect("ip")]);
    let samples = t.check_samples();
    let moves = Takeover::hand_overs(&samples);
    let writers: Vec<Option<&str>> = moves.iter().map(|(_, w, _)| w.as_deref()).collect();
    // None: ExternalDNS's zone before veer's first write.
    assert_eq!(writers, [None, Some("aks-weu-01"), Some("aks-neu-01"), Some("aks-weu-01")], "the zone moved once each way: {moves:?}");
    let events: Vec<String> = t.events("neu").iter().filter_map(|e| e["reason"].as_str().map(String::from)).collect();
    assert!(events.iter().any(|m| m.contains("this node now writes the zone")), "{events:?}");
    assert!(events.iter().any(|m| m.contains("this node stopped writing the zone") && m.contains("hold-down")), "{events:?}");
}

#[test]
fn bind_a_killed_home_region_fails_over_to_its_standby_and_back_after_the_hold_down() {
    killed_home_and_recovery(AuthKind::Bind);
}

#[test]
fn knot_a_killed_home_region_fails_over_to_its_standby_and_back_after_the_hold_down() {
    killed_home_and_recovery(AuthKind::Knot);
}

/// The home cut off with its etcd member: the standby takes the zone; an update the old writer
/// prepared before the cut, sent once the link is back, is refused by the DNS server itself; the
/// home then takes its zone back after the hold-down. Sampled throughout.
#[test]
fn bind_a_partitioned_home_is_fenced_by_the_dns_server_and_never_splits_the_zone() {
    let Some(t) = Takeover::start(AuthKind::Bind) else { return };
    let first = t.wait_for_writer("aks-weu-01");
    // What weu would send next (its pod moving), planned from the zone as read before the cut.
    let before = t.read();
    let set = manifest_set(&t.dir.join("manifests"));
    let opts = veer_dns::plan::PlanOptions::default();
    let mut endpoints: Vec<_> =
        veer_dns::plan::cluster(&set, "aks-weu-01", &opts).endpoints.into_iter().filter(|e| e.zone.region == "weu").collect();
    for e in endpoints.iter_mut().filter(|e| e.record_type == veer_dns::plan::RecordKind::A) {
        e.target = "127.0.3.99".into();
    }
    let pending = plan_change(&t.zone, &before, &Desired { writer: "aks-weu-01".into(), epoch: first.epoch, endpoints })
        .expect("a change")
        .expect("weu has something to change");

    let cut = clock::std_now();
    t.lab.cut("weu").expect("cut weu off");
    let taken = t.wait_for_writer("aks-neu-01");
    eprintln!(
        "partition: takeover {:?} after the cut (lease TTL {TTL:?}); epoch {} -> {}",
        taken.at.duration_since(cut),
        first.epoch,
        taken.epoch
    );
    assert_eq!(t.resolve(), vec!["127.0.3.12".parse::<IpAddr>().expect("ip")]);

    t.lab.restore("weu").expect("restore weu");
    let restored = clock::std_now();
    let zone = t.zone.clone();
    let refused = t.dns_rt.block_on(async move { zone.send(&pending, first.epoch).await });
    match refused {
        Err(UpdateError::Fenced { rcode: Some(rc), .. }) => eprintln!("partition: the old writer's pending update refused by BIND: {rc}"),
        other => panic!("the old writer's update was not refused by the server: {other:?}"),
    }
    let now = t.read();
    assert!(!now.records.iter().any(|r| r.data.to_string().contains("127.0.3.99")), "the stale update landed");
    let back = t.wait_for_writer("aks-weu-01");
    assert!(back.at.duration_since(restored) >= HOLD_DOWN, "the home took its zone back before the hold-down");
    assert!(back.epoch > taken.epoch);
    let samples = t.check_samples();
    let writers: Vec<Option<String>> = Takeover::hand_overs(&samples).into_iter().map(|(_, w, _)| w).collect();
    assert_eq!(writers, [None, Some("aks-weu-01".to_string()), Some("aks-neu-01".into()), Some("aks-weu-01".into())]);
    eprintln!(
        "partition: 1 stale update refused; {} zone samples, epochs {:?}",
        samples.len(),
        Takeover::hand_overs(&samples).iter().map(|h| h.2).collect::<Vec<_>>()
    );
}

/// The home killed, then at once the etcd leader killed and the DNS server restarted: the
/// standby still takes the zone, and nothing is deleted (the record nobody owns, the standby's
/// whole record set).
#[test]
fn bind_a_takeover_completes_with_the_etcd_leader_killed_and_the_dns_server_restarted() {
    let Some(mut t) = Takeover::start(AuthKind::Bind) else { return };
    let first = t.wait_for_writer("aks-weu-01");
    let killed = clock::std_now();
    t.kill_node("weu");
    let leader = t.leader();
    t.etcd.kill(leader);
    eprintln!("killed etcd leader {}", REGIONS[leader].0);
    t.dns.restart().expect("restart the DNS server");
    let taken = t.wait_for_writer("aks-neu-01");
    eprintln!(
        "leader killed, DNS restarted: takeover {:?} after the home was killed; epoch {} -> {}",
        taken.at.duration_since(killed),
        first.epoch,
        taken.epoch
    );
    assert!(taken.epoch > first.epoch);
    let contents = t.read();
    assert!(has(&contents, "foreign.example.com"), "the record nobody owns was deleted");
    assert!(has(&contents, ROUTE) && has(&contents, "aks01-neu-internal.example.com"), "the standby's records are all there");
    t.check_samples();
}

/// The README's three-region walkthrough as a newcomer runs it (`examples/002-automatic-takeover/
/// three-regions.sh`), in a network namespace of its own so its fixed loopback ports meet no
/// other test: up, the zone resolves to weu's gateway; weu killed, it resolves to neu's; `plan`
/// names the holder; down stops everything.
#[test]
fn the_three_regions_walkthrough_moves_weus_zone_to_its_standby() {
    if AuthKind::Bind.binary().is_none() && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: BIND is not installed; this test did not run");
        return;
    }
    let lab = Lab::new(&["walk"]).expect("network namespaces (run as root)");
    let dir = TempDir::new("three-regions").keep_on_failure();
    let script = crate::root().join("examples/002-automatic-takeover/three-regions.sh");
    let run = |args: &[&str]| -> String {
        let out = lab
            .command("walk", &script)
            .args(args)
            .env("VEER", env!("CARGO_BIN_EXE_veer"))
            .env("VEER_TAKEOVER_DIR", dir.join("state"))
            .stdin(Stdio::null())
            .output()
            .expect("run three-regions.sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "three-regions.sh {args:?}: {}\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr));
        text
    };
    /// `down` whatever happens, so no process outlives the test (nor keeps its namespace).
    struct Down<'a>(&'a dyn Fn(&[&str]) -> String);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            (self.0)(&["down"]);
        }
    }
    run(&["up"]);
    let _down = Down(&run);
    let dig = run(&["dig"]);
    assert!(dig.contains("aks01-weu-internal.example.com. 127.0.3.11"), "{dig}");
    run(&["kill", "aks-weu-01"]);
    wait_until("weu's zone resolves to neu's gateway", WAIT, || run(&["dig"]).contains("aks01-neu-internal.example.com. 127.0.3.12"));
    let plan = run(&["plan"]);
    assert!(plan.contains("lease now: held by aks-neu-01 at epoch"), "{plan}");
}
