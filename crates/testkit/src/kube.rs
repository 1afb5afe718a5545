//! A real Kubernetes API server for tests: etcd and the `kube-apiserver` that `scripts/kube-apiserver` builds, on free loopback ports, with token identities and kubeconfigs, stopped by PID on drop.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::clock;
use crate::tempdir::TempDir;
use crate::wait::POLL_EVERY;

/// The environment variable naming the `kube-apiserver` binary (`scripts/kube-apiserver` prints
/// the path to set it to; `.ci/run` does).
pub const APISERVER_ENV: &str = "VEER_KUBE_APISERVER";

/// How long a start may take to answer ready: about 10 s on an idle two-core machine, several
/// times that while every crate's tests compete for the cores.
pub const READY_WITHIN: Duration = Duration::from_secs(90);

/// How long etcd may take to serve clients.
const ETCD_WITHIN: Duration = Duration::from_secs(60);

/// Starts tried with fresh ports when one was taken between choosing it and binding it.
const PORT_TRIES: usize = 3;

/// Lines of a log quoted in an error.
const LOG_TAIL: usize = 40;

/// The identities the server knows, each with a bearer token in its `tokens.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeUser {
    /// `admin`, in the group `system:masters`: RBAC lets it do everything.
    Admin,
    /// `veer`, in no group: it may do only what a Role or ClusterRole bound to it allows.
    Veer,
}

impl KubeUser {
    pub fn name(self) -> &'static str {
        match self {
            KubeUser::Admin => "admin",
            KubeUser::Veer => "veer",
        }
    }
}

/// A running etcd and `kube-apiserver` (Kubernetes 1.20, RBAC on, no controllers) of one test,
/// each on its own loopback ports with its own data, certificates and logs in a [`TempDir`]
/// (kept when the test fails). Both processes are killed by PID when it is dropped.
///
/// No controller runs: a test writes what one would (EndpointSlices, Pod status, and before a
/// Pod a namespace's `default` ServiceAccount: [`KubeApi::create_namespace`]).
pub struct KubeApi {
    dir: TempDir,
    apiserver_bin: PathBuf,
    etcd: Child,
    etcd_url: String,
    apiserver: Option<Child>,
    port: u16,
    admin_token: String,
    veer_token: String,
    ca_pem: String,
    ready_in: Duration,
}

impl KubeApi {
    /// Starts etcd, then the API server, and returns once `/readyz` answers 200 to the admin
    /// token (within [`READY_WITHIN`]). Fails naming `scripts/kube-apiserver` when the binary
    /// or etcd is missing, and with the log's last lines when a process exits or the server is
    /// not ready in time.
    pub fn start() -> io::Result<KubeApi> {
        let start = clock::std_now();
        let apiserver_bin = locate_apiserver(
            std::env::var_os(APISERVER_ENV).map(PathBuf::from),
            std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )?;
        let dir = TempDir::new("kube").keep_on_failure();
        let admin_token = random_token()?;
        let veer_token = random_token()?;
        fs::write(dir.join("tokens.csv"), format!("{admin_token},admin,admin,system:masters\n{veer_token},veer,veer\n"))?;
        // Service account tokens are signed with this key (the server refuses to start without
        // one); ECDSA P-256, which the server accepts as well as RSA.
        let sa = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        fs::write(dir.join("sa.key"), sa.serialize_pem())?;
        fs::write(dir.join("sa.pub"), sa.public_key_pem())?;

        let (etcd, etcd_url) = start_etcd(&dir)?;
        let mut api = KubeApi {
            dir,
            apiserver_bin,
            etcd,
            etcd_url,
            apiserver: None,
            port: 0,
            admin_token,
            veer_token,
            ca_pem: String::new(),
            ready_in: Duration::ZERO,
        };
        for attempt in 1..=PORT_TRIES {
            api.port = free_ports::<1>()?[0];
            match api.start_apiserver() {
                Err(e) if attempt < PORT_TRIES && e.kind() == io::ErrorKind::AddrInUse => continue,
                result => result?,
            }
            break;
        }
        api.ready_in = clock::std_since(start);
        let crt = api.cert_dir().join("apiserver.crt");
        api.ca_pem = fs::read_to_string(&crt).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", crt.display())))?;
        for user in [KubeUser::Admin, KubeUser::Veer] {
            fs::write(api.kubeconfig(user), api.kubeconfig_yaml(user))?;
        }
        Ok(api)
    }

