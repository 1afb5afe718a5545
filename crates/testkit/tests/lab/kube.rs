//! The real Kubernetes API server of `veer_testkit::kube`: custom resources and their status subresource, Services and EndpointSlices, RBAC for the restricted identity, a restart that cuts watches and keeps objects, two servers apart.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veer_testkit::kube::{output, output_with_stdin, KubeApi, KubeUser};
use veer_testkit::wait_until;

const CRD: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testkit.veer.io
spec:
  group: testkit.veer.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
          status:
            type: object
            properties:
              phase: {type: string}
";

/// Written with a status, which the main resource ignores once `status` is a subresource.
const WIDGET: &str = "\
apiVersion: testkit.veer.io/v1
kind: Widget
metadata: {name: w, namespace: default}
spec: {size: 3}
status: {phase: FromSpec}
";

const SERVICE_AND_SLICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.1.0.7]
  conditions: {ready: true}
  topology: {topology.kubernetes.io/zone: west-a}
ports: [{name: http, port: 8080, protocol: TCP}]
";

/// As a Deployment's template would make it, less the token no controller would make; the
/// namespace is added below.
const POD: &str = "\
apiVersion: v1
kind: Pod
spec:
  automountServiceAccountToken: false
  containers: [{name: web, image: registry.invalid/web:1}]
metadata:
  name: web-0
  labels: {app: web}
";

const VEER_MAY_READ_SERVICES: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-services, namespace: default}
rules:
- apiGroups: ['']
  resources: [services]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: veer-reads-services, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-services}
subjects:
- {kind: User, apiGroup: rbac.authorization.k8s.io, name: veer}
";

fn get(api: &KubeApi, what: &str, jsonpath: &str) -> String {
    output(&mut api.kubectl(["get", what, "-o", &format!("jsonpath={jsonpath}")])).unwrap_or_else(|e| panic!("{e}"))
}

/// A `kubectl get --watch` whose output lines are collected as they come.
struct Watch {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(mut cmd: Command) -> Watch {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Watch { child, lines }
    }

    fn saw(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn custom_resources_with_status_services_and_slices_are_served_and_outlive_a_restart() {
    let mut api = KubeApi::start().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("kube-apiserver at {} ready in {:?}", api.url(), api.ready_in());

    api.apply_yaml(CRD).unwrap_or_else(|e| panic!("{e}"));
    output(&mut api.kubectl(["wait", "--for=condition=Established", "--timeout=60s", "crd/widgets.testkit.veer.io"]))
        .unwrap_or_else(|e| panic!("{e}"));
    api.apply_yaml(WIDGET).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&api, "widget/w", "{.spec.size}"), "3");
    assert_eq!(get(&api, "widget/w", "{.status}"), "", "status is a subresource: the main resource ignores it");

