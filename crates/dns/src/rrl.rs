//! Response rate limiting as BIND and Knot do it: identical responses per client netblock, keyed
//! by answer class, with a window, slip and exempt networks. Pure: time is passed in.
//!
//! Why not a bucket per source: a recursive resolver serving a region is one source asking many
//! different questions, and it must never be starved. What reflection attacks need is the same
//! answer over and over to one (spoofed) victim, so that is what is counted: one account per
//! (client netblock, answer class, name, type). A resolver caches an answer for its TTL, so even
//! a farm of resolvers behind one /24 repeats an identical answer only a few times per second.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::{LowerName, RecordType};
use ipnet::IpNet;

/// What kind of response is being accounted; each class is its own account, and names group
/// differently per class (as BIND's RRL): an NXDOMAIN flood of random names under one zone is
/// one account, an error flood is one account per netblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnswerClass {
    /// NOERROR with records: keyed by the question's name and type.
    Answer,
    /// NOERROR without records: keyed by the question's name.
    NoData,
    /// NXDOMAIN: keyed by the zone, so random names under it share one account.
    NxDomain,
    /// A delegation to another server: keyed by the zone cut (veer delegates nothing today).
    Referral,
    /// REFUSED, FORMERR, SERVFAIL, NOTIMP…: one account per netblock.
    Error,
}

impl AnswerClass {
    pub const ALL: [AnswerClass; 5] =
        [AnswerClass::Answer, AnswerClass::NoData, AnswerClass::NxDomain, AnswerClass::Referral, AnswerClass::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            AnswerClass::Answer => "answer",
            AnswerClass::NoData => "nodata",
            AnswerClass::NxDomain => "nxdomain",
            AnswerClass::Referral => "referral",
            AnswerClass::Error => "error",
        }
    }

    /// Position in [`AnswerClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How the limiter runs (`veer run --dns-rrl-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrlConfig {
    /// `false`: every response is sent (`--dns-rrl-off`).
    pub enabled: bool,
    /// Identical answers (and NODATA, referrals) per second to one netblock before limiting.
    pub responses_per_second: u32,
    /// NXDOMAIN answers per second per zone and netblock.
    pub nxdomains_per_second: u32,
    /// Error answers (REFUSED, FORMERR…) per second per netblock.
    pub errors_per_second: u32,
    /// How far back a flood is remembered: an account may owe up to `window` seconds of its
    /// rate, so a flood stays limited that long after it stops (BIND's `window`).
    pub window: Duration,
    /// Every n-th limited response is sent empty with TC set so a real client retries over TCP,
    /// where spoofing is impossible (0: drop them all; 1: slip them all).
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Clients never limited (a site's own resolvers, monitoring).
    pub exempt: Vec<IpNet>,
}

impl Default for RrlConfig {
    /// BIND's recommended starting point: 10 identical responses per second (its docs suggest
    /// 5–10; a resolver asks again only when its cache expires), a 15 s window, slip 2, /24 and
    /// /56 netblocks. Varied questions each have their own account and are never limited.
    fn default() -> Self {
        RrlConfig {
            enabled: true,
            responses_per_second: 10,
            nxdomains_per_second: 10,
            errors_per_second: 10,
            window: Duration::from_secs(15),
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: Vec::new(),
        }
    }
}

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RrlVerdict {
    Send,
    /// Send an empty truncated answer instead.
    Slip,
    Drop,
}

#[derive(Clone, Copy, Debug)]
struct Account {
    /// Responses this account may still send now; negative while limited (down to
    /// `-window × rate`).
    balance: f64,
    last: Instant,
    limited: u32,
}

/// Accounts kept at most; idle ones are swept when the table is full, so a flood of random
/// names cannot grow memory.
pub const RRL_TABLE: usize = 131_072;

/// The limiter: one account per (netblock, class, name, type), hashed with a per-process key
/// so a client cannot aim collisions at another's account.
#[derive(Debug)]
pub struct Rrl {
    cfg: RrlConfig,
    hasher: RandomState,
    accounts: HashMap<u64, Account>,
}

// === impl Rrl ===

impl Rrl {
    pub fn new(cfg: RrlConfig) -> Self {
        Rrl { cfg, hasher: RandomState::new(), accounts: HashMap::new() }
    }

    pub fn config(&self) -> &RrlConfig {
        &self.cfg
    }

    /// Accounts kept now.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    fn netblock(&self, ip: IpAddr) -> IpAddr {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let keep = u32::from(self.cfg.ipv4_prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let keep = u32::from(self.cfg.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    fn rate(&self, class: AnswerClass) -> u32 {
        match class {
            AnswerClass::Answer | AnswerClass::NoData | AnswerClass::Referral => self.cfg.responses_per_second,
            AnswerClass::NxDomain => self.cfg.nxdomains_per_second,
            AnswerClass::Error => self.cfg.errors_per_second,
        }
    }

    /// Accounts one response to `ip` at `now`. `name` is the question's name for answers and
    /// NODATA, the zone for NXDOMAIN and referrals, ignored for errors; `qtype` counts for
    /// answers only.
    pub fn check(&mut self, ip: IpAddr, class: AnswerClass, name: Option<&LowerName>, qtype: RecordType, now: Instant) -> RrlVerdict {
        let rate = self.rate(class);
        if !self.cfg.enabled || rate == 0 || self.cfg.exempt.iter().any(|n| n.contains(&ip)) {
            return RrlVerdict::Send;
        }
        let key = {
            let mut h = self.hasher.build_hasher();
            self.netblock(ip).hash(&mut h);
            class.hash(&mut h);
            match class {
                AnswerClass::Answer => {
                    name.hash(&mut h);
                    qtype.hash(&mut h);
                }
                AnswerClass::NoData | AnswerClass::NxDomain | AnswerClass::Referral => name.hash(&mut h),
                AnswerClass::Error => {}
            }
            h.finish()
        };
        let rate = f64::from(rate);
        if self.accounts.len() >= RRL_TABLE && !self.accounts.contains_key(&key) {
            self.sweep(now);
        }
        let floor = -(self.cfg.window.as_secs_f64() * rate).max(1.0);
        let a = self.accounts.entry(key).or_insert(Account { balance: rate, last: now, limited: 0 });
        // One second's worth of credit at most: the burst an idle account may send.
        a.balance = (a.balance + now.saturating_duration_since(a.last).as_secs_f64() * rate).min(rate);
        a.last = now;
        a.balance = (a.balance - 1.0).max(floor);
        if a.balance >= 0.0 {
            a.limited = 0;
            return RrlVerdict::Send;
        }
        a.limited = a.limited.wrapping_add(1);
        if self.cfg.slip > 0 && a.limited.is_multiple_of(self.cfg.slip) {
            RrlVerdict::Slip
        } else {
            RrlVerdict::Drop
        }
    }

    /// Forgets accounts idle long enough to have earned back their full credit (from the floor,
    /// `window` + 1 s: as good as new); if the table is still full, forgets everything (limiting
    /// restarts from full credit: bounded memory wins).
    fn sweep(&mut self, now: Instant) {
        let recovered = self.cfg.window + Duration::from_secs(1);
        self.accounts.retain(|_, a| now.saturating_duration_since(a.last) < recovered);
        if self.accounts.len() >= RRL_TABLE {
            self.accounts.clear();
        }
    }
}

#[cfg(test)]
mod tests;
