//! Integration tests of `veer-model`, driven from the outside through `from_sources`:
//!
//! - the broken-manifest corpus (`tests/corpus/NN-name.yaml`): every file yields the errors its
//!   `# expect…` header lines promise, at the exact `# expect-at: LINE:COL`;
//! - every example folder with a `seed.yaml` validates without errors (and finding none fails);
//! - an unknown key injected into any mapping of a handled kind's `spec` is reported, on its line;
//! - random and mutated input never panics;
//! - oversize and deeply nested input is refused with a clear message.
//!
//! Fixtures whose header starts `# Regression` pinned a bug the corpus found (a stack overflow on
//! deep nesting among them); they stay as regression tests.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use veer_model::diag::{Diagnostic, Severity};
use veer_model::from_sources;
use veer_model::inventory::Inventory;
use veer_model::resolve::View;
use veer_model::yaml::MAX_DEPTH;

#[path = "model/tls.rs"]
mod tls;
#[path = "model/tlsroute.rs"]
mod tlsroute;

// === helpers ===

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples_dir() -> PathBuf {
    crate_dir().join("../../examples")
}

/// Every finding, sorted: the warnings of an accepted set, or all a rejected one has.
fn load(sources: &[(String, String)]) -> Vec<Diagnostic> {
    match from_sources(sources) {
        Ok(accepted) => accepted.into_parts().1,
        Err(rejected) => rejected.into_diagnostics(),
    }
}

fn load_one(name: &str, text: &str) -> Vec<Diagnostic> {
    load(&[(name.to_string(), text.to_string())])
}

fn errors(diags: &[Diagnostic]) -> Vec<String> {
    diags.iter().filter(|d| d.severity == Severity::Error).map(ToString::to_string).collect()
}

/// `.yaml`/`.yml` files of `dir` (sorted), recursively, skipping folders named in `skip`.
fn yaml_files(dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            if !p.file_name().is_some_and(|n| skip.iter().any(|s| n == *s)) {
                yaml_files(&p, skip, out);
            }
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// === corpus ===

/// What a fixture's header promises.
#[derive(Debug, Default)]
struct Expectations {
    /// `# expect-at: LINE:COL`: an error at exactly this position that contains the first `expect`.
    at: Option<(usize, usize)>,
    /// `# expect: TEXT`: each appears in some error line.
    expect: Vec<String>,
    /// `# expect-not: TEXT`: appears in no diagnostic line at all.
    expect_not: Vec<String>,
    /// `# expect-errors: N`: exactly N errors.
    error_count: Option<usize>,
}

fn parse_header(text: &str) -> Result<Expectations, String> {
    let mut e = Expectations::default();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let Some(rest) = line.strip_prefix("# expect") else { continue };
        if let Some(s) = rest.strip_prefix(": ") {
            e.expect.push(s.trim_end().to_string());
        } else if let Some(s) = rest.strip_prefix("-not: ") {
            e.expect_not.push(s.trim_end().to_string());
        } else if let Some(s) = rest.strip_prefix("-errors: ") {
            e.error_count = Some(s.trim().parse().map_err(|_| format!("bad expect-errors line: {line}"))?);
        } else if let Some(s) = rest.strip_prefix("-at: ") {
            let (l, c) = s.trim().split_once(':').ok_or_else(|| format!("bad expect-at line: {line}"))?;
            let l = l.parse().map_err(|_| format!("bad expect-at line: {line}"))?;
            let c = c.parse().map_err(|_| format!("bad expect-at line: {line}"))?;
            e.at = Some((l, c));
        } else {
            return Err(format!("unknown header directive: {line}"));
        }
    }
    if e.at.is_none() {
        return Err("no `# expect-at: LINE:COL` header line".into());
    }
    if e.expect.is_empty() {
        return Err("no `# expect: TEXT` header line".into());
    }
    Ok(e)
}

/// Loads one fixture and checks its header's promises; `Err` says what went wrong.
fn check_fixture(path: &Path) -> Result<(), String> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or("file name is not UTF-8")?.to_string();
    let text = read(path);
    let want = parse_header(&text)?;
    let sources = [(name.clone(), text)];
    let diags = panic::catch_unwind(AssertUnwindSafe(|| load(&sources))).map_err(|_| "from_sources panicked".to_string())?;
    let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
    let errs = errors(&diags);
    let mut problems = Vec::new();
    if errs.is_empty() {
        problems.push("no error at all".to_string());
    }
    for e in &want.expect {
        if !errs.iter().any(|l| l.contains(e.as_str())) {
            problems.push(format!("no error contains {e:?}"));
        }
    }
    if let Some((line, col)) = want.at {
        let prefix = format!("{name}:{line}:{col}: error: ");
        if !errs.iter().any(|l| l.starts_with(&prefix) && l.contains(want.expect[0].as_str())) {
            problems.push(format!("no error at {line}:{col} contains {:?}", want.expect[0]));
        }
    }
    for e in &want.expect_not {
        if let Some(l) = all.iter().find(|l| l.contains(e.as_str())) {
            problems.push(format!("unexpected {e:?} in: {l}"));
        }
    }
    if let Some(n) = want.error_count {
        if errs.len() != n {
            problems.push(format!("expected {n} error(s), found {}", errs.len()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n    diagnostics:\n      {}", problems.join("\n    "), all.join("\n      ")))
    }
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    yaml_files(&crate_dir().join("tests").join(dir), &[], &mut out);
    out
}

#[test]
fn corpus_files_report_their_expected_errors() {
    let files = fixtures("corpus");
    assert!(files.len() >= 40, "expected at least 40 corpus files, found {}", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let numbered = name.len() > 3 && name.as_bytes()[..2].iter().all(u8::is_ascii_digit) && name.as_bytes()[2] == b'-';
        if !numbered || !name.ends_with(".yaml") {
            failures.push(format!("{name}: name is not NN-short-name.yaml"));
        }
        if let Err(e) = check_fixture(f) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} corpus files failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

// === examples ===

/// Folders under `dir` (itself included) that hold a `seed.yaml`; a folder without one is searched
/// further, so per-cluster layouts (`002-…/neu/seed.yaml`, `…/weu/seed.yaml`) are found too.
fn example_folders(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.join("seed.yaml").is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut subdirs: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir() && !p.ends_with("steps")).collect();
    subdirs.sort();
    for d in subdirs {
        example_folders(&d, out);
    }
}

/// Loads every example folder under `root`: their errors, if any. Finding none is an error too:
/// a check of nothing would pass whatever the examples say.
fn check_examples(root: &Path) -> Result<(), String> {
    let mut dirs = Vec::new();
    example_folders(root, &mut dirs);
    if dirs.is_empty() {
        return Err(format!("no example folder (one holding a seed.yaml) under {}", root.display()));
    }
    let mut failures = Vec::new();
    for dir in &dirs {
        let mut files = Vec::new();
        yaml_files(dir, &["steps"], &mut files);
        let sources: Vec<(String, String)> =
            files.iter().map(|f| (f.strip_prefix(root).unwrap_or(f).display().to_string(), read(f))).collect();
        let errs = errors(&load(&sources));
        if !errs.is_empty() {
            failures.push(format!("{}:\n  {}", dir.display(), errs.join("\n  ")));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("examples with errors:\n{}", failures.join("\n")))
    }
}

#[test]
fn examples_validate_without_errors() {
    if let Err(e) = check_examples(&examples_dir()) {
        panic!("{e}");
    }
}

#[test]
fn a_folder_without_examples_fails_the_examples_check() {
    let empty = std::env::temp_dir().join(format!("veer-model-no-examples-{}", std::process::id()));
    std::fs::create_dir_all(empty.join("steps")).expect("temp dir");
    let found = check_examples(&empty);
    let missing = check_examples(&empty.join("missing"));
    let _ = std::fs::remove_dir_all(&empty);
    assert!(found.as_ref().is_err_and(|e| e.starts_with("no example folder")), "{found:?}");
    assert!(missing.as_ref().is_err_and(|e| e.starts_with("no example folder")), "{missing:?}");
}

// === injected unknown keys ===

/// `(group, kind)` of every kind veer reads, with the versions it reads.
fn handled_kinds() -> Vec<(String, Vec<String>, String)> {
    veer_model::load::supported_kinds()
        .iter()
        .filter_map(|line| {
            let (api, kind) = line.split_once(' ')?;
            let (group, versions) = api.rsplit_once('/').unwrap_or(("", api));
            Some((group.to_string(), versions.split('|').map(str::to_string).collect(), kind.to_string()))
        })
        .collect()
}

fn is_handled(kinds: &[(String, Vec<String>, String)], api_version: &str, kind: &str) -> bool {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    kinds.iter().any(|(g, vs, k)| g == group && k == kind && vs.iter().any(|v| v == version))
}

/// A `key:` line: (leading spaces, whether a `- ` precedes the key, the key's 0-based column).
fn key_line(line: &str) -> Option<(usize, bool, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    let (dash, rest) = match rest.strip_prefix("- ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let key_len = rest.find(':')?;
    let key = &rest[..key_len];
    let after = &rest[key_len + 1..];
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()) && (after.is_empty() || after.starts_with(' '));
    is_key.then_some((indent, dash, indent + if dash { 2 } else { 0 }))
}

/// Every variant of `text` with `veerBogusField: 1` added beside one key inside the `spec` of a
/// handled kind (and beside `spec` itself), with the 1-based line the bogus key lands on.
fn bogus_key_variants(text: &str) -> Vec<(String, usize)> {
    const BOGUS: &str = "veerBogusField: 1";
    let kinds = handled_kinds();
    let lines: Vec<&str> = text.lines().collect();
    // The document each line belongs to, and whether that document is of a handled kind.
    let mut handled = vec![false; lines.len()];
    let mut start = 0;
    for end in (0..=lines.len()).filter(|&i| i == lines.len() || lines[i] == "---") {
        let doc = &lines[start..end];
        let field = |k: &str| doc.iter().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or("");
        let yes = is_handled(&kinds, field("apiVersion:"), field("kind:"));
        handled[start..end].iter_mut().for_each(|h| *h = yes);
        start = end + 1;
    }
    let mut out = Vec::new();
    let mut in_spec = false;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
            in_spec = line.starts_with("spec:");
        }
        if !in_spec || !handled[i] {
            continue;
        }
        let Some((indent, dash, col)) = key_line(line) else { continue };
        let mut variant: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        if dash {
            // `- key: v` becomes `- veerBogusField: 1` and `  key: v`: a sibling in the same item.
            variant[i] = format!("{}- {BOGUS}", " ".repeat(indent));
            variant.insert(i + 1, format!("{}{}", " ".repeat(col), &line[col..]));
        } else {
            variant.insert(i, format!("{}{BOGUS}", " ".repeat(col)));
        }
        out.push((variant.join("\n") + "\n", i + 1));
    }
    out
}

