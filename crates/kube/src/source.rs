//! The API server source: discovery of the kinds veer reads, one watch per kind (kube-runtime's
//! watcher: resumed from its resourceVersion after a cut, relisted on `410 Gone`, each relist
//! swapped into its store whole), and the two feeds built from the stores once every kind was
//! listed once, then again after each burst of changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::discovery::Discovery;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use veer_control::external::{Documents, External, SliceEndpoints};
use veer_model::inventory::EndpointRecord;

use crate::problems::{note, Problems};
use crate::refs::{self, Referenced};
use crate::render::{self, Listed};
use crate::slices::{self, Lookup, SliceObject};

/// Changes closer together than this make one rebuild of the feeds: a `kubectl apply` of many
/// objects, or a relist, is one new set rather than one per object.
const SETTLE: Duration = Duration::from_millis(50);

/// Why the source could not start.
#[derive(Debug)]
pub enum KubeError {
    /// The kubeconfig (or the in-cluster configuration) could not be read.
    Config(String),
    /// Discovery failed: the server is unreachable or refuses veer.
    Discovery(kube::Error),
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeError::Config(why) => write!(f, "cannot configure the Kubernetes client: {why}"),
            KubeError::Discovery(e) => write!(f, "cannot ask the API server which resources it serves: {e}"),
        }
    }
}

impl std::error::Error for KubeError {}

/// A client from the kubeconfig at `path`, or, without one, the in-cluster configuration (the
/// Pod's service account), else `KUBECONFIG` / `~/.kube/config`.
pub async fn client(path: Option<&Path>) -> Result<Client, KubeError> {
    let config = match path {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| KubeError::Config(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))
}

/// What changed since the feeds were last built, and the wake-up for whoever builds them.
#[derive(Default)]
struct Changes {
    documents: AtomicBool,
    endpoints: AtomicBool,
    wake: Notify,
}

impl Changes {
    fn mark(&self, feed: Feed) {
        match feed {
            Feed::Documents => self.documents.store(true, Ordering::Release),
            Feed::Endpoints => self.endpoints.store(true, Ordering::Release),
        }
        self.wake.notify_one();
    }
}

#[derive(Clone, Copy, Debug)]
enum Feed {
    Documents,
    Endpoints,
}

/// One kind's watch: what it lists and whether its first list is complete.
struct Watched {
    what: String,
    synced: Arc<AtomicBool>,
}

/// How a source writes status: the election it takes part in and what it checks objects with.
#[derive(Clone, Debug)]
pub struct StatusConfig {
    pub election: crate::leader::Election,
    pub checks: crate::writer::Checks,
}

