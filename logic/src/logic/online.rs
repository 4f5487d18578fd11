//! Online counts: each comet reports its rooms every few seconds ([`Logic::renew_online`]); logic
//! sums the reports of all live comets into a global view.
//!
//! The view is cached. A comet's report stores it and reloads the view at once, so the reply (and
//! any query after it) counts that comet's newest connections. Queries reload the view when it is
//! older than [`ONLINE_TICK`] (goim's `_onlineTick`), which matters when several logic instances
//! share one store. A comet whose last report is older than `session.online_stale_after` is
//! left out and its record deleted (goim does the same after 5 minutes).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use goim_api::Online;
use serde::Serialize;
use tokio::time::Instant;

use super::{Error, Logic};

/// How old a cached view may be before a query reloads it.
pub(super) const ONLINE_TICK: Duration = Duration::from_secs(10);

/// A cached view and when it was loaded.
pub(super) struct Cached {
    loaded: Instant,
    view: Arc<View>,
}

/// The live comets' reports and their sums.
#[derive(Debug, Default)]
pub(super) struct View {
    /// Live comets with their last report and its time, sorted by server id.
    pub(super) servers: Vec<(Online, SystemTime)>,
    /// Members per room (`type://id`) summed over live comets.
    pub(super) rooms: HashMap<String, i32>,
}

/// One room of `/goim/online/top` (goim's `model.Top`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Top {
    pub room_id: String,
    pub count: i32,
}

/// `/goim/online/total`. Fields in the order Go's map encoding gives them (sorted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    pub conn_count: i64,
    pub ip_count: i64,
}

impl Logic {
    /// A comet's periodic report: stores it, then returns the global members per room
    /// (`type://id` → count) over all live comets, this report included.
    pub async fn renew_online(&self, online: Online) -> Result<HashMap<String, i32>, Error> {
        if online.server.is_empty() {
            return Err(Error::BadRequest("online report without a server id".into()));
        }
        self.store
            .add_server_online(&online.server, &online, SystemTime::now())
            .await
            .inspect_err(|_| self.metrics.store_error("add_server_online"))?;
        let view = self.view(Duration::ZERO).await?;
        Ok(view.rooms.clone())
    }

    /// The store's epoch ([`crate::Store::epoch`]), returned with each online report so comets
    /// re-register their sessions when the store lost its data.
    pub async fn store_epoch(&self) -> Result<String, Error> {
        Ok(self.store.epoch().await.inspect_err(|_| self.metrics.store_error("epoch"))?)
    }

    /// The `limit` most crowded rooms whose `type://id` key starts with `room_type` (a plain
    /// prefix, as in goim), most members first.
    pub async fn online_top(&self, room_type: &str, limit: usize) -> Result<Vec<Top>, Error> {
        let view = self.view(ONLINE_TICK).await?;
        let mut tops: Vec<Top> = view
            .rooms
            .iter()
            .filter(|(room, _)| room.starts_with(room_type))
            .filter_map(|(room, &count)| Some(Top { room_id: room_id(room)?.to_owned(), count }))
            .collect();
        tops.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.room_id.cmp(&b.room_id)));
        tops.truncate(limit);
        Ok(tops)
    }

    /// Members of each room `room_type://id` for the given ids; 0 for an unknown room.
    pub async fn online_room(
        &self,
        room_type: &str,
        rooms: &[String],
    ) -> Result<BTreeMap<String, i32>, Error> {
        let view = self.view(ONLINE_TICK).await?;
        Ok(rooms
            .iter()
            .map(|id| (id.clone(), view.rooms.get(&format!("{room_type}://{id}")).copied().unwrap_or(0)))
            .collect())
    }

    /// Connections and client IPs summed over live comets.
    pub async fn online_total(&self) -> Result<Total, Error> {
        let view = self.view(ONLINE_TICK).await?;
        Ok(view.servers.iter().fold(Total::default(), |t, (o, _)| Total {
            conn_count: t.conn_count.saturating_add(o.conn_count.max(0)),
            ip_count: t.ip_count.saturating_add(o.ip_count.max(0)),
        }))
    }

    /// The cached view when younger than `max_age`, else a fresh one from the store. When the
    /// store fails, the last view is served (stale counts beat no counts) if there is one.
    pub(super) async fn view(&self, max_age: Duration) -> Result<Arc<View>, Error> {
        let cached = self.online.lock().as_ref().map(|c| (c.loaded, c.view.clone()));
        if let Some((loaded, view)) = &cached
            && !max_age.is_zero()
            && loaded.elapsed() < max_age
        {
            return Ok(view.clone());
        }
        match self.load_view().await {
            Ok(view) => {
                let view = Arc::new(view);
                *self.online.lock() = Some(Cached { loaded: Instant::now(), view: view.clone() });
                Ok(view)
            }
            Err(e) => match cached {
                Some((_, view)) => {
                    tracing::warn!(error = %e, "loading online counts failed, serving the last ones");
                    Ok(view)
                }
                None => Err(e),
            },
        }
    }

    async fn load_view(&self) -> Result<View, Error> {
        let servers = self.store.servers().await.inspect_err(|_| self.metrics.store_error("servers"))?;
        let now = SystemTime::now();
        let stale_after = self.config.session.online_stale_after;
        let mut view = View::default();
        for server in servers {
            let Some((online, updated)) = self
                .store
                .server_online(&server)
                .await
                .inspect_err(|_| self.metrics.store_error("server_online"))?
            else {
                continue;
            };
            // A report from the future (clock skew between logic instances) counts as fresh.
            if now.duration_since(updated).is_ok_and(|age| age > stale_after) {
                tracing::info!(server = %server, "dropping the online record of a comet that stopped reporting");
                if let Err(e) = self.store.del_server_online(&server).await {
                    self.metrics.store_error("del_server_online");
                    tracing::warn!(error = %e, server = %server, "deleting a stale online record failed");
                }
                continue;
            }
            // Sums saturate, and a negative count is taken as none: the reports come from other
            // processes, and two comets' counts near i32::MAX once overflowed here (a panic in
            // debug builds, a negative total in release ones; found by the grpc_handlers fuzz
            // target).
            for (room, &count) in &online.room_count {
                let total = view.rooms.entry(room.clone()).or_insert(0);
                *total = total.saturating_add(count.max(0));
            }
            view.servers.push((online, updated));
        }
        view.servers.sort_by(|a, b| a.0.server.cmp(&b.0.server));
        Ok(view)
    }
}

/// The id part of a `type://id` room key: what Go's `url.Parse(room).Host` gives for goim's room
/// keys (the text after `://`, up to any `/`, `?` or `#`). `None` when it is not a room key.
fn room_id(room: &str) -> Option<&str> {
    let (_, rest) = room.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::room_id;

    #[test]
    fn room_id_is_the_host_part_of_the_room_key() {
        assert_eq!(room_id("live://1000"), Some("1000"));
        assert_eq!(room_id("live://1000/x?y#z"), Some("1000"));
        assert_eq!(room_id("live://"), Some(""));
        assert_eq!(room_id("no-scheme"), None);
    }
}
