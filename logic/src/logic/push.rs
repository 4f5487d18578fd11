//! Pushes: resolve keys and mids to comets, then publish one [`PushMsg`] per comet (goim), or one
//! per room or broadcast.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use goim_api::{Position, PushKind, PushMsg};

use super::{Error, Logic};
use crate::{history, queue};

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
            let room = format!("{room_type}://{room}");
            let stream = history::room_stream(&room);
            self.publish_in(&stream, "room", PushMsg::room(room, op, msg)).await.map(|()| 1)
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
        self.publish_groups(op, groups, msg, None).await
    }

    async fn push_mids_inner(&self, op: i32, mids: Vec<i64>, msg: Bytes) -> Result<usize, Error> {
        if mids.is_empty() {
            return Err(Error::BadRequest("no mids to push to".into()));
        }
        if self.history.is_some() {
            return self.push_mids_in_streams(op, mids, msg).await;
        }
        let (keys, _online) =
            self.store.keys_by_mids(&mids).await.inspect_err(|_| self.metrics.store_error("keys_by_mids"))?;
        self.publish_groups(op, by_server(keys), msg, None).await
    }

    /// With positions, each user is its own stream: one position per mid, kept whether or not
    /// the user is online, and one `PushMsg` per comet of that user carrying it.
    async fn push_mids_in_streams(&self, op: i32, mids: Vec<i64>, msg: Bytes) -> Result<usize, Error> {
        let mut seen = HashSet::with_capacity(mids.len());
        let mut count = 0;
        for mid in mids.into_iter().filter(|&m| m > 0 && seen.insert(m)) {
            let stream = history::user_stream(mid);
            let _order = self.stripe(&stream).lock().await;
            let position = self.position(&stream, "user", op, &msg).await;
            let (keys, _online) = self
                .store
                .keys_by_mids(&[mid])
                .await
                .inspect_err(|_| self.metrics.store_error("keys_by_mids"))?;
            count += self.publish_groups(op, by_server(keys), msg.clone(), position).await?;
        }
        Ok(count)
    }

    /// One `PushMsg` per comet. Stops at the first failure, as goim does: the business server
    /// gets an error and retries the request.
    async fn publish_groups(
        &self,
        op: i32,
        groups: Vec<(String, Vec<String>)>,
        msg: Bytes,
        position: Option<Position>,
    ) -> Result<usize, Error> {
        let count = groups.len();
        for (server, keys) in groups {
            let mut push = PushMsg::keys(server, keys, op, msg.clone());
            push.position = position;
            self.publish(push).await?;
        }
        Ok(count)
    }

    /// Publishes `msg` at the next position of `stream` (when positions are on), holding the
    /// stream's order from the position until the queue has the push in its order.
    async fn publish_in(&self, stream: &str, label: &'static str, mut msg: PushMsg) -> Result<(), Error> {
        if self.history.is_none() {
            return self.publish(msg).await;
        }
        let kind = kind(&msg);
        let acked = {
            let _order = self.stripe(stream).lock().await;
            msg.position = self.position(stream, label, msg.operation, &msg.msg).await;
            // The stream's order holds once the queue has the push in its own order; the
            // acknowledgement (Kafka's round trip) is awaited without holding up the next push.
            self.queue.enqueue(msg).await.map_err(|e| self.publish_failed(kind, e))?
        };
        acked.await.map_err(|e| self.publish_failed(kind, e))?;
        self.metrics.published(kind);
        Ok(())
    }

    /// The next position of `stream`, with the push kept in its history. A history that fails
    /// gives none: the push still goes out (live clients get it), counted and logged, and a
    /// client that resumes across it is told its recovery is incomplete by the gap.
    async fn position(&self, stream: &str, label: &'static str, op: i32, body: &Bytes) -> Option<Position> {
        let history = self.history.as_ref()?;
        match history.append(stream, op, body).await {
            Ok(p) => {
                self.metrics.history_appended(label);
                Some(p)
            }
            Err(e) => {
                self.metrics.history_error("append");
                tracing::warn!(error = %e, stream, "history append failed; pushing without a position");
                None
            }
        }
    }

    fn stripe(&self, stream: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(stream);
        &self.order[hash as usize % self.order.len()]
    }
}

/// A push's kind, as a metric label.
fn kind(msg: &PushMsg) -> &'static str {
    match msg.kind {
        PushKind::Keys => "keys",
        PushKind::Room => "room",
        PushKind::Broadcast => "broadcast",
    }
}

/// Keys grouped by comet, comets and keys sorted, so the output is deterministic.
fn by_server(keys: HashMap<String, String>) -> Vec<(String, Vec<String>)> {
    let mut by_server: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, server) in keys {
        if !key.is_empty() && !server.is_empty() {
            by_server.entry(server).or_default().push(key);
        }
    }
    by_server
        .into_iter()
        .map(|(server, mut keys)| {
            keys.sort();
            (server, keys)
        })
        .collect()
}

impl Logic {
    async fn publish(&self, msg: PushMsg) -> Result<(), Error> {
        let kind = kind(&msg);
        match self.queue.publish(msg).await {
            Ok(()) => {
                self.metrics.published(kind);
                Ok(())
            }
            Err(e) => Err(self.publish_failed(kind, e)),
        }
    }

    fn publish_failed(&self, kind: &'static str, e: queue::Error) -> Error {
        self.metrics.publish_failed(e.reason());
        tracing::warn!(error = %e, kind, "publish failed");
        e.into()
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
