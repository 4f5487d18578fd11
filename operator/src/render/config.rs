//! Each tier's TOML file: exactly the tables `goim-comet`, `goim-logic` and `goim-job` read
//! (`src/distributed/*.rs`), with the user's `config` fragment overlaid, and the environment
//! variables that carry Secret values into it (the binaries' `GOIM_<PATH>` overrides).

use toml::{Table, Value};

use super::{Names, RenderError, Tier};
use crate::crd::{AuthMode, JwtAlgorithm, PushCluster, Queue, Store};

/// Where the config file and the mounted Secrets live in every pod.
pub const CONFIG_DIR: &str = "/etc/goim";
pub const TLS_DIR: &str = "/etc/goim/tls";
pub const JWT_KEY_DIR: &str = "/etc/goim/jwt";
/// The JWKS Secret (logic), when `auth.jwt.jwksSecretRef` is set: the whole Secret, no subPath.
pub const JWKS_DIR: &str = "/etc/goim/jwks";
/// The Kafka CA bundle (logic and job), when `topology.kafka.tls.caSecretRef` is set.
pub const KAFKA_CA_DIR: &str = "/etc/goim/kafka";
pub const KAFKA_CA_FILE: &str = "ca.crt";
/// The Redis CA bundle (logic), when `topology.redis.tls.caSecretRef` is set.
pub const REDIS_CA_DIR: &str = "/etc/goim/redis";
pub const REDIS_CA_FILE: &str = "ca.crt";
/// logic's client certificate for Redis (`topology.redis.tls.clientSecretName`).
pub const REDIS_CLIENT_DIR: &str = "/etc/goim/redis-client";

/// Container ports (fixed: the Service ports are what users choose).
pub const COMET_ADMIN: u16 = 3100;
pub const COMET_TCP: u16 = 3101;
pub const COMET_WS: u16 = 3102;
pub const COMET_WSS: u16 = 3103;
pub const COMET_GRPC: u16 = 3109;
pub const LOGIC_ADMIN: u16 = 3110;
pub const LOGIC_HTTP: u16 = 3111;
pub const LOGIC_GRPC: u16 = 3119;
pub const JOB_ADMIN: u16 = 3120;

/// The file name of a tier's config inside [`CONFIG_DIR`].
pub fn file_name(tier: Tier) -> String {
    format!("{}.toml", tier.as_str())
}

/// A Secret value passed as a `GOIM_<PATH>` environment override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEnv {
    pub var: String,
    pub secret: String,
    pub key: String,
}

/// One tier's rendered configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The file's text (what the ConfigMap holds).
    pub text: String,
    /// sha256 of `text` plus the Secret references (hex), the pod template's annotation.
    pub hash: String,
    pub secret_env: Vec<SecretEnv>,
}

