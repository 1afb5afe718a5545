//! TLS termination on a client socket: the certificates of the HTTPS listeners it serves, chosen by SNI, in one immutable rustls config per snapshot.

use std::sync::{Arc, OnceLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use veer_model::set::TlsListener;

use crate::FastMap;

/// ALPN offered to clients: HTTP/2 first, HTTP/1.1 for the rest (h2c stays on plain sockets).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS side of one client socket: its rustls config and the certificates behind it.
/// Built with each snapshot from the manifests; a reload's new snapshot has a new one, used by
/// the handshakes that start after it, while connections already up keep theirs.
pub struct SocketTls {
    pub config: Arc<ServerConfig>,
    certs: Arc<Certs>,
    /// What it was built from: a reload that gives a socket the same listeners and
    /// certificates keeps this config (and its session cache) rather than building another.
    from: Vec<TlsListener>,
}

impl std::fmt::Debug for SocketTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTls").field("certificates", &self.certs.keys.len()).finish_non_exhaustive()
    }
}

/// Why a socket's TLS config could not be made.
#[derive(Debug)]
pub struct TlsConfigError(rustls::Error);

impl std::fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rustls refused the listener configuration: {}", self.0)
    }
}

impl std::error::Error for TlsConfigError {}

/// The certificates of a socket's listeners, indexed by the names a client may ask for.
#[derive(Debug, Default)]
struct Certs {
    keys: Vec<Arc<CertifiedKey>>,
    /// A certificate's exact DNS name → its key (the first listener, and the first
    /// certificate, naming it wins).
    exact: FastMap<Box<str>, usize>,
    /// `*.rest` names, by `rest`.
    wildcard: FastMap<Box<str>, usize>,
    /// Each listener's hostname (`None`: any) and its default certificate, in manifest order.
    listeners: Vec<(Option<Box<str>>, usize)>,
    /// For a client that sends no SNI: the default of the first listener without a hostname,
    /// else of the first listener.
    no_sni: usize,
}

/// A TLS connection's choice: which certificate its handshake presented, so that its requests
/// can be held to the names that certificate stands for.
#[derive(Clone, Debug)]
pub struct Served {
    certs: Arc<Certs>,
    chosen: usize,
}

impl SocketTls {
    /// The config for a socket serving `listeners` (the HTTPS listeners of its ports, each with
    /// at least one checked certificate): TLS 1.2 and 1.3 with rustls' safe defaults on ring,
    /// ALPN `h2` and `http/1.1`, and session tickets that outlive reloads.
    pub fn build(listeners: &[&TlsListener]) -> Result<SocketTls, TlsConfigError> {
        let mut certs = Certs::default();
        let mut seen: FastMap<&[u8], usize> = FastMap::default();
        for l in listeners {
            let mut first = None;
            for c in &l.certs {
                let leaf = c.certified.cert.first().map_or(&[][..], |d| d.as_ref());
                let i = *seen.entry(leaf).or_insert_with(|| {
                    certs.keys.push(c.certified.clone());
                    certs.keys.len() - 1
                });
                first.get_or_insert(i);
                for name in &c.names {
                    let (map, key) = match name.strip_prefix("*.") {
                        Some(rest) => (&mut certs.wildcard, rest),
                        None => (&mut certs.exact, name.as_str()),
                    };
                    map.entry(key.into()).or_insert(i);
                }
            }
            if let Some(first) = first {
                certs.listeners.push((l.hostname.as_deref().map(Box::from), first));
            }
        }
        certs.no_sni = certs.listeners.iter().find(|(h, _)| h.is_none()).or(certs.listeners.first()).map_or(0, |(_, i)| *i);
        let certs = Arc::new(certs);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(certs.clone())));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        if let Some(t) = ticketer() {
            config.ticketer = t;
        }
        Ok(SocketTls { config: Arc::new(config), certs, from: listeners.iter().map(|l| (*l).clone()).collect() })
    }

    /// Whether this config was built from exactly `listeners` (same names, same chains).
    pub fn built_from(&self, listeners: &[&TlsListener]) -> bool {
        self.from.len() == listeners.len() && self.from.iter().zip(listeners).all(|(a, b)| a == *b)
    }

    /// What a finished handshake presented, from the SNI it was asked for. `None` when the
    /// socket has one certificate: every name it serves is then on the one this connection
    /// presented, so none of its requests can be misdirected and none needs the check.
    pub fn served(&self, sni: Option<&str>) -> Option<Served> {
        (self.certs.keys.len() > 1)
            .then(|| Served { certs: self.certs.clone(), chosen: self.certs.choose(sni).unwrap_or(self.certs.no_sni) })
    }
}

impl Served {
    /// Whether a request for `host` (Host or :authority, port allowed) belongs on another
    /// listener's certificate than the one this connection presented: then it must be sent
    /// again on a connection of its own (421, RFC 9110 §15.5.20), since this handshake never
    /// proved that name. A host no certificate or listener here names is routing's to refuse.
    pub fn misdirected(&self, host: &str) -> bool {
        let name = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let name = name.trim_end_matches('.');
        self.certs.named(name).is_some_and(|i| i != self.chosen)
    }
}

