//! Feeds arbitrary bytes to veer's DNS request path (decode, rate limit, lookup, encode with
//! the UDP size limit): it must never panic, and whatever it sends back must decode.

#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use veer_dns::plan::{Endpoint, RecordKind, Source, ZoneId};
use veer_dns::server::{answer_datagram, Handler, Rrl};
use veer_dns::zone::{RegionalZone, ZoneInput, Zones};
use veer_dns::RrlConfig;

fn handler() -> &'static Handler {
    static H: OnceLock<Handler> = OnceLock::new();
    H.get_or_init(|| {
        let zone = ZoneId { domain: "example.com".into(), region: "weu".into() };
        let ep = |name: &str, kind, target: &str| Endpoint {
            name: "web-external-dns-weu".into(),
            namespace: "myapp".into(),
            labels: Default::default(),
            annotations: Default::default(),
            controller: "external-dns-weu".into(),
            zone: zone.clone(),
            source: Source::Route { namespace: "myapp".into(), name: "web".into() },
            dns_name: name.into(),
            record_type: kind,
            target: target.into(),
            ttl: 60,
        };
        let input = ZoneInput {
            hosts: vec!["reviews.bookinfo.global".into(), "*.wild.example".into()],
            gateway: IpAddr::from([127, 0, 0, 1]),
            elsewhere: Default::default(),
            ttl: 60,
            regional: vec![RegionalZone {
                zone: zone.clone(),
                writer: "aks-weu-01".into(),
                epoch: 2,
                endpoints: vec![
                    ep("web-ns-p-prod-myapp.example.com", RecordKind::CNAME, "aks01-weu-internal.example.com"),
                    ep("aks01-weu-internal.example.com", RecordKind::A, "127.0.0.1"),
                ],
            }],
            txt_prefix: "_external-dns-owner.".into(),
            serial: 1,
            nameserver: Some(IpAddr::from([127, 0, 0, 53])),
        };
        Handler::new(Zones::build(&input), 1232)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut rrl = Rrl::new(RrlConfig::default());
    let src = SocketAddr::from(([127, 0, 0, 2], 5353));
    if let Some(reply) = answer_datagram(handler(), Some(&mut rrl), data, src, veer_dns::clock::now()) {
        assert!(reply.len() <= 1232, "UDP answers stay within the EDNS cap");
        assert!(hickory_proto::op::Message::from_vec(&reply).is_ok(), "answers decode");
    }
});
