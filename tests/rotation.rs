//! Key rotation without restarts, against a real server and real clients: the JWT signing key
//! rotated through a JWKS file while clients keep connecting, a JWKS URL served over HTTP and
//! refreshed, and push API tokens rotated through the config and a token file.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goim_api::Op;
use goim_test_support::{Client, Transport};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A signing key and, under `kid`, its public JWK.
struct SigningKey {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    fn pem(kid: &'static str, alg: Algorithm, file: &str) -> SigningKey {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("logic/tests/keys").join(file);
        let pem = std::fs::read(path).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        SigningKey { kid, alg, key }
    }

    fn hs256(kid: &'static str, secret: &str) -> SigningKey {
        SigningKey { kid, alg: Algorithm::HS256, key: EncodingKey::from_secret(secret.as_bytes()).unwrap() }
    }

    fn token_until(&self, mid: i64, exp: u64) -> String {
        let header = Header { kid: Some(self.kid.into()), ..Header::new(self.alg) };
        jsonwebtoken::encode(&header, &json!({"mid": mid, "accepts": [1000], "exp": exp}), &self.key).unwrap()
    }

    fn token(&self, mid: i64) -> String {
        self.token_until(mid, now() + 600)
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    let keys = keys
        .iter()
        .map(|k| {
            let mut jwk = Jwk::from_encoding_key(&k.key, k.alg).unwrap();
            jwk.common.key_id = Some(k.kid.into());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// A temp file replaced atomically (written beside, renamed over), as a Secret volume updates.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("goim-rotation-e2e-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let file = TempFile(std::env::temp_dir().join(name));
        file.replace(contents);
        file
    }

    fn replace(&self, contents: &str) {
        let staged = self.0.with_extension("staged");
        std::fs::write(&staged, contents).unwrap();
        std::fs::rename(&staged, &self.0).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Connects over `t` and authenticates: the client, or the op-6 reply's `message`.
async fn connect(s: &goim::Embedded, t: Transport, token: &str) -> Result<Client, String> {
    let mut c = Client::connect(t, comet_addr(s, t)).await.unwrap();
    let reply = c.auth(token).await.unwrap();
    if reply.op == Op::AuthReply.code() {
        return Ok(c);
    }
    assert_eq!(reply.op, Op::DisconnectReply.code(), "{t:?}: {reply:?}");
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["reason"], "auth_failed");
    Err(v["message"].as_str().unwrap_or_default().to_string())
}

/// Connects until `token` gets the outcome `accepted` says, within `WAIT`.
async fn until_connect(s: &goim::Embedded, token: &str, accepted: bool) -> Result<Client, String> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let got = connect(s, Transport::Tcp, token).await;
        if got.is_ok() == accepted {
            return got;
        }
        assert!(tokio::time::Instant::now() < end, "still {:?}", got.err());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn jwks_server(f: impl FnOnce(&mut goim_logic::config::JwksConfig)) -> impl FnOnce(&mut goim::Config) {
    move |c| {
        c.logic.auth.mode = goim_logic::config::AuthMode::Jwt;
        c.logic.auth.jwt.jwks.file_poll = Duration::from_millis(50);
        c.logic.auth.jwt.jwks.url_refresh = Duration::from_millis(200);
        f(&mut c.logic.auth.jwt.jwks);
    }
}

#[tokio::test]
async fn rotating_the_signing_key_while_clients_connect_refuses_none_until_the_old_key_is_removed() {
    let old = SigningKey::pem("2026-01", Algorithm::RS256, "rs256.key.pem");
    let new = SigningKey::pem("2026-02", Algorithm::ES256, "es256.key.pem");
    let file = TempFile::new(&jwks(&[&old]));
    let s = start_with(jwks_server(|j| j.file = Some(file.path().into()))).await;
    let mut kept = connect(&s, Transport::Ws, &old.token(100)).await.expect("old key before rotation");
    assert_eq!(
        connect(&s, Transport::Tcp, &new.token(200)).await.err().as_deref(),
        Some("unknown token key id")
    );

    // Clients with old tokens connect throughout the rotation, over both transports.
    let stop = Arc::new(AtomicBool::new(false));
    let connector = {
        let (stop, addrs, token) = (stop.clone(), s.addrs.clone(), old.token(101));
        tokio::spawn(async move {
            let (mut accepted, mut refused) = (0, Vec::new());
            for t in BOTH.iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let addr = if *t == Transport::Tcp { addrs.tcp[0] } else { addrs.websocket[0] };
                let mut c = Client::connect(*t, addr).await.unwrap();
                let reply = c.auth(&token).await.unwrap();
                if reply.op == Op::AuthReply.code() { accepted += 1 } else { refused.push(reply) }
            }
            (accepted, refused)
        })
    };

    // Publish the new key beside the old: new tokens work from the next poll.
    file.replace(&jwks(&[&old, &new]));
    let mut fresh = until_connect(&s, &new.token(200), true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let (accepted, refused) = connector.await.unwrap();
    assert!(accepted > 0 && refused.is_empty(), "{accepted} accepted, refused: {refused:?}");
    eprintln!("rotation: {accepted} connects with the old key while the new one was published, none refused");
    push_ok(&s, "/goim/push/mids?operation=1000&mids=100&mids=200", b"during").await;
    assert_eq!(&kept.recv_op(1000, WAIT).await.unwrap().body[..], b"during");
    assert_eq!(&fresh.recv_op(1000, WAIT).await.unwrap().body[..], b"during");

    // Retire the old key: old tokens are refused from the next poll, new ones keep working.
    file.replace(&jwks(&[&new]));
    let why = until_connect(&s, &old.token(102), false).await.err().unwrap();
    assert_eq!(why, "unknown token key id");
    connect(&s, Transport::Ws, &new.token(201)).await.expect("new key after rotation");
    // An expired token of the live key is refused.
    let expired = connect(&s, Transport::Tcp, &new.token_until(202, now() - 3600)).await.err().unwrap();
    assert_eq!(expired, "token expired");
    // A connection made with the old key stays: tokens are checked when a connection is made.
    push_ok(&s, "/goim/push/mids?operation=1000&mids=100", b"after").await;
    assert_eq!(&kept.recv_op(1000, WAIT).await.unwrap().body[..], b"after");

    let m = metrics(&s).await;
    assert_eq!(sample(&m, "goim_logic_key_reloads_total{source=\"jwks_file\",result=\"ok\"}"), 2.0, "{m}");
    assert_eq!(
        sample(&m, "goim_logic_key_reloads_total{source=\"jwks_file\",result=\"failed\"}"),
        0.0,
        "{m}"
    );
    assert_eq!(sample(&m, "goim_logic_keys_loaded{source=\"jwks_file\"}"), 1.0, "{m}");
    assert!(sample(&m, "goim_logic_connects_rejected_total{reason=\"unknown_kid\"}") >= 2.0, "{m}");
    assert_eq!(sample(&m, "goim_logic_connects_rejected_total{reason=\"expired\"}"), 1.0, "{m}");
    s.stop().await;
}

/// A minimal HTTP/1.1 server on 127.0.0.1 that answers every request with the current body.
async fn serve_jwks(body: Arc<std::sync::Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_jwks_url_is_fetched_at_start_and_refreshed_for_connecting_clients() {
    let (a, b) =
        (SigningKey::hs256("a", "secret-a"), SigningKey::pem("b", Algorithm::RS256, "rs256-other.key.pem"));
    let body = Arc::new(std::sync::Mutex::new(jwks(&[&a])));
    let url = serve_jwks(body.clone()).await;
    let s = start_with(jwks_server(|j| j.url = Some(url))).await;
    until_connect(&s, &a.token(1), true).await.unwrap();
    *body.lock().unwrap() = jwks(&[&b]);
    until_connect(&s, &b.token(2), true).await.unwrap();
    assert_eq!(connect(&s, Transport::Ws, &a.token(3)).await.err().as_deref(), Some("unknown token key id"));
    let m = metrics(&s).await;
    assert!(sample(&m, "goim_logic_key_reloads_total{source=\"jwks_url\",result=\"ok\"}") >= 2.0, "{m}");
    assert_eq!(sample(&m, "goim_logic_keys_loaded{source=\"jwks_url\"}"), 1.0, "{m}");
    s.stop().await;
}

async fn push_with(s: &goim::Embedded, token: Option<&str>) -> u16 {
    let url = format!("http://{}/goim/push/all?operation=1000", s.addrs.http);
    http(reqwest::Method::POST, url, &b"x"[..], token).await.status
}

#[tokio::test]
async fn push_tokens_rotate_through_the_config_list_and_the_token_file() {
    let file = TempFile::new("# push tokens\nfile-old\nfile-new\n");
    let s = start_with(|c| {
        c.logic.http.push_token = Some("single".into());
        c.logic.http.push_tokens = vec!["listed-old".into(), "listed-new".into()];
        c.logic.http.push_token_file = Some(file.path().into());
        c.logic.http.push_token_file_poll = Duration::from_millis(50);
    })
    .await;
    for token in ["single", "listed-old", "listed-new", "file-old", "file-new"] {
        assert_eq!(push_with(&s, Some(token)).await, 200, "{token}");
    }
    assert_eq!(push_with(&s, Some("file-ol")).await, 401);
    assert_eq!(push_with(&s, None).await, 401);

    // The old file token is removed: refused from the next poll, the rest still accepted.
    file.replace("file-new\n");
    assert!(eventually(WAIT, || async { push_with(&s, Some("file-old")).await == 401 }).await);
    for token in ["single", "listed-old", "file-new"] {
        assert_eq!(push_with(&s, Some(token)).await, 200, "{token}");
    }
    // A file with no token is refused, and does not open or close the API.
    file.replace("# emptied by mistake\n");
    let failed = "goim_logic_key_reloads_total{source=\"push_token_file\",result=\"failed\"}";
    assert!(eventually(WAIT, || async { sample(&metrics(&s).await, failed) == 1.0 }).await);
    assert_eq!(push_with(&s, Some("file-new")).await, 200);
    assert_eq!(push_with(&s, None).await, 401);

    let m = metrics(&s).await;
    assert_eq!(
        sample(&m, "goim_logic_key_reloads_total{source=\"push_token_file\",result=\"ok\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(sample(&m, "goim_logic_push_tokens_loaded{source=\"file\"}"), 1.0, "{m}");
    assert_eq!(sample(&m, "goim_logic_push_tokens_loaded{source=\"config\"}"), 3.0, "{m}");
    assert!(sample(&m, "goim_logic_push_auth_failures_total{reason=\"wrong\"}") >= 2.0, "{m}");
    assert_eq!(sample(&m, "goim_logic_push_auth_failures_total{reason=\"missing\"}"), 2.0, "{m}");
    s.stop().await;
}