/// A running source: its feeds, and the tasks that keep them, stopped when it is dropped.
pub struct KubeSource {
    pub(crate) feeds: External,
    /// Whether this replica leads (writes status); always false without status writing.
    pub(crate) leading: watch::Receiver<bool>,
    pub(crate) status_writes: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) problems: Problems,
    /// The stores of the manifest kinds, for lookups by kind and name.
    pub(crate) kinds: Vec<(ApiResource, Store<DynamicObject>)>,
    /// The kinds watched, as `apiVersion Kind`, for the log and tests.
    watched: Vec<String>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KubeSource {
    /// The feeds the control side takes (clone them freely).
    pub fn feeds(&self) -> External {
        self.feeds.clone()
    }

    /// Whether this replica writes status now (it holds the Lease).
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// What fails now (a watch the server refuses, a status it does not let veer write), each
    /// with the server's answer.
    pub fn problems(&self) -> BTreeMap<String, String> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A lookup of an object's uid by kind, namespace and name, among the objects read.
    pub fn uid_lookup(&self) -> impl Fn(&str, &str, &str) -> Option<String> + Send + Sync + 'static {
        let kinds = self.kinds.clone();
        move |kind: &str, namespace: &str, name: &str| {
            let (ar, store) = kinds.iter().find(|(ar, _)| ar.kind == kind)?;
            let key = |ns: Option<&str>| {
                let key = ObjectRef::new_with(name, ar.clone());
                match ns {
                    Some(ns) => key.within(ns),
                    None => key,
                }
            };
            let found = store.get(&key(Some(namespace))).or_else(|| store.get(&key(None)))?;
            found.metadata.uid.clone()
        }
    }

    /// How many statuses this replica has written.
    pub fn status_writes(&self) -> u64 {
        self.status_writes.load(Ordering::Relaxed)
    }

    /// `apiVersion Kind` of every watched kind.
    pub fn watched(&self) -> &[String] {
        &self.watched
    }

    /// Asks the server which of veer's kinds it serves (in the newest version veer reads), and
    /// starts watching them, with Services, TLS Secrets, EndpointSlices, and Pods' and Nodes'
    /// metadata. Objects are the `cluster`'s (see [`render::document`]).
    pub async fn start(client: Client, cluster: &str) -> Result<KubeSource, KubeError> {
        KubeSource::start_with(client, cluster, None).await
    }

    /// [`KubeSource::start`], and with `status`, the election and, while this replica leads,
    /// the status of every object it reads.
    pub async fn start_with(client: Client, cluster: &str, status: Option<StatusConfig>) -> Result<KubeSource, KubeError> {
        KubeSource::start_owning(client, cluster, &[], status).await
    }

    /// [`KubeSource::start_with`], serving only the Gateway API Gateways of `classes` (all when
    /// empty), as when veer shares a cluster with another Gateway implementation. A route naming
    /// a Gateway of another class is not served through it, as Gateway API has it.
    pub async fn start_owning(
        client: Client,
        cluster: &str,
        classes: &[String],
        status: Option<StatusConfig>,
    ) -> Result<KubeSource, KubeError> {
        KubeSource::start_with_remotes(client, cluster, classes, status, Vec::new()).await
    }

    /// One API server's source (the own cluster's or a remote's), without status writing.
    pub(crate) async fn start_server(client: Client, cluster: &str, classes: &[String], origin: Origin) -> Result<KubeSource, KubeError> {
        let mut groups: Vec<&str> = veer_model::load::read_kinds().map(|(g, _, _)| g).collect();
        groups.push("discovery.k8s.io");
        groups.sort_unstable();
        groups.dedup();
        let discovery = Discovery::new(client.clone()).filter(&groups).run().await.map_err(KubeError::Discovery)?;
        let served = |group: &str, versions: &[&str], kind: &str| -> Option<ApiResource> {
            let g = discovery.get(group)?;
            versions.iter().find_map(|v| g.versioned_resources(v).into_iter().map(|(ar, _)| ar).find(|ar| ar.kind == kind))
        };

        let changes = Arc::new(Changes::default());
        let problems = Problems::default();
        let mut tasks = Vec::new();
        let mut watched = Vec::new();
        let mut kinds: Vec<(ApiResource, Store<DynamicObject>)> = Vec::new();
        let mut not_served = Vec::new();
        // GatewayClasses too: veer writes the status of those naming its controller (the model
        // lists them as known kinds it does not act on).
        let gateway_class = [("gateway.networking.k8s.io", &["v1", "v1beta1", "v1alpha2"][..], "GatewayClass")];
        for (group, versions, kind) in veer_model::load::read_kinds().chain(gateway_class) {
            // ConfigMaps are many and mostly not veer's: those a BackendTLSPolicy names are
            // watched by name (`refs`), as are the Opaque Secrets DNSZones name.
            if group.is_empty() && kind == "ConfigMap" {
                continue;
            }
            let Some(ar) = served(group, versions, kind) else {
                not_served.push(format!("{group}/{kind}"));
                continue;
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let mut config = watcher::Config::default();
            if group.is_empty() && kind == "Secret" {
                // Only certificates: the other Secrets are none of veer's business.
                config = config.fields("type=kubernetes.io/tls");
            }
            let writer = Writer::new(ar.clone());
            let store = writer.as_reader();
            let w = Watched { what: format!("{} {}", ar.api_version, ar.kind), synced: Arc::new(AtomicBool::new(false)) };
            tasks.push(follow(
                writer,
                watcher(api, config),
                w.what.clone(),
                w.synced.clone(),
                changes.clone(),
                Feed::Documents,
                problems.clone(),
            ));
            watched.push(w);
            kinds.push((ar, store));
        }
        if !not_served.is_empty() {
            tracing::info!(target: "veer::kube", "the API server does not serve these kinds veer reads, so none are watched: {}", not_served.join(", "));
        }

        let slices_ar = served("discovery.k8s.io", &["v1", "v1beta1"], "EndpointSlice")
            .ok_or_else(|| KubeError::Config("the API server serves no EndpointSlices (discovery.k8s.io v1 or v1beta1)".into()))?;
        let slices_writer = Writer::new(slices_ar.clone());
        let slice_store = slices_writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &slices_ar);
        let w = Watched { what: format!("{} EndpointSlice", slices_ar.api_version), synced: Arc::new(AtomicBool::new(false)) };
        tasks.push(follow(
            slices_writer,
            watcher(api, watcher::Config::default()),
            w.what.clone(),
            w.synced.clone(),
            changes.clone(),
            Feed::Endpoints,
            problems.clone(),
        ));
        watched.push(w);

        let pods_writer: Writer<PartialObjectMeta<Pod>> = Writer::default();
        let pods = pods_writer.as_reader();
        let w = Watched { what: "v1 Pod (metadata)".into(), synced: Arc::new(AtomicBool::new(false)) };
        let stream = watcher(Api::<PartialObjectMeta<Pod>>::all(client.clone()), watcher::Config::default());
        tasks.push(follow(pods_writer, stream, w.what.clone(), w.synced.clone(), changes.clone(), Feed::Endpoints, problems.clone()));
        watched.push(w);

        let nodes_writer: Writer<PartialObjectMeta<Node>> = Writer::default();
        let nodes = nodes_writer.as_reader();
        let w = Watched { what: "v1 Node (metadata)".into(), synced: Arc::new(AtomicBool::new(false)) };
        let stream = watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), watcher::Config::default());
        tasks.push(follow(nodes_writer, stream, w.what.clone(), w.synced.clone(), changes.clone(), Feed::Endpoints, problems.clone()));
        watched.push(w);

        let (documents_tx, documents) = watch::channel(None);
        let (endpoints_tx, endpoints) = watch::channel(None);
        let names: Vec<String> = watched.iter().map(|w| w.what.clone()).collect();
        let (_, leading) = watch::channel(false);
        let status_writes = Arc::default();
        let build = Build {
            client: client.clone(),
            problems: problems.clone(),
            referenced: BTreeMap::new(),
            cluster: cluster.to_string(),
            origin,
            classes: classes.to_vec(),
            kinds: kinds.clone(),
            slice_store,
            pods,
            nodes,
            documents_tx,
            endpoints_tx,
        };
        tasks.push(tokio::spawn(build.run(watched, changes)));
        match origin {
            Origin::Own => tracing::info!(target: "veer::kube", "watching {}", names_line(&names)),
            Origin::Remote => tracing::info!(target: "veer::kube", "watching in remote cluster {cluster}: {}", names_line(&names)),
        }
        Ok(KubeSource { feeds: External { documents, endpoints }, leading, status_writes, problems, kinds, watched: names, tasks })
    }
}

