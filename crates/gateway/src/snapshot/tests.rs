use super::*;
use veer_model::inventory::Inventory;
use veer_model::set::ManifestSet;

const WORLD: &str = "
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: west}
spec: {locality: {region: us-west, zone: a}}
---
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: east}
spec: {locality: {region: us-east, zone: a}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo, labels: {topology.istio.io/cluster: west}}
spec: {selector: {app: echo}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo, labels: {topology.istio.io/cluster: east}}
spec: {selector: {app: echo}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: w1, namespace: demo, labels: {topology.istio.io/cluster: west}}
spec: {address: 127.0.0.1, labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: e1, namespace: demo, labels: {topology.istio.io/cluster: east}}
spec: {address: 127.0.0.2, labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: e2, namespace: demo, labels: {topology.istio.io/cluster: east}}
spec: {address: 127.0.0.3, labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo.demo.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 100}
";

/// A request as a client sends it: `GET path`, nothing else.
fn get(path: &str) -> http::Request<()> {
    http::Request::get(path).body(()).expect("request")
}

fn snapshot(unhealthy: &Unhealthy) -> Snapshot {
    let set = veer_model::from_sources(&[("world.yaml".into(), WORLD.into())]).unwrap_or_else(|r| panic!("{r}")).into_set();
    Snapshot::build(View::new(&set, &Inventory::from_manifests(&set)), "west", &Labels::new(), unhealthy, 1).expect("snapshot")
}

#[test]
fn routes_by_host_port_and_short_names() {
    let s = snapshot(&Unhealthy::new());
    for host in ["echo.demo.svc.cluster.local", "echo.demo.svc.cluster.local:80", "echo.demo", "ECHO.demo.svc"] {
        assert_eq!(s.route(GATEWAY, host, &get("/")).ok().map(|d| &*d.key), Some("echo.demo.svc.cluster.local:80"), "{host}");
    }
    assert!(s.route(GATEWAY, "echo.demo.svc.cluster.local:81", &get("/")).is_err());
    assert!(s.route(GATEWAY, "example.com", &get("/")).is_err());
}

