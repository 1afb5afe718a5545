use super::*;

/// The value of the sample line starting with `series` (name plus labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.split(' ').next()?.parse().ok()
    })
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
