//! Creating the push topic. goim expects it to exist; a fresh cluster (and every test) can ask
//! for it instead of needing Kafka's own tools.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::KafkaConfig;
use crate::queue::Error;

/// Creates `config.topic` with `partitions` partitions, each on `replication` brokers, unless it
/// exists. Returns whether it was created. Bounded by `config.delivery_timeout`.
///
/// Partitions are the unit of job parallelism: each is consumed by one job at a time, in order.
pub async fn ensure_topic(config: &KafkaConfig, partitions: i32, replication: i32) -> Result<bool, Error> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| Error::Unavailable(format!("cannot create the kafka admin client: {e}")))?;
    let topic = NewTopic::new(&config.topic, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new()
        .request_timeout(Some(config.delivery_timeout))
        .operation_timeout(Some(config.delivery_timeout));
    let brokers = config.brokers.join(",");
    let created = tokio::time::timeout(config.delivery_timeout, admin.create_topics([&topic], &options))
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "kafka at {brokers} did not answer CreateTopics within {:?}",
                config.delivery_timeout
            ))
        })?
        .map_err(|e| Error::Unavailable(format!("kafka at {brokers}: creating {}: {e}", config.topic)))?;
    match created.into_iter().next() {
        Some(Ok(_)) => {
            tracing::info!(topic = %config.topic, partitions, replication, "kafka topic created");
            Ok(true)
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((name, code))) => {
            Err(Error::Unavailable(format!("kafka at {brokers}: creating {name}: {code}")))
        }
        None => Err(Error::Unavailable(format!(
            "kafka at {brokers}: no CreateTopics result for {}",
            config.topic
        ))),
    }
}
