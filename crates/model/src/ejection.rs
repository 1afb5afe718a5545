//! Outlier detection that can never eject: a max-ejection-percent cap smaller than one endpoint of
//! the destination it applies to, found in every dialect by resolving each destination.
//!
//! Envoy ejects a host only while `100·(ejected+1)/hosts ≤ max%` (failover-semantics.md §2.3),
//! so the first ejection needs `max% · hosts ≥ 100`. Below that, outlier detection counts errors
//! and ejects nothing, and a failover that relies on it never happens; Envoy Gateway's default
//! 10% with 4 endpoints is the commonest case. The cap counts every endpoint of the destination
//! across priorities, which only resolution knows, so this runs over resolved destinations rather
//! than inside each dialect's reader; it resolves every destination for every client cluster,
//! so `veer validate` runs it and a node's reloads do not.

use std::collections::BTreeMap;

use veer_core::outlier::OutlierConfig;

use crate::diag::{Diagnostic, Pos, Severity};
use crate::resolve::{self, Destination, View};
use crate::set::{ManifestSet, IMPLICIT_CLUSTER};

/// A warning for each resource whose outlier-detection cap lets nothing be ejected from a
/// destination it applies to (the one with the fewest endpoints, when several).
pub fn warnings(view: View<'_>) -> Vec<Diagnostic> {
    let set = view.set;
    // Per resource (kind, namespace, name): the worst case seen.
    let mut worst: BTreeMap<(String, String, String), (usize, String, OutlierConfig)> = BTreeMap::new();
    let mut look =
        |key: String, d: &Destination| {
            let Some(config) = d.resilience.outlier else { return };
            let hosts = d.endpoints.len();
            if hosts == 0 || config.can_eject_any(hosts as u64) {
                return;
            }
            let Some(src) = d.sources.iter().find(|s| {
                matches!(s.kind.as_str(), "DestinationRule" | "OutlierDetectionPolicy" | "TrafficPolicy" | "BackendTrafficPolicy")
            }) else {
                return;
            };
            let entry = worst.entry((src.kind.clone(), src.namespace.clone(), src.name.clone())).or_insert((hosts, key.clone(), config));
            if hosts < entry.0 {
                *entry = (hosts, key, config);
            }
        };
    let clusters: Vec<&str> =
        if set.clusters.is_empty() { vec![IMPLICIT_CLUSTER] } else { set.clusters.iter().map(|c| c.meta.name.as_str()).collect() };
    for cluster in &clusters {
        for key in resolve::destinations(set, cluster) {
            if let Ok(d) = resolve::resolve_key(view, &key, cluster) {
                look(key.name.to_string(), &d);
            }
        }
    }
    worst
        .into_iter()
        .filter_map(|((kind, namespace, name), (hosts, dest, config))| warning(set, &kind, &namespace, &name, hosts, &dest, config))
        .collect()
}

fn warning(
    set: &ManifestSet,
    kind: &str,
    namespace: &str,
    name: &str,
    hosts: usize,
    dest: &str,
    config: OutlierConfig,
) -> Option<Diagnostic> {
    let same = |m: &crate::meta::Meta| m.namespace == namespace && m.name == name;
    // Where the cap is (or would be) written, in the resource's own dialect.
    let (meta, pos, field): (&crate::meta::Meta, Pos, &str) = match kind {
        "DestinationRule" => set.destination_rules.iter().find(|r| same(&r.meta)).map(|r| {
            (&r.meta, r.outlier.as_ref().map_or(r.meta.pos, |o| o.pos), "spec.trafficPolicy.outlierDetection.maxEjectionPercent")
        })?,
        "OutlierDetectionPolicy" => {
            set.outlier_policies.iter().find(|r| same(&r.meta)).map(|r| (&r.meta, r.meta.pos, "spec.config.maxEjectionPercent"))?
        }
        "TrafficPolicy" => set
            .traffic_policies
            .iter()
            .find(|r| same(&r.meta) && r.outlier.is_some())
            .map(|r| (&r.meta, r.outlier.as_ref().map_or(r.meta.pos, |o| o.1), "spec.outlierDetection.maxEjectionPercent"))?,
        "BackendTrafficPolicy" => set
            .backend_policies
            .iter()
            .find(|r| same(&r.meta))
            .map(|r| (&r.meta, r.meta.pos, "spec.healthCheck.passive.maxEjectionPercent"))?,
        _ => return None,
    };
    let cap = config.max_ejection_percent.min(100);
    // The smallest cap that lets one of `hosts` go: ceil(100 / hosts).
    let needed = 100usize.div_ceil(hosts);
    let advice = if needed < 100 { format!("at least {needed} (100 lets every endpoint go)") } else { "100".to_string() };
    let message = format!(
        "{cap}% of the {hosts} endpoint(s) of {dest} is less than one endpoint: Envoy ejects only while 100·(ejected+1)/endpoints ≤ {cap}, so outlier detection never ejects anything here and failover never happens; set maxEjectionPercent to {advice}"
    );
    Some(crate::load::about(meta, pos, Severity::Warning, field, message))
}
