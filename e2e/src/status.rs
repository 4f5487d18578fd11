//! The pod's status as a kubelet reports it: phase, addresses, conditions and one status per
//! container, sent as a strategic merge patch (conditions merge by type, so the scheduler's
//! PodScheduled stays).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::container::{Exit, State};

/// The pod-level facts, and the transition times of its conditions (kept between patches so a
/// condition's lastTransitionTime moves only when its status does).
pub struct PodStatus {
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: Timestamp,
    transitions: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl PodStatus {
    pub fn new(pod_ip: String, host_ip: String) -> PodStatus {
        PodStatus { pod_ip, host_ip, start_time: Timestamp::now(), transitions: BTreeMap::new() }
    }

    /// The patch for containers `(name, image, state)`; `network` says whether the sandbox
    /// (netns, volumes) is up yet.
    pub fn patch(&mut self, network: bool, containers: &[(String, String, State)]) -> Value {
        let all = |f: fn(&State) -> bool| !containers.is_empty() && containers.iter().all(|(_, _, s)| f(s));
        let ready = all(|s| s.ready && s.pid.is_some());
        let phase = if containers.iter().any(|(_, _, s)| s.pid.is_some() || !s.done) {
            if containers.iter().any(|(_, _, s)| s.pid.is_some() || s.last_exit.is_some()) {
                "Running"
            } else {
                "Pending"
            }
        } else if containers.iter().all(|(_, _, s)| s.last_exit.as_ref().is_some_and(|e| e.code == 0)) {
            "Succeeded"
        } else {
            "Failed"
        };
        let conditions: Vec<Value> = [
            ("PodReadyToStartContainers", network),
            ("Initialized", true),
            ("ContainersReady", ready),
            ("Ready", ready),
        ]
        .into_iter()
        .map(|(kind, ok)| self.condition(kind, ok))
        .collect();
        let statuses: Vec<ContainerStatus> = containers.iter().map(|(n, i, s)| container(n, i, s)).collect();
        let mut status = json!({
            "phase": phase,
            "hostIP": self.host_ip,
            "hostIPs": [{ "ip": self.host_ip }],
            "startTime": Time(self.start_time),
            "conditions": conditions,
            "containerStatuses": statuses,
        });
        if network {
            status["podIP"] = json!(self.pod_ip);
            status["podIPs"] = json!([{ "ip": self.pod_ip }]);
        }
        json!({ "status": status })
    }

    fn condition(&mut self, kind: &'static str, ok: bool) -> Value {
        let (_, since) = *self
            .transitions
            .entry(kind)
            .and_modify(|t| {
                if t.0 != ok {
                    *t = (ok, Timestamp::now())
                }
            })
            .or_insert((ok, Timestamp::now()));
        json!({ "type": kind, "status": if ok { "True" } else { "False" }, "lastTransitionTime": Time(since) })
    }
}

fn terminated(e: &Exit, id: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: e.code,
            signal: e.signal,
            reason: Some(e.reason.into()),
            started_at: Some(Time(e.started)),
            finished_at: Some(Time(e.finished)),
            container_id: Some(id.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(name: &str, image: &str, s: &State) -> ContainerStatus {
    // No runtime gives containers ids here; the pid names the process (`ps`, `kill`).
    let id = s.pid.map(|p| format!("e2e://{p}")).unwrap_or_default();
    let state = match (s.pid, &s.waiting, &s.last_exit) {
        (Some(_), _, _) => ContainerState {
            running: Some(ContainerStateRunning { started_at: s.running_since.map(Time) }),
            ..Default::default()
        },
        (None, Some((reason, message)), _) if !s.done => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some((*reason).into()),
                message: Some(message.clone()),
            }),
            ..Default::default()
        },
        (None, _, Some(e)) => terminated(e, ""),
        (None, _, None) => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some("ContainerCreating".into()), message: None }),
            ..Default::default()
        },
    };
    // The previous run, while running again or backing off to (as a kubelet reports it).
    let last_state = match (s.pid, &s.last_exit) {
        (Some(_), Some(e)) => Some(terminated(e, "")),
        (None, Some(e)) if !s.done && s.waiting.is_some() => Some(terminated(e, "")),
        _ => None,
    };
    ContainerStatus {
        name: name.to_owned(),
        image: image.to_owned(),
        image_id: String::new(),
        container_id: (!id.is_empty()).then_some(id),
        ready: s.ready && s.pid.is_some(),
        restart_count: s.restarts,
        started: Some(s.pid.is_some() && s.started),
        state: Some(state),
        last_state,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_ready_container_makes_the_pod_ready_with_its_ip() {
        let mut p = PodStatus::new("10.250.0.2".into(), "10.250.0.1".into());
        let s = State { pid: Some(42), ready: true, started: true, ..Default::default() };
        let v = p.patch(true, &[("c".into(), "img".into(), s)]);
        assert_eq!(v["status"]["phase"], "Running");
        assert_eq!(v["status"]["podIP"], "10.250.0.2");
        let ready =
            v["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(v["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(v["status"]["containerStatuses"][0]["containerID"], "e2e://42");
    }

    #[test]
    fn a_container_backing_off_is_waiting_with_its_last_run_as_last_state() {
        let mut p = PodStatus::new("10.250.0.2".into(), "10.250.0.1".into());
        let now = Timestamp::now();
        let exit = Exit { code: 3, signal: None, reason: "Error", started: now, finished: now };
        let s = State {
            restarts: 1,
            last_exit: Some(exit),
            waiting: Some(("CrashLoopBackOff", "back-off".into())),
            ..Default::default()
        };
        let v = p.patch(true, &[("c".into(), "img".into(), s)]);
        let c = &v["status"]["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 3);
        assert_eq!(v["status"]["phase"], "Running");
    }

    #[test]
    fn a_container_that_is_not_ready_keeps_the_pod_unready() {
        let mut p = PodStatus::new("10.250.0.2".into(), "10.250.0.1".into());
        let s = State { pid: Some(42), ready: false, started: true, ..Default::default() };
        let v = p.patch(true, &[("c".into(), "img".into(), s)]);
        let ready =
            v["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(v["status"]["containerStatuses"][0]["ready"], false);
    }
}
