//! The in-memory [`Store`] of the embedded setup: the same semantics as Redis, TTLs included.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use goim_api::Online;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Dropped, Error, Store};

/// goim's `redis.expire`.
const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);

/// Sessions in process memory. Never fails.
///
/// Expired entries are invisible at once and are swept out at most once per TTL, from inside a
/// write, so that mappings of comets that died without disconnecting do not pile up.
#[derive(Debug)]
pub struct MemoryStore {
    ttl: Duration,
    /// Fixed for the store's life: its contents live exactly as long as the process.
    epoch: String,
    /// Every operation is a few map lookups, never held across an await.
    inner: Mutex<Inner>,
}

/// One entry per connection in `keys` and (for a user) `mids`, so this is lean: comet ids are
/// shared, and a user's keys are a list rather than a map of their own (issue #5: memory per
/// connection).
#[derive(Debug)]
struct Inner {
    keys: HashMap<String, Expiring<Arc<str>>>,
    mids: HashMap<i64, Expiring<MidKeys>>,
    online: HashMap<String, Expiring<(Online, SystemTime)>>,
    /// The comet ids the mappings name, each stored once.
    servers: HashSet<Arc<str>>,
    last_sweep: Instant,
}

/// A user's keys with their comets. A user has a handful of connections: a list, not a map.
type MidKeys = Vec<(String, Arc<str>)>;

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires: Instant,
}

impl<T> Expiring<T> {
    fn alive(&self, now: Instant) -> bool {
        now < self.expires
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new(DEFAULT_TTL)
    }
}

impl MemoryStore {
    /// A store whose mappings and online records live `ttl` after their last refresh.
    pub fn new(ttl: Duration) -> MemoryStore {
        let inner = Inner {
            keys: HashMap::new(),
            mids: HashMap::new(),
            online: HashMap::new(),
            servers: HashSet::new(),
            last_sweep: Instant::now(),
        };
        MemoryStore { ttl, epoch: uuid::Uuid::new_v4().simple().to_string(), inner: Mutex::new(inner) }
    }

    /// Live key mappings (for tests and diagnostics).
    pub fn mapping_count(&self) -> usize {
        let now = Instant::now();
        self.inner.lock().keys.values().filter(|e| e.alive(now)).count()
    }
}

impl Inner {
    fn sweep_if_due(&mut self, now: Instant, ttl: Duration) {
        if now < self.last_sweep + ttl {
            return;
        }
        self.last_sweep = now;
        self.keys.retain(|_, e| e.alive(now));
        self.mids.retain(|_, e| e.alive(now));
        self.online.retain(|_, e| e.alive(now));
        self.servers.retain(|s| Arc::strong_count(s) > 1);
    }

    /// The live key set of `mid`, if any.
    fn mid_keys(&mut self, mid: i64, now: Instant) -> Option<&mut Expiring<MidKeys>> {
        self.mids.get_mut(&mid).filter(|e| e.alive(now))
    }

