//! Which session store logic uses: the `[store]` table.
//!
//! ```toml
//! [store]
//! kind = "redis"                        # "memory" (default, embedded) or "redis"
//!
//! [store.redis]
//! url = "redis://127.0.0.1:6379/0"      # redis://[user:password@]host:port/db
//! timeout = "1s"                        # deadline of every store call, reconnecting included
//! pool = 4                              # multiplexed connections, used round-robin
//! ```
//!
//! The mapping TTL is `session.mapping_ttl` (goim's `redis.expire`), not a store setting: the
//! memory store honours it too.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Error;

/// The `[store]` table. Field names in [`StoreConfig::validate`]'s errors assume it sits at
/// `store` in the tier's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Used when `kind = "redis"`.
    pub redis: RedisConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// [`crate::MemoryStore`]: sessions in this process only (the embedded setup).
    #[default]
    Memory,
    /// [`crate::store::RedisStore`]: goim's Redis layout, shared by every logic instance.
    Redis,
}

/// `[store.redis]`: how [`crate::store::RedisStore`] reaches Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db` (or `rediss://` is refused: no TLS support is
    /// built in). Default `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Deadline of each store call, including reconnecting and one retry after a dropped
    /// connection. A call past it fails with [`crate::store::Error::Unavailable`]. Default 1s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Multiplexed connections, used round-robin. Each pipelines any number of concurrent
    /// calls; more than one spreads the reply parsing and survives one slow reply. Default 4.
    pub pool: usize,
}

/// The most pooled connections allowed; more only costs Redis file descriptors.
pub const MAX_REDIS_POOL: usize = 64;

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig { url: "redis://127.0.0.1:6379/0".into(), timeout: Duration::from_secs(1), pool: 4 }
    }
}

impl StoreConfig {
    /// Checks the table; the Redis settings only when `kind = "redis"`.
    pub fn validate(&self) -> Result<(), Error> {
        match self.kind {
            StoreKind::Memory => Ok(()),
            StoreKind::Redis => self.redis.validate(),
        }
    }
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), Error> {
        let err = |field, reason: String| Err(Error { field, reason });
        if !self.url.starts_with("redis://") {
            return err("store.redis.url", format!("{:?} must start with redis://", redact(&self.url)));
        }
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return err("store.redis.url", format!("{:?} is not a Redis URL ({e})", redact(&self.url)));
        }
        if self.timeout < Duration::from_millis(1) {
            return err("store.redis.timeout", "must be at least 1ms".into());
        }
        if self.pool == 0 || self.pool > MAX_REDIS_POOL {
            return err("store.redis.pool", format!("must be 1..={MAX_REDIS_POOL}, not {}", self.pool));
        }
        Ok(())
    }
}

/// The URL with any password replaced, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_is_the_memory_store_and_valid() {
        let config: StoreConfig = toml::from_str("").unwrap();
        assert_eq!(config, StoreConfig::default());
        assert_eq!(config.kind, StoreKind::Memory);
        config.validate().unwrap();
    }

    #[test]
    fn a_redis_table_parses_with_humantime_durations() {
        let config: StoreConfig = toml::from_str(
            "kind = \"redis\"\n[redis]\nurl = \"redis://10.0.0.1:6380/2\"\ntimeout = \"250ms\"\npool = 2\n",
        )
        .unwrap();
        assert_eq!(config.kind, StoreKind::Redis);
        assert_eq!(config.redis.timeout, Duration::from_millis(250));
        config.validate().unwrap();
    }

    #[test]
    fn a_misspelt_key_is_refused() {
        assert!(toml::from_str::<StoreConfig>("[redis]\nurl_ = \"redis://x\"\n").is_err());
    }

    #[test]
    fn invalid_redis_settings_name_their_field() {
        let bad = |f: fn(&mut RedisConfig)| {
            let mut config = StoreConfig { kind: StoreKind::Redis, redis: RedisConfig::default() };
            f(&mut config.redis);
            config.validate().unwrap_err().field
        };
        assert_eq!(bad(|c| c.url = "http://127.0.0.1".into()), "store.redis.url");
        assert_eq!(bad(|c| c.url = "redis://".into()), "store.redis.url");
        assert_eq!(bad(|c| c.timeout = Duration::ZERO), "store.redis.timeout");
        assert_eq!(bad(|c| c.pool = 0), "store.redis.pool");
    }

    #[test]
    fn redis_settings_are_not_checked_for_the_memory_store() {
        let config =
            StoreConfig { kind: StoreKind::Memory, redis: RedisConfig { pool: 0, ..RedisConfig::default() } };
        config.validate().unwrap();
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://user:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
