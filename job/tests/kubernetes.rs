//! Against a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
//! kwok nodes) started by `scripts/k8s.sh start`:
//!
//! ```sh
//! bash scripts/k8s.sh start && eval "$(bash scripts/k8s.sh env)"
//! cargo test -p goim-job --test kubernetes -- --include-ignored
//! ```
//!
//! Each test works in a namespace of its own and deletes it at the end. Pods run on kwok nodes:
//! nothing runs in them and their IPs are never dialled (no test sends traffic to a pod IP).
#![cfg(feature = "kubernetes")]

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use goim_job::Comets;
use goim_job::comet::{ClientConfig, GrpcComets};
use goim_job::discovery::{CometEndpoint, Discovery, Kubernetes, KubernetesConfig, KubernetesError};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Pod, PodSpec, PodTemplateSpec, Service, ServiceAccount, ServicePort,
    ServiceSpec, Toleration,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::config::AuthInfo;
use kube::{Api, Client, Config, Resource};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Held by the terminating comet of the discovery test, so kwok does not finish its deletion.
const HOLD: &str = "goim-rs.test/hold";
/// How long any one condition may take to come true.
const PATIENCE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------ helpers

/// The admin client from KUBECONFIG. Fails (never skips) when the control plane is not set up.
async fn admin() -> Client {
    match std::env::var("KUBECONFIG") {
        Ok(path) if !path.is_empty() => {}
        _ => panic!(
            "KUBECONFIG is not set: these tests need the control plane. Run \
             `bash scripts/k8s.sh start && eval \"$(bash scripts/k8s.sh env)\"` first"
        ),
    }
    Client::try_default().await.unwrap_or_else(|e| {
        panic!("no client from KUBECONFIG ({e}); is the control plane up? `bash scripts/k8s.sh status`")
    })
}

fn suffix() -> String {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{:08x}", random as u32)
}

/// Runs `body` in a fresh namespace `PREFIX-<random>`, then deletes the namespace (also when
/// `body` panics: finalizers left on its pods are removed first, so the deletion can finish).
async fn in_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = admin().await;
    let ns = format!("{prefix}-{}", suffix());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &Namespace { metadata: meta(&ns, &[]), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
    let t0 = Instant::now();
    let result = AssertUnwindSafe(body(client.clone(), ns.clone())).catch_unwind().await;
    eprintln!("{ns}: test body took {:.1}s", t0.elapsed().as_secs_f64());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for pod in list.items.iter().filter(|p| p.metadata.finalizers.is_some()) {
            let _ = pods.patch(&name(pod), &PatchParams::default(), &drop_finalizers()).await;
        }
    }
    if let Err(e) = namespaces.delete(&ns, &DeleteParams::default()).await {
        eprintln!("delete namespace {ns}: {e}");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after [`PATIENCE`].
async fn eventually<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = check().await {
            eprintln!("  {what}: {:.2}s", t0.elapsed().as_secs_f64());
            return v;
        }
        assert!(t0.elapsed() < PATIENCE, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
        ..Default::default()
    }
}

fn name<K: Resource>(k: &K) -> String {
    k.meta().name.clone().unwrap_or_default()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

fn drop_finalizers() -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"finalizers": null}}))
}

