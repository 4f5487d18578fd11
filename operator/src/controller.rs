//! The controller: [`Context`], [`reconcile`] and [`error_policy`] (the controller-rs layout).
//!
//! A reconcile renders every child ([`crate::render`]), creates the generated Secret when it is
//! missing, server-side-applies every child that differs from what it last applied, with the one
//! field manager `goim-operator` (never forced: a field another manager owns is a conflict,
//! reported as an error and in the status), then writes the status only when it differs from
//! what the resource already says. An unchanged cluster costs reads only, no write.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::autoscale;
use crate::check::{CheckError, Checker};
use crate::connections::{self, Reading};
use crate::crd::AutoscalingMode;
use crate::crd::{PushCluster, PushClusterStatus, TierStatus};
use crate::metrics::{ErrorLabels, Metrics};
use crate::render::{self, MANAGER, Names, RenderError, Tier, config};
use crate::scale_in;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Render(#[from] RenderError),
    /// A tier's binary refused its rendered file: nothing was applied.
    #[error("{0}")]
    Config(#[from] CheckError),
}

impl Error {
    fn label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(_) => "kubernetes",
            Error::Render(_) => "render",
            Error::Config(CheckError::Refused { .. }) => "config",
            Error::Config(CheckError::Unavailable { .. }) => "config_check",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// How long until an unchanged cluster is looked at again.
    pub resync: Duration,
    /// Checks each rendered file with its tier's binary before anything is applied.
    pub checker: Option<Arc<Checker>>,
    /// The autoscaler's recommendations per cluster (`namespace/name`).
    pub autoscale: std::sync::Mutex<std::collections::HashMap<String, autoscale::History>>,
    /// The origin of the autoscaler's clock.
    pub started: Instant,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Context {
        let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            // Also how fresh status.connections is.
            resync: Duration::from_secs(30),
            checker: None,
            autoscale: Default::default(),
            started: Instant::now(),
        }
    }

    /// With the tier binaries' check of every rendered file ([`crate::check`]).
    pub fn with_checker(mut self, checker: Checker) -> Context {
        self.checker = Some(Arc::new(checker));
        self
    }

    async fn event(&self, pc: &PushCluster, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pc.object_ref(&())).await {
            warn!(error = %e, "cannot publish an event");
        }
    }
}

/// The annotation on every applied child: the sha256 of what the operator last applied.
pub const APPLIED_HASH: &str = "goim-rs.io/applied-hash";

/// Whether every field of `want` is in `have` with the same value (objects: a subset of keys;
/// arrays: the same length, element by element). The API server's defaults add fields.
pub fn is_subset(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            w.iter().all(|(k, v)| h.get(k).is_some_and(|hv| is_subset(v, hv)))
        }
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        (w, h) => w == h,
    }
}

/// Server-side-applies `obj` unless the live object already is what the last apply made and
/// still holds every field of it: then nothing is written. The applied-hash annotation catches
/// removed fields (a subset check alone cannot); the subset check catches drift.
async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut obj = obj.clone();
    let hash = render::sha256_hex(&serde_json::to_vec(&obj).map_err(kube::Error::SerdeError)?);
    obj.meta_mut().annotations.get_or_insert_with(Default::default).insert(APPLIED_HASH.into(), hash.clone());
    if let Some(live) = api.get_opt(&obj.name_any()).await? {
        let applied = live.meta().annotations.as_ref().and_then(|a| a.get(APPLIED_HASH)) == Some(&hash);
        let want = serde_json::to_value(&obj).map_err(kube::Error::SerdeError)?;
        let have = serde_json::to_value(&live).map_err(kube::Error::SerdeError)?;
        if applied && is_subset(&want, &have) {
            return Ok(live);
        }
    }
    api.patch(&obj.name_any(), &PatchParams::apply(MANAGER), &Patch::Apply(&obj)).await
}

async fn apply_all<K>(client: &Client, namespace: &str, objs: &[K]) -> Result<Vec<K>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let mut out = Vec::with_capacity(objs.len());
    for o in objs {
        out.push(apply(client, namespace, o).await?);
    }
    Ok(out)
}

/// Creates the generated Secret once; returns whether it was created.
async fn ensure_generated_secret(ctx: &Context, owner: &render::Owner) -> Result<bool, kube::Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    if api.get_metadata_opt(&owner.names.generated_secret()).await?.is_some() {
        return Ok(false);
    }
    match api
        .create(
            &PostParams { field_manager: Some(MANAGER.into()), ..Default::default() },
            &render::secret::generated(owner),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn tier_status(d: Option<&Deployment>, cluster: &str, tier: Tier) -> TierStatus {
    let selector = render::selector_labels(cluster, tier)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let Some(d) = d else { return TierStatus { selector, ..Default::default() } };
    let s = d.status.clone().unwrap_or_default();
    TierStatus {
        replicas: s.replicas.unwrap_or(0),
        ready: s.ready_replicas.unwrap_or(0),
        updated: s.updated_replicas.unwrap_or(0),
        selector,
    }
}

/// Whether a Deployment has finished rolling out its current spec.
fn rolled_out(d: &Deployment) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas.unwrap_or(0) == want
        && s.ready_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
}

