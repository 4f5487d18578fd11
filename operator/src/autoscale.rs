//! The connection autoscaler's decision, as a pure function of the policy, the replicas now,
//! the readings and what it recommended before.
//!
//! - Each decision recommends `ceil(connections / target)` comets, within min and max. When some
//!   ready comets did not answer, the connections are extrapolated from those that did (the
//!   reported sum can only be low), and no scale-down is made on such a reading.
//! - Up: at once, to the recommendation, but at most doubling (and at least +1) per decision,
//!   so a spike cannot ask for max at once from a single reading.
//! - Down: only to the highest recommendation of the stabilisation window (HPA's rule: a dip
//!   must last the whole window), and at most [`Policy::max_step_down`] comets per decision,
//!   because each comet that goes drains its clients onto the others.
//! - No readings at all (no ready comet answered): hold.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// What the autoscaler is asked to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub min: i32,
    pub max: i32,
    pub target_per_comet: i64,
    /// Seconds a lower recommendation must hold before comets are removed.
    pub scale_down_stabilization: i64,
    pub max_step_down: i32,
}

/// One reading of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Seconds (any monotonic origin).
    pub at: i64,
    /// Connections summed over the comets that answered.
    pub connections: i64,
    pub reporting: i32,
    pub ready: i32,
}

/// The recommendations of the stabilisation window (the autoscaler's only memory).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    recommendations: VecDeque<(i64, i32)>,
}

/// A decision and why, for the status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Decision {
    pub desired_replicas: i32,
    /// The replicas the connections alone ask for (before the window and the step bounds).
    pub recommended_replicas: i32,
    /// Connections the decision used (extrapolated when some comets did not answer).
    pub connections: i64,
    pub reason: String,
}

