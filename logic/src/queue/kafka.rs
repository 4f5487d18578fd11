//! The distributed [`Queue`]: a Kafka producer writing goim's `PushMsg` protobuf to
//! `goim-push-topic`, keyed by [`PushMsg::partition_key`], so goim's Go job can consume it too.
//!
//! `acks=all` and `enable.idempotence=true`: `publish` returns `Ok` only once every in-sync
//! replica has the message, and librdkafka's retries never duplicate or reorder it within a
//! partition. Messages with the same key go to the same partition (`fnv1a`, sarama's hash
//! partitioner), so job sees one room's pushes in publish order.

mod config;
mod topic;

use std::time::Duration;

use async_trait::async_trait;
use goim_api::PushMsg;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

pub use config::{KafkaConfig, RESERVED_PROPERTIES};
pub use topic::ensure_topic;

use super::{Error, Queue};

/// How long past `delivery_timeout` publish waits for librdkafka's own verdict. librdkafka scans
/// for timed-out messages once a second, so its report can come up to a second late; publish
/// gives up first, with the same error. The message may still be delivered in that window, which
/// the contract allows (an error means "maybe not accepted").
const REPORT_GRACE: Duration = Duration::from_millis(100);

/// Publishes pushes to Kafka. Cheap to share behind an `Arc`; `publish` takes `&self` and any
/// number of publishes may be in flight.
pub struct KafkaQueue {
    producer: FutureProducer,
    topic: String,
    delivery_timeout: Duration,
    /// For errors.
    brokers: String,
}

impl std::fmt::Debug for KafkaQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaQueue")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("delivery_timeout", &self.delivery_timeout)
            .finish()
    }
}

impl KafkaQueue {
    /// Creates the producer. It connects in the background: an unreachable broker is not an
    /// error here, but each publish fails after `delivery_timeout` until the broker is back.
    /// Fails with [`Error::Unavailable`] when librdkafka refuses the configuration.
    pub fn new(config: &KafkaConfig) -> Result<KafkaQueue, Error> {
        let producer: FutureProducer = config
            .client_config()
            .create()
            .map_err(|e| Error::Unavailable(format!("cannot create the kafka producer: {e}")))?;
        tracing::info!(
            brokers = %config.brokers.join(","),
            topic = %config.topic,
            delivery_timeout = ?config.delivery_timeout,
            "kafka producer created"
        );
        Ok(KafkaQueue {
            producer,
            topic: config.topic.clone(),
            delivery_timeout: config.delivery_timeout,
            brokers: config.brokers.join(","),
        })
    }

    fn timed_out(&self) -> Error {
        Error::Unavailable(format!(
            "kafka at {} did not acknowledge the push to {} within {:?}; is the broker reachable?",
            self.brokers, self.topic, self.delivery_timeout
        ))
    }

    fn error(&self, e: &KafkaError) -> Error {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => Error::Full { waited: self.delivery_timeout },
            Some(RDKafkaErrorCode::MessageTimedOut) => self.timed_out(),
            _ => Error::Unavailable(format!(
                "kafka at {} refused the push to {}: {e}",
                self.brokers, self.topic
            )),
        }
    }
}

#[async_trait]
impl Queue for KafkaQueue {
    async fn publish(&self, msg: PushMsg) -> Result<(), Error> {
        let payload = msg.to_protobuf();
        let key = msg.partition_key();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        // The queue timeout bounds waiting for room in librdkafka's local queue; the delivery
        // itself is bounded by message.timeout.ms. The outer timeout is a backstop only.
        let send = self.producer.send(record, Timeout::After(self.delivery_timeout));
        match tokio::time::timeout(self.delivery_timeout + REPORT_GRACE, send).await {
            Ok(Ok(_delivery)) => Ok(()),
            Ok(Err((e, _msg))) => {
                let err = self.error(&e);
                tracing::warn!(error = %e, topic = %self.topic, key = %key, "kafka publish failed");
                Err(err)
            }
            Err(_) => {
                tracing::warn!(topic = %self.topic, key = %key, timeout = ?self.delivery_timeout, "kafka publish timed out");
                Err(self.timed_out())
            }
        }
    }
}
