//! Leader election against the real control plane (`bash scripts/k8s.sh start`;
//! `eval "$(bash scripts/k8s.sh env)"` sets KUBECONFIG): real `goim-operator` processes, each
//! with a kubeconfig holding a token of the ServiceAccount `goim-operator` of the test's
//! namespace, bound to a copy of the ClusterRole of `deploy/rbac.yaml` (a missing permission
//! fails these tests). The Lease lives in the test's namespace (`POD_NAMESPACE`).
//!
//! The operators watch every namespace, so the tests of this file run one at a time: a leader of
//! another test would otherwise reconcile this test's PushClusters. Assertions look only at the
//! test's own namespace and at the processes' own metrics.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LEASE: Duration = Duration::from_secs(4);
const RENEW: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_secs(1);

/// One test of this file at a time (see the module doc). Not poisoned by a failed test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running `goim-operator`; killed (SIGKILL) on drop, also when the test panics, and then its
/// log is printed.
struct Operator {
    name: String,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn spawn(name: &str, ns: &str, kubeconfig: &Path) -> Operator {
        let port = free_port();
        let log = kubeconfig.with_file_name(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_goim-operator"))
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", ns)
            .env("GOIM_OPERATOR_ADMIN", format!("127.0.0.1:{port}"))
            .env("GOIM_OPERATOR_LEASE_DURATION", format!("{}s", LEASE.as_secs()))
            .env("GOIM_OPERATOR_RENEW_DEADLINE", format!("{}s", RENEW.as_secs()))
            .env("GOIM_OPERATOR_RETRY_PERIOD", format!("{}s", RETRY.as_secs()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Operator { name: name.into(), port, child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether `holder` (a Lease's holderIdentity) is this process: its POD_NAME plus a suffix.
    fn is(&self, holder: &str) -> bool {
        holder.strip_prefix(&self.name).is_some_and(|rest| rest.starts_with('-'))
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited ({status}):\n{}", self.name, self.logs());
        }
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success(), "kill {signal} {}", self.child.id());
    }

    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "{} still runs after {within:?}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path).await
    }

    /// A metric's value from `/metrics`.
    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Until `/healthz` answers.
    async fn wait_live(&mut self) {
        for _ in 0..200 {
            self.assert_running();
            if let Some((200, _)) = self.get("/healthz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} never served /healthz:\n{}", self.name, self.logs());
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.logs());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One GET on 127.0.0.1:`port`: status code and body.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").as_bytes()).await.ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.ok()?;
        let code = raw.split_whitespace().nth(1)?.parse().ok()?;
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(2), io).await.ok().flatten()
}

/// The Lease's holderIdentity (`None`: no Lease or no holder).
async fn holder(client: &Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns).get_opt("goim-operator").await.unwrap()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Until the Lease names one of `ops`; returns its index.
async fn wait_leader(client: &Client, ns: &str, ops: &mut [Operator], within: Duration) -> usize {
    let started = Instant::now();
    loop {
        for op in ops.iter_mut() {
            op.assert_running();
        }
        if let Some(h) = holder(client, ns).await {
            if let Some(i) = ops.iter().position(|op| op.is(&h)) {
                return i;
            }
            panic!("the Lease names {h}, none of the operators");
        }
        assert!(started.elapsed() < within, "no operator took the lease within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until the Lease names `op`; returns how long that took.
async fn wait_holder(client: &Client, ns: &str, op: &mut Operator, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        op.assert_running();
        if holder(client, ns).await.is_some_and(|h| op.is(&h)) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{} did not take the lease within {within:?}", op.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_metric(op: &Operator, name: &str, want: f64) {
    for _ in 0..100 {
        if op.metric(name).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{}: {name} is {:?}, not {want}", op.name, op.metric(name).await);
}

async fn wait_deployment(client: &Client, ns: &str, name: &str, within: Duration) {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    let started = Instant::now();
    while api.get_opt(name).await.unwrap().is_none() {
        assert!(started.elapsed() < within, "Deployment {ns}/{name} did not appear within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `body` in a fresh namespace with the ServiceAccount `goim-operator` (bound to a copy of
/// the ClusterRole of deploy/rbac.yaml) and a kubeconfig for it; removes them all afterwards,
/// also when `body` panics. One at a time (see [`SERIAL`]).
async fn with_operator_account<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Client, String, PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _serial = SERIAL.lock().await;
    in_namespace(prefix, |client, ns| async move {
        as_operator(&client, &ns, operator_cluster_role()).await;
        let dir = std::env::temp_dir().join(format!("goim-operator-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        service_account_kubeconfig(&client, &ns, "goim-operator", &kubeconfig).await;
        let outcome =
            std::panic::AssertUnwindSafe(body(client.clone(), ns.clone(), kubeconfig)).catch_unwind().await;
        drop_operator_role(&client, &ns).await;
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn one_replica_leads_and_the_standby_takes_over_after_kill_9() {
    with_operator_account("op-leader-kill", |client, ns, kubeconfig| async move {
        let mut ops =
            vec![Operator::spawn("op-a", &ns, &kubeconfig), Operator::spawn("op-b", &ns, &kubeconfig)];
        for op in &mut ops {
            op.wait_live().await;
        }
        let leader = wait_leader(&client, &ns, &mut ops, LEASE + RETRY * 2).await;
        let mut standby = ops.remove(1 - leader);
        let mut leader = ops.remove(0);
        println!("{} leads, {} stands by", leader.name, standby.name);
        wait_metric(&leader, "goim_operator_leader", 1.0).await;
        wait_metric(&standby, "goim_operator_leader", 0.0).await;
        for op in [&leader, &standby] {
            assert_eq!(op.get("/healthz").await.map(|r| r.0), Some(200), "{} is live", op.name);
            assert_eq!(op.get("/readyz").await.map(|r| r.0), Some(200), "{} is ready", op.name);
        }

        create(&client, &ns, "demo", minimal()).await;
        wait_deployment(&client, &ns, "demo-comet", Duration::from_secs(30)).await;
        assert!(
            leader.metric("goim_operator_reconciles_total").await.unwrap() > 0.0,
            "the leader reconciles"
        );
        assert_eq!(
            standby.metric("goim_operator_reconciles_total").await,
            Some(0.0),
            "the standby never reconciles"
        );
        let h = holder(&client, &ns).await.unwrap();
        assert!(leader.is(&h), "the lease stays with {} while it renews, not {h}", leader.name);

        leader.child.kill().unwrap();
        let killed = Instant::now();
        let status = leader.wait_exit(Duration::from_secs(5)).await;
        assert!(!status.success(), "SIGKILL: {status}");
        wait_holder(&client, &ns, &mut standby, LEASE + RETRY * 4).await;
        let takeover = killed.elapsed();
        println!(
            "takeover after kill -9 of {}: {takeover:?} (lease {LEASE:?}, retry {RETRY:?})",
            leader.name
        );
        assert!(takeover < LEASE + RETRY * 2, "takeover took {takeover:?}");
        wait_metric(&standby, "goim_operator_leader", 1.0).await;
        println!("{} reports goim_operator_leader 1 after {:?}", standby.name, killed.elapsed());

        create(&client, &ns, "demo2", minimal()).await;
        wait_deployment(&client, &ns, "demo2-comet", Duration::from_secs(30)).await;
        assert!(
            standby.metric("goim_operator_reconciles_total").await.unwrap() > 0.0,
            "the new leader reconciles"
        );
        assert!(standby.logs().contains("leading"), "the new leader says so:\n{}", standby.logs());
        standby.assert_running();
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() {
    with_operator_account("op-leader-term", |client, ns, kubeconfig| async move {
        let mut ops =
            vec![Operator::spawn("op-a", &ns, &kubeconfig), Operator::spawn("op-b", &ns, &kubeconfig)];
        for op in &mut ops {
            op.wait_live().await;
        }
        let leader = wait_leader(&client, &ns, &mut ops, LEASE + RETRY * 2).await;
        let mut standby = ops.remove(1 - leader);
        let mut leader = ops.remove(0);
        wait_metric(&standby, "goim_operator_leader", 0.0).await;

        leader.signal("-TERM");
        let signalled = Instant::now();
        let status = leader.wait_exit(Duration::from_secs(10)).await;
        let exited = signalled.elapsed();
        wait_holder(&client, &ns, &mut standby, LEASE + RETRY * 4).await;
        let took = signalled.elapsed();
        println!("takeover after SIGTERM of {}: {took:?} (it exited after {exited:?})", leader.name);
        assert!(status.success(), "a clean shutdown exits 0: {status}\n{}", leader.logs());
        assert!(leader.logs().contains("released the lease"), "{}", leader.logs());
        // Waiting for expiry could not beat lease − retry: the lease was renewed at most one
        // retry period before the signal.
        assert!(took < LEASE - RETRY, "takeover took {took:?}: the lease was not released");
        wait_metric(&standby, "goim_operator_leader", 1.0).await;
        standby.assert_running();
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_leader_that_cannot_renew_exits_non_zero_before_the_lease_expires() {
    with_operator_account("op-leader-deadline", |client, ns, kubeconfig| async move {
        let mut ops = vec![Operator::spawn("op-a", &ns, &kubeconfig)];
        ops[0].wait_live().await;
        wait_leader(&client, &ns, &mut ops, LEASE + RETRY * 2).await;
        let mut op = ops.remove(0);
        wait_metric(&op, "goim_operator_leader", 1.0).await;

        // Take its permissions away: every renewal now gets 403.
        let binding = format!("goim-operator-{ns}");
        Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
            .delete(&binding, &DeleteParams::default())
            .await
            .unwrap();
        let revoked = Instant::now();
        let status = op.wait_exit(LEASE + RETRY * 2).await;
        let exited_at = k8s_openapi::jiff::Timestamp::now();
        println!("{} exited {:?} after losing its permissions: {status}", op.name, revoked.elapsed());
        assert_eq!(status.code(), Some(1), "lost leadership exits 1:\n{}", op.logs());
        assert!(op.logs().contains("lost the lease"), "{}", op.logs());
        // The safety property: it stopped before anyone else could take the lease.
        let lease = Api::<Lease>::namespaced(client.clone(), &ns).get("goim-operator").await.unwrap();
        let spec = lease.spec.unwrap();
        let MicroTime(renewed) = spec.renew_time.unwrap();
        let expires = renewed
            + k8s_openapi::jiff::SignedDuration::from_secs(spec.lease_duration_seconds.unwrap().into());
        assert!(exited_at < expires, "exited at {exited_at}, after the lease expired at {expires}");
        assert!(op.is(&spec.holder_identity.unwrap()), "it could not write, so it still names it");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_leader_whose_lease_is_taken_stops_at_its_next_renewal() {
    with_operator_account("op-leader-taken", |client, ns, kubeconfig| async move {
        let mut ops = vec![Operator::spawn("op-a", &ns, &kubeconfig)];
        ops[0].wait_live().await;
        wait_leader(&client, &ns, &mut ops, LEASE + RETRY * 2).await;
        let mut op = ops.remove(0);

        // Another candidate writes itself in (as one would after an expiry the leader missed).
        let api = Api::<Lease>::namespaced(client.clone(), &ns);
        let mut lease = api.get("goim-operator").await.unwrap();
        let spec = lease.spec.as_mut().unwrap();
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        api.replace("goim-operator", &PostParams::default(), &lease).await.unwrap();
        let taken = Instant::now();
        let status = op.wait_exit(RETRY * 3).await;
        println!("{} exited {:?} after its lease was taken: {status}", op.name, taken.elapsed());
        assert_eq!(status.code(), Some(1), "lost leadership exits 1:\n{}", op.logs());
        assert!(op.logs().contains("intruder"), "the log names the new holder:\n{}", op.logs());
        assert_eq!(holder(&client, &ns).await.as_deref(), Some("intruder"), "it does not write it back");
    })
    .await;
}

/// `operator/deploy/<name>.yaml`, every document.
fn deploy_docs(name: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let path = format!("{}/deploy/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde_yaml::Value::deserialize(d).unwrap()).collect()
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_install_manifests_pass_the_api_server() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Patch, PatchParams};
    in_namespace("op-manifests", |client, ns| async move {
        let pp = PatchParams::apply("goim-operator-tests").validation_strict().dry_run();
        let mut kinds = Vec::new();
        for doc in deploy_docs("rbac").into_iter().chain(deploy_docs("operator")) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            // Namespaced objects go to the test's namespace instead of goim-system.
            let mut doc = doc;
            if doc["metadata"]["namespace"].is_string() {
                doc["metadata"]["namespace"] = ns.clone().into();
            }
            let result = match kind.as_str() {
                "ServiceAccount" => Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                    .patch(&name, &pp, &Patch::Apply(&doc))
                    .await
                    .map(drop),
                "ClusterRole" => Api::<ClusterRole>::all(client.clone())
                    .patch(&name, &pp, &Patch::Apply(&doc))
                    .await
                    .map(drop),
                "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(client.clone())
                    .patch(&name, &pp, &Patch::Apply(&doc))
                    .await
                    .map(drop),
                "Deployment" => Api::<Deployment>::namespaced(client.clone(), &ns)
                    .patch(&name, &pp, &Patch::Apply(&doc))
                    .await
                    .map(drop),
                other => panic!("operator/deploy has a {other}: add it to this test"),
            };
            if let Err(e) = result {
                panic!("{kind} {name}: {e}");
            }
            kinds.push(kind);
        }
        assert_eq!(kinds, ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"]);
    })
    .await;
}

/// The operator's own pod, as `deploy/operator.yaml` writes it, started as a local process: its
/// command, its env (the downward-API values filled in), a kubeconfig standing in for the
/// in-cluster ServiceAccount token. Its probes must answer on their paths, it must lead and
/// reconcile. The admin address is the one change: the manifest's port (checked to be the
/// container port the probes name) is moved to a free one, since the host may use 8080.
#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_operator_deployment_runs_as_written() {
    let deployment: Deployment = deploy_docs("operator")
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .map(|d| serde_yaml::from_value(d).unwrap())
        .expect("a Deployment in deploy/operator.yaml");
    let pod = deployment.spec.template.spec.clone().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("goim-operator"), "the ServiceAccount of rbac.yaml");
    let c = &pod.containers[0];
    let command = c.command.clone().unwrap();
    assert_eq!(command, ["goim-operator"], "the binary");
    assert!(c.args.is_none(), "goim-operator takes no arguments");
    let admin_port =
        c.ports.iter().flatten().find(|p| p.name.as_deref() == Some("admin")).unwrap().container_port;
    let probes = [c.liveness_probe.clone().unwrap(), c.readiness_probe.clone().unwrap()];
    for p in &probes {
        let get = p.http_get.clone().unwrap();
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("admin".into())
        );
    }
    with_operator_account("op-manifest-run", |client, ns, kubeconfig| async move {
        let name = "goim-operator-6b8f9c7d5-x2x4q";
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_goim-operator"));
        cmd.env_clear().env("KUBECONFIG", &kubeconfig).env("PATH", std::env::var("PATH").unwrap_or_default());
        for e in c.env.iter().flatten() {
            let value = match (&e.value, e.value_from.as_ref().and_then(|f| f.field_ref.as_ref())) {
                (Some(v), _) if e.name == "GOIM_OPERATOR_ADMIN" => {
                    assert_eq!(v, &format!("0.0.0.0:{admin_port}"), "the admin address is the admin port");
                    format!("127.0.0.1:{port}")
                }
                (Some(v), _) => v.clone(),
                (None, Some(f)) if f.field_path == "metadata.name" => name.to_owned(),
                (None, Some(f)) if f.field_path == "metadata.namespace" => ns.clone(),
                other => panic!("{}: an env source the test does not fill: {other:?}", e.name),
            };
            cmd.env(&e.name, value);
        }
        let log = kubeconfig.with_file_name("manifest.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
        let mut op = Operator { name: name.into(), port, child, log };
        op.wait_live().await;
        for p in &probes {
            let path = p.http_get.clone().unwrap().path.unwrap();
            let mut answered = None;
            for _ in 0..100 {
                answered = op.get(&path).await.map(|(code, _)| code);
                if answered == Some(200) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(answered, Some(200), "probe {path}:\n{}", op.logs());
        }
        wait_holder(&client, &ns, &mut op, Duration::from_secs(20)).await;
        create(&client, &ns, "demo", minimal()).await;
        wait_deployment(&client, &ns, "demo-comet", Duration::from_secs(30)).await;
        assert!(op.logs().lines().any(|l| l.starts_with('{')), "GOIM_LOG_FORMAT=json gives JSON lines");
        op.signal("-TERM");
        let status = op.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "SIGTERM exits 0: {status}\n{}", op.logs());
    })
    .await;
}