#[test]
fn injected_unknown_keys_are_reported_where_they_are() {
    let dir = examples_dir().join("004-envoy-gateway-fallback");
    let seed = read(&dir.join("seed.yaml"));
    let mut others = Vec::new();
    yaml_files(&dir, &["steps"], &mut others);
    let others: Vec<(String, String)> = others
        .iter()
        .filter(|p| !p.ends_with("seed.yaml"))
        .map(|p| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), read(p)))
        .collect();

    let variants = bogus_key_variants(&seed);
    assert!(variants.len() >= 10, "only {} insertion points found", variants.len());
    let mut failures = Vec::new();
    for (text, line) in &variants {
        let mut sources = vec![("seed.yaml".to_string(), text.clone())];
        sources.extend(others.iter().cloned());
        let diags = load(&sources);
        let hit = diags.iter().any(|d| {
            d.severity == Severity::Error && &*d.file == "seed.yaml" && d.pos.line == *line && d.to_string().contains("veerBogusField")
        });
        if !hit {
            let context: Vec<&str> = text.lines().skip(line.saturating_sub(3)).take(5).collect();
            failures.push(format!(
                "bogus key at line {line} not reported there:\n    {}\n  errors: {:?}",
                context.join("\n    "),
                errors(&diags)
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} injections missed:\n{}", failures.len(), variants.len(), failures.join("\n"));
}

// === robustness ===

/// Positions must point into the text: line and column at least 1, line at most the one after
/// the last line break (counting `\r` too, which YAML also treats as one), plus one more for the
/// end-of-input position.
fn check_positions(sources: &[(String, String)], diags: &[Diagnostic]) -> Result<(), String> {
    for d in diags {
        let text = sources.iter().find(|(n, _)| *n == *d.file).map(|(_, t)| t.as_str()).unwrap_or("");
        let max_line = text.bytes().filter(|b| *b == b'\n' || *b == b'\r').count() + 2;
        if d.pos.line == 0 || d.pos.col == 0 || d.pos.line > max_line {
            return Err(format!("position outside the text (last possible line {max_line}): {d}"));
        }
    }
    Ok(())
}

fn must_not_panic(sources: Vec<(String, String)>) -> Result<(), TestCaseError> {
    let diags = load(&sources);
    for d in &diags {
        let _ = d.to_string();
    }
    check_positions(&sources, &diags).map_err(TestCaseError::fail)
}

/// Every example folder's sources (as `examples_validate_without_errors` loads them), read once.
fn example_sets() -> &'static [Vec<(String, String)>] {
    static SETS: std::sync::OnceLock<Vec<Vec<(String, String)>>> = std::sync::OnceLock::new();
    SETS.get_or_init(|| {
        let mut dirs = Vec::new();
        example_folders(&examples_dir(), &mut dirs);
        let sets: Vec<Vec<(String, String)>> = dirs
            .iter()
            .map(|d| {
                let mut files = Vec::new();
                yaml_files(d, &["steps"], &mut files);
                files.iter().map(|f| (f.display().to_string(), read(f))).collect::<Vec<_>>()
            })
            .filter(|set| !set.is_empty())
            .collect();
        // Mutating a stand-in instead would pass without testing the examples.
        assert!(!sets.is_empty(), "no example folder (one holding a seed.yaml) under {}", examples_dir().display());
        sets
    })
}

/// Pieces of YAML and manifest syntax to build plausible garbage from.
const TOKENS: &[&str] = &[
    "\n",
    "\n",
    "  ",
    "    ",
    "- ",
    ": ",
    ":",
    "{",
    "}",
    "[",
    "]",
    ",",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "? ",
    "|\n",
    ">-\n",
    "\"",
    "'",
    "#",
    "\t",
    "~",
    "null",
    "true",
    "1",
    "-1",
    "70000",
    "1.5",
    "0x1F",
    "1s",
    "10",
    "5x",
    "apiVersion: v1\n",
    "kind: Service\n",
    "kind: List\nitems:\n",
    "metadata:\n",
    "  name: a\n",
    "  namespace: b\n",
    "spec:\n",
    "apiVersion: networking.gloo.solo.io/v2\n",
    "kind: VirtualDestination\n",
    "apiVersion: networking.istio.io/v1\n",
    "kind: DestinationRule\n",
    "kind: WorkloadEntry\n",
    "apiVersion: gateway.envoyproxy.io/v1alpha1\n",
    "kind: Backend\n",
    "apiVersion: veer.io/v1alpha1\n",
    "kind: Cluster\n",
    "apiVersion: networking.smh.solo.io/v1alpha2\n",
    "kind: FailoverService\n",
    "apiVersion: cluster.router.io/v1alpha1\n",
    "kind: ClusterIdentity\n",
    "ports",
    "port",
    "number",
    "hosts",
    "services",
    "labels",
    "selector",
    "endpoints",
    "fqdn",
    "ip",
    "address",
    "hostname",
    "outlierDetection",
    "interval",
    "localityLbSetting",
    "distribute",
    "failover",
    "to",
    "from",
    "backingServices",
    "kubeService",
    "topology.istio.io/cluster",
    "gateway",
    "127.0.0.1",
];

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Truncate(usize),
    DuplicateLine(usize),
    DeleteLine(usize),
    SwapLines(usize, usize),
    IndentLine(usize),
    Token(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::DeleteLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::IndentLine),
        (any::<usize>(), any::<usize>()).prop_map(|(p, t)| Mutation::Token(p, t)),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(p, b) => {
                if let Some(x) = bytes.get_mut(p % len) {
                    *x ^= b;
                }
            }
            Mutation::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), b),
            Mutation::Truncate(p) => bytes.truncate(p % len),
            Mutation::Token(p, t) => {
                let at = p % (bytes.len() + 1);
                bytes.splice(at..at, TOKENS[t % TOKENS.len()].bytes());
            }
            Mutation::DuplicateLine(i) | Mutation::DeleteLine(i) | Mutation::SwapLines(i, _) | Mutation::IndentLine(i) => {
                let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len();
                let i = i % n;
                match *m {
                    Mutation::DuplicateLine(_) => lines.insert(i, lines[i].clone()),
                    Mutation::DeleteLine(_) if n > 1 => {
                        lines.remove(i);
                    }
                    Mutation::SwapLines(_, j) => lines.swap(i, j % n),
                    Mutation::IndentLine(_) => {
                        lines[i].splice(0..0, *b"  ");
                    }
                    _ => {}
                }
                bytes = lines.join(&b'\n');
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// 256 cases per property (PROPTEST_CASES overrides it for a longer hunt); failures are printed,
/// not persisted to files.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        must_not_panic(vec![("bytes.yaml".into(), String::from_utf8_lossy(&bytes).into_owned())])?;
    }

    #[test]
    fn arbitrary_strings_never_panic(a in any::<String>(), b in any::<String>()) {
        must_not_panic(vec![("a.yaml".into(), a), ("b.yaml".into(), b)])?;
    }

    #[test]
    fn token_soup_never_panics(tokens in proptest::collection::vec(0..TOKENS.len(), 0..200)) {
        let text: String = tokens.iter().map(|&t| TOKENS[t]).collect();
        must_not_panic(vec![("soup.yaml".into(), text)])?;
    }

    /// One file of one example folder mutated, loaded with the folder's other files.
    #[test]
    fn mutated_examples_never_panic(
        set in any::<prop::sample::Index>(),
        file in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let sets = example_sets();
        let mut sources = sets[set.index(sets.len())].clone();
        let i = file.index(sources.len());
        sources[i].1 = mutate(&sources[i].1, &mutations);
        must_not_panic(sources)?;
    }
}

