//! The etcd v3 calls veer's regional zone leases need, and the node's lease loop on them
//! ([`zones`]): lease grant, keep-alive and revoke; a key taken only while absent
//! (`create_revision == 0`), bound to a lease; reads that carry revisions; and a prefix watch.
//!
//! A thin layer over `etcd-client` (tonic): it names each failure by the call it ended, turns a
//! keep-alive answered with TTL 0 into [`EtcdError::LeaseExpired`] instead of a silent success,
//! and bounds every call in time. The calls read no clock: a caller that must know when its lease can
//! have expired notes the moment it *sent* a renewal and adds the TTL this returns (the server
//! counts from the moment it received it, which is later), as `veer_dns::takeover` does.

use std::fmt;
use std::time::Duration;

mod clock;
pub mod zones;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};

/// An etcd lease's ID, as the server numbers it.
pub type LeaseId = i64;

/// Why an etcd call failed.
#[derive(Debug)]
pub enum EtcdError {
    /// No endpoint given, or one that is not a URL.
    Config(String),
    /// The call `op` failed: the server refused it, or no member answered.
    Call { op: &'static str, source: etcd_client::Error },
    /// The call `op` had no answer within the configured timeout.
    Timeout { op: &'static str, after: Duration },
    /// The server answered a renewal with TTL 0: the lease is gone, with every key bound to it.
    LeaseExpired { lease: LeaseId },
    /// The keep-alive or watch stream ended (the member went away); open a new one.
    StreamClosed { op: &'static str },
    /// The server cancelled a watch (for instance, its start revision was compacted).
    WatchCancelled { reason: String },
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Config(m) => write!(f, "etcd: {m}"),
            EtcdError::Call { op, source } => write!(f, "etcd {op}: {source}"),
            EtcdError::Timeout { op, after } => write!(f, "etcd {op}: no answer within {after:?}"),
            EtcdError::LeaseExpired { lease } => write!(f, "etcd lease {lease:x} expired"),
            EtcdError::StreamClosed { op } => write!(f, "etcd {op}: the stream ended"),
            EtcdError::WatchCancelled { reason } => write!(f, "etcd watch cancelled by the server: {reason}"),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EtcdError::Call { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A key as etcd holds it, with the revisions that make it a fencing token: `create_revision`
/// is new at every (re)creation, so it grows with every hand-over of a writer key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is bound to; 0 for none.
    pub lease: LeaseId,
}

/// What a read saw: the store's revision at the read, and the key if present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub revision: i64,
    pub entry: Option<Entry>,
}

/// The outcome of [`Etcd::take_if_absent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Take {
    /// The key was absent and is now ours, created at `revision` (its `create_revision`).
    Taken { revision: i64 },
    /// Someone holds it: the key as it stands.
    Held(Entry),
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    /// The TTL the server granted, which may exceed the one asked for.
    pub ttl: Duration,
}

/// Who answered a status call, and whom it follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub member: u64,
    pub leader: u64,
}

/// One change a prefix watch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put(Entry),
    /// The key was deleted (or its lease expired) at `revision`.
    Delete {
        key: Vec<u8>,
        revision: i64,
    },
}

/// A client on a set of members; cheap to clone (one gRPC channel, balanced over the members).
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    timeout: Duration,
}

/// A lease's keep-alive stream.
pub struct KeepAlive {
    lease: LeaseId,
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
    timeout: Duration,
}

/// A prefix watch.
pub struct Watch {
    stream: etcd_client::WatchStream,
    timeout: Option<Duration>,
}

// === impl Etcd ===

