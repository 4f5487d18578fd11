//! goim-e2e: test support for the end-to-end suite, never shipped. Its main part is a test node:
//! it joins the control plane as a Node and runs every pod bound to it as local processes, the
//! way a kubelet would, as far as the suite needs (docs/e2e.md says what differs).
//!
//! - `node`: the Node object, its Lease and Ready heartbeat.
//! - `sync`: the watch of this node's pods, one task per pod.
//! - `pod`: a pod's sandbox, containers, status and end (deletion, shutdown).
//! - `network`: the bridge, and per pod a network namespace, a veth pair and an address.
//! - `volume` and `source`: ConfigMap, Secret, downward-API, projected and emptyDir volumes as
//!   files, bind-mounted at their paths in a private mount namespace; env from the same sources.
//! - `container`, `process`, `probe`, `status`: a container's process, restarts, probes and
//!   hooks, and the pod status they add up to.
//! - `names` and `proxy`: Service names in every pod's `/etc/hosts`, the API server forwarded to
//!   pods, and kube-proxy for ClusterIP traffic.

mod config;
mod container;
mod env;
mod names;
mod network;
mod node;
mod pod;
mod probe;
mod process;
mod proxy;
mod source;
mod status;
mod sync;
mod volume;

pub mod suite;

use std::sync::Arc;

use kube::Client;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Cidr, Config, Error as ConfigError, Image};
pub use network::Error as NetworkError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error("the pod network: {0}")]
    Network(#[from] network::Error),
    #[error("registering the node: {0}")]
    Register(#[source] kube::Error),
    #[error("Service traffic: {0}")]
    Services(#[source] std::io::Error),
}

/// Runs the node until `shutdown`: registers it, runs its pods, and at shutdown kills every pod's
/// processes, removes their namespaces and the bridge (and the Node, when configured).
pub async fn run(config: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    config.validate()?;
    let bridge = network::Bridge::ensure(&config.bridge, config.pod_cidr).await?;
    let gateway = config.pod_cidr.gateway();
    let api = match services(&config).await {
        Ok(l) => l,
        Err(e) => {
            let _ = bridge.remove().await;
            return Err(Error::Services(e));
        }
    };
    let registered = match node::register(&client, &config).await {
        Ok(n) => n,
        Err(e) => {
            let _ = bridge.remove().await;
            return Err(Error::Register(e));
        }
    };
    tracing::info!(node = %config.node_name, cidr = %config.pod_cidr, bridge = %config.bridge, "node registered");
    let tasks = TaskTracker::new();
    tasks.spawn(node::heartbeat(client.clone(), config.clone(), registered, shutdown.clone()));
    let names = names::Names::new(gateway);
    tasks.spawn(names.clone().run(client.clone(), shutdown.clone()));
    if let (Some(listener), Some(upstream)) = (api, config.api_server.clone()) {
        tasks.spawn(proxy::forward_api(listener, upstream, shutdown.clone()));
    }
    if let (Some(binary), Some(kubeconfig)) = (config.kube_proxy.clone(), config.kubeconfig.clone()) {
        let kube_proxy = proxy::KubeProxy {
            binary,
            kubeconfig,
            node_name: config.node_name.clone(),
            cluster_cidr: config.pod_cidr.to_string(),
            dir: config.state_dir.join("kube-proxy"),
        };
        tasks.spawn(kube_proxy.run(shutdown.clone()));
    }
    let ctx = Arc::new(pod::Context {
        ipam: network::Ipam::new(config.pod_cidr),
        client: client.clone(),
        config,
        bridge,
        names,
    });
    sync::run(ctx.clone(), &tasks, shutdown.clone()).await;
    // Pod tasks see the same token: they kill their processes and remove their namespaces.
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    if let Err(e) = ctx.bridge.remove().await {
        tracing::warn!(error = %e, "bridge not removed");
    }
    if ctx.config.delete_node_on_exit
        && let Err(e) = node::deregister(&client, &ctx.config.node_name).await
    {
        tracing::warn!(error = %e, "node not deleted");
    }
    tracing::info!("node stopped");
    Ok(())
}

/// Forwarding on, and the API forwarder's listener on the bridge address (when the API server's
/// address is known).
async fn services(config: &Config) -> std::io::Result<Option<tokio::net::TcpListener>> {
    proxy::enable_forwarding()?;
    if config.api_server.is_none() {
        return Ok(None);
    }
    let listen = proxy::api_listen(config.pod_cidr.gateway());
    Ok(Some(tokio::net::TcpListener::bind(listen).await?))
}

pub use proxy::upstream as api_upstream;
