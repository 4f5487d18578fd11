//! [`KafkaSource`]: the consumer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use goim_api::PushMsg;
use parking_lot::Mutex;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use super::KafkaConfig;
use super::context::{SourceContext, commit_list};
use super::offsets::{Offsets, Stale};
use crate::Metrics;
use crate::queue::{AckToken, Delivery, Error, Source};

/// The same consumer error is logged at most once per this interval.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A Kafka consumer-group member delivering pushes to job.
pub struct KafkaSource {
    /// `Option` so that `drop` can hand it to the thread that commits and leaves the group.
    consumer: Option<Arc<StreamConsumer<SourceContext>>>,
    /// Shared with the consumer's context, which commits on revoke and records confirmed commits.
    offsets: Arc<Mutex<Offsets>>,
    topic: String,
    commit_interval: Duration,
    close_timeout: Duration,
    last_commit: Instant,
    last_error: Option<(String, Instant)>,
    metrics: Metrics,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer and subscribes to `config.topic`. Joining the group and fetching
    /// happen in [`Source::recv`]; an unreachable broker is not an error here.
    pub fn new(config: &KafkaConfig, metrics: Metrics) -> Result<KafkaSource, Error> {
        let offsets = Arc::new(Mutex::new(Offsets::default()));
        let context = SourceContext { topic: config.topic.clone(), offsets: Arc::clone(&offsets) };
        let consumer: StreamConsumer<SourceContext> = config
            .client_config()
            .create_with_context(context)
            .map_err(|e| Error::Backend(format!("cannot create the kafka consumer: {e}")))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|e| Error::Backend(format!("cannot subscribe to {}: {e}", config.topic)))?;
        info!(
            brokers = %config.brokers.join(","),
            topic = %config.topic,
            group = %config.group,
            "kafka consumer subscribed"
        );
        Ok(KafkaSource {
            consumer: Some(Arc::new(consumer)),
            offsets,
            topic: config.topic.clone(),
            commit_interval: config.commit_interval,
            close_timeout: config.close_timeout,
            last_commit: Instant::now(),
            last_error: None,
            metrics,
        })
    }

    /// Deliveries handed to job and not yet acked.
    pub fn in_flight(&self) -> usize {
        self.offsets.lock().pending()
    }

    fn consumer(&self) -> Arc<StreamConsumer<SourceContext>> {
        // Only `drop` takes it.
        Arc::clone(self.consumer.as_ref().expect("consumer present until drop"))
    }

    /// When the next commit should go out, if anything is waiting to be committed.
    fn commit_due(&self) -> Option<Instant> {
        let waiting = self.offsets.lock().any_uncommitted();
        waiting.then(|| self.last_commit + self.commit_interval)
    }

    /// Sends an asynchronous commit of every partition's commit point; the context records the
    /// result. A failed commit is sent again on the next interval.
    fn commit_async(&mut self) {
        self.last_commit = Instant::now();
        let commit = self.offsets.lock().uncommitted();
        if commit.is_empty() {
            return;
        }
        debug!(offsets = ?commit, "committing offsets");
        if let Err(e) = self.consumer().commit(&commit_list(&self.topic, &commit), CommitMode::Async) {
            warn!(error = %e, offsets = ?commit, "queueing an offset commit failed; retried on the next interval");
        }
    }

    fn mark_acked(&mut self, partition: i32, offset: i64) {
        let moved = self.offsets.lock().acked(partition, offset);
        match moved {
            Ok(true) if self.last_commit.elapsed() >= self.commit_interval => self.commit_async(),
            Ok(_) => {}
            // Not errors: after a rebalance, acks of deliveries from partitions this member lost
            // (or lost and got back) arrive late; the partition's new owner redelivers them.
            Err(Stale::Partition) => debug!(partition, offset, "ack for a revoked partition ignored"),
            Err(Stale::Offset) => debug!(partition, offset, "ack for an offset not in flight ignored"),
        }
    }

    /// Logs a consumer error, the same one at most every [`ERROR_LOG_INTERVAL`].
    fn log_error(&mut self, e: &KafkaError) {
        let text = e.to_string();
        let repeat = self
            .last_error
            .as_ref()
            .is_some_and(|(last, at)| *last == text && at.elapsed() < ERROR_LOG_INTERVAL);
        if !repeat {
            warn!(error = %text, topic = %self.topic, "kafka consume error; retrying");
            self.last_error = Some((text, Instant::now()));
        }
    }
}

#[async_trait]
impl Source for KafkaSource {
    /// Cancel-safe: `StreamConsumer::recv` is, and nothing after it awaits.
    async fn recv(&mut self) -> Result<Option<Delivery>, Error> {
        let consumer = self.consumer();
        loop {
            let due = self.commit_due();
            tokio::select! {
                biased;
                () = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => self.commit_async(),
                received = consumer.recv() => match received {
                    Ok(message) => {
                        let (partition, offset) = (message.partition(), message.offset());
                        self.offsets.lock().delivered(partition, offset);
                        match PushMsg::from_protobuf(message.payload().unwrap_or_default()) {
                            Ok(msg) => return Ok(Some(Delivery { msg, token: AckToken { partition, offset } })),
                            Err(e) => {
                                self.metrics.undecodable();
                                warn!(error = %e, partition, offset, topic = %self.topic, "undecodable push skipped");
                                self.mark_acked(partition, offset);
                            }
                        }
                    }
                    Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                        return Err(Error::Backend(format!("kafka consumer failed for good: {e}")));
                    }
                    Err(e) => {
                        self.log_error(&e);
                        // librdkafka reports an error once per event, but never spin on a burst.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }

    async fn ack(&mut self, token: AckToken) -> Result<(), Error> {
        self.mark_acked(token.partition, token.offset);
        Ok(())
    }
}

impl Drop for KafkaSource {
    /// Commits every contiguously acked offset synchronously, then leaves the group, on a thread
    /// of its own, waiting for both at most `close_timeout`. This blocks the dropping task: it
    /// runs once, when job stops, and the commit is what makes the stop lose nothing.
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else { return };
        let (commit, in_flight) = {
            let offsets = self.offsets.lock();
            (offsets.uncommitted(), offsets.pending())
        };
        let list = commit_list(&self.topic, &commit);
        let summary = commit.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let closing = std::thread::Builder::new().name("goim-kafka-close".into()).spawn(move || {
            let committed = if commit.is_empty() { Ok(()) } else { consumer.commit(&list, CommitMode::Sync) };
            // The last reference: dropping it leaves the group.
            drop(consumer);
            let _ = done_tx.send(committed);
        });
        if let Err(e) = closing {
            warn!(error = %e, "cannot start the kafka close thread; offsets not committed");
            return;
        }
        match done_rx.recv_timeout(self.close_timeout) {
            Ok(Ok(())) => info!(committed = ?summary, in_flight, "kafka consumer closed"),
            Ok(Err(e)) => warn!(error = %e, "final offset commit failed; unacked pushes are redelivered"),
            Err(_) => warn!(timeout = ?self.close_timeout, "kafka consumer did not close in time"),
        }
    }
}
