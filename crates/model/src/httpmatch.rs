//! HTTPRoute request matching as Gateway API specifies it: typed matches, the test of a request against them, and the precedence between two matches.
//!
//! Pure: a request is seen through [`Request`], so the proxy matches `http` requests and
//! `veer explain` matches a request it describes, with the same code.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::fmt;
use std::sync::Arc;

use regex_automata::meta::Regex;

/// A regular expression as veer runs it: the syntax of Rust's `regex` (RE2's, without
/// backreferences or look-around), matched against the whole value, as Envoy's `safe_regex`
/// does. Case-sensitive unless the pattern says `(?i)`.
#[derive(Clone)]
pub struct Pattern {
    source: Arc<str>,
    re: Regex,
}

/// Longest pattern accepted: the spec's limit for header values; path and query values are
/// shorter still.
pub const MAX_PATTERN: usize = 4096;

/// Why an expression is refused.
#[derive(Debug)]
pub enum PatternError {
    /// Longer than [`MAX_PATTERN`]: its length in bytes.
    TooLong(usize),
    /// Not valid syntax, or too large a program to run on every request (boxed: it is large,
    /// and a pattern that compiles is the common case).
    Invalid(Box<regex_automata::meta::BuildError>),
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::TooLong(len) => write!(f, "the expression is {len} bytes long; at most {MAX_PATTERN}"),
            // A syntax error prints the (wrapped) pattern with a caret over several lines; its
            // last line says what is wrong, which fits a one-line diagnostic.
            PatternError::Invalid(e) => match e.syntax_error() {
                Some(s) => f.write_str(
                    s.to_string().lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim_start_matches("error: "),
                ),
                None => write!(f, "{e}"),
            },
        }
    }
}

impl std::error::Error for PatternError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PatternError::TooLong(_) => None,
            PatternError::Invalid(e) => Some(&**e),
        }
    }
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        if source.len() > MAX_PATTERN {
            return Err(PatternError::TooLong(source.len()));
        }
        // A bounded program: a hostile pattern is refused here instead of costing memory on
        // every request.
        let re = Regex::builder()
            .configure(Regex::config().nfa_size_limit(Some(1 << 20)).hybrid_cache_capacity(1 << 20))
            .build(&format!("^(?:{source})$"))
            .map_err(|e| PatternError::Invalid(Box::new(e)))?;
        Ok(Pattern { source: Arc::from(source), re })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, value: &[u8]) -> bool {
        self.re.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

/// `HTTPPathMatch`. Values of `Exact` and `Prefix` start with `/` (checked when read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Element by element: `/abc` matches `/abc`, `/abc/` and `/abc/def`, not `/abcd`; a
    /// trailing `/` in the prefix is ignored.
    Prefix(String),
    Regex(Pattern),
}

/// `HTTPMethod`: the nine methods Gateway API names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

/// A header or query parameter value test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    /// Byte for byte, case-sensitive.
    Exact(String),
    Regex(Pattern),
}

/// `HTTPHeaderMatch`. The name is kept in lower case: header names compare case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// `HTTPQueryParamMatch`. The name compares exactly (case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// `HTTPRouteMatch`: every condition must hold. Header and query names are unique within one
/// match (the reader keeps the first of equivalent names, as the spec says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

/// What matching reads of a request.
pub trait Request {
    /// The method as sent (`GET`).
    fn method(&self) -> &str;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// The query, without `?`.
    fn query(&self) -> Option<&str>;
    /// Every value of header `name` (given in lower case), in the order received.
    fn header_values(&self, name: &str) -> impl Iterator<Item = &[u8]>;
}

/// A request described by its parts: what `veer explain` and tests match.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
}

impl Request for Plain<'_> {
    fn method(&self) -> &str {
        self.method
    }

    fn path(&self) -> &str {
        self.path
    }

    fn query(&self) -> Option<&str> {
        self.query
    }

    fn header_values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_bytes())
    }
}

// === impl Method ===

impl Method {
    /// The spelling of each method, as the spec and HTTP write them.
    pub const NAMES: [&'static str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    const ALL: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
    ];

    pub fn parse(s: &str) -> Option<Method> {
        Self::NAMES.iter().position(|n| *n == s).map(|i| Self::ALL[i])
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

// === impl PathMatch ===

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty() || path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(re) => re.is_match(path.as_bytes()),
        }
    }

    /// The value as written: a path, a prefix or an expression.
    pub fn value(&self) -> &str {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
            PathMatch::Regex(re) => re.source(),
        }
    }
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Exact(p) => write!(f, "path = {p}"),
            PathMatch::Prefix(p) => write!(f, "path under {p}"),
            PathMatch::Regex(re) => write!(f, "path ~ {}", re.source()),
        }
    }
}

