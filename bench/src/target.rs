//! The servers under test, started fresh for each scenario on their own loopback ports:
//! goim-rs (the release `goim` binary with a config written for the run, or its three tiers with
//! Redis and Kafka: [`kafka`]), nginx with nchan, and a small socket.io server on Node. Dropping a
//! [`Target`] stops it.

mod kafka;

pub use kafka::{Backends, Comet, Tiers, start_tiers};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::protocol::Protocol;
use crate::usage;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Goim,
    /// goim-logic, goim-comet and goim-job, pushes through Kafka, sessions in Redis.
    GoimKafka,
    /// `goim` with message positions off (`[logic.history] enabled = false`): the baseline of
    /// what positions cost.
    GoimNoPositions,
    /// `goim-kafka` with message positions off (no history in Redis).
    GoimKafkaNoPositions,
    /// Not a push server: the least a program does to write one frame to every connection
    /// ([`crate::floor`]), the physical limit the others are measured against.
    Floor,
    Nchan,
    Socketio,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Goim => "goim-rs",
            Kind::GoimKafka => "goim-rs kafka",
            Kind::GoimNoPositions => "goim-rs positions off",
            Kind::GoimKafkaNoPositions => "goim-rs kafka positions off",
            Kind::Floor => "floor",
            Kind::Nchan => "nchan",
            Kind::Socketio => "socket.io",
        }
    }

    /// The WebSocket protocol the load generator speaks to it.
    pub fn websocket(self) -> Protocol {
        match self {
            Kind::Goim
            | Kind::GoimKafka
            | Kind::GoimNoPositions
            | Kind::GoimKafkaNoPositions
            | Kind::Floor => Protocol::GoimWs,
            Kind::Nchan => Protocol::Nchan,
            Kind::Socketio => Protocol::Socketio,
        }
    }

    /// goim-rs in either form, with or without positions.
    pub fn is_goim(self) -> bool {
        !matches!(self, Kind::Nchan | Kind::Socketio | Kind::Floor)
    }

    /// The distributed form (logic, comet and job through Redis and Kafka).
    pub fn is_distributed(self) -> bool {
        matches!(self, Kind::GoimKafka | Kind::GoimKafkaNoPositions)
    }

    /// Whether pushes carry message positions (the default); `false` for the baselines.
    pub fn positions(self) -> bool {
        !matches!(self, Kind::GoimNoPositions | Kind::GoimKafkaNoPositions)
    }

    /// The same server with positions on: what a positions-off baseline is compared with.
    pub fn with_positions(self) -> Kind {
        match self {
            Kind::GoimNoPositions => Kind::Goim,
            Kind::GoimKafkaNoPositions => Kind::GoimKafka,
            k => k,
        }
    }
}

/// `[logic.history]` for a goim-rs config: empty (the default, positions on) or positions off.
fn history_table(positions: bool) -> &'static str {
    if positions { "" } else { "\n[logic.history]\nenabled = false\n" }
}

/// Where the servers' programs are and where runs keep their files.
#[derive(Clone, Debug)]
pub struct Options {
    pub goim_bin: PathBuf,
    /// A directory whose `node_modules` holds socket.io (`scripts/bench-peers.sh` makes it).
    pub socketio_dir: PathBuf,
    /// Configs and logs of each started server go in a subdirectory.
    pub work_dir: PathBuf,
}

struct Instance {
    child: Child,
    tcp: Option<SocketAddr>,
    ws: SocketAddr,
    push: SocketAddr,
    /// Processes of the instance besides `child`, stopped after it (goim-rs kafka: logic, job
    /// and the backends).
    others: Vec<Child>,
}

pub struct Target {
    pub kind: Kind,
    instances: Vec<Instance>,
}

/// How long a server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Socket.io's server for the benchmark: sockets join the room named in their handshake query;
/// `POST /emit?room=r` emits the raw body as event `m` to that room.
const SOCKETIO_SERVER: &str = r#"
const http = require('http');
const { Server } = require('socket.io');
const port = Number(process.argv[2]);
const srv = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/emit')) {
    const room = new URL(req.url, 'http://localhost').searchParams.get('room');
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      io.to(room).emit('m', body);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    });
    return;
  }
  res.writeHead(404, { 'content-length': 0 });
  res.end();
});
const io = new Server(srv, { transports: ['websocket'], perMessageDeflate: false, serveClient: false });
io.on('connection', (socket) => {
  const room = socket.handshake.query.room;
  if (room) socket.join(room);
});
srv.listen(port, '127.0.0.1');
"#;

