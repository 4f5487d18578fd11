//! The Helm chart `charts/goim-rs-operator`, with the real `helm` (`$GOIM_K8S_BIN/helm`, which
//! `bash scripts/k8s.sh install` builds) and the real control plane (`bash scripts/k8s.sh start`;
//! `eval "$(bash scripts/k8s.sh env)"` sets `KUBECONFIG` and `GOIM_K8S_BIN`).
//!
//! Without helm: the chart's CRD is `crds/pushcluster.yaml`, the chart's appVersion is the
//! crate's version, and the dashboard queries only metrics the binaries register. With helm:
//! `helm lint --strict`; the ClusterRole has exactly the rules of `deploy/rbac.yaml` and the
//! Deployment runs the pod of `deploy/operator.yaml`; `values.schema.json` refuses wrong values.
//! With the control plane: every object `helm template` renders (default values, and
//! `ci/all-values.yaml` with every option on) passes a strict server-side dry run, the
//! ServiceMonitor and PodMonitor included: the test applies the Prometheus Operator's own CRDs
//! (`bash scripts/prometheus-crds.sh install` puts the pinned release's files into
//! `$GOIM_TOOLS_DIR/prometheus-operator/crds`; missing files fail the test), and a monitor with
//! a wrong field is refused; `helm install`, the operator as a local process with the chart's
//! ServiceAccount token reconciling a PushCluster, `helm upgrade`, `helm uninstall`.
//!
//! Only `chart_installs_runs_upgrades_and_uninstalls` runs an operator (it watches every
//! namespace), and tests of different binaries never run at once (`cargo test` runs them in
//! turn), so no other test's PushClusters are reconciled by it.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_yaml::Value;
use support::*;

const NEEDS_HELM: &str =
    "GOIM_K8S_BIN is unset: run `bash scripts/k8s.sh install` and `eval \"$(bash scripts/k8s.sh env)\"`";

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/goim-rs-operator").canonicalize().unwrap()
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Runs the real helm: its stdout when it succeeds, else its stderr (and stdout).
fn helm(args: &[&str]) -> Result<String, String> {
    let bin = PathBuf::from(std::env::var_os("GOIM_K8S_BIN").expect(NEEDS_HELM)).join("helm");
    let out = Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}{stdout}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn helm_ok(args: &[&str]) -> String {
    helm(args).unwrap_or_else(|e| panic!("helm {}: {e}", args.join(" ")))
}

/// The YAML documents of a multi-document text, empty ones left out.
fn docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart as release `goim-rs-operator` in `ns`, with `args` added.
fn template(ns: &str, args: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut all = vec!["template", "goim-rs-operator", chart.to_str().unwrap(), "--namespace", ns];
    all.extend_from_slice(args);
    docs(&helm_ok(&all))
}

fn all_values() -> String {
    chart().join("ci/all-values.yaml").to_string_lossy().into_owned()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"].as_str() == Some(kind)).collect()
}

fn one<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> T {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "want one {kind}, rendered {}", found.len());
    serde_yaml::from_value(found[0].clone()).unwrap()
}

fn first_doc_of_kind<T: serde::de::DeserializeOwned>(text: &str, kind: &str) -> T {
    let found = docs(text).into_iter().find(|d| d["kind"].as_str() == Some(kind)).expect(kind);
    serde_yaml::from_value(found).unwrap()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects.iter().map(|o| o["kind"].as_str().unwrap_or("?").to_owned()).collect();
    k.sort();
    k
}

// ---- without helm ----

#[test]
fn chart_crd_is_crds_pushcluster_yaml() {
    assert!(
        repo_file("charts/goim-rs-operator/crds/pushcluster.yaml") == repo_file("crds/pushcluster.yaml"),
        "charts/goim-rs-operator/crds/pushcluster.yaml differs from crds/pushcluster.yaml: \
         cp crds/pushcluster.yaml charts/goim-rs-operator/crds/"
    );
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value = serde_yaml::from_str(&repo_file("charts/goim-rs-operator/Chart.yaml")).unwrap();
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(chart["version"].as_str(), Some("0.1.0"));
}

