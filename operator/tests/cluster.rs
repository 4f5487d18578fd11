//! Against the real control plane (`bash scripts/k8s.sh start`; `eval "$(bash scripts/k8s.sh env)"`
//! sets KUBECONFIG). Each test applies the CRD from `crds/`, works in its own namespace and
//! deletes it. Without KUBECONFIG they fail: they never pass by skipping.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use goim_operator::PushCluster;
use goim_operator::PushClusterSpec;
use goim_operator::controller::reconcile;
use goim_operator::render::CONFIG_HASH;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use support::*;

/// The full topology (Redis, Kafka, job) whose pods may land on the kwok node.
fn full_topology() -> PushClusterSpec {
    let mut spec = minimal();
    spec.job.tolerations = spec.logic.tolerations.clone();
    spec.topology.store = goim_operator::crd::Store::Redis;
    spec.topology.redis.url = "redis://redis:6379/0".into();
    spec.topology.queue = goim_operator::crd::Queue::Kafka;
    spec.topology.kafka.brokers = vec!["kafka:9092".into()];
    spec
}

/// `kind/name` to what this operator last wrote (its managedFields entry, the generation), and
/// the owner check, for every child of `owner`. Not the resourceVersion: the Deployment and
/// disruption controllers write the children's status while pods come up.
async fn children(client: &Client, ns: &str, owner: &PushCluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={}", owner.name_any()));
    macro_rules! collect {
        ($($k:ty),*) => {$(
            for o in Api::<$k>::namespaced(client.clone(), ns).list(&lp).await.unwrap() {
                let refs = o.owner_references();
                assert!(
                    refs.iter().any(|r| Some(&r.uid) == owner.uid().as_ref() && r.controller == Some(true)),
                    "{} {} is not owned by its PushCluster", <$k>::kind(&()), o.name_any()
                );
                out.insert(format!("{}/{}", <$k>::kind(&()), o.name_any()), fingerprint(o.meta()));
            }
        )*};
    }
    collect!(ConfigMap, Deployment, Service, ServiceAccount, Role, RoleBinding, PodDisruptionBudget, Secret);
    out
}

fn fingerprint(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    let ours: Vec<_> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some("goim-operator"))
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    format!("generation={:?} {}", meta.generation, ours.join(" "))
}