#[test]
fn first_attempt_follows_the_table_and_retries_leave_the_tried_priority() {
    let s = snapshot(&Unhealthy::new());
    let d = s.route(GATEWAY, "echo.demo", &get("/")).expect("route");
    assert_eq!(d.table.load.healthy, vec![100, 0]);
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..200 {
        let ep = d.pick(&Tried::default(), rng.u64(..), rng.f64()).expect("pick");
        assert_eq!(&*d.upstreams[ep].cluster, "west");
    }
    // After the west endpoint failed, every retry goes to east, spread over both endpoints.
    let west = d.upstreams.iter().position(|u| &*u.cluster == "west").expect("west endpoint");
    let mut tried = Tried::default();
    tried.record(west, d.upstreams[west].priority);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let ep = d.pick(&tried, rng.u64(..), rng.f64()).expect("retry pick");
        assert_eq!(&*d.upstreams[ep].cluster, "east");
        seen.insert(ep);
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn unhealthy_endpoints_get_no_first_attempts() {
    let mut down = Unhealthy::new();
    down.insert("echo.demo.svc.cluster.local:80".into(), vec![ep("127.0.0.1:80")]);
    let s = snapshot(&down);
    let d = s.route(GATEWAY, "echo.demo", &get("/")).expect("route");
    assert_eq!(d.table.load.healthy, vec![0, 100]);
    assert_eq!(d.active_priority(), 1);
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..100 {
        let ep = d.pick(&Tried::default(), rng.u64(..), rng.f64()).expect("pick");
        assert_eq!(&*d.upstreams[ep].cluster, "east");
    }
}

fn set_of(text: &str) -> ManifestSet {
    veer_model::from_sources(&[("world.yaml".into(), text.into())]).unwrap_or_else(|r| panic!("{r}")).into_set()
}

fn reload(previous: &Snapshot, text: &str, unhealthy: &Unhealthy) -> Snapshot {
    let set = set_of(text);
    let inventory = Inventory::from_manifests(&set);
    Snapshot::build_after(
        previous,
        View::new(&set, &inventory),
        "west",
        &Labels::new(),
        unhealthy,
        &Warming::new(),
        Arc::default(),
        previous.generation + 1,
    )
    .expect("snapshot")
}

const ECHO: &str = "echo.demo.svc.cluster.local:80";

#[test]
fn a_destination_keeps_its_retry_budget_across_health_updates_and_reloads() {
    let first = snapshot(&Unhealthy::new());
    let budget = &first.route(GATEWAY, "echo.demo", &get("/")).expect("route").budget;

    let mut down = Unhealthy::new();
    down.insert(ECHO.into(), vec![ep("127.0.0.1:80")]);
    let changed = std::collections::HashSet::from([ECHO.into()]);
    let health_update = first.with_health(&down, &Warming::new(), &changed, 2);
    assert!(
        Arc::ptr_eq(budget, &health_update.route(GATEWAY, "echo.demo", &get("/")).expect("route").budget),
        "a health update keeps the budget"
    );

    let fresh = snapshot(&Unhealthy::new());
    assert!(
        !Arc::ptr_eq(budget, &fresh.route(GATEWAY, "echo.demo", &get("/")).expect("route").budget),
        "a fresh build starts with fresh budgets"
    );
    // The reload moves the destination (an endpoint leaves), so its state is built anew.
    let reloaded = reload(&health_update, &WORLD.replace("address: 127.0.0.3", "address: 127.0.0.4"), &Unhealthy::new());
    let echo = reloaded.route(GATEWAY, "echo.demo", &get("/")).expect("route");
    assert!(echo.upstreams.iter().any(|u| u.key == ep("127.0.0.4:80")), "the reload is in force");
    assert!(Arc::ptr_eq(budget, &echo.budget), "a reload keeps the budget of the same destination");
}

#[test]
fn a_reload_keeps_the_state_of_a_destination_that_resolves_as_before_with_the_same_health() {
    let mut down = Unhealthy::new();
    down.insert(ECHO.into(), vec![ep("127.0.0.1:80")]);
    let first = snapshot(&down);
    let state = |s: &Snapshot| Arc::clone(&s.destinations[s.destinations.iter().position(|d| &*d.key == ECHO).expect("echo")]);

    // Another Service added after it: the destination resolves as before. (An edit that moves
    // its resources' lines does not: the line numbers `veer explain` shows are part of it.)
    let added = "---\napiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: demo, labels: {topology.istio.io/cluster: west}}\nspec: {selector: {app: other}, ports: [{port: 80}]}\n";
    let same = reload(&first, &format!("{WORLD}{added}"), &down);
    assert!(same.route(GATEWAY, "other.demo", &get("/")).is_ok(), "the reload is in force");
    assert!(Arc::ptr_eq(&state(&first), &state(&same)), "same destination, same health: the state is kept");
    assert_eq!(same.generation, first.generation + 1);

    let recovered = reload(&first, WORLD, &Unhealthy::new());
    assert!(!Arc::ptr_eq(&state(&first), &state(&recovered)), "other endpoints down: rebuilt");
    assert_eq!(state(&recovered).active_priority(), 0, "the local endpoint is back in the table");

    let moved = reload(&first, &WORLD.replace("consecutive5xxErrors: 1", "consecutive5xxErrors: 2"), &down);
    assert!(!Arc::ptr_eq(&state(&first), &state(&moved)), "other outlier settings: rebuilt");
    assert_eq!(state(&moved).resilience.outlier.map(|o| o.consecutive_5xx), Some(2));

    // Another client (the node's own cluster moved region) has other tables.
    let elsewhere = reload(&first, &WORLD.replace("region: us-west", "region: us-central"), &down);
    assert!(!Arc::ptr_eq(&state(&first), &state(&elsewhere)), "another client: rebuilt");
}

#[test]
fn the_cluster_header_is_the_cluster_name_and_interned() {
    let a = snapshot(&Unhealthy::new());
    let b = snapshot(&Unhealthy::new());
    let west = |s: &Snapshot| {
        s.route(GATEWAY, "echo.demo", &get("/"))
            .expect("route")
            .upstreams
            .iter()
            .find(|u| &*u.cluster == "west")
            .expect("west")
            .cluster_header
            .clone()
    };
    assert_eq!(west(&a), "west");
    // Both builds point at one interned copy of the name: reloads do not grow memory.
    assert_eq!(west(&a).as_bytes().as_ptr(), west(&b).as_bytes().as_ptr());
    assert_eq!(static_header_value("bad\nname"), "invalid");
}

const ROUTES: &str = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: demo, labels: {topology.istio.io/cluster: west}}
spec:
  gatewayClassName: veer
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: newer, namespace: demo, creationTimestamp: 2024-01-01T00:00:00Z}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.demo, '*.wild.demo']
  rules:
  - backendRefs: [{name: echo, port: 80}]
  - matches: [{headers: [{name: x-v, value: '2'}]}]
    backendRefs: [{name: echo, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: older, namespace: demo, creationTimestamp: 2020-01-01T00:00:00Z}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.demo]
  rules:
  - matches: [{path: {type: Exact, value: /only}}]
    backendRefs: [{name: echo, port: 80}]
  - backendRefs: [{name: echo, port: 80}]
