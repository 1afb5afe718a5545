use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const TTL: Duration = Duration::from_secs(10);

fn params() -> Params {
    // 2 % of the TTL: covers a holder's clock 0.9 % slow against a server's 0.9 % fast.
    Params { ttl: TTL, drift_margin: TTL / 50, hold_down: Duration::from_secs(30), stagger: Duration::from_secs(1) }
}

fn roles() -> Roles {
    Roles { home: "east".into(), standbys: vec!["west".into(), "north".into()], adopter: None }
}

fn view<'a>(me: &'a str, healthy: bool, lease: LeaseView, home_ready_since: Option<Instant>) -> View<'a> {
    View { me, healthy, lease, home_ready_since }
}

fn held(holder: &str) -> LeaseView {
    LeaseView::Held { holder: holder.into(), epoch: 7 }
}

#[test]
fn the_home_takes_a_free_lease_and_a_standby_waits_for_it_while_the_home_is_ready() {
    let t0 = crate::clock::now();
    let free = LeaseView::Free { since: t0 };
    assert_eq!(decide(&roles(), &params(), &view("east", true, free.clone(), None), t0).intent, Intent::Contend);
    assert_eq!(decide(&roles(), &params(), &view("west", true, free.clone(), Some(t0)), t0).intent, Intent::Wait);
    // Home not ready: the first standby at once, the second one stagger later.
    assert_eq!(decide(&roles(), &params(), &view("west", true, free.clone(), None), t0).intent, Intent::Contend);
    assert_eq!(decide(&roles(), &params(), &view("north", true, free.clone(), None), t0).intent, Intent::Wait);
    let later = t0 + params().stagger;
    assert_eq!(decide(&roles(), &params(), &view("north", true, free, None), later).intent, Intent::Contend);
}

#[test]
fn a_holder_that_cannot_serve_releases_and_one_not_named_never_contends() {
    let t0 = crate::clock::now();
    assert_eq!(decide(&roles(), &params(), &view("east", false, held("east"), None), t0).intent, Intent::Release);
    let free = LeaseView::Free { since: t0 - TTL };
    assert_eq!(decide(&roles(), &params(), &view("south", true, free, None), t0).intent, Intent::Wait);
}

#[test]
fn the_standby_hands_back_only_after_the_hold_down() {
    let t0 = crate::clock::now();
    let p = params();
    let v = view("west", true, held("west"), Some(t0));
    assert_eq!(decide(&roles(), &p, &v, t0 + p.hold_down - Duration::from_millis(1)).intent, Intent::Keep);
    assert_eq!(decide(&roles(), &p, &v, t0 + p.hold_down).intent, Intent::Release);
}

#[test]
fn adoption_overrides_health_and_home() {
    let t0 = crate::clock::now();
    let r = Roles { adopter: Some("north".into()), ..roles() };
    let free = LeaseView::Free { since: t0 };
    assert_eq!(decide(&r, &params(), &view("north", false, free.clone(), None), t0).intent, Intent::Contend);
    assert_eq!(decide(&r, &params(), &view("east", true, free, None), t0).intent, Intent::Wait);
    assert_eq!(decide(&r, &params(), &view("east", true, held("east"), None), t0).intent, Intent::Release);
}

#[test]
fn the_write_deadline_counts_from_the_send_and_keeps_the_margin() {
    let t0 = crate::clock::now();
    let p = params();
    let t = Tenure::granted(5, t0, TTL, &p);
    assert!(t.may_write(t0 + TTL - p.drift_margin - Duration::from_millis(1)));
    assert!(!t.may_write(t0 + TTL - p.drift_margin));
    // A late answer to an older renewal does not shorten the tenure.
    assert_eq!(t.renewed(t0 - Duration::from_secs(1), TTL, &p), t);
}

#[test]
fn a_fence_refuses_an_older_epoch() {
    let mut f = Fence::default();
    assert!(f.admit(3));
    assert!(f.admit(3));
    assert!(f.admit(9));
    assert!(!f.admit(4));
    assert_eq!(f.highest(), 9);
}

