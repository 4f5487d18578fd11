//! goim-e2e-suite: the end-to-end suite against the cluster of the current kubeconfig
//! (docs/e2e.md). Exits 0 when every chosen case passed; 1 when one failed; 2 when no cluster
//! answers (0 with `--skip-without-cluster`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use goim_e2e::suite::{self, Case, Options};

#[derive(Parser)]
#[command(name = "goim-e2e-suite", about = "goim-rs end to end: the operator's cluster, proven case by case")]
struct Args {
    /// The namespace the PushCluster goes in (created when missing).
    #[arg(long, default_value = "goim-e2e")]
    namespace: String,
    /// The full-topology PushCluster to apply.
    #[arg(long, default_value = "examples/pushcluster-distributed.yaml")]
    example: PathBuf,
    /// The Redis the pods use, in place of the example's.
    #[arg(long)]
    redis_url: String,
    /// The Kafka brokers the pods use (comma-separated), in place of the example's.
    #[arg(long, value_delimiter = ',')]
    kafka_brokers: Vec<String>,
    /// The image the PushCluster's pods run (`repository:tag`); default: the example's.
    #[arg(long)]
    image: Option<String>,
    /// The cases to run, comma-separated (default: all; `ready` always runs).
    #[arg(long, value_delimiter = ',')]
    cases: Vec<Case>,
    #[arg(long, default_value_t = 2000)]
    rollout_clients: usize,
    #[arg(long, default_value_t = 20)]
    rollout_rooms: usize,
    /// Numbered room pushes per second during the rollout.
    #[arg(long, default_value_t = 50)]
    rollout_rate: u32,
    #[arg(long, default_value_t = 3000)]
    autoscale_clients: usize,
    /// Exit 0 (after saying so) when no cluster answers, instead of 2.
    #[arg(long)]
    skip_without_cluster: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "goim_e2e=info,warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let a = Args::parse();
    let mut cases = if a.cases.is_empty() { Case::ALL.to_vec() } else { a.cases };
    if !cases.contains(&Case::Ready) {
        cases.push(Case::Ready);
    }
    cases.sort();
    let o = Options {
        namespace: a.namespace,
        example: a.example,
        redis_url: a.redis_url,
        kafka_brokers: a.kafka_brokers,
        image: a.image,
        cases,
        rollout_clients: a.rollout_clients,
        rollout_rooms: a.rollout_rooms,
        rollout_rate: a.rollout_rate,
        autoscale_clients: a.autoscale_clients,
    };
    if let Err(e) = suite::load_example(&o) {
        eprintln!("goim-e2e-suite: {e:#}");
        return ExitCode::from(1);
    }
    let no_cluster = |e: &dyn std::fmt::Display| {
        let how = if a.skip_without_cluster { "skipping (--skip-without-cluster)" } else { "failing" };
        eprintln!("goim-e2e-suite: no cluster: {e}; {how}. Set KUBECONFIG to a cluster (docs/e2e.md).");
        ExitCode::from(if a.skip_without_cluster { 0 } else { 2 })
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => return no_cluster(&e),
    };
    match suite::reachable(&client).await {
        Ok(version) => eprintln!("goim-e2e-suite: cluster answers, Kubernetes {version}"),
        Err(e) => return no_cluster(&format!("{e:#}")),
    }
    let t0 = Instant::now();
    let outcomes = suite::run(client, &o).await;
    println!("{}", suite::report(&outcomes, t0.elapsed()));
    match suite::verdict(&outcomes, &o.cases) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("goim-e2e-suite: {e:#}");
            ExitCode::from(1)
        }
    }
}
