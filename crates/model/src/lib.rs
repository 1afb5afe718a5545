//! veer's manifests: the five seed dialects read with exact locations, checked, and translated
//! into `veer-core` types.
//!
//! Data flows one way: [`files`] reads bytes, [`yaml`] builds a located tree, [`load`] turns
//! each document into a typed [`load::Resource`] (strict fields via [`decode`]), [`set`] checks
//! resources against each other, [`resolve`] turns a host into a core destination, and
//! [`explain`] reports a client's priority table.

pub mod decode;
pub mod diag;
pub mod ejection;
pub mod explain;
pub mod externaldns;
pub mod files;
pub mod gateway;
pub mod gloo;
pub mod httpmatch;
pub mod istio;
pub mod load;
pub mod meta;
pub mod resolve;
pub mod router;
pub mod set;
pub mod smh;
pub mod topology;
pub mod yaml;

use diag::Diagnostics;
use set::ManifestSet;

/// A manifest set and every finding made while reading it.
#[derive(Debug)]
pub struct Loaded {
    pub set: ManifestSet,
    pub diagnostics: Diagnostics,
}

/// Parses and checks already-read sources (name, text). Pure: no file system access.
pub fn from_sources(sources: &[(String, String)]) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    let mut resources = Vec::new();
    for (name, text) in sources {
        let (r, d) = load::parse_source(&std::sync::Arc::from(name.as_str()), text);
        resources.extend(r);
        diagnostics.extend(d);
    }
    let set = ManifestSet::build(resources, &mut diagnostics);
    Loaded { set, diagnostics }
}