// === limits ===

#[test]
fn oversize_input_is_refused_with_its_size() {
    let mut text = String::from("apiVersion: v1\nkind: Service\nmetadata:\n  name: big\n");
    text.push_str(&"#".repeat(16 * 1024 * 1024 + 1 - text.len()));
    text.push('\n');
    assert!(text.len() > 16 * 1024 * 1024);
    // The set too, to show that nothing of the file made it in.
    let loaded = veer_model::from_sources_even_if_invalid(&[("big.yaml".to_string(), text.clone())]);
    let errs = errors(&loaded.diagnostics.into_sorted());
    assert_eq!(errs.len(), 1, "{errs:?}");
    let size = text.len().to_string();
    assert!(errs[0].starts_with("big.yaml:1:1: error: "), "{}", errs[0]);
    assert!(errs[0].contains("bytes") && errs[0].contains(&size), "message should give the size in bytes: {}", errs[0]);
    assert!(loaded.set.services().is_empty(), "nothing of an oversize file is read");
}

#[test]
fn deep_nesting_is_refused() {
    let depth = MAX_DEPTH + 44;
    // Block mappings, one level per line.
    let block: String = (0..depth).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
    // Flow sequences (yaml-rust2 limits these itself).
    let flow = format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    for (name, text) in [("block.yaml", block), ("flow.yaml", flow)] {
        let errs = errors(&load_one(name, &text));
        assert!(errs.iter().any(|e| e.contains("nesting deeper") || e.contains("recursion limit")), "{name}: {errs:?}");
    }
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = format!("*a{}", i - 1);
        text.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 10].join(", ")));
    }
    let errs = errors(&load_one("bomb.yaml", &text));
    assert!(errs.iter().any(|e| e.contains("alias bomb")), "{errs:?}");
}

// === HTTPRoute matches ===

const MATCHING_ROUTE: &str = "\
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: a}
spec: {endpoints: [{ip: {address: 127.0.0.11, port: 3000}}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, creationTimestamp: 2024-01-02T15:04:05Z}
spec:
  hostnames: [www.example.com]
  rules:
  - matches:
    - path: {type: Exact, value: /login}
      method: POST
      headers:
      - {name: X-Canary, value: \"yes\"}
      - {name: x-canary, value: other}
      - {type: RegularExpression, name: x-user, value: \"[a-z]+\"}
      queryParams:
      - {name: Debug, value: \"1\"}
    - path: {type: RegularExpression, value: \"/v[0-9]+/.*\"}
    backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: a}]
  - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: a}]
";

#[test]
fn httproute_matches_are_decoded_into_typed_matches() {
    use veer_model::httpmatch::{HeaderMatch, Method, PathMatch, Plain, QueryMatch, RouteMatch, ValueMatch};
    let accepted = from_sources(&[("r.yaml".into(), MATCHING_ROUTE.into())]).unwrap_or_else(|r| panic!("{r}"));
    let diags: Vec<String> = accepted.warnings().iter().map(ToString::to_string).collect();
    // The second `x-canary` (names compare case-insensitively) is ignored, as the spec says, and
    // says so.
    assert!(
        diags.iter().any(|d| d.starts_with("r.yaml:17:10: warning: ") && d.contains("x-canary") && d.contains("only the first")),
        "{diags:?}"
    );
    let route = &accepted.set().routes[0];
    assert_eq!(route.meta.created.as_deref(), Some("2024-01-02T15:04:05Z"));
    let first = &route.rules[0].matches[0];
    assert_eq!(first.path, PathMatch::Exact("/login".into()));
    assert_eq!(first.method, Some(Method::Post));
    assert_eq!(first.headers.len(), 2);
    assert_eq!(first.headers[0], HeaderMatch { name: "x-canary".into(), value: ValueMatch::Exact("yes".into()) });
    assert!(matches!(&first.headers[1].value, ValueMatch::Regex(p) if p.source() == "[a-z]+"));
    assert_eq!(first.query, vec![QueryMatch { name: "Debug".into(), value: ValueMatch::Exact("1".into()) }]);
    assert!(matches!(&route.rules[0].matches[1].path, PathMatch::Regex(p) if p.source() == "/v[0-9]+/.*"));
    // A rule without matches takes every request, as Gateway API's default match does.
    assert_eq!(route.rules[1].matches, vec![RouteMatch::any()]);
    let h = [("X-Canary", "yes"), ("x-user", "ann")];
    assert!(first.matches(&Plain { method: "POST", path: "/login", query: Some("Debug=1"), headers: &h }));
    assert!(!first.matches(&Plain { method: "POST", path: "/login", query: Some("debug=1"), headers: &h }));
}

#[test]
fn a_creation_timestamp_veer_cannot_order_is_an_error() {
    let text = MATCHING_ROUTE.replace("2024-01-02T15:04:05Z", "\"2024-01-02 15:04\"");
    let errs = errors(&load_one("r.yaml", &text));
    assert!(errs.iter().any(|e| e.starts_with("r.yaml:8:40: error: ") && e.contains("creationTimestamp")), "{errs:?}");
}

// === HTTPRoute attachment: a listener serves only what attaches to it ===

const ATTACH: &str = "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: default}
spec:
  gateway:
    address: 127.0.0.1:8080
    ports: {\"80\": 127.0.0.1:8080, \"8081\": 127.0.0.1:9081}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: veer
  listeners:
  - {name: web, protocol: HTTP, port: 80, hostname: '*.example.com'}
  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}
  - {name: grpc, protocol: HTTP, port: 8080, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}
  - {name: open, protocol: HTTP, port: 8081, hostname: open.example.net, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gw, sectionName: web}]
  hostnames: [a.example.com, b.other.com, '*.x.example.com']
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure}
spec:
  parentRefs: [{name: gw, port: 443}]
  hostnames: [s.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: grpc}