fn template_hash(d: &Deployment) -> String {
    d.spec.template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[CONFIG_HASH].clone()
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn reconcile_creates_every_child_with_owner_references() {
    in_namespace("op-children", |client, ns| async move {
        create(&client, &ns, "demo", minimal()).await;
        let pc = get(&client, &ns, "demo").await;
        reconcile(pc.clone(), context(&client)).await.unwrap();
        let kids = children(&client, &ns, &pc).await;
        let want = [
            "ConfigMap/demo-comet-config",
            "ConfigMap/demo-logic-config",
            "Deployment/demo-comet",
            "Deployment/demo-logic",
            "PodDisruptionBudget/demo-comet",
            "PodDisruptionBudget/demo-logic",
            "Role/demo-discovery",
            "RoleBinding/demo-discovery",
            "Secret/demo-generated",
            "Service/demo-comet",
            "Service/demo-comet-grpc",
            "Service/demo-logic",
            "Service/demo-logic-grpc",
            "ServiceAccount/demo-comet",
            "ServiceAccount/demo-discovery",
        ];
        assert_eq!(kids.keys().map(String::as_str).collect::<Vec<_>>(), want);
        let pc = get(&client, &ns, "demo").await;
        let status = pc.status.clone().expect("status written");
        assert_eq!(status.observed_generation, pc.metadata.generation);
        assert_eq!(status.config_hashes.keys().collect::<Vec<_>>(), ["comet", "logic"]);
        for t in ["Ready", "Progressing", "Degraded"] {
            assert!(status.conditions.iter().any(|c| c.type_ == t), "condition {t}");
        }
        // The Secret is generated once: a second reconcile keeps it.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let before = secrets.get("demo-generated").await.unwrap().data;
        reconcile(pc, context(&client)).await.unwrap();
        assert_eq!(secrets.get("demo-generated").await.unwrap().data, before);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_pods_run_on_the_kwok_node_and_the_cluster_becomes_ready() {
    in_namespace("op-ready", |client, ns| async move {
        create(&client, &ns, "demo", minimal()).await;
        let pc = until_ready(&client, &ns, &context(&client)).await;
        let s = pc.status.clone().unwrap();
        assert_eq!(s.observed_generation, pc.metadata.generation);
        assert_eq!((s.comet.ready, s.logic.ready), (1, 1));
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(pods.items.len(), 2);
        for p in pods {
            let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
            assert!(node.starts_with("kwok-"), "{} on {node:?}", p.metadata.name.unwrap_or_default());
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn an_unchanged_reconcile_changes_nothing() {
    in_namespace("op-unchanged", |client, ns| async move {
        create(&client, &ns, "demo", minimal()).await;
        let ctx = context(&client);
        until_ready(&client, &ns, &ctx).await;
        // Settled: Ready, and the status written by the reconcile that saw it.
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let pc = get(&client, &ns, "demo").await;
        let before = children(&client, &ns, &pc).await;
        let requests = Arc::new(Requests::default());
        let counted = context(&client_counting(requests.clone()).await);
        let started = std::time::Instant::now();
        for _ in 0..20 {
            reconcile(get(&client, &ns, "demo").await, counted.clone()).await.unwrap();
        }
        let took = started.elapsed() / 20;
        let after = children(&client, &ns, &pc).await;
        assert_eq!(before, after, "an unchanged reconcile changed a child");
        let again = get(&client, &ns, "demo").await;
        assert_eq!(
            again.resource_version(),
            pc.resource_version(),
            "an unchanged reconcile wrote the status"
        );
        let (gets, writes) = (requests.get.load(Ordering::SeqCst), requests.writes.load(Ordering::SeqCst));
        eprintln!("unchanged reconcile: {} GET, {writes} writes over 20, {took:?} each", gets / 20);
        assert_eq!(writes, 0, "an unchanged cluster got writes");
        // One GET per child (the Secret's metadata included), one LIST of the comet pods.
        assert_eq!(gets, 20 * (before.len() + 1));
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_comet_config_change_changes_only_comets_template_hash() {
    in_namespace("op-config", |client, ns| async move {
        create(&client, &ns, "demo", minimal()).await;
        let ctx = context(&client);
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let (comet, logic) =
            (deployments.get("demo-comet").await.unwrap(), deployments.get("demo-logic").await.unwrap());
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"spec": {"comet": {"config": "[comet]\nmax_connections = 5000\n"}}});
        api.patch("demo", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let (comet2, logic2) =
            (deployments.get("demo-comet").await.unwrap(), deployments.get("demo-logic").await.unwrap());
        assert_ne!(template_hash(&comet), template_hash(&comet2));
        assert_eq!(template_hash(&logic), template_hash(&logic2));
        assert_eq!(
            fingerprint(&logic.metadata),
            fingerprint(&logic2.metadata),
            "logic's Deployment was written"
        );
        assert_ne!(comet.metadata.generation, comet2.metadata.generation, "comet's Deployment rolls");
        let pc = get(&client, &ns, "demo").await;
        assert_eq!(pc.status.clone().unwrap().config_hashes["comet"], template_hash(&comet2));
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn invalid_specs_are_refused_with_their_cel_message() {
    in_namespace("op-cel", |client, ns| async move {
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                serde_json::json!({"logic": {"replicas": 2}}),
                "topology.store memory keeps sessions inside one logic process",
            ),
            (
                serde_json::json!({"topology": {"queue": "kafka", "kafka": {"brokers": ["k:9092"]}}}),
                "topology.queue kafka needs topology.store redis",
            ),
            (
                serde_json::json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
                "autoscaling.minReplicas must not be above",
            ),
            (serde_json::json!({"drain": {"timeoutSeconds": 60}}), "drain.timeoutSeconds must be below"),
            (
                serde_json::json!({"auth": {"jwt": {"algorithm": "RS256"}}}),
                "RS256 and ES256 need auth.jwt.keySecretRef",
            ),
            (
                serde_json::json!({"topology": {"store": "redis"}}),
                "topology.store redis needs topology.redis.url",
            ),
            (
                serde_json::json!({"topology": {"store": "redis", "redis": {"url": "redis://r:6379/0", "tls": {}}}}),
                "topology.redis.tls needs a rediss:// url",
            ),
            (
                serde_json::json!({"auth": {"jwt": {"algorithm": "ES256", "jwksUrl": ""}}}),
                "RS256 and ES256 need auth.jwt.keySecretRef",
            ),
        ];
        // Discovery may lag the CRD a moment.
        create(&client, &ns, "probe", PushClusterSpec::default()).await;
        for (i, (spec, message)) in cases.into_iter().enumerate() {
            // Sent as JSON, not the typed struct: the typed spec would carry every default.
            let raw = serde_json::json!({
                "apiVersion": "goim-rs.io/v1alpha1", "kind": "PushCluster",
                "metadata": {"name": format!("bad-{i}")}, "spec": spec,
            });
            let data = serde_json::to_vec(&raw).unwrap();
            let req = http::Request::post(format!("/apis/goim-rs.io/v1alpha1/namespaces/{ns}/pushclusters"))
                .header("content-type", "application/json")
                .body(data)
                .unwrap();
            match client.request::<PushCluster>(req).await {
                Err(kube::Error::Api(s)) => {
                    assert_eq!(s.code, 422, "{s:?}");
                    assert!(s.message.contains(message), "wanted {message:?} in {:?}", s.message);
                }
                other => panic!("case {i} was accepted: {other:?}"),
            }
        }
        assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1, "only the probe exists");
        // A JWKS stands in for the PEM key.
        let mut jwks = PushClusterSpec::default();
        jwks.auth.jwt.algorithm = goim_operator::crd::JwtAlgorithm::ES256;
        jwks.auth.jwt.jwks_url = "https://id.example.com/jwks.json".into();
        create(&client, &ns, "jwks", jwks).await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_scale_subresource_sets_comet_replicas() {
    in_namespace("op-scale", |client, ns| async move {
        create(&client, &ns, "demo", minimal()).await;
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"spec": {"replicas": 5}});
        api.patch_scale("demo", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        let pc = api.get("demo").await.unwrap();
        assert_eq!(pc.spec.comet.pod.replicas, 5);
        reconcile(Arc::new(pc), context(&client)).await.unwrap();
        let d = Api::<Deployment>::namespaced(client.clone(), &ns).get("demo-comet").await.unwrap();
        assert_eq!(d.spec.replicas, Some(5));
        let scale = api.get_scale("demo").await.unwrap();
        assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn deleting_the_cluster_collects_every_child() {
    in_namespace("op-gc", |client, ns| async move {
        create(&client, &ns, "demo", minimal()).await;
        let pc = get(&client, &ns, "demo").await;
        reconcile(pc.clone(), context(&client)).await.unwrap();
        assert!(!children(&client, &ns, &pc).await.is_empty());
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        api.delete("demo", &DeleteParams::foreground()).await.unwrap();
        for _ in 0..120 {
            if children(&client, &ns, &pc).await.is_empty() && api.get_opt("demo").await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("children left after 60s: {:?}", children(&client, &ns, &pc).await.keys());
    })
    .await;
}

fn example(name: &str) -> PushCluster {
    let path = format!("{}/../examples/pushcluster-{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Server-side dry-run apply of one rendered object: the API server's own schema validation.
async fn dry_run<K>(client: &Client, ns: &str, objs: &[K])
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    for o in objs {
        let pp = PatchParams::apply("goim-operator").validation_strict().dry_run();
        if let Err(e) = api.patch(&o.name_any(), &pp, &Patch::Apply(o)).await {
            panic!("{} {}: {e}", K::kind(&()), o.name_any());
        }
    }
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn each_example_and_every_rendered_object_passes_the_api_server() {
    in_namespace("op-examples", |client, ns| async move {
        for name in ["minimal", "production"] {
            let pc = example(name);
            // The example itself: schema, defaults and CEL rules.
            let created = create(&client, &ns, &pc.name_any(), pc.spec.clone()).await;
            assert!(created.spec == pc.spec, "{name}: the API server changed the spec: {:?}", created.spec);
            // Every rendered child, strictly validated (unknown fields refused), not stored.
            let c = goim_operator::render::children(&created).unwrap();
            dry_run(&client, &ns, &c.config_maps).await;
            dry_run(&client, &ns, &c.deployments).await;
            dry_run(&client, &ns, &c.services).await;
            dry_run(&client, &ns, &c.service_accounts).await;
            dry_run(&client, &ns, &c.roles).await;
            dry_run(&client, &ns, &c.role_bindings).await;
            dry_run(&client, &ns, &c.pdbs).await;
            let owner = goim_operator::render::Owner::of(&created).unwrap();
            dry_run(&client, &ns, &[goim_operator::render::secret::generated(&owner)]).await;
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_operators_cluster_role_is_enough_to_reconcile() {
    in_namespace("op-rbac", |admin, ns| async move {
        let (a, n) = (admin.clone(), ns.clone());
        with_operator(&a, &n, operator_cluster_role(), |operator| async move {
            create(&admin, &ns, "demo", minimal()).await;
            let ctx = context(&operator);
            // As the operator's ServiceAccount: every read, apply, create, status write, event.
            let pc = until_ready(&operator, &ns, &ctx).await;
            assert_eq!(children(&admin, &ns, &pc).await.len(), 15);
            assert_eq!(pc.status.clone().unwrap().observed_generation, pc.metadata.generation);
        })
        .await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_missing_permission_fails_the_reconcile() {
    in_namespace("op-norbac", |admin, ns| async move {
        let mut role = operator_cluster_role();
        // Without the right to create the generated Secret.
        for rule in role.rules.iter_mut().flatten() {
            if rule.resources.iter().flatten().any(|r| r == "secrets") {
                rule.verbs.retain(|v| v != "create");
            }
        }
        let (a, n) = (admin.clone(), ns.clone());
        with_operator(&a, &n, role, |operator| async move {
            create(&admin, &ns, "demo", minimal()).await;
            let pc = get(&operator, &ns, "demo").await;
            match reconcile(pc, context(&operator)).await {
                Err(goim_operator::controller::Error::Kube(kube::Error::Api(s))) => {
                    assert_eq!(s.code, 403, "{s:?}")
                }
                other => panic!("the reconcile did not fail on the missing permission: {other:?}"),
            }
            let pc = get(&admin, &ns, "demo").await;
            let degraded =
                pc.status.clone().unwrap().conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap();
            assert_eq!(degraded.status, "True");
            assert!(degraded.message.contains("secrets"), "{}", degraded.message);
        })
        .await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_field_removed_from_the_spec_is_removed_from_the_child() {
    in_namespace("op-remove", |client, ns| async move {
        let mut spec = minimal();
        spec.logic.pod_labels = BTreeMap::from([("team".to_owned(), "realtime".to_owned())]);
        create(&client, &ns, "demo", spec).await;
        let ctx = context(&client);
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let labels = |d: &Deployment| d.spec.template.metadata.clone().unwrap().labels.unwrap();
        assert_eq!(
            labels(&deployments.get("demo-logic").await.unwrap()).get("team").map(String::as_str),
            Some("realtime")
        );
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        api.patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"logic": {"podLabels": null}}})),
        )
        .await
        .unwrap();
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        assert_eq!(labels(&deployments.get("demo-logic").await.unwrap()).get("team"), None);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_child_changed_behind_the_operators_back_is_repaired() {
    in_namespace("op-drift", |client, ns| async move {
        create(&client, &ns, "demo", minimal()).await;
        let ctx = context(&client);
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let original = maps.get("demo-comet-config").await.unwrap().data;
        // Another manager takes the field over (forced), as a user's kubectl apply would.
        let drift = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-comet-config"},
            "data": {"comet.toml": "[comet]\n"},
        });
        maps.patch("demo-comet-config", &PatchParams::apply("someone-else").force(), &Patch::Apply(&drift)).await.unwrap();
        // The operator does not force: the conflict fails the reconcile and shows in the status.
        let err = reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap_err();
        assert!(matches!(&err, goim_operator::controller::Error::Kube(kube::Error::Api(s)) if s.code == 409), "{err}");
        let pc = get(&client, &ns, "demo").await;
        let degraded = pc.status.clone().unwrap().conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded.status, "True", "{degraded:?}");
        // Once the other manager lets go, the next reconcile restores the rendered file.
        let release = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-comet-config"}});
        maps.patch("demo-comet-config", &PatchParams::apply("someone-else").force(), &Patch::Apply(&release)).await.unwrap();
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        assert_eq!(maps.get("demo-comet-config").await.unwrap().data, original);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_fragment_its_binary_refuses_rolls_nothing() {
    in_namespace("op-refused", |client, ns| async move {
        create(&client, &ns, "demo", minimal()).await;
        let ctx = context(&client);
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let pc = get(&client, &ns, "demo").await;
        let before = children(&client, &ns, &pc).await;
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        let typo = serde_json::json!({"spec": {"comet": {"config": "[comet]\nmax_conections = 5000\n"}}});
        api.patch("demo", &PatchParams::default(), &Patch::Merge(&typo)).await.unwrap();
        let err = reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("spec.comet.config") && message.contains("unknown field `max_conections`"),
            "{message}"
        );
        assert_eq!(children(&client, &ns, &pc).await, before, "a child was written for a refused config");
        let pc2 = get(&client, &ns, "demo").await;
        let status = pc2.status.clone().unwrap();
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded.status, "True");
        assert!(degraded.message.contains("max_conections"), "{}", degraded.message);
        assert_eq!(
            status.config_hashes,
            pc.status.clone().unwrap().config_hashes,
            "the hashes are still the running ones"
        );
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(
            events.items.iter().any(|e| e.reason.as_deref() == Some("InvalidConfig")
                && e.note.as_deref().unwrap_or_default().contains("max_conections")),
            "no InvalidConfig event"
        );
        // Fixed, it rolls comet.
        let fixed = serde_json::json!({"spec": {"comet": {"config": "[comet]\nmax_connections = 5000\n"}}});
        api.patch("demo", &PatchParams::default(), &Patch::Merge(&fixed)).await.unwrap();
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        assert_ne!(children(&client, &ns, &pc).await, before);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_topology_without_job_deletes_jobs_workload() {
    in_namespace("op-prune", |admin, ns| async move {
        let (a, n) = (admin.clone(), ns.clone());
        with_operator(&a, &n, operator_cluster_role(), |operator| async move {
            create(&admin, &ns, "demo", full_topology()).await;
            let ctx = context(&operator);
            reconcile(get(&operator, &ns, "demo").await, ctx.clone()).await.unwrap();
            let pc = get(&admin, &ns, "demo").await;
            let job = ["ConfigMap/demo-job-config", "Deployment/demo-job", "PodDisruptionBudget/demo-job"];
            let kids = children(&admin, &ns, &pc).await;
            for k in job {
                assert!(kids.contains_key(k), "{k} missing: {:?}", kids.keys());
            }
            let api: Api<PushCluster> = Api::namespaced(admin.clone(), &ns);
            let direct = serde_json::json!({"spec": {"topology": {"queue": "direct"}}});
            api.patch("demo", &PatchParams::default(), &Patch::Merge(&direct)).await.unwrap();
            reconcile(get(&operator, &ns, "demo").await, ctx.clone()).await.unwrap();
            let after = children(&admin, &ns, &pc).await;
            for k in job {
                assert!(!after.contains_key(k), "{k} is left after the topology dropped job");
            }
            assert_eq!(after.len(), kids.len() - job.len(), "only job's workload went: {:?}", after.keys());
            let pc = get(&admin, &ns, "demo").await;
            assert_eq!(
                pc.status.clone().unwrap().config_hashes.keys().collect::<Vec<_>>(),
                ["comet", "logic"]
            );
        })
        .await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn a_job_replica_change_writes_only_jobs_deployment() {
    in_namespace("op-job-replicas", |client, ns| async move {
        create(&client, &ns, "demo", full_topology()).await;
        let ctx = context(&client);
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let pc = get(&client, &ns, "demo").await;
        let before = children(&client, &ns, &pc).await;
        let api: Api<PushCluster> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"spec": {"job": {"replicas": 3}}});
        api.patch("demo", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        reconcile(get(&client, &ns, "demo").await, ctx.clone()).await.unwrap();
        let after = children(&client, &ns, &pc).await;
        let changed: Vec<_> = before.keys().filter(|k| before[*k] != after[*k]).collect();
        assert_eq!(changed, ["Deployment/demo-job"], "only job's Deployment is written");
        let job = Api::<Deployment>::namespaced(client.clone(), &ns).get("demo-job").await.unwrap();
        assert_eq!(job.spec.replicas, Some(3));
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the control plane (scripts/k8s.sh start)"]
async fn the_production_example_becomes_ready_on_the_kwok_node() {
    use k8s_openapi::api::core::v1::Node;
    in_namespace("op-production", |client, ns| async move {
        let mut pc = example("production");
        // What the example asks of the cluster's nodes: its pods select node-pool=edge and
        // tolerate dedicated=edge. The kwok node gets the label, the pods the kwok taint's
        // toleration (the only change to the example).
        let nodes: Api<Node> = Api::all(client.clone());
        let label = serde_json::json!({"metadata": {"labels": {"node-pool": "edge"}}});
        for n in nodes.list(&ListParams::default().labels("type=kwok")).await.unwrap() {
            nodes.patch(&n.name_any(), &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
        }
        let kwok = minimal().logic.tolerations;
        for t in [&mut pc.spec.comet.pod, &mut pc.spec.logic, &mut pc.spec.job] {
            t.tolerations.extend(kwok.clone());
        }
        create(&client, &ns, "demo", pc.spec.clone()).await;
        let ctx = context(&client);
        let pc = until_ready(&client, &ns, &ctx).await;
        let s = pc.status.clone().unwrap();
        assert_eq!(s.observed_generation, pc.metadata.generation);
        assert_eq!((s.comet.ready, s.logic.ready, s.job.ready), (3, 2, 2));
        let kids = children(&client, &ns, &pc).await;
        for k in ["Deployment/demo-job", "Service/demo-comet", "ConfigMap/demo-job-config"] {
            assert!(kids.contains_key(k), "{k}: {:?}", kids.keys());
        }
        let svc = Api::<Service>::namespaced(client.clone(), &ns).get("demo-comet").await.unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        let ports: Vec<_> = spec.ports.unwrap().iter().map(|p| (p.name.clone().unwrap(), p.port)).collect();
        assert!(ports.contains(&("wss".into(), 443)), "{ports:?}");
    })
    .await;
}