impl Etcd {
    /// Connects to `endpoints` (`http://host:port`); every later call gives up after `timeout`.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Etcd, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoint".into()));
        }
        let options = ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout).with_keep_alive(timeout, timeout);
        let client = bounded("connect", timeout, Client::connect(endpoints, Some(options))).await?;
        Ok(Etcd { client, timeout })
    }

    /// Grants a lease of `ttl` (whole seconds, at least one).
    pub async fn grant(&mut self, ttl: Duration) -> Result<Lease, EtcdError> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let r = bounded("lease grant", self.timeout, self.client.lease_grant(secs, None)).await?;
        if !r.error().is_empty() {
            return Err(EtcdError::Config(format!("lease grant refused: {}", r.error())));
        }
        Ok(Lease { id: r.id(), ttl: secs_of(r.ttl()) })
    }

    /// Opens the keep-alive stream of `lease`; [`KeepAlive::renew`] renews it once.
    pub async fn keep_alive(&mut self, lease: LeaseId) -> Result<KeepAlive, EtcdError> {
        let (keeper, stream) = bounded("lease keep-alive", self.timeout, self.client.lease_keep_alive(lease)).await?;
        Ok(KeepAlive { lease, keeper, stream, timeout: self.timeout })
    }

    /// Revokes `lease`: every key bound to it is deleted at once.
    pub async fn revoke(&mut self, lease: LeaseId) -> Result<(), EtcdError> {
        bounded("lease revoke", self.timeout, self.client.lease_revoke(lease)).await?;
        Ok(())
    }

    /// Creates `key` = `value` bound to `lease` only if the key is absent, in one transaction;
    /// else returns the key as it stands (in the same transaction, so the answer is one state).
    pub async fn take_if_absent(&mut self, key: &[u8], value: &[u8], lease: LeaseId) -> Result<Take, EtcdError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let r = bounded("take", self.timeout, self.client.txn(txn)).await?;
        let revision = r.header().map_or(0, |h| h.revision());
        if r.succeeded() {
            return Ok(Take::Taken { revision });
        }
        let held = r.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(entry),
            _ => None,
        });
        match held {
            Some(e) => Ok(Take::Held(e)),
            // Deleted between the compare and the read cannot happen within one transaction;
            // an empty answer means a server that broke the protocol.
            None => Err(EtcdError::Config("take: the transaction failed its compare yet read no key".into())),
        }
    }

    /// Reads `key` with the store's revision at the read.
    pub async fn get(&mut self, key: &[u8]) -> Result<Read, EtcdError> {
        let r = bounded("get", self.timeout, self.client.get(key, None)).await?;
        let revision = r.header().map_or(0, |h| h.revision());
        Ok(Read { revision, entry: r.kvs().first().map(entry) })
    }

    /// Every key under `prefix` with the store's revision at the read.
    pub async fn get_prefix(&mut self, prefix: &[u8]) -> Result<(i64, Vec<Entry>), EtcdError> {
        let r = bounded("get prefix", self.timeout, self.client.get(prefix, Some(GetOptions::new().with_prefix()))).await?;
        Ok((r.header().map_or(0, |h| h.revision()), r.kvs().iter().map(entry).collect()))
    }

    /// Watches every key under `prefix`, from `start_revision` (to miss nothing after a
    /// [`Etcd::get_prefix`], pass its revision + 1) or from now.
    pub async fn watch_prefix(&mut self, prefix: &[u8], start_revision: Option<i64>) -> Result<Watch, EtcdError> {
        let mut options = WatchOptions::new().with_prefix();
        if let Some(r) = start_revision {
            options = options.with_start_revision(r);
        }
        let stream = bounded("watch", self.timeout, self.client.watch(prefix, Some(options))).await?;
        Ok(Watch { stream, timeout: None })
    }

    /// The answering member's ID and the leader's, as that member sees it.
    pub async fn status(&mut self) -> Result<Status, EtcdError> {
        let r = bounded("status", self.timeout, self.client.status()).await?;
        Ok(Status { member: r.header().map_or(0, |h| h.member_id()), leader: r.leader() })
    }
}

// === impl KeepAlive ===

impl KeepAlive {
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Renews the lease once and returns the TTL the server granted, counted from when it
    /// received the request. A TTL of 0 (the lease expired or was revoked) is an error.
    pub async fn renew(&mut self) -> Result<Duration, EtcdError> {
        bounded("lease keep-alive", self.timeout, self.keeper.keep_alive()).await?;
        let answer = bounded("lease keep-alive", self.timeout, self.stream.message()).await?;
        match answer {
            None => Err(EtcdError::StreamClosed { op: "lease keep-alive" }),
            Some(r) if r.ttl() <= 0 => Err(EtcdError::LeaseExpired { lease: self.lease }),
            Some(r) => Ok(secs_of(r.ttl())),
        }
    }
}

// === impl Watch ===

impl Watch {
    /// Bounds each wait for the next batch (none by default: a watch may be quiet for long).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The next batch of changes, in revision order. Progress notifications and the
    /// acknowledgement of the watch's creation carry no change and are skipped.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, EtcdError> {
        loop {
            let message = match self.timeout {
                Some(t) => bounded("watch", t, self.stream.message()).await?,
                None => self.stream.message().await.map_err(|source| EtcdError::Call { op: "watch", source })?,
            };
            let Some(r) = message else { return Err(EtcdError::StreamClosed { op: "watch" }) };
            if r.canceled() {
                return Err(EtcdError::WatchCancelled { reason: r.cancel_reason().to_string() });
            }
            let events: Vec<WatchEvent> = r
                .events()
                .iter()
                .filter_map(|ev| {
                    let kv = ev.kv()?;
                    Some(match ev.event_type() {
                        EventType::Put => WatchEvent::Put(entry(kv)),
                        EventType::Delete => WatchEvent::Delete { key: kv.key().to_vec(), revision: kv.mod_revision() },
                    })
                })
                .collect();
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}

fn entry(kv: &etcd_client::KeyValue) -> Entry {
    Entry {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

fn secs_of(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

async fn bounded<T>(
    op: &'static str,
    after: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(after, call).await {
        Ok(r) => r.map_err(|source| EtcdError::Call { op, source }),
        Err(_) => Err(EtcdError::Timeout { op, after }),
    }
}
