//! The typed names that key health, ejections, holds and metrics: a cluster's and a destination's (an endpoint's key is `topology::EndpointKey`).
//!
//! Each is cheap to clone (a reference count), so the request path, the control loop and the
//! events can share one without copying text, and the compiler keeps a cluster's name from being
//! passed where an endpoint's is meant.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// A cluster's name as the manifests give it (`veer.io Cluster`, a peer's catalog, `--cluster`).
/// It hashes and compares as its text, so a map keyed by it can be read with a `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClusterName(Arc<str>);

/// A destination's name, unique among those of one manifest set: `host:port`, or for a route rule
/// its host and first path (see `veer_model::resolve::DestinationKey::name`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DestinationName(Arc<str>);

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
}
