//! WSS: auth, heartbeat and a push over TLS with a freshly generated self-signed certificate,
//! against an in-process comet (`support`); the push goes straight to the comet's room.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use goim_api::frame::{decode_message, split_packets};
use goim_api::{Frame, Op};
use goim_test_support::json_token;
use rustls::pki_types::ServerName;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn auth_heartbeat_and_a_push_work_over_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("goim-comet-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let s = start_with(
        |c| {
            c.websocket.tls.bind = vec!["127.0.0.1:0".into()];
            c.websocket.tls.cert = Some(cert_path.clone());
            c.websocket.tls.key = Some(key_path.clone());
        },
        LOGIC_HEARTBEAT,
    )
    .await;
    let addr = s.wss.expect("a wss listener");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("tls handshake with the configured certificate");
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/sub", tls).await.unwrap();

    let auth =
        Frame { ver: 1, op: 7, seq: 1, body: Bytes::from(json_token(8, "tls", "live://tls", &[1000])) };
    ws.send(Message::Binary(auth.to_bytes())).await.unwrap();
    let hb = Frame { ver: 1, op: Op::Heartbeat.code(), seq: 2, body: Bytes::new() };
    ws.send(Message::Binary(hb.to_bytes())).await.unwrap();
    let mut ops = Vec::new();
    let mut pushed = None;
    while let Ok(Some(msg)) = tokio::time::timeout(WAIT, ws.next()).await {
        let Message::Binary(b) = msg.unwrap() else { continue };
        let f = decode_message(b, usize::MAX / 2).unwrap();
        ops.push(f.op);
        if f.op == Op::HeartbeatReply.code() {
            push_room(&s, "live://tls", 1000, b"over tls");
        }
        if f.op == Op::Raw.code() {
            pushed = split_packets(f.body).next().map(|p| p.unwrap());
            break;
        }
    }
    assert_eq!(&ops[..2], &[Op::AuthReply.code(), Op::HeartbeatReply.code()]);
    let pushed = pushed.expect("a push over tls");
    assert_eq!((pushed.op, &pushed.body[..]), (1000, &b"over tls"[..]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_certificate_fails_at_start_naming_the_field() {
    let err = try_start_with(
        |c| {
            c.websocket.tls.bind = vec!["127.0.0.1:0".into()];
            c.websocket.tls.cert = Some("/nonexistent/cert.pem".into());
            c.websocket.tls.key = Some("/nonexistent/key.pem".into());
        },
        LOGIC_HEARTBEAT,
    )
    .await
    .err()
    .expect("start fails");
    assert!(format!("{err:#}").contains("comet.websocket.tls.cert"), "{err:#}");
}
