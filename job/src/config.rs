//! job's configuration: room batching and comet dispatch.
//!
//! ```toml
//! [room]
//! batch = 20                 # packets per batch
//! max_delay = "20ms"         # a push to a room idle this long goes out at once; later ones wait for
//!                            # `batch` packets or this long after the room's last flush (at most 1s)
//! max_rooms_pending = 100000 # rooms tracked; past it the oldest is forgotten, its batch flushed early
//!
//! [dispatch]
//! timeout = "5s"             # deadline of one comet call
//! retries = 3                # retries of an Unavailable or timed-out call
//! max_in_flight = 1024       # dispatches started or queued; past it job stops receiving
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest `room.max_delay` allowed. goim waits a fixed 1 s, a known complaint (goim #252);
/// anything longer is a misconfiguration, not a tuning.
pub const MAX_ROOM_DELAY: Duration = Duration::from_secs(1);

/// The most retries allowed: the backoff doubles per retry, so more would wait for minutes.
pub const MAX_RETRIES: u32 = 10;

/// A configuration value that cannot work. `field` is its dotted TOML path.
pub type Error = goim_kit::Invalid;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub room: RoomConfig,
    pub dispatch: DispatchConfig,
}

/// Room batching: a room's packets are collected into one op-9 body and sent to every comet at once.
///
/// The rule is Nagle's. A push to an idle room (no flush within the last `max_delay`) is flushed
/// at once, as a batch of one, so a lone message never waits. Pushes that arrive within
/// `max_delay` of the room's last flush (a burst) are batched: the batch flushes when it holds
/// `batch` packets, or `max_delay` after that last flush, whichever comes first. A room thus
/// flushes a partial batch at most once per `max_delay`, no packet waits longer than `max_delay`,
/// and a room's packets always leave in push order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomConfig {
    /// Packets per batch; a batch flushes as soon as it holds this many. Default 20 (goim's).
    pub batch: usize,
    /// How long after a room's flush its next pushes are batched rather than flushed at once, and
    /// so the longest a batched packet waits. Default 20 ms; at most 1 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Rooms tracked: those that flushed within the last `max_delay`, with their open batches.
    /// Tracking one more forgets the one with the oldest flush, flushing its open batch early,
    /// so memory stays bounded however many rooms are pushed to. Default 100,000.
    pub max_rooms_pending: usize,
}

impl Default for RoomConfig {
    fn default() -> RoomConfig {
        RoomConfig { batch: 20, max_delay: Duration::from_millis(20), max_rooms_pending: 100_000 }
    }
}

/// Calls to comets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// The deadline of one call to one comet. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How many times a call that found the comet unavailable or timed out is retried, after
    /// 50 ms, 100 ms, 200 ms, ... Default 3.
    pub retries: u32,
    /// Dispatches started or waiting behind an earlier one of the same room (or comet, for key
    /// pushes). When this many are pending, job stops receiving until one completes. Default 1024.
    pub max_in_flight: usize,
}

impl Default for DispatchConfig {
    fn default() -> DispatchConfig {
        DispatchConfig { timeout: Duration::from_secs(5), retries: 3, max_in_flight: 1024 }
    }
}

impl Config {
    /// Checks every field; the error names the first that cannot work.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &str, reason: &str| Err(Error::new(field, reason));
        if self.room.batch == 0 {
            return invalid("room.batch", "must be at least 1");
        }
        if self.room.max_delay.is_zero() {
            return invalid("room.max_delay", "must be greater than 0");
        }
        if self.room.max_delay > MAX_ROOM_DELAY {
            return invalid("room.max_delay", "must be at most 1s");
        }
        if self.room.max_rooms_pending == 0 {
            return invalid("room.max_rooms_pending", "must be at least 1");
        }
        if self.dispatch.timeout.is_zero() {
            return invalid("dispatch.timeout", "must be greater than 0");
        }
        if self.dispatch.retries > MAX_RETRIES {
            return Err(Error::new("dispatch.retries", format!("must be at most {MAX_RETRIES}")));
        }
        if self.dispatch.max_in_flight == 0 {
            return invalid("dispatch.max_in_flight", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &Config) -> String {
        config.validate().expect_err("config should be invalid").field
    }

    #[test]
    fn defaults_are_valid_and_match_the_documented_values() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.room.batch, 20);
        assert_eq!(config.room.max_delay, Duration::from_millis(20));
        assert_eq!(config.room.max_rooms_pending, 100_000);
        assert_eq!(config.dispatch.timeout, Duration::from_secs(5));
        assert_eq!(config.dispatch.retries, 3);
        assert_eq!(config.dispatch.max_in_flight, 1024);
    }

    #[test]
    fn an_empty_document_gives_the_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn durations_are_read_in_humantime_form() {
        let config: Config =
            toml::from_str("[room]\nmax_delay = \"5ms\"\n[dispatch]\ntimeout = \"1m\"\nretries = 0\n")
                .unwrap();
        assert_eq!(config.room.max_delay, Duration::from_millis(5));
        assert_eq!(config.room.batch, 20, "unset fields keep their default");
        assert_eq!(config.dispatch.timeout, Duration::from_secs(60));
        assert_eq!(config.dispatch.retries, 0);
        config.validate().unwrap();
    }

    #[test]
    fn the_written_form_reads_back_equal() {
        let config = Config::default();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), config);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<Config>("[room]\nsignal = \"1s\"\n").is_err());
        assert!(toml::from_str::<Config>("routine_size = 32\n").is_err());
    }

    #[test]
    fn each_invalid_value_is_reported_with_its_field() {
        let mut c = Config::default();
        c.room.batch = 0;
        assert_eq!(field_of(&c), "room.batch");

        let mut c = Config::default();
        c.room.max_delay = Duration::ZERO;
        assert_eq!(field_of(&c), "room.max_delay");

        let mut c = Config::default();
        c.room.max_delay = Duration::from_millis(1001);
        assert_eq!(field_of(&c), "room.max_delay");

        let mut c = Config::default();
        c.room.max_rooms_pending = 0;
        assert_eq!(field_of(&c), "room.max_rooms_pending");

        let mut c = Config::default();
        c.dispatch.timeout = Duration::ZERO;
        assert_eq!(field_of(&c), "dispatch.timeout");

        let mut c = Config::default();
        c.dispatch.retries = MAX_RETRIES + 1;
        assert_eq!(field_of(&c), "dispatch.retries");

        let mut c = Config::default();
        c.dispatch.max_in_flight = 0;
        assert_eq!(field_of(&c), "dispatch.max_in_flight");
    }

    #[test]
    fn a_one_second_delay_is_the_longest_allowed() {
        let mut c = Config::default();
        c.room.max_delay = MAX_ROOM_DELAY;
        c.validate().unwrap();
    }

    #[test]
    fn the_message_starts_with_the_field() {
        let mut c = Config::default();
        c.room.batch = 0;
        assert_eq!(c.validate().unwrap_err().to_string(), "room.batch: must be at least 1");
    }
}