fn table(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn addr(port: u16) -> Value {
    s(format!("0.0.0.0:{port}"))
}

fn list(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(items.into_iter().map(Value::String).collect())
}

fn discovery(names: &Names, namespace: &str) -> Value {
    table([
        ("kind", s("kubernetes")),
        (
            "kubernetes",
            table([
                ("service", s(names.comet_grpc_service())),
                ("namespace", s(namespace)),
                ("port_name", s("grpc")),
            ]),
        ),
    ])
}

/// The librdkafka properties of `topology.kafka.tls` and `.sasl` (logic's producer and job's
/// consumer alike), and the Secret values they take from the environment: an override
/// `GOIM_KAFKA__PROPERTIES__SASL.PASSWORD` sets the property `sasl.password`.
fn kafka_security(k: &crate::crd::Kafka, table: &mut Table, env: &mut Vec<SecretEnv>) {
    let protocol = match (&k.tls, &k.sasl) {
        (None, None) => return,
        (Some(_), None) => "SSL",
        (None, Some(_)) => "SASL_PLAINTEXT",
        (Some(_), Some(_)) => "SASL_SSL",
    };
    let mut props = Table::new();
    props.insert("security.protocol".into(), s(protocol));
    if let Some(tls) = &k.tls
        && tls.ca_secret_ref.is_some()
    {
        props.insert("ssl.ca.location".into(), s(format!("{KAFKA_CA_DIR}/{KAFKA_CA_FILE}")));
    }
    if let Some(sasl) = &k.sasl {
        props.insert("sasl.mechanism".into(), s(sasl.mechanism.as_str()));
        for (property, r) in
            [("USERNAME", &sasl.username_secret_ref), ("PASSWORD", &sasl.password_secret_ref)]
        {
            env.push(SecretEnv {
                var: format!("GOIM_KAFKA__PROPERTIES__SASL.{property}"),
                secret: r.name.clone(),
                key: r.key.clone(),
            });
        }
    }
    table.insert("properties".into(), Value::Table(props));
}

/// The binary's own shutdown grace: what is left of the pod's termination grace period (for
/// comet, after the drain) less a margin for the process to exit, so the kubelet's SIGKILL
/// never cuts a clean stop short.
pub fn shutdown_grace(termination_grace_period_seconds: i64) -> i64 {
    const MARGIN: i64 = 5;
    (termination_grace_period_seconds - MARGIN).max(1)
}

/// The operator's part of a tier's file, before the user's fragment.
pub fn base(pc: &PushCluster, tier: Tier, names: &Names, namespace: &str) -> (Table, Vec<SecretEnv>) {
    let spec = &pc.spec;
    let mut t = Table::new();
    let mut env = Vec::new();
    // comet: the drain (preStop) first, then the shutdown, both within the pod's grace period.
    let drain = if tier == Tier::Comet { spec.drain.timeout_seconds } else { 0 };
    let grace = shutdown_grace(spec.tier(tier).termination_grace_period_seconds - drain);
    t.insert("shutdown".into(), table([("grace", s(format!("{grace}s")))]));
    match tier {
        Tier::Comet => {
            t.insert("admin".into(), table([("addr", addr(COMET_ADMIN))]));
            let mut websocket = table([("bind", list([format!("0.0.0.0:{COMET_WS}")]))]);
            if !spec.comet.service.wss.tls_secret_name.is_empty()
                && let Value::Table(ws) = &mut websocket
            {
                ws.insert(
                    "tls".into(),
                    table([
                        ("bind", list([format!("0.0.0.0:{COMET_WSS}")])),
                        ("cert", s(format!("{TLS_DIR}/tls.crt"))),
                        ("key", s(format!("{TLS_DIR}/tls.key"))),
                    ]),
                );
            }
            // server_id stays unset: the binary takes $POD_NAME (downward API).
            let d = &spec.drain;
            t.insert(
                "comet".into(),
                table([
                    ("tcp", table([("bind", list([format!("0.0.0.0:{COMET_TCP}")]))])),
                    ("websocket", websocket),
                    (
                        "drain",
                        table([
                            ("timeout", s(format!("{}s", d.timeout_seconds.max(1)))),
                            ("rate", Value::Integer(d.disconnects_per_second.max(1))),
                            ("reconnect_jitter", s(format!("{}s", d.reconnect_jitter_seconds))),
                        ]),
                    ),
                ]),
            );
            t.insert("grpc".into(), table([("addr", addr(COMET_GRPC))]));
            // The headless logic Service: its DNS name lists every logic pod. goim-comet takes
            // a static address list, so how far calls spread over the pods is up to its client.
            t.insert(
                "logic_client".into(),
                table([(
                    "addrs",
                    list([format!("{}.{namespace}.svc:{LOGIC_GRPC}", names.logic_grpc_service())]),
                )]),
            );
        }
        Tier::Logic => {
            t.insert("admin".into(), table([("addr", addr(LOGIC_ADMIN))]));
            let mode = match spec.auth.mode {
                AuthMode::Jwt => "jwt",
                AuthMode::Json => "json",
            };
            let mut jwt = Table::new();
            let algorithm = match spec.auth.jwt.algorithm {
                JwtAlgorithm::HS256 => "HS256",
                JwtAlgorithm::RS256 => "RS256",
                JwtAlgorithm::ES256 => "ES256",
            };
            jwt.insert("algorithm".into(), s(algorithm));
            if !spec.auth.jwt.issuer.is_empty() {
                jwt.insert("issuer".into(), s(spec.auth.jwt.issuer.clone()));
            }
            if !spec.auth.jwt.audience.is_empty() {
                jwt.insert("audience".into(), s(spec.auth.jwt.audience.clone()));
            }
            let jwks = spec.auth.jwt.jwks_secret_ref.is_some() || !spec.auth.jwt.jwks_url.is_empty();
            if spec.auth.mode == AuthMode::Jwt && jwks {
                let mut set = Table::new();
                if let Some(r) = &spec.auth.jwt.jwks_secret_ref {
                    set.insert("file".into(), s(format!("{JWKS_DIR}/{}", r.key)));
                }
                if !spec.auth.jwt.jwks_url.is_empty() {
                    set.insert("url".into(), s(spec.auth.jwt.jwks_url.clone()));
                }
                jwt.insert("jwks".into(), Value::Table(set));
            }
            if spec.auth.mode == AuthMode::Jwt {
                match (spec.auth.jwt.algorithm, &spec.auth.jwt.key_secret_ref) {
                    (JwtAlgorithm::HS256, Some(r)) => env.push(SecretEnv {
                        var: "GOIM_LOGIC__AUTH__JWT__SECRET".into(),
                        secret: r.name.clone(),
                        key: r.key.clone(),
                    }),
                    // With a JWKS the single key is optional: none is generated.
                    (JwtAlgorithm::HS256, None) if jwks => {}
                    (JwtAlgorithm::HS256, None) => env.push(SecretEnv {
                        var: "GOIM_LOGIC__AUTH__JWT__SECRET".into(),
                        secret: names.generated_secret(),
                        key: super::secret::JWT_SECRET_KEY.into(),
                    }),
                    (_, Some(r)) => {
                        jwt.insert("public_key_pem".into(), s(format!("{JWT_KEY_DIR}/{}", r.key)));
                    }
                    // Refused by the CRD's CEL rule; logic would refuse it too.
                    (_, None) => {}
                }
            }
            let (push_secret, push_key) = match &spec.auth.push_token_secret_ref {
                Some(r) => (r.name.clone(), r.key.clone()),
                None => (names.generated_secret(), super::secret::PUSH_TOKEN_KEY.to_owned()),
            };
            env.push(SecretEnv {
                var: "GOIM_LOGIC__HTTP__PUSH_TOKEN".into(),
                secret: push_secret,
                key: push_key,
            });
            t.insert(
                "logic".into(),
                table([
                    ("http", table([("addr", addr(LOGIC_HTTP))])),
                    ("auth", table([("mode", s(mode)), ("jwt", Value::Table(jwt))])),
                ]),
            );
            t.insert("grpc".into(), table([("addr", addr(LOGIC_GRPC))]));
            let mut store = Table::new();
            match spec.topology.store {
                Store::Memory => {
                    store.insert("kind".into(), s("memory"));
                }
                Store::Redis => {
                    store.insert("kind".into(), s("redis"));
                    let r = &spec.topology.redis;
                    let mut redis = Table::new();
                    if r.url_secret_ref.is_none() && !r.url.is_empty() {
                        redis.insert("url".into(), s(r.url.clone()));
                    }
                    if let Some(tls) = &r.tls {
                        let mut files = Table::new();
                        if tls.ca_secret_ref.is_some() {
                            files.insert("ca_file".into(), s(format!("{REDIS_CA_DIR}/{REDIS_CA_FILE}")));
                        }
                        if tls.client_secret_name.is_some() {
                            files.insert("cert_file".into(), s(format!("{REDIS_CLIENT_DIR}/tls.crt")));
                            files.insert("key_file".into(), s(format!("{REDIS_CLIENT_DIR}/tls.key")));
                        }
                        redis.insert("tls".into(), Value::Table(files));
                    }
                    if !redis.is_empty() {
                        store.insert("redis".into(), Value::Table(redis));
                    }
                }
            }
            if let Some(r) = &spec.topology.redis.url_secret_ref
                && spec.topology.store == Store::Redis
            {
                env.push(SecretEnv {
                    var: "GOIM_STORE__REDIS__URL".into(),
                    secret: r.name.clone(),
                    key: r.key.clone(),
                });
            }
            t.insert("store".into(), Value::Table(store));
            match spec.topology.queue {
                Queue::Direct => {
                    t.insert("queue".into(), table([("kind", s("memory"))]));
                }
                Queue::Kafka => {
                    t.insert("queue".into(), table([("kind", s("kafka"))]));
                    let k = &spec.topology.kafka;
                    let mut kafka = Table::new();
                    kafka.insert("brokers".into(), list(k.brokers.clone()));
                    kafka.insert("topic".into(), s(k.topic.clone()));
                    kafka.insert("partitions".into(), Value::Integer(k.partitions.into()));
                    kafka_security(k, &mut kafka, &mut env);
                    t.insert("kafka".into(), Value::Table(kafka));
                }
            }
            t.insert("discovery".into(), discovery(names, namespace));
        }
        Tier::Job => {
            t.insert("admin".into(), table([("addr", addr(JOB_ADMIN))]));
            t.insert("discovery".into(), discovery(names, namespace));
            let k = &spec.topology.kafka;
            t.insert("queue".into(), table([("kind", s("kafka"))]));
            let mut kafka = Table::new();
            kafka.insert("brokers".into(), list(k.brokers.clone()));
            kafka.insert("topic".into(), s(k.topic.clone()));
            kafka.insert("group".into(), s(k.group.clone()));
            kafka_security(k, &mut kafka, &mut env);
            t.insert("kafka".into(), Value::Table(kafka));
        }
    }
    (t, env)
}

/// Overlays `over` on `base`: tables merge key by key, anything else replaces.
pub fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// A tier's file: [`base`] with the user's fragment (`spec.<tier>.config`) overlaid.
pub fn render(pc: &PushCluster, tier: Tier, names: &Names, namespace: &str) -> Result<Rendered, RenderError> {
    let (mut t, secret_env) = base(pc, tier, names, namespace);
    let fragment = &pc.spec.tier(tier).config;
    if !fragment.trim().is_empty() {
        let over: Table = toml::from_str(fragment)
            .map_err(|e| RenderError::Fragment { tier: tier.as_str(), message: e.message().to_owned() })?;
        merge(&mut t, over);
    }
    let text = format!(
        "# Rendered by goim-operator for PushCluster {namespace}/{}; edit spec.{}.config instead.\n{}",
        names.cluster,
        tier.as_str(),
        toml::to_string(&t)
            .map_err(|e| RenderError::Fragment { tier: tier.as_str(), message: e.to_string() })?
    );
    let mut hashed = text.clone();
    for e in &secret_env {
        hashed.push_str(&format!("\n#{}={}/{}", e.var, e.secret, e.key));
    }
    Ok(Rendered { hash: super::sha256_hex(hashed.as_bytes()), text, secret_env })
}