fn names_line(names: &[String]) -> String {
    names.join(", ")
}

/// Keeps one kind's store current and says when it changed. Errors are retried with back-off
/// (kube-runtime's default); each is logged with the kind, so a missing permission is named.
fn follow<K>(
    writer: Writer<K>,
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    what: String,
    synced: Arc<AtomicBool>,
    changes: Arc<Changes>,
    feed: Feed,
    problems: Problems,
) -> JoinHandle<()>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(reflector::reflector(writer, stream).default_backoff());
        let mut failing = false;
        while let Some(event) = events.next().await {
            match event {
                // A (re)list is complete: its objects replace the store's whole.
                Ok(watcher::Event::InitDone) => {
                    synced.store(true, Ordering::Release);
                    changes.mark(feed);
                }
                // A relist under way: its objects count once it is done.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => changes.mark(feed),
                Err(e) => {
                    if !failing {
                        tracing::warn!(target: "veer::kube", "watching {what}: {e}; trying again with back-off, serving what was listed last");
                    }
                    note(&problems, &format!("watching {what}"), Some(e.to_string()));
                    failing = true;
                    continue;
                }
            }
            if failing {
                tracing::info!(target: "veer::kube", "watching {what} again");
                note(&problems, &format!("watching {what}"), None);
                failing = false;
            }
        }
    })
}

