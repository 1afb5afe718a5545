//! TLSRoutes: attached to `TLS` Passthrough listeners by Gateway API's rules, every way an
//! attachment fails reported where it is, and the destination a served route resolves to.

use veer_core::priority::PriorityRule;
use veer_model::diag::{Diagnostic, Severity};
use veer_model::from_sources;
use veer_model::inventory::Inventory;
use veer_model::resolve::{self, DestinationKind, View};

use super::load_one;

/// Cluster `edge` (port 443 on an address of its own), Gateway `gw` with a Passthrough
/// listener on 443 for `*.example.com` and an HTTP one on 80, Backends `a` and `b` (fallback),
/// and `extra`.
fn world(extra: &str) -> String {
    format!(
        "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {{name: edge}}
spec:
  gateway:
    address: 127.0.0.1:8080
    ports: {{\"443\": 127.0.0.1:8443, \"80\": 127.0.0.1:8080}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: veer
  listeners:
  - name: pass
    protocol: TLS
    port: 443
    hostname: '*.example.com'
    tls: {{mode: Passthrough}}
  - {{name: web, protocol: HTTP, port: 80}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: a}}
spec: {{endpoints: [{{ip: {{address: 10.0.0.1, port: 443}}}}]}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: b}}
spec: {{fallback: true, endpoints: [{{ip: {{address: 10.0.0.2, port: 443}}}}]}}
---
{extra}"
    )
}

/// A TLSRoute `name` with `parents` and `hostnames` (YAML flow) to Backends a and b.
fn route(name: &str, namespace: &str, parents: &str, hostnames: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  parentRefs: {parents}\n  hostnames: {hostnames}\n  rules:\n  - backendRefs:\n    - {{group: gateway.envoyproxy.io, kind: Backend, name: a, namespace: default}}\n    - {{group: gateway.envoyproxy.io, kind: Backend, name: b, namespace: default}}\n---\n"
    )
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or_else(|| panic!("{needle:?} not in the text"))
}

fn strings(diags: &[Diagnostic], severity: Severity) -> Vec<String> {
    diags.iter().filter(|d| d.severity == severity).map(ToString::to_string).collect()
}

#[test]
fn a_tls_route_is_served_on_the_passthrough_listener_names_it_shares_and_resolves_with_priority_tiers() {
    let policy = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {name: health}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: TLSRoute, name: shop}]\n  healthCheck: {passive: {consecutiveLocalOriginFailures: 1}}\n---\n";
    let text = world(&format!(
        "{}{policy}",
        route("shop", "default", "[{name: gw, sectionName: pass}]", "[shop.example.com, '*.example.com', shop.example.net]")
    ));
    let accepted = from_sources(&[("t.yaml".into(), text.clone())]).unwrap_or_else(|r| panic!("{r}"));
    let set = accepted.set();
    let r = &set.tls_routes[0];
    // The listener's `*.example.com` takes the route's exact name and its wildcard; the
    // `.net` name falls outside it. Wildcards stay wildcards: SNI is matched per connection.
    assert_eq!(r.hosts_in("edge").collect::<Vec<_>>(), vec!["shop.example.com", "*.example.com"]);
    assert!(r.served.iter().all(|s| s.port == 443));

    let keys = resolve::destinations(set, "edge");
    let key = keys.iter().find(|k| matches!(k.kind, DestinationKind::TlsRoute { .. })).expect("a TLSRoute destination");
    assert_eq!(key.name.as_str(), "tls:shop.example.com");
    let inventory = Inventory::from_manifests(set);
    let d = resolve::resolve_key(View::new(set, &inventory), key, "edge").expect("resolves");
    assert_eq!(d.rule, PriorityRule::Tiers);
    assert_eq!(d.endpoints.iter().map(|e| e.tier).collect::<Vec<_>>(), vec![Some(0), Some(1)], "the fallback Backend is the second tier");
    assert!(
        d.resilience.outlier.is_some_and(|o| o.consecutive_local_origin_failure == 1),
        "the BackendTrafficPolicy targeting the TLSRoute applies"
    );
    // `explain` finds it by a name a wildcard takes, too.
    let by_name = resolve::resolve(View::new(set, &inventory), "cart.example.com", None, "edge", "").expect("resolves");
    assert_eq!(by_name.endpoints.len(), 2);
}

#[test]
fn every_way_a_tls_route_is_not_served_is_reported_at_its_parent_ref() {
    let other_ns = route("elsewhere", "other", "[{name: gw, namespace: default, sectionName: pass}]", "[x.example.com]");
    let http = route("on-http", "default", "[{name: gw, sectionName: web}]", "[y.example.com]");
    let outside = route("outside", "default", "[{name: gw, sectionName: pass}]", "[z.example.net]");
    let missing = route("missing", "default", "[{name: nogw}]", "[w.example.com]");
    let text = world(&format!("{other_ns}{http}{outside}{missing}"));
    let diags = load_one("t.yaml", &text);
    let warnings = strings(&diags, Severity::Warning);
    let errors = strings(&diags, Severity::Error);
    let at = |needle: &str| format!("t.yaml:{}:", line_of(&text, needle));
    let has = |list: &[String], needle: &str, says: &str| {
        assert!(list.iter().any(|d| d.starts_with(&at(needle)) && d.contains(says)), "{needle:?} {says:?}: {list:?}");
    };
    has(&warnings, "namespace: default, sectionName: pass", "admits routes of namespace default only");
    has(&warnings, "sectionName: web", "is not a TLS listener in Passthrough mode");
    let outside_parent = text.lines().filter(|l| l.contains("[{name: gw, sectionName: pass}]")).count();
    assert_eq!(outside_parent, 1);
    has(&warnings, "[{name: gw, sectionName: pass}]", "no hostname of the route falls under listener \"pass\"");
    has(&errors, "[{name: nogw}]", "Gateway default/nogw does not exist");
}

