//! A real etcd cluster for tests: Debian's `etcd` (etcd-server), several members on loopback ports, each a process of its own that a test can kill and start again, stopped by PID on drop.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::tempdir::TempDir;
use crate::wait::POLL_EVERY;

/// How long a member may take to serve clients: seconds when idle, more on a loaded machine.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Whole-cluster starts tried with fresh ports when one was taken meanwhile.
const PORT_TRIES: usize = 3;

/// Lines of a log quoted in an error.
const LOG_TAIL: usize = 30;

/// One member's fixed identity: its name and ports stay across a restart.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    /// How to run `etcd` for this member: in a lab's namespace (`ip netns exec <ns> etcd`), or
    /// `None` for the test's own namespace.
    launcher: Option<(std::ffi::OsString, Vec<std::ffi::OsString>)>,
}

/// A running etcd cluster of one test: members `m0`, `m1`, ... on their own loopback ports, data
/// and logs (`<name>.<run>.log`) in a [`TempDir`] kept when the test fails. Elections are quick
/// (heartbeat 100 ms, election timeout 1 s), so a killed leader is replaced within seconds.
pub struct EtcdCluster {
    dir: TempDir,
    members: Vec<Member>,
    children: Vec<Option<Child>>,
    /// How often each member was started: each run logs to a file of its own.
    runs: Vec<usize>,
}

impl EtcdCluster {
    /// Starts `n` members and returns once each says it serves clients. Fails naming Debian's
    /// `etcd-server` package when `etcd` is missing, and with a log's tail when a member exits.
    pub fn start(n: usize) -> io::Result<EtcdCluster> {
        for attempt in 1..=PORT_TRIES {
            let dir = TempDir::new("etcd").keep_on_failure();
            let ports = free_ports(2 * n)?;
            let members: Vec<Member> = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                    peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                    launcher: None,
                })
                .collect();
            let mut cluster = EtcdCluster { dir, members, children: (0..n).map(|_| None).collect(), runs: vec![0; n] };
            for i in 0..n {
                cluster.spawn(i)?;
            }
            match (0..n).try_for_each(|i| cluster.wait_ready(i)) {
                Ok(()) => return Ok(cluster),
                // Dropping the cluster stops its members; the next try takes fresh ports.
                Err(e) if attempt < PORT_TRIES && e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last try returns")
    }

    /// Starts one member in each of `sites`' namespaces of `lab` (named after the site, on its
    /// lab address, ports 2379 and 2380), so that cutting a site off cuts its member off too.
    pub fn start_in(lab: &crate::netns::Lab, sites: &[&str]) -> io::Result<EtcdCluster> {
        let members: Vec<Member> = sites
            .iter()
            .map(|site| {
                let ip = lab.addr(site);
                let cmd = lab.command(site, "etcd");
                Member {
                    name: (*site).to_string(),
                    client_url: format!("http://{ip}:2379"),
                    peer_url: format!("http://{ip}:2380"),
                    launcher: Some((cmd.get_program().to_os_string(), cmd.get_args().map(|a| a.to_os_string()).collect())),
                }
            })
            .collect();
        let n = members.len();
        let mut cluster = EtcdCluster {
            dir: TempDir::new("etcd").keep_on_failure(),
            members,
            children: (0..n).map(|_| None).collect(),
            runs: vec![0; n],
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        (0..n).try_for_each(|i| cluster.wait_ready(i))?;
        Ok(cluster)
    }

    /// Every member's client URL, for a client balanced over the cluster.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url.clone()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kills member `i` (SIGKILL, by PID) and reaps it; its data stays for [`EtcdCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its ports and data, and waits until it serves.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i)
    }

    /// The folder of the members' data and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn spawn(&mut self, i: usize) -> io::Result<()> {
        let m = &self.members[i];
        let initial: Vec<String> = self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
        self.runs[i] += 1;
        let log = File::create(self.log_path(i))?;
        let mut command = match &m.launcher {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
            None => Command::new("etcd"),
        };
        let child = command
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", self.dir.join(&m.name).display()))
            .arg(format!("--listen-client-urls={}", m.client_url))
            .arg(format!("--advertise-client-urls={}", m.client_url))
            .arg(format!("--listen-peer-urls={}", m.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", m.peer_url))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg("--initial-cluster-token=veer-test")
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=1000")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("etcd: {e} (install Debian's etcd-server)")))?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// The log of member `i`'s latest run (`m0.1.log`, then `m0.2.log` after a restart).
    fn log_path(&self, i: usize) -> std::path::PathBuf {
        self.dir.join(format!("{}.{}.log", self.members[i].name, self.runs[i]))
    }

    /// Waits until member `i` logs that it serves clients (its own log, not a connection to the
    /// port: a port taken by another test's etcd would answer too).
    fn wait_ready(&mut self, i: usize) -> io::Result<()> {
        let path = self.log_path(i);
        let start = clock::std_now();
        loop {
            if fs::read_to_string(&path).unwrap_or_default().contains("ready to serve client requests") {
                return Ok(());
            }
            if let Some(child) = self.children[i].as_mut() {
                if let Some(status) = child.try_wait()? {
                    let tail = log_tail(&path);
                    let kind = if tail.contains("address already in use") { io::ErrorKind::AddrInUse } else { io::ErrorKind::Other };
                    return Err(io::Error::new(
                        kind,
                        format!("etcd {} exited ({status}); {}:\n{tail}", self.members[i].name, path.display()),
                    ));
                }
            }
            let elapsed = clock::std_since(start);
            if elapsed >= READY_WITHIN {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("etcd {} not serving within {READY_WITHIN:?}; {}:\n{}", self.members[i].name, path.display(), log_tail(&path)),
                ));
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    fn stop_all(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCluster").field("endpoints", &self.endpoints()).field("dir", &self.dir.path()).finish_non_exhaustive()
    }
}

/// `n` distinct ports free on 127.0.0.1 a moment ago.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

fn log_tail(path: &std::path::Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}
