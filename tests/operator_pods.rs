//! Every pod the operator renders actually runs. For each topology, the Deployments of
//! `goim_operator::render::children` are started the way a kubelet would start them, but as local
//! processes of the tier binaries:
//!
//! - `command[0]` must name `goim-comet`, `goim-logic` or `goim-job`; command and args are passed
//!   exactly as rendered (after the kubelet's `$(VAR)` expansion);
//! - the environment is the kubelet's: the `kubernetes` Service and service-link variables,
//!   `HOSTNAME`, then the container's `env` (downward-API `fieldRef`s, and
//!   `secretKeyRef`s read from Secrets created in the namespace: the generated one and the
//!   user's);
//! - every ConfigMap and Secret volume is written at its mount path (`/etc/goim/comet.toml`, ...)
//!   inside a private mount namespace (`unshare --mount`): an overlay over `/etc` (and over `/run`
//!   for the ServiceAccount token), so the host's directories never change, and an `/etc/hosts`
//!   that resolves every Service DNS name to the pod IP, as cluster DNS would;
//! - pods with `automountServiceAccountToken` get what the kubelet projects: a TokenRequest token
//!   of their ServiceAccount, the `kube-root-ca.crt` CA and the namespace, under
//!   `/var/run/secrets/kubernetes.io/serviceaccount`, with the rendered ServiceAccounts, Roles,
//!   RoleBindings and Services applied to a fresh namespace on the real API server, and an
//!   EndpointSlice for the comet pod (kwok pods have no addresses that reach a process).
//!
//! The pod IP is this machine's own non-loopback address (the API server refuses loopback
//! addresses in EndpointSlices, and a listener bound to loopback would be unreachable from a real
//! kubelet and from Services): probes, Service ports and clients all dial it.
//!
//! Then: liveness answers 200 within the window before the kubelet would restart the container,
//! readiness answers 200; every declared container port and every Service port's target accepts
//! connections; a client authenticates at the comet (over the Service's `tcp` port, and over
//! `wss` when rendered) and receives a push sent to logic with the push token; the preStop hook
//! (when one is rendered) reaches a route or a command that exists; SIGTERM ends every process
//! with success within `terminationGracePeriodSeconds`.
//!
//! Fixed container ports (3100-3120): one replica per tier, the topologies one after another.
//! Needs root (mount namespaces, overlayfs), the control plane (`bash scripts/k8s.sh start`), and
//! for two topologies Redis and Kafka (`bash scripts/services.sh start`); without them the tests
//! fail, never skip.
//!
//! One file past the house's 800 lines because this test was given one file; its two halves
//! would split into `operator_pods/kubelet.rs` (`Cluster`, `Pod`: starting a rendered pod) and
//! `operator_pods/client.rs` (tokens, the push, WSS).

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use goim_api::frame::decode_message;
use goim_api::{Frame, Op};
use goim_operator::PushCluster;
use goim_operator::crd::{AuthMode, JwtAlgorithm, Queue, SecretKeyRef, Store};
use goim_operator::render::{self, Children, Owner, secret};
use goim_test_support::Client as CometClient;
use goim_test_support::json_token;
use k8s_openapi::ByteString;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, HTTPGetAction, LifecycleHandler, Namespace, ObjectReference, PodSpec, Probe,
    Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Resource, ResourceExt};
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::process::{Scratch, binary};
use tokio_tungstenite::tungstenite::Message;

/// Fixed ports: one topology at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a pod may take to become ready (the Deployment's progress deadline is 600 s).
const READY_LIMIT: Duration = Duration::from_secs(90);
/// How long a push may take to arrive (with Kafka, job's consumer group may still be joining).
const PUSH_LIMIT: Duration = Duration::from_secs(30);
const OP_PUSH: i32 = 1000;
const TLS_SERVER_NAME: &str = "localhost";
const RS256_PUBLIC: &str = include_str!("../logic/tests/keys/rs256.pub.pem");
const RS256_PRIVATE: &str = include_str!("../logic/tests/keys/rs256.key.pem");

#[tokio::test]
#[ignore = "needs root and the control plane (scripts/k8s.sh start)"]
async fn the_minimal_examples_pods_run_answer_their_probes_and_deliver_a_push() {
    // Unchanged: memory store, direct queue, HS256 and the push token from the generated Secret.
    run(example("minimal"), Vec::new(), None).await;
}

#[tokio::test]
#[ignore = "needs root, redis and the control plane (scripts/services.sh start, scripts/k8s.sh start)"]
async fn a_redis_store_clusters_pods_run_answer_their_probes_and_deliver_a_push() {
    let mut pc = PushCluster::new("chat", Default::default());
    pc.spec.topology.store = Store::Redis;
    pc.spec.topology.queue = Queue::Direct;
    pc.spec.topology.redis.url = service("GOIM_TEST_REDIS_URL");
    pc.spec.auth.mode = AuthMode::Json;
    run(pc, Vec::new(), None).await;
}

