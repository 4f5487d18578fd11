//! Creating the push topic. goim expects it to exist; a fresh cluster (and every test) can ask
//! for it instead of needing Kafka's own tools.

use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use super::KafkaConfig;
use crate::queue::Error;

/// Why the topic is not usable at start.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The broker did not answer within `startup_timeout`.
    #[error("kafka at {brokers} did not answer within {waited:?}: {last}")]
    Unreachable { brokers: String, waited: Duration, last: String },
    /// The topic is missing and logic may not create it (config or broker ACLs).
    #[error("kafka topic {topic:?} does not exist and logic may not create it: {why}")]
    Missing { topic: String, why: String },
}

/// At start: makes sure `config.topic` exists. With `create_topic` it is created when missing
/// (`partitions`, `replication_factor`); without, a missing topic is an error. Then waits until
/// every partition has a leader, so the first push does not spend its `delivery_timeout` waiting
/// for one. Retries while the broker is unreachable, up to `startup_timeout`. Returns whether the
/// topic was created.
pub async fn prepare_topic(config: &KafkaConfig) -> Result<bool, TopicError> {
    let started = Instant::now();
    let brokers = config.brokers.join(",");
    // Some(created) once the topic exists.
    let mut exists: Option<bool> = None;
    loop {
        let attempt = match exists {
            Some(created) => match topic_state(config).await {
                Ok(Some(true)) => return Ok(created),
                Ok(_) => format!("topic {} has partitions without a leader yet", config.topic),
                Err(e) => e.to_string(),
            },
            None if config.create_topic => {
                match ensure_topic(config, config.partitions, config.replication_factor).await {
                    Ok(created) => {
                        exists = Some(created);
                        continue;
                    }
                    Err(Error::Unavailable(e)) if refused(&e) => {
                        return Err(TopicError::Missing {
                            topic: config.topic.clone(),
                            why: format!("the broker refused to create it ({e}); create it or grant CREATE"),
                        });
                    }
                    Err(e) => e.to_string(),
                }
            }
            None => match topic_state(config).await {
                Ok(Some(_)) => {
                    exists = Some(false);
                    continue;
                }
                Ok(None) => {
                    return Err(TopicError::Missing {
                        topic: config.topic.clone(),
                        why: format!(
                            "kafka.create_topic = false; create it ({} partitions suggested) or set \
                             kafka.create_topic = true",
                            config.partitions
                        ),
                    });
                }
                Err(e) => e.to_string(),
            },
        };
        let waited = started.elapsed();
        if waited >= config.startup_timeout {
            return Err(TopicError::Unreachable { brokers, waited, last: attempt });
        }
        tracing::warn!(brokers = %brokers, error = %attempt, "kafka not ready yet; retrying");
        tokio::time::sleep(Duration::from_millis(200).min(config.startup_timeout - waited)).await;
    }
}

/// Whether a CreateTopics failure is the broker saying no (not a transport problem).
fn refused(message: &str) -> bool {
    [
        "AuthorizationFailed",
        "PolicyViolation",
        "InvalidReplicationFactor",
        "InvalidPartitions",
        "InvalidConfig",
    ]
    .iter()
    .any(|code| message.contains(code))
}

/// From the broker's metadata: `None` when `config.topic` does not exist, else whether every
/// one of its partitions has a leader.
async fn topic_state(config: &KafkaConfig) -> Result<Option<bool>, Error> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| Error::Unavailable(format!("cannot create the kafka admin client: {e}")))?;
    let (topic, timeout) = (config.topic.clone(), config.delivery_timeout);
    let metadata = tokio::task::spawn_blocking(move || {
        admin.inner().fetch_metadata(Some(&topic), timeout).map(|m| {
            let t = m.topics().iter().find(|t| t.name() == topic)?;
            if t.error().is_some() || t.partitions().is_empty() {
                return None;
            }
            Some(t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none()))
        })
    })
    .await
    .map_err(|e| Error::Unavailable(format!("metadata task: {e}")))?;
    metadata.map_err(|e| Error::Unavailable(format!("kafka metadata: {e}")))
}

/// Creates `config.topic` with `partitions` partitions, each on `replication` brokers, unless it
/// exists. Returns whether it was created. Bounded by `config.delivery_timeout`.
///
/// Partitions are the unit of job parallelism: each is consumed by one job at a time, in order.
pub async fn ensure_topic(config: &KafkaConfig, partitions: i32, replication: i32) -> Result<bool, Error> {
    goim_kit::kafka::create_topic(
        &config.client_config(),
        &config.topic,
        partitions,
        replication,
        config.delivery_timeout,
    )
    .await
    .map_err(|e| Error::Unavailable(e.0))
}
