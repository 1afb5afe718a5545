//! `veer demo`: a two-cluster world on loopback showing failover and failback live.

use std::process::ExitCode;
use std::time::Duration;

/// How the demo runs.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    pub phase: Duration,
    pub rate: u32,
    pub plain: bool,
}

pub async fn run(_opts: DemoOptions) -> Result<ExitCode, String> {
    Err("not yet".into())
}