";

#[test]
fn http_routes_are_tried_in_gateway_api_order_and_misses_say_why() {
    let set = veer_model::from_sources(&[("world.yaml".into(), format!("{WORLD}{ROUTES}"))]).unwrap_or_else(|r| panic!("{r}")).into_set();
    let s =
        Snapshot::build(View::new(&set, &Inventory::from_manifests(&set)), "west", &Labels::new(), &Unhealthy::new(), 1).expect("snapshot");
    let key = |host: &str, req: &http::Request<()>| s.route(GATEWAY, host, req).map(|d| d.key.to_string());
    let with_v2 = http::Request::get("/x").header("X-V", "2").body(()).expect("request");
    // Two rules of two routes share the key `shop.demo/`: the later one is told apart.
    assert_eq!(key("shop.demo", &with_v2).as_deref(), Ok("shop.demo/ (demo/newer rule 1)"));
    assert_eq!(key("shop.demo", &get("/only")).as_deref(), Ok("shop.demo/only"), "an exact path beats every prefix");
    // Equal matches: the older route wins, though the newer is read first.
    assert_eq!(key("shop.demo", &get("/x")).as_deref(), Ok("shop.demo/ (demo/older rule 1)"));
    assert_eq!(key("shop.demo:8080", &get("/x")).as_deref(), Ok("shop.demo/ (demo/older rule 1)"), "HTTPRoutes serve every port");
    assert_eq!(key("nope.demo", &get("/")), Err(Miss::NoHost));
    assert_eq!(key("echo.demo:81", &get("/")), Err(Miss::NoHost), "a host served on another port only");
    assert_eq!(key("x.wild.demo", &get("/")), Err(Miss::NoHost), "wildcard hostnames are not served");
    assert!(s.destinations.iter().filter(|d| d.key.starts_with("shop.demo")).count() == 4, "one destination per rule");
    // The Gateway is west's: east's node has no listener the routes attach to.
    let east =
        Snapshot::build(View::new(&set, &Inventory::from_manifests(&set)), "east", &Labels::new(), &Unhealthy::new(), 1).expect("snapshot");
    assert_eq!(east.route(GATEWAY, "shop.demo", &get("/x")).map(|d| d.key.to_string()), Err(Miss::NoHost));
    assert!(east.route(GATEWAY, "echo.demo", &get("/")).is_ok(), "service names are the mesh's, served on every node");
}

#[test]
fn a_host_whose_rules_all_miss_is_a_rule_miss() {
    let only = ROUTES.replace("  - backendRefs: [{name: echo, port: 80}]\n", "");
    let set = veer_model::from_sources(&[("world.yaml".into(), format!("{WORLD}{only}"))]).unwrap_or_else(|r| panic!("{r}")).into_set();
    let s =
        Snapshot::build(View::new(&set, &Inventory::from_manifests(&set)), "west", &Labels::new(), &Unhealthy::new(), 1).expect("snapshot");
    assert_eq!(s.route(GATEWAY, "shop.demo", &get("/x")).map(|d| d.key.to_string()), Err(Miss::NoRule));
    assert!(s.route(GATEWAY, "shop.demo", &get("/only")).is_ok());
}

/// West's Gateways on two ports, each mapped to its own socket; `both` attaches to both.
const TWO_PORTS: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: demo, labels: {topology.istio.io/cluster: west}}
spec:
  gatewayClassName: veer
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: internal, namespace: demo, labels: {topology.istio.io/cluster: west}}
spec:
  gatewayClassName: veer
  listeners: [{name: http, protocol: HTTP, port: 8443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: demo}
spec:
  parentRefs: [{name: public}]
  hostnames: [a.demo]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: demo}
spec:
  parentRefs: [{name: internal}]
  hostnames: [b.demo]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both, namespace: demo}
spec:
  parentRefs: [{name: public}, {name: internal}]
  hostnames: [both.demo]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
";

