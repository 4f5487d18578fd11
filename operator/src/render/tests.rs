use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::*;
use crate::crd::{CometSpec, Kafka, Redis, Store, Topology};

pub(crate) fn cluster(spec: PushClusterSpec) -> PushCluster {
    let mut pc = PushCluster::new("demo", spec);
    pc.metadata.namespace = Some("ns1".into());
    pc.metadata.uid = Some("0f7e9b8e-0000-4000-8000-000000000001".into());
    pc
}

fn full() -> PushClusterSpec {
    PushClusterSpec {
        topology: Topology {
            store: Store::Redis,
            queue: Queue::Kafka,
            redis: Redis { url: "redis://redis:6379/0".into(), url_secret_ref: None, tls: None },
            kafka: Kafka { brokers: vec!["kafka:9092".into()], ..Default::default() },
        },
        ..Default::default()
    }
}

fn service<'a>(c: &'a Children, name: &str) -> &'a Service {
    c.services.iter().find(|s| s.name_any() == name).unwrap_or_else(|| panic!("no Service {name}"))
}

#[test]
fn minimal_renders_comet_and_logic_only() {
    let c = children(&cluster(PushClusterSpec::default())).unwrap();
    let names: Vec<_> = c.deployments.iter().map(|d| d.name_any()).collect();
    assert_eq!(names, ["demo-comet", "demo-logic"]);
    let cms: Vec<_> = c.config_maps.iter().map(|d| d.name_any()).collect();
    assert_eq!(cms, ["demo-comet-config", "demo-logic-config"]);
    assert_eq!(c.hashes.keys().collect::<Vec<_>>(), ["comet", "logic"]);
    assert_eq!(c.pdbs.len(), 2);
}

#[test]
fn full_topology_renders_job() {
    let c = children(&cluster(full())).unwrap();
    assert!(c.deployments.iter().any(|d| d.name_any() == "demo-job"));
    let job = c.config_maps.iter().find(|m| m.name_any() == "demo-job-config").unwrap();
    let text = &job.data.as_ref().unwrap()["job.toml"];
    let t: toml::Table = toml::from_str(text).unwrap();
    assert_eq!(t["queue"]["kind"].as_str(), Some("kafka"));
    assert_eq!(t["discovery"]["kind"].as_str(), Some("kubernetes"));
    assert_eq!(t["discovery"]["kubernetes"]["service"].as_str(), Some("demo-comet-grpc"));
    assert_eq!(t["kafka"]["group"].as_str(), Some("goim-push-group-job"));
}

#[test]
fn every_child_is_owned_by_the_cluster() {
    let c = children(&cluster(full())).unwrap();
    let mut metas = Vec::new();
    metas.extend(c.config_maps.iter().map(|o| &o.metadata));
    metas.extend(c.deployments.iter().map(|o| &o.metadata));
    metas.extend(c.services.iter().map(|o| &o.metadata));
    metas.extend(c.service_accounts.iter().map(|o| &o.metadata));
    metas.extend(c.roles.iter().map(|o| &o.metadata));
    metas.extend(c.role_bindings.iter().map(|o| &o.metadata));
    metas.extend(c.pdbs.iter().map(|o| &o.metadata));
    assert_eq!(metas.len(), 3 + 3 + 4 + 2 + 1 + 1 + 3);
    for m in metas {
        let refs = m.owner_references.as_ref().unwrap();
        assert_eq!(refs.len(), 1, "{:?}", m.name);
        assert_eq!(refs[0].kind, "PushCluster");
        assert_eq!(refs[0].name, "demo");
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(m.namespace.as_deref(), Some("ns1"));
        assert_eq!(m.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"], MANAGER);
    }
}

#[test]
fn pod_templates_carry_hash_pod_name_probes_and_config() {
    let c = children(&cluster(full())).unwrap();
    for d in &c.deployments {
        let tier = Tier::ALL.into_iter().find(|t| d.name_any() == format!("demo-{}", t.as_str())).unwrap();
        let tpl = &d.spec.template;
        let ann = tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_HASH], c.hashes[tier.as_str()]);
        let pod = tpl.spec.as_ref().unwrap();
        let ctr = &pod.containers[0];
        assert_eq!(ctr.command.as_deref(), Some(&[tier.binary().to_owned()][..]));
        assert_eq!(ctr.args.as_ref().unwrap()[1], format!("/etc/goim/{}.toml", tier.as_str()));
        let env = ctr.env.as_ref().unwrap();
        let pod_name = env.iter().find(|e| e.name == "POD_NAME").unwrap();
        assert_eq!(
            pod_name.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path,
            "metadata.name"
        );
        let admin = ctr.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some("admin")).unwrap();
        assert_eq!(admin.container_port, i32::from(tier.admin_port()));
        let live = ctr.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        let ready = ctr.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        let selector = d.spec.selector.match_labels.as_ref().unwrap();
        let labels = tpl.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        let vol = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(vol.config_map.as_ref().unwrap().name, format!("demo-{}-config", tier.as_str()));
    }
}

