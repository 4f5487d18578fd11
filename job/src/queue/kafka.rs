//! The distributed [`Source`]: a member of consumer group `goim-push-group-job` on
//! `goim-push-topic`, decoding goim's `PushMsg` protobuf, committing only what job acked.
//!
//! - Auto-commit is off. Each delivery's offset is tracked per partition; an ack moves the commit
//!   point to the lowest offset still in flight, and that point is committed asynchronously at
//!   most once per `commit_interval` (and synchronously when the source is dropped, and when a
//!   rebalance revokes partitions). So after a crash or a rebalance, a new owner resumes at the
//!   first unacked offset: a push may be delivered twice, never skipped.
//! - A message that does not decode is counted (`goim_job_messages_undecodable_total`), logged
//!   and acked: it can never succeed, and must not stall its partition.
//! - Broker errors are logged and retried by librdkafka; only a fatal consumer error ends `recv`.

//!
//! The `[kafka]` table ([`KafkaConfig`]) is always there; the consumer itself needs the `kafka`
//! feature (on by default), which builds librdkafka.

mod config;
#[cfg(feature = "kafka")]
mod context;
#[cfg(feature = "kafka")]
mod offsets;
#[cfg(feature = "kafka")]
mod source;

pub use config::{KafkaConfig, OffsetReset};
#[cfg(feature = "kafka")]
pub use source::KafkaSource;
