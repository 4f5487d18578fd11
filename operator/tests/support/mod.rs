//! What the operator's tests against the real control plane share: clients (counting, or acting
//! as the operator's ServiceAccount), the CRD, a namespace per test, a minimal spec.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use goim_operator::controller::Context;
use goim_operator::metrics::Metrics;
use goim_operator::{PushCluster, PushClusterSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount, Toleration};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::client::ClientBuilder;
use kube::{Client, ResourceExt};

/// Requests a client made, by method.
#[derive(Default)]
pub struct Requests {
    pub get: AtomicUsize,
    pub writes: AtomicUsize,
}

pub async fn client_counting(requests: Arc<Requests>) -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is unset: run `bash scripts/k8s.sh start` and `eval \"$(bash scripts/k8s.sh env)\"`"
    );
    let config = kube::Config::infer().await.expect("kubeconfig");
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        if req.method() == http::Method::GET {
            requests.get.fetch_add(1, Ordering::SeqCst);
        } else {
            requests.writes.fetch_add(1, Ordering::SeqCst);
        }
        req
    });
    ClientBuilder::try_from(config).expect("client").with_layer(&layer).build()
}

pub async fn client() -> Client {
    client_counting(Arc::default()).await
}

pub async fn apply_crd(client: &Client) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/pushcluster.yaml")).unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(&crd.name_any(), &PatchParams::apply("goim-operator-tests").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    for _ in 0..100 {
        let c = api.get(&crd.name_any()).await.unwrap();
        let established = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the PushCluster CRD did not become Established");
}

