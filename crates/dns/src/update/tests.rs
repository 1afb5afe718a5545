use super::*;

fn server() -> ZoneServer {
    let manifests = "apiVersion: veer.io/v1alpha1
kind: DNSZone
metadata:
  name: weu
spec:
  region: weu
  zone: example.com
  server: 127.0.0.1:5300
  tsig:
    keyName: veer-key
    secretRef:
      name: tsig
---
apiVersion: v1
kind: Secret
metadata:
  name: tsig
stringData:
  rfc2136_tsig_secret: dmVlci10ZXN0LXRzaWcta2V5LW9mLTMyLWJ5dGVzISE=
";
    let set = veer_model::from_sources(&[("z.yaml".into(), manifests.into())]).expect("accepted").into_set();
    ZoneServer::new(&set.dns_zones[0], "_external-dns-owner.").expect("writer")
}

use crate::plan::test_endpoint as endpoint;

fn desired(writer: &str, epoch: u64, target: &str) -> Desired {
    Desired { writer: writer.into(), epoch, endpoints: vec![endpoint("web.example.com", RecordKind::CNAME, target)] }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

fn txt(owner: &str, value: &str) -> Record {
    Record::from_rdata(name(owner), 60, RData::TXT(TXT::new(vec![value.to_string()])))
}

/// The zone as a server holds it after applying `change` to `contents` (adds and deletes only;
/// enough to check what the next plan does).
fn apply(contents: &ZoneContents, change: &Change) -> ZoneContents {
    let mut records = contents.records.clone();
    for u in change.message.updates() {
        match u.dns_class {
            DNSClass::ANY => records.retain(|r| !(r.name == u.name && r.record_type() == u.record_type())),
            DNSClass::NONE => records.retain(|r| !(r.name == u.name && r.data == u.data)),
            _ => records.push(u.clone()),
        }
    }
    ZoneContents { records }
}

#[test]
fn a_first_write_requires_the_epoch_name_unused_and_writes_records_registry_and_epoch_together() {
    let zs = server();
    let change =
        plan_change(&zs, &ZoneContents::default(), &desired("aks-weu-01", 1, "gw-weu.example.com")).expect("plan").expect("change");
    let pre = change.message.prerequisites();
    assert_eq!(pre.len(), 1);
    assert_eq!(
        (pre[0].name.to_ascii().as_str(), pre[0].dns_class, pre[0].record_type()),
        ("_veer-epoch.example.com.", DNSClass::NONE, RecordType::ANY)
    );
    let adds: Vec<String> = change.message.updates().iter().map(|r| format!("{} {} {}", r.name, r.record_type(), r.data)).collect();
    assert_eq!(adds.len(), 3, "{adds:#?}");
    assert!(adds[0].starts_with("web.example.com. CNAME gw-weu.example.com."), "{adds:#?}");
    assert!(
        adds[1].starts_with("_external-dns-owner.cname-web.example.com. TXT heritage=external-dns,external-dns/owner=external-dns-weu,")
    );
    assert!(
        adds[2].starts_with("_veer-epoch.example.com. TXT ")
            && adds[2].contains("veer-epoch=1")
            && adds[2].contains("veer-writer=aks-weu-01")
    );
    assert_eq!(change.message.op_code, OpCode::Update);
    assert_eq!(change.message.queries[0].name().to_ascii(), "example.com.");
}

#[test]
fn the_next_write_requires_the_epoch_record_exactly_and_an_unchanged_zone_sends_nothing() {
    let zs = server();
    let first = plan_change(&zs, &ZoneContents::default(), &desired("aks-weu-01", 1, "gw-weu.example.com")).expect("plan").expect("change");
    let zone = apply(&ZoneContents::default(), &first);
    assert!(plan_change(&zs, &zone, &desired("aks-weu-01", 1, "gw-weu.example.com")).expect("plan").is_none());

    let takeover = plan_change(&zs, &zone, &desired("aks-neu-01", 2, "gw-neu.example.com")).expect("plan").expect("change");
    let pre = &takeover.message.prerequisites()[0];
    assert_eq!((pre.dns_class, pre.ttl, pre.record_type()), (DNSClass::IN, 0, RecordType::TXT));
    assert!(pre.data.to_string().contains("veer-epoch=1"), "the epoch the zone holds: {}", pre.data);
    assert_eq!(takeover.expects, Some(Fence { epoch: 1, writer: "aks-weu-01".into() }));
    let after = apply(&zone, &takeover);
    assert_eq!(
        read_fence(&zs.origin, &zs.owner, &after).expect("ours").map(|(f, _)| f),
        Some(Fence { epoch: 2, writer: "aks-neu-01".into() })
    );
    let cname: Vec<String> = after.records.iter().filter(|r| r.record_type() == RecordType::CNAME).map(|r| r.data.to_string()).collect();
    assert_eq!(cname, vec!["gw-neu.example.com.".to_string()], "the old target was replaced");
}

#[test]
fn a_lower_epoch_or_another_writer_at_the_same_epoch_is_fenced_before_sending() {
    let zs = server();
    let first = plan_change(&zs, &ZoneContents::default(), &desired("aks-neu-01", 3, "gw-neu.example.com")).expect("plan").expect("change");
    let zone = apply(&ZoneContents::default(), &first);
    for d in [desired("aks-weu-01", 2, "gw-weu.example.com"), desired("aks-weu-01", 3, "gw-weu.example.com")] {
        match plan_change(&zs, &zone, &d) {
            Err(UpdateError::Fenced { rcode: None, zone: Some(f), ours }) => {
                assert_eq!((f.epoch, f.writer.as_str(), ours), (3, "aks-neu-01", d.epoch));
            }
            other => panic!("epoch {} must be fenced: {other:?}", d.epoch),
        }
    }
}

#[test]
fn records_veer_does_not_own_are_left_alone() {
    let zs = server();
    let foreign = ZoneContents {
        records: vec![
            Record::from_rdata(name("web.example.com."), 60, RData::CNAME(CNAME(name("elsewhere.example.com.")))),
            txt("_external-dns-owner.cname-web.example.com.", "heritage=external-dns,external-dns/owner=someone-else"),
            Record::from_rdata(name("manual.example.com."), 60, RData::A(A([192, 0, 2, 9].into()))),
        ],
    };
    let change = plan_change(&zs, &foreign, &desired("aks-weu-01", 1, "gw-weu.example.com")).expect("plan").expect("the epoch record");
    assert_eq!(change.skipped, vec!["web.example.com. CNAME: a record veer does not own is there".to_string()]);
    let touched: Vec<String> = change.message.updates().iter().map(|r| r.name.to_ascii()).collect();
    assert_eq!(touched, vec!["_veer-epoch.example.com.".to_string()], "only the epoch record is written");
}

#[test]
fn an_empty_plan_deletes_nothing() {
    let zs = server();
    let first = plan_change(&zs, &ZoneContents::default(), &desired("aks-weu-01", 1, "gw-weu.example.com")).expect("plan").expect("change");
    let zone = apply(&ZoneContents::default(), &first);
    let empty = Desired { writer: "aks-weu-01".into(), epoch: 1, endpoints: Vec::new() };
    assert!(matches!(plan_change(&zs, &zone, &empty), Err(UpdateError::EmptyPlan { owned: 1 })));
}

#[test]
fn an_epoch_record_veer_did_not_write_stops_the_write() {
    let zs = server();
    let zone = ZoneContents { records: vec![txt("_veer-epoch.example.com.", "something else")] };
    assert!(matches!(plan_change(&zs, &zone, &desired("aks-weu-01", 1, "gw.example.com")), Err(UpdateError::ForeignFence(_))));
}

#[test]
fn a_writer_restarted_below_its_own_epoch_keeps_the_zone_epoch() {
    let zs = server();
    let first = plan_change(&zs, &ZoneContents::default(), &desired("aks-weu-01", 3, "gw-weu.example.com")).expect("plan").expect("change");
    let zone = apply(&ZoneContents::default(), &first);
    let change = plan_change(&zs, &zone, &desired("aks-weu-01", 1, "gw-new.example.com")).expect("our own record").expect("change");
    let after = apply(&zone, &change);
    assert_eq!(read_fence(&zs.origin, &zs.owner, &after).expect("ours").map(|(f, _)| f.epoch), Some(3), "the zone's epoch never goes back");
}

#[test]
fn a_leased_job_may_send_only_while_this_nodes_tenure_at_its_epoch_lasts() {
    use crate::takeover::{Intent, LeaseStatus, Leases, LiveLeases, Tenure, ZoneKey};
    let key = ZoneKey { region: "weu".into(), origin: "example.com".into() };
    let live = LiveLeases::default();
    let job = Job {
        zone: ZoneId { domain: "example.com".into(), region: "weu".into() },
        server: server(),
        desired: desired("aks-weu-01", 7, "127.0.3.11"),
        lease: Some((live.clone(), key.clone())),
    };
    let now = crate::clock::now();
    let status = |tenure: Option<Tenure>| LeaseStatus {
        holder: Some("aks-weu-01".into()),
        epoch: 7,
        intent: Intent::Keep,
        reason: "home region, serving",
        home_ready: true,
        error: None,
        tenure,
    };
    assert!(!job.may_send(), "no look yet: nothing may go out");
    live.store(Leases::from([(key.clone(), status(Some(Tenure { epoch: 7, until: now + std::time::Duration::from_secs(5) })))]));
    assert!(job.may_send());
    live.store(Leases::from([(key.clone(), status(Some(Tenure { epoch: 7, until: now })))]));
    assert!(!job.may_send(), "a lapsed tenure sends nothing");
    live.store(Leases::from([(key.clone(), status(Some(Tenure { epoch: 9, until: now + std::time::Duration::from_secs(5) })))]));
    assert!(!job.may_send(), "a tenure at another epoch is not the job's");
    live.store(Leases::from([(key, status(None))]));
    assert!(!job.may_send());
    let elected = Job { lease: None, ..job };
    assert!(elected.may_send(), "an elected zone's writes are not leased");
}
