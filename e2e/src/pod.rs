//! One pod's life on the node: the sandbox (network namespace, address, volume files), a task
//! per container, the status writer, and the end: on deletion the containers stop within the
//! grace period and only then the pod object goes; on the node's shutdown they are killed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::container::{Container, State, Stop};
use crate::env::{self, Addresses};
use crate::names::Names;
use crate::network::{Bridge, Ipam, PodNetwork};
use crate::probe::Target;
use crate::process::{self, Spawn};
use crate::source::{self, Sources};
use crate::status::PodStatus;
use crate::volume;

/// What every pod's task shares: the API client, the settings, the bridge and the address pool.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub bridge: Bridge,
    pub ipam: Ipam,
    pub names: Arc<Names>,
}

/// Why a pod's containers stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// deletionTimestamp is set: graceful, then the object is deleted.
    Deleted,
    /// The object is gone already (force-deleted): kill.
    Gone,
    /// The node shuts down: kill, and leave the object.
    Shutdown,
}

/// Runs the pod the watch channel holds (the latest version of it) until it ends.
pub async fn run(
    ctx: Arc<Context>,
    mut pod: watch::Receiver<Pod>,
    gone: CancellationToken,
    shutdown: CancellationToken,
) {
    let p = pod.borrow().clone();
    let span =
        tracing::info_span!("pod", pod = %format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()));
    async move {
        if p.metadata.deletion_timestamp.is_some() {
            delete(&ctx.client, &p).await;
            return;
        }
        let ip = match ctx.ipam.allocate() {
            Ok(ip) => ip,
            Err(e) => {
                tracing::warn!(error = %e, "pod not started");
                return;
            }
        };
        let dir = ctx.config.state_dir.join("pods").join(p.uid().unwrap_or_default());
        let sandbox = tokio::select! {
            s = sandbox(&ctx, &p, &dir, ip) => s,
            _ = ended(&mut pod, &gone, &shutdown) => None,
        };
        if let Some((net, containers)) = sandbox {
            let end = supervise(&ctx, &p, &mut pod, containers, net.ip.to_string(), &gone, &shutdown).await;
            if end == End::Deleted {
                delete(&ctx.client, &p).await;
            }
            net.remove().await;
        } else if pod.borrow().metadata.deletion_timestamp.is_some() {
            delete(&ctx.client, &p).await;
        }
        ctx.names.remove(&p.uid().unwrap_or_default());
        ctx.ipam.release(ip);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, dir = %dir.display(), "pod files not removed");
        }
        tracing::info!("pod done");
    }
    .instrument(span)
    .await
}

