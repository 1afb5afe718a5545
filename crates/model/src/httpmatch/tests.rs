use super::*;

use proptest::prelude::*;

use crate::gateway::{ordered, Candidate, HttpRoute, RouteRule};
use crate::meta::Meta;

fn re(s: &str) -> Pattern {
    Pattern::new(s).expect("pattern")
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch { path: PathMatch::Prefix(p.into()), ..RouteMatch::any() }
}

fn exact(p: &str) -> RouteMatch {
    RouteMatch { path: PathMatch::Exact(p.into()), ..RouteMatch::any() }
}

fn header(name: &str, value: &str) -> HeaderMatch {
    HeaderMatch { name: name.into(), value: ValueMatch::Exact(value.into()) }
}

fn query(name: &str, value: &str) -> QueryMatch {
    QueryMatch { name: name.into(), value: ValueMatch::Exact(value.into()) }
}

fn req<'a>(method: &'a str, path: &'a str, query: Option<&'a str>, headers: &'a [(&'a str, &'a str)]) -> Plain<'a> {
    Plain { method, path, query, headers }
}

fn route(ns: &str, name: &str, created: Option<&str>, rules: Vec<Vec<RouteMatch>>) -> HttpRoute {
    HttpRoute {
        meta: Meta {
            kind: "HTTPRoute",
            api_version: "gateway.networking.k8s.io/v1".into(),
            name: name.into(),
            namespace: ns.into(),
            labels: Default::default(),
            file: "t.yaml".into(),
            pos: Default::default(),
            created: created.map(Into::into),
        },
        parents: Vec::new(),
        hostnames: vec!["h".into()],
        rules: rules
            .into_iter()
            .map(|matches| RouteRule { matches, backends: Vec::new(), retry: None, timeout: None, pos: Default::default() })
            .collect(),
        served: Vec::new(),
    }
}

/// The (route name, rule) a request reaches.
fn pick(routes: &[&HttpRoute], r: &Plain<'_>) -> Option<(String, usize)> {
    ordered(routes).into_iter().find(|c| c.matched.matches(r)).map(|c| (c.route.meta.name.clone(), c.rule))
}

#[test]
fn paths_exact_and_element_prefix() {
    // The spec's own examples for Exact and PathPrefix.
    for (m, path, hit) in [
        (exact("/abc"), "/abc", true),
        (exact("/abc"), "/abc/", false),
        (exact("/abc"), "/Abc", false),
        (exact("/abc"), "/abcd", false),
        (prefix("/abc"), "/abc", true),
        (prefix("/abc"), "/abc/", true),
        (prefix("/abc"), "/abc/def", true),
        (prefix("/abc"), "/abcd", false),
        (prefix("/abc/"), "/abc", true),
        (prefix("/abc/"), "/abcd", false),
        (prefix("/"), "/anything", true),
        (RouteMatch { path: PathMatch::Regex(re("/v[0-9]+/.*")), ..RouteMatch::any() }, "/v2/x", true),
        (RouteMatch { path: PathMatch::Regex(re("/v[0-9]+/.*")), ..RouteMatch::any() }, "/x/v2/x", false),
    ] {
        assert_eq!(m.matches(&req("GET", path, None, &[])), hit, "{m} vs {path}");
    }
}

#[test]
fn method_headers_and_query_all_must_hold() {
    let m = RouteMatch {
        path: PathMatch::Prefix("/foo".into()),
        method: Some(Method::Post),
        headers: vec![header("version", "v2")],
        query: vec![query("debug", "1")],
    };
    let h: &[(&str, &str)] = &[("Version", "v2")];
    assert!(m.matches(&req("POST", "/foo/x", Some("debug=1"), h)), "header names compare case-insensitively");
    assert!(!m.matches(&req("GET", "/foo/x", Some("debug=1"), h)), "method");
    assert!(!m.matches(&req("POST", "/bar", Some("debug=1"), h)), "path");
    assert!(!m.matches(&req("POST", "/foo", Some("debug=1"), &[("version", "V2")])), "header values are case-sensitive");
    assert!(!m.matches(&req("POST", "/foo", Some("debug=1"), &[])), "an absent header never matches");
    assert!(!m.matches(&req("POST", "/foo", Some("Debug=1"), h)), "query names are case-sensitive");
    assert!(!m.matches(&req("POST", "/foo", None, h)), "an absent query never matches");
}

