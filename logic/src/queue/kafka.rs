//! The distributed [`Queue`]: a Kafka producer writing goim's `PushMsg` protobuf to
//! `goim-push-topic`, keyed by [`PushMsg::partition_key`], so goim's Go job can consume it too.
//!
//! `acks=all` and `enable.idempotence=true`: `publish` returns `Ok` only once every in-sync
//! replica has the message, and librdkafka's retries never duplicate or reorder it within a
//! partition. Messages with the same key go to the same partition (`fnv1a`, sarama's hash
//! partitioner), so job sees one room's pushes in publish order.

//!
//! The `[kafka]` table ([`KafkaConfig`]) is always there, so a file written for Kafka loads
//! everywhere; the producer itself needs the `kafka` feature (on by default), which builds
//! librdkafka.

mod config;
#[cfg(feature = "kafka")]
mod producer;
#[cfg(feature = "kafka")]
mod topic;

pub use config::{KafkaConfig, RESERVED_PROPERTIES};
#[cfg(feature = "kafka")]
pub use producer::KafkaQueue;
#[cfg(feature = "kafka")]
pub use topic::{TopicError, ensure_topic, prepare_topic};