    /// `server`, shared with every other mapping that names it.
    fn intern(&mut self, server: &str) -> Arc<str> {
        if let Some(s) = self.servers.get(server) {
            return s.clone();
        }
        let s: Arc<str> = server.into();
        self.servers.insert(s.clone());
        s
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn add_mapping(&self, mid: i64, key: &str, server: &str) -> Result<(), Error> {
        let now = Instant::now();
        let expires = now + self.ttl;
        let mut inner = self.inner.lock();
        inner.sweep_if_due(now, self.ttl);
        let server = inner.intern(server);
        if mid > 0 {
            let entry = inner.mids.entry(mid).or_insert_with(|| Expiring { value: Vec::new(), expires });
            if !entry.alive(now) {
                entry.value.clear();
            }
            match entry.value.iter_mut().find(|(k, _)| k == key) {
                Some((_, s)) => *s = server.clone(),
                None => {
                    // Most users have one connection: room for exactly it, not the default four.
                    entry.value.reserve_exact(1);
                    entry.value.push((key.to_owned(), server.clone()));
                }
            }
            entry.expires = expires;
        }
        inner.keys.insert(key.to_owned(), Expiring { value: server, expires });
        Ok(())
    }

    async fn expire_mapping(&self, mid: i64, key: &str, _server: &str) -> Result<bool, Error> {
        let now = Instant::now();
        let expires = now + self.ttl;
        let mut inner = self.inner.lock();
        if mid > 0
            && let Some(entry) = inner.mid_keys(mid, now)
        {
            entry.expires = expires;
        }
        match inner.keys.get_mut(key).filter(|e| e.alive(now)) {
            Some(entry) => {
                entry.expires = expires;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn del_mapping(&self, mid: i64, key: &str, server: &str) -> Result<bool, Error> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if mid > 0
            && let Some(entry) = inner.mid_keys(mid, now)
            && let Some(at) = entry.value.iter().position(|(k, s)| k == key && &**s == server)
        {
            entry.value.swap_remove(at);
            if entry.value.is_empty() {
                inner.mids.remove(&mid);
            }
        }
        let current = inner.keys.get(key).is_some_and(|e| e.alive(now) && &*e.value == server);
        if current {
            inner.keys.remove(key);
        }
        Ok(current)
    }

    async fn servers_by_keys(&self, keys: &[String]) -> Result<Vec<Option<String>>, Error> {
        let now = Instant::now();
        let inner = self.inner.lock();
        Ok(keys
            .iter()
            .map(|k| inner.keys.get(k).filter(|e| e.alive(now)).map(|e| e.value.to_string()))
            .collect())
    }

    async fn keys_by_mids(&self, mids: &[i64]) -> Result<(HashMap<String, String>, Vec<i64>), Error> {
        let now = Instant::now();
        let inner = self.inner.lock();
        let mut keys = HashMap::new();
        let mut online = Vec::new();
        let mut seen = HashSet::new();
        for &mid in mids {
            if !seen.insert(mid) {
                continue;
            }
            if let Some(entry) = inner.mids.get(&mid).filter(|e| e.alive(now) && !e.value.is_empty()) {
                keys.extend(entry.value.iter().map(|(k, s)| (k.clone(), s.to_string())));
                online.push(mid);
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
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.sweep_if_due(now, self.ttl);
        let record = Expiring { value: (online.clone(), updated), expires: now + self.ttl };
        inner.online.insert(server.to_owned(), record);
        Ok(())
    }

    async fn server_online(&self, server: &str) -> Result<Option<(Online, SystemTime)>, Error> {
        let now = Instant::now();
        let inner = self.inner.lock();
        Ok(inner.online.get(server).filter(|e| e.alive(now)).map(|e| e.value.clone()))
    }

    async fn del_server_online(&self, server: &str) -> Result<(), Error> {
        self.inner.lock().online.remove(server);
        Ok(())
    }

    /// One pass over the maps under the lock, deleting every route of `server` whatever `max`
    /// says: pacing exists for a remote store's round trips, and in memory a page would cost the
    /// same full pass as the whole job.
    async fn drop_server(&self, server: &str, _max: usize) -> Result<Dropped, Error> {
        let mut inner = self.inner.lock();
        let before = inner.keys.len();
        inner.keys.retain(|_, e| &*e.value != server);
        let routes = before - inner.keys.len();
        inner.mids.retain(|_, e| {
            e.value.retain(|(_, s)| &**s != server);
            !e.value.is_empty()
        });
        inner.servers.retain(|s| &**s != server || Arc::strong_count(s) > 1);
        Ok(Dropped { routes, more: false })
    }

    async fn servers(&self) -> Result<Vec<String>, Error> {
        let now = Instant::now();
        let inner = self.inner.lock();
        let mut servers: Vec<String> =
            inner.online.iter().filter(|(_, e)| e.alive(now)).map(|(s, _)| s.clone()).collect();
        servers.sort();
        Ok(servers)
    }

    async fn epoch(&self) -> Result<String, Error> {
        Ok(self.epoch.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn memory_store_passes_the_store_contract() {
        crate::store::contract::store_contract(MemoryStore::default()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_mapping_expires_after_the_ttl_without_a_refresh() {
        let store = MemoryStore::new(TTL);
        store.add_mapping(7, "k", "comet-a").await.unwrap();
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert_eq!(store.servers_by_keys(&keys(&["k"])).await.unwrap(), vec![Some("comet-a".into())]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.servers_by_keys(&keys(&["k"])).await.unwrap(), vec![None]);
        assert!(store.keys_by_mids(&[7]).await.unwrap().0.is_empty());
        assert!(!store.expire_mapping(7, "k", "comet-a").await.unwrap(), "expired mapping reported alive");
    }

    #[tokio::test(start_paused = true)]
    async fn expire_mapping_restarts_the_ttl_of_key_and_mid() {
        let store = MemoryStore::new(TTL);
        store.add_mapping(7, "k", "comet-a").await.unwrap();
        tokio::time::advance(TTL / 2).await;
        assert!(store.expire_mapping(7, "k", "comet-a").await.unwrap());
        tokio::time::advance(TTL / 2 + Duration::from_secs(1)).await;
        assert_eq!(store.servers_by_keys(&keys(&["k"])).await.unwrap(), vec![Some("comet-a".into())]);
        assert_eq!(store.keys_by_mids(&[7]).await.unwrap().1, vec![7]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_mid_set_does_not_resurrect_old_keys_on_add() {
        let store = MemoryStore::new(TTL);
        store.add_mapping(7, "old", "comet-a").await.unwrap();
        tokio::time::advance(TTL).await;
        store.add_mapping(7, "new", "comet-b").await.unwrap();
        let (found, _) = store.keys_by_mids(&[7]).await.unwrap();
        assert_eq!(found, HashMap::from([("new".to_string(), "comet-b".to_string())]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_id_is_stored_once_and_forgotten_after_its_last_mapping() {
        let store = MemoryStore::new(TTL);
        store.add_mapping(7, "a", "comet-a").await.unwrap();
        store.add_mapping(8, "b", "comet-a").await.unwrap();
        {
            let inner = store.inner.lock();
            assert_eq!(inner.servers.len(), 1);
            assert!(Arc::ptr_eq(&inner.keys["a"].value, &inner.keys["b"].value));
            assert!(Arc::ptr_eq(&inner.keys["a"].value, &inner.mids[&7].value[0].1));
        }
        tokio::time::advance(TTL).await;
        store.add_mapping(9, "c", "comet-b").await.unwrap(); // sweeps the expired mappings
        let inner = store.inner.lock();
        assert_eq!(inner.servers.iter().map(|s| &**s).collect::<Vec<_>>(), ["comet-b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn online_records_expire_after_the_ttl() {
        let store = MemoryStore::new(TTL);
        let online = Online { server: "comet-a".into(), ..Online::default() };
        store.add_server_online("comet-a", &online, SystemTime::now()).await.unwrap();
        tokio::time::advance(TTL).await;
        assert_eq!(store.server_online("comet-a").await.unwrap(), None);
        assert!(store.servers().await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_on_a_later_write() {
        let store = MemoryStore::new(TTL);
        for i in 0..10 {
            store.add_mapping(i, &format!("k{i}"), "comet-a").await.unwrap();
        }
        tokio::time::advance(TTL).await;
        store.add_mapping(99, "fresh", "comet-a").await.unwrap();
        let inner = store.inner.lock();
        assert_eq!(inner.keys.len(), 1);
        assert_eq!(inner.mids.len(), 1);
    }
}
