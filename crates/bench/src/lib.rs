//! A generated mesh for the control-plane benchmarks (`cargo bench -p veer-bench`).
//!
//! [`Scale`] describes it: `clusters` clusters, ten to a region, one zone each;
//! `services` services in one namespace, each deployed in `clusters_per_service` clusters with
//! `endpoints_per_cluster` WorkloadEntries there, and one Istio DestinationRule per service
//! turning on locality failover (same zone, then same region, then anywhere) with outlier
//! detection. [`world`] writes it as the YAML a user would (one source per cluster plus one for
//! the rules), so benchmarks measure the real path: `veer_model::from_sources`, then
//! `veer_model::resolve` + `veer_core::table::build`, or `veer_gateway::snapshot::Snapshot::build`.
//!
//! Endpoint addresses are loopback addresses that nothing ever connects to.

use std::fmt::Write as _;

/// The size of the generated mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub clusters: usize,
    pub services: usize,
    pub clusters_per_service: usize,
    pub endpoints_per_cluster: usize,
}

impl Scale {
    /// The issue's scale: 50 clusters, 200 services, 10 endpoints per service in each cluster
    /// that runs it, 10,000 endpoints in all (each service runs in 5 clusters).
    pub const ISSUE: Scale = Scale { clusters: 50, services: 200, clusters_per_service: 5, endpoints_per_cluster: 10 };
    /// Every service in every cluster: 50 × 200 × 10 = 100,000 endpoints.
    pub const FULL_MESH: Scale = Scale { clusters: 50, services: 200, clusters_per_service: 50, endpoints_per_cluster: 10 };

    pub fn endpoints(&self) -> usize {
        self.services * self.clusters_per_service * self.endpoints_per_cluster
    }

    /// The clusters that run service `s` (spread evenly, distinct).
    pub fn hosts_of(&self, s: usize) -> Vec<usize> {
        let per = self.clusters_per_service.clamp(1, self.clusters);
        let step = self.clusters / per;
        (0..per).map(|k| (s + k * step) % self.clusters).collect()
    }
}

pub const NAMESPACE: &str = "bench";

pub fn cluster_name(c: usize) -> String {
    format!("c{c:02}")
}

pub fn service_name(s: usize) -> String {
    format!("svc{s:03}")
}

/// The host clients call for service `s`.
pub fn service_host(s: usize) -> String {
    format!("{}.{NAMESPACE}.svc.cluster.local", service_name(s))
}

/// The address of endpoint `n` (global index): 127.x.y.z, port 8080.
pub fn endpoint_address(n: usize) -> String {
    format!("127.{}.{}.{}:8080", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// The mesh as manifest sources (name, text): `clusters.yaml`, one file per cluster with its
/// Services and WorkloadEntries, and `rules.yaml` with the DestinationRules.
pub fn world(scale: Scale) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut clusters = String::new();
    for c in 0..scale.clusters {
        let _ = write!(
            clusters,
            "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {}\nspec:\n  locality:\n    region: region{}\n    zone: zone{c}\n---\n",
            cluster_name(c),
            c / 10
        );
    }
    out.push(("clusters.yaml".to_string(), clusters));
    let mut per_cluster = vec![String::new(); scale.clusters];
    let mut n = 0usize;
    for s in 0..scale.services {
        for c in scale.hosts_of(s) {
            let text = &mut per_cluster[c];
            let (cluster, name) = (cluster_name(c), service_name(s));
            let _ = write!(
                text,
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\n"
            );
            for e in 0..scale.endpoints_per_cluster {
                let addr = endpoint_address(n);
                let ip = addr.split(':').next().unwrap_or_default();
                let _ = write!(
                    text,
                    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}-{e}\n  namespace: {NAMESPACE}\n  labels:\n    topology.istio.io/cluster: {cluster}\nspec:\n  address: {ip}\n  labels:\n    app: {name}\n---\n"
                );
                n += 1;
            }
        }
    }
    for (c, text) in per_cluster.into_iter().enumerate() {
        out.push((format!("{}.yaml", cluster_name(c)), text));
    }
    let mut rules = String::new();
    for s in 0..scale.services {
        let _ = write!(
            rules,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {}\n  namespace: {NAMESPACE}\nspec:\n  host: {}\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        enabled: true\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 10s\n      maxEjectionPercent: 100\n---\n",
            service_name(s),
            service_host(s)
        );
    }
    out.push(("rules.yaml".to_string(), rules));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_world_loads_without_errors_and_resolves_with_locality_priorities() {
        let scale = Scale { clusters: 10, services: 3, clusters_per_service: 5, endpoints_per_cluster: 2 };
        let accepted = veer_model::from_sources(&world(scale)).unwrap_or_else(|r| panic!("{r}"));
        let findings: Vec<String> = accepted.warnings().iter().map(|d| d.to_string()).collect();
        assert!(findings.iter().all(|e| !e.contains("error")), "{findings:?}");
        let set = accepted.into_set();
        let client = veer_model::resolve::client(&set, &cluster_name(0), &Default::default()).expect("client");
        let inventory = veer_model::inventory::Inventory::from_manifests(&set);
        let view = veer_model::resolve::View::new(&set, &inventory);
        let dest = veer_model::resolve::resolve(view, &service_host(0), Some(80), &cluster_name(0), "").expect("resolves");
        assert_eq!(dest.endpoints.len(), 10);
        let table = veer_core::table::build(&client, &dest.endpoints, &dest.rule, dest.resilience.load, dest.weighting);
        // c00 runs svc000 (with c02, c04, c06, c08, all in region0): its own zone first.
        assert_eq!(table.levels, 2, "{table:?}");
        assert_eq!(table.placements.iter().filter(|p| p.priority == 0).count(), 2);
        assert_eq!(table.load.healthy[0], 100);
    }

    #[test]
    fn the_issue_scale_has_ten_thousand_endpoints() {
        assert_eq!(Scale::ISSUE.endpoints(), 10_000);
        assert_eq!(Scale::FULL_MESH.endpoints(), 100_000);
        let hosts = Scale::ISSUE.hosts_of(7);
        assert_eq!(hosts, vec![7, 17, 27, 37, 47]);
    }
}
