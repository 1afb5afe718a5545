//! `veer status`: asks a running node's admin listener how its cluster sees the others (their
//! reachability and the age of their data) and which priority each destination is using.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Fetches `/status` from the node's admin listener.
pub async fn fetch(admin: SocketAddr) -> Result<serde_json::Value, String> {
    let get = async {
        let tcp = tokio::net::TcpStream::connect(admin).await.map_err(|e| {
            format!("cannot reach the admin listener at {admin}: {e} (is `veer run` up, and is --admin its admin address?)")
        })?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get("/status")
            .header(http::header::HOST, admin.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| format!("{admin}: {e}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("{admin}/status answered {status}: {}", String::from_utf8_lossy(&body).trim()));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{admin}/status is not the JSON veer writes: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(5), get).await.map_err(|_| format!("{admin} did not answer within 5s"))?
}

/// The status as a table.
pub fn render(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut out = String::new();
    let _ = writeln!(out, "cluster {}  (routing generation {})", v["cluster"].as_str().unwrap_or("?"), v["generation"]);
    // One line per client socket: what a client of that address can reach.
    for l in v["listeners"].as_array().into_iter().flatten() {
        let ports: Vec<String> = l["gateway_listener_ports"].as_array().into_iter().flatten().map(ToString::to_string).collect();
        let mut serves = Vec::new();
        if l["gateway"].as_bool() == Some(true) {
            serves.push("the mesh's names".to_string());
        }
        if !ports.is_empty() {
            let tls = if l["tls"].as_bool() == Some(true) { " (HTTPS: TLS terminated)" } else { "" };
            serves.push(format!("Gateway listener port {}{tls}", ports.join(", ")));
        }
        let serves = if serves.is_empty() { "nothing".to_string() } else { serves.join(" and ") };
        let _ = writeln!(out, "listener {}: {serves}", l["address"].as_str().unwrap_or("?"));
    }
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        let _ = writeln!(out, "\npeers: none (a standalone node: it reaches every endpoint directly)");
    } else {
        let _ = writeln!(
            out,
            "\n{:<16} {:<22} {:<10} {:<10} {:>10} {:>10}  LAST ERROR",
            "PEER", "EAST-WEST", "STATE", "REACHABLE", "DATA AGE", "ENDPOINTS"
        );
        for p in &peers {
            let age = p["age_ms"].as_u64().map_or("never".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
            let endpoints = format!(
                "{}/{}",
                p["endpoints"].as_u64().unwrap_or(0)
                    - p["unhealthy_endpoints"].as_u64().unwrap_or(0).min(p["endpoints"].as_u64().unwrap_or(0)),
                p["endpoints"]
            );
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:<10} {:<10} {:>10} {:>10}  {}",
                p["cluster"].as_str().unwrap_or("?"),
                p["east_west"].as_str().unwrap_or("?"),
                p["phase"].as_str().unwrap_or("?"),
                if p["reachable"].as_bool() == Some(true) { "yes" } else { "no" },
                age,
                endpoints,
                p["last_error"].as_str().unwrap_or("")
            );
        }
    }
    let _ = writeln!(out, "\n{:<48} {:>8}  HEALTHY ENDPOINTS BY CLUSTER", "DESTINATION", "ACTIVE");
    for d in v["destinations"].as_array().into_iter().flatten() {
        let active = d["active_priority"].as_i64().map_or("?".into(), |p| if p < 0 { "none".to_string() } else { format!("P{p}") });
        let clusters: Vec<String> = d["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {}/{}", c["cluster"].as_str().unwrap_or("?"), c["healthy"], c["endpoints"]))
            .collect();
        let _ = writeln!(
            out,
            "{:<48} {:>8}  {}",
            d["destination"].as_str().unwrap_or("?"),
            active,
            if clusters.is_empty() { "-".to_string() } else { clusters.join(", ") }
        );
        // Each endpoint this destination holds out, and why: an endpoint can be ejected for one
        // destination (an HTTPRoute rule) and serve another (its Service) at the same time.
        for e in d["endpoints"].as_array().into_iter().flatten() {
            let at = format!("{} ({}, P{})", e["address"].as_str().unwrap_or("?"), e["cluster"].as_str().unwrap_or("?"), e["priority"]);
            if let Some(held) = e["held"].as_object() {
                let until = held
                    .get("until_unix_ms")
                    .and_then(serde_json::Value::as_u64)
                    .map(|t| format!(" until {}", clock(t, now_ms)))
                    .unwrap_or_default();
                let _ =
                    writeln!(out, "    out: {at}: {}{until}", held.get("detail").and_then(serde_json::Value::as_str).unwrap_or("held out"));
            } else if let Some(note) = e["note"].as_str() {
                let _ = writeln!(out, "    note: {at}: {note}");
            }
        }
        if let Some(why) = d["why_none"].as_str() {
            let _ = writeln!(out, "    why none: {why}");
        }
    }
    // Regional zones written under an etcd lease (`veer run --etcd`).
    if let Some(leases) = v["dns_leases"].as_array() {
        let _ = writeln!(
            out,
            "
{:<32} {:<16} {:>8} {:<8}  WHY",
            "LEASED ZONE", "HOLDER", "EPOCH", "WRITING"
        );
        for l in leases {
            let zone = format!("{} ({})", l["zone"].as_str().unwrap_or("?"), l["region"].as_str().unwrap_or("?"));
            let error = l["error"].as_str().map(|e| format!(" [{e}]")).unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<32} {:<16} {:>8} {:<8}  {}: {}{error}",
                zone,
                l["holder"].as_str().unwrap_or("nobody"),
                l["epoch"],
                if l["writing"].as_bool() == Some(true) { "yes" } else { "no" },
                l["intent"].as_str().unwrap_or("?"),
                l["reason"].as_str().unwrap_or("")
            );
        }
    }
    out
}

/// `HH:MM:SS UTC (in N s)` for a Unix time in ms, seen at `now_ms`.
fn clock(unix_ms: u64, now_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let left = unix_ms.saturating_sub(now_ms) as f64 / 1000.0;
    format!("{h:02}:{m:02}:{s:02} UTC (in {left:.1} s)")
}

pub async fn run(admin: SocketAddr, json: bool) -> Result<ExitCode, String> {
    let v = fetch(admin).await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?)?;
    } else {
        crate::out!("{}", render(&v))?;
    }
    Ok(ExitCode::SUCCESS)
}