/// The process's session ticket keys (rotated by rustls every 6 hours), shared by every config
/// so that a reload does not force every returning client into a full handshake. `None` if
/// the system's randomness failed: then resumption is by session ID only.
fn ticketer() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static TICKETER: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    TICKETER.get_or_init(|| rustls::crypto::ring::Ticketer::new().ok()).clone()
}

impl Certs {
    /// The certificate for `name`, by what names it: an exact certificate name, then a
    /// wildcard one, then the listener whose hostname covers it. `None`: nothing here names it.
    fn named(&self, name: &str) -> Option<usize> {
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        if let Some(&i) =
            name.split_once('.').and_then(|(label, rest)| (!label.is_empty()).then_some(rest)).and_then(|rest| self.wildcard.get(rest))
        {
            return Some(i);
        }
        self.listeners.iter().find(|(h, _)| h.as_deref().is_some_and(|h| hostname_covers(h, name))).map(|(_, i)| *i)
    }

    /// The certificate a handshake asking for `sni` gets: the one naming it, else the default of
    /// a listener without a hostname (which takes every name). `None`: the handshake fails, as
    /// no listener here answers that name. No SNI: [`Certs::no_sni`].
    fn choose(&self, sni: Option<&str>) -> Option<usize> {
        match sni {
            None => Some(self.no_sni),
            Some(name) => self.named(name).or_else(|| self.listeners.iter().find(|(h, _)| h.is_none()).map(|(_, i)| *i)),
        }
    }
}

/// Gateway API's listener hostname match: exact, or `*.rest` covering any name below `rest`.
fn hostname_covers(hostname: &str, name: &str) -> bool {
    match hostname.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => hostname == name,
    }
}

/// Chooses by SNI for rustls, on every handshake: two hash lookups at most.
#[derive(Debug)]
struct Resolver(Arc<Certs>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.choose(hello.server_name()).map(|i| self.0.keys[i].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> veer_model::tls::ServingCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap().self_signed(&key).unwrap();
        veer_model::tls::serving_cert(c.pem().as_bytes(), key.serialize_pem().as_bytes(), rustls_pki_types::UnixTime::now()).unwrap()
    }

    fn listener(hostname: Option<&str>, certs: Vec<veer_model::tls::ServingCert>) -> TlsListener {
        TlsListener {
            cluster: "c".into(),
            gateway: "default/gw".into(),
            listener: "https".into(),
            port: 443,
            hostname: hostname.map(str::to_string),
            certs,
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_listener_default() {
        let a = listener(Some("*.example.com"), vec![cert(&["a.example.com"]), cert(&["*.example.com"])]);
        let b = listener(Some("b.example.net"), vec![cert(&["b.example.net"])]);
        let tls = SocketTls::build(&[&a, &b]).unwrap();
        let c = &tls.certs;
        assert_eq!(c.choose(Some("a.example.com")), Some(0));
        assert_eq!(c.choose(Some("A.Example.com")), Some(0));
        assert_eq!(c.choose(Some("z.example.com")), Some(1));
        // Below the wildcard's one label: the listener's hostname takes it, with its default.
        assert_eq!(c.choose(Some("x.y.example.com")), Some(0));
        assert_eq!(c.choose(Some("b.example.net")), Some(2));
        // No listener answers that name, and none takes every name: no handshake.
        assert_eq!(c.choose(Some("other.org")), None);
        assert_eq!(c.choose(None), Some(0));
    }

    #[test]
    fn a_host_on_another_certificate_is_misdirected() {
        let a = listener(Some("a.example.com"), vec![cert(&["a.example.com"])]);
        let b = listener(Some("b.example.com"), vec![cert(&["b.example.com", "c.example.com"])]);
        let tls = SocketTls::build(&[&a, &b]).unwrap();
        let on_b = tls.served(Some("b.example.com")).unwrap();
        assert!(on_b.misdirected("a.example.com"));
        assert!(on_b.misdirected("a.example.com:8443"));
        assert!(!on_b.misdirected("b.example.com:8443"));
        // The same certificate names it: the handshake proved it.
        assert!(!on_b.misdirected("c.example.com"));
        // Nothing here names it: routing answers (404).
        assert!(!on_b.misdirected("elsewhere.org"));
        assert!(!on_b.misdirected("127.0.0.1:8443"));
    }

    #[test]
    fn a_socket_with_one_certificate_has_no_request_to_check() {
        let shared = cert(&["a.example.com", "b.example.com"]);
        let a = listener(Some("a.example.com"), vec![shared.clone()]);
        let b = listener(Some("b.example.com"), vec![shared]);
        // Two listeners, one certificate: whichever name a request carries, it is the one
        // this connection presented.
        let tls = SocketTls::build(&[&a, &b]).unwrap();
        assert!(tls.served(Some("a.example.com")).is_none());
        assert!(tls.served(None).is_none());
        let c = listener(Some("c.example.com"), vec![cert(&["c.example.com"])]);
        let tls = SocketTls::build(&[&a, &c]).unwrap();
        assert!(tls.served(Some("a.example.com")).is_some_and(|s| s.misdirected("c.example.com")));
    }
}