spec:
  parentRefs: [{name: gw, sectionName: grpc}]
  hostnames: [g.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: other}
spec:
  parentRefs: [{name: gw, namespace: default}]
  hostnames: [e.example.com, open.example.net]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: nameless}
spec:
  parentRefs: [{name: gw, sectionName: web}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orphan}
spec:
  hostnames: [o.example.com]
";

#[test]
fn http_routes_are_served_only_where_a_listener_accepts_them() {
    let accepted = from_sources(&[("a.yaml".into(), ATTACH.into())]).unwrap_or_else(|r| panic!("{r}"));
    let diags: Vec<String> = accepted.warnings().iter().map(ToString::to_string).collect();
    let served = |name: &str| {
        accepted
            .set()
            .routes
            .iter()
            .find(|r| r.meta.name == name)
            .map(|r| r.hosts_in("default").map(str::to_string).collect::<Vec<String>>())
            .unwrap_or_default()
    };
    // The listener's `*.example.com` takes a.example.com; b.other.com falls outside it, and a
    // wildcard is not served (yet) but said so.
    assert_eq!(served("web"), vec!["a.example.com".to_string()]);
    assert!(diags.iter().any(|d| d.contains("HTTPRoute/default/web") && d.contains("not served on *.x.example.com")), "{diags:?}");
    assert_eq!(served("secure"), Vec::<String>::new());
    assert!(diags.iter().any(|d| d.contains("HTTPRoute/default/secure") && d.contains("NOT SERVED") && d.contains("is TLS")), "{diags:?}");
    assert_eq!(served("grpc"), Vec::<String>::new());
    assert!(diags.iter().any(|d| d.contains("HTTPRoute/default/grpc") && d.contains("does not admit HTTPRoutes")), "{diags:?}");
    // From another namespace: only the listener that admits All takes it, under its own name.
    assert_eq!(served("elsewhere"), vec!["open.example.net".to_string()]);
    // No hostnames: the listener's wildcard only, which is not served.
    assert_eq!(served("nameless"), Vec::<String>::new());
    assert_eq!(served("orphan"), Vec::<String>::new());
    assert!(diags.iter().any(|d| d.contains("HTTPRoute/default/orphan") && d.contains("names no Gateway")), "{diags:?}");
}

// === spec.gateway.ports: each Gateway listener port on its own socket ===

