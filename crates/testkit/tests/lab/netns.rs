//! The network-namespace lab against real namespaces, sockets and traffic: isolation, reachability, cut and restore, clean-up, errors.

use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use veer_testkit::netns::{Lab, NsRuntime};
use veer_testkit::{run, wait_until, Backend, LoadSpec};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

fn lab(names: &[&str]) -> Lab {
    Lab::new(names).unwrap_or_else(|e| panic!("{e}"))
}

fn spec(target: SocketAddr) -> LoadSpec {
    LoadSpec {
        target,
        host: String::new(),
        path: "/".into(),
        method: http::Method::GET,
        rate_per_sec: 40,
        duration: Duration::from_millis(250),
        connections: 2,
        timeout: Duration::from_secs(1),
        http2: false,
    }
}

/// A TCP connect from wherever the calling task runs, with the test's timeout.
async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// A listener in the runtime's namespace that accepts and counts connections, and closes them.
fn counting_listener(rt: &NsRuntime, addr: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    let listener = rt.block_on(async move { TcpListener::bind(addr).await.unwrap() });
    let bound = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok(connection) = listener.accept().await {
            // Counted before it is closed: a client that sees the close sees the count.
            count.fetch_add(1, Ordering::SeqCst);
            drop(connection);
        }
    });
    (bound, accepted)
}

/// The network namespace of the calling thread, as an nsfs inode number.
fn thread_netns() -> u64 {
    fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

fn netns_of(lab: &Lab, name: &str) -> u64 {
    fs::metadata(format!("/run/netns/{}", lab.ns_name(name))).unwrap().ino()
}

#[test]
fn clusters_reach_each_other_on_eth0_but_each_loopback_is_private() {
    let lab = lab(&["a", "b"]);
    let (a, b) = (lab.runtime("a").unwrap(), lab.runtime("b").unwrap());

    // A backend on b's eth0 serves load generated inside a.
    let on_eth0 = b.block_on(Backend::start("b-eth0", SocketAddr::from((lab.addr("b"), 0))));
    let on_eth0 = on_eth0.unwrap();
    let report = a.block_on(run(spec(on_eth0.addr())));
    assert!(!report.samples.is_empty());
    assert_eq!(report.errors(), 0, "{:?}", report.samples.first());
    assert_eq!(report.by_backend().get("b-eth0"), Some(&report.samples.len()));

    // A backend on b's 127.0.0.1 serves b itself, and nobody else: a has a loopback of its own.
    let on_lo = b.block_on(Backend::start("b-lo", "127.0.0.1:0".parse().unwrap()));
    let on_lo = on_lo.unwrap();
    let inside = b.block_on(run(spec(on_lo.addr())));
    assert_eq!(inside.errors(), 0, "{:?}", inside.samples.first());
    assert_eq!(inside.by_backend().get("b-lo"), Some(&inside.samples.len()));
    let from_a = a.block_on(run(spec(on_lo.addr())));
    assert_eq!(from_a.ok(), 0);
    assert_eq!(from_a.errors(), from_a.samples.len());
    assert_eq!(on_lo.served(), inside.samples.len() as u64);

    // Neither from a nor from the test's own namespace. The root namespace may well have something
    // of its own on that port, so what counts is that b's listener never sees the connection.
    let (port, accepted) = counting_listener(&b, "127.0.0.1:0".parse().unwrap());
    let refused = a.block_on(connect(port));
    assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    let _maybe_someone_else = std::net::TcpStream::connect_timeout(&port, CONNECT_TIMEOUT);
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    // b's own connection comes after: the listener accepts in order, so once it has counted
    // and closed this one, it has counted any that reached it before.
    let closed = b.block_on(async move {
        let mut stream = connect(port).await?;
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut Vec::new()).await
    });
    assert_eq!(closed.unwrap(), 0, "the listener closes what it accepts");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn threads_tasks_and_sockets_stay_in_their_namespace() {
    let lab = lab(&["a", "b"]);
    let root = thread_netns();
    let (ns_a, ns_b) = (netns_of(&lab, "a"), netns_of(&lab, "b"));
    assert_ne!(ns_a, ns_b);
    assert_ne!(ns_a, root);

    assert_eq!(lab.within("a", thread_netns), ns_a);
    assert_eq!(lab.spawn_in("b", async { thread_netns() }).join(), ns_b);
    let rt = lab.runtime("a").unwrap();
    assert_eq!(rt.block_on(async { thread_netns() }), ns_a);
    let task = rt.handle().spawn(async { thread_netns() });
    assert_eq!(rt.block_on(task).unwrap(), ns_a);
    // Blocking-pool threads started from here, outside the namespace, still enter it.
    let blocking = rt.handle().spawn_blocking(thread_netns);
    assert_eq!(rt.block_on(blocking).unwrap(), ns_a);
    let blocking_from_task = rt.block_on(async { tokio::task::spawn_blocking(thread_netns).await });
    assert_eq!(blocking_from_task.unwrap(), ns_a);
    // The trap NsRuntime::block_on avoids: Handle::block_on polls the future on the caller's thread.
    assert_eq!(rt.handle().block_on(async { thread_netns() }), root);
    // Entering never moved the test's own thread.
    assert_eq!(thread_netns(), root);

    // A socket made in b keeps living there after its thread is gone, whoever uses it.
    let addr_b = lab.addr("b");
    let listener = lab.within("b", || std::net::TcpListener::bind((addr_b, 0)).unwrap());
    let port = listener.local_addr().unwrap();
    let sent = rt.block_on(async move {
        let mut stream = connect(port).await?;
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"from a").await
    });
    sent.unwrap();
    let (mut accepted, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), lab.addr("a"));
    let mut got = String::new();
    accepted.read_to_string(&mut got).unwrap();
    assert_eq!(got, "from a");
}

