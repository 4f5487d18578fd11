//! Scale-in removes the least-connected comets: before comet replicas go down, every ready comet
//! pod carries `controller.kubernetes.io/pod-deletion-cost` so that the ReplicaSet controller,
//! which removes the lowest cost first (after pods that are not ready), picks the comets with
//! the fewest clients. The pods go through their drain (preStop) as any deleted pod does.
//!
//! Two steps, because the ReplicaSet controller reads pods from its own watch cache: one
//! reconcile annotates, a later one (2 s on) lowers the replicas once the annotations already
//! order the pods as wanted. Costs are connection counts, except that the kept pods are raised
//! above the highest chosen one, so the order is strict even when counts tie. A ready comet that
//! did not answer is kept (its count is unknown, possibly the largest).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::connections::{Reading, is_ready};
use crate::render::MANAGER;

pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The deletion cost each ready comet pod should carry so that the `remove` least-connected go
/// first. Empty when the pods that are not ready already cover `remove`.
pub fn costs(pods: &[Pod], readings: &[Reading], remove: usize) -> BTreeMap<String, i32> {
    let count: BTreeMap<&str, Option<i64>> =
        readings.iter().map(|r| (r.pod.as_str(), r.connections)).collect();
    let ready: Vec<&Pod> = pods.iter().filter(|p| is_ready(p)).collect();
    let not_ready = pods.len() - ready.len();
    if not_ready >= remove {
        return BTreeMap::new();
    }
    let clamp = |n: i64| n.clamp(0, i64::from(i32::MAX / 2)) as i32;
    // Unknown counts last, then by connections, then by name (a stable choice).
    let mut ranked: Vec<(Option<i32>, String)> = ready
        .iter()
        .map(|p| (count.get(p.name_any().as_str()).copied().flatten().map(clamp), p.name_any()))
        .collect();
    ranked.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
    let chosen = (remove - not_ready).min(ranked.len());
    let highest_chosen = ranked[..chosen].iter().filter_map(|(c, _)| *c).max().unwrap_or(0);
    ranked
        .iter()
        .enumerate()
        .map(|(i, (c, name))| {
            let cost = match (i < chosen, c) {
                (true, c) => c.unwrap_or(0),
                (false, Some(c)) => (*c).max(highest_chosen + 1),
                (false, None) => i32::MAX,
            };
            (name.clone(), cost)
        })
        .collect()
}

fn annotated(pod: &Pod) -> i32 {
    pod.annotations().get(DELETION_COST).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Whether the pods' current annotations already make the ReplicaSet controller remove
/// exactly the pods `costs` chooses (the lowest ones), ties excluded.
pub fn ordered(pods: &[Pod], costs: &BTreeMap<String, i32>, remove: usize) -> bool {
    if costs.is_empty() {
        return true;
    }
    let not_ready = pods.iter().filter(|p| !is_ready(p)).count();
    let chosen = remove.saturating_sub(not_ready);
    let mut want: Vec<(&String, &i32)> = costs.iter().collect();
    want.sort_by_key(|(n, c)| (**c, (*n).clone()));
    let chosen_names: Vec<&String> = want[..chosen.min(want.len())].iter().map(|(n, _)| *n).collect();
    let live = |name: &str| pods.iter().find(|p| p.name_any() == name).map(annotated);
    let highest_chosen = chosen_names.iter().filter_map(|n| live(n)).max();
    let lowest_kept = want[chosen.min(want.len())..].iter().filter_map(|(n, _)| live(n)).min();
    match (highest_chosen, lowest_kept) {
        (Some(h), Some(l)) => h < l,
        _ => true,
    }
}

/// Annotates every pod whose cost differs; returns how many it patched.
pub async fn annotate(
    client: &Client,
    namespace: &str,
    pods: &[Pod],
    costs: &BTreeMap<String, i32>,
) -> Result<usize, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut patched = 0;
    for p in pods {
        let Some(cost) = costs.get(&p.name_any()) else { continue };
        if p.annotations().get(DELETION_COST) == Some(&cost.to_string()) {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"annotations": {DELETION_COST: cost.to_string()}}});
        api.patch(
            &p.name_any(),
            &PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() },
            &Patch::Merge(&patch),
        )
        .await?;
        patched += 1;
    }
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    use super::*;

    fn pod(name: &str, ready: bool, cost: Option<i32>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        if let Some(c) = cost {
            p.metadata.annotations = Some([(DELETION_COST.to_owned(), c.to_string())].into());
        }
        p.status = Some(PodStatus {
            pod_ip: Some("10.244.0.9".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn reading(pod: &str, connections: Option<i64>) -> Reading {
        Reading { pod: pod.into(), connections }
    }

    #[test]
    fn the_least_connected_get_the_lowest_cost_and_ties_are_made_strict() {
        let pods = [pod("a", true, None), pod("b", true, None), pod("c", true, None), pod("d", true, None)];
        let readings =
            [reading("a", Some(5)), reading("b", Some(1)), reading("c", Some(3)), reading("d", Some(1))];
        let c = costs(&pods, &readings, 1);
        // b and d tie at 1: b (by name) goes, d is raised above it.
        assert_eq!(c, BTreeMap::from([("a".into(), 5), ("b".into(), 1), ("c".into(), 3), ("d".into(), 2)]));
        assert!(!ordered(&pods, &c, 1), "not annotated yet");
        let annotated: Vec<Pod> =
            pods.iter().map(|p| pod(&p.name_any(), true, Some(c[&p.name_any()]))).collect();
        assert!(ordered(&annotated, &c, 1));
    }

    #[test]
    fn a_comet_that_did_not_answer_is_kept_and_not_ready_pods_go_first() {
        let pods = [pod("a", true, None), pod("b", true, None), pod("c", false, None)];
        let readings = [reading("a", Some(7)), reading("b", None)];
        assert!(costs(&pods, &readings, 1).is_empty(), "the pod that is not ready covers one removal");
        let c = costs(&pods, &readings, 2);
        assert_eq!(c, BTreeMap::from([("a".into(), 7), ("b".into(), i32::MAX)]));
    }
}