const PORTS: &str = "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: edge}
spec:
  gateway:
    address: 127.0.0.1:8080
    ports:
      \"80\": 127.0.0.1:8080
      \"8443\": 127.0.0.1:9443
      \"9000\": 127.0.0.1:9000
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public}
spec:
  gatewayClassName: veer
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: internal}
spec:
  gatewayClassName: veer
  listeners: [{name: http, protocol: HTTP, port: 8443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a}
spec:
  parentRefs: [{name: public}]
  hostnames: [a.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both}
spec:
  parentRefs: [{name: public}, {name: internal}]
  hostnames: [both.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: c}
spec:
  parentRefs: [{name: internal}]
  hostnames: [c.example.com]
  rules: [{backendRefs: [{name: c, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec: {selector: {app: c}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: c1}
spec: {address: 127.0.0.1, ports: {http: 7001}, labels: {app: c}}
";

#[test]
fn gateway_ports_give_each_listener_port_its_own_socket() {
    let accepted = from_sources(&[("p.yaml".into(), PORTS.into())]).unwrap_or_else(|r| panic!("{r}"));
    let diags: Vec<String> = accepted.warnings().iter().map(ToString::to_string).collect();
    let edge = accepted.set().cluster("edge").expect("cluster");
    let mapped: Vec<(u16, String)> = edge.gateway_ports.iter().map(|p| (p.port, p.address.to_string())).collect();
    assert_eq!(mapped, vec![(80, "127.0.0.1:8080".into()), (8443, "127.0.0.1:9443".into()), (9000, "127.0.0.1:9000".into())]);
    // A mapped port no listener uses is bound anyway (so that a Gateway added later needs no
    // restart), and said to serve nothing, at its key.
    assert!(
        diags.iter().any(|d| d.starts_with("p.yaml:10:7: warning: ") && d.contains("port 9000") && d.contains("serves nothing")),
        "{diags:?}"
    );
    // Each served host knows its listener's port; a route attached on two ports has both.
    let ports = |name: &str, host: &str| {
        accepted
            .set()
            .routes
            .iter()
            .find(|r| r.meta.name == name)
            .map(|r| r.ports_of("edge", host).collect::<Vec<u16>>())
            .unwrap_or_default()
    };
    assert_eq!(ports("a", "a.example.com"), vec![80]);
    assert_eq!(ports("both", "both.example.com"), vec![80, 8443]);
    let both = accepted.set().routes.iter().find(|r| r.meta.name == "both").expect("route");
    assert_eq!(both.hosts_in("edge").collect::<Vec<_>>(), vec!["both.example.com"], "a host is listed once however many ports serve it");
    // Port 80's address is the gateway's: socket 0. The others get sockets of their own, in
    // address order.
    let l = accepted.set().listeners("edge").expect("listeners");
    assert_eq!(l.extra.iter().map(ToString::to_string).collect::<Vec<_>>(), vec!["127.0.0.1:9000", "127.0.0.1:9443"]);
    assert_eq!(l.ports.into_iter().collect::<Vec<_>>(), vec![(80, 0), (8443, 2), (9000, 1)]);
    // `veer explain` says which socket serves a route.
    let inventory = Inventory::from_manifests(accepted.set());
    let c = veer_model::resolve::resolve(View::new(accepted.set(), &inventory), "c.example.com", None, "edge", "").expect("resolves");
    assert!(
        c.notes
            .iter()
            .any(|n| n == "served on Gateway listener port 8443 on 127.0.0.1:9443; a client of another socket of the node gets 404"),
        "{:?}",
        c.notes
    );
    // Sockets that would take each other's connections count as one address.
    use veer_model::topology::overlaps;
    let a = |s: &str| s.parse::<std::net::SocketAddr>().expect("address");
    assert!(overlaps(a("127.0.0.1:9443"), a("0.0.0.0:9443")) && overlaps(a("[::]:9443"), a("127.0.0.1:9443")));
    assert!(!overlaps(a("127.0.0.1:9443"), a("127.0.0.2:9443")) && !overlaps(a("127.0.0.1:9443"), a("127.0.0.1:9444")));
    assert!(!overlaps(a("127.0.0.1:0"), a("0.0.0.0:0")), "port 0 is a fresh port each time");
    let wild = PORTS.replace("\"8443\": 127.0.0.1:9443", "\"8443\": 0.0.0.0:9000");
    let errs = errors(&load_one("p.yaml", &wild));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("p.yaml:10:15: error: ")
                && e.contains("ports 8443 and 9000 are mapped to 0.0.0.0:9000 and 127.0.0.1:9000")),
        "{errs:?}"
    );
}

#[test]
fn one_gateway_port_is_served_on_the_gateway_and_several_need_a_mapping_each() {
    // Without `ports`, a cluster whose Gateways serve routes on one port serves it on the
    // gateway, as before `ports` existed.
    let one = PORTS
        .replace("    ports:\n      \"80\": 127.0.0.1:8080\n      \"8443\": 127.0.0.1:9443\n      \"9000\": 127.0.0.1:9000\n", "")
        .replace("port: 8443", "port: 80");
    let accepted = from_sources(&[("p.yaml".into(), one)]).unwrap_or_else(|r| panic!("{r}"));
    let l = accepted.set().listeners("edge").expect("listeners");
    assert!(l.extra.is_empty());
    assert_eq!(l.ports.into_iter().collect::<Vec<_>>(), vec![(80, 0)]);
    // Two ports and no mapping: an error on the Cluster, never the two merged on the gateway.
    let two = PORTS.replace(
        "      \"80\": 127.0.0.1:8080\n      \"8443\": 127.0.0.1:9443\n      \"9000\": 127.0.0.1:9000\n",
        "      \"9000\": 127.0.0.1:9000\n",
    );
    let errs = errors(&load_one("p.yaml", &two));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("p.yaml:1:1: error: Cluster/default/edge: spec.gateway.ports: cluster edge's Gateways listen on ports 80 and 8443; a node serves each port on its own socket: map each in spec.gateway.ports"),
        "{errs:?}"
    );
}

// === loading: an accepted set or the rejection ===

#[test]
fn a_set_with_an_error_is_rejected_with_every_finding_and_one_without_is_accepted_with_its_warnings() {
    let accepted = from_sources(&[("p.yaml".into(), PORTS.into())]).unwrap_or_else(|r| panic!("{r}"));
    assert!(accepted.set().cluster("edge").is_some());
    let warnings: Vec<String> = accepted.warnings().iter().map(ToString::to_string).collect();
    assert!(warnings.iter().any(|w| w.starts_with("p.yaml:10:7: warning: ") && w.contains("serves nothing")), "{warnings:?}");
    assert!(accepted.warnings().iter().all(|d| d.severity != Severity::Error), "{warnings:?}");

    // The same set with a file that has an error.
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 70000}]}\n";
    let sources = [("p.yaml".to_string(), PORTS.to_string()), ("bad.yaml".to_string(), bad.to_string())];
    let rejected = from_sources(&sources).expect_err("an error rejects the set");
    let errors: Vec<String> = rejected.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("bad.yaml:4:") && errors[0].contains("70000"), "{errors:?}");
    let all: Vec<String> = rejected.diagnostics().iter().map(ToString::to_string).collect();
    assert!(all.iter().any(|d| d.starts_with("p.yaml:10:7: warning: ")), "the warnings come with the errors: {all:?}");
    assert!(all.first().is_some_and(|d| d.starts_with("bad.yaml:")), "sorted by file: {all:?}");
    assert_eq!(rejected.to_string(), errors.join("\n"), "shown as its errors, one a line");
    // Reports on an invalid set still get what was read, with the same findings.
    let loaded = veer_model::from_sources_even_if_invalid(&sources);
    assert!(loaded.set.cluster("edge").is_some());
    assert_eq!(loaded.diagnostics.into_sorted(), rejected.into_diagnostics());
}

#[test]
fn listener_hostnames_intersect_as_gateway_api_says() {
    use veer_model::gateway::listener_hosts;
    let v = |xs: &[&str]| xs.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(listener_hosts(None, &[]), None);
    assert_eq!(listener_hosts(None, &v(&["a.b"])), Some(v(&["a.b"])));
    assert_eq!(listener_hosts(Some("a.b"), &[]), Some(v(&["a.b"])));
    assert_eq!(listener_hosts(Some("*.b"), &v(&["a.b", "x.a.b", "b", "a.c"])), Some(v(&["a.b", "x.a.b"])));
    assert_eq!(listener_hosts(Some("a.b"), &v(&["*.b", "*.c"])), Some(v(&["a.b"])));
    assert_eq!(listener_hosts(Some("*.b"), &v(&["*.a.b"])), Some(v(&["*.a.b"])));
    assert_eq!(listener_hosts(Some("*.a.b"), &v(&["*.b"])), Some(v(&["*.a.b"])));
}

// === veer explain --down ===

#[test]
fn a_down_flag_that_matches_no_endpoint_is_an_error_naming_it() {
    use veer_model::explain::{apply_down, Down, DownError};
    let set = from_sources(&[("p.yaml".into(), PORTS.into())]).unwrap_or_else(|r| panic!("{r}")).into_set();
    let inventory = Inventory::from_manifests(&set);
    let mut dest = veer_model::resolve::resolve(View::new(&set, &inventory), "c.example.com", None, "edge", "").expect("resolves");
    let err = apply_down(&mut dest, &[Down::Cluster("west".into())]).expect_err("no endpoint in west");
    assert_eq!(err, DownError::NoEndpointInCluster { cluster: "west".into(), host: "c.example.com".into() });
    assert_eq!(err.to_string(), "--down cluster=west: no endpoint of c.example.com is in cluster west");
    let err = apply_down(&mut dest, &[Down::Address("10.9.9.9".into())]).expect_err("no such endpoint");
    assert_eq!(err.to_string(), "--down 10.9.9.9: no endpoint of c.example.com has that address");
    apply_down(&mut dest, &[Down::Address("127.0.0.1".into())]).expect("the endpoint's IP");
    assert!(dest.endpoints.iter().all(|e| e.health == veer_core::topology::Health::Unhealthy), "{:?}", dest.endpoints);
}

// === what a set serves: one list of destination keys ===

const SERVED: &str = "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: west}
spec: {locality: {region: r}}
---
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: east}
spec: {locality: {region: r}}
---
apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: vd, namespace: demo}
spec:
  hosts: [go.demo.global, go.demo.mesh]
  ports: [{number: 80, protocol: HTTP}, {number: 81, protocol: HTTP}]
  services: [{labels: {app: echo}, namespace: demo}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo, labels: {topology.istio.io/cluster: west, app: echo}}
spec: {selector: {app: echo}, ports: [{name: http, port: 80}, {name: admin, port: 9000}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo, labels: {topology.istio.io/cluster: east, app: echo}}
spec: {selector: {app: echo}, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: demo, labels: {topology.istio.io/cluster: west}}
spec: {gatewayClassName: veer, listeners: [{name: http, protocol: HTTP, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.demo, shop.example]
  rules:
  - backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: Exact, value: /x}}]
    backendRefs: [{name: echo, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.demo]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: empty, namespace: demo}