#[tokio::test]
#[ignore = "needs root, redis, kafka and the control plane (scripts/services.sh start, scripts/k8s.sh start)"]
async fn the_production_examples_pods_run_answer_their_probes_and_deliver_a_push() {
    // What must point at this machine, changed in the example's YAML: the brokers (the
    // example's kafka-N.kafka do not exist here) and, as the broker of scripts/services.sh
    // listens PLAINTEXT without SASL, no `tls` and `sasl`; and a topic and consumer group of this
    // run's own, so neither other tests on the shared broker nor earlier runs share its pushes.
    // The Redis URL comes from the goim-redis Secret the example references, created below.
    let tag = std::process::id();
    let (brokers, topic) = (service("GOIM_TEST_KAFKA_BROKERS"), format!("goim-push-topic-pods-{tag}"));
    let pc = example_with("production", |spec| {
        let kafka = &mut spec["topology"]["kafka"];
        kafka["brokers"] = serde_yaml::to_value([&brokers]).unwrap();
        kafka["topic"] = topic.clone().into();
        kafka["group"] = format!("goim-push-group-job-pods-{tag}").into();
        let kafka = kafka.as_mapping_mut().expect("spec.topology.kafka");
        kafka.remove("tls");
        kafka.remove("sasl");
    });
    let cert = rcgen::generate_simple_self_signed(vec![TLS_SERVER_NAME.to_owned()]).unwrap();
    let secrets = vec![
        opaque("goim-redis", &[("url", &service("GOIM_TEST_REDIS_URL"))]),
        opaque("goim-jwt", &[("public.pem", RS256_PUBLIC)]),
        opaque("goim-push", &[("token", &format!("push-{tag}"))]),
        tls("comet-tls", &cert.cert.pem(), &cert.signing_key.serialize_pem()),
    ];
    let outcome =
        std::panic::AssertUnwindSafe(run(pc, secrets, Some(cert.cert.der().to_vec()))).catch_unwind().await;
    delete_topic(&brokers, &topic).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn example(name: &str) -> PushCluster {
    example_with(name, |_| {})
}

/// `examples/pushcluster-<name>.yaml`, with `adapt` applied to its `spec` before it is read.
fn example_with(name: &str, adapt: impl FnOnce(&mut serde_yaml::Value)) -> PushCluster {
    let path = format!("{}/examples/pushcluster-{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    adapt(&mut yaml["spec"]);
    serde_yaml::from_value(yaml).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn service(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run `bash scripts/services.sh start` and `eval \"$(bash scripts/services.sh env)\"`")
    })
}

fn opaque(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret {
        string_data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    };
    s.metadata.name = Some(name.into());
    s
}

fn tls(name: &str, cert: &str, key: &str) -> Secret {
    let mut s = opaque(name, &[("tls.crt", cert), ("tls.key", key)]);
    s.type_ = Some("kubernetes.io/tls".into());
    s
}

/// Runs one topology in a fresh namespace, deleted afterwards (also when a check panics).
async fn run(mut pc: PushCluster, user_secrets: Vec<Secret>, tls_root: Option<Vec<u8>>) {
    let _one = ONE_AT_A_TIME.lock().await;
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
    assert_eq!(
        uid,
        Some("0"),
        "needs root: the pods run in mount namespaces with overlayfs (unshare, mount)"
    );
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is unset: run `bash scripts/k8s.sh start` and `eval \"$(bash scripts/k8s.sh env)\"`"
    );
    let client = kube::Client::try_default().await.expect("a client from KUBECONFIG");
    let ns = format!("pods-{}-{}", pc.name_any(), std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    namespaces.create(&PostParams::default(), &namespace).await.expect("create the namespace");
    let outcome = std::panic::AssertUnwindSafe(async {
        // Render as the operator would in this namespace. The PushCluster itself is not created
        // (no CRD needed), so its uid is made up and the children are applied without owner
        // references: the garbage collector would delete children of an owner that does not exist.
        pc.metadata.namespace = Some(ns.clone());
        pc.metadata.uid = Some("00000000-0000-4000-8000-00000000c0de".into());
        let owner = Owner::of(&pc).expect("owner");
        let children = render::children(&pc).expect("render");
        let cluster = Cluster::set_up(client.clone(), &ns, &children, &owner, user_secrets).await;
        check(&cluster, &pc, &owner, &children, tls_root).await;
    })
    .catch_unwind()
    .await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn check(
    cluster: &Cluster,
    pc: &PushCluster,
    owner: &Owner,
    children: &Children,
    tls_root: Option<Vec<u8>>,
) {
    let mut pods = Vec::new();
    for d in &children.deployments {
        pods.push(Pod::start(cluster, d).await);
    }
    for pod in &mut pods {
        pod.pass_probes(cluster).await;
        eprintln!("{}: live and ready {:?} after its start", pod.name, pod.started.elapsed());
    }
    for pod in &mut pods {
        pod.serves_its_ports(cluster).await;
    }
    services_reach_their_pods(cluster, &pods).await;
    push_reaches_a_client(cluster, pc, owner, &pods, tls_root).await;
    eprintln!("{}: a client authenticated and received a push", cluster.ns);
    // As on a rollout: the preStop hook, then SIGTERM, then at most the grace period.
    for pod in &mut pods {
        pod.pre_stop(cluster).await;
        pod.terminate().await;
        eprintln!("{}: exited with success on SIGTERM", pod.name);
    }
}

/// The namespace as a kubelet sees it: the API server, the objects pods reference, the pod IP.
struct Cluster {
    client: kube::Client,
    ns: String,
    /// The API server as a pod reaches it (`KUBERNETES_SERVICE_HOST`/`_PORT`): the kubeconfig's.
    api: (String, u16),
    pod_ip: IpAddr,
    config_maps: BTreeMap<String, ConfigMap>,
    secrets: BTreeMap<String, Secret>,
    /// As created: with their cluster IPs.
    services: Vec<Service>,
    /// `ca.crt` of the `kube-root-ca.crt` ConfigMap, what the kubelet projects next to the token.
    root_ca: String,
    /// Staged files and process logs; removed after the processes (declared first, dropped last).
    dir: Scratch,
}

impl Cluster {
    async fn set_up(
        client: kube::Client,
        ns: &str,
        children: &Children,
        owner: &Owner,
        user_secrets: Vec<Secret>,
    ) -> Cluster {
        for sa in &children.service_accounts {
            create(&client, ns, sa).await;
        }
        for r in &children.roles {
            create(&client, ns, r).await;
        }
        for rb in &children.role_bindings {
            create(&client, ns, rb).await;
        }
        let mut services = Vec::new();
        for s in &children.services {
            services.push(create(&client, ns, s).await);
        }
        let mut secrets = BTreeMap::new();
        for s in user_secrets.iter().chain([&secret::generated(owner)]) {
            let created = create(&client, ns, s).await;
            secrets.insert(created.name_any(), created);
        }
        let config = kube::Config::infer().await.expect("kubeconfig");
        let url = &config.cluster_url;
        let api = (url.host().expect("API server host").to_owned(), url.port_u16().unwrap_or(443));
        let cluster = Cluster {
            client: client.clone(),
            ns: ns.to_owned(),
            api,
            pod_ip: pod_ip(),
            config_maps: children.config_maps.iter().map(|c| (c.name_any(), c.clone())).collect(),
            secrets,
            services,
            root_ca: root_ca(&client, ns).await,
            dir: Scratch::new("operator-pods"),
        };
        cluster.publish_endpoints(children).await;
        cluster
    }

    /// The EndpointSlices the EndpointSlice controller would write once the pods are ready
    /// (discovery reads the comet headless Service's): per Service, the pod it selects, by name
    /// and IP, with the Service's ports resolved against the pod's container.
    async fn publish_endpoints(&self, children: &Children) {
        for svc in &self.services {
            for d in children.deployments.iter().filter(|d| selects(svc, d)) {
                let container = &pod_spec(d).containers[0];
                let ports = svc.spec.as_ref().unwrap().ports.iter().flatten().map(|p| EndpointPort {
                    name: p.name.clone(),
                    port: Some(
                        target_port(container, p.target_port.as_ref().unwrap_or(&IntOrString::Int(p.port)))
                            .into(),
                    ),
                    protocol: p.protocol.clone(),
                    ..Default::default()
                });
                let mut slice = EndpointSlice {
                    address_type: if self.pod_ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
                    endpoints: Some(vec![Endpoint {
                        addresses: vec![self.pod_ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            serving: Some(true),
                            terminating: Some(false),
                        }),
                        target_ref: Some(ObjectReference {
                            kind: Some("Pod".into()),
                            name: Some(pod_name(d)),
                            namespace: Some(self.ns.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(ports.collect()),
                    ..Default::default()
                };
                slice.metadata.name = Some(format!("{}-{}", svc.name_any(), d.name_any()));
                slice.metadata.labels = Some(BTreeMap::from([
                    ("kubernetes.io/service-name".to_owned(), svc.name_any()),
                    // Not the controller's: it leaves slices of other managers alone.
                    ("endpointslice.kubernetes.io/managed-by".to_owned(), "operator-pods-test".to_owned()),
                ]));
                create(&self.client, &self.ns, &slice).await;
            }
        }
    }

    fn secret_value(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        secret_data(self.secrets.get(name)?).remove(key)
    }
}

/// Creates `o` in `ns` without its owner references (see [`run`]); returns it as stored.
async fn create<K>(client: &kube::Client, ns: &str, o: &K) -> K
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let mut o = o.clone();
    o.meta_mut().owner_references = None;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let created = api.create(&PostParams::default(), &o).await;
    created.unwrap_or_else(|e| panic!("create {} {}: {e}", K::kind(&()), o.name_any()))
}

/// This machine's address on its default route: the pods' IP.
fn pod_ip() -> IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // Connecting a UDP socket sends nothing: it only picks the source address.
    socket.connect("10.255.255.255:9").expect("this machine needs a non-loopback route for the pod IP");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "no non-loopback address for the pod IP: {ip}");
    ip
}

async fn root_ca(client: &kube::Client, ns: &str) -> String {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for _ in 0..150 {
        if let Some(cm) = api.get_opt("kube-root-ca.crt").await.unwrap()
            && let Some(ca) = cm.data.and_then(|mut d| d.remove("ca.crt"))
        {
            return ca;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the kube-root-ca.crt ConfigMap did not appear in {ns} within 30s");
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        s.data.iter().flatten().map(|(k, ByteString(v))| (k.clone(), v.clone())).collect();
    out.extend(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
    out
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().expect("a pod template")
}

fn pod_name(d: &Deployment) -> String {
    format!("{}-5d9c8b7f6-pod0", d.name_any())
}

fn template_labels(d: &Deployment) -> BTreeMap<String, String> {
    let template = d.spec.template.metadata.as_ref();
    template.and_then(|m| m.labels.clone()).unwrap_or_default()
}

fn selects(svc: &Service, d: &Deployment) -> bool {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let labels = template_labels(d);
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A port as a probe, hook or Service names it: a number, or a container port's name.
fn target_port(c: &Container, port: &IntOrString) -> u16 {
    match port {
        IntOrString::Int(n) => {
            u16::try_from(*n).unwrap_or_else(|_| panic!("{}: port {n} out of range", c.name))
        }
        IntOrString::String(name) => {
            let p = c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name.as_str()));
            let p = p.unwrap_or_else(|| panic!("{}: no container port named {name:?}", c.name));
            u16::try_from(p.container_port).unwrap()
        }
    }
}

/// One rendered pod, running as a process of its tier binary in a mount namespace of its own.
struct Pod {
    name: String,
    /// The pod template's labels (what Services select).
    labels: BTreeMap<String, String>,
    container: Container,
    grace: Duration,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    started: Instant,
}

impl Pod {
    async fn start(cluster: &Cluster, d: &Deployment) -> Pod {
        let spec = pod_spec(d);
        let name = pod_name(d);
        assert!(
            spec.init_containers.as_ref().is_none_or(Vec::is_empty),
            "{name}: init containers: extend this test"
        );
        assert_eq!(spec.containers.len(), 1, "{name}: one container per pod (extend this test for more)");
        let container = spec.containers[0].clone();
        let command = container.command.clone().unwrap_or_default();
        let program = match command.first().map(String::as_str) {
            Some(b @ ("goim-comet" | "goim-logic" | "goim-job")) => binary(b),
            other => panic!("{name}: command[0] is {other:?}, not one of goim-comet, goim-logic, goim-job"),
        };
        for p in container.ports.iter().flatten() {
            let port = u16::try_from(p.container_port).unwrap();
            assert!(
                TcpListener::bind(("0.0.0.0", port)).is_ok(),
                "{name}: port {port} is taken on this machine (another test or a leftover process?)"
            );
        }
        let env = environment(cluster, spec, &container, &name);
        let argv: Vec<String> =
            command[1..].iter().chain(container.args.iter().flatten()).map(|a| expand(a, &env)).collect();

        let dir = cluster.dir.0.join(&name);
        let mut files = volumes(cluster, spec, &container, &name);
        if spec.automount_service_account_token.unwrap_or(true) {
            let account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
            let token = token(cluster, &account).await;
            files.push((
                "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                vec![
                    ("token".into(), token.into_bytes()),
                    ("ca.crt".into(), cluster.root_ca.clone().into_bytes()),
                    ("namespace".into(), cluster.ns.clone().into_bytes()),
                ],
            ));
        }
        let script = setup_script(cluster, &dir, &name, &files, &env, container.working_dir.as_deref());
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let log = dir.join("log");
        let out = std::fs::File::create(&log).unwrap();
        // `sh -c SCRIPT PROGRAM ARGS...`: the script ends in `exec env -i ... "$0" "$@"`, so the
        // arguments reach the binary exactly as rendered, and the process keeps the PID we signal.
        let child = Command::new("unshare")
            .args(["--mount", "--uts", "--propagation", "private", "sh", "-c", &script, program])
            .args(&argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: unshare: {e}"));
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).try_into().unwrap());
        Pod {
            name,
            labels: template_labels(d),
            container,
            grace,
            env,
            log,
            child: Some(child),
            started: Instant::now(),
        }
    }

    fn alive(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{} exited: {status}", self.name);
        }
    }

    /// A startup probe first (when rendered); liveness within the window before the kubelet
    /// restarts the container (probes from `initialDelaySeconds`, every `periodSeconds`, a
    /// restart at the `failureThreshold`-th consecutive failure); then readiness.
    async fn pass_probes(&mut self, cluster: &Cluster) {
        let mut since = self.started;
        if let Some(p) = self.container.startup_probe.clone() {
            self.poll("startup", &p, cluster, since + restart_window(&p)).await;
            since = Instant::now();
        }
        let live = self
            .container
            .liveness_probe
            .clone()
            .unwrap_or_else(|| panic!("{}: no livenessProbe", self.name));
        self.poll("liveness", &live, cluster, since + restart_window(&live)).await;
        let ready = self
            .container
            .readiness_probe
            .clone()
            .unwrap_or_else(|| panic!("{}: no readinessProbe", self.name));
        self.poll("readiness", &ready, cluster, Instant::now() + READY_LIMIT).await;
    }

    async fn poll(&mut self, what: &str, probe: &Probe, cluster: &Cluster, deadline: Instant) {
        loop {
            self.alive();
            let outcome = self.probe(probe, cluster).await;
            match outcome {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("{}: {what} probe: {e}", self.name),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn probe(&self, p: &Probe, cluster: &Cluster) -> Result<(), String> {
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).try_into().unwrap());
        if let Some(get) = &p.http_get {
            let status = self.http_get(get, cluster, timeout).await?;
            return if status == 200 { Ok(()) } else { Err(format!("answered {status}, not 200")) };
        }
        if let Some(tcp) = &p.tcp_socket {
            let addr = SocketAddr::new(cluster.pod_ip, target_port(&self.container, &tcp.port));
            let connect = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await;
            return connect
                .map_err(|_| "timed out".to_owned())?
                .map(drop)
                .map_err(|e| format!("{addr}: {e}"));
        }
        if let Some(exec) = &p.exec {
            return self.exec(exec.command.as_deref().unwrap_or_default(), timeout).await;
        }
        panic!("{}: a probe kind this test does not know (grpc?): extend it", self.name)
    }

    async fn http_get(
        &self,
        get: &HTTPGetAction,
        cluster: &Cluster,
        timeout: Duration,
    ) -> Result<u16, String> {
        let scheme = get.scheme.as_deref().unwrap_or("HTTP");
        assert_eq!(scheme, "HTTP", "{}: {scheme} probes and hooks: extend this test", self.name);
        let host = get.host.clone().unwrap_or_else(|| cluster.pod_ip.to_string());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let port = target_port(&self.container, &get.port);
        let url = format!("http://{host}:{port}{}", get.path.as_deref().unwrap_or("/"));
        let mut req = reqwest::Client::new().get(&url).timeout(timeout);
        for h in get.http_headers.iter().flatten() {
            req = req.header(&h.name, &h.value);
        }
        req.send().await.map(|r| r.status().as_u16()).map_err(|e| format!("GET {url}: {e}"))
    }

    /// Runs `command` inside the pod (its mount and UTS namespaces, its environment), as the
    /// kubelet runs exec probes and hooks; a tier binary's name runs that binary.
    async fn exec(&self, command: &[String], timeout: Duration) -> Result<(), String> {
        let (first, rest) =
            command.split_first().ok_or_else(|| format!("{}: an empty exec command", self.name))?;
        let program = match first.as_str() {
            b @ ("goim-comet" | "goim-logic" | "goim-job") => binary(b).to_owned(),
            other => other.to_owned(),
        };
        let pid = self.child.as_ref().expect("running").id().to_string();
        let mut child = Command::new("nsenter")
            .args(["--target", &pid, "--mount", "--uts", "--"])
            .arg(&program)
            .args(rest)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("nsenter {program}: {e}"))?;
        match exited(&mut child, timeout).await {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("{command:?} exited {status}")),
            None => Err(format!("{command:?} did not finish within {timeout:?}")),
        }
    }

    /// Every declared container port accepts connections at the pod IP.
    async fn serves_its_ports(&mut self, cluster: &Cluster) {
        self.alive();
        for p in self.container.ports.iter().flatten() {
            let addr = SocketAddr::new(cluster.pod_ip, u16::try_from(p.container_port).unwrap());
            if let Err(e) = tokio::net::TcpStream::connect(addr).await {
                panic!("{}: container port {:?} ({addr}) refuses connections: {e}", self.name, p.name);
            }
        }
    }

    /// The preStop hook, when rendered: an httpGet must reach a route (not 404, and not 405: the
    /// kubelet sends GET), an exec command must exist and succeed; both within the grace period.
    async fn pre_stop(&mut self, cluster: &Cluster) {
        let Some(hook) = self.container.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
            return;
        };
        self.alive();
        let LifecycleHandler { exec, http_get, sleep, tcp_socket } = hook;
        if let Some(get) = http_get {
            let status = self
                .http_get(&get, cluster, self.grace)
                .await
                .unwrap_or_else(|e| panic!("{}: preStop: {e}", self.name));
            assert!(
                status != 404 && status != 405,
                "{}: preStop GET {:?} answered {status}",
                self.name,
                get.path
            );
        } else if let Some(exec) = exec {
            let command = exec.command.unwrap_or_default();
            self.exec(&command, self.grace).await.unwrap_or_else(|e| panic!("{}: preStop: {e}", self.name));
        } else if tcp_socket.is_some() || sleep.is_none() {
            panic!("{}: a preStop hook kind this test does not know: extend it", self.name);
        }
    }

    /// SIGTERM; the process must exit with success within the grace period.
    async fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let signal = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(signal.success(), "kill -TERM {}", self.name);
        match exited(&mut child, self.grace).await {
            Some(status) if status.success() => {}
            outcome => {
                self.show_log();
                panic!(
                    "{}: SIGTERM, then {outcome:?} within {:?} (None: still running)",
                    self.name, self.grace
                );
            }
        }
    }

    fn show_log(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        eprintln!("----- {} (stdout and stderr) -----\n{text}----- end of {} -----", self.name, self.name);
    }
}

