//! The tier binaries' `--check-config` run by the operator on every rendered file
//! (`goim_operator::check`): the real binaries, built beside this test by `cargo test --workspace`.

use goim_operator::PushCluster;
use goim_operator::check::{CheckError, Checker};
use goim_operator::render;
use k8s_openapi::api::core::v1::EnvVar;

fn example(name: &str) -> PushCluster {
    let path = format!("{}/../examples/pushcluster-{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut pc: PushCluster = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    pc.metadata.namespace = Some("ns1".into());
    pc.metadata.uid = Some("0f7e9b8e-0000-4000-8000-000000000001".into());
    pc
}

fn checker() -> Checker {
    Checker::locate().unwrap_or_else(|e| panic!("{e}: build them with `cargo build --bins`"))
}

async fn check(pc: &PushCluster) -> Result<(), CheckError> {
    checker().check_all(&render::children(pc).unwrap(), "ns1").await
}

#[tokio::test]
async fn every_tier_binary_accepts_the_rendered_examples() {
    for name in ["minimal", "production"] {
        check(&example(name)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test]
async fn an_unknown_key_in_a_fragment_is_refused_with_the_binarys_message() {
    let mut pc = example("minimal");
    pc.spec.comet.pod.config = "[comet]\nmax_conections = 5000\n".into();
    match check(&pc).await {
        Err(CheckError::Refused { tier, message }) => {
            assert_eq!(tier, "comet");
            assert!(message.contains("unknown field `max_conections`"), "{message}");
            assert!(message.contains("/etc/goim/comet.toml"), "the file is named by its pod path: {message}");
            assert!(!message.contains("goim-operator-check"), "the scratch path leaked: {message}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_value_the_binary_refuses_is_refused() {
    let mut pc = example("production");
    pc.spec.logic.config = "[logic.http]\naddr = 7\n".into();
    match check(&pc).await {
        Err(CheckError::Refused { tier, message }) => {
            assert_eq!(tier, "logic");
            assert!(message.contains("addr"), "{message}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn the_containers_environment_is_part_of_the_check() {
    // An override in spec.job.env reaches the binary as it would in the pod.
    let mut pc = example("production");
    pc.spec.job.env.push(EnvVar {
        name: "GOIM_JOB__ROOM__BATCH".into(),
        value: Some("twenty".into()),
        ..Default::default()
    });
    match check(&pc).await {
        Err(CheckError::Refused { tier, message }) => {
            assert_eq!(tier, "job");
            assert!(message.contains("job.room.batch"), "{message}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_passed_file_is_not_checked_again() {
    let checker = checker();
    let c = render::children(&example("minimal")).unwrap();
    let started = std::time::Instant::now();
    checker.check_all(&c, "ns1").await.unwrap();
    let first = started.elapsed();
    let started = std::time::Instant::now();
    for _ in 0..100 {
        checker.check_all(&c, "ns1").await.unwrap();
    }
    eprintln!("first check {first:?}, then {:?} per remembered check", started.elapsed() / 100);
    assert_eq!(checker.runs(), 2, "comet and logic ran once each");
}
