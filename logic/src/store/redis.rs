//! The Redis [`Store`]: goim's key layout (reference §1.3), so goim's Go logic and goim-rs can
//! read each other's sessions.
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `mid_<mid>` | hash | connection key → server (only for `mid > 0`) | mapping TTL, refreshed by add/expire |
//! | `key_<key>` | string | server | mapping TTL, refreshed by add/expire |
//! | `ol_<server>` | hash | shard "0".."63" → goim's online JSON (see `online`) | mapping TTL, restarted on each report |
//! | `goim_rs_online_servers` | sorted set | server, scored by its last report (unix seconds) | none; members older than the TTL are trimmed |
//! | `goim_rs_routes_<server>` | set | `<mid>:<key>` of each connection added on that comet | mapping TTL, refreshed by add and by that comet's heartbeats |
//!
//! Differences from goim, all invisible to a Go reader:
//! - `del_mapping` is one Lua script that deletes `key_<key>` and the `mid_<mid>` field only while
//!   they still name the disconnecting server (goim deletes unconditionally, so a late disconnect
//!   of an old connection deletes a newer connection's mapping).
//! - A report replaces the whole `ol_<server>` hash in one transaction (goim leaves shards that
//!   emptied with their old counts), and the JSON carries `conn_count` and `ip_count`.
//! - `servers()` reads the sorted set instead of discovery, and never SCANs the keyspace, which
//!   holds two keys per connection. Servers that stopped reporting age out of it after the TTL.
//! - `goim_rs_routes_<server>` indexes each comet's connections, so that the routes of a dead
//!   comet can be deleted (`drop_server`) without a SCAN: `SPOP` a page of members, then delete
//!   each `key_`/`mid_` entry that still names that comet (one Lua script per page). A member may
//!   outlive its route (the key reconnected elsewhere without a disconnect); the compare makes it
//!   harmless. Routes written before this index existed, or by goim's Go logic, are not in it and
//!   expire by TTL as before.
//!
//! Every call runs under `timeout`, and a call that met a dropped connection (Redis restarted) is
//! tried once more on a fresh one, within the same deadline; every command here is idempotent.
//! Connections reconnect on their own, so the store recovers without a restart.

mod history;
mod online;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use goim_api::Online;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script};
use tokio::time::{Instant, timeout_at};

use super::config::{RedisConfig, redact};
use super::{Dropped, Error, Store};

pub use history::RedisHistory;

/// The client for `config.url`: with `rediss://`, TLS with `[store.redis.tls]`'s files (read
/// now, so a missing or unreadable file fails the start with its path).
fn client(config: &RedisConfig) -> Result<redis::Client, Error> {
    let url = redact(&config.url);
    let invalid = |e: RedisError| Error::Unavailable(format!("invalid redis url {url}: {e}"));
    if !config.url.starts_with("rediss://") {
        return redis::Client::open(config.url.as_str()).map_err(invalid);
    }
    let read = |field: &str, path: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>, Error> {
        path.as_ref()
            .map(|p| {
                std::fs::read(p).map_err(|e| {
                    Error::Unavailable(format!("cannot read store.redis.tls.{field} {}: {e}", p.display()))
                })
            })
            .transpose()
    };
    let root_cert = read("ca_file", &config.tls.ca_file)?;
    let client_tls =
        match (read("cert_file", &config.tls.cert_file)?, read("key_file", &config.tls.key_file)?) {
            (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig { client_cert, client_key }),
            _ => None,
        };
    redis::Client::build_with_tls(config.url.as_str(), redis::TlsCertificates { client_tls, root_cert })
        .map_err(|e| Error::Unavailable(format!("redis TLS settings for {url}: {e}")))
}

/// goim's `redis.expire`.
const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);

/// The sorted set of servers with an online record. Outside goim's `mid_`/`key_`/`ol_` prefixes,
/// so no comet name can collide with it.
pub const SERVERS_KEY: &str = "goim_rs_online_servers";

