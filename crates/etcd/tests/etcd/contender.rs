//! A zone's lease contender for the tests: the node's own lease loop (`veer_etcd::zones`) for one
//! zone, with the node's health in the test's hands and every tenure it began recorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use veer_dns::takeover::{Intent, LeaseStatus, LeaseZone, Params, Roles, Tenure, ZoneKey};
use veer_etcd::zones::{LeaseLoop, LeaseLoopConfig};

/// The zone every contender of a test competes for.
pub fn zone_key() -> ZoneKey {
    ZoneKey { region: "east".into(), origin: "east.example.com".into() }
}

pub struct Contender {
    lease_loop: Option<LeaseLoop>,
    healthy: watch::Sender<bool>,
    /// Every tenure it began: (epoch, when it sent the grant that began it).
    began: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl Contender {
    pub fn start(name: &str, roles: Roles, params: Params, endpoints: Vec<String>) -> Contender {
        Self::start_with_health(name, roles, params, endpoints, true)
    }

    pub fn start_with_health(name: &str, roles: Roles, params: Params, endpoints: Vec<String>, healthy: bool) -> Contender {
        let (_zones_tx, zones) = watch::channel(vec![LeaseZone { key: zone_key(), roles, params }]);
        // The zones never change in these tests: the receiver keeps its value once the sender is gone.
        let (health_tx, health) = watch::channel(healthy);
        let began: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
        let record = began.clone();
        let on_change = Arc::new(move |_: &ZoneKey, old: Option<&LeaseStatus>, new: &LeaseStatus| {
            if let (None, Some(t)) = (old.and_then(|o| o.tenure), new.tenure) {
                // A tenure begun at this look: its deadline is the grant's send plus TTL minus margin.
                record.lock().unwrap().push((t.epoch, t.until - (params.ttl - params.drift_margin)));
            }
        });
        let cfg = LeaseLoopConfig { me: name.to_string(), endpoints, prefix: "/veer/".into(), timeout: Duration::from_secs(1) };
        let lease_loop = LeaseLoop::spawn(cfg, zones, health, Some(on_change));
        Contender { lease_loop: Some(lease_loop), healthy: health_tx, began }
    }

    fn status(&self) -> Option<LeaseStatus> {
        self.lease_loop.as_ref().and_then(|l| l.live.load().get(&zone_key()).cloned())
    }

    /// Whether it may write now.
    pub fn may_write(&self) -> bool {
        self.status().and_then(|s| s.writable(veer_testkit::clock::std_now())).is_some()
    }

    pub fn epochs(&self) -> Vec<u64> {
        self.began.lock().unwrap().iter().map(|t| t.0).collect()
    }

    /// When each tenure began (the send of its grant).
    pub fn began(&self) -> Vec<Instant> {
        self.began.lock().unwrap().iter().map(|t| t.1).collect()
    }

    /// Its deadline to write, if it holds a tenure.
    pub fn until(&self) -> Option<Instant> {
        self.status().and_then(|s| s.tenure).map(|t: Tenure| t.until)
    }

    pub fn intent(&self) -> Option<Intent> {
        self.status().map(|s| s.intent)
    }

    /// Whether its last look found the home's readiness key.
    pub fn home_ready(&self) -> bool {
        self.status().is_some_and(|s| s.home_ready)
    }

    /// Waits for its next look (each look stores a new view).
    pub async fn next_look(&self) {
        let Some(l) = self.lease_loop.as_ref() else { return };
        let before = l.live.load();
        veer_testkit::wait_until_async("the lease loop looks again", super::WAIT, || async { !Arc::ptr_eq(&before, &l.live.load()) }).await;
    }

    pub fn set_healthy(&self, up: bool) {
        self.healthy.send_replace(up);
    }

    /// Stops it as a killed process stops: no revoke, so its lease runs out by itself.
    pub fn kill(&mut self) {
        if let Some(l) = self.lease_loop.take() {
            l.abort();
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.kill();
    }
}
