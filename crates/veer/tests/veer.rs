//! End-to-end tests of the `veer` command as a user runs it: the seed walkthroughs under
//! `examples/`, checked through `veer explain -o json` and `veer validate`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use veer_testkit::{wait_until, TempDir};

/// Multi-cluster in network namespaces (`veer run` × 3, east-west mTLS).
#[path = "mesh/e2e.rs"]
mod mesh;

/// Automatic regional DNS takeover on etcd leases, written to BIND and Knot (`veer run --etcd` × 3).
#[path = "takeover/e2e.rs"]
mod takeover;

/// `veer run --kubeconfig` against a real API server.
#[path = "kube/run.rs"]
mod kube;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn veer(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veer"));
    cmd.args(args);
    outcome(cmd)
}

/// Runs `veer run` with flags it must refuse at once. Under `timeout`, so a `veer run` that
/// starts serving instead fails the test (exit 124) rather than hanging it.
fn veer_run_refused(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", env!("CARGO_BIN_EXE_veer")]).args(args);
    outcome(cmd)
}

/// Runs `cmd` from the repository's root: exit code, stdout and stderr.
fn outcome(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.current_dir(root()).output().expect("run veer");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `veer explain -o json` over `files` and returns the report.
fn explain(files: &[&str], host: &str, from: &str, extra: &[&str]) -> Value {
    let mut args = vec!["explain"];
    for f in files {
        args.push("-f");
        args.push(f);
    }
    args.extend(["--host", host, "--from", from, "-o", "json"]);
    args.extend(extra);
    let (code, out, err) = veer(&args);
    assert_eq!(code, 0, "veer {args:?} failed: {err}");
    serde_json::from_str(&out).expect("explain prints JSON")
}

/// (cluster, address, share percent) of one endpoint.
type Row = (String, String, f64);

/// Per priority: (load percent, endpoints).
fn table(report: &Value) -> Vec<(u64, Vec<Row>)> {
    report["priorities"]
        .as_array()
        .expect("priorities")
        .iter()
        .map(|p| {
            let eps = p["endpoints"]
                .as_array()
                .expect("endpoints")
                .iter()
                .map(|e| {
                    (
                        e["cluster"].as_str().unwrap_or("").to_string(),
                        e["address"].as_str().unwrap_or("").to_string(),
                        e["share_percent"].as_f64().unwrap_or(-1.0),
                    )
                })
                .collect();
            (p["load_percent"].as_u64().unwrap_or(999), eps)
        })
        .collect()
}

fn share_by_cluster(report: &Value, cluster: &str) -> f64 {
    table(report).iter().flat_map(|(_, eps)| eps.iter()).filter(|(c, _, _)| c == cluster).map(|(_, _, s)| s).sum()
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 0.05, "expected {expected}, got {actual}");
}

// === seed 000: Gloo VirtualDestination + FailoverPolicy priorityLabels ===

const E000: &str = "examples/000-gloo-priority-labels";
const VD_CENTRAL: &str = "go-vuderani-algebra.infra.svc.central-pp-rs";
const VD_TEST: &str = "go-vuderani-algebra.infra.svc.test-pp-rs";
const SERVES_CENTRAL: &str = "mesh.opentable.com/serves-central-pp-rs=true";
const SERVES_TEST: &str = "mesh.opentable.com/serves-test-pp-rs=true";

fn files_000(servers: &[&str], policy: &str) -> Vec<String> {
    let mut v: Vec<String> = ["seed.yaml", "clusters.yaml", "vd-for-central.yaml", policy].iter().map(|f| format!("{E000}/{f}")).collect();
    v.extend(servers.iter().map(|f| format!("{E000}/{f}")));
    v
}

fn explain_000(files: &[String], host: &str, from: &str, label: &str) -> Value {
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    explain(&refs, host, from, &["--label", label])
}

#[test]
fn seed000_step3_each_cluster_is_served_locally() {
    let files = files_000(&["server-central.yaml", "server-test.yaml"], "policy-for-central.yaml");
    let central = explain_000(&files, VD_CENTRAL, "central-pp-rs", SERVES_CENTRAL);
    let t = table(&central);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, 100);
    assert_eq!(t[0].1.len(), 9);
    assert!(t[0].1.iter().all(|(c, _, _)| c == "central-pp-rs"));
    let test = explain_000(&files, VD_TEST, "test-pp-rs", SERVES_TEST);
    assert_close(share_by_cluster(&test, "test-pp-rs"), 100.0);
}

#[test]
fn seed000_step5_labelled_remote_server_is_a_lower_priority() {
    let files = files_000(
        &["server-central.yaml", "../steps/000-gloo-priority-labels/2-remote-labelled/server-test.yaml"],
        "policy-for-central.yaml",
    );
    let r = explain_000(&files, VD_CENTRAL, "central-pp-rs", SERVES_CENTRAL);
    let t = table(&r);
    assert_eq!(t.len(), 2, "{r}");
    assert_eq!((t[0].0, t[1].0), (100, 0));
    assert!(t[0].1.iter().all(|(c, _, _)| c == "central-pp-rs"));
    assert_eq!(t[1].1, vec![("test-pp-rs".to_string(), "127.0.2.1:8080".to_string(), 0.0)]);
    // The reason names the label that decided it.
    let why = r["priorities"][1]["endpoints"][0]["why"].as_str().unwrap_or("");
    assert!(why.contains("topology.istio.io/subzone \"avg\" differs from client \"central\""), "{why}");
}

#[test]
fn seed000_step6_central_scaled_to_zero_fails_over_to_test() {
    let files = files_000(
        &[
            "../steps/000-gloo-priority-labels/3-central-scaled-0/server-central.yaml",
            "../steps/000-gloo-priority-labels/2-remote-labelled/server-test.yaml",
        ],
        "policy-for-central.yaml",
    );
    let r = explain_000(&files, VD_CENTRAL, "central-pp-rs", SERVES_CENTRAL);
    assert_close(share_by_cluster(&r, "test-pp-rs"), 100.0);
    // The test cluster's own clients are unaffected.
    let t = explain_000(&files, VD_TEST, "test-pp-rs", SERVES_TEST);
    assert_close(share_by_cluster(&t, "test-pp-rs"), 100.0);
    // The same answer as a what-if on the unscaled set.
    let files = files_000(
        &["server-central.yaml", "../steps/000-gloo-priority-labels/2-remote-labelled/server-test.yaml"],
        "policy-for-central.yaml",
    );
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    let what_if = explain(&refs, VD_CENTRAL, "central-pp-rs", &["--label", SERVES_CENTRAL, "--down", "cluster=central-pp-rs"]);
    assert_close(share_by_cluster(&what_if, "test-pp-rs"), 100.0);
    assert_eq!(what_if["priorities"][0]["load_percent"], 0);
}