    /// Creates namespace `name` (if missing) with its `default` ServiceAccount, which the
    /// controller manager would add and without which no Pod is admitted there. Pods still need
    /// `automountServiceAccountToken: false`: no controller makes the account's token.
    pub fn create_namespace(&self, name: &str) -> io::Result<()> {
        self.apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {name}}}\n"
        ))
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// The bearer token of `admin` (group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The bearer token of `user`.
    pub fn token(&self, user: KubeUser) -> &str {
        match user {
            KubeUser::Admin => &self.admin_token,
            KubeUser::Veer => &self.veer_token,
        }
    }

    /// What a client trusts: the server's `apiserver.crt`, its self-signed serving certificate
    /// (for 127.0.0.1) followed by the CA that signed it, PEM. Kept across [`KubeApi::restart`].
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig file for `user`: this server, its CA, the user's token.
    pub fn kubeconfig(&self, user: KubeUser) -> PathBuf {
        self.dir.join(format!("kubeconfig-{}.yaml", user.name()))
    }

    /// `kubectl` as `admin`, on this server; run it with [`output`].
    pub fn kubectl<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_as(KubeUser::Admin, args)
    }

    /// `kubectl` as `user`, on this server.
    pub fn kubectl_as<I, S>(&self, user: KubeUser, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("kubectl");
        // Discovery is cached per host:port; a server of an earlier test on the same port may
        // have served other kinds.
        cmd.arg("--kubeconfig").arg(self.kubeconfig(user)).arg("--cache-dir").arg(self.dir.join("kubectl-cache"));
        cmd.args(args);
        cmd
    }

    /// `kubectl apply -f -` of `yaml`, as `admin`; kubectl's output is in the error.
    pub fn apply_yaml(&self, yaml: &str) -> io::Result<()> {
        output_with_stdin(&mut self.kubectl(["apply", "-f", "-"]), yaml.as_bytes()).map(drop)
    }

    /// Stops the API server (SIGKILL: clients see their connections and watches cut) and starts
    /// it again on the same port, certificates and etcd, so every object is still there.
    pub fn restart(&mut self) -> io::Result<()> {
        if let Some(mut old) = self.apiserver.take() {
            old.kill()?;
            old.wait()?;
        }
        self.start_apiserver()
    }

    /// How long the last [`KubeApi::start`] (etcd and the API server) or [`KubeApi::restart`]
    /// (the API server) took until the server answered ready.
    pub fn ready_in(&self) -> Duration {
        self.ready_in
    }

    /// The folder of this server's data, certificates, kubeconfigs and logs (`etcd.log`,
    /// `apiserver.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("apiserver.log")
    }

    fn start_apiserver(&mut self) -> io::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let file = |name: &str| self.dir.join(name);
        let mut cmd = Command::new(&self.apiserver_bin);
        cmd.arg(format!("--etcd-servers={}", self.etcd_url))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.port))
            .arg(format!("--cert-dir={}", self.cert_dir().display()))
            .arg(format!("--token-auth-file={}", file("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", file("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", file("sa.key").display()))
            .arg("--service-cluster-ip-range=10.96.0.0/12")
            .arg("--profiling=false")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let start = clock::std_now();
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}; scripts/kube-apiserver builds it and prints its path", self.apiserver_bin.display()))
        })?;
        self.apiserver = Some(child);
        self.wait_ready()?;
        self.ready_in = clock::std_since(start);
        Ok(())
    }

    /// Polls `/readyz` as admin until it answers 200, failing at once if either process exits.
    fn wait_ready(&mut self) -> io::Result<()> {
        let start = clock::std_now();
        loop {
            if let Some(status) = self.etcd.try_wait()? {
                return Err(exited("etcd", status, &self.dir.join("etcd.log")));
            }
            if let Some(child) = self.apiserver.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.apiserver = None;
                    return Err(exited("kube-apiserver", status, &self.log_path()));
                }
            }
            let last = match self.readyz() {
                Ok(200) => return Ok(()),
                Ok(status) => format!("/readyz answered {status}"),
                Err(e) => format!("/readyz: {e}"),
            };
            let elapsed = clock::std_since(start);
            if elapsed >= READY_WITHIN {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "kube-apiserver on {} not ready within {READY_WITHIN:?} ({last}); {}:\n{}",
                        self.url(),
                        self.log_path().display(),
                        log_tail(&self.log_path())
                    ),
                ));
            }
            std::thread::sleep(POLL_EVERY.min(READY_WITHIN - elapsed));
        }
    }

    /// One `GET /readyz` over TLS, trusting the certificate the server wrote (it exists from the
    /// moment the server has made it, before it listens); the status code.
    fn readyz(&self) -> io::Result<u16> {
        let pem = fs::read(self.cert_dir().join("apiserver.crt"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.map_err(io::Error::other)?).map_err(io::Error::other)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn =
            rustls::ClientConnection::new(Arc::new(config), ServerName::IpAddress(Ipv4Addr::LOCALHOST.into())).map_err(io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.port, self.admin_token
        )?;
        tls.flush()?;
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        loop {
            let n = tls.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a status line"));
            }
            head.extend_from_slice(&buf[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            response.parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // The status line is all this asks; it is parsed before the headers are complete.
            if let Some(code) = response.code {
                return Ok(code);
            }
            if head.len() > 16 * 1024 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "no status line in 16 KiB"));
            }
        }
    }

    fn kubeconfig_yaml(&self, user: KubeUser) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let name = user.name();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: veer-test\n  cluster:\n    server: {url}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: \
             {name}\n  context:\n    cluster: veer-test\n    user: {name}\n    namespace: default\ncurrent-context: {name}\n",
            url = self.url(),
            token = self.token(user),
        )
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