impl Target {
    /// Starts `kind` as `instances` processes (goim, socket.io) or worker processes (nginx);
    /// its configs and logs go to `<work_dir>/<label>`.
    pub fn start(kind: Kind, instances: usize, opts: &Options, label: &str) -> Result<Target> {
        let dir = opts.work_dir.join(label);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut target = Target { kind, instances: Vec::new() };
        match kind {
            Kind::Goim | Kind::GoimNoPositions => {
                for i in 0..instances.max(1) {
                    target.instances.push(start_goim(i, &opts.goim_bin, &dir, kind.positions())?);
                }
            }
            Kind::GoimKafka | Kind::GoimKafkaNoPositions => {
                target.instances.push(kafka::start(&opts.goim_bin, &dir, kind.positions())?)
            }
            Kind::Floor => target.instances.push(start_floor(&dir)?),
            Kind::Nchan => target.instances.push(start_nchan(instances.max(1), &dir)?),
            Kind::Socketio => {
                let script = dir.join("server.js");
                std::fs::write(&script, SOCKETIO_SERVER)?;
                for i in 0..instances.max(1) {
                    target.instances.push(start_socketio(i, &script, &opts.socketio_dir, &dir)?);
                }
            }
        }
        for inst in &mut target.instances {
            let mut ports = vec![inst.ws, inst.push];
            ports.extend(inst.tcp);
            wait_listening(&mut inst.child, &ports, &dir)?;
        }
        Ok(target)
    }

    /// Every process of the target (nginx's master and its workers).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for i in &self.instances {
            for c in std::iter::once(&i.child).chain(&i.others) {
                pids.push(c.id());
                pids.extend(usage::children(c.id()));
            }
        }
        pids
    }

    pub fn rss(&self) -> Result<u64> {
        usage::rss_sum(&self.pids())
    }

    /// CPU seconds the target's processes have used.
    pub fn cpu_secs(&self) -> f64 {
        usage::cpu_secs_sum(&self.pids())
    }

    pub fn endpoints(&self, protocol: Protocol) -> Vec<SocketAddr> {
        match protocol {
            Protocol::GoimTcp => self.instances.iter().filter_map(|i| i.tcp).collect(),
            _ => self.instances.iter().map(|i| i.ws).collect(),
        }
    }

    /// The push API of the first instance (pushing scenarios run one instance).
    pub fn push_addr(&self) -> SocketAddr {
        self.instances[0].push
    }

    /// The API path that pushes to benchmark room `room`.
    pub fn room_path(&self, room: u32) -> String {
        match self.kind {
            Kind::Goim
            | Kind::GoimKafka
            | Kind::GoimNoPositions
            | Kind::GoimKafkaNoPositions
            | Kind::Floor => {
                format!("/goim/push/room?operation={}&type=bench&room={room}", crate::protocol::PUSH_OP)
            }
            Kind::Nchan => format!("/pub/r{room}"),
            Kind::Socketio => format!("/emit?room=r{room}"),
        }
    }

    /// The API path that pushes to user `mid` (goim's API; the peers have no users).
    pub fn mid_path(mid: i64) -> String {
        format!("/goim/push/mids?operation={}&mids={mid}", crate::protocol::PUSH_OP)
    }
}

impl Drop for Target {
    /// SIGTERM, then SIGKILL for whatever has not exited within five seconds.
    fn drop(&mut self) {
        for i in &mut self.instances {
            stop(&mut i.child);
            // The kafka target's job, logic and backends, last first.
            while let Some(mut c) = i.others.pop() {
                stop(&mut c);
            }
        }
    }
}

fn stop(child: &mut Child) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

