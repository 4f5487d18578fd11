//! A comet roll with real comets and real clients, against the real control plane
//! (`bash scripts/k8s.sh start`; `eval "$(bash scripts/k8s.sh env)"` sets KUBECONFIG).
//!
//! The control plane's pods run on a kwok node, so this test plays the two node parts a roll
//! needs: a kubelet that starts a real goim-comet at every comet pod's IP (scripts/k8s.sh makes
//! kwok's pod IPs local addresses) and, when a pod is deleted, runs its preStop hook as rendered
//! (the drain) and then stops the process; and a kube-proxy for the client Service: each client
//! connects to a random comet pod that is ready and not terminating. The clients obey op 6: they
//! wait the `reconnect_after_ms` it carries and reconnect through the "Service". The figure is
//! reconnects per client over the roll: 1.0 when every drained client lands on a new comet.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use goim_operator::PushCluster;
use goim_operator::controller::reconcile;
use goim_test_support::{Client as Push, Transport, json_token};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use rand::seq::IndexedRandom;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

const CLIENTS: usize = 60;
const COMETS: i32 = 3;

fn comet_pods() -> ListParams {
    ListParams::default().labels("app.kubernetes.io/component=comet")
}

/// The kube-proxy part: a random ready, not terminating comet pod's TCP address.
async fn pick(client: &Client, ns: &str) -> Option<SocketAddr> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&comet_pods()).await.ok()?.items;
    let ready: Vec<IpAddr> = pods
        .iter()
        .filter(|p| goim_operator::connections::is_ready(p))
        .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
        .collect();
    ready.choose(&mut rand::rng()).map(|ip| SocketAddr::new(*ip, 3101))
}

/// One GET on the admin port (the preStop hook's httpGet): the status code.
async fn http_get(addr: SocketAddr, path: &str, within: Duration) -> Option<u16> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.ok()?;
        raw.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(within, io).await.ok().flatten()
}

/// The kubelet part. Pods by name to their comet process.
struct Kubelet {
    running: Mutex<BTreeMap<String, (IpAddr, Proc)>>,
    dir: std::path::PathBuf,
    logic_grpc: u16,
    /// The rendered preStop hook's path and the admin port it names.
    pre_stop: String,
}

impl Kubelet {
    /// Starts a comet for each new pod with an IP; drains and stops the comet of each pod that
    /// is terminating or gone.
    async fn sync(self: &Arc<Self>, client: &Client, ns: &str) {
        let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&comet_pods()).await.unwrap().items;
        let mut running = self.running.lock().await;
        for p in &pods {
            let name = p.name_any();
            let ip: Option<IpAddr> =
                p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
            if p.metadata.deletion_timestamp.is_none()
                && !running.contains_key(&name)
                && let Some(ip) = ip
            {
                let proc = self.start(&name, ip).await;
                running.insert(name, (ip, proc));
            }
        }
        let going: Vec<String> = running
            .keys()
            .filter(|n| !pods.iter().any(|p| &&p.name_any() == n && p.metadata.deletion_timestamp.is_none()))
            .cloned()
            .collect();
        for name in going {
            let (ip, proc) = running.remove(&name).unwrap();
            let path = self.pre_stop.clone();
            // preStop, then SIGTERM once it returns (the kubelet's order), off the sync loop.
            tokio::spawn(async move {
                let code = http_get(SocketAddr::new(ip, 3100), &path, Duration::from_secs(30)).await;
                assert_eq!(code, Some(200), "preStop GET {path} on {name}:\n{}", proc.logs());
                drop(proc);
            });
        }
    }

    async fn start(&self, name: &str, ip: IpAddr) -> Proc {
        let file = self.dir.join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "[comet]\nserver_id = \"{name}\"\ntcp.bind = [\"{ip}:3101\"]\nwebsocket.bind = []\n\
                 [comet.drain]\nrate = 30\nreconnect_jitter = \"500ms\"\ntimeout = \"15s\"\n\
                 [grpc]\naddr = \"{ip}:3109\"\n[admin]\naddr = \"{ip}:3100\"\n\
                 [logic_client]\naddrs = [\"127.0.0.1:{}\"]\n",
                self.logic_grpc
            ),
        )
        .unwrap();
        let mut cmd = Command::new(tier_binary("goim-comet"));
        cmd.arg("--config").arg(&file);
        let p = Proc::spawn(name, cmd, &self.dir);
        wait_listening(SocketAddr::new(ip, 3101), &p).await;
        p
    }
}

#[derive(Default)]
struct Counts {
    connects: AtomicUsize,
    told_to_go: AtomicUsize,
    dropped_without_op6: AtomicUsize,
}

