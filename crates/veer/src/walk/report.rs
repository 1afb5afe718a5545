//! What a walk prints: each step's title, what the seed says you should see, what veer measured
//! with a verdict, a live line while it waits, and the summary that decides the exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use super::{Seed, WalkOptions};

/// Columns assumed when the terminal does not say.
const DEFAULT_WIDTH: usize = 100;

/// The steps played so far and their checks.
pub struct Walk {
    seed: Seed,
    live: bool,
    started: Instant,
    steps: Vec<Step>,
    /// A live line is on screen (to be overwritten by the next line printed).
    live_line: bool,
    /// Client requests sent and failed over the whole walk, as [`Walk::count_traffic`] reports them.
    requests: usize,
    errors: usize,
}

struct Step {
    title: String,
    checks: Vec<(bool, String)>,
    /// Figures for the summary (time to fail over, split), as `name: value`.
    figures: Vec<String>,
}

impl Walk {
    pub fn new(seed: Seed, opts: WalkOptions) -> Walk {
        let live = !opts.plain && std::io::stdout().is_terminal();
        let walk = Walk { seed, live, started: crate::clock::now(), steps: Vec::new(), live_line: false, requests: 0, errors: 0 };
        walk.print(&format!("veer demo {} ({}): {}", seed.number(), seed.alias(), seed.title()));
        walk
    }

    /// Time since the walk started.
    pub fn elapsed(&self) -> Duration {
        crate::clock::since(self.started)
    }

    /// Starts the next step: its title and what the seed document says should happen.
    pub fn step(&mut self, title: &str, the_seed_says: &str) {
        self.clear_live();
        self.steps.push(Step { title: title.to_string(), checks: Vec::new(), figures: Vec::new() });
        self.print("");
        self.print(&format!("step {} [t={:.1}s] {title}", self.steps.len(), self.elapsed().as_secs_f64()));
        self.print(&format!("  the seed: {the_seed_says}"));
    }

    /// Something the walk did or saw that is not a check (an action, a DNS answer).
    pub fn info(&mut self, line: &str) {
        self.clear_live();
        self.print(&format!("  {line}"));
    }

    /// One measured fact of the current step; a false `ok` fails the step (and the walk).
    /// Returns `ok`, so a seed can stop early when later steps depend on this one.
    pub fn check(&mut self, ok: bool, measured: &str) -> bool {
        self.clear_live();
        self.print(&format!("  veer:     {measured}  {}", if ok { "✓" } else { "✗ NOT AS THE SEED SAYS" }));
        if self.steps.is_empty() {
            self.steps.push(Step { title: "setup".into(), checks: Vec::new(), figures: Vec::new() });
        }
        if let Some(step) = self.steps.last_mut() {
            step.checks.push((ok, measured.to_string()));
        }
        ok
    }

    /// A figure for the closing summary (e.g. "fail over: 1.2 s"), also printed now.
    pub fn figure(&mut self, figure: &str) {
        self.clear_live();
        self.print(&format!("  measured: {figure}"));
        if let Some(step) = self.steps.last_mut() {
            step.figures.push(figure.to_string());
        }
    }

    /// A line redrawn in place while the walk waits (a terminal only; nothing otherwise).
    pub fn live(&mut self, line: &str) {
        if !self.live {
            return;
        }
        // Asked at every redraw, as the default demo does: the terminal may have been resized.
        let width = terminal_width().unwrap_or(DEFAULT_WIDTH);
        let cut: String = format!("  … {line}").chars().take(width.saturating_sub(1)).collect();
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{cut}");
        let _ = out.flush();
        self.live_line = true;
    }

    /// Adds a client's totals to the walk's: any error fails the walk.
    pub fn count_traffic(&mut self, requests: usize, errors: usize) {
        self.requests += requests;
        self.errors += errors;
    }

    /// Prints the summary; exit 0 only if the walk played to the end, every check held and no
    /// client saw an error.
    pub fn finish(mut self, played: Result<(), String>) -> ExitCode {
        self.clear_live();
        self.print("");
        self.print(&format!("summary of veer demo {} [{:.1}s]", self.seed.number(), self.elapsed().as_secs_f64()));
        let mut failed = 0;
        for (i, step) in self.steps.iter().enumerate() {
            let bad = step.checks.iter().filter(|(ok, _)| !ok).count();
            failed += bad;
            let verdict = if bad == 0 { "✓" } else { "✗" };
            let figures = if step.figures.is_empty() { String::new() } else { format!(" ({})", step.figures.join("; ")) };
            self.print(&format!("  {verdict} step {}: {}{figures}", i + 1, step.title));
            for (_, what) in step.checks.iter().filter(|(ok, _)| !ok) {
                self.print(&format!("      not as the seed says: {what}"));
            }
        }
        self.print(&format!("  client requests: {}, errors: {}", self.requests, self.errors));
        let outcome = match played {
            Err(why) => {
                eprintln!("veer demo {}: stopped: {why}", self.seed.number());
                ExitCode::from(1)
            }
            Ok(()) if failed == 0 && self.errors == 0 => {
                self.print("every step as the seed says, with zero client errors");
                ExitCode::SUCCESS
            }
            Ok(()) => {
                eprintln!("veer demo {}: {failed} check(s) not as the seed says, {} client error(s)", self.seed.number(), self.errors);
                ExitCode::from(1)
            }
        };
        outcome
    }

    fn clear_live(&mut self) {
        if self.live_line {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
            self.live_line = false;
        }
    }

    /// Writes one line; a closed stdout (`| head`) ends the printing quietly, not the walk.
    fn print(&self, line: &str) {
        crate::out::say!("{line}");
    }
}

/// The terminal's width in columns, when stdout is a terminal that says.
pub fn terminal_width() -> Option<usize> {
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    rustix::termios::tcgetwinsize(&stdout).ok().map(|size| usize::from(size.ws_col)).filter(|&cols| cols >= 20)
}