impl fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeApi")
            .field("url", &self.url())
            .field("etcd", &self.etcd_url)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// Runs `cmd` and returns its stdout; when it cannot start or exits non-zero, the error says the
/// command, its status, stderr and stdout.
pub fn output(cmd: &mut Command) -> io::Result<String> {
    output_with_stdin(cmd, &[])
}

/// [`output`] of `cmd` given `input` on its stdin (`kubectl ... -f -`).
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> io::Result<String> {
    let line = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            io::Error::new(e.kind(), format!("{line}: {e} (scripts/kube-apiserver installs kubectl, Debian's kubernetes-client)"))
        }
        _ => io::Error::new(e.kind(), format!("{line}: {e}")),
    })?;
    // Written from a thread: a command that answers before reading all its input must not
    // deadlock against a full pipe.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let written = writer.join().unwrap_or_else(|_| Err(io::Error::other("stdin writer panicked")));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(io::Error::other(format!("{line}: {}\n{stderr}{stdout}", out.status)));
    }
    written.map_err(|e| io::Error::new(e.kind(), format!("{line}: writing its input: {e}")))?;
    Ok(stdout)
}

/// The binary named by [`APISERVER_ENV`], else where `scripts/kube-apiserver` caches it.
fn locate_apiserver(explicit: Option<PathBuf>, xdg_cache: Option<PathBuf>, home: Option<PathBuf>) -> io::Result<PathBuf> {
    let from_env = explicit.is_some();
    let path = explicit.or_else(|| {
        let cache = xdg_cache.or_else(|| home.map(|h| h.join(".cache")))?;
        Some(cache.join("veer/kube-apiserver-1.20.2/kube-apiserver"))
    });
    match path {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no kube-apiserver at {} ({}): run scripts/kube-apiserver, which builds it once per machine \
                 (about 6 minutes) and prints its path, and set {APISERVER_ENV} to that path (.ci/run does both)",
                path.display(),
                if from_env { APISERVER_ENV } else { "its default cache" },
            ),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no kube-apiserver: {APISERVER_ENV}, XDG_CACHE_HOME and HOME are unset; run scripts/kube-apiserver and set {APISERVER_ENV} to the path it prints"),
        )),
    }
}

