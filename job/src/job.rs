//! The job: one loop that takes pushes off the queue, batches room pushes, dispatches to comets
//! and acks what was dispatched.

use std::sync::Arc;

use goim_api::PushKind;
use goim_api::Stream;
use goim_api::frame::{PUSH_VER, encode_push, encode_push_with};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::comet::{self, Comets};
use crate::config::Config;
use crate::dispatch::{Dispatch, Dispatcher, Done, Target, Unacked};
use crate::metrics::{DropReason, Metrics, kind_name};
use crate::queue::{self, AckToken, Delivery, Source};
use crate::room::{Ready, Rooms};

/// Why [`Job::run`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("receiving from the queue failed")]
    Recv(#[source] queue::Error),
    #[error("acking delivery {token} failed")]
    Ack {
        token: AckToken,
        #[source]
        source: queue::Error,
    },
}

/// Consumes pushes and delivers them to comets.
pub struct Job {
    config: Config,
    comets: Arc<dyn Comets>,
    metrics: Metrics,
}

impl Job {
    /// `config` should have passed [`Config::validate`]; out-of-range values are clamped, not refused.
    pub fn new(config: Config, comets: Arc<dyn Comets>, metrics: Metrics) -> Job {
        Job { config, comets, metrics }
    }

    /// Runs until `shutdown` is cancelled or `source` closes, then flushes every open room batch,
    /// waits for every dispatch in progress, acks, and returns `Ok`.
    ///
    /// - Key pushes are encoded once and sent to the comet named in the message. A comet that does
    ///   not exist is counted (`goim_job_dropped_total{reason="unknown_server"}`) and logged; one
    ///   that discovery no longer lists is never called: the push is dropped at once and counted
    ///   (`reason="comet_gone"`), not retried against a dead address.
    /// - Room pushes to an idle room go out at once; those within `room.max_delay` of the room's
    ///   last flush are batched (`room.batch` packets or `room.max_delay` after that flush; see
    ///   [`RoomConfig`](crate::RoomConfig)). Each batch, encoded once, goes to every comet, in
    ///   push order.
    /// - Broadcasts go to every comet, each paced at its share of `speed`.
    /// - Each call has `dispatch.timeout`; `Unavailable` and timed-out calls are retried
    ///   `dispatch.retries` times. A delivery is acked once every comet answered for it
    ///   (a room push: once its batch did). **A call that still fails is logged and counted
    ///   (`goim_job_dispatch_failed_total{kind,server}`), and the delivery is acked anyway**: that
    ///   comet is gone or broken, and its clients reconnect to another comet; redelivering would
    ///   stall the queue behind it and duplicate the push on every comet that did accept it.
    ///
    /// While `dispatch.max_in_flight` dispatches are pending, nothing more is received.
    ///
    /// # Errors
    /// A failed `recv` (after flushing and acking what is pending) or a failed `ack` (at once).
    pub async fn run(&self, mut source: impl Source, shutdown: CancellationToken) -> Result<(), Error> {
        let mut rooms = Rooms::new(&self.config.room);
        let mut dispatcher = Dispatcher::new(Arc::clone(&self.comets), &self.config.dispatch);
        info!(batch = self.config.room.batch, max_delay = ?self.config.room.max_delay, "job started");
        let ended = loop {
            let deadline = rooms.next_deadline();
            // Biased: finishing dispatches and expired batches go before taking more work.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    info!(open_rooms = rooms.open_batches(), "job shutting down");
                    break Ok(());
                }
                Some(done) = dispatcher.next(), if !dispatcher.is_idle() => {
                    self.complete(done, &mut source).await?;
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let now = Instant::now();
                    while let Some(ready) = rooms.pop_due(now) {
                        self.flush(ready, &mut dispatcher);
                    }
                }
                received = source.recv(), if !dispatcher.is_full() => match received {
                    Ok(Some(delivery)) => self.accept(delivery, &mut rooms, &mut dispatcher),
                    Ok(None) => {
                        info!(open_rooms = rooms.open_batches(), "queue closed");
                        break Ok(());
                    }
                    Err(e) => {
                        error!(error = %e, "receiving from the queue failed");
                        break Err(Error::Recv(e));
                    }
                },
            }
        };
        self.drain(&mut rooms, &mut dispatcher, &mut source).await?;
        info!("job stopped");
        ended
    }

    fn accept(&self, delivery: Delivery, rooms: &mut Rooms, dispatcher: &mut Dispatcher) {
        let Delivery { msg, token } = delivery;
        self.metrics.consumed(msg.kind);
        let unacked = Unacked { token, since: Instant::now() };
        let op = msg.operation;
        // A positioned push carries its position in the packet header (goim-rs; `docs/recovery.md`):
        // a room push in its room's stream, a key push from a mid push in its user's.
        let header = |stream| msg.position.map_or((PUSH_VER, 0), |p| p.header(stream));
        match msg.kind {
            PushKind::Keys => dispatcher.submit(Dispatch {
                payload: {
                    let (ver, seq) = header(Stream::User);
                    encode_push_with(ver, op, seq, &msg.msg)
                },
                target: Target::Keys { server: msg.server, keys: msg.keys, op },
                deliveries: vec![unacked],
            }),
            PushKind::Room => {
                for ready in rooms.push(&msg.room, header(Stream::Room), op, &msg.msg, unacked) {
                    self.flush(ready, dispatcher);
                }
            }
            PushKind::Broadcast => dispatcher.submit(Dispatch {
                payload: encode_push(op, &msg.msg),
                target: Target::Broadcast { op, speed: msg.speed },
                deliveries: vec![unacked],
            }),
        }
    }

    fn flush(&self, ready: Ready, dispatcher: &mut Dispatcher) {
        self.metrics.room_flushed(ready.count);
        debug!(room = %ready.room, packets = ready.count, bytes = ready.packets.len(), "room batch flushed");
        dispatcher.submit(Dispatch {
            target: Target::Room { room: ready.room },
            payload: ready.packets,
            deliveries: ready.deliveries,
        });
    }

    /// Records how the comets answered, then acks the dispatch's deliveries in push order.
    async fn complete(&self, done: Done, source: &mut impl Source) -> Result<(), Error> {
        let kind = done.dispatch.kind();
        let deliveries = &done.dispatch.deliveries;
        if done.calls.is_empty() {
            self.metrics.dropped(kind, DropReason::NoComets);
            warn!(kind = kind_name(kind), deliveries = deliveries.len(), "no comets to dispatch to");
        }
        for call in &done.calls {
            self.metrics.dispatched(kind, call.retries);
            match &call.result {
                Ok(()) => self.metrics.comet_called(&call.server),
                Err(comet::Error::UnknownServer(_)) => {
                    self.metrics.dropped(kind, DropReason::UnknownServer);
                    warn!(kind = kind_name(kind), server = %call.server, "push to an unknown comet dropped");
                }
                Err(comet::Error::Gone(_)) => {
                    // Expected for a while after a comet died: its users' routes still name it
                    // until logic drops them (`discovery.gone_grace`). Debug, not warn: one per push.
                    self.metrics.dropped(kind, DropReason::CometGone);
                    debug!(kind = kind_name(kind), server = %call.server, "push to a comet gone from discovery dropped");
                }
                Err(e) => {
                    self.metrics.comet_called(&call.server);
                    self.metrics.failed(kind, &call.server);
                    warn!(
                        kind = kind_name(kind),
                        server = %call.server,
                        error = %e,
                        retries = call.retries,
                        "comet dispatch failed; acking anyway"
                    );
                }
            }
        }
        let now = Instant::now();
        for unacked in deliveries {
            self.metrics.latency(kind, now.duration_since(unacked.since).as_secs_f64());
            let token = unacked.token;
            source.ack(token).await.map_err(|source| Error::Ack { token, source })?;
        }
        Ok(())
    }

    /// Flushes every open batch and completes every pending dispatch.
    async fn drain(
        &self,
        rooms: &mut Rooms,
        dispatcher: &mut Dispatcher,
        source: &mut impl Source,
    ) -> Result<(), Error> {
        for ready in rooms.drain() {
            self.flush(ready, dispatcher);
        }
        while let Some(done) = dispatcher.next().await {
            self.complete(done, source).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;
    use goim_api::PushMsg;

    use super::*;

    /// Answers every call Ok and counts room batches.
    #[derive(Default)]
    struct Counting {
        room_batches: Mutex<usize>,
    }

    #[async_trait]
    impl Comets for Counting {
        fn servers(&self) -> Vec<String> {
            vec!["c1".into()]
        }
        async fn push_keys(&self, _: &str, _: &[String], _: i32, _: Bytes) -> Result<(), comet::Error> {
            Ok(())
        }
        async fn broadcast_room(&self, _: &str, _: &str, _: Bytes) -> Result<(), comet::Error> {
            *self.room_batches.lock().unwrap() += 1;
            Ok(())
        }
        async fn broadcast(&self, _: &str, _: i32, _: Bytes, _: i32) -> Result<(), comet::Error> {
            Ok(())
        }
    }

    /// Yields scripted results, then pends forever; acks fail if `fail_acks`.
    struct Scripted {
        recvs: VecDeque<Result<Option<Delivery>, queue::Error>>,
        fail_acks: bool,
        acked: Arc<Mutex<Vec<AckToken>>>,
    }

    #[async_trait]
    impl Source for Scripted {
        async fn recv(&mut self) -> Result<Option<Delivery>, queue::Error> {
            match self.recvs.pop_front() {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
        async fn ack(&mut self, token: AckToken) -> Result<(), queue::Error> {
            if self.fail_acks {
                return Err(queue::Error::Backend("broker gone".into()));
            }
            self.acked.lock().unwrap().push(token);
            Ok(())
        }
    }

    fn room_delivery(offset: i64) -> Delivery {
        Delivery {
            msg: PushMsg::room("live://1", 1000, Bytes::from_static(b"m")),
            token: AckToken { partition: 3, offset },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_recv_flushes_pending_batches_acks_them_then_returns_the_error() {
        let comets = Arc::new(Counting::default());
        let acked = Arc::default();
        let source = Scripted {
            recvs: [Ok(Some(room_delivery(7))), Err(queue::Error::Backend("broker gone".into()))].into(),
            fail_acks: false,
            acked: Arc::clone(&acked),
        };
        let job = Job::new(Config::default(), comets.clone(), Metrics::new());
        let result = job.run(source, CancellationToken::new()).await;
        assert!(matches!(result, Err(Error::Recv(queue::Error::Backend(_)))), "{result:?}");
        assert_eq!(*comets.room_batches.lock().unwrap(), 1);
        assert_eq!(*acked.lock().unwrap(), [AckToken { partition: 3, offset: 7 }]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_ack_stops_the_job_naming_the_token() {
        let source = Scripted {
            recvs: [Ok(Some(Delivery {
                msg: PushMsg::keys("c1", vec!["k".into()], 1000, Bytes::new()),
                token: AckToken { partition: 1, offset: 42 },
            }))]
            .into(),
            fail_acks: true,
            acked: Arc::default(),
        };
        let job = Job::new(Config::default(), Arc::new(Counting::default()), Metrics::new());
        let result = job.run(source, CancellationToken::new()).await;
        match result {
            Err(e @ Error::Ack { .. }) => assert_eq!(e.to_string(), "acking delivery 1@42 failed"),
            other => panic!("expected an ack error, got {other:?}"),
        }
    }
}
