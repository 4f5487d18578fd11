//! librdkafka's callbacks for [`super::KafkaSource`]: rebalances, commit results, logs.
//!
//! They run inside the consumer's poll, that is inside `KafkaSource::recv` (or while the closing
//! thread leaves the group), never concurrently with an ack of the same source.

use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::offsets::Offsets;

pub(super) struct SourceContext {
    pub(super) topic: String,
    /// Shared with the source: it records deliveries and acks, this commits on revoke and
    /// records confirmed commits.
    pub(super) offsets: Arc<Mutex<Offsets>>,
}

/// A commit request for `offsets` of `topic`.
pub(super) fn commit_list(topic: &str, offsets: &[(i32, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(offsets.len());
    for &(partition, offset) in offsets {
        // Adding a partition to a fresh list cannot fail; the Result covers replacing an offset.
        let _ = list.add_partition_offset(topic, partition, Offset::Offset(offset));
    }
    list
}

fn partitions(topic: &str, list: &TopicPartitionList) -> Vec<i32> {
    list.elements_for_topic(topic).iter().map(|e| e.partition()).collect()
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Warning => warn!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Debug => debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker down, coordinator moved, ...: librdkafka retries on its own.
        warn!(error = %error, reason, "kafka consumer error");
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = partitions(&self.topic, list);
                // Commit what is contiguously acked before the partitions go: their new owner
                // starts there. Deliveries still in flight are redelivered (at-least-once), and
                // their late acks are ignored.
                let commit = self.offsets.lock().revoke(&revoked);
                if !commit.is_empty()
                    && let Err(e) = consumer.commit(&commit_list(&self.topic, &commit), CommitMode::Sync)
                {
                    warn!(error = %e, offsets = ?commit, "committing revoked partitions failed; they are redelivered");
                }
                info!(partitions = ?revoked, committed = ?commit, "kafka partitions revoked");
            }
            Rebalance::Assign(list) => {
                info!(partitions = ?partitions(&self.topic, list), "kafka partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, list: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let mut offsets = self.offsets.lock();
                for elem in list.elements_for_topic(&self.topic) {
                    if let Offset::Offset(offset) = elem.offset() {
                        offsets.committed(elem.partition(), offset);
                    }
                }
            }
            Err(e) => warn!(error = %e, "kafka offset commit failed; retried on the next interval"),
        }
    }
}