/// A pod spec for kwok nodes: tolerates their taint, selects them. The image is never pulled.
fn kwok_pod_spec(port: (&str, i32)) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "main".into(),
            image: Some("registry.invalid/goim-rs/fake:1".into()),
            ports: Some(vec![ContainerPort {
                name: Some(port.0.into()),
                container_port: port.1,
                ..Default::default()
            }]),
            ..Default::default()
        }],
        node_selector: Some(labels(&[("type", "kwok")])),
        tolerations: Some(vec![Toleration {
            key: Some("kwok.x-k8s.io/node".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status.and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty())
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pods need the namespace's `default` ServiceAccount (the ServiceAccount admission plugin
/// refuses them until the controller manager has created it).
async fn default_service_account(client: &Client, ns: &str) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    eventually("default ServiceAccount", || {
        let sas = sas.clone();
        async move { sas.get_opt("default").await.ok().flatten() }
    })
    .await;
}

async fn service(
    client: &Client,
    ns: &str,
    name: &str,
    selector: &[(&str, &str)],
    port: (&str, i32),
    headless: bool,
) -> Service {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = Service {
        metadata: meta(name, &[]),
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".into()),
            selector: Some(labels(selector)),
            ports: Some(vec![ServicePort {
                name: Some(port.0.into()),
                port: port.1,
                target_port: Some(IntOrString::String(port.0.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    services.create(&PostParams::default(), &svc).await.expect("create service")
}

async fn pod(client: &Client, ns: &str, name: &str, app: &str, finalizers: &[&str]) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut metadata = meta(name, &[("app", app)]);
    if !finalizers.is_empty() {
        metadata.finalizers = Some(finalizers.iter().map(|f| (*f).into()).collect());
    }
    let pod = Pod { metadata, spec: Some(kwok_pod_spec(("grpc", 3109))), ..Default::default() };
    pods.create(&PostParams::default(), &pod).await.unwrap_or_else(|e| panic!("create pod {name}: {e}"))
}

/// The endpoints of the Service's slices: (pod name, address, ready, serving, terminating).
async fn slice_endpoints(
    client: &Client,
    ns: &str,
    service: &str,
) -> Vec<(String, String, bool, bool, bool)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let mut out: Vec<_> = slices
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.endpoints.unwrap_or_default())
        .map(|e| {
            let c = e.conditions.unwrap_or_default();
            (
                e.target_ref.and_then(|t| t.name).unwrap_or_default(),
                e.addresses.first().cloned().unwrap_or_default(),
                c.ready.unwrap_or(true),
                c.serving.unwrap_or(true),
                c.terminating.unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

async fn pod_ips(client: &Client, ns: &str, app: &str) -> BTreeMap<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.expect("list pods");
    list.items
        .iter()
        .map(|p| (name(p), p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()))
        .collect()
}

/// Waits until `rx`'s list satisfies `ok`, and returns it.
async fn comets_until(
    discovery: &Kubernetes,
    what: &str,
    ok: impl Fn(&[CometEndpoint]) -> bool,
) -> Vec<CometEndpoint> {
    let mut rx = discovery.watch();
    let t0 = Instant::now();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let now = rx.borrow_and_update().clone();
            if ok(&now) {
                return now.to_vec();
            }
            rx.changed().await.expect("discovery stopped");
        }
    })
    .await;
    let found =
        found.unwrap_or_else(|_| panic!("not within {PATIENCE:?}: {what}; comets: {:?}", rx.borrow()));
    eprintln!("  {what}: {:.2}s", t0.elapsed().as_secs_f64());
    found
}

fn discovery_config(ns: &str) -> KubernetesConfig {
    KubernetesConfig {
        service: "goim-comet-grpc".into(),
        namespace: ns.into(),
        port_name: "grpc".into(),
        sync_timeout: Duration::from_secs(20),
    }
}

// ------------------------------------------------------------------------------------ tests

/// Deployments, ReplicaSets, scheduling onto kwok nodes, readiness, EndpointSlices and garbage
/// collection all work: the controllers and the scheduler are the real ones.
#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_control_plane_runs_deployments_on_kwok_nodes_and_publishes_endpoint_slices() {
    in_namespace("goim-cp", |client, ns| async move {
        default_service_account(&client, &ns).await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let app = [("app", "web")];
        let deployment = Deployment {
            metadata: meta("web", &app),
            spec: DeploymentSpec {
                replicas: Some(2),
                selector: LabelSelector { match_labels: Some(labels(&app)), ..Default::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(labels(&app)), ..Default::default() }),
                    spec: Some(kwok_pod_spec(("http", 8080))),
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let deployment =
            deployments.create(&PostParams::default(), &deployment).await.expect("create deployment");
        let uid = deployment.metadata.uid.clone().unwrap();

        let rs = eventually("a ReplicaSet owned by the Deployment", || {
            let replica_sets = replica_sets.clone();
            let uid = uid.clone();
            async move {
                let list = replica_sets.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find(|rs| {
                    rs.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.uid == uid && o.controller == Some(true))
                })
            }
        })
        .await;
        let rs_uid = rs.metadata.uid.clone().unwrap();

        let running = eventually("2 pods Running and Ready on the kwok node", || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
                (list.items.len() == 2 && list.items.iter().all(is_ready)).then_some(list.items)
            }
        })
        .await;
        for p in &running {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            assert!(node.starts_with("kwok-node-"), "{} is on {node:?}", name(p));
            let owner = p.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
            assert_eq!(
                owner.map(|o| o.uid.as_str()),
                Some(rs_uid.as_str()),
                "{} is not the ReplicaSet's",
                name(p)
            );
        }
        eventually("the Deployment reports 2 available replicas", || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("web").await.ok()?;
                (d.status?.available_replicas == Some(2)).then_some(())
            }
        })
        .await;

        let svc = service(&client, &ns, "web", &app, ("http", 80), false).await;
        let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        assert!(cluster_ip.starts_with("10.96."), "cluster IP {cluster_ip:?} not from 10.96.0.0/16");
        let ips = pod_ips(&client, &ns, "web").await;
        let expected: Vec<_> = ips.iter().map(|(n, ip)| (n.clone(), ip.clone(), true, true, false)).collect();
        eventually("an EndpointSlice listing both pods as ready", || {
            let client = client.clone();
            let (ns, expected) = (ns.clone(), expected.clone());
            async move { (slice_endpoints(&client, &ns, "web").await == expected).then_some(()) }
        })
        .await;

        let dp =
            DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..Default::default() };
        deployments.delete("web", &dp).await.expect("delete deployment");
        eventually("the garbage collector removed the Deployment, ReplicaSet and pods", || {
            let (deployments, replica_sets, pods) = (deployments.clone(), replica_sets.clone(), pods.clone());
            async move {
                let d = deployments.get_opt("web").await.ok()?;
                let rss = replica_sets.list(&ListParams::default()).await.ok()?;
                let ps = pods.list(&ListParams::default()).await.ok()?;
                (d.is_none() && rss.items.is_empty() && ps.items.is_empty()).then_some(())
            }
        })
        .await;
        eventually("the EndpointSlice lists no endpoint", || {
            let client = client.clone();
            let ns = ns.clone();
            async move { slice_endpoints(&client, &ns, "web").await.is_empty().then_some(()) }
        })
        .await;
    })
    .await;
}

