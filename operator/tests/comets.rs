//! Real comets behind the control plane's pods (`bash scripts/k8s.sh start`; `eval "$(bash
//! scripts/k8s.sh env)"` sets KUBECONFIG): scripts/k8s.sh makes kwok's pod IPs local addresses,
//! so a test binds real goim-comet processes at the comet pods' IPs and connects real clients.
//! What the operator reads from them (connections), decides on them (scale-in), and how a roll
//! replaces them.

mod support;

use std::time::Duration;

use goim_operator::PushCluster;
use goim_operator::controller::reconcile;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use support::*;

/// The ready comet pods' IPs (kwok's fake pods: scripts/k8s.sh routes their CIDR to lo).
async fn comet_pod_ips(client: &Client, ns: &str) -> Vec<std::net::IpAddr> {
    let lp = ListParams::default().labels("app.kubernetes.io/component=comet");
    let pods =
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns).list(&lp).await.unwrap();
    pods.items.iter().filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()).collect()
}

/// Real comets at the comet pods' IPs (each pod's own address, so the rendered ports) and one
/// real logic on loopback they all use; killed on drop.
struct RealComets {
    comets: Vec<Proc>,
    _logic: Proc,
    dir: std::path::PathBuf,
}

impl RealComets {
    async fn start(ips: &[std::net::IpAddr]) -> RealComets {
        use std::net::SocketAddr;
        use std::process::Command;
        for ip in ips {
            assert!(
                std::net::TcpListener::bind((*ip, 0)).is_ok(),
                "pod IP {ip} is not a local address: `bash scripts/k8s.sh start` routes the pod CIDR to lo"
            );
        }
        let dir = std::env::temp_dir().join(format!("goim-op-comets-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let (logic_grpc, logic_admin) = (free_port(), free_port());
        let comets: String = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("{{ server_id = \"comet-{i}\", addr = \"{ip}:3109\" }}"))
            .collect::<Vec<_>>()
            .join(", ");
        let logic_toml = format!(
            "[logic.http]\naddr = \"127.0.0.1:{}\"\n[logic.auth]\nmode = \"json\"\n[grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n\
             [admin]\naddr = \"127.0.0.1:{logic_admin}\"\n[discovery]\nkind = \"static\"\ncomets = [{comets}]\n",
            free_port()
        );
        std::fs::write(dir.join("logic.toml"), logic_toml).unwrap();
        let mut cmd = Command::new(tier_binary("goim-logic"));
        cmd.arg("--config").arg(dir.join("logic.toml"));
        let logic = Proc::spawn("logic", cmd, &dir);
        wait_listening(SocketAddr::from(([127, 0, 0, 1], logic_grpc)), &logic).await;
        let mut procs = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let file = dir.join(format!("comet-{i}.toml"));
            std::fs::write(
                &file,
                format!(
                    "[comet]\nserver_id = \"comet-{i}\"\ntcp.bind = [\"{ip}:3101\"]\nwebsocket.bind = []\n\
                     [grpc]\naddr = \"{ip}:3109\"\n[admin]\naddr = \"{ip}:3100\"\n[logic_client]\naddrs = [\"127.0.0.1:{logic_grpc}\"]\n"
                ),
            )
            .unwrap();
            let mut cmd = Command::new(tier_binary("goim-comet"));
            cmd.arg("--config").arg(&file);
            let p = Proc::spawn(&format!("comet-{i}"), cmd, &dir);
            wait_listening(SocketAddr::new(*ip, 3101), &p).await;
            procs.push(p);
        }
        RealComets { comets: procs, _logic: logic, dir }
    }
}

