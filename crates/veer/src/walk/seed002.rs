//! Seed 002's walkthrough (the Service Router Operator's regional DNS takeover): three regional
//! clusters, each with a veer node that serves its gateway and DNS, and a web pod behind it.
//! Active mode (each region's zone points at its own cluster); WEU fails; the platform team
//! edits NEU's ClusterIdentity to adopt WEU, and WEU's zone answers with NEU's gateway, so WEU's
//! users reach NEU; WEU returns, the adoption is removed, and the zone goes back; then the
//! RegionBound pattern (WEU writes every region's zone). DNS is asked with hickory's client over
//! UDP, and each user's requests go to the address DNS gave them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use veer_node::node::NodeConfig;

use super::{Lab, Split, Traffic, Walk, WalkOptions};

/// The starting state, as shipped in `examples/002-dns-regional-takeover`.
const SEED: &str = include_str!("../../../../examples/002-dns-regional-takeover/seed.yaml");
const CLUSTERS: &str = include_str!("../../../../examples/002-dns-regional-takeover/clusters.yaml");
const OPERATOR: &str = include_str!("../../../../examples/002-dns-regional-takeover/operator.yaml");
const APP: &str = include_str!("../../../../examples/002-dns-regional-takeover/app.yaml");
const NEU_IDENTITY: &str = include_str!("../../../../examples/002-dns-regional-takeover/neu-identity.yaml");
const NEU_FRC: &str = include_str!("../../../../examples/002-dns-regional-takeover/neu-frc.yaml");
/// What later steps change, from `examples/steps/002-dns-regional-takeover`.
const NEU_ADOPTS_WEU: &str = include_str!("../../../../examples/steps/002-dns-regional-takeover/2-neu-adopts-weu/neu-identity.yaml");
const NEU_ADOPTION_REMOVED: &str =
    include_str!("../../../../examples/steps/002-dns-regional-takeover/3-adoption-removed/neu-identity.yaml");
const WEU_REGION_BOUND: &str = include_str!("../../../../examples/steps/002-dns-regional-takeover/4-regionbound/seed.yaml");

/// (region, cluster, its node's address (gateway on 8080, as `clusters.yaml` says), its web pod).
const REGIONS: [(&str, &str, Ipv4Addr, Ipv4Addr); 3] = [
    ("weu", "aks-weu-01", Ipv4Addr::new(127, 0, 3, 11), Ipv4Addr::new(127, 0, 2, 11)),
    ("neu", "aks-neu-01", Ipv4Addr::new(127, 0, 3, 12), Ipv4Addr::new(127, 0, 2, 12)),
    ("frc", "aks-frc-01", Ipv4Addr::new(127, 0, 3, 13), Ipv4Addr::new(127, 0, 2, 13)),
];
const GATEWAY_PORT: u16 = 8080;
const WEB_PORT: u16 = 8000;
/// The ServiceRoute's name: `{service}-ns-{envLetter}-{environment}-{application}.{domain}`.
const HOST: &str = "web-ns-p-prod-myapp.example.com";
/// Where ExternalDNS (`--txt-prefix=_external-dns-owner.`) keeps the CNAME's ownership.
const OWNER_TXT: &str = "_external-dns-owner.cname-web-ns-p-prod-myapp.example.com.";
/// How long a DNS change may take to show before the step counts as failed.
const DNS_LIMIT: Duration = Duration::from_secs(5);
/// How long each region's users send requests at each step.
const USERS_FOR: Duration = Duration::from_millis(1500);

