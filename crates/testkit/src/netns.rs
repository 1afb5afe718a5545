//! A network-namespace lab: one namespace per cluster, joined by a bridge in a hub namespace, for multi-cluster end-to-end tests.
//!
//! Everything lives in namespaces this process creates; the root namespace is never touched
//! (no interface, address or route is added there). Threads enter a namespace with `setns`,
//! so every socket they create belongs to it — and keeps belonging to it after the thread ends.
//!
//! Clean-up: dropping the [`Lab`] deletes its namespaces but kills nothing. A namespace that
//! still has a process in it (started with [`Lab::command`]) or an open socket (held by an
//! [`NsRuntime`], an [`NsTask`] or a socket made in [`Lab::within`]) lives on, invisibly, until
//! those are gone: kill and wait for children and drop runtimes before the lab. Namespaces
//! leaked by a killed test binary show up as `veer<pid>-<n>-*` in `ip netns list`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::panic::resume_unwind;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// Where `ip netns add` bind-mounts the namespaces it creates.
const NETNS_DIR: &str = "/run/netns";

/// Distinguishes the labs of one process, so that parallel tests in one binary do not collide.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Network namespaces joined by a bridge: one per cluster, each with a veth to a hub namespace.
pub struct Lab {
    ip: OsString,
    hub: String,
    clusters: Vec<Cluster>,
    /// Namespaces to delete on drop, in creation order (the hub first).
    created: Vec<String>,
}

struct Cluster {
    name: String,
    ns: String,
    addr: Ipv4Addr,
    /// The hub end of the cluster's veth, enslaved to `br0`.
    hub_if: String,
}

impl Lab {
    /// Creates namespace `veer<pid>-<n>-hub` holding bridge `br0`, and `veer<pid>-<n>-<name>` per name,
    /// each with `lo` up and `eth0` (`10.<subnet>.0.<index + 1>/24`) wired to the bridge.
    ///
    /// Names are non-empty, at most 32 ASCII letters, digits, `-` or `_`, distinct, not `hub`,
    /// and at most 250 of them. Fails with "network namespaces cannot be created here: …" when
    /// `ip netns` does not work (not root, no iproute2, a sandbox without the capability).
    pub fn new(names: &[&str]) -> io::Result<Lab> {
        Lab::with_ip_command("ip", names)
    }