/// Killed on drop (a failed check); its output is printed when the test is failing.
impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.show_log();
        }
    }
}

/// The kubelet's restart window of a liveness (or startup) probe.
fn restart_window(p: &Probe) -> Duration {
    let secs = |v: Option<i32>, default: i32| u64::try_from(v.unwrap_or(default)).unwrap();
    let (delay, period, failures, timeout) = (
        secs(p.initial_delay_seconds, 0),
        secs(p.period_seconds, 10),
        secs(p.failure_threshold, 3),
        secs(p.timeout_seconds, 1),
    );
    Duration::from_secs(delay + period * failures.saturating_sub(1) + timeout)
}

/// Waits up to `limit` for `child` to exit; kills it and answers `None` when it does not.
async fn exited(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The container's environment as the kubelet builds it: the service variables first, then
/// `env` in order (each may refer to the ones before as `$(NAME)`).
fn environment(cluster: &Cluster, spec: &PodSpec, c: &Container, pod: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()),
        ("HOSTNAME".to_owned(), pod.to_owned()),
        // An empty home: a kubeconfig there would stand in for the ServiceAccount.
        ("HOME".to_owned(), cluster.dir.0.join(pod).join("home").display().to_string()),
    ];
    let (host, port) = &cluster.api;
    let api = format!("tcp://{host}:{port}");
    env.extend([
        ("KUBERNETES_SERVICE_HOST".to_owned(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.to_string()),
        ("KUBERNETES_PORT".to_owned(), api.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), api),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".to_owned()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.clone()),
    ]);
    if spec.enable_service_links.unwrap_or(true) {
        env.extend(service_links(&cluster.services));
    }
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    // Neither the CRD (`spec.<tier>.env` is a list of EnvVars) nor the renderer writes envFrom.
    assert!(c.env_from.as_ref().is_none_or(Vec::is_empty), "{pod}: envFrom: extend this test");
    for var in c.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(expand(var.value.as_deref().unwrap_or_default(), &env)),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    Some(field(cluster, spec, pod, &f.field_path))
                } else if let Some(r) = &from.secret_key_ref {
                    match cluster.secret_value(&r.name, &r.key) {
                        Some(v) => Some(String::from_utf8(v).unwrap()),
                        None if r.optional == Some(true) => None,
                        None => panic!(
                            "{pod}: env {} refers to Secret key {}/{} which does not exist",
                            var.name, r.name, r.key
                        ),
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    let v = cluster
                        .config_maps
                        .get(&r.name)
                        .and_then(|cm| cm.data.as_ref()?.get(&r.key).cloned());
                    match v {
                        Some(v) => Some(v),
                        None if r.optional == Some(true) => None,
                        None => panic!(
                            "{pod}: env {} refers to ConfigMap key {}/{} which does not exist",
                            var.name, r.name, r.key
                        ),
                    }
                } else {
                    panic!("{pod}: env {}: a valueFrom this test does not know: extend it", var.name);
                }
            }
        };
        if let Some(v) = value {
            set(&mut env, var.name.clone(), v);
        }
    }
    env
}

