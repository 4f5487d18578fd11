//! goim-rs in its distributed form, for the push→receive latency through Kafka: `goim-logic`
//! (Redis store, Kafka queue), one `goim-comet` and one `goim-job`, with a redis-server and a
//! tansu broker of the run's own, all on loopback. The tier binaries are taken from next to the
//! `goim` binary; redis-server and tansu from `$GOIM_TEST_REDIS_SERVER` and `$GOIM_TEST_TANSU`
//! (what `scripts/services.sh env` exports), else `redis-server` on the PATH and
//! `/var/tmp/goim-tools/bin/tansu`. `$GOIM_BENCH_JOB_TOML`, if set, is appended to goim-job's
//! config (for example `[kafka]`-table keys such as `fetch_max_wait = "10ms"`; `\n` for newlines).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Instance, free_port, local, log_file, wait_listening};

const PARTITIONS: u32 = 4;
/// How long job may take to join its consumer group and take its first push.
const WARM_TIMEOUT: Duration = Duration::from_secs(60);

fn program(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(fallback))
}

fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(log_file(dir, &format!("{name}.log"))?)
        .stderr(log_file(dir, &format!("{name}.err"))?)
        .spawn()
        .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))
}

/// Starts the backends and the three tiers; returns them as one instance whose `child` is the
/// comet (the process holding the connections) and whose `others` are the rest.
pub(super) fn start(goim_bin: &Path, dir: &Path) -> Result<Instance> {
    let ports: Vec<u16> = (0..10).map(|_| free_port()).collect::<Result<_>>()?;
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != ports.len() {
        bail!("port picking collided; run again");
    }
    let [redis, kafka, tcp, ws, comet_grpc, comet_admin, http, logic_grpc, logic_admin, job_admin] =
        ports[..]
    else {
        unreachable!()
    };
    let mut others = Vec::new();

    let mut redis_child = spawn(
        Command::new(program("GOIM_TEST_REDIS_SERVER", "redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &redis.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir),
        dir,
        "redis",
    )?;
    wait_listening(&mut redis_child, &[local(redis)], dir)?;
    others.push(redis_child);

    let tansu = program("GOIM_TEST_TANSU", "/var/tmp/goim-tools/bin/tansu");
    let url = format!("tcp://127.0.0.1:{kafka}");
    let mut broker = spawn(
        Command::new(&tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"]),
        dir,
        "tansu",
    )?;
    wait_listening(&mut broker, &[local(kafka)], dir)?;
    others.push(broker);
    let created = Command::new(&tansu)
        .args([
            "topic",
            "create",
            "goim-push-topic",
            "--broker",
            &url,
            "--partitions",
            &PARTITIONS.to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("tansu topic create")?;
    if !created.success() {
        bail!("tansu could not create goim-push-topic: {created}");
    }

    let kafka_table = format!("[kafka]\nbrokers = [\"127.0.0.1:{kafka}\"]\ntopic = \"goim-push-topic\"\n");
    let logic = format!(
        "# goim-logic for the benchmark\n[logic.http]\naddr = \"127.0.0.1:{http}\"\n\
         [logic.auth]\nmode = \"json\"\n[logic.session]\nheartbeat_timeout = \"30m\"\n\
         [grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n[admin]\naddr = \"127.0.0.1:{logic_admin}\"\n\
         [shutdown]\ngrace = \"3s\"\n[store]\nkind = \"redis\"\n[store.redis]\nurl = \"redis://127.0.0.1:{redis}/0\"\n\
         [queue]\nkind = \"kafka\"\n{kafka_table}"
    );
    let comet = format!(
        "# goim-comet for the benchmark\n[comet]\nserver_id = \"bench-comet\"\nmax_connections = 200000\n\
         tcp.bind = [\"127.0.0.1:{tcp}\"]\nwebsocket.bind = [\"127.0.0.1:{ws}\"]\n\
         [grpc]\naddr = \"127.0.0.1:{comet_grpc}\"\n[logic]\naddrs = [\"127.0.0.1:{logic_grpc}\"]\n\
         [admin]\naddr = \"127.0.0.1:{comet_admin}\"\n[shutdown]\ngrace = \"3s\"\n"
    );
    let job_extra = std::env::var("GOIM_BENCH_JOB_TOML").unwrap_or_default().replace("\\n", "\n");
    let job = format!(
        "# goim-job for the benchmark\n[discovery]\nkind = \"static\"\n\
         comets = [{{ server_id = \"bench-comet\", addr = \"127.0.0.1:{comet_grpc}\" }}]\n\
         [admin]\naddr = \"127.0.0.1:{job_admin}\"\n[shutdown]\ngrace = \"3s\"\n\
         [queue]\nkind = \"kafka\"\n{kafka_table}{job_extra}\n"
    );
    let tier = |name: &str, config: &str| -> Result<Child> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        spawn(
            Command::new(goim_bin.with_file_name(name)).arg("--config").arg(&path).env("RUST_LOG", "warn"),
            dir,
            name,
        )
    };
    let mut logic_child = tier("goim-logic", &logic)?;
    wait_listening(&mut logic_child, &[local(logic_grpc), local(http)], dir)?;
    others.push(logic_child);
    let mut comet_child = tier("goim-comet", &comet)?;
    wait_listening(&mut comet_child, &[local(comet_grpc), local(tcp), local(ws)], dir)?;
    let mut job_child = tier("goim-job", &job)?;
    wait_listening(&mut job_child, &[local(job_admin)], dir)?;
    others.push(job_child);

    let instance =
        Instance { child: comet_child, tcp: Some(local(tcp)), ws: local(ws), push: local(http), others };
    warm(http, job_admin).with_context(|| format!("job never consumed a push; logs in {}", dir.display()))?;
    Ok(instance)
}

/// Pushes to an empty room until job has consumed one: its group is joined and it owns the
/// partitions, so the measured pushes do not wait for a rebalance.
fn warm(http: u16, job_admin: u16) -> Result<()> {
    let deadline = Instant::now() + WARM_TIMEOUT;
    while Instant::now() < deadline {
        request(http, "POST", "/goim/push/room?operation=1000&type=bench&room=warm")?;
        let metrics = request(job_admin, "GET", "/metrics")?;
        if metrics.lines().any(|l| l.starts_with("goim_job_messages_consumed_total") && !l.ends_with(" 0")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("no push consumed within {WARM_TIMEOUT:?}")
}

/// One HTTP/1.0 request with an empty body; the whole response.
fn request(port: u16, method: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(local(port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
