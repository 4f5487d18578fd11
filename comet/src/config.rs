//! comet's configuration: the `[comet]` table of the TOML the binaries read.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Why a configuration is unusable: the field under `comet`.
pub type Error = goim_kit::Invalid;

fn invalid(field: &str, problem: impl Into<String>) -> Error {
    Error::new(field, problem).within("comet")
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This comet's server id: the value logic stores for its connections and job routes by.
    /// On Kubernetes it is the pod name.
    pub server_id: String,
    pub tcp: TcpConfig,
    pub websocket: WebsocketConfig,
    pub long_poll: LongPollConfig,
    pub protocol: ProtocolConfig,
    pub outbox: OutboxConfig,
    pub online: OnlineConfig,
    pub disconnect: DisconnectConfig,
    pub drain: DrainConfig,
    pub admission: AdmissionConfig,
    /// Connections held at once; further connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Shards of the key → connection map (goim's buckets).
    pub buckets: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TcpConfig {
    /// Addresses for raw TCP clients; empty disables the listener.
    pub bind: Vec<String>,
    pub nodelay: bool,
}

/// comet's HTTP port: WebSocket upgrades at `/sub`, long-polling at `/poll`, and the demo page.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebsocketConfig {
    /// Addresses for WebSocket (and long-poll) clients; empty disables the listener.
    pub bind: Vec<String>,
    /// Largest HTTP request head accepted.
    pub max_request_head: usize,
    /// How long an idle keep-alive HTTP connection (not a WebSocket) is kept open.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Serve the demo page and `goim.js` at `/` (when the binary provides them).
    pub demo: bool,
    pub tls: TlsConfig,
}

/// WSS: the same service over TLS (goim's 3103).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses for TLS clients; empty (the default) disables TLS.
    pub bind: Vec<String>,
    /// PEM certificate chain.
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<std::path::PathBuf>,
}

/// HTTP long-polling for clients that cannot hold a socket.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LongPollConfig {
    /// Longest a `GET /poll` waits for something to deliver; a `timeout` query parameter
    /// (seconds) may shorten it.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// Sessions held at once; `POST /poll/auth` beyond it gets 503.
    pub max_sessions: usize,
    /// Largest `POST /poll/send` body.
    pub max_send_bytes: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Time from accept to a complete auth packet (goim's `handshakeTimeout`).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Largest packet body a client may send (goim: 4096).
    pub max_body: usize,
    /// Deadline for one write to a client; a client that takes longer is disconnected.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long comet waits to tell logic again that a connection is alive (goim: 10-30 min, random).
    #[serde(with = "humantime_serde")]
    pub session_renew: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Messages queued for one connection before it counts as slow and is disconnected.
    pub capacity: usize,
    /// Bytes queued for one connection before it counts as slow and is disconnected.
    pub max_bytes: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OnlineConfig {
    /// How often comet reports its room and connection counts to logic.
    #[serde(with = "humantime_serde")]
    pub renew_interval: Duration,
    /// Sessions re-registered per second after logic's session store lost its data (a new store
    /// epoch in the online reply: Redis restarted empty). Paced so that every comet doing it at
    /// once does not flood logic and Redis. Default 2000.
    pub reregister_rate: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DisconnectConfig {
    /// Smallest reconnect delay suggested in an op-6 packet on shutdown or drain.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Random extra delay (0..jitter) added to the suggestion, so clients spread their reconnects.
    #[serde(with = "humantime_serde")]
    pub reconnect_jitter: Duration,
}

/// Draining (the preStop hook's `GET /drain` on the admin port, or SIGTERM): clients are told
/// to go (op 6 `drain`) and closed at a paced rate, so the rest of the cluster sees a trickle
/// of reconnects, not a storm.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// Longest a drain lasts; the clients still connected then are told and closed at once.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Disconnects per second, spread evenly (one every `1/rate` s).
    pub rate: u32,
    /// The smallest op-6 `reconnect_after_ms` hint. A rollout deletes the old comets together,
    /// but not in the same instant, and a Service stops routing to a terminating pod a moment
    /// after it terminates: a client told to go at once could land on another old comet and be
    /// drained twice. A second lets every old comet leave the Service first.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// The op-6 `reconnect_after_ms` hint is `reconnect_min` plus a uniform `0..=reconnect_jitter`.
    #[serde(with = "humantime_serde")]
    pub reconnect_jitter: Duration,
}

/// Admission control (see `admission`): what one address may hold, how fast clients may
/// authenticate, and how many auth requests wait on logic at once. A client refused by the
/// first two is told to come back later: op 6 (`too_many_connections`, `rate_limited`) with a
/// `reconnect_after_ms` of `retry_min` plus a uniform `0..=retry_jitter`, or on the HTTP port a
/// 429 with `Retry-After`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Connections one client IP address may hold at once, on every listener together and
    /// handshakes included; 0: no limit (the default). Behind a proxy, or a load balancer that
    /// rewrites source addresses (a Kubernetes Service with `externalTrafficPolicy: Cluster`),
    /// every client has the same few addresses: set it only where comet sees client addresses.
    pub max_per_ip: usize,
    /// Auth attempts per second this comet forwards to logic (a token bucket's refill); 0: no
    /// limit. Attempts over it are refused at once with `rate_limited`.
    pub auth_rate: u32,
    /// Auth attempts allowed at once above the rate: the bucket's size, full at start.
    pub auth_burst: u32,
    /// Auth requests in flight to logic at once; the next one waits for a slot, within the
    /// handshake timeout.
    pub auth_in_flight: usize,
    /// The smallest `reconnect_after_ms` told to a refused client.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Random extra delay (uniform in 0..=jitter) on top of `retry_min`, so refused clients do
    /// not come back together.
    #[serde(with = "humantime_serde")]
    pub retry_jitter: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            server_id: "comet-1".into(),
            tcp: TcpConfig::default(),
            websocket: WebsocketConfig::default(),
            long_poll: LongPollConfig::default(),
            protocol: ProtocolConfig::default(),
            outbox: OutboxConfig::default(),
            online: OnlineConfig::default(),
            disconnect: DisconnectConfig::default(),
            drain: DrainConfig::default(),
            admission: AdmissionConfig::default(),
            max_connections: 1_000_000,
            buckets: 32,
        }
    }
}

