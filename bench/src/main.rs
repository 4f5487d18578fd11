//! `goim-bench`: the load generator. `run` measures goim-rs and its peers side by side and
//! writes a report; `smoke` runs every scenario against goim-rs at tiny sizes for CI; `report`
//! renders a saved run again; `soak` holds connections against the distributed mode for a long
//! time; `worker` and `soak-worker` are started by the others.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use goim_bench::protocol::Protocol;
use goim_bench::report::{self, Results};
use goim_bench::run::{self, Plan, Scenario};
use goim_bench::soak;
use goim_bench::target::{Kind, Options};

#[derive(Parser)]
#[command(version, about = "goim-rs load generator and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The full benchmark: every scenario, goim-rs and the peers side by side.
    Run(Box<RunArgs>),
    /// Every scenario against goim-rs (and the room broadcast against the floor) at tiny
    /// sizes, in seconds; fails on any error.
    Smoke(Common),
    /// Renders report.md and the plots again from <out>/results.json.
    Report {
        #[arg(long, default_value = "bench/out")]
        out: PathBuf,
    },
    /// Holds many connections against the distributed mode under mixed traffic for a long time;
    /// prints lost pushes, disconnects and RSS over time (scripts/soak.sh runs it).
    Soak(Box<SoakArgs>),
    /// Internal: the floor server (not a push server: writes each push's frame to every
    /// connection, one thread per core), started by `run` for `--targets floor`.
    #[command(hide = true)]
    FloorServer {
        #[arg(long)]
        ws: std::net::SocketAddr,
        #[arg(long)]
        push: std::net::SocketAddr,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Internal: a load-generator worker, driven over stdio by `run` or `smoke`.
    #[command(hide = true)]
    Worker,
    /// Internal: a soak worker, driven over stdio by `soak`.
    #[command(hide = true)]
    SoakWorker,
}

#[derive(Args)]
struct SoakArgs {
    /// The goim binary; goim-logic, goim-comet and goim-job are taken from next to it
    /// (default: next to this executable).
    #[arg(long)]
    goim_bin: Option<PathBuf>,
    /// Where soak.csv, the plots and summary.md go.
    #[arg(long, default_value = "/var/tmp/goim-rs-soak")]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    connections: u64,
    /// Traffic time after everyone connected: `1h`, `3m`, `90s`.
    #[arg(long, default_value = "1h", value_parser = duration)]
    duration: Duration,
    /// Run nothing: draw the plots of the soak in `--out` again from its soak.csv.
    #[arg(long)]
    replot: bool,
    #[arg(long, default_value_t = 2)]
    comets: usize,
    #[arg(long, default_value_t = 100)]
    rooms: u32,
    /// Room pushes per second (round-robin over the rooms, a sequence per room).
    #[arg(long, default_value_t = 20.0)]
    room_rate: f64,
    /// Pushes by mid per second (round-robin over the users, a sequence per user).
    #[arg(long, default_value_t = 50.0)]
    user_rate: f64,
    /// Broadcasts per second (one sequence).
    #[arg(long, default_value_t = 0.5)]
    broadcast_rate: f64,
    /// Fraction of the clients that disconnect and reconnect on purpose every minute.
    #[arg(long, default_value_t = 0.01)]
    churn: f64,
    /// Slow clients (stop reading) per minute.
    #[arg(long, default_value_t = 3.0)]
    slow_per_min: f64,
    /// How long a slow client stops reading.
    #[arg(long, default_value = "20s", value_parser = duration)]
    pause: Duration,
    /// One client in N per comet speaks WebSocket, the rest TCP (0: all TCP).
    #[arg(long, default_value_t = 4)]
    ws_every: u64,
    /// One client in N may be picked as a slow client.
    #[arg(long, default_value_t = 97)]
    slow_every: u64,
    /// Client heartbeat interval in seconds.
    #[arg(long, default_value_t = 30.0)]
    heartbeat_secs: f64,
    /// scripts/services.sh's state directory ($GOIM_SERVICES_DIR): Redis's and Kafka's RSS are
    /// sampled too.
    #[arg(long)]
    services_dir: Option<PathBuf>,
}