/// job's discovery (`Kubernetes::start`, the production path, credentials from KUBECONFIG) on
/// a headless Service: comets appear when their endpoints are ready; a terminating comet that
/// still serves stays a dispatch target until its endpoint is gone.
#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn discovery_follows_endpoint_slices_and_keeps_pushing_to_a_terminating_serving_comet() {
    in_namespace("goim-disc", |client, ns| async move {
        default_service_account(&client, &ns).await;
        service(&client, &ns, "goim-comet-grpc", &[("app", "goim-comet")], ("grpc", 3109), true).await;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let discovery = Kubernetes::start(&discovery_config(&ns), shutdown.clone(), &tasks)
            .await
            .expect("discovery starts");
        assert!(discovery.watch().borrow().is_empty(), "no comet yet");
        // job's client set, as the job binary builds it. `servers()` is what room pushes and
        // broadcasts go to; it does no I/O (connections open lazily, and nothing here calls a
        // comet: the pod IPs are kwok's and lead nowhere).
        let comets = GrpcComets::new(&discovery, ClientConfig::default());
        assert!(comets.servers().is_empty());

        pod(&client, &ns, "comet-0", "goim-comet", &[]).await;
        pod(&client, &ns, "comet-1", "goim-comet", &[HOLD]).await;
        let up = comets_until(&discovery, "both comets listed ready", |c| {
            c.len() == 2 && c.iter().all(|e| e.ready && e.serving && !e.terminating)
        })
        .await;
        let ips = pod_ips(&client, &ns, "goim-comet").await;
        for c in &up {
            assert_eq!(c.addr, format!("{}:3109", ips[&c.server_id]), "{}", c.server_id);
        }
        assert_eq!(comets.servers(), ["comet-0", "comet-1"]);

        // Terminating but still serving: the finalizer keeps the pod (kwok finishes deletion
        // only once a pod has no finalizers), and its Ready condition stays True.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let dp = DeleteParams { grace_period_seconds: Some(30), ..Default::default() };
        pods.delete("comet-1", &dp).await.expect("delete comet-1");
        let ip1 = ips["comet-1"].clone();
        let ip0 = ips["comet-0"].clone();
        eventually("the EndpointSlice shows comet-1 serving=true terminating=true ready=false", || {
            let client = client.clone();
            let ns = ns.clone();
            let expected = vec![
                ("comet-0".to_owned(), ip0.clone(), true, true, false),
                ("comet-1".to_owned(), ip1.clone(), false, true, true),
            ];
            async move { (slice_endpoints(&client, &ns, "goim-comet-grpc").await == expected).then_some(()) }
        })
        .await;
        let draining = comets_until(&discovery, "discovery sees comet-1 draining", |c| {
            c.iter().any(|e| e.server_id == "comet-1" && e.terminating)
        })
        .await;
        let c1 = draining.iter().find(|e| e.server_id == "comet-1").unwrap();
        assert_eq!((c1.ready, c1.serving, c1.terminating), (false, true, true));
        assert_eq!(comets.servers(), ["comet-0", "comet-1"], "job still pushes to the draining comet");
        let offered: Vec<_> = draining.iter().filter(|e| e.ready).map(|e| e.server_id.as_str()).collect();
        assert_eq!(offered, ["comet-0"], "logic offers only ready comets");

        // Held for a while: nothing finishes the deletion while the finalizer is there.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(pods.get_opt("comet-1").await.unwrap().is_some(), "comet-1 went away despite its finalizer");
        assert_eq!(comets.servers(), ["comet-0", "comet-1"]);

        pods.patch("comet-1", &PatchParams::default(), &drop_finalizers()).await.expect("remove finalizer");
        comets_until(&discovery, "comet-1 gone from discovery", |c| {
            c.len() == 1 && c[0].server_id == "comet-0"
        })
        .await;
        assert_eq!(comets.servers(), ["comet-0"]);
        eventually("the pod comet-1 is deleted", || {
            let pods = pods.clone();
            async move { pods.get_opt("comet-1").await.ok()?.is_none().then_some(()) }
        })
        .await;

        shutdown.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.expect("the watch task stops");
    })
    .await;
}

