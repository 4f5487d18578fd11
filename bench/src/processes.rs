//! goim-bench's worker processes, for the benchmark fleet and the soak alike: `goim-bench
//! <subcommand>` children that read a JSON spec and then JSON commands on stdin, a line each, and
//! answer every command with one JSON line on stdout. Dropping the pool tells each to exit and
//! kills those that linger. [`stdin_lines`] is the worker's side.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// How long a worker may take to answer a command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the workers get to exit after the exit command, before they are killed.
const EXIT_WAIT: Duration = Duration::from_secs(5);

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

/// Running worker processes, in the order they were started.
pub struct Workers {
    workers: Vec<Worker>,
    /// What the workers are called in errors (`worker`, `soak worker`).
    name: &'static str,
    /// The command line that tells one to exit.
    exit: String,
}

impl Workers {
    /// Starts one `goim-bench <subcommand>` per spec and sends it its spec; `exit` is the
    /// command that makes a worker exit (sent on drop).
    pub fn spawn<S: Serialize>(
        subcommand: &str,
        name: &'static str,
        exit: &impl Serialize,
        specs: impl IntoIterator<Item = S>,
    ) -> Result<Workers> {
        let exe = std::env::current_exe().context("cannot find the goim-bench executable")?;
        let mut out = Workers { workers: Vec::new(), name, exit: serde_json::to_string(exit)? };
        for (id, spec) in specs.into_iter().enumerate() {
            let mut child = Process::new(&exe)
                .arg(subcommand)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("cannot start {name} {id}"))?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let (tx, rx) = mpsc::channel(16);
            // Reading the pipe blocks, so each worker's stdout has a thread of its own.
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            });
            writeln!(stdin, "{}", serde_json::to_string(&spec)?)?;
            out.workers.push(Worker { child, stdin, lines: rx });
        }
        Ok(out)
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

    /// Sends worker `i` the command `make(i)`, every worker first, then reads each one's answer.
    pub async fn ask<C: Serialize, R: DeserializeOwned>(
        &mut self,
        make: impl Fn(usize) -> C,
    ) -> Result<Vec<R>> {
        let name = self.name;
        for (i, w) in self.workers.iter_mut().enumerate() {
            writeln!(w.stdin, "{}", serde_json::to_string(&make(i))?)
                .with_context(|| format!("{name} {i} gone"))?;
            w.stdin.flush()?;
        }
        let mut replies = Vec::with_capacity(self.workers.len());
        for (i, w) in self.workers.iter_mut().enumerate() {
            let line = tokio::time::timeout(REPLY_TIMEOUT, w.lines.recv())
                .await
                .map_err(|_| anyhow!("{name} {i} did not answer within {REPLY_TIMEOUT:?}"))?
                .ok_or_else(|| anyhow!("{name} {i} exited"))?;
            replies.push(serde_json::from_str(&line).with_context(|| format!("{name} {i} said {line}"))?);
        }
        Ok(replies)
    }
}

impl Drop for Workers {
    /// Tells the workers to exit and waits for them, killing any that linger.
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = writeln!(w.stdin, "{}", self.exit);
            let _ = w.stdin.flush();
        }
        let deadline = std::time::Instant::now() + EXIT_WAIT;
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

/// The worker's side: its stdin, a line at a time. Reading stdin blocks, so it has a thread of
/// its own; a closed stdin (the coordinator exited) ends the channel, and so the worker.
pub fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}
