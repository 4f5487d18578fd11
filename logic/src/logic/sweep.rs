//! The sweep of dead comets' routes: a comet that has been gone from discovery for longer than
//! `discovery.gone_grace` has its routes (key and mid → that comet) deleted from the store, so
//! pushes stop resolving to it.
//!
//! Why logic does it, not job: logic owns the store (job never touches it, and reaching it from
//! job would need a new call into logic or a second writer of logic's keys), and logic already
//! watches the same discovery for its node lists. Every logic instance sweeps on its own; the
//! deletes are compare-and-delete per key, so two instances sweeping the same comet delete each
//! route once between them, and a route re-added for a live comet is never touched.
//!
//! A comet listed again within the grace (a restart with the same server id, a discovery blip)
//! keeps its routes. An empty list is taken for a discovery outage, not for every comet dying at
//! once: nothing is marked gone while discovery lists no comet.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Logic;

/// Routes deleted per store call: one Redis round trip (one Lua script) each.
const PAGE: usize = 500;
/// Pause between pages, so a big comet's cleanup (a million routes: 2,000 pages) paces itself
/// at about 25,000 routes a second instead of monopolising the store.
const PAGE_PAUSE: Duration = Duration::from_millis(20);

/// Comets that left discovery, and since when.
#[derive(Debug, Default)]
struct Gone {
    /// Listed at the last look.
    listed: HashSet<String>,
    since: HashMap<String, Instant>,
}

impl Gone {
    /// Applies the current list: newly missing comets start their grace, re-listed ones are
    /// forgiven. Returns the re-listed ones.
    fn observe(&mut self, listed: HashSet<String>, now: Instant) -> Vec<String> {
        for left in self.listed.difference(&listed) {
            info!(server = %left, "comet left discovery");
            self.since.entry(left.clone()).or_insert(now);
        }
        let back: Vec<String> = listed.iter().filter(|s| self.since.remove(*s).is_some()).cloned().collect();
        self.listed = listed;
        back
    }

    /// Comets gone for at least `grace`.
    fn due(&self, now: Instant, grace: Duration) -> Vec<String> {
        let mut due: Vec<String> = self
            .since
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= grace)
            .map(|(s, _)| s.clone())
            .collect();
        due.sort();
        due
    }
}

impl Logic {
    /// Drops the routes of comets gone from discovery (see the module docs) until `shutdown`.
    /// Does nothing without a discovery port ([`Logic::with_comets`]). Checks every quarter of
    /// `grace` (between 100 ms and 5 s); comets that report online but were never listed (they
    /// died while this logic was down) are found through the store's online records, once at
    /// start and then once per `grace`.
    pub async fn sweep_gone_comets(&self, grace: Duration, shutdown: CancellationToken) {
        let Some(comets) = self.comets.clone() else { return };
        let tick = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut gone = Gone::default();
        let mut last_online_check: Option<Instant> = None;
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(?grace, "sweeping the routes of comets gone from discovery");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let listed: HashSet<String> = comets.listed().into_iter().collect();
            if listed.is_empty() {
                debug!("discovery lists no comet; taken for an outage, nothing is swept");
                continue;
            }
            let now = Instant::now();
            for back in gone.observe(listed, now) {
                info!(server = %back, "comet listed again within the grace; its routes are kept");
            }
            if last_online_check.is_none_or(|t| now.duration_since(t) >= grace) {
                last_online_check = Some(now);
                match self.store.servers().await {
                    Ok(reporting) => {
                        for s in reporting {
                            if !gone.listed.contains(&s) && !gone.since.contains_key(&s) {
                                info!(server = %s, "comet reports online but is not in discovery");
                                gone.since.insert(s, now);
                            }
                        }
                    }
                    Err(e) => {
                        self.metrics.store_error("servers");
                        warn!(error = %e, "listing the reporting comets failed");
                    }
                }
            }
            for server in gone.due(Instant::now(), grace) {
                match self.drop_routes(&server, &*comets, &shutdown).await {
                    Some(true) => {
                        gone.since.remove(&server);
                    }
                    Some(false) => {} // listed again meanwhile, or the store failed: next tick decides
                    None => return,
                }
            }
        }
    }

    /// Deletes every route of `server` in paced pages, then its online record. `Some(true)` when
    /// done, `Some(false)` when it stopped early (the comet came back, or the store failed), `None`
    /// on shutdown.
    async fn drop_routes(
        &self,
        server: &str,
        comets: &dyn crate::comet::CometDirectory,
        shutdown: &CancellationToken,
    ) -> Option<bool> {
        let started = Instant::now();
        let mut routes = 0usize;
        loop {
            match self.store.drop_server(server, PAGE).await {
                Ok(page) => {
                    routes += page.routes;
                    self.metrics.routes_dropped(page.routes);
                    if !page.more {
                        break;
                    }
                }
                Err(e) => {
                    self.metrics.store_error("drop_server");
                    warn!(server, error = %e, routes, "dropping a gone comet's routes failed; retrying later");
                    return Some(false);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(PAGE_PAUSE) => {}
            }
            if comets.listed().iter().any(|s| s == server) {
                info!(server, routes, "comet listed again while its routes were dropped; the rest are kept");
                return Some(false);
            }
        }
        if let Err(e) = self.store.del_server_online(server).await {
            self.metrics.store_error("del_server_online");
            warn!(server, error = %e, "deleting a gone comet's online record failed");
        }
        self.metrics.comet_swept();
        info!(server, routes, took = ?started.elapsed(), "dropped the routes of a comet gone from discovery");
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_comet_is_due_after_the_grace_and_forgiven_when_listed_again() {
        let grace = Duration::from_secs(30);
        let mut gone = Gone::default();
        let t0 = Instant::now();
        gone.observe(set(&["a", "b"]), t0);
        gone.observe(set(&["b"]), t0);
        assert!(gone.due(t0 + grace - Duration::from_millis(1), grace).is_empty());
        assert_eq!(gone.due(t0 + grace, grace), ["a"]);
        assert_eq!(gone.observe(set(&["a", "b"]), t0 + grace), ["a"]);
        assert!(gone.due(t0 + grace * 2, grace).is_empty());
    }
}
