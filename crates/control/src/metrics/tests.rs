//! The control side's families, encoded with the gateway's on the node's one registry.

use super::*;
use veer_gateway::metrics::RequestCache;

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
    let m = Metrics::new();
    let _c = ControlMetrics::new(&m);
    let text = m.encode();
    assert!(text.contains("# TYPE veer_config_reloads counter"), "{text}");
    assert!(!text.contains("veer_requests"), "{text}");
    assert_eq!(sample(&text, r#"veer_config_reloads_total{result="ok"}"#), Some(0.0));
    assert_eq!(sample(&text, r#"veer_config_reloads_total{result="rejected"}"#), Some(0.0));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn every_family_appears_after_recording() {
    let m = Metrics::default();
    let c = ControlMetrics::new(&m);
    let cache = RequestCache::default();
    m.request(&cache, "api.example:443", "east", 0, 200, 0.002);
    m.request(&cache, "api.example:443", "east", 0, 200, 0.004);
    m.request(&cache, "api.example:443", "west", 1, 503, 0.5);
    m.request(&cache, "api.example:443", "west", 1, 0, 1.0);
    m.retry("api.example:443", "connect_failure");
    m.retry("api.example:443", "5xx");
    m.retry("api.example:443", "5xx");
    m.retry_budget_exhausted("api.example:443");
    c.ejection("api.example:443", "10.0.0.1:443", "consecutive_5xx");
    c.unejection("api.example:443", "10.0.0.1:443");
    c.set_active_priority("api.example:443", 1);
    c.set_active_priority("other:80", -1);
    c.failover_event("api.example:443", 0, 1);
    c.set_endpoint_health("api.example:443", "10.0.0.1:443", "east", 0, false);
    c.set_endpoint_health("api.example:443", "10.0.0.2:443", "west", 1, true);
    c.config_reload(true);
    c.config_reload(false);
    c.config_reload(false);
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
    let c = ControlMetrics::new(&m);
    c.set_endpoint_health("d:80", "10.0.0.1:80", "c", 0, true);
    assert!(c.remove_endpoint_health("d:80", "10.0.0.1:80", "c", 0));
    assert!(!c.remove_endpoint_health("d:80", "10.0.0.1:80", "c", 0));
    assert!(!m.encode().contains("veer_endpoint_healthy{"));
}
