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
//! The tests and their steps are here; the harness is in `tests/pods/`: the namespace
//! (`cluster.rs`), a pod's process and its checks (`pod.rs`), what the kubelet builds for a
//! container (`kubelet.rs`: environment, volumes, the mount-namespace script), and the client side
//! (`client.rs`: tokens, the push, WSS). The three topologies stay in one test binary: they share
//! the fixed container ports, which [`pods::ONE_AT_A_TIME`] serialises, and separate binaries may
//! run at once (cargo-nextest runs each test in a process of its own, but takes the same lock
//! only within one binary).

mod pods;
mod support;

use futures_util::FutureExt;
use goim_operator::PushCluster;
use goim_operator::crd::{AuthMode, Queue, Store};
use goim_operator::render::{self, Children, Owner};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};

use pods::client::push_reaches_a_client;
use pods::cluster::{Cluster, services_reach_their_pods};
use pods::pod::Pod;
use pods::{ONE_AT_A_TIME, RS256_PUBLIC, TLS_SERVER_NAME};

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
