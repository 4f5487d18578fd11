//! Child processes on loopback: the tier binaries (`goim-comet`, `goim-logic`, `goim-job`) and
//! the backends the project's scripts installed (redis-server, Apache Kafka).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::eventually;

/// A port free at the time of asking (the child binds it a moment later), from 12000-31999:
/// below the kernel's ephemeral range (32768 and up), so an outgoing connection of some other
/// process (Kafka's JVM, librdkafka, a client) cannot take it between the asking and the binding,
/// as a port 0 pick can. Ports are handed out in turn from a random start, so two tests of one
/// binary never get the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let seed = std::process::id().wrapping_mul(7919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

/// A scratch directory for config files and backend data, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("goim-{name}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The program an environment variable of `scripts/services.sh env` names.
pub fn installed(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set; run `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`")
    })
}

/// A running child, killed if the test ends before stopping it.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    /// One of our binaries (its path, as `CARGO_BIN_EXE_<name>` gives it) with `--config`,
    /// logging to stderr at `$GOIM_TEST_LOG` (default `warn`); named by its file name.
    pub fn start(program: &str, config: &Path, env: &[(&str, &str)]) -> Proc {
        let level = std::env::var("GOIM_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let name = Path::new(program).file_name().map_or(program.into(), |n| n.to_string_lossy());
        let mut cmd = Command::new(program);
        cmd.arg("--config").arg(config).env("RUST_LOG", level).envs(env.iter().copied());
        Proc::spawn(&name, cmd)
    }

    /// A child started by the test itself (through a shell, say), killed if the test ends first.
    pub fn adopt(name: &str, child: Child) -> Proc {
        Proc { name: name.to_string(), child: Some(child) }
    }

    /// Any program; its stdout and stderr go to the test's.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let child = cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
        Proc { name: name.to_string(), child: Some(child) }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then the exit status (within ten seconds).
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait(Duration::from_secs(10))
    }

    /// SIGKILL: no chance to clean up, as when a node dies.
    pub fn kill9(mut self) -> ExitStatus {
        self.signal("-KILL");
        self.wait(Duration::from_secs(10))
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(sig).arg(self.id().to_string()).status().unwrap();
        assert!(ok.success(), "kill {sig} {}", self.name);
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(feature = "admin")]
/// The `/metrics` text of the admin port on 127.0.0.1:`admin`.
pub async fn admin_metrics(admin: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body")
}

#[cfg(feature = "admin")]
/// Waits (up to 20 s) until the admin port at `admin` answers `/readyz` with success.
pub async fn ready(admin: u16) -> bool {
    let url = format!("http://127.0.0.1:{admin}/readyz");
    eventually(Duration::from_secs(20), || {
        let url = url.clone();
        async move { reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) }
    })
    .await
}

/// Waits (up to `limit`) until something accepts TCP connections on 127.0.0.1:`port`.
pub async fn accepting(port: u16, limit: Duration) -> bool {
    eventually(limit, || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() })
        .await
}
