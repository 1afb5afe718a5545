use super::*;

fn ejection(events: &Events, n: u32) -> Event {
    events.record(
        EventKind::Ejection,
        Some("api.example:443"),
        Some("10.0.0.1:8443"),
        Some("east"),
        None,
        None,
        format!("ejection {n}"),
    )
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
    let seqs = |since| {
        events
            .since(since)
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(0), vec![3, 4, 5]);
    assert_eq!(
        seqs(1),
        vec![3, 4, 5],
        "dropped range still yields what is retained"
    );
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
    let e = events.record(
        EventKind::PriorityChange,
        Some("api.example:443"),
        None,
        None,
        Some(0),
        Some(1),
        "all P0 endpoints ejected",
    );
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
        assert_eq!(
            serde_json::to_value(kind).ok(),
            Some(serde_json::json!(name))
        );
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