/// The downward API.
fn field(cluster: &Cluster, spec: &PodSpec, pod: &str, path: &str) -> String {
    match path {
        "metadata.name" => pod.to_owned(),
        "metadata.namespace" => cluster.ns.clone(),
        "status.podIP" | "status.hostIP" => cluster.pod_ip.to_string(),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_else(|| "default".into()),
        other => panic!("{pod}: fieldRef {other}: extend this test"),
    }
}

/// The docker-link style variables the kubelet sets for every Service with a cluster IP.
fn service_links(services: &[Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for svc in services {
        let spec = svc.spec.as_ref().unwrap();
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else {
            continue;
        };
        let name = svc.name_any().to_uppercase().replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.push((format!("{name}_SERVICE_HOST"), ip.to_owned()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        let url = |p: &k8s_openapi::api::core::v1::ServicePort| {
            format!("{}://{ip}:{}", p.protocol.as_deref().unwrap_or("TCP").to_lowercase(), p.port)
        };
        env.push((format!("{name}_PORT"), url(first)));
        for p in &ports {
            if let Some(port_name) = &p.name {
                env.push((
                    format!("{name}_SERVICE_PORT_{}", port_name.to_uppercase().replace('-', "_")),
                    p.port.to_string(),
                ));
            }
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_uppercase();
            let key = format!("{name}_PORT_{}_{proto}", p.port);
            env.push((format!("{key}_PROTO"), proto.to_lowercase()));
            env.push((format!("{key}_PORT"), p.port.to_string()));
            env.push((format!("{key}_ADDR"), ip.to_owned()));
            env.push((key, url(p)));
        }
    }
    env
}

/// The kubelet's `$(NAME)` expansion: defined names expand, `$$` is a literal `$`, anything else
/// stays as written.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=close];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Files of one mount: (mount path, [(path inside it, contents)]).
type Mount = (String, Vec<(String, Vec<u8>)>);

/// The ConfigMap and Secret volumes of the container's mounts, with their files.
fn volumes(cluster: &Cluster, spec: &PodSpec, c: &Container, pod: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        assert!(m.sub_path.is_none() && m.sub_path_expr.is_none(), "{pod}: subPath mounts: extend this test");
        assert!(m.mount_path.starts_with('/'), "{pod}: mount path {} is not absolute", m.mount_path);
        let v = spec.volumes.iter().flatten().find(|v| v.name == m.name);
        let v = v.unwrap_or_else(|| panic!("{pod}: volumeMount {} names no volume", m.name));
        let (data, items, kind, name) = if let Some(cm) = &v.config_map {
            let found = cluster.config_maps.get(&cm.name);
            let data = found.map(|cm| {
                cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect()
            });
            (data, cm.items.clone(), "ConfigMap", cm.name.clone())
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            (cluster.secrets.get(&name).map(secret_data), s.items.clone(), "Secret", name)
        } else {
            panic!("{pod}: volume {}: a volume kind this test does not know: extend it", v.name);
        };
        let data: BTreeMap<String, Vec<u8>> = data.unwrap_or_else(|| {
            panic!("{pod}: volume {} refers to {kind} {name}, which does not exist", v.name)
        });
        let files = match items {
            None => data.into_iter().collect(),
            Some(items) => items
                .iter()
                .map(|i| {
                    let value = data
                        .get(&i.key)
                        .unwrap_or_else(|| panic!("{pod}: {kind} {name} has no key {}", i.key));
                    (i.path.clone(), value.clone())
                })
                .collect(),
        };
        mounts.push((m.mount_path.clone(), files));
    }
    mounts
}

/// The shell that prepares the pod's filesystem in its mount namespace, then execs the binary.
fn setup_script(
    cluster: &Cluster,
    dir: &Path,
    pod: &str,
    mounts: &[Mount],
    env: &[(String, String)],
    working_dir: Option<&str>,
) -> String {
    let mut mounts = mounts.to_vec();
    // Parents first: a Secret mounted inside the config directory lands in it.
    mounts.sort_by_key(|(path, _)| path.len());
    // Overlays over the deepest existing directory of every mount path (and /etc for the hosts
    // file), so they can be created there without touching the host; /var/run resolves to /run.
    let mut lower: Vec<PathBuf> = vec![PathBuf::from("/etc")];
    for (path, _) in &mounts {
        let mut p = Path::new(path);
        while !p.is_dir() {
            p = p.parent().unwrap();
        }
        lower.push(std::fs::canonicalize(p).unwrap());
    }
    lower.sort();
    lower.dedup();
    let mut script = String::from("set -eu\n");
    for (i, l) in lower.iter().enumerate() {
        let (upper, work) = (dir.join(format!("overlay/{i}/upper")), dir.join(format!("overlay/{i}/work")));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let options =
            format!("lowerdir={},upperdir={},workdir={}", l.display(), upper.display(), work.display());
        script +=
            &format!("mount -t overlay overlay -o {} {}\n", quote(&options), quote(&l.display().to_string()));
    }
    script += &format!("hostname {}\n", quote(pod));
    for (i, (path, files)) in mounts.iter().enumerate() {
        let stage = dir.join(format!("volume/{i}"));
        for (file, contents) in files {
            let target = stage.join(file);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, contents).unwrap();
        }
        std::fs::create_dir_all(&stage).unwrap();
        // A volume of its own replaces what the image has at its path, as in a pod.
        let (path, stage) = (quote(path), quote(&stage.display().to_string()));
        script +=
            &format!("mkdir -p {path}\nmount -t tmpfs -o mode=0755 tmpfs {path}\ncp -R {stage}/. {path}/\n");
    }
    // ConfigMap, Secret and token volumes are always read-only in a pod.
    for (path, _) in &mounts {
        script += &format!("mount -o remount,ro {}\n", quote(path));
    }
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, hosts_file(cluster, pod)).unwrap();
    script += &format!("cp {} /etc/hosts\n", quote(&hosts.display().to_string()));
    if let Some(wd) = working_dir {
        script += &format!("mkdir -p {0}\ncd {0}\n", quote(wd));
    }
    // The environment through `env -i`, not the shell's: sh drops variables whose names are no
    // shell identifiers (`GOIM_KAFKA__PROPERTIES__SASL.PASSWORD`), which the kubelet passes on.
    let env: Vec<String> = env.iter().map(|(k, v)| quote(&format!("{k}={v}"))).collect();
    script + &format!("exec env -i {} \"$0\" \"$@\"\n", env.join(" "))
}

