//! The Lease election's I/O: read the Lease, take the [`lease::step`] it calls for, and say
//! whether this replica leads, renewing every [`lease::RENEW_EVERY`].

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::clock;
use crate::lease::{self, Held, Step};

/// Who takes part, and where the Lease lives.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (unique among replicas: host name and process id).
    pub identity: String,
}

/// Runs the election for as long as the task lives, sending on `leading` whether this replica
/// leads now.
pub async fn run(client: Client, election: Election, leading: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut renewed: Option<Duration> = None;
    let mut said_follow: Option<String> = None;
    let mut tick = tokio::time::interval(lease::RENEW_EVERY);
    loop {
        tick.tick().await;
        let now = clock::unix_now();
        match round(&api, &election, now).await {
            Ok(Some(at)) => renewed = Some(at),
            Ok(None) => renewed = None,
            Err(e) => tracing::warn!(target: "veer::kube", "Lease {}/{}: {e}", election.namespace, election.name),
        }
        let leads = renewed.is_some_and(|r| lease::still_leading(r, clock::unix_now()));
        leading.send_if_modified(|now| {
            let changed = *now != leads;
            if changed {
                tracing::info!(target: "veer::kube", "{} {} status writing (Lease {}/{})", election.identity, if leads { "took over" } else { "gave up" }, election.namespace, election.name);
            }
            *now = leads;
            changed
        });
        if !leads {
            if let Ok(Some(lease)) = api.get_opt(&election.name).await {
                let holder = lease.spec.and_then(|s| s.holder_identity);
                if holder != said_follow {
                    tracing::info!(target: "veer::kube", "status is written by {}", holder.as_deref().unwrap_or("nobody yet"));
                    said_follow = holder;
                }
            }
        }
    }
}

/// One look: `Some(time)` when this replica holds the Lease, renewed at that time.
async fn round(api: &Api<Lease>, election: &Election, now: Duration) -> Result<Option<Duration>, kube::Error> {
    let current = api.get_opt(&election.name).await?;
    let held = current.as_ref().map(held_of);
    let stamp = micro_time(now);
    match lease::step(held.as_ref(), &election.identity, now) {
        Step::Follow { .. } => Ok(None),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(election.name.clone()),
                    namespace: Some(election.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(election.identity.clone()),
                    lease_duration_seconds: Some(lease::LEASE_DURATION.as_secs() as i32),
                    acquire_time: stamp.clone(),
                    renew_time: stamp,
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Some(now)),
                // Another replica created it first: it leads.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                Err(e) => Err(e),
            }
        }
        step @ (Step::Renew | Step::TakeOver) => {
            let Some(mut lease) = current else { return Ok(None) };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if step == Step::TakeOver {
                spec.acquire_time = stamp.clone();
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(election.identity.clone());
            spec.lease_duration_seconds = Some(lease::LEASE_DURATION.as_secs() as i32);
            spec.renew_time = stamp;
            // The read's resourceVersion rides along: a replica that wrote in between wins.
            match api.replace(&election.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Some(now)),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

fn held_of(lease: &Lease) -> Held {
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec.renew_time.map(|MicroTime(t)| Duration::new(t.as_second().max(0) as u64, t.subsec_nanosecond().max(0) as u32));
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(lease::LEASE_DURATION.as_secs() as i32).max(1) as u64);
    Held { holder: spec.holder_identity, renewed, duration }
}

fn micro_time(at: Duration) -> Option<MicroTime> {
    Timestamp::new(at.as_secs() as i64, at.subsec_nanos() as i32).ok().map(MicroTime)
}