/// A loopback port nothing listens on, outside the ephemeral range the load generator dials
/// from (32768-60999), so it cannot collide with a client's source port.
pub fn free_port() -> Result<u16> {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    for k in 0..2000u32 {
        let port = 20_000 + ((seed.wrapping_add(k.wrapping_mul(7919))) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in 20000-32000")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio> {
    Ok(Stdio::from(std::fs::File::create(dir.join(name))?))
}

fn start_goim(i: usize, bin: &Path, dir: &Path, positions: bool) -> Result<Instance> {
    let (admin, tcp, ws, http) = (free_port()?, free_port()?, free_port()?, free_port()?);
    if [admin, tcp, ws, http].windows(2).any(|w| w[0] == w[1]) {
        bail!("port picking collided; run again");
    }
    let config = format!(
        r#"# goim-rs for the benchmark: loopback ports of its own, room for the connections, no auth rate
# limit, and a heartbeat timeout longer than any run.
[admin]
addr = "127.0.0.1:{admin}"

[shutdown]
grace = "3s"

[comet]
server_id = "bench-{i}"
max_connections = 200000
# The benchmark opens its subscribers at once: no auth rate limit (admission is measured apart).
admission.auth_rate = 0

[comet.tcp]
bind = ["127.0.0.1:{tcp}"]

[comet.websocket]
bind = ["127.0.0.1:{ws}"]

[logic.http]
addr = "127.0.0.1:{http}"

[logic.session]
heartbeat_timeout = "30m"
{history}"#,
        history = history_table(positions)
    );
    let path = dir.join(format!("goim-{i}.toml"));
    std::fs::write(&path, config)?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log_file(dir, &format!("goim-{i}.log"))?)
        .stderr(log_file(dir, &format!("goim-{i}.err"))?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Instance { child, tcp: Some(local(tcp)), ws: local(ws), push: local(http), others: Vec::new() })
}

/// The floor server: this executable's `floor-server`, one writer thread per core.
fn start_floor(dir: &Path) -> Result<Instance> {
    let (ws, push) = (free_port()?, free_port()?);
    if ws == push {
        bail!("port picking collided; run again");
    }
    let exe = std::env::current_exe().context("cannot find the goim-bench executable")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let child = Command::new(exe)
        .args(["floor-server", "--ws", &local(ws).to_string(), "--push", &local(push).to_string()])
        .args(["--threads", &threads.to_string()])
        .stdin(Stdio::null())
        .stdout(log_file(dir, "floor.log")?)
        .stderr(log_file(dir, "floor.err")?)
        .spawn()
        .context("cannot start the floor server")?;
    Ok(Instance { child, tcp: None, ws: local(ws), push: local(push), others: Vec::new() })
}

const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

fn start_nchan(workers: usize, dir: &Path) -> Result<Instance> {
    if !Path::new(NCHAN_MODULE).exists() {
        bail!("nchan is not installed ({NCHAN_MODULE}); run scripts/bench-peers.sh");
    }
    let port = free_port()?;
    let d = dir.display();
    let config = format!(
        r#"# nginx + nchan for the benchmark: WebSocket subscribers on /sub/<channel>, HTTP
# publishers on /pub/<channel>; every worker listens (reuseport) so connections spread.
load_module {NCHAN_MODULE};
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{
    worker_connections 19500;
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    nchan_max_reserved_memory 256M;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=8192;
        location ~ ^/sub/(\w+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
        }}
        location ~ ^/pub/(\w+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length 100;
            nchan_message_timeout 60s;
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log_file(dir, "nginx.out")?)
        .stderr(log_file(dir, "nginx.err")?)
        .spawn()
        .context("cannot start nginx; run scripts/bench-peers.sh")?;
    Ok(Instance { child, tcp: None, ws: local(port), push: local(port), others: Vec::new() })
}

fn start_socketio(i: usize, script: &Path, modules: &Path, dir: &Path) -> Result<Instance> {
    if !modules.join("node_modules/socket.io").exists() {
        bail!("socket.io is not installed in {}; run scripts/bench-peers.sh", modules.display());
    }
    let port = free_port()?;
    let child = Command::new("node")
        .arg(script)
        .arg(port.to_string())
        .env("NODE_PATH", modules.join("node_modules"))
        .stdin(Stdio::null())
        .stdout(log_file(dir, &format!("socketio-{i}.out"))?)
        .stderr(log_file(dir, &format!("socketio-{i}.err"))?)
        .spawn()
        .context("cannot start node")?;
    Ok(Instance { child, tcp: None, ws: local(port), push: local(port), others: Vec::new() })
}

fn wait_listening(child: &mut Child, ports: &[SocketAddr], dir: &Path) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    for addr in ports {
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("server exited with {status} before listening; logs in {}", dir.display());
            }
            if TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("server not listening on {addr} after {START_TIMEOUT:?}; logs in {}", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}