/// The host's hosts file, the pod's own name, and every Service's DNS names (cluster DNS): all
/// at the pod IP, where the one pod of every tier runs.
fn hosts_file(cluster: &Cluster, pod: &str) -> String {
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap();
    let (ip, ns) = (cluster.pod_ip, &cluster.ns);
    text += &format!("\n# operator_pods: the pod and the Services of {ns}\n{ip}\t{pod}\n");
    for s in &cluster.services {
        let s = s.name_any();
        text += &format!("{ip}\t{s}.{ns}.svc.cluster.local {s}.{ns}.svc {s}.{ns} {s}\n");
    }
    text
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A token of `account`, as the kubelet requests it for the projected ServiceAccount volume.
async fn token(cluster: &Cluster, account: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), &cluster.ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let answer = api.create_token_request(account, &PostParams::default(), &request).await;
    let answer = answer.unwrap_or_else(|e| panic!("a token for ServiceAccount {account}: {e}"));
    answer.status.and_then(|s| s.token).expect("a token in the TokenRequest status")
}

/// Every Service selects one of the pods, and each of its ports reaches a port that pod serves.
async fn services_reach_their_pods(cluster: &Cluster, pods: &[Pod]) {
    for svc in &cluster.services {
        let pod = pod_behind(svc, pods);
        for p in svc.spec.as_ref().unwrap().ports.iter().flatten() {
            let addr = SocketAddr::new(
                cluster.pod_ip,
                service_target(svc, p.name.as_deref().unwrap_or_default(), pod),
            );
            if let Err(e) = tokio::net::TcpStream::connect(addr).await {
                panic!(
                    "Service {} port {:?}: target {addr} refuses connections: {e}",
                    svc.name_any(),
                    p.name
                );
            }
        }
    }
}