/// Sets a condition, keeping `lastTransitionTime` unless the status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    conditions.push(Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
}

/// The status a reconcile reports: from the applied Deployments, or from a failure.
pub fn status(
    pc: &PushCluster,
    deployments: &[Deployment],
    hashes: &std::collections::BTreeMap<String, String>,
    readings: Option<&[Reading]>,
    failure: Option<&Error>,
) -> PushClusterStatus {
    let names = Names::new(&pc.name_any());
    let ns = pc.namespace().unwrap_or_default();
    let old = pc.status.clone().unwrap_or_default();
    let find = |tier: Tier| deployments.iter().find(|d| d.name_any() == names.workload(tier));
    let generation = pc.metadata.generation;
    let mut conditions = Vec::new();
    let done = !deployments.is_empty() && deployments.iter().all(rolled_out);
    let ready = failure.is_none() && done;
    let (reason, message) = match failure {
        Some(e) => ("ReconcileFailed", e.to_string()),
        None if done => ("AllTiersReady", "every tier runs its current spec".to_owned()),
        None => ("RollingOut", "waiting for the tiers to roll out".to_owned()),
    };
    set_condition(&mut conditions, &old.conditions, "Ready", ready, reason, message.clone(), generation);
    set_condition(
        &mut conditions,
        &old.conditions,
        "Progressing",
        failure.is_none() && !done,
        reason,
        message.clone(),
        generation,
    );
    set_condition(
        &mut conditions,
        &old.conditions,
        "Degraded",
        failure.is_some(),
        reason,
        message,
        generation,
    );
    let svc = format!("{}.{ns}.svc", names.comet_service());
    PushClusterStatus {
        autoscaling: old.autoscaling.clone(),
        observed_generation: generation,
        conditions,
        comet: tier_status(find(Tier::Comet), &names.cluster, Tier::Comet),
        logic: tier_status(find(Tier::Logic), &names.cluster, Tier::Logic),
        job: tier_status(find(Tier::Job), &names.cluster, Tier::Job),
        connections: readings.map_or(old.connections, |r| r.iter().filter_map(|r| r.connections).sum()),
        comets_reporting: readings.map_or(old.comets_reporting, |r| {
            format!("{}/{}", r.iter().filter(|r| r.connections.is_some()).count(), r.len())
        }),
        endpoints: crate::crd::Endpoints {
            tcp: format!("{svc}:{}", pc.spec.comet.service.tcp_port),
            websocket: format!("ws://{svc}:{}/sub", pc.spec.comet.service.websocket_port),
            api: format!("http://{}.{ns}.svc:{}", names.logic_service(), config::LOGIC_HTTP),
        },
        config_hashes: if failure.is_some() && hashes.is_empty() {
            old.config_hashes
        } else {
            hashes.clone()
        },
    }
}

/// Writes `status` when it differs from the resource's; returns whether it wrote.
async fn write_status(
    ctx: &Context,
    pc: &PushCluster,
    status: PushClusterStatus,
) -> Result<bool, kube::Error> {
    if pc.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let api: Api<PushCluster> = Api::namespaced(ctx.client.clone(), &pc.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "goim-rs.io/v1alpha1",
        "kind": "PushCluster",
        "status": status,
    });
    api.patch_status(&pc.name_any(), &PatchParams::apply(MANAGER), &Patch::Apply(&patch)).await?;
    Ok(true)
}

/// Everything a reconcile writes besides the status; returns the applied Deployments.
async fn apply_children(
    ctx: &Context,
    pc: &PushCluster,
    children: &render::Children,
) -> Result<Vec<Deployment>, Error> {
    let owner = render::Owner::of(pc)?;
    let ns = owner.namespace.as_str();
    let c = &ctx.client;
    if ensure_generated_secret(ctx, &owner).await? {
        ctx.event(
            pc,
            EventType::Normal,
            "SecretGenerated",
            format!("generated Secret {}", owner.names.generated_secret()),
        )
        .await;
    }
    apply_all::<ServiceAccount>(c, ns, &children.service_accounts).await?;
    apply_all::<Role>(c, ns, &children.roles).await?;
    apply_all::<RoleBinding>(c, ns, &children.role_bindings).await?;
    apply_all::<ConfigMap>(c, ns, &children.config_maps).await?;
    apply_all::<Service>(c, ns, &children.services).await?;
    apply_all::<PodDisruptionBudget>(c, ns, &children.pdbs).await?;
    let deployments = apply_all::<Deployment>(c, ns, &children.deployments).await?;
    prune_tiers(ctx, pc, children).await?;
    Ok(deployments)
}

