//! HTTP long-polling: a session id instead of a socket, the same packets as TCP.
//!
//! - `POST /poll/auth[?recover=R]` (body: the op-7 token) → `{"sid", "heartbeat_ms"}`, or 401.
//!   `R`, the URL-encoded JSON of op 18, resumes (`docs/recovery.md`): the response then has op
//!   19's answer under `"recover"`, and the first poll starts with the replay. A bad `R` is 400.
//! - `GET /poll?sid=S[&timeout=secs][&ack=seq]` waits for pushes → 200 packets back to back
//!   with an `X-Goim-Poll-Seq` header, 204 when the wait ends empty, 404 for an unknown or
//!   expired session, 400 for an `ack` that is not a number or is ahead of the last seq.
//! - `POST /poll/send?sid=S` (body: packets) → 200 with the replies back to back.
//!
//! A session is a [`Channel`] like any socket's: pushes queue in its bounded outbox between
//! polls (a session that lets it overflow is disconnected as slow), and a session that neither
//! polls nor sends for its heartbeat timeout expires.
//!
//! The poll cursor: the packets of the last 200 are held (the `Cursor`) until the next poll
//! acknowledges them, and that poll gets the same response again (same seq) otherwise. A poll
//! with `ack` equal to the last seq acknowledges it; an older `ack` asks for the resend. A poll
//! without `ack` (a client that does not know the cursor) acknowledges it only if the server
//! wrote the whole response (HTTP reports that through the response's [`Receipt`]); a write
//! that failed or was cut short keeps the packets for the next poll. At most one response is
//! held, one outbox drain, so the session's outbox limits bound it too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use goim_api::frame::decode_stream;
use parking_lot::Mutex;
use rand::Rng;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use crate::channel::Channel;
use crate::codec::Encoder;
use crate::context::Context;
use crate::disconnect::Disconnect;
use crate::http::{self, Response};
use crate::metrics::TransportLabel;
use crate::outbox::Outbound;
use crate::resume::{Reply, parse_ask, resume};
use crate::session::{admit, authenticate, operate, teardown};
use crate::tcp::TcpEncoder;

const LABEL: TransportLabel = TransportLabel { transport: "long_poll" };

/// The response header that carries a poll response's sequence number.
pub const SEQ_HEADER: &str = "X-Goim-Poll-Seq";

struct PollSession {
    ch: Arc<Channel>,
    heartbeat: Duration,
    activity: Mutex<Activity>,
    /// One poll at a time per session: a second poll waits for the first. Held across the
    /// poll's wait, hence tokio's mutex.
    polling: tokio::sync::Mutex<()>,
    /// The last response with packets, until acknowledged.
    cursor: Mutex<Cursor>,
    /// Wakes a poll without `ack` that waits to learn whether the previous response was written
    /// (a client may poll again on another connection before that write's task reports). The
    /// [`Receipt`] of that response notifies it.
    written: tokio::sync::Notify,
}

/// The last response that carried packets, held until a poll acknowledges it.
#[derive(Debug, Default)]
struct Cursor {
    /// Its sequence number (`X-Goim-Poll-Seq`); 0 before the first.
    seq: u64,
    /// Its body while unacknowledged.
    held: Option<Bytes>,
    /// Counts the times a held response was handed out (first sent or resent), so a late
    /// report of an earlier attempt cannot overwrite the outcome of the latest.
    attempt: u64,
    write: Write,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Write {
    /// Handed to HTTP, no outcome reported yet.
    #[default]
    Pending,
    /// Written completely (and flushed) to the connection.
    Done,
    /// The write failed, timed out, or never happened.
    Failed,
}

/// What a poll finds in its session's cursor.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// Nothing held (or it was just acknowledged): answer with what the outbox has.
    Fresh,
    /// The held response again: its seq, attempt and body.
    Resend(u64, u64, Bytes),
    /// The held response's write has not reported yet; ask again after it does.
    Wait,
}

/// An `ack` the session cannot have sent.
#[derive(Debug, PartialEq, Eq)]
struct AheadAck;