impl History {
    /// A history that behaves as if `replicas` had been recommended over the whole window
    /// ending `now` (after a restart, or when autoscaling is switched on: no scale-down
    /// before a full window of readings).
    pub fn starting(now: i64, replicas: i32) -> History {
        History { recommendations: VecDeque::from([(now, replicas)]) }
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// Decides the comet replicas for `current` replicas and `reading`.
pub fn decide(policy: &Policy, current: i32, reading: &Reading, history: &mut History) -> Decision {
    let clamp = |n: i64| n.clamp(policy.min.into(), policy.max.into()) as i32;
    let window_start = reading.at - policy.scale_down_stabilization;
    while history.recommendations.front().is_some_and(|(t, _)| *t <= window_start) {
        history.recommendations.pop_front();
    }
    if reading.reporting == 0 {
        return Decision {
            desired_replicas: clamp(current.into()),
            recommended_replicas: current,
            connections: 0,
            reason: format!("holding at {current}: none of {} ready comets answered", reading.ready),
        };
    }
    let partial = reading.reporting < reading.ready;
    let connections = if partial {
        ceil_div(reading.connections * i64::from(reading.ready), reading.reporting.into())
    } else {
        reading.connections
    };
    let recommended = clamp(ceil_div(connections, policy.target_per_comet.max(1)).max(1));
    let per = |n: i32| connections / i64::from(n.max(1));
    let (desired, reason) = if recommended > current {
        let step = current.max(1);
        let desired = recommended.min(current + step);
        let bounded =
            if desired < recommended { format!(" (at most +{step} per step)") } else { String::new() };
        (
            desired,
            format!(
                "{connections} connections, {} per comet over target {}: up to {desired}{bounded}",
                per(current),
                policy.target_per_comet
            ),
        )
    } else if recommended < current {
        if partial {
            (
                current,
                format!(
                    "holding at {current}: {} of {} comets answered, no scale-down on a partial reading",
                    reading.reporting, reading.ready
                ),
            )
        } else {
            let held = history
                .recommendations
                .iter()
                .map(|(_, r)| *r)
                .chain([recommended])
                .max()
                .unwrap_or(recommended);
            let desired = held.max(current - policy.max_step_down.max(1)).min(current);
            if desired == current {
                (
                    current,
                    format!(
                        "holding at {current}: {recommended} would do, but the last {}s asked for {held}",
                        policy.scale_down_stabilization
                    ),
                )
            } else {
                (
                    desired,
                    format!(
                        "{connections} connections, {} per comet under target {}: down to {desired}",
                        per(current),
                        policy.target_per_comet
                    ),
                )
            }
        }
    } else {
        (
            current,
            format!(
                "{connections} connections, {} per comet: {current} comets fit target {}",
                per(current),
                policy.target_per_comet
            ),
        )
    };
    history.recommendations.push_back((reading.at, recommended));
    Decision {
        desired_replicas: clamp(desired.into()),
        recommended_replicas: recommended,
        connections,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy =
        Policy { min: 2, max: 20, target_per_comet: 1000, scale_down_stabilization: 300, max_step_down: 1 };

    /// Runs `series` (seconds, connections) with every comet answering, from `start` replicas,
    /// applying each decision; returns the replicas after each reading.
    fn run(start: i32, series: &[(i64, i64)]) -> Vec<i32> {
        let mut history = History::starting(series[0].0, start);
        let mut replicas = start;
        series
            .iter()
            .map(|&(at, connections)| {
                let r = Reading { at, connections, reporting: replicas, ready: replicas };
                replicas = decide(&POLICY, replicas, &r, &mut history).desired_replicas;
                replicas
            })
            .collect()
    }

    #[test]
    fn a_ramp_scales_out_promptly_at_most_doubling_per_step() {
        // 0 to 12,000 connections over 4 readings 30 s apart.
        let replicas = run(2, &[(0, 1500), (30, 5000), (60, 9000), (90, 12000), (120, 12000)]);
        assert_eq!(replicas, [2, 4, 8, 12, 12]);
    }

    #[test]
    fn a_dip_shorter_than_the_window_removes_no_comet() {
        let mut series = vec![(0, 8000)];
        // Down to 2,000 for 4 minutes, back up: the window is 5 minutes.
        series.extend((1..=8).map(|i| (i * 30, 2000)));
        series.push((270, 8000));
        let replicas = run(8, &series);
        assert!(replicas.iter().all(|&r| r == 8), "{replicas:?}");
    }

    #[test]
    fn a_lasting_drop_scales_in_one_comet_at_a_time_after_the_window() {
        let series: Vec<(i64, i64)> = (0..=20).map(|i| (i * 30, 2500)).collect();
        let replicas = run(8, &series);
        // The window (300 s) must pass before the first removal, then one per reading.
        let first_drop = replicas.iter().position(|&r| r < 8).unwrap();
        assert!(series[first_drop].0 >= 300, "scaled in at {}s: {replicas:?}", series[first_drop].0);
        for w in replicas.windows(2) {
            assert!(w[0] - w[1] <= 1, "more than one comet at once: {replicas:?}");
        }
        assert_eq!(*replicas.last().unwrap(), 3, "ceil(2500 / 1000)");
    }

    #[test]
    fn flapping_connections_do_not_flap_the_replicas() {
        let series: Vec<(i64, i64)> =
            (0..40).map(|i| (i * 30, if i % 2 == 0 { 6000 } else { 3000 })).collect();
        let replicas = run(6, &series);
        assert!(replicas.iter().all(|&r| r == 6), "{replicas:?}");
    }

    #[test]
    fn a_spike_is_met_then_held_for_the_window() {
        let mut series = vec![(0, 2000), (30, 16000)];
        series.extend((2..=14).map(|i| (i * 30, 2000)));
        let replicas = run(2, &series);
        assert_eq!(&replicas[..3], [2, 4, 4], "up at most doubling, then held");
        assert!(replicas[3..10].iter().all(|&r| r == 4), "held through the window: {replicas:?}");
        assert!(replicas.last() < Some(&4), "down after it: {replicas:?}");
    }

    #[test]
    fn a_comet_that_stops_answering_never_causes_a_scale_in() {
        let mut history = History::starting(-1000, 6);
        // 5 of 6 answer with 2,500 in all: the total is at least that, probably 3,000.
        let r = Reading { at: 0, connections: 2500, reporting: 5, ready: 6 };
        let d = decide(&POLICY, 6, &r, &mut history);
        assert_eq!(d.desired_replicas, 6, "{}", d.reason);
        assert!(d.reason.contains("5 of 6"), "{}", d.reason);
        // But it still scales out on an extrapolated surge.
        let r = Reading { at: 30, connections: 10000, reporting: 5, ready: 6 };
        let d = decide(&POLICY, 6, &r, &mut history);
        assert_eq!((d.connections, d.desired_replicas), (12000, 12), "{}", d.reason);
        // Nobody answers: hold.
        let r = Reading { at: 60, connections: 0, reporting: 0, ready: 6 };
        assert_eq!(decide(&POLICY, 6, &r, &mut history).desired_replicas, 6);
    }

    #[test]
    fn min_and_max_bound_every_decision() {
        assert_eq!(run(2, &[(0, 0), (30, 0)]), [2, 2], "min 2 even with no client");
        assert_eq!(run(16, &[(0, 1_000_000)]), [20], "max 20");
    }
}
