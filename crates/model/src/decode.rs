//! Typed reading of a located YAML tree: strict fields, precise types, every error collected.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::diag::{did_you_mean, Diagnostic, Diagnostics, Pos, Severity};
use crate::yaml::{Node, Value};

/// Where decoding happens: the file and resource being read, and the findings so far.
pub struct Ctx {
    pub file: Arc<str>,
    pub resource: Option<String>,
    pub diags: RefCell<Diagnostics>,
}

/// A mapping being read. Reading a field marks it known; [`Obj::finish`] reports the rest.
pub struct Obj<'a> {
    ctx: &'a Ctx,
    node: &'a Node,
    path: String,
    known: RefCell<Vec<&'static str>>,
    /// Fields accepted and deliberately not acted on, with the reason shown to the user.
    tolerated: RefCell<Vec<(&'static str, &'static str)>>,
}

// === impl Ctx ===

impl Ctx {
    pub fn new(file: Arc<str>, resource: Option<String>) -> Self {
        Ctx { file, resource, diags: RefCell::new(Diagnostics::default()) }
    }

    pub fn report(&self, severity: Severity, pos: Pos, field: &str, message: impl Into<String>) {
        self.diags.borrow_mut().push(Diagnostic {
            severity,
            file: self.file.clone(),
            pos,
            resource: self.resource.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    pub fn error(&self, pos: Pos, field: &str, message: impl Into<String>) {
        self.report(Severity::Error, pos, field, message);
    }

    pub fn warn(&self, pos: Pos, field: &str, message: impl Into<String>) {
        self.report(Severity::Warning, pos, field, message);
    }

    /// Reads `node` as a mapping at `path`; reports and returns `None` otherwise.
    pub fn obj<'a>(&'a self, node: &'a Node, path: &str) -> Option<Obj<'a>> {
        match node.value {
            // Duplicate keys are reported by `load::parse_source`, from the YAML reader, for
            // every document whatever its kind.
            Value::Map(_) => {
                Some(Obj { ctx: self, node, path: path.to_string(), known: RefCell::new(Vec::new()), tolerated: RefCell::new(Vec::new()) })
            }
            _ if node.is_null() => None,
            _ => {
                self.error(node.pos, path, format!("expected a mapping, found a {}", node.kind_name()));
                None
            }
        }
    }

    pub fn into_diagnostics(self) -> Diagnostics {
        self.diags.into_inner()
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

// === impl Obj ===

impl<'a> Obj<'a> {
    pub fn ctx(&self) -> &'a Ctx {
        self.ctx
    }

    pub fn pos(&self) -> Pos {
        self.node.pos
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn field_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw node of `key`, marking it known. Null values count as absent.
    pub fn raw(&self, key: &'static str) -> Option<&'a Node> {
        self.known.borrow_mut().push(key);
        self.node.get(key).filter(|n| !n.is_null())
    }

    /// Accepts `key` without acting on it, with a warning that says so, so nothing is ignored silently.
    pub fn tolerate(&self, key: &'static str, why: &'static str) {
        self.tolerated.borrow_mut().push((key, why));
    }

    /// Accepts `key` silently: fields that carry no behaviour (status, annotations, descriptions).
    pub fn skip(&self, key: &'static str) {
        self.known.borrow_mut().push(key);
    }

    /// Position of `key`'s value, or of this mapping when the key is absent.
    pub fn pos_of(&self, key: &str) -> Pos {
        self.node.get(key).map_or(self.node.pos, |n| n.pos)
    }

    pub fn has(&self, key: &'static str) -> bool {
        self.node.get(key).is_some_and(|n| !n.is_null())
    }

    pub fn string(&self, key: &'static str) -> Option<(String, Pos)> {
        let n = self.raw(key)?;
        match &n.value {
            Value::Scalar { text, plain } => {
                if *plain && n.kind_name() != "string" && n.kind_name() != "number" {
                    self.ctx.error(n.pos, &self.field_path(key), format!("expected a string, found a {}; quote it", n.kind_name()));
                    return None;
                }
                let _ = plain;
                Some((text.clone(), n.pos))
            }
            _ => {
                self.ctx.error(n.pos, &self.field_path(key), format!("expected a string, found a {}", n.kind_name()));
                None
            }
        }
    }

    pub fn required_string(&self, key: &'static str) -> Option<(String, Pos)> {
        if !self.has(key) {
            self.raw(key);
            self.ctx.error(self.pos(), &self.field_path(key), "required field is missing");
            return None;
        }
        let v = self.string(key)?;
        if v.0.is_empty() {
            self.ctx.error(v.1, &self.field_path(key), "must not be empty");
            return None;
        }
        Some(v)
    }

    pub fn bool(&self, key: &'static str) -> Option<bool> {
        let n = self.raw(key)?;
        match n.scalar() {
            Some("true") if n.kind_name() == "boolean" => Some(true),
            Some("false") if n.kind_name() == "boolean" => Some(false),
            _ => {
                self.ctx.error(n.pos, &self.field_path(key), format!("expected true or false, found a {}", n.kind_name()));
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int(&self, key: &'static str, min: i64, max: i64) -> Option<(i64, Pos)> {
        let n = self.raw(key)?;
        let parsed = match &n.value {
            Value::Scalar { text, plain: true } => text.parse::<i64>().ok(),
            _ => None,
        };
        match parsed {
            Some(v) if (min..=max).contains(&v) => Some((v, n.pos)),
            Some(v) => {
                self.ctx.error(n.pos, &self.field_path(key), format!("{v} is out of range; expected {min}..={max}"));
                None
            }
            None => {
                self.ctx.error(n.pos, &self.field_path(key), format!("expected an integer in {min}..={max}, found {}", describe(n)));
                None
            }
        }
    }

    /// A number (integer or decimal) in `min..=max`.
    pub fn number(&self, key: &'static str, min: f64, max: f64) -> Option<f64> {
        let n = self.raw(key)?;
        let parsed = match &n.value {
            Value::Scalar { text, plain: true } => text.parse::<f64>().ok().filter(|v| v.is_finite()),
            _ => None,
        };
        match parsed {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.ctx.error(n.pos, &self.field_path(key), format!("expected a number in {min}..={max}, found {}", describe(n)));
                None
            }
        }
    }

    pub fn u32(&self, key: &'static str, min: u32, max: u32) -> Option<u32> {
        self.int(key, i64::from(min), i64::from(max)).and_then(|(v, _)| u32::try_from(v).ok())
    }

    pub fn port(&self, key: &'static str) -> Option<u16> {
        self.int(key, 1, 65535).and_then(|(v, _)| u16::try_from(v).ok())
    }

    /// A Go/Kubernetes duration such as `1s`, `1m30s` or `500ms`.
    pub fn duration(&self, key: &'static str) -> Option<Duration> {
        let (s, pos) = self.string(key)?;
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.ctx.error(pos, &self.field_path(key), format!("{e}; expected a duration such as 500ms, 10s or 1m30s"));
                None
            }
        }
    }

    /// One of `allowed` (compared case-insensitively, returned in canonical case).
    pub fn one_of(&self, key: &'static str, allowed: &[&'static str]) -> Option<(&'static str, Pos)> {
        let (s, pos) = self.string(key)?;
        if let Some(a) = allowed.iter().find(|a| a.eq_ignore_ascii_case(&s)) {
            return Some((a, pos));
        }
        self.ctx.error(pos, &self.field_path(key), format!("{s:?} is not valid; expected one of: {}", allowed.join(", ")));
        None
    }

    pub fn seq(&self, key: &'static str) -> Vec<(&'a Node, String)> {
        let Some(n) = self.raw(key) else { return Vec::new() };
        match &n.value {
            Value::Seq(items) => items.iter().enumerate().map(|(i, item)| (item, format!("{}[{i}]", self.field_path(key)))).collect(),
            _ => {
                self.ctx.error(n.pos, &self.field_path(key), format!("expected a list, found a {}", n.kind_name()));
                Vec::new()
            }
        }
    }

    /// A list of mappings.
    pub fn objs(&self, key: &'static str) -> Vec<Obj<'a>> {
        self.seq(key).into_iter().filter_map(|(n, p)| self.ctx.obj(n, &p)).collect()
    }

    pub fn strings(&self, key: &'static str) -> Vec<(String, Pos)> {
        self.seq(key)
            .into_iter()
            .filter_map(|(n, p)| match &n.value {
                Value::Scalar { text, .. } => Some((text.clone(), n.pos)),
                _ => {
                    self.ctx.error(n.pos, &p, format!("expected a string, found a {}", n.kind_name()));
                    None
                }
            })
            .collect()
    }

    pub fn obj(&self, key: &'static str) -> Option<Obj<'a>> {
        let n = self.raw(key)?;
        self.ctx.obj(n, &self.field_path(key))
    }

    /// A map of string to string (labels, selectors). Unquoted booleans and numbers are errors,
    /// as the Kubernetes API server rejects them.
    pub fn string_map(&self, key: &'static str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(n) = self.raw(key) else { return out };
        let Value::Map(entries) = &n.value else {
            self.ctx.error(n.pos, &self.field_path(key), format!("expected a mapping of strings, found a {}", n.kind_name()));
            return out;
        };
        for (k, v) in entries {
            let key_text = k.scalar().unwrap_or("").to_string();
            let path = format!("{}[{key_text:?}]", self.field_path(key));
            match &v.value {
                Value::Scalar { text, .. } if v.kind_name() == "string" || v.is_null() => {
                    out.insert(key_text, text.clone());
                }
                Value::Scalar { text, .. } => self.ctx.error(
                    v.pos,
                    &path,
                    format!("label values are strings; write \"{text}\" in quotes (the API server rejects a bare {})", v.kind_name()),
                ),
                _ => self.ctx.error(v.pos, &path, format!("expected a string, found a {}", v.kind_name())),
            }
        }
        out
    }

    /// A map of string to string, each entry with the positions of its key and its value, for
    /// maps whose keys mean something (`spec.gateway.ports`: a port per key).
    pub fn located_string_map(&self, key: &'static str) -> Vec<(String, Pos, String, Pos)> {
        let mut out = Vec::new();
        let Some(n) = self.raw(key) else { return out };
        let Value::Map(entries) = &n.value else {
            self.ctx.error(n.pos, &self.field_path(key), format!("expected a mapping, found a {}", n.kind_name()));
            return out;
        };
        for (k, v) in entries {
            let key_text = k.scalar().unwrap_or("").to_string();
            match v.scalar() {
                Some(text) if !v.is_null() => out.push((key_text, k.pos, text.to_string(), v.pos)),
                _ => self.ctx.error(
                    v.pos,
                    &format!("{}[{key_text:?}]", self.field_path(key)),
                    format!("expected a string, found {}", describe(v)),
                ),
            }
        }
        out
    }

    /// A map of string to integer (Istio `distribute.to`, WorkloadEntry `ports`).
    pub fn int_map(&self, key: &'static str, min: i64, max: i64) -> Vec<(String, i64, Pos)> {
        let mut out = Vec::new();
        let Some(n) = self.raw(key) else { return out };
        let Value::Map(entries) = &n.value else {
            self.ctx.error(n.pos, &self.field_path(key), format!("expected a mapping, found a {}", n.kind_name()));
            return out;
        };
        for (k, v) in entries {
            let key_text = k.scalar().unwrap_or("").to_string();
            let path = format!("{}[{key_text:?}]", self.field_path(key));
            match v.scalar().and_then(|t| t.parse::<i64>().ok()) {
                Some(x) if (min..=max).contains(&x) => out.push((key_text, x, v.pos)),
                Some(x) => self.ctx.error(v.pos, &path, format!("{x} is out of range; expected {min}..={max}")),
                None => self.ctx.error(v.pos, &path, format!("expected an integer, found {}", describe(v))),
            }
        }
        out
    }

    /// Reports fields that were never read: unknown (with a suggestion) or tolerated.
    pub fn finish(&self) {
        let Value::Map(entries) = &self.node.value else { return };
        let known = self.known.borrow();
        let tolerated = self.tolerated.borrow();
        for (k, _) in entries {
            let Some(key) = k.scalar() else {
                self.ctx.error(k.pos, &self.path, format!("keys must be plain strings, found a {}", k.kind_name()));
                continue;
            };
            if known.contains(&key) {
                continue;
            }
            if let Some((_, why)) = tolerated.iter().find(|(t, _)| *t == key) {
                self.ctx.warn(k.pos, &self.field_path(key), format!("accepted but not acted on: {why}"));
                continue;
            }
            let all = known.iter().copied().chain(tolerated.iter().map(|(t, _)| *t));
            let hint = match did_you_mean(key, all.clone()) {
                Some(s) => format!("; did you mean {s:?}?"),
                None => {
                    let mut names: Vec<&str> = all.collect();
                    names.sort_unstable();
                    names.dedup();
                    format!("; known fields: {}", names.join(", "))
                }
            };
            self.ctx.error(k.pos, &self.field_path(key), format!("unknown field {key:?}{hint}"));
        }
    }
}

fn describe(n: &Node) -> String {
    match n.scalar() {
        Some(t) => format!("{} {t:?}", n.kind_name()),
        None => format!("a {}", n.kind_name()),
    }
}

/// Why a text is not a duration; each case holds the text (trimmed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    Negative(String),
    NotADuration(String),
    NoUnit(String),
    UnknownUnit {
        text: String,
        unit: String,
    },
    /// A number and unit beyond 10^12 seconds.
    TooLong(String),
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationError::Empty => f.write_str("empty duration"),
            DurationError::Negative(s) => write!(f, "{s:?} is negative"),
            DurationError::NotADuration(s) => write!(f, "{s:?} is not a duration"),
            DurationError::NoUnit(s) => write!(f, "{s:?} has a number without a unit"),
            DurationError::UnknownUnit { text, unit } => write!(f, "{text:?} has unknown unit {unit:?}"),
            DurationError::TooLong(s) => write!(f, "{s:?} is too long"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses Go's duration syntax (as Kubernetes and Istio use it): a sequence of number+unit
/// pairs with units ns, us, µs, ms, s, m, h. A bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_string()));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(DurationError::NotADuration(s.to_string()));
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| DurationError::NotADuration(s.to_string()))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(DurationError::NoUnit(s.to_string())),
            other => return Err(DurationError::UnknownUnit { text: s.to_string(), unit: other.to_string() }),
        };
        let part = number * seconds;
        if !part.is_finite() || part > 1e12 {
            return Err(DurationError::TooLong(s.to_string()));
        }
        total += Duration::from_secs_f64(part);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn duration_errors_say_what_is_wrong_with_the_text() {
        let text = |s: &str| parse_duration(s).expect_err(s).to_string();
        assert_eq!(text(" "), "empty duration");
        assert_eq!(text("-1s"), "\"-1s\" is negative");
        assert_eq!(text("s"), "\"s\" is not a duration");
        assert_eq!(text("1..2s"), "\"1..2s\" is not a duration");
        assert_eq!(text("10"), "\"10\" has a number without a unit");
        assert_eq!(text("5x"), "\"5x\" has unknown unit \"x\"");
        assert_eq!(text("9999999999999h"), "\"9999999999999h\" is too long");
        assert_eq!(parse_duration("5x"), Err(DurationError::UnknownUnit { text: "5x".into(), unit: "x".into() }));
    }
}