/// Deletes the workload of each tier the last reconcile ran and this topology no longer has
/// (job, when the queue goes from kafka to direct): its Deployment, ConfigMap and budget. The
/// tiers last run are in the status's config hashes, so an unchanged cluster costs no request.
async fn prune_tiers(
    ctx: &Context,
    pc: &PushCluster,
    children: &render::Children,
) -> Result<(), kube::Error> {
    let Some(old) = pc.status.as_ref() else { return Ok(()) };
    let names = Names::new(&pc.name_any());
    let ns = pc.namespace().unwrap_or_default();
    for tier in Tier::ALL {
        if !old.config_hashes.contains_key(tier.as_str()) || children.hashes.contains_key(tier.as_str()) {
            continue;
        }
        delete_if_present::<Deployment>(&ctx.client, &ns, &names.workload(tier)).await?;
        delete_if_present::<PodDisruptionBudget>(&ctx.client, &ns, &names.workload(tier)).await?;
        delete_if_present::<ConfigMap>(&ctx.client, &ns, &names.config_map(tier)).await?;
        ctx.event(
            pc,
            EventType::Normal,
            "TierRemoved",
            format!(
                "the topology has no {} any more: its Deployment, ConfigMap and budget are deleted",
                tier.as_str()
            ),
        )
        .await;
    }
    Ok(())
}

