//! `goim`: comet, logic and job in one process, with in-memory sessions and queue.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use goim::{Config, Embedded};
use tracing::{error, info};

/// goim-rs: a goim-compatible push server. Without a config file it runs with the embedded
/// defaults: TCP 3101, WebSocket 3102 (/sub), push API 3111, admin 3100.
#[derive(Parser)]
#[command(version = goim::VERSION)]
struct Args {
    /// TOML configuration file (see examples/goim.toml).
    #[arg(long, short, env = "GOIM_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

/// Exit code for unusable configuration (sysexits' EX_USAGE).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "configuration");
            eprintln!("goim: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if args.print_config {
        match toml::to_string_pretty(&config) {
            Ok(text) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("goim: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("goim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let server = match Embedded::start(config).await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot start");
            eprintln!("goim: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    goim::signal::terminate().await;
    info!("signal received, shutting down");
    if server.stop().await { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