/// Whose API server a source reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The node's own cluster's: objects named `kubernetes:…`, status written.
    Own,
    /// A remote cluster's: objects named `kubernetes@<cluster>:…`, read only.
    Remote,
}

/// A watch of one object a resource names (see [`crate::refs`]), stopped when dropped.
struct ReferencedWatch {
    store: Store<DynamicObject>,
    synced: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for ReferencedWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What builds the feeds from the stores.
struct Build {
    client: Client,
    problems: Problems,
    /// The objects resources name, each watched by name while it is named.
    referenced: BTreeMap<Referenced, ReferencedWatch>,
    cluster: String,
    origin: Origin,
    /// The Gateway classes served; empty: every class.
    classes: Vec<String>,
    kinds: Vec<(ApiResource, Store<DynamicObject>)>,
    slice_store: Store<DynamicObject>,
    pods: Store<PartialObjectMeta<Pod>>,
    nodes: Store<PartialObjectMeta<Node>>,
    documents_tx: watch::Sender<Option<Documents>>,
    endpoints_tx: watch::Sender<Option<SliceEndpoints>>,
}

impl Build {
    async fn run(mut self, watched: Vec<Watched>, changes: Arc<Changes>) {
        let mut said_waiting = false;
        loop {
            changes.wake.notified().await;
            tokio::time::sleep(SETTLE).await;
            let waiting: Vec<&str> = watched.iter().filter(|w| !w.synced.load(Ordering::Acquire)).map(|w| w.what.as_str()).collect();
            if !waiting.is_empty() {
                if !said_waiting {
                    tracing::info!(target: "veer::kube", "listed once so far: all but {}", waiting.join(", "));
                    said_waiting = true;
                }
                continue;
            }
            // Both feeds are sent at the first sync, whatever changed.
            let first = self.documents_tx.borrow().is_none();
            if changes.documents.swap(false, Ordering::AcqRel) || first {
                let mut documents = self.documents();
                // What the resources name is watched by name; nothing is sent before each such
                // watch has listed once, so a named Secret is never reported missing for that.
                let named = refs::referenced(documents.iter().map(|(_, text)| text.as_str()));
                self.watch_referenced(named, &changes);
                if self.referenced.values().any(|w| !w.synced.load(Ordering::Acquire)) {
                    continue;
                }
                documents.extend(self.referenced_documents());
                documents.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let documents = Arc::new(documents);
                self.documents_tx.send_if_modified(|now| {
                    let changed = now.as_deref() != Some(&*documents);
                    if changed {
                        *now = Some(documents);
                    }
                    changed
                });
            }
            if changes.endpoints.swap(false, Ordering::AcqRel) || first {
                let records = Arc::new(BTreeMap::from([(self.cluster.clone(), Arc::new(self.endpoints()))]));
                self.endpoints_tx.send_if_modified(|now| {
                    let changed = now.as_deref() != Some(&*records);
                    if changed {
                        *now = Some(records);
                    }
                    changed
                });
            }
        }
    }

