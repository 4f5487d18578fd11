//! Real auth: JWT on, JSON tokens off, and a rejected token never receives anything.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goim_api::Op;
use goim_test_support::json_token;
use goim_test_support::{Client, Transport};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use support::*;

const SECRET: &str = "test-secret";

async fn jwt_server() -> goim::Embedded {
    start_with(|c| {
        c.logic.auth.mode = goim_logic::config::AuthMode::Jwt;
        c.logic.auth.jwt.secret = Some(SECRET.into());
    })
    .await
}

fn token(claims: serde_json::Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn refused(s: &goim::Embedded, t: Transport, tok: &str) -> String {
    let mut c = Client::connect(t, comet_addr(s, t)).await.unwrap();
    let reply = c.auth(tok).await.unwrap();
    assert_eq!(reply.op, Op::DisconnectReply.code(), "{t:?}: expected op 6, got {reply:?}");
    let (after, _) = c.until_closed(WAIT).await.unwrap();
    assert!(after.is_empty(), "nothing after op 6: {after:?}");
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["reason"], "auth_failed");
    v["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_valid_jwt_authenticates_and_its_claims_route_pushes() {
    let s = jwt_server().await;
    for t in BOTH {
        let mut c = Client::connect(t, comet_addr(&s, t)).await.unwrap();
        let tok = token(
            json!({"mid": 77, "key": "jwt-dev", "room": "live://9", "accepts": [1000], "exp": now() + 60}),
        );
        let reply = c.auth(&tok).await.unwrap();
        assert_eq!(reply.op, Op::AuthReply.code());
        push_ok(&s, "/goim/push/mids?operation=1000&mids=77", b"by mid").await;
        push_ok(&s, "/goim/push/room?operation=1000&type=live&room=9", b"by room").await;
        assert_eq!(&c.recv_op(1000, WAIT).await.unwrap().body[..], b"by mid", "{t:?}");
        assert_eq!(&c.recv_op(1000, WAIT).await.unwrap().body[..], b"by room", "{t:?}");
    }
}

#[tokio::test]
async fn an_expired_jwt_gets_op_6_and_a_close() {
    let s = jwt_server().await;
    for t in BOTH {
        let tok = token(json!({"mid": 1, "exp": now() - 3600}));
        let why = refused(&s, t, &tok).await;
        assert!(why.to_lowercase().contains("expired"), "{why}");
    }
}

#[tokio::test]
async fn a_jwt_signed_with_another_key_is_refused() {
    let s = jwt_server().await;
    let forged = encode(
        &Header::default(),
        &json!({"mid": 1, "exp": now() + 60}),
        &EncodingKey::from_secret(b"not the secret").unwrap(),
    )
    .unwrap();
    refused(&s, Transport::Tcp, &forged).await;
}

#[tokio::test]
async fn goims_json_token_is_refused_when_jwt_is_on() {
    let s = jwt_server().await;
    refused(&s, Transport::Ws, &json_token(1, "k", "live://1", &[1000])).await;
}

#[tokio::test]
async fn a_refused_connection_never_joins_a_room_or_receives_a_push() {
    let s = jwt_server().await;
    let mut c = Client::connect(Transport::Tcp, s.addrs.tcp[0]).await.unwrap();
    let reply = c.auth(&json_token(5, "sneaky", "live://x", &[1000])).await.unwrap();
    assert_eq!(reply.op, Op::DisconnectReply.code());
    push_ok(&s, "/goim/push/room?operation=1000&type=live&room=x", b"secret").await;
    let (after, _) = c.until_closed(WAIT).await.unwrap();
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(s.comet().room_online("live://x"), 0);
    let m = metrics(&s).await;
    assert_eq!(sample(&m, "goim_comet_disconnects_total{reason=\"auth_failed\"}"), 1.0, "{m}");
}

#[tokio::test]
async fn garbage_instead_of_goims_json_token_is_refused_in_json_mode() {
    let s = start().await;
    let why = refused(&s, Transport::Tcp, "{not json").await;
    assert!(!why.is_empty());
    let _ = Duration::ZERO;
}
