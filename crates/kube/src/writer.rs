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

use std::collections::BTreeMap;

use crate::clock;
use crate::dnsendpoints::{self, Change, Existing};
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
    pub problems: crate::problems::Problems,
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
        let accepted = refused.is_none() && !diagnostics.iter().any(|d| d.severity == veer_model::diag::Severity::Error);
        let verdicts = status::verdicts(&diagnostics, refused.as_deref(), docs.iter().map(|(name, _)| name.as_str()));
        // The operator's own status fields, and its DNSEndpoints: only from a set in force.
        let mut extras = BTreeMap::new();
        if accepted {
            let plan = veer_dns::plan::cluster(&loaded.set, &self.checks.cluster, &veer_dns::plan::PlanOptions::default());
            for p in &plan.policies {
                extras.insert(
                    render::source_name("DNSPolicy", Some(&p.namespace), &p.name),
                    serde_json::json!({"phase": format!("{:?}", p.phase), "active": p.active, "activeControllers": p.active_controllers}),
                );
            }
            for r in &plan.routes {
                extras.insert(
                    render::source_name("ServiceRoute", Some(&r.namespace), &r.name),
                    serde_json::json!({"phase": format!("{:?}", r.phase), "dnsEndpoint": r.endpoints.first(), "dnsEndpoints": r.endpoints}),
                );
            }
            self.sync_dns_endpoints(&plan.endpoints).await;
        }
        let now = clock::rfc3339_now();
        let mut written = 0;
        for (ar, store) in &self.kinds {
            for object in store.state() {
                let (namespace, Some(name)) = (object.metadata.namespace.as_deref(), object.metadata.name.as_deref()) else { continue };
                let source = render::source_name(&ar.kind, namespace, name);
                let Some(verdict) = verdicts.get(&source) else { continue };
                let current = object.data.get("status");
                let target = Object {
                    group: &ar.group,
                    kind: &ar.kind,
                    namespace,
                    generation: object.metadata.generation,
                    body: &object.data,
                    current,
                };
                let Some(mut desired) = status::desired(&target, verdict, &now) else { continue };
                if let (Some(fields), Some(serde_json::Value::Object(extra))) = (desired.as_object_mut(), extras.get(&source)) {
                    fields.extend(extra.clone());
                }
                if current == Some(&desired) {
                    continue;
                }
                let api: Api<DynamicObject> = match namespace {
                    Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
                    None => Api::all_with(self.client.clone(), ar),
                };
                let patch = serde_json::json!({"status": desired});
                let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                let what = format!("writing the status of {source}");
                match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        written += 1;
                        self.written.fetch_add(1, Ordering::Relaxed);
                        crate::problems::note(&self.problems, &what, None);
                    }
                    Err(kube::Error::Api(e)) if e.code == 403 => {
                        let why = format!("forbidden: veer needs the permission to patch {}/status in API group {:?}", ar.plural, ar.group);
                        tracing::warn!(target: "veer::kube", "{what}: {why}");
                        crate::problems::note(&self.problems, &what, Some(why));
                    }
                    Err(e) => {
                        tracing::warn!(target: "veer::kube", "{what}: {e}");
                        crate::problems::note(&self.problems, &what, Some(e.to_string()));
                    }
                }
            }
        }
        written
    }

    /// Makes the managed DNSEndpoints on the server what `plan` says (see [`dnsendpoints`]).
    async fn sync_dns_endpoints(&self, plan: &[veer_dns::plan::Endpoint]) {
        let store = |kind: &str| self.kinds.iter().find(|(ar, _)| ar.kind == kind);
        let Some((endpoints_ar, endpoints)) = store("DNSEndpoint") else {
            if !plan.is_empty() {
                tracing::warn!(target: "veer::kube", "{} DNSEndpoint(s) to write, but the API server serves no DNSEndpoint kind (install ExternalDNS's CRD, or `veer crds`)", plan.len());
            }
            return;
        };
        let existing: Vec<Existing> = endpoints
            .state()
            .iter()
            .filter(|o| dnsendpoints::managed(o.metadata.labels.as_ref()))
            .filter_map(|o| {
                let value = serde_json::to_value(&**o).ok()?;
                Some(Existing {
                    namespace: o.metadata.namespace.clone()?,
                    name: o.metadata.name.clone()?,
                    content: dnsendpoints::content(&value),
                })
            })
            .collect();
        let routes = store("ServiceRoute").map(|(_, s)| s.state()).unwrap_or_default();
        let uid = |ns: &str, name: &str| {
            routes
                .iter()
                .find(|r| r.metadata.namespace.as_deref() == Some(ns) && r.metadata.name.as_deref() == Some(name))
                .and_then(|r| r.metadata.uid.clone())
        };
        for change in dnsendpoints::diff(plan, &existing, uid) {
            let result = match &change {
                Change::Apply { namespace, name, object } => {
                    let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, endpoints_ar);
                    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await.map(drop)
                }
                Change::Delete { namespace, name } => {
                    let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, endpoints_ar);
                    api.delete(name, &Default::default()).await.map(drop)
                }
            };
            match result {
                Ok(()) => tracing::info!(target: "veer::kube", "DNSEndpoint {change}"),
                Err(e) => tracing::warn!(target: "veer::kube", "DNSEndpoint {change}: {e}"),
            }
        }
    }
}
