//! DNSEndpoint objects as YAML, as `veer dns endpoints` writes them for ExternalDNS's CRD source.

use std::fmt::Write;

use crate::plan::Endpoint;

/// Quotes a YAML scalar when plain style could change its meaning.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'/'))
        && !matches!(s, "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~")
        && s.parse::<f64>().is_err()
        && !s.starts_with(['-', '.']);
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// One YAML document per endpoint, `---`-separated.
pub fn endpoints(eps: &[Endpoint]) -> String {
    let mut out = String::new();
    for (i, e) in eps.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = writeln!(out, "apiVersion: externaldns.k8s.io/v1alpha1");
        let _ = writeln!(out, "kind: DNSEndpoint");
        let _ = writeln!(out, "metadata:");
        let _ = writeln!(out, "  name: {}", scalar(&e.name));
        let _ = writeln!(out, "  namespace: {}", scalar(&e.namespace));
        let _ = writeln!(out, "  labels:");
        for (k, v) in &e.labels {
            let _ = writeln!(out, "    {}: {}", scalar(k), scalar(v));
        }
        let _ = writeln!(out, "  annotations:");
        for (k, v) in &e.annotations {
            let _ = writeln!(out, "    {}: {}", scalar(k), scalar(v));
        }
        let _ = writeln!(out, "spec:");
        let _ = writeln!(out, "  endpoints:");
        let _ = writeln!(out, "  - dnsName: {}", scalar(&e.dns_name));
        let _ = writeln!(out, "    recordType: {}", e.record_type.as_str());
        let _ = writeln!(out, "    recordTTL: {}", e.ttl);
        let _ = writeln!(out, "    targets:");
        let _ = writeln!(out, "    - {}", scalar(&e.target));
    }
    out
}
