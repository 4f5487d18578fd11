//! Pushes: resolve keys and mids to comets, then publish one [`PushMsg`] per comet (goim), or one
//! per room or broadcast.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use goim_api::{PushKind, PushMsg};

use super::{Error, Logic};

impl Logic {
    /// Pushes `msg` as op `op` to connection keys. Keys on the same comet share one message;
    /// unknown and empty keys are skipped. Returns the number of messages published.
    pub async fn push_keys(&self, op: i32, keys: Vec<String>, msg: Bytes) -> Result<usize, Error> {
        let result = self.push_keys_inner(op, keys, msg).await;
        self.count("keys", &result);
        result
    }

    /// Pushes `msg` to every connection of the users `mids`. Returns the number of messages
    /// published (0 when none of them is online).
    pub async fn push_mids(&self, op: i32, mids: Vec<i64>, msg: Bytes) -> Result<usize, Error> {
        let result = self.push_mids_inner(op, mids, msg).await;
        self.count("mids", &result);
        result
    }

    /// Pushes `msg` to room `room_type://room` on every comet.
    pub async fn push_room(&self, op: i32, room_type: &str, room: &str, msg: Bytes) -> Result<usize, Error> {
        let result = async {
            if room_type.is_empty() || room.is_empty() {
                return Err(Error::BadRequest("room type and room id are required".into()));
            }
            self.publish(PushMsg::room(format!("{room_type}://{room}"), op, msg)).await.map(|()| 1)
        }
        .await;
        self.count("room", &result);
        result
    }

    /// Pushes `msg` to every connection that accepts `op`; `speed` paces it (connections per
    /// second across the cluster, 0 for unpaced).
    pub async fn push_all(&self, op: i32, speed: i32, msg: Bytes) -> Result<usize, Error> {
        let result = self.publish(PushMsg::broadcast(op, speed, msg)).await.map(|()| 1);
        self.count("all", &result);
        result
    }

    async fn push_keys_inner(&self, op: i32, keys: Vec<String>, msg: Bytes) -> Result<usize, Error> {
        if keys.is_empty() {
            return Err(Error::BadRequest("no keys to push to".into()));
        }
        // A key listed twice is pushed once.
        let mut seen = HashSet::with_capacity(keys.len());
        let keys: Vec<String> =
            keys.into_iter().filter(|k| !k.is_empty() && seen.insert(k.clone())).collect();
        let servers = self
            .store
            .servers_by_keys(&keys)
            .await
            .inspect_err(|_| self.metrics.store_error("servers_by_keys"))?;
        // Group by comet in order of first appearance, so the output is deterministic.
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (key, server) in keys.into_iter().zip(servers) {
            let Some(server) = server.filter(|s| !s.is_empty()) else { continue };
            let i = *index.entry(server.clone()).or_insert_with(|| {
                groups.push((server, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(key);
        }
        self.publish_groups(op, groups, msg).await
    }

    async fn push_mids_inner(&self, op: i32, mids: Vec<i64>, msg: Bytes) -> Result<usize, Error> {
        if mids.is_empty() {
            return Err(Error::BadRequest("no mids to push to".into()));
        }
        let (keys, _online) =
            self.store.keys_by_mids(&mids).await.inspect_err(|_| self.metrics.store_error("keys_by_mids"))?;
        let mut by_server: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, server) in keys {
            if !key.is_empty() && !server.is_empty() {
                by_server.entry(server).or_default().push(key);
            }
        }
        let groups = by_server
            .into_iter()
            .map(|(server, mut keys)| {
                keys.sort();
                (server, keys)
            })
            .collect();
        self.publish_groups(op, groups, msg).await
    }

    /// One `PushMsg` per comet. Stops at the first failure, as goim does: the business server
    /// gets an error and retries the request.
    async fn publish_groups(
        &self,
        op: i32,
        groups: Vec<(String, Vec<String>)>,
        msg: Bytes,
    ) -> Result<usize, Error> {
        let count = groups.len();
        for (server, keys) in groups {
            self.publish(PushMsg::keys(server, keys, op, msg.clone())).await?;
        }
        Ok(count)
    }

    async fn publish(&self, msg: PushMsg) -> Result<(), Error> {
        let kind = match msg.kind {
            PushKind::Keys => "keys",
            PushKind::Room => "room",
            PushKind::Broadcast => "broadcast",
        };
        match self.queue.publish(msg).await {
            Ok(()) => {
                self.metrics.published(kind);
                Ok(())
            }
            Err(e) => {
                self.metrics.publish_failed(e.reason());
                tracing::warn!(error = %e, kind, "publish failed");
                Err(e.into())
            }
        }
    }

    fn count(&self, kind: &'static str, result: &Result<usize, Error>) {
        let label = match result {
            Ok(_) => "ok",
            Err(Error::BadRequest(_) | Error::Auth(_)) => "bad_request",
            Err(Error::Queue(_)) => "queue_error",
            Err(Error::Store(_)) => "store_error",
        };
        self.metrics.push_request(kind, label);
    }
}