    /// Every object of the manifest kinds, as documents, in name order (a stable order: an
    /// unchanged server gives the same list, and the same diagnostics).
    fn documents(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (ar, store) in &self.kinds {
            let listed = Listed { api_version: &ar.api_version, kind: &ar.kind };
            let gateways = ar.group == "gateway.networking.k8s.io" && ar.kind == "Gateway";
            for object in store.state() {
                if gateways && !self.serves_class(object.data["spec"]["gatewayClassName"].as_str()) {
                    continue;
                }
                match serde_json::to_value(&*object) {
                    Ok(value) => out.push(self.named(render::document(&listed, &value, &self.cluster))),
                    Err(e) => tracing::warn!(target: "veer::kube", "{} {:?}: cannot be rendered: {e}", ar.kind, object.metadata.name),
                }
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Watches each of `named` not watched yet, and stops watching what is no longer named.
    fn watch_referenced(&mut self, named: BTreeSet<Referenced>, changes: &Arc<Changes>) {
        self.referenced.retain(|r, _| named.contains(r));
        for r in named {
            if self.referenced.contains_key(&r) {
                continue;
            }
            let ar = match r.kind {
                "Secret" => ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
                _ => ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &r.namespace, &ar);
            let config = watcher::Config::default().fields(&format!("metadata.name={}", r.name));
            let writer = Writer::new(ar);
            let store = writer.as_reader();
            let synced = Arc::new(AtomicBool::new(false));
            let what = format!("v1 {} {}/{}", r.kind, r.namespace, r.name);
            let task = follow(writer, watcher(api, config), what, synced.clone(), changes.clone(), Feed::Documents, self.problems.clone());
            self.referenced.insert(r, ReferencedWatch { store, synced, task });
        }
    }

    /// The named objects that exist, as documents (a TLS Secret is among the Secrets listed
    /// already).
    fn referenced_documents(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (r, watch) in &self.referenced {
            let listed = Listed { api_version: "v1", kind: r.kind };
            for object in watch.store.state() {
                if r.kind == "Secret" && object.data["type"].as_str() == Some("kubernetes.io/tls") {
                    continue;
                }
                if let Ok(value) = serde_json::to_value(&*object) {
                    out.push(self.named(render::document(&listed, &value, &self.cluster)));
                }
            }
        }
        out
    }

    /// A document named for the server it comes from.
    fn named(&self, (name, text): (String, String)) -> (String, String) {
        match self.origin {
            Origin::Own => (name, text),
            Origin::Remote => (render::remote_name(&name, &self.cluster), text),
        }
    }

    /// Whether a Gateway of `class` is veer's to serve.
    fn serves_class(&self, class: Option<&str>) -> bool {
        self.classes.is_empty() || class.is_some_and(|c| self.classes.iter().any(|k| k == c))
    }

    fn endpoints(&self) -> Vec<EndpointRecord> {
        let slices = self.slice_store.state();
        let empty = BTreeMap::new();
        let objects = slices.iter().map(|s| SliceObject {
            namespace: s.metadata.namespace.as_deref().unwrap_or("default"),
            name: s.metadata.name.as_deref().unwrap_or(""),
            labels: s.metadata.labels.as_ref().unwrap_or(&empty),
            body: &s.data,
        });
        let (records, problems) = slices::records(objects, self);
        for p in problems {
            tracing::warn!(target: "veer::kube", "{p}");
        }
        records
    }
}

impl Lookup for Build {
    fn pod_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let pod = self.pods.get(&ObjectRef::new(name).within(namespace))?;
        Some(pod.metadata.labels.clone().unwrap_or_default())
    }

    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let node = self.nodes.get(&ObjectRef::new(name))?;
        Some(node.metadata.labels.clone().unwrap_or_default())
    }
}