impl Drop for RealComets {
    fn drop(&mut self) {
        self.comets.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` authenticated goim clients on the comet at `ip`.
async fn clients_on(ip: std::net::IpAddr, n: usize, first_mid: i64) -> Vec<goim_test_support::Client> {
    use goim_test_support::{Client as Push, Transport, json_token};
    let mut out = Vec::new();
    for k in 0..n {
        let mut c = Push::connect(Transport::Tcp, std::net::SocketAddr::new(ip, 3101)).await.unwrap();
        let mid = first_mid + k as i64;
        let frame = c.auth(&json_token(mid, &format!("key-{ip}-{k}"), "live://1", &[])).await.unwrap();
        assert_eq!(frame.op, 8, "auth reply");
        out.push(c);
    }
    out
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_status_counts_the_connections_of_every_ready_comet() {
    in_namespace("op-conns", |client, ns| async move {
        let mut spec = minimal();
        spec.comet.pod.replicas = 2;
        create(&client, &ns, "demo", spec).await;
        let ctx = context(&client);
        until_ready(&client, &ns, &ctx).await;
        let ips = comet_pod_ips(&client, &ns).await;
        assert_eq!(ips.len(), 2, "{ips:?}");
        let mut comets = RealComets::start(&ips).await;
        // 3 clients on the first comet, 2 on the second.
        let mut clients = clients_on(ips[0], 3, 1).await;
        clients.extend(clients_on(ips[1], 2, 100).await);
        let counted = |want: i64, reporting: &'static str| {
            let (client, ns, ctx) = (client.clone(), ns.clone(), ctx.clone());
            async move {
                let mut last = None;
                for _ in 0..50 {
                    reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
                    let s = get(&client, &ns, "demo").await.status.clone().unwrap();
                    if s.connections == want && s.comets_reporting == reporting {
                        return;
                    }
                    last = Some((s.connections, s.comets_reporting));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("status.connections: wanted {want} from {reporting}, got {last:?}");
            }
        };
        counted(5, "2/2").await;
        // A comet that stops answering no longer counts, and the status says so.
        drop(comets.comets.remove(1));
        counted(3, "1/2").await;
        drop(clients);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_autoscaler_removes_the_least_connected_comet() {
    use k8s_openapi::api::core::v1::Pod;
    in_namespace("op-scale-in", |admin, ns| async move {
        // As the operator's ServiceAccount: the pods' patch permission is part of what is shown.
        let (a, n) = (admin.clone(), ns.clone());
        with_operator(&a, &n, operator_cluster_role(), |operator| async move {
            let mut spec = minimal();
            spec.comet.pod.replicas = 4;
            spec.autoscaling.enabled = true;
            spec.autoscaling.min_replicas = 1;
            spec.autoscaling.target_connections_per_comet = 5;
            spec.autoscaling.scale_down_stabilization_seconds = 0;
            create(&admin, &ns, "demo", spec).await;
            let ctx = context(&operator);
            until_ready(&operator, &ns, &ctx).await;
            let pods_api = Api::<Pod>::namespaced(admin.clone(), &ns);
            let lp = ListParams::default().labels("app.kubernetes.io/component=comet");
            let pods = pods_api.list(&lp).await.unwrap().items;
            assert_eq!(pods.len(), 4);
            let ips: Vec<std::net::IpAddr> =
                pods.iter().map(|p| p.status.clone().unwrap().pod_ip.unwrap().parse().unwrap()).collect();
            let _comets = RealComets::start(&ips).await;
            // 5, 1, 3 and 4 clients: 13 in all, target 5 per comet: 3 comets.
            let mut clients = Vec::new();
            for (i, n) in [5, 1, 3, 4].into_iter().enumerate() {
                clients.extend(clients_on(ips[i], n, 1 + 100 * i as i64).await);
            }
            let least = pods[1].name_any();
            let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
            let mut replicas = None;
            for _ in 0..50 {
                reconcile(get(&operator, &ns, "demo").await, ctx.clone()).await.unwrap();
                replicas = deployments.get("demo-comet").await.unwrap().spec.replicas;
                if replicas == Some(3) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert_eq!(replicas, Some(3), "the autoscaler did not scale comets to 3");
            let decision = get(&admin, &ns, "demo").await.status.clone().unwrap().autoscaling.unwrap();
            assert_eq!((decision.connections, decision.desired_replicas), (13, 3), "{decision:?}");
            eprintln!("autoscaler: {}", decision.reason);
            // The ReplicaSet controller removes the pod with the lowest deletion cost.
            let mut gone = Vec::new();
            for _ in 0..100 {
                let now = pods_api.list(&lp).await.unwrap().items;
                gone = pods
                    .iter()
                    .map(|p| p.name_any())
                    .filter(|n| {
                        !now.iter().any(|q| &q.name_any() == n && q.metadata.deletion_timestamp.is_none())
                    })
                    .collect();
                if !gone.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(gone, std::slice::from_ref(&least), "the comet with 1 client is the one removed");
            // Chosen by its deletion cost, not by chance: the others carry higher ones.
            let cost = |p: &Pod| p.annotations().get(goim_operator::scale_in::DELETION_COST).cloned();
            for p in pods_api.list(&lp).await.unwrap().items.iter().filter(|p| p.name_any() != least) {
                let c: i32 = cost(p)
                    .unwrap_or_else(|| panic!("{} has no deletion cost", p.name_any()))
                    .parse()
                    .unwrap();
                assert!(c > 1, "{}: cost {c}", p.name_any());
            }
            drop(clients);
        })
        .await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_comet_roll_brings_every_new_comet_up_before_any_old_one_goes() {
    use futures_util::TryStreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{WatchEvent, WatchParams};
    use std::collections::BTreeSet;
    in_namespace("op-roll", |client, ns| async move {
        let mut spec = minimal();
        spec.comet.pod.replicas = 3;
        create(&client, &ns, "demo", spec).await;
        let ctx = context(&client);
        until_ready(&client, &ns, &ctx).await;
        let pods_api = Api::<Pod>::namespaced(client.clone(), &ns);
        let lp = ListParams::default().labels("app.kubernetes.io/component=comet");
        let list = pods_api.list(&lp).await.unwrap();
        let old: BTreeSet<String> = list.items.iter().map(|p| p.name_any()).collect();
        assert_eq!(old.len(), 3);
        // Every change of the comet pods from here on, in the API server's order.
        let wp = WatchParams::default().labels("app.kubernetes.io/component=comet").timeout(60);
        let version = list.metadata.resource_version.clone().unwrap();
        let mut stream = Box::pin(pods_api.watch(&wp, &version).await.unwrap());
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"spec": {"comet": {"config": "[comet]\nmax_connections = 5000\n"}}});
        api.patch("demo", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let (mut order, mut ready, mut going) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while ready.len() < 3 || going.len() < 3 {
            let event = tokio::time::timeout_at(deadline, stream.try_next()).await;
            let Ok(Ok(Some(event))) = event else { panic!("the roll did not finish: {order:?}") };
            let (p, deleted) = match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => (p, false),
                WatchEvent::Deleted(p) => (p, true),
                _ => continue,
            };
            let name = p.name_any();
            if old.contains(&name) {
                if (deleted || p.metadata.deletion_timestamp.is_some()) && going.insert(name.clone()) {
                    order.push(format!("old {name} goes"));
                }
            } else if goim_operator::connections::is_ready(&p) && ready.insert(name.clone()) {
                order.push(format!("new {name} ready"));
            }
        }
        eprintln!("comet roll: {order:?}");
        let first_going = order.iter().position(|e| e.starts_with("old")).unwrap();
        let last_ready = order.iter().rposition(|e| e.starts_with("new")).unwrap();
        assert!(last_ready < first_going, "an old comet went before every new one was ready: {order:?}");
    })
    .await;
}
