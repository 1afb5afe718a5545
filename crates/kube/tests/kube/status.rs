//! Status where users look for it: two replicas, one elected by a Lease writes each object's
//! status (Gateway API conditions, a located message for a broken object); when it goes, the
//! other takes over.

use std::time::Duration;

use veer_kube::leader::Election;
use veer_kube::writer::Checks;
use veer_kube::{KubeSource, StatusConfig};
use veer_testkit::kube::{KubeApi, KubeUser};
use veer_testkit::wait_until_async;

use super::{api_with_crds, apply, apply_seed004, kubectl, runtime, BROKEN_ROUTE, WAIT};

/// Lease expiry (15 s) plus a renewal round and a write.
const TAKE_OVER: Duration = Duration::from_secs(45);

async fn replica(api: &KubeApi, identity: &str) -> KubeSource {
    let client = veer_kube::client(Some(&api.kubeconfig(KubeUser::Admin))).await.expect("client");
    let status = StatusConfig {
        election: Election { namespace: "default".into(), name: "veer-local".into(), identity: identity.into() },
        checks: Checks { files: Vec::new(), cluster: "local".into(), labels: Default::default() },
    };
    KubeSource::start_with(client, "local", Some(status)).await.expect("the source starts")
}

/// The object's status as the server holds it.
fn status(api: &KubeApi, what: &str) -> serde_json::Value {
    let text = kubectl(api, &["get", what, "-o", "json"]);
    serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["status"].clone()
}

/// The first parent's condition `kind` of an HTTPRoute: (status, reason, message).
fn route_condition(api: &KubeApi, route: &str, kind: &str) -> Option<(String, String, String)> {
    let status = status(api, &format!("httproute.gateway.networking.k8s.io/{route}"));
    let conditions = status["parents"][0]["conditions"].as_array()?.clone();
    let c = conditions.iter().find(|c| c["type"] == kind)?;
    let text = |f: &str| c[f].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

#[test]
fn the_lease_holder_alone_writes_each_objects_status_and_the_other_replica_takes_over_when_it_goes() {
    let api = api_with_crds();
    apply_seed004(&api);
    let runtime = runtime();
    runtime.block_on(async {
        let a = replica(&api, "replica-a").await;
        let b = replica(&api, "replica-b").await;
        wait_until_async("a replica leads", WAIT, || async { *a.leading().borrow() || *b.leading().borrow() }).await;
        let (leader, follower) = if *a.leading().borrow() { (a, b) } else { (b, a) };
        assert!(!*follower.leading().borrow(), "one leader at a time");

        wait_until_async("the seed's route is Accepted", WAIT, || async {
            route_condition(&api, "ha-failover", "Accepted").is_some_and(|(s, r, _)| s == "True" && r == "Accepted")
        })
        .await;
        let gateway = status(&api, "gateway.gateway.networking.k8s.io/ha-failover-gateway");
        assert_eq!(gateway["conditions"][0]["type"], "Accepted", "{gateway}");
        assert_eq!(gateway["conditions"][0]["status"], "True", "{gateway}");
        assert_eq!(gateway["conditions"][1]["type"], "Programmed", "{gateway}");
        let route = status(&api, "httproute.gateway.networking.k8s.io/ha-failover");
        assert_eq!(route["parents"][0]["controllerName"], veer_kube::status::CONTROLLER, "{route}");
        assert_eq!(route["parents"][0]["parentRef"]["name"], "ha-failover-gateway", "{route}");
        let cluster = status(&api, "cluster.veer.io/local");
        assert_eq!(cluster["conditions"][0]["type"], "Ready", "{cluster}");
        assert_eq!(cluster["conditions"][0]["status"], "True", "{cluster}");

        // A route to a Service that does not exist: refused with veer's located message, and
        // the rest of the set waits (the last good set serves meanwhile).
        apply(&api, "broken.json", BROKEN_ROUTE);
        wait_until_async("the broken route is refused", WAIT, || async {
            route_condition(&api, "broken", "Accepted").is_some_and(|(s, _, _)| s == "False")
        })
        .await;
        let (_, reason, message) = route_condition(&api, "broken", "Accepted").expect("a condition");
        assert_eq!(reason, "UnsupportedValue");
        assert!(message.starts_with("kubernetes:HTTPRoute/default/broken:"), "{message}");
        assert!(message.contains("no-such-service"), "{message}");
        assert_eq!(route_condition(&api, "broken", "ResolvedRefs").map(|c| c.1), Some("BackendNotFound".into()));
        wait_until_async("the good route waits", WAIT, || async {
            route_condition(&api, "ha-failover", "Accepted").is_some_and(|(s, r, m)| s == "Unknown" && r == "Pending" && m.contains("broken"))
        })
        .await;
        assert!(leader.status_writes() > 0);
        assert_eq!(follower.status_writes(), 0, "only the Lease holder writes");
        let lease = kubectl(&api, &["get", "lease", "veer-local", "-o", "jsonpath={.spec.holderIdentity}"]);
        assert!(lease.starts_with("replica-"), "{lease}");

        // GatewayClasses: the one naming veer's controller is Accepted; another
        // implementation's is left alone.
        let class = |name: &str, controller: &str| {
            format!(r#"{{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {{"name": "{name}"}}, "spec": {{"controllerName": "{controller}"}}}}"#)
        };
        apply(&api, "veer-class.json", &class("veer", veer_kube::status::CONTROLLER));
        apply(&api, "other-class.json", &class("tigera-gateway-class", "tigera.io/gateway-controller"));
        wait_until_async("veer's GatewayClass is Accepted", WAIT, || async {
            status(&api, "gatewayclass.gateway.networking.k8s.io/veer")["conditions"][0]["status"] == "True"
        })
        .await;
        assert_eq!(status(&api, "gatewayclass.gateway.networking.k8s.io/tigera-gateway-class"), serde_json::Value::Null);

        // A replica told to serve only the class `veer` leaves the seed's Gateway (of
        // tigera-gateway-class) out of its set; one serving every class has it.
        let client = veer_kube::client(Some(&api.kubeconfig(KubeUser::Admin))).await.expect("client");
        let owning = KubeSource::start_owning(client, "local", &["veer".to_string()], None).await.expect("the source starts");
        let mut feeds = owning.feeds();
        assert!(feeds.first_sync().await);
        let has_gateway = |docs: &[(String, String)]| docs.iter().any(|(name, _)| name == "kubernetes:Gateway/default/ha-failover-gateway");
        assert!(!has_gateway(&feeds.documents_now()));
        assert!(has_gateway(&leader.feeds().documents_now()));

        // The leader goes: once its Lease lapses, the other replica leads, and it writes the
        // statuses the next change calls for.
        drop(leader);
        wait_until_async("the other replica takes over", TAKE_OVER, || async { *follower.leading().borrow() }).await;
        kubectl(&api, &["delete", "httproute.gateway.networking.k8s.io", "broken"]);
        wait_until_async("the seed's route is Accepted again", WAIT, || async {
            route_condition(&api, "ha-failover", "Accepted").is_some_and(|(s, _, _)| s == "True")
        })
        .await;
        assert!(follower.status_writes() > 0);
    });
}