impl Default for TcpConfig {
    fn default() -> TcpConfig {
        TcpConfig { bind: vec!["0.0.0.0:3101".into()], nodelay: true }
    }
}

impl Default for WebsocketConfig {
    fn default() -> WebsocketConfig {
        WebsocketConfig {
            bind: vec!["0.0.0.0:3102".into()],
            max_request_head: 8192,
            idle_timeout: Duration::from_secs(60),
            demo: true,
            tls: TlsConfig::default(),
        }
    }
}

impl Default for LongPollConfig {
    fn default() -> LongPollConfig {
        LongPollConfig {
            poll_timeout: Duration::from_secs(30),
            max_sessions: 100_000,
            max_send_bytes: 64 * 1024,
        }
    }
}

impl Default for ProtocolConfig {
    fn default() -> ProtocolConfig {
        ProtocolConfig {
            handshake_timeout: Duration::from_secs(5),
            max_body: goim_api::DEFAULT_MAX_BODY,
            write_timeout: Duration::from_secs(10),
            session_renew: Duration::from_secs(10 * 60),
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> OutboxConfig {
        OutboxConfig { capacity: 256, max_bytes: 1 << 20 }
    }
}

impl Default for OnlineConfig {
    fn default() -> OnlineConfig {
        OnlineConfig { renew_interval: Duration::from_secs(1), reregister_rate: 2000 }
    }
}

impl Default for DisconnectConfig {
    fn default() -> DisconnectConfig {
        DisconnectConfig { reconnect_min: Duration::from_secs(1), reconnect_jitter: Duration::from_secs(10) }
    }
}

impl Default for DrainConfig {
    fn default() -> DrainConfig {
        DrainConfig {
            timeout: Duration::from_secs(20),
            rate: 500,
            reconnect_min: Duration::from_secs(1),
            reconnect_jitter: Duration::from_secs(10),
        }
    }
}

impl Default for AdmissionConfig {
    fn default() -> AdmissionConfig {
        AdmissionConfig {
            max_per_ip: 0,
            auth_rate: 5000,
            auth_burst: 5000,
            auth_in_flight: 256,
            retry_min: Duration::from_secs(1),
            retry_jitter: Duration::from_secs(5),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        if self.server_id.is_empty() {
            return Err(invalid("server_id", "must not be empty"));
        }
        if self.protocol.handshake_timeout.is_zero() {
            return Err(invalid("protocol.handshake_timeout", "must be more than 0s"));
        }
        if self.protocol.write_timeout.is_zero() {
            return Err(invalid("protocol.write_timeout", "must be more than 0s"));
        }
        if self.protocol.max_body == 0 || self.protocol.max_body > 1 << 20 {
            return Err(invalid("protocol.max_body", "must be between 1 and 1048576 bytes"));
        }
        if self.outbox.capacity == 0 {
            return Err(invalid("outbox.capacity", "must be at least 1"));
        }
        if self.outbox.max_bytes < self.protocol.max_body {
            return Err(invalid("outbox.max_bytes", "must be at least protocol.max_body"));
        }
        if self.online.renew_interval.is_zero() {
            return Err(invalid("online.renew_interval", "must be more than 0s"));
        }
        if self.online.reregister_rate == 0 {
            return Err(invalid("online.reregister_rate", "must be at least 1 (sessions per second)"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if self.buckets == 0 || self.buckets > 4096 {
            return Err(invalid("buckets", "must be between 1 and 4096"));
        }
        if !self.websocket.tls.bind.is_empty() {
            if self.websocket.tls.cert.is_none() {
                return Err(invalid("websocket.tls.cert", "required when websocket.tls.bind is set"));
            }
            if self.websocket.tls.key.is_none() {
                return Err(invalid("websocket.tls.key", "required when websocket.tls.bind is set"));
            }
        }
        if self.long_poll.poll_timeout.is_zero() {
            return Err(invalid("long_poll.poll_timeout", "must be more than 0s"));
        }
        if self.long_poll.max_send_bytes < goim_api::HEADER_LEN + self.protocol.max_body {
            return Err(invalid(
                "long_poll.max_send_bytes",
                "must hold at least one packet of protocol.max_body",
            ));
        }
        if self.drain.timeout.is_zero() {
            return Err(invalid("drain.timeout", "must be more than 0s"));
        }
        if self.drain.rate == 0 {
            return Err(invalid("drain.rate", "must be at least 1 disconnect per second"));
        }
        if self.admission.auth_rate > 0 && self.admission.auth_burst == 0 {
            return Err(invalid(
                "admission.auth_burst",
                "must be at least 1 when admission.auth_rate is set",
            ));
        }
        if self.admission.auth_in_flight == 0 || self.admission.auth_in_flight > Semaphore::MAX_PERMITS {
            return Err(invalid("admission.auth_in_flight", "must be at least 1"));
        }
        if self.websocket.max_request_head < 512 {
            return Err(invalid("websocket.max_request_head", "must be at least 512 bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_goim_compatible() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.tcp.bind, ["0.0.0.0:3101"]);
        assert_eq!(c.websocket.bind, ["0.0.0.0:3102"]);
        assert_eq!(c.protocol.max_body, 4096);
    }

    #[test]
    fn invalid_values_name_their_field() {
        let mut c = Config::default();
        c.outbox.capacity = 0;
        assert_eq!(c.validate().unwrap_err().to_string(), "comet.outbox.capacity: must be at least 1");
        let mut c = Config::default();
        c.drain.rate = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("comet.drain.rate: "));
        let mut c = Config::default();
        c.drain.timeout = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().starts_with("comet.drain.timeout: "));
        let mut c = Config::default();
        c.online.reregister_rate = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("comet.online.reregister_rate: "));
    }

    #[test]
    fn the_drain_table_takes_the_keys_the_operator_renders() {
        let c: Config =
            toml::from_str("[drain]\ntimeout = \"30s\"\nrate = 200\nreconnect_jitter = \"5s\"\n").unwrap();
        assert_eq!(
            c.drain,
            DrainConfig {
                timeout: Duration::from_secs(30),
                rate: 200,
                reconnect_min: Duration::from_secs(1),
                reconnect_jitter: Duration::from_secs(5)
            }
        );
        assert_eq!(Config::default().drain.rate, 500);
    }
}
