//! The test node against the real control plane (scripts/k8s.sh): a pod runs in its own network
//! namespace with a ConfigMap volume, env from the downward API and a ConfigMap, and a projected
//! ServiceAccount volume; its probes drive its Ready condition and the Service's EndpointSlice;
//! deletion runs preStop, delivers SIGTERM and the object goes within the grace period; exits
//! and liveness failures restart the container; the node's shutdown removes what it made.
//! A second node, with kube-proxy, carries Service traffic: a ClusterIP from the host and by
//! name from a pod, the API server from a pod, and an unready endpoint leaving both.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::FutureExt;
use goim_e2e::Config;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, HostPathVolumeSource, Lifecycle, LifecycleHandler, Namespace, Node,
    ObjectFieldSelector, Pod, PodSpec, Probe, Service, ServiceAccount, ServicePort, ServiceSpec,
    TCPSocketAction, Taint, Volume, VolumeMount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const PAGE: &str = "hello from a configmap\n";

async fn client() -> Client {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "goim_e2e=info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is unset: run `bash scripts/k8s.sh start` and `eval \"$(bash scripts/k8s.sh env)\"`"
    );
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the test node needs root (network namespaces, bind mounts)");
    let config = kube::Config::infer().await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), ..Default::default() }
}

/// Polls `f` every 200 ms until it returns Some, or panics with `what` after `secs`.
async fn until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition(p: &Pod, kind: &str) -> bool {
    p.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == kind && c.status == "True")
}

/// A raw HTTP GET from the host (through the bridge); the whole reply.
async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.expect("the host reaches the pod over TCP");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

struct Scene {
    ns: String,
    config: Config,
    /// A host directory mounted in the pods at /srv/e2e-log: what they write, the test reads.
    log: PathBuf,
}