/// `90s`, `3m`, `1h`, or plain seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration {s:?}: use s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Args)]
struct Common {
    /// The goim-rs binary to measure (default: `goim` next to this executable).
    #[arg(long)]
    goim_bin: Option<PathBuf>,
    /// Where socket.io is installed (a directory with node_modules/socket.io).
    #[arg(long, default_value = "/var/tmp/goim-tools/socketio")]
    socketio_dir: PathBuf,
    /// Where results, the report and the plots go.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// goim-rs transports; the first is compared with the peers. Default: goim-ws, goim-tcp,
    /// goim-poll.
    #[arg(long, value_delimiter = ',')]
    goim_protocols: Vec<Protocol>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// goim (the embedded binary), goim-kafka (logic, comet and job through Redis and Kafka:
    /// room latency only), nchan, socketio.
    #[arg(long, value_delimiter = ',', default_value = "goim,goim-kafka,nchan,socketio")]
    targets: Vec<Kind>,
    #[arg(long, value_delimiter = ',', default_value = "idle,room,rooms,users,storm")]
    scenarios: Vec<Scenario>,
    /// Connection counts for the idle scenario.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    idle_sizes: Vec<u64>,
    /// Subscribers in the push scenarios.
    #[arg(long, default_value_t = 10_000)]
    subscribers: u64,
    /// Push rates (pushes/s) to one room.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,20,50,100,200,500,1000,2000")]
    room_rates: Vec<f64>,
    /// Rooms in the many-rooms scenario.
    #[arg(long, default_value_t = 100)]
    rooms: u32,
    /// Push rates (pushes/s) to random rooms.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500,1000,2000,5000,10000")]
    rooms_rates: Vec<f64>,
    /// Push rates (pushes/s) to random users.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000,2000,5000,10000,20000")]
    user_rates: Vec<f64>,
    /// Connects + auths per second, rising.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000,4000,8000")]
    storm_rates: Vec<f64>,
    /// Seconds per push-rate step.
    #[arg(long, default_value_t = 10.0)]
    step_secs: f64,
    /// Seconds per storm step.
    #[arg(long, default_value_t = 5.0)]
    storm_secs: f64,
    /// Client heartbeat interval in seconds (goim's JavaScript demo uses 30).
    #[arg(long, default_value_t = 30.0)]
    heartbeat_secs: f64,
    /// nginx worker processes in the push scenarios (one per core).
    #[arg(long, default_value_t = 2)]
    nginx_workers: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Worker = cli.command {
        return match goim_bench::worker::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("goim-bench worker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Cmd::FloorServer { ws, push, threads } = cli.command {
        goim_bench::limits::raise_open_files();
        return match goim_bench::floor::serve(ws, push, threads) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("goim-bench floor-server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Cmd::SoakWorker = cli.command {
        return match goim_bench::soak::worker::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("goim-bench soak-worker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    goim_bench::limits::raise_open_files();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("goim-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("goim-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match cmd {
        Cmd::Run(a) => {
            let plan = Plan {
                targets: a.targets,
                scenarios: a.scenarios,
                goim_protocols: goim_protocols(&a.common),
                idle_sizes: a.idle_sizes,
                subscribers: a.subscribers,
                room_rates: a.room_rates,
                rooms: a.rooms,
                rooms_rates: a.rooms_rates,
                user_rates: a.user_rates,
                storm_rates: a.storm_rates,
                step_secs: a.step_secs,
                storm_secs: a.storm_secs,
                heartbeat: Duration::from_secs_f64(a.heartbeat_secs),
                settle: Duration::from_secs(3),
                nginx_workers: a.nginx_workers,
                out: a.common.out.clone(),
                options: options(&a.common)?,
                smoke: false,
                command,
            };
            let results = run::run(&plan).await?;
            Ok(if results.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Smoke(c) => {
            let plan = Plan {
                // The floor too: its room broadcast must deliver everything as well.
                targets: vec![Kind::Goim, Kind::Floor],
                scenarios: vec![
                    Scenario::Idle,
                    Scenario::Room,
                    Scenario::Rooms,
                    Scenario::Users,
                    Scenario::Storm,
                ],
                goim_protocols: goim_protocols(&c),
                idle_sizes: vec![300],
                subscribers: 300,
                room_rates: vec![2.0, 50.0],
                rooms: 10,
                rooms_rates: vec![50.0],
                user_rates: vec![100.0],
                storm_rates: vec![100.0],
                step_secs: 1.0,
                storm_secs: 1.0,
                heartbeat: Duration::from_secs(1),
                settle: Duration::from_secs(1),
                nginx_workers: 1,
                out: c.out.clone(),
                options: options(&c)?,
                smoke: true,
                command,
            };
            let results = run::run(&plan).await?;
            let problems = run::smoke_problems(&results);
            if problems.is_empty() {
                eprintln!("smoke: every scenario ran without errors");
                return Ok(ExitCode::SUCCESS);
            }
            for p in &problems {
                eprintln!("smoke: {p}");
            }
            Ok(ExitCode::FAILURE)
        }
        Cmd::Report { out } => {
            let results = Results::load(&out)?;
            report::write(&results, &out)?;
            eprintln!("report: {}", out.join("report.md").display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Soak(a) if a.replot => {
            for file in soak::replot(&a.out)? {
                eprintln!("soak: {}", a.out.join(file).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Soak(a) => {
            let goim_bin = match a.goim_bin {
                Some(p) => p,
                None => {
                    std::env::current_exe().context("cannot find this executable")?.with_file_name("goim")
                }
            };
            let plan = soak::Plan {
                goim_bin,
                out: a.out,
                connections: a.connections,
                duration: a.duration,
                comets: a.comets,
                rooms: a.rooms,
                room_rate: a.room_rate,
                user_rate: a.user_rate,
                broadcast_rate: a.broadcast_rate,
                churn: a.churn,
                slow_per_min: a.slow_per_min,
                pause: a.pause,
                ws_every: a.ws_every,
                slow_every: a.slow_every,
                heartbeat: Duration::from_secs_f64(a.heartbeat_secs),
                services_dir: a.services_dir,
            };
            let summary = soak::run(&plan).await?;
            println!("{}", summary.text);
            eprintln!("soak: summary, soak.csv and plots in {}", plan.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Worker | Cmd::SoakWorker | Cmd::FloorServer { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

fn goim_protocols(c: &Common) -> Vec<Protocol> {
    if c.goim_protocols.is_empty() {
        vec![Protocol::GoimWs, Protocol::GoimTcp, Protocol::GoimPoll]
    } else {
        c.goim_protocols.clone()
    }
}

fn options(c: &Common) -> Result<Options> {
    let goim_bin = match &c.goim_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find this executable")?.with_file_name("goim"),
    };
    Ok(Options {
        goim_bin,
        socketio_dir: c.socketio_dir.clone(),
        work_dir: std::env::temp_dir().join(format!("goim-bench-{}", std::process::id())),
    })
}
