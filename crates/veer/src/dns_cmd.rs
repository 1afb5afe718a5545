//! `veer dns`: the DNSEndpoint objects a cluster's operator would write (for ExternalDNS), and
//! the plan of who writes which records in which regional zone, and why.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use veer_dns::ownership::{self, Claim, Registry, Verdict, ZoneState};
use veer_dns::plan::{self, ClusterPlan, Endpoint, PlanOptions, ZoneId};
use veer_model::set::ManifestSet;

use crate::load;

/// `veer run`'s DNS server flags: response rate limiting (as BIND's RRL), zone transfers, NOTIFY.
#[derive(clap::Args, Debug)]
pub struct DnsArgs {
    /// Turn response rate limiting off (every UDP answer is sent).
    #[arg(long = "dns-rrl-off")]
    rrl_off: bool,
    /// Identical answers (same name, type and answer class) per second to one client netblock
    /// before they are limited. Varied questions each have their own count.
    #[arg(long = "dns-rrl-rate", default_value_t = 10)]
    rrl_rate: u32,
    /// NXDOMAIN answers per second per zone and client netblock (default: --dns-rrl-rate).
    #[arg(long = "dns-rrl-nxdomain-rate")]
    rrl_nxdomain_rate: Option<u32>,
    /// Error answers (REFUSED, FORMERR…) per second per client netblock (default: --dns-rrl-rate).
    #[arg(long = "dns-rrl-errors-rate")]
    rrl_errors_rate: Option<u32>,
    /// Seconds a flood is remembered: a limited answer stays limited up to this long after it stops.
    #[arg(long = "dns-rrl-window", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    rrl_window: u64,
    /// Every N-th limited answer is sent empty with TC set, so a real client retries over TCP
    /// (0: drop every limited answer).
    #[arg(long = "dns-rrl-slip", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    rrl_slip: u32,
    /// Client networks never limited, as CIDR (repeatable), e.g. 10.0.0.0/8.
    #[arg(long = "dns-rrl-exempt")]
    rrl_exempt: Vec<ipnet::IpNet>,
    /// Prefix length of an IPv4 client netblock.
    #[arg(long = "dns-rrl-ipv4-prefix", default_value_t = 24, value_parser = clap::value_parser!(u8).range(8..=32))]
    rrl_ipv4_prefix: u8,
    /// Prefix length of an IPv6 client netblock.
    #[arg(long = "dns-rrl-ipv6-prefix", default_value_t = 56, value_parser = clap::value_parser!(u8).range(16..=128))]
    rrl_ipv6_prefix: u8,
    /// TCP connections open at once at most (BIND's tcp-clients); one more is closed as soon as
    /// it is accepted.
    #[arg(long = "dns-tcp-clients", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    tcp_clients: u32,
    /// TCP connections open at once from one client address at most, so that one client cannot
    /// lock the others out.
    #[arg(long = "dns-tcp-clients-per-address", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    tcp_clients_per_address: u32,
    /// A TCP connection closes when this passes without a whole query from it (a client that
    /// trickles a byte at a time does not keep it open), or while an answer waits to be read.
    #[arg(long = "dns-tcp-idle", default_value = "10s", value_parser = crate::parse_duration)]
    tcp_idle: std::time::Duration,
    /// Allow zone transfers (AXFR, IXFR; TCP only) signed with this TSIG key, and sign NOTIFY
    /// with it. The file holds one line `algorithm:name:base64-secret` (as `dig -y`), e.g.
    /// `hmac-sha256:veer-xfr:…`. Without it transfers are refused.
    #[arg(long = "dns-tsig-key-file")]
    tsig_key_file: Option<PathBuf>,
    /// A secondary to send NOTIFY to when the zones change, IP:PORT (repeatable).
    #[arg(long = "dns-notify")]
    notify: Vec<std::net::SocketAddr>,
    /// etcd client URLs, http://HOST:PORT (repeatable or comma-separated): zones whose DNSZone
    /// has `spec.takeover` are written only under a lease held there. Needs --dns.
    #[arg(long = "etcd", value_delimiter = ',', requires = "dns")]
    etcd: Vec<String>,
    /// Prefix of veer's keys in etcd.
    #[arg(long = "etcd-prefix", default_value = "/veer/", requires = "etcd")]
    etcd_prefix: String,
    /// Longest wait for one etcd call (keep it well under the shortest lease TTL).
    #[arg(long = "etcd-timeout", default_value = "1s", value_parser = crate::parse_duration, requires = "etcd")]
    etcd_timeout: std::time::Duration,
}

