//! Located diagnostics: every problem names its file, line, column, resource and field.

use std::fmt;
use std::sync::Arc;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Listed for information (resources veer does not act on).
    Ignored,
    /// Legal but likely not what the user meant (inert failover, dangling references that Kubernetes tolerates).
    Warning,
    Error,
}

/// A position in a source file (1-based line and column).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Arc<str>,
    pub pos: Pos,
    /// `Kind/namespace/name`, when the finding belongs to a resource.
    pub resource: Option<String>,
    /// Dotted field path, e.g. `spec.ports[0].number`.
    pub field: String,
    pub message: String,
}

/// Collects findings while a manifest set is read and checked.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

// === impl Diagnostic ===

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.col)?;
        match self.severity {
            Severity::Error => write!(f, "error: ")?,
            Severity::Warning => write!(f, "warning: ")?,
            Severity::Ignored => write!(f, "ignored: ")?,
        }
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

// === impl Diagnostics ===

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// Whether a set with these findings is refused ([`crate::from_sources`] decides it).
    pub(crate) fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sorted by file and position so output is stable.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| (&a.file, a.pos, &a.field).cmp(&(&b.file, b.pos, &b.field)));
        self.items.dedup();
        self.items
    }
}

/// The closest candidate to `word`, if one is close enough to be a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
