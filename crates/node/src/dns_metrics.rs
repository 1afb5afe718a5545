//! The DNS server's counters on `/metrics`: `veer-dns` keeps plain atomics
//! ([`veer_dns::DnsCounters`]); this collector reads them on every scrape.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use veer_dns::DnsCounters;

/// The counters of the node's DNS server, once it runs; until then the collector writes nothing.
#[derive(Clone, Debug, Default)]
pub struct DnsSource(Arc<Mutex<Option<Arc<DnsCounters>>>>);

impl DnsSource {
    pub fn set(&self, counters: Arc<DnsCounters>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(counters);
    }
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        ConstCounter::new(n).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

impl Collector for DnsSource {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return Ok(()) };
        let s = source.stats();
        let e = &mut encoder;
        counters(
            e,
            "dns_queries",
            "DNS queries received, by transport (UDP: well-formed ones, whether answered or rate limited)",
            "transport",
            [("udp", s.udp_queries), ("tcp", s.tcp_queries)],
        )?;
        counters(e, "dns_responses", "DNS answers sent, by response code", "rcode", s.responses_by_rcode())?;
        counter(e, "dns_refused", "DNS questions refused (outside veer's zones, or not class IN)", s.refused)?;
        counters(
            e,
            "dns_rate_limited",
            "UDP answers held back by the response rate limit: dropped, or sent empty with TC set (slipped)",
            "action",
            [("dropped", s.rrl_dropped), ("slipped", s.rrl_slipped)],
        )?;
        {
            let mut family = e.encode_descriptor(
                "dns_rate_limited_by_class",
                "UDP answers held back by the response rate limit, by answer class (answer, nodata, nxdomain, referral, error)",
                None,
                MetricType::Counter,
            )?;
            for (class, dropped, slipped) in s.rate_limited_by_class() {
                for (action, n) in [("dropped", dropped), ("slipped", slipped)] {
                    ConstCounter::new(n).encode(family.encode_family(&[("action", action), ("class", class)])?)?;
                }
            }
        }
        counters(
            e,
            "dns_transfers",
            "Zone transfer requests (AXFR, IXFR): served (TSIG-signed) or refused (UDP, unsigned, bad key, signature or time)",
            "result",
            [("served", s.transfers), ("refused", s.transfers_refused)],
        )?;
        counters(
            e,
            "dns_notifies",
            "NOTIFY messages to secondaries: acknowledged, or failed after every retry",
            "result",
            [("acked", s.notifies_acked), ("failed", s.notifies_failed)],
        )?;
        counter(e, "dns_truncated", "UDP answers cut to fit the client's size and sent with TC set", s.truncated)?;
        counter(
            e,
            "dns_tcp_refused",
            "TCP connections closed as soon as accepted: over the cap on open connections, in all or from one address",
            s.tcp_refused,
        )?;
        counter(
            e,
            "dns_malformed_dropped",
            "UDP datagrams dropped unanswered: undecodable, a response, or not exactly one question",
            s.malformed_dropped,
        )?;
        Ok(())
    }
}