#[test]
fn seed000_step6_remote_replicas_share_evenly() {
    for (file, n) in [
        ("../steps/000-gloo-priority-labels/4-test-3-replicas/server-test.yaml", 3.0),
        ("../steps/000-gloo-priority-labels/5-test-9-replicas/server-test.yaml", 9.0),
    ] {
        let files =
            files_000(&["../steps/000-gloo-priority-labels/3-central-scaled-0/server-central.yaml", file], "policy-for-central.yaml");
        let r = explain_000(&files, VD_CENTRAL, "central-pp-rs", SERVES_CENTRAL);
        let t = table(&r);
        assert_eq!(t[0].1.len() as f64, n);
        for (_, _, share) in &t[0].1 {
            assert_close(*share, 100.0 / n);
        }
    }
}

#[test]
fn seed000_step7_restore_brings_traffic_back() {
    let files = files_000(
        &["server-central.yaml", "../steps/000-gloo-priority-labels/5-test-9-replicas/server-test.yaml"],
        "policy-for-central.yaml",
    );
    let r = explain_000(&files, VD_CENTRAL, "central-pp-rs", SERVES_CENTRAL);
    assert_close(share_by_cluster(&r, "central-pp-rs"), 100.0);
    assert_close(share_by_cluster(&r, "test-pp-rs"), 0.0);
}

#[test]
fn seed000_step8_inverted_labels_prefer_avg_servers_that_serve_central() {
    let files = files_000(
        &["server-central.yaml", "../steps/000-gloo-priority-labels/2-remote-labelled/server-test.yaml"],
        "../steps/000-gloo-priority-labels/7-inverted-with-avg/policy-for-central.yaml",
    );
    let r = explain_000(&files, VD_CENTRAL, "central-pp-rs", SERVES_CENTRAL);
    let t = table(&r);
    assert_eq!(t.len(), 2);
    assert!(t[0].1.iter().all(|(c, _, _)| c == "test-pp-rs"));
    assert!(t[1].1.iter().all(|(c, _, _)| c == "central-pp-rs"));
    assert_close(share_by_cluster(&r, "test-pp-rs"), 100.0);
}

// === seed 001: SMH FailoverService ===

const E001: &str = "examples/001-smh-failover-service";

#[test]
fn seed001_backing_services_are_tiers_in_order() {
    let r = explain(&[E001], "reviews-failover.bookinfo.global:9080", "mgmt-cluster", &[]);
    let t = table(&r);
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].0, t[1].0), (100, 0));
    assert_eq!(t[0].1.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), vec!["mgmt-cluster", "mgmt-cluster"]);
    assert_close(t[0].1[0].2, 50.0);
    assert_eq!(t[1].1[0].0, "remote-cluster");
}

#[test]
fn seed001_traffic_shift_and_failover_to_remote_when_v1_v2_stop() {
    // The trafficShift sends reviews (seen from mgmt-cluster) to the FailoverService.
    let r = explain(&[E001], "reviews.bookinfo.svc.cluster.local", "mgmt-cluster", &["--down", "127.0.3.1", "--down", "127.0.3.2"]);
    let roles: Vec<&str> = r["sources"].as_array().into_iter().flatten().filter_map(|s| s["kind"].as_str()).collect();
    assert!(roles.contains(&"TrafficPolicy") && roles.contains(&"FailoverService"), "{roles:?}");
    assert_close(share_by_cluster(&r, "remote-cluster"), 100.0);
    // Restored: back on the first backing service.
    let r = explain(&[E001], "reviews.bookinfo.svc.cluster.local", "mgmt-cluster", &[]);
    assert_close(share_by_cluster(&r, "mgmt-cluster"), 100.0);
}

#[test]
fn seed001_the_outlier_traffic_policy_alone_gives_the_plain_service_locality_failover() {
    // Before any FailoverService, SMH writes the TrafficPolicy's outlierDetection as a
    // DestinationRule for `reviews`: Istio's default locality failover, panic off. With v1 and
    // v2 down, every request goes to v3 in the other region, none to the dead endpoints.
    let files = [&format!("{E001}/topology.yaml") as &str, "crates/veer/tests/fixtures/seed-001-outlier-policy-only.yaml"];
    let r = explain(&files, "reviews.bookinfo.svc.cluster.local:9080", "mgmt-cluster", &["--down", "127.0.3.1", "--down", "127.0.3.2"]);
    let roles: Vec<&str> = r["sources"].as_array().into_iter().flatten().filter_map(|s| s["kind"].as_str()).collect();
    assert!(roles.contains(&"TrafficPolicy"), "{roles:?}");
    assert_close(share_by_cluster(&r, "remote-cluster"), 100.0);
    let r = explain(&files, "reviews.bookinfo.svc.cluster.local:9080", "mgmt-cluster", &[]);
    assert_close(share_by_cluster(&r, "mgmt-cluster"), 100.0);
}

// === seed 003: Istio multi-network locality failover ===

const E003: &str = "examples/003-istio-locality-failover";
/// Seed 003's later steps, each a complete set (unchanged files are links to `E003`'s).
const S003: &str = "examples/steps/003-istio-locality-failover";
const HELLO: &str = "helloworld.sample.svc.cluster.local:5000";

#[test]
fn seed003_before_the_east_west_gateway_only_local_endpoints_are_seen() {
    let r = explain(&[E003], HELLO, "cluster1", &[]);
    let t = table(&r);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1.len(), 1);
    assert_eq!(t[0].1[0].0, "cluster1");
}

#[test]
fn seed003_exposed_remote_endpoints_join_and_share_without_a_rule() {
    let r = explain(&[&format!("{S003}/2-expose-helloworld")], HELLO, "cluster1", &[]);
    assert_close(share_by_cluster(&r, "cluster1"), 50.0);
    assert_close(share_by_cluster(&r, "cluster2"), 50.0);
}

#[test]
fn seed003_destination_rule_fails_over_region1_to_region2_and_back() {
    let r = explain(&[&format!("{S003}/3-destination-rule")], HELLO, "cluster1", &[]);
    let t = table(&r);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].1[0].0, "cluster1");
    assert_eq!(t[1].1[0].0, "cluster2");
    assert_close(share_by_cluster(&r, "cluster1"), 100.0);
    // helloworld-v1 scaled to 0, as the step's folder has it and as `--down` asks.
    let r = explain(&[&format!("{S003}/4-v1-scaled-to-0")], HELLO, "cluster1", &[]);
    assert_close(share_by_cluster(&r, "cluster2"), 100.0);
    let r = explain(&[&format!("{S003}/3-destination-rule")], HELLO, "cluster1", &["--down", "cluster=cluster1"]);
    assert_close(share_by_cluster(&r, "cluster2"), 100.0);
    // Scaled up again: back on cluster1.
    let r = explain(&[&format!("{S003}/5-v1-scaled-up")], HELLO, "cluster1", &[]);
    assert_close(share_by_cluster(&r, "cluster1"), 100.0);
    // Istio turns panic off (minHealthPercent 0): with everything down nothing is picked.
    let r =
        explain(&[&format!("{S003}/3-destination-rule")], HELLO, "cluster1", &["--down", "cluster=cluster1", "--down", "cluster=cluster2"]);
    assert_eq!(r["no_healthy_upstream"], true);
    assert_eq!(r["panic"], false);
}