/// A ServiceAccount with exactly what docs/distributed.md tells users to grant (`list` and
/// `watch` on endpointslices.discovery.k8s.io in the namespace) runs discovery; with less,
/// start-up fails at once with an error that says what to grant.
#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn rbac_list_and_watch_suffice_and_less_fails_at_once_naming_what_to_grant() {
    in_namespace("goim-rbac", |client, ns| async move {
        default_service_account(&client, &ns).await;
        service(&client, &ns, "goim-comet-grpc", &[("app", "goim-comet")], ("grpc", 3109), true).await;
        pod(&client, &ns, "comet-0", "goim-comet", &[]).await;

        // goim-job: list + watch (the docs); list-only: list; nothing: no Role at all.
        for (sa, verbs) in [("goim-job", &["list", "watch"][..]), ("list-only", &["list"][..]), ("nothing", &[][..])] {
            service_account(&client, &ns, sa, verbs).await;
        }
        for (sa, verb, allowed) in [
            ("goim-job", "list", true),
            ("goim-job", "watch", true),
            ("list-only", "list", true),
            ("list-only", "watch", false),
        ] {
            rbac_in_effect(&client, &ns, sa, verb, allowed).await;
        }
        eventually("comet-0's endpoint is ready", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let e = slice_endpoints(&client, &ns, "goim-comet-grpc").await;
                (e.len() == 1 && e[0].2).then_some(())
            }
        })
        .await;

        // The namespace comes from the client (as in a pod: its own namespace).
        let config = KubernetesConfig { namespace: String::new(), ..discovery_config(&ns) };
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();

        let t0 = Instant::now();
        let sa_client = client_as(&client, &ns, "goim-job").await;
        let discovery = Kubernetes::start_with_client(sa_client, &config, shutdown.clone(), &tasks)
            .await
            .expect("discovery starts with list and watch");
        eprintln!("  start with list+watch: {:.2}s", t0.elapsed().as_secs_f64());
        let comets = discovery.watch().borrow().clone();
        assert_eq!(comets.iter().map(|c| c.server_id.as_str()).collect::<Vec<_>>(), ["comet-0"]);
        // And the watch works under these permissions: a second comet shows up.
        pod(&client, &ns, "comet-1", "goim-comet", &[]).await;
        comets_until(&discovery, "comet-1 seen through the ServiceAccount's watch", |c| {
            c.iter().filter(|e| e.ready).count() == 2
        })
        .await;

        for (sa, missing) in [("list-only", &["watch"][..]), ("nothing", &["list", "watch"][..])] {
            let t0 = Instant::now();
            let sa_client = client_as(&client, &ns, sa).await;
            let err = Kubernetes::start_with_client(sa_client, &config, shutdown.clone(), &tasks)
                .await
                .expect_err("start must fail");
            let took = t0.elapsed();
            eprintln!("  {sa}: failed in {:.2}s: {err}", took.as_secs_f64());
            assert!(took < Duration::from_secs(5), "{sa}: took {took:?}, not at once");
            match &err {
                KubernetesError::Forbidden { verbs, resource, namespace, user_hint } => {
                    assert_eq!(verbs, missing, "{sa}");
                    assert_eq!(resource, "endpointslices.discovery.k8s.io");
                    assert_eq!(namespace, &ns);
                    assert_eq!(
                        user_hint,
                        &format!("ServiceAccount {sa:?} in namespace {ns:?} (user \"system:serviceaccount:{ns}:{sa}\")")
                    );
                }
                other => panic!("{sa}: expected Forbidden, got {other:?}"),
            }
            let text = err.to_string();
            for needle in ["endpointslices", "discovery.k8s.io", "\"list\", \"watch\"", "Role", &ns, sa] {
                assert!(text.contains(needle), "{sa}: {needle:?} missing from: {text}");
            }
        }

        shutdown.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.expect("watch tasks stop");
    })
    .await;
}

