//! HTTPS listeners: certificateRefs to `kubernetes.io/tls` Secrets read and checked at load, and
//! every way they can be wrong reported where it is.

use base64::Engine;
use rcgen::{CertificateParams, KeyPair};

use super::{errors, load_one};
use veer_model::from_sources;

/// A self-signed pair for `names`, valid from 30 days before `until` to `until`.
fn pair(names: &[&str], until: time::OffsetDateTime) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    params.not_before = until - time::Duration::days(30);
    params.not_after = until;
    (params.self_signed(&key).expect("certificate").pem(), key.serialize_pem())
}

fn valid(names: &[&str]) -> (String, String) {
    pair(names, time::OffsetDateTime::now_utc() + time::Duration::days(30))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A Secret as `kubectl get secret -o yaml` prints it (with the fields the API server adds).
fn secret(name: &str, namespace: &str, kind: &str, crt: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  creationTimestamp: \"2024-01-02T15:04:05Z\"\n  resourceVersion: \"4711\"\n  uid: 0b9c2f9e-0000-0000-0000-000000000000\ntype: {kind}\ndata:\n  ca.crt: {}\n  tls.crt: {crt}\n  tls.key: {key}\n---\n",
        b64("ignored")
    )
}

/// Cluster `edge` (port 443 on its own address, 80 on `port80`), a Gateway with an HTTPS
/// listener (`tls` as given, YAML flow) and an HTTP one, a route on each, and `extra`.
fn world(tls: &str, port80: &str, extra: &str) -> String {
    format!(
        "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {{name: edge}}
spec:
  gateway:
    address: 127.0.0.1:8080
    ports:
      \"443\": 127.0.0.1:8443
      \"80\": {port80}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: veer
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    hostname: a.example.com
    tls: {tls}
  - {{name: http, protocol: HTTP, port: 80}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: a}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [a.example.com]
---
{extra}"
    )
}

const REFS: &str = "{certificateRefs: [{name: a-cert}]}";

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or_else(|| panic!("{needle:?} not in the text"))
}

#[test]
fn https_listeners_take_their_certificates_from_tls_secrets() {
    let (crt, key) = valid(&["a.example.com", "*.b.example.com"]);
    let text = world(REFS, "127.0.0.1:8081", &secret("a-cert", "default", "kubernetes.io/tls", &b64(&crt), &b64(&key)));
    let accepted = from_sources(&[("t.yaml".into(), text)]).unwrap_or_else(|r| panic!("{r}"));
    let tls = &accepted.set().tls_listeners;
    assert_eq!(tls.len(), 1);
    assert_eq!((tls[0].cluster.as_str(), tls[0].listener.as_str(), tls[0].port), ("edge", "https", 443));
    assert_eq!(tls[0].certs.len(), 1);
    assert_eq!(tls[0].certs[0].names, ["a.example.com", "*.b.example.com"]);
    // HTTPS routes are served like HTTP ones, on the listener's port.
    let route = accepted.set().routes.iter().find(|r| r.meta.name == "a").expect("route");
    assert_eq!(route.ports_of("edge", "a.example.com").collect::<Vec<_>>(), [443, 80]);
    // Secrets of other types are read too, and nothing of them is kept or complained about.
    let text = world(
        REFS,
        "127.0.0.1:8081",
        &format!(
            "{}apiVersion: v1\nkind: Secret\nmetadata: {{name: other}}\ntype: Opaque\ndata: {{password: aHVudGVyMg==}}\n",
            secret("a-cert", "default", "kubernetes.io/tls", &b64(&crt), &b64(&key))
        ),
    );
    assert!(from_sources(&[("t.yaml".into(), text)]).is_ok());
}

