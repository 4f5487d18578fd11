//! The `PushCluster` resource (`goim-rs.io/v1alpha1`): the one object a user writes.
//!
//! Every field is optional and defaulted; the defaults are in the generated schema
//! (`crds/pushcluster.yaml`), so the API server fills them in and `kubectl get -o yaml` shows
//! them. Rules that span fields are CEL `x-kubernetes-validations`, checked by the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CRD's API group.
pub const GROUP: &str = "goim-rs.io";

/// A goim-rs push cluster: comets (client connections), logic (the push API, sessions) and,
/// with the Kafka queue, job (dispatch to comets).
// clippy reads the repeated `printcolumn(type_ = ...)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "goim-rs.io",
    version = "v1alpha1",
    kind = "PushCluster",
    namespaced,
    shortname = "pc",
    status = "PushClusterStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A goim-rs push cluster: comet, logic and (with the Kafka queue) job, wired together.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Comets", type_ = "integer", json_path = ".status.comet.ready"),
    printcolumn(name = "Connections", type_ = "integer", json_path = ".status.connections"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    scale(
        spec_replicas_path = ".spec.comet.replicas",
        status_replicas_path = ".status.comet.replicas",
        label_selector_path = ".status.comet.selector"
    )
)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(self.topology.store == 'memory' && self.logic.replicas > 1)",
        "message": "topology.store memory keeps sessions inside one logic process: set logic.replicas to 1, or use topology.store redis"
    },
    {
        "rule": "self.topology.queue != 'kafka' || self.topology.store == 'redis'",
        "message": "topology.queue kafka needs topology.store redis: job and every logic must share the sessions"
    },
    {
        "rule": "self.topology.queue != 'kafka' || size(self.topology.kafka.brokers) > 0",
        "message": "topology.queue kafka needs topology.kafka.brokers"
    },
    {
        "rule": "self.topology.store != 'redis' || self.topology.redis.url != '' || has(self.topology.redis.urlSecretRef)",
        "message": "topology.store redis needs topology.redis.url or topology.redis.urlSecretRef"
    },
    {
        "rule": "!has(self.topology.redis.tls) || self.topology.redis.url == '' || self.topology.redis.url.startsWith('rediss://')",
        "message": "topology.redis.tls needs a rediss:// url"
    },
    {
        "rule": "self.drain.timeoutSeconds < self.comet.terminationGracePeriodSeconds",
        "message": "drain.timeoutSeconds must be below comet.terminationGracePeriodSeconds, or the kubelet kills a comet before it has drained"
    }
]))]
pub struct PushClusterSpec {
    /// The container image of every tier (each tier may override it).
    pub image: Image,
    /// Which session store and push queue the cluster uses.
    pub topology: Topology,
    /// Client authentication and the push API token.
    pub auth: Auth,
    /// The comets: client connections.
    pub comet: CometSpec,
    /// logic: the push HTTP API and the gRPC service comets call.
    pub logic: TierSpec,
    /// job: consumes Kafka and dispatches to comets. Runs only with `topology.queue: kafka`.
    pub job: TierSpec,
    /// Comet replicas from the connections the operator reads.
    pub autoscaling: Autoscaling,
    /// How a comet sheds its clients before it stops (rolls, scale-in, node drains).
    pub drain: Drain,
}

/// A container image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Image {
    /// The image holding goim-comet, goim-logic and goim-job on its PATH.
    pub repository: String,
    pub tag: String,
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub pull_policy: String,
    pub pull_secrets: Vec<LocalObjectReference>,
}

impl Default for Image {
    fn default() -> Image {
        Image {
            repository: "goim-rs".into(),
            tag: env!("CARGO_PKG_VERSION").into(),
            pull_policy: "IfNotPresent".into(),
            pull_secrets: Vec::new(),
        }
    }
}

/// A tier's override of [`Image`]: each field given replaces the cluster's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub pull_policy: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// Sessions inside the one logic process: nothing else needed, one logic replica.
    #[default]
    Memory,
    /// Sessions in Redis, shared by every logic (and read by job).
    Redis,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    /// logic dispatches its own pushes to the comets; no Kafka, no job.
    #[default]
    Direct,
    /// logic publishes to Kafka; job consumes and dispatches.
    Kafka,
}

