//! Discovery from the Kubernetes API: a kube-rs watch on the EndpointSlices of the comet
//! headless Service (`kubernetes.io/service-name=<service>`), mapped by [`comet_endpoints`].
//!
//! Start-up first asks the API server whether this client may `list` and `watch` EndpointSlices
//! in the namespace (SelfSubjectAccessReview), so missing RBAC fails at once with
//! [`Error::Forbidden`], which names what to grant, instead of a watch that retries until
//! `sync_timeout` (or, with `list` but no `watch`, one that lists once and then never updates).
//! A 403 from the watch itself before the first list is mapped to the same error.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{CometEndpoint, Discovery, Endpoints, KubernetesConfig, comet_endpoints};

/// The API group and resource the watch reads.
const GROUP: &str = "discovery.k8s.io";
const RESOURCE: &str = "endpointslices";
/// What the watch needs: a list, then a watch from its resource version.
const VERBS: [&str; 2] = ["list", "watch"];

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No in-cluster service account and no kubeconfig, or an unusable one.
    #[error("no Kubernetes client configuration: {0}")]
    Client(String),
    /// The API server does not accept this client's credentials (401): an expired or revoked
    /// token, or a client certificate from another cluster.
    #[error("the Kubernetes API server rejected this client's credentials: {0}")]
    Unauthorized(String),
    /// RBAC does not let this client `list` or `watch` the Service's EndpointSlices.
    #[error(
        "{user_hint} may not {verbs} {RESOURCE}.{GROUP} in namespace {namespace:?}. Comet discovery \
         needs list and watch on them: grant them with a Role in namespace {namespace:?} (rules: \
         apiGroups [\"{GROUP}\"], resources [\"{RESOURCE}\"], verbs [\"list\", \"watch\"]) and a \
         RoleBinding of that Role to this identity",
        verbs = .verbs.join(" or ")
    )]
    Forbidden {
        /// The verbs that were refused (`list`, `watch`), in that order.
        verbs: Vec<String>,
        /// `endpointslices.discovery.k8s.io`.
        resource: String,
        namespace: String,
        /// Who asked, as the API server knows it: `ServiceAccount "goim-job" in namespace "goim"
        /// (user "system:serviceaccount:goim:goim-job")`, `user "alice"`, or `this client`.
        user_hint: String,
    },
    /// The first complete list did not arrive within `sync_timeout` (API server unreachable
    /// or too slow).
    #[error("EndpointSlices of service {service:?} not listed within {timeout:?}")]
    NotSynced { service: String, timeout: Duration },
}

/// Comets from the EndpointSlices of one Service, kept current by a background watch.
#[derive(Debug)]
pub struct Kubernetes {
    /// The list the watch task publishes; the task holds the sender.
    rx: watch::Receiver<Endpoints>,
}

