//! `veer run --kubeconfig`: the API server source on a thread of its own, so its watches never
//! take a request worker's time, handing the node its feeds.

use std::path::PathBuf;

use veer_control::external::External;
use veer_core::topology::Labels;
use veer_kube::leader::Election;
use veer_kube::writer::Checks;
use veer_kube::StatusConfig;

/// Connects (the kubeconfig at `path`, or the in-cluster configuration), discovers what the
/// server serves and starts the watches; the feeds fill once every kind was listed once. The
/// node takes part in the election of the replica that writes status (a Lease named
/// `veer-<cluster>` in `lease_namespace`), checking objects with its `files` and `labels`.
pub fn start(
    path: Option<PathBuf>,
    cluster: &str,
    lease_namespace: String,
    files: Vec<PathBuf>,
    labels: Labels,
) -> Result<External, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let status = StatusConfig {
        election: Election { namespace: lease_namespace, name: format!("veer-{cluster}"), identity: identity() },
        checks: Checks { files, cluster: cluster.to_string(), labels },
    };
    let cluster = cluster.to_string();
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
                    veer_kube::KubeSource::start_with(client, &cluster, Some(status)).await
                };
                match source.await {
                    Ok(source) => {
                        if tx.send(Ok(source.feeds())).is_ok() {
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
    rx.recv().map_err(|_| "the Kubernetes source's thread ended".to_string())?
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