fn web_pod(scene: &Scene) -> Pod {
    let script = "echo \"$GREETING $POD_NAME $POD_IP $PLAIN $(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace) $(cat /proc/sys/kernel/hostname)\" > /srv/e2e-log/env
trap 'echo term >> /srv/e2e-log/events; exit 0' TERM
python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/e2e-web &
wait";
    let env = |name: &str, from: EnvVarSource| EnvVar {
        name: name.into(),
        value_from: Some(from),
        ..Default::default()
    };
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
        ..Default::default()
    };
    let sh = |cmd: &str| Some(ExecAction { command: Some(vec!["/bin/sh".into(), "-c".into(), cmd.into()]) });
    let http = || IntOrString::String("http".into());
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(scene.config.node_name.clone()),
            termination_grace_period_seconds: Some(10),
            containers: vec![Container {
                name: "web".into(),
                image: Some("python:3.11".into()),
                command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
                env: Some(vec![
                    env(
                        "GREETING",
                        EnvVarSource {
                            config_map_key_ref: Some(ConfigMapKeySelector {
                                name: "web".into(),
                                key: "greeting".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                    ),
                    env("POD_NAME", field("metadata.name")),
                    env("POD_IP", field("status.podIP")),
                    EnvVar {
                        name: "PLAIN".into(),
                        value: Some("x-$(POD_NAME)".into()),
                        ..Default::default()
                    },
                ]),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                startup_probe: Some(Probe {
                    tcp_socket: Some(TCPSocketAction { port: http(), host: None }),
                    period_seconds: Some(1),
                    // http.server listens only after socket.getfqdn(): quick, since the pod's
                    // /etc/hosts has its name and its resolv.conf fails at once (docs/e2e.md).
                    failure_threshold: Some(60),
                    ..Default::default()
                }),
                liveness_probe: Some(Probe {
                    http_get: Some(HTTPGetAction {
                        path: Some("/index.html".into()),
                        port: http(),
                        ..Default::default()
                    }),
                    period_seconds: Some(2),
                    ..Default::default()
                }),
                // Ready while the test's file exists.
                readiness_probe: Some(Probe {
                    exec: sh("test -f /srv/e2e-log/ready"),
                    period_seconds: Some(1),
                    failure_threshold: Some(1),
                    ..Default::default()
                }),
                lifecycle: Some(Lifecycle {
                    pre_stop: Some(LifecycleHandler {
                        exec: sh("echo prestop $GREETING >> /srv/e2e-log/events"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                volume_mounts: Some(vec![
                    VolumeMount {
                        name: "page".into(),
                        mount_path: "/srv/e2e-web".into(),
                        read_only: Some(true),
                        ..Default::default()
                    },
                    VolumeMount {
                        name: "log".into(),
                        mount_path: "/srv/e2e-log".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }],
            volumes: Some(vec![
                Volume {
                    name: "page".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: "web".into(),
                        items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                            key: "page".into(),
                            path: "index.html".into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "log".into(),
                    host_path: Some(HostPathVolumeSource {
                        path: scene.log.display().to_string(),
                        type_: None,
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

/// A pod whose container keeps failing: `command` exits, or `liveness` fails.
fn failing_pod(scene: &Scene, name: &str, command: &str, liveness: Option<&str>) -> Pod {
    Pod {
        metadata: meta(name),
        spec: Some(PodSpec {
            node_name: Some(scene.config.node_name.clone()),
            termination_grace_period_seconds: Some(1),
            automount_service_account_token: Some(false),
            containers: vec![Container {
                name: "main".into(),
                image: Some("python:3.11".into()),
                command: Some(vec!["/bin/sh".into(), "-c".into(), command.into()]),
                liveness_probe: liveness.map(|cmd| Probe {
                    exec: Some(ExecAction { command: Some(vec!["/bin/sh".into(), "-c".into(), cmd.into()]) }),
                    period_seconds: Some(1),
                    failure_threshold: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

async fn create_pod(client: &Client, ns: &str, pod: &Pod) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // The ServiceAccount admission refuses pods until the namespace's `default` account exists.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    until(30, "the default ServiceAccount", || async { sas.get_opt("default").await.unwrap() }).await;
    pods.create(&PostParams::default(), pod).await.expect("create pod")
}

/// Returns the UIDs of the pods still running at the end.
async fn scenario(client: &Client, scene: &Scene) -> Vec<String> {
    let ns = scene.ns.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let cm = ConfigMap {
        metadata: meta("web"),
        data: Some(BTreeMap::from([("page".into(), PAGE.into()), ("greeting".into(), "hello-e2e".into())])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns).create(&PostParams::default(), &cm).await.unwrap();
    let svc = Service {
        metadata: meta("web"),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            ports: Some(vec![ServicePort {
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Service>::namespaced(client.clone(), ns).create(&PostParams::default(), &svc).await.unwrap();
    let created = create_pod(client, ns, &web_pod(scene)).await;
    let uid = created.uid().unwrap();

    // Started (the startup probe's TCP connect worked) but not Ready: no ready file yet.
    let pod = until(60, "the web container to start", || async {
        let p = pods.get("web").await.unwrap();
        let started = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.started);
        (started == Some(true)).then_some(p)
    })
    .await;
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(!condition(&pod, "Ready"), "not Ready before the readiness file exists: {status:?}");
    let ip: Ipv4Addr = status.pod_ip.as_deref().expect("a pod IP").parse().unwrap();
    assert!(
        scene.config.pod_cidr.contains(ip),
        "pod IP {ip} is in the node's range {}",
        scene.config.pod_cidr
    );
    assert_ne!(ip, scene.config.pod_cidr.gateway());
    assert_eq!(status.host_ip.as_deref(), Some(scene.config.pod_cidr.gateway().to_string().as_str()));
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let endpoint_ready = || async {
        let list =
            slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await.unwrap();
        list.items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .find(|e| e.addresses.contains(&ip.to_string()))
            .map(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
    };
    let listed = until(30, "the EndpointSlice to list the pod", || async { endpoint_ready().await }).await;
    assert!(!listed, "an unready pod's endpoint is not ready");

    // Ready once the readiness probe sees the file; the EndpointSlice follows.
    std::fs::write(scene.log.join("ready"), b"").unwrap();
    let pod = until(30, "the pod to become Ready", || async {
        let p = pods.get("web").await.unwrap();
        condition(&p, "Ready").then_some(p)
    })
    .await;
    assert!(condition(&pod, "ContainersReady"));
    let cs = &pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready && cs.restart_count == 0, "{cs:?}");
    assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some(), "{cs:?}");
    until(30, "the endpoint to become ready", || async { endpoint_ready().await.filter(|r| *r) }).await;

    // The host reaches the pod's own address; the process serves the ConfigMap's file from its
    // mount, which the host's path does not show.
    let reply = http_get(ip, 8080, "/index.html").await;
    assert!(reply.starts_with("HTTP/1.0 200") && reply.ends_with(PAGE), "{reply}");
    assert!(
        !Path::new("/srv/e2e-web/index.html").exists(),
        "the volume is mounted in the pod's mount namespace only"
    );
    let env = std::fs::read_to_string(scene.log.join("env")).unwrap();
    assert_eq!(
        env.trim(),
        format!("hello-e2e web {ip} x-web {ns} web"),
        "env, projected token volume, hostname"
    );

    // Deletion: preStop, then SIGTERM (the shell's trap), then the object goes, well within
    // the 10 s grace period.
    let t0 = tokio::time::Instant::now();
    pods.delete("web", &DeleteParams { grace_period_seconds: Some(10), ..Default::default() }).await.unwrap();
    until(15, "the pod object to go", || async {
        pods.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(10), "gone after {:?}", t0.elapsed());
    let events = std::fs::read_to_string(scene.log.join("events")).unwrap();
    assert_eq!(events, "prestop hello-e2e\nterm\n");
    let netns = PathBuf::from(format!("/run/netns/e2e-{uid}"));
    until(5, "the pod's netns to go", || async { (!netns.exists()).then_some(()) }).await;

    // Restarts: an exiting container (restartPolicy Always), and one whose liveness probe fails.
    let running = vec![
        create_pod(client, ns, &failing_pod(scene, "exits", "sleep 0.5; exit 3", None)).await.uid().unwrap(),
        create_pod(client, ns, &failing_pod(scene, "unlive", "exec sleep 1000", Some("exit 1")))
            .await
            .uid()
            .unwrap(),
    ];
    for name in ["exits", "unlive"] {
        let cs = until(40, &format!("{name} to restart twice"), || async {
            let p = pods.get(name).await.unwrap();
            let cs = p.status.and_then(|s| s.container_statuses).and_then(|c| c.into_iter().next())?;
            (cs.restart_count >= 2 && cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).is_some())
                .then_some(cs)
        })
        .await;
        let last = cs.last_state.unwrap().terminated.unwrap();
        match name {
            "exits" => assert_eq!(last.exit_code, 3, "{last:?}"),
            _ => assert_eq!(last.signal, Some(15), "liveness kills with SIGTERM: {last:?}"),
        }
    }
    running
}

/// Runs the node in this process until it is registered Ready (and not as a kwok node), and makes
/// the test's namespace.
async fn start(
    client: &Client,
    config: &Config,
    ns: String,
    log: PathBuf,
) -> (CancellationToken, tokio::task::JoinHandle<Result<(), goim_e2e::Error>>, Api<Namespace>, Scene) {
    let shutdown = CancellationToken::new();
    let node = tokio::spawn(goim_e2e::run(config.clone(), client.clone(), shutdown.clone()));
    let nodes: Api<Node> = Api::all(client.clone());
    until(30, "the node to be registered Ready", || async {
        let n = nodes.get_opt(&config.node_name).await.unwrap()?;
        let ready = n.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(
            !n.metadata.annotations.unwrap_or_default().contains_key("kwok.x-k8s.io/node"),
            "not a kwok node"
        );
        ready.then_some(())
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &Namespace { metadata: meta(&ns), ..Default::default() })
        .await
        .unwrap();
    (shutdown, node, namespaces, Scene { ns, config: config.clone(), log })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane (scripts/k8s.sh start) and root"]
async fn pods_run_in_their_namespaces_follow_their_probes_and_stop_gracefully() {
    let client = client().await;
    let id = std::process::id();
    let mut config = Config::new(format!("e2e-node-test-{id}"));
    config.pod_cidr = format!("10.250.{}.0/24", 20 + id % 200).parse().unwrap();
    config.bridge = format!("ge2e{id}");
    let base = std::env::temp_dir().join(format!("goim-e2e-node-test-{id}"));
    config.state_dir = base.join("state");
    config.images = vec!["python=/usr/bin".parse().unwrap()];
    // Only this test's pods (bound by nodeName) land here, never another test's.
    config.taints =
        vec![Taint { key: "goim-rs.io/e2e-test".into(), effect: "NoSchedule".into(), ..Default::default() }];
    config.delete_node_on_exit = true;
    let log = base.join("log");
    std::fs::create_dir_all(&log).unwrap();

    let (shutdown, node, namespaces, scene) = start(&client, &config, format!("e2e-node-{id}"), log).await;
    let (nodes, name, ns): (Api<Node>, _, _) =
        (Api::all(client.clone()), config.node_name.clone(), scene.ns.clone());
    let outcome = std::panic::AssertUnwindSafe(scenario(&client, &scene)).catch_unwind().await;

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), node).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    for dir in ["/srv/e2e-web", "/srv/e2e-log"] {
        let _ = std::fs::remove_dir(dir);
    }
    let running = match outcome {
        Ok(uids) => uids,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    stopped.expect("the node stopped within 30 s").expect("the node task").expect("the node ran");
    let bridge =
        std::process::Command::new("ip").args(["link", "show", "dev", &config.bridge]).output().unwrap();
    assert!(!bridge.status.success(), "the bridge {} is removed at shutdown", config.bridge);
    assert!(nodes.get_opt(&name).await.unwrap().is_none(), "the Node is deleted at shutdown");
    // The two failing pods were running at shutdown: their namespaces and files went with it.
    for uid in running {
        assert!(!Path::new(&format!("/run/netns/e2e-{uid}")).exists(), "netns of {uid} removed at shutdown");
    }
    let state = std::fs::read_dir(config.state_dir.join("pods")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(state, 0, "no pod directories left");
    let _ = std::fs::remove_dir_all(&base);
}

/// The client pod's probe of its names, Services and the API server, written every 300 ms.
const CLIENT: &str = r#"
import json, os, socket, ssl, time, urllib.request
ns = os.environ["NS"]
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
while True:
    out = {"self": socket.gethostbyname(socket.gethostname())}
    for name in ["echo", "echo." + ns, "echo." + ns + ".svc", "echo." + ns + ".svc.cluster.local"]:
        try:
            out[name] = urllib.request.urlopen("http://" + name + "/name", timeout=2).read().decode().strip()
        except Exception as e:
            out[name] = "error: %s" % e
    try:
        url = "https://%s:%s/api" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
        token = open(sa + "/token").read()
        req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
        ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
        out["api"] = urllib.request.urlopen(req, context=ctx, timeout=3).status
    except Exception as e:
        out["api"] = "error: %s" % e
    with open("/srv/e2e-svc/client.tmp", "w") as f:
        json.dump(out, f)
    os.replace("/srv/e2e-svc/client.tmp", "/srv/e2e-svc/client")
    time.sleep(0.3)
"#;

fn log_volume(scene: &Scene) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "log".into(),
            host_path: Some(HostPathVolumeSource { path: scene.log.display().to_string(), type_: None }),
            ..Default::default()
        },
        VolumeMount { name: "log".into(), mount_path: "/srv/e2e-svc".into(), ..Default::default() },
    )
}

/// An HTTP server answering `/name` with its pod's name; Ready while the test's file for it exists.
fn echo_pod(scene: &Scene, name: &str) -> Pod {
    let (log, log_mount) = log_volume(scene);
    let script = "echo $HOSTNAME > /srv/e2e-svc-www/name; exec python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/e2e-svc-www";
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".into(), "echo".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(scene.config.node_name.clone()),
            termination_grace_period_seconds: Some(1),
            automount_service_account_token: Some(false),
            containers: vec![Container {
                name: "echo".into(),
                image: Some("python:3.11".into()),
                command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                readiness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec![
                            "/bin/sh".into(),
                            "-c".into(),
                            "test -f /srv/e2e-svc/ready-$HOSTNAME".into(),
                        ]),
                    }),
                    period_seconds: Some(1),
                    failure_threshold: Some(1),
                    ..Default::default()
                }),
                // An emptyDir over /tmp, mounted first: the sources of the later mounts (this
                // test's state and log directories) are under the host's /tmp.
                volume_mounts: Some(vec![
                    VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
                    VolumeMount {
                        name: "www".into(),
                        mount_path: "/srv/e2e-svc-www".into(),
                        ..Default::default()
                    },
                    log_mount,
                ]),
                ..Default::default()
            }],
            volumes: Some(vec![
                Volume { name: "tmp".into(), empty_dir: Some(Default::default()), ..Default::default() },
                Volume { name: "www".into(), empty_dir: Some(Default::default()), ..Default::default() },
                log,
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

fn client_pod(scene: &Scene) -> Pod {
    let (log, log_mount) = log_volume(scene);
    Pod {
        metadata: meta("client"),
        spec: Some(PodSpec {
            node_name: Some(scene.config.node_name.clone()),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "client".into(),
                image: Some("python:3.11".into()),
                command: Some(vec!["python3".into(), "-c".into(), CLIENT.into()]),
                env: Some(vec![EnvVar {
                    name: "NS".into(),
                    value: Some(scene.ns.clone()),
                    ..Default::default()
                }]),
                volume_mounts: Some(vec![log_mount]),
                ..Default::default()
            }],
            volumes: Some(vec![log]),
            ..Default::default()
        }),
        status: None,
    }
}

fn service(name: &str, headless: bool) -> Service {
    Service {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".into(), "echo".into())])),
            cluster_ip: headless.then(|| "None".into()),
            ports: Some(vec![ServicePort {
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Which pod answers `GET /name` at `ip:80`, over a new connection (`None`: no echo pod did;
/// a pod Ready before its server listens refuses).
async fn who(ip: Ipv4Addr) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect((ip, 80)).await.ok()?;
        s.write_all(format!("GET /name HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await.ok()?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.ok()?;
        // Only python's http.server in an echo pod: an unrouted address may meet a proxy of the
        // machine's own network outside.
        let body = reply.strip_prefix("HTTP/1.0 200")?.split("\r\n\r\n").nth(1)?.trim().to_owned();
        body.starts_with("echo-").then_some(body)
    };
    tokio::time::timeout(Duration::from_secs(2), fetch).await.ok().flatten()
}

async fn services_scenario(client: &Client, scene: &Scene) {
    let ns = scene.ns.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let echo = services.create(&PostParams::default(), &service("echo", false)).await.unwrap();
    services.create(&PostParams::default(), &service("echo-headless", true)).await.unwrap();
    let cluster_ip: Ipv4Addr = echo.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    for name in ["echo-a", "echo-b"] {
        std::fs::write(scene.log.join(format!("ready-{name}")), b"").unwrap();
        create_pod(client, ns, &echo_pod(scene, name)).await;
    }
    let client_uid = create_pod(client, ns, &client_pod(scene)).await.uid().unwrap();
    let mut ips = BTreeMap::new();
    for name in ["echo-a", "echo-b"] {
        let p = until(60, &format!("{name} to be Ready"), || async {
            let p = pods.get(name).await.unwrap();
            condition(&p, "Ready").then_some(p)
        })
        .await;
        ips.insert(name, p.status.unwrap().pod_ip.unwrap());
    }

    // The host reaches the ClusterIP (kube-proxy's nftables rules), and both endpoints answer.
    until(60, "the ClusterIP to answer from the host", || async { who(cluster_ip).await }).await;
    // kube-proxy follows the EndpointSlice within its sync period: both pods, within 30 s.
    let both: std::collections::BTreeSet<String> = ["echo-a", "echo-b"].map(String::from).into();
    let seen = parking_lot::Mutex::new(std::collections::BTreeSet::new());
    until(30, "both ready endpoints to answer at the ClusterIP", || async {
        for _ in 0..20 {
            let w = who(cluster_ip).await;
            seen.lock().extend(w);
        }
        (*seen.lock() == both).then_some(())
    })
    .await;

    // In a pod: its own name, the Service by every name a resolver would complete, and the API
    // server at kubernetes.default.svc with TLS verified against the cluster CA and the token.
    let client_ip = until(60, "the client pod's IP", || async {
        pods.get("client").await.unwrap().status.and_then(|s| s.pod_ip)
    })
    .await;
    let names = [
        "echo".to_owned(),
        format!("echo.{ns}"),
        format!("echo.{ns}.svc"),
        format!("echo.{ns}.svc.cluster.local"),
    ];
    let report = until(60, "the client pod to reach the Service by name and the API server", || async {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(scene.log.join("client")).ok()?).ok()?;
        let served = names.iter().all(|n| r[n.as_str()].as_str().is_some_and(|v| v.starts_with("echo-")));
        (served && r["api"] == 200).then_some(r)
    })
    .await;
    assert_eq!(report["self"], client_ip.as_str(), "the pod's hostname is its own address: {report}");

    // The headless Service is listed at its ready endpoints, in the client pod's /etc/hosts.
    let hosts = scene.config.state_dir.join("pods").join(&client_uid).join("etc-hosts");
    let headless = |ip: &str| format!("{ip}\techo-headless.{ns}.svc");
    let text = std::fs::read_to_string(&hosts).unwrap();
    assert!(text.contains(&headless(&ips["echo-a"])) && text.contains(&headless(&ips["echo-b"])), "{text}");

    // An unready endpoint leaves the rotation and the headless name.
    std::fs::remove_file(scene.log.join("ready-echo-b")).unwrap();
    until(30, "echo-b to be unready", || async {
        (!condition(&pods.get("echo-b").await.unwrap(), "Ready")).then_some(())
    })
    .await;
    until(30, "only echo-a behind the ClusterIP", || async {
        for _ in 0..20 {
            if who(cluster_ip).await.as_deref() != Some("echo-a") {
                return None;
            }
        }
        Some(())
    })
    .await;
    until(10, "echo-b to leave the headless name", || async {
        let text = std::fs::read_to_string(&hosts).unwrap();
        (!text.contains(&headless(&ips["echo-b"])) && text.contains(&headless(&ips["echo-a"]))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane (scripts/k8s.sh start), its kube-proxy and root"]
async fn services_carry_traffic_and_their_names_resolve_in_pods() {
    let client = client().await;
    let kube = kube::Config::infer().await.unwrap();
    let bin = std::env::var("GOIM_K8S_BIN").expect("GOIM_K8S_BIN (scripts/k8s.sh env)");
    let kube_proxy = PathBuf::from(bin).join("kube-proxy");
    assert!(kube_proxy.is_file(), "{} is missing: bash scripts/k8s.sh install", kube_proxy.display());
    let id = std::process::id();
    let mut config = Config::new(format!("e2e-node-svc-{id}"));
    config.pod_cidr = format!("10.251.{}.0/24", id % 250).parse().unwrap();
    config.bridge = format!("gs2e{id}");
    let base = std::env::temp_dir().join(format!("goim-e2e-node-svc-{id}"));
    config.state_dir = base.join("state");
    config.images = vec!["python=/usr/bin".parse().unwrap()];
    config.taints =
        vec![Taint { key: "goim-rs.io/e2e-test".into(), effect: "NoSchedule".into(), ..Default::default() }];
    config.delete_node_on_exit = true;
    config.api_server = goim_e2e::api_upstream(&kube.cluster_url.to_string());
    config.kube_proxy = Some(kube_proxy);
    config.kubeconfig = std::env::var_os("KUBECONFIG").map(PathBuf::from);
    let log = base.join("log");
    std::fs::create_dir_all(&log).unwrap();

    let (shutdown, node, namespaces, scene) =
        start(&client, &config, format!("e2e-node-svc-{id}"), log).await;
    let ns = scene.ns.clone();
    let outcome = std::panic::AssertUnwindSafe(services_scenario(&client, &scene)).catch_unwind().await;

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), node).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    let _ = std::fs::remove_dir("/srv/e2e-svc");
    let _ = std::fs::remove_dir("/srv/e2e-svc-www");
    if let Err(panic) = outcome {
        let kp =
            std::fs::read_to_string(config.state_dir.join("kube-proxy/kube-proxy.log")).unwrap_or_default();
        eprintln!(
            "kube-proxy's log (last 40 lines):\n{}",
            kp.lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        std::panic::resume_unwind(panic);
    }
    stopped.expect("the node stopped within 30 s").expect("the node task").expect("the node ran");
    let table =
        std::process::Command::new("nft").args(["list", "table", "ip", "kube-proxy"]).output().unwrap();
    assert!(!table.status.success(), "kube-proxy's nft table is removed at shutdown");
    let _ = std::fs::remove_dir_all(&base);
}