impl Kubernetes {
    /// Connects with the in-cluster (or kubeconfig) credentials, then
    /// [`start_with_client`](Kubernetes::start_with_client).
    pub async fn start(
        config: &KubernetesConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Kubernetes, Error> {
        let client = Client::try_default().await.map_err(|e| Error::Client(e.to_string()))?;
        Kubernetes::start_with_client(client, config, shutdown, tasks).await
    }

    /// Checks that `client` may list and watch EndpointSlices, starts the watch on `tasks`
    /// until `shutdown`, and waits for the first complete list, all within `sync_timeout`.
    /// An empty `config.namespace` means the client's default namespace. On error nothing is
    /// left running.
    pub async fn start_with_client(
        client: Client,
        config: &KubernetesConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Kubernetes, Error> {
        let deadline = Instant::now() + config.sync_timeout;
        let not_synced =
            || Error::NotSynced { service: config.service.clone(), timeout: config.sync_timeout };
        let namespace = if config.namespace.is_empty() {
            client.default_namespace().to_owned()
        } else {
            config.namespace.clone()
        };
        match tokio::time::timeout_at(deadline, check_access(&client, &namespace)).await {
            Ok(result) => result?,
            Err(_) => return Err(not_synced()),
        }

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
        // A refusal the watch met, for start-up to fail with (it stops listening once started).
        let (refused_tx, mut refused_rx) = mpsc::channel::<Error>(1);
        // Stopped early when start-up fails.
        let stop = shutdown.child_token();
        let port_name = config.port_name.clone();
        let service = config.service.clone();
        let store = reader.clone();
        let task_tx = tx.clone();
        let task_stop = stop.clone();
        let task_namespace = namespace.clone();
        tasks.spawn(async move {
            let tx = task_tx;
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    e = stream.next() => e,
                    () = task_stop.cancelled() => return,
                };
                match event {
                    None => return,
                    Some(Err(e)) => match refusal(&e, &task_namespace) {
                        Some(refused) => {
                            warn!(error = %refused, service = %service, "endpointslice watch refused, retrying");
                            let _ = refused_tx.try_send(refused);
                        }
                        None => {
                            warn!(error = %e, service = %service, "endpointslice watch failed, retrying")
                        }
                    },
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
        let started = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                ready = reader.wait_until_ready() => ready.map_err(|_| not_synced()),
                Some(refused) = refused_rx.recv() => Err(refused),
            }
        })
        .await
        .unwrap_or_else(|_| Err(not_synced()));
        match started {
            Ok(()) => {
                let slices = reader.state();
                publish(
                    &tx,
                    comet_endpoints(slices.iter().map(|s| &**s), &config.port_name),
                    &config.service,
                );
                Ok(Kubernetes { rx })
            }
            Err(e) => {
                stop.cancel();
                Err(e)
            }
        }
    }
}

/// Asks the API server (SelfSubjectAccessReview) whether this client may list and watch
/// EndpointSlices in `namespace`. A review that cannot be made (an API server without the
/// authorization API, a transient failure) is not an answer: the watch then finds out itself.
async fn check_access(client: &Client, namespace: &str) -> Result<(), Error> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answers = join_all(VERBS.iter().map(|verb| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.into()),
                    resource: Some(RESOURCE.into()),
                    verb: Some((*verb).into()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews = reviews.clone();
        async move { reviews.create(&PostParams::default(), &review).await }
    }))
    .await;
    let mut refused = Vec::new();
    for (verb, answer) in VERBS.iter().zip(answers) {
        match answer {
            Ok(review) => {
                let status = review.status.unwrap_or_default();
                if !status.allowed {
                    debug!(verb, namespace, reason = ?status.reason, "access review: not allowed");
                    refused.push((*verb).to_owned());
                }
            }
            Err(kube::Error::Api(s)) if s.code == 401 => return Err(Error::Unauthorized(s.message)),
            Err(e) => {
                debug!(verb, namespace, error = %e, "access review failed; the watch will tell");
                return Ok(());
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::Forbidden {
        verbs: refused,
        resource: format!("{RESOURCE}.{GROUP}"),
        namespace: namespace.to_owned(),
        user_hint: whoami(client).await,
    })
}

/// Who this client is, for the error message (SelfSubjectReview, which every authenticated
/// user may create); `this client` when the API server does not say.
async fn whoami(client: &Client) -> String {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    match reviews.create(&PostParams::default(), &SelfSubjectReview::default()).await {
        Ok(review) => {
            let user = review.status.and_then(|s| s.user_info).and_then(|u| u.username);
            user_hint(user.as_deref())
        }
        Err(e) => {
            debug!(error = %e, "self subject review failed");
            user_hint(None)
        }
    }
}

/// `ServiceAccount "NAME" in namespace "NS" (user "...")`, `user "..."` or `this client`.
fn user_hint(username: Option<&str>) -> String {
    match username {
        None | Some("") => "this client".into(),
        Some(user) => match user.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
            Some((ns, name)) => format!("ServiceAccount {name:?} in namespace {ns:?} (user {user:?})"),
            None => format!("user {user:?}"),
        },
    }
}

/// A watch error that is a refusal: 403 (with the verb that was refused) or 401.
fn refusal(e: &watcher::Error, namespace: &str) -> Option<Error> {
    let (verb, status) = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s)) => ("list", &**s),
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => ("watch", &**s),
        watcher::Error::WatchError(s) => ("watch", &**s),
        _ => return None,
    };
    match status.code {
        401 => Some(Error::Unauthorized(status.message.clone())),
        403 => Some(Error::Forbidden {
            verbs: vec![verb.into()],
            resource: format!("{RESOURCE}.{GROUP}"),
            namespace: namespace.to_owned(),
            user_hint: user_hint(quoted_user(&status.message)),
        }),
        _ => None,
    }
}

/// The user a 403 message names: `... is forbidden: User "system:serviceaccount:ns:sa" cannot
/// list resource ...`.
fn quoted_user(message: &str) -> Option<&str> {
    let rest = &message[message.find("User \"")? + "User \"".len()..];
    Some(&rest[..rest.find('"')?])
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

#[cfg(test)]
mod tests;
