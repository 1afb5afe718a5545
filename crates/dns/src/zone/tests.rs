//! Unit tests of the lookup rules: hosts, wildcards, CNAME chains, REFUSED, NXDOMAIN, NODATA.

use std::str::FromStr;

use super::*;

fn lower(s: &str) -> LowerName {
    LowerName::new(&Name::from_str(s).unwrap_or_else(|_| Name::root()))
}

use crate::plan::test_endpoint as endpoint;

fn zones() -> Zones {
    Zones::build(&ZoneInput {
        hosts: vec!["reviews.bookinfo.global".into(), "*.wild.example".into()],
        gateway: IpAddr::from([127, 0, 0, 9]),
        elsewhere: BTreeMap::new(),
        ttl: 30,
        regional: vec![RegionalZone {
            zone: ZoneId { domain: "example.com".into(), region: "weu".into() },
            writer: "aks-weu-01".into(),
            epoch: 4,
            endpoints: vec![
                endpoint("web.example.com", RecordKind::CNAME, "gw.example.com"),
                endpoint("gw.example.com", RecordKind::A, "10.0.0.1"),
            ],
        }],
        txt_prefix: "_external-dns-owner.".into(),
        serial: 1,
        nameserver: Some(IpAddr::from([127, 0, 0, 53])),
    })
}

fn answer(o: Outcome) -> (ResponseCode, Vec<Record>, Vec<Record>) {
    match o {
        Outcome::Authoritative { rcode, answers, authority, .. } => (rcode, answers, authority),
        Outcome::Refused => (ResponseCode::Refused, Vec::new(), Vec::new()),
    }
}

#[test]
fn hosts_answer_with_the_gateway_and_wildcards_match_below_their_suffix() {
    let z = zones();
    let (rc, a, _) = answer(z.lookup(&lower("reviews.bookinfo.global."), RecordType::A));
    assert_eq!(rc, ResponseCode::NoError);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].ttl, 30);
    let (rc, a, _) = answer(z.lookup(&lower("api.wild.example."), RecordType::A));
    assert_eq!((rc, a.len()), (ResponseCode::NoError, 1));
    assert_eq!(z.lookup(&lower("wild.example.org."), RecordType::A), Outcome::Refused);
}

#[test]
fn cname_chains_are_followed_and_ownership_txt_is_served() {
    let z = zones();
    let (_, a, _) = answer(z.lookup(&lower("WEB.example.com."), RecordType::A));
    let types: Vec<RecordType> = a.iter().map(Record::record_type).collect();
    assert_eq!(types, [RecordType::CNAME, RecordType::A]);
    let (_, a, _) = answer(z.lookup(&lower("_external-dns-owner.cname-web.example.com."), RecordType::TXT));
    let RData::TXT(t) = &a[0].data else { panic!("TXT expected: {a:?}") };
    let text: String = t.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect();
    assert!(text.contains("external-dns/veer-epoch=4") && text.contains("external-dns/veer-writer=aks-weu-01"), "{text}");
}

#[test]
fn zone_rules_refused_nxdomain_nodata() {
    let z = zones();
    assert_eq!(z.lookup(&lower("example.org."), RecordType::A), Outcome::Refused);
    let (rc, a, auth) = answer(z.lookup(&lower("nope.example.com."), RecordType::A));
    assert_eq!((rc, a.len()), (ResponseCode::NXDomain, 0));
    assert_eq!(auth[0].record_type(), RecordType::SOA);
    let (rc, a, _) = answer(z.lookup(&lower("gw.example.com."), RecordType::AAAA));
    assert_eq!((rc, a.len()), (ResponseCode::NoError, 0), "NODATA");
    // An empty non-terminal exists (RFC 8020).
    let (rc, _, _) = answer(z.lookup(&lower("cname-web.example.com."), RecordType::A));
    assert_eq!(rc, ResponseCode::NoError);
    let (rc, a, _) = answer(z.lookup(&lower("example.com."), RecordType::SOA));
    assert_eq!((rc, a.len()), (ResponseCode::NoError, 1));
}

