//! [`KafkaQueue`]: the producer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use goim_api::PushMsg;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaConfig;
use crate::queue::{Acked, Error, Queue};

/// How long past `delivery_timeout` publish waits for librdkafka's own verdict. librdkafka scans
/// for timed-out messages once a second, so its report can come up to a second late; publish
/// gives up first, with the same error. The message may still be delivered in that window, which
/// the contract allows (an error means "maybe not accepted").
const REPORT_GRACE: Duration = Duration::from_millis(100);

/// How often a push retries librdkafka's full local queue (within `delivery_timeout`).
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(10);

/// Publishes pushes to Kafka. Cheap to share behind an `Arc`; `publish` takes `&self` and any
/// number of publishes may be in flight.
pub struct KafkaQueue {
    /// Replaced after `reset_after_failures` failed pushes in a row; publishes in flight keep
    /// the one they started on.
    producer: RwLock<Arc<FutureProducer>>,
    config: KafkaConfig,
    topic: String,
    delivery_timeout: Duration,
    /// For errors.
    brokers: String,
    /// Pushes failed since the last success.
    failures: AtomicU32,
    /// When the producer was last created.
    created: Mutex<Instant>,
    resets: Counter,
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
        let producer = create(config)?;
        tracing::info!(
            brokers = %config.brokers.join(","),
            topic = %config.topic,
            delivery_timeout = ?config.delivery_timeout,
            "kafka producer created"
        );
        Ok(KafkaQueue {
            producer: RwLock::new(Arc::new(producer)),
            config: config.clone(),
            topic: config.topic.clone(),
            delivery_timeout: config.delivery_timeout,
            brokers: config.brokers.join(","),
            failures: AtomicU32::new(0),
            created: Mutex::new(Instant::now()),
            resets: Counter::default(),
        })
    }

    /// Registers `goim_logic_kafka_producer_resets_total`: how many times the producer was
    /// replaced after failing pushes in a row.
    pub fn register(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("goim_logic").register(
            "kafka_producer_resets",
            "Kafka producers replaced after failed pushes in a row",
            self.resets.clone(),
        );
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failed push; after `reset_after_failures` in a row, replaces the producer
    /// (unless it is younger than `delivery_timeout`: its first pushes have not had their
    /// chance yet).
    fn failed(&self) {
        let limit = self.config.reset_after_failures;
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if limit == 0 || failures < limit {
            return;
        }
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        if created.elapsed() < self.delivery_timeout {
            return;
        }
        match create(&self.config) {
            Ok(fresh) => {
                *self.producer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
                *created = Instant::now();
                self.failures.store(0, Ordering::Relaxed);
                self.resets.inc();
                tracing::warn!(failures, brokers = %self.brokers, "kafka producer replaced after failed pushes in a row");
            }
            Err(e) => tracing::error!(error = %e, "cannot replace the kafka producer"),
        }
    }

    /// A push Kafka refused (or could not take in time): logged, counted towards a producer
    /// reset unless it is load (a full local queue).
    fn refused(&self, e: &KafkaError, key: &str) -> Error {
        let err = self.error(e);
        tracing::warn!(error = %e, topic = %self.topic, key = %key, "kafka publish failed");
        if !matches!(err, Error::Full { .. }) {
            self.failed();
        }
        err
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

fn create(config: &KafkaConfig) -> Result<FutureProducer, Error> {
    config
        .client_config()
        .create()
        .map_err(|e| Error::Unavailable(format!("cannot create the kafka producer: {e}")))
}

#[async_trait]
impl Queue for KafkaQueue {
    async fn publish(&self, msg: PushMsg) -> Result<(), Error> {
        self.enqueue(msg).await?.await
    }

    /// Hands the push to librdkafka's queue (waiting up to `delivery_timeout` for room in it);
    /// the idempotent producer keeps that order per partition, retries included.
    async fn enqueue<'a>(&'a self, msg: PushMsg) -> Result<Acked<'a>, Error> {
        let payload = msg.to_protobuf();
        let key = msg.partition_key();
        // The acknowledgement keeps this producer alive even if it is replaced meanwhile.
        let producer = self.producer();
        let deadline = Instant::now() + self.delivery_timeout;
        let mut record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((e, back))
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                        && Instant::now() < deadline =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                }
                Err((e, _)) => return Err(self.refused(&e, &key)),
            }
        };
        Ok(Box::pin(async move {
            // The delivery is bounded by message.timeout.ms; this outer timeout is a backstop.
            let outcome = tokio::time::timeout(self.delivery_timeout + REPORT_GRACE, delivery).await;
            drop(producer);
            match outcome {
                Ok(Ok(Ok(_delivery))) => {
                    self.succeeded();
                    Ok(())
                }
                Ok(Ok(Err((e, _msg)))) => Err(self.refused(&e, &key)),
                Ok(Err(_canceled)) => {
                    self.failed();
                    Err(Error::Unavailable(format!(
                        "the kafka producer for {} was dropped before it acknowledged the push",
                        self.topic
                    )))
                }
                Err(_) => {
                    tracing::warn!(topic = %self.topic, key = %key, timeout = ?self.delivery_timeout, "kafka publish timed out");
                    self.failed();
                    Err(self.timed_out())
                }
            }
        }))
    }
}
