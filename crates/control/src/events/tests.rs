use super::*;

fn ejection(events: &Events, n: u32) -> Event {
    events.record(NewEvent::endpoint(EventKind::Ejection, "api.example:443", "10.0.0.1:8443", format!("ejection {n}")).in_cluster("east"))
}

#[test]
fn seq_starts_at_one_and_increases() {
    let events = Events::new(8);
    assert_eq!(events.last_seq(), 0);
    assert!(events.all().is_empty());
    let a = ejection(&events, 1);
    let b = ejection(&events, 2);
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_eq!(events.last_seq(), 2);
    assert_eq!(events.all(), vec![a.clone(), b]);
    assert!(a.time_unix_ms > 1_600_000_000_000, "wall clock in ms");
}

#[test]
fn ring_drops_oldest_past_capacity() {
    let events = Events::new(3);
    for n in 1..=5 {
        ejection(&events, n);
    }
    let seqs: Vec<u64> = events.all().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(events.last_seq(), 5);
    assert_eq!(events.all()[0].reason, "ejection 3");
}

#[test]
fn since_returns_newer_events_only() {
    let events = Events::new(3);
    for n in 1..=5 {
        ejection(&events, n);
    }
    let seqs = |since| events.since(since).iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(0), vec![3, 4, 5]);
    assert_eq!(seqs(1), vec![3, 4, 5], "dropped range still yields what is retained");
    assert_eq!(seqs(3), vec![4, 5]);
    assert_eq!(seqs(4), vec![5]);
    assert_eq!(seqs(5), Vec::<u64>::new());
    assert_eq!(seqs(99), Vec::<u64>::new());
    assert_eq!(seqs(u64::MAX), Vec::<u64>::new());
}

#[test]
fn zero_capacity_keeps_nothing_but_still_numbers() {
    let events = Events::new(0);
    assert_eq!(ejection(&events, 1).seq, 1);
    assert_eq!(ejection(&events, 2).seq, 2);
    assert!(events.all().is_empty());
    assert!(events.since(0).is_empty());
    assert_eq!(events.last_seq(), 2);
}

#[test]
fn serializes_with_snake_case_kinds() {
    let events = Events::new(4);
    let e = events.record(NewEvent::priority_change("api.example:443", Some(0), Some(1), "all P0 endpoints ejected"));
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["seq"], 1);
    assert_eq!(v["kind"], "priority_change");
    assert_eq!(v["destination"], "api.example:443");
    assert!(v["endpoint"].is_null());
    assert!(v["cluster"].is_null());
    assert_eq!(v["from_priority"], 0);
    assert_eq!(v["to_priority"], 1);
    assert_eq!(v["reason"], "all P0 endpoints ejected");
    assert!(v["time_unix_ms"].is_u64());
    assert_eq!(v["count"], 1, "an event stands for one occurrence unless refusals were folded into it");

    let all = [
        (EventKind::Ejection, "ejection"),
        (EventKind::Unejection, "unejection"),
        (EventKind::ReEjection, "re_ejection"),
        (EventKind::EjectionRefused, "ejection_refused"),
        (EventKind::PriorityChange, "priority_change"),
        (EventKind::HealthCheckFailed, "health_check_failed"),
        (EventKind::HealthCheckPassed, "health_check_passed"),
        (EventKind::ConfigReloaded, "config_reloaded"),
        (EventKind::DnsOwnership, "dns_ownership"),
        (EventKind::ConfigRejected, "config_rejected"),
        (EventKind::Started, "started"),
        (EventKind::Stopping, "stopping"),
    ];
    for (kind, name) in all {
        assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::json!(name)));
        assert_eq!(kind.as_str(), name);
        assert_eq!(kind.to_string(), name);
    }
}

