//! veer's manifests: the five seed dialects read with exact locations, checked, and translated
//! into `veer-core` types.
//!
//! Data flows one way: [`files`] reads bytes, [`yaml`] builds a located tree, [`load`] turns
//! each document into a typed [`load::Resource`] (strict fields via [`decode`]), [`set`] checks
//! resources against each other, [`inventory`] holds each cluster's endpoints apart from that
//! policy, [`resolve`] turns a host into a core destination, and [`explain`] reports a client's
//! priority table.

pub mod decode;
pub mod diag;
pub mod dnszone;
pub mod ejection;
pub mod explain;
pub mod externaldns;
pub mod files;
pub mod gateway;
pub mod gloo;
pub mod httpmatch;
pub mod inventory;
pub mod istio;
pub mod load;
pub mod meta;
pub mod resolve;
pub mod router;
pub mod set;
pub mod smh;
pub mod tls;
pub mod tlsroute;
pub mod topology;
pub mod upstream_tls;
pub mod yaml;

use std::fmt;

use diag::{Diagnostic, Diagnostics, Severity};
use set::ManifestSet;

/// A manifest set that passed every check, with the findings that did not stop it: warnings,
/// and resources veer does not act on. Only [`from_sources`] makes one, so holding one is the
/// proof that the set may be served.
#[derive(Debug)]
pub struct Accepted {
    set: ManifestSet,
    warnings: Vec<Diagnostic>,
}

/// Why a manifest set was refused: every finding (errors and warnings, sorted by file and
/// position), at least one of them an error. There is no set to serve.
#[derive(Debug)]
pub struct Rejected {
    diagnostics: Vec<Diagnostic>,
}

/// Everything read from sources, whether or not it passes: only for reports on a set that may
/// be invalid (`veer validate` counts what was read and warns about it all the same). Never
/// serve it; [`from_sources`] gives a set that may be served.
#[derive(Debug)]
pub struct Loaded {
    /// What could be read; with errors, resources that failed are missing from it.
    pub set: ManifestSet,
    pub diagnostics: Diagnostics,
}

/// Parses and checks already-read sources (name, text): the set when it has no errors, else
/// every finding. No file system access; the clock is read once, to judge certificates' dates.
pub fn from_sources(sources: &[(String, String)]) -> Result<Accepted, Rejected> {
    let Loaded { set, diagnostics } = from_sources_even_if_invalid(sources);
    if diagnostics.has_errors() {
        return Err(Rejected { diagnostics: diagnostics.into_sorted() });
    }
    Ok(Accepted { set, warnings: diagnostics.into_sorted() })
}

/// Parses and checks sources as [`from_sources`] does, but keeps the set even when it has
/// errors, for reports on it (see [`Loaded`]).
pub fn from_sources_even_if_invalid(sources: &[(String, String)]) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    let mut resources = Vec::new();
    let mut pem = Vec::new();
    for (name, text) in sources {
        if files::is_pem_name(name) {
            pem.push((files::lexical(std::path::Path::new(name)), text.clone()));
            continue;
        }
        let (r, d) = load::parse_source(&std::sync::Arc::from(name.as_str()), text);
        resources.extend(r);
        diagnostics.extend(d);
    }
    // The one clock read of a load: certificates must be valid now.
    let set = ManifestSet::build(resources, pem, rustls_pki_types::UnixTime::now(), &mut diagnostics);
    Loaded { set, diagnostics }
}

// === impl Accepted ===

impl Accepted {
    pub fn set(&self) -> &ManifestSet {
        &self.set
    }

    pub fn into_set(self) -> ManifestSet {
        self.set
    }

    /// Warnings and ignored resources, sorted by file and position.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    pub fn into_parts(self) -> (ManifestSet, Vec<Diagnostic>) {
        (self.set, self.warnings)
    }
}

// === impl Rejected ===

impl Rejected {
    /// Every finding, sorted by file and position.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// The errors, sorted by file and position: why the set was refused.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }
}

/// One error per line.
impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejected {}
