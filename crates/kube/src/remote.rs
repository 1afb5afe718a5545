//! Remote clusters' API servers, read as Istio's remote secrets let istiod read them: each
//! watched like the node's own (its objects named `kubernetes@<cluster>:…`, its per-cluster
//! objects labelled with its cluster, its EndpointSlices as that cluster's endpoints), and every
//! server's feeds merged into the one pair the control side takes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use veer_control::external::{Documents, External, SliceEndpoints};

use crate::problems::{note, Problems};
use crate::source::{KubeError, KubeSource, Origin, StatusConfig};

/// How long a node's first sync waits for a remote server before it starts without that
/// cluster's objects (they join when the server answers), as istiod waits for remote clusters.
pub const REMOTE_WAIT: Duration = Duration::from_secs(30);

/// A remote cluster veer reads: its name (as the manifests' Clusters name it) and a client for
/// its API server. Read only: status, DNSEndpoints and Events are written by that cluster's own
/// veer.
#[derive(Clone)]
pub struct Remote {
    pub cluster: String,
    pub client: Client,
}

impl KubeSource {
    /// [`KubeSource::start_owning`], and the `remotes`' API servers read beside this cluster's
    /// (see this module): their objects join the documents (an object several servers hold
    /// counts once), their EndpointSlices are their clusters' endpoints, and status is checked on
    /// the whole. The feeds wait up to [`REMOTE_WAIT`] for each remote's first list.
    pub async fn start_with_remotes(
        client: Client,
        cluster: &str,
        classes: &[String],
        status: Option<StatusConfig>,
        remotes: Vec<Remote>,
    ) -> Result<KubeSource, KubeError> {
        let mut source = KubeSource::start_server(client.clone(), cluster, classes, Origin::Own).await?;
        if !remotes.is_empty() {
            let own = source.feeds.clone();
            source.feeds = combine(cluster, own, remotes, REMOTE_WAIT, source.problems.clone(), &mut source.tasks);
        }
        if let Some(status) = status {
            let (leading_tx, leading) = watch::channel(false);
            let writer = crate::writer::Writer {
                client: client.clone(),
                checks: status.checks,
                kinds: source.kinds.clone(),
                written: Arc::clone(&source.status_writes),
                problems: source.problems.clone(),
            };
            source.tasks.push(tokio::spawn(writer.run(source.feeds.documents.clone(), leading.clone())));
            source.tasks.push(tokio::spawn(crate::leader::run(client, status.election, leading_tx)));
            source.leading = leading;
        }
        Ok(source)
    }

    /// A remote cluster's server, read only.
    async fn start_remote(client: Client, cluster: &str) -> Result<KubeSource, KubeError> {
        KubeSource::start_server(client, cluster, &[], Origin::Remote).await
    }
}

/// One server's feeds as the merge sees them: `None` until it has listed everything once.
struct Feeds {
    cluster: String,
    documents: watch::Receiver<Option<Documents>>,
    endpoints: watch::Receiver<Option<SliceEndpoints>>,
}

/// Merges `own`'s feeds and each remote's into one pair, with the tasks that keep them pushed
/// onto `tasks`. Nothing is sent before `own` has synced and each remote has either synced or had
/// `wait` to do so.
pub(crate) fn combine(
    own_cluster: &str,
    own: External,
    remotes: Vec<Remote>,
    wait: Duration,
    problems: Problems,
    tasks: &mut Vec<JoinHandle<()>>,
) -> External {
    let wake = Arc::new(Notify::new());
    let mut servers = vec![Feeds { cluster: own_cluster.to_string(), documents: own.documents, endpoints: own.endpoints }];
    for remote in remotes {
        let (documents_tx, documents) = watch::channel(None);
        let (endpoints_tx, endpoints) = watch::channel(None);
        servers.push(Feeds { cluster: remote.cluster.clone(), documents, endpoints });
        tasks.push(tokio::spawn(read_remote(remote, documents_tx, endpoints_tx, problems.clone())));
    }
    for server in &servers {
        tasks.push(tokio::spawn(poke_on_change(server.documents.clone(), server.endpoints.clone(), wake.clone())));
    }
    let (documents_tx, documents) = watch::channel(None);
    let (endpoints_tx, endpoints) = watch::channel(None);
    let deadline = crate::clock::tokio_now() + wait;
    tasks.push(tokio::spawn(merge(servers, wake, deadline, documents_tx, endpoints_tx, problems)));
    External { documents, endpoints }
}

