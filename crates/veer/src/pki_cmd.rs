//! `veer pki`: make and check the mesh identity for east-west mTLS (seed 003's root and intermediates, plus node certificates); the work lives in veer-pki.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Create the mesh's root CA: DIR/root-cert.pem and DIR/root-key.pem (never overwritten).
    Root {
        /// Directory to write to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Create a cluster's intermediate CA, signed by the root (veer's or seed 003's openssl one).
    Intermediate {
        /// Directory holding root-cert.pem and root-key.pem.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// The cluster's name, a DNS label (e.g. cluster1): its nodes are NAME.cluster.veer.
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// Where to write ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem (default: ROOT/NAME).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Create a node certificate (node-cert.pem, node-key.pem) signed by the cluster's intermediate.
    Node {
        /// The cluster's directory, holding ca-cert.pem, ca-key.pem and root-cert.pem.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The cluster's name, a DNS label (e.g. cluster1): its nodes are NAME.cluster.veer.
        #[arg(long, value_name = "NAME")]
        cluster: String,
    },
    /// Create a whole mesh at once: the root in DIR, and DIR/NAME/ with intermediate and node for each cluster.
    Mesh {
        /// Directory to write to (created if missing); it must not hold a mesh already.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A cluster of the mesh (repeatable).
        #[arg(long = "cluster", value_name = "NAME", required = true)]
        clusters: Vec<String>,
    },
    /// Show a node's certificates (subjects, issuers, SANs, expiry) and whether they chain to the root.
    Inspect {
        /// The cluster's directory, holding root-cert.pem, node-cert.pem and node-key.pem.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The cluster's name, a DNS label (e.g. cluster1): its nodes are NAME.cluster.veer.
        #[arg(long, value_name = "NAME")]
        cluster: String,
    },
}

pub fn run(cmd: PkiCommand) -> Result<ExitCode, String> {
    match cmd {
        PkiCommand::Root { out } => {
            veer_pki::create_root(&out).map_err(|e| e.to_string())?;
            wrote(&out, &[veer_pki::ROOT_CERT, veer_pki::ROOT_KEY])?;
            crate::outln!("keep {} safe: it signs every cluster's intermediate", out.join(veer_pki::ROOT_KEY).display())?;
        }
        PkiCommand::Intermediate { root, cluster, out } => {
            let out = out.unwrap_or_else(|| root.join(&cluster));
            veer_pki::create_intermediate(&root, &cluster, &out).map_err(|e| e.to_string())?;
            wrote(&out, &[veer_pki::CA_CERT, veer_pki::CA_KEY, veer_pki::CERT_CHAIN, veer_pki::ROOT_CERT])?;
            crate::outln!("next: veer pki node --dir {} --cluster {cluster}", out.display())?;
        }
        PkiCommand::Node { dir, cluster } => {
            veer_pki::create_node(&dir, &cluster).map_err(|e| e.to_string())?;
            wrote(&dir, &[veer_pki::NODE_CERT, veer_pki::NODE_KEY])?;
            crate::outln!("{cluster} is {} and {}", veer_pki::dns_name(&cluster), veer_pki::spiffe_id(&cluster))?;
        }
        PkiCommand::Mesh { out, clusters } => {
            let names: Vec<&str> = clusters.iter().map(String::as_str).collect();
            veer_pki::create_mesh(&out, &names).map_err(|e| e.to_string())?;
            wrote(&out, &[veer_pki::ROOT_CERT, veer_pki::ROOT_KEY])?;
            for c in &names {
                wrote(
                    &out.join(c),
                    &[
                        veer_pki::CA_CERT,
                        veer_pki::CA_KEY,
                        veer_pki::CERT_CHAIN,
                        veer_pki::ROOT_CERT,
                        veer_pki::NODE_CERT,
                        veer_pki::NODE_KEY,
                    ],
                )?;
            }
        }
        PkiCommand::Inspect { dir, cluster } => {
            let report = veer_pki::inspect(&dir, &cluster);
            crate::out!("{report}")?;
            return Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists the files a step leaves in `dir`.
fn wrote(dir: &Path, files: &[&str]) -> Result<(), String> {
    crate::outln!("{}: {}", dir.display(), files.join(" "))
}
