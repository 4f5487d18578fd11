//! The end-to-end suite: against the cluster of the current kubeconfig (the local control plane
//! with the test node, or kind), it applies the full-topology example and proves, case by case,
//! what the operator promises: Ready, delivery by key, mid, room and broadcast over WebSocket and
//! TCP with JWTs, scaling, a rolling config change under numbered pushes, autoscaling on
//! connections, a killed comet, and deletion. It reaches Services by their ClusterIP, from
//! wherever it runs (docs/e2e.md says how each environment makes that work).
//!
//! - `cluster`: the PushCluster through the API server.
//! - `fleet`: the clients, and the accounting of what each received.
//! - `push`: tokens and the push API.
//! - `cases`: the cases.

pub mod cases;
pub mod cluster;
pub mod fleet;
pub mod push;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use goim_operator::PushCluster;
use kube::Client;

use cluster::Cluster;
use fleet::Dial;
use push::Pusher;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Case {
    Ready,
    Delivery,
    Scale,
    Rollout,
    Autoscale,
    Kill,
    Delete,
}

impl Case {
    pub const ALL: [Case; 7] =
        [Case::Ready, Case::Delivery, Case::Scale, Case::Rollout, Case::Autoscale, Case::Kill, Case::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Case::Ready => "ready",
            Case::Delivery => "delivery",
            Case::Scale => "scale",
            Case::Rollout => "rollout",
            Case::Autoscale => "autoscale",
            Case::Kill => "kill",
            Case::Delete => "delete",
        }
    }
}

impl FromStr for Case {
    type Err = String;
    fn from_str(s: &str) -> Result<Case, String> {
        Case::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            format!("unknown case {s:?}; the cases: {}", Case::ALL.map(Case::as_str).join(", "))
        })
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    pub example: PathBuf,
    pub redis_url: String,
    pub kafka_brokers: Vec<String>,
    pub image: Option<String>,
    /// Which cases run (always in [`Case::ALL`]'s order; `ready` always runs).
    pub cases: Vec<Case>,
    pub rollout_clients: usize,
    pub rollout_rooms: usize,
    pub rollout_rate: u32,
    pub autoscale_clients: usize,
}

/// What the cases share once the cluster is Ready.
pub struct Env {
    pub cluster: Cluster,
    pub dial: Arc<Dial>,
    pub pusher: Pusher,
}

/// One case's result.
pub struct Outcome {
    pub case: Case,
    pub took: Duration,
    pub result: Result<Vec<String>>,
}

/// Reads the example and fills in this environment's addresses.
pub fn load_example(o: &Options) -> Result<PushCluster> {
    let text =
        std::fs::read_to_string(&o.example).with_context(|| format!("reading {}", o.example.display()))?;
    let pc: PushCluster = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a PushCluster", o.example.display()))?;
    Ok(cluster::localise(pc, &o.redis_url, &o.kafka_brokers, o.image.as_deref()))
}

/// Checks that the API server answers.
pub async fn reachable(client: &Client) -> Result<String> {
    let v = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .context("the API server did not answer within 10 s")??;
    Ok(v.git_version)
}

/// Runs the chosen cases in order; stops after a failed `ready` (nothing else can run).
pub async fn run(client: Client, o: &Options) -> Vec<Outcome> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    let env = match setup(client, o).await {
        Ok(env) => {
            out.push(Outcome { case: Case::Ready, took: t0.elapsed(), result: Ok(env.1) });
            env.0
        }
        Err(e) => {
            out.push(Outcome { case: Case::Ready, took: t0.elapsed(), result: Err(e) });
            return out;
        }
    };
    for case in Case::ALL.into_iter().skip(1).filter(|c| o.cases.contains(c)) {
        tracing::info!(case = case.as_str(), "case starts");
        let t = Instant::now();
        let result = match case {
            Case::Ready => unreachable!("runs first"),
            Case::Delivery => cases::delivery(&env).await,
            Case::Scale => cases::scale(&env).await,
            Case::Rollout => cases::rollout(&env, o.rollout_clients, o.rollout_rooms, o.rollout_rate).await,
            Case::Autoscale => cases::autoscale(&env, o.autoscale_clients).await,
            Case::Kill => cases::kill(&env).await,
            Case::Delete => cases::delete(&env).await,
        };
        match &result {
            Ok(lines) => tracing::info!(
                case = case.as_str(),
                secs = t.elapsed().as_secs(),
                "passed: {}",
                lines.join("; ")
            ),
            Err(e) => tracing::error!(case = case.as_str(), "failed: {e:#}"),
        }
        out.push(Outcome { case, took: t.elapsed(), result });
        // After a failed case the cluster may be mid-change: let it settle before the next.
        if out.last().is_some_and(|o| o.result.is_err()) && case != Case::Delete {
            let _ = env.cluster.until_ready(2, Duration::from_secs(120)).await;
        }
    }
    out
}

