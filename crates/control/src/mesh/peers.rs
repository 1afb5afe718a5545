//! What a node knows of its peer clusters: their catalogs, how old their word is, whether their
//! gateways answer; and the watch tasks that keep it current. Remote data always carries its
//! age: stale after a while, unhealthy after longer, forgotten in the end, never kept forever.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http_body_util::{BodyExt, Empty};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veer_model::set::ManifestSet;

use super::catalog::{Catalog, WatchLine};
use super::eastwest::{CATALOG_PATH, X_VEER_PEER};
use crate::events::{unix_ms, EventKind, Events, NewEvent};
use crate::metrics::ControlMetrics;
use veer_core::names::ClusterName;
use veer_gateway::link::PeerLink;
use veer_gateway::remote::RemoteHealth;

/// How a node ages what its peers told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aging {
    /// Silent this long: flagged stale (still routed).
    pub stale_after: Duration,
    /// Silent this long, or its gateway unreachable: every endpoint of the cluster unhealthy.
    pub unhealthy_after: Duration,
    /// Silent this long: its endpoints are dropped altogether.
    pub forget_after: Duration,
    /// How often a node's watch stream proves it is alive.
    pub heartbeat: Duration,
    /// Pause between attempts to reach a peer that does not answer.
    pub retry: Duration,
}

impl Default for Aging {
    fn default() -> Self {
        Aging {
            stale_after: Duration::from_secs(3),
            unhealthy_after: Duration::from_secs(6),
            forget_after: Duration::from_secs(600),
            heartbeat: Duration::from_millis(500),
            retry: Duration::from_millis(250),
        }
    }
}

/// Where a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Never heard from since this node started: none of its endpoints are routed.
    Unknown,
    Fresh,
    Stale,
    Unhealthy,
    Forgotten,
}

/// What the watch tasks report.
#[derive(Debug)]
pub enum PeerMsg {
    Line(String, WatchLine),
    Lost(String, String),
}

#[derive(Debug)]
struct PeerState {
    catalog: Option<Arc<Catalog>>,
    /// When the peer last spoke (time since the node started).
    heard: Option<Duration>,
    heard_unix_ms: Option<u64>,
    reachable: bool,
    phase: Phase,
    last_error: Option<String>,
}

/// What changed after a message or a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Some peer's endpoints appeared, changed or were dropped: resolve again.
    pub endpoints: bool,
    /// Some peer's health changed: rebuild tables.
    pub health: bool,
}

impl Change {
    pub fn or(self, o: Change) -> Change {
        Change { endpoints: self.endpoints || o.endpoints, health: self.health || o.health }
    }
}

/// One peer as `veer status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    pub cluster: String,
    pub east_west: SocketAddr,
    pub phase: Phase,
    pub reachable: bool,
    /// Unix time (ms) of the last word from the peer; the age is computed when asked.
    pub heard_unix_ms: Option<u64>,
    pub endpoints: usize,
    pub unhealthy_endpoints: usize,
    pub catalog_generation: Option<u64>,
    pub last_error: Option<String>,
}

/// Peer clusters of one node. Owned by the control loop.
pub struct Peers {
    own: String,
    aging: Aging,
    client: Arc<rustls::ClientConfig>,
    links: BTreeMap<ClusterName, Arc<PeerLink>>,
    states: BTreeMap<ClusterName, PeerState>,
    watchers: HashMap<ClusterName, JoinHandle<()>>,
    tx: mpsc::UnboundedSender<PeerMsg>,
    events: Arc<Events>,
    metrics: Arc<ControlMetrics>,
}

impl Peers {
    pub fn new(
        own: &str,
        aging: Aging,
        client: Arc<rustls::ClientConfig>,
        tx: mpsc::UnboundedSender<PeerMsg>,
        events: Arc<Events>,
        metrics: Arc<ControlMetrics>,
    ) -> Self {
        Peers {
            own: own.to_string(),
            aging,
            client,
            links: BTreeMap::new(),
            states: BTreeMap::new(),
            watchers: HashMap::new(),
            tx,
            events,
            metrics,
        }
    }

