//! `veer demo <seed>`: a seed document's own walkthrough replayed live on loopback, with its
//! resources, backends that name themselves, real veer nodes and traffic, step by step.
//!
//! Each seed module plays its steps through a [`Walk`] (what the seed says you should see, then
//! what veer measured, with a verdict) inside a [`Lab`] (backends, nodes, manifest folders, all
//! torn down at the end), and measures with [`Traffic`] (a client sending steadily through a node).

mod lab;
mod report;
mod seed000;
mod seed001;
mod seed002;
mod seed003;
mod seed004;
mod traffic;

use std::process::ExitCode;
use std::str::FromStr;

pub use lab::Lab;
pub use report::{terminal_width, Walk};
pub use traffic::{Split, Traffic};

/// The seed documents `veer demo` can replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// 000: Gloo Platform priority labels (VirtualDestination + FailoverPolicy).
    Gloo,
    /// 001: Service Mesh Hub FailoverService.
    Smh,
    /// 002: regional DNS takeover (`adoptsRegions`).
    Dns,
    /// 003: Istio locality failover across two networks.
    Istio,
    /// 004: Envoy Gateway active/passive fallback.
    EnvoyGateway,
}

impl Seed {
    pub const ALL: [Seed; 5] = [Seed::Gloo, Seed::Smh, Seed::Dns, Seed::Istio, Seed::EnvoyGateway];

    pub fn number(self) -> &'static str {
        match self {
            Seed::Gloo => "000",
            Seed::Smh => "001",
            Seed::Dns => "002",
            Seed::Istio => "003",
            Seed::EnvoyGateway => "004",
        }
    }

    pub fn alias(self) -> &'static str {
        match self {
            Seed::Gloo => "gloo",
            Seed::Smh => "smh",
            Seed::Dns => "sro",
            Seed::Istio => "istio",
            Seed::EnvoyGateway => "envoy-gateway",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Seed::Gloo => "Gloo priority labels: failover by locality and labels between two clusters",
            Seed::Smh => "Service Mesh Hub FailoverService: reviews v1/v2 fail over to v3 in another cluster",
            Seed::Dns => "regional DNS takeover: a healthy region adopts a failed region's zone",
            Seed::Istio => "Istio locality failover: two clusters on two networks, meshed over mTLS",
            Seed::EnvoyGateway => "Envoy Gateway fallback: an active backend and a passive one",
        }
    }
}

impl FromStr for Seed {
    type Err = String;

    fn from_str(s: &str) -> Result<Seed, String> {
        let s = s.trim().to_ascii_lowercase();
        Seed::ALL
            .into_iter()
            .find(|seed| {
                s == seed.number()
                    || s == seed.alias()
                    || s.trim_start_matches('0') == seed.number().trim_start_matches('0') && !s.is_empty()
            })
            .ok_or_else(|| {
                let known: Vec<String> = Seed::ALL.iter().map(|seed| format!("{} ({})", seed.number(), seed.alias())).collect();
                format!("unknown seed {s:?}; known: {}", known.join(", "))
            })
    }
}

/// How a walk runs.
#[derive(Clone, Copy, Debug)]
pub struct WalkOptions {
    /// Plain lines, no live redraw (also when stdout is not a terminal).
    pub plain: bool,
    /// Requests per second of each client.
    pub rate: u32,
}

/// Plays `seed`'s walkthrough; exit 0 only if every step's expectation held with zero
/// client-visible errors.
pub async fn run(seed: Seed, opts: WalkOptions) -> Result<ExitCode, String> {
    if opts.rate == 0 {
        return Err("--rate must be at least 1 request per second".into());
    }
    let mut walk = Walk::new(seed, opts);
    let mut lab = Lab::new(seed)?;
    let played = tokio::select! {
        played = play(seed, &mut walk, &mut lab, opts) => played,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
    };
    lab.shutdown().await;
    Ok(walk.finish(played))
}

async fn play(seed: Seed, walk: &mut Walk, lab: &mut Lab, opts: WalkOptions) -> Result<(), String> {
    match seed {
        Seed::Gloo => seed000::walk(walk, lab, opts).await,
        Seed::Smh => seed001::walk(walk, lab, opts).await,
        Seed::Dns => seed002::walk(walk, lab, opts).await,
        Seed::Istio => seed003::walk(walk, lab, opts).await,
        Seed::EnvoyGateway => seed004::walk(walk, lab, opts).await,
    }
}

/// Checks that a client's traffic switched (`took`, from [`Traffic::settle`]) and records how
/// long it took after `from`, and that no request failed meanwhile.
pub fn report_switch(walk: &mut Walk, client: &Traffic, from: std::time::Duration, took: Option<std::time::Duration>, what: &str) {
    match took {
        Some(d) => {
            let during = client.split(from, from + d + traffic::WINDOW);
            walk.figure(&format!("switched {what} in {:.2} s", d.as_secs_f64()));
            walk.check(during.errors == 0, &format!("during the switch: {during}"));
        }
        None => {
            walk.check(false, &format!("traffic did not switch {what} within the limit: lately {}", client.lately()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Seed;

    #[test]
    fn a_seed_is_named_by_number_with_or_without_zeros_or_by_alias() {
        for (name, seed) in [
            ("000", Seed::Gloo),
            ("0", Seed::Gloo),
            ("gloo", Seed::Gloo),
            ("001", Seed::Smh),
            ("1", Seed::Smh),
            ("SMH", Seed::Smh),
            ("2", Seed::Dns),
            ("sro", Seed::Dns),
            ("003", Seed::Istio),
            ("istio", Seed::Istio),
            ("004", Seed::EnvoyGateway),
            ("envoy-gateway", Seed::EnvoyGateway),
        ] {
            assert_eq!(name.parse::<Seed>(), Ok(seed), "{name}");
        }
        for bad in ["", "5", "0004x", "nginx"] {
            let err = bad.parse::<Seed>().expect_err(bad);
            assert!(err.contains("unknown seed") && err.contains("004 (envoy-gateway)"), "{err}");
        }
    }
}
