//! Regional takeover on a real three-member etcd: the home holds its zone while a standby waits;
//! the home stopped, the standby takes the zone once the lease runs out, under a larger epoch;
//! the same with the etcd leader killed while the lease runs out; and a recovering home that
//! flaps gets its zone back once, only after the hold-down.

use std::time::Duration;

use veer_dns::takeover::{Intent, Params, Roles};
use veer_testkit::{clock, wait_until_async};

use super::contender::Contender;
use super::{cluster, connect, WAIT};

fn roles() -> Roles {
    Roles { home: "east".into(), standbys: vec!["west".into()], adopter: None }
}

fn params() -> Params {
    // etcd's shortest lease with a 1 s election timeout is 2 s.
    Params {
        ttl: Duration::from_secs(2),
        drift_margin: Duration::from_millis(200),
        hold_down: Duration::from_secs(30),
        stagger: Duration::from_secs(1),
    }
}

/// The home takes its zone and the standby waits; the home killed, the standby takes the zone with
/// a larger epoch, and only after the home's own deadline to write has passed.
async fn takeover(kill_leader: bool) {
    let mut etcd = cluster();
    let mut east = Contender::start("east", roles(), params(), etcd.endpoints());
    wait_until_async("east holds its zone", WAIT, || async { east.may_write() }).await;
    let west = Contender::start("west", roles(), params(), etcd.endpoints());
    wait_until_async("west decides", WAIT, || async { west.intent().is_some() }).await;
    // A few of west's looks: it waits every time and never writes.
    for _ in 0..5 {
        west.next_look().await;
        assert!(!west.may_write() && west.epochs().is_empty(), "west took a zone east holds");
        assert!(east.may_write(), "east lost its zone while serving");
    }
    let east_epoch = east.epochs()[0];
    let east_until = east.until().expect("east holds a tenure");

    let killed = clock::std_now();
    east.kill();
    if kill_leader {
        let mut probe = connect(&etcd.endpoints()).await;
        let status = probe.status().await.unwrap();
        let mut leader = None;
        for i in 0..etcd.len() {
            let s = connect(&[etcd.endpoint(i)]).await.status().await.unwrap();
            if s.member == status.leader {
                leader = Some(i);
            }
        }
        let leader = leader.expect("one member is the leader");
        etcd.kill(leader);
        eprintln!("killed etcd leader m{leader}");
    }
    wait_until_async("west takes the zone", WAIT, || async { west.may_write() }).await;
    let took = clock::std_since(killed);
    let west_epochs = west.epochs();
    eprintln!("takeover (leader killed: {kill_leader}): {took:?} after the home stopped; epochs {east_epoch} -> {west_epochs:?}");
    assert!(west_epochs[0] > east_epoch, "epoch {west_epochs:?} after {east_epoch}");
    let west_began = west.began()[0];
    assert!(west_began >= east_until, "west began writing before east's deadline to write passed");
    assert_ne!(west.intent(), Some(Intent::Release));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_the_zone_once_the_stopped_home_lease_runs_out() {
    takeover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_completes_with_the_etcd_leader_killed_while_the_lease_runs_out() {
    takeover(true).await;
}

/// A home that cannot serve gives its zone up at once (it revokes, not waiting for the TTL), and
/// the standby takes it under a larger epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_home_releases_its_zone_to_the_standby() {
    let etcd = cluster();
    let east = Contender::start("east", roles(), params(), etcd.endpoints());
    wait_until_async("east holds its zone", WAIT, || async { east.may_write() }).await;
    let west = Contender::start("west", roles(), params(), etcd.endpoints());
    wait_until_async("west decides", WAIT, || async { west.intent().is_some() }).await;
    assert!(west.epochs().is_empty(), "west took a zone east holds");
    let east_epoch = east.epochs()[0];

    east.set_healthy(false);
    wait_until_async("west takes the zone", WAIT, || async { west.may_write() }).await;
    assert!(!east.may_write(), "east still writes after releasing");
    assert!(west.epochs()[0] > east_epoch);
}

/// The home recovers while the standby holds its zone: through flaps shorter than the hold-down
/// the standby keeps the zone; once the home stays ready for the hold-down, the standby hands it
/// back, once, under a larger epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_home_gets_its_zone_back_once_and_only_after_the_hold_down() {
    let etcd = cluster();
    let params = Params { hold_down: Duration::from_secs(6), ..params() };
    let east = Contender::start_with_health("east", roles(), params, etcd.endpoints(), false);
    let west = Contender::start("west", roles(), params, etcd.endpoints());
    wait_until_async("west holds east's zone while east cannot serve", WAIT, || async { west.may_write() }).await;
    let west_epoch = west.epochs()[0];

    // Three flaps, each ended as soon as west has seen the home ready: far shorter than the hold-down.
    let set = |up: bool| east.set_healthy(up);
    for _ in 0..3 {
        set(true);
        wait_until_async("west sees the home ready", WAIT, || async { west.home_ready() }).await;
        set(false);
        wait_until_async("west sees the home unready", WAIT, || async { !west.home_ready() }).await;
        assert!(west.may_write() && east.epochs().is_empty(), "the zone moved back during a flap");
    }
    set(true);
    let ready = clock::std_now();
    wait_until_async("east takes its zone back", WAIT, || async { east.may_write() }).await;
    let back = clock::std_since(ready);
    eprintln!("hand-back {back:?} after the home stayed ready (hold-down {:?})", params.hold_down);
    assert!(!west.may_write(), "west still writes after handing back");
    let east_epochs = east.epochs();
    assert_eq!(east_epochs.len(), 1, "east took its zone more than once: {east_epochs:?}");
    assert!(east_epochs[0] > west_epoch);
    assert_eq!(west.epochs(), vec![west_epoch], "west took the zone again");
}
