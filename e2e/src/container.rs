//! One container's life: start the process, run its probes, restart it per the pod's
//! restartPolicy (with a doubling back-off) when it exits or fails its liveness probe, and stop it
//! when told: preStop hook, SIGTERM, SIGKILL at the deadline.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container as Spec;
use k8s_openapi::jiff::Timestamp;
use parking_lot::Mutex;
use tokio::process::Child;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::probe::{self, Target};
use crate::process::{self, Spawn};

/// How a run of the process ended.
#[derive(Clone, Debug)]
pub struct Exit {
    pub code: i32,
    pub signal: Option<i32>,
    pub reason: &'static str,
    pub started: Timestamp,
    pub finished: Timestamp,
}

/// What the pod's status reports about the container; written here, read by the status writer.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// The running process (its group leader).
    pub pid: Option<u32>,
    pub running_since: Option<Timestamp>,
    pub started: bool,
    pub ready: bool,
    pub restarts: i32,
    /// The current run's end when not running, else the previous run's.
    pub last_exit: Option<Exit>,
    /// Why it is not running (`CrashLoopBackOff`, `CreateContainerError`), with a message.
    pub waiting: Option<(&'static str, String)>,
    /// No more restarts: the pod is stopping, or the restartPolicy says so.
    pub done: bool,
}

/// A request to stop: the preStop hook and SIGTERM now, SIGKILL at `deadline`.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    pub deadline: Instant,
    pub pre_stop: bool,
}

/// Everything a container's task needs, fixed when the pod starts.
pub struct Container {
    pub spec: Spec,
    pub spawn: Result<Spawn, String>,
    pub target: Target,
    pub restart_policy: String,
    /// terminationGracePeriodSeconds: how long a liveness kill waits before SIGKILL.
    pub grace: Duration,
    pub state: Arc<Mutex<State>>,
    /// Wakes the pod's status writer after each change of `state`.
    pub changed: Arc<Notify>,
}

enum Ended {
    Exited(Exit),
    /// Stopped on request (the pod's deletion or the node's shutdown).
    Stopped(Exit),
}