/// The metric names a file registers: each `register("name"`, behind the file's
/// `sub_registry_with_prefix("prefix")` when it has one.
fn registered(path: &str) -> Vec<String> {
    let text = repo_file(path);
    let quoted_after = |s: &str, key: &str| -> Vec<String> {
        s.match_indices(key)
            .filter_map(|(i, _)| {
                let rest = s[i + key.len()..].trim_start();
                let rest = rest.strip_prefix('"')?;
                Some(rest[..rest.find('"')?].to_owned())
            })
            .collect()
    };
    let prefix = quoted_after(&text, "sub_registry_with_prefix(").into_iter().next();
    quoted_after(&text, ".register(")
        .into_iter()
        .map(|n| prefix.as_ref().map_or(n.clone(), |p| format!("{p}_{n}")))
        .collect()
}

#[test]
fn dashboard_queries_only_registered_metrics() {
    let mut known: Vec<String> =
        ["comet/src/metrics.rs", "logic/src/metrics.rs", "job/src/metrics.rs", "operator/src/metrics.rs"]
            .iter()
            .flat_map(|p| registered(p))
            .collect();
    known.sort();
    assert!(known.contains(&"goim_comet_connections".to_owned()), "{known:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("charts/goim-rs-operator/dashboards/goim-rs.json")).unwrap();
    let mut used = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("goim_") {
                let name: String =
                    rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[i + name.len()..];
                // prometheus-client's exposition: counters get _total, histograms _bucket/_sum/_count.
                let base = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    known.iter().any(|k| k == base || k == &name),
                    "panel {:?} queries {name}, which no binary registers ({known:?})",
                    panel["title"]
                );
                used.push(base.to_owned());
            }
        }
    }
    for wanted in [
        "goim_comet_connections",
        "goim_comet_pushes",
        "goim_job_dispatch_latency_seconds",
        "goim_comet_drained",
        "goim_operator_reconciles",
    ] {
        assert!(used.iter().any(|u| u == wanted), "the dashboard has no panel for {wanted}");
    }
}

// ---- with helm ----

#[test]
#[ignore = "needs helm (scripts/k8s.sh install)"]
fn chart_lints_strictly_with_default_and_all_values() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    helm_ok(&["lint", "--strict", chart]);
    helm_ok(&["lint", "--strict", chart, "-f", &all_values()]);
}

#[test]
#[ignore = "needs helm (scripts/k8s.sh install)"]
fn cluster_role_has_exactly_the_rules_of_deploy_rbac_yaml() {
    let role: ClusterRole = one(&template("goim-system", &[]), "ClusterRole");
    assert_eq!(
        role.rules,
        operator_cluster_role().rules,
        "the chart's ClusterRole and deploy/rbac.yaml differ"
    );
    // Cluster-scoped names carry the namespace and the release: parallel installs never collide.
    assert_eq!(role.name_any(), "goim-system-goim-rs-operator");
    let other: ClusterRole = one(&template("other", &[]), "ClusterRole");
    assert_ne!(other.name_any(), role.name_any());
}

