//! Draining: every client is told to go (op 6 `drain`, with a jittered `reconnect_after_ms`) and
//! closed at a paced rate, until no connection is left or `drain.timeout` runs out.
//!
//! Pacing: the disconnects are due one every `1/drain.rate` seconds. Each turn tells the clients
//! that are due by now and sleeps until the next one is, so they are spread evenly; a timer that
//! fires late (or a rate finer than the timer) makes small batches of what is due, never more.
//! A client that already left (or is closing for another reason) is skipped and takes no slot.
//! At the timeout the rest are told at once, still with op 6.
//!
//! While it drains nothing else changes: pushes still reach every client not yet told (the
//! gRPC server stays up), and each closed client's session is still removed at logic.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::channel::Channel;
use crate::config::DrainConfig;
use crate::disconnect::Disconnect;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// How often a drain with everyone told looks again whether the comet is empty.
const SETTLE_POLL: Duration = Duration::from_millis(20);

/// What a drain did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Clients told to go at the paced rate.
    pub drained: usize,
    /// Clients told at once because `drain.timeout` ran out (also with op 6 `drain`).
    pub cut: usize,
    /// Connections still held when the drain ended: 0, unless it timed out (then those cut are
    /// still writing their op 6, or long-poll sessions have not polled for it yet).
    pub left: usize,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl fmt::Display for DrainReport {
    /// One line for the `/drain` answer and the log: `drained=200 cut=0 left=0 seconds=2.004 timed_out=false`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drained={} cut={} left={} seconds={:.3} timed_out={}",
            self.drained,
            self.cut,
            self.left,
            self.elapsed.as_secs_f64(),
            self.timed_out
        )
    }
}

/// A comet's drain: started once, awaited by anyone.
pub struct Drain {
    /// Set by the first caller of [`Drain::begin`]; a drain runs once per process.
    begun: AtomicBool,
    /// Cancelled when the drain starts (never reset: a drained comet only stops). The TCP accept
    /// loops stop on it; the HTTP port refuses new WebSockets and long-poll sessions from then on.
    pub started: CancellationToken,
    /// The outcome once the drain is over, for every caller of `Comet::drain`. The sender lives
    /// here as long as the comet, so a waiting receiver never sees it closed.
    done: watch::Sender<Option<DrainReport>>,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain {
            begun: AtomicBool::new(false),
            started: CancellationToken::new(),
            done: watch::Sender::new(None),
        }
    }
}

impl Drain {
    /// Marks the drain started; true for the one caller that must run it.
    pub fn begin(&self) -> bool {
        let first = !self.begun.swap(true, Ordering::AcqRel);
        self.started.cancel();
        first
    }

    pub fn is_started(&self) -> bool {
        self.started.is_cancelled()
    }

    pub fn finish(&self, report: DrainReport) {
        self.done.send_replace(Some(report));
    }

    /// Waits for the drain's report (the drain must have begun).
    pub async fn wait(&self) -> DrainReport {
        let mut rx = self.done.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.unwrap_or_default(),
            // Unreachable: the sender lives in `self`.
            Err(_) => DrainReport::default(),
        }
    }
}

