//! veer-etcd against a real etcd cluster (Debian's etcd-server, three members on loopback, each a
//! process of its own): leases, the take-if-absent transaction, watches, and zone takeover driven
//! by `veer_dns::takeover`'s rule, with a holder stopped and the etcd leader killed.

#[path = "etcd/contender.rs"]
mod contender;
#[path = "etcd/takeover.rs"]
mod takeover;

use std::time::Duration;

use veer_etcd::{Etcd, Take, WatchEvent};
use veer_testkit::etcd::EtcdCluster;

/// A call's limit: long enough for a leader election on a loaded machine.
const CALL: Duration = Duration::from_secs(5);

/// How long a test waits for what should follow.
const WAIT: Duration = Duration::from_secs(60);

fn cluster() -> EtcdCluster {
    EtcdCluster::start(3).unwrap_or_else(|e| panic!("etcd cluster: {e}"))
}

async fn connect(endpoints: &[String]) -> Etcd {
    Etcd::connect(endpoints, CALL).await.unwrap_or_else(|e| panic!("connect {endpoints:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_under_a_lease_is_refused_to_another_and_freed_by_the_revoke_with_a_larger_revision_after() {
    let etcd = cluster();
    // Two clients on two different members: the transaction holds across the cluster.
    let mut a = connect(&[etcd.endpoint(0)]).await;
    let mut b = connect(&[etcd.endpoint(1)]).await;
    let la = a.grant(Duration::from_secs(5)).await.unwrap();
    let lb = b.grant(Duration::from_secs(5)).await.unwrap();
    let mut watch = b.watch_prefix(b"/veer/zones/", None).await.unwrap().with_timeout(WAIT);

    let Take::Taken { revision: first } = a.take_if_absent(b"/veer/zones/east", b"east", la.id).await.unwrap() else {
        panic!("the first take of an absent key must win")
    };
    let held = b.take_if_absent(b"/veer/zones/east", b"west", lb.id).await.unwrap();
    let Take::Held(entry) = held else { panic!("a key held under a lease was taken again: {held:?}") };
    assert_eq!((entry.value.as_slice(), entry.lease, entry.create_revision), (&b"east"[..], la.id, first));
    let read = b.get(b"/veer/zones/east").await.unwrap();
    assert_eq!(read.entry.as_ref().map(|e| e.create_revision), Some(first));
    assert!(read.revision >= first);

    // A renewal is granted while the lease lives; revoking it deletes the key, and the watch says so.
    let mut keep = a.keep_alive(la.id).await.unwrap();
    assert!(keep.renew().await.unwrap() > Duration::ZERO);
    a.revoke(la.id).await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|e| matches!(e, WatchEvent::Delete { .. })) {
        seen.extend(watch.next().await.unwrap());
    }
    assert!(matches!(&seen[0], WatchEvent::Put(e) if e.create_revision == first), "{seen:?}");
    // A renewal of the revoked lease is an error, not a silent success.
    let err = keep.renew().await.unwrap_err();
    assert!(matches!(err, veer_etcd::EtcdError::LeaseExpired { .. }), "{err}");

    let Take::Taken { revision: second } = b.take_if_absent(b"/veer/zones/east", b"west", lb.id).await.unwrap() else {
        panic!("the key freed by the revoke must be taken")
    };
    assert!(second > first, "epoch {second} after {first}");
}