    // A PUT to the status subresource: `kubectl patch --subresource` came after 1.20, Debian's
    // kubectl.
    let version = get(&api, "widget/w", "{.metadata.resourceVersion}");
    let widget = format!(
        r#"{{"apiVersion":"testkit.veer.io/v1","kind":"Widget","metadata":{{"name":"w","namespace":"default","resourceVersion":"{version}"}},"spec":{{"size":3}},"status":{{"phase":"Ready"}}}}"#
    );
    let status = "/apis/testkit.veer.io/v1/namespaces/default/widgets/w/status";
    output_with_stdin(&mut api.kubectl(["replace", "--raw", status, "-f", "-"]), widget.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&api, "widget/w", "{.status.phase}"), "Ready");
    output(&mut api.kubectl(["patch", "widget/w", "--type=merge", "-p", r#"{"status":{"phase":"Main"}}"#]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&api, "widget/w", "{.status.phase}"), "Ready", "only the subresource writes status");

    api.apply_yaml(SERVICE_AND_SLICE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&api, "service/web", "{.spec.ports[0].targetPort}"), "8080");
    let slice = "endpointslices.v1beta1.discovery.k8s.io/web-1";
    assert_eq!(get(&api, slice, "{.endpoints[0].addresses[0]}"), "10.1.0.7");
    assert_eq!(get(&api, slice, "{.endpoints[0].topology.topology\\.kubernetes\\.io/zone}"), "west-a");

    // Pods are admitted (no controller makes a namespace's ServiceAccount or its token).
    for namespace in ["default", "west"] {
        api.create_namespace(namespace).unwrap_or_else(|e| panic!("{e}"));
        api.apply_yaml(&format!("{POD}  namespace: {namespace}\n")).unwrap_or_else(|e| panic!("{e}"));
        let labels = output(&mut api.kubectl(["get", "pod/web-0", "-n", namespace, "-o", "jsonpath={.metadata.labels.app}"]));
        assert_eq!(labels.unwrap_or_else(|e| panic!("{e}")), "web");
    }

    let watch = Watch::start(api.kubectl(["get", "services", "--watch", "-o", "name"]));
    wait_until("the watch lists service/web", Duration::from_secs(60), || watch.saw("service/web"));
    // What kubectl printed so far came from its list; a Service made now reaches it only through
    // the watch, so once it shows, the watch stream is open on this server (a restart before
    // that would let kubectl open its watch on the restarted server, and nothing would cut it).
    api.apply_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: web-2, namespace: default}\nspec:\n  ports: [{port: 80}]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the watch stream shows service/web-2", Duration::from_secs(60), || watch.saw("service/web-2"));
    api.restart().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("kube-apiserver restarted, ready in {:?}", api.ready_in());
    let mut watch = watch;
    wait_until("the restart cuts the watch (kubectl get --watch ends)", Duration::from_secs(60), || {
        matches!(watch.child.try_wait(), Ok(Some(_)))
    });

    // etcd was kept: every object is there, read with the kubeconfig written before the restart.
    assert_eq!(get(&api, "widget/w", "{.status.phase}"), "Ready");
    assert_eq!(get(&api, "service/web", "{.spec.ports[0].port}"), "80");
    assert_eq!(get(&api, slice, "{.endpoints[0].addresses[0]}"), "10.1.0.7");
}

#[test]
fn two_servers_keep_apart_and_rbac_holds_the_restricted_identity_to_its_role() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(KubeApi::start);
        let b = s.spawn(KubeApi::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    let a = a.unwrap_or_else(|e| panic!("{e}"));
    let b = b.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("two kube-apiservers ready in {:?} and {:?}", a.ready_in(), b.ready_in());
    assert_ne!(a.url(), b.url());
    assert_ne!(a.admin_token(), b.admin_token());
    assert_ne!(a.ca_pem(), b.ca_pem());

    let veer_lists_services = |api: &KubeApi| output(&mut api.kubectl_as(KubeUser::Veer, ["get", "services", "-o", "name"]));
    for api in [&a, &b] {
        let err = veer_lists_services(api).expect_err("veer has no role yet");
        assert!(err.to_string().contains(r#"User "veer" cannot list resource "services""#), "{err}");
    }

    a.apply_yaml(VEER_MAY_READ_SERVICES).unwrap_or_else(|e| panic!("{e}"));
    // The authorizer reads roles through a cache: the binding takes effect shortly after.
    wait_until("veer may list services on the server with the binding", Duration::from_secs(60), || veer_lists_services(&a).is_ok());
    assert!(veer_lists_services(&a).unwrap().contains("service/kubernetes"));
    // Its role is for services in `default` only.
    let err = output(&mut a.kubectl_as(KubeUser::Veer, ["get", "secrets"])).expect_err("no role for secrets");
    assert!(err.to_string().contains("forbidden"), "{err}");

    // The other server has its own etcd: neither the binding nor the role is there.
    let err = veer_lists_services(&b).expect_err("the binding is on the other server");
    assert!(err.to_string().contains("forbidden"), "{err}");
    let err = output(&mut b.kubectl(["get", "role/read-services"])).expect_err("the role is on the other server");
    assert!(err.to_string().contains("NotFound") || err.to_string().contains("not found"), "{err}");
}
