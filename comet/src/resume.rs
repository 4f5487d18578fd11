//! Resume: a connection that asked for recovery (op 18 before its op 7, or long-polling's
//! `recover` parameter) gets what it missed of its room's and its user's streams, in order and
//! before any live push, then live pushes with none the replay already carried
//! (`docs/recovery.md`).
//!
//! The order of steps is what makes it exact. The connection is admitted first, so live pushes
//! queue in its outbox from then on; only then does logic read the history. A push is therefore
//! in the replay (it was kept before the read), or live (it reached this comet after the
//! connection was in the room), or both; never neither. The replay goes in front of the queued
//! live pushes, and the live ones at or before the position the replay reached are dropped.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use goim_api::frame::{HEADER_LEN, put_header};
use goim_api::position::already_seen;
use goim_api::{Frame, Op, Position, RecoverAsk, RecoverRequest, Recovered, Session, Stream, StreamRecovery};
use serde_json::{Value, json};
use tokio::time::timeout;
use tracing::debug;

use crate::channel::Channel;
use crate::context::Context;
use crate::outbox::Outbound;

/// Reads the body of op 18 (at most `protocol.max_body` bytes, as every packet).
pub fn parse_ask(body: &[u8]) -> Result<RecoverAsk, String> {
    serde_json::from_slice(body).map_err(|e| format!("op 18 body is not a recover request: {e}"))
}

/// How the resume's answer reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// An op-19 packet right after the auth reply, the first item queued (sockets).
    Packet,
    /// In the HTTP response; nothing is queued before the replay (long-polling).
    Response,
}

/// Asks logic what `ch` missed since `ask`, queues the replay in front of everything pushed
/// since the connection was admitted, and returns the answer (op 19's JSON).
pub async fn resume(
    ctx: &Context,
    ch: &Arc<Channel>,
    session: &Session,
    ask: RecoverAsk,
    reply: Reply,
) -> Value {
    let room = ch.room().map(|r| r.id.to_string()).unwrap_or_else(|| session.room.clone());
    let req = RecoverRequest { mid: session.mid, room, room_since: ask.room, user_since: ask.user };
    let answer = match timeout(ctx.config.protocol.handshake_timeout, ctx.logic.recover(req)).await {
        Ok(Ok(recovered)) => Ok(recovered),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("logic did not answer in time".to_string()),
    };
    let recovered = match answer {
        Ok(r) => r,
        Err(e) => {
            debug!(key = %ch.key, error = %e, "recover failed");
            ctx.metrics.logic_error("recover");
            ctx.metrics.resume("failed");
            let body = failed(&ask);
            queue(ch, reply, &body, Vec::new(), None, None, Default::default());
            return body;
        }
    };
    if !recovered.enabled {
        ctx.metrics.resume("off");
        let body = json!({"positions": false});
        queue(ch, reply, &body, Vec::new(), None, None, Default::default());
        return body;
    }
    let Recovered { room, user, .. } = recovered;
    let complete = room.iter().chain(user.iter()).all(|s| s.complete);
    ctx.metrics.resume(if complete { "complete" } else { "incomplete" });

    let mut packets = BytesMut::new();
    let room_n = room.as_ref().map_or(0, |s| encode(&mut packets, s, Stream::Room, |_| true));
    let user_n = user.as_ref().map_or(0, |s| encode(&mut packets, s, Stream::User, |op| ch.accepts(op)));
    ctx.metrics.replayed.inc_by((room_n + user_n) as u64);
    let mut body = serde_json::Map::new();
    if let Some(s) = &room {
        body.insert("room".into(), stream_json(s, room_n));
    }
    if let Some(s) = &user {
        body.insert("user".into(), stream_json(s, user_n));
    }
    let body = Value::Object(body);
    let replay = if packets.is_empty() { Vec::new() } else { vec![Outbound::Push(packets.freeze())] };
    let dropped = ctx.metrics.resume_duplicates.clone();
    queue(ch, reply, &body, replay, room.map(|s| s.position), user.map(|s| s.position), dropped);
    body
}

/// Appends the pushes of `s` that `keep` accepts (by op) as positioned packets; returns how many.
fn encode(dst: &mut BytesMut, s: &StreamRecovery, stream: Stream, keep: impl Fn(i32) -> bool) -> usize {
    let mut n = 0;
    for p in s.pushes.iter().filter(|p| keep(p.op)) {
        let (ver, seq) = Position::new(s.position.epoch, p.offset).header(stream);
        dst.reserve(HEADER_LEN + p.body.len());
        put_header(dst, p.body.len(), ver, p.op, seq);
        dst.extend_from_slice(&p.body);
        n += 1;
    }
    n
}

fn stream_json(s: &StreamRecovery, recovered: usize) -> Value {
    json!({
        "epoch": s.position.epoch,
        "offset": s.position.offset,
        "recovered": recovered,
        "complete": s.complete,
    })
}

/// Logic could not answer: every stream asked is incomplete, at the client's own position.
fn failed(ask: &RecoverAsk) -> Value {
    let at = |p: &Position| json!({"epoch": p.epoch, "offset": p.offset, "recovered": 0, "complete": false});
    let mut body = serde_json::Map::new();
    if let Some(p) = &ask.room {
        body.insert("room".into(), at(p));
    }
    if let Some(p) = &ask.user {
        body.insert("user".into(), at(p));
    }
    body.insert("error".into(), json!("unavailable"));
    Value::Object(body)
}