#[test]
fn each_socket_serves_the_routes_of_its_gateway_port_and_the_gateway_the_mesh_names() {
    let world = WORLD.replace("metadata: {name: west}\nspec: {locality: {region: us-west, zone: a}}", "metadata: {name: west}\nspec:\n  locality: {region: us-west, zone: a}\n  gateway: {address: 127.0.0.1:8080, ports: {'80': 127.0.0.1:8080, '8443': 127.0.0.1:9443}}");
    let set =
        veer_model::from_sources(&[("world.yaml".into(), format!("{world}---{TWO_PORTS}"))]).unwrap_or_else(|r| panic!("{r}")).into_set();
    let s =
        Snapshot::build(View::new(&set, &Inventory::from_manifests(&set)), "west", &Labels::new(), &Unhealthy::new(), 1).expect("snapshot");
    let internal = 1;
    assert_eq!(s.listeners.extra.iter().map(ToString::to_string).collect::<Vec<_>>(), vec!["127.0.0.1:9443"]);
    let key = |socket: usize, host: &str| s.route(socket, host, &get("/")).map(|d| d.key.to_string());
    // Port 80 is mapped to the gateway's own address: the gateway serves its routes.
    assert_eq!(key(GATEWAY, "a.demo").as_deref(), Ok("a.demo/"));
    assert_eq!(key(internal, "a.demo"), Err(Miss::NoHost), "port 80's route is not on port 8443's socket");
    assert_eq!(key(internal, "b.demo").as_deref(), Ok("b.demo/"));
    assert_eq!(key(GATEWAY, "b.demo"), Err(Miss::NoHost), "port 8443's route is not on the gateway");
    assert!(key(GATEWAY, "both.demo").is_ok() && key(internal, "both.demo").is_ok(), "a route on both ports is on both sockets");
    assert!(key(GATEWAY, "echo.demo").is_ok());
    assert_eq!(key(internal, "echo.demo"), Err(Miss::NoHost), "the mesh's names are the gateway's only");
    assert_eq!(key(7, "a.demo"), Err(Miss::NoHost), "a socket the snapshot does not know serves nothing");
}

/// Envoy's previous_priorities has no panic step: in total panic a first try splits by host
/// count, but a retry after P0 failed goes to the untried priority only.
#[test]
fn in_total_panic_a_retry_goes_to_the_untried_priority_only() {
    let text = WORLD.replace("maxEjectionPercent: 100}", "maxEjectionPercent: 100, minHealthPercent: 60}");
    let set = veer_model::from_sources(&[("world.yaml".into(), text)]).unwrap_or_else(|r| panic!("{r}")).into_set();
    // West (P0) has nothing healthy, east (P1) one of two: both below 60%.
    let mut down = Unhealthy::new();
    down.insert("echo.demo.svc.cluster.local:80".into(), vec![ep("127.0.0.1:80"), ep("127.0.0.2:80")]);
    let s = Snapshot::build(View::new(&set, &Inventory::from_manifests(&set)), "west", &Labels::new(), &down, 1).expect("snapshot");
    let d = s.route(0, "echo.demo", &get("/")).expect("route");
    assert!(d.table.load.total_panic, "{:?}", d.table.load);
    assert_eq!(d.table.load.healthy, vec![34, 66]);
    let west = d.upstreams.iter().position(|u| &*u.cluster == "west").expect("west endpoint");
    let mut tried = Tried::default();
    tried.record(west, d.upstreams[west].priority);
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..300 {
        let ep = d.pick(&tried, rng.u64(..), rng.f64()).expect("retry pick");
        assert_eq!(&*d.upstreams[ep].cluster, "east", "a retry went back to the tried priority");
    }
}