    /// [`Lab::new`] with another `ip` program (a path or a name looked up in `PATH`).
    pub fn with_ip_command(ip: impl AsRef<OsStr>, names: &[&str]) -> io::Result<Lab> {
        check_names(names)?;
        let pid = std::process::id();
        let ip = ip.as_ref().to_os_string();
        // Namespaces are private, so any subnet works; varying it only makes labs easier to tell apart in captures.
        let subnet = 64 + (pid % 187) as u8;

        // A namespace leaked by an earlier binary with the same pid (killed before its drop) takes its name: skip it.
        let mut lab = None;
        for _ in 0..64 {
            let prefix = format!("veer{pid}-{}", NEXT_LAB.fetch_add(1, Ordering::Relaxed));
            let hub = format!("{prefix}-hub");
            match run_ip(&ip, &["netns", "add", &hub]) {
                Ok(()) => {
                    lab = Some((prefix, hub));
                    break;
                }
                Err(_) if Path::new(NETNS_DIR).join(&hub).exists() => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("network namespaces cannot be created here: {e}"))),
            }
        }
        let Some((prefix, hub)) = lab else {
            return Err(io::Error::other(
                "network namespaces cannot be created here: every lab name for this pid is taken by leaked namespaces",
            ));
        };
        let mut lab = Lab { ip, hub: hub.clone(), clusters: Vec::with_capacity(names.len()), created: vec![hub.clone()] };
        // Entering is what `within` and the runtimes do; a process that may run `ip` but not setns would fail there, later and less clearly.
        enter_check(&hub).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("network namespaces cannot be created here: created {hub} but this process cannot enter it: {e}"),
            )
        })?;
        // On any error below, dropping `lab` deletes what was made so far.
        lab.ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        lab.ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        lab.ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{prefix}-{name}");
            let hub_if = format!("v{i}");
            let addr = Ipv4Addr::new(10, subnet, 0, i as u8 + 1);
            lab.ip(&["netns", "add", &ns])?;
            lab.created.push(ns.clone());
            // The peer is born inside the cluster namespace, so no interface ever shows up in the root namespace.
            lab.ip(&["-n", &hub, "link", "add", &hub_if, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            lab.ip(&["-n", &hub, "link", "set", &hub_if, "master", "br0", "up"])?;
            lab.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            lab.ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            lab.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            lab.clusters.push(Cluster { name: name.to_string(), ns, addr, hub_if });
        }
        // A veth's carrier comes up asynchronously: a test's first connection sent before it has
        // would be dropped and resent a second later.
        for cluster in &lab.clusters {
            lab.wait_until_up(cluster)?;
        }
        Ok(lab)
    }

    /// The cluster's `eth0` address. Panics on a name the lab was not made with.
    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.cluster(name).addr
    }

    /// The full namespace name (as `ip netns list` shows it). Panics on a name the lab was not made with.
    pub fn ns_name(&self, name: &str) -> String {
        self.cluster(name).ns.clone()
    }

    /// The hub namespace, which holds the bridge `br0` and the hub end `v<index>` of every cluster's veth.
    pub fn hub_ns_name(&self) -> &str {
        &self.hub
    }

    /// A command that runs `program` inside the cluster's namespace (`ip netns exec <ns> <program>`).
    /// `ip` execs the program in place, so the child's pid is the program's and killing it kills the program.
    /// Kill and wait for it before the lab drops: its namespace lives as long as it does.
    pub fn command(&self, name: &str, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(&self.ip);
        command.args(["netns", "exec"]).arg(&self.cluster(name).ns).arg(program);
        command
    }

    /// Runs `f` on a new OS thread that has entered the cluster's namespace and returns its result;
    /// sockets it creates belong to the namespace, also once the thread has ended. A panic in `f` is
    /// passed on; failing to enter the namespace panics.
    pub fn within<F: FnOnce() -> R + Send, R: Send>(&self, name: &str, f: F) -> R {
        let ns = &self.cluster(name).ns;
        thread::scope(|scope| {
            let worker = thread::Builder::new()
                .name(format!("netns {name}"))
                .spawn_scoped(scope, || {
                    enter_or_panic(ns);
                    f()
                })
                .expect("spawning a thread");
            worker.join().unwrap_or_else(|panic| resume_unwind(panic))
        })
    }

    /// Runs `fut` to completion on a new thread in the cluster's namespace, on a current-thread tokio
    /// runtime of its own (whose blocking pool is in the namespace too). Everything spawned on that
    /// runtime creates its sockets in the namespace. For work that must outlive one future (backends
    /// kept up across phases), [`Lab::runtime`] is handier.
    pub fn spawn_in<F>(&self, name: &str, fut: F) -> NsTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let ns = self.cluster(name).ns.clone();
        let thread = thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || {
                let runtime = ns_runtime(&ns).unwrap_or_else(|e| panic!("{e}"));
                runtime.block_on(fut)
            })
            .expect("spawning a thread");
        NsTask { thread }
    }

    /// Starts a long-lived tokio runtime on a thread in the cluster's namespace; see [`NsRuntime`].
    pub fn runtime(&self, name: &str) -> io::Result<NsRuntime> {
        NsRuntime::start(&self.cluster(name).ns, name)
    }

    /// Cuts the cluster off the bridge without killing anything: its hub-side veth goes down, so its
    /// `eth0` loses carrier but keeps its address and routes. Traffic between it and the other
    /// clusters is silently dropped both ways (connects time out, as in a real partition, rather than
    /// failing fast); traffic inside the cluster, on loopback or to its own address, goes on.
    pub fn cut(&self, name: &str) -> io::Result<()> {
        let hub_if = &self.cluster(name).hub_if;
        self.ip(&["-n", &self.hub, "link", "set", hub_if, "down"])
    }

    /// Undoes [`Lab::cut`] and returns once new connections get through at once: both veth ends
    /// are up (the bridge runs no STP, so it forwards at once) and every cluster's ARP cache is
    /// flushed. Without the flush, an address someone tried to reach during the cut stays
    /// "incomplete" and traffic to it waits for the next ARP retry, up to a second later; packets
    /// that were queued on such an entry are dropped, and TCP resends them on its own schedule.
    pub fn restore(&self, name: &str) -> io::Result<()> {
        let cluster = self.cluster(name);
        self.ip(&["-n", &self.hub, "link", "set", &cluster.hub_if, "up"])?;
        self.wait_until_up(cluster)?;
        for other in &self.clusters {
            self.ip(&["-n", &other.ns, "neigh", "flush", "dev", "eth0"])?;
        }
        Ok(())
    }

    /// Returns once both ends of the cluster's veth and the bridge report the link up. The carrier
    /// comes up through the kernel's link-watch work; until that has run, the queue discards packets.
    fn wait_until_up(&self, cluster: &Cluster) -> io::Result<()> {
        let deadline = crate::clock::std_now() + Duration::from_secs(5);
        while !self.link_up(&cluster.ns, "eth0")? || !self.link_up(&self.hub, &cluster.hub_if)? || !self.link_up(&self.hub, "br0")? {
            if crate::clock::std_now() > deadline {
                let name = &cluster.name;
                return Err(io::Error::other(format!("the link of {name} did not come up within 5 s")));
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Whether the interface is operationally up (carrier on and ready to send), as `ip` reports it.
    fn link_up(&self, ns: &str, interface: &str) -> io::Result<bool> {
        let output = ip_output(&self.ip, &["-n", ns, "-o", "link", "show", "dev", interface])?;
        Ok(output.contains(" state UP "))
    }

    fn cluster(&self, name: &str) -> &Cluster {
        self.clusters.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("the lab has no cluster named {name:?}"))
    }

    fn ip(&self, args: &[&str]) -> io::Result<()> {
        run_ip(&self.ip, args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Clusters first: deleting a cluster namespace destroys its veth pair, hub end included.
        for ns in self.created.iter().rev() {
            let _ = run_ip(&self.ip, &["netns", "del", ns]);
        }
    }
}

/// A future running on its own thread and runtime inside a namespace (from [`Lab::spawn_in`]).
pub struct NsTask<T> {
    thread: thread::JoinHandle<T>,
}

impl<T> NsTask<T> {
    /// Waits for the future's output; a panic in it (or in entering the namespace) is passed on.
    pub fn join(self) -> T {
        self.thread.join().unwrap_or_else(|panic| resume_unwind(panic))
    }

    /// Whether the future has finished (so that [`NsTask::join`] returns at once).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// A current-thread tokio runtime driven by a thread inside a namespace, until dropped.
///
/// Tasks spawned through it — from any thread, with [`NsRuntime::spawn`] or `handle().spawn` — run
/// on that thread, so their sockets are in the namespace; so do its blocking-pool threads, whoever
/// starts them. What is *not* in the namespace: a future polled by the caller's own thread, such
/// as one given to `handle().block_on(…)` — use [`NsRuntime::block_on`] instead, which runs the
/// future as a task and only waits for it on the caller's thread.
///
/// Dropping it stops the runtime: its tasks are dropped (closing their sockets) and blocking
/// tasks get a second to finish.
pub struct NsRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NsRuntime {
    fn start(ns: &str, name: &str) -> io::Result<NsRuntime> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let ns = ns.to_string();
        let thread = thread::Builder::new().name(format!("netns {name}")).spawn(move || {
            let runtime = match ns_runtime(&ns) {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(runtime.handle().clone()));
            // A dropped sender also means stop: the NsRuntime is gone.
            runtime.block_on(async {
                let _ = stopped.await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        match ready_rx.recv() {
            Ok(Ok(handle)) => Ok(NsRuntime { handle, stop: Some(stop), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(match thread.join() {
                Err(panic) => resume_unwind(panic),
                Ok(()) => io::Error::other("the namespace runtime thread ended before starting"),
            }),
        }
    }

    /// The runtime's handle: tasks spawned on it run inside the namespace.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns `fut` as a task inside the namespace.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut)
    }

    /// Runs `fut` as a task inside the namespace and blocks the calling thread until it is done;
    /// a panic in it is passed on. For synchronous code: like any tokio `block_on`, it panics when
    /// called from within a runtime (there, `rt.spawn(fut).await`).
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Only the JoinHandle is polled here, on the caller's thread; the runtime's own thread drives IO and timers.
        match self.handle.block_on(self.handle.spawn(fut)) {
            Ok(output) => output,
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(e) => panic!("namespace task did not finish: {e}"),
        }
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the runtime thread is not ours to re-raise during a drop.
            let _ = thread.join();
        }
    }
}

/// A current-thread runtime for the calling thread, which enters `ns` first; the blocking pool's
/// threads enter it as they start, since they may be spawned by threads outside it.
fn ns_runtime(ns: &str) -> io::Result<Runtime> {
    let fd = Arc::new(open_ns(ns)?);
    enter(&fd, ns)?;
    let on_start = Arc::clone(&fd);
    let ns_name = ns.to_string();
    Builder::new_current_thread()
        .enable_all()
        .on_thread_start(move || {
            // A thread that could not enter would create sockets in the wrong namespace: better to fail loudly.
            if let Err(e) = enter(&on_start, &ns_name) {
                panic!("{e}");
            }
        })
        .build()
}

fn open_ns(ns: &str) -> io::Result<File> {
    let path = Path::new(NETNS_DIR).join(ns);
    File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))
}

/// Moves the calling thread (only) into the namespace.
fn enter(fd: &File, ns: &str) -> io::Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|errno| io::Error::new(io::Error::from(errno).kind(), format!("setns into {ns}: {errno}")))
}

fn enter_or_panic(ns: &str) {
    if let Err(e) = open_ns(ns).and_then(|fd| enter(&fd, ns)) {
        panic!("{e}");
    }
}

/// Tries entering `ns` on a throwaway thread, so the caller's own thread stays where it is.
fn enter_check(ns: &str) -> io::Result<()> {
    let ns = ns.to_string();
    thread::spawn(move || open_ns(&ns).and_then(|fd| enter(&fd, &ns))).join().unwrap_or_else(|panic| resume_unwind(panic))
}

fn check_names(names: &[&str]) -> io::Result<()> {
    let invalid = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    if names.len() > 250 {
        return invalid(format!("a lab has at most 250 clusters, not {}", names.len()));
    }
    for (i, name) in names.iter().enumerate() {
        let charset_ok = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if name.is_empty() || name.len() > 32 || !charset_ok {
            return invalid(format!("cluster name {name:?}: use 1 to 32 ASCII letters, digits, '-' or '_'"));
        }
        if *name == "hub" {
            return invalid("cluster name \"hub\" is taken by the lab's own hub namespace".into());
        }
        if names[..i].contains(name) {
            return invalid(format!("cluster name {name:?} is given twice"));
        }
    }
    Ok(())
}

/// Runs `ip args…`; an error carries the command line and what `ip` said.
fn run_ip(ip: &OsStr, args: &[&str]) -> io::Result<()> {
    ip_output(ip, args).map(drop)
}

/// Runs `ip args…` and returns what it printed; an error carries the command line and what `ip` said.
fn ip_output(ip: &OsStr, args: &[&str]) -> io::Result<String> {
    let shown = || format!("{} {}", ip.to_string_lossy(), args.join(" "));
    let output = Command::new(ip)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{}`: {e}", shown())))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = match stderr.trim() {
        "" => "(it printed nothing)",
        said => said,
    };
    Err(io::Error::other(format!("`{}` failed ({}): {said}", shown(), output.status)))
}