/// The store's epoch ([`Store::epoch`]): a random id written once, without TTL. It vanishes with
/// the data (a restart without persistence, FLUSHALL), and the next reader writes a new one. A
/// failover to a replica that has the data keeps it, so comets do not re-register for nothing.
pub const EPOCH_KEY: &str = "goim_rs_store_epoch";

/// Returns KEYS[1], first setting it to ARGV[1] when it is missing: one round trip, and two
/// logic instances racing after a restart agree on the one that was written first.
const EPOCH: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1])
  v = ARGV[1]
end
return v
";

/// Deletes `key_<key>` (KEYS[1]) and field `<key>` (ARGV[1]) of `mid_<mid>` (KEYS[2], absent for
/// mid 0), each only while it names server ARGV[2], and member ARGV[3] from that server's route
/// set (KEYS[2]). Returns 1 when the key mapping was deleted.
const DEL_MAPPING: &str = r"
local deleted = 0
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  deleted = 1
end
redis.call('SREM', KEYS[2], ARGV[3])
if KEYS[3] and redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return deleted
";

/// Pops up to ARGV[2] members `<mid>:<key>` of server ARGV[1]'s route set (KEYS[1]) and deletes
/// `key_<key>` and field `<key>` of `mid_<mid>` where they still name that server. Returns
/// `{deleted key mappings, members left}`. It builds the `key_`/`mid_` names itself (not passed
/// as KEYS): goim's layout is single-instance Redis, not Cluster, so that is allowed, and it keeps
/// a page one round trip.
const DROP_SERVER: &str = r"
local members = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
local deleted = 0
for _, m in ipairs(members) do
  local sep = string.find(m, ':', 1, true)
  if sep then
    local mid = string.sub(m, 1, sep - 1)
    local key = string.sub(m, sep + 1)
    if redis.call('GET', 'key_' .. key) == ARGV[1] then
      redis.call('DEL', 'key_' .. key)
      deleted = deleted + 1
    end
    if mid ~= '0' and redis.call('HGET', 'mid_' .. mid, key) == ARGV[1] then
      redis.call('HDEL', 'mid_' .. mid, key)
    end
  end
end
return {deleted, redis.call('SCARD', KEYS[1])}
";

/// Sessions in Redis. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct RedisStore {
    /// Multiplexed connections; each clone of a manager shares its connection.
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    timeout: Duration,
    ttl: Duration,
    del_mapping: Script,
    drop_server: Script,
    epoch: Script,
    /// For errors, password redacted.
    url: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("pool", &self.pool.len())
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl RedisStore {
    /// Opens `config.pool` connections, each within `config.timeout`. Fails with
    /// [`Error::Unavailable`] when Redis cannot be reached, so a misconfigured URL shows at startup.
    /// Mappings live 30 minutes (goim's default) unless [`RedisStore::with_ttl`] says otherwise.
    pub async fn connect(config: &RedisConfig) -> Result<RedisStore, Error> {
        let url = redact(&config.url);
        let client = client(config)?;
        // The manager's own reconnect backoff stays well inside one call's timeout; a call that
        // finds it still failing fails, and the next call starts a new attempt.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let mut pool = Vec::with_capacity(config.pool);
        for _ in 0..config.pool.max(1) {
            let connect = ConnectionManager::new_with_config(client.clone(), manager_config.clone());
            let manager = match tokio::time::timeout(config.timeout, connect).await {
                Ok(Ok(manager)) => manager,
                Ok(Err(e)) => {
                    return Err(Error::Unavailable(format!("cannot connect to redis at {url}: {e}")));
                }
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "cannot connect to redis at {url}: no answer within {:?}",
                        config.timeout
                    )));
                }
            };
            pool.push(manager);
        }
        tracing::info!(url = %url, pool = pool.len(), timeout = ?config.timeout, "connected to redis");
        Ok(RedisStore {
            pool,
            next: AtomicUsize::new(0),
            timeout: config.timeout,
            ttl: DEFAULT_TTL,
            del_mapping: Script::new(DEL_MAPPING),
            drop_server: Script::new(DROP_SERVER),
            epoch: Script::new(EPOCH),
            url,
        })
    }

    /// Sets the TTL of mappings and online records (logic's `session.mapping_ttl`); whole
    /// seconds, at least one.
    pub fn with_ttl(mut self, ttl: Duration) -> RedisStore {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].clone()
    }

    /// Runs `f` on a pooled connection under the call deadline, once more after a dropped
    /// connection, and maps the error. `op` names the call in errors.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, Error>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let attempts = async {
            match f(self.conn()).await {
                Err(e) if is_dropped(&e) => {
                    tracing::debug!(error = %e, op, "redis connection dropped; retrying once");
                    f(self.conn()).await
                }
                other => other,
            }
        };
        match timeout_at(deadline, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(op, &e)),
            Err(_) => Err(Error::Unavailable(format!(
                "redis {op} at {} timed out after {:?}",
                self.url, self.timeout
            ))),
        }
    }

    fn error(&self, op: &str, e: &RedisError) -> Error {
        match e.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
                Error::Corrupt(format!("redis {op} at {}: {e}", self.url))
            }
            _ if e.code() == Some("WRONGTYPE") => Error::Corrupt(format!("redis {op} at {}: {e}", self.url)),
            _ => Error::Unavailable(format!("redis {op} at {}: {e}", self.url)),
        }
    }
}