#[test]
fn certificate_refs_that_do_not_resolve_or_do_not_check_are_located_errors() {
    let (crt, key) = valid(&["a.example.com"]);
    let (_, other_key) = valid(&["a.example.com"]);
    let (old_crt, old_key) = pair(&["a.example.com"], time::OffsetDateTime::now_utc() - time::Duration::days(1));
    let good = secret("a-cert", "default", "kubernetes.io/tls", &b64(&crt), &b64(&key));
    // (what, tls, port 80's address, extra resources, the line's marker, what the error says)
    let cases: Vec<(&str, String, &str, String, &str, &str)> = vec![
        ("no such Secret", REFS.into(), "127.0.0.1:8081", String::new(), "tls: {certificateRefs", "no Secret default/a-cert"),
        (
            "an Opaque Secret",
            REFS.into(),
            "127.0.0.1:8081",
            secret("a-cert", "default", "Opaque", &b64(&crt), &b64(&key)),
            "tls: {certificateRefs",
            "is of type Opaque",
        ),
        (
            "another namespace",
            "{certificateRefs: [{name: a-cert, namespace: certs}]}".into(),
            "127.0.0.1:8081",
            secret("a-cert", "certs", "kubernetes.io/tls", &b64(&crt), &b64(&key)),
            "tls: {certificateRefs",
            "needs a ReferenceGrant",
        ),
        (
            "an expired certificate",
            REFS.into(),
            "127.0.0.1:8081",
            secret("a-cert", "default", "kubernetes.io/tls", &b64(&old_crt), &b64(&old_key)),
            "tls.crt:",
            "expired on",
        ),
        (
            "another certificate's key",
            REFS.into(),
            "127.0.0.1:8081",
            secret("a-cert", "default", "kubernetes.io/tls", &b64(&crt), &b64(&other_key)),
            "tls.key:",
            "does not belong to the certificate",
        ),
        (
            "PEM where base64 belongs",
            REFS.into(),
            "127.0.0.1:8081",
            secret("a-cert", "default", "kubernetes.io/tls", "'-----BEGIN CERTIFICATE-----'", &b64(&key)),
            "tls.crt:",
            "is not base64",
        ),
        ("no tls", "".into(), "127.0.0.1:8081", good.clone(), "name: https", "needs tls.certificateRefs"),
        (
            "passthrough",
            "{mode: Passthrough, certificateRefs: [{name: a-cert}]}".into(),
            "127.0.0.1:8081",
            good.clone(),
            "tls: {mode",
            "passthrough is not supported",
        ),
        (
            "client certificates",
            "{certificateRefs: [{name: a-cert}], frontendValidation: {caCertificateRefs: [{name: ca}]}}".into(),
            "127.0.0.1:8081",
            good.clone(),
            "tls: {certificateRefs",
            "client certificate validation is not supported",
        ),
        ("the gateway's address", REFS.into(), "127.0.0.1:8081", good.clone(), "name: https", "stays plain HTTP"),
    ];
    for (what, tls, port80, extra, marker, says) in cases {
        let mut text = world(&tls, port80, &extra);
        if what == "no tls" {
            text = text.replace("    tls: \n", "");
        }
        if what == "the gateway's address" {
            text = text.replace("\"443\": 127.0.0.1:8443", "\"443\": 127.0.0.1:8080");
        }
        let found = errors(&load_one("t.yaml", &text));
        let at = format!("t.yaml:{}:", line_of(&text, marker));
        assert!(found.iter().any(|e| e.starts_with(&at) && e.contains(says)), "{what}: wanted {says:?} at {at}, got {found:#?}");
    }
}

#[test]
fn pem_file_certificates_are_read_beside_their_manifest() {
    let (crt, key) = valid(&["a.example.com"]);
    let refs = "{certificateRefs: [{group: veer.io, kind: PEMFile, name: ../certs/./a.pem}]}";
    let text = world(refs, "127.0.0.1:8081", "");
    let both = format!("{crt}{key}");
    let with = |pem: &str| vec![("m/gw.yaml".to_string(), text.clone()), ("certs/a.pem".to_string(), pem.to_string())];
    let accepted = from_sources(&with(&both)).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(accepted.set().tls_listeners[0].certs[0].names, ["a.example.com"]);

    // Missing, or only half a pair: an error at the certificateRef, naming the file.
    let at = format!("m/gw.yaml:{}:", line_of(&text, "tls: {certificateRefs"));
    let rejected = from_sources(&[("m/gw.yaml".to_string(), text.clone())]).expect_err("no PEM file");
    assert!(
        rejected.errors().any(|e| e.to_string().starts_with(&at) && e.message.contains("certs/a.pem is not among the files read")),
        "{rejected}"
    );
    let rejected = from_sources(&with(&crt)).expect_err("no key");
    assert!(rejected.errors().any(|e| e.to_string().starts_with(&at) && e.message.contains("certs/a.pem: no private key")), "{rejected}");
}
