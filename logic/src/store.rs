//! The session-store port: which comet holds a connection key, which keys a user (mid) has, and
//! each comet's last online report.
//!
//! Modeled on goim's Redis DAO (`internal/logic/dao/redis.go`) so that a Redis implementation can
//! keep goim's key layout: `mid_<mid>` (hash key → server), `key_<key>` (string server) and
//! `ol_<server>` (the online record), all with a TTL refreshed on write.
//!
//! # Contract
//!
//! - Every call may wait on the network but must fail, not hang, when the backend is gone:
//!   implementations bound each call with a timeout and report it as [`Error::Unavailable`].
//! - An `Err` means nothing is known about whether the write happened; callers treat it as
//!   "not applied" and may retry. Reads never return partial results with `Ok`.
//! - Mappings expire after the implementation's TTL (goim: 30 minutes) unless
//!   [`Store::add_mapping`] or [`Store::expire_mapping`] refreshes them. Online records expire
//!   after the same TTL; staleness by `updated` is the caller's decision, not the store's.
//! - `mid <= 0` means "no user": only the key mapping is kept.
//! - Calls from one task are applied in order; there is no ordering across tasks beyond what each
//!   method documents (notably [`Store::del_mapping`]'s compare-and-delete).
//!
//! [`contract::store_contract`] checks all of this against any implementation.

mod config;
pub mod contract;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use goim_api::Online;

pub use config::{MAX_REDIS_POOL, RedisConfig, RedisTls, StoreConfig, StoreKind};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{EPOCH_KEY, RedisHistory, RedisStore, SERVERS_KEY, routes_key};

/// A store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The backend could not be reached or did not answer in time.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with data this version cannot read.
    #[error("session store returned unreadable data: {0}")]
    Corrupt(String),
}

/// What one [`Store::drop_server`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    /// Key mappings deleted (each with its mid entry).
    pub routes: usize,
    /// Whether routes naming the server may remain: call again.
    pub more: bool,
}

/// Session routing and online counts. See the module docs for the contract.
#[async_trait]
pub trait Store: Send + Sync {
    /// Records that connection `key` (of user `mid`, if > 0) is on comet `server`, replacing any
    /// earlier server for that key, and (re)starts the TTL of the key and of the mid's key set.
    async fn add_mapping(&self, mid: i64, key: &str, server: &str) -> Result<(), Error>;

    /// Restarts the TTL of `key` (and of `mid`'s key set). Returns `false` when the key mapping
    /// was already gone (expired or deleted), so the caller re-adds it. `server` is the comet that
    /// saw the heartbeat; the mapping is refreshed whichever server it names, as in goim.
    async fn expire_mapping(&self, mid: i64, key: &str, server: &str) -> Result<bool, Error>;

    /// Deletes the mapping of `key` (and `key` from `mid`'s set) only where it still names
    /// `server`: a late disconnect of an old connection must not delete the mapping of a newer
    /// connection with the same key on another comet. Atomic per key (Redis: one Lua script).
    /// Returns whether the key mapping was deleted.
    async fn del_mapping(&self, mid: i64, key: &str, server: &str) -> Result<bool, Error>;

    /// The comet of each key, in input order; `None` for an unknown or expired key. An empty
    /// input gives an empty output.
    async fn servers_by_keys(&self, keys: &[String]) -> Result<Vec<Option<String>>, Error>;

    /// All keys of the given users with their comets, and the users that have at least one key
    /// (each once, in input order).
    async fn keys_by_mids(&self, mids: &[i64]) -> Result<(HashMap<String, String>, Vec<i64>), Error>;

    /// Replaces comet `server`'s online record with `online`, stamped `updated`, and restarts its TTL.
    async fn add_server_online(
        &self,
        server: &str,
        online: &Online,
        updated: SystemTime,
    ) -> Result<(), Error>;

    /// Comet `server`'s last online record and its `updated` stamp (whole seconds at least), or
    /// `None` when there is none.
    async fn server_online(&self, server: &str) -> Result<Option<(Online, SystemTime)>, Error>;

    /// Deletes comet `server`'s online record; deleting a missing one is not an error.
    async fn del_server_online(&self, server: &str) -> Result<(), Error>;

    /// Deletes routes that name comet `server`: key mappings (and their mid entries) that still
    /// name it, compare-and-delete per key as [`Store::del_mapping`] does, so a key that moved to
    /// another comet keeps its newer mapping. Deletes at most about `max` per call so a caller can
    /// pace a large comet's cleanup; [`Dropped::more`] says whether to call again. For a comet
    /// that is gone for good (logic's sweep of comets that left discovery); a comet still
    /// serving would lose its routes until its sessions renew.
    async fn drop_server(&self, server: &str, max: usize) -> Result<Dropped, Error>;

    /// The comets that have an online record, sorted. Comets that stopped reporting age out
    /// after the TTL at the latest. (Redis: a sorted set beside goim's keys; see [`RedisStore`].)
    async fn servers(&self) -> Result<Vec<String>, Error>;

    /// The identity of the store's contents: the same text while its data lives, a new one once
    /// the data is gone (Redis restarted without persistence, or flushed). logic hands it to the
    /// comets with every online report, and a comet that sees it change re-registers its sessions,
    /// so routes come back in seconds rather than at the next session renewal.
    async fn epoch(&self) -> Result<String, Error>;
}