/// Runs a drain over `hub`: tells the clients to go at `config.rate`, and returns when the hub
/// is empty, at `config.timeout` (the rest told at once), or when `shutdown` is cancelled.
pub async fn run(
    hub: &Hub,
    config: &DrainConfig,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> DrainReport {
    let start = Instant::now();
    let deadline = start + config.timeout;
    let every = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
    metrics.draining.set(1);
    let mut queue: VecDeque<Arc<Channel>> = hub.channels().into();
    info!(connections = queue.len(), rate = config.rate, timeout = ?config.timeout, "drain started");
    let mut report = DrainReport::default();
    // When the next disconnect is due.
    let mut next = start;
    loop {
        let held = hub.connections();
        metrics.drain_remaining.set(held as i64);
        if held == 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            report.timed_out = true;
            report.cut = hub.close_all(Disconnect::Drain);
            metrics.drained.inc_by(report.cut as u64);
            break;
        }
        if shutdown.is_cancelled() {
            break;
        }
        while next <= now {
            let Some(ch) = queue.pop_front() else { break };
            if ch.outbox.close(Disconnect::Drain) {
                report.drained += 1;
                metrics.drained.inc();
                next += every;
            }
        }
        if queue.is_empty() {
            // Everyone known is told. A connection admitted since (its handshake was under way
            // when the drain began) joins the queue, and gets no credit for the time waited: at
            // most one is told at once, the rest at the pace.
            queue = hub.channels().into_iter().filter(|ch| !ch.outbox.is_closing()).collect();
            next = next.max(now);
        }
        let wake = if queue.is_empty() { now + SETTLE_POLL } else { next };
        tokio::select! {
            _ = sleep_until(wake.min(deadline)) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    report.left = hub.connections();
    report.elapsed = start.elapsed();
    metrics.drain_remaining.set(report.left as i64);
    info!(
        drained = report.drained,
        cut = report.cut,
        left = report.left,
        seconds = report.elapsed.as_secs_f64(),
        timed_out = report.timed_out,
        "drain finished"
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;

    /// `n` connections in a hub, each closing itself (leaving the hub) `linger` after it is told
    /// to go, as a connection task does after writing op 6. Returns when each was told.
    fn clients(hub: &Arc<Hub>, n: u64, linger: Duration) -> Vec<tokio::task::JoinHandle<Option<Instant>>> {
        (0..n)
            .map(|i| {
                let ch = Arc::new(Channel::new(
                    i,
                    format!("k{i}").into(),
                    i as i64,
                    [127, 0, 0, 1].into(),
                    &[],
                    Outbox::new(8, 1 << 16),
                ));
                hub.put(ch.clone());
                let hub = hub.clone();
                tokio::spawn(async move {
                    loop {
                        ch.outbox.ready().await;
                        if let Some(why) = ch.outbox.drain(&mut Vec::new()) {
                            let told = (why == Disconnect::Drain).then(Instant::now);
                            tokio::time::sleep(linger).await;
                            hub.remove(&ch);
                            return told;
                        }
                    }
                })
            })
            .collect()
    }

    fn config(rate: u32, timeout: Duration) -> DrainConfig {
        DrainConfig {
            rate,
            timeout,
            reconnect_min: Duration::from_secs(1),
            reconnect_jitter: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn disconnects_are_spread_evenly_at_the_rate() {
        let hub = Arc::new(Hub::new(4));
        let tasks = clients(&hub, 50, Duration::from_millis(5));
        let metrics = Metrics::default();
        let start = Instant::now();
        let r = run(&hub, &config(10, Duration::from_secs(60)), &metrics, &CancellationToken::new()).await;
        assert_eq!((r.drained, r.cut, r.left, r.timed_out), (50, 0, 0, false), "{r}");
        // 50 at 10/s: the last is due at 4.9 s.
        assert!(r.elapsed >= Duration::from_millis(4900) && r.elapsed < Duration::from_millis(5100), "{r}");
        let mut told: Vec<Duration> = Vec::new();
        for t in tasks {
            told.push(t.await.unwrap().expect("told to drain") - start);
        }
        told.sort();
        for (k, t) in told.iter().enumerate() {
            let due = Duration::from_millis(100 * k as u64);
            assert!(*t >= due && *t < due + Duration::from_millis(5), "disconnect {k} at {t:?}");
        }
        assert_eq!(metrics.drained.get(), 50);
        assert_eq!(metrics.draining.get(), 1);
        assert_eq!(metrics.drain_remaining.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_tells_the_rest_at_once_and_counts_them() {
        let hub = Arc::new(Hub::new(4));
        let tasks = clients(&hub, 30, Duration::from_millis(5));
        let metrics = Metrics::default();
        let r =
            run(&hub, &config(10, Duration::from_millis(1000)), &metrics, &CancellationToken::new()).await;
        assert!(r.timed_out, "{r}");
        assert_eq!(r.drained + r.cut, 30, "{r}");
        assert!((9..=11).contains(&r.drained), "about 1 s at 10/s: {r}");
        for t in tasks {
            assert!(t.await.unwrap().is_some(), "every client was told with op 6 drain");
        }
        assert_eq!(metrics.drained.get(), 30);
        assert!(hub.connections() == 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_left_takes_no_slot_and_an_empty_comet_drains_at_once() {
        let hub = Arc::new(Hub::new(2));
        let tasks = clients(&hub, 3, Duration::ZERO);
        let gone = hub.channels()[0].clone();
        gone.outbox.close(Disconnect::ClientClosed);
        tokio::task::yield_now().await;
        let r =
            run(&hub, &config(1, Duration::from_secs(60)), &Metrics::default(), &CancellationToken::new())
                .await;
        assert_eq!(r.drained, 2, "{r}");
        assert!(r.elapsed < Duration::from_millis(1100), "two at 1/s: the second at 1 s: {r}");
        drop(tasks);
        let empty = Hub::new(1);
        let r =
            run(&empty, &config(1, Duration::from_secs(60)), &Metrics::default(), &CancellationToken::new())
                .await;
        assert_eq!((r.drained, r.elapsed), (0, Duration::ZERO));
    }
}