spec: {parentRefs: [{name: gw}], hostnames: [empty.demo]}
";

#[test]
fn destinations_list_what_a_node_serves_once_each_in_the_order_it_tries_them() {
    use veer_model::resolve::{destinations, resolve_key, DestinationKind};
    let accepted = from_sources(&[("s.yaml".into(), SERVED.into())]).unwrap_or_else(|r| panic!("{r}"));
    let set = accepted.set();
    let inventory = Inventory::from_manifests(set);
    let view = View::new(set, &inventory);
    let west = destinations(set, "west");
    let names: Vec<&str> = west.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "go.demo.global:80",
            "go.demo.global:81",
            "shop.demo/",
            "shop.demo/x",
            "shop.demo/ (demo/b rule 0)",
            "echo.demo.svc.cluster.local:80",
            "echo.demo.svc.cluster.local:9000",
        ],
        "VirtualDestination ports, route rules (a route without rules gives none), then one Service name's ports"
    );
    let vd = &west[1];
    assert_eq!(
        (vd.host.as_str(), vd.aliases.clone(), vd.port, vd.kind),
        ("go.demo.global", vec!["go.demo.mesh".to_string()], Some(81), DestinationKind::VirtualDestination)
    );
    let rule = &west[3];
    assert_eq!((rule.host.as_str(), rule.aliases.clone(), rule.port), ("shop.demo", vec!["shop.example".to_string()], None));
    assert!(matches!(rule.kind, DestinationKind::RouteRule { route, rule: 1 } if route.meta.name == "a"), "{:?}", rule.kind);
    let svc = &west[5];
    assert_eq!((svc.port, svc.kind), (Some(80), DestinationKind::Service));
    assert_eq!(svc.hosts().collect::<Vec<_>>(), vec!["echo.demo.svc.cluster.local"]);
    assert_eq!(svc.request_hosts(), vec!["echo.demo.svc.cluster.local", "echo.demo", "echo.demo.svc"]);
    assert_eq!(vd.request_hosts(), vec!["go.demo.global", "go.demo.mesh"], "only a Service has search-path names");
    // Every key resolves to the destination it names.
    for key in &west {
        let d = resolve_key(view, key, "west").unwrap_or_else(|e| panic!("{}: {e}", key.name));
        assert_eq!(d.host, key.host, "{}", key.name);
        assert_eq!(d.port, key.port.unwrap_or(80), "{}", key.name);
    }
    let role = |k: &veer_model::resolve::DestinationKey<'_>| resolve_key(view, k, "west").expect("resolves").sources[0].role.clone();
    assert!(role(&west[2]).contains("rule at line 41"), "{}", role(&west[2]));
    assert!(role(rule).contains("rule at line 42"), "the rule of the key, not the route's first: {}", role(rule));
    // East has no Gateway the routes attach to.
    let east: Vec<String> = destinations(set, "east").into_iter().map(|k| k.name.to_string()).collect();
    assert!(east.iter().all(|n| !n.starts_with("shop.demo")), "{east:?}");
    assert_eq!(east.len(), 4, "{east:?}");
    // `veer explain` of an unknown host lists the hosts of the same keys.
    let err = veer_model::resolve::resolve(view, "nope.demo", None, "west", "").expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "no destination serves host \"nope.demo\"; known hosts: echo.demo.svc.cluster.local, go.demo.global, go.demo.mesh, shop.demo, shop.example"
    );
}

#[test]
fn a_failover_service_is_one_destination_at_its_port() {
    use veer_model::resolve::{destinations, resolve_key, DestinationKind};
    let sources = [example("001-smh-failover-service/seed.yaml"), example("001-smh-failover-service/topology.yaml")];
    let set = from_sources(&sources).unwrap_or_else(|r| panic!("{r}")).into_set();
    let cluster = set.clusters.first().map(|c| c.meta.name.clone()).expect("a cluster");
    let keys = destinations(&set, &cluster);
    let fs: Vec<_> = keys.iter().filter(|k| k.kind == DestinationKind::FailoverService).collect();
    assert_eq!(fs.len(), 1, "{keys:?}");
    assert_eq!(
        (fs[0].name.as_str(), fs[0].host.as_str(), fs[0].port),
        ("reviews-failover.bookinfo.global:9080", "reviews-failover.bookinfo.global", Some(9080))
    );
    assert!(fs[0].aliases.is_empty());
    let inventory = Inventory::from_manifests(&set);
    assert_eq!(resolve_key(View::new(&set, &inventory), fs[0], &cluster).expect("resolves").rule, veer_core::priority::PriorityRule::Tiers);
}

// === outlier detection that can never eject ===

fn example(path: &str) -> (String, String) {
    (path.to_string(), read(&examples_dir().join(path)))
}

/// The warnings `veer validate` gives about a max-ejection-percent cap below one endpoint.
fn cap_warnings(sources: &[(String, String)]) -> Vec<String> {
    let accepted = from_sources(sources).unwrap_or_else(|r| panic!("{r}"));
    let inventory = Inventory::from_manifests(accepted.set());
    veer_model::ejection::warnings(View::new(accepted.set(), &inventory)).iter().map(ToString::to_string).collect()
}

/// The fewest endpoints any client cluster sees for `host`.
fn fewest_endpoints(sources: &[(String, String)], host: &str, port: Option<u16>) -> usize {
    let set = from_sources(sources).unwrap_or_else(|r| panic!("{r}")).into_set();
    let inventory = Inventory::from_manifests(&set);
    let clusters: Vec<String> = set.clusters.iter().map(|c| c.meta.name.clone()).collect();
    clusters
        .iter()
        .filter_map(|c| veer_model::resolve::resolve(View::new(&set, &inventory), host, port, c, "/test").ok())
        .map(|d| d.endpoints.len())
        .min()
        .expect("resolves")
}

/// Each dialect's sources with the cap set to `cap` (`None`: the field removed), and the host.
fn dialect(name: &str, cap: Option<u32>) -> (Vec<(String, String)>, &'static str, Option<u16>) {
    let with = |text: String, field: &str, indent: &str| match cap {
        Some(c) => text.replacen(&format!("{indent}{field}: 100\n"), &format!("{indent}{field}: {c}\n"), 1),
        None => text.replacen(&format!("{indent}{field}: 100\n"), "", 1),
    };
    match name {
        // Envoy Gateway: the BackendTrafficPolicy's passive health check, with two more active
        // instances: 4 endpoints, Envoy Gateway's default 10% ejecting nothing.
        "envoy-gateway" => {
            let (p, seed) = example("004-envoy-gateway-fallback/seed.yaml");
            let more = (2..4).map(|i| format!("---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: active-{i}\n  namespace: default\nspec:\n  address: 127.0.0.{}\n  labels:\n    app: active\n    version: v1\n", 20 + i)).collect::<String>();
            let (t, topology) = example("004-envoy-gateway-fallback/topology.yaml");
            (vec![(p, with(seed, "maxEjectionPercent", "      ")), (t, topology + &more)], "www.example.com", None)
        }
        "istio" => {
            let (p, dr) = example("steps/003-istio-locality-failover/3-destination-rule/seed-destination-rule.yaml");
            let dr = dr.trim_end().to_string() + "\n      maxEjectionPercent: 100\n";
            (
                vec![
                    example("003-istio-locality-failover/seed.yaml"),
                    example("003-istio-locality-failover/topology.yaml"),
                    example("003-istio-locality-failover/helloworld-v1.yaml"),
                    example("003-istio-locality-failover/helloworld-v2.yaml"),
                    (p, with(dr, "maxEjectionPercent", "      ")),
                ],
                "helloworld.sample.svc.cluster.local",
                Some(5000),
            )
        }
        "gloo" => {
            let (p, seed) = example("000-gloo-priority-labels/seed.yaml");
            (
                vec![
                    (p, with(seed, "maxEjectionPercent", "    ")),
                    example("000-gloo-priority-labels/clusters.yaml"),
                    example("000-gloo-priority-labels/server-test.yaml"),
                    example("000-gloo-priority-labels/server-central.yaml"),
                ],
                "go-vuderani-algebra.infra.svc.test-pp-rs",
                Some(80),
            )
        }
        "smh" => {
            let (p, seed) = example("001-smh-failover-service/seed.yaml");
            let seed = seed.replacen(
                "  outlierDetection:\n    consecutiveErrors: 1\n",
                "  outlierDetection:\n    consecutiveErrors: 1\n    maxEjectionPercent: 100\n",
                1,
            );
            (
                vec![(p, with(seed, "maxEjectionPercent", "    ")), example("001-smh-failover-service/topology.yaml")],
                "reviews.bookinfo.svc.cluster.local",
                Some(9080),
            )
        }
        _ => unreachable!("{name}"),
    }
}

