//! Every rendered config file is read by the tier's own loader (`goim::process::load`, what
//! the binaries run at start: the file, the `GOIM_*` environment overrides of the rendered
//! container, the `POD_NAME` default, unknown keys refused, `validate()`), for each topology.

use std::collections::BTreeMap;
use std::path::PathBuf;

use goim::distributed::{CometSettings, JobSettings, LogicSettings};
use goim::process::{LoadError, load};
use goim_operator::crd::{
    JwtAlgorithm, Kafka, KafkaSasl, KafkaTls, Queue, Redis, RedisTls, SaslMechanism, SecretKeyRef, Store,
    Topology,
};
use goim_operator::render::{self, Tier};
use goim_operator::{PushCluster, PushClusterSpec};
use kube::ResourceExt;

fn cluster(spec: PushClusterSpec) -> PushCluster {
    let mut pc = PushCluster::new("demo", spec);
    pc.metadata.namespace = Some("ns1".into());
    pc.metadata.uid = Some("0f7e9b8e-0000-4000-8000-000000000001".into());
    pc
}

fn shapes() -> Vec<(&'static str, PushClusterSpec)> {
    let redis = Redis { url: "redis://redis.ns1.svc:6379/0".into(), url_secret_ref: None, tls: None };
    let secret_redis = Redis {
        url_secret_ref: Some(SecretKeyRef { name: "redis".into(), key: "url".into() }),
        ..Default::default()
    };
    let kafka = Kafka {
        brokers: vec!["kafka-0.kafka:9092".into(), "kafka-1.kafka:9092".into()],
        ..Default::default()
    };
    let mut wss = PushClusterSpec::default();
    wss.comet.service.wss.tls_secret_name = "comet-tls".into();
    wss.comet.pod.config = "[comet]\nmax_connections = 50000\n[comet.websocket]\ndemo = false\n".into();
    wss.logic.config = "[logic.http]\ncors_origins = [\"*\"]\n".into();
    vec![
        ("memory+direct", PushClusterSpec::default()),
        (
            "redis+direct",
            PushClusterSpec {
                topology: Topology { store: Store::Redis, redis: redis.clone(), ..Default::default() },
                ..Default::default()
            },
        ),
        (
            "redis(secret)+kafka",
            PushClusterSpec {
                topology: Topology { store: Store::Redis, queue: Queue::Kafka, redis: secret_redis, kafka },
                ..Default::default()
            },
        ),
        ("wss+fragments", wss),
    ]
}

/// The container's environment as the kubelet would give it (Secrets as sample values).
fn environment(pc: &PushCluster, tier: Tier) -> Vec<(String, String)> {
    let c = render::children(pc).unwrap();
    let d = c.deployments.iter().find(|d| d.name_any() == format!("demo-{}", tier.as_str())).unwrap();
    let ctr = &d.spec.template.spec.as_ref().unwrap().containers[0];
    ctr.env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) if from.field_ref.is_some() => {
                    match from.field_ref.as_ref().unwrap().field_path.as_str() {
                        "metadata.name" => format!("demo-{}-5d9c7b-x2x4q", tier.as_str()),
                        "metadata.namespace" => "ns1".into(),
                        other => panic!("unexpected field ref {other}"),
                    }
                }
                (None, Some(from)) if from.secret_key_ref.as_ref().is_some_and(|r| r.key == "url") => {
                    "redis://:pw@redis.ns1.svc:6379/0".into()
                }
                (None, Some(_)) => "sample_Secret_value_0123456789".into(),
                (None, None) => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect()
}

fn write(tier: Tier, shape: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("goim-operator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{}.toml", shape.replace(['+', '(', ')'], "_"), tier.as_str()));
    std::fs::write(&path, text).unwrap();
    path
}

