//! Discovery from the Kubernetes API: a kube-rs watch on the EndpointSlices of the comet
//! headless Service (`kubernetes.io/service-name=<service>`), mapped by [`comet_endpoints`].

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{CometEndpoint, Discovery, Endpoints, KubernetesConfig, comet_endpoints};

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No in-cluster service account and no kubeconfig, or an unusable one.
    #[error("no Kubernetes client configuration: {0}")]
    Client(String),
    /// The first complete list did not arrive within `sync_timeout` (API server unreachable,
    /// or RBAC forbids listing EndpointSlices).
    #[error("EndpointSlices of service {service:?} not listed within {timeout:?}")]
    NotSynced { service: String, timeout: std::time::Duration },
}

/// Comets from the EndpointSlices of one Service, kept current by a background watch.
#[derive(Debug)]
pub struct Kubernetes {
    /// The list the watch task publishes; the task holds the sender.
    rx: watch::Receiver<Endpoints>,
}

impl Kubernetes {
    /// Connects with the in-cluster (or kubeconfig) credentials, starts the watch on `tasks`
    /// until `shutdown`, and waits for the first complete list.
    pub async fn start(
        config: &KubernetesConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Kubernetes, Error> {
        let client = Client::try_default().await.map_err(|e| Error::Client(e.to_string()))?;
        let namespace = if config.namespace.is_empty() {
            client.default_namespace().to_owned()
        } else {
            config.namespace.clone()
        };
        let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
        let selector = format!("kubernetes.io/service-name={}", config.service);
        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher::watcher(api, watcher::Config::default().labels(&selector)).default_backoff(),
        );
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        // Shared with start-up, which publishes the first list itself once the store is ready.
        let tx = Arc::new(tx);
        let port_name = config.port_name.clone();
        let service = config.service.clone();
        let store = reader.clone();
        let task_tx = tx.clone();
        tasks.spawn(async move {
            let tx = task_tx;
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    e = stream.next() => e,
                    () = shutdown.cancelled() => return,
                };
                match event {
                    None => return,
                    Some(Err(e)) => {
                        warn!(error = %e, service = %service, "endpointslice watch failed, retrying")
                    }
                    // A re-list swaps the store only when complete; until then keep the old list.
                    Some(Ok(Event::Init | Event::InitApply(_))) => {}
                    Some(Ok(_)) => {
                        let slices = store.state();
                        let comets = comet_endpoints(slices.iter().map(|s| &**s), &port_name);
                        publish(&tx, comets, &service);
                    }
                }
            }
        });
        match tokio::time::timeout(config.sync_timeout, reader.wait_until_ready()).await {
            Ok(Ok(())) => {
                let slices = reader.state();
                publish(
                    &tx,
                    comet_endpoints(slices.iter().map(|s| &**s), &config.port_name),
                    &config.service,
                );
                Ok(Kubernetes { rx })
            }
            _ => Err(Error::NotSynced { service: config.service.clone(), timeout: config.sync_timeout }),
        }
    }
}

fn publish(tx: &watch::Sender<Endpoints>, comets: Vec<CometEndpoint>, service: &str) {
    tx.send_if_modified(|current| {
        if **current == comets {
            return false;
        }
        let serving = comets.iter().filter(|c| c.serving).count();
        let ready = comets.iter().filter(|c| c.ready).count();
        info!(service, comets = comets.len(), serving, ready, "comet endpoints changed");
        *current = Arc::new(comets);
        true
    });
}

impl Discovery for Kubernetes {
    fn watch(&self) -> watch::Receiver<Endpoints> {
        self.rx.clone()
    }
}
