//! The steps of a client's session, whatever carries it (a socket or long-polling): authenticate
//! (ask logic about the token), admit (make the connection visible to pushes), operate (answer
//! one packet), teardown (take it out and tell logic). Transport-neutral: `connection` drives
//! them for sockets, `long_poll` for HTTP sessions.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use goim_api::{Connect, Frame, Op, Presence, Session, Uplink};
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::{Instant, timeout};
use tracing::warn;

use crate::channel::{Channel, parse_ops};
use crate::context::Context;
use crate::disconnect::Disconnect;
use crate::logic;
use crate::metrics::TransportLabel;
use crate::outbox::{Outbound, Outbox};

/// Asks logic about a token; a refusal or an unreachable logic becomes the reason to disconnect.
/// Admission first: over the auth rate the client is refused without asking logic, and at most
/// `admission.auth_in_flight` requests wait on logic at once.
pub async fn authenticate(
    ctx: &Context,
    peer: SocketAddr,
    cookie: String,
    token: Bytes,
) -> Result<Session, Disconnect> {
    if !ctx.admission.try_auth() {
        ctx.metrics.refused("auth_rate");
        return Err(Disconnect::RateLimited);
    }
    let req = Connect { server: ctx.config.server_id.clone(), cookie, token };
    // The wait for a slot counts against the handshake timeout too: a client is never kept
    // past it, however busy logic is.
    let call = async {
        let _slot = ctx.admission.auth_slot().await;
        let _counted = InFlight::new(&ctx.metrics.auth_in_flight);
        ctx.logic.connect(req).await
    };
    match timeout(ctx.config.protocol.handshake_timeout, call).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(logic::Error::Rejected(why))) => Err(Disconnect::AuthFailed(why)),
        Ok(Err(logic::Error::Unavailable(e))) => {
            warn!(peer = %peer, error = %e, "logic unavailable for connect");
            ctx.metrics.logic_error("connect");
            Err(Disconnect::Unavailable)
        }
        Err(_) => {
            warn!(peer = %peer, "logic connect timed out");
            ctx.metrics.logic_error("connect");
            Err(Disconnect::Unavailable)
        }
    }
}

/// Counts one auth request in flight for as long as it lives (a timed-out call is dropped, not
/// finished).
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a Gauge) -> InFlight<'a> {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Makes an authenticated connection visible to pushes: its key, its room, the gauges.
/// `first` is queued before anything a push could queue (the socket's auth reply).
pub fn admit(
    ctx: &Context,
    session: &Session,
    ip: IpAddr,
    label: &TransportLabel,
    first: Option<Outbound>,
) -> Arc<Channel> {
    let id = ctx.next_id();
    let outbox = Outbox::new(ctx.config.outbox.capacity, ctx.config.outbox.max_bytes);
    let ch =
        Arc::new(Channel::new(id, session.key.as_str().into(), session.mid, ip, &session.accepts, outbox));
    if let Some(item) = first {
        let _ = ch.outbox.push(item);
    }
    ctx.hub.put(ch.clone());
    ctx.hub.change_room(&ch, &session.room);
    if ctx.shutdown.is_cancelled() {
        ch.outbox.close(Disconnect::Shutdown);
    }
    ctx.metrics.authenticated.get_or_create(label).inc();
    ctx.metrics.connections.get_or_create(label).inc();
    ch
}

/// Handles one packet from an authenticated client and returns its reply (goim's `Operate`):
/// heartbeat, change room, sub, unsub, or uplink to logic (echoed with an empty body).
pub async fn operate(ctx: &Context, ch: &Arc<Channel>, frame: Frame, last_renew: &mut Instant) -> Frame {
    match frame.known_op() {
        Some(Op::Heartbeat) => {
            if last_renew.elapsed() >= ctx.config.protocol.session_renew {
                *last_renew = Instant::now();
                renew_session(ctx, ch).await;
            }
            let online = ch.room().map(|r| r.online()).unwrap_or(0);
            frame.reply(Op::HeartbeatReply, Bytes::copy_from_slice(&online.to_be_bytes()))
        }
        Some(Op::ChangeRoom) => {
            let room = String::from_utf8_lossy(&frame.body);
            ctx.hub.change_room(ch, &room);
            frame.reply(Op::ChangeRoomReply, frame.body.clone())
        }
        Some(Op::Sub) => {
            ch.watch(&parse_ops(&frame.body));
            frame.reply(Op::SubReply, frame.body.clone())
        }
        Some(Op::Unsub) => {
            ch.unwatch(&parse_ops(&frame.body));
            frame.reply(Op::UnsubReply, frame.body.clone())
        }
        _ => {
            let reply = frame.reply(frame.op, Bytes::new());
            let uplink = Uplink { mid: ch.mid, key: ch.key.to_string(), frame };
            match timeout(ctx.config.protocol.write_timeout, ctx.logic.receive(uplink)).await {
                Ok(Ok(())) => {}
                _ => ctx.metrics.logic_error("receive"),
            }
            reply
        }
    }
}

async fn renew_session(ctx: &Context, ch: &Channel) {
    let p = Presence { mid: ch.mid, key: ch.key.to_string(), server: ctx.config.server_id.clone() };
    match timeout(ctx.config.protocol.write_timeout, ctx.logic.heartbeat(p)).await {
        Ok(Ok(())) => {}
        _ => ctx.metrics.logic_error("heartbeat"),
    }
}

/// Takes a connection out of the hub and, unless a newer connection took its key over, ends its
/// session at logic.
pub async fn teardown(ctx: &Context, ch: &Arc<Channel>) {
    ctx.hub.remove(ch);
    if ch.was_replaced() {
        // A newer connection with this key lives on here; its session must stay.
        return;
    }
    let p = Presence { mid: ch.mid, key: ch.key.to_string(), server: ctx.config.server_id.clone() };
    match timeout(ctx.config.protocol.write_timeout, ctx.logic.disconnect(p)).await {
        Ok(Ok(())) => {}
        _ => ctx.metrics.logic_error("disconnect"),
    }
}