/// Puts op 19 (sockets) and the replay in front of what was queued since admission, and drops
/// the packets at or before `room`/`user` (the replay carried them, or the client had them)
/// from that and from what still arrives: pushes kept before logic's read may reach this comet
/// after it (job batches room pushes). Each stream's filter ends with its first newer push, as
/// a stream arrives in order. `dropped` counts what was left out.
fn queue(
    ch: &Channel,
    reply: Reply,
    body: &Value,
    replay: Vec<Outbound>,
    room: Option<Position>,
    user: Option<Position>,
    dropped: prometheus_client::metrics::counter::Counter,
) {
    let mut items = Vec::with_capacity(replay.len() + 1);
    if reply == Reply::Packet {
        items.push(Outbound::Packet(Frame::push(Op::RecoverReply.code(), body.to_string())));
    }
    items.extend(replay);
    let keep_first = usize::from(reply == Reply::Packet);
    let (mut room, mut user) = (room, user);
    ch.outbox.put_in_front(keep_first, items, move |packets: Bytes| {
        let (kept, n) = without_seen(packets.clone(), room, user);
        dropped.inc_by(n as u64);
        // A stream is done once a push after its position arrives.
        for f in goim_api::frame::split_packets(packets).map_while(Result::ok) {
            match Position::from_header(f.ver, f.seq) {
                Some((Stream::Room, e, o)) if room.is_some_and(|p| !already_seen(p, e, o)) => room = None,
                Some((Stream::User, e, o)) if user.is_some_and(|p| !already_seen(p, e, o)) => user = None,
                _ => {}
            }
        }
        (kept, room.is_some() || user.is_some())
    });
}

/// `packets` without the positioned ones at or before `room`/`user` in their stream; `None` when
/// none is left. Returns how many went.
pub(crate) fn without_seen(
    packets: Bytes,
    room: Option<Position>,
    user: Option<Position>,
) -> (Option<Bytes>, usize) {
    if room.is_none() && user.is_none() {
        return (Some(packets), 0);
    }
    let seen = |f: &Frame| match Position::from_header(f.ver, f.seq) {
        Some((Stream::Room, epoch, offset)) => room.is_some_and(|p| already_seen(p, epoch, offset)),
        Some((Stream::User, epoch, offset)) => user.is_some_and(|p| already_seen(p, epoch, offset)),
        None => false,
    };
    let frames: Vec<Frame> = goim_api::frame::split_packets(packets.clone()).map_while(Result::ok).collect();
    let dropped = frames.iter().filter(|f| seen(f)).count();
    if dropped == 0 {
        return (Some(packets), 0);
    }
    let mut kept = BytesMut::new();
    for f in frames.iter().filter(|f| !seen(f)) {
        f.encode(&mut kept);
    }
    ((!kept.is_empty()).then(|| kept.freeze()), dropped)
}

#[cfg(test)]
mod tests {
    use goim_api::frame::encode_push_with;

    use super::*;

    fn at(stream: Stream, epoch: u16, offset: u64, body: &str) -> Bytes {
        let (ver, seq) = Position::new(epoch, offset).header(stream);
        encode_push_with(ver, 1000, seq, body.as_bytes())
    }

    #[test]
    fn live_packets_the_replay_carried_are_dropped_and_the_rest_keep_their_order() {
        let packets = [
            at(Stream::Room, 3, 9, "r9"),
            goim_api::frame::encode_push(1000, b"plain"),
            at(Stream::Room, 3, 10, "r10"),
            at(Stream::User, 8, 2, "u2"),
            at(Stream::Room, 3, 11, "r11"),
            at(Stream::User, 8, 3, "u3"),
        ]
        .concat();
        let (kept, dropped) =
            without_seen(Bytes::from(packets), Some(Position::new(3, 10)), Some(Position::new(8, 2)));
        assert_eq!(dropped, 3);
        let bodies: Vec<_> = goim_api::frame::split_packets(kept.unwrap()).map(|f| f.unwrap().body).collect();
        assert_eq!(bodies, [&b"plain"[..], b"r11", b"u3"]);
    }

    #[test]
    fn another_epoch_is_never_dropped_and_a_batch_all_seen_goes_entirely() {
        let (kept, dropped) = without_seen(at(Stream::Room, 4, 1, "new"), Some(Position::new(3, 10)), None);
        assert_eq!((kept.is_some(), dropped), (true, 0), "a new epoch after the read is live news");
        let (kept, dropped) = without_seen(at(Stream::Room, 3, 7, "old"), Some(Position::new(3, 10)), None);
        assert_eq!((kept, dropped), (None, 1));
    }

    #[test]
    fn an_ask_is_json_with_either_stream_and_anything_else_is_refused() {
        let ask = parse_ask(br#"{"room":{"epoch":5,"offset":1043},"user":{"epoch":9,"offset":17}}"#).unwrap();
        assert_eq!(ask.room, Some(Position::new(5, 1043)));
        assert_eq!(ask.user, Some(Position::new(9, 17)));
        assert_eq!(parse_ask(b"{}").unwrap(), RecoverAsk::default());
        assert_eq!(parse_ask(br#"{"room":{}}"#).unwrap().room, Some(Position::default()));
        assert!(parse_ask(b"not json").is_err());
        assert!(parse_ask(br#"{"rooms":{}}"#).is_err(), "unknown fields are refused");
        assert!(parse_ask(br#"{"room":{"epoch":70000,"offset":1}}"#).is_err(), "an epoch is 16 bits");
    }
}
