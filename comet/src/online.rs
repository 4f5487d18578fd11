//! The online report (goim's `onlineproc`): this comet's counts go to logic every
//! `online.renew_interval`, and the cluster's room counts come back for heartbeat replies.

use std::sync::Arc;

use goim_api::Online;
use tracing::warn;

use crate::context::Context;

/// Reports this comet's counts to logic every `online.renew_interval` and applies the cluster
/// counts it returns, until shutdown.
pub async fn report(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.config.online.renew_interval);
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
            Ok(Ok(all)) => ctx.hub.set_all_online(&all),
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