#[test]
fn seed003_verbatim_blocks_get_precise_advice() {
    // Alone (no topology) the raw blocks are accepted as they stand.
    let (code, out, _) = veer(&["validate", "-f", "crates/veer/tests/fixtures/seed-003-verbatim.yaml"]);
    assert_eq!(code, 0, "{out}");
    // Next to a two-cluster topology veer asks which cluster holds the east-west Gateway (what
    // `kubectl --context` said in the seed) and spots the unexpanded shell variables.
    let (code, out, _) = veer(&["validate", "-f", "crates/veer/tests/fixtures/seed-003-verbatim.yaml", &format!("{E003}/topology.yaml")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("shell variable left unexpanded"), "{out}");
    assert!(out.contains("Gateway/default/cross-network-gateway: metadata.labels: several clusters are defined"), "{out}");
}

// === seed 004: Envoy Gateway fallback ===

const E004: &str = "examples/004-envoy-gateway-fallback";

#[test]
fn seed004_active_backend_first_then_passive() {
    let r = explain(&[E004], "www.example.com", "local", &["--path", "/test"]);
    let t = table(&r);
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].0, t[1].0), (100, 0));
    assert_eq!(t[0].1[0].1, "127.0.0.11:3000");
    assert_eq!(t[1].1[0].1, "127.0.0.12:3000");
    assert_eq!(r["port"], 80);
    let r = explain(&[E004], "www.example.com", "local", &["--down", "127.0.0.11"]);
    let t = table(&r);
    assert_eq!((t[0].0, t[1].0), (0, 100));
    assert_close(t[1].1[0].2, 100.0);
}

// === seed 002: Service Router Operator resources ===

/// Seed 002's later steps, each a complete set (unchanged files are links to `E002`'s).
const S002: &str = "examples/steps/002-dns-regional-takeover";

#[test]
fn seed002_every_step_validates() {
    let dirs = example_folders(E002);
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    assert_folders_validate(&dirs);
}

// === the command itself ===

#[test]
fn validate_reports_located_errors_and_exits_1() {
    let bad = "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestinaton\nmetadata:\n  name: x\nspec: {}\n";
    let dir = TempDir::new("bad");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, bad).expect("write temp file");
    let (code, out, _) = veer(&["validate", "-f", path.to_str().unwrap_or_default()]);
    assert_eq!(code, 1);
    assert!(out.contains(":2:7: error:") && out.contains("did you mean \"VirtualDestination\""), "{out}");
}

#[test]
fn validate_locates_the_first_byte_that_is_not_utf8_and_exits_1() {
    let dir = TempDir::new("not-utf8");
    let path = dir.join("latin1.yaml");
    std::fs::write(&path, b"apiVersion: v1\nkind: Service\nmetadata:\n  name: caf\xe9\n").expect("write");
    let (code, out, err) = veer(&["validate", "-f", path.to_str().unwrap_or_default()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("{}:4:12: error: not UTF-8 text: byte 0xe9", path.display())), "{out}{err}");
}