#[test]
fn concurrent_records_get_unique_seqs() {
    let events = std::sync::Arc::new(Events::new(1000));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let events = events.clone();
            std::thread::spawn(move || {
                for n in 0..100 {
                    ejection(&events, n);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let seqs: Vec<u64> = events.all().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
}

#[test]
fn fold_into_only_an_open_aggregate_within_the_window_still_in_the_ring() {
    // No aggregate yet: a new event.
    assert_eq!(fold_into(None, Some(1), 5_000), None);
    // Same second (the window starts at the first occurrence): fold.
    assert_eq!(fold_into(Some((7, 5_000)), Some(1), 5_000), Some(7));
    assert_eq!(fold_into(Some((7, 5_000)), Some(1), 5_999), Some(7));
    // A full second later: a new event.
    assert_eq!(fold_into(Some((7, 5_000)), Some(1), 6_000), None);
    // The aggregate was pushed out of the ring (or the ring keeps nothing): a new event.
    assert_eq!(fold_into(Some((7, 5_000)), Some(8), 5_100), None);
    assert_eq!(fold_into(Some((7, 5_000)), None, 5_100), None);
    // A clock that stepped back still folds.
    assert_eq!(fold_into(Some((7, 5_000)), Some(1), 4_000), Some(7));
}

#[test]
fn refusals_fold_per_kind_reason_and_second_with_a_count() {
    let events = Events::new(16);
    let t0 = 1_800_000_000_000;
    let a = events.record_refusal_at(EventKind::PeerRefused, "bad_cert", None, None, "refused 10.0.0.1:1: bad cert", t0);
    assert_eq!((a.seq, a.count), (1, 1));
    let b = events.record_refusal_at(EventKind::PeerRefused, "bad_cert", None, None, "refused 10.0.0.2:2: bad cert", t0 + 400);
    assert_eq!(
        (b.seq, b.count, b.reason.as_str()),
        (1, 2, "refused 10.0.0.1:1: bad cert"),
        "folded into the first, which keeps its reason"
    );
    // Another reason, another kind, another endpoint: events of their own.
    let c = events.record_refusal_at(EventKind::PeerRefused, "wrong_cluster", None, None, "refused x", t0 + 500);
    let d = events.record_refusal_at(EventKind::EjectionRefused, "bad_cert", None, None, "refused y", t0 + 500);
    let e = events.record_refusal_at(EventKind::EjectionRefused, "bad_cert", Some("d:80"), Some("10.0.0.9:80"), "refused z", t0 + 500);
    assert_eq!((c.seq, d.seq, e.seq), (2, 3, 4));
    // Other events in between do not stop the fold.
    ejection(&events, 1);
    let f = events.record_refusal_at(EventKind::PeerRefused, "bad_cert", None, None, "refused 10.0.0.3:3: bad cert", t0 + 999);
    assert_eq!((f.seq, f.count), (1, 3));
    // One second after the first: a new event.
    let g = events.record_refusal_at(EventKind::PeerRefused, "bad_cert", None, None, "refused 10.0.0.4:4: bad cert", t0 + 1_000);
    assert_eq!((g.seq, g.count, g.time_unix_ms), (6, 1, t0 + 1_000));
    let all = events.all();
    assert_eq!(all.iter().map(|e| (e.seq, e.count)).collect::<Vec<_>>(), vec![(1, 3), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]);
    let v = serde_json::to_value(&all[0]).unwrap();
    assert_eq!(v["count"], 3);
    assert_eq!(v["time_unix_ms"], t0);
}

#[test]
fn a_flood_of_refusals_does_not_wash_out_the_history() {
    let events = Events::new(1024);
    let t0 = 1_800_000_000_000;
    let before: Vec<u64> = (1..=3).map(|n| ejection(&events, n).seq).collect();
    events.record(NewEvent::node(EventKind::ConfigReloaded, "reloaded"));
    // 10,000 refusals over 10 s (1,000 a second), as from a client retrying a bad certificate.
    for i in 0..10_000u64 {
        events.record_refusal_at(
            EventKind::PeerRefused,
            "bad_certificate",
            None,
            None,
            format!("refused 127.0.0.1:{}: bad certificate", 20_000 + i),
            t0 + i,
        );
    }
    let all = events.all();
    for seq in &before {
        assert!(
            all.iter().any(|e| e.seq == *seq && e.kind == EventKind::Ejection),
            "ejection #{seq} washed out: {} events kept",
            all.len()
        );
    }
    assert!(all.iter().any(|e| e.kind == EventKind::ConfigReloaded));
    let refused: Vec<&Event> = all.iter().filter(|e| e.kind == EventKind::PeerRefused).collect();
    assert_eq!(refused.len(), 10, "one event per second");
    assert_eq!(refused.iter().map(|e| e.count).sum::<u64>(), 10_000, "every refusal counted");
}
