//! goim-rs in its distributed form, for the push→receive latency through Kafka: `goim-logic`
//! (Redis store, Kafka queue), one `goim-comet` and one `goim-job`, with a redis-server and an
//! Apache Kafka node (KRaft) of the run's own, all on loopback. The tier binaries are taken from
//! next to the `goim` binary; redis-server from `$GOIM_TEST_REDIS_SERVER`, Kafka's install from
//! `$GOIM_TEST_KAFKA_HOME` run by `$GOIM_TEST_JAVA` (what `scripts/services.sh env` exports),
//! else `redis-server` and `java` on the PATH and `/var/tmp/goim-tools/kafka-4.3.1`. goim-logic
//! creates the topic at start. `$GOIM_BENCH_JOB_TOML`, if set, is appended to goim-job's
//! config (for example `[kafka]`-table keys such as `fetch_max_wait = "10ms"`; `\n` for newlines).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
pub(super) fn start(goim_bin: &Path, dir: &Path, positions: bool) -> Result<Instance> {
    let [redis, kafka, controller] = distinct_ports::<3>()?;
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

    let mut broker = start_kafka(dir, kafka, controller)?;
    wait_listening(&mut broker, &[local(kafka)], dir)?;
    others.push(broker);

    let backends = Backends {
        redis_url: format!("redis://127.0.0.1:{redis}/0"),
        brokers: format!("127.0.0.1:{kafka}"),
        topic: "goim-push-topic".into(),
    };
    let logic_extra = super::history_table(positions);
    let mut tiers = match start_tiers_with(goim_bin, dir, &backends, 1, "", logic_extra) {
        Ok(t) => t,
        Err(e) => {
            while let Some(mut c) = others.pop() {
                super::stop(&mut c);
            }
            return Err(e);
        }
    };
    let comet = tiers.comets.pop().context("one comet was started")?;
    // Same stopping order as before the split: comet, then job, logic and the backends.
    others.extend(tiers.logic.take());
    others.extend(tiers.job.take());
    Ok(Instance { child: comet.child, tcp: Some(comet.tcp), ws: comet.ws, push: tiers.http, others })
}

/// `N` loopback ports, all different.
fn distinct_ports<const N: usize>() -> Result<[u16; N]> {
    let mut ports = [0u16; N];
    for p in &mut ports {
        *p = free_port()?;
    }
    let mut unique = ports.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != N {
        bail!("port picking collided; run again");
    }
    Ok(ports)
}

/// Where the tiers find Redis and Kafka, and the topic they share.
#[derive(Clone, Debug)]
pub struct Backends {
    /// `redis://127.0.0.1:PORT/0`
    pub redis_url: String,
    /// `127.0.0.1:PORT`
    pub brokers: String,
    pub topic: String,
}

/// One goim-comet of [`Tiers`].
pub struct Comet {
    pub server_id: String,
    pub child: Child,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
}

/// goim-logic, one or more goim-comet and one goim-job, as real processes on loopback, against
/// the given backends. Dropping it stops the comets, then job, then logic.
pub struct Tiers {
    /// `None` once handed on (the benchmark's instance takes them).
    logic: Option<Child>,
    pub comets: Vec<Comet>,
    job: Option<Child>,
    /// logic's push API.
    pub http: SocketAddr,
}

impl Tiers {
    /// `(name, pid)` of every process: goim-logic, goim-comet-<i>, goim-job.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> =
            self.logic.iter().map(|c| ("goim-logic".to_string(), c.id())).collect();
        for (i, c) in self.comets.iter().enumerate() {
            out.push((format!("goim-comet-{i}"), c.child.id()));
        }
        out.extend(self.job.iter().map(|c| ("goim-job".to_string(), c.id())));
        out
    }
}

impl Drop for Tiers {
    fn drop(&mut self) {
        for c in &mut self.comets {
            super::stop(&mut c.child);
        }
        for c in self.job.iter_mut().chain(self.logic.iter_mut()) {
            super::stop(c);
        }
    }
}

/// Starts goim-logic (Redis store, Kafka queue, creating `backends.topic`), `comets` goim-comet
/// processes and one goim-job that knows them all (static discovery). `comet_extra` is appended
/// to every comet's config. Returns once job has consumed a push.
pub fn start_tiers(
    goim_bin: &Path,
    dir: &Path,
    backends: &Backends,
    comets: usize,
    comet_extra: &str,
) -> Result<Tiers> {
    start_tiers_with(goim_bin, dir, backends, comets, comet_extra, "")
}