impl Container {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock());
        self.changed.notify_one();
    }

    /// Runs until stopped, or until the process exits and the restartPolicy says not again.
    pub async fn run(self, mut stop: watch::Receiver<Option<Stop>>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if stop.borrow().is_some() {
                break;
            }
            let began = Instant::now();
            let spawned = match &self.spawn {
                Ok(s) => process::spawn(s).map_err(|e| format!("{}: {e}", s.program.display())),
                Err(e) => Err(e.clone()),
            };
            let exit = match spawned {
                Ok(child) => match self.supervise(child, &mut stop).await {
                    Ended::Stopped(_) => break,
                    Ended::Exited(exit) => exit,
                },
                Err(e) => {
                    tracing::warn!(container = %self.spec.name, error = %e, "container not started");
                    self.update(|s| s.waiting = Some(("CreateContainerError", e)));
                    Exit {
                        code: 128,
                        signal: None,
                        reason: "StartError",
                        started: Timestamp::now(),
                        finished: Timestamp::now(),
                    }
                }
            };
            // A run that lasted is not a crash loop.
            if began.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            let again = match self.restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => exit.code != 0,
                _ => true,
            };
            if !again {
                break;
            }
            self.update(|s| {
                s.restarts += 1;
                s.waiting.get_or_insert(("CrashLoopBackOff", format!("back-off {backoff:?} restarting")));
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = requested(&mut stop) => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        self.update(|s| {
            s.done = true;
            s.ready = false;
        });
    }

    /// One run of the process: probes beside it, until it exits, fails liveness, or a stop comes.
    async fn supervise(&self, mut child: Child, stop: &mut watch::Receiver<Option<Stop>>) -> Ended {
        // A child that was spawned has a pid until it is reaped, which happens below.
        let pid = child.id().expect("a spawned child has a pid");
        let since = Timestamp::now();
        tracing::info!(container = %self.spec.name, pid, "container started");
        self.update(|s| {
            s.pid = Some(pid);
            s.running_since = Some(since);
            s.waiting = None;
            s.started = self.spec.startup_probe.is_none();
            s.ready = false;
        });
        let mut target = self.target.clone();
        target.pid = pid;
        let probes = self.probes(&target);
        tokio::pin!(probes);
        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(exit(status, since)),
            () = &mut probes => {
                // Liveness (or startup) failed: stop as for a deletion, then restart.
                let deadline = Instant::now() + self.grace;
                Ended::Exited(self.terminate(&mut child, &target, Stop { deadline, pre_stop: true }, since).await)
            }
            req = requested(stop) => Ended::Stopped(self.terminate(&mut child, &target, req, since).await),
        };
        let (Ended::Exited(exit) | Ended::Stopped(exit)) = &ended;
        tracing::info!(container = %self.spec.name, pid, code = exit.code, signal = ?exit.signal, reason = exit.reason, "container ended");
        self.update(|s| {
            s.pid = None;
            s.running_since = None;
            s.ready = false;
            s.last_exit = Some(exit.clone());
        });
        ended
    }

    /// The startup probe until it succeeds, then liveness and readiness side by side. Resolves
    /// only when the container should be killed.
    async fn probes(&self, target: &Target) {
        if let Some(p) = &self.spec.startup_probe {
            let ok = probe::run(p, target, None, ControlFlow::Break).await;
            if !ok {
                tracing::info!(container = %self.spec.name, "startup probe failed");
                return;
            }
            self.update(|s| s.started = true);
        }
        let readiness = async {
            match &self.spec.readiness_probe {
                Some(p) => {
                    probe::run(p, target, Some(false), |ready| {
                        self.update(|s| s.ready = ready);
                        ControlFlow::<()>::Continue(())
                    })
                    .await
                }
                None => {
                    self.update(|s| s.ready = true);
                    std::future::pending().await
                }
            }
        };
        let liveness = async {
            match &self.spec.liveness_probe {
                Some(p) => {
                    probe::run(p, target, Some(true), |alive| {
                        if alive { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
                    })
                    .await;
                    tracing::info!(container = %self.spec.name, "liveness probe failed");
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = readiness => {}
            () = liveness => {}
        }
    }

    /// preStop (bounded by the deadline), SIGTERM, then SIGKILL at the deadline.
    async fn terminate(&self, child: &mut Child, target: &Target, req: Stop, since: Timestamp) -> Exit {
        self.update(|s| s.ready = false);
        if req.pre_stop
            && let Some(h) = self.spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
        {
            let limit = req.deadline.saturating_duration_since(Instant::now());
            match probe::hook(h, target, limit).await {
                Ok(()) => tracing::info!(container = %self.spec.name, "preStop hook done"),
                Err(e) => tracing::warn!(container = %self.spec.name, error = %e, "preStop hook failed"),
            }
        }
        process::signal(target.pid, libc::SIGTERM);
        let status = tokio::select! {
            status = child.wait() => status,
            () = tokio::time::sleep_until(req.deadline) => {
                tracing::info!(container = %self.spec.name, "grace period over; SIGKILL");
                process::signal(target.pid, libc::SIGKILL);
                child.wait().await
            }
        };
        exit(status, since)
    }
}

/// The next stop request (at once when the pod's task is gone). Copies it out: the channel's
/// value must not stay borrowed across an await.
async fn requested(stop: &mut watch::Receiver<Option<Stop>>) -> Stop {
    loop {
        if let Some(s) = *stop.borrow_and_update() {
            return s;
        }
        if stop.changed().await.is_err() {
            return Stop { deadline: Instant::now(), pre_stop: false };
        }
    }
}

fn exit(status: std::io::Result<std::process::ExitStatus>, started: Timestamp) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    let (code, signal) = match &status {
        Ok(s) => (s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)), s.signal()),
        Err(_) => (128, None),
    };
    let reason = if code == 0 { "Completed" } else { "Error" };
    Exit { code, signal, reason, started, finished: Timestamp::now() }
}