/// One node of the simulation: its clock runs at `rate` against real time.
struct Node {
    name: &'static str,
    rate: f64,
    healthy: bool,
    /// Cut off from etcd: no renewal, no revoke, no take reaches it.
    cut: bool,
    tenure: Option<Tenure>,
    /// Real time (ms) the current tenure began.
    began: f64,
    free_since: Option<Instant>,
    ready: ReadySince,
}

/// A tenure as real time saw it: who wrote, under which epoch, from when until when (ms).
#[derive(Debug)]
struct Span {
    node: &'static str,
    epoch: u64,
    from: f64,
    to: f64,
}

/// A model etcd (one writer key, a revision counter, the server's lease expiry in real time, its
/// clock up to `server_fast` ahead) driven by three nodes that decide with [`decide`] and write
/// only under a [`Tenure`]. Delays, lost renewals, cuts and health flips are drawn from `seed`.
fn simulate(seed: u64, drift: f64, server_fast: f64, steps: usize) -> Vec<Span> {
    let p = params();
    let mut rng = fastrand::Rng::with_seed(seed);
    let base = crate::clock::now();
    let ttl_ms = TTL.as_secs_f64() * 1000.0;
    let names = ["east", "west", "north"];
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|&name| Node {
            name,
            rate: 1.0 + (rng.f64() * 2.0 - 1.0) * drift,
            healthy: true,
            cut: false,
            tenure: None,
            began: 0.0,
            free_since: None,
            ready: ReadySince::default(),
        })
        .collect();
    let local = |n: &Node, real: f64| base + Duration::from_secs_f64(real * n.rate / 1000.0);
    // The key: holder index, epoch (create revision), server's expiry in real ms.
    let mut key: Option<(usize, u64, f64)> = None;
    let mut revision = 1u64;
    let mut spans = Vec::new();
    let mut real = 0.0f64;
    let end_span = |spans: &mut Vec<Span>, n: &mut Node, stop: f64| {
        if let Some(t) = n.tenure.take() {
            // When the node's clock reaches `until`, in real time.
            let until_real = (t.until - base).as_secs_f64() * 1000.0 / n.rate;
            spans.push(Span { node: n.name, epoch: t.epoch, from: n.began, to: until_real.min(stop) });
        }
    };
    for _ in 0..steps {
        real += 1.0 + rng.f64() * ttl_ms / 20.0;
        if key.is_some_and(|(_, _, exp)| real >= exp) {
            key = None;
        }
        // The home's health flips now and then; a standby's rarely.
        for (i, n) in nodes.iter_mut().enumerate() {
            if rng.f64() < if i == 0 { 0.2 } else { 0.05 } {
                n.healthy = !n.healthy;
            }
            if rng.f64() < 0.02 {
                n.cut = !n.cut;
            }
        }
        let home_ready = nodes[0].healthy;
        for i in rng.usize(0..3)..rng.usize(0..3) + 3 {
            let i = i % 3;
            let now = local(&nodes[i], real);
            if nodes[i].cut {
                // It hears nothing: it writes on until its own deadline, and not a moment longer.
                if nodes[i].tenure.is_some_and(|t| !t.may_write(now)) {
                    end_span(&mut spans, &mut nodes[i], f64::INFINITY);
                }
                continue;
            }
            let lease = match key {
                Some((h, epoch, _)) => {
                    nodes[i].free_since = None;
                    LeaseView::Held { holder: names[h].into(), epoch }
                }
                None => LeaseView::Free { since: *nodes[i].free_since.get_or_insert(now) },
            };
            nodes[i].ready.observe(home_ready, now);
            let v = View { me: names[i], healthy: nodes[i].healthy, lease, home_ready_since: nodes[i].ready.get() };
            let sent = real;
            let recv = real + rng.f64() * 50.0;
            match decide(&roles(), &p, &v, now).intent {
                Intent::Contend if key.is_none() => {
                    revision += 1;
                    key = Some((i, revision, recv + ttl_ms * (1.0 - server_fast)));
                    nodes[i].tenure = Some(Tenure::granted(revision, now, TTL, &p));
                    nodes[i].began = recv;
                }
                Intent::Keep if rng.f64() < 0.7 => {
                    // A renewal that arrives: the server extends from when it received it.
                    if let Some((h, _, exp)) = key.as_mut().filter(|(h, _, exp)| *h == i && recv < *exp) {
                        let _ = h;
                        *exp = recv + ttl_ms * (1.0 - server_fast);
                        nodes[i].tenure = nodes[i].tenure.map(|t| t.renewed(now, TTL, &p));
                    }
                }
                Intent::Release => {
                    end_span(&mut spans, &mut nodes[i], sent);
                    if key.is_some_and(|(h, _, _)| h == i) {
                        key = None;
                    }
                }
                _ => {}
            }
            // A node whose tenure lapsed knows it may not write: its span ends there.
            let lapsed = nodes[i].tenure.is_some_and(|t| !t.may_write(local(&nodes[i], real)));
            if lapsed {
                end_span(&mut spans, &mut nodes[i], f64::INFINITY);
            }
        }
    }
    for n in &mut nodes {
        end_span(&mut spans, n, real);
    }
    spans
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never two writers at one instant: every tenure ends before the next one begins, with
    /// clocks running apart up to 0.9 % each way, delayed and lost renewals, nodes cut off from etcd, and flapping health.
    #[test]
    fn no_two_nodes_may_write_at_the_same_instant(seed in any::<u64>(), drift in 0.004f64..0.009, server_fast in 0.004f64..0.009) {
        let mut spans = simulate(seed, drift, server_fast, 600);
        spans.retain(|s| s.to > s.from);
        spans.sort_by(|a, b| a.from.total_cmp(&b.from));
        for w in spans.windows(2) {
            if w[0].node != w[1].node || w[0].epoch != w[1].epoch {
                prop_assert!(w[0].to <= w[1].from, "overlap: {:?} and {:?}", w[0], w[1]);
            }
        }
    }

    /// Epochs grow with every hand-over: each new tenure's epoch is above every earlier one's.
    #[test]
    fn epochs_strictly_increase_over_hand_overs(seed in any::<u64>()) {
        let mut spans = simulate(seed, 0.009, 0.009, 600);
        // A tenure released before its grant arrived never wrote.
        spans.retain(|s| s.to > s.from);
        spans.sort_by(|a, b| a.from.total_cmp(&b.from));
        let mut fence = Fence::default();
        let mut last: Option<(&str, u64)> = None;
        for s in &spans {
            prop_assert!(fence.admit(s.epoch), "epoch went back: {s:?} after {}", fence.highest());
            if let Some((node, epoch)) = last {
                if node != s.node || epoch != s.epoch {
                    prop_assert!(s.epoch > epoch || (node == s.node && epoch == s.epoch));
                }
            }
            last = Some((s.node, s.epoch));
        }
    }

    /// A home whose health flaps faster than the hold-down never gets the zone back: the
    /// standby keeps it through every flap, and hands back once the home stays ready.
    #[test]
    fn flapping_within_the_hold_down_does_not_move_the_zone_back(ups in proptest::collection::vec(1u64..29_000, 1..40), downs in proptest::collection::vec(1u64..5_000, 1..40)) {
        let p = params();
        let t0 = crate::clock::now();
        let mut now = t0;
        let mut ready = ReadySince::default();
        for (up, down) in ups.iter().zip(&downs) {
            let end = now + Duration::from_millis(*up);
            while now < end {
                ready.observe(true, now);
                let d = decide(&roles(), &p, &view("west", true, held("west"), ready.get()), now);
                prop_assert_eq!(d.intent, Intent::Keep, "handed back {:?} into a flap", now - t0);
                now += Duration::from_millis(500);
            }
            ready.observe(false, now);
            now += Duration::from_millis(*down);
        }
        let start = now;
        loop {
            ready.observe(true, now);
            if decide(&roles(), &p, &view("west", true, held("west"), ready.get()), now).intent == Intent::Release {
                break;
            }
            now += Duration::from_millis(500);
        }
        prop_assert!(now - start >= p.hold_down);
    }
}