async fn setup(client: Client, o: &Options) -> Result<(Env, Vec<String>)> {
    let pc = load_example(o)?;
    let comets = pc.spec.comet.pod.replicas;
    let cluster = Cluster::apply(client, &o.namespace, pc).await?;
    let took = cluster.until_ready(comets, Duration::from_secs(300)).await?;
    let (push_token, jwt_secret) = cluster.secrets().await?;
    let names = &cluster.names;
    let tcp = cluster.service(&names.comet_service(), "tcp").await?;
    let ws = cluster.service(&names.comet_service(), "websocket").await?;
    let api = cluster.service(&names.logic_service(), "http").await?;
    let dial = Arc::new(Dial { tcp, ws, jwt_secret });
    cases::probe_dial(dial.clone()).await.context("a client through the comet Service")?;
    let pusher = Pusher::new(api, push_token)?;
    // Ready pods are in the EndpointSlices at once, in the Service's proxy rules a moment later
    // (until then a ClusterIP refuses): the push API answers before the cases start.
    let answered = pusher.until_answering(Duration::from_secs(60)).await.context("the logic Service")?;
    let lines = vec![
        format!(
            "{} Ready in {:.0} s: {comets} comets, {} logic, {} job",
            o.example.display(),
            took.as_secs_f64(),
            cluster.get().await?.spec.logic.replicas,
            cluster.get().await?.spec.job.replicas
        ),
        format!(
            "comet Service tcp {tcp}, websocket {ws}; logic API {api} (answering {:.1} s after Ready)",
            answered.as_secs_f64()
        ),
    ];
    Ok((Env { pusher, cluster, dial }, lines))
}

/// The results as a table, one line per case and its details under it.
pub fn report(outcomes: &[Outcome], total: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n{:<10} {:>7}  result", "case", "seconds");
    for o in outcomes {
        let verdict = if o.result.is_ok() { "passed" } else { "FAILED" };
        let _ = writeln!(s, "{:<10} {:>7.0}  {verdict}", o.case.as_str(), o.took.as_secs_f64());
        match &o.result {
            Ok(lines) => lines.iter().for_each(|l| {
                let _ = writeln!(s, "{:19}{l}", "");
            }),
            Err(e) => {
                let _ = writeln!(s, "{:19}{e:#}", "");
            }
        }
    }
    let passed = outcomes.iter().filter(|o| o.result.is_ok()).count();
    let _ = writeln!(s, "{passed} of {} cases passed in {:.0} s", outcomes.len(), total.as_secs_f64());
    s
}

/// Fails unless every case passed.
pub fn verdict(outcomes: &[Outcome], wanted: &[Case]) -> Result<()> {
    let failed: Vec<&str> = outcomes.iter().filter(|o| o.result.is_err()).map(|o| o.case.as_str()).collect();
    let ran: Vec<Case> = outcomes.iter().map(|o| o.case).collect();
    let skipped: Vec<&str> = wanted.iter().filter(|c| !ran.contains(c)).map(|c| c.as_str()).collect();
    if !failed.is_empty() || !skipped.is_empty() {
        bail!("failed: {failed:?}; not run: {skipped:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_parse_by_name_and_unknown_ones_are_refused_with_the_list() {
        assert_eq!("rollout".parse::<Case>().unwrap(), Case::Rollout);
        let e = "roll".parse::<Case>().unwrap_err();
        assert!(e.contains("ready, delivery, scale, rollout, autoscale, kill, delete"), "{e}");
    }

    #[test]
    fn the_verdict_fails_on_a_failed_or_missing_case() {
        let ok = |case| Outcome { case, took: Duration::ZERO, result: Ok(vec![]) };
        assert!(verdict(&[ok(Case::Ready), ok(Case::Kill)], &[Case::Ready, Case::Kill]).is_ok());
        assert!(verdict(&[ok(Case::Ready)], &[Case::Ready, Case::Kill]).is_err());
        let bad = Outcome { case: Case::Kill, took: Duration::ZERO, result: Err(anyhow::anyhow!("x")) };
        let r = verdict(&[ok(Case::Ready), bad], &[Case::Ready, Case::Kill]);
        assert!(r.unwrap_err().to_string().contains("kill"));
        let table = report(&[ok(Case::Ready)], Duration::from_secs(3));
        assert!(table.contains("ready") && table.contains("passed") && table.contains("1 of 1"), "{table}");
    }

    #[test]
    fn the_example_loads_with_this_environments_addresses() {
        let o = Options {
            namespace: "ns".into(),
            example: concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/pushcluster-distributed.yaml").into(),
            redis_url: "redis://10.1.2.3:6379/0".into(),
            kafka_brokers: vec!["10.1.2.3:9092".into()],
            image: None,
            cases: Case::ALL.to_vec(),
            rollout_clients: 1,
            rollout_rooms: 1,
            rollout_rate: 1,
            autoscale_clients: 1,
        };
        let pc = load_example(&o).unwrap();
        assert_eq!(pc.spec.topology.redis.url, "redis://10.1.2.3:6379/0");
        assert_eq!(pc.spec.comet.pod.replicas, 2);
        assert!(load_example(&Options { example: "/nonexistent.yaml".into(), ..o }).is_err());
    }
}