fn load_tier(pc: &PushCluster, tier: Tier, shape: &str) -> Result<(), LoadError> {
    let c = render::children(pc).unwrap();
    let cm = c.config_maps.iter().find(|m| m.name_any() == format!("demo-{}-config", tier.as_str())).unwrap();
    let data: &BTreeMap<String, String> = cm.data.as_ref().unwrap();
    let path = write(tier, shape, &data[&format!("{}.toml", tier.as_str())]);
    let env = environment(pc, tier);
    match tier {
        Tier::Comet => load::<CometSettings>(Some(&path), env).map(|s| {
            assert_eq!(s.comet.server_id, "demo-comet-5d9c7b-x2x4q", "server_id is the pod name");
        }),
        Tier::Logic => load::<LogicSettings>(Some(&path), env).map(|s| {
            assert_eq!(s.logic.http.push_token.as_deref(), Some("sample_Secret_value_0123456789"));
        }),
        Tier::Job => load::<JobSettings>(Some(&path), env).map(|_| ()),
    }
}

#[test]
fn every_rendered_file_loads_with_the_tiers_own_settings() {
    for (shape, spec) in shapes() {
        let pc = cluster(spec);
        for tier in pc.spec.tiers() {
            if let Err(e) = load_tier(&pc, tier, shape) {
                panic!("{shape}: {} refuses its rendered config: {e}", tier.binary());
            }
        }
    }
}

#[test]
fn an_unknown_key_in_a_fragment_is_refused_by_the_binarys_loader() {
    let mut spec = PushClusterSpec::default();
    spec.comet.pod.config = "[comet]\nmax_conections = 5\n".into();
    let pc = cluster(spec);
    let err = load_tier(&pc, Tier::Comet, "typo").unwrap_err().to_string();
    assert!(err.contains("max_conections"), "{err}");
}

#[test]
fn an_invalid_value_in_a_fragment_is_refused_by_validate() {
    let mut spec = PushClusterSpec::default();
    spec.logic.config = "[shutdown]\ngrace = \"0s\"\n".into();
    let pc = cluster(spec);
    let err = load_tier(&pc, Tier::Logic, "invalid").unwrap_err().to_string();
    assert!(err.contains("shutdown.grace"), "{err}");
}

