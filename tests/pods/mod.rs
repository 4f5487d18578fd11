//! The harness of `tests/operator_pods.rs`: rendered pods started as a kubelet would start them,
//! as local processes of the tier binaries (see that file's documentation).

pub mod client;
pub mod cluster;
pub mod kubelet;
pub mod pod;

use std::time::Duration;

/// Fixed ports: one topology at a time.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a pod may take to become ready (the Deployment's progress deadline is 600 s).
pub const READY_LIMIT: Duration = Duration::from_secs(90);
/// How long a push may take to arrive (with Kafka, job's consumer group may still be joining).
pub const PUSH_LIMIT: Duration = Duration::from_secs(30);
pub const OP_PUSH: i32 = 1000;
pub const TLS_SERVER_NAME: &str = "localhost";
pub const RS256_PUBLIC: &str = include_str!("../../logic/tests/keys/rs256.pub.pem");
pub const RS256_PRIVATE: &str = include_str!("../../logic/tests/keys/rs256.key.pem");