/// Starts the remote's source (again and again, with back-off, while its server cannot be
/// reached) and copies its feeds into the merge's channels for as long as the node runs.
async fn read_remote(
    remote: Remote,
    documents_tx: watch::Sender<Option<Documents>>,
    endpoints_tx: watch::Sender<Option<SliceEndpoints>>,
    problems: Problems,
) {
    let what = format!("reading the API server of remote cluster {}", remote.cluster);
    let mut backoff = Duration::from_millis(500);
    let source = loop {
        match KubeSource::start_remote(remote.client.clone(), &remote.cluster).await {
            Ok(source) => break source,
            Err(e) => {
                tracing::warn!(target: "veer::kube", "{what}: {e}; trying again in {backoff:?}");
                note(&problems, &what, Some(e.to_string()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    note(&problems, &what, None);
    let mut feeds = source.feeds();
    loop {
        documents_tx.send_replace(feeds.documents.borrow_and_update().clone());
        endpoints_tx.send_replace(feeds.endpoints.borrow_and_update().clone());
        tokio::select! {
            r = feeds.documents.changed() => if r.is_err() { return },
            r = feeds.endpoints.changed() => if r.is_err() { return },
        }
        // The remote's own problems (a kind it may not watch) are the node's too.
        for (about, why) in source.problems() {
            note(&problems, &format!("{} (remote cluster {})", about, remote.cluster), Some(why));
        }
    }
}

async fn poke_on_change(
    mut documents: watch::Receiver<Option<Documents>>,
    mut endpoints: watch::Receiver<Option<SliceEndpoints>>,
    wake: Arc<Notify>,
) {
    loop {
        wake.notify_one();
        tokio::select! {
            r = documents.changed() => if r.is_err() { return },
            r = endpoints.changed() => if r.is_err() { return },
        }
    }
}

async fn merge(
    servers: Vec<Feeds>,
    wake: Arc<Notify>,
    deadline: tokio::time::Instant,
    documents_tx: watch::Sender<Option<Documents>>,
    endpoints_tx: watch::Sender<Option<SliceEndpoints>>,
    problems: Problems,
) {
    let mut conflicts_noted: Vec<String> = Vec::new();
    let mut past_deadline = false;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(deadline), if !past_deadline => past_deadline = true,
        }
        let documents: Vec<Option<Documents>> = servers.iter().map(|s| s.documents.borrow().clone()).collect();
        let endpoints: Vec<Option<SliceEndpoints>> = servers.iter().map(|s| s.endpoints.borrow().clone()).collect();
        // The own server first: without it the node has nothing to serve.
        if documents[0].is_none() || endpoints[0].is_none() {
            continue;
        }
        let waiting: Vec<&str> = servers.iter().zip(&documents).filter(|(_, d)| d.is_none()).map(|(s, _)| s.cluster.as_str()).collect();
        let first = documents_tx.borrow().is_none();
        if first && !waiting.is_empty() {
            if !past_deadline {
                continue;
            }
            tracing::warn!(target: "veer::kube", "starting without the objects of remote cluster(s) {}: their API servers have not been read yet (they join when they are)", waiting.join(", "));
        }
        let listed: Vec<(&str, &[(String, String)])> =
            servers.iter().zip(&documents).filter_map(|(s, d)| d.as_ref().map(|d| (s.cluster.as_str(), d.as_slice()))).collect();
        let (merged, conflicts) = merge_documents(&listed);
        for c in &conflicts {
            if !conflicts_noted.contains(c) {
                tracing::warn!(target: "veer::kube", "{c}");
            }
        }
        for gone in conflicts_noted.iter().filter(|c| !conflicts.contains(c)) {
            note(&problems, gone, None);
        }
        for c in &conflicts {
            note(&problems, c, Some("the first server's object is used".into()));
        }
        conflicts_noted = conflicts;
        let merged = Arc::new(merged);
        documents_tx.send_if_modified(|now| {
            let changed = now.as_deref() != Some(&*merged);
            if changed {
                *now = Some(merged);
            }
            changed
        });
        let mut all = BTreeMap::new();
        for e in endpoints.iter().flatten() {
            for (cluster, records) in e.iter() {
                all.insert(cluster.clone(), records.clone());
            }
        }
        let all = Arc::new(all);
        endpoints_tx.send_if_modified(|now| {
            let changed = now.as_deref() != Some(&*all);
            if changed {
                *now = Some(all);
            }
            changed
        });
    }
}

/// Every server's documents as one list, the first server's first. An object several servers
/// hold (the same kind, namespace and name, and for per-cluster kinds the same cluster), as when
/// a Cluster or a policy is applied to every cluster, is kept once: the first server's copy. If
/// the copies differ beyond the servers' bookkeeping, that is returned as a conflict to report.
pub fn merge_documents(servers: &[(&str, &[(String, String)])]) -> (Vec<(String, String)>, Vec<String>) {
    let mut out = Vec::new();
    let mut seen: BTreeMap<(String, String, String, String), (usize, &str)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (cluster, docs) in servers {
        for (name, text) in docs.iter() {
            let Ok(value) = serde_json::from_str::<Value>(text) else {
                out.push((name.clone(), text.clone()));
                continue;
            };
            let key = identity(&value);
            match seen.get(&key) {
                None => {
                    seen.insert(key, (out.len(), cluster));
                    out.push((name.clone(), text.clone()));
                }
                Some((i, first)) => {
                    let kept: Value = serde_json::from_str(&out[*i].1).unwrap_or_default();
                    if content(&kept) != content(&value) {
                        conflicts.push(format!(
                            "{} is held differently by the API servers of cluster {first} and cluster {cluster}; cluster {first}'s is used",
                            out[*i].0
                        ));
                    }
                }
            }
        }
    }
    (out, conflicts)
}

/// What makes two copies one object: kind, namespace, name, and the cluster label (set on every
/// per-cluster object by [`crate::render::document`]).
fn identity(object: &Value) -> (String, String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let meta = &object["metadata"];
    (text(&object["kind"]), text(&meta["namespace"]), text(&meta["name"]), text(&meta["labels"][veer_model::meta::CLUSTER_LABEL]))
}

/// An object without what each server adds of its own (uid, creation time, generation, kubectl's
/// record of the last apply), to compare copies held by different servers.
fn content(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(fields) = object.as_object_mut() {
        fields.remove("apiVersion");
        if let Some(meta) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["uid", "creationTimestamp", "generation", "selfLink"] {
                meta.remove(field);
            }
            if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(name: &str, value: Value) -> (String, String) {
        (name.to_string(), serde_json::to_string_pretty(&value).expect("JSON"))
    }

    fn cluster_object(uid: &str, region: &str) -> Value {
        json!({"apiVersion": "veer.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "c1", "namespace": "default", "uid": uid, "generation": 3,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": uid}}, "spec": {"locality": {"region": region}}})
    }

    #[test]
    fn an_object_every_server_holds_is_kept_once_and_a_differing_copy_is_a_conflict() {
        let own = [doc("kubernetes:Cluster/default/c1", cluster_object("a", "r1"))];
        let same = [doc("kubernetes@c2:Cluster/default/c1", cluster_object("b", "r1"))];
        let (merged, conflicts) = merge_documents(&[("c1", &own), ("c2", &same)]);
        assert_eq!(merged.len(), 1, "{merged:?}");
        assert_eq!(merged[0].0, "kubernetes:Cluster/default/c1", "the own server's copy is kept");
        assert!(conflicts.is_empty(), "{conflicts:?}");

        let other = [doc("kubernetes@c2:Cluster/default/c1", cluster_object("b", "r2"))];
        let (merged, conflicts) = merge_documents(&[("c1", &own), ("c2", &other)]);
        assert_eq!(merged, own.to_vec());
        assert_eq!(conflicts.len(), 1);
        assert!(conflicts[0].contains("kubernetes:Cluster/default/c1") && conflicts[0].contains("cluster c2"), "{conflicts:?}");
    }

    #[test]
    fn per_cluster_objects_of_the_same_name_in_two_clusters_are_two_objects() {
        let service = |cluster: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop", "labels": {"topology.istio.io/cluster": cluster}}});
        let own = [doc("kubernetes:Service/shop/web", service("c1"))];
        let remote = [doc("kubernetes@c2:Service/shop/web", service("c2"))];
        let (merged, conflicts) = merge_documents(&[("c1", &own), ("c2", &remote)]);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert!(conflicts.is_empty());
    }
}
