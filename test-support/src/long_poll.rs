//! A goim long-poll client over comet's HTTP port (`POST /poll/auth`, `GET /poll`,
//! `POST /poll/send`), for the tests of comet alone and of the tiers together. Its calls panic
//! on a transport error: a test that reaches one has failed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use goim_api::Frame;
use goim_api::frame::split_packets;

use crate::json_token;

/// One long-poll session.
pub struct Poller {
    base: String,
    sid: String,
    http: reqwest::Client,
}

impl Poller {
    /// Authenticates at `addr` (comet's HTTP port) with goim's JSON token; asserts a 200 with
    /// a session id and a heartbeat.
    pub async fn open(addr: SocketAddr, mid: i64, key: &str, room: &str, accepts: &[i32]) -> Poller {
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{base}/poll/auth"))
            .body(json_token(mid, key, room, accepts))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert!(v["heartbeat_ms"].as_u64().unwrap() > 0, "{v}");
        Poller { base, sid: v["sid"].as_str().unwrap().to_string(), http }
    }

    /// Authenticates like [`Poller::open`], resuming from `ask` (op 18's JSON, sent URL-encoded
    /// as `?recover=`); returns the poller and the response's `recover` answer.
    pub async fn resume(
        addr: SocketAddr,
        mid: i64,
        key: &str,
        room: &str,
        ask: &serde_json::Value,
    ) -> (Poller, serde_json::Value) {
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        let encoded: String = ask
            .to_string()
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let resp = http
            .post(format!("{base}/poll/auth?recover={encoded}"))
            .body(json_token(mid, key, room, &[1000]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        let poller = Poller { base, sid: v["sid"].as_str().unwrap().to_string(), http };
        (poller, v["recover"].clone())
    }

    /// A poller of the same comet for session `sid` (one it may not know).
    pub fn for_session(&self, sid: &str) -> Poller {
        Poller { base: self.base.clone(), sid: sid.to_owned(), http: self.http.clone() }
    }

    /// `http://host:port` of the comet.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// One poll: status and the packets it carried.
    pub async fn poll(&self, timeout_s: f64) -> (u16, Vec<Frame>) {
        let url = format!("{}/poll?sid={}&timeout={timeout_s}", self.base, self.sid);
        frames(self.http.get(url).send().await.unwrap()).await
    }

    /// Polls until `n` business packets arrived or `limit` passed (on the tokio clock, so paused
    /// time works); asserts every poll answers 200 or 204.
    pub async fn collect(&self, n: usize, limit: Duration) -> Vec<Frame> {
        let mut got = Vec::new();
        let end = tokio::time::Instant::now() + limit;
        while got.len() < n && tokio::time::Instant::now() < end {
            let (status, frames) = self.poll(1.0).await;
            assert!(status == 200 || status == 204, "poll status {status}");
            got.extend(frames);
        }
        got
    }

    /// Sends `frames` (`POST /poll/send`): status and the packets of the reply.
    pub async fn send(&self, frames: &[Frame]) -> (u16, Vec<Frame>) {
        let mut body = BytesMut::new();
        for f in frames {
            f.encode(&mut body);
        }
        let url = format!("{}/poll/send?sid={}", self.base, self.sid);
        self::frames(self.http.post(url).body(body.freeze()).send().await.unwrap()).await
    }
}

/// A response's status, and its packets when it is a 200.
async fn frames(resp: reqwest::Response) -> (u16, Vec<Frame>) {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    let frames = if status == 200 { split_packets(body).collect::<Result<_, _>>().unwrap() } else { vec![] };
    (status, frames)
}
