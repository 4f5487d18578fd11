//! The client side: a goim client at the comet Service, a push through logic's Service with the
//! push token, a token the rendered logic accepts, and an auth over WSS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use goim_api::frame::decode_message;
use goim_api::{Frame, Op};
use goim_operator::PushCluster;
use goim_operator::crd::{AuthMode, JwtAlgorithm, SecretKeyRef};
use goim_operator::render::{Owner, secret};
use goim_test_support::Client as CometClient;
use goim_test_support::json_token;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::cluster::{Cluster, pod_behind, service_named, service_target};
use super::pod::Pod;
use super::{OP_PUSH, PUSH_LIMIT, RS256_PRIVATE, RS256_PUBLIC, TLS_SERVER_NAME};
use crate::support;

/// A client authenticates at the comet through the client Service's `tcp` port (so comet
/// reaches logic at its rendered address), and a push sent to logic through its Service's `http`
/// port with the push token reaches it (logic or job finds the comet through discovery); over
/// the `wss` port too when the comet serves one, with the certificate of the TLS Secret.
pub async fn push_reaches_a_client(
    cluster: &Cluster,
    pc: &PushCluster,
    owner: &Owner,
    pods: &[Pod],
    tls_root: Option<Vec<u8>>,
) {
    let comet_svc = service_named(cluster, &owner.names.comet_service());
    let logic_svc = service_named(cluster, &owner.names.logic_service());
    let comet = pod_behind(comet_svc, pods);
    let tcp = SocketAddr::new(cluster.pod_ip, service_target(comet_svc, "tcp", comet));
    let http =
        SocketAddr::new(cluster.pod_ip, service_target(logic_svc, "http", pod_behind(logic_svc, pods)));
    // A user of this run and topology alone (the Redis store is shared with other tests).
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let mid = i64::from(std::process::id()) * 100 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (key, room) = (format!("pods-{mid}"), format!("live://pods-{mid}"));

    let mut client = CometClient::tcp(tcp).await.expect("connect to the comet's tcp Service port");
    let reply = client.auth(&client_token(cluster, pc, owner, mid, &key, &room)).await.unwrap();
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.op, Op::AuthReply.code(), "auth at the comet refused: {body}");
    let url = format!("http://{http}/goim/push/mids?operation={OP_PUSH}&mids={mid}");
    let r = support::http(
        reqwest::Method::POST,
        url,
        "through the rendered cluster",
        Some(&push_token(cluster, pc, owner)),
    )
    .await;
    assert_eq!((r.status, &r.body["code"]), (200, &Value::from(0)), "push: {}", r.raw);
    let got = client.recv_op(OP_PUSH, PUSH_LIMIT).await.expect("the push reaches the client");
    assert_eq!(&got.body[..], b"through the rendered cluster");
    drop(client);

    let wss = comet.container.ports.iter().flatten().any(|p| p.name.as_deref() == Some("wss"));
    assert_eq!(wss, tls_root.is_some(), "a wss port exactly when the topology has a TLS Secret");
    if let Some(root) = tls_root {
        let addr = SocketAddr::new(cluster.pod_ip, service_target(comet_svc, "wss", comet));
        let token = client_token(cluster, pc, owner, mid, &format!("{key}-wss"), &room);
        wss_auth(addr, root, &token).await;
    }
}

/// A token the rendered logic accepts: goim's JSON token, or a JWT signed with the secret or
/// key behind the Secret the pods read.
pub fn client_token(
    cluster: &Cluster,
    pc: &PushCluster,
    owner: &Owner,
    mid: i64,
    key: &str,
    room: &str,
) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let auth = &pc.spec.auth;
    if auth.mode == AuthMode::Json {
        return json_token(mid, key, room, &[OP_PUSH]);
    }
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let mut claims = json!({"mid": mid, "key": key, "room": room, "accepts": [OP_PUSH], "exp": exp});
    if !auth.jwt.issuer.is_empty() {
        claims["iss"] = json!(auth.jwt.issuer);
    }
    if !auth.jwt.audience.is_empty() {
        claims["aud"] = json!(auth.jwt.audience);
    }
    let generated = SecretKeyRef { name: owner.names.generated_secret(), key: secret::JWT_SECRET_KEY.into() };
    let r = auth.jwt.key_secret_ref.clone().unwrap_or(generated);
    let value =
        cluster.secret_value(&r.name, &r.key).unwrap_or_else(|| panic!("no Secret key {}/{}", r.name, r.key));
    let (algorithm, signing) = match auth.jwt.algorithm {
        JwtAlgorithm::HS256 => (Algorithm::HS256, EncodingKey::from_secret(&value).unwrap()),
        JwtAlgorithm::RS256 => {
            assert_eq!(value, RS256_PUBLIC.as_bytes(), "the JWT key Secret holds this test's public key");
            (Algorithm::RS256, EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap())
        }
        JwtAlgorithm::ES256 => panic!("ES256: extend this test with a key pair"),
    };
    encode(&Header::new(algorithm), &claims, &signing).unwrap()
}

/// The push API's bearer token: the referenced Secret's, else the generated one.
pub fn push_token(cluster: &Cluster, pc: &PushCluster, owner: &Owner) -> String {
    let generated = SecretKeyRef { name: owner.names.generated_secret(), key: secret::PUSH_TOKEN_KEY.into() };
    let r = pc.spec.auth.push_token_secret_ref.clone().unwrap_or(generated);
    let value =
        cluster.secret_value(&r.name, &r.key).unwrap_or_else(|| panic!("no Secret key {}/{}", r.name, r.key));
    String::from_utf8(value).unwrap()
}

/// A TLS handshake that trusts only `root`, a WebSocket upgrade at `/sub`, and an accepted auth.
pub async fn wss_auth(addr: SocketAddr, root: Vec<u8>, token: &str) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(root)).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("wss {addr}: {e}"));
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(TLS_SERVER_NAME).unwrap(), tcp)
        .await
        .expect("a TLS handshake with the certificate of the TLS Secret");
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://{TLS_SERVER_NAME}/sub"), tls).await.unwrap();
    let auth = Frame { ver: 1, op: Op::Auth.code(), seq: 1, body: Bytes::copy_from_slice(token.as_bytes()) };
    ws.send(Message::Binary(auth.to_bytes())).await.unwrap();
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an auth reply over wss");
        let Message::Binary(b) = msg.expect("the wss connection stays open").unwrap() else { continue };
        let f = decode_message(b, usize::MAX / 2).unwrap();
        assert_eq!(f.op, Op::AuthReply.code(), "auth over wss refused: {}", String::from_utf8_lossy(&f.body));
        return;
    }
}