async fn delete_if_present<K>(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &kube::api::DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Checks every rendered file, then applies: a file its binary refuses stops the reconcile
/// before any write, with a Warning event carrying the binary's message.
async fn checked_apply(
    ctx: &Context,
    pc: &PushCluster,
    children: &render::Children,
) -> Result<Vec<Deployment>, Error> {
    if let Some(checker) = &ctx.checker
        && let Err(e) = checker.check_all(children, &pc.namespace().unwrap_or_default()).await
    {
        if matches!(e, CheckError::Refused { .. }) {
            ctx.event(pc, EventType::Warning, "InvalidConfig", e.to_string()).await;
        }
        return Err(e.into());
    }
    apply_children(ctx, pc, children).await
}

/// Brings the cluster's children to the spec and reports the status.
pub async fn reconcile(pc: Arc<PushCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let key = format!("{}/{}", pc.namespace().unwrap_or_default(), pc.name_any());
    let mut soon = false;
    let result = async {
        let ns = pc.namespace().unwrap_or_default();
        let (pods, readings) = connections::read(&ctx.client, &ns, &pc.name_any()).await?;
        let (replicas, decision) = comet_replicas(&ctx, &pc, &pods, &readings, &key);
        let replicas = match scale_in_step(&ctx, &pc, &pods, &readings, replicas).await? {
            ScaleIn::Go(n) => n,
            ScaleIn::Wait(n) => {
                soon = true;
                n
            }
        };
        let mut wanted = (*pc).clone();
        wanted.spec.comet.pod.replicas = replicas;
        let children = render::children(&wanted)?;
        let deployments = checked_apply(&ctx, &pc, &children).await?;
        Ok::<_, Error>((deployments, children.hashes, readings, decision))
    }
    .await;
    let (status, outcome) = match result {
        Ok((deployments, hashes, readings, decision)) => {
            let mut s = status(&pc, &deployments, &hashes, Some(&readings), None);
            s.autoscaling = decision;
            (s, Ok(()))
        }
        Err(e) => (status(&pc, &[], &Default::default(), None, Some(&e)), Err(e)),
    };
    let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let was_ready = pc
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let written = write_status(&ctx, &pc, status).await;
    ctx.metrics.set_ready(&key, Some(ready));
    ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
    if ready != was_ready {
        let (t, reason) = if ready { (EventType::Normal, "Ready") } else { (EventType::Warning, "NotReady") };
        ctx.event(&pc, t, reason, format!("PushCluster {key} is {}ready", if ready { "" } else { "not " }))
            .await;
    }
    outcome?;
    if written? {
        info!(cluster = %key, ready, "status updated");
    }
    let autoscaled = pc.spec.autoscaling.enabled && pc.spec.autoscaling.mode == AutoscalingMode::Builtin;
    Ok(Action::requeue(if soon {
        Duration::from_secs(2)
    } else if autoscaled {
        // The autoscaler's reading interval.
        Duration::from_secs(10).min(ctx.resync)
    } else if ready {
        ctx.resync
    } else {
        Duration::from_secs(10)
    }))
}

/// The comet replicas to run: the autoscaler's decision (builtin mode), else the spec's.
fn comet_replicas(
    ctx: &Context,
    pc: &PushCluster,
    pods: &[k8s_openapi::api::core::v1::Pod],
    readings: &[Reading],
    key: &str,
) -> (i32, Option<autoscale::Decision>) {
    let a = &pc.spec.autoscaling;
    let spec = pc.spec.comet.pod.replicas;
    if !a.enabled || a.mode != AutoscalingMode::Builtin {
        ctx.autoscale.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        return (spec, None);
    }
    let now = ctx.started.elapsed().as_secs() as i64;
    let current =
        pc.status.as_ref().and_then(|s| s.autoscaling.as_ref()).map_or(spec, |d| d.desired_replicas);
    let policy = autoscale::Policy {
        min: a.min_replicas,
        max: a.max_replicas,
        target_per_comet: a.target_connections_per_comet,
        scale_down_stabilization: a.scale_down_stabilization_seconds,
        max_step_down: 1,
    };
    let ready = pods.iter().filter(|p| connections::is_ready(p)).count() as i32;
    let reading = autoscale::Reading {
        at: now,
        connections: readings.iter().filter_map(|r| r.connections).sum(),
        reporting: readings.iter().filter(|r| r.connections.is_some()).count() as i32,
        ready,
    };
    let mut histories = ctx.autoscale.lock().unwrap_or_else(|p| p.into_inner());
    let history =
        histories.entry(key.to_owned()).or_insert_with(|| autoscale::History::starting(now, current));
    let decision = autoscale::decide(&policy, current, &reading, history);
    if decision.desired_replicas != current {
        info!(cluster = %key, from = current, to = decision.desired_replicas, reason = %decision.reason, "autoscaling comets");
    }
    (decision.desired_replicas, Some(decision))
}

enum ScaleIn {
    /// Render these replicas.
    Go(i32),
    /// Keep these (the live ones) a moment: the pods' deletion costs were just written.
    Wait(i32),
}

/// Before comet replicas go down, the pods to remove carry the lowest deletion cost
/// ([`crate::scale_in`]); until they do, the live replicas stay.
async fn scale_in_step(
    ctx: &Context,
    pc: &PushCluster,
    pods: &[k8s_openapi::api::core::v1::Pod],
    readings: &[Reading],
    want: i32,
) -> Result<ScaleIn, Error> {
    let running = pods.len() as i32;
    if want >= running {
        return Ok(ScaleIn::Go(want));
    }
    let ns = pc.namespace().unwrap_or_default();
    let live = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&Names::new(&pc.name_any()).workload(Tier::Comet))
        .await?
        .and_then(|d| d.spec.replicas)
        .unwrap_or(want);
    if want >= live {
        return Ok(ScaleIn::Go(want));
    }
    let remove = (running - want) as usize;
    let costs = scale_in::costs(pods, readings, remove);
    if scale_in::ordered(pods, &costs, remove) {
        return Ok(ScaleIn::Go(want));
    }
    let patched = scale_in::annotate(&ctx.client, &ns, pods, &costs).await?;
    ctx.event(
        pc,
        EventType::Normal,
        "ScaleInPrepared",
        format!("{patched} comet pods annotated so the {remove} least connected go first ({live} to {want})"),
    )
    .await;
    Ok(ScaleIn::Wait(live))
}

pub fn error_policy(pc: Arc<PushCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(cluster = %pc.name_any(), error = %error, "reconcile failed");
    ctx.metrics.errors.get_or_create(&ErrorLabels { error: error.label().into() }).inc();
    Action::requeue(Duration::from_secs(10))
}

/// Runs the controller until `shutdown` resolves: PushClusters in every namespace, and the
/// children it owns (a change to one reconciles its cluster).
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    Controller::new(Api::<PushCluster>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::is_subset;

    #[test]
    fn subset_allows_server_defaults_but_not_differences() {
        let want = json!({"spec": {"ports": [{"name": "grpc", "port": 3109}], "clusterIP": "None"}});
        let defaulted = json!({"spec": {"ports": [{"name": "grpc", "port": 3109, "protocol": "TCP"}], "clusterIP": "None", "type": "ClusterIP"}});
        assert!(is_subset(&want, &defaulted));
        let changed = json!({"spec": {"ports": [{"name": "grpc", "port": 3110}], "clusterIP": "None"}});
        assert!(!is_subset(&want, &changed));
        let more = json!({"spec": {"ports": [{"name": "grpc", "port": 3109}, {"name": "x", "port": 1}], "clusterIP": "None"}});
        assert!(!is_subset(&want, &more), "arrays must match in length");
        assert!(!is_subset(&json!({"a": false}), &json!({})), "a field the server omits is not there");
    }
}
