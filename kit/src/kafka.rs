//! Kafka pieces that logic (the producer) and job (the consumer) share: the checks of their
//! `[kafka]` tables' common keys and, with the `kafka` feature, the librdkafka base client
//! configuration and creating the push topic. Each tier keeps its own table and its own
//! reserved properties (what its guarantees rest on).

use std::collections::BTreeMap;

use crate::Invalid;

/// goim's push topic.
pub const DEFAULT_TOPIC: &str = "goim-push-topic";

/// `kafka.brokers`: at least one, each `host:port`.
pub fn validate_brokers(brokers: &[String]) -> Result<(), Invalid> {
    if brokers.is_empty() {
        return Err(Invalid::new("kafka.brokers", "needs at least one host:port"));
    }
    for broker in brokers {
        let port = broker.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
            return Err(Invalid::new("kafka.brokers", format!("{broker:?} is not host:port")));
        }
    }
    Ok(())
}

/// `kafka.topic`, by Kafka's rule: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), Invalid> {
    let valid = (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Invalid::new("kafka.topic", format!("{topic:?} is not a Kafka topic name")))
    }
}

/// `kafka.properties`: none of `reserved` (the properties a tier's guarantees rest on).
pub fn validate_properties(properties: &BTreeMap<String, String>, reserved: &[&str]) -> Result<(), Invalid> {
    match properties.keys().find(|k| reserved.contains(&k.as_str())) {
        Some(key) => Err(Invalid::new(
            "kafka.properties",
            format!("{key:?} is set by goim-rs and cannot be overridden"),
        )),
        None => Ok(()),
    }
}

#[cfg(feature = "kafka")]
mod client;
#[cfg(feature = "kafka")]
pub use client::{Unavailable, client_config, create_topic};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_host_port() {
        validate_brokers(&["127.0.0.1:9092".into(), "kafka-0.kafka:9092".into()]).unwrap();
        for bad in
            [vec![], vec!["localhost".to_owned()], vec![":9092".to_owned()], vec!["h:99999".to_owned()]]
        {
            assert_eq!(validate_brokers(&bad).unwrap_err().field, "kafka.brokers", "{bad:?}");
        }
    }

    #[test]
    fn topics_follow_kafkas_rule() {
        validate_topic(DEFAULT_TOPIC).unwrap();
        validate_topic("a.b_c-9").unwrap();
        for bad in ["", ".", "..", "no spaces", &"x".repeat(250)] {
            assert_eq!(validate_topic(bad).unwrap_err().field, "kafka.topic", "{bad:?}");
        }
    }

    #[test]
    fn reserved_properties_are_refused_by_name() {
        let mut p = BTreeMap::from([("linger.ms".to_owned(), "0".to_owned())]);
        validate_properties(&p, &["acks"]).unwrap();
        p.insert("acks".into(), "1".into());
        let e = validate_properties(&p, &["acks"]).unwrap_err();
        assert_eq!(e.to_string(), "kafka.properties: \"acks\" is set by goim-rs and cannot be overridden");
    }
}
