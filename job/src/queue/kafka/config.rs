//! `[kafka]`: what [`super::KafkaSource`] consumes (goim's job `[kafka]` table, plus offsets and
//! timeouts).
//!
//! ```toml
//! [kafka]
//! brokers = ["127.0.0.1:9092"]
//! topic = "goim-push-topic"
//! group = "goim-push-group-job"
//! auto_offset_reset = "earliest"  # where a group without a committed offset starts
//! commit_interval = "100ms"       # at most one offset commit per interval while acks arrive
//! session_timeout = "10s"         # a job that stops heartbeating loses its partitions after this
//! close_timeout = "5s"            # the final synchronous commit and group leave, at most
//! fetch_max_wait = "100ms"        # how long the broker may hold a fetch that finds nothing
//! [kafka.properties]              # any other librdkafka consumer property, applied last
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use goim_kit::kafka;
use serde::{Deserialize, Serialize};

use crate::config::Error;

/// Properties the at-least-once guarantee rests on; `properties` may not override them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`. Default `["127.0.0.1:9092"]`.
    pub brokers: Vec<String>,
    /// Default `goim-push-topic` (goim's).
    pub topic: String,
    /// The consumer group; every job of a cluster shares it. Default `goim-push-group-job`.
    pub group: String,
    /// Where a partition without a committed offset for the group starts. Default `earliest`:
    /// a new group reads what logic published before any job ever ran, instead of skipping it
    /// as goim (sarama's default, newest) does. Set `latest` when pointing a new group at a
    /// topic holding a long backlog that must not be replayed.
    pub auto_offset_reset: OffsetReset,
    /// Acks advance the commit point at once; the commit itself is sent at most once per this
    /// interval (async), and always when the source is dropped (sync). Default 100ms.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// librdkafka's `session.timeout.ms`: how soon a job that died loses its partitions to the
    /// others. Default 10s.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How long dropping the source may take for its final synchronous commit and leaving the
    /// group. Default 5s.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// librdkafka's `fetch.wait.max.ms`: how long the broker may hold a fetch that finds no new
    /// message. Kafka answers a waiting fetch as soon as a message arrives, so there this only
    /// paces idle polls; a Kafka-protocol broker that holds every fetch for its full wait adds
    /// up to this much to every push's latency. librdkafka's default is 500ms. Default 100ms.
    #[serde(with = "humantime_serde")]
    pub fetch_max_wait: Duration,
    /// Extra librdkafka consumer properties (TLS, SASL, `partition.assignment.strategy`, ...),
    /// applied after the defaults. The [`RESERVED_PROPERTIES`] are refused.
    pub properties: BTreeMap<String, String>,
}

/// `auto.offset.reset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
}