/// The pod a Service selects.
fn pod_behind<'a>(svc: &Service, pods: &'a [Pod]) -> &'a Pod {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let selected =
        |p: &&Pod| !selector.is_empty() && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v));
    let pod = pods.iter().find(selected);
    pod.unwrap_or_else(|| panic!("Service {} selects none of the pods ({selector:?})", svc.name_any()))
}

/// The container port behind the Service port named `name`.
fn service_target(svc: &Service, name: &str, pod: &Pod) -> u16 {
    let ports = svc.spec.as_ref().unwrap().ports.iter().flatten();
    let found = ports.clone().find(|p| p.name.as_deref().unwrap_or_default() == name);
    let p = found.unwrap_or_else(|| panic!("Service {} has no port named {name:?}", svc.name_any()));
    target_port(&pod.container, p.target_port.as_ref().unwrap_or(&IntOrString::Int(p.port)))
}

fn service_named<'a>(cluster: &'a Cluster, name: &str) -> &'a Service {
    let found = cluster.services.iter().find(|s| s.name_any() == name);
    found.unwrap_or_else(|| panic!("no Service {name} rendered"))
}

/// A client authenticates at the comet through the client Service's `tcp` port (so comet
/// reaches logic at its rendered address), and a push sent to logic through its Service's `http`
/// port with the push token reaches it (logic or job finds the comet through discovery); over
/// the `wss` port too when the comet serves one, with the certificate of the TLS Secret.
async fn push_reaches_a_client(
    cluster: &Cluster,
    pc: &PushCluster,
    owner: &Owner,
    pods: &[Pod],
    tls_root: Option<Vec<u8>>,
) {
    let comet_svc = service_named(cluster, &owner.names.comet_service());
    let logic_svc = service_named(cluster, &owner.names.logic_service());
    let comet = pod_behind(comet_svc, pods);
    let tcp = SocketAddr::new(cluster.pod_ip, service_target(comet_svc, "tcp", comet));
    let http =
        SocketAddr::new(cluster.pod_ip, service_target(logic_svc, "http", pod_behind(logic_svc, pods)));
    // A user of this run and topology alone (the Redis store is shared with other tests).
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let mid = i64::from(std::process::id()) * 100 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (key, room) = (format!("pods-{mid}"), format!("live://pods-{mid}"));

    let mut client = CometClient::tcp(tcp).await.expect("connect to the comet's tcp Service port");
    let reply = client.auth(&client_token(cluster, pc, owner, mid, &key, &room)).await.unwrap();
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.op, Op::AuthReply.code(), "auth at the comet refused: {body}");
    let url = format!("http://{http}/goim/push/mids?operation={OP_PUSH}&mids={mid}");
    let r = support::http(
        reqwest::Method::POST,
        url,
        "through the rendered cluster",
        Some(&push_token(cluster, pc, owner)),
    )
    .await;
    assert_eq!((r.status, &r.body["code"]), (200, &Value::from(0)), "push: {}", r.raw);
    let got = client.recv_op(OP_PUSH, PUSH_LIMIT).await.expect("the push reaches the client");
    assert_eq!(&got.body[..], b"through the rendered cluster");
    drop(client);

    let wss = comet.container.ports.iter().flatten().any(|p| p.name.as_deref() == Some("wss"));
    assert_eq!(wss, tls_root.is_some(), "a wss port exactly when the topology has a TLS Secret");
    if let Some(root) = tls_root {
        let addr = SocketAddr::new(cluster.pod_ip, service_target(comet_svc, "wss", comet));
        let token = client_token(cluster, pc, owner, mid, &format!("{key}-wss"), &room);
        wss_auth(addr, root, &token).await;
    }
}