// === impl DnsArgs ===

impl DnsArgs {
    pub fn settings(&self) -> Result<veer_dns::DnsSettings, String> {
        let rrl = veer_dns::RrlConfig {
            enabled: !self.rrl_off,
            responses_per_second: self.rrl_rate,
            nxdomains_per_second: self.rrl_nxdomain_rate.unwrap_or(self.rrl_rate),
            errors_per_second: self.rrl_errors_rate.unwrap_or(self.rrl_rate),
            window: std::time::Duration::from_secs(self.rrl_window),
            slip: self.rrl_slip,
            ipv4_prefix: self.rrl_ipv4_prefix,
            ipv6_prefix: self.rrl_ipv6_prefix,
            exempt: self.rrl_exempt.clone(),
        };
        let key = match &self.tsig_key_file {
            Some(path) => Some(veer_dns::transfer::TsigKey::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let transfer = veer_dns::transfer::TransferConfig { key, notify: self.notify.clone() };
        if self.tcp_idle.is_zero() {
            return Err("--dns-tcp-idle must be longer than 0".into());
        }
        let tcp = veer_dns::TcpLimits {
            max_connections: self.tcp_clients as usize,
            max_per_address: self.tcp_clients_per_address as usize,
            idle: self.tcp_idle,
        };
        Ok(veer_dns::DnsSettings { rrl, transfer, tcp })
    }

    /// Where zone leases live, if `--etcd` is given.
    pub fn etcd(&self) -> Result<Option<veer_node::takeover::EtcdSettings>, String> {
        if self.etcd.is_empty() {
            return Ok(None);
        }
        for url in &self.etcd {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!("--etcd {url:?}: expected http://HOST:PORT (veer speaks to etcd without TLS for now; keep etcd's client port on a private network)")
            })?;
            if rest.is_empty() || rest.contains('/') {
                return Err(format!("--etcd {url:?}: expected http://HOST:PORT"));
            }
        }
        let mut prefix = self.etcd_prefix.clone();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Some(veer_node::takeover::EtcdSettings { endpoints: self.etcd.clone(), prefix, timeout: self.etcd_timeout }))
    }
}

#[derive(Subcommand)]
pub enum DnsCommand {
    /// Print the externaldns.k8s.io DNSEndpoint objects a cluster writes, for ExternalDNS.
    Endpoints {
        #[arg(short = 'f', long = "file", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The cluster (a `Cluster` of the manifests, or the implicit one).
        #[arg(long)]
        cluster: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = EndpointsOutput::Yaml)]
        output: EndpointsOutput,
        /// TTL of every record, in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: u32,
    },
    /// Show which cluster writes which records in which regional zone, and why.
    Plan {
        #[arg(short = 'f', long = "file", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Show only this cluster and the zones it writes or claims.
        #[arg(long)]
        cluster: Option<String>,
        /// What if `cluster=NAME` is down: which zones go stale and who could adopt them.
        #[arg(long = "down", value_parser = parse_down)]
        down: Vec<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanOutput::Table)]
        output: PlanOutput,
        #[arg(long, default_value_t = 60)]
        ttl: u32,
        /// etcd client URLs (repeatable or comma-separated): also show who holds each leased
        /// zone's lease now, at which epoch, and whether its home says it is ready.
        #[arg(long = "etcd", value_delimiter = ',')]
        etcd: Vec<String>,
        /// Prefix of veer's keys in etcd.
        #[arg(long = "etcd-prefix", default_value = "/veer/")]
        etcd_prefix: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EndpointsOutput {
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PlanOutput {
    Table,
    Json,
}

fn parse_down(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some(("cluster", name)) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(format!("{s:?}: expected cluster=NAME")),
    }
}