/// HTTPS listeners: `veer validate` resolves every certificateRef and checks what it finds, here
/// against a pair made by the real `openssl` (one PEM file, as HAProxy takes it).
#[test]
fn validate_resolves_every_certificate_ref_of_an_https_listener() {
    let dir = TempDir::new("https");
    let (key, crt) = (dir.join("k.pem.tmp"), dir.join("c.pem.tmp"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=a.example.com"])
        .args(["-addext", "subjectAltName=DNS:a.example.com", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl runs (.ci/run installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pem = std::fs::read_to_string(&crt).expect("certificate") + &std::fs::read_to_string(&key).expect("key");
    std::fs::write(dir.join("site.pem"), pem).expect("write");
    let gw = |refs: &str| {
        format!(
            "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {{name: edge}}\nspec: {{gateway: {{address: 127.0.0.1:8080, ports: {{'443': 127.0.0.1:8443}}}}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: veer\n  listeners:\n  - name: https\n    protocol: HTTPS\n    port: 443\n    hostname: a.example.com\n    tls:\n      certificateRefs: {refs}\n"
        )
    };
    let path = dir.join("gw.yaml");
    std::fs::write(&path, gw("[{name: missing}, {group: veer.io, kind: PEMFile, name: site.pem}]")).expect("write");
    let (code, out, err) = veer(&["validate", "-f", dir.to_str().unwrap_or_default()]);
    assert_eq!(code, 1, "{out}{err}");
    let want = format!("{}:17:", path.display());
    assert!(out.lines().any(|l| l.starts_with(&want) && l.contains("certificateRefs[0]: no Secret default/missing")), "{out}");
    std::fs::write(&path, gw("[{group: veer.io, kind: PEMFile, name: ./site.pem}]")).expect("write");
    let (code, out, err) = veer(&["validate", "-f", dir.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Envoy Gateway's default passive cap (10%) with 4 endpoints never ejects anything: validate
/// says so, located at the policy, though the seed's policy is otherwise fine.
#[test]
fn validate_warns_when_envoy_gateways_default_ejection_cap_is_below_one_of_four_endpoints() {
    let dir = TempDir::new("ejection-cap");
    let seed =
        std::fs::read_to_string(root().join(E004).join("seed.yaml")).expect("seed").replacen("      maxEjectionPercent: 100\n", "", 1);
    let more: String = (2..4).map(|i| format!("---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: active-{i}\n  namespace: default\nspec:\n  address: 127.0.0.{}\n  labels:\n    app: active\n    version: v1\n", 20 + i)).collect();
    let topology = std::fs::read_to_string(root().join(E004).join("topology.yaml")).expect("topology") + &more;
    std::fs::write(dir.join("seed.yaml"), seed).expect("write");
    std::fs::write(dir.join("topology.yaml"), topology).expect("write");
    let (code, out, err) = veer(&["validate", "-f", dir.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{out}{err}");
    let want = format!("{}:128:1: warning: BackendTrafficPolicy/default/passive-health-check: spec.healthCheck.passive.maxEjectionPercent: 10% of the 4 endpoint(s) of www.example.com", dir.join("seed.yaml").display());
    assert!(out.contains(&want) && out.contains("at least 25"), "{out}");
}

#[test]
fn explain_names_unknown_hosts_and_clusters() {
    let (code, _, err) = veer(&["explain", "-f", E004, "--host", "nope.example", "--from", "local"]);
    assert_eq!(code, 2);
    assert!(err.contains("no destination serves host") && err.contains("www.example.com"), "{err}");
    let (code, _, err) = veer(&["explain", "-f", E004, "--host", "www.example.com", "--from", "mars"]);
    assert_eq!(code, 2);
    assert!(err.contains("cluster \"mars\" is not defined"), "{err}");
    let (code, _, err) = veer(&["explain", "-f", E004, "--host", "www.example.com", "--from", "local", "--down", "cluster=mars"]);
    assert_eq!(code, 2);
    assert!(err.contains("no endpoint"), "{err}");
}

#[test]
fn validate_reads_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_veer"))
        .args(["validate", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn veer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: 70000\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("<stdin>:7:11: error: Service/default/a: spec.ports[0].port: 70000 is out of range"), "{text}");
}

/// Every printing subcommand, with stdout a pipe whose reader has already gone (`| head -1`
/// that has read its line): the write fails with EPIPE, and the command must end quietly.
#[test]
fn a_closed_stdout_pipe_ends_every_printing_command_quietly() {
    let pki = TempDir::new("epipe-pki");
    let pki_root = pki.join("root");
    let cases: Vec<Vec<String>> = vec![
        vec!["validate".into(), "-f".into(), E004.into()],
        vec![
            "explain".into(),
            "-f".into(),
            E004.into(),
            "--host".into(),
            "www.example.com".into(),
            "--from".into(),
            "local".into(),
            "-o".into(),
            "json".into(),
        ],
        vec!["explain".into(), "-f".into(), E004.into(), "--host".into(), "www.example.com".into(), "--from".into(), "local".into()],
        vec!["kinds".into()],
        vec!["dns".into(), "plan".into(), "-f".into(), E002.into()],
        vec!["dns".into(), "plan".into(), "-f".into(), E002.into(), "-o".into(), "json".into()],
        vec!["dns".into(), "endpoints".into(), "-f".into(), E002.into(), "--cluster".into(), "aks-weu-01".into()],
        vec!["pki".into(), "root".into(), "--out".into(), pki_root.display().to_string()],
        vec!["demo".into(), "004".into(), "--plain".into()],
        vec!["demo".into(), "--plain".into(), "--phase-seconds".into(), "1".into()],
    ];
    for args in &cases {
        // The reader end is closed before veer starts, so its first write meets EPIPE however
        // fast it runs: no race with the reader.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_veer"))
            .current_dir(root())
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run veer");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "veer {args:?} panicked: {err}");
        assert_eq!(out.status.code(), Some(0), "veer {args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "veer {args:?}: {err}");
    }
}

#[test]
fn demo_fails_over_and_back_without_errors() {
    let _serial = DEMO_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, out, err) = veer(&["demo", "--plain", "--phase-seconds", "7", "--rate", "100"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\n  errors: 0\n"), "{out}");
    assert!(out.contains("time to fail over: ") && out.contains("after west went down"), "{out}");
    assert!(out.contains("time to fail back: ") && out.contains("after west came back"), "{out}");
    assert!(out.contains("zero errors"), "{out}");
    assert!(!out.contains('\x1b'), "plain output must not carry escape sequences: {out}");
}

/// The widest line the live demo drew on a terminal `cols` wide (run under `script`, which
/// gives it a pseudo-terminal).
fn widest_live_line(cols: u16) -> usize {
    let bin = env!("CARGO_BIN_EXE_veer");
    let cmd = format!("stty cols {cols} rows 40; exec {bin} demo --phase-seconds 1 --rate 50");
    let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).current_dir(root()).output().expect("script (bsdutils) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\x1b[2K"), "no live redraw on a terminal: {text}");
    // Each live line is drawn as ESC[2K, the line, then a line end.
    text.split("\x1b[2K").skip(1).map(|drawn| drawn.split(['\r', '\n']).next().unwrap_or("").chars().count()).max().unwrap_or(0)
}

#[test]
fn the_live_demo_uses_the_terminals_width() {
    let _serial = DEMO_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let wide = widest_live_line(120);
    assert!(wide > 79 && wide < 120, "on 120 columns the widest live line is {wide} characters");
    let narrow = widest_live_line(50);
    assert!(narrow < 50, "on 50 columns the widest live line is {narrow} characters");
}

// === veer run, as a process ===

/// Reads the node's stderr until it logs its addresses.
fn wait_for_addresses(stderr: &mut impl std::io::BufRead) -> (String, String) {
    let mut line = String::new();
    for _ in 0..50 {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.contains("veer node running") {
            let field =
                |name: &str| line.split(&format!("{name}=")).nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("").to_string();
            return (field("gateway"), field("admin"));
        }
    }
    panic!("veer run did not report its addresses; last line: {line}");
}

#[test]
fn veer_run_serves_fails_over_and_stops_cleanly() {
    use std::io::BufReader;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let active = rt.block_on(veer_testkit::Backend::start("active-1", "127.0.0.41:0".parse().expect("addr"))).expect("backend");
    let passive = rt.block_on(veer_testkit::Backend::start("passive-1", "127.0.0.42:0".parse().expect("addr"))).expect("backend");
    let dir = TempDir::new("run");
    let manifest = format!(
        "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {{name: local}}\nspec: {{locality: {{region: r}}}}\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: active}}\nspec: {{endpoints: [{{ip: {{address: {}, port: {}}}}}]}}\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: passive}}\nspec: {{fallback: true, endpoints: [{{ip: {{address: {}, port: {}}}}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec: {{gatewayClassName: veer, listeners: [{{name: http, protocol: HTTP, port: 80}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  hostnames: [www.example.com]\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs:\n    - {{group: gateway.envoyproxy.io, kind: Backend, name: active}}\n    - {{group: gateway.envoyproxy.io, kind: Backend, name: passive}}\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{name: hc}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]\n  healthCheck: {{passive: {{consecutive5XxErrors: 1, maxEjectionPercent: 100, interval: 1s, baseEjectionTime: 10s}}}}\n",
        active.addr().ip(), active.addr().port(), passive.addr().ip(), passive.addr().port()
    );
    std::fs::write(dir.join("world.yaml"), manifest).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_veer"))
        .args(["run", "-f", dir.to_str().unwrap_or_default(), "--cluster", "local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn veer run");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (gateway, admin) = wait_for_addresses(&mut stderr);
    let spec = |rate: u32, secs: f64| veer_testkit::LoadSpec {
        target: gateway.parse().expect("gateway address"),
        host: "www.example.com".into(),
        path: "/".into(),
        method: Default::default(),
        rate_per_sec: rate,
        duration: std::time::Duration::from_secs_f64(secs),
        connections: 8,
        timeout: std::time::Duration::from_secs(5),
        http2: false,
    };
    let before = rt.block_on(veer_testkit::run(spec(200, 0.5)));
    assert_eq!(before.errors(), 0);
    assert!(before.by_backend().keys().all(|b| b == "active-1"), "{:?}", before.by_backend());
    rt.block_on(active.set_mode(veer_testkit::Mode::Refuse)).expect("refuse");
    let after = rt.block_on(veer_testkit::run(spec(200, 1.0)));
    assert_eq!(after.errors(), 0, "{:?}", after.samples.iter().filter(|s| s.status != Some(200)).take(3).collect::<Vec<_>>());
    assert!(after.by_backend().keys().all(|b| b == "passive-1"), "{:?}", after.by_backend());
    // The admin listener tells what happened.
    let events = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(admin.as_str()).await.expect("admin connect");
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let req = http::Request::get("/events").header("host", "admin").body(http_body_util::Empty::new()).expect("request");
        let resp = send.send_request(req).await.expect("events");
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    });
    assert!(events.contains("\"kind\": \"ejection\"") && events.contains("\"kind\": \"priority_change\""), "{events}");
    // SIGTERM: graceful stop, exit 0.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

/// One GET through `addr` with a fresh connection: the status, or `None` if nothing came in `wait`.
/// A `veer run` child that is sent SIGTERM and waited for when dropped.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// `veer status` against a running node says, per destination, what holds each endpoint out
/// (here: ejected by outlier detection, with until when) while the same address serves another
/// destination, and why a destination has no endpoint (a remote network that does not expose it).
#[test]
fn veer_status_says_what_holds_each_endpoint_out_and_why_a_destination_has_none() {
    use std::io::BufReader;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let active = rt.block_on(veer_testkit::Backend::start("active-1", "127.0.0.61:0".parse().expect("addr"))).expect("backend");
    let passive = rt.block_on(veer_testkit::Backend::start("passive-1", "127.0.0.62:0".parse().expect("addr"))).expect("backend");
    let dir = TempDir::new("status");
    let (ip, port) = (active.addr().ip(), active.addr().port());
    let manifest = format!(
        "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {{name: local}}\nspec: {{network: n1, locality: {{region: r}}}}\n---\n\
         apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {{name: far}}\nspec: {{network: n2, locality: {{region: r2}}}}\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: active}}\nspec: {{endpoints: [{{ip: {{address: {ip}, port: {port}}}}}]}}\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: passive}}\nspec: {{fallback: true, endpoints: [{{ip: {{address: {}, port: {}}}}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, labels: {{topology.istio.io/cluster: local}}}}\nspec: {{gatewayClassName: veer, listeners: [{{name: http, protocol: HTTP, port: 80}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  hostnames: [www.example.com]\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs:\n    - {{group: gateway.envoyproxy.io, kind: Backend, name: active}}\n    - {{group: gateway.envoyproxy.io, kind: Backend, name: passive}}\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{name: hc}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]\n  healthCheck: {{passive: {{consecutive5XxErrors: 1, maxEjectionPercent: 100, interval: 1s, baseEjectionTime: 60s}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop, labels: {{topology.istio.io/cluster: local}}}}\nspec: {{selector: {{app: web}}, ports: [{{name: http, port: {port}}}]}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: web-1, namespace: shop, labels: {{topology.istio.io/cluster: local}}}}\nspec: {{address: {ip}, labels: {{app: web}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: far, namespace: shop, labels: {{topology.istio.io/cluster: far}}}}\nspec: {{selector: {{app: far}}, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: far-1, namespace: shop, labels: {{topology.istio.io/cluster: far}}}}\nspec: {{address: 127.0.0.63, labels: {{app: far}}}}\n",
        passive.addr().ip(),
        passive.addr().port()
    );
    std::fs::write(dir.join("world.yaml"), manifest).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_veer"))
        .args([
            "run",
            "-f",
            dir.to_str().unwrap_or_default(),
            "--cluster",
            "local",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn veer run");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    // Stopped however the test ends: a failed assertion must not leave the node running.
    let child = StopOnDrop(child);
    let (gateway, admin) = wait_for_addresses(&mut stderr);
    // Drain the node's log so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    rt.block_on(active.set_mode(veer_testkit::Mode::Refuse)).expect("refuse");
    // A request refused by the active backend ejects it at once (and is retried on passive);
    // ask until the node's status shows it: each round trip is a request and a status call.
    let last = std::cell::RefCell::new(String::new());
    let mut status = Value::Null;
    let what = veer_testkit::lazy(|| format!("the active endpoint was never shown ejected: {}", last.borrow()));
    wait_until(what, std::time::Duration::from_secs(10), || {
        let code = rt.block_on(get_status(&gateway, "www.example.com", "/", std::time::Duration::from_secs(5)));
        assert_eq!(code, Some(200), "the retry on passive answers");
        let (rc, out, err) = veer(&["status", "--admin", &admin, "-o", "json"]);
        assert_eq!(rc, 0, "{err}");
        let v: Value = serde_json::from_str(&out).expect("status JSON");
        *last.borrow_mut() = out;
        let held = v["destinations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["destination"].as_str().is_some_and(|k| k.starts_with("www.example.com")))
            .flat_map(|d| d["endpoints"].as_array().cloned().unwrap_or_default())
            .any(|e| e["held"]["reason"] == "ejected");
        status = v;
        held
    });
    let dest = |prefix: &str| {
        status["destinations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["destination"].as_str().is_some_and(|k| k.starts_with(prefix)))
            .cloned()
            .unwrap_or_default()
    };
    let route = dest("www.example.com");
    let ejected = route["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["address"] == format!("{ip}:{port}").as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(ejected["healthy"], false, "{route}");
    assert!(
        ejected["held"]["detail"].as_str().is_some_and(|d| d.contains("ejected by outlier detection after a refused connect")),
        "{route}"
    );
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    assert!(ejected["held"]["until_unix_ms"].as_u64().is_some_and(|t| t > now_ms + 30_000), "ejected for 60 s: {route}");
    // The same address serves the Service's destination: healthy there, and said so.
    let web = dest(&format!("web.shop.svc.cluster.local:{port}"));
    assert_eq!(web["endpoints"][0]["healthy"], true, "{web}");
    assert!(web["endpoints"][0]["held"].is_null(), "{web}");
    // The remote network's Service: no endpoint, and why.
    let far = dest("far.shop.svc.cluster.local:80");
    assert_eq!(far["active_priority"], -1, "{far}");
    assert!(
        far["why_none"]
            .as_str()
            .is_some_and(|w| w.starts_with("no endpoints") && w.contains("no AUTO_PASSTHROUGH east-west Gateway there exposes")),
        "{far}"
    );
    // The table says the same in words.
    let (rc, text, err) = veer(&["status", "--admin", &admin]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        text.contains(&format!("    out: {ip}:{port} (local, P0): ejected by outlier detection after a refused connect or a reset until ")),
        "{text}"
    );
    assert!(text.contains("    why none: no endpoints; cluster far is on network \"n2\""), "{text}");
    let web_block: String =
        text.lines().skip_while(|l| !l.starts_with("web.shop.svc.cluster.local")).skip(1).take_while(|l| l.starts_with("    ")).collect();
    assert!(!web_block.contains("out:"), "{text}");
    drop(child);
}

async fn get_status(addr: &str, host: &str, path: &str, wait: std::time::Duration) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out).split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(wait, ask).await.ok().flatten()
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name, which may hold spaces: state is the first, utime the 12th.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn veer_run_out_of_files_does_not_spin_keeps_admin_answering_and_serves_again() {
    use std::io::BufReader;
    use std::time::Duration;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let backend = rt.block_on(veer_testkit::Backend::start("only-1", "127.0.0.43:0".parse().expect("addr"))).expect("backend");
    let dir = TempDir::new("emfile");
    let manifest = format!(
        "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata: {{name: local}}\nspec: {{locality: {{region: r}}}}\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: only}}\nspec: {{endpoints: [{{ip: {{address: {}, port: {}}}}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec: {{gatewayClassName: veer, listeners: [{{name: http, protocol: HTTP, port: 80}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  hostnames: [www.example.com]\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs:\n    - {{group: gateway.envoyproxy.io, kind: Backend, name: only}}\n",
        backend.addr().ip(),
        backend.addr().port()
    );
    std::fs::write(dir.join("world.yaml"), manifest).expect("write");
    // 64 files in all (soft and hard), and a cap far above them: accepting runs into EMFILE.
    let mut child = Command::new("bash")
        .args(["-c", "ulimit -n 64 && exec \"$@\"", "veer", env!("CARGO_BIN_EXE_veer")])
        .args([
            "run",
            "-f",
            dir.to_str().unwrap_or_default(),
            "--cluster",
            "local",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--max-connections",
            "10000",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn veer run");
    let pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    // A failed assertion must not leave it running.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let (gateway, admin) = wait_for_addresses(&mut stderr);
    // Keep reading its log, so a full pipe never blocks it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    assert_eq!(rt.block_on(get_status(&gateway, "www.example.com", "/", Duration::from_secs(5))), Some(200));

    let metric = |text: &str, series: &str| {
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    let emfile = r#"veer_accept_errors_total{listener="gateway",kind="emfile"} "#;
    let held = rt.block_on(async {
        // More clients than files: the last ones wait in the accept queue.
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(tokio::net::TcpStream::connect(gateway.as_str()).await.expect("the kernel completes the handshake"));
        }
        held
    });
    // Out of files, the admin listener still answers (it gives up its reserve file for one
    // connection at a time) and says the gateway ran into EMFILE.
    let last = std::cell::RefCell::new(None);
    let what = veer_testkit::lazy(|| format!("no answer from admin with EMFILE counted: {:?}", last.borrow()));
    wait_until(what, Duration::from_secs(10), || {
        let text = rt.block_on(async {
            let ask = async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(admin.as_str()).await.ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await.ok()?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.ok()?;
                Some(String::from_utf8_lossy(&out).into_owned())
            };
            tokio::time::timeout(Duration::from_secs(2), ask).await.ok().flatten()
        });
        let counted = text.as_deref().is_some_and(|t| metric(t, emfile) > 0.0);
        *last.borrow_mut() = text;
        counted
    });
    // Still out of files: veer waits, it does not spin.
    let ticks_per_s: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let (t0, c0) = (veer_testkit::clock::std_now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu_ticks(pid) - c0) as f64 / ticks_per_s;
    let elapsed = veer_testkit::clock::std_since(t0).as_secs_f64();
    assert!(used < 0.3 * elapsed, "veer used {used:.2} s of CPU in {elapsed:.2} s while out of files");
    assert_eq!(rt.block_on(get_status(&admin, "admin", "/healthz", Duration::from_secs(5))), Some(200), "admin answers while out of files");
    // The clients leave: veer serves again.
    drop(held);
    let served = (0..20).any(|_| rt.block_on(get_status(&gateway, "www.example.com", "/", Duration::from_secs(3))) == Some(200));
    assert!(served, "veer does not serve again once files are free");
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

// === seed 002: `veer dns endpoints` and `veer dns plan` ===

const E002: &str = "examples/002-dns-regional-takeover";

/// `veer dns endpoints` for `files`; checks the YAML passes `veer validate` and returns
/// (DNSEndpoint name, dnsName, type, target) of each document, and the whole output.
fn dns_endpoints(files: &[String], cluster: &str) -> (Vec<(String, String, String, String)>, String) {
    let mut args = vec!["dns", "endpoints"];
    for f in files {
        args.extend(["-f", f.as_str()]);
    }
    args.extend(["--cluster", cluster, "-o", "yaml"]);
    let (code, out, err) = veer(&args);
    assert_eq!(code, 0, "{args:?}: {err}");
    // A directory of its own per call: tests running at once ask for the same cluster's output.
    let dir = TempDir::new(&format!("out-{cluster}"));
    let path = dir.join("endpoints.yaml");
    std::fs::write(&path, &out).expect("write");
    let (code, v, _) = veer(&["validate", "-f", path.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "veer validate rejects what veer dns endpoints wrote:\n{v}\n{out}");
    assert!(v.contains("0 error(s), 0 warning(s)"), "{v}");
    let mut rows = Vec::new();
    // Each object is JSON (which is YAML), so every string in it stays a string for kubectl.
    for doc in out.split("\n---\n").filter(|d| d.contains("\"DNSEndpoint\"")) {
        let v: Value = serde_json::from_str(doc).expect("a DNSEndpoint is a JSON object");
        let record = &v["spec"]["endpoints"][0];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        rows.push((text(&v["metadata"]["name"]), text(&record["dnsName"]), text(&record["recordType"]), text(&record["targets"][0])));
    }
    (rows, out)
}

fn route_rows(rows: &[(String, String, String, String)]) -> Vec<(String, String)> {
    rows.iter().filter(|r| r.2 == "CNAME").map(|r| (r.0.clone(), r.3.clone())).collect()
}

#[test]
fn veer_run_refuses_a_bad_dns_key_file_or_network_naming_it() {
    let dir = TempDir::new("dns-flags");
    let key = dir.join("xfr.key");
    std::fs::write(&key, "hmac-md5:k:c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n").expect("write");
    let key = key.to_str().unwrap_or_default().to_string();
    let base = ["run", "-f", E002, "--cluster", "aks-weu-01", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--dns", "127.0.0.1:0"];
    let (code, _, err) = veer_run_refused(&[&base[..], &["--dns-tsig-key-file", &key]].concat());
    assert_ne!(code, 0);
    assert!(err.contains(&format!("{key}:1: algorithm \"hmac-md5\" is not one of")), "{err}");
    let (code, _, err) = veer_run_refused(&[&base[..], &["--dns-tsig-key-file", "/nonexistent/xfr.key"]].concat());
    assert_ne!(code, 0);
    assert!(err.contains("cannot read TSIG key file /nonexistent/xfr.key"), "{err}");
    let (code, _, err) = veer_run_refused(&[&base[..], &["--dns-rrl-exempt", "10.0.0.0/33"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dns-rrl-exempt"), "{err}");
    let (code, _, err) = veer_run_refused(&[&base[..], &["--dns-tcp-idle", "0s"]].concat());
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("--dns-tcp-idle must be longer than 0"), "{err}");
    let (code, _, err) = veer_run_refused(&[&base[..], &["--dns-tcp-clients", "0"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dns-tcp-clients"), "{err}");
    // etcd endpoints: only http://HOST:PORT, and only with --dns (which writes the zones).
    for bad in ["https://10.0.0.1:2379", "10.0.0.1:2379", "http://10.0.0.1:2379/v3"] {
        let (code, _, err) = veer_run_refused(&[&base[..], &["--etcd", bad]].concat());
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains(&format!("--etcd \"{bad}\"")) && err.contains("http://HOST:PORT"), "{bad}: {err}");
    }
    let (code, _, err) = veer_run_refused(&["run", "-f", E002, "--cluster", "aks-weu-01", "--etcd", "http://127.0.0.1:2379"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dns"), "{err}");
}

/// One cluster as its own operator sees it, without any DNSPolicy.
const NEU_WITHOUT_POLICY: &str = "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: aks-neu-01\nspec:\n  locality:\n    region: neu\n---\n\
apiVersion: cluster.router.io/v1alpha1\nkind: DNSConfiguration\nmetadata:\n  name: dns-config\nspec:\n  externalDNSControllers:\n  - name: external-dns-neu\n    region: neu\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: Gateway\nmetadata:\n  name: default-gateway\n  namespace: istio-ingress\nspec:\n  controller: aks-istio-ingressgateway-internal\n  targetPostfix: internal\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: ServiceRoute\nmetadata:\n  name: web\n  namespace: myapp\nspec:\n  serviceName: web\n  gatewayName: default-gateway\n  gatewayNamespace: istio-ingress\n  environment: prod\n  application: myapp\n";

#[test]
fn seed002_dns_endpoints_follow_the_operator_naming_in_every_scenario_and_validate() {
    let cname = "web-ns-p-prod-myapp.example.com";
    let to = |n: &str, t: &str| (n.to_string(), t.to_string());

    // Normal operation, Active mode in weu: one route endpoint, gateway A records in every zone.
    let (rows, _) = dns_endpoints(&[E002.to_string()], "aks-weu-01");
    assert_eq!(route_rows(&rows), [to("web-external-dns-weu", "aks01-weu-internal.example.com")]);
    assert!(rows.iter().all(|r| r.2 != "CNAME" || r.1 == cname), "{rows:?}");
    let gateways: Vec<&str> = rows.iter().filter(|r| r.2 == "A").map(|r| r.0.as_str()).collect();
    assert_eq!(
        gateways,
        [
            "gateway-controller-aks-istio-ingressgateway-internal-internal-external-dns-weu",
            "gateway-controller-aks-istio-ingressgateway-internal-internal-external-dns-neu",
            "gateway-controller-aks-istio-ingressgateway-internal-internal-external-dns-frc"
        ]
    );
    assert!(rows.iter().filter(|r| r.2 == "A").all(|r| r.1 == "aks01-weu-internal.example.com" && r.3 == "127.0.3.11"), "{rows:?}");

    // RegionBound from weu: every controller's zone points at weu.
    let (rows, _) = dns_endpoints(&[format!("{S002}/4-regionbound")], "aks-weu-01");
    assert_eq!(
        route_rows(&rows),
        [
            to("web-external-dns-weu", "aks01-weu-internal.example.com"),
            to("web-external-dns-neu", "aks01-weu-internal.example.com"),
            to("web-external-dns-frc", "aks01-weu-internal.example.com")
        ]
    );

    // Failover: neu adopts weu.
    let (rows, out) = dns_endpoints(&[format!("{S002}/2-neu-adopts-weu")], "aks-neu-01");
    assert_eq!(
        route_rows(&rows),
        [to("web-external-dns-neu", "aks01-neu-internal.example.com"), to("web-external-dns-weu", "aks01-neu-internal.example.com")]
    );
    assert!(out.contains(r#""external-dns.alpha.kubernetes.io/controller": "external-dns-weu""#), "{out}");
    assert!(
        out.contains(r#""router.io/serviceroute": "web""#)
            && out.contains(r#""router.io/source-namespace": "myapp""#)
            && out.contains(r#""app.kubernetes.io/managed-by": "service-router-operator""#),
        "{out}"
    );

    // Recovery: the adoption removed, neu writes its own region only.
    let (rows, _) = dns_endpoints(&[format!("{S002}/3-adoption-removed")], "aks-neu-01");
    assert_eq!(route_rows(&rows), [to("web-external-dns-neu", "aks01-neu-internal.example.com")]);

    // A cluster whose namespace has no DNSPolicy: the operator waits, and so does veer.
    let dir = TempDir::new("nopolicy");
    std::fs::write(dir.join("neu.yaml"), NEU_WITHOUT_POLICY).expect("write");
    let (rows, out) = dns_endpoints(&[format!("{S002}/2-neu-adopts-weu/neu-identity.yaml"), dir.display().to_string()], "aks-neu-01");
    assert!(route_rows(&rows).is_empty(), "{rows:?}");
    assert!(out.contains("DNSPolicyNotFound"), "{out}");
}

/// `veer dns plan` and `veer dns endpoints` read the same files and must agree, record for
/// record, on what each cluster's controllers write (the gateway A records of zones no route
/// claims were printed by one and missing from the other).
#[test]
fn seed002_dns_plan_and_dns_endpoints_agree_on_every_record_of_every_cluster() {
    // The starting state and every step: Active, NEU adopting WEU, the adoption removed, RegionBound.
    let sets: Vec<Vec<String>> = example_folders(E002).into_iter().map(|d| vec![d]).collect();
    let mut compared = 0;
    for files in &sets {
        let mut args = vec!["dns", "plan", "-o", "json"];
        for f in files {
            args.extend(["-f", f.as_str()]);
        }
        let (code, out, err) = veer(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let plan: Value = serde_json::from_str(&out).expect("plan JSON");
        let clusters: Vec<String> =
            plan["clusters"].as_array().expect("clusters").iter().map(|c| c["cluster"].as_str().unwrap_or_default().to_string()).collect();
        // weu/cluster.yaml with the RegionBound step has no ClusterIdentity: no cluster to compare.
        compared += clusters.len();
        for cluster in &clusters {
            let mut in_plan: Vec<(String, String, String)> = plan["zones"]
                .as_array()
                .expect("zones")
                .iter()
                .flat_map(|z| z["records"].as_array().cloned().unwrap_or_default())
                .filter(|r| r["cluster"] == cluster.as_str())
                .map(|r| {
                    (
                        r["endpoint"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_string(),
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["target"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            in_plan.sort();
            let (rows, _) = dns_endpoints(files, cluster);
            let mut printed: Vec<(String, String, String)> = rows.into_iter().map(|(name, dns, _, target)| (name, dns, target)).collect();
            printed.sort();
            assert_eq!(in_plan, printed, "{files:?}, cluster {cluster}: plan (left) and endpoints (right) disagree");
            // The plan filtered to the cluster shows the same records.
            let mut one = args.clone();
            one.extend(["--cluster", cluster.as_str()]);
            let (code, out, err) = veer(&one);
            assert_eq!(code, 0, "{err}");
            let only: Value = serde_json::from_str(&out).expect("plan JSON");
            let n = only["zones"]
                .as_array()
                .expect("zones")
                .iter()
                .flat_map(|z| z["records"].as_array().cloned().unwrap_or_default())
                .filter(|r| r["cluster"] == cluster.as_str())
                .count();
            assert_eq!(n, in_plan.len(), "{one:?}: {out}");
        }
    }
    assert_eq!(compared, 12, "three clusters in each of four sets");
}

/// Both clusters of seed 002 in one labelled set, as every node reads it.
fn shared_002(dir: &std::path::Path, neu_adopts: &str) {
    for (cluster, region, adopts) in [("aks-weu-01", "weu", "[]"), ("aks-neu-01", "neu", neu_adopts)] {
        let label = format!("  labels:\n    topology.istio.io/cluster: {cluster}\n");
        let text = format!(
            "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {cluster}\nspec:\n  locality:\n    region: {region}\n---\n\
apiVersion: cluster.router.io/v1alpha1\nkind: ClusterIdentity\nmetadata:\n  name: cluster-identity\n{label}spec:\n  region: {region}\n  cluster: aks01\n  domain: example.com\n  environmentLetter: p\n  adoptsRegions: {adopts}\n---\n\
apiVersion: cluster.router.io/v1alpha1\nkind: DNSConfiguration\nmetadata:\n  name: dns-config\n{label}spec:\n  externalDNSControllers:\n  - name: external-dns-weu\n    region: weu\n  - name: external-dns-neu\n    region: neu\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: Gateway\nmetadata:\n  name: default-gateway\n  namespace: istio-ingress\n{label}spec:\n  controller: aks-istio-ingressgateway-internal\n  targetPostfix: internal\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: ServiceRoute\nmetadata:\n  name: web\n  namespace: myapp\n{label}spec:\n  serviceName: web\n  gatewayName: default-gateway\n  gatewayNamespace: istio-ingress\n  environment: prod\n  application: myapp\n---\n\
apiVersion: routing.router.io/v1alpha1\nkind: DNSPolicy\nmetadata:\n  name: default\n  namespace: myapp\n{label}spec:\n  mode: Active\n  sourceRegion: {region}\n"
        );
        std::fs::write(dir.join(format!("{region}.yaml")), text).expect("write");
    }
}

#[test]
fn seed002_dns_plan_names_writers_and_what_a_takeover_would_change() {
    let dir = TempDir::new("plan");
    shared_002(&dir, "[]");
    let d = dir.display().to_string();
    let (code, out, err) = veer(&["dns", "plan", "-f", &d, "--down", "cluster=aks-weu-01", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let weu = v["zones"].as_array().and_then(|z| z.iter().find(|z| z["zone"]["region"] == "weu")).cloned().expect("weu zone");
    assert_eq!(weu["writer"], "aks-weu-01");
    assert_eq!(weu["writer_down"], true);
    let t = &v["takeovers"][0];
    assert_eq!(t["adopter"], "aks-neu-01");
    assert_eq!(t["epoch"], 2);
    assert!(
        t["records"].as_array().is_some_and(|r| r.iter().any(|r| r["type"] == "CNAME" && r["target"] == "aks01-neu-internal.example.com")),
        "{t}"
    );
    let (_, table, _) = veer(&["dns", "plan", "-f", &d, "--down", "cluster=aks-weu-01"]);
    assert!(table.contains("WRITER DOWN") && table.contains("with adoptsRegions: [weu] on aks-neu-01"), "{table}");

    // With the adoption in place, neu writes the weu zone; weu's own claim is outranked, and
    // `dns endpoints` for weu withholds its route record for that zone.
    shared_002(&dir, "[weu]");
    let (_, table, _) = veer(&["dns", "plan", "-f", &d]);
    assert!(table.contains("zone weu/example.com (controller external-dns-weu): written by aks-neu-01 (adoption, epoch 2)"), "{table}");
    let (code, out, err) = veer(&["dns", "endpoints", "-f", &d, "--cluster", "aks-weu-01"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# withheld: web-external-dns-weu") && !out.contains("name: web-external-dns-weu"), "{out}");
}

// === veer demo <seed>: the seeds' walkthroughs played live ===

/// Demo walks run one at a time: each starts nodes, backends and clients at hundreds of requests
/// per second, and two at once on a small CI machine would measure each other.
static DEMO_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `veer demo <seed> --plain` and checks it exits 0 with `steps` steps, each passed;
/// returns what it printed.
fn assert_demo_passes(seed: &str, steps: usize) -> String {
    let (code, out, err) = veer(&["demo", seed, "--plain", "--rate", "100"]);
    assert_eq!(code, 0, "veer demo {seed} failed:\n{out}\n{err}");
    let summary = out.split(&format!("summary of veer demo {seed}")).nth(1).unwrap_or_else(|| panic!("no summary:\n{out}"));
    let passed = summary.lines().filter(|l| l.starts_with("  ✓ step ")).count();
    let failed = summary.lines().filter(|l| l.starts_with("  ✗ step ")).count();
    assert_eq!((passed, failed), (steps, 0), "{out}");
    assert!(summary.contains("errors: 0\n") && summary.contains("every step as the seed says, with zero client errors"), "{out}");
    out
}

/// Every folder of `dirs` validates by itself (`veer validate -f DIR` exits 0).
fn assert_folders_validate(dirs: &[String]) {
    for dir in dirs {
        let (code, out, err) = veer(&["validate", "-f", dir]);
        assert_eq!(code, 0, "veer validate -f {dir}:\n{out}{err}");
    }
}

/// The base folder of a seed's example and each of its step folders.
fn example_folders(base: &str) -> Vec<String> {
    let name = base.trim_start_matches("examples/");
    let mut dirs = vec![base.to_string()];
    let steps = root().join("examples/steps").join(name);
    let mut found: Vec<String> = std::fs::read_dir(&steps)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| format!("examples/steps/{name}/{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    dirs.extend(found);
    dirs
}

#[test]
fn demo_000_gloo_walk_plays_every_step_as_the_seed_says() {
    let _serial = DEMO_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_demo_passes("000", 7);
}

#[test]
fn demo_000_every_example_folder_validates() {
    let dirs = example_folders(E000);
    assert_eq!(dirs.len(), 7, "{dirs:?}");
    assert_folders_validate(&dirs);
}

#[test]
fn demo_001_smh_walk_plays_every_step_as_the_seed_says() {
    let _serial = DEMO_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_demo_passes("001", 6);
}

#[test]
fn demo_001_every_example_folder_validates() {
    // The seed's later steps change no manifest (web servers stopped and restored): no step folder.
    let dirs = example_folders(E001);
    assert_eq!(dirs, vec![E001.to_string()]);
    assert_folders_validate(&dirs);
}

#[test]
fn seed003_example_and_every_step_folder_validate() {
    let dirs = example_folders(E003);
    assert_eq!(dirs.len(), 5, "{dirs:?}");
    assert_folders_validate(&dirs);
}

#[test]
fn demo_004_walks_the_envoy_gateway_fallback_and_back() {
    let _serial = DEMO_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = assert_demo_passes("004", 3);
    assert!(out.contains("they all go to the passive backend") && out.contains("switched to passive in "), "{out}");
    assert!(out.contains("switched back to active in "), "{out}");
}

#[test]
fn demo_003_walks_istio_locality_failover_over_two_meshed_nodes() {
    let _serial = DEMO_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = assert_demo_passes("003", 6);
    assert!(out.contains("cluster1's node is connected to cluster2's over mTLS"), "{out}");
    assert!(
        out.contains("switched to helloworld-v2 (fail over) in ") && out.contains("switched back to helloworld-v1 (fail back) in "),
        "{out}"
    );
}

#[test]
fn demo_002_walks_the_regional_dns_takeover_on_three_nodes() {
    let _serial = DEMO_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = assert_demo_passes("002", 7);
    assert!(out.contains("WEU zone served by aks-neu-01 ") && out.contains("writer aks-neu-01 epoch 2"), "{out}");
    assert!(out.contains("weu users → 127.0.3.12:8080: web-neu 100%"), "WEU users follow the takeover to NEU:\n{out}");
    assert!(out.contains("WEU zone served by aks-weu-01 again ") && out.contains("writer aks-weu-01 epoch 3"), "{out}");
    assert!(out.contains("every zone served by aks-weu-01 "), "{out}");
}