/// A token the rendered logic accepts: goim's JSON token, or a JWT signed with the secret or
/// key behind the Secret the pods read.
fn client_token(
    cluster: &Cluster,
    pc: &PushCluster,
    owner: &Owner,
    mid: i64,
    key: &str,
    room: &str,
) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let auth = &pc.spec.auth;
    if auth.mode == AuthMode::Json {
        return json_token(mid, key, room, &[OP_PUSH]);
    }
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let mut claims = json!({"mid": mid, "key": key, "room": room, "accepts": [OP_PUSH], "exp": exp});
    if !auth.jwt.issuer.is_empty() {
        claims["iss"] = json!(auth.jwt.issuer);
    }
    if !auth.jwt.audience.is_empty() {
        claims["aud"] = json!(auth.jwt.audience);
    }
    let generated = SecretKeyRef { name: owner.names.generated_secret(), key: secret::JWT_SECRET_KEY.into() };
    let r = auth.jwt.key_secret_ref.clone().unwrap_or(generated);
    let value =
        cluster.secret_value(&r.name, &r.key).unwrap_or_else(|| panic!("no Secret key {}/{}", r.name, r.key));
    let (algorithm, signing) = match auth.jwt.algorithm {
        JwtAlgorithm::HS256 => (Algorithm::HS256, EncodingKey::from_secret(&value).unwrap()),
        JwtAlgorithm::RS256 => {
            assert_eq!(value, RS256_PUBLIC.as_bytes(), "the JWT key Secret holds this test's public key");
            (Algorithm::RS256, EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap())
        }
        JwtAlgorithm::ES256 => panic!("ES256: extend this test with a key pair"),
    };
    encode(&Header::new(algorithm), &claims, &signing).unwrap()
}

