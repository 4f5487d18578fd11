//! HTTP long-polling: a session id instead of a socket, the same packets as TCP.
//!
//! - `POST /poll/auth` (body: the op-7 token) → `{"sid", "heartbeat_ms"}`, or 401.
//! - `GET /poll?sid=S[&timeout=secs]` waits for pushes → 200 packets back to back, 204 when the
//!   wait ends empty, 404 for an unknown or expired session.
//! - `POST /poll/send?sid=S` (body: packets) → 200 with the replies back to back.
//!
//! A session is a [`Channel`] like any socket's: pushes queue in its bounded outbox between
//! polls (a session that lets it overflow is disconnected as slow), and a session that neither
//! polls nor sends for its heartbeat timeout expires.

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
use crate::comet::State;
use crate::connection::{admit, authenticate, operate, teardown};
use crate::disconnect::Disconnect;
use crate::http::Response;
use crate::metrics::TransportLabel;
use crate::outbox::Outbound;
use crate::tcp::TcpEncoder;

const LABEL: TransportLabel = TransportLabel { transport: "long_poll" };

struct Session {
    ch: Arc<Channel>,
    heartbeat: Duration,
    activity: Mutex<Activity>,
    /// One poll at a time per session: a second poll waits for the first. Held across the
    /// poll's wait, hence tokio's mutex.
    polling: tokio::sync::Mutex<()>,
}

struct Activity {
    last_seen: Instant,
    /// Polls in progress; a session being polled never expires.
    polls: usize,
    last_renew: Instant,
}

impl Session {
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
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn get(&self, sid: Option<&str>) -> Option<Arc<Session>> {
        self.map.lock().get(sid?).cloned()
    }