#[test]
fn http_route_hosts_are_answered_by_the_node_whose_gateway_serves_them() {
    let text = "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: west}
spec: {locality: {region: r}}
---
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: east}
spec: {locality: {region: r}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, labels: {topology.istio.io/cluster: west}}
spec: {gatewayClassName: veer, listeners: [{name: http, protocol: HTTP, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.example.com, '*.wild.example.com']
  rules: [{}]
";
    let set = veer_model::from_sources(&[("w.yaml".into(), text.into())]).unwrap_or_else(|r| panic!("{r}")).into_set();
    assert_eq!(destination_hosts(&set, "west"), vec!["shop.example.com".to_string()], "a wildcard veer does not serve is not answered");
    assert!(destination_hosts(&set, "east").is_empty(), "east has no Gateway the route attaches to");
}

#[test]
fn names_and_records_that_cannot_be_served_are_skipped_with_why() {
    let z = Zones::build(&ZoneInput {
        hosts: vec!["bad..example".into(), "ok.example".into()],
        gateway: IpAddr::from([127, 0, 0, 1]),
        elsewhere: BTreeMap::new(),
        ttl: 30,
        regional: vec![RegionalZone {
            zone: ZoneId { domain: "example.com".into(), region: "weu".into() },
            writer: "c1".into(),
            epoch: 1,
            endpoints: vec![endpoint("web.example.com", RecordKind::A, "not-an-ip")],
        }],
        txt_prefix: String::new(),
        serial: 1,
        nameserver: Some(IpAddr::from([127, 0, 0, 53])),
    });
    assert_eq!(z.skipped.len(), 2, "{:?}", z.skipped);
    assert!(matches!(&z.skipped[0], Unservable::NotADnsName { name, .. } if name == "bad..example"), "{:?}", z.skipped);
    assert!(z.skipped[0].to_string().starts_with("\"bad..example\" is not a DNS name: "), "{}", z.skipped[0]);
    assert_eq!(z.skipped[1], Unservable::NotAnAddress("not-an-ip".into()));
    assert_eq!(z.skipped[1].to_string(), "\"not-an-ip\" is not an IP address");
    assert!(matches!(z.lookup(&lower("ok.example."), RecordType::A), Outcome::Authoritative { rcode: ResponseCode::NoError, .. }));
}

#[test]
fn names_the_gateway_has_no_route_for_and_service_names_are_not_answered() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec: {selector: {app: echo}, ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: veer, listeners: [{name: http, protocol: HTTP, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: served}
spec: {parentRefs: [{name: gw}], hostnames: [shop.example.com], rules: [{}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ruleless}
spec: {parentRefs: [{name: gw}], hostnames: [empty.example.com]}
";
    let set = veer_model::from_sources(&[("w.yaml".into(), text.into())]).unwrap_or_else(|r| panic!("{r}")).into_set();
    // A route without rules gives the gateway nothing to route, so it would answer 404; and
    // `*.svc.cluster.local` is the cluster's own DNS.
    assert_eq!(destination_hosts(&set, "default"), vec!["shop.example.com".to_string()]);
}

#[test]
fn a_route_host_served_on_a_gateway_port_socket_of_its_own_ip_is_answered_with_that_ip() {
    let text = "\
apiVersion: veer.io/v1alpha1
kind: Cluster
metadata: {name: west}
spec:
  locality: {region: r}
  gateway: {address: 127.0.0.1:8080, ports: {'80': 127.0.0.1:8080, '8443': 127.0.0.2:9443, '9000': 0.0.0.0:9000}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public}
spec: {gatewayClassName: veer, listeners: [{name: http, protocol: HTTP, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: internal}
spec: {gatewayClassName: veer, listeners: [{name: http, protocol: HTTP, port: 8443}, {name: any, protocol: HTTP, port: 9000}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a}
spec: {parentRefs: [{name: public}], hostnames: [a.example.com], rules: [{}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b}
spec: {parentRefs: [{name: internal, sectionName: http}], hostnames: [b.example.com], rules: [{}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both}
spec: {parentRefs: [{name: public}, {name: internal, sectionName: http}], hostnames: [both.example.com], rules: [{}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild}
spec: {parentRefs: [{name: internal, sectionName: any}], hostnames: [w.example.com], rules: [{}]}
";
    let set = veer_model::from_sources(&[("w.yaml".into(), text.into())]).unwrap_or_else(|r| panic!("{r}")).into_set();
    // a and both reach the gateway; w's socket listens on every IP, so the gateway's will do.
    let elsewhere = socket_ips(&set, "west");
    assert_eq!(elsewhere, BTreeMap::from([("b.example.com".to_string(), IpAddr::from([127, 0, 0, 2]))]));
    let gateway = IpAddr::from([127, 0, 0, 1]);
    let z = Zones::build(&ZoneInput {
        hosts: destination_hosts(&set, "west"),
        gateway,
        elsewhere,
        ttl: 30,
        regional: Vec::new(),
        txt_prefix: String::new(),
        serial: 1,
        nameserver: Some(IpAddr::from([127, 0, 0, 53])),
    });
    let ip = |host: &str| {
        answer(z.lookup(&lower(host), RecordType::A)).1.first().and_then(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
    };
    assert_eq!(ip("b.example.com."), Some(IpAddr::from([127, 0, 0, 2])));
    assert_eq!(ip("a.example.com."), Some(gateway));
    assert_eq!(ip("both.example.com."), Some(gateway));
    assert_eq!(ip("w.example.com."), Some(gateway));
}

#[test]
fn every_zone_has_an_ns_rrset_at_its_apex_with_its_glue() {
    let z = zones();
    for origin in ["example.com.", "reviews.bookinfo.global.", "wild.example."] {
        let Outcome::Authoritative { rcode, answers, additional, .. } = z.lookup(&lower(origin), RecordType::NS) else {
            panic!("{origin} served")
        };
        assert_eq!(rcode, ResponseCode::NoError);
        let RData::NS(NS(ns)) = &answers[0].data else { panic!("NS expected: {answers:?}") };
        assert_eq!(ns.to_ascii(), format!("ns.{origin}"));
        assert_eq!(additional.len(), 1, "the glue: {additional:?}");
        assert_eq!(additional[0].data, RData::A(A([127, 0, 0, 53].into())));
        // The glue is an ordinary in-zone record too.
        let (rc, a, _) = answer(z.lookup(&lower(&format!("ns.{origin}")), RecordType::A));
        assert_eq!((rc, a.len()), (ResponseCode::NoError, 1), "{origin}");
    }
}

#[test]
fn a_cname_without_the_asked_type_at_its_end_comes_with_the_soa() {
    let z = zones();
    // web -> gw, which has an A and no AAAA: the CNAME, NODATA for the rest, and the SOA.
    let (rc, a, auth) = answer(z.lookup(&lower("web.example.com."), RecordType::AAAA));
    assert_eq!(rc, ResponseCode::NoError);
    assert_eq!(a.iter().map(Record::record_type).collect::<Vec<_>>(), [RecordType::CNAME]);
    assert_eq!(auth.iter().map(Record::record_type).collect::<Vec<_>>(), [RecordType::SOA], "{auth:?}");
    // A CNAME to a name that does not exist in the zone: NXDOMAIN (RFC 6604) with the SOA.
    let z = Zones::build(&ZoneInput {
        hosts: Vec::new(),
        gateway: IpAddr::from([127, 0, 0, 9]),
        elsewhere: BTreeMap::new(),
        ttl: 30,
        regional: vec![RegionalZone {
            zone: ZoneId { domain: "example.com".into(), region: "weu".into() },
            writer: "w".into(),
            epoch: 1,
            endpoints: vec![endpoint("web.example.com", RecordKind::CNAME, "gone.example.com")],
        }],
        txt_prefix: "_o.".into(),
        serial: 1,
        nameserver: None,
    });
    let (rc, a, auth) = answer(z.lookup(&lower("web.example.com."), RecordType::A));
    assert_eq!((rc, a.len(), auth[0].record_type()), (ResponseCode::NXDomain, 1, RecordType::SOA));
    // A CNAME leaving veer's zones is answered as is: the resolver follows it.
    let z = Zones::build(&ZoneInput {
        regional: vec![RegionalZone {
            zone: ZoneId { domain: "example.com".into(), region: "weu".into() },
            writer: "w".into(),
            epoch: 1,
            endpoints: vec![endpoint("web.example.com", RecordKind::CNAME, "elsewhere.example.org")],
        }],
        ..ZoneInput {
            hosts: Vec::new(),
            gateway: IpAddr::from([127, 0, 0, 9]),
            elsewhere: BTreeMap::new(),
            ttl: 30,
            regional: Vec::new(),
            txt_prefix: "_o.".into(),
            serial: 1,
            nameserver: None,
        }
    });
    let (rc, a, auth) = answer(z.lookup(&lower("web.example.com."), RecordType::AAAA));
    assert_eq!((rc, a.len(), auth.len()), (ResponseCode::NoError, 1, 0));
}

#[test]
fn a_zone_transfer_lists_the_whole_zone_between_two_soas() {
    let mut z = zones();
    z.set_serial(77);
    assert_eq!(z.serial(), Some(77));
    let xfr = z.transfer(&lower("example.com.")).expect("served");
    assert_eq!(xfr.first().map(Record::record_type), Some(RecordType::SOA));
    assert_eq!(xfr.last().map(Record::record_type), Some(RecordType::SOA));
    let RData::SOA(soa) = &xfr[0].data else { panic!() };
    assert_eq!(soa.serial, 77);
    let owners: Vec<String> = xfr[1..xfr.len() - 1].iter().map(|r| format!("{} {}", r.name, r.record_type())).collect();
    for want in [
        "example.com. NS",
        "ns.example.com. A",
        "web.example.com. CNAME",
        "gw.example.com. A",
        "_external-dns-owner.cname-web.example.com. TXT",
    ] {
        assert!(owners.iter().any(|o| o == want), "{want} in {owners:?}");
    }
    // Nothing of another zone.
    assert!(!owners.iter().any(|o| o.contains("bookinfo")), "{owners:?}");
    // A wildcard host is transferred as a wildcard record.
    let wild = z.transfer(&lower("wild.example.")).expect("served");
    assert!(wild.iter().any(|r| r.name.to_ascii() == "*.wild.example." && r.record_type() == RecordType::A), "{wild:?}");
    assert!(z.transfer(&lower("example.org.")).is_none());
}
