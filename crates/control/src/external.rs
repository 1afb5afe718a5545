//! Manifests and endpoints that come from outside the files (Kubernetes API servers: the node's
//! own cluster's and any remote clusters' it reads), as the control side takes them in: two watch
//! channels, each `None` until its sources have listed everything once, so a node never serves a
//! half-read state.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use veer_model::inventory::EndpointRecord;

/// Documents as the model reads them: (where they came from, their text).
pub type Documents = Arc<Vec<(String, String)>>;

/// EndpointSlice endpoints by the cluster whose API server lists them.
pub type SliceEndpoints = Arc<BTreeMap<String, Arc<Vec<EndpointRecord>>>>;

/// The feeds of an outside source. Cloned receivers see the same values.
#[derive(Clone, Debug)]
pub struct External {
    /// Manifests, read and checked with the files' as one set: same checks as `veer validate`.
    pub documents: watch::Receiver<Option<Documents>>,
    /// Each read cluster's endpoints (EndpointSlices), beside its WorkloadEntries.
    pub endpoints: watch::Receiver<Option<SliceEndpoints>>,
}

impl External {
    /// Waits until both feeds have listed everything once; `false` when the source ended first.
    pub async fn first_sync(&mut self) -> bool {
        self.documents.wait_for(Option::is_some).await.is_ok() && self.endpoints.wait_for(Option::is_some).await.is_ok()
    }

    /// The documents now (empty before the first sync).
    pub fn documents_now(&self) -> Documents {
        self.documents.borrow().clone().unwrap_or_default()
    }
}

/// The files' sources followed by the outside ones: the one list the set is checked from.
pub fn combined(files: &[(String, String)], outside: &[(String, String)]) -> Vec<(String, String)> {
    files.iter().chain(outside).cloned().collect()
}