    fn remove(&self, sid: &str) -> Option<Arc<Session>> {
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

pub async fn auth(state: &Arc<State>, peer: SocketAddr, cookie: String, token: Bytes) -> Response {
    if state.drain.is_started() {
        return Response::error("503 Service Unavailable", "draining", "this comet is draining");
    }
    if state.sessions.len() >= state.config.long_poll.max_sessions {
        return Response::error("503 Service Unavailable", "full", "too many long-poll sessions");
    }
    let session = match authenticate(state, peer, cookie, token).await {
        Ok(s) => s,
        Err(reason) => {
            state.metrics.disconnect(reason.reason());
            let message = match &reason {
                Disconnect::AuthFailed(m) => m.clone(),
                _ => "logic is unavailable".to_string(),
            };
            let status = if reason == Disconnect::Unavailable {
                "503 Service Unavailable"
            } else {
                "401 Unauthorized"
            };
            return Response::error(status, reason.reason(), &message);
        }
    };
    let ch = admit(state, &session, peer.ip(), &LABEL, None);
    let sid = new_sid();
    let now = Instant::now();
    let s = Session {
        ch,
        heartbeat: session.heartbeat,
        activity: Mutex::new(Activity { last_seen: now, polls: 0, last_renew: now }),
        polling: tokio::sync::Mutex::new(()),
    };
    state.sessions.map.lock().insert(sid.clone(), Arc::new(s));
    debug!(peer = %peer, key = %session.key, "long-poll session opened");
    Response::json(
        "200 OK",
        serde_json::json!({"sid": sid, "heartbeat_ms": session.heartbeat.as_millis() as u64}),
    )
}

pub async fn poll(state: &Arc<State>, sid: Option<&str>, wait: Option<&str>) -> Response {
    let Some(s) = state.sessions.get(sid) else { return unknown() };
    let sid = sid.unwrap_or_default();
    let max = state.config.long_poll.poll_timeout;
    let wait = wait.and_then(|w| w.parse::<f64>().ok()).filter(|w| w.is_finite() && *w >= 0.0);
    let wait = wait.map(|w| Duration::from_secs_f64(w).min(max)).unwrap_or(max);
    s.touch(1);
    let resp = poll_session(state, &s, sid, Instant::now() + wait).await;
    s.touch(-1);
    resp
}

async fn poll_session(state: &Arc<State>, s: &Arc<Session>, sid: &str, deadline: Instant) -> Response {
    let _turn = s.polling.lock().await;
    let mut items = Vec::new();
    loop {
        items.clear();
        let closing = s.ch.outbox.drain(&mut items);
        if let Some(reason) = closing {
            // Boxed: ending a session (telling logic) would otherwise enlarge every waiting poll.
            return Box::pin(finish(state, s, sid, &items, reason)).await;
        }
        if !items.is_empty() {
            return Response::packets(encode(&items));
        }
        tokio::select! {
            _ = s.ch.outbox.ready() => {}
            _ = sleep_until(deadline) => return Response::empty("204 No Content"),
        }
    }
}

/// The session's last answer: what it calls for, then op 6; the session is gone after it.
async fn finish(
    state: &Arc<State>,
    s: &Arc<Session>,
    sid: &str,
    items: &[Outbound],
    reason: Disconnect,
) -> Response {
    let mut body = BytesMut::new();
    if reason.flushes_queue() {
        body = BytesMut::from(&encode(items)[..]);
    }
    if reason.tells_client() {
        reason.packet(&state.config).encode(&mut body);
    }
    close(state, sid, s, reason).await;
    Response::packets(body.freeze())
}

fn encode(items: &[Outbound]) -> Bytes {
    use crate::connection::Encoder;
    let mut buf = BytesMut::new();
    for item in items {
        TcpEncoder.encode(item, &mut buf);
    }
    buf.freeze()
}

/// Removes the session and tells logic, once (whoever removes it from the map does it).
async fn close(state: &State, sid: &str, s: &Arc<Session>, reason: Disconnect) {
    if state.sessions.remove(sid).is_none() {
        return;
    }
    s.ch.outbox.close(reason.clone());
    state.metrics.connections.get_or_create(&LABEL).dec();
    state.metrics.disconnect(reason.reason());
    teardown(state, &s.ch).await;
}

pub async fn send(state: &Arc<State>, sid: Option<&str>, body: Bytes) -> Response {
    let Some(s) = state.sessions.get(sid) else { return unknown() };
    let sid = sid.unwrap_or_default();
    s.touch(0);
    let mut input = BytesMut::from(&body[..]);
    let mut replies = BytesMut::new();
    let mut last_renew = s.activity.lock().last_renew;
    loop {
        match decode_stream(&mut input, state.config.protocol.max_body) {
            Ok(Some(frame)) => operate(state, &s.ch, frame, &mut last_renew).await.encode(&mut replies),
            Ok(None) if input.is_empty() => break,
            Ok(None) => return protocol_error(state, sid, &s, "truncated packet".into()).await,
            Err(e) => return protocol_error(state, sid, &s, e.to_string()).await,
        }
    }
    s.activity.lock().last_renew = last_renew;
    Response::packets(replies.freeze())
}

async fn protocol_error(state: &State, sid: &str, s: &Arc<Session>, message: String) -> Response {
    state.metrics.bad_input.get_or_create(&LABEL).inc();
    close(state, sid, s, Disconnect::Protocol(message.clone())).await;
    Response::error("400 Bad Request", "protocol", &message)
}

/// Expires idle sessions, and closes every session when comet stops.
pub async fn sweep(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => break,
        }
        let now = Instant::now();
        let expired: Vec<(String, Arc<Session>)> = state
            .sessions
            .map
            .lock()
            .iter()
            .filter(|(_, s)| s.expired(now))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for (sid, s) in expired {
            close(&state, &sid, &s, Disconnect::HeartbeatTimeout).await;
        }
    }
    // Give polls in progress a moment to hand their clients op 6, then end what is left.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all: Vec<(String, Arc<Session>)> = state.sessions.map.lock().drain().collect();
    for (_, s) in all {
        // Counted for the reason that stands (a drain's, if it told the session already).
        let reason = s.ch.outbox.close_with(Disconnect::Shutdown);
        state.metrics.connections.get_or_create(&LABEL).dec();
        state.metrics.disconnect(reason.reason());
        teardown(&state, &s.ch).await;
    }
}
