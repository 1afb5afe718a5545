//! Writes each object's status (see [`crate::status`]) while this replica leads: after every
//! change of the API objects, the set (files and objects) is checked as the node checks it, and
//! every object whose status differs from its verdict's gets it, through the status subresource.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::Client;
use tokio::sync::watch;
use veer_control::external::Documents;
use veer_core::topology::Labels;

use crate::clock;
use crate::render;
use crate::status::{self, Object};

/// The field manager veer's status writes are recorded under.
pub const FIELD_MANAGER: &str = "veer";

/// What the writer checks the objects with: the node's files, cluster and labels.
#[derive(Clone, Debug)]
pub struct Checks {
    pub files: Vec<PathBuf>,
    pub cluster: String,
    pub labels: Labels,
}

pub(crate) struct Writer {
    pub client: Client,
    pub checks: Checks,
    pub kinds: Vec<(ApiResource, Store<DynamicObject>)>,
    /// Statuses written, for the replica's report (and tests: a follower writes none).
    pub written: Arc<AtomicU64>,
}

impl Writer {
    pub async fn run(self, mut documents: watch::Receiver<Option<Documents>>, mut leading: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                changed = documents.changed() => if changed.is_err() { return },
                changed = leading.changed() => if changed.is_err() { return },
            }
            if !*leading.borrow_and_update() {
                continue;
            }
            let Some(docs) = documents.borrow_and_update().clone() else { continue };
            let written = self.write_all(&docs).await;
            if written > 0 {
                tracing::info!(target: "veer::kube", "wrote the status of {written} object(s)");
            }
        }
    }

    /// Checks the set and writes every status that differs; how many were written.
    async fn write_all(&self, docs: &Documents) -> usize {
        let files = match veer_model::files::read_paths(&self.checks.files) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(target: "veer::kube", "status not written: the manifest files cannot be read: {e}");
                return 0;
            }
        };
        let combined = veer_control::external::combined(&files, docs);
        let loaded = veer_model::from_sources_even_if_invalid(&combined);
        // As the node refuses a set that cannot serve its cluster, whatever the set's own checks say.
        let refused = veer_model::resolve::client(&loaded.set, &self.checks.cluster, &self.checks.labels).err().map(|e| e.to_string());
        let diagnostics = loaded.diagnostics.into_sorted();
        let verdicts = status::verdicts(&diagnostics, refused.as_deref(), docs.iter().map(|(name, _)| name.as_str()));
        let now = clock::rfc3339_now();
        let mut written = 0;
        for (ar, store) in &self.kinds {
            for object in store.state() {
                let (namespace, Some(name)) = (object.metadata.namespace.as_deref(), object.metadata.name.as_deref()) else { continue };
                let Some(verdict) = verdicts.get(&render::source_name(&ar.kind, namespace, name)) else { continue };
                let current = object.data.get("status");
                let target = Object {
                    group: &ar.group,
                    kind: &ar.kind,
                    namespace,
                    generation: object.metadata.generation,
                    body: &object.data,
                    current,
                };
                let Some(desired) = status::desired(&target, verdict, &now) else { continue };
                if current == Some(&desired) {
                    continue;
                }
                let api: Api<DynamicObject> = match namespace {
                    Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
                    None => Api::all_with(self.client.clone(), ar),
                };
                let patch = serde_json::json!({"status": desired});
                let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        written += 1;
                        self.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kube::Error::Api(e)) if e.code == 403 => tracing::warn!(
                        target: "veer::kube",
                        "cannot write the status of {} {}: forbidden: veer needs the permission to patch {}/status in API group {:?}",
                        ar.kind, render::source_name(&ar.kind, namespace, name), ar.plural, ar.group
                    ),
                    Err(e) => {
                        tracing::warn!(target: "veer::kube", "cannot write the status of {}: {e}", render::source_name(&ar.kind, namespace, name))
                    }
                }
            }
        }
        written
    }
}
