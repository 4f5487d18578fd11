//! goim-kit: mechanism the tiers share, never domain. comet, logic and job do not import each
//! other (they meet in `goim-api`, the wire contract); what they have in common as *plumbing*
//! lives here, one copy each:
//!
//! - [`Invalid`]: the configuration error every `validate` returns, naming the dotted field.
//! - [`grpc`]: the `[grpc]` server table and its tonic builder, and the channel settings of the
//!   gRPC clients (`[logic_client]` in comet, `[comet_client]` in logic and job).
//! - [`kafka`]: broker, topic and reserved-property validation; with the `kafka` feature, the
//!   base librdkafka client configuration and topic creation.
//!
//! Nothing here knows a goim message or a tier's type.

pub mod grpc;
pub mod kafka;

/// A configuration value that cannot work. `field` is its dotted path from the root of the
/// binary's file (`grpc.addr`, `kafka.brokers`, `comet.tcp.bind`); a binary that nests a tier's
/// tables under a table of its own (the embedded `goim` puts logic's under `[logic]`) adds that
/// name with [`Invalid::within`]. The message is `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid { field: field.into(), reason: reason.into() }
    }

    /// The same error for a table placed under `table`: `auth.mode` becomes `logic.auth.mode`.
    pub fn within(self, table: &str) -> Invalid {
        Invalid { field: format!("{table}.{}", self.field), reason: self.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_field_and_within_prefixes_it() {
        let e = Invalid::new("auth.mode", "unknown");
        assert_eq!(e.to_string(), "auth.mode: unknown");
        assert_eq!(e.within("logic").to_string(), "logic.auth.mode: unknown");
    }
}
