//! A zone's lease contender for the tests: a task that reads the writer key, decides with
//! `veer_dns::takeover::decide`, and grants, takes, renews or revokes as the rule says, recording
//! every tenure. The home also keeps a readiness key beside the writer key while it can serve,
//! bound to a lease of its own, which standbys read to time the hold-down before handing back.
//! The node's own loop will be this one with real health and DNS writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veer_dns::takeover::{decide, Intent, LeaseView, Params, ReadySince, Roles, Tenure, View};
use veer_etcd::{Etcd, KeepAlive, LeaseId, Take};

/// How often a contender looks again.
const STEP: Duration = Duration::from_millis(100);

/// What a contender did, for the test to read.
#[derive(Debug, Default)]
pub struct Record {
    /// Every tenure it got, in order: (epoch, when it sent the grant that began it).
    pub tenures: Vec<(u64, Instant)>,
    /// Its current right to write.
    pub tenure: Option<Tenure>,
    pub last_intent: Option<Intent>,
    /// Whether its last look found the home's readiness key.
    pub home_ready: bool,
}

pub struct Contender {
    pub record: Arc<Mutex<Record>>,
    pub healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Contender {
    pub fn start(name: &'static str, roles: Roles, params: Params, etcd: Etcd, key: &'static [u8]) -> Contender {
        Self::start_with_health(name, roles, params, etcd, key, true)
    }

    pub fn start_with_health(name: &'static str, roles: Roles, params: Params, etcd: Etcd, key: &'static [u8], healthy: bool) -> Contender {
        let record = Arc::new(Mutex::new(Record::default()));
        let healthy = Arc::new(AtomicBool::new(healthy));
        let task = tokio::spawn(run(name, roles, params, etcd, key, record.clone(), healthy.clone()));
        Contender { record, healthy, task }
    }

    /// Whether it may write now.
    pub fn may_write(&self) -> bool {
        self.record.lock().unwrap().tenure.is_some_and(|t| t.may_write(veer_testkit::clock::std_now()))
    }

    pub fn epochs(&self) -> Vec<u64> {
        self.record.lock().unwrap().tenures.iter().map(|t| t.0).collect()
    }

    /// Its deadline to write, if it holds a tenure.
    pub fn until(&self) -> Option<Instant> {
        self.record.lock().unwrap().tenure.map(|t| t.until)
    }

    /// Stops it as a killed process stops: no revoke, so its lease runs out by itself.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    name: &'static str,
    roles: Roles,
    params: Params,
    mut etcd: Etcd,
    key: &'static [u8],
    record: Arc<Mutex<Record>>,
    healthy: Arc<AtomicBool>,
) {
    let mut held: Option<(LeaseId, KeepAlive)> = None;
    let mut ready_lease: Option<(LeaseId, KeepAlive)> = None;
    let mut free_since: Option<Instant> = None;
    let mut home_ready = ReadySince::default();
    let ready_key = [key, b"/home-ready"].concat();
    loop {
        tokio::time::sleep(STEP).await;
        let now = veer_testkit::clock::std_now();
        let is_healthy = healthy.load(Ordering::Relaxed);
        if roles.home == name {
            ready_lease = announce(&mut etcd, &params, &ready_key, name, is_healthy, ready_lease).await;
        }
        // One read of both keys, at one revision. A failed read decides nothing: the tenure
        // lapses by itself if renewals fail too.
        let Ok((_, entries)) = etcd.get_prefix(key).await else { continue };
        let writer = entries.iter().find(|e| e.key == key).cloned();
        let ready = entries.iter().any(|e| e.key == ready_key);
        home_ready.observe(ready, now);
        record.lock().unwrap().home_ready = ready;
        let lease = match writer {
            Some(e) => {
                free_since = None;
                LeaseView::Held {
                    holder: String::from_utf8_lossy(&e.value).into_owned(),
                    epoch: u64::try_from(e.create_revision).unwrap_or(0),
                }
            }
            None => LeaseView::Free { since: *free_since.get_or_insert(now) },
        };
        let view = View { me: name, healthy: is_healthy, lease, home_ready_since: home_ready.get() };
        let intent = decide(&roles, &params, &view, now).intent;
        record.lock().unwrap().last_intent = Some(intent);
        match intent {
            Intent::Contend => {
                let sent = veer_testkit::clock::std_now();
                let Ok(lease) = etcd.grant(params.ttl).await else { continue };
                match etcd.take_if_absent(key, name.as_bytes(), lease.id).await {
                    Ok(Take::Taken { revision }) => {
                        let epoch = u64::try_from(revision).unwrap_or(0);
                        let Ok(keep) = etcd.keep_alive(lease.id).await else { continue };
                        let mut r = record.lock().unwrap();
                        r.tenure = Some(Tenure::granted(epoch, sent, lease.ttl, &params));
                        r.tenures.push((epoch, sent));
                        held = Some((lease.id, keep));
                    }
                    _ => {
                        let _ = etcd.revoke(lease.id).await;
                    }
                }
            }
            Intent::Keep => {
                let Some((_, keep)) = held.as_mut() else { continue };
                let sent = veer_testkit::clock::std_now();
                if let Ok(ttl) = keep.renew().await {
                    let mut r = record.lock().unwrap();
                    r.tenure = r.tenure.map(|t| t.renewed(sent, ttl, &params));
                }
            }
            Intent::Release => {
                record.lock().unwrap().tenure = None;
                if let Some((lease, _)) = held.take() {
                    let _ = etcd.revoke(lease).await;
                }
            }
            Intent::Wait => {}
        }
    }
}

/// The home's readiness key: present, under a lease of its own, while it can serve; revoked the
/// moment it cannot. Returns the readiness lease now held.
async fn announce(
    etcd: &mut Etcd,
    params: &Params,
    ready_key: &[u8],
    name: &str,
    healthy: bool,
    held: Option<(LeaseId, KeepAlive)>,
) -> Option<(LeaseId, KeepAlive)> {
    match (healthy, held) {
        (true, Some((lease, mut keep))) => keep.renew().await.ok().map(|_| (lease, keep)),
        (true, None) => {
            let lease = etcd.grant(params.ttl).await.ok()?;
            match etcd.take_if_absent(ready_key, name.as_bytes(), lease.id).await {
                Ok(Take::Taken { .. }) => Some((lease.id, etcd.keep_alive(lease.id).await.ok()?)),
                _ => {
                    let _ = etcd.revoke(lease.id).await;
                    None
                }
            }
        }
        (false, Some((lease, _))) => {
            let _ = etcd.revoke(lease).await;
            None
        }
        (false, None) => None,
    }
}
