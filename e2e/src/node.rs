//! The Node object: registered with its pod range, labels, capacity and a Ready condition, then
//! kept alive like a kubelet does: the Lease in `kube-node-lease` renewed every quarter of its
//! duration, the Ready condition's heartbeat refreshed every minute.
//!
//! Nothing marks the node for kwok: scripts/k8s.sh runs kwok with
//! `--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake`, so kwok leaves this node and
//! its pods alone.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

const MANAGER: &str = "goim-e2e-node";

fn node(config: &Config) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), config.node_name.clone()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        (
            "kubernetes.io/arch".to_owned(),
            std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        ),
        ("type".to_owned(), "goim-e2e".to_owned()),
    ]);
    labels.extend(config.labels.clone());
    let cidr = config.pod_cidr.to_string();
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.clone()),
            pod_cidrs: Some(vec![cidr]),
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..Default::default()
        }),
        status: None,
    }
}

fn status(config: &Config, since: Timestamp) -> Node {
    let now = Time(Timestamp::now());
    let condition = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(Time(since)),
    };
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity("32".into())),
        ("memory".to_owned(), Quantity("64Gi".into())),
        ("pods".to_owned(), Quantity(config.pod_cidr.size().saturating_sub(3).min(110).to_string())),
    ]);
    let version = |s: &str| format!("{s} goim-e2e/{}", env!("CARGO_PKG_VERSION"));
    Node {
        metadata: ObjectMeta { name: Some(config.node_name.clone()), ..Default::default() },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![
                condition("Ready", "True", "KubeletReady", "goim-e2e node is posting ready status"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
            ]),
            addresses: Some(vec![
                NodeAddress { type_: "InternalIP".into(), address: config.pod_cidr.gateway().to_string() },
                NodeAddress { type_: "Hostname".into(), address: config.node_name.clone() },
            ]),
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.into(),
                operating_system: "linux".into(),
                os_image: "the host (goim-e2e node)".into(),
                kubelet_version: version("v0.0.0"),
                kube_proxy_version: String::new(),
                container_runtime_version: "goim-e2e://processes".into(),
                kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                boot_id: String::new(),
                machine_id: String::new(),
                system_uuid: String::new(),
                ..Default::default()
            }),
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}

/// Creates (or takes over) the Node and reports it Ready.
pub async fn register(client: &Client, config: &Config) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    let n = api.patch(&config.node_name, &pp, &Patch::Apply(node(config))).await?;
    api.patch_status(&config.node_name, &pp, &Patch::Apply(status(config, Timestamp::now()))).await?;
    renew(client, config, &n).await?;
    Ok(n)
}

/// The node's Lease, owned by the Node (so it goes with it).
async fn renew(client: &Client, config: &Config, n: &Node) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: n.name_any(),
                uid: n.uid().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(config.node_name.clone()),
            lease_duration_seconds: Some(config.lease_duration.as_secs() as i32),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    api.patch(&config.node_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(lease)).await.map(drop)
}

/// Renews the Lease and the Ready heartbeat until `shutdown`.
pub async fn heartbeat(client: Client, config: Config, n: Node, shutdown: CancellationToken) {
    let api: Api<Node> = Api::all(client.clone());
    let every = (config.lease_duration / 4).max(Duration::from_secs(1));
    let mut last_status = tokio::time::Instant::now();
    let since = Timestamp::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = renew(&client, &config, &n).await {
            tracing::warn!(error = %e, "node lease not renewed");
        }
        if last_status.elapsed() >= Duration::from_secs(60) {
            last_status = tokio::time::Instant::now();
            let pp = PatchParams::apply(MANAGER).force();
            if let Err(e) =
                api.patch_status(&config.node_name, &pp, &Patch::Apply(status(&config, since))).await
            {
                tracing::warn!(error = %e, "node status not written");
            }
        }
    }
}

pub async fn deregister(client: &Client, name: &str) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