/// The three useful shapes: memory + direct (nothing else needed), redis + direct (Redis only),
/// redis + kafka (the full goim topology with job).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Topology {
    pub store: Store,
    pub queue: Queue,
    pub redis: Redis,
    pub kafka: Kafka,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Redis {
    /// `redis://[user:password@]host:port/db`. Use `urlSecretRef` when it holds a password.
    pub url: String,
    /// A Secret key holding the URL; wins over `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// TLS to Redis: the URL is `rediss://`. Certificates are always checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTls>,
}

/// TLS to Redis (logic's `[store.redis.tls]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RedisTls {
    /// The CA bundle (PEM) Redis's certificate is checked against, mounted into logic at
    /// `/etc/goim/redis/ca.crt`; without it the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): logic's client certificate, for a
    /// Redis with `tls-auth-clients yes`. Mounted at `/etc/goim/redis-client`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Kafka {
    /// `host:port` of each bootstrap broker.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Partitions of the topic when logic creates it.
    #[schemars(range(min = 1))]
    pub partitions: i32,
    /// job's consumer group.
    pub group: String,
    /// TLS to the brokers (librdkafka `security.protocol` SSL, or SASL_SSL with `sasl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// SASL authentication (SASL_PLAINTEXT, or SASL_SSL with `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

impl Default for Kafka {
    fn default() -> Kafka {
        Kafka {
            brokers: Vec::new(),
            topic: "goim-push-topic".into(),
            partitions: 4,
            group: "goim-push-group-job".into(),
            tls: None,
            sasl: None,
        }
    }
}

/// TLS to the Kafka brokers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct KafkaTls {
    /// The CA bundle (PEM) the brokers' certificates are checked against, mounted into logic
    /// and job; without it the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// SASL credentials for the Kafka brokers, by Secret reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    #[serde(default)]
    pub mechanism: SaslMechanism,
    pub username_secret_ref: SecretKeyRef,
    pub password_secret_ref: SecretKeyRef,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// A key of a Secret in the PushCluster's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Clients present a signed JWT.
    #[default]
    Jwt,
    /// goim's plain JSON token: anyone can claim any user. Development only.
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Auth {
    pub mode: AuthMode,
    pub jwt: Jwt,
    /// The push API's bearer token. Unset: the operator generates one once, in the Secret
    /// `<name>-generated` (key `push-token`), and keeps it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_token_secret_ref: Option<SecretKeyRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.algorithm == 'HS256' || has(self.keySecretRef) || has(self.jwksSecretRef) || self.jwksUrl != ''",
    "message": "auth.jwt.algorithm RS256 and ES256 need auth.jwt.keySecretRef (the PEM public key), or a JWKS (jwksSecretRef or jwksUrl)"
}]))]
pub struct Jwt {
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret; RS256/ES256: the PEM public key. Unset with HS256: the
    /// operator generates a secret once (Secret `<name>-generated`, key `jwt-secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeyRef>,
    /// A JWK Set (RFC 7517) in a Secret: each token's `kid` picks its key, and logic re-reads the
    /// file while it runs, so a key rotates by editing the Secret (add the new key, then remove
    /// the old one once its tokens expired). Mounted as a directory at `/etc/goim/jwks`, so the
    /// kubelet's Secret updates reach the pod. With a JWKS, `keySecretRef` is optional and only
    /// verifies tokens without `kid`; no JWT secret is generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_secret_ref: Option<SecretKeyRef>,
    /// A JWKS URL (http or https) logic fetches at start and refreshes every 5 minutes (tune with
    /// `logic.config`: `[logic.auth.jwt.jwks] url_refresh`).
    pub jwks_url: String,
    /// When set, the `iss` claim must equal it.
    pub issuer: String,
    /// When set, the `aud` claim must contain it.
    pub audience: String,
}

/// What every tier's pods take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TierSpec {
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Replaces fields of `spec.image` for this tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    /// Extra environment variables (after the operator's own).
    pub env: Vec<EnvVar>,
    /// A TOML fragment overlaid (tables merged key by key) on the file the operator renders:
    /// any key the tier's binary accepts.
    pub config: String,
    #[schemars(range(min = 1))]
    pub termination_grace_period_seconds: i64,
}