/// ServiceAccount `sa`, with a Role granting `verbs` on EndpointSlices bound to it (no Role
/// when `verbs` is empty).
async fn service_account(client: &Client, ns: &str, sa: &str, verbs: &[&str]) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create(&PostParams::default(), &ServiceAccount { metadata: meta(sa, &[]), ..Default::default() })
        .await
        .expect("create service account");
    if verbs.is_empty() {
        return;
    }
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let role = Role {
        metadata: meta(sa, &[]),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".into()]),
            resources: Some(vec!["endpointslices".into()]),
            verbs: verbs.iter().map(|v| (*v).into()).collect(),
            ..Default::default()
        }]),
    };
    roles.create(&PostParams::default(), &role).await.expect("create role");
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let binding = RoleBinding {
        metadata: meta(sa, &[]),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: sa.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    bindings.create(&PostParams::default(), &binding).await.expect("create role binding");
}

/// Waits until the RBAC authorizer (which reads Roles from an informer) answers as expected.
async fn rbac_in_effect(client: &Client, ns: &str, sa: &str, verb: &str, allowed: bool) {
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some("discovery.k8s.io".into()),
                resource: Some("endpointslices".into()),
                verb: Some(verb.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    eventually(&format!("RBAC: {sa} {verb} allowed={allowed}"), || {
        let (reviews, review) = (reviews.clone(), review.clone());
        async move {
            let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
            (answer.status?.allowed == allowed).then_some(())
        }
    })
    .await;
}

/// A client authenticated as ServiceAccount `sa` with a bound token (TokenRequest API), trusting
/// the CA of the admin kubeconfig; its default namespace is `ns`.
async fn client_as(admin: &Client, ns: &str, sa: &str) -> Client {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(600), ..Default::default() }),
        ..Default::default()
    };
    let token: TokenRequest =
        sas.create_subresource("token", sa, &PostParams::default(), &request).await.expect("token request");
    let token = token.status.and_then(|s| s.token).expect("a token in the TokenRequest status");
    let mut config = Config::infer().await.expect("kubeconfig");
    assert!(config.root_cert.is_some(), "the kubeconfig has the cluster CA");
    config.auth_info = AuthInfo { token: Some(token.into()), ..Default::default() };
    config.default_namespace = ns.into();
    Client::try_from(config).expect("client with the ServiceAccount token")
}