pub async fn walk(walk: &mut Walk, lab: &mut Lab, opts: WalkOptions) -> Result<(), String> {
    walk.step(
        "three regional clusters (aks-weu-01, aks-neu-01, aks-frc-01), each with the operator, one ExternalDNS per regional zone, an ingress gateway and myapp's web pod",
        "each region has its own AKS cluster; each cluster runs its own instances",
    );
    let dir = lab.folder("manifests")?;
    for (file, text) in [
        ("seed.yaml", SEED),
        ("clusters.yaml", CLUSTERS),
        ("operator.yaml", OPERATOR),
        ("app.yaml", APP),
        ("neu-identity.yaml", NEU_IDENTITY),
        ("neu-frc.yaml", NEU_FRC),
    ] {
        lab.write(&dir, file, text)?;
    }
    for (region, cluster, node_ip, web_ip) in REGIONS {
        lab.backend_at(&web(region), SocketAddr::from((web_ip, WEB_PORT))).await?;
        start_node(walk, lab, &dir, cluster, node_ip).await?;
    }

    walk.step("normal operation: every DNSPolicy in Active mode", "each cluster manages the DNS records of its own region: web → aks01-<region>-internal.example.com → that cluster's IP; users query their region's zone and get their region's cluster; traffic stays within the region");
    for (region, cluster, node_ip, _) in REGIONS {
        let zone = zone_of(lab, region).await;
        let want = format!("aks01-{region}-internal.example.com.");
        let ok = zone.as_ref().is_some_and(|z| {
            z.server == cluster && z.writer == cluster && z.epoch == "1" && z.cname.as_deref() == Some(want.as_str()) && z.a == [node_ip]
        });
        walk.check(ok, &describe_zone(region, zone.as_ref()));
        walk.figure(&short_zone(region, zone.as_ref()));
        users(walk, &zone, region, &web(region), opts).await;
    }

    walk.step(
        "WEU fails: aks-weu-01's node (operator, ExternalDNS, gateway) and its web pod stop",
        "the operator and ExternalDNS stop running, the WEU records go stale, users in WEU cannot access services",
    );
    let weu_dns_before = lab.node("aks-weu-01")?.dns.ok_or("the WEU node runs no DNS")?;
    lab.stop_node("aks-weu-01").await?;
    lab.remove_backend(&web("weu")).await;
    let silent = dns(weu_dns_before, HOST, RecordType::A).await.is_err();
    walk.check(silent, &format!("aks-weu-01's DNS server: {}", if silent { "no answer" } else { "still answers" }));
    let zone = zone_of(lab, "weu").await;
    walk.check(zone.is_none(), &format!("WEU users' lookup: {}", describe_zone("weu", zone.as_ref())));
    let refused = tokio::net::TcpStream::connect(SocketAddr::from((REGIONS[0].2, GATEWAY_PORT))).await.is_err();
    walk.check(
        refused,
        &format!("WEU's gateway {}:{GATEWAY_PORT}: {}", REGIONS[0].2, if refused { "connection refused" } else { "still accepts" }),
    );
    for (region, cluster, node_ip, _) in &REGIONS[1..] {
        let zone = zone_of(lab, region).await;
        walk.check(
            zone.as_ref().is_some_and(|z| z.server == *cluster && z.a == [*node_ip]),
            &format!("unaffected: {}", describe_zone(region, zone.as_ref())),
        );
    }

    walk.step(
        "the platform team adds adoptsRegions: [weu] to NEU's ClusterIdentity",
        "NEU generates two DNSEndpoints (its zone and WEU's, both → aks01-neu-internal.example.com); NEU's external-dns-weu takes over the WEU zone (same owner ID); the WEU zone points to the NEU cluster's IP; WEU users' requests flow to NEU",
    );
    let edited = crate::clock::now();
    lab.apply_all(&["aks-neu-01", "aks-frc-01"], || lab.write(&dir, "neu-identity.yaml", NEU_ADOPTS_WEU)).await?;
    let zone = until_zone(lab, "weu", |z| z.server == "aks-neu-01").await;
    if zone.as_ref().is_some_and(|z| z.server == "aks-neu-01") {
        walk.figure(&format!(
            "WEU zone served by aks-neu-01 {:.0} ms after the ClusterIdentity was written",
            crate::clock::since(edited).as_secs_f64() * 1000.0
        ));
    }
    let neu_ip = REGIONS[1].2;
    let ok = zone.as_ref().is_some_and(|z| {
        z.writer == "aks-neu-01" && z.epoch == "2" && z.cname.as_deref() == Some("aks01-neu-internal.example.com.") && z.a == [neu_ip]
    });
    walk.check(ok, &describe_zone("weu", zone.as_ref()));
    walk.figure(&short_zone("weu", zone.as_ref()));
    let neu_dns = lab.node("aks-neu-01")?.dns.ok_or("the NEU node runs no DNS")?;
    let owned = owners(neu_dns).await;
    let both = owned.iter().filter(|o| o.writer == "aks-neu-01").map(|o| o.owner.as_str()).collect::<Vec<_>>();
    walk.check(both == ["external-dns-neu", "external-dns-weu"], &format!("aks-neu-01's ownership TXT: {}", describe_owners(&owned)));
    let logged = lab
        .node("aks-neu-01")?
        .events
        .all()
        .iter()
        .any(|e| e.reason.contains("zone weu/example.com: writer aks-weu-01 -> aks-neu-01 (adoption), epoch 2"));
    walk.check(
        logged,
        if logged {
            "aks-neu-01's /events: dns: zone weu/example.com: writer aks-weu-01 -> aks-neu-01 (adoption), epoch 2"
        } else {
            "no takeover event on aks-neu-01"
        },
    );
    users(walk, &zone, "weu", &web("neu"), opts).await;

    walk.step(
        "WEU comes back online (node and pod) while NEU's adoption stands",
        "when the failed cluster comes back, NEU keeps the WEU zone until the adoption is removed (veer: the returning cluster computes the same election and stays silent; never two writers)",
    );
    let (weu_region, weu_cluster, weu_ip, weu_web) = REGIONS[0];
    lab.backend_at(&web(weu_region), SocketAddr::from((weu_web, WEB_PORT))).await?;
    start_node(walk, lab, &dir, weu_cluster, weu_ip).await?;
    let weu_dns = lab.node(weu_cluster)?.dns.ok_or("the WEU node runs no DNS")?;
    let answer = dns(weu_dns, HOST, RecordType::A).await;
    let refused = answer.as_ref().is_ok_and(|m| m.metadata.response_code == ResponseCode::Refused);
    walk.check(refused, &format!("aks-weu-01's DNS for {HOST}: {}", describe_answer(&answer)));
    let zone = zone_of(lab, "weu").await;
    walk.check(
        zone.as_ref().is_some_and(|z| z.server == "aks-neu-01" && z.epoch == "2" && z.a == [neu_ip]),
        &describe_zone("weu", zone.as_ref()),
    );
    users(walk, &zone, "weu", &web("neu"), opts).await;

    walk.step(
        "recovery, option 1: the platform team removes the adoption (adoptsRegions: [] in NEU's ClusterIdentity)",
        "NEU stops generating WEU DNSEndpoints and stops updating the WEU zone; WEU's external-dns-weu takes over again; the DNS records switch back to the WEU cluster's IP",
    );
    let edited = crate::clock::now();
    lab.apply_all(&["aks-weu-01", "aks-neu-01", "aks-frc-01"], || lab.write(&dir, "neu-identity.yaml", NEU_ADOPTION_REMOVED)).await?;
    let zone = until_zone(lab, "weu", |z| z.server == "aks-weu-01").await;
    if zone.as_ref().is_some_and(|z| z.server == "aks-weu-01") {
        walk.figure(&format!(
            "WEU zone served by aks-weu-01 again {:.0} ms after the ClusterIdentity was written",
            crate::clock::since(edited).as_secs_f64() * 1000.0
        ));
    }
    let ok = zone.as_ref().is_some_and(|z| {
        z.writer == "aks-weu-01" && z.epoch == "3" && z.cname.as_deref() == Some("aks01-weu-internal.example.com.") && z.a == [weu_ip]
    });
    walk.check(ok, &describe_zone("weu", zone.as_ref()));
    walk.figure(&short_zone("weu", zone.as_ref()));
    let owned = owners(neu_dns).await;
    walk.check(
        owned.iter().map(|o| o.owner.as_str()).collect::<Vec<_>>() == ["external-dns-neu"],
        &format!("aks-neu-01's ownership TXT: {}", describe_owners(&owned)),
    );
    users(walk, &zone, "weu", &web("weu"), opts).await;

    walk.step(
        "RegionBound: WEU's DNSPolicy for myapp becomes mode RegionBound (sourceRegion weu, sourceCluster aks01)",
        "the WEU cluster generates DNSEndpoints for all regions and writes every regional zone; all records point to the WEU cluster; users in all regions get the WEU cluster's IP; cross-region traffic flows to WEU",
    );
    let edited = crate::clock::now();
    lab.apply_all(&["aks-weu-01", "aks-neu-01", "aks-frc-01"], || lab.write(&dir, "seed.yaml", WEU_REGION_BOUND)).await?;
    let mut zones = Vec::new();
    for (region, _, _, _) in REGIONS {
        zones.push(until_zone(lab, region, |z| z.server == "aks-weu-01").await);
    }
    if zones.iter().all(|z| z.as_ref().is_some_and(|z| z.server == "aks-weu-01")) {
        walk.figure(&format!(
            "every zone served by aks-weu-01 {:.0} ms after the DNSPolicy was written",
            crate::clock::since(edited).as_secs_f64() * 1000.0
        ));
    }
    for ((region, _, _, _), zone) in REGIONS.iter().zip(&zones) {
        let ok = zone
            .as_ref()
            .is_some_and(|z| z.writer == "aks-weu-01" && z.cname.as_deref() == Some("aks01-weu-internal.example.com.") && z.a == [weu_ip]);
        walk.check(ok, &describe_zone(region, zone.as_ref()));
        walk.figure(&short_zone(region, zone.as_ref()));
    }
    for (_, cluster, _, _) in &REGIONS[1..] {
        let server = lab.node(cluster)?.dns.ok_or("no DNS")?;
        let answer = dns(server, HOST, RecordType::A).await;
        walk.check(
            answer.as_ref().is_ok_and(|m| m.metadata.response_code == ResponseCode::Refused),
            &format!("{cluster}'s DNS for {HOST} (it writes no zone now): {}", describe_answer(&answer)),
        );
    }
    for ((region, _, _, _), zone) in REGIONS.iter().zip(&zones).skip(1) {
        users(walk, zone, region, &web("weu"), opts).await;
    }
    Ok(())
}

