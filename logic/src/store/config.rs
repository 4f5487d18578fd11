//! Which session store logic uses: the `[store]` table.
//!
//! ```toml
//! [store]
//! kind = "redis"                        # "memory" (default, embedded) or "redis"
//!
//! [store.redis]
//! url = "redis://127.0.0.1:6379/0"      # redis://[user:password@]host:port/db, or rediss:// (TLS)
//! timeout = "1s"                        # deadline of every store call, reconnecting included
//! pool = 4                              # multiplexed connections, used round-robin
//!
//! [store.redis.tls]                     # only with a rediss:// URL; every key optional
//! ca_file = "/etc/goim/redis/ca.crt"    # PEM CAs to check the server with (else the system's)
//! cert_file = "/etc/goim/redis/tls.crt" # PEM client certificate chain (Redis `tls-auth-clients`)
//! key_file = "/etc/goim/redis/tls.key"  # its PEM private key; with cert_file or not at all
//! ```
//!
//! The mapping TTL is `session.mapping_ttl` (goim's `redis.expire`), not a store setting: the
//! memory store honours it too.

use std::path::PathBuf;
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
    /// `redis://[user:password@]host:port/db`, or `rediss://` for TLS (checked against
    /// [`RedisTls::ca_file`] or the system's trust store; never unchecked). Default
    /// `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Deadline of each store call, including reconnecting and one retry after a dropped
    /// connection. A call past it fails with [`crate::store::Error::Unavailable`]. Default 1s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Multiplexed connections, used round-robin. Each pipelines any number of concurrent
    /// calls; more than one spreads the reply parsing and survives one slow reply. Default 4.
    pub pool: usize,
    /// `[store.redis.tls]`: certificates for a `rediss://` URL.
    pub tls: RedisTls,
}

/// `[store.redis.tls]`: the files a `rediss://` connection uses, read when logic connects (so a
/// Secret mounted after the config was checked is fine). Paths, not contents, so keys stay out
/// of the config file and of `--print-config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisTls {
    /// PEM CA certificates the server's certificate must chain to. Without it, the system's
    /// trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for a Redis with `tls-auth-clients yes` (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`; both or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl RedisTls {
    fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// The most pooled connections allowed; more only costs Redis file descriptors.
pub const MAX_REDIS_POOL: usize = 64;

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            timeout: Duration::from_secs(1),
            pool: 4,
            tls: RedisTls::default(),
        }
    }
}

impl StoreConfig {
    /// Checks the table; the Redis settings only when `kind = "redis"`.
    pub fn validate(&self) -> Result<(), Error> {
        match self.kind {
            StoreKind::Memory => Ok(()),
            StoreKind::Redis if cfg!(feature = "redis") => self.redis.validate(),
            StoreKind::Redis => Err(Error::new(
                "store.kind",
                "\"redis\" needs goim-logic built with the `redis` feature (on by default)",
            )),
        }
    }
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), Error> {
        let err = |field: &str, reason: String| Err(Error::new(field, reason));
        let tls = self.url.starts_with("rediss://");
        if !tls && !self.url.starts_with("redis://") {
            return err(
                "store.redis.url",
                format!("{:?} must start with redis:// or rediss://", redact(&self.url)),
            );
        }
        if tls && self.url.contains('#') {
            // The redis crate reads `#insecure` as "skip certificate checks"; this build never
            // skips them, and says so rather than ignoring the fragment.
            return err(
                "store.redis.url",
                format!(
                    "{:?}: a URL fragment (#insecure) is not supported; certificates are always checked \
                     (give store.redis.tls.ca_file for a private CA)",
                    redact(&self.url)
                ),
            );
        }
        #[cfg(feature = "redis")]
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return err("store.redis.url", format!("{:?} is not a Redis URL ({e})", redact(&self.url)));
        }
        if !tls && self.tls.is_set() {
            return err("store.redis.tls", "is used only with a rediss:// url".into());
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return err(
                if self.tls.cert_file.is_some() {
                    "store.redis.tls.key_file"
                } else {
                    "store.redis.tls.cert_file"
                },
                "cert_file and key_file go together (mutual TLS), or neither is set".into(),
            );
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
        assert_eq!(bad(|c| c.url = "rediss://127.0.0.1:6380/#insecure".into()), "store.redis.url");
        assert_eq!(bad(|c| c.tls.ca_file = Some("/ca.crt".into())), "store.redis.tls");
        let half_mtls = |c: &mut RedisConfig| {
            c.url = "rediss://127.0.0.1:6380/0".into();
            c.tls.cert_file = Some("/tls.crt".into());
        };
        assert_eq!(bad(half_mtls), "store.redis.tls.key_file");
    }

    #[test]
    fn a_rediss_table_parses_and_validates() {
        let config: StoreConfig = toml::from_str(
            "kind = \"redis\"\n[redis]\nurl = \"rediss://redis.example:6380/0\"\n\
             [redis.tls]\nca_file = \"/etc/goim/redis/ca.crt\"\n\
             cert_file = \"/etc/goim/redis/tls.crt\"\nkey_file = \"/etc/goim/redis/tls.key\"\n",
        )
        .unwrap();
        assert_eq!(config.redis.tls.ca_file.as_deref(), Some(std::path::Path::new("/etc/goim/redis/ca.crt")));
        config.validate().unwrap();
        // Without any file: the system's trust store.
        let system: StoreConfig =
            toml::from_str("kind = \"redis\"\n[redis]\nurl = \"rediss://redis.example:6380/0\"\n").unwrap();
        system.validate().unwrap();
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
