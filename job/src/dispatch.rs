//! Dispatch: sending encoded pushes to comets, concurrently where order allows.
//!
//! Every dispatch belongs to a lane: its room, the server of a key push, or the one broadcast
//! lane. A lane runs one dispatch at a time, in submission order, so a room's batches (and one
//! comet's key pushes) reach comets in push order; different lanes run concurrently. All of it is
//! futures polled by the job loop: nothing is spawned.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::{FuturesUnordered, StreamExt};
use goim_api::PushKind;
use tokio::time::Instant;
use tracing::debug;

use crate::comet::{self, Comets};
use crate::config::DispatchConfig;
use crate::metrics::kind_name;
use crate::queue::AckToken;

/// The first retry waits this long; each further one twice as long as the one before.
const BACKOFF: Duration = Duration::from_millis(50);

/// A delivery waiting for its dispatch to complete before it is acked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unacked {
    pub token: AckToken,
    /// When job received it, for the consume-to-dispatch latency (and a room batch's deadline).
    pub since: Instant,
}

#[derive(Clone, Debug)]
pub(crate) enum Target {
    Keys {
        server: String,
        keys: Vec<String>,
        op: i32,
    },
    Room {
        room: String,
    },
    /// `speed` is the cluster-wide rate; each comet gets its share.
    Broadcast {
        op: i32,
        speed: i32,
    },
}

/// One encoded push (or room batch) and the deliveries it completes.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pub target: Target,
    /// Encoded once; every comet is sent a clone of these same bytes.
    pub payload: Bytes,
    pub deliveries: Vec<Unacked>,
}

impl Dispatch {
    pub fn kind(&self) -> PushKind {
        match self.target {
            Target::Keys { .. } => PushKind::Keys,
            Target::Room { .. } => PushKind::Room,
            Target::Broadcast { .. } => PushKind::Broadcast,
        }
    }