/// Starts etcd on fresh ports (again on others if one was taken meanwhile) and waits until it
/// says it serves clients; its URL.
fn start_etcd(dir: &Path) -> io::Result<(Child, String)> {
    let log_path = dir.join("etcd.log");
    for attempt in 1..=PORT_TRIES {
        let [client, peer] = free_ports::<2>()?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = File::create(&log_path)?;
        let mut child = Command::new("etcd")
            .arg("--name=veer-test")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=veer-test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("etcd: {e} (scripts/kube-apiserver installs Debian's etcd-server)")))?;
        // Its own log, not a connection to the port, says it is up: a port taken by another
        // test's etcd would answer too.
        let start = clock::std_now();
        loop {
            if let Some(status) = child.try_wait()? {
                let err = exited("etcd", status, &log_path);
                if attempt < PORT_TRIES && err.kind() == io::ErrorKind::AddrInUse {
                    break;
                }
                return Err(err);
            }
            if fs::read_to_string(&log_path)?.contains("ready to serve client requests") {
                return Ok((child, client_url));
            }
            let elapsed = clock::std_since(start);
            if elapsed >= ETCD_WITHIN {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("etcd not serving within {ETCD_WITHIN:?}; {}:\n{}", log_path.display(), log_tail(&log_path)),
                ));
            }
            std::thread::sleep(POLL_EVERY.min(ETCD_WITHIN - elapsed));
        }
    }
    unreachable!("the last try returns")
}

/// `N` distinct ports free on 127.0.0.1 a moment ago.
fn free_ports<const N: usize>() -> io::Result<[u16; N]> {
    let listeners = (0..N).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).collect::<io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// 128 random bits, hex.
fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A process that exited: its status and log tail; `AddrInUse` when its port was taken.
fn exited(what: &str, status: ExitStatus, log: &Path) -> io::Error {
    let tail = log_tail(log);
    let kind = if tail.contains("address already in use") { io::ErrorKind::AddrInUse } else { io::ErrorKind::Other };
    io::Error::new(kind, format!("{what} exited ({status}); {}:\n{tail}", log.display()))
}

fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_script_that_builds_it() {
        let dir = TempDir::new("kube-locate");
        let err = locate_apiserver(Some(dir.join("nothing")), None, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("scripts/kube-apiserver"), "{err}");
        assert!(err.to_string().contains(APISERVER_ENV), "{err}");

        let err = locate_apiserver(None, None, Some(dir.to_path_buf())).unwrap_err();
        assert!(err.to_string().contains("veer/kube-apiserver-1.20.2/kube-apiserver"), "{err}");
        assert!(err.to_string().contains("scripts/kube-apiserver"), "{err}");
    }

    #[test]
    fn the_cache_is_found_where_the_script_puts_it() {
        let dir = TempDir::new("kube-locate");
        let bin = dir.join("xdg/veer/kube-apiserver-1.20.2/kube-apiserver");
        fs::create_dir_all(bin.parent().unwrap()).unwrap();
        fs::write(&bin, "").unwrap();
        assert_eq!(locate_apiserver(None, Some(dir.join("xdg")), Some("/nonexistent".into())).unwrap(), bin);
        let home_bin = dir.join(".cache/veer/kube-apiserver-1.20.2/kube-apiserver");
        fs::create_dir_all(home_bin.parent().unwrap()).unwrap();
        fs::write(&home_bin, "").unwrap();
        assert_eq!(locate_apiserver(None, None, Some(dir.to_path_buf())).unwrap(), home_bin);
    }
}
