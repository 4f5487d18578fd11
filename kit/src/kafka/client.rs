//! librdkafka: the base client configuration and creating a topic.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

/// The broker did not do what was asked; the message says what and why (for a refusal it
/// includes the error code's name, e.g. `TopicAuthorizationFailed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A client of `brokers` named `client_id`, with `fixed` set first and the user's `properties`
/// applied last (the tier refuses its reserved ones in `validate`, so `properties` cannot undo
/// `fixed`).
pub fn client_config(
    brokers: &[String],
    client_id: &str,
    fixed: &[(&str, String)],
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers.join(",")).set("client.id", client_id);
    for (key, value) in fixed {
        config.set(*key, value);
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// Creates `topic` with `partitions` partitions, each on `replication` brokers (-1: the broker's
/// default), unless it exists. Returns whether it was created. Bounded by `timeout`.
pub async fn create_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<bool, Unavailable> {
    let brokers = config.get("bootstrap.servers").unwrap_or_default().to_owned();
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|e| Unavailable(format!("cannot create the kafka admin client: {e}")))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout));
    let created = tokio::time::timeout(timeout, admin.create_topics([&new], &options))
        .await
        .map_err(|_| {
            Unavailable(format!("kafka at {brokers} did not answer CreateTopics within {timeout:?}"))
        })?
        .map_err(|e| Unavailable(format!("kafka at {brokers}: creating {topic}: {e}")))?;
    match created.into_iter().next() {
        Some(Ok(_)) => {
            tracing::info!(topic, partitions, replication, "kafka topic created");
            Ok(true)
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        // The code's name too (`TopicAuthorizationFailed`), which callers may match on.
        Some(Err((name, code))) => {
            Err(Unavailable(format!("kafka at {brokers}: creating {name}: {code} ({code:?})")))
        }
        None => Err(Unavailable(format!("kafka at {brokers}: no CreateTopics result for {topic}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_come_after_the_fixed_settings() {
        let props = BTreeMap::from([("linger.ms".to_owned(), "0".to_owned())]);
        let c = client_config(&["a:1".into(), "b:2".into()], "goim-test", &[("acks", "all".into())], &props);
        assert_eq!(c.get("bootstrap.servers"), Some("a:1,b:2"));
        assert_eq!(c.get("client.id"), Some("goim-test"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("linger.ms"), Some("0"));
    }
}