#[test]
#[ignore = "needs helm (scripts/k8s.sh install)"]
fn deployment_runs_the_pod_of_deploy_operator_yaml() {
    let objects = template("goim-system", &[]);
    let chart: Deployment = one(&objects, "Deployment");
    let raw: Deployment = first_doc_of_kind(&repo_file("operator/deploy/operator.yaml"), "Deployment");
    let (spec, raw_spec) = (chart.spec, raw.spec);
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.replicas, raw_spec.replicas);
    let (pod, raw_pod) = (spec.template.spec.unwrap(), raw_spec.template.spec.unwrap());
    assert_eq!(pod.termination_grace_period_seconds, raw_pod.termination_grace_period_seconds);
    assert_eq!(pod.volumes, raw_pod.volumes, "the tmp emptyDir");
    assert_eq!(pod.service_account_name.as_deref(), Some("goim-rs-operator"));
    // The chart's pod security context is that of operator.yaml, plus runAsGroup.
    let mut sc = pod.security_context.clone().unwrap();
    assert_eq!(sc.run_as_group, Some(65532));
    sc.run_as_group = None;
    assert_eq!(Some(sc), raw_pod.security_context);
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some(), "one operator pod per node, preferred");
    let annotations = spec.template.metadata.unwrap().annotations.unwrap();
    assert_eq!(Some(annotations), raw_spec.template.metadata.unwrap().annotations);

    let (c, raw_c): (&Container, &Container) = (&pod.containers[0], &raw_pod.containers[0]);
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(c.name, raw_c.name);
    assert_eq!(c.image, raw_c.image, "the default image is goim-rs:<appVersion>");
    assert_eq!(c.image_pull_policy, raw_c.image_pull_policy);
    assert_eq!(c.command, raw_c.command);
    assert_eq!(c.ports, raw_c.ports);
    assert_eq!(c.liveness_probe, raw_c.liveness_probe);
    assert_eq!(c.readiness_probe, raw_c.readiness_probe);
    assert_eq!(c.resources, raw_c.resources);
    assert_eq!(c.security_context, raw_c.security_context);
    assert_eq!(c.volume_mounts, raw_c.volume_mounts);
    // Every env var of operator.yaml, and the lease durations at the operator's defaults.
    let env = c.env.clone().unwrap();
    for var in raw_c.env.as_ref().unwrap() {
        assert!(env.contains(var), "the chart's container lacks {var:?}");
    }
    let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(value("GOIM_OPERATOR_LEASE_DURATION").as_deref(), Some("15s"));
    assert_eq!(value("GOIM_OPERATOR_RENEW_DEADLINE").as_deref(), Some("10s"));
    assert_eq!(value("GOIM_OPERATOR_RETRY_PERIOD").as_deref(), Some("2s"));
    assert_eq!(env.len(), raw_c.env.as_ref().unwrap().len() + 3);

    // Off by default: monitors, the dashboard, the PushCluster.
    assert_eq!(kinds(&objects), ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]);
}