/// Envoy ejects the first host only if `100·1/N ≤ cap`, i.e. `cap·N ≥ 100`: at `ceil(100/N)`
/// it can, one below it never does. Every dialect, the cap set or left to its default.
#[test]
fn a_max_ejection_percent_below_one_endpoint_is_a_warning_in_every_dialect_at_envoys_exact_boundary() {
    for name in ["envoy-gateway", "istio", "gloo", "smh"] {
        let (sources, host, port) = dialect(name, Some(100));
        assert!(cap_warnings(&sources).is_empty(), "{name} at 100%: {:?}", cap_warnings(&sources));
        let n = fewest_endpoints(&sources, host, port);
        let needed = 100u32.div_ceil(n as u32);
        let (at, _, _) = dialect(name, Some(needed));
        assert!(cap_warnings(&at).is_empty(), "{name}: {needed}% of {n} ejects one: {:?}", cap_warnings(&at));
        let (below, _, _) = dialect(name, Some(needed - 1));
        let found = cap_warnings(&below);
        assert_eq!(found.len(), 1, "{name}: {}% of {n}: {found:?}", needed - 1);
        assert!(
            found[0].contains(": warning: ")
                && found[0].contains("maxEjectionPercent: ")
                && found[0].contains(&format!("{}% of the {n} endpoint(s) of ", needed - 1)),
            "{name}: {}",
            found[0]
        );
    }
    // Unset: Envoy Gateway's default 10% with its 4 endpoints, and Istio's (Envoy's) 10%.
    for name in ["envoy-gateway", "istio"] {
        let (sources, host, port) = dialect(name, None);
        let n = fewest_endpoints(&sources, host, port);
        assert!(n < 10, "{name}: {n}");
        let found = cap_warnings(&sources);
        assert_eq!(found.len(), 1, "{name} unset: {found:?}");
        assert!(found[0].contains(&format!("10% of the {n} endpoint(s)")), "{}", found[0]);
    }
    // Gloo and SMH default to 100%: nothing to say.
    for name in ["gloo", "smh"] {
        let (sources, _, _) = dialect(name, None);
        assert!(cap_warnings(&sources).is_empty(), "{name} unset: {:?}", cap_warnings(&sources));
    }
}

// === TLS to upstreams (DestinationRule trafficPolicy.tls) ===

/// A CA, a certificate it signed for `backend.test`, and a key that belongs to neither, in a
/// temporary folder beside the manifest that names them.
fn tls_files() -> veer_testkit::TempDir {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = veer_testkit::TempDir::new("upstream-tls");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).expect("ca").pem()).expect("write");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["backend.test".to_string()]).expect("params").signed_by(&key, &issuer).expect("cert");
    std::fs::write(dir.join("client.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("client-key.pem"), key.serialize_pem()).expect("write");
    std::fs::write(dir.join("stranger-key.pem"), KeyPair::generate().expect("key").serialize_pem()).expect("write");
    std::fs::write(dir.join("notes.txt"), "no certificate here\n").expect("write");
    dir
}

/// The errors of a DestinationRule whose `trafficPolicy.tls` is `tls` (indented by six),
/// written in `dir`.
fn tls_errors(dir: &Path, tls: &str) -> Vec<String> {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: server\n  namespace: infra\nspec:\n  host: server.infra.svc.cluster.local\n  trafficPolicy:\n    tls:\n{tls}"
    );
    let path = dir.join("dr.yaml");
    errors(&load_one(&path.display().to_string(), &text))
}

#[test]
fn upstream_tls_files_are_read_and_checked_at_load_with_errors_at_the_field() {
    let dir = tls_files();
    let ok = "      mode: MUTUAL\n      caCertificates: ca.pem\n      clientCertificate: client.pem\n      privateKey: client-key.pem\n      sni: backend.test\n";
    assert_eq!(tls_errors(&dir, ok), Vec::<String>::new());
    let cases = [
        (
            "      mode: SIMPLE\n      caCertificates: missing.pem\n",
            "dr.yaml:11:23",
            "spec.trafficPolicy.tls.caCertificates",
            "missing.pem",
        ),
        ("      mode: SIMPLE\n      caCertificates: notes.txt\n", "dr.yaml:11:23", "caCertificates", "holds no PEM certificate"),
        ("      mode: MUTUAL\n      caCertificates: ca.pem\n", "dr.yaml:10:13", "mode", "MUTUAL needs clientCertificate and privateKey"),
        (
            "      mode: MUTUAL\n      caCertificates: ca.pem\n      clientCertificate: client.pem\n      privateKey: stranger-key.pem\n",
            "dr.yaml:13:19",
            "privateKey",
            "does not fit",
        ),
        ("      mode: ISTIO_MUTUAL\n", "dr.yaml:10:13", "mode", "ISTIO_MUTUAL"),
        (
            "      mode: SIMPLE\n      caCertificates: ca.pem\n      insecureSkipVerify: true\n",
            "dr.yaml:12",
            "insecureSkipVerify",
            "always verifies",
        ),
        ("      mode: SIMPLE\n      credentialName: backend-tls\n", "dr.yaml:11", "credentialName", "from files"),
        ("      caCertificates: ca.pem\n", "dr.yaml:10", "mode", "required"),
    ];
    for (tls, at, field, says) in cases {
        let found = tls_errors(&dir, tls);
        assert!(
            found.iter().any(|e| e.contains(at) && e.contains(field) && e.contains(says)),
            "{tls}: expected {at} {field} {says:?}, got {found:?}"
        );
    }
}