#[test]
fn repeated_headers_are_joined_and_regex_is_anchored() {
    let m = RouteMatch { headers: vec![header("x-a", "1,2")], ..RouteMatch::any() };
    assert!(m.matches(&req("GET", "/", None, &[("x-a", "1"), ("X-A", "2")])));
    assert!(!m.matches(&req("GET", "/", None, &[("x-a", "1")])));
    let r = RouteMatch {
        headers: vec![HeaderMatch { name: "x-user".into(), value: ValueMatch::Regex(re("[a-z]+-[0-9]+")) }],
        ..RouteMatch::any()
    };
    assert!(r.matches(&req("GET", "/", None, &[("x-user", "ann-12")])));
    assert!(!r.matches(&req("GET", "/", None, &[("x-user", "x ann-12")])), "the whole value must match");
}

#[test]
fn query_first_value_decoded() {
    let m1 = RouteMatch { query: vec![query("q", "a b")], ..RouteMatch::any() };
    assert!(m1.matches(&req("GET", "/", Some("x=1&q=a%20b&q=zzz"), &[])));
    assert!(!m1.matches(&req("GET", "/", Some("q=zzz&q=a%20b"), &[])), "only the first value counts");
    assert!(m1.matches(&req("GET", "/", Some("%71=a%20b"), &[])), "names are decoded too");
    assert!(!m1.matches(&req("GET", "/", Some("q=a+b"), &[])), "'+' is not a space in a query match");
    assert!(!m1.matches(&req("GET", "/", Some("qq=a%20b"), &[])));
}

#[test]
fn precedence_follows_the_spec_order() {
    // Each row: a match that must come before the next, by one criterion.
    let rows = [
        exact("/a"),
        RouteMatch { path: PathMatch::Regex(re("/a.*")), ..RouteMatch::any() },
        prefix("/a/b"),
        RouteMatch { method: Some(Method::Get), ..prefix("/a") },
        RouteMatch { headers: vec![header("x", "1"), header("y", "1")], ..prefix("/a") },
        RouteMatch { headers: vec![header("x", "1")], query: vec![query("q", "1")], ..prefix("/a") },
        RouteMatch { headers: vec![header("x", "1")], ..prefix("/a") },
        RouteMatch { query: vec![query("q", "1")], ..prefix("/a") },
        prefix("/a"),
        prefix("/"),
    ];
    for w in rows.windows(2) {
        assert!(w[0].precedence() < w[1].precedence(), "{} before {}", w[0], w[1]);
    }
}

#[test]
fn ties_go_to_the_oldest_route_then_name_then_rule_order() {
    let old = route("b", "old", Some("2020-01-01T00:00:00Z"), vec![vec![prefix("/")]]);
    let new = route("a", "new", Some("2024-01-01T00:00:00Z"), vec![vec![prefix("/")]]);
    let unknown = route("a", "aaa", None, vec![vec![prefix("/")]]);
    let r = req("GET", "/x", None, &[]);
    assert_eq!(pick(&[&new, &unknown, &old], &r), Some(("old".into(), 0)));
    assert_eq!(pick(&[&unknown, &new], &r), Some(("new".into(), 0)), "a route without a timestamp counts as newest");
    // Alphabetical by "namespace/name" as one string: "a-b/x" sorts before "a/x".
    let a = route("a", "x", None, vec![vec![prefix("/")]]);
    let ab = route("a-b", "x", None, vec![vec![prefix("/")]]);
    assert_eq!(ordered(&[&a, &ab])[0].route.meta.namespace, "a-b");
    // Within a route, the first rule wins a tie.
    let two = route("a", "two", None, vec![vec![prefix("/")], vec![prefix("/")]]);
    assert_eq!(pick(&[&two], &r), Some(("two".into(), 0)));
}