fn web(region: &str) -> String {
    format!("web-{region}")
}

async fn start_node(walk: &mut Walk, lab: &mut Lab, dir: &std::path::Path, cluster: &str, ip: Ipv4Addr) -> Result<(), String> {
    let mut cfg = NodeConfig::new(vec![dir.to_path_buf()], cluster);
    // The gateway on the Cluster's spec.gateway.address (what the A records say); admin and
    // DNS on any free port of the node's address (port 53 would need root).
    cfg.admin = Some(SocketAddr::from((ip, 0)));
    cfg.dns = Some(SocketAddr::from((ip, 0)));
    // The walk polls each node's DNS with one question every 20 ms, which the response rate
    // limit (10 identical answers a second) would rightly hold back: loopback is exempt here.
    cfg.dns_settings.rrl.exempt.push(ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8)));
    let node = lab.start_node(cluster, cfg).await?;
    let dns = node.dns.ok_or_else(|| format!("the {cluster} node runs no DNS"))?;
    walk.info(&format!("veer node of {cluster}: gateway {}, DNS {dns} (UDP and TCP)", node.listen));
    Ok(())
}

/// One DNS question to `server` with hickory's client over UDP.
async fn dns(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message, String> {
    let name = Name::from_str(name).map_err(|e| format!("bad name {name}: {e}"))?;
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default()).with_timeout(Some(Duration::from_millis(800))).build();
    let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    let background = tokio::spawn(background);
    let answer = tokio::time::timeout(Duration::from_secs(1), client.query(name, DNSClass::IN, qtype)).await;
    background.abort();
    match answer {
        Ok(Ok(response)) => Ok(response.into_message()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

/// One ownership TXT value of the route record: a zone's ExternalDNS owner, writer and epoch.
struct Owner {
    owner: String,
    writer: String,
    epoch: String,
}

async fn owners(server: SocketAddr) -> Vec<Owner> {
    let Ok(m) = dns(server, OWNER_TXT, RecordType::TXT).await else { return Vec::new() };
    let mut out: Vec<Owner> = m
        .answers
        .iter()
        .filter_map(|r| {
            if let RData::TXT(t) = &r.data {
                Some(t.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<String>())
            } else {
                None
            }
        })
        .filter_map(|t| veer_dns::ownership::parse_txt_value(&t))
        .map(|l: BTreeMap<String, String>| Owner {
            owner: l.get("owner").cloned().unwrap_or_default(),
            writer: l.get("veer-writer").cloned().unwrap_or_default(),
            epoch: l.get("veer-epoch").cloned().unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| a.owner.cmp(&b.owner));
    out
}

fn describe_owners(owners: &[Owner]) -> String {
    if owners.is_empty() {
        return "none".into();
    }
    owners.iter().map(|o| format!("owner={} writer={} epoch={}", o.owner, o.writer, o.epoch)).collect::<Vec<_>>().join("; ")
}

/// A regional zone as its users see it: which node serves it, who writes it at which epoch,
/// and what it answers for the service's name.
struct Zone {
    server: String,
    dns: SocketAddr,
    writer: String,
    epoch: String,
    cname: Option<String>,
    a: Vec<Ipv4Addr>,
}

/// A user of `region` looks up the service in their region's zone: the zone is served by the
/// live node whose ownership TXT names the zone's controller (`external-dns-<region>`); that
/// node's DNS answers the name.
async fn zone_of(lab: &Lab, region: &str) -> Option<Zone> {
    let controller = format!("external-dns-{region}");
    for (_, cluster, _, _) in REGIONS {
        let Some(server) = lab.node(cluster).ok().and_then(|n| n.dns) else { continue };
        let owned = owners(server).await;
        let Some(o) = owned.iter().find(|o| o.owner == controller) else { continue };
        let Ok(m) = dns(server, HOST, RecordType::A).await else { continue };
        let cname = m.answers.iter().find_map(|r| if let RData::CNAME(c) = &r.data { Some(c.0.to_string()) } else { None });
        let a = m.answers.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect();
        return Some(Zone { server: cluster.to_string(), dns: server, writer: o.writer.clone(), epoch: o.epoch.clone(), cname, a });
    }
    None
}

/// Asks again every 20 ms until `region`'s zone is as `wanted` (or [`DNS_LIMIT`] passes), and
/// returns it as then seen.
async fn until_zone(lab: &Lab, region: &str, wanted: impl Fn(&Zone) -> bool) -> Option<Zone> {
    let deadline = crate::clock::now() + DNS_LIMIT;
    loop {
        let zone = zone_of(lab, region).await;
        if zone.as_ref().is_some_and(&wanted) || crate::clock::now() >= deadline {
            return zone;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn describe_zone(region: &str, zone: Option<&Zone>) -> String {
    match zone {
        None => format!("zone {region}: no live node serves it"),
        Some(z) => {
            let a: Vec<String> = z.a.iter().map(|ip| ip.to_string()).collect();
            format!(
                "zone {region}: served by {} ({}), writer {} epoch {}: {HOST} CNAME {} A {}",
                z.server,
                z.dns,
                z.writer,
                z.epoch,
                z.cname.as_deref().unwrap_or("-"),
                if a.is_empty() { "-".to_string() } else { a.join(", ") }
            )
        }
    }
}

/// "DNS zone weu → 127.0.3.12 (written by aks-neu-01, epoch 2)", for the summary.
fn short_zone(region: &str, zone: Option<&Zone>) -> String {
    match zone {
        None => format!("DNS zone {region}: nobody serves it"),
        Some(z) => {
            let a: Vec<String> = z.a.iter().map(|ip| ip.to_string()).collect();
            format!("DNS zone {region} → {} (written by {}, epoch {})", a.join(", "), z.writer, z.epoch)
        }
    }
}

fn describe_answer(answer: &Result<Message, String>) -> String {
    match answer {
        Err(e) => format!("no answer ({e})"),
        Ok(m) if m.answers.is_empty() => format!("{:?}, no records", m.metadata.response_code),
        Ok(m) => format!("{:?}, {} record(s)", m.metadata.response_code, m.answers.len()),
    }
}

/// `region`'s users send requests for the service to the address their zone gave them; all
/// must be answered by `expected` without an error.
async fn users(walk: &mut Walk, zone: &Option<Zone>, region: &str, expected: &str, opts: WalkOptions) {
    let Some(ip) = zone.as_ref().and_then(|z| z.a.first().copied()) else {
        walk.check(false, &format!("{region} users have no address to send requests to"));
        return;
    };
    let client = Traffic::start(&format!("{region} users"), SocketAddr::from((ip, GATEWAY_PORT)), HOST, "/", opts.rate);
    let split: Split = client.watch(walk, USERS_FOR).await;
    client.stop(walk).await;
    walk.check(split.all_from(&[expected]), &format!("{region} users → {ip}:{GATEWAY_PORT}: {split}"));
    walk.figure(&format!("{region} users: {}", split.by_backend.iter().map(|(b, n)| format!("{b} {n}")).collect::<Vec<_>>().join(", ")));
}
