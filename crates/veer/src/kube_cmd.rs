//! `veer run --kubeconfig`: the API server source on a thread of its own, so its watches never
//! take a request worker's time, handing the node its feeds.

use std::path::PathBuf;

use veer_control::external::External;

/// Connects (the kubeconfig at `path`, or the in-cluster configuration), discovers what the
/// server serves and starts the watches; the feeds fill once every kind was listed once.
pub fn start(path: Option<PathBuf>, cluster: &str) -> Result<External, String> {
    let (tx, rx) = std::sync::mpsc::channel();
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
                    veer_kube::KubeSource::start(client, &cluster).await
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
