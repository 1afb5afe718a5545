//! Real authoritative DNS servers for tests: Debian's BIND 9 (`named`) or Knot (`knotd`) as the
//! primary of one zone, taking TSIG-signed updates and transfers, on a loopback address or in a
//! lab namespace; killed and started again on the same data (updates kept in their journals).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::tempdir::TempDir;
use crate::wait::POLL_EVERY;

/// How long a server may take to load its zone and answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    Bind,
    Knot,
}

impl AuthKind {
    /// The server's binary, if installed (`.ci/run` installs `bind9` and `knot`).
    pub fn binary(self) -> Option<PathBuf> {
        let name = match self {
            AuthKind::Bind => "named",
            AuthKind::Knot => "knotd",
        };
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin"].iter().map(|d| PathBuf::from(d).join(name)).find(|p| p.exists())
    }

    /// The log line that says the zone is loaded and the server answers.
    fn ready_line(self) -> &'static str {
        match self {
            AuthKind::Bind => "running",
            AuthKind::Knot => "server started",
        }
    }
}

/// What a primary serves: one zone with a TSIG key allowed to update and transfer it.
#[derive(Clone, Debug)]
pub struct ZoneSpec {
    /// The zone's origin, without the final dot.
    pub zone: String,
    /// The zone file's text (with `$ORIGIN`, SOA and NS).
    pub text: String,
    pub key_name: String,
    /// The key's secret, base64 (as `tsig-keygen` prints it); HMAC-SHA256.
    pub secret: String,
}

/// A running primary, stopped by PID on drop; its files stay in a [`TempDir`] kept on failure.
pub struct AuthServer {
    pub kind: AuthKind,
    pub addr: SocketAddr,
    dir: TempDir,
    launcher: Option<(OsString, Vec<OsString>)>,
    child: Option<Child>,
    runs: usize,
}

impl AuthServer {
    /// Starts `kind` serving `spec` on `addr` and returns once its log says it runs. `launcher`
    /// runs it elsewhere (a [`crate::netns::Lab::command`] without the program: `ip netns exec
    /// <ns>`). `Ok(None)` when the server is not installed outside CI, which the caller reports.
    pub fn start(kind: AuthKind, addr: SocketAddr, spec: &ZoneSpec, launcher: Option<Command>) -> io::Result<Option<AuthServer>> {
        if kind.binary().is_none() {
            if std::env::var_os("CI").is_some() {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("{kind:?} is not installed; .ci/run installs bind9 and knot")));
            }
            return Ok(None);
        }
        let dir = TempDir::new(&format!("{kind:?}").to_lowercase()).keep_on_failure();
        let d = dir.display().to_string();
        fs::write(dir.join("zone.db"), &spec.text)?;
        let (ip, port, zone, key, secret) = (addr.ip(), addr.port(), &spec.zone, &spec.key_name, &spec.secret);
        match kind {
            AuthKind::Bind => fs::write(
                dir.join("named.conf"),
                format!(
                    "options {{ directory \"{d}\"; listen-on port {port} {{ {ip}; }}; listen-on-v6 {{ none; }};
  pid-file \"{d}/named.pid\"; session-keyfile \"{d}/session.key\"; managed-keys-directory \"{d}\";
  recursion no; notify no; dnssec-validation no; }};
controls {{ }};
key \"{key}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};
zone \"{zone}\" {{ type primary; file \"{d}/zone.db\"; allow-update {{ key \"{key}\"; }}; allow-transfer {{ key \"{key}\"; }}; }};
"
                ),
            )?,
            AuthKind::Knot => fs::write(
                dir.join("knot.conf"),
                format!(
                    "server:
  rundir: \"{d}\"
  listen: {ip}@{port}
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
log:
  - target: stderr
    any: info
database:
  storage: \"{d}\"
key:
  - id: {key}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: veer
    key: {key}
    action: [update, transfer]
zone:
  - domain: {zone}
    storage: \"{d}\"
    file: zone.db
    zonefile-sync: -1
    acl: veer
"
                ),
            )?,
        }
        let launcher = launcher.map(|c| (c.get_program().to_os_string(), c.get_args().map(|a| a.to_os_string()).collect()));
        let mut server = AuthServer { kind, addr, dir, launcher, child: None, runs: 0 };
        server.spawn()?;
        Ok(Some(server))
    }

    /// Kills the server (SIGKILL, by PID): updates it acknowledged are in its journal.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same files and waits until it runs.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("server.{}.log", self.runs))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let bin = self.kind.binary().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{:?} is not installed", self.kind)))?;
        let mut cmd = match &self.launcher {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        match self.kind {
            AuthKind::Bind => cmd.args(["-g", "-n", "1", "-c"]).arg(self.dir.join("named.conf")),
            AuthKind::Knot => cmd.arg("-c").arg(self.dir.join("knot.conf")),
        };
        self.runs += 1;
        let log = File::create(self.log_path())?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        self.child = Some(cmd.spawn()?);
        let start = clock::std_now();
        loop {
            if self.log().contains(self.kind.ready_line()) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(io::Error::other(format!("{:?} exited ({status}):\n{}", self.kind, self.log())));
            }
            if clock::std_since(start) >= READY_WITHIN {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{:?} not running within {READY_WITHIN:?}:\n{}", self.kind, self.log()),
                ));
            }
            std::thread::sleep(POLL_EVERY);
        }
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.kill();
    }
}
