//! What the Kubernetes source cannot do now (a watch refused, a status not written), kept for
//! `KubeSource::problems` as it is logged.

use std::collections::BTreeMap;
use std::sync::Arc;

/// What the source cannot do now, by what it concerns (a watched kind, a status write): the
/// API server's answer, which names a missing permission. Kept for `problems()` as it is logged.
pub type Problems = Arc<std::sync::Mutex<BTreeMap<String, String>>>;

/// Notes `why` under `what` (or clears it with `None`).
pub fn note(problems: &Problems, what: &str, why: Option<String>) {
    let mut map = problems.lock().unwrap_or_else(|e| e.into_inner());
    match why {
        Some(why) => map.insert(what.to_string(), why),
        None => map.remove(what),
    };
}
