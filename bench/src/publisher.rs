//! Pushes through a server's HTTP API at a set rate, each push stamped with its send time.
//!
//! A few keep-alive HTTP/1.1 connections share an open-loop schedule: push `k` is due at
//! `k / rate` seconds; a connection that falls behind sends its next push at once, so the
//! achieved rate shows where the API saturates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::histogram::Histogram;
use crate::http;
use crate::stamp::Stamp;

/// One push: the request path (with its query) and how many connections it should reach.
pub struct Push {
    pub path: String,
    pub expected: u64,
}

pub type MakePush = Arc<dyn Fn(u64) -> Push + Send + Sync>;

pub struct Plan {
    pub addr: SocketAddr,
    /// Pushes per second.
    pub rate: f64,
    pub secs: f64,
    /// Written into every stamp, so receivers count this step apart from the others.
    pub step: u32,
    /// HTTP connections used at once.
    pub conns: usize,
    pub make: MakePush,
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub ok: u64,
    pub failed: u64,
    /// Deliveries the accepted pushes should make.
    pub expected: u64,
    /// The step's length: its planned time, or longer when the API was slower than the schedule.
    pub elapsed: Duration,
    /// HTTP request latency.
    pub latency: Histogram,
    pub errors: BTreeMap<String, u64>,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.expected += o.expected;
        self.latency.merge(&o.latency);
        for (e, n) in o.errors {
            *self.errors.entry(e).or_default() += n;
        }
    }

    /// Accepted pushes per second.
    pub fn achieved(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(plan: Plan) -> Outcome {
    let total = (plan.rate * plan.secs).round().max(1.0) as u64;
    let conns = plan.conns.clamp(1, total as usize);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for lane in 0..conns as u64 {
        let make = plan.make.clone();
        let (addr, rate, step) = (plan.addr, plan.rate, plan.step);
        set.spawn(async move {
            let mut out = Outcome::default();
            let mut conn: Option<http::Conn> = None;
            let mut seq = lane;
            while seq < total {
                sleep_until(start + Duration::from_secs_f64(seq as f64 / rate)).await;
                let push = make(seq);
                let body = Stamp::now(step, seq).encode();
                let t0 = Instant::now();
                match timeout(REQUEST_TIMEOUT, post(&mut conn, addr, &push.path, body.as_bytes())).await {
                    Ok(Ok(())) => {
                        out.ok += 1;
                        out.expected += push.expected;
                        out.latency.record(t0.elapsed().as_micros() as u64);
                    }
                    failed => {
                        conn = None;
                        out.failed += 1;
                        let e = match failed {
                            Ok(Err(e)) => format!("push: {e:#}"),
                            _ => "push: timed out".to_string(),
                        };
                        *out.errors.entry(e).or_default() += 1;
                    }
                }
                seq += conns as u64;
            }
            out
        });
    }
    let mut all = Outcome::default();
    while let Some(r) = set.join_next().await {
        if let Ok(o) = r {
            all.merge(o);
        }
    }
    // The schedule spans `secs` (the last push is due just before its end); a slower API
    // stretches it.
    all.elapsed = start.elapsed().max(Duration::from_secs_f64(plan.secs));
    all
}

/// POSTs `body` to `path` on a kept-alive connection (opened when there is none) and checks for
/// a 2xx answer whose body is not a goim error envelope.
async fn post(conn: &mut Option<http::Conn>, addr: SocketAddr, path: &str, body: &[u8]) -> Result<()> {
    let c = match conn {
        Some(c) => c,
        None => {
            let s = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
            s.set_nodelay(true)?;
            conn.insert(http::Conn::new(s))
        }
    };
    let reply = c.request("POST", path, body).await?;
    let text = || String::from_utf8_lossy(&reply.body).chars().take(120).collect::<String>();
    if !(200..300).contains(&reply.status) {
        bail!("HTTP {}: {}", reply.status, text());
    }
    if reply.body.windows(8).any(|w| w == b"\"code\":-") {
        bail!("refused: {}", text());
    }
    Ok(())
}
