//! `[kafka]`: where [`super::KafkaQueue`] publishes (goim's logic `[kafka]` table, plus timeouts).
//!
//! ```toml
//! [kafka]
//! brokers = ["127.0.0.1:9092"]
//! topic = "goim-push-topic"
//! delivery_timeout = "5s"     # a push fails when the broker has not acked it by then
//! reset_after_failures = 3    # a fresh producer after this many failed pushes in a row
//! create_topic = true         # create `topic` at start when it is missing
//! partitions = 4              # ...with this many partitions (job's unit of parallelism)
//! replication_factor = -1     # ...on this many brokers; -1: the broker's default.replication.factor
//! startup_timeout = "30s"     # how long start waits for the broker before it gives up
//! [kafka.properties]          # any other librdkafka producer property, applied last
//! "compression.type" = "lz4"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use goim_kit::kafka;
use serde::{Deserialize, Serialize};

use crate::config::Error;

/// Properties the producer's guarantees rest on; `properties` may not override them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "message.timeout.ms",
    "delivery.timeout.ms",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`. Default `["127.0.0.1:9092"]`.
    pub brokers: Vec<String>,
    /// Default `goim-push-topic` (goim's).
    pub topic: String,
    /// How long one push may take, from handing it to the producer to every in-sync replica
    /// acking it (librdkafka's `message.timeout.ms`; it also bounds waiting for room in the
    /// producer's local queue). Past it the push fails with `queue::Error::Unavailable`, so an
    /// unreachable broker never hangs a push request. Default 5s.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// After this many pushes in a row failed, the producer is replaced by a new one (at most
    /// once per `delivery_timeout`). librdkafka's idempotent producer can stay stuck after the
    /// broker lost its producer state (a restarted broker without its data, or a fatal
    /// idempotence error): it keeps retrying with a producer id the broker no longer knows. A new
    /// producer asks for a new id. 0 never replaces it. Default 3.
    pub reset_after_failures: u32,
    /// At start, create `topic` when it does not exist. When false, a missing topic stops logic
    /// with an error (for clusters where topics are managed elsewhere). Default true.
    pub create_topic: bool,
    /// Partitions of a topic created at start. Each is consumed by one job at a time, in order,
    /// so this bounds how many jobs share the work. Default 4.
    pub partitions: i32,
    /// Replicas of each partition of a topic created at start; -1 takes the broker's
    /// `default.replication.factor`. Default -1.
    pub replication_factor: i32,
    /// How long start waits for the broker to answer (to check or create the topic) before logic
    /// stops with an error. Default 30s.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Extra librdkafka producer properties (TLS, SASL, compression, `linger.ms`, ...), applied
    /// after the defaults. `partitioner` defaults to `fnv1a`, the partitioner of goim's sarama
    /// producer, so goim-rs and Go goim put a key on the same partition. The
    /// [`RESERVED_PROPERTIES`] are refused.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> KafkaConfig {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: kafka::DEFAULT_TOPIC.into(),
            delivery_timeout: Duration::from_secs(5),
            reset_after_failures: 3,
            create_topic: true,
            partitions: 4,
            replication_factor: -1,
            startup_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Checks the table. Field names assume it sits at `kafka` in the tier's config.
    pub fn validate(&self) -> Result<(), Error> {
        let err = |field: &str, reason: String| Err(Error::new(field, reason));
        kafka::validate_brokers(&self.brokers)?;
        kafka::validate_topic(&self.topic)?;
        if self.delivery_timeout < Duration::from_millis(1)
            || self.delivery_timeout > Duration::from_secs(3600)
        {
            return err("kafka.delivery_timeout", "must be between 1ms and 1h".into());
        }
        if !(1..=10_000).contains(&self.partitions) {
            return err("kafka.partitions", format!("{} is not between 1 and 10000", self.partitions));
        }
        if self.replication_factor != -1 && !(1..=32).contains(&self.replication_factor) {
            return err(
                "kafka.replication_factor",
                format!("{} is neither -1 (the broker's default) nor 1..=32", self.replication_factor),
            );
        }
        if self.startup_timeout > Duration::from_secs(3600) {
            return err("kafka.startup_timeout", "must be at most 1h".into());
        }
        kafka::validate_properties(&self.properties, RESERVED_PROPERTIES)
    }

    /// The librdkafka producer configuration. `partitioner` is a default the properties may
    /// change (it is not reserved), so it is set with them.
    #[cfg(feature = "kafka")]
    pub(super) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut properties = BTreeMap::from([("partitioner".to_owned(), "fnv1a".to_owned())]);
        properties.extend(self.properties.clone());
        let fixed = [
            ("acks", "all".to_owned()),
            ("enable.idempotence", "true".to_owned()),
            ("message.timeout.ms", self.delivery_timeout.as_millis().max(1).to_string()),
        ];
        kafka::client_config(&self.brokers, "goim-logic", &fixed, &properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_goims_topic_and_a_local_broker() {
        let config: KafkaConfig = toml::from_str("").unwrap();
        assert_eq!(config, KafkaConfig::default());
        assert_eq!(config.topic, "goim-push-topic");
        config.validate().unwrap();
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn the_producer_acks_all_is_idempotent_and_partitions_like_sarama() {
        let config = KafkaConfig::default().client_config();
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("message.timeout.ms"), Some("5000"));
        assert_eq!(config.get("partitioner"), Some("fnv1a"));
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn extra_properties_are_applied_and_may_change_the_partitioner() {
        let config: KafkaConfig =
            toml::from_str("[properties]\n\"linger.ms\" = \"0\"\npartitioner = \"murmur2\"\n").unwrap();
        config.validate().unwrap();
        let client = config.client_config();
        assert_eq!(client.get("linger.ms"), Some("0"));
        assert_eq!(client.get("partitioner"), Some("murmur2"));
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let bad = |f: fn(&mut KafkaConfig)| {
            let mut config = KafkaConfig::default();
            f(&mut config);
            config.validate().unwrap_err().field
        };
        assert_eq!(bad(|c| c.brokers.clear()), "kafka.brokers");
        assert_eq!(bad(|c| c.brokers = vec!["localhost".into()]), "kafka.brokers");
        assert_eq!(bad(|c| c.topic = "no spaces".into()), "kafka.topic");
        assert_eq!(bad(|c| c.delivery_timeout = Duration::ZERO), "kafka.delivery_timeout");
        assert_eq!(bad(|c| _ = c.properties.insert("acks".into(), "1".into())), "kafka.properties");
    }
    /// The operator renders these for `topology.kafka.tls` and `.sasl`: librdkafka refuses them
    /// at creation when it was built without OpenSSL (the `ssl` feature).
    #[cfg(feature = "kafka")]
    #[test]
    fn tls_and_scram_properties_create_a_client() {
        let ca = std::env::temp_dir().join(format!("goim-kafka-ca-{}-producer.pem", std::process::id()));
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
            let created: Result<rdkafka::producer::BaseProducer, _> = config.client_config().create();
            if let Err(e) = created {
                panic!("{protocol} {mechanism}: {e}");
            }
        }
        let _ = std::fs::remove_file(&ca);
    }
}