#[test]
fn a_more_specific_match_wins_across_routes_and_rules() {
    // The issue's case: a header rule and a catch-all rule, in either order.
    let catch_all_first =
        route("a", "r", None, vec![vec![prefix("/")], vec![RouteMatch { headers: vec![header("x-canary", "1")], ..prefix("/") }]]);
    assert_eq!(pick(&[&catch_all_first], &req("GET", "/", None, &[("x-canary", "1")])), Some(("r".into(), 1)));
    assert_eq!(pick(&[&catch_all_first], &req("GET", "/", None, &[])), Some(("r".into(), 0)));
    // A longer prefix in a newer route beats a shorter one in an older route.
    let older = route("a", "older", Some("2020-01-01T00:00:00Z"), vec![vec![prefix("/api")]]);
    let newer = route("a", "newer", Some("2024-01-01T00:00:00Z"), vec![vec![prefix("/api/v2")]]);
    assert_eq!(pick(&[&older, &newer], &req("GET", "/api/v2/x", None, &[])), Some(("newer".into(), 0)));
    assert_eq!(pick(&[&older, &newer], &req("GET", "/api/v1", None, &[])), Some(("older".into(), 0)));
    // Several matches in one rule: any of them (OR).
    let or = route("a", "or", None, vec![vec![RouteMatch { headers: vec![header("version", "v2")], ..prefix("/foo") }, prefix("/v2/foo")]]);
    assert!(pick(&[&or], &req("GET", "/foo", None, &[("version", "v2")])).is_some());
    assert!(pick(&[&or], &req("GET", "/v2/foo", None, &[])).is_some());
    assert!(pick(&[&or], &req("GET", "/foo", None, &[])).is_none());
}

#[test]
fn patterns_are_bounded_and_reported() {
    assert!(Pattern::new("(").is_err());
    assert!(Pattern::new(&"a".repeat(MAX_PATTERN + 1)).is_err());
    assert!(Pattern::new("(?:a{100}){100}{100}").is_err(), "a pattern too large to compile is refused, not run");
    let long = Pattern::new(&"a".repeat(MAX_PATTERN + 1)).expect_err("too long");
    assert_eq!(long.to_string(), format!("the expression is {} bytes long; at most {MAX_PATTERN}", MAX_PATTERN + 1));
    let syntax = Pattern::new("(").expect_err("syntax").to_string();
    assert!(!syntax.is_empty() && !syntax.contains('\n') && !syntax.starts_with("error: "), "one line of what is wrong: {syntax:?}");
    assert_eq!(re("a+").source(), "a+");
    assert_eq!(re("a+"), re("a+"));
}

#[test]
fn methods_round_trip() {
    for n in Method::NAMES {
        assert_eq!(Method::parse(n).map(Method::as_str), Some(n));
    }
    assert_eq!(Method::parse("get"), None, "methods are upper case");
}

proptest! {
    /// Adding a condition never widens a match: whatever matches with it matched without it.
    #[test]
    fn conditions_only_narrow(
        path in "/[ab/]{0,6}",
        qv in proptest::option::of("[ab%2]{0,4}"),
        hv in proptest::option::of("[ab]{0,3}"),
        method in 0usize..9,
        with_method in any::<bool>(),
    ) {
        let headers_owned: Vec<(&str, &str)> = hv.as_deref().map(|v| vec![("x-h", v)]).unwrap_or_default();
        let q = qv.as_ref().map(|v| format!("q={v}"));
        let r = req(Method::NAMES[method], &path, q.as_deref(), &headers_owned);
        let base = prefix("/a");
        let narrowed = RouteMatch {
            method: with_method.then_some(Method::Get),
            headers: vec![header("x-h", "ab")],
            query: vec![query("q", "a")],
            ..base.clone()
        };
        prop_assert!(!narrowed.matches(&r) || base.matches(&r));
        // And the narrower match is tried first.
        prop_assert!(narrowed.precedence() < base.precedence());
    }

    /// A prefix match is the element-wise prefix relation: `/p` matches exactly `/p` and `/p/...`.
    #[test]
    fn prefix_is_element_wise(p in "(/[ab]{1,2}){1,3}", rest in "[ab/]{0,4}") {
        let path = format!("{p}{rest}");
        let expected = rest.is_empty() || rest.starts_with('/');
        prop_assert_eq!(prefix(&p).matches(&req("GET", &path, None, &[])), expected);
    }
}