impl Default for KafkaConfig {
    fn default() -> KafkaConfig {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: kafka::DEFAULT_TOPIC.into(),
            group: "goim-push-group-job".into(),
            auto_offset_reset: OffsetReset::Earliest,
            commit_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            fetch_max_wait: Duration::from_millis(100),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Checks the table. Field names assume it sits at `kafka` in job's config.
    pub fn validate(&self) -> Result<(), Error> {
        let err = |field: &str, reason: String| Err(Error::new(field, reason));
        kafka::validate_brokers(&self.brokers)?;
        kafka::validate_topic(&self.topic)?;
        if self.group.is_empty() {
            return err("kafka.group", "must not be empty".into());
        }
        if self.commit_interval > Duration::from_secs(60) {
            return err("kafka.commit_interval", "must be at most 60s".into());
        }
        // Kafka brokers accept 6s..300s by default (group.min/max.session.timeout.ms).
        if self.session_timeout < Duration::from_secs(1) || self.session_timeout > Duration::from_secs(3600) {
            return err("kafka.session_timeout", "must be between 1s and 1h".into());
        }
        if self.close_timeout.is_zero() {
            return err("kafka.close_timeout", "must be positive".into());
        }
        if self.fetch_max_wait < Duration::from_millis(1) || self.fetch_max_wait > Duration::from_secs(300) {
            return err("kafka.fetch_max_wait", "must be between 1ms and 300s".into());
        }
        kafka::validate_properties(&self.properties, RESERVED_PROPERTIES)
    }

    /// The librdkafka consumer configuration.
    #[cfg(feature = "kafka")]
    pub(super) fn client_config(&self) -> rdkafka::ClientConfig {
        let reset = match self.auto_offset_reset {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        };
        let fixed = [
            ("group.id", self.group.clone()),
            // Offsets are committed by hand, and only for acked deliveries.
            ("enable.auto.commit", "false".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            ("auto.offset.reset", reset.to_owned()),
            ("session.timeout.ms", self.session_timeout.as_millis().to_string()),
            ("fetch.wait.max.ms", self.fetch_max_wait.as_millis().to_string()),
            ("enable.partition.eof", "false".to_owned()),
            // librdkafka notices a subscribed topic created after the consumer started (job
            // started before logic created it) only at a metadata refresh: 5 minutes by default.
            ("topic.metadata.refresh.interval.ms", "10000".to_owned()),
        ];
        kafka::client_config(&self.brokers, "goim-job", &fixed, &self.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "kafka")]
    #[test]
    fn the_defaults_are_goims_topic_and_group_from_the_earliest_offset() {
        let config: KafkaConfig = toml::from_str("").unwrap();
        assert_eq!(config, KafkaConfig::default());
        assert_eq!(
            (config.topic.as_str(), config.group.as_str()),
            ("goim-push-topic", "goim-push-group-job")
        );
        config.validate().unwrap();
        let client = config.client_config();
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(client.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(client.get("group.id"), Some("goim-push-group-job"));
        assert_eq!(client.get("fetch.wait.max.ms"), Some("100"));
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn durations_and_offset_reset_parse_from_toml() {
        let config: KafkaConfig = toml::from_str(
            "auto_offset_reset = \"latest\"\ncommit_interval = \"1s\"\nfetch_max_wait = \"10ms\"\n",
        )
        .unwrap();
        assert_eq!(config.auto_offset_reset, OffsetReset::Latest);
        assert_eq!(config.client_config().get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(config.commit_interval, Duration::from_secs(1));
        assert_eq!(config.client_config().get("auto.offset.reset"), Some("latest"));
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let bad = |f: fn(&mut KafkaConfig)| {
            let mut config = KafkaConfig::default();
            f(&mut config);
            config.validate().unwrap_err().field
        };
        assert_eq!(bad(|c| c.brokers = vec![":9092".into()]), "kafka.brokers");
        assert_eq!(bad(|c| c.topic = String::new()), "kafka.topic");
        assert_eq!(bad(|c| c.group = String::new()), "kafka.group");
        assert_eq!(bad(|c| c.session_timeout = Duration::ZERO), "kafka.session_timeout");
        assert_eq!(bad(|c| c.close_timeout = Duration::ZERO), "kafka.close_timeout");
        assert_eq!(bad(|c| c.fetch_max_wait = Duration::ZERO), "kafka.fetch_max_wait");
        assert_eq!(
            bad(|c| _ = c.properties.insert("enable.auto.commit".into(), "true".into())),
            "kafka.properties"
        );
    }
    /// The operator renders these for `topology.kafka.tls` and `.sasl`: librdkafka refuses them
    /// at creation when it was built without OpenSSL (the `ssl` feature).
    #[cfg(feature = "kafka")]
    #[test]
    fn tls_and_scram_properties_create_a_client() {
        let ca = std::env::temp_dir().join(format!("goim-kafka-ca-{}-consumer.pem", std::process::id()));
        // Any parseable certificate will do: only loading it is checked, no broker is reached.
        let cert = rcgen::generate_simple_self_signed(vec!["kafka".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        for (protocol, mechanism) in [
            ("SASL_SSL", "SCRAM-SHA-512"),
            ("SASL_SSL", "SCRAM-SHA-256"),
            ("SSL", ""),
            ("SASL_PLAINTEXT", "PLAIN"),
        ] {
            let mut config = KafkaConfig::default();
            config.properties.insert("security.protocol".into(), protocol.into());
            if protocol.starts_with("SASL") {
                config.properties.insert("sasl.mechanism".into(), mechanism.into());
                config.properties.insert("sasl.username".into(), "goim".into());
                config.properties.insert("sasl.password".into(), "secret".into());
            }
            if protocol.ends_with("SSL") {
                config.properties.insert("ssl.ca.location".into(), ca.display().to_string());
            }
            config.validate().unwrap();
            let created: Result<rdkafka::consumer::BaseConsumer, _> = config.client_config().create();
            if let Err(e) = created {
                panic!("{protocol} {mechanism}: {e}");
            }
        }
        let _ = std::fs::remove_file(&ca);
    }
}
