//! A test world: its own loopback /16, a manifest folder that removes itself, and the backends it starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::backend::Backends;
use crate::tempdir::TempDir;

/// The first second octet handed out: 127.0.x.y stays free for tests with fixed addresses.
const FIRST_NET: u32 = 100;

/// One test's surroundings: the loopback network 127.{net}.0.0/16, no other world of the process
/// shares, and a folder of manifests a node reads. It knows no node: each node crate's tests
/// start theirs from [`World::dir`] and [`World::ip`] (a node depends on this crate's users,
/// not the other way round).
///
/// Dropping it removes the folder. Declare it first in a test: locals drop in reverse order, so
/// nodes and [`Backends`] started after it are gone before their manifests are.
pub struct World {
    net: u8,
    dir: TempDir,
}

impl World {
    /// A new world on the next free /16 of 127.0.0.0/8. Panics past 154 worlds in one process.
    pub fn new() -> World {
        static NEXT: AtomicU32 = AtomicU32::new(FIRST_NET);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let net = u8::try_from(n).ok().filter(|n| *n < u8::MAX).expect("at most 154 worlds in one test process");
        World { net, dir: TempDir::new(&format!("world-{net}")) }
    }

    /// 127.{net}.{group}.{host}.
    pub fn ip(&self, group: u8, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.net, group, host))
    }

    /// The manifest folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes manifest `name` whole: the text goes to a hidden file renamed over `name`, as
    /// editors and kubectl-style tools do, so a reload never sees half a file.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, self.dir.join(name)).unwrap_or_else(|e| panic!("rename to {name}: {e}"));
    }

    /// Removes manifest `name`.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.join(name)).unwrap_or_else(|e| panic!("remove {name}: {e}"));
    }

    /// Starts `n` backends named `{prefix}-{i}` on 127.{net}.{group}.{i}, i from 1, any port.
    pub async fn backends(&self, prefix: &str, group: u8, n: u8) -> Backends {
        Backends::start((1..=n).map(|i| (format!("{prefix}-{i}"), SocketAddr::new(self.ip(group, i), 0)))).await
    }
}

impl Default for World {
    fn default() -> World {
        World::new()
    }
}