#[test]
fn the_examples_render_files_their_binaries_load() {
    for name in ["minimal", "production"] {
        let path = format!("{}/../examples/pushcluster-{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let mut pc: PushCluster = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // The tests render under the name "demo".
        pc.metadata.name = Some("demo".into());
        pc.metadata.namespace = Some("ns1".into());
        pc.metadata.uid = Some("0f7e9b8e-0000-4000-8000-000000000001".into());
        for tier in pc.spec.tiers() {
            if let Err(e) = load_tier(&pc, tier, name) {
                panic!("{name}: {} refuses its rendered config: {e}", tier.binary());
            }
        }
    }
}

#[test]
fn kafka_tls_and_sasl_reach_both_clients_from_secrets() {
    let secure = |tls: bool, sasl: bool| {
        let kafka = Kafka {
            brokers: vec!["kafka-0.kafka:9093".into()],
            tls: tls.then(|| KafkaTls {
                ca_secret_ref: Some(SecretKeyRef { name: "kafka-ca".into(), key: "ca.pem".into() }),
            }),
            sasl: sasl.then(|| KafkaSasl {
                mechanism: SaslMechanism::ScramSha256,
                username_secret_ref: SecretKeyRef { name: "kafka-user".into(), key: "username".into() },
                password_secret_ref: SecretKeyRef { name: "kafka-user".into(), key: "password".into() },
            }),
            ..Default::default()
        };
        let redis = Redis { url: "redis://redis.ns1.svc:6379/0".into(), url_secret_ref: None, tls: None };
        cluster(PushClusterSpec {
            topology: Topology { store: Store::Redis, queue: Queue::Kafka, redis, kafka },
            ..Default::default()
        })
    };
    for (tls, sasl, protocol) in
        [(true, true, "SASL_SSL"), (true, false, "SSL"), (false, true, "SASL_PLAINTEXT")]
    {
        let pc = secure(tls, sasl);
        let shape = format!("kafka-{protocol}");
        let c = render::children(&pc).unwrap();
        for tier in [Tier::Logic, Tier::Job] {
            let cm = c
                .config_maps
                .iter()
                .find(|m| m.name_any() == format!("demo-{}-config", tier.as_str()))
                .unwrap();
            let path = write(tier, &shape, &cm.data.as_ref().unwrap()[&format!("{}.toml", tier.as_str())]);
            let env = environment(&pc, tier);
            let props = match tier {
                Tier::Logic => load::<LogicSettings>(Some(&path), env).unwrap().kafka.properties,
                _ => load::<JobSettings>(Some(&path), env).unwrap().kafka.properties,
            };
            assert_eq!(props["security.protocol"], protocol, "{shape} {tier:?}");
            if sasl {
                assert_eq!(props["sasl.mechanism"], "SCRAM-SHA-256");
                assert_eq!(
                    props["sasl.username"], "sample_Secret_value_0123456789",
                    "{tier:?}: from the Secret"
                );
                assert_eq!(
                    props["sasl.password"], "sample_Secret_value_0123456789",
                    "{tier:?}: from the Secret"
                );
                assert!(
                    !cm.data.as_ref().unwrap().values().any(|t| t.contains("sasl.password")),
                    "no Secret in the file"
                );
            }
            let d = c.deployments.iter().find(|d| d.name_any() == format!("demo-{}", tier.as_str())).unwrap();
            let pod = d.spec.template.spec.as_ref().unwrap();
            let mounted = pod.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "kafka-ca" && m.mount_path == "/etc/goim/kafka");
            assert_eq!(mounted, tls, "{shape} {tier:?}: the CA is mounted with TLS");
            if tls {
                assert_eq!(props["ssl.ca.location"], "/etc/goim/kafka/ca.crt");
                let v = pod.volumes.iter().flatten().find(|v| v.name == "kafka-ca").unwrap();
                let items = v.secret.as_ref().unwrap().items.clone().unwrap();
                assert_eq!((items[0].key.as_str(), items[0].path.as_str()), ("ca.pem", "ca.crt"));
            }
        }
    }
}