    /// Follows the Cluster resources: a watch for every other cluster with an east-west
    /// address, none for clusters that left. Returns whether links changed.
    pub fn sync(&mut self, set: &ManifestSet) -> bool {
        let wanted: BTreeMap<ClusterName, SocketAddr> = set
            .clusters
            .iter()
            .filter(|c| c.meta.name != self.own)
            .filter_map(|c| c.east_west.map(|a| (ClusterName::new(&c.meta.name), a)))
            .collect();
        let mut changed = false;
        let gone: Vec<ClusterName> = self.links.iter().filter(|(c, l)| wanted.get(*c) != Some(&l.addr)).map(|(c, _)| c.clone()).collect();
        for c in gone {
            self.links.remove(&c);
            self.states.remove(&c);
            if let Some(w) = self.watchers.remove(&c) {
                w.abort();
            }
            changed = true;
        }
        for (cluster, addr) in wanted {
            if self.links.contains_key(&cluster) {
                continue;
            }
            let link = self.add(&cluster, addr);
            self.watchers.insert(cluster.clone(), tokio::spawn(watch(link, self.own.clone(), self.aging.retry, self.tx.clone())));
            changed = true;
        }
        changed
    }

    /// A peer this node has not heard from yet.
    fn add(&mut self, cluster: &str, addr: SocketAddr) -> Arc<PeerLink> {
        let link = Arc::new(PeerLink::new(cluster, veer_pki::server_name(cluster), addr, self.client.clone(), Duration::from_secs(1)));
        self.links.insert(ClusterName::new(cluster), link.clone());
        self.states.insert(
            ClusterName::new(cluster),
            PeerState { catalog: None, heard: None, heard_unix_ms: None, reachable: false, phase: Phase::Unknown, last_error: None },
        );
        link
    }

    pub fn links(&self) -> HashMap<ClusterName, Arc<PeerLink>> {
        self.links.iter().map(|(c, l)| (c.clone(), l.clone())).collect()
    }

    /// Catalogs to route by: peers heard from and not forgotten.
    pub fn catalogs(&self) -> BTreeMap<ClusterName, Arc<Catalog>> {
        self.states
            .iter()
            .filter(|(_, s)| !matches!(s.phase, Phase::Unknown | Phase::Forgotten))
            .filter_map(|(c, s)| s.catalog.clone().map(|k| (c.clone(), k)))
            .collect()
    }

    pub fn health(&self) -> RemoteHealth {
        let mut h = RemoteHealth::default();
        for (c, s) in &self.states {
            match s.phase {
                Phase::Unhealthy => {
                    h.down.insert(c.clone());
                }
                Phase::Fresh | Phase::Stale => {
                    if let Some(k) = &s.catalog {
                        h.unhealthy.insert(c.clone(), k.unhealthy.clone());
                    }
                }
                Phase::Unknown | Phase::Forgotten => {}
            }
        }
        h
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        self.states
            .iter()
            .map(|(c, s)| PeerStatus {
                cluster: c.to_string(),
                east_west: self.links[c].addr,
                phase: s.phase,
                reachable: s.reachable,
                heard_unix_ms: s.heard_unix_ms,
                endpoints: s.catalog.as_ref().map_or(0, |k| k.entries.len()),
                unhealthy_endpoints: s.catalog.as_ref().map_or(0, |k| k.unhealthy.len()),
                catalog_generation: s.catalog.as_ref().map(|k| k.generation),
                last_error: s.last_error.clone(),
            })
            .collect()
    }

