//! The pod loop: watch the pods bound to this node and keep one task per pod UID, fed with the
//! pod's latest version; a pod the API no longer has (force-deleted, or missing from a relist)
//! is told it is gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pod::{self, Context};

/// A running pod task's inputs.
struct Entry {
    /// The pod's latest version; the task holds the receiver.
    pod: watch::Sender<Pod>,
    /// Cancelled when the object is gone from the API.
    gone: CancellationToken,
}

/// Runs until `shutdown`; pod tasks go on `tasks`, and stop on `shutdown` too.
pub async fn run(ctx: Arc<Context>, tasks: &TaskTracker, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let events = watcher(api, config).default_backoff();
    tokio::pin!(events);
    let mut pods: HashMap<String, Entry> = HashMap::new();
    // The UIDs a relist has shown so far (between Init and InitDone).
    let mut listed: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = shutdown.cancelled() => break,
        };
        match event {
            None => break,
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
            Some(Ok(watcher::Event::InitApply(p))) => {
                if let Some(l) = &mut listed {
                    l.insert(p.uid().unwrap_or_default());
                }
                apply(&ctx, tasks, &shutdown, &mut pods, p);
            }
            Some(Ok(watcher::Event::InitDone)) => {
                if let Some(l) = listed.take() {
                    pods.retain(|uid, e| {
                        let keep = l.contains(uid);
                        if !keep {
                            e.gone.cancel();
                        }
                        keep
                    });
                }
            }
            Some(Ok(watcher::Event::Apply(p))) => apply(&ctx, tasks, &shutdown, &mut pods, p),
            Some(Ok(watcher::Event::Delete(p))) => {
                if let Some(e) = pods.remove(&p.uid().unwrap_or_default()) {
                    e.gone.cancel();
                }
            }
        }
        // A task that ended (its pod deleted) has dropped its receiver.
        pods.retain(|_, e| !e.pod.is_closed());
    }
}

fn apply(
    ctx: &Arc<Context>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    pods: &mut HashMap<String, Entry>,
    p: Pod,
) {
    let uid = p.uid().unwrap_or_default();
    if let Some(e) = pods.get(&uid) {
        e.pod.send_replace(p);
        return;
    }
    let finished = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
    if finished && p.metadata.deletion_timestamp.is_none() {
        // A pod that ran to completion before this node (re)started: nothing to run.
        return;
    }
    tracing::info!(pod = %p.name_any(), namespace = %p.namespace().unwrap_or_default(), "pod bound to this node");
    let (tx, rx) = watch::channel(p);
    let gone = CancellationToken::new();
    tasks.spawn(pod::run(ctx.clone(), rx, gone.clone(), shutdown.clone()));
    pods.insert(uid, Entry { pod: tx, gone });
}