// === impl ValueMatch ===

impl ValueMatch {
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(v) => v.as_bytes() == value,
            ValueMatch::Regex(re) => re.is_match(value),
        }
    }
}

// === impl HeaderMatch ===

impl HeaderMatch {
    /// A header sent more than once is tested as its values joined by `,` (RFC 9110 §5.3, as
    /// Envoy does); an absent header never matches.
    pub fn matches(&self, req: &impl Request) -> bool {
        let mut values = req.header_values(&self.name);
        let Some(first) = values.next() else { return false };
        let Some(second) = values.next() else { return self.value.matches(first) };
        let mut joined = Vec::with_capacity(first.len() + second.len() + 1);
        joined.extend_from_slice(first);
        for v in std::iter::once(second).chain(values) {
            joined.push(b',');
            joined.extend_from_slice(v);
        }
        self.value.matches(&joined)
    }
}

// === impl QueryMatch ===

impl QueryMatch {
    /// The first parameter of that name decides (the spec's recommendation for repeated
    /// parameters); names and values are compared percent-decoded, `+` as it is.
    pub fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        let Some(value) = query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            decoded_eq(name.as_bytes(), self.name.as_bytes()).then_some(value)
        }) else {
            return false;
        };
        match &self.value {
            ValueMatch::Exact(v) => decoded_eq(value.as_bytes(), v.as_bytes()),
            ValueMatch::Regex(re) => re.is_match(&percent_decode(value.as_bytes())),
        }
    }
}

/// Percent-decoded bytes of `raw`; an escape that is not two hex digits stays as written.
fn decode_iter(raw: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *raw.get(i)?;
        if b == b'%' {
            if let (Some(h), Some(l)) = (raw.get(i + 1).and_then(|c| hex(*c)), raw.get(i + 2).and_then(|c| hex(*c))) {
                i += 3;
                return Some(h << 4 | l);
            }
        }
        i += 1;
        Some(b)
    })
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn decoded_eq(raw: &[u8], expected: &[u8]) -> bool {
    if !raw.contains(&b'%') {
        return raw == expected;
    }
    decode_iter(raw).eq(expected.iter().copied())
}

fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if raw.contains(&b'%') {
        Cow::Owned(decode_iter(raw).collect())
    } else {
        Cow::Borrowed(raw)
    }
}

// === impl RouteMatch ===

impl RouteMatch {
    /// The match Gateway API gives a rule without `matches`, or a match without `path`.
    pub fn any() -> RouteMatch {
        RouteMatch { path: PathMatch::Prefix("/".into()), method: None, headers: Vec::new(), query: Vec::new() }
    }

    /// Whether every condition holds; the cheapest are tested first.
    pub fn matches(&self, req: &impl Request) -> bool {
        self.method.is_none_or(|m| m.as_str() == req.method())
            && self.path.matches(req.path())
            && self.headers.iter().all(|h| h.matches(req))
            && self.query.iter().all(|q| q.matches(req.query()))
    }

    /// Its place among the matches of every route on a host; smaller is tried first.
    pub fn precedence(&self) -> Precedence {
        let path = match &self.path {
            PathMatch::Exact(_) => PathRank::Exact,
            // Implementation-specific in the spec; veer puts an expression between exact paths
            // and prefixes, longer expressions first, as Envoy Gateway does.
            PathMatch::Regex(re) => PathRank::Regex(Reverse(re.source().len())),
            PathMatch::Prefix(p) => PathRank::Prefix(Reverse(p.len())),
        };
        Precedence { path, method: Reverse(self.method.is_some()), headers: Reverse(self.headers.len()), query: Reverse(self.query.len()) }
    }
}

impl fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = self.method {
            write!(f, "{} ", m.as_str())?;
        }
        write!(f, "{}", self.path)?;
        for h in &self.headers {
            match &h.value {
                ValueMatch::Exact(v) => write!(f, ", header {}: {v}", h.name)?,
                ValueMatch::Regex(re) => write!(f, ", header {} ~ {}", h.name, re.source())?,
            }
        }
        for q in &self.query {
            match &q.value {
                ValueMatch::Exact(v) => write!(f, ", query {}={v}", q.name)?,
                ValueMatch::Regex(re) => write!(f, ", query {} ~ {}", q.name, re.source())?,
            }
        }
        Ok(())
    }
}

/// The spec's precedence among matches, in its order: an exact path, then the longest prefix,
/// then a method match, then the most header matches, then the most query matches. Compared
/// field by field; smaller wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    path: PathRank,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PathRank {
    Exact,
    Regex(Reverse<usize>),
    Prefix(Reverse<usize>),
}

#[cfg(test)]
mod tests;