#[test]
fn services_expose_clients_api_and_headless_grpc() {
    let c = children(&cluster(PushClusterSpec::default())).unwrap();
    let client = service(&c, "demo-comet").spec.as_ref().unwrap();
    let ports: Vec<_> =
        client.ports.as_ref().unwrap().iter().map(|p| (p.name.clone().unwrap(), p.port)).collect();
    assert_eq!(ports, [("tcp".to_owned(), 3101), ("websocket".to_owned(), 3102)]);
    for (name, port) in [("demo-comet-grpc", 3109), ("demo-logic-grpc", 3119)] {
        let s = service(&c, name).spec.as_ref().unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"), "{name}");
        let p = &s.ports.as_ref().unwrap()[0];
        assert_eq!((p.name.as_deref(), p.port), (Some("grpc"), port));
    }
    let api = service(&c, "demo-logic").spec.as_ref().unwrap();
    assert_eq!(api.ports.as_ref().unwrap()[0].port, 3111);
}

#[test]
fn comet_reaches_logic_through_the_headless_service() {
    let pc = cluster(PushClusterSpec::default());
    let r = config::render(&pc, Tier::Comet, &Names::new("demo"), "ns1").unwrap();
    let t: toml::Table = toml::from_str(&r.text).unwrap();
    assert_eq!(t["logic_client"]["addrs"][0].as_str(), Some("demo-logic-grpc.ns1.svc:3119"));
    assert!(t["comet"].get("server_id").is_none(), "server_id comes from POD_NAME");
}

#[test]
fn fragment_overlays_the_rendered_file() {
    let mut spec = PushClusterSpec::default();
    spec.comet.pod.config = "[comet.websocket]\ndemo = false\n[logic_client]\ntimeout = \"2s\"\n".into();
    let r = config::render(&cluster(spec), Tier::Comet, &Names::new("demo"), "ns1").unwrap();
    let t: toml::Table = toml::from_str(&r.text).unwrap();
    assert_eq!(t["comet"]["websocket"]["demo"].as_bool(), Some(false));
    assert_eq!(t["comet"]["websocket"]["bind"][0].as_str(), Some("0.0.0.0:3102"), "siblings stay");
    assert_eq!(t["logic_client"]["timeout"].as_str(), Some("2s"));
    assert!(t["logic_client"].get("addrs").is_some());
}

