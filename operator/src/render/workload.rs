//! Each tier's ConfigMap, Deployment and PodDisruptionBudget.
//!
//! comet is a Deployment, not a StatefulSet: a comet keeps nothing on disk, its server id is its
//! pod name (unique either way), and a Deployment's scale-in honours
//! `controller.kubernetes.io/pod-deletion-cost`, which the connection autoscaler needs to pick the
//! least-loaded comet; a StatefulSet always removes the highest ordinal, and rolls one pod at a
//! time in order, with a reused name (and so server id) for the replacement.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{self, Rendered};
use super::{CONFIG_HASH, Owner, Tier, selector_labels};
use crate::crd::{AuthMode, JwtAlgorithm, PushCluster};

pub fn config_map(owner: &Owner, tier: Tier, rendered: &Rendered) -> ConfigMap {
    ConfigMap {
        metadata: owner.meta(owner.names.config_map(tier), Some(tier)),
        data: Some(BTreeMap::from([(config::file_name(tier), rendered.text.clone())])),
        ..Default::default()
    }
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port.into(),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_owned(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container's environment: the downward API, the Secret overrides, then the user's.
pub fn env(pc: &PushCluster, tier: Tier, rendered: &Rendered) -> Vec<EnvVar> {
    let mut env =
        vec![field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")];
    for s in &rendered.secret_env {
        env.push(EnvVar {
            name: s.var.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.secret.clone(),
                    key: s.key.clone(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    env.extend(pc.spec.tier(tier).env.iter().cloned());
    env
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource { secret_name: Some(secret.to_owned()), ..Default::default() }),
        ..Default::default()
    }
}

/// One key of a Secret as the file `path` in the volume (a CA bundle under a fixed name).
fn secret_key_volume(name: &str, r: &crate::crd::SecretKeyRef, path: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(r.name.clone()),
            items: Some(vec![KeyToPath { key: r.key.clone(), path: path.to_owned(), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn deployment(pc: &PushCluster, owner: &Owner, tier: Tier, rendered: &Rendered) -> Deployment {
    let spec = &pc.spec;
    let t = spec.tier(tier);
    let name = owner.names.workload(tier);
    let selector = selector_labels(&owner.names.cluster, tier);

    let mut pod_labels = t.pod_labels.clone();
    pod_labels.extend(selector.clone());
    let mut annotations = t.pod_annotations.clone();
    annotations.insert(CONFIG_HASH.to_owned(), rendered.hash.clone());

    let image = {
        let o = t.image.clone().unwrap_or_default();
        let repository = o.repository.unwrap_or_else(|| spec.image.repository.clone());
        let tag = o.tag.unwrap_or_else(|| spec.image.tag.clone());
        let policy = o.pull_policy.unwrap_or_else(|| spec.image.pull_policy.clone());
        (format!("{repository}:{tag}"), policy)
    };

    let mut ports = vec![port("admin", tier.admin_port())];
    match tier {
        Tier::Comet => {
            ports.push(port("tcp", config::COMET_TCP));
            ports.push(port("websocket", config::COMET_WS));
            if !spec.comet.service.wss.tls_secret_name.is_empty() {
                ports.push(port("wss", config::COMET_WSS));
            }
            ports.push(port("grpc", config::COMET_GRPC));
        }
        Tier::Logic => {
            ports.push(port("http", config::LOGIC_HTTP));
            ports.push(port("grpc", config::LOGIC_GRPC));
        }
        Tier::Job => {}
    }

    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource { name: owner.names.config_map(tier), ..Default::default() }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: config::CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    if tier == Tier::Comet && !spec.comet.service.wss.tls_secret_name.is_empty() {
        volumes.push(secret_volume("tls", &spec.comet.service.wss.tls_secret_name));
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: config::TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if tier == Tier::Logic
        && spec.auth.mode == AuthMode::Jwt
        && spec.auth.jwt.algorithm != JwtAlgorithm::HS256
        && let Some(r) = &spec.auth.jwt.key_secret_ref
    {
        volumes.push(secret_volume("jwt-key", &r.name));
        mounts.push(VolumeMount {
            name: "jwt-key".into(),
            mount_path: config::JWT_KEY_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    if tier == Tier::Logic
        && spec.auth.mode == AuthMode::Jwt
        && let Some(r) = &spec.auth.jwt.jwks_secret_ref
    {
        // The whole Secret as a directory: a subPath mount would never see the Secret change.
        volumes.push(secret_volume("jwks", &r.name));
        mounts.push(VolumeMount {
            name: "jwks".into(),
            mount_path: config::JWKS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    if matches!(tier, Tier::Logic | Tier::Job)
        && spec.topology.queue == crate::crd::Queue::Kafka
        && let Some(r) = spec.topology.kafka.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref())
    {
        volumes.push(secret_key_volume("kafka-ca", r, config::KAFKA_CA_FILE));
        mounts.push(VolumeMount {
            name: "kafka-ca".into(),
            mount_path: config::KAFKA_CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    if tier == Tier::Logic
        && spec.topology.store == crate::crd::Store::Redis
        && let Some(tls) = &spec.topology.redis.tls
    {
        if let Some(r) = &tls.ca_secret_ref {
            volumes.push(secret_key_volume("redis-ca", r, config::REDIS_CA_FILE));
            mounts.push(VolumeMount {
                name: "redis-ca".into(),
                mount_path: config::REDIS_CA_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        if let Some(name) = &tls.client_secret_name {
            volumes.push(secret_volume("redis-client", name));
            mounts.push(VolumeMount {
                name: "redis-client".into(),
                mount_path: config::REDIS_CLIENT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }

    let container = Container {
        name: tier.as_str().to_owned(),
        image: Some(image.0),
        image_pull_policy: Some(image.1),
        command: Some(vec![tier.binary().to_owned()]),
        args: Some(vec!["--config".into(), format!("{}/{}", config::CONFIG_DIR, config::file_name(tier))]),
        env: Some(env(pc, tier, rendered)),
        ports: Some(ports),
        // Until /healthz first answers (logic waits at start for its store, the Kafka topic
        // and the discovery sync), liveness does not count: up to 3 minutes.
        startup_probe: Some(probe("/healthz", 2, 90)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        resources: t.resources.clone(),
        volume_mounts: Some(mounts),
        // comet drains before it stops: the kubelet calls this, waits for it (up to
        // spec.drain.timeoutSeconds), then sends SIGTERM.
        lifecycle: (tier == Tier::Comet).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                http_get: Some(HTTPGetAction {
                    path: Some("/drain".into()),
                    port: IntOrString::String("admin".into()),
                    scheme: Some("HTTP".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let account = match tier {
        Tier::Comet => owner.names.comet_account(),
        Tier::Logic | Tier::Job => owner.names.discovery_account(),
    };
    let pod = PodSpec {
        containers: vec![container],
        service_account_name: Some(account),
        automount_service_account_token: Some(tier != Tier::Comet),
        termination_grace_period_seconds: Some(t.termination_grace_period_seconds),
        node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
        tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
        affinity: t.affinity.clone(),
        topology_spread_constraints: (!t.topology_spread_constraints.is_empty())
            .then(|| t.topology_spread_constraints.clone()),
        image_pull_secrets: (!spec.image.pull_secrets.is_empty()).then(|| spec.image.pull_secrets.clone()),
        volumes: Some(volumes),
        ..Default::default()
    };

    Deployment {
        metadata: owner.meta(name, Some(tier)),
        spec: DeploymentSpec {
            replicas: Some(t.replicas),
            selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    // comet: every new comet is up and ready before any old one is removed, so a
                    // client an old comet drains reconnects to a new one, once (never to another
                    // old comet that drains a minute later). logic and job: one at a time.
                    max_surge: Some(match tier {
                        Tier::Comet => IntOrString::String("100%".into()),
                        Tier::Logic | Tier::Job => IntOrString::Int(1),
                    }),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// At most one pod of a tier evicted at a time (node drains); the operator's own changes go
/// through the Deployment, which the budget does not cover.
pub fn pdb(owner: &Owner, tier: Tier) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owner.meta(owner.names.workload(tier), Some(tier)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.names.cluster, tier)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
