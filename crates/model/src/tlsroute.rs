//! Gateway API TLSRoute: the SNI host names a `TLS` listener in `Passthrough` mode routes, unread, to Services.

use crate::decode::Obj;
use crate::diag::Pos;
use crate::gateway::{read_backend_ref, read_parent_refs, BackendRef, ParentRef, Served};
use crate::meta::Meta;

/// A TLSRoute: connections whose ClientHello names one of `hostnames` go to `backends`, with
/// the TLS left to the backends.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsRoute {
    pub meta: Meta,
    pub parents: Vec<ParentRef>,
    /// `spec.hostnames`, lower case, each where it was written. A `*.` prefix matches one or
    /// more labels, as Gateway API's wildcards do.
    pub hostnames: Vec<(String, Pos)>,
    /// The backends of its one rule.
    pub backends: Vec<BackendRef>,
    /// Where veer serves it: the SNI names (exact or `*.` wildcards) the `TLS` Passthrough
    /// listeners it attaches to take, each with the cluster whose Gateway accepts it and the
    /// listener's port. Set by `ManifestSet::build`; empty until then.
    pub served: Vec<Served>,
}

impl TlsRoute {
    /// The SNI names the node of `cluster` serves this route on, each once.
    pub fn hosts_in<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let served = &self.served;
        served
            .iter()
            .enumerate()
            .filter(move |(i, s)| s.cluster == cluster && !served[..*i].iter().any(|e| e.cluster == cluster && e.host == s.host))
            .map(|(_, s)| s.host.as_str())
    }

    /// The route as a one-rule HTTPRoute matching everything: what resolution turns into a
    /// destination, as it does an HTTPRoute rule (same backends, priorities and policies).
    pub fn as_route_rule(&self) -> crate::gateway::HttpRoute {
        crate::gateway::HttpRoute {
            meta: self.meta.clone(),
            parents: self.parents.clone(),
            hostnames: self.hostnames.iter().map(|(h, _)| h.clone()).collect(),
            rules: vec![crate::gateway::RouteRule {
                matches: vec![crate::httpmatch::RouteMatch::any()],
                backends: self.backends.clone(),
                retry: None,
                timeout: None,
                pos: self.meta.pos,
            }],
            served: Vec::new(),
        }
    }
}

pub(crate) fn read_tls_route(spec: &Obj<'_>, meta: Meta) -> Option<TlsRoute> {
    let parents = read_parent_refs(spec, &meta);
    let hostnames: Vec<(String, Pos)> = spec.strings("hostnames").into_iter().map(|(h, pos)| (h.to_ascii_lowercase(), pos)).collect();
    if hostnames.is_empty() {
        // Without a name, every ClientHello (and one with no SNI at all) would match: a
        // passthrough route that takes a whole port is written as `*` on purpose, not by omission.
        spec.ctx().error(spec.pos(), &spec.field_path("hostnames"), "a TLSRoute routes by SNI: list the host names it takes");
    }
    let rules = spec.objs("rules");
    if rules.len() > 1 {
        spec.ctx().error(
            rules[1].pos(),
            rules[1].path(),
            "a TLSRoute's rules have no matches of their own: give one rule, with every backend in it",
        );
    }
    let mut backends = Vec::new();
    for r in &rules {
        backends.extend(r.objs("backendRefs").iter().filter_map(|b| read_backend_ref(b, &meta)));
        r.skip("name");
        r.finish();
    }
    if rules.is_empty() || backends.is_empty() {
        spec.ctx().error(spec.pos(), &spec.field_path("rules"), "a TLSRoute needs one rule with at least one backendRef");
    }
    Some(TlsRoute { meta, parents, hostnames, backends, served: Vec::new() })
}

/// Whether SNI `name` (lower case) is one a route or listener host name `pattern` takes:
/// exactly, or under a `*.` wildcard by one or more labels.
pub fn sni_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.len() > suffix.len() + 1 && name.ends_with(suffix) && name.as_bytes()[name.len() - suffix.len() - 1] == b'.',
        None => pattern == "*" || pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::sni_matches;

    #[test]
    fn sni_wildcards_take_one_or_more_labels_and_never_the_bare_suffix() {
        assert!(sni_matches("shop.example.com", "shop.example.com"));
        assert!(!sni_matches("shop.example.com", "shop.example.com.evil"));
        assert!(sni_matches("*.example.com", "a.example.com"));
        assert!(sni_matches("*.example.com", "a.b.example.com"));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(!sni_matches("*.example.com", "aexample.com"));
        assert!(sni_matches("*", "anything.test"));
    }
}