/// Network, volumes and the containers' process settings; retried every 2 s (a ConfigMap the
/// pod needs may not exist yet) until it works. The caller bounds it by the pod's end.
async fn sandbox(
    ctx: &Context,
    pod: &Pod,
    dir: &Path,
    ip: std::net::Ipv4Addr,
) -> Option<(PodNetwork, Vec<Container>)> {
    loop {
        match PodNetwork::create(&ctx.bridge, &pod.uid().unwrap_or_default(), ip).await {
            Ok(net) => match containers(ctx, pod, dir, &net).await {
                Ok(c) => return Some((net, c)),
                Err(e) => {
                    tracing::warn!(error = %e, "pod sandbox not ready; retrying");
                    net.remove().await;
                }
            },
            Err(e) => tracing::warn!(error = %e, "pod network not created; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn containers(
    ctx: &Context,
    pod: &Pod,
    dir: &Path,
    net: &PodNetwork,
) -> Result<Vec<Container>, source::Error> {
    let sources = Sources::new(ctx.client.clone(), pod);
    let (pod_ip, host_ip) = (net.ip.to_string(), ctx.config.pod_cidr.gateway().to_string());
    let volumes = volume::write_all(&sources, pod, dir, &pod_ip, &host_ip).await?;
    let spec = pod.spec.clone().unwrap_or_default();
    // The pod's hostname and the cluster's Service names, as the kubelet's /etc/hosts and
    // cluster DNS would give them.
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    let (hosts, resolv) = ctx.names.add(
        &pod.uid().unwrap_or_default(),
        dir,
        &pod.namespace().unwrap_or_default(),
        &hostname,
        net.ip,
    )?;
    let name_mounts = [(hosts, "/etc/hosts"), (resolv, "/etc/resolv.conf")]
        .map(|(source, target)| volume::Mount { source, target: target.into(), read_only: false });
    let logs = ctx.config.state_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let grace = Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
    let kubernetes_service = match (ctx.config.kubernetes_service, &ctx.config.api_server) {
        (Some(addr), _) => Some((addr.ip().to_string(), addr.port())),
        (None, Some(_)) => Some(("kubernetes.default.svc".to_owned(), crate::proxy::API_PORT)),
        (None, None) => None,
    };
    let addresses = Addresses { pod_ip: &pod_ip, host_ip: &host_ip, kubernetes_service };
    // One for the pod: every container's change wakes the pod's status writer.
    let changed = Arc::new(Notify::new());
    let mut out = Vec::new();
    for c in spec.containers {
        let vars = env::resolve(&sources, pod, &c, &addresses).await?;
        let mut mounts = name_mounts.to_vec();
        mounts.extend(volume::mounts(&c, &volumes)?);
        let image_dir = c.image.as_deref().and_then(|i| ctx.config.image_dir(i)).map(Path::to_path_buf);
        let argv: Vec<String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .map(|a| env::expand(a, &vars))
            .collect();
        let log =
            logs.join(format!("{}_{}_{}.log", pod.namespace().unwrap_or_default(), pod.name_any(), c.name));
        let spawn = match argv.split_first() {
            None => Err("no command: this node knows no image entrypoints".to_owned()),
            Some((first, args)) => match process::resolve(first, image_dir.as_deref()) {
                None => Err(format!("{first}: not found in {:?} or on the host", image_dir.as_deref())),
                Some(program) => Ok(Spawn {
                    program,
                    args: args.to_vec(),
                    env: vars.clone(),
                    netns: net.netns_path(),
                    mounts,
                    hostname: hostname.clone(),
                    workdir: c.working_dir.as_ref().map(PathBuf::from),
                    log,
                }),
            },
        };
        let target =
            Target { ip: net.ip, pid: 0, ports: c.ports.clone().unwrap_or_default(), image_dir, env: vars };
        out.push(Container {
            spec: c,
            spawn,
            target,
            restart_policy: spec.restart_policy.clone().unwrap_or_else(|| "Always".into()),
            grace,
            state: Arc::new(Mutex::new(State::default())),
            changed: changed.clone(),
        });
    }
    Ok(out)
}

/// Starts the containers and reports their status until the pod ends; then stops them.
async fn supervise(
    ctx: &Context,
    pod: &Pod,
    rx: &mut watch::Receiver<Pod>,
    containers: Vec<Container>,
    pod_ip: String,
    gone: &CancellationToken,
    shutdown: &CancellationToken,
) -> End {
    // The API requires a container, so the first one's is there.
    let changed = containers.first().map_or_else(Default::default, |c| c.changed.clone());
    let (stop_tx, stop_rx) = watch::channel(None);
    let states: Vec<_> = containers
        .iter()
        .map(|c| (c.spec.name.clone(), c.spec.image.clone().unwrap_or_default(), c.state.clone()))
        .collect();
    let mut tasks = JoinSet::new();
    for c in containers {
        tasks.spawn(c.run(stop_rx.clone()).in_current_span());
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let mut status = PodStatus::new(pod_ip, ctx.config.pod_cidr.gateway().to_string());
    let report = async |status: &mut PodStatus| {
        let snapshot: Vec<(String, String, State)> =
            states.iter().map(|(n, i, s)| (n.clone(), i.clone(), s.lock().clone())).collect();
        let patch = status.patch(true, &snapshot);
        if let Err(e) =
            api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch)).await
        {
            // A refused status (422) is a bug of this node, not a race: say so loudly.
            match &e {
                kube::Error::Api(s) if s.code == 422 => tracing::warn!(error = %e, "status refused"),
                _ => tracing::debug!(error = %e, "status not written"),
            }
        }
    };
    let end = loop {
        report(&mut status).await;
        tokio::select! {
            () = changed.notified() => {}
            e = ended(rx, gone, shutdown) => break e,
            // A kubelet's periodic resync: a lost write heals.
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    };
    let grace = match end {
        End::Deleted => {
            let p = rx.borrow();
            let spec = p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds);
            p.metadata.deletion_grace_period_seconds.or(spec).unwrap_or(30).max(0) as u64
        }
        End::Gone | End::Shutdown => 0,
    };
    tracing::info!(?end, grace, "stopping the pod's containers");
    stop_tx.send_replace(Some(Stop {
        deadline: Instant::now() + Duration::from_secs(grace),
        pre_stop: end == End::Deleted,
    }));
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = changed.notified(), if end == End::Deleted => report(&mut status).await,
        }
    }
    if end == End::Deleted {
        report(&mut status).await;
    }
    end
}

/// Resolves when the pod ends, and says how.
async fn ended(rx: &mut watch::Receiver<Pod>, gone: &CancellationToken, shutdown: &CancellationToken) -> End {
    tokio::select! {
        r = rx.wait_for(|p| p.metadata.deletion_timestamp.is_some()) => if r.is_ok() { End::Deleted } else { End::Gone },
        () = gone.cancelled() => End::Gone,
        () = shutdown.cancelled() => End::Shutdown,
    }
}

/// Deletes the pod object at once, as a kubelet does once its containers are gone (the UID
/// precondition: never a new pod of the same name).
async fn delete(client: &Client, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => tracing::info!("pod object deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(error = %e, "pod object not deleted"),
    }
}
