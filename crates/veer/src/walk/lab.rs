//! What a walk runs on loopback: backends that name themselves, veer nodes reading manifest
//! folders, and those folders; all torn down when the walk ends, however it ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use veer_control::events::EventKind;
use veer_node::node::{Node, NodeConfig};
use veer_testkit::Backend;

use super::Seed;

/// How long a node may take to apply a manifest change before the walk gives up.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Lab {
    /// A private folder under the system's temporary directory.
    dir: PathBuf,
    backends: BTreeMap<String, Arc<Backend>>,
    nodes: Vec<(String, Node)>,
}

impl Lab {
    pub fn new(seed: Seed) -> Result<Lab, String> {
        let dir = std::env::temp_dir().join(format!("veer-demo-{}-{}", seed.number(), std::process::id()));
        // A folder left by an earlier run that had the same pid holds nothing of value.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Lab { dir, backends: BTreeMap::new(), nodes: Vec::new() })
    }

    /// The lab's folder `name` (created), e.g. one node's manifests.
    pub fn folder(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Starts a backend on an exact address (a seed that names its ports).
    pub async fn backend_at(&mut self, name: &str, addr: SocketAddr) -> Result<Arc<Backend>, String> {
        let backend = Arc::new(Backend::start(name, addr).await.map_err(|e| format!("cannot start backend {name} on {addr}: {e}"))?);
        self.backends.insert(name.to_string(), Arc::clone(&backend));
        Ok(backend)
    }

    pub fn backend_named(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.get(name)
    }

    /// Stops and forgets a backend (its process gone, as when a pod is deleted).
    pub async fn remove_backend(&mut self, name: &str) {
        if let Some(backend) = self.backends.remove(name) {
            if let Ok(backend) = Arc::try_unwrap(backend) {
                backend.stop().await;
            }
        }
    }

    /// Starts a node named `name` (for [`Lab::node`]) with `cfg`.
    pub async fn start_node(&mut self, name: &str, cfg: NodeConfig) -> Result<&Node, String> {
        let node = Node::start(cfg).await.map_err(|e| format!("cannot start the {name} node: {e}"))?;
        self.nodes.push((name.to_string(), node));
        Ok(&self.nodes[self.nodes.len() - 1].1)
    }

    /// Stops node `name` and forgets it (its cluster down), so a node of that name may start again.
    pub async fn stop_node(&mut self, name: &str) -> Result<(), String> {
        let i = self.nodes.iter().position(|(n, _)| n == name).ok_or_else(|| format!("no node named {name}"))?;
        let (_, node) = self.nodes.remove(i);
        node.stop().await;
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&Node, String> {
        self.nodes.iter().find(|(n, _)| n == name).map(|(_, node)| node).ok_or_else(|| format!("no node named {name}"))
    }

    /// Writes `contents` to `folder/file` the way a careful tool does (a temporary file renamed
    /// into place), so a watching node never reads half of it.
    pub fn write(&self, folder: &Path, file: &str, contents: &str) -> Result<(), String> {
        let path = folder.join(file);
        let tmp = folder.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, contents).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot move {} into place: {e}", path.display()))
    }

    /// Removes `folder/file`.
    pub fn remove(&self, folder: &Path, file: &str) -> Result<(), String> {
        let path = folder.join(file);
        std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
    }

    /// Runs `change` (file edits in the folders node `name` reads) and waits until that node has
    /// applied them: its next accepted reload. A rejected reload is an error naming why.
    pub async fn apply(&self, name: &str, change: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        let node = self.node(name)?;
        let seen = node.events.last_seq();
        change()?;
        let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
        loop {
            for event in node.events.since(seen) {
                match event.kind {
                    EventKind::ConfigReloaded => return Ok(()),
                    EventKind::ConfigRejected => return Err(format!("the {name} node refused the change: {}", event.reason)),
                    _ => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("the {name} node did not apply the change within {APPLY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Lab::apply`] for several nodes that read the same folder: runs `change` once and waits
    /// until every one of `names` has applied it.
    pub async fn apply_all(&self, names: &[&str], change: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        let mut seen = Vec::new();
        for name in names {
            seen.push((*name, self.node(name)?.events.last_seq()));
        }
        change()?;
        let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
        let mut waiting = seen;
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for (name, seq) in waiting {
                let mut done = false;
                for event in self.node(name)?.events.since(seq) {
                    match event.kind {
                        EventKind::ConfigReloaded => done = true,
                        EventKind::ConfigRejected => return Err(format!("the {name} node refused the change: {}", event.reason)),
                        _ => {}
                    }
                }
                if !done {
                    still.push((name, seq));
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<&str> = waiting.iter().map(|(n, _)| *n).collect();
                return Err(format!("the {} node(s) did not apply the change within {APPLY_TIMEOUT:?}", names.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        for (_, node) in std::mem::take(&mut self.nodes) {
            node.stop().await;
        }
        for (_, backend) in std::mem::take(&mut self.backends) {
            // Still shared only if a task holding it was cancelled; dropping it tears it down too.
            if let Ok(backend) = Arc::try_unwrap(backend) {
                backend.stop().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
