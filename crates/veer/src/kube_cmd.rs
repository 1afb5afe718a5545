//! `veer run --kubeconfig`: the API server source on a thread of its own, so its watches never
//! take a request worker's time, handing the node its feeds.

use std::path::PathBuf;
use std::sync::Arc;

use veer_control::events::Events;
use veer_control::external::External;
use veer_core::topology::Labels;
use veer_gateway::snapshot::Snapshot;
use veer_kube::leader::Election;
use veer_kube::writer::Checks;
use veer_kube::StatusConfig;
use veer_node::node::Node;

/// What `veer run` reads from Kubernetes.
pub struct KubeRun {
    /// The own cluster's kubeconfig, or `None` for the in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    pub cluster: String,
    /// Where the election's Lease (`veer-<cluster>`) lives.
    pub lease_namespace: String,
    pub gateway_classes: Vec<String>,
    /// Remote clusters' kubeconfigs, by cluster name.
    pub remotes: Vec<(String, PathBuf)>,
    /// What status is checked with, beside the objects: the node's files and labels.
    pub files: Vec<PathBuf>,
    pub labels: Labels,
}

/// Connects (the kubeconfig, or the in-cluster configuration, and each remote's), discovers
/// what the servers serve and starts the watches; the feeds fill once every kind was listed
/// once. The node takes part in the election of the replica that writes status.
pub fn start(run: KubeRun) -> Result<(External, NodeLink), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (link_tx, link_rx) = tokio::sync::oneshot::channel::<Attached>();
    let KubeRun { kubeconfig: path, cluster, lease_namespace, gateway_classes, remotes, files, labels } = run;
    for (i, (remote, _)) in remotes.iter().enumerate() {
        if *remote == cluster {
            return Err(format!(
                "--remote-kubeconfig {remote}=…: {remote} is this node's own cluster (--cluster); its API server is --kubeconfig's"
            ));
        }
        if remotes[..i].iter().any(|(r, _)| r == remote) {
            return Err(format!("--remote-kubeconfig names cluster {remote} twice"));
        }
    }
    let status = StatusConfig {
        election: Election { namespace: lease_namespace, name: format!("veer-{cluster}"), identity: identity() },
        checks: Checks { files, cluster: cluster.clone(), labels },
    };
    let instance = status.election.identity.clone();
    std::thread::Builder::new()
        .name("veer-kube".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start the Kubernetes source's runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let source = async {
                    let client = veer_kube::client(path.as_deref()).await?;
                    let mut remote_clients = Vec::new();
                    for (cluster, path) in &remotes {
                        let client = veer_kube::client(Some(path)).await?;
                        remote_clients.push(veer_kube::Remote { cluster: cluster.clone(), client });
                    }
                    let source =
                        veer_kube::KubeSource::start_with_remotes(client.clone(), &cluster, &gateway_classes, Some(status), remote_clients)
                            .await?;
                    Ok::<_, veer_kube::KubeError>((client, source))
                };
                match source.await {
                    Ok((client, source)) => {
                        if tx.send(Ok(source.feeds())).is_ok() {
                            // Once the node runs, its priority changes become Events.
                            if let Ok(Attached { events, snapshot }) = link_rx.await {
                                tokio::spawn(veer_kube::events::publish(client, events, snapshot, source.uid_lookup(), instance));
                            }
                            // The source lives as long as the process: its watches end with it.
                            std::future::pending::<()>().await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        })
        .map_err(|e| format!("cannot start the Kubernetes source's thread: {e}"))?;
    let feeds = rx.recv().map_err(|_| "the Kubernetes source's thread ended".to_string())??;
    Ok((feeds, NodeLink(link_tx)))
}

/// What the source's thread takes from the running node.
struct Attached {
    events: Arc<Events>,
    snapshot: Box<dyn Fn() -> Arc<Snapshot> + Send + Sync>,
}

/// Hands the running node to the source's thread, which then posts its failovers as Events.
pub struct NodeLink(tokio::sync::oneshot::Sender<Attached>);

impl NodeLink {
    pub fn attach(self, node: &Node) {
        let _ = self.0.send(Attached { events: node.events.clone(), snapshot: Box::new(node.snapshot_reader()) });
    }
}

/// This replica's name in the election: the Pod's name when Kubernetes runs it (`POD_NAME`, from
/// the downward API in `deploy/`), else the host's, with the process id.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "veer".into());
    format!("{host}-{}", std::process::id())
}