/// The push API's bearer token: the referenced Secret's, else the generated one.
fn push_token(cluster: &Cluster, pc: &PushCluster, owner: &Owner) -> String {
    let generated = SecretKeyRef { name: owner.names.generated_secret(), key: secret::PUSH_TOKEN_KEY.into() };
    let r = pc.spec.auth.push_token_secret_ref.clone().unwrap_or(generated);
    let value =
        cluster.secret_value(&r.name, &r.key).unwrap_or_else(|| panic!("no Secret key {}/{}", r.name, r.key));
    String::from_utf8(value).unwrap()
}

/// A TLS handshake that trusts only `root`, a WebSocket upgrade at `/sub`, and an accepted auth.
async fn wss_auth(addr: SocketAddr, root: Vec<u8>, token: &str) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(root)).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("wss {addr}: {e}"));
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(TLS_SERVER_NAME).unwrap(), tcp)
        .await
        .expect("a TLS handshake with the certificate of the TLS Secret");
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://{TLS_SERVER_NAME}/sub"), tls).await.unwrap();
    let auth = Frame { ver: 1, op: Op::Auth.code(), seq: 1, body: Bytes::copy_from_slice(token.as_bytes()) };
    ws.send(Message::Binary(auth.to_bytes())).await.unwrap();
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an auth reply over wss");
        let Message::Binary(b) = msg.expect("the wss connection stays open").unwrap() else { continue };
        let f = decode_message(b, usize::MAX / 2).unwrap();
        assert_eq!(f.op, Op::AuthReply.code(), "auth over wss refused: {}", String::from_utf8_lossy(&f.body));
        return;
    }
}

/// Drops this run's topic from the shared broker.
async fn delete_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a Kafka admin client");
    let deleted = admin.delete_topics(&[topic], &AdminOptions::new()).await;
    if !matches!(deleted.as_deref(), Ok([Ok(_)])) {
        eprintln!("could not delete the topic {topic}: {deleted:?}");
    }
}
