//! The typed names that key health, ejections, holds and metrics: a cluster, a destination, an endpoint.
//!
//! Each is cheap to clone (a reference count), so the request path, the control loop and the
//! events can share one without copying text, and the compiler keeps a cluster's name from being
//! passed where an endpoint's is meant.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::topology::Address;

/// A cluster's name as the manifests give it (`veer.io Cluster`, a peer's catalog, `--cluster`).
/// It hashes and compares as its text, so a map keyed by it can be read with a `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClusterName(Arc<str>);

/// A destination's name, unique among those of one manifest set: `host:port`, or for a route rule
/// its host and first path (see `veer_model::resolve::DestinationKey::name`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DestinationName(Arc<str>);

/// One endpoint as health, outlier detection and holds know it: the address traffic goes to.
/// Two endpoints of different destinations at one address are one key: an address that refuses
/// connections refuses them whichever destination sent the try.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey(Arc<Address>);

macro_rules! text_name {
    ($name:ident) => {
        impl $name {
            pub fn new(name: &str) -> $name {
                $name(Arc::from(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(name: &str) -> $name {
                $name::new(name)
            }
        }

        impl From<String> for $name {
            fn from(name: String) -> $name {
                $name(Arc::from(name))
            }
        }

        impl From<&String> for $name {
            fn from(name: &String) -> $name {
                $name::new(name)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                *self.0 == **other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}

text_name!(ClusterName);
text_name!(DestinationName);

// === impl EndpointKey ===

impl EndpointKey {
    pub fn new(address: Address) -> EndpointKey {
        EndpointKey(Arc::new(address))
    }

    pub fn address(&self) -> &Address {
        &self.0
    }

    /// The socket address, when the endpoint has one rather than a DNS name.
    pub fn socket(&self) -> Option<std::net::SocketAddr> {
        match *self.0 {
            Address::Socket(s) => Some(s),
            Address::Dns { .. } => None,
        }
    }
}

impl From<Address> for EndpointKey {
    fn from(address: Address) -> EndpointKey {
        EndpointKey::new(address)
    }
}

impl From<std::net::SocketAddr> for EndpointKey {
    fn from(socket: std::net::SocketAddr) -> EndpointKey {
        EndpointKey::new(Address::Socket(socket))
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointKey({})", self.0)
    }
}

impl std::str::FromStr for EndpointKey {
    type Err = std::net::AddrParseError;

    /// What a peer's catalog or an east-west header names: `ip:port`. A `host:port` with a DNS
    /// name is not an endpoint a peer can announce, so it is refused here.
    fn from_str(s: &str) -> Result<EndpointKey, Self::Err> {
        s.parse::<std::net::SocketAddr>().map(EndpointKey::from)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_cluster_map_is_read_with_text() {
        let mut m = HashMap::new();
        m.insert(ClusterName::new("west"), 1);
        assert_eq!(m.get("west"), Some(&1));
        assert_eq!(m.get("east"), None);
    }

    #[test]
    fn endpoint_keys_compare_by_address() {
        let a: EndpointKey = "127.0.0.1:80".parse().unwrap();
        let b = EndpointKey::new(Address::Socket("127.0.0.1:80".parse().unwrap()));
        assert_eq!(a, b);
        assert_ne!(a, EndpointKey::new(Address::Dns { host: "127.0.0.1".into(), port: 80 }));
        assert_eq!(a.to_string(), "127.0.0.1:80");
        assert!("backend:80".parse::<EndpointKey>().is_err());
    }
}