#[test]
#[ignore = "needs helm (scripts/k8s.sh install)"]
fn every_option_reaches_the_rendered_objects() {
    let objects = template("goim-system", &["-f", &all_values()]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "PodMonitor",
            "PushCluster",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    let d: Deployment = one(&objects, "Deployment");
    let spec = d.spec.clone();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example.com/goim-rs:0.1.0-test"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let value =
        |name: &str| c.env.as_ref().unwrap().iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(value("GOIM_LOG_FORMAT").as_deref(), Some("text"));
    assert_eq!(value("RUST_LOG").as_deref(), Some("info,goim_operator=debug"));
    assert_eq!(value("GOIM_OPERATOR_LEASE_DURATION").as_deref(), Some("20s"));
    assert_eq!(value("GOIM_OPERATOR_RENEW_DEADLINE").as_deref(), Some("15s"));
    assert_eq!(value("GOIM_OPERATOR_RETRY_PERIOD").as_deref(), Some("3s"));
    assert_eq!(value("GOIM_OPERATOR_ADMIN").as_deref(), Some("0.0.0.0:9090"));
    assert_eq!(value("GOIM_OPERATOR_TIER_BINARIES").as_deref(), Some("/usr/local/bin"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9090);
    assert_eq!(pod.service_account_name.as_deref(), Some("goim-operator-sa"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-cluster-critical"));
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry-credentials");
    assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
    let affinity = pod.affinity.unwrap();
    assert!(
        affinity.node_affinity.is_some() && affinity.pod_anti_affinity.is_none(),
        "affinity replaces the default"
    );
    let template_meta = spec.template.metadata.unwrap();
    assert_eq!(template_meta.labels.unwrap()["example.com/team"], "platform");
    assert_eq!(template_meta.annotations.unwrap()["example.com/scrape-team"], "platform");
    assert_eq!(c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0, "512Mi");
    // nameOverride names every object.
    assert_eq!(d.name_any(), "goim-rs-operator-goim-op");
    let binding: ClusterRoleBinding = one(&objects, "ClusterRoleBinding");
    assert_eq!(binding.subjects.unwrap()[0].name, "goim-operator-sa");
    let sa: ServiceAccount = one(&objects, "ServiceAccount");
    assert_eq!(sa.annotations()["example.com/owner"], "platform");
}

/// Runs helm with `values` and expects a refusal naming `want`.
fn refused(set: &[&str], want: &str) {
    let chart = chart();
    let mut args = vec!["template", "t", chart.to_str().unwrap()];
    for s in set {
        args.extend_from_slice(&["--set", s]);
    }
    match helm(&args) {
        Ok(_) => panic!("helm accepted --set {set:?}"),
        Err(e) => {
            assert!(e.contains("values don't meet the specifications of the schema"), "{e}");
            assert!(e.contains(want), "helm's message for {set:?} does not say {want:?}:\n{e}");
        }
    }
}

#[test]
#[ignore = "needs helm (scripts/k8s.sh install)"]
fn values_schema_refuses_wrong_values_with_a_clear_message() {
    refused(&["replicas=-1"], "at '/replicas': minimum: got -1, want 1");
    refused(&["replicas=two"], "at '/replicas'");
    refused(&["logFormat=xml"], "at '/logFormat': value must be one of 'json', 'text'");
    refused(&["replica=3"], "additional properties 'replica' not allowed");
    refused(&["leaderElection.leaseDuration=fifteen"], "at '/leaderElection/leaseDuration'");
    refused(&["image.pullPolicy=Sometimes"], "at '/image/pullPolicy'");
    refused(&["adminPort=70000"], "at '/adminPort'");
    refused(&["serviceMonitor.enable=true"], "additional properties 'enable' not allowed");
    refused(&["pushCluster.name=Demo_1"], "at '/pushCluster/name'");
    // Monitor durations in Prometheus's syntax only: the CRD refuses bare seconds.
    let path = chart();
    for set in ["serviceMonitor.interval=30", "podMonitor.scrapeTimeout=1.5s"] {
        let e = helm(&["template", "t", path.to_str().unwrap(), "--set-string", set]).unwrap_err();
        let field = set.split('=').next().unwrap().replace('.', "/");
        assert!(e.contains(&format!("at '/{field}'")), "helm's message for {set} does not name it:\n{e}");
    }
    // And the values the schema allows still render.
    helm_ok(&["template", "t", chart().to_str().unwrap(), "--set", "replicas=1", "--set", "logFormat=text"]);
}

// ---- with the control plane ----

/// `kubectl apply --server-side --dry-run=server --validate=strict` of `objects`: the API server
/// checks every field against its schema (`fieldValidation=Strict`: unknown or duplicate fields
/// fail) and runs admission, and nothing is stored. Whether it succeeded, and what kubectl said.
fn try_dry_run(objects: &[&Value], dir: &Path) -> (bool, String) {
    let file = dir.join("rendered.yaml");
    let text: String =
        objects.iter().map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap())).collect();
    std::fs::write(&file, text).unwrap();
    let kubectl = PathBuf::from(std::env::var_os("GOIM_K8S_BIN").expect(NEEDS_HELM)).join("kubectl");
    let out = Command::new(kubectl)
        .args(["apply", "--server-side", "--dry-run=server", "--validate=strict"])
        .args(["--field-manager", "goim-chart-test", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

fn dry_run(objects: &[&Value], dir: &Path) {
    let (ok, said) = try_dry_run(objects, dir);
    assert!(ok, "the API server refused the rendered chart:\n{said}");
    assert_eq!(said.lines().filter(|l| l.contains("(server dry run)")).count(), objects.len(), "{said}");
}

/// The Prometheus Operator's CRD files, as `bash scripts/prometheus-crds.sh install` leaves them
/// in `$GOIM_TOOLS_DIR/prometheus-operator/crds` (default `/var/tmp/goim-tools`). Missing files
/// fail the test: without them the monitors would go unchecked.
const PROMETHEUS_CRDS: [&str; 2] =
    ["monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_podmonitors.yaml"];

fn prometheus_crds() -> Vec<CustomResourceDefinition> {
    let tools = std::env::var_os("GOIM_TOOLS_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp/goim-tools"), PathBuf::from);
    let dir = tools.join("prometheus-operator/crds");
    PROMETHEUS_CRDS
        .iter()
        .map(|file| {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: run `bash scripts/prometheus-crds.sh install` (scripts/test.sh does)",
                    path.display()
                )
            });
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// Applies the Prometheus Operator's ServiceMonitor and PodMonitor CRDs to the control plane
/// (server-side apply: a no-op when they are there) and waits until both are served.
async fn apply_prometheus_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds = prometheus_crds();
    for crd in &crds {
        assert_eq!(crd.spec.group, "monitoring.coreos.com");
        api.patch(&crd.name_any(), &PatchParams::apply("goim-chart-test").force(), &Patch::Apply(crd))
            .await
            .unwrap_or_else(|e| panic!("applying the CRD {}: {e}", crd.name_any()));
    }
    for crd in &crds {
        wait_for(&format!("the CRD {} Established", crd.name_any()), Duration::from_secs(30), || async {
            let c = api.get(&crd.name_any()).await.unwrap();
            c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
        .await;
    }
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    serde_yaml::from_value(v.clone()).unwrap_or_default()
}

fn is_subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    !small.is_empty() && small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// What the CRDs' schemas cannot say about the ServiceMonitor and PodMonitor: their selectors
/// match the metrics Service and the operator's pods, in the release's namespace, and they scrape
/// a port that exists, with the values of `ci/all-values.yaml`.
fn check_monitors(objects: &[Value], ns: &str) {
    let d: Deployment = one(objects, "Deployment");
    let pod_labels = d.spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    let pod_labels: BTreeMap<String, String> = pod_labels.into_iter().collect();
    let port_names: Vec<String> = d.spec.template.spec.unwrap().containers[0]
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    let service = of_kind(objects, "Service")[0];
    let service_labels = labels_of(&service["metadata"]["labels"]);
    assert!(
        is_subset(&labels_of(&service["spec"]["selector"]), &pod_labels),
        "the metrics Service selects no operator pod"
    );
    let service_ports: Vec<&str> =
        service["spec"]["ports"].as_sequence().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();

    for (kind, endpoints_key, ports, target_labels) in [
        ("ServiceMonitor", "endpoints", service_ports.clone(), &service_labels),
        ("PodMonitor", "podMetricsEndpoints", port_names.iter().map(String::as_str).collect(), &pod_labels),
    ] {
        let m = of_kind(objects, kind)[0];
        assert_eq!(m["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"), "{kind}");
        assert_eq!(m["metadata"]["namespace"].as_str(), Some(ns), "{kind}");
        assert_eq!(
            m["metadata"]["labels"]["release"].as_str(),
            Some("kube-prometheus-stack"),
            "{kind} labels"
        );
        let spec = m["spec"].as_mapping().unwrap();
        let keys: Vec<&str> = spec.keys().filter_map(Value::as_str).collect();
        assert_eq!(keys, ["selector", "namespaceSelector", endpoints_key], "{kind} spec");
        assert!(
            is_subset(&labels_of(&m["spec"]["selector"]["matchLabels"]), target_labels),
            "{kind} selects nothing"
        );
        assert_eq!(m["spec"]["namespaceSelector"]["matchNames"][0].as_str(), Some(ns), "{kind}");
        let endpoints = m["spec"][endpoints_key].as_sequence().unwrap();
        assert_eq!(endpoints.len(), 1, "{kind}");
        let e = endpoints[0].as_mapping().unwrap();
        let keys: Vec<&str> = e.keys().filter_map(Value::as_str).collect();
        assert_eq!(keys, ["port", "path", "interval", "scrapeTimeout"], "{kind} endpoint");
        assert!(
            ports.contains(&endpoints[0]["port"].as_str().unwrap()),
            "{kind} scrapes a port that does not exist"
        );
        assert_eq!(endpoints[0]["path"].as_str(), Some("/metrics"));
        assert_eq!(endpoints[0]["interval"].as_str(), Some("15s"));
        assert_eq!(endpoints[0]["scrapeTimeout"].as_str(), Some("5s"));
    }
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn rendered_chart_passes_a_strict_server_side_dry_run() {
    in_namespace("chart-dry-run", |client, ns| async move {
        let dir = std::env::temp_dir().join(format!("goim-chart-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        apply_prometheus_crds(&client).await;
        // Default values, the CRD included.
        let objects = template(&ns, &["--include-crds"]);
        assert_eq!(of_kind(&objects, "CustomResourceDefinition").len(), 1);
        dry_run(&objects.iter().collect::<Vec<_>>(), &dir);
        // The monitors with their default values.
        let objects =
            template(&ns, &["--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true"]);
        assert_eq!(of_kind(&objects, "ServiceMonitor").len() + of_kind(&objects, "PodMonitor").len(), 2);
        dry_run(&objects.iter().collect::<Vec<_>>(), &dir);
        // Every option on, the ServiceMonitor and PodMonitor against the Prometheus Operator's CRDs.
        let objects = template(&ns, &["--include-crds", "-f", &all_values()]);
        let monitors =
            objects.iter().filter(|o| o["apiVersion"].as_str() == Some("monitoring.coreos.com/v1")).count();
        assert_eq!(monitors, 2);
        dry_run(&objects.iter().collect::<Vec<_>>(), &dir);
        check_monitors(&objects, &ns);
        // The dashboard ConfigMap holds the JSON of dashboards/.
        let cm = of_kind(&objects, "ConfigMap")[0];
        let json: serde_json::Value =
            serde_json::from_str(cm["data"]["goim-rs.json"].as_str().unwrap()).unwrap();
        assert_eq!(json["uid"], "goim-rs");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// The dry run has teeth: the Prometheus Operator's schemas refuse a monitor with a misspelt
/// field (strict field validation) or a malformed value (the CRD's pattern), naming the field.
#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn monitor_with_a_wrong_field_fails_the_strict_dry_run() {
    in_namespace("chart-monitor-refused", |client, ns| async move {
        let dir = std::env::temp_dir().join(format!("goim-chart-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        apply_prometheus_crds(&client).await;
        let objects = template(&ns, &["-f", &all_values()]);
        let mut service_monitor = of_kind(&objects, "ServiceMonitor")[0].clone();
        let mut pod_monitor = of_kind(&objects, "PodMonitor")[0].clone();
        dry_run(&[&service_monitor, &pod_monitor], &dir);

        service_monitor["spec"]["endpoints"][0]["scrapeIntervall"] = Value::from("15s");
        let (ok, said) = try_dry_run(&[&service_monitor], &dir);
        assert!(!ok, "a ServiceMonitor with an unknown field passed:\n{said}");
        assert!(said.contains(".spec.endpoints[0].scrapeIntervall: field not declared in schema"), "{said}");

        pod_monitor["spec"]["podMetricsEndpoints"][0]["interval"] = Value::from("15 seconds");
        let (ok, said) = try_dry_run(&[&pod_monitor], &dir);
        assert!(!ok, "a PodMonitor with a malformed interval passed:\n{said}");
        assert!(said.contains("spec.podMetricsEndpoints[0].interval"), "{said}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// A Helm release the test installed: uninstalled on drop if the test did not get to it (a
/// panic), so that its cluster-scoped ClusterRole and binding do not outlive the namespace.
struct Release {
    name: String,
    ns: String,
    installed: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            let _ = helm(&["uninstall", &self.name, "--namespace", &self.ns, "--ignore-not-found", "--wait"]);
        }
    }
}

/// The resourceVersion of every object the release owns, by kind/name.
async fn versions(client: &Client, ns: &str, release: &str, cluster_name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let d = Api::<Deployment>::namespaced(client.clone(), ns).get(release).await.unwrap();
    out.insert(format!("Deployment/{release}"), d.resource_version().unwrap());
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), ns).get(release).await.unwrap();
    out.insert(format!("ServiceAccount/{release}"), sa.resource_version().unwrap());
    let cr = Api::<ClusterRole>::all(client.clone()).get(cluster_name).await.unwrap();
    out.insert(format!("ClusterRole/{cluster_name}"), cr.resource_version().unwrap());
    let crb = Api::<ClusterRoleBinding>::all(client.clone()).get(cluster_name).await.unwrap();
    out.insert(format!("ClusterRoleBinding/{cluster_name}"), crb.resource_version().unwrap());
    out
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn chart_installs_runs_upgrades_and_uninstalls() {
    in_namespace("chart-install", |client, ns| async move {
        let release = "goim-rs-operator";
        let cluster_name = format!("{ns}-{release}");
        let dir = std::env::temp_dir().join(format!("goim-chart-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        // The kwok node's taint: the operator's pods land there and kwok reports them running
        // (nothing runs in them: the operator below is a local process).
        let values = dir.join("values.yaml");
        std::fs::write(
            &values,
            "tolerations:\n  - { key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule }\n",
        )
        .unwrap();
        let chart = chart();
        let mut guard = Release { name: release.into(), ns: ns.clone(), installed: true };

        let started = Instant::now();
        let notes = helm_ok(&[
            "install",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            &ns,
            "-f",
            values.to_str().unwrap(),
            "--wait",
            "--timeout",
            "120s",
        ]);
        let installed = started.elapsed();
        assert!(notes.contains("PushCluster CRD (Helm never deletes"), "NOTES:\n{notes}");
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
        let d = deployments.get(release).await.unwrap();
        assert_eq!(d.spec.replicas, Some(2));
        assert_eq!(d.status.as_ref().and_then(|s| s.available_replicas), Some(2), "helm --wait returned early");
        let before = versions(&client, &ns, release, &cluster_name).await;

        // The operator as the chart's ServiceAccount: a token of it, and nothing else.
        let kubeconfig = dir.join("kubeconfig");
        service_account_kubeconfig(&client, &ns, release, &kubeconfig).await;
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_goim-operator"));
        cmd.env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .env("POD_NAME", "chart-operator")
            .env("POD_NAMESPACE", &ns)
            .env("GOIM_OPERATOR_ADMIN", format!("127.0.0.1:{port}"))
            .env(goim_operator::check::BINARIES_ENV, tier_binary("goim-comet").parent().unwrap());
        let operator = Proc::spawn("goim-operator", cmd, &dir);
        let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns);
        wait_for("the operator takes the Lease", Duration::from_secs(30), || async {
            leases.get_opt("goim-operator").await.unwrap().and_then(|l| l.spec?.holder_identity).is_some()
        })
        .await;
        let leading = started.elapsed();

        create(&client, &ns, "demo", minimal()).await;
        wait_for("the Deployment demo-comet", Duration::from_secs(30), || async {
            deployments.get_opt("demo-comet").await.unwrap().is_some()
        })
        .await;
        let children = started.elapsed();
        let clusters = Api::<goim_operator::PushCluster>::namespaced(client.clone(), &ns);
        wait_for("demo Ready", Duration::from_secs(60), || async {
            clusters.get("demo").await.unwrap().status.is_some_and(|s| {
                s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await;
        eprintln!(
            "helm install (--wait, 2 operator pods available): {installed:.1?}; operator leads: {leading:.1?}; \
             demo-comet exists: {children:.1?}; demo Ready: {:.1?}",
            started.elapsed()
        );
        assert!(operator.logs().contains("leading"), "{}", operator.logs());

        // An upgrade with a changed env value and replica count: only the Deployment changes.
        let upgrade = Instant::now();
        helm_ok(&[
            "upgrade",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            &ns,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--set",
            "replicas=1",
        ]);
        let after = versions(&client, &ns, release, &cluster_name).await;
        let changed: Vec<&String> = after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k).collect();
        assert_eq!(changed, [&format!("Deployment/{release}")], "helm upgrade changed {changed:?}");
        let d = deployments.get(release).await.unwrap();
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        let env = spec.template.spec.unwrap().containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug")));
        assert!(env.iter().any(|e| e.name == "GOIM_OPERATOR_RETRY_PERIOD"), "--reuse-values kept the rest");
        eprintln!("helm upgrade: {:.1?}", upgrade.elapsed());
        drop(operator);

        // Uninstall: what the release installed is gone; the CRD and the PushCluster stay
        // (NOTES.txt says so).
        helm_ok(&["uninstall", release, "--namespace", &ns, "--wait"]);
        guard.installed = false;
        assert!(deployments.get_opt(release).await.unwrap().is_none());
        assert!(Api::<ServiceAccount>::namespaced(client.clone(), &ns).get_opt(release).await.unwrap().is_none());
        assert!(Api::<ClusterRole>::all(client.clone()).get_opt(&cluster_name).await.unwrap().is_none());
        assert!(Api::<ClusterRoleBinding>::all(client.clone()).get_opt(&cluster_name).await.unwrap().is_none());
        let crds = Api::<CustomResourceDefinition>::all(client.clone());
        assert!(crds.get_opt("pushclusters.goim-rs.io").await.unwrap().is_some(), "the CRD stays");
        assert!(clusters.get_opt("demo").await.unwrap().is_some(), "PushClusters stay");
        assert!(helm(&["status", release, "--namespace", &ns]).is_err(), "the release is gone");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
