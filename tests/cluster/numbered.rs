//! Numbered pushes for the broker fault tests: a pusher that records what logic answered to
//! each, a receiver that records when each arrived, and the accounting of the two.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goim_test_support::Client;

use crate::support::{eventually, http};

/// One numbered push and what logic answered.
#[derive(Debug, Clone)]
pub struct Sent {
    pub n: usize,
    pub sent_at: Instant,
    pub took: Duration,
    pub accepted: bool,
    pub reply: String,
}

/// Numbered pushes to one key, through the logic instances in turn, every `every`, from a task
/// of their own, until [`Pusher::stop`].
pub struct Pusher {
    sent: Arc<Mutex<Vec<Sent>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Pusher {
    /// `ports`: the HTTP ports of the logic instances.
    pub fn start(ports: Vec<u16>, key: &str, every: Duration) -> Pusher {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (log, done, key) = (sent.clone(), stop.clone(), key.to_string());
        let task = tokio::spawn(async move {
            for n in 0.. {
                if done.is_cancelled() {
                    return;
                }
                let url = format!(
                    "http://127.0.0.1:{}/goim/push/keys?operation=1000&keys={key}",
                    ports[n % ports.len()]
                );
                let sent_at = Instant::now();
                let r = http(reqwest::Method::POST, url, n.to_string(), None).await;
                let accepted = r.body["code"] == 0;
                log.lock().unwrap().push(Sent {
                    n,
                    sent_at,
                    took: sent_at.elapsed(),
                    accepted,
                    reply: r.raw,
                });
                tokio::time::sleep(every).await;
            }
        });
        Pusher { sent, stop, task }
    }

    pub fn accepted_since(&self, t: Instant) -> usize {
        self.sent.lock().unwrap().iter().filter(|s| s.accepted && s.sent_at >= t).count()
    }

    pub async fn stop(self) -> Vec<Sent> {
        self.stop.cancel();
        self.task.await.expect("pusher");
        Arc::try_unwrap(self.sent).expect("pusher done").into_inner().unwrap()
    }
}

/// Receives numbered pushes on a task of its own (heartbeating now and then), with the time each
/// arrived, until [`Receiver::finish`].
pub struct Receiver {
    got: Arc<Mutex<Vec<(usize, Instant)>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Client>,
}

impl Receiver {
    pub fn start(mut client: Client) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (log, done) = (got.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut beat = Instant::now();
            while !done.is_cancelled() {
                if beat.elapsed() > Duration::from_secs(10) {
                    let hb = goim_api::Frame {
                        ver: 1,
                        op: goim_api::Op::Heartbeat.code(),
                        seq: 0,
                        body: Default::default(),
                    };
                    client.send(&hb).await.expect("heartbeat");
                    beat = Instant::now();
                }
                if let Ok(f) = client.recv_op(1000, Duration::from_millis(200)).await {
                    let body = String::from_utf8_lossy(&f.body).into_owned();
                    let n = body.parse().unwrap_or_else(|_| panic!("unexpected push {body:?}"));
                    log.lock().unwrap().push((n, Instant::now()));
                }
            }
            client
        });
        Receiver { got, stop, task }
    }

    /// Waits (up to `limit`) until every number in `want` arrived, then a moment for
    /// redeliveries; returns how often each number arrived, and the first arrival at or after
    /// `since`.
    pub async fn finish(
        self,
        want: &[usize],
        limit: Duration,
        since: Instant,
    ) -> (BTreeMap<usize, usize>, Option<Instant>) {
        let got = self.got.clone();
        let complete = eventually(limit, || {
            let got = got.clone();
            async move {
                let got = got.lock().unwrap();
                want.iter().all(|n| got.iter().any(|&(m, _)| m == *n))
            }
        })
        .await;
        if complete {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.stop.cancel();
        let _client = self.task.await.expect("receiver");
        let mut counts = BTreeMap::new();
        for &(n, _) in got.lock().unwrap().iter() {
            *counts.entry(n).or_default() += 1;
        }
        let first = got.lock().unwrap().iter().map(|&(_, at)| at).filter(|&at| at >= since).min();
        (counts, first)
    }
}

/// Checks that every accepted push arrived; returns (accepted, duplicates, delivered though refused).
pub fn account(sent: &[Sent], counts: &BTreeMap<usize, usize>) -> (usize, usize, usize) {
    let accepted: Vec<usize> = sent.iter().filter(|s| s.accepted).map(|s| s.n).collect();
    let lost: Vec<usize> = accepted.iter().copied().filter(|n| !counts.contains_key(n)).collect();
    assert!(lost.is_empty(), "{} of {} accepted pushes lost: {lost:?}", lost.len(), accepted.len());
    let duplicates = counts.values().map(|c| c - 1).sum();
    let refused_delivered = sent.iter().filter(|s| !s.accepted && counts.contains_key(&s.n)).count();
    (accepted.len(), duplicates, refused_delivered)
}
