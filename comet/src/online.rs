//! The online report (goim's `onlineproc`): this comet's counts go to logic every
//! `online.renew_interval`, and the cluster's room counts come back for heartbeat replies.
//! The reply also carries logic's session store epoch: when it changes (Redis restarted empty,
//! so every route is gone), comet re-registers each session it holds, at
//! `online.reregister_rate`, instead of leaving its users unreachable until `session_renew`.

use std::sync::Arc;
use std::time::Duration;

use goim_api::{Online, Presence};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::context::Context;

/// Re-registrations in flight at once: enough to hide a round trip, few enough for logic.
const REREGISTER_IN_FLIGHT: usize = 32;

/// Reports this comet's counts to logic every `online.renew_interval` and applies the cluster
/// counts it returns, until shutdown.
pub async fn report(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.config.online.renew_interval);
    let mut epoch: Option<String> = None;
    let mut reregistering: Option<tokio::task::JoinHandle<()>> = None;
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.shutdown.cancelled() => return,
        }
        let room_count = ctx.hub.room_counts();
        ctx.metrics.rooms.set(room_count.len() as i64);
        let online = Online {
            server: ctx.config.server_id.clone(),
            room_count,
            conn_count: ctx.hub.connections() as i64,
            ip_count: ctx.hub.ip_count() as i64,
        };
        let reply = tokio::select! {
            r = tokio::time::timeout(ctx.config.protocol.write_timeout, ctx.logic.renew_online(online)) => r,
            _ = ctx.shutdown.cancelled() => return,
        };
        match reply {
            Ok(Ok(all)) => {
                ctx.hub.set_all_online(&all);
                let now = ctx.logic.store_epoch();
                let changed = match (&epoch, &now) {
                    (Some(before), Some(after)) if before != after => {
                        info!(before = %before, after = %after, "logic's session store lost its data; re-registering sessions");
                        ctx.metrics.store_epoch_changes.inc();
                        true
                    }
                    // The first epoch seen: sessions admitted before it (logic was not reachable
                    // for the first reports) may have been written into data lost since. Telling
                    // logic again costs one heartbeat each and is harmless.
                    (None, Some(_)) => ctx.hub.connections() > 0,
                    _ => false,
                };
                if changed {
                    // A newer loss restarts the pass: the earlier one wrote into data now gone.
                    if let Some(pass) = reregistering.take() {
                        pass.abort();
                    }
                    reregistering = Some(ctx.tasks.spawn(reregister(ctx.clone())));
                }
                if now.is_some() {
                    epoch = now;
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "renew online failed");
                ctx.metrics.logic_error("renew_online");
            }
            Err(_) => {
                warn!("renew online timed out");
                ctx.metrics.logic_error("renew_online");
            }
        }
    }
}

/// Tells logic again about every session held now (a heartbeat: logic re-adds a mapping it no
/// longer has), at most `online.reregister_rate` per second, a few in flight at once. Sessions
/// that end meanwhile are skipped or cleaned up by their own teardown.
async fn reregister(ctx: Arc<Context>) {
    let channels = ctx.hub.channels();
    let rate = ctx.config.online.reregister_rate.max(1) as usize;
    // Ticks of 10 ms (or one per session when the rate is below 100/s).
    let per_tick = rate.div_ceil(100);
    let tick = Duration::from_secs_f64(per_tick as f64 / rate as f64);
    let mut pace = tokio::time::interval(tick);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    let started = tokio::time::Instant::now();
    let mut done = 0u64;
    for batch in channels.chunks(per_tick) {
        tokio::select! {
            _ = pace.tick() => {}
            _ = ctx.shutdown.cancelled() => return,
        }
        for ch in batch {
            if ch.was_replaced() {
                continue;
            }
            while in_flight.len() >= REREGISTER_IN_FLIGHT {
                in_flight.join_next().await;
            }
            let p = Presence { mid: ch.mid, key: ch.key.to_string(), server: ctx.config.server_id.clone() };
            let ctx = ctx.clone();
            in_flight.spawn(async move {
                match tokio::time::timeout(ctx.config.protocol.write_timeout, ctx.logic.heartbeat(p)).await {
                    Ok(Ok(())) => {
                        ctx.metrics.sessions_reregistered.inc();
                    }
                    _ => ctx.metrics.logic_error("heartbeat"),
                }
            });
            done += 1;
        }
    }
    while in_flight.join_next().await.is_some() {}
    info!(sessions = done, took = ?started.elapsed(), "sessions re-registered");
}