    fn lane(&self) -> Lane {
        match &self.target {
            Target::Keys { server, .. } => Lane::Server(server.clone()),
            Target::Room { room } => Lane::Room(room.clone()),
            Target::Broadcast { .. } => Lane::Broadcast,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Lane {
    Server(String),
    Room(String),
    Broadcast,
}

/// How one comet answered, after retries.
#[derive(Debug)]
pub(crate) struct Call {
    pub server: String,
    pub result: Result<(), comet::Error>,
    pub retries: u32,
}

/// A completed dispatch. `calls` is empty when there were no comets to send it to.
#[derive(Debug)]
pub(crate) struct Done {
    pub dispatch: Dispatch,
    pub calls: Vec<Call>,
}

/// The dispatches in progress or waiting for their lane.
pub(crate) struct Dispatcher {
    comets: Arc<dyn Comets>,
    policy: Policy,
    max_in_flight: usize,
    /// One dispatch per busy lane.
    running: FuturesUnordered<BoxFuture<'static, Done>>,
    /// A lane is busy while it has an entry here; the entry holds the dispatches queued behind the
    /// running one.
    lanes: HashMap<Lane, VecDeque<Dispatch>>,
    /// Running plus queued.
    pending: usize,
}

impl Dispatcher {
    pub fn new(comets: Arc<dyn Comets>, config: &DispatchConfig) -> Dispatcher {
        Dispatcher {
            comets,
            policy: Policy { timeout: config.timeout, retries: config.retries },
            max_in_flight: config.max_in_flight.max(1),
            running: FuturesUnordered::new(),
            lanes: HashMap::new(),
            pending: 0,
        }
    }

    /// Whether `max_in_flight` dispatches are pending; job stops receiving until one completes.
    pub fn is_full(&self) -> bool {
        self.pending >= self.max_in_flight
    }

    pub fn is_idle(&self) -> bool {
        self.pending == 0
    }

    /// Starts `dispatch`, or queues it behind the running dispatch of its lane. Never refuses:
    /// the bound is applied by the caller not receiving while [`Dispatcher::is_full`].
    pub fn submit(&mut self, dispatch: Dispatch) {
        self.pending += 1;
        match self.lanes.entry(dispatch.lane()) {
            Entry::Occupied(mut queued) => queued.get_mut().push_back(dispatch),
            Entry::Vacant(lane) => {
                lane.insert(VecDeque::new());
                self.start(dispatch);
            }
        }
    }

    /// The next dispatch to complete; `None` when none is pending. Cancel-safe.
    pub async fn next(&mut self) -> Option<Done> {
        let done = self.running.next().await?;
        self.pending -= 1;
        let lane = done.dispatch.lane();
        let next = self.lanes.get_mut(&lane).and_then(VecDeque::pop_front);
        match next {
            Some(next) => self.start(next),
            None => {
                self.lanes.remove(&lane);
            }
        }
        Some(done)
    }

    fn start(&mut self, dispatch: Dispatch) {
        let comets = Arc::clone(&self.comets);
        let policy = self.policy;
        self.running.push(Box::pin(async move {
            let calls = policy.send(comets.as_ref(), &dispatch).await;
            Done { dispatch, calls }
        }));
    }
}

/// Deadline and retries of one call.
#[derive(Clone, Copy, Debug)]
struct Policy {
    timeout: Duration,
    retries: u32,
}

impl Policy {
    /// Sends `d` to its comets, concurrently, and returns each one's answer.
    async fn send(self, comets: &dyn Comets, d: &Dispatch) -> Vec<Call> {
        let kind = d.kind();
        let payload = &d.payload;
        match &d.target {
            Target::Keys { server, keys, op } => {
                let call = self.call(kind, server, || comets.push_keys(server, keys, *op, payload.clone()));
                vec![call.await]
            }
            Target::Room { room } => {
                let servers = comets.servers();
                join_all(servers.iter().map(|server| {
                    self.call(kind, server, || comets.broadcast_room(server, room, payload.clone()))
                }))
                .await
            }
            Target::Broadcast { op, speed } => {
                let servers = comets.servers();
                let speed = per_comet_speed(*speed, servers.len());
                join_all(servers.iter().map(|server| {
                    self.call(kind, server, || comets.broadcast(server, *op, payload.clone(), speed))
                }))
                .await
            }
        }
    }

    /// Makes one call under the deadline, retrying `Unavailable` and `Timeout` with backoff.
    async fn call<F, Fut>(self, kind: PushKind, server: &str, mut attempt: F) -> Call
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), comet::Error>>,
    {
        let mut retries = 0;
        loop {
            let result =
                tokio::time::timeout(self.timeout, attempt()).await.unwrap_or(Err(comet::Error::Timeout));
            match result {
                Err(e) if e.is_retryable() && retries < self.retries => {
                    let backoff = BACKOFF * 2u32.saturating_pow(retries);
                    debug!(kind = kind_name(kind), server, error = %e, retry = retries + 1, ?backoff, "comet call failed, retrying");
                    tokio::time::sleep(backoff).await;
                    retries += 1;
                }
                result => return Call { server: server.to_owned(), result, retries },
            }
        }
    }
}

/// Each comet's share of a cluster-wide broadcast rate.
///
/// goim divides by the comet count (a panic with none) and lets a rate below the comet count
/// round to 0, which comet reads as unpaced: the slowest requests became the fastest. Here a
/// positive rate stays at least 1, and a non-positive one is unpaced.
pub(crate) fn per_comet_speed(speed: i32, comets: usize) -> i32 {
    if speed <= 0 || comets == 0 {
        return 0;
    }
    let comets = i32::try_from(comets).unwrap_or(i32::MAX);
    (speed / comets).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broadcast_rate_is_split_evenly_between_comets() {
        assert_eq!(per_comet_speed(100, 4), 25);
        assert_eq!(per_comet_speed(100, 3), 33);
        assert_eq!(per_comet_speed(100, 1), 100);
    }

    #[test]
    fn a_rate_below_the_comet_count_stays_paced() {
        assert_eq!(per_comet_speed(2, 4), 1);
    }

    #[test]
    fn unpaced_and_comet_less_broadcasts_give_zero_without_dividing() {
        assert_eq!(per_comet_speed(0, 4), 0);
        assert_eq!(per_comet_speed(-5, 4), 0);
        assert_eq!(per_comet_speed(100, 0), 0);
    }
}
