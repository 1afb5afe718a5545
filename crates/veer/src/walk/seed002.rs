//! Seed 002's walkthrough (see `Seed::title`), played live.

use super::{Lab, Walk, WalkOptions};

pub async fn walk(walk: &mut Walk, lab: &mut Lab, opts: WalkOptions) -> Result<(), String> {
    let _ = (walk, lab, opts);
    Err("the walkthrough of seed 002 is not written yet".into())
}