/// [`start_tiers`] with `logic_extra` appended to logic's config.
fn start_tiers_with(
    goim_bin: &Path,
    dir: &Path,
    backends: &Backends,
    comets: usize,
    comet_extra: &str,
    logic_extra: &str,
) -> Result<Tiers> {
    let comets = comets.max(1);
    let [http, logic_grpc, logic_admin, job_admin] = distinct_ports::<4>()?;
    let mut comet_ports = Vec::with_capacity(comets);
    for _ in 0..comets {
        let p = distinct_ports::<4>()?;
        if p.iter().any(|x| [http, logic_grpc, logic_admin, job_admin].contains(x))
            || comet_ports.iter().flatten().any(|x: &u16| p.contains(x))
        {
            bail!("port picking collided; run again");
        }
        comet_ports.push(p);
    }
    // One comet keeps the name the benchmark always used.
    let server_id =
        |i: usize| if comets == 1 { "bench-comet".to_string() } else { format!("bench-comet-{i}") };
    let Backends { redis_url, brokers, topic } = backends;
    let kafka_table = format!("[kafka]\nbrokers = [\"{brokers}\"]\ntopic = \"{topic}\"\n");
    let logic = format!(
        "# goim-logic for the benchmark\n[logic.http]\naddr = \"127.0.0.1:{http}\"\n\
         [logic.auth]\nmode = \"json\"\n[logic.session]\nheartbeat_timeout = \"30m\"\n\
         [grpc]\naddr = \"127.0.0.1:{logic_grpc}\"\n[admin]\naddr = \"127.0.0.1:{logic_admin}\"\n\
         [shutdown]\ngrace = \"3s\"\n[store]\nkind = \"redis\"\n[store.redis]\nurl = \"{redis_url}\"\n\
         [queue]\nkind = \"kafka\"\n{kafka_table}partitions = {PARTITIONS}\n{logic_extra}"
    );
    let job_extra = std::env::var("GOIM_BENCH_JOB_TOML").unwrap_or_default().replace("\\n", "\n");
    let listed: Vec<String> = comet_ports
        .iter()
        .enumerate()
        .map(|(i, [_, _, grpc, _])| {
            format!("{{ server_id = \"{}\", addr = \"127.0.0.1:{grpc}\" }}", server_id(i))
        })
        .collect();
    let job = format!(
        "# goim-job for the benchmark\n[discovery]\nkind = \"static\"\n\
         comets = [{}]\n\
         [admin]\naddr = \"127.0.0.1:{job_admin}\"\n[shutdown]\ngrace = \"3s\"\n\
         [queue]\nkind = \"kafka\"\n{kafka_table}{job_extra}\n",
        listed.join(", ")
    );
    let tier = |name: &str, file: &str, config: &str| -> Result<Child> {
        let path = dir.join(format!("{file}.toml"));
        std::fs::write(&path, config)?;
        spawn(
            Command::new(goim_bin.with_file_name(name)).arg("--config").arg(&path).env("RUST_LOG", "warn"),
            dir,
            file,
        )
    };
    let mut logic_child = tier("goim-logic", "goim-logic", &logic)?;
    wait_listening(&mut logic_child, &[local(logic_grpc), local(http)], dir)?;
    let mut tiers = Tiers { logic: Some(logic_child), comets: Vec::new(), job: None, http: local(http) };
    // Ready once the topic exists: job subscribes to it next.
    ready(logic_admin)
        .with_context(|| format!("goim-logic never became ready; logs in {}", dir.display()))?;
    for (i, [tcp, ws, grpc, admin]) in comet_ports.iter().copied().enumerate() {
        let config = format!(
            "# goim-comet for the benchmark\n[comet]\nserver_id = \"{}\"\nmax_connections = 200000\n\
             tcp.bind = [\"127.0.0.1:{tcp}\"]\nwebsocket.bind = [\"127.0.0.1:{ws}\"]\nadmission.auth_rate = 0\n{comet_extra}\n\
             [grpc]\naddr = \"127.0.0.1:{grpc}\"\n[logic_client]\naddrs = [\"127.0.0.1:{logic_grpc}\"]\n\
             [admin]\naddr = \"127.0.0.1:{admin}\"\n[shutdown]\ngrace = \"3s\"\n",
            server_id(i)
        );
        let file = if comets == 1 { "goim-comet".to_string() } else { format!("goim-comet-{i}") };
        let mut child = tier("goim-comet", &file, &config)?;
        let listening = wait_listening(&mut child, &[local(grpc), local(tcp), local(ws)], dir);
        tiers.comets.push(Comet { server_id: server_id(i), child, tcp: local(tcp), ws: local(ws) });
        listening?;
    }
    let job = tiers.job.insert(tier("goim-job", "goim-job", &job)?);
    wait_listening(job, &[local(job_admin)], dir)?;
    warm(http, job_admin).with_context(|| format!("job never consumed a push; logs in {}", dir.display()))?;
    Ok(tiers)
}

/// Formats a fresh log in `dir` and starts one Kafka node (broker and controller) on it.
fn start_kafka(dir: &Path, port: u16, controller: u16) -> Result<Child> {
    let home = program("GOIM_TEST_KAFKA_HOME", "/var/tmp/goim-tools/kafka-4.3.1");
    let props = dir.join("kafka.properties");
    std::fs::write(
        &props,
        format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={}\noffsets.topic.replication.factor=1\noffsets.topic.num.partitions=4\n\
             transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\nshare.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\nauto.create.topics.enable=false\n",
            dir.join("kafka-log").display()
        ),
    )?;
    let java = || {
        let mut cmd = Command::new(program("GOIM_TEST_JAVA", "java"));
        cmd.args(["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"])
            .arg(format!("-Dlog4j2.configurationFile={}", home.join("log4j2.properties").display()))
            .arg("-cp")
            .arg(home.join("lib/*"));
        cmd
    };
    // Any base64url-encoded 16 bytes name a cluster: `goim-rs-broker11`.
    let format = java()
        .args(["kafka.tools.StorageTool", "format", "--standalone", "-t", "Z29pbS1ycy1icm9rZXIxMQ", "-c"])
        .arg(&props)
        .output()
        .with_context(|| format!("cannot run Kafka's StorageTool from {}", home.display()))?;
    if !format.status.success() {
        bail!("formatting Kafka's log failed: {}", String::from_utf8_lossy(&format.stderr));
    }
    spawn(java().arg("kafka.Kafka").arg(&props), dir, "kafka")
}

/// Waits until `/readyz` on the admin port answers 200.
fn ready(admin: u16) -> Result<()> {
    let deadline = Instant::now() + WARM_TIMEOUT;
    while Instant::now() < deadline {
        if request(admin, "GET", "/readyz")
            .is_ok_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("not ready within {WARM_TIMEOUT:?}")
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