impl Cursor {
    /// Applies a poll's `ack` (or its absence) to the held response.
    fn settle(&mut self, ack: Option<u64>) -> Result<Settled, AheadAck> {
        if ack.is_some_and(|a| a > self.seq) {
            return Err(AheadAck);
        }
        let Some(body) = &self.held else { return Ok(Settled::Fresh) };
        let acknowledged = match ack {
            Some(a) => a == self.seq,
            None if self.write == Write::Pending => return Ok(Settled::Wait),
            None => self.write == Write::Done,
        };
        if acknowledged {
            self.held = None;
            return Ok(Settled::Fresh);
        }
        let body = body.clone();
        self.attempt += 1;
        self.write = Write::Pending;
        Ok(Settled::Resend(self.seq, self.attempt, body))
    }

    /// Holds a new response's body; returns its seq and attempt.
    fn hold(&mut self, body: Bytes) -> (u64, u64) {
        debug_assert!(self.held.is_none(), "a held response is resent before new packets go out");
        self.seq += 1;
        self.attempt += 1;
        self.held = Some(body);
        self.write = Write::Pending;
        (self.seq, self.attempt)
    }

    /// Records how the write of `attempt` ended, unless a later attempt replaced it.
    fn report(&mut self, attempt: u64, outcome: Write) {
        if self.attempt == attempt && self.write == Write::Pending {
            self.write = outcome;
        }
    }
}

/// Travels with a poll response that carries packets: HTTP [`confirm`](Receipt::confirm)s it
/// once the whole response is written; dropped unconfirmed (a failed or cut-short write, a
/// connection task that ended), it marks the write failed, so the next poll resends.
pub struct Receipt {
    session: Arc<PollSession>,
    seq: u64,
    attempt: u64,
}

impl http::Receipt for Receipt {
    /// The response's sequence number, in the `X-Goim-Poll-Seq` header.
    fn header(&self) -> (&'static str, u64) {
        (SEQ_HEADER, self.seq)
    }

    /// The response was written completely.
    fn confirm(self: Box<Self>) {
        self.report(Write::Done);
    }
}

impl Receipt {
    fn report(&self, outcome: Write) {
        self.session.cursor.lock().report(self.attempt, outcome);
        self.session.written.notify_waiters();
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        // After `confirm` this finds the write reported already and changes nothing.
        self.report(Write::Failed);
    }
}

struct Activity {
    last_seen: Instant,
    /// Polls in progress; a session being polled never expires.
    polls: usize,
    last_renew: Instant,
}

impl PollSession {
    fn touch(&self, poll_delta: isize) {
        let mut a = self.activity.lock();
        a.last_seen = Instant::now();
        a.polls = a.polls.saturating_add_signed(poll_delta);
    }

    fn expired(&self, now: Instant) -> bool {
        let a = self.activity.lock();
        a.polls == 0 && now.duration_since(a.last_seen) > self.heartbeat
    }
}

/// The live long-poll sessions of this comet.
#[derive(Default)]
pub struct PollSessions {
    map: Mutex<HashMap<String, Arc<PollSession>>>,
}

impl PollSessions {
    fn get(&self, sid: Option<&str>) -> Option<Arc<PollSession>> {
        self.map.lock().get(sid?).cloned()
    }

