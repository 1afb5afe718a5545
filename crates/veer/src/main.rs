//! The `veer` command: check manifests (`validate`) and answer "where does this client's
//! traffic go, and why" (`explain`). Thin: the work lives in veer-model and veer-core.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod clock;
mod demo;
mod out;
mod walk;
use out::{out, outln};

// A proxy allocates and frees small buffers per request; mimalloc's thread-local free lists
// cost less than glibc malloc there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod dns_cmd;
mod kube_cmd;
mod pki_cmd;
mod status_cmd;
use veer_core::topology::Labels;
use veer_model::diag::Severity;
use veer_model::explain::{apply_down, explain, render_table, Down};
use veer_model::inventory::Inventory;
use veer_model::resolve::View;

#[derive(Parser)]
#[command(name = "veer", version, about = "Multi-cluster service failover that explains itself")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests and report every problem, located as FILE:LINE:COL.
    Validate {
        /// Files or directories of manifests; `-` reads stdin.
        #[arg(short = 'f', long = "file", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Also list resources veer does not act on.
        #[arg(long)]
        show_ignored: bool,
    },
    /// Print a client's priority table for a destination host, and why.
    Explain {
        #[arg(short = 'f', long = "file", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// HOST or HOST:PORT the client calls.
        #[arg(long)]
        host: String,
        /// The client's cluster.
        #[arg(long = "from")]
        from: String,
        /// Extra client labels, k=v (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// What if: `cluster=NAME` or an endpoint ADDRESS (IP or IP:PORT) is down (repeatable).
        #[arg(long = "down", value_parser = parse_down)]
        down: Vec<Down>,
        /// Request path, to pick an HTTPRoute rule.
        #[arg(long, default_value = "")]
        path: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run this cluster's veer node: the gateway that routes, fails over and fails back.
    Run {
        #[arg(short = 'f', long = "file", required_unless_present_any = ["kubeconfig", "in_cluster"], num_args = 1..)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        kube: Box<KubeArgs>,
        /// The cluster this node serves (a `Cluster` of the manifests).
        #[arg(long)]
        cluster: String,
        /// This node's labels, k=v (repeatable): they count as the client's labels.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Gateway listen address (default: the Cluster's spec.gateway.address).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Admin listen address (default: the Cluster's spec.admin.address, else an ephemeral loopback port).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
        /// Threads serving requests (default: one per core). Each has its own listener socket
        /// (SO_REUSEPORT) and upstream pools; the first also runs the control loop, admin and DNS.
        #[arg(long)]
        workers: Option<usize>,
        /// Leave the workers to the scheduler. By default two or more workers are each kept on
        /// a CPU of their own (of those this process may use, when there are enough), so two
        /// never queue behind each other on one CPU.
        #[arg(long)]
        no_pin_workers: bool,
        /// Client connections held at once, across workers; more wait in the kernel's accept
        /// queue until one closes. Default: half the file limit (raised to its hard limit at
        /// start), keeping at least 256 files for upstreams, peers, admin, DNS and manifests.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_connections: Option<u64>,
        /// Serve DNS (UDP and TCP) here: destination hosts and this cluster's regional zones.
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
        #[command(flatten)]
        dns_args: Box<dns_cmd::DnsArgs>,
        #[command(flatten)]
        mesh: Box<MeshArgs>,
        /// Keep the last accepted manifest set in this directory (saved at start and after each
        /// accepted reload). When the files do not pass at start, serve that set instead of
        /// refusing to start, with an error log and a `started_from_state` event, until the
        /// files are fixed.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        access_log: Box<AccessLogArgs>,
    },
    /// Ask a running node how it sees its peer clusters and which priority each destination uses.
    Status {
        /// The node's admin address.
        #[arg(long)]
        admin: std::net::SocketAddr,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// A two-cluster world on loopback: watch traffic fail over and back with zero errors.
    /// Watch failover live on loopback. Without SEED: one service in two clusters failing over
    /// and back. With SEED (000-004, or gloo, smh, sro, istio, envoy-gateway): that seed
    /// document's own walkthrough, step by step, with what the seed says beside what veer measured.
    Demo {
        /// A seed document to replay: 000 (gloo), 001 (smh), 002 (sro), 003 (istio), 004 (envoy-gateway).
        #[arg(value_parser = parse_seed)]
        seed: Option<walk::Seed>,
        /// Seconds for each phase (steady, outage, recovery) of the default demo.
        #[arg(long, default_value_t = 8)]
        phase_seconds: u64,
        /// Requests per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Plain output (no live bars), for logs and tests.
        #[arg(long)]
        plain: bool,
    },
    /// DNS: the DNSEndpoints for ExternalDNS, and who writes which regional zone.
    Dns {
        #[command(subcommand)]
        command: dns_cmd::DnsCommand,
    },
    /// Mesh identity for east-west mTLS: a shared root, an intermediate per cluster, node certificates.
    Pki {
        #[command(subcommand)]
        command: pki_cmd::PkiCommand,
    },
    /// List the apiVersions and kinds veer reads.
    Kinds,
    /// Print CustomResourceDefinitions for every custom kind veer reads, as one JSON `List`
    /// (`veer crds | kubectl apply -f -`), for clusters where the owning project is not installed.
    Crds,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// `veer run`'s access log flags.
/// How `veer run` joins the mesh, if it does.
#[derive(clap::Args, Debug)]
struct MeshArgs {
    /// Join the mesh: this cluster's certificate directory as `veer pki` writes it
    /// (root-cert.pem, node-cert.pem, node-key.pem). Peers are the other Clusters with a
    /// spec.eastWest.address; their endpoints are reached only through it, over mTLS.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// East-west listen address (default: the Cluster's spec.eastWest.address).
    #[arg(long = "east-west", requires = "certs")]
    east_west: Option<std::net::SocketAddr>,
    /// A peer silent this long is flagged stale (still routed).
    #[arg(long, value_parser = parse_duration, default_value = "3s", requires = "certs")]
    peer_stale_after: std::time::Duration,
    /// A peer silent this long, or whose gateway is unreachable, has all its endpoints unhealthy.
    #[arg(long, value_parser = parse_duration, default_value = "6s", requires = "certs")]
    peer_unhealthy_after: std::time::Duration,
    /// A peer silent this long has its endpoints dropped.
    #[arg(long, value_parser = parse_duration, default_value = "10m", requires = "certs")]
    peer_forget_after: std::time::Duration,
}

/// Where `veer run` finds a Kubernetes API server, if it reads one.
#[derive(clap::Args, Debug)]
struct KubeArgs {
    /// Read the manifests (every kind veer reads, Services, TLS Secrets) and this cluster's
    /// endpoints (EndpointSlices, with their Pods' labels and Nodes' localities) from the
    /// Kubernetes API server this kubeconfig names, beside any files.
    #[arg(long, conflicts_with = "in_cluster")]
    kubeconfig: Option<PathBuf>,
    /// As --kubeconfig, with the Pod's own service account (veer running in the cluster).
    #[arg(long)]
    in_cluster: bool,
    /// Where the Lease that elects the replica writing status lives (default: the namespace
    /// veer runs in, from POD_NAMESPACE, else `default`).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Serve only the Gateway API Gateways of this class (repeatable; default: every class,
    /// whatever its controller), as when another Gateway implementation shares the cluster.
    #[arg(long = "gateway-class")]
    gateway_classes: Vec<String>,
    /// Also read a remote cluster's API server, as CLUSTER=KUBECONFIG (repeatable; as Istio's
    /// remote secrets): its objects join the manifests, and its EndpointSlices are that cluster's
    /// endpoints (on a meshed node its peer announces them instead). Read only.
    #[arg(long = "remote-kubeconfig", value_name = "CLUSTER=KUBECONFIG", value_parser = parse_remote, requires = "kubeconfig")]
    remote_kubeconfigs: Vec<(String, PathBuf)>,
}

fn parse_remote(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((cluster, path)) if !cluster.is_empty() && !path.is_empty() => Ok((cluster.to_string(), PathBuf::from(path))),
        _ => Err(format!("{arg:?} is not CLUSTER=KUBECONFIG")),
    }
}

#[derive(clap::Args)]
struct AccessLogArgs {
    /// Write one line per request here (`-`: standard output), appending to a file. Lines
    /// are queued to a writer thread; when its queue is full they are dropped and counted
    /// (veer_access_log_dropped), never waited for.
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<PathBuf>,
    /// Access log lines as JSON objects, or in Envoy's default text format followed by
    /// veer's own fields.
    #[arg(long, value_enum, default_value_t = AccessLogFormat::Json, requires = "access_log")]
    access_log_format: AccessLogFormat,
    /// The share of requests logged, from 0 (none) to 1 (all).
    #[arg(long, value_name = "RATE", default_value_t = 1.0, value_parser = parse_rate, requires = "access_log")]
    access_log_sample: f64,
}

/// How `--access-log` writes lines.
#[derive(Clone, Copy, ValueEnum)]
enum AccessLogFormat {
    Json,
    Envoy,
}

/// A share from 0 to 1, as `--access-log-sample` takes it.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?}: expected a number from 0 (no request logged) to 1 (every request)")),
    }
}

