use super::*;

/// The value of the sample line starting with `series` (name plus labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.split(' ').next()?.parse().ok()
    })
}

#[test]
fn empty_registry_shows_only_the_reload_zeroes() {
    // prometheus-client omits families without series; the reload outcomes are pre-created.
    let text = Metrics::new().encode();
    assert!(text.contains("# TYPE veer_config_reloads counter"), "{text}");
    assert!(!text.contains("veer_requests"), "{text}");
    assert_eq!(sample(&text, r#"veer_config_reloads_total{result="ok"}"#), Some(0.0));
    assert_eq!(sample(&text, r#"veer_config_reloads_total{result="rejected"}"#), Some(0.0));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn every_family_appears_after_recording() {
    let m = Metrics::default();
    let cache = RequestCache::default();
    m.request(&cache, "api.example:443", "east", 0, 200, 0.002);
    m.request(&cache, "api.example:443", "east", 0, 200, 0.004);
    m.request(&cache, "api.example:443", "west", 1, 503, 0.5);
    m.request(&cache, "api.example:443", "west", 1, 0, 1.0);
    m.retry("api.example:443", "connect_failure");
    m.retry("api.example:443", "5xx");
    m.retry("api.example:443", "5xx");
    m.retry_budget_exhausted("api.example:443");
    m.ejection("api.example:443", "10.0.0.1:443", "consecutive_5xx");
    m.unejection("api.example:443", "10.0.0.1:443");
    m.set_active_priority("api.example:443", 1);
    m.set_active_priority("other:80", -1);
    m.failover_event("api.example:443", 0, 1);
    m.set_endpoint_health("api.example:443", "10.0.0.1:443", "east", 0, false);
    m.set_endpoint_health("api.example:443", "10.0.0.2:443", "west", 1, true);
    m.config_reload(true);
    m.config_reload(false);
    m.config_reload(false);
    let t = m.encode();

    let expect = [
        (r#"veer_requests_total{destination="api.example:443",cluster="east",priority="0",status="200"}"#, 2.0),
        (r#"veer_requests_total{destination="api.example:443",cluster="west",priority="1",status="503"}"#, 1.0),
        (r#"veer_requests_total{destination="api.example:443",cluster="west",priority="1",status="0"}"#, 1.0),
        (r#"veer_request_duration_seconds_count{destination="api.example:443"}"#, 4.0),
        (r#"veer_request_duration_seconds_bucket{le="0.0005",destination="api.example:443"}"#, 0.0),
        (r#"veer_request_duration_seconds_bucket{le="0.002",destination="api.example:443"}"#, 1.0),
        (r#"veer_request_duration_seconds_bucket{le="+Inf",destination="api.example:443"}"#, 4.0),
        (r#"veer_retries_total{destination="api.example:443",reason="connect_failure"}"#, 1.0),
        (r#"veer_retries_total{destination="api.example:443",reason="5xx"}"#, 2.0),
        (r#"veer_retry_budget_exhausted_total{destination="api.example:443"}"#, 1.0),
        (r#"veer_ejections_total{destination="api.example:443",endpoint="10.0.0.1:443",reason="consecutive_5xx"}"#, 1.0),
        (r#"veer_unejections_total{destination="api.example:443",endpoint="10.0.0.1:443"}"#, 1.0),
        (r#"veer_active_priority{destination="api.example:443"}"#, 1.0),
        (r#"veer_active_priority{destination="other:80"}"#, -1.0),
        (r#"veer_failover_events_total{destination="api.example:443",from="0",to="1"}"#, 1.0),
        (r#"veer_endpoint_healthy{destination="api.example:443",endpoint="10.0.0.1:443",cluster="east",priority="0"}"#, 0.0),
        (r#"veer_endpoint_healthy{destination="api.example:443",endpoint="10.0.0.2:443",cluster="west",priority="1"}"#, 1.0),
        (r#"veer_config_reloads_total{result="ok"}"#, 1.0),
        (r#"veer_config_reloads_total{result="rejected"}"#, 2.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&t, series), Some(value), "{series}\n{t}");
    }
    for (family, kind) in [
        ("veer_requests", "counter"),
        ("veer_request_duration_seconds", "histogram"),
        ("veer_retries", "counter"),
        ("veer_retry_budget_exhausted", "counter"),
        ("veer_ejections", "counter"),
        ("veer_unejections", "counter"),
        ("veer_active_priority", "gauge"),
        ("veer_failover_events", "counter"),
        ("veer_endpoint_healthy", "gauge"),
        ("veer_config_reloads", "counter"),
    ] {
        assert!(t.contains(&format!("# TYPE {family} {kind}\n")), "{family}\n{t}");
    }
    assert!(t.contains("# UNIT veer_request_duration_seconds seconds"), "{t}");
    let sum = sample(&t, r#"veer_request_duration_seconds_sum{destination="api.example:443"}"#);
    assert!(sum.is_some_and(|s| (s - 1.506).abs() < 1e-9), "{sum:?}");
}

#[test]
fn health_series_can_be_removed() {
    let m = Metrics::new();
    m.set_endpoint_health("d:80", "10.0.0.1:80", "c", 0, true);
    assert!(m.remove_endpoint_health("d:80", "10.0.0.1:80", "c", 0));
    assert!(!m.remove_endpoint_health("d:80", "10.0.0.1:80", "c", 0));
    assert!(!m.encode().contains("veer_endpoint_healthy{"));
}

#[test]
fn odd_durations_do_not_poison_the_sum() {
    let m = Metrics::new();
    let cache = RequestCache::default();
    m.request(&cache, "d:80", "c", 0, 200, f64::NAN);
    m.request(&cache, "d:80", "c", 0, 200, -1.0);
    m.request(&cache, "d:80", "c", 0, 200, f64::INFINITY);
    let t = m.encode();
    assert_eq!(sample(&t, r#"veer_request_duration_seconds_sum{destination="d:80"}"#), Some(0.0));
    assert_eq!(sample(&t, r#"veer_requests_total{destination="d:80",cluster="c",priority="0",status="200"}"#), Some(3.0));
}

#[test]
fn concurrent_requests_are_all_counted() {
    let m = std::sync::Arc::new(Metrics::new());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let m = m.clone();
            // One cache per thread, as each worker has its own: the counts meet in the families.
            std::thread::spawn(move || {
                let cache = RequestCache::default();
                for n in 0..500u16 {
                    m.request(&cache, "d:80", if i % 2 == 0 { "a" } else { "b" }, 0, 200 + n % 2, 0.001);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let t = m.encode();
    let total: f64 = ["a", "b"]
        .iter()
        .flat_map(|c| [200, 201].map(|s| format!(r#"veer_requests_total{{destination="d:80",cluster="{c}",priority="0",status="{s}"}}"#)))
        .map(|series| sample(&t, &series).unwrap())
        .sum();
    assert_eq!(total, 2000.0);
    assert_eq!(sample(&t, r#"veer_request_duration_seconds_count{destination="d:80"}"#), Some(2000.0));
}