    pub fn on_msg(&mut self, msg: PeerMsg, now: Duration) -> Change {
        let (cluster, change) = match msg {
            PeerMsg::Line(cluster, line) => {
                let Some(s) = self.states.get_mut(cluster.as_str()) else { return Change::default() };
                s.heard = Some(now);
                s.heard_unix_ms = Some(unix_ms());
                s.reachable = true;
                s.last_error = None;
                let mut change = Change::default();
                if let WatchLine::Catalog(k) = line {
                    if k.cluster != cluster {
                        // The certificate was checked on connect; a catalog naming another
                        // cluster is a bug or an attack, and is not believed.
                        s.last_error = Some(format!("sent a catalog for cluster {:?}", k.cluster));
                        return Change::default();
                    }
                    match &s.catalog {
                        Some(old) if old.same_endpoints(&k) => change.health = old.unhealthy != k.unhealthy,
                        _ => change.endpoints = true,
                    }
                    s.catalog = Some(Arc::new(k));
                }
                (cluster, change)
            }
            PeerMsg::Lost(cluster, why) => {
                let Some(s) = self.states.get_mut(cluster.as_str()) else { return Change::default() };
                s.reachable = false;
                s.last_error = Some(why);
                (cluster, Change::default())
            }
        };
        change.or(self.advance(&cluster, now))
    }

    /// A request could not reach `cluster`'s gateway: the whole cluster is one failure domain.
    pub fn gateway_failed(&mut self, cluster: &str, why: &str, now: Duration) -> Change {
        let Some(s) = self.states.get_mut(cluster) else { return Change::default() };
        if !s.reachable {
            return Change::default();
        }
        s.reachable = false;
        s.last_error = Some(why.to_string());
        // The watch shares the link; drop its connection so it proves the gateway afresh.
        if let Some(l) = self.links.get(cluster) {
            l.reset();
        }
        self.advance(cluster, now)
    }

    /// Ages every peer.
    pub fn tick(&mut self, now: Duration) -> Change {
        let clusters: Vec<ClusterName> = self.states.keys().cloned().collect();
        let mut change = Change::default();
        for c in clusters {
            change = change.or(self.advance(&c, now));
            let s = &self.states[&c];
            self.metrics.peer(
                &c,
                matches!(s.phase, Phase::Fresh | Phase::Stale),
                s.heard.map(|h| now.saturating_sub(h).as_millis() as u64),
            );
        }
        change
    }

    fn advance(&mut self, cluster: &str, now: Duration) -> Change {
        let a = self.aging;
        let Some(s) = self.states.get_mut(cluster) else { return Change::default() };
        let phase = match s.heard {
            None => Phase::Unknown,
            Some(h) => {
                let age = now.saturating_sub(h);
                if s.phase == Phase::Forgotten && !s.reachable || age >= a.forget_after {
                    Phase::Forgotten
                } else if !s.reachable || age >= a.unhealthy_after {
                    Phase::Unhealthy
                } else if age >= a.stale_after {
                    Phase::Stale
                } else {
                    Phase::Fresh
                }
            }
        };
        let before = std::mem::replace(&mut s.phase, phase);
        if before == phase {
            return Change::default();
        }
        let age = s.heard.map(|h| now.saturating_sub(h));
        let (kind, why) = match phase {
            Phase::Stale => {
                (EventKind::PeerStale, format!("no word from cluster {cluster} for {:?}: its data is stale", age.unwrap_or_default()))
            }
            Phase::Unhealthy if !s.reachable => (
                EventKind::PeerUnhealthy,
                format!(
                    "cluster {cluster} is unreachable ({}): all its endpoints are unhealthy",
                    s.last_error.as_deref().unwrap_or("no answer")
                ),
            ),
            Phase::Unhealthy => (
                EventKind::PeerUnhealthy,
                format!("no word from cluster {cluster} for {:?}: all its endpoints are unhealthy", age.unwrap_or_default()),
            ),
            Phase::Forgotten => {
                s.catalog = None;
                (
                    EventKind::PeerForgotten,
                    format!("no word from cluster {cluster} for {:?}: its endpoints are dropped", age.unwrap_or_default()),
                )
            }
            Phase::Fresh => {
                (EventKind::PeerRecovered, format!("cluster {cluster} is {}", if before == Phase::Unknown { "connected" } else { "back" }))
            }
            Phase::Unknown => return Change::default(),
        };
        self.events.record(NewEvent::cluster(kind, cluster, why));
        let routed = |p: Phase| matches!(p, Phase::Fresh | Phase::Stale | Phase::Unhealthy);
        Change { endpoints: routed(before) != routed(phase), health: true }
    }