/// West with an HTTPS listener on port 443 (its own address) whose Secret holds `crt`/`key`
/// (PEM under `stringData`), and an HTTPRoute on it.
fn https_world(crt: &str, key: &str, route_host: &str) -> ManifestSet {
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let world = WORLD.replace(
        "metadata: {name: west}\nspec: {locality: {region: us-west, zone: a}}",
        "metadata: {name: west}\nspec:\n  locality: {region: us-west, zone: a}\n  gateway: {address: 127.0.0.1:8080, ports: {'443': 127.0.0.1:9443}}",
    );
    let text = format!(
        "{world}---
apiVersion: v1
kind: Secret
metadata: {{name: site, namespace: demo}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: demo, labels: {{topology.istio.io/cluster: west}}}}
spec:
  gatewayClassName: veer
  listeners: [{{name: https, protocol: HTTPS, port: 443, tls: {{certificateRefs: [{{name: site}}]}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: demo}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{route_host}]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
",
        indent(crt),
        indent(key)
    );
    veer_model::from_sources(&[("world.yaml".into(), text)]).unwrap_or_else(|r| panic!("{r}")).into_set()
}

#[test]
fn a_reload_keeps_a_sockets_tls_config_while_its_certificates_stay_and_replaces_it_when_they_change() {
    let pair = || {
        let key = rcgen::KeyPair::generate().expect("key");
        let c = rcgen::CertificateParams::new(vec!["a.demo".to_string()]).expect("params").self_signed(&key).expect("cert");
        (c.pem(), key.serialize_pem())
    };
    let build = |set: &ManifestSet, previous: Option<&Snapshot>| {
        let inventory = Inventory::from_manifests(set);
        let view = View::new(set, &inventory);
        match previous {
            Some(p) => Snapshot::build_after(p, view, "west", &Labels::new(), &Unhealthy::new(), &Warming::new(), Arc::default(), 2),
            None => Snapshot::build(view, "west", &Labels::new(), &Unhealthy::new(), 1),
        }
        .expect("snapshot")
    };
    let (crt, key) = pair();
    let first = build(&https_world(&crt, &key, "a.demo"), None);
    let config = |s: &Snapshot| s.listener_tls(1).map(|t| t.config.clone()).expect("socket 1 terminates TLS");
    assert!(first.listener_tls(GATEWAY).is_none(), "the gateway stays plain");
    // Another route, the same certificates: the same config.
    let same = build(&https_world(&crt, &key, "b.demo"), Some(&first));
    assert!(Arc::ptr_eq(&config(&first), &config(&same)));
    // A new certificate: a new config.
    let (crt2, key2) = pair();
    let rotated = build(&https_world(&crt2, &key2, "b.demo"), Some(&same));
    assert!(!Arc::ptr_eq(&config(&same), &config(&rotated)));
}

fn ep(address: &str) -> veer_core::topology::EndpointKey {
    address.parse().expect("an ip:port")
}

#[test]
fn a_warming_endpoint_takes_its_priority_back_by_its_factor_in_picks_and_the_report() {
    let first = snapshot(&Unhealthy::new());
    let changed = std::collections::HashSet::from([veer_core::names::DestinationName::new(ECHO)]);
    let mut warming = Warming::new();
    warming.insert(ECHO.into(), vec![(ep("127.0.0.1:80"), 0.3)]);
    let warm = first.with_health(&Unhealthy::new(), &warming, &changed, 2);
    let d = warm.route(GATEWAY, "echo.demo", &get("/")).expect("route");
    assert_eq!(d.table.load.healthy, vec![30, 70], "P0 came back: 30% of its load at factor 0.3");
    let p0 = &d.report.priorities[0].endpoints[0];
    assert_eq!((p0.warmup_percent, p0.share_percent), (Some(30.0), 30.0));
    let mut rng = fastrand::Rng::with_seed(7);
    let west =
        (0..2000).filter(|_| &*d.upstreams[d.pick(&Tried::default(), rng.u64(..), rng.f64()).expect("pick")].cluster == "west").count();
    assert!((500..700).contains(&west), "first tries follow the table: {west} of 2000 to west");

    // A reload keeps the state only with the same endpoints warming at the same factors.
    let state = |s: &Snapshot| Arc::clone(&s.destinations[s.destinations.iter().position(|d| d.key == ECHO).expect("echo")]);
    let set = set_of(WORLD);
    let inventory = Inventory::from_manifests(&set);
    let again = |w: &Warming| {
        Snapshot::build_after(&warm, View::new(&set, &inventory), "west", &Labels::new(), &Unhealthy::new(), w, Arc::default(), 3)
            .expect("snapshot")
    };
    assert!(Arc::ptr_eq(&state(&warm), &state(&again(&warming))));
    let mut later = warming.clone();
    later.insert(ECHO.into(), vec![(ep("127.0.0.1:80"), 0.6)]);
    let stepped = again(&later);
    assert!(!Arc::ptr_eq(&state(&warm), &state(&stepped)));
    assert_eq!(state(&stepped).table.load.healthy, vec![60, 40]);
    assert_eq!(state(&again(&Warming::new())).table.load.healthy, vec![100, 0], "steady again");
}
