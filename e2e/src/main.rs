//! goim-e2e-node: a test node that runs the pods bound to it as local processes (docs/e2e.md).
//! Needs root (network namespaces, bind mounts) and a kubeconfig (KUBECONFIG).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use goim_e2e::{Cidr, Config, Image};
use k8s_openapi::api::core::v1::Taint;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(version, about = "A test node: pods bound to it run as local processes in network namespaces")]
struct Args {
    /// The Node's name.
    #[arg(long, env = "GOIM_E2E_NODE_NAME", default_value = "e2e-node-0")]
    name: String,
    /// The node's pod range; the bridge takes its first address.
    #[arg(long, env = "GOIM_E2E_POD_CIDR", default_value = "10.250.0.0/24")]
    pod_cidr: Cidr,
    /// The host bridge (at most 15 characters).
    #[arg(long, env = "GOIM_E2E_BRIDGE", default_value = "goim-e2e0")]
    bridge: String,
    /// Per-pod files and container logs (default /var/tmp/goim-e2e-node/<name>).
    #[arg(long, env = "GOIM_E2E_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// IMAGE=DIR: the directory holding an image's binaries (repeatable), e.g.
    /// `goim-rs=target/release`.
    #[arg(long = "image", env = "GOIM_E2E_IMAGES", value_delimiter = ',')]
    images: Vec<Image>,
    /// KEY=VALUE labels for the Node (repeatable).
    #[arg(long = "label", value_delimiter = ',')]
    labels: Vec<String>,
    /// KEY=VALUE:EFFECT or KEY:EFFECT taints for the Node (repeatable).
    #[arg(long = "taint")]
    taints: Vec<String>,
    /// The API server's address as pods should see it (KUBERNETES_SERVICE_HOST/PORT).
    #[arg(long, env = "GOIM_E2E_KUBERNETES_SERVICE")]
    kubernetes_service: Option<SocketAddr>,
    /// kube-proxy's binary, run in nftables mode for ClusterIP traffic (one node per host runs it);
    /// without it Service names resolve in pods but ClusterIPs carry nothing.
    #[arg(long, env = "GOIM_E2E_KUBE_PROXY")]
    kube_proxy: Option<PathBuf>,
    /// Do not forward the API server to pods (at the bridge address, port 443, as
    /// kubernetes.default.svc).
    #[arg(long)]
    no_api_forward: bool,
    /// Delete the Node object on exit.
    #[arg(long)]
    delete_node_on_exit: bool,
}

fn taint(s: &str) -> anyhow::Result<Taint> {
    let (kv, effect) = s.rsplit_once(':').context("a taint is KEY[=VALUE]:EFFECT")?;
    let (key, value) = kv.split_once('=').map_or((kv, None), |(k, v)| (k, Some(v.to_owned())));
    Ok(Taint { key: key.to_owned(), value, effect: effect.to_owned(), time_added: None })
}

fn config(args: Args, kube: &kube::Config) -> anyhow::Result<Config> {
    let mut c = Config::new(args.name);
    c.pod_cidr = args.pod_cidr;
    c.bridge = args.bridge;
    if let Some(d) = args.state_dir {
        c.state_dir = d;
    }
    c.images = args.images;
    for l in &args.labels {
        let (k, v) = l.split_once('=').with_context(|| format!("label {l:?} is not KEY=VALUE"))?;
        c.labels.insert(k.to_owned(), v.to_owned());
    }
    c.taints = args.taints.iter().map(|t| taint(t)).collect::<anyhow::Result<_>>()?;
    c.kubernetes_service = args.kubernetes_service;
    if !args.no_api_forward {
        let server = kube.cluster_url.to_string();
        c.api_server = Some(
            goim_e2e::api_upstream(&server)
                .with_context(|| format!("the API server {server} is not https"))?,
        );
    }
    c.kube_proxy = args.kube_proxy;
    c.kubeconfig = std::env::var_os("KUBECONFIG").map(PathBuf::from);
    c.delete_node_on_exit = args.delete_node_on_exit;
    c.validate()?;
    Ok(c)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let kube = kube::Config::infer().await.context("no kubeconfig (KUBECONFIG)")?;
    let config = match config(args, &kube) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("goim-e2e-node: {e:#}");
            std::process::exit(64);
        }
    };
    let client = kube::Client::try_from(kube).context("an API client from the kubeconfig")?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler (only fails without a runtime)");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        signal.cancel();
    });
    goim_e2e::run(config, client, shutdown).await?;
    Ok(())
}