    pub fn stop(&mut self) {
        for (_, w) in self.watchers.drain() {
            w.abort();
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Keeps a watch on one peer's catalog for as long as the node runs.
async fn watch(link: Arc<PeerLink>, own: String, retry: Duration, tx: mpsc::UnboundedSender<PeerMsg>) {
    let cluster = link.cluster.to_string();
    loop {
        let why = watch_once(&link, &own, &cluster, &tx).await;
        if tx.send(PeerMsg::Lost(cluster.clone(), why)).is_err() {
            return;
        }
        tokio::time::sleep(retry).await;
    }
}

/// One watch stream, until it breaks; returns why it ended.
async fn watch_once(link: &PeerLink, own: &str, cluster: &str, tx: &mpsc::UnboundedSender<PeerMsg>) -> String {
    let Ok(uri) = http::Uri::builder().scheme("https").authority(veer_pki::dns_name(cluster)).path_and_query(CATALOG_PATH).build() else {
        return "bad peer name".into();
    };
    let mut req = http::Request::new(Empty::new().map_err(|never| match never {}).boxed());
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    if let Ok(v) = http::HeaderValue::from_str(own) {
        req.headers_mut().insert(X_VEER_PEER, v);
    }
    let resp = match link.send(req).await {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string()).unwrap_or_default();
        return format!("catalog watch answered {status}: {body}");
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line = buf.split_to(nl + 1);
                    match serde_json::from_slice::<WatchLine>(&line[..nl]) {
                        Ok(l) => {
                            if tx.send(PeerMsg::Line(cluster.to_string(), l)).is_err() {
                                return "node stopping".into();
                            }
                        }
                        Err(e) => return format!("unreadable catalog line: {e}"),
                    }
                }
                if buf.len() > 64 * 1024 * 1024 {
                    return "catalog line over 64 MiB".into();
                }
            }
            Some(Err(e)) => return format!("catalog watch broke: {e}"),
            None => return "catalog watch ended".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::catalog::CatalogEntry;

    fn peers() -> Peers {
        let client = rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth();
        let (tx, _rx) = mpsc::unbounded_channel();
        let aging = Aging {
            stale_after: Duration::from_secs(1),
            unhealthy_after: Duration::from_secs(3),
            forget_after: Duration::from_secs(10),
            ..Aging::default()
        };
        let mut p = Peers::new(
            "c1",
            aging,
            Arc::new(client),
            tx,
            Arc::new(Events::new(64)),
            Arc::new(ControlMetrics::new(&veer_gateway::metrics::Metrics::new())),
        );
        p.add("c2", "127.0.0.1:1".parse().unwrap());
        p
    }

    fn catalog(cluster: &str, down: &[&str]) -> WatchLine {
        let entry = CatalogEntry {
            namespace: "ns".into(),
            name: "a".into(),
            address: "127.0.2.1".parse().unwrap(),
            ports: BTreeMap::new(),
            labels: BTreeMap::new(),
            locality: None,
            network: None,
            weight: 1,
            service: None,
        };
        WatchLine::Catalog(Catalog {
            cluster: cluster.into(),
            generation: 1,
            entries: vec![entry],
            unhealthy: down.iter().map(|d| d.parse().expect("an ip:port")).collect(),
        })
    }

    fn heartbeat() -> WatchLine {
        WatchLine::Heartbeat { cluster: "c2".into(), generation: 1 }
    }

    fn phase(p: &Peers) -> Phase {
        p.states["c2"].phase
    }

    fn kinds(p: &Peers) -> Vec<EventKind> {
        p.events.all().iter().map(|e| e.kind).collect()
    }

    const S: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn data_ages_from_fresh_to_stale_to_unhealthy_to_forgotten() {
        let mut p = peers();
        assert_eq!(phase(&p), Phase::Unknown);
        assert!(p.catalogs().is_empty(), "nothing routed before the peer speaks");
        let c = p.on_msg(PeerMsg::Line("c2".into(), catalog("c2", &[])), S(0));
        assert_eq!((phase(&p), c.endpoints), (Phase::Fresh, true));
        assert_eq!(p.catalogs().len(), 1);
        // Heartbeats keep it fresh without touching the tables.
        assert_eq!(p.on_msg(PeerMsg::Line("c2".into(), heartbeat()), S(900)), Change::default());
        assert_eq!(p.tick(S(1800)), Change::default());
        assert_eq!(phase(&p), Phase::Fresh);
        // Silence: stale (still routed, health unchanged), then unhealthy (all endpoints down).
        let c = p.tick(S(1900));
        assert_eq!((phase(&p), c.endpoints), (Phase::Stale, false));
        assert!(p.health().down.is_empty());
        p.tick(S(3899));
        assert_eq!(phase(&p), Phase::Stale);
        let c = p.tick(S(3900));
        assert_eq!((phase(&p), c.health, c.endpoints), (Phase::Unhealthy, true, false));
        assert!(p.health().down.contains("c2"));
        // Never kept forever: forgotten, and its endpoints leave the tables.
        let c = p.tick(S(10_900));
        assert_eq!((phase(&p), c.endpoints), (Phase::Forgotten, true));
        assert!(p.catalogs().is_empty());
        assert_eq!(kinds(&p), vec![EventKind::PeerRecovered, EventKind::PeerStale, EventKind::PeerUnhealthy, EventKind::PeerForgotten]);
        // It speaks again: a fresh catalog brings it back.
        let c = p.on_msg(PeerMsg::Line("c2".into(), catalog("c2", &[])), S(20_000));
        assert_eq!((phase(&p), c.endpoints), (Phase::Fresh, true));
    }

    #[test]
    fn an_unreachable_gateway_takes_the_whole_cluster_down_at_once() {
        let mut p = peers();
        p.on_msg(PeerMsg::Line("c2".into(), catalog("c2", &[])), S(0));
        let c = p.gateway_failed("c2", "connection refused", S(100));
        assert_eq!((phase(&p), c.health), (Phase::Unhealthy, true));
        assert!(p.health().down.contains("c2"));
        // Repeated failures change nothing more.
        assert_eq!(p.gateway_failed("c2", "connection refused", S(150)), Change::default());
        assert_eq!(p.on_msg(PeerMsg::Lost("c2".into(), "refused".into()), S(200)), Change::default());
        // Only a word from the peer itself (a new watch stream) brings it back.
        let c = p.on_msg(PeerMsg::Line("c2".into(), catalog("c2", &[])), S(700));
        assert_eq!((phase(&p), c.health), (Phase::Fresh, true));
        assert!(p.health().down.is_empty());
    }

    #[test]
    fn the_peers_own_health_verdicts_reach_the_tables_and_foreign_catalogs_are_ignored() {
        let mut p = peers();
        p.on_msg(PeerMsg::Line("c2".into(), catalog("c2", &[])), S(0));
        let c = p.on_msg(PeerMsg::Line("c2".into(), catalog("c2", &["127.0.2.1:80"])), S(100));
        assert_eq!(c, Change { endpoints: false, health: true });
        assert!(p.health().unhealthy["c2"].contains(&"127.0.2.1:80".parse().unwrap()));
        // A catalog naming another cluster than the link's is not believed.
        let c = p.on_msg(PeerMsg::Line("c2".into(), catalog("c3", &[])), S(200));
        assert_eq!(c, Change::default());
        assert_eq!(p.catalogs()["c2"].cluster, "c2");
        assert!(p.states["c2"].last_error.as_deref().is_some_and(|e| e.contains("c3")));
    }
}