fn parse_seed(s: &str) -> Result<walk::Seed, String> {
    s.parse()
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not k=v")),
    }
}

/// `500ms`, `3s`, `10m`, `1h`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(|| format!("{s:?}: add a unit: ms, s, m or h (e.g. 3s)"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("{s:?}: expected a number then ms, s, m or h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_down(s: &str) -> Result<Down, String> {
    match s.split_once('=') {
        Some(("cluster", name)) if !name.is_empty() => Ok(Down::Cluster(name.to_string())),
        Some(_) => Err(format!("{s:?}: expected cluster=NAME or an endpoint address")),
        None if s.parse::<std::net::IpAddr>().is_ok() || s.parse::<std::net::SocketAddr>().is_ok() || s.contains(':') => {
            Ok(Down::Address(s.to_string()))
        }
        None => Err(format!("{s:?}: expected cluster=NAME or an endpoint address (IP or IP:PORT)")),
    }
}

fn split_host(s: &str) -> Result<(String, Option<u16>), String> {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => p.parse().map(|p| (h.to_string(), Some(p))).map_err(|_| format!("{s:?}: bad port {p:?}")),
        _ => Ok((s.to_string(), None)),
    }
}

/// The set `files` hold, or every error printed to stderr and why nothing was done.
fn load(files: &[PathBuf]) -> Result<veer_model::set::ManifestSet, String> {
    let sources = veer_model::files::read_paths(files)?;
    match veer_model::from_sources(&sources) {
        Ok(accepted) => Ok(accepted.into_set()),
        Err(rejected) => {
            for d in rejected.errors() {
                eprintln!("{d}");
            }
            Err("the manifests have errors (see above); fix them or run `veer validate`".into())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("veer: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

async fn run_node(cfg: veer_node::node::NodeConfig, kube: Option<kube_cmd::NodeLink>) -> Result<ExitCode, String> {
    let node = veer_node::node::Node::start(cfg).await.map_err(|e| e.to_string())?;
    if let Some(link) = kube {
        link.attach(&node);
    }
    tracing::info!(gateway = %node.listen, admin = %node.admin, "veer node running; Ctrl-C to stop");
    wait_for_stop().await;
    node.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    runtime_with(None)
}

fn runtime_with(workers: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n.max(1));
    }
    b.enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Run {
            files,
            kube,
            cluster,
            labels,
            listen,
            admin,
            log_json,
            workers,
            no_pin_workers,
            max_connections,
            dns,
            dns_args,
            mesh,
            state_dir,
            access_log,
        } => {
            init_logs(log_json);
            // Before the limits are derived from it.
            let files_limit = veer_gateway::server::raise_nofile_limit();
            let mut cfg = veer_node::node::NodeConfig::new(files, &cluster);
            if let Some(n) = max_connections {
                cfg.limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
            }
            tracing::info!(files = ?files_limit, max_connections = cfg.limits.max_connections, "client connection cap");
            cfg.labels = labels.into_iter().collect();
            cfg.listen = listen;
            cfg.admin = admin;
            cfg.dns = dns;
            cfg.dns_settings = dns_args.settings()?;
            cfg.etcd = dns_args.etcd()?;
            cfg.state_dir = state_dir;
            let KubeArgs { kubeconfig, in_cluster, lease_namespace, gateway_classes, remote_kubeconfigs } = *kube;
            let mut kube_link = None;
            let MeshArgs { certs, east_west, peer_stale_after, peer_unhealthy_after, peer_forget_after } = *mesh;
            if kubeconfig.is_some() || in_cluster {
                let namespace = lease_namespace.or_else(|| std::env::var("POD_NAMESPACE").ok()).unwrap_or_else(|| "default".into());
                let (feeds, link) = kube_cmd::start(kube_cmd::KubeRun {
                    kubeconfig,
                    cluster: cluster.clone(),
                    lease_namespace: namespace,
                    gateway_classes,
                    remotes: remote_kubeconfigs,
                    files: cfg.files.clone(),
                    labels: cfg.labels.clone(),
                })?;
                cfg.external = Some(feeds);
                kube_link = Some(link);
            }
            let AccessLogArgs { access_log, access_log_format, access_log_sample } = *access_log;
            cfg.access_log = access_log.map(|path| {
                use veer_gateway::access_log as log;
                let target = if path.as_os_str() == "-" { log::AccessLogTarget::Stdout } else { log::AccessLogTarget::File(path) };
                let format = match access_log_format {
                    AccessLogFormat::Json => log::AccessLogFormat::Json,
                    AccessLogFormat::Envoy => log::AccessLogFormat::Envoy,
                };
                log::AccessLogConfig::new(target, format, access_log_sample)
            });
            if !(peer_stale_after < peer_unhealthy_after && peer_unhealthy_after < peer_forget_after) {
                return Err(format!("expected --peer-stale-after < --peer-unhealthy-after < --peer-forget-after, got {peer_stale_after:?}, {peer_unhealthy_after:?}, {peer_forget_after:?}"));
            }
            cfg.mesh = certs.map(|certs| veer_node::node::MeshConfig {
                certs,
                east_west,
                aging: veer_control::mesh::peers::Aging {
                    stale_after: peer_stale_after,
                    unhealthy_after: peer_unhealthy_after,
                    forget_after: peer_forget_after,
                    ..Default::default()
                },
            });
            cfg.workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
            if !no_pin_workers {
                cfg.worker_cpus = veer_node::cpus::plan(cfg.workers);
            }
            // Thread per core: this thread's runtime is the first worker; the node starts the others.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?
                .block_on(run_node(cfg, kube_link))
        }
        Command::Demo { seed: Some(seed), rate, plain, .. } => {
            runtime()?.block_on(walk::run(seed, walk::WalkOptions { plain, rate: rate.min(1000) }))
        }
        Command::Demo { seed: None, phase_seconds, rate, plain } => {
            runtime()?.block_on(demo::run(demo::DemoOptions { phase: std::time::Duration::from_secs(phase_seconds), rate, plain }))
        }
        Command::Dns { command } => dns_cmd::run(command),
        Command::Pki { command } => pki_cmd::run(command),
        Command::Status { admin, output } => runtime_with(Some(1))?.block_on(status_cmd::run(admin, matches!(output, Output::Json))),
        Command::Crds => {
            let list = serde_json::to_string_pretty(&veer_kube::crds::all()).map_err(|e| e.to_string())?;
            outln!("{list}")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Kinds => {
            for k in veer_model::load::supported_kinds() {
                outln!("{k}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files, show_ignored } => {
            let loaded = match veer_model::files::read_paths(&files) {
                // Reported on even when it has errors: what was read is counted and warned about.
                Ok(sources) => veer_model::from_sources_even_if_invalid(&sources),
                // A file that could be read but is not text is an error in the manifests, located
                // like the others (exit 1); one that cannot be read at all stays exit 2.
                Err(e) if e.is_content() => {
                    outln!("{e}")?;
                    outln!("1 error(s); nothing else was checked: fix this file first")?;
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.to_string()),
            };
            let mut diagnostics = loaded.diagnostics;
            // Needs every destination resolved for every client, so validate alone runs it.
            let inventory = Inventory::from_manifests(&loaded.set);
            veer_model::ejection::warnings(View::new(&loaded.set, &inventory)).into_iter().for_each(|d| diagnostics.push(d));
            let diags = diagnostics.into_sorted();
            let (mut errors, mut warnings, mut ignored) = (0, 0, 0);
            for d in &diags {
                match d.severity {
                    Severity::Error => errors += 1,
                    Severity::Warning => warnings += 1,
                    Severity::Ignored => ignored += 1,
                }
                if d.severity != Severity::Ignored || show_ignored {
                    outln!("{d}")?;
                }
            }
            let set = &loaded.set;
            let acted = set.clusters.len()
                + set.services().len()
                + set.entries().len()
                + set.virtual_destinations.len()
                + set.failover_policies.len()
                + set.outlier_policies.len()
                + set.failover_services.len()
                + set.traffic_policies.len()
                + set.virtual_meshes.len()
                + set.destination_rules.len()
                + set.istio_gateways.len()
                + set.backends.len()
                + set.backend_policies.len()
                + set.gateways.len()
                + set.routes.len()
                + set.tls_routes.len()
                + set.cluster_identities.len()
                + set.dns_configurations.len()
                + set.dns_policies.len()
                + set.service_routes.len()
                + set.router_gateways.len()
                + set.dns_endpoints.len();
            outln!(
                "{acted} resources read, {ignored} ignored{}; {errors} error(s), {warnings} warning(s)",
                if ignored > 0 && !show_ignored { " (--show-ignored lists them)" } else { "" }
            )?;
            Ok(if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Explain { files, host, from, labels, down, path, output } => {
            let set = load(&files)?;
            let (host, port) = split_host(&host)?;
            let extra: Labels = labels.into_iter().collect();
            let client = veer_model::resolve::client(&set, &from, &extra).map_err(|e| e.to_string())?;
            let inventory = Inventory::from_manifests(&set);
            let mut dest =
                veer_model::resolve::resolve(View::new(&set, &inventory), &host, port, &from, &path).map_err(|e| e.to_string())?;
            apply_down(&mut dest, &down).map_err(|e| e.to_string())?;
            let report = explain(&dest, &client);
            match output {
                Output::Table => out!("{}", render_table(&report))?,
                Output::Json => outln!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
