//! Starting a real embedded server on loopback ports, and talking to its HTTP API. What the
//! tests of several crates share (the goim client, child processes, private backends) is in
//! `goim-test-support`, re-exported here.
#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

use goim::{Config, Embedded};
// Each test file uses some of these.
#[allow(unused_imports)]
pub use goim_test_support::{Client, Closed, Transport, eventually, json_token};
use serde_json::Value;

/// The embedded defaults, every listener on 127.0.0.1 port 0.
pub fn config() -> Config {
    let mut c = Config::default();
    c.admin.addr = "127.0.0.1:0".into();
    c.comet.tcp.bind = vec!["127.0.0.1:0".into()];
    c.comet.websocket.bind = vec!["127.0.0.1:0".into()];
    c.logic.http.addr = "127.0.0.1:0".into();
    c.comet.online.renew_interval = Duration::from_millis(100);
    c.shutdown.grace = Duration::from_secs(5);
    c
}

pub async fn start() -> Embedded {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut Config)) -> Embedded {
    let mut c = config();
    f(&mut c);
    Embedded::start(c).await.expect("embedded server starts")
}

pub fn comet_addr(s: &Embedded, t: Transport) -> SocketAddr {
    match t {
        Transport::Tcp => s.addrs.tcp[0],
        Transport::Ws => s.addrs.websocket[0],
    }
}

/// A client of `s` over `t`, logged in with goim's JSON token.
pub async fn login(s: &Embedded, t: Transport, mid: i64, key: &str, room: &str, accepts: &[i32]) -> Client {
    let mut c = Client::connect(t, comet_addr(s, t)).await.expect("connect");
    c.login(mid, key, room, accepts).await.expect("login");
    c
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub raw: String,
}

pub async fn http(
    method: reqwest::Method,
    url: String,
    body: impl Into<Vec<u8>>,
    bearer: Option<&str>,
) -> Reply {
    let mut req = reqwest::Client::new().request(method, url).body(body.into());
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("http request");
    let status = resp.status().as_u16();
    let raw = resp.text().await.expect("http body");
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Reply { status, body, raw }
}

/// POSTs a push to logic; `path` includes the query.
pub async fn push(s: &Embedded, path: &str, body: &'static [u8]) -> Reply {
    http(reqwest::Method::POST, format!("http://{}{}", s.addrs.http, path), body, None).await
}

pub async fn get(s: &Embedded, path: &str) -> Reply {
    http(reqwest::Method::GET, format!("http://{}{}", s.addrs.http, path), b"", None).await
}

/// Asserts a push request succeeded with goim's envelope.
pub async fn push_ok(s: &Embedded, path: &str, body: &'static [u8]) {
    let r = push(s, path, body).await;
    assert_eq!((r.status, &r.body["code"]), (200, &Value::from(0)), "{path}: {}", r.raw);
}

/// The admin `/metrics` text.
pub async fn metrics(s: &Embedded) -> String {
    reqwest::get(format!("http://{}/metrics", s.addrs.admin)).await.unwrap().text().await.unwrap()
}

/// The value of the sample whose line starts with `prefix` (name and labels), or 0.
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub const BOTH: [Transport; 2] = [Transport::Tcp, Transport::Ws];
pub const WAIT: Duration = Duration::from_secs(5);