/// One client: connects through the "Service", and on op 6 waits its hint and reconnects.
async fn run_client(client: Client, ns: String, mid: i64, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(addr) = pick(&client, &ns).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(mut c) = Push::connect(Transport::Tcp, addr).await else { continue };
        match c.auth(&json_token(mid, &format!("key-{mid}"), "live://roll", &[])).await {
            Ok(f) if f.op == 8 => {}
            _ => continue,
        }
        counts.connects.fetch_add(1, Ordering::Relaxed);
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(200), c.recv_or_close()).await {
                Err(_) => continue,
                Ok(Ok(Ok(f))) if f.op == 6 => {
                    counts.told_to_go.fetch_add(1, Ordering::Relaxed);
                    let hint: serde_json::Value = serde_json::from_slice(&f.body).unwrap_or_default();
                    let wait = hint["reconnect_after_ms"].as_u64().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    break;
                }
                Ok(Ok(Ok(_))) => {}
                Ok(_) => {
                    counts.dropped_without_op6.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_comet_roll_reconnects_each_client_once() {
    in_namespace("op-rollout", |client, ns| async move {
        let mut spec = minimal();
        spec.comet.pod.replicas = COMETS;
        create(&client, &ns, "demo", spec).await;
        let ctx = context(&client);
        // Ready, then the kubelet starts comets for the pods (logic first: they call it).
        for _ in 0..60 {
            reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
            let pc = get(&client, &ns, "demo").await;
            if pc.status.as_ref().unwrap().conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // A real comet takes seconds to pass its readiness probe; kwok's are ready at once. A
        // new comet counts as available only 2 s after it is ready (set by another field
        // manager: the operator does not own minReadySeconds), so the roll has the pace of a
        // real one and an old comet can outlive the first new one.
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
        let pace = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "demo-comet"}, "spec": {"minReadySeconds": 2}});
        deployments.patch("demo-comet", &PatchParams::apply("rollout-test").force(), &Patch::Apply(&pace)).await.unwrap();
        let deployment = deployments.get("demo-comet").await.unwrap();
        let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
        let hook = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).expect("comet has a preStop hook");
        let get_hook = hook.http_get.as_ref().expect("the preStop hook is an httpGet");
        assert_eq!(get_hook.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("admin".into()));
        let dir = std::env::temp_dir().join(format!("goim-op-rollout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let logic_grpc = free_port();
        std::fs::write(
            dir.join("logic.toml"),
            format!(
                "[logic.http]\naddr = \"127.0.0.1:{}\"\n[logic.auth]\nmode = \"json\"\n[grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n\
                 [admin]\naddr = \"127.0.0.1:{}\"\n[discovery]\nkind = \"static\"\ncomets = [{{ server_id = \"none\", addr = \"127.0.0.1:1\" }}]\n",
                free_port(),
                free_port()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(tier_binary("goim-logic"));
        cmd.arg("--config").arg(dir.join("logic.toml"));
        let logic = Proc::spawn("logic", cmd, &dir);
        wait_listening(SocketAddr::from(([127, 0, 0, 1], logic_grpc)), &logic).await;
        let kubelet = Arc::new(Kubelet {
            running: Mutex::default(),
            dir: dir.clone(),
            logic_grpc,
            pre_stop: get_hook.path.clone().unwrap(),
        });
        kubelet.sync(&client, &ns).await;
        assert_eq!(kubelet.running.lock().await.len(), COMETS as usize);

        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| tokio::spawn(run_client(client.clone(), ns.clone(), i as i64 + 1, counts.clone(), stop.clone())))
            .collect();
        let until = |want: usize| {
            let counts = counts.clone();
            async move {
                for _ in 0..300 {
                    if counts.connects.load(Ordering::Relaxed) >= want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("{} of {want} connects", counts.connects.load(Ordering::Relaxed));
            }
        };
        until(CLIENTS).await;

        // The roll: a comet config change.
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"spec": {"comet": {"config": "[comet]\nmax_connections = 5000\n"}}});
        api.patch("demo", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let started = std::time::Instant::now();
        let new_hash = {
            let d = Api::<Deployment>::namespaced(client.clone(), &ns).get("demo-comet").await.unwrap();
            d.spec.template.metadata.unwrap().annotations.unwrap()[goim_operator::render::CONFIG_HASH].clone()
        };
        // Until every comet pod runs the new template, every client reconnected once, and the
        // old comets are gone; the kubelet keeps syncing meanwhile.
        let mut done = false;
        for _ in 0..600 {
            kubelet.sync(&client, &ns).await;
            let pods = Api::<Pod>::namespaced(client.clone(), &ns).list(&comet_pods()).await.unwrap().items;
            let all_new = pods.len() == COMETS as usize
                && pods.iter().all(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.annotations().get(goim_operator::render::CONFIG_HASH) == Some(&new_hash)
                });
            if all_new && counts.connects.load(Ordering::Relaxed) >= 2 * CLIENTS {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = started.elapsed();
        // Any extra reconnect (a bounce) shows up within the settle time.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let connects = counts.connects.load(Ordering::Relaxed);
        let reconnects = (connects - CLIENTS) as f64 / CLIENTS as f64;
        eprintln!(
            "comet roll of {COMETS} comets, {CLIENTS} clients: {reconnects:.2} reconnects per client, {} op 6, {} closed without op 6, {took:?}",
            counts.told_to_go.load(Ordering::Relaxed),
            counts.dropped_without_op6.load(Ordering::Relaxed),
        );
        assert!(done, "the roll did not finish: {connects} connects");
        assert_eq!(counts.dropped_without_op6.load(Ordering::Relaxed), 0, "a client was closed without op 6");
        assert_eq!(connects, 2 * CLIENTS, "reconnects per client: {reconnects:.2} (a client bounced through an old comet)");
        kubelet.running.lock().await.clear();
        drop(logic);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