/// Slow start and gRPC health checks become resilience settings: Istio's `warmupDurationSecs`
/// (aggression 1, 10% floor) and `warmup`, Envoy Gateway's `loadBalancer.slowStart.window` and
/// `healthCheck.active.type: GRPC` with its service; a zero window turns slow start off.
#[test]
fn slow_start_and_grpc_checks_are_read_into_resilience() {
    use std::time::Duration;
    use veer_core::policy::CheckProtocol;
    use veer_core::slowstart::SlowStart;
    const ISTIO: &str = "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: one\nspec:\n  locality:\n    region: r\n---\n\
        apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: ns\nspec:\n  ports:\n  - name: http\n    port: 80\n---\n\
        apiVersion: v1\nkind: Service\nmetadata:\n  name: b\n  namespace: ns\nspec:\n  ports:\n  - name: http\n    port: 80\n---\n\
        apiVersion: v1\nkind: Service\nmetadata:\n  name: c\n  namespace: ns\nspec:\n  ports:\n  - name: http\n    port: 80\n---\n\
        apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: a\n  namespace: ns\nspec:\n  host: a.ns.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n      warmupDurationSecs: 45s\n---\n\
        apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: b\n  namespace: ns\nspec:\n  host: b.ns.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      warmup:\n        duration: 1m\n        aggression: 1.5\n        minimumPercent: 25\n---\n\
        apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: c\n  namespace: ns\nspec:\n  host: c.ns.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      warmupDurationSecs: 0s\n";
    let accepted = from_sources(&[("istio.yaml".into(), ISTIO.into())]).unwrap_or_else(|r| panic!("{r}"));
    let inventory = Inventory::from_manifests(accepted.set());
    let slow = |host: &str| {
        veer_model::resolve::resolve(View::new(accepted.set(), &inventory), host, None, "one", "").expect("resolves").resilience.slow_start
    };
    assert_eq!(slow("a.ns.svc.cluster.local"), Some(SlowStart::with_window(Duration::from_secs(45))));
    assert_eq!(
        slow("b.ns.svc.cluster.local"),
        Some(SlowStart { window: Duration::from_secs(60), aggression_milli: 1500, min_weight_percent: 25 })
    );
    assert_eq!(slow("c.ns.svc.cluster.local"), None, "a zero window turns slow start off");

    const EG: &str = "apiVersion: veer.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: one\nspec:\n  locality:\n    region: r\n---\n\
        apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata:\n  name: be\nspec:\n  endpoints:\n  - ip:\n      address: 127.0.0.11\n      port: 3000\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  gatewayClassName: eg\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: route\nspec:\n  hostnames:\n  - g.example.com\n  parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - group: gateway.envoyproxy.io\n      kind: Backend\n      name: be\n      port: 3000\n---\n\
        apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata:\n  name: p\nspec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    name: route\n  healthCheck:\n    active:\n      type: GRPC\n      interval: 2s\n      timeout: 1s\n      grpc:\n        service: shop.Cart\n  loadBalancer:\n    type: LeastRequest\n    slowStart:\n      window: 20s\n";
    let accepted = from_sources(&[("eg.yaml".into(), EG.into())]).unwrap_or_else(|r| panic!("{r}"));
    let inventory = Inventory::from_manifests(accepted.set());
    let d = veer_model::resolve::resolve(View::new(accepted.set(), &inventory), "g.example.com", None, "one", "/").expect("resolves");
    assert_eq!(d.resilience.slow_start, Some(SlowStart::with_window(Duration::from_secs(20))));
    let check = d.resilience.active_health_check.clone().expect("active check");
    assert_eq!(check.protocol, CheckProtocol::Grpc { service: "shop.Cart".into() });
    assert_eq!(check.interval, Duration::from_secs(2));
    // `veer explain` says how the route's endpoints come back.
    let report =
        veer_model::explain::explain(&d, &veer_model::resolve::client(accepted.set(), "one", &Default::default()).expect("client"));
    assert_eq!(report.slow_start.map(|s| s.window_ms), Some(20_000));
    assert!(veer_model::explain::render_table(&veer_model::explain::explain(&d, &Default::default())).contains("over 20000 ms"));
}

#[test]
fn backend_tls_policies_resolve_their_configmaps_and_targets_with_errors_where_written() {
    let dir = tls_files();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
    let ca_indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: server, namespace: infra}\nspec: {selector: {app: server}, ports: [{name: https, port: 443}]}\n---\n";
    let policy = |targets: &str, refs: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: BackendTLSPolicy\nmetadata: {{name: p, namespace: infra}}\nspec:\n  targetRefs: [{targets}]\n  validation:\n    caCertificateRefs: [{refs}]\n    hostname: backend.test\n---\n")
    };
    let configmap = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: infra}}\ndata:\n  other-key: anything\n  ca.crt: |\n{ca_indented}---\n");
    let good = format!("{service}{configmap}{}", policy("{kind: Service, name: server}", "{kind: ConfigMap, name: ca}"));
    let accepted = from_sources(&[("p.yaml".into(), good)]).unwrap_or_else(|r| panic!("{r}"));
    let tls = accepted.set().backend_tls_for("infra", "server", Some("https")).expect("the Service speaks TLS");
    assert!(tls.describe().contains("ConfigMap infra/ca"), "{}", tls.describe());
    let cases = [
        (format!("{service}{}", policy("{kind: Service, name: server}", "{kind: ConfigMap, name: ca}")), "no ConfigMap infra/ca"),
        (
            format!(
                "{service}apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: infra}}\ndata: {{x: y}}\n---\n{}",
                policy("{kind: Service, name: server}", "{kind: ConfigMap, name: ca}")
            ),
            "has no ca.crt",
        ),
        (format!("{configmap}{}", policy("{kind: Service, name: server}", "{kind: ConfigMap, name: ca}")), "no Service infra/server"),
        (
            format!(
                "{service}apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: infra}}\ndata:\n  ca.crt: not a certificate\n---\n{}",
                policy("{kind: Service, name: server}", "{kind: ConfigMap, name: ca}")
            ),
            "holds no usable PEM CA certificate",
        ),
        (format!("{service}{configmap}{}", policy("{kind: Service, name: server}", "{kind: Secret, name: ca}")), "refer to a ConfigMap"),
        (
            format!(
                "{service}{configmap}{}{}",
                policy("{kind: Service, name: server}", "{kind: ConfigMap, name: ca}"),
                policy("{kind: Service, name: server, sectionName: https}", "{kind: ConfigMap, name: ca}").replace("name: p,", "name: q,")
            ),
            "already targeted by BackendTLSPolicy infra/p",
        ),
    ];
    for (text, says) in cases {
        let found = errors(&load_one("p.yaml", &text));
        assert!(found.iter().any(|e| e.contains(says) && e.contains("p.yaml:")), "expected {says:?}, got {found:?}");
    }
}

#[test]
fn a_destination_rule_is_found_by_its_exact_host_first_in_any_case_then_by_pattern_in_manifest_order() {
    let rule = |name: &str, host: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: default}}\nspec: {{host: \"{host}\"}}\n---\n")
    };
    let text = [
        rule("wild", "*.shop.svc.cluster.local"),
        rule("exact-upper", "WEB.shop.svc.cluster.local"),
        rule("exact-second", "web.shop.svc.cluster.local"),
        rule("scoped", "istio-system/api.shop.svc.cluster.local"),
    ]
    .concat();
    let set = veer_model::from_sources_even_if_invalid(&[("rules.yaml".into(), text)]).set;
    let found = |host: &str| set.destination_rule_for(host).map(|r| r.meta.name.clone());
    assert_eq!(
        found("web.shop.svc.cluster.local").as_deref(),
        Some("exact-upper"),
        "an exact host, in any case, before an earlier pattern"
    );
    assert_eq!(found("db.shop.svc.cluster.local").as_deref(), Some("wild"), "else the first pattern that matches");
    assert_eq!(found("api.shop.svc.cluster.local").as_deref(), Some("wild"), "patterns in manifest order");
    assert_eq!(found("api.other.svc.cluster.local"), None);
}