#[test]
fn redis_tls_reaches_logic_as_mounted_files() {
    let tls_cluster = |url: &str, client: bool| {
        let redis = Redis {
            url: url.into(),
            url_secret_ref: None,
            tls: Some(RedisTls {
                ca_secret_ref: Some(SecretKeyRef { name: "redis-ca".into(), key: "ca.pem".into() }),
                client_secret_name: client.then(|| "logic-redis-client".into()),
            }),
        };
        cluster(PushClusterSpec {
            topology: Topology { store: Store::Redis, redis, ..Default::default() },
            ..Default::default()
        })
    };
    for client in [false, true] {
        let pc = tls_cluster("rediss://redis.ns1.svc:6380/0", client);
        let shape = format!("redis-tls-{client}");
        let c = render::children(&pc).unwrap();
        let cm = c.config_maps.iter().find(|m| m.name_any() == "demo-logic-config").unwrap();
        let path = write(Tier::Logic, &shape, &cm.data.as_ref().unwrap()["logic.toml"]);
        let store = load::<LogicSettings>(Some(&path), environment(&pc, Tier::Logic)).unwrap().store;
        assert_eq!(store.redis.url, "rediss://redis.ns1.svc:6380/0");
        assert_eq!(store.redis.tls.ca_file, Some(PathBuf::from("/etc/goim/redis/ca.crt")));
        let (cert, key) = (store.redis.tls.cert_file.clone(), store.redis.tls.key_file.clone());
        if client {
            assert_eq!(cert, Some(PathBuf::from("/etc/goim/redis-client/tls.crt")));
            assert_eq!(key, Some(PathBuf::from("/etc/goim/redis-client/tls.key")));
        } else {
            assert_eq!((cert, key), (None, None));
        }
        let d = c.deployments.iter().find(|d| d.name_any() == "demo-logic").unwrap();
        let pod = d.spec.template.spec.as_ref().unwrap();
        let mounts: Vec<_> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert!(mounts.contains(&("redis-ca", "/etc/goim/redis")), "{mounts:?}");
        assert_eq!(mounts.contains(&("redis-client", "/etc/goim/redis-client")), client, "{mounts:?}");
        let ca = pod.volumes.iter().flatten().find(|v| v.name == "redis-ca").unwrap();
        let items = ca.secret.as_ref().unwrap().items.clone().unwrap();
        assert_eq!((items[0].key.as_str(), items[0].path.as_str()), ("ca.pem", "ca.crt"));
        if client {
            let v = pod.volumes.iter().flatten().find(|v| v.name == "redis-client").unwrap();
            assert_eq!(v.secret.as_ref().unwrap().secret_name.as_deref(), Some("logic-redis-client"));
        }
        // comet never talks to Redis: nothing of it is mounted there.
        let comet = c.deployments.iter().find(|d| d.name_any() == "demo-comet").unwrap();
        let comet_mounts = comet.spec.template.spec.as_ref().unwrap().containers[0].volume_mounts.clone();
        assert!(!comet_mounts.iter().flatten().any(|m| m.name.starts_with("redis")));
    }
    // TLS with a plain redis:// URL: the binary's own refusal, naming the field.
    let plain = tls_cluster("redis://redis.ns1.svc:6379/0", false);
    let err = load_tier(&plain, Tier::Logic, "redis-tls-plain").unwrap_err().to_string();
    assert!(err.contains("store.redis.tls") && err.contains("rediss://"), "{err}");
}

#[test]
fn a_jwks_secret_and_url_reach_logic_as_a_reloadable_file_and_no_jwt_secret_is_generated() {
    let mut spec = PushClusterSpec::default();
    spec.auth.jwt.algorithm = JwtAlgorithm::RS256;
    spec.auth.jwt.jwks_secret_ref = Some(SecretKeyRef { name: "goim-jwks".into(), key: "jwks.json".into() });
    spec.auth.jwt.jwks_url = "https://id.example.com/.well-known/jwks.json".into();
    let pc = cluster(spec);
    let c = render::children(&pc).unwrap();
    let cm = c.config_maps.iter().find(|m| m.name_any() == "demo-logic-config").unwrap();
    let path = write(Tier::Logic, "jwks", &cm.data.as_ref().unwrap()["logic.toml"]);
    let env = environment(&pc, Tier::Logic);
    assert!(
        !env.iter().any(|(k, _)| k == "GOIM_LOGIC__AUTH__JWT__SECRET"),
        "no single key with a JWKS: {env:?}"
    );
    let logic = load::<LogicSettings>(Some(&path), env).unwrap().logic;
    assert_eq!(logic.auth.jwt.jwks.file, Some(PathBuf::from("/etc/goim/jwks/jwks.json")));
    assert_eq!(logic.auth.jwt.jwks.url.as_deref(), Some("https://id.example.com/.well-known/jwks.json"));
    let d = c.deployments.iter().find(|d| d.name_any() == "demo-logic").unwrap();
    let pod = d.spec.template.spec.as_ref().unwrap();
    let mount = pod.containers[0].volume_mounts.iter().flatten().find(|m| m.name == "jwks").expect("mounted");
    assert_eq!(mount.mount_path, "/etc/goim/jwks");
    assert!(mount.sub_path.is_none(), "a subPath mount never sees the Secret change");
    let v = pod.volumes.iter().flatten().find(|v| v.name == "jwks").unwrap();
    let secret = v.secret.as_ref().unwrap();
    assert_eq!((secret.secret_name.as_deref(), secret.items.as_ref()), (Some("goim-jwks"), None));
}