impl Default for TierSpec {
    fn default() -> TierSpec {
        TierSpec {
            replicas: 1,
            image: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            topology_spread_constraints: Vec::new(),
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            env: Vec::new(),
            config: String::new(),
            termination_grace_period_seconds: 30,
        }
    }
}

/// The comets: [`TierSpec`] plus how clients reach them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct CometSpec {
    #[serde(flatten)]
    pub pod: TierSpec,
    pub service: CometService,
}

/// The client-facing comet Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct CometService {
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["ClusterIP", "NodePort", "LoadBalancer"]))]
    pub type_: String,
    pub annotations: BTreeMap<String, String>,
    /// `Cluster` or `Local`; only for NodePort and LoadBalancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Cluster", "Local"]))]
    pub external_traffic_policy: Option<String>,
    /// The Service port of goim's TCP protocol.
    #[schemars(range(min = 1, max = 65535))]
    pub tcp_port: i32,
    /// The Service port of WebSocket (`/sub`).
    #[schemars(range(min = 1, max = 65535))]
    pub websocket_port: i32,
    /// WebSocket over TLS; off unless `tlsSecretName` is set.
    pub wss: Wss,
}

impl Default for CometService {
    fn default() -> CometService {
        CometService {
            type_: "ClusterIP".into(),
            annotations: BTreeMap::new(),
            external_traffic_policy: None,
            tcp_port: 3101,
            websocket_port: 3102,
            wss: Wss::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Wss {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`); empty: no WSS listener.
    pub tls_secret_name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for Wss {
    fn default() -> Wss {
        Wss { tls_secret_name: String::new(), port: 3103 }
    }
}

/// Comet replicas from connections (operator/src/autoscale.rs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.minReplicas <= self.maxReplicas",
    "message": "autoscaling.minReplicas must not be above autoscaling.maxReplicas"
}]))]
pub struct Autoscaling {
    pub enabled: bool,
    /// `builtin`: the operator sets comet replicas from the connections it reads. `external`:
    /// an HPA or KEDA drives the scale subresource (`spec.comet.replicas`); the operator only
    /// reports the connections.
    pub mode: AutoscalingMode,
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    #[schemars(range(min = 1))]
    pub target_connections_per_comet: i64,
    #[schemars(range(min = 0))]
    pub scale_down_stabilization_seconds: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingMode {
    #[default]
    Builtin,
    External,
}

impl Default for Autoscaling {
    fn default() -> Autoscaling {
        Autoscaling {
            enabled: false,
            mode: AutoscalingMode::Builtin,
            min_replicas: 1,
            max_replicas: 10,
            target_connections_per_comet: 10_000,
            scale_down_stabilization_seconds: 600,
        }
    }
}

/// How a comet sheds its clients before it stops (rendered into `[comet.drain]`; the preStop
/// hook `GET /drain` starts it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Drain {
    #[schemars(range(min = 0))]
    pub timeout_seconds: i64,
    #[schemars(range(min = 1))]
    pub disconnects_per_second: i64,
    #[schemars(range(min = 0))]
    pub reconnect_jitter_seconds: i64,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain { timeout_seconds: 20, disconnects_per_second: 500, reconnect_jitter_seconds: 10 }
    }
}

/// What the operator last saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PushClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    pub conditions: Vec<Condition>,
    pub comet: TierStatus,
    pub logic: TierStatus,
    pub job: TierStatus,
    /// Client connections over the ready comets that answered (`goim_comet_connections` from
    /// each comet's admin port), as of the last reconcile.
    pub connections: i64,
    /// How many ready comets answered for `connections`, of how many ready comets.
    #[serde(default)]
    pub comets_reporting: String,
    /// The connection autoscaler's last decision (with `autoscaling.enabled`, mode builtin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<crate::autoscale::Decision>,
    /// Where clients and pushers connect.
    pub endpoints: Endpoints,
    /// sha256 of each tier's rendered configuration (the pod template annotation).
    pub config_hashes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TierStatus {
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The pods' label selector (for the scale subresource).
    pub selector: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Endpoints {
    /// `host:port` of goim's TCP protocol.
    pub tcp: String,
    /// `ws://host:port/sub`.
    pub websocket: String,
    /// `http://host:port` of logic's push API.
    pub api: String,
}