#[test]
fn cut_partitions_a_cluster_and_restore_heals_it() {
    let lab = lab(&["a", "b"]);
    let (a, b) = (lab.runtime("a").unwrap(), lab.runtime("b").unwrap());
    let (port, _) = counting_listener(&b, SocketAddr::from((lab.addr("b"), 0)));
    let (port_a, _) = counting_listener(&a, SocketAddr::from((lab.addr("a"), 0)));
    a.block_on(connect(port)).unwrap();

    lab.cut("b").unwrap();
    let started = veer_testkit::clock::std_now();
    let cut_off = a.block_on(connect(port));
    assert_eq!(cut_off.unwrap_err().kind(), io::ErrorKind::TimedOut);
    assert!(veer_testkit::clock::std_since(started) >= CONNECT_TIMEOUT);
    let outbound = b.block_on(connect(port_a));
    assert_eq!(outbound.unwrap_err().kind(), io::ErrorKind::TimedOut);
    // Inside b nothing changed: its own address still answers.
    b.block_on(connect(port)).unwrap();

    lab.restore("b").unwrap();
    a.block_on(connect(port)).unwrap();
    b.block_on(connect(port_a)).unwrap();
}

#[test]
fn commands_run_inside_the_namespace() {
    let lab = lab(&["a", "b"]);
    let output = lab.command("a", "ip").args(["-4", "addr"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let shown = String::from_utf8(output.stdout).unwrap();
    assert!(shown.contains(&format!("inet {}/24", lab.addr("a"))), "{shown}");
    assert!(!shown.contains(&lab.addr("b").to_string()), "{shown}");

    // `ip netns exec` execs in place: the child is the program, so killing it leaves nothing behind.
    let mut child = lab.command("b", "sleep").arg("30").spawn().unwrap();
    let comm = format!("/proc/{}/comm", child.id());
    wait_until("the child becomes `sleep`", Duration::from_secs(2), || fs::read_to_string(&comm).unwrap().trim() == "sleep");
    let child_ns = fs::metadata(format!("/proc/{}/ns/net", child.id())).unwrap();
    assert_eq!(child_ns.ino(), netns_of(&lab, "b"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn dropping_the_lab_deletes_its_namespaces() {
    let listed = || {
        let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let lab = lab(&["east", "west"]);
    let names = [lab.ns_name("east"), lab.ns_name("west"), lab.hub_ns_name().to_string()];
    let before = listed();
    for name in &names {
        assert!(before.lines().any(|l| l.split_whitespace().next() == Some(name)), "{name} in {before}");
    }
    drop(lab);
    let after = listed();
    for name in &names {
        assert!(!after.lines().any(|l| l.split_whitespace().next() == Some(name)), "{name} in {after}");
    }
}

#[test]
fn a_lab_that_cannot_be_made_says_why() {
    let err = Lab::with_ip_command("/nonexistent/ip", &["a", "b"]).err().unwrap();
    let message = err.to_string();
    assert!(message.starts_with("network namespaces cannot be created here: "), "{message}");
    assert!(message.contains("/nonexistent/ip"), "{message}");

    // An `ip` that runs but fails: its own words make it into the error.
    let err = Lab::with_ip_command("false", &["a"]).err().unwrap();
    assert!(err.to_string().starts_with("network namespaces cannot be created here: "), "{err}");

    for bad in [&["a", "a"][..], &["hub"], &[""], &["a/b"]] {
        let err = Lab::new(bad).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {err}");
    }
}

#[test]
fn load_can_target_the_cluster_address_from_inside_the_cluster() {
    // The shape of the multi-cluster test: backends on a cluster's loopback, load from the same
    // cluster against its own eth0 address (where its proxy would listen).
    let lab = lab(&["x"]);
    let x = lab.runtime("x").unwrap();
    let backend = x.block_on(Backend::start("x-1", SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))).unwrap();
    let target = SocketAddr::from((lab.addr("x"), backend.addr().port()));
    let report = x.block_on(run(spec(target)));
    assert_eq!(report.errors(), 0, "{:?}", report.samples.first());
    assert_eq!(report.by_backend().get("x-1"), Some(&report.samples.len()));
}