fn identity(cluster: &str, region: &str, adopts: &str) -> String {
    format!(
        "apiVersion: cluster.router.io/v1alpha1\nkind: ClusterIdentity\nmetadata:\n  name: cluster-identity\n  labels: {{topology.istio.io/cluster: {cluster}}}\nspec:\n  region: {region}\n  cluster: aks01\n  domain: example.com\n  environmentLetter: p\n  adoptsRegions: [{adopts}]\n"
    )
}

fn leased_set(standbys: &str, identities: &[String]) -> veer_model::set::ManifestSet {
    let zone = format!(
        "apiVersion: veer.io/v1alpha1\nkind: DNSZone\nmetadata: {{name: weu, namespace: dns}}\nspec:\n  region: weu\n  zone: example.com\n  server: 127.0.0.1:53\n  tsig: {{keyName: k, secretRef: {{name: tsig}}}}\n  takeover: {{standbys: [{standbys}], leaseTTL: 4s, holdDown: 1m}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tsig, namespace: dns}}\nstringData: {{rfc2136_tsig_secret: dmVlci10ZXN0LXRzaWcta2V5LW9mLTMyLWJ5dGVzISE=}}\n"
    );
    let mut sources = vec![("zone.yaml".to_string(), zone)];
    sources.extend(identities.iter().enumerate().map(|(i, t)| (format!("ci{i}.yaml"), t.clone())));
    veer_model::from_sources(&sources).expect("accepted").into_set()
}