/// Runs `body` in a fresh namespace, then deletes the namespace (also when `body` panics).
pub async fn in_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let client = client().await;
    apply_crd(&client).await;
    let name = format!("{prefix}-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let outcome = std::panic::AssertUnwindSafe(body(client.clone(), name.clone())).catch_unwind().await;
    let _ = namespaces.delete(&name, &DeleteParams::default()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A minimal cluster whose pods may land on the kwok node.
pub fn minimal() -> PushClusterSpec {
    let mut spec = PushClusterSpec::default();
    let kwok = Toleration {
        key: Some("kwok.x-k8s.io/node".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    };
    spec.comet.pod.tolerations = vec![kwok.clone()];
    spec.logic.tolerations = vec![kwok];
    spec
}

pub async fn create(client: &Client, ns: &str, name: &str, spec: PushClusterSpec) -> PushCluster {
    let api: Api<PushCluster> = Api::namespaced(client.clone(), ns);
    let mut last = None;
    // Right after the CRD is established, discovery may lag a moment.
    for _ in 0..50 {
        match api.create(&PostParams::default(), &PushCluster::new(name, spec.clone())).await {
            Ok(pc) => return pc,
            Err(kube::Error::Api(s)) if s.code == 404 => last = Some(s),
            Err(e) => panic!("create: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("create: {last:?}");
}

/// The operator's context, with the tier binaries' check of every rendered file (the
/// binaries Cargo built beside the test).
pub fn context(client: &Client) -> Arc<Context> {
    let checker = goim_operator::check::Checker::locate()
        .unwrap_or_else(|e| panic!("{e}: build them with `cargo build --bins`"));
    Arc::new(Context::new(client.clone(), Arc::new(Metrics::default())).with_checker(checker))
}

pub async fn get(client: &Client, ns: &str, name: &str) -> Arc<PushCluster> {
    Arc::new(Api::<PushCluster>::namespaced(client.clone(), ns).get(name).await.unwrap())
}

/// The ClusterRole of `operator/deploy/rbac.yaml`.
pub fn operator_cluster_role() -> k8s_openapi::api::rbac::v1::ClusterRole {
    use serde::Deserialize;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        if v["kind"].as_str() == Some("ClusterRole") {
            return serde_yaml::from_value(v).unwrap();
        }
    }
    panic!("no ClusterRole in operator/deploy/rbac.yaml");
}

/// A client acting as the ServiceAccount `ns/goim-operator`, bound to `role` (a ClusterRole
/// named after the namespace, deleted by the caller).
pub async fn as_operator(
    admin: &Client,
    ns: &str,
    mut role: k8s_openapi::api::rbac::v1::ClusterRole,
) -> Client {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
    let name = format!("goim-operator-{ns}");
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some("goim-operator".into());
    Api::<ServiceAccount>::namespaced(admin.clone(), ns).create(&PostParams::default(), &sa).await.unwrap();
    role.metadata = Default::default();
    role.metadata.name = Some(name.clone());
    Api::<ClusterRole>::all(admin.clone()).create(&PostParams::default(), &role).await.unwrap();
    let binding = ClusterRoleBinding {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "goim-operator".into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&PostParams::default(), &binding).await.unwrap();
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:goim-operator"));
    Client::try_from(config).unwrap()
}

/// Runs `body` with a client acting as the ServiceAccount `ns/goim-operator` bound to `role`
/// ([`as_operator`]); removes the role afterwards, also when `body` panics.
pub async fn with_operator<F, Fut>(
    admin: &Client,
    ns: &str,
    role: k8s_openapi::api::rbac::v1::ClusterRole,
    body: F,
) where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let operator = as_operator(admin, ns, role).await;
    let outcome = std::panic::AssertUnwindSafe(body(operator)).catch_unwind().await;
    drop_operator_role(admin, ns).await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

pub async fn drop_operator_role(admin: &Client, ns: &str) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let name = format!("goim-operator-{ns}");
    let _ = Api::<ClusterRoleBinding>::all(admin.clone()).delete(&name, &DeleteParams::default()).await;
    let _ = Api::<ClusterRole>::all(admin.clone()).delete(&name, &DeleteParams::default()).await;
}

/// A port for a process the test starts (an operator's admin port), below the ephemeral range.
#[allow(unused_imports)] // not every test binary starts a process
pub use goim_test_support::free_port;

/// Writes a kubeconfig at `path` for the ServiceAccount `ns/sa`: the server and CA of
/// `$KUBECONFIG`, and a one-hour token from the TokenRequest API. A process using it has exactly
/// that ServiceAccount's RBAC, as in a pod.
pub async fn service_account_kubeconfig(admin: &Client, ns: &str, sa: &str, path: &std::path::Path) {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .expect("a TokenRequest answer has a status")
        .token;
    let ours = kube::config::Kubeconfig::read().unwrap();
    let context = ours.current_context.clone().expect("a current context");
    let cluster_name = ours
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("the current context");
    let cluster = ours
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .expect("the current context's cluster");
    let mut entry = serde_json::json!({ "server": cluster.server });
    if let Some(ca) = &cluster.certificate_authority_data {
        entry["certificate-authority-data"] = ca.clone().into();
    }
    if let Some(ca) = &cluster.certificate_authority {
        entry["certificate-authority"] = ca.clone().into();
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": entry }],
        "users": [{ "name": sa, "user": { "token": token } }],
        "contexts": [{ "name": "test", "context": { "cluster": "test", "user": sa, "namespace": ns } }],
        "current-context": "test",
    });
    std::fs::write(path, serde_yaml::to_string(&config).unwrap()).unwrap();
    // It holds a token: for this user only, as kubectl writes kubeconfigs.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A tier binary Cargo built beside this test (`target/<profile>/goim-comet`, ...).
pub fn tier_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} beside {}: build it with `cargo build --bins`", exe.display()))
}

/// A process the test started: killed on drop (also when the test panics), its output printed
/// then.
pub struct Proc {
    pub name: String,
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: std::process::Command, dir: &std::path::Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Proc { name: name.into(), child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.logs());
        }
    }
}

/// Until something accepts connections at `addr`, or panics naming `what`.
pub async fn wait_listening(addr: std::net::SocketAddr, what: &Proc) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} does not listen on {addr}:\n{}", what.name, what.logs());
}

/// Reconciles `demo` until its Ready condition is True (the pods run on the kwok node).
pub async fn until_ready(client: &Client, ns: &str, ctx: &Arc<Context>) -> Arc<PushCluster> {
    for _ in 0..60 {
        goim_operator::controller::reconcile(get(client, ns, "demo").await, ctx.clone()).await.unwrap();
        let pc = get(client, ns, "demo").await;
        if pc.status.as_ref().unwrap().conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
            return pc;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the PushCluster did not become Ready within 30s");
}