#[test]
fn a_fragment_that_is_not_toml_is_refused() {
    let mut spec = PushClusterSpec::default();
    spec.logic.config = "[logic\n".into();
    match children(&cluster(spec)) {
        Err(RenderError::Fragment { tier: "logic", .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_comet_config_change_changes_only_comets_hash() {
    let before = children(&cluster(full())).unwrap().hashes;
    let mut spec = full();
    spec.comet = CometSpec {
        pod: TierSpec { config: "[comet]\nmax_connections = 5\n".into(), ..Default::default() },
        ..Default::default()
    };
    let after = children(&cluster(spec)).unwrap().hashes;
    assert_ne!(before["comet"], after["comet"]);
    assert_eq!(before["logic"], after["logic"]);
    assert_eq!(before["job"], after["job"]);
}

#[test]
fn a_job_replica_change_touches_only_jobs_deployment() {
    let before = children(&cluster(full())).unwrap();
    let mut spec = full();
    spec.job.replicas = 3;
    let after = children(&cluster(spec)).unwrap();
    for (b, a) in before.deployments.iter().zip(&after.deployments) {
        assert_eq!(b == a, a.name_any() != "demo-job", "{}", a.name_any());
    }
    assert_eq!(before.config_maps, after.config_maps);
}

#[test]
fn secrets_reach_logic_as_environment_overrides() {
    let c = children(&cluster(PushClusterSpec::default())).unwrap();
    let logic = c.deployments.iter().find(|d| d.name_any() == "demo-logic").unwrap();
    let env = logic.spec.template.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
    for var in ["GOIM_LOGIC__HTTP__PUSH_TOKEN", "GOIM_LOGIC__AUTH__JWT__SECRET"] {
        let e = env.iter().find(|e| e.name == var).unwrap_or_else(|| panic!("{var}"));
        let r = e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(r.name, "demo-generated");
    }
}

#[test]
fn generated_tokens_read_as_strings() {
    let owner = Owner::of(&cluster(PushClusterSpec::default())).unwrap();
    let s = secret::generated(&owner);
    for v in s.string_data.unwrap().values() {
        assert!(v.len() > 40);
        assert!(v.parse::<toml::Value>().is_err(), "{v} would read as a TOML value");
    }
}

#[test]
fn each_binarys_shutdown_grace_fits_in_its_pods_termination_grace() {
    let mut spec = full();
    spec.comet.pod.termination_grace_period_seconds = 90;
    spec.job.termination_grace_period_seconds = 3;
    let pc = cluster(spec);
    let names = Names::new("demo");
    // comet: 90 s less the 20 s drain less the margin.
    for (tier, want) in [(Tier::Comet, "65s"), (Tier::Logic, "25s"), (Tier::Job, "1s")] {
        let text = config::render(&pc, tier, &names, "ns1").unwrap().text;
        let file: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(file["shutdown"]["grace"].as_str(), Some(want), "{tier:?}");
    }
}

#[test]
fn liveness_waits_for_a_startup_probe() {
    let c = children(&cluster(full())).unwrap();
    for d in &c.deployments {
        let ctr = &d.spec.template.spec.as_ref().unwrap().containers[0];
        let startup = ctr.startup_probe.as_ref().expect("a startup probe");
        let get = startup.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        let budget = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
        assert!(
            budget >= 120,
            "{}: {budget}s may cut logic's start (store, topic, discovery) short",
            d.name_any()
        );
    }
}

#[test]
fn comet_drains_in_its_prestop_hook_with_the_specs_pace() {
    let mut spec = full();
    spec.drain.timeout_seconds = 45;
    spec.drain.disconnects_per_second = 200;
    spec.drain.reconnect_jitter_seconds = 7;
    spec.comet.pod.termination_grace_period_seconds = 60;
    let pc = cluster(spec);
    let c = children(&pc).unwrap();
    let comet = c.deployments.iter().find(|d| d.name_any() == "demo-comet").unwrap();
    let ctr = &comet.spec.template.spec.as_ref().unwrap().containers[0];
    let hook = ctr.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(hook.path.as_deref(), Some("/drain"));
    assert_eq!(hook.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("admin".into()));
    let text = config::render(&pc, Tier::Comet, &Names::new("demo"), "ns1").unwrap().text;
    let file: toml::Table = toml::from_str(&text).unwrap();
    let drain = &file["comet"]["drain"];
    assert_eq!(drain["timeout"].as_str(), Some("45s"));
    assert_eq!(drain["rate"].as_integer(), Some(200));
    assert_eq!(drain["reconnect_jitter"].as_str(), Some("7s"));
    // 60 s of grace: 45 s of drain, then 10 s of shutdown, 5 s to spare.
    assert_eq!(file["shutdown"]["grace"].as_str(), Some("10s"));
    for d in c.deployments.iter().filter(|d| d.name_any() != "demo-comet") {
        let ctr = &d.spec.template.spec.as_ref().unwrap().containers[0];
        assert!(ctr.lifecycle.is_none(), "{} has no drain", d.name_any());
    }
}
