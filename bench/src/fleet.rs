//! The coordinator's side of the workers: spawns `goim-bench worker` processes, splits the
//! connections among them, and sums what they report.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::mpsc;

use crate::histogram::Histogram;
use crate::protocol::Protocol;
use crate::worker::{Command, Reply, Report, Spec};

/// Connections one worker holds at most: well under the 20,000 open files a process may have.
pub const PER_WORKER: u64 = 12_000;
/// Source addresses per worker; connections rotate over them.
const SOURCES: u8 = 32;
/// How long a worker may take to answer a command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

pub struct Fleet {
    workers: Vec<Worker>,
}

/// Everything the workers reported, summed.
#[derive(Debug, Default)]
pub struct Totals {
    pub opening: u64,
    pub connected: u64,
    pub failed: u64,
    pub dropped: u64,
    pub heartbeats: u64,
    pub received: u64,
    pub steps: BTreeMap<u32, (u64, Histogram)>,
    pub storms: BTreeMap<u32, StormTotals>,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct StormTotals {
    pub ok: u64,
    pub failed: u64,
    pub done: bool,
    pub latency: Histogram,
}

impl Totals {
    fn add(&mut self, r: &Report) {
        self.opening += r.opening;
        self.connected += r.connected;
        self.failed += r.failed;
        self.dropped += r.dropped;
        self.heartbeats += r.heartbeats;
        self.received += r.received;
        for (k, s) in &r.steps {
            let e = self.steps.entry(*k).or_default();
            e.0 += s.received;
            e.1.merge(&Histogram::from_sparse(&s.latency));
        }
        for (k, s) in &r.storms {
            let e = self.storms.entry(*k).or_insert_with(|| StormTotals { done: true, ..Default::default() });
            e.ok += s.ok;
            e.failed += s.failed;
            e.done &= s.done;
            e.latency.merge(&Histogram::from_sparse(&s.latency));
        }
        for (e, n) in &r.errors {
            *self.errors.entry(e.clone()).or_default() += n;
        }
    }

    /// Handshakes neither finished nor failed yet.
    pub fn pending(&self) -> u64 {
        self.opening.saturating_sub(self.connected + self.failed + self.dropped)
    }

    pub fn step(&self, step: u32) -> (u64, Histogram) {
        self.steps.get(&step).cloned().unwrap_or_default()
    }

    /// The most frequent errors, for a progress line.
    pub fn top_errors(&self, n: usize) -> String {
        let mut v: Vec<_> = self.errors.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter().take(n).map(|(e, c)| format!("{c}× {e}")).collect::<Vec<_>>().join("; ")
    }
}

/// Workers needed for `connections`: at least two (one per core), each under [`PER_WORKER`].
pub fn workers_for(connections: u64) -> usize {
    (connections.div_ceil(PER_WORKER) as usize).max(2)
}

/// The source addresses of worker `id`: `127.1.<id>.1` to `127.1.<id>.32`.
fn sources(id: usize) -> Vec<Ipv4Addr> {
    (1..=SOURCES).map(|k| Ipv4Addr::new(127, 1, (id % 250) as u8, k)).collect()
}

impl Fleet {
    /// Starts `n` workers speaking `protocol` to `endpoints`.
    pub fn spawn(
        n: usize,
        protocol: Protocol,
        endpoints: &[SocketAddr],
        heartbeat: Duration,
    ) -> Result<Fleet> {
        let exe = std::env::current_exe().context("cannot find the goim-bench executable")?;
        let mut workers = Vec::with_capacity(n);
        for id in 0..n {
            let mut child = Process::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("cannot start worker {id}"))?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let (tx, rx) = mpsc::channel(16);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            });
            let spec = Spec {
                id,
                protocol,
                endpoints: endpoints.to_vec(),
                sources: sources(id),
                heartbeat_ms: heartbeat.as_millis() as u64,
            };
            writeln!(stdin, "{}", serde_json::to_string(&spec)?)?;
            workers.push(Worker { child, stdin, lines: rx });
        }
        Ok(Fleet { workers })
    }

    /// The worker processes' ids (to read their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.child.id()).collect()
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    async fn ask(&mut self, make: impl Fn(usize) -> Command) -> Result<Vec<Reply>> {
        for (i, w) in self.workers.iter_mut().enumerate() {
            writeln!(w.stdin, "{}", serde_json::to_string(&make(i))?)
                .with_context(|| format!("worker {i} gone"))?;
            w.stdin.flush()?;
        }
        let mut replies = Vec::with_capacity(self.workers.len());
        for (i, w) in self.workers.iter_mut().enumerate() {
            let line = tokio::time::timeout(REPLY_TIMEOUT, w.lines.recv())
                .await
                .map_err(|_| anyhow!("worker {i} did not answer within {REPLY_TIMEOUT:?}"))?
                .ok_or_else(|| anyhow!("worker {i} exited"))?;
            replies.push(serde_json::from_str(&line).with_context(|| format!("worker {i} said {line}"))?);
        }
        Ok(replies)
    }

    /// Opens connections `0..n`, split evenly, connection `i` in room `i % rooms`.
    pub async fn open(&mut self, n: u64, rooms: u32, concurrency: usize) -> Result<()> {
        let w = self.workers.len() as u64;
        let per = concurrency.div_ceil(self.workers.len()).max(1);
        self.ask(|i| {
            let (i, w) = (i as u64, w);
            let first = n * i / w;
            Command::Open { first, count: n * (i + 1) / w - first, rooms, concurrency: per }
        })
        .await?;
        Ok(())
    }

    /// Starts a storm step: `rate` connects per second in total for `secs`, indexes from `first`.
    pub async fn storm(&mut self, step: u32, rate: f64, secs: f64, first: u64) -> Result<()> {
        let w = self.workers.len();
        let span = (rate * secs).ceil() as u64 + 1;
        self.ask(|i| Command::Storm { step, rate: rate / w as f64, secs, first: first + span * i as u64 })
            .await?;
        Ok(())
    }

    pub async fn totals(&mut self) -> Result<Totals> {
        let mut t = Totals::default();
        for r in self.ask(|_| Command::Snapshot).await? {
            match r {
                Reply::Report(r) => t.add(&r),
                Reply::Ok => bail!("worker answered a snapshot with ok"),
            }
        }
        Ok(t)
    }

    /// Closes every held connection.
    pub async fn close(&mut self) -> Result<()> {
        self.ask(|_| Command::Close).await?;
        Ok(())
    }
}

impl Drop for Fleet {
    /// Tells the workers to exit and waits for them, killing any that linger.
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = writeln!(w.stdin, "{}", serde_json::to_string(&Command::Exit).unwrap_or_default());
            let _ = w.stdin.flush();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for w in &mut self.workers {
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                }
            }
        }
    }
}
