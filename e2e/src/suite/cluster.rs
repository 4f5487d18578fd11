//! The PushCluster under test, through the API server: applying it, reading its status and what
//! it rendered, editing its spec, deleting it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use goim_operator::PushCluster;
use goim_operator::render::{Names, Tier, selector_labels};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The field manager of everything the suite writes.
const MANAGER: &str = "goim-e2e-suite";

pub struct Cluster {
    pub client: Client,
    pub ns: String,
    pub name: String,
    pub names: Names,
    pub api: Api<PushCluster>,
}

/// The example file with this environment's Redis, brokers and image in place.
pub fn localise(
    mut pc: PushCluster,
    redis_url: &str,
    brokers: &[String],
    image: Option<&str>,
) -> PushCluster {
    pc.spec.topology.redis.url = redis_url.to_owned();
    pc.spec.topology.redis.url_secret_ref = None;
    pc.spec.topology.kafka.brokers = brokers.to_vec();
    if let Some(image) = image {
        let (repository, tag) = match image.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (image, "latest"),
        };
        pc.spec.image.repository = repository.to_owned();
        pc.spec.image.tag = tag.to_owned();
    }
    pc
}

impl Cluster {
    /// Creates the namespace when missing and applies `pc` there (server-side apply).
    pub async fn apply(client: Client, ns: &str, mut pc: PushCluster) -> Result<Cluster> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        if namespaces.get_opt(ns).await?.is_none() {
            let n = Namespace {
                metadata: kube::api::ObjectMeta { name: Some(ns.into()), ..Default::default() },
                ..Default::default()
            };
            namespaces
                .create(&PostParams::default(), &n)
                .await
                .with_context(|| format!("creating namespace {ns}"))?;
        }
        let name = pc.name_any();
        pc.metadata.namespace = Some(ns.into());
        pc.metadata.managed_fields = None;
        pc.metadata.resource_version = None;
        pc.status = None;
        let api: Api<PushCluster> = Api::namespaced(client.clone(), ns);
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&pc))
            .await
            .with_context(|| format!("applying PushCluster {ns}/{name}"))?;
        Ok(Cluster { client, ns: ns.into(), names: Names::new(&name), name, api })
    }

    pub async fn get(&self) -> Result<PushCluster> {
        Ok(self.api.get(&self.name).await?)
    }

    /// A JSON merge patch of the spec.
    pub async fn patch_spec(&self, spec: serde_json::Value) -> Result<()> {
        self.api
            .patch(&self.name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({ "spec": spec })))
            .await
            .with_context(|| format!("patching {}", self.name))?;
        Ok(())
    }

    /// Polls the PushCluster every 500 ms until `done` holds for it; fails after `limit` with the
    /// last status.
    pub async fn until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&PushCluster) -> bool,
    ) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let pc = self.get().await?;
            if done(&pc) {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                bail!(
                    "{what}: not within {limit:?}; status: {}",
                    serde_json::to_string(&pc.status).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Ready, for the current generation, with `comets` comets all updated and ready.
    pub async fn until_ready(&self, comets: i32, limit: Duration) -> Result<Duration> {
        self.until(&format!("Ready with {comets} comets"), limit, |pc| ready(pc, comets)).await
    }

    /// The push token and the JWT secret the operator generated.
    pub async fn secrets(&self) -> Result<(String, Vec<u8>)> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let name = self.names.generated_secret();
        let s = secrets.get(&name).await.with_context(|| format!("Secret {name}"))?;
        let data = s.data.unwrap_or_default();
        let get =
            |k: &str| data.get(k).map(|b| b.0.clone()).ok_or_else(|| anyhow!("Secret {name} has no key {k}"));
        Ok((String::from_utf8(get("push-token")?)?, get("jwt-secret")?))
    }

    /// The ClusterIP address of a Service's named port.
    pub async fn service(&self, service: &str, port: &str) -> Result<SocketAddr> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let s = services.get(service).await.with_context(|| format!("Service {service}"))?;
        let spec = s.spec.unwrap_or_default();
        let ip: IpAddr = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None")
            .ok_or_else(|| anyhow!("Service {service} has no ClusterIP"))?
            .parse()?;
        let p = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.name.as_deref() == Some(port))
            .ok_or_else(|| anyhow!("Service {service} has no port {port}"))?;
        Ok(SocketAddr::new(ip, p.port as u16))
    }

    pub async fn pods(&self, tier: Tier) -> Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let sel = selector_labels(&self.name, tier)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(pods.list(&ListParams::default().labels(&sel)).await?.items)
    }

    /// Running comet pods that are Ready and not being deleted.
    pub async fn ready_comets(&self) -> Result<Vec<Pod>> {
        Ok(self.pods(Tier::Comet).await?.into_iter().filter(pod_ready).collect())
    }

    /// Deletes the PushCluster and waits until it and everything labelled with its instance is gone.
    pub async fn delete_all(&self, limit: Duration) -> Result<(Duration, BTreeMap<&'static str, usize>)> {
        let t0 = Instant::now();
        self.api.delete(&self.name, &DeleteParams::foreground()).await?;
        let sel = format!("app.kubernetes.io/instance={}", self.name);
        loop {
            let left = self.left_over(&sel).await?;
            let pc_gone = self.api.get_opt(&self.name).await?.is_none();
            if pc_gone && left.values().all(|&n| n == 0) {
                return Ok((t0.elapsed(), left));
            }
            if t0.elapsed() > limit {
                bail!(
                    "after deleting the PushCluster, still there after {limit:?}: PushCluster {}, {left:?}",
                    !pc_gone
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn left_over(&self, sel: &str) -> Result<BTreeMap<&'static str, usize>> {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
        let lp = ListParams::default().labels(sel);
        let c = &self.client;
        let ns = &self.ns;
        Ok(BTreeMap::from([
            ("deployments", Api::<Deployment>::namespaced(c.clone(), ns).list(&lp).await?.items.len()),
            ("services", Api::<Service>::namespaced(c.clone(), ns).list(&lp).await?.items.len()),
            ("configmaps", Api::<ConfigMap>::namespaced(c.clone(), ns).list(&lp).await?.items.len()),
            ("secrets", Api::<Secret>::namespaced(c.clone(), ns).list(&lp).await?.items.len()),
            (
                "serviceaccounts",
                Api::<ServiceAccount>::namespaced(c.clone(), ns).list(&lp).await?.items.len(),
            ),
            ("roles", Api::<Role>::namespaced(c.clone(), ns).list(&lp).await?.items.len()),
            ("rolebindings", Api::<RoleBinding>::namespaced(c.clone(), ns).list(&lp).await?.items.len()),
            (
                "poddisruptionbudgets",
                Api::<PodDisruptionBudget>::namespaced(c.clone(), ns).list(&lp).await?.items.len(),
            ),
            ("pods", Api::<Pod>::namespaced(c.clone(), ns).list(&lp).await?.items.len()),
        ]))
    }
}

/// The PushCluster's `Ready` condition is True for its generation and the comets are `comets`
/// replicas, all updated and ready; logic and job too.
pub fn ready(pc: &PushCluster, comets: i32) -> bool {
    let Some(s) = &pc.status else { return false };
    let generation = pc.metadata.generation;
    let condition = s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let tier = |t: &goim_operator::crd::TierStatus, want: i32| {
        t.replicas == want && t.ready == want && t.updated == want
    };
    condition
        && generation.is_some()
        && s.observed_generation == generation
        && tier(&s.comet, comets)
        && tier(&s.logic, pc.spec.logic.replicas)
        && tier(&s.job, pc.spec.job.replicas)
}

pub fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PushCluster {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/pushcluster-distributed.yaml");
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_example_takes_this_environments_addresses_and_image() {
        let pc =
            localise(example(), "redis://10.0.0.1:6379/0", &["10.0.0.1:9092".into()], Some("goim-rs:dev"));
        assert_eq!(pc.spec.topology.redis.url, "redis://10.0.0.1:6379/0");
        assert_eq!(pc.spec.topology.kafka.brokers, ["10.0.0.1:9092"]);
        assert_eq!((pc.spec.image.repository.as_str(), pc.spec.image.tag.as_str()), ("goim-rs", "dev"));
        let pc = localise(example(), "r", &[], Some("localhost:5000/goim-rs"));
        assert_eq!(
            (pc.spec.image.repository.as_str(), pc.spec.image.tag.as_str()),
            ("localhost:5000/goim-rs", "latest")
        );
    }

    #[test]
    fn ready_needs_the_condition_the_generation_and_every_replica() {
        let mut pc = example();
        assert!(!ready(&pc, 2), "no status");
        pc.metadata.generation = Some(3);
        let mut s = goim_operator::PushClusterStatus { observed_generation: Some(3), ..Default::default() };
        s.conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            message: String::new(),
            observed_generation: Some(3),
            reason: "Ready".into(),
        });
        let all =
            |n| goim_operator::crd::TierStatus { replicas: n, ready: n, updated: n, selector: String::new() };
        s.comet = all(2);
        s.logic = all(2);
        s.job = all(1);
        pc.status = Some(s.clone());
        assert!(ready(&pc, 2));
        assert!(!ready(&pc, 4), "wrong comet count");
        s.comet.updated = 1;
        pc.status = Some(s.clone());
        assert!(!ready(&pc, 2), "a comet not updated");
        s.comet.updated = 2;
        s.observed_generation = Some(2);
        pc.status = Some(s);
        assert!(!ready(&pc, 2), "an old generation");
    }
}