/// The connection went away under the command: worth one retry on a fresh one.
fn is_dropped(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_unrecoverable_error())
}

fn key_key(key: &str) -> String {
    format!("key_{key}")
}

fn mid_key(mid: i64) -> String {
    format!("mid_{mid}")
}

/// The set of `<mid>:<key>` routes added on comet `server` (see the module docs).
pub fn routes_key(server: &str) -> String {
    format!("goim_rs_routes_{server}")
}

/// A member of [`routes_key`]: the mid first, which has no `:`, so a key may contain one.
fn route_member(mid: i64, key: &str) -> String {
    format!("{}:{key}", mid.max(0))
}

fn online_key(server: &str) -> String {
    format!("ol_{server}")
}

#[async_trait]
impl Store for RedisStore {
    async fn add_mapping(&self, mid: i64, key: &str, server: &str) -> Result<(), Error> {
        let ttl = self.ttl_secs();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if mid > 0 {
            pipe.cmd("HSET").arg(mid_key(mid)).arg(key).arg(server).ignore();
            pipe.cmd("EXPIRE").arg(mid_key(mid)).arg(ttl).ignore();
        }
        pipe.cmd("SET").arg(key_key(key)).arg(server).arg("EX").arg(ttl).ignore();
        pipe.cmd("SADD").arg(routes_key(server)).arg(route_member(mid, key)).ignore();
        pipe.cmd("EXPIRE").arg(routes_key(server)).arg(ttl).ignore();
        self.call("add_mapping", |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn expire_mapping(&self, mid: i64, key: &str, server: &str) -> Result<bool, Error> {
        let ttl = self.ttl_secs();
        let mut pipe = redis::pipe();
        if mid > 0 {
            pipe.cmd("EXPIRE").arg(mid_key(mid)).arg(ttl).ignore();
        }
        // The comet's route set lives as long as its freshest connection.
        pipe.cmd("EXPIRE").arg(routes_key(server)).arg(ttl).ignore();
        pipe.cmd("EXPIRE").arg(key_key(key)).arg(ttl);
        let (alive,): (bool,) = self
            .call("expire_mapping", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        Ok(alive)
    }

    async fn del_mapping(&self, mid: i64, key: &str, server: &str) -> Result<bool, Error> {
        let mut invocation = self.del_mapping.key(key_key(key));
        invocation.key(routes_key(server));
        if mid > 0 {
            invocation.key(mid_key(mid));
        }
        invocation.arg(key).arg(server).arg(route_member(mid, key));
        let deleted: i64 = self
            .call("del_mapping", |mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(deleted == 1)
    }

    async fn servers_by_keys(&self, keys: &[String]) -> Result<Vec<Option<String>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(key_key(key));
        }
        self.call("servers_by_keys", |mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    async fn keys_by_mids(&self, mids: &[i64]) -> Result<(HashMap<String, String>, Vec<i64>), Error> {
        let mut seen = HashSet::new();
        let mids: Vec<i64> = mids.iter().copied().filter(|&m| m > 0 && seen.insert(m)).collect();
        if mids.is_empty() {
            return Ok((HashMap::new(), Vec::new()));
        }
        let mut pipe = redis::pipe();
        for &mid in &mids {
            pipe.cmd("HGETALL").arg(mid_key(mid));
        }
        let sets: Vec<HashMap<String, String>> = self
            .call("keys_by_mids", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let mut keys = HashMap::new();
        let mut online = Vec::new();
        for (mid, set) in mids.into_iter().zip(sets) {
            if !set.is_empty() {
                online.push(mid);
                keys.extend(set);
            }
        }
        Ok((keys, online))
    }

    async fn add_server_online(
        &self,
        server: &str,
        online: &Online,
        updated: SystemTime,
    ) -> Result<(), Error> {
        let key = online_key(server);
        let stamp = online::unix_seconds(updated);
        let oldest = online::unix_seconds(SystemTime::now()).saturating_sub(self.ttl_secs());
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("DEL").arg(&key).ignore();
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        for (field, json) in online::encode(server, online, updated) {
            hset.arg(field).arg(json);
        }
        pipe.add_command(hset).ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(self.ttl_secs()).ignore();
        pipe.cmd("ZADD").arg(SERVERS_KEY).arg(stamp).arg(server).ignore();
        // Servers that stopped reporting (and whose `ol_` key expired) age out here.
        pipe.cmd("ZREMRANGEBYSCORE").arg(SERVERS_KEY).arg("-inf").arg(format!("({oldest}")).ignore();
        self.call("add_server_online", |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn server_online(&self, server: &str) -> Result<Option<(Online, SystemTime)>, Error> {
        let key = online_key(server);
        let fields: HashMap<String, String> = self
            .call("server_online", |mut c| {
                let key = &key;
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await }
            })
            .await?;
        online::decode(server, fields)
    }

    async fn del_server_online(&self, server: &str) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("DEL").arg(online_key(server)).ignore();
        pipe.cmd("ZREM").arg(SERVERS_KEY).arg(server).ignore();
        self.call("del_server_online", |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn drop_server(&self, server: &str, max: usize) -> Result<Dropped, Error> {
        let mut invocation = self.drop_server.key(routes_key(server));
        invocation.arg(server).arg(max.max(1));
        let (deleted, left): (usize, usize) = self
            .call("drop_server", |mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(Dropped { routes: deleted, more: left > 0 })
    }

    async fn servers(&self) -> Result<Vec<String>, Error> {
        let oldest = online::unix_seconds(SystemTime::now()).saturating_sub(self.ttl_secs());
        let mut servers: Vec<String> = self
            .call("servers", |mut c| async move {
                redis::cmd("ZRANGEBYSCORE").arg(SERVERS_KEY).arg(oldest).arg("+inf").query_async(&mut c).await
            })
            .await?;
        servers.sort();
        Ok(servers)
    }

    async fn epoch(&self) -> Result<String, Error> {
        let mut invocation = self.epoch.key(EPOCH_KEY);
        invocation.arg(uuid::Uuid::new_v4().simple().to_string());
        self.call("epoch", |mut c| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut c).await }
        })
        .await
    }
}