/// Plans of every cluster, and zone writers elected from their claims.
fn elect(set: &ManifestSet, opts: &PlanOptions) -> (Vec<ClusterPlan>, BTreeMap<ZoneId, Vec<Claim>>, Registry) {
    let plans = plan::all(set, opts);
    let claims = ownership::claims(&plans);
    let mut registry = Registry::default();
    registry.reconcile(&claims);
    (plans, claims, registry)
}

fn known_cluster(set: &ManifestSet, name: &str) -> Result<(), String> {
    let known: Vec<String> = plan::identified_clusters(set);
    if known.iter().any(|c| c == name) {
        return Ok(());
    }
    Err(format!(
        "cluster {name:?} has no ClusterIdentity; clusters with one: {}",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    ))
}

pub fn run(cmd: DnsCommand) -> Result<ExitCode, String> {
    match cmd {
        DnsCommand::Endpoints { files, cluster, output: EndpointsOutput::Yaml, ttl } => {
            let set = load(&files)?;
            known_cluster(&set, &cluster)?;
            let opts = PlanOptions { ttl, ..PlanOptions::default() };
            let (plans, _, registry) = elect(&set, &opts);
            let Some(mine) = plans.iter().find(|p| p.cluster == cluster) else { return Err(format!("no plan for cluster {cluster:?}")) };
            let mut out = String::new();
            let mut kept: Vec<Endpoint> = Vec::new();
            let mut withheld: BTreeMap<ZoneId, (Vec<String>, ZoneState)> = BTreeMap::new();
            for (e, verdict) in ownership::written(mine, &registry) {
                match verdict {
                    Verdict::Written => kept.push(e.clone()),
                    Verdict::Withheld(state) => withheld
                        .entry(e.zone.clone())
                        .or_insert_with(|| (Vec::new(), state.cloned().unwrap_or_default()))
                        .0
                        .push(e.name.clone()),
                }
            }
            let _ = writeln!(out, "# DNSEndpoints of cluster {cluster} (TTL {ttl}s), as the Service Router Operator names them.");
            for r in &mine.routes {
                let _ = writeln!(out, "# ServiceRoute {}/{}: {:?}, {}", r.namespace, r.name, r.phase, r.reason);
            }
            for (zone, (names, st)) in &withheld {
                let _ = writeln!(
                    out,
                    "# withheld: {} — zone {zone} is written by {} ({}, epoch {}); stop this cluster's ExternalDNS for that zone or run it with --policy=upsert-only, or with the shared owner ID and --policy=sync it deletes the writer's records",
                    names.join(", "),
                    st.writer.as_deref().unwrap_or("nobody"),
                    st.kind.map_or("no claim", |k| k.as_str()),
                    st.epoch
                );
            }
            for n in &mine.notes {
                let _ = writeln!(out, "# note: {n}");
            }
            if !kept.is_empty() {
                out.push_str("---\n");
                out.push_str(&veer_dns::yaml::endpoints(&kept));
            }
            crate::out!("{out}")?;
            Ok(ExitCode::SUCCESS)
        }
        DnsCommand::Plan { files, cluster, down, output, ttl, etcd, etcd_prefix } => {
            let set = load(&files)?;
            if let Some(c) = &cluster {
                known_cluster(&set, c)?;
            }
            for d in &down {
                known_cluster(&set, d)?;
            }
            let mut report = plan_report(&set, cluster.as_deref(), &down, &PlanOptions { ttl, ..PlanOptions::default() });
            if !etcd.is_empty() {
                read_leases(&mut report, &etcd, &etcd_prefix)?;
            }
            match output {
                PlanOutput::Table => crate::out!("{}", render(&report))?,
                PlanOutput::Json => crate::outln!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `veer dns plan -o json`.
#[derive(Serialize)]
pub struct PlanReport {
    pub zones: Vec<ZoneReport>,
    pub clusters: Vec<ClusterPlan>,
    pub down: Vec<String>,
    pub takeovers: Vec<Takeover>,
}

#[derive(Serialize)]
pub struct ZoneReport {
    pub zone: ZoneId,
    pub writer: Option<String>,
    pub claim: Option<&'static str>,
    pub epoch: u64,
    pub claims: Vec<Claim>,
    pub conflicts: Vec<String>,
    pub writer_down: bool,
    pub records: Vec<RecordRow>,
    /// Set when the zone's DNSZone has a takeover: its writer is whoever holds the etcd lease.
    pub lease: Option<LeaseReport>,
}

/// A leased zone's roles, and (with `--etcd`) its lease as etcd holds it now.
#[derive(Serialize)]
pub struct LeaseReport {
    pub key: veer_dns::takeover::ZoneKey,
    pub home: String,
    pub standbys: Vec<String>,
    pub adopter: Option<String>,
    pub lease_ttl_seconds: u64,
    pub hold_down_seconds: u64,
    /// From etcd: the holder and the writer key's `create_revision` (the zone's epoch).
    pub holder: Option<String>,
    pub epoch: Option<u64>,
    pub home_ready: Option<bool>,
    pub read: bool,
}

/// Reads each leased zone's writer and readiness keys from etcd.
fn read_leases(report: &mut PlanReport, endpoints: &[String], prefix: &str) -> Result<(), String> {
    let prefix = if prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let mut etcd = veer_etcd::Etcd::connect(endpoints, std::time::Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
        for lease in report.zones.iter_mut().filter_map(|z| z.lease.as_mut()) {
            let writer = etcd.get(lease.key.writer_key(&prefix).as_bytes()).await.map_err(|e| e.to_string())?;
            let ready = etcd.get(lease.key.ready_key(&prefix).as_bytes()).await.map_err(|e| e.to_string())?;
            lease.holder = writer.entry.as_ref().map(|e| String::from_utf8_lossy(&e.value).into_owned());
            lease.epoch = writer.entry.as_ref().map(|e| u64::try_from(e.create_revision).unwrap_or(0));
            lease.home_ready = Some(ready.entry.is_some());
            lease.read = true;
        }
        Ok(())
    })
}

#[derive(Serialize)]
pub struct RecordRow {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub target: String,
    pub ttl: u32,
    pub endpoint: String,
    pub cluster: String,
}

/// What adopting a stale zone would change.
#[derive(Serialize)]
pub struct Takeover {
    pub zone: ZoneId,
    pub adopter: String,
    pub epoch: u64,
    pub records: Vec<RecordRow>,
}

/// What every cluster writes into `zone`, by the same rule `veer dns endpoints` prints with.
fn rows(plans: &[ClusterPlan], zone: &ZoneId, registry: &Registry) -> Vec<RecordRow> {
    let mut out = Vec::new();
    for p in plans {
        for (e, verdict) in ownership::written(p, registry) {
            if e.zone != *zone || verdict != Verdict::Written {
                continue;
            }
            out.push(RecordRow {
                name: e.dns_name.clone(),
                record_type: e.record_type.as_str(),
                target: e.target.clone(),
                ttl: e.ttl,
                endpoint: format!("{}/{}", e.namespace, e.name),
                cluster: p.cluster.clone(),
            });
        }
    }
    out
}

fn plan_report(set: &ManifestSet, only: Option<&str>, down: &[String], opts: &PlanOptions) -> PlanReport {
    let (plans, claims, registry) = elect(set, opts);
    let leased = veer_dns::takeover::lease_zones(set);
    let mut zones = Vec::new();
    let mut takeovers = Vec::new();
    // Every zone something is written into: those with a claim, and those that get only
    // gateway A records (every cluster writes its own into every regional zone).
    let mut every: BTreeMap<ZoneId, ZoneState> = registry.zones.clone();
    for p in &plans {
        for e in &p.endpoints {
            every.entry(e.zone.clone()).or_default();
        }
    }
    for (zone, st) in &every {
        let zone_claims = claims.get(zone).cloned().unwrap_or_default();
        let records = rows(&plans, zone, &registry);
        if let Some(c) = only {
            if st.writer.as_deref() != Some(c) && !zone_claims.iter().any(|cl| cl.cluster == c) && !records.iter().any(|r| r.cluster == c) {
                continue;
            }
        }
        let writer_down = st.writer.as_ref().is_some_and(|w| down.contains(w));
        zones.push(ZoneReport {
            zone: zone.clone(),
            writer: st.writer.clone(),
            claim: st.kind.map(|k| k.as_str()),
            epoch: st.epoch,
            claims: zone_claims,
            conflicts: st.conflicts.clone(),
            writer_down,
            records,
            lease: leased.iter().find(|l| l.key.covers(&zone.region, &zone.domain)).map(|l| LeaseReport {
                key: l.key.clone(),
                home: l.roles.home.clone(),
                standbys: l.roles.standbys.clone(),
                adopter: l.roles.adopter.clone(),
                lease_ttl_seconds: l.params.ttl.as_secs(),
                hold_down_seconds: l.params.hold_down.as_secs(),
                holder: None,
                epoch: None,
                home_ready: None,
                read: false,
            }),
        });
        if writer_down {
            takeovers.extend(adoption_candidates(set, zone, down, opts));
        }
    }
    let clusters = plans.into_iter().filter(|p| only.is_none_or(|c| p.cluster == c)).collect();
    PlanReport { zones, clusters, down: down.to_vec(), takeovers }
}

/// For a zone whose writer is down: each live cluster that runs a controller for the zone's
/// region, and what it would write with `adoptsRegions: [region]`.
fn adoption_candidates(set: &ManifestSet, zone: &ZoneId, down: &[String], opts: &PlanOptions) -> Vec<Takeover> {
    let mut out = Vec::new();
    for (cluster, ci) in &set.cluster_identities {
        if down.contains(cluster) || ci.region == zone.region || ci.domain != zone.domain {
            continue;
        }
        let has_controller =
            set.dns_configurations.iter().any(|(c, d)| c == cluster && d.controllers.iter().any(|(_, r)| *r == zone.region));
        if !has_controller {
            continue;
        }
        let what_if = plan::adopting(set, cluster, &[zone.region.as_str()]);
        // Apply the adoption on top of today's registry, so the epoch is the next one.
        let (_, _, mut registry) = elect(set, opts);
        let after = plan::all(&what_if, opts);
        registry.reconcile(&ownership::claims(&after));
        if let Some(st) = registry.get(zone) {
            if st.writer.as_deref() == Some(cluster.as_str()) {
                out.push(Takeover {
                    zone: zone.clone(),
                    adopter: cluster.clone(),
                    epoch: st.epoch,
                    records: rows(&after, zone, &registry),
                });
            }
        }
    }
    out
}

fn render(r: &PlanReport) -> String {
    let mut out = String::new();
    if r.zones.is_empty() {
        out.push_str("no regional zone is written: no cluster has a DNSEndpoint to write\n");
    }
    for z in &r.zones {
        let writer = z.writer.as_deref().unwrap_or("nobody");
        if z.writer.is_none() && z.claims.is_empty() {
            // Only gateway A records: no ServiceRoute of any cluster is active for this zone.
            let _ = writeln!(
                out,
                "zone {} (controller external-dns-{}): gateway records only (no cluster claims its ServiceRoute records)",
                z.zone, z.zone.region
            );
        } else {
            let _ = writeln!(
                out,
                "zone {} (controller external-dns-{}): written by {writer} ({}, epoch {}){}",
                z.zone,
                z.zone.region,
                z.claim.unwrap_or("no claim"),
                z.epoch,
                if z.writer_down { "  ** WRITER DOWN **" } else { "" }
            );
        }
        if let Some(l) = &z.lease {
            let adopter = l.adopter.as_deref().map_or(String::new(), |a| format!("; adoptsRegions names {a}, which overrides"));
            let _ = writeln!(
                out,
                "  takeover: the zone's writer is whoever holds its etcd lease, not the election above: home {}, standbys [{}]{adopter}; lease {}s, hold-down {}s",
                if l.home.is_empty() { "none" } else { &l.home },
                l.standbys.join(", "),
                l.lease_ttl_seconds,
                l.hold_down_seconds
            );
            if l.read {
                let _ = writeln!(
                    out,
                    "  lease now: {}; home ready: {}",
                    match (&l.holder, l.epoch) {
                        (Some(h), Some(e)) => format!("held by {h} at epoch {e}"),
                        _ => "free (nobody writes the zone until a node takes it)".to_string(),
                    },
                    if l.home_ready == Some(true) { "yes" } else { "no" }
                );
            } else {
                let _ = writeln!(out, "  (pass --etcd to see who holds the lease now)");
            }
        }
        let claims: Vec<String> = z.claims.iter().map(|c| format!("{} ({})", c.cluster, c.kind.as_str())).collect();
        let _ = writeln!(out, "  claims: {}", if claims.is_empty() { "none".into() } else { claims.join(", ") });
        if !z.conflicts.is_empty() {
            let _ = writeln!(
                out,
                "  CONFLICT: {} claim(s) at the same precedence as the writer: {}; only {writer} writes",
                z.conflicts.len(),
                z.conflicts.join(", ")
            );
        }
        for row in &z.records {
            let _ = writeln!(
                out,
                "  {:<48} {:<5} {:<40} ttl {:<5} {} [{}]",
                row.name, row.record_type, row.target, row.ttl, row.endpoint, row.cluster
            );
        }
        if z.writer_down {
            let candidates: Vec<&Takeover> = r.takeovers.iter().filter(|t| t.zone == z.zone).collect();
            if candidates.is_empty() {
                let _ = writeln!(
                    out,
                    "  {writer} is down: its records stay as they are (stale) and no live cluster runs a controller for region {}",
                    z.zone.region
                );
            } else {
                let _ = writeln!(out, "  {writer} is down: its records go stale until a cluster adopts region {}:", z.zone.region);
            }
            for t in candidates {
                let _ = writeln!(
                    out,
                    "    with adoptsRegions: [{}] on {}: written by {} (adoption, epoch {})",
                    z.zone.region, t.adopter, t.adopter, t.epoch
                );
                for row in &t.records {
                    let _ = writeln!(out, "      {:<46} {:<5} {}", row.name, row.record_type, row.target);
                }
            }
        }
    }
    for p in &r.clusters {
        let adopts = if p.adopts_regions.is_empty() { "-".to_string() } else { p.adopts_regions.join(", ") };
        let _ = writeln!(
            out,
            "cluster {}: region {}, identity {}, domain {}, adopts {adopts}{}",
            p.cluster,
            p.region.as_deref().unwrap_or("?"),
            p.identity_cluster.as_deref().unwrap_or("?"),
            p.domain.as_deref().unwrap_or("?"),
            if r.down.contains(&p.cluster) { "  (down)" } else { "" }
        );
        for pol in &p.policies {
            let _ = writeln!(
                out,
                "  DNSPolicy {}/{} mode {}: {:?}; controllers [{}]; {}",
                pol.namespace,
                pol.name,
                pol.mode,
                pol.phase,
                pol.active_controllers.join(", "),
                pol.reason
            );
        }
        for route in &p.routes {
            let _ = writeln!(out, "  ServiceRoute {}/{}: {:?}; {}", route.namespace, route.name, route.phase, route.reason);
        }
        for n in &p.notes {
            let _ = writeln!(out, "  note: {n}");
        }
    }
    out
}
