//! Automatic regional takeover on a node: the lease loop (`veer_etcd::zones`) fed with the
//! leased zones of every accepted manifest set and with whether this node can serve, its
//! hand-overs recorded as events, and its view handed to the DNS server that writes the zones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use veer_control::events::{EventKind, Events, NewEvent};
use veer_control::status::ControlStatus;
use veer_core::topology::Health;
use veer_dns::takeover::{lease_zones, LeaseFeed, LeaseStatus, ZoneKey};
use veer_etcd::zones::{LeaseLoop, LeaseLoopConfig};
use veer_gateway::shared::Shared;
use veer_gateway::snapshot::Snapshot;
use veer_model::set::ManifestSet;

/// How often the node asks itself whether it can serve.
const HEALTH_EVERY: Duration = Duration::from_millis(200);

/// `veer run --etcd …`: where the zone leases live.
#[derive(Clone, Debug)]
pub struct EtcdSettings {
    /// Client URLs of the etcd members (`http://host:port`).
    pub endpoints: Vec<String>,
    /// Key prefix of veer's keys, ending with `/`.
    pub prefix: String,
    /// Longest wait for one etcd call.
    pub timeout: Duration,
}

/// A node's takeover: the lease loop and the tasks that feed it.
pub struct Takeover {
    pub feed: LeaseFeed,
    lease_loop: LeaseLoop,
    feeders: Vec<JoinHandle<()>>,
}

/// Whether `cluster` has an endpoint its health checks find healthy and nothing holds out:
/// the node can serve traffic sent to its region from its own backends.
pub fn serves_locally(snap: &Snapshot, control: &ControlStatus, cluster: &str) -> bool {
    let holds = control.holds.load();
    let peers = control.peers.load();
    let own = if peers.is_empty() { "" } else { cluster };
    snap.destinations.iter().any(|d| {
        d.upstreams.iter().zip(&d.endpoints).any(|(u, e)| {
            &*u.cluster == cluster
                && e.health != Health::Unhealthy
                && veer_control::holds::held(&holds, &peers, own, &d.key, &u.cluster, &u.key).is_none()
        })
    })
}

impl Takeover {
    /// Starts the lease loop of `cluster`. `gateway` is the node's own listener, connected to
    /// on every health look: a gateway that no longer accepts cannot serve, whatever the
    /// backends say.
    pub fn start(
        settings: &EtcdSettings,
        cluster: &str,
        mut manifests: watch::Receiver<Arc<ManifestSet>>,
        shared: Arc<Shared>,
        control: Arc<ControlStatus>,
        gateway: SocketAddr,
        events: Arc<Events>,
    ) -> Takeover {
        let (zones_tx, zones_rx) = watch::channel(lease_zones(&manifests.borrow_and_update()));
        let zones_task = tokio::spawn(async move {
            while manifests.changed().await.is_ok() {
                let zones = lease_zones(&manifests.borrow_and_update());
                zones_tx.send_if_modified(|z| {
                    let changed = *z != zones;
                    *z = zones;
                    changed
                });
            }
        });
        let (healthy_tx, healthy_rx) = watch::channel(false);
        let me = cluster.to_string();
        let gateway = if gateway.ip().is_unspecified() { SocketAddr::new([127, 0, 0, 1].into(), gateway.port()) } else { gateway };
        let health_task = tokio::spawn(async move {
            loop {
                let accepts =
                    matches!(tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(gateway)).await, Ok(Ok(_)));
                let healthy = accepts && serves_locally(&shared.snapshot.load(), &control, &me);
                healthy_tx.send_if_modified(|h| std::mem::replace(h, healthy) != healthy);
                if healthy_tx.is_closed() {
                    return;
                }
                tokio::time::sleep(HEALTH_EVERY).await;
            }
        });
        let me = cluster.to_string();
        let on_change = Arc::new(move |zone: &ZoneKey, old: Option<&LeaseStatus>, new: &LeaseStatus| {
            events.record(NewEvent::cluster(EventKind::DnsOwnership, &me, hand_over(&me, zone, old, new)));
        });
        let cfg = LeaseLoopConfig {
            me: cluster.to_string(),
            endpoints: settings.endpoints.clone(),
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
        };
        let lease_loop = LeaseLoop::spawn(cfg, zones_rx, healthy_rx, Some(on_change));
        let feed = LeaseFeed { leases: lease_loop.leases.clone(), live: lease_loop.live.clone() };
        Takeover { feed, lease_loop, feeders: vec![zones_task, health_task] }
    }

    /// Stops the feeders and the loop, which revokes what it holds: a node shut down on purpose
    /// hands its zones over at once instead of after the TTL.
    pub async fn stop(self) {
        for f in &self.feeders {
            f.abort();
        }
        self.lease_loop.stop().await;
    }
}

/// The event of a hand-over, as `/events` shows it.
fn hand_over(me: &str, zone: &ZoneKey, old: Option<&LeaseStatus>, new: &LeaseStatus) -> String {
    let holder = |s: Option<&LeaseStatus>| match s.and_then(|s| s.holder.as_deref()) {
        Some(h) => format!("{h} (epoch {})", s.map_or(0, |s| s.epoch)),
        None => "nobody".to_string(),
    };
    let role = match (old.is_some_and(|o| o.tenure.is_some()), new.tenure.is_some()) {
        (false, true) => "; this node now writes the zone",
        (true, false) => "; this node stopped writing the zone",
        _ if new.holder.as_deref() == Some(me) => "; this node holds the lease",
        _ => "",
    };
    format!("dns: zone {zone} lease: {} -> {}: {}{role}", holder(old), holder(Some(new)), new.reason)
}