#[test]
fn a_leased_zone_takes_its_home_from_the_region_its_standbys_and_adopter_from_the_identities() {
    let set = leased_set("aks-neu-01, aks-frc-01", &[identity("aks-weu-01", "weu", ""), identity("aks-neu-01", "neu", "")]);
    let zones = lease_zones(&set);
    assert_eq!(zones.len(), 1);
    let z = &zones[0];
    assert_eq!(z.key, ZoneKey { region: "weu".into(), origin: "example.com".into() });
    assert_eq!(z.roles, Roles { home: "aks-weu-01".into(), standbys: vec!["aks-neu-01".into(), "aks-frc-01".into()], adopter: None });
    assert_eq!((z.params.ttl, z.params.hold_down), (Duration::from_secs(4), Duration::from_secs(60)));
    assert!(z.params.drift_margin > Duration::ZERO && z.params.drift_margin < z.params.ttl);
    // The manual override names its adopter; a second cluster of the region stands by first.
    let set = leased_set(
        "aks-neu-01",
        &[identity("aks-weu-01", "weu", ""), identity("aks-weu-02", "weu", ""), identity("aks-neu-01", "neu", "weu")],
    );
    let roles = &lease_zones(&set)[0].roles;
    assert_eq!(roles.home, "aks-weu-01");
    assert_eq!(roles.standbys, ["aks-weu-02", "aks-neu-01"]);
    assert_eq!(roles.adopter.as_deref(), Some("aks-neu-01"));
}

#[test]
fn a_zone_key_covers_its_origin_and_names_below_it_in_its_region_only() {
    let k = ZoneKey { region: "weu".into(), origin: "example.com".into() };
    assert!(k.covers("weu", "example.com") && k.covers("weu", "Web.Example.com.") && k.covers("weu", "a.b.example.com"));
    assert!(!k.covers("neu", "example.com"), "another region's zone of the same name");
    assert!(!k.covers("weu", "notexample.com") && !k.covers("weu", "example.org"));
    assert_eq!(k.writer_key("/veer/"), "/veer/zones/weu/example.com/writer");
}
