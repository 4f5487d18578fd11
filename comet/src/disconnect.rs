//! Why a connection ended, and the op-6 packet that tells the client.

use std::time::Duration;

use bytes::Bytes;
use goim_api::{Frame, Op};
use rand::Rng;

use crate::config::Config;

/// Why comet closed a connection (or saw it close). All but the last two are told to the client in an
/// op-6 packet before the socket closes; the rest end a connection that can no longer be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The process is stopping.
    Shutdown,
    /// This comet is being drained (rollout, scale-in).
    Drain,
    /// The connection's queue overflowed: it reads slower than messages arrive.
    Slow,
    /// No heartbeat within the session's heartbeat timeout.
    HeartbeatTimeout,
    /// logic rejected the token; the text is safe to show the client.
    AuthFailed(String),
    /// The client broke the protocol (bad packet, first packet not auth, bad WebSocket frame).
    Protocol(String),
    /// Another connection with the same key replaced this one.
    Kicked,
    /// logic could not be reached to authenticate the connection.
    Unavailable,
    /// Over this comet's auth rate (`admission.auth_rate`): come back later.
    RateLimited,
    /// The client's address already holds `admission.max_per_ip` connections.
    TooManyConnections,
    /// The client closed the connection.
    ClientClosed,
    /// A write failed or timed out.
    WriteFailed,
}

impl Disconnect {
    /// The `reason` on the wire and the label in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Disconnect::Shutdown => "shutdown",
            Disconnect::Drain => "drain",
            Disconnect::Slow => "slow",
            Disconnect::HeartbeatTimeout => "heartbeat_timeout",
            Disconnect::AuthFailed(_) => "auth_failed",
            Disconnect::Protocol(_) => "protocol",
            Disconnect::Kicked => "kicked",
            Disconnect::Unavailable => "unavailable",
            Disconnect::RateLimited => "rate_limited",
            Disconnect::TooManyConnections => "too_many_connections",
            Disconnect::ClientClosed => "client_closed",
            Disconnect::WriteFailed => "write_failed",
        }
    }

    /// Whether the client is sent an op-6 packet before the socket closes.
    pub fn tells_client(&self) -> bool {
        !matches!(self, Disconnect::ClientClosed | Disconnect::WriteFailed)
    }

    /// Whether messages already queued are still written before op 6 (not for a slow client:
    /// its queue is what overflowed).
    pub fn flushes_queue(&self) -> bool {
        matches!(self, Disconnect::Shutdown | Disconnect::Drain | Disconnect::Kicked)
    }

    /// The suggested reconnect delay, or `None` where reconnecting with the same token is pointless.
    ///
    /// A drain's hint is `drain.reconnect_min` plus a uniform `0..=drain.reconnect_jitter`: the
    /// drain itself already spreads the disconnects over time, and the floor gives the other
    /// old comets of a rollout time to leave the Service first.
    pub fn reconnect_after(&self, config: &Config) -> Option<Duration> {
        let jitter = |max: Duration| {
            let ms = max.as_millis() as u64;
            Duration::from_millis(if ms == 0 { 0 } else { rand::rng().random_range(0..=ms) })
        };
        let cfg = &config.disconnect;
        match self {
            Disconnect::Drain => Some(config.drain.reconnect_min + jitter(config.drain.reconnect_jitter)),
            Disconnect::Shutdown | Disconnect::Unavailable => {
                Some(cfg.reconnect_min + jitter(cfg.reconnect_jitter))
            }
            Disconnect::RateLimited | Disconnect::TooManyConnections => {
                Some(config.admission.retry_min + jitter(config.admission.retry_jitter))
            }
            Disconnect::Slow | Disconnect::HeartbeatTimeout => {
                Some(cfg.reconnect_min + jitter(cfg.reconnect_min))
            }
            Disconnect::AuthFailed(_) | Disconnect::Protocol(_) | Disconnect::Kicked => None,
            Disconnect::ClientClosed | Disconnect::WriteFailed => None,
        }
    }

    /// The op-6 packet: `{"reason": "...", "message": "...", "reconnect_after_ms": N}`.
    pub fn packet(&self, config: &Config) -> Frame {
        let mut body = serde_json::Map::new();
        body.insert("reason".into(), self.reason().into());
        match self {
            Disconnect::AuthFailed(m) | Disconnect::Protocol(m) => {
                body.insert("message".into(), m.as_str().into());
            }
            _ => {}
        }
        if let Some(after) = self.reconnect_after(config) {
            body.insert("reconnect_after_ms".into(), (after.as_millis() as u64).into());
        }
        let json = serde_json::Value::Object(body).to_string();
        Frame::push(Op::DisconnectReply.code(), Bytes::from(json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(d: Disconnect) -> serde_json::Value {
        let mut cfg = Config::default();
        cfg.disconnect.reconnect_min = Duration::from_secs(1);
        cfg.disconnect.reconnect_jitter = Duration::from_secs(4);
        cfg.drain.reconnect_min = Duration::from_millis(500);
        cfg.drain.reconnect_jitter = Duration::from_secs(2);
        let p = d.packet(&cfg);
        assert_eq!(p.op, 6);
        serde_json::from_slice(&p.body).unwrap()
    }

    #[test]
    fn shutdown_suggests_a_jittered_reconnect_within_bounds() {
        for _ in 0..50 {
            let v = body(Disconnect::Shutdown);
            assert_eq!(v["reason"], "shutdown");
            let ms = v["reconnect_after_ms"].as_u64().unwrap();
            assert!((1000..=5000).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn a_drain_suggests_a_reconnect_of_the_drain_floor_plus_a_uniform_jitter() {
        let hints: Vec<u64> =
            (0..200).map(|_| body(Disconnect::Drain)["reconnect_after_ms"].as_u64().unwrap()).collect();
        assert!(hints.iter().all(|ms| (500..=2500).contains(ms)), "{hints:?}");
        assert!(hints.iter().any(|ms| *ms < 1500) && hints.iter().any(|ms| *ms > 1500), "spread: {hints:?}");
        assert!(body(Disconnect::Drain)["reason"] == "drain");
    }

    #[test]
    fn a_refused_client_is_told_to_retry_after_the_admission_delay() {
        let mut cfg = Config::default();
        cfg.admission.retry_min = Duration::from_millis(500);
        cfg.admission.retry_jitter = Duration::from_millis(1500);
        for d in [Disconnect::RateLimited, Disconnect::TooManyConnections] {
            let hints: Vec<u64> = (0..200)
                .map(|_| {
                    let v: serde_json::Value = serde_json::from_slice(&d.packet(&cfg).body).unwrap();
                    assert_eq!(v["reason"], d.reason());
                    v["reconnect_after_ms"].as_u64().unwrap()
                })
                .collect();
            assert!(hints.iter().all(|ms| (500..=2000).contains(ms)), "{hints:?}");
            assert!(hints.iter().any(|ms| *ms != hints[0]), "jittered: {hints:?}");
        }
    }

    #[test]
    fn auth_failure_carries_its_message_and_no_reconnect_hint() {
        let v = body(Disconnect::AuthFailed("token expired".into()));
        assert_eq!(v["reason"], "auth_failed");
        assert_eq!(v["message"], "token expired");
        assert!(v.get("reconnect_after_ms").is_none());
    }
}
