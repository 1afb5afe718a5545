//! Feeds arbitrary request targets and Host fields to the checks every request passes before
//! routing: each must be refused or accepted, never panic, and an accepted path must be normal
//! (normalizing it again changes nothing, no `.`/`..` or empty segment is left).

#![no_main]

use http::header::{HeaderMap, HeaderValue, HOST};
use libfuzzer_sys::fuzz_target;
use veer_gateway::request::{check_head, normalize_path};

fuzz_target!(|data: &[u8]| {
    let (path, host) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let mut headers = HeaderMap::new();
    if let Ok(h) = HeaderValue::from_bytes(host) {
        headers.append(HOST, h);
    }
    let _ = check_head(http::Version::HTTP_11, None, &headers);
    // hyper hands the request path over as a valid URI path: only those reach normalize_path.
    let Ok(uri) = http::Uri::try_from(path) else { return };
    if let Ok(normal) = normalize_path(uri.path()) {
        if normal.starts_with('/') {
            let again = normalize_path(&normal).expect("a normalized path normalizes again");
            assert_eq!(again, normal);
            assert!(!normal.split('/').skip(1).any(|s| s == "." || s == ".."), "{normal}");
            assert!(!normal.contains("//"), "{normal}");
        }
    }
});
