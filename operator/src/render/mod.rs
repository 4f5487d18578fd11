//! Desired state, as pure functions: a `PushCluster` in, every child object out. Nothing here
//! talks to the API server, so every object is unit-tested as rendered.

pub mod config;
pub mod rbac;
pub mod secret;
pub mod service;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{PushCluster, PushClusterSpec, Queue, TierSpec};

/// The one field manager of every server-side apply.
pub const MANAGER: &str = "goim-operator";
/// The pod template annotation carrying the tier's config hash.
pub const CONFIG_HASH: &str = "goim-rs.io/config-hash";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Comet,
    Logic,
    Job,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Comet, Tier::Logic, Tier::Job];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Comet => "comet",
            Tier::Logic => "logic",
            Tier::Job => "job",
        }
    }

    /// The binary the tier's container runs.
    pub fn binary(self) -> &'static str {
        match self {
            Tier::Comet => "goim-comet",
            Tier::Logic => "goim-logic",
            Tier::Job => "goim-job",
        }
    }

    pub fn admin_port(self) -> u16 {
        match self {
            Tier::Comet => config::COMET_ADMIN,
            Tier::Logic => config::LOGIC_ADMIN,
            Tier::Job => config::JOB_ADMIN,
        }
    }
}

impl PushClusterSpec {
    pub fn tier(&self, tier: Tier) -> &TierSpec {
        match tier {
            Tier::Comet => &self.comet.pod,
            Tier::Logic => &self.logic,
            Tier::Job => &self.job,
        }
    }

    /// The tiers this topology runs: job only with the Kafka queue.
    pub fn tiers(&self) -> Vec<Tier> {
        match self.topology.queue {
            Queue::Direct => vec![Tier::Comet, Tier::Logic],
            Queue::Kafka => Tier::ALL.to_vec(),
        }
    }
}

/// Names of the children of the PushCluster `cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
}

impl Names {
    pub fn new(cluster: &str) -> Names {
        Names { cluster: cluster.to_owned() }
    }
    /// A tier's Deployment (and PodDisruptionBudget).
    pub fn workload(&self, tier: Tier) -> String {
        format!("{}-{}", self.cluster, tier.as_str())
    }
    pub fn config_map(&self, tier: Tier) -> String {
        format!("{}-{}-config", self.cluster, tier.as_str())
    }
    /// The client-facing comet Service.
    pub fn comet_service(&self) -> String {
        format!("{}-comet", self.cluster)
    }
    /// The headless comet Service whose EndpointSlices job and logic watch.
    pub fn comet_grpc_service(&self) -> String {
        format!("{}-comet-grpc", self.cluster)
    }
    /// logic's push API (ClusterIP).
    pub fn logic_service(&self) -> String {
        format!("{}-logic", self.cluster)
    }
    /// The headless logic Service: one DNS record per logic pod, for comets.
    pub fn logic_grpc_service(&self) -> String {
        format!("{}-logic-grpc", self.cluster)
    }
    /// The ServiceAccount (and Role, RoleBinding) of logic and job: EndpointSlice discovery.
    pub fn discovery_account(&self) -> String {
        format!("{}-discovery", self.cluster)
    }
    /// The ServiceAccount of comet: no API access.
    pub fn comet_account(&self) -> String {
        format!("{}-comet", self.cluster)
    }
    /// The Secret the operator generates once (push token, JWT secret).
    pub fn generated_secret(&self) -> String {
        format!("{}-generated", self.cluster)
    }
}

/// Why a PushCluster cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("spec.{tier}.config is not a TOML table: {message}")]
    Fragment { tier: &'static str, message: String },
    #[error("the PushCluster has no {0}")]
    Missing(&'static str),
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The labels every child carries; the first three select a tier's pods.
pub fn selector_labels(cluster: &str, tier: Tier) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "goim".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cluster.to_owned()),
        ("app.kubernetes.io/component".to_owned(), tier.as_str().to_owned()),
    ])
}

pub fn labels(cluster: &str, tier: Option<Tier>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "goim".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cluster.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned()),
    ]);
    if let Some(t) = tier {
        l.insert("app.kubernetes.io/component".to_owned(), t.as_str().to_owned());
    }
    l
}

/// What every child's metadata starts from: name, namespace, labels, the owner reference.
#[derive(Clone, Debug)]
pub struct Owner {
    pub names: Names,
    pub namespace: String,
    pub reference: OwnerReference,
}

impl Owner {
    pub fn of(pc: &PushCluster) -> Result<Owner, RenderError> {
        let namespace = pc.namespace().ok_or(RenderError::Missing("namespace"))?;
        let reference = pc.controller_owner_ref(&()).ok_or(RenderError::Missing("uid"))?;
        Ok(Owner { names: Names::new(&pc.name_any()), namespace, reference })
    }

    pub fn meta(&self, name: String, tier: Option<Tier>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.names.cluster, tier)),
            owner_references: Some(vec![self.reference.clone()]),
            ..Default::default()
        }
    }
}

/// Every child of one PushCluster (the generated Secret aside: it is created once, not applied).
#[derive(Clone, Debug, Default)]
pub struct Children {
    pub config_maps: Vec<ConfigMap>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub service_accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub pdbs: Vec<PodDisruptionBudget>,
    /// Tier name to config hash.
    pub hashes: BTreeMap<String, String>,
}

/// Renders every child of `pc`.
pub fn children(pc: &PushCluster) -> Result<Children, RenderError> {
    let owner = Owner::of(pc)?;
    let mut c = Children::default();
    for tier in pc.spec.tiers() {
        let rendered = config::render(pc, tier, &owner.names, &owner.namespace)?;
        c.config_maps.push(workload::config_map(&owner, tier, &rendered));
        c.deployments.push(workload::deployment(pc, &owner, tier, &rendered));
        c.pdbs.push(workload::pdb(&owner, tier));
        c.hashes.insert(tier.as_str().to_owned(), rendered.hash);
    }
    c.services = service::services(pc, &owner);
    c.service_accounts = rbac::service_accounts(&owner);
    c.roles = vec![rbac::role(&owner)];
    c.role_bindings = vec![rbac::role_binding(&owner)];
    Ok(c)
}

#[cfg(test)]
mod tests;
