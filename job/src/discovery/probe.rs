//! A static list whose comets are probed: a TCP connect to each one's gRPC address every
//! `probe_interval`. A comet that failed [`PROBE_FAILURES`] probes in a row leaves the list;
//! the first probe that succeeds puts it back. This is how a dead comet of a fixed fleet leaves
//! discovery (a dead pod leaves its EndpointSlice on its own), so that job stops dispatching to it
//! and logic, after `gone_grace`, drops its routes.
//!
//! A connect proves only that something listens there; a comet that is alive but stuck stays
//! listed and its calls fail and are retried as before. The probe is a plain TCP handshake,
//! closed at once, so it costs a comet nothing but an accept.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::config::PROBE_FAILURES;
use super::{CometEndpoint, Discovery, Endpoints};

/// The longest one probe waits for a connection.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A static list kept to the comets that answer probes.
#[derive(Debug)]
pub struct ProbedList {
    /// The list the probe task publishes; the task holds the sender.
    rx: watch::Receiver<Endpoints>,
}

impl ProbedList {
    /// Lists every comet at once (assumed up until probes say otherwise), then probes them every
    /// `interval` on `tasks` until `shutdown`. `interval` must be more than zero.
    pub fn start(
        mut comets: Vec<CometEndpoint>,
        interval: Duration,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> ProbedList {
        comets.sort();
        comets.dedup_by(|a, b| a.server_id == b.server_id);
        let (tx, rx) = watch::channel(Arc::new(comets.clone()));
        tasks.spawn(probe_loop(comets, interval, tx, shutdown));
        ProbedList { rx }
    }
}

impl Discovery for ProbedList {
    fn watch(&self) -> watch::Receiver<Endpoints> {
        self.rx.clone()
    }
}

async fn probe_loop(
    comets: Vec<CometEndpoint>,
    interval: Duration,
    tx: watch::Sender<Endpoints>,
    shutdown: CancellationToken,
) {
    let timeout = interval.min(MAX_PROBE_TIMEOUT);
    let mut failures = vec![0u32; comets.len()];
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate: the list starts with everyone
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let answers = join_all(comets.iter().map(|c| probe(&c.addr, timeout))).await;
        for ((comet, failed), up) in comets.iter().zip(failures.iter_mut()).zip(answers) {
            match (up, *failed >= PROBE_FAILURES) {
                (true, true) => {
                    info!(server = %comet.server_id, addr = %comet.addr, "comet answers probes again; listed")
                }
                (false, false) if *failed + 1 == PROBE_FAILURES => {
                    warn!(server = %comet.server_id, addr = %comet.addr, failures = PROBE_FAILURES, "comet does not answer probes; unlisted")
                }
                (false, _) => debug!(server = %comet.server_id, addr = %comet.addr, "comet probe failed"),
                _ => {}
            }
            *failed = if up { 0 } else { failed.saturating_add(1) };
        }
        let listed: Vec<CometEndpoint> = comets
            .iter()
            .zip(&failures)
            .filter(|(_, f)| **f < PROBE_FAILURES)
            .map(|(c, _)| c.clone())
            .collect();
        tx.send_if_modified(|current| {
            let changed = **current != listed;
            if changed {
                *current = Arc::new(listed);
            }
            changed
        });
    }
}

/// Whether something accepts TCP connections at `addr` within `timeout`.
async fn probe(addr: &str, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, TcpStream::connect(addr)).await, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    fn ids(list: &ProbedList) -> Vec<String> {
        list.watch().borrow().iter().map(|c| c.server_id.clone()).collect()
    }

    /// Waits (bounded) until the list is `want`.
    async fn until(list: &ProbedList, want: &[&str]) {
        for _ in 0..200 {
            if ids(list) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("list stayed {:?}, wanted {want:?}", ids(list));
    }

    #[tokio::test]
    async fn a_comet_that_stops_answering_is_unlisted_and_listed_again_when_it_answers() {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a_addr = a.local_addr().unwrap();
        let comets = vec![
            CometEndpoint::up("a", a_addr.to_string()),
            CometEndpoint::up("b", b.local_addr().unwrap().to_string()),
        ];
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        let list = ProbedList::start(comets, Duration::from_millis(30), shutdown.clone(), &tasks);
        assert_eq!(ids(&list), ["a", "b"], "everyone is listed before the first probe");

        drop(a);
        until(&list, &["b"]).await;
        // The same server id back on its address (a restart) is listed again.
        let _a = TcpListener::bind(a_addr).await.unwrap();
        until(&list, &["a", "b"]).await;

        shutdown.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.expect("the probe task stops");
    }
}
