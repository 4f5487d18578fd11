//! A goim long-polling subscriber (`goim-poll`): `POST /poll/auth` with the token for a session
//! id, then `GET /poll?sid=..&timeout=..` again and again on one kept-alive connection. Each poll
//! that ends empty (204) stands for a heartbeat: polling is what keeps a session alive.

use std::rc::Rc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::http;
use crate::protocol::Who;
use crate::stamp::{Stamp, unix_nanos};
use crate::subscriber::{Ctx, HANDSHAKE_TIMEOUT, dial};

const OP_DISCONNECT: i32 = 6;

struct Poller {
    conn: http::Conn,
    sid: String,
}

async fn open(ctx: &Ctx, who: &Who) -> Result<Poller> {
    let mut conn = http::Conn::new(dial(ctx, who).await?);
    let r = conn.request("POST", "/poll/auth", who.goim_token().as_bytes()).await?;
    if r.status != 200 {
        bail!("poll auth: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    let sid = v["sid"].as_str().ok_or_else(|| anyhow!("poll auth reply has no sid"))?.to_string();
    Ok(Poller { conn, sid })
}

/// Like [`crate::subscriber::hold`], over long-polling.
pub async fn hold(ctx: Rc<Ctx>, who: Who, gate: Rc<Semaphore>) {
    let opened = {
        let _permit = gate.acquire().await;
        tokio::select! {
            r = timeout(HANDSHAKE_TIMEOUT, open(&ctx, &who)) => {
                r.map_err(|_| anyhow!("handshake timed out")).and_then(|r| r)
            }
            _ = ctx.stop.cancelled() => return,
        }
    };
    let mut p = match opened {
        Ok(p) => p,
        Err(e) => {
            ctx.stats.borrow_mut().fail(&e);
            return;
        }
    };
    ctx.stats.borrow_mut().connected += 1;
    let ended = tokio::select! {
        why = run(&ctx, &mut p) => Some(why),
        _ = ctx.stop.cancelled() => None,
    };
    let mut stats = ctx.stats.borrow_mut();
    stats.connected -= 1;
    if let Some(why) = ended {
        stats.dropped += 1;
        stats.error(why);
    }
}

/// Polls until the session ends; returns why.
async fn run(ctx: &Ctx, p: &mut Poller) -> String {
    let wait = ctx.heartbeat.as_secs_f64();
    let path = format!("/poll?sid={}&timeout={wait:.3}", p.sid);
    let limit = ctx.heartbeat + Duration::from_secs(10);
    loop {
        let r = match timeout(limit, p.conn.request("GET", &path, b"")).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return format!("poll: {e:#}"),
            Err(_) => return "poll: no answer".into(),
        };
        match r.status {
            204 => ctx.stats.borrow_mut().heartbeats += 1,
            200 => {
                if let Some(why) = take_packets(ctx, &r.body) {
                    return why;
                }
            }
            s => return format!("poll: HTTP {s} {}", String::from_utf8_lossy(&r.body)),
        }
    }
}

/// Records the pushes in a poll answer; `Some(reason)` when it carries op 6.
fn take_packets(ctx: &Ctx, mut body: &[u8]) -> Option<String> {
    let now = unix_nanos();
    let mut stats = ctx.stats.borrow_mut();
    while body.len() >= 16 {
        let len = i32::from_be_bytes([body[0], body[1], body[2], body[3]]).max(16) as usize;
        let op = i32::from_be_bytes([body[8], body[9], body[10], body[11]]);
        let packet = &body[16..len.min(body.len())];
        if op == OP_DISCONNECT {
            return Some(format!("op 6 {}", String::from_utf8_lossy(packet)));
        }
        if let Some(s) = Stamp::find(packet) {
            stats.record(s.step, now.saturating_sub(s.sent) / 1000);
        }
        body = &body[len.min(body.len())..];
    }
    None
}
