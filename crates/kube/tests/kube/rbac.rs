//! `deploy/`: its manifests are what the API server takes, and its role is enough: veer, as an
//! identity with only that role, lists everything, leads and writes status; with a permission
//! taken away, it says which one is missing.

use veer_kube::leader::Election;
use veer_kube::writer::Checks;
use veer_kube::{KubeSource, StatusConfig};
use veer_testkit::kube::KubeUser;
use veer_testkit::wait_until_async;

use super::{api_with_crds, apply, apply_seed004, kubectl, repo, runtime, BROKEN_ROUTE, WAIT};

#[test]
fn the_deploy_role_is_enough_and_a_missing_permission_is_named() {
    let api = api_with_crds();
    let deploy = repo().join("deploy");
    kubectl(&api, &["apply", "-f", deploy.to_str().expect("a UTF-8 path")]);
    // The test's `veer` user stands in for the ServiceAccount: bound to the same roles.
    kubectl(&api, &["create", "clusterrolebinding", "veer-user", "--clusterrole", "veer", "--user", "veer"]);
    kubectl(
        &api,
        &["create", "rolebinding", "veer-user", "--role", "veer-leader-election", "--user", "veer", "--namespace", "veer-system"],
    );
    apply_seed004(&api);

    let runtime = runtime();
    runtime.block_on(async {
        let client = veer_kube::client(Some(&api.kubeconfig(KubeUser::Veer))).await.expect("client");
        let status = StatusConfig {
            election: Election { namespace: "veer-system".into(), name: "veer-local".into(), identity: "replica-a".into() },
            checks: Checks { files: Vec::new(), cluster: "local".into(), labels: Default::default() },
        };
        let source = KubeSource::start_with(client, "local", Some(status)).await.expect("the source starts");
        let mut feeds = source.feeds();
        assert!(feeds.first_sync().await, "every kind listed with the role's permissions");
        wait_until_async("the replica leads", WAIT, || async { *source.leading().borrow() }).await;
        let accepted = || {
            let text = kubectl(
                &api,
                &["get", "gateway.gateway.networking.k8s.io", "ha-failover-gateway", "-o", "jsonpath={.status.conditions[0].status}"],
            );
            text.trim() == "True"
        };
        wait_until_async("the Gateway's status is written", WAIT, || async { accepted() }).await;
        assert!(source.problems().is_empty(), "{:?}", source.problems());

        // Without the right to write HTTPRoutes' status, the next status to write names it.
        let role = kubectl(&api, &["get", "clusterrole", "veer", "-o", "json"]).replace("\"httproutes/status\",", "");
        apply(&api, "role.json", &role);
        apply(&api, "broken.json", BROKEN_ROUTE);
        let named = || {
            source.problems().get("writing the status of kubernetes:HTTPRoute/default/broken").is_some_and(|why| {
                why == "forbidden: veer needs the permission to patch httproutes/status in API group \"gateway.networking.k8s.io\""
            })
        };
        wait_until_async("the missing permission is named", WAIT, || async { named() }).await;
    });
}