/// The spec's criteria written out one by one, for the property below: `Less` when `a` is
/// tried before `b`.
fn spec_order(a: &Candidate<'_>, b: &Candidate<'_>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let kind = |m: &RouteMatch| match m.path {
        PathMatch::Exact(_) => 0,
        PathMatch::Regex(_) => 1,
        PathMatch::Prefix(_) => 2,
    };
    let (ma, mb) = (a.matched, b.matched);
    let steps = [
        kind(ma).cmp(&kind(mb)),
        mb.path.value().len().cmp(&ma.path.value().len()),
        mb.method.is_some().cmp(&ma.method.is_some()),
        mb.headers.len().cmp(&ma.headers.len()),
        mb.query.len().cmp(&ma.query.len()),
        a.route.meta.created.is_none().cmp(&b.route.meta.created.is_none()),
        a.route.meta.created.cmp(&b.route.meta.created),
        format!("{}/{}", a.route.meta.namespace, a.route.meta.name).cmp(&format!("{}/{}", b.route.meta.namespace, b.route.meta.name)),
        a.rule.cmp(&b.rule),
    ];
    steps.into_iter().find(|o| *o != Equal).unwrap_or(Equal)
}

fn arb_match() -> impl Strategy<Value = RouteMatch> {
    (0u8..3, prop::sample::select(vec!["/", "/a", "/a/b", "/b"]), any::<bool>(), 0usize..3, 0usize..2).prop_map(
        |(kind, p, method, nh, nq)| RouteMatch {
            path: match kind {
                0 => PathMatch::Exact(p.into()),
                1 => PathMatch::Regex(re(&format!("{p}.*"))),
                _ => PathMatch::Prefix(p.into()),
            },
            method: method.then_some(Method::Get),
            headers: ["x-a", "x-b"].iter().take(nh).map(|n| header(n, "1")).collect(),
            query: ["q"].iter().take(nq).map(|n| query(n, "1")).collect(),
        },
    )
}

proptest! {
    /// The first match in `ordered` that holds is the one the spec's criteria, applied one by
    /// one, rank first among all that hold.
    #[test]
    fn the_first_match_that_holds_is_the_one_the_spec_ranks_first(
        routes in prop::collection::vec((0u8..2, 0u8..3, proptest::option::of(0u8..3), prop::collection::vec(prop::collection::vec(arb_match(), 1..3), 1..3)), 1..4),
        path in prop::sample::select(vec!["/", "/a", "/a/b", "/a/b/c", "/b", "/c"]),
        method in prop::sample::select(vec!["GET", "POST"]),
        xa in any::<bool>(), xb in any::<bool>(), q in any::<bool>(),
    ) {
        let built: Vec<HttpRoute> = routes
            .into_iter()
            .enumerate()
            .map(|(i, (ns, name, created, rules))| {
                let created = created.map(|d| format!("2024-01-0{}T00:00:00Z", d + 1));
                route(&format!("ns{ns}"), &format!("r{name}-{i}"), created.as_deref(), rules)
            })
            .collect();
        let refs: Vec<&HttpRoute> = built.iter().collect();
        let mut headers = Vec::new();
        if xa { headers.push(("X-A", "1")); }
        if xb { headers.push(("x-b", "1")); }
        let r = req(method, path, q.then_some("q=1"), &headers);
        let all = ordered(&refs);
        let first = all.iter().find(|c| c.matched.matches(&r));
        let best = all.iter().filter(|c| c.matched.matches(&r)).min_by(|a, b| spec_order(a, b));
        match (first, best) {
            (Some(f), Some(b)) => prop_assert_eq!(spec_order(f, b), std::cmp::Ordering::Equal, "{} vs {}", f.matched, b.matched),
            (None, None) => {}
            _ => prop_assert!(false, "one found a match, the other none"),
        }
    }
}