    fn remove(&self, sid: &str) -> Option<Arc<PollSession>> {
        self.map.lock().remove(sid)
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

fn new_sid() -> String {
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

fn unknown() -> Response {
    Response::error("404 Not Found", "unknown_session", "unknown or expired session")
}

pub async fn auth(
    ctx: &Context,
    sessions: &PollSessions,
    peer: SocketAddr,
    cookie: String,
    token: Bytes,
    recover: Option<&str>,
) -> Response {
    let ask = match recover.map(|r| {
        percent_decode(r)
            .ok_or("not URL-encoded")
            .and_then(|b| parse_ask(&b).map_err(|_| "not a recover request"))
    }) {
        None => None,
        Some(Ok(ask)) => Some(ask),
        Some(Err(why)) => {
            ctx.metrics.bad_input.get_or_create(&LABEL).inc();
            return Response::error("400 Bad Request", "bad_recover", &format!("recover is {why}"));
        }
    };
    if ctx.drain.is_started() {
        return Response::error("503 Service Unavailable", "draining", "this comet is draining");
    }
    if sessions.len() >= ctx.config.long_poll.max_sessions {
        return Response::error("503 Service Unavailable", "full", "too many long-poll sessions");
    }
    let session = match authenticate(ctx, peer, cookie, token).await {
        Ok(s) => s,
        Err(reason) => {
            ctx.metrics.disconnect(reason.reason());
            let message = match &reason {
                Disconnect::AuthFailed(m) => m.clone(),
                _ => "logic is unavailable".to_string(),
            };
            if reason == Disconnect::RateLimited {
                return rate_limited(ctx);
            }
            let status = if reason == Disconnect::Unavailable {
                "503 Service Unavailable"
            } else {
                "401 Unauthorized"
            };
            return Response::error(status, reason.reason(), &message);
        }
    };
    let ch = admit(ctx, &session, peer.ip(), &LABEL, None);
    let recovered = match ask {
        Some(ask) => Some(resume(ctx, &ch, &session, ask, Reply::Response).await),
        None => None,
    };
    let sid = new_sid();
    let now = Instant::now();
    let s = PollSession {
        ch,
        heartbeat: session.heartbeat,
        activity: Mutex::new(Activity { last_seen: now, polls: 0, last_renew: now }),
        polling: tokio::sync::Mutex::new(()),
        cursor: Mutex::new(Cursor::default()),
        written: tokio::sync::Notify::new(),
    };
    sessions.map.lock().insert(sid.clone(), Arc::new(s));
    debug!(peer = %peer, key = %session.key, "long-poll session opened");
    let mut body = serde_json::json!({"sid": sid, "heartbeat_ms": session.heartbeat.as_millis() as u64});
    if let Some(r) = recovered {
        body["recover"] = r;
    }
    Response::json("200 OK", body)
}

/// `%XX`-decodes a query value (and `+` as a space); `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    Some(out)
}

/// 429 for an auth over the comet's auth rate: `Retry-After`, and the op-6 body's jittered
/// `reconnect_after_ms` for clients that read it (goim.js does).
fn rate_limited(ctx: &Context) -> Response {
    let after = Disconnect::RateLimited.reconnect_after(&ctx.config).unwrap_or_default();
    let body = serde_json::json!({
        "error": Disconnect::RateLimited.reason(),
        "message": "too many clients are connecting: retry later",
        "reconnect_after_ms": after.as_millis() as u64,
    });
    Response {
        retry_after_secs: http::retry_after_secs(after),
        ..Response::json("429 Too Many Requests", body)
    }
}

pub async fn poll(
    ctx: &Context,
    sessions: &PollSessions,
    sid: Option<&str>,
    wait: Option<&str>,
    ack: Option<&str>,
) -> Response {
    let Some(s) = sessions.get(sid) else { return unknown() };
    let sid = sid.unwrap_or_default();
    let Ok((wait, ack)) = poll_query(wait, ack, ctx.config.long_poll.poll_timeout) else { return bad_ack() };
    s.touch(1);
    let resp = poll_session(ctx, sessions, &s, sid, ack, Instant::now() + wait).await;
    s.touch(-1);
    resp
}

/// An `ack` that is not a number.
#[derive(Debug, PartialEq, Eq)]
pub struct BadAck;

/// A poll's query, parsed: how long it may wait (`timeout`, in seconds, at most `max`; `max`
/// when absent or not a number of seconds) and its `ack`.
pub fn poll_query(
    wait: Option<&str>,
    ack: Option<&str>,
    max: Duration,
) -> Result<(Duration, Option<u64>), BadAck> {
    let wait = wait.and_then(|w| w.parse::<f64>().ok()).filter(|w| w.is_finite() && *w >= 0.0);
    // Longer than a `Duration` holds is longer than `max` too (and must not panic).
    let wait = wait.map(|w| Duration::try_from_secs_f64(w).map_or(max, |d| d.min(max))).unwrap_or(max);
    let ack = ack.map(str::parse::<u64>).transpose().map_err(|_| BadAck)?;
    Ok((wait, ack))
}

fn bad_ack() -> Response {
    Response::error("400 Bad Request", "bad_ack", "ack is not a seq this session sent")
}

async fn poll_session(
    ctx: &Context,
    sessions: &PollSessions,
    s: &Arc<PollSession>,
    sid: &str,
    ack: Option<u64>,
    deadline: Instant,
) -> Response {
    let _turn = s.polling.lock().await;
    match settle(s, ack).await {
        Ok(Settled::Resend(seq, attempt, body)) => {
            ctx.metrics.long_poll_resends.inc();
            debug!(seq, "long-poll response resent");
            return with_receipt(s, seq, attempt, body);
        }
        Ok(_) => {}
        Err(AheadAck) => return bad_ack(),
    }
    let mut items = Vec::new();
    loop {
        items.clear();
        let closing = s.ch.outbox.drain(&mut items);
        if let Some(reason) = closing {
            // Boxed: ending a session (telling logic) would otherwise enlarge every waiting poll.
            return Box::pin(finish(ctx, sessions, s, sid, &items, reason)).await;
        }
        if !items.is_empty() {
            let body = encode(&items);
            let (seq, attempt) = s.cursor.lock().hold(body.clone());
            return with_receipt(s, seq, attempt, body);
        }
        tokio::select! {
            _ = s.ch.outbox.ready() => {}
            _ = sleep_until(deadline) => return Response::empty("204 No Content"),
        }
    }
}

/// Settles the cursor for this poll, waiting (bounded by HTTP's write timeout) for the previous
/// response's write to report when the poll has no `ack`.
async fn settle(s: &PollSession, ack: Option<u64>) -> Result<Settled, AheadAck> {
    loop {
        // Registered before looking, so a report between the look and the wait is not missed.
        let mut reported = std::pin::pin!(s.written.notified());
        reported.as_mut().enable();
        match s.cursor.lock().settle(ack)? {
            Settled::Wait => {}
            settled => return Ok(settled),
        }
        reported.await;
    }
}

fn with_receipt(s: &Arc<PollSession>, seq: u64, attempt: u64, body: Bytes) -> Response {
    let receipt = Receipt { session: s.clone(), seq, attempt };
    Response { receipt: Some(Box::new(receipt)), ..Response::packets(body) }
}

/// The session's last answer: what it calls for, then op 6; the session is gone after it.
async fn finish(
    ctx: &Context,
    sessions: &PollSessions,
    s: &Arc<PollSession>,
    sid: &str,
    items: &[Outbound],
    reason: Disconnect,
) -> Response {
    let mut body = BytesMut::new();
    if reason.flushes_queue() {
        body = BytesMut::from(&encode(items)[..]);
    }
    if reason.tells_client() {
        reason.packet(&ctx.config).encode(&mut body);
    }
    close(ctx, sessions, sid, s, reason).await;
    Response::packets(body.freeze())
}

fn encode(items: &[Outbound]) -> Bytes {
    let mut buf = BytesMut::new();
    for item in items {
        TcpEncoder.encode(item, &mut buf);
    }
    buf.freeze()
}

/// Removes the session and tells logic, once (whoever removes it from the map does it).
async fn close(ctx: &Context, sessions: &PollSessions, sid: &str, s: &Arc<PollSession>, reason: Disconnect) {
    if sessions.remove(sid).is_none() {
        return;
    }
    s.ch.outbox.close(reason.clone());
    ctx.metrics.connections.get_or_create(&LABEL).dec();
    ctx.metrics.disconnect(reason.reason());
    teardown(ctx, &s.ch).await;
}

pub async fn send(ctx: &Context, sessions: &PollSessions, sid: Option<&str>, body: Bytes) -> Response {
    let Some(s) = sessions.get(sid) else { return unknown() };
    let sid = sid.unwrap_or_default();
    s.touch(0);
    let mut input = BytesMut::from(&body[..]);
    let mut replies = BytesMut::new();
    let mut last_renew = s.activity.lock().last_renew;
    loop {
        match decode_stream(&mut input, ctx.config.protocol.max_body) {
            Ok(Some(frame)) => operate(ctx, &s.ch, frame, &mut last_renew).await.encode(&mut replies),
            Ok(None) if input.is_empty() => break,
            Ok(None) => return protocol_error(ctx, sessions, sid, &s, "truncated packet".into()).await,
            Err(e) => return protocol_error(ctx, sessions, sid, &s, e.to_string()).await,
        }
    }
    s.activity.lock().last_renew = last_renew;
    Response::packets(replies.freeze())
}

async fn protocol_error(
    ctx: &Context,
    sessions: &PollSessions,
    sid: &str,
    s: &Arc<PollSession>,
    message: String,
) -> Response {
    ctx.metrics.bad_input.get_or_create(&LABEL).inc();
    close(ctx, sessions, sid, s, Disconnect::Protocol(message.clone())).await;
    Response::error("400 Bad Request", "protocol", &message)
}

/// Expires idle sessions, and closes every session when comet stops.
pub async fn sweep(ctx: Arc<Context>, sessions: Arc<PollSessions>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.shutdown.cancelled() => break,
        }
        let now = Instant::now();
        let expired: Vec<(String, Arc<PollSession>)> = sessions
            .map
            .lock()
            .iter()
            .filter(|(_, s)| s.expired(now))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for (sid, s) in expired {
            close(&ctx, &sessions, &sid, &s, Disconnect::HeartbeatTimeout).await;
        }
    }
    // Give polls in progress a moment to hand their clients op 6, then end what is left.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all: Vec<(String, Arc<PollSession>)> = sessions.map.lock().drain().collect();
    for (_, s) in all {
        // Counted for the reason that stands (a drain's, if it told the session already).
        let reason = s.ch.outbox.close_with(Disconnect::Shutdown);
        ctx.metrics.connections.get_or_create(&LABEL).dec();
        ctx.metrics.disconnect(reason.reason());
        teardown(&ctx, &s.ch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn recover_values_are_percent_decoded_and_bad_escapes_refused() {
        assert_eq!(percent_decode("%7B%22room%22%3A%7B%7D%7D").unwrap(), br#"{"room":{}}"#);
        assert_eq!(percent_decode("a+b").unwrap(), b"a b");
        assert_eq!(percent_decode("%7"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
    }

    #[test]
    fn a_poll_timeout_too_long_for_a_duration_waits_the_longest_poll() {
        // A `timeout` past u64 seconds once made `Duration::from_secs_f64` panic (the task's end).
        let max = Duration::from_secs(30);
        assert_eq!(poll_query(Some("1e20"), None, max), Ok((max, None)));
        assert_eq!(poll_query(Some("18446744073709551616"), Some("3"), max), Ok((max, Some(3))));
        assert_eq!(poll_query(Some("1.5"), None, max), Ok((Duration::from_millis(1500), None)));
        assert_eq!(poll_query(Some("-1"), Some("x"), max), Err(BadAck));
    }

    #[test]
    fn a_poll_without_ack_acknowledges_a_response_that_was_written() {
        let mut c = Cursor::default();
        assert_eq!(c.settle(None), Ok(Settled::Fresh));
        let (seq, attempt) = c.hold(body("a"));
        assert_eq!(seq, 1);
        c.report(attempt, Write::Done);
        assert_eq!(c.settle(None), Ok(Settled::Fresh));
        assert!(c.held.is_none());
    }

    #[test]
    fn a_poll_without_ack_gets_a_failed_response_again_until_one_write_succeeds() {
        let mut c = Cursor::default();
        let (_, attempt) = c.hold(body("a"));
        c.report(attempt, Write::Failed);
        let Ok(Settled::Resend(1, again, b)) = c.settle(None) else { panic!("{c:?}") };
        assert_eq!(b, body("a"));
        c.report(again, Write::Failed);
        let Ok(Settled::Resend(1, third, _)) = c.settle(None) else { panic!("{c:?}") };
        c.report(third, Write::Done);
        assert_eq!(c.settle(None), Ok(Settled::Fresh));
        assert_eq!(c.hold(body("b")).0, 2);
    }

    #[test]
    fn a_poll_without_ack_waits_while_the_previous_write_is_unreported() {
        let mut c = Cursor::default();
        c.hold(body("a"));
        assert_eq!(c.settle(None), Ok(Settled::Wait));
        assert_eq!(c.settle(None), Ok(Settled::Wait), "waiting changes nothing");
    }

    #[test]
    fn ack_of_the_last_seq_drops_it_and_an_older_ack_resends_it_however_it_was_written() {
        let mut c = Cursor::default();
        let (_, attempt) = c.hold(body("a"));
        c.report(attempt, Write::Done);
        let Ok(Settled::Resend(1, again, _)) = c.settle(Some(0)) else { panic!("{c:?}") };
        c.report(again, Write::Failed);
        assert_eq!(c.settle(Some(1)), Ok(Settled::Fresh), "the client says it got it");
        assert_eq!(c.settle(Some(1)), Ok(Settled::Fresh), "nothing held: nothing to resend");
        assert_eq!(c.settle(Some(2)), Err(AheadAck));
    }

    #[test]
    fn a_late_report_of_an_earlier_attempt_does_not_overwrite_the_latest() {
        let mut c = Cursor::default();
        let (_, first) = c.hold(body("a"));
        let Ok(Settled::Resend(1, second, _)) = c.settle(Some(0)) else { panic!("{c:?}") };
        c.report(second, Write::Done);
        c.report(first, Write::Failed);
        assert_eq!(c.write, Write::Done);
        assert_eq!(c.settle(None), Ok(Settled::Fresh));
    }
}