#[test]
fn a_tls_listener_must_pass_through_and_have_an_address_of_its_own() {
    let terminate = world("").replace("tls: {mode: Passthrough}", "tls: {mode: Terminate}");
    let errors = strings(&load_one("t.yaml", &terminate), Severity::Error);
    let line = line_of(&terminate, "mode: Terminate");
    assert!(errors.iter().any(|e| e.starts_with(&format!("t.yaml:{line}:")) && e.contains("Passthrough mode only")), "{errors:?}");

    let bare = world("").replace("    tls: {mode: Passthrough}\n", "");
    let errors = strings(&load_one("t.yaml", &bare), Severity::Error);
    assert!(errors.iter().any(|e| e.contains("needs tls.mode: Passthrough")), "{errors:?}");

    // Port 443 on the gateway's own address, which stays plain HTTP for the mesh's names.
    let shared = world(&route("shop", "default", "[{name: gw, sectionName: pass}]", "[shop.example.com]"))
        .replace("\"443\": 127.0.0.1:8443", "\"443\": 127.0.0.1:8080");
    let errors = strings(&load_one("t.yaml", &shared), Severity::Error);
    let line = line_of(&shared, "- name: pass");
    assert!(
        errors.iter().any(|e| e.starts_with(&format!("t.yaml:{line}:")) && e.contains("map it to an address of its own")),
        "{errors:?}"
    );

    let no_backend = world(&route("shop", "default", "[{name: gw}]", "[shop.example.com]"))
        .replace("name: b, namespace: default}", "name: gone, namespace: default}");
    let errors = strings(&load_one("t.yaml", &no_backend), Severity::Error);
    let line = line_of(&no_backend, "name: gone");
    assert!(
        errors.iter().any(|e| e.starts_with(&format!("t.yaml:{line}:")) && e.contains("Backend default/gone does not exist")),
        "{errors:?}"
    );
}

/// Cluster `edge` with `ports` (YAML flow), Service `shop.default` on 443, and an Istio
/// Gateway with a PASSTHROUGH server on 443 for `host`.
fn istio_world(ports: &str, host: &str) -> String {
    format!(
        "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {{name: edge}}
spec:
  gateway:
    address: 127.0.0.1:8080
    ports: {ports}
---
apiVersion: v1
kind: Service
metadata: {{name: shop, namespace: default}}
spec:
  selector: {{app: shop}}
  ports: [{{name: tls, port: 443}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    tls: {{mode: PASSTHROUGH}}
    hosts: [{host}]
---
"
    )
}

#[test]
fn an_istio_passthrough_server_needs_an_address_of_its_own_and_a_host_to_route_to() {
    let ok = istio_world("{\"443\": 127.0.0.1:8443}", "default/shop.default.svc.cluster.local");
    let diags = load_one("i.yaml", &ok);
    assert!(strings(&diags, Severity::Error).is_empty() && strings(&diags, Severity::Warning).is_empty(), "{diags:?}");

    let line = line_of(&ok, "- port: {number: 443");
    let at = format!("i.yaml:{line}:");
    let unmapped = istio_world("{}", "default/shop.default.svc.cluster.local");
    let warnings = strings(&load_one("i.yaml", &unmapped), Severity::Warning);
    assert!(warnings.iter().any(|w| w.starts_with(&at) && w.contains("NOT SERVED: port 443 has no address")), "{warnings:?}");

    let on_gateway = istio_world("{\"443\": 127.0.0.1:8080}", "default/shop.default.svc.cluster.local");
    let errors = strings(&load_one("i.yaml", &on_gateway), Severity::Error);
    assert!(errors.iter().any(|e| e.starts_with(&at) && e.contains("map it to an address of its own")), "{errors:?}");

    let nowhere = istio_world("{\"443\": 127.0.0.1:8443}", "default/cart.default.svc.cluster.local");
    let warnings = strings(&load_one("i.yaml", &nowhere), Severity::Warning);
    assert!(warnings.iter().any(|w| w.starts_with(&at) && w.contains("no destination has these hosts at port 443")), "{warnings:?}");

    // An HTTP listener on the passthrough port would never see a request: its socket reads a
    // ClientHello first.
    let http = format!("{ok}apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: veer\n  listeners:\n  - {{name: web, protocol: HTTP, port: 443}}\n");
    let errors = strings(&load_one("i.yaml", &http), Severity::Error);
    let line = line_of(&http, "name: web, protocol: HTTP");
    assert!(errors.iter().any(|e| e.starts_with(&format!("i.yaml:{line}:")) && e.contains("passes TLS through by SNI")), "{errors:?}");
}
