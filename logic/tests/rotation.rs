//! Key rotation without restarts: JWT keys chosen by `kid` from a JWKS file (re-read on change)
//! and a JWKS URL (a real HTTP server on 127.0.0.1, refreshed), with the reloads and refusals
//! counted. The client-facing rotation, over real sockets, is in the root crate's tests/rotation.rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use goim_logic::auth::{Error, KeyError};
use goim_logic::config::{self, AuthMode};
use goim_logic::{Authenticator, Metrics};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys").join(name)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A signing key and its public JWK under `kid`.
struct SigningKey {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    fn hs256(kid: &'static str, secret: &str) -> SigningKey {
        SigningKey { kid, alg: Algorithm::HS256, key: EncodingKey::from_secret(secret.as_bytes()).unwrap() }
    }

    fn pem(kid: &'static str, alg: Algorithm, file: &str) -> SigningKey {
        let pem = std::fs::read(key_path(file)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        SigningKey { kid, alg, key }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.into());
        jwk
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = Header { kid: Some(self.kid.into()), ..Header::new(self.alg) };
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    fn token(&self, mid: i64) -> String {
        self.sign(&json!({"mid": mid, "exp": now() + 600}))
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::to_string(&JwkSet { keys: keys.iter().map(|k| k.jwk()).collect() }).unwrap()
}

/// A file of its own in the temp dir, replaced atomically (write beside, rename over), as a
/// Kubernetes Secret volume swaps its files.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("goim-rotation-{}-{}.json", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
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

fn jwt_auth(f: impl FnOnce(&mut config::JwtConfig)) -> config::AuthConfig {
    let mut auth = config::AuthConfig { mode: AuthMode::Jwt, ..config::AuthConfig::default() };
    auth.jwt.jwks.file_poll = Duration::from_millis(20);
    auth.jwt.jwks.url_refresh = Duration::from_millis(100);
    auth.jwt.jwks.url_retry = Duration::from_millis(50);
    auth.jwt.jwks.url_timeout = Duration::from_millis(500);
    f(&mut auth.jwt);
    auth
}

/// An authenticator whose reload loops run until the returned token is cancelled (on drop).
struct Watched {
    auth: Arc<Authenticator>,
    registry: Registry,
    _stop: tokio_util::sync::DropGuard,
}

fn watched(config: &config::AuthConfig) -> Watched {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let auth = Arc::new(Authenticator::with_metrics(config, metrics).unwrap());
    let stop = CancellationToken::new();
    let (running, token) = (auth.clone(), stop.clone());
    tokio::spawn(async move { running.watch(token).await });
    Watched { auth, registry, _stop: stop.drop_guard() }
}

impl Watched {
    fn verify(&self, token: &str) -> Result<i64, Error> {
        self.auth.verify(token.as_bytes(), "").map(|c| c.mid)
    }

    fn metric(&self, line_prefix: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `token` verifies as `want` (Ok(mid) or the error).
    async fn until(&self, token: &str, want: Result<i64, Error>) {
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.verify(token);
            if got == want {
                return;
            }
            assert!(tokio::time::Instant::now() < end, "still {got:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn until_metric(&self, line_prefix: &str, want: f64) {
        let end = tokio::time::Instant::now() + WAIT;
        while self.metric(line_prefix) != want {
            assert!(
                tokio::time::Instant::now() < end,
                "{line_prefix} is {}, want {want}",
                self.metric(line_prefix)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

const FILE_OK: &str = "goim_logic_key_reloads_total{source=\"jwks_file\",result=\"ok\"}";
const FILE_FAILED: &str = "goim_logic_key_reloads_total{source=\"jwks_file\",result=\"failed\"}";
const FILE_KEYS: &str = "goim_logic_keys_loaded{source=\"jwks_file\"}";
const URL_OK: &str = "goim_logic_key_reloads_total{source=\"jwks_url\",result=\"ok\"}";
const URL_FAILED: &str = "goim_logic_key_reloads_total{source=\"jwks_url\",result=\"failed\"}";
const URL_KEYS: &str = "goim_logic_keys_loaded{source=\"jwks_url\"}";

#[tokio::test]
async fn a_rotated_jwks_file_admits_new_tokens_at_once_and_old_ones_until_their_key_is_removed() {
    let old = SigningKey::pem("2026-01", Algorithm::RS256, "rs256.key.pem");
    let new = SigningKey::pem("2026-02", Algorithm::ES256, "es256.key.pem");
    let file = TempFile::new(&jwks(&[&old]));
    let w = watched(&jwt_auth(|j| j.jwks.file = Some(file.path().into())));
    let (old_token, new_token) = (old.token(1), new.token(2));
    assert_eq!(w.verify(&old_token), Ok(1));
    assert_eq!(w.verify(&new_token), Err(Error::UnknownKey));
    assert_eq!(w.metric(FILE_KEYS), 1.0);

    // Publish the new key beside the old one: both verify.
    file.replace(&jwks(&[&old, &new]));
    w.until(&new_token, Ok(2)).await;
    assert_eq!(w.verify(&old_token), Ok(1));
    assert_eq!((w.metric(FILE_OK), w.metric(FILE_KEYS)), (1.0, 2.0));

    // Retire the old key: its tokens are refused from the next reload, the new ones still verify.
    file.replace(&jwks(&[&new]));
    w.until(&old_token, Err(Error::UnknownKey)).await;
    assert_eq!(w.verify(&new_token), Ok(2));
    assert_eq!((w.metric(FILE_OK), w.metric(FILE_KEYS), w.metric(FILE_FAILED)), (2.0, 1.0, 0.0));
}

#[tokio::test]
async fn a_broken_new_jwks_file_is_refused_counted_and_the_last_good_keys_stay() {
    let good = SigningKey::hs256("a", "secret-a");
    let other = SigningKey::hs256("b", "secret-b");
    let file = TempFile::new(&jwks(&[&good]));
    let w = watched(&jwt_auth(|j| j.jwks.file = Some(file.path().into())));
    let token = good.token(7);

    file.replace("{\"keys\": [");
    w.until_metric(FILE_FAILED, 1.0).await;
    assert_eq!(w.verify(&token), Ok(7));
    // A duplicate kid, then a set with no usable key: refused too, each counted once.
    file.replace(&jwks(&[&good, &good]));
    w.until_metric(FILE_FAILED, 2.0).await;
    file.replace(r#"{"keys":[{"kty":"oct","kid":"x","k":"eA","use":"enc"}]}"#);
    w.until_metric(FILE_FAILED, 3.0).await;
    assert_eq!(w.verify(&token), Ok(7));
    // A bad file that stays is not counted again on every poll.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(w.metric(FILE_FAILED), 3.0);
    assert_eq!((w.metric(FILE_OK), w.metric(FILE_KEYS)), (0.0, 1.0));

    // A good file again loads.
    file.replace(&jwks(&[&other]));
    w.until(&other.token(8), Ok(8)).await;
    assert_eq!(w.verify(&token), Err(Error::UnknownKey));
}

#[tokio::test]
async fn an_expired_token_of_a_known_kid_is_refused_as_expired() {
    let key = SigningKey::hs256("a", "secret-a");
    let file = TempFile::new(&jwks(&[&key]));
    let w = watched(&jwt_auth(|j| j.jwks.file = Some(file.path().into())));
    let expired = key.sign(&json!({"mid": 1, "exp": now() - 3600}));
    assert_eq!(w.verify(&expired), Err(Error::Expired));
}

#[test]
fn beside_a_jwks_the_single_key_verifies_tokens_without_a_kid() {
    let key = SigningKey::hs256("a", "secret-a");
    let file = TempFile::new(&jwks(&[&key]));
    let single = EncodingKey::from_secret(b"single-secret").unwrap();
    let no_kid =
        jsonwebtoken::encode(&Header::default(), &json!({"mid": 3, "exp": now() + 60}), &single).unwrap();

    let with_single = jwt_auth(|j| {
        j.jwks.file = Some(file.path().into());
        j.secret = Some("single-secret".into());
    });
    let auth = Authenticator::new(&with_single).unwrap();
    assert_eq!(auth.verify(no_kid.as_bytes(), "").map(|c| c.mid), Ok(3));
    assert_eq!(auth.verify(key.token(4).as_bytes(), "").map(|c| c.mid), Ok(4));

    let jwks_only = jwt_auth(|j| j.jwks.file = Some(file.path().into()));
    let auth = Authenticator::new(&jwks_only).unwrap();
    assert_eq!(auth.verify(no_kid.as_bytes(), ""), Err(Error::NoKeyId));
    assert_eq!(Error::NoKeyId.reason(), "no_kid");
    assert_eq!(Error::UnknownKey.reason(), "unknown_kid");
}

#[test]
fn without_a_jwks_a_kid_in_the_header_is_ignored_as_before() {
    let key = SigningKey::hs256("whatever", "the-secret");
    let auth = Authenticator::new(&jwt_auth(|j| j.secret = Some("the-secret".into()))).unwrap();
    assert_eq!(auth.verify(key.token(5).as_bytes(), "").map(|c| c.mid), Ok(5));
}

#[test]
fn a_jwks_key_admits_only_its_own_algorithm() {
    // The classic confusion: an HS256 token "signed" with the RSA public key's bytes, naming the
    // RSA key's kid. The RSA key admits RS256 only.
    let rsa = SigningKey::pem("rsa", Algorithm::RS256, "rs256.key.pem");
    let file = TempFile::new(&jwks(&[&rsa]));
    let auth = Authenticator::new(&jwt_auth(|j| j.jwks.file = Some(file.path().into()))).unwrap();
    let public = std::fs::read(key_path("rs256.pub.pem")).unwrap();
    let header = Header { kid: Some("rsa".into()), ..Header::new(Algorithm::HS256) };
    let forged = jsonwebtoken::encode(
        &header,
        &json!({"mid": 1, "exp": now() + 60}),
        &EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    assert_eq!(auth.verify(forged.as_bytes(), ""), Err(Error::WrongAlgorithm));
    assert_eq!(auth.verify(rsa.token(6).as_bytes(), "").map(|c| c.mid), Ok(6));
}

#[test]
fn a_jwks_file_that_cannot_be_used_at_start_stops_logic_with_the_reason() {
    let file = TempFile::new("not json");
    let err = Authenticator::new(&jwt_auth(|j| j.jwks.file = Some(file.path().into()))).unwrap_err();
    assert!(matches!(err, KeyError::Jwks { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("auth.jwt.jwks.file: ") && err.to_string().contains("not a JWK Set"),
        "{err}"
    );
    let missing = jwt_auth(|j| j.jwks.file = Some(std::env::temp_dir().join("goim-no-such-jwks.json")));
    assert!(Authenticator::new(&missing).unwrap_err().to_string().contains("cannot read"));
    let big = TempFile::new(&jwks(&[&SigningKey::hs256("a", "secret-a")]));
    let small = jwt_auth(|j| {
        j.jwks.file = Some(big.path().into());
        j.jwks.max_bytes = 10;
    });
    assert!(
        Authenticator::new(&small).unwrap_err().to_string().contains("larger than the limit of 10 bytes")
    );
}

/// What the test JWKS server answers: a status and a body, or nothing at all (a hung server).
#[derive(Clone)]
enum Answer {
    Serve(u16, String),
    Hang,
}

/// A minimal HTTP/1.1 server on 127.0.0.1: every request gets the current answer, then the
/// connection closes. Counts requests.
struct JwksServer {
    url: String,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(answer: Answer) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let (shared, count) = (answer.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let (answer, count) = (shared.lock().clone(), count.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    match answer {
                        Answer::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                        Answer::Serve(status, body) => {
                            let head = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            );
                            let _ = socket.write_all(head.as_bytes()).await;
                            let _ = socket.write_all(body.as_bytes()).await;
                        }
                    }
                });
            }
        });
        JwksServer { url, answer, requests }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock() = answer;
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_at_start_and_refreshed_and_a_failing_fetch_keeps_the_last_good_keys() {
    let (a, b) =
        (SigningKey::hs256("a", "secret-a"), SigningKey::pem("b", Algorithm::RS256, "rs256-other.key.pem"));
    let server = JwksServer::start(Answer::Serve(200, jwks(&[&a]))).await;
    let w = watched(&jwt_auth(|j| j.jwks.url = Some(server.url.clone())));
    w.until(&a.token(1), Ok(1)).await;
    assert_eq!(w.metric(URL_KEYS), 1.0);

    // The provider rotates: b is added, then a removed; each shows at the next refresh.
    server.answer(Answer::Serve(200, jwks(&[&a, &b])));
    w.until(&b.token(2), Ok(2)).await;
    assert_eq!(w.verify(&a.token(1)), Ok(1));
    server.answer(Answer::Serve(200, jwks(&[&b])));
    w.until(&a.token(1), Err(Error::UnknownKey)).await;

    // The provider fails: an error status, a broken document, a hung server. Each is counted
    // and b keeps verifying.
    for (i, bad) in [Answer::Serve(503, "down".into()), Answer::Serve(200, "{".into()), Answer::Hang]
        .into_iter()
        .enumerate()
    {
        let before = w.metric(URL_FAILED);
        server.answer(bad);
        w.until_metric(URL_FAILED, before + 1.0).await;
        assert_eq!(w.verify(&b.token(3)), Ok(3), "failure {i}");
    }
    assert_eq!(w.metric(URL_KEYS), 1.0);
    assert!(w.metric(URL_OK) >= 3.0);
}

#[tokio::test]
async fn a_jwks_response_over_max_bytes_is_refused() {
    let a = SigningKey::hs256("a", "secret-a");
    let server = JwksServer::start(Answer::Serve(200, jwks(&[&a]))).await;
    let w = watched(&jwt_auth(|j| {
        j.jwks.url = Some(server.url.clone());
        j.jwks.max_bytes = 16;
    }));
    w.until_metric(URL_FAILED, 1.0).await;
    assert_eq!(w.verify(&a.token(1)), Err(Error::UnknownKey));
    assert_eq!(w.metric(URL_OK), 0.0);
}

#[tokio::test]
async fn a_token_with_an_unknown_kid_makes_the_url_be_fetched_early() {
    let (a, b) = (SigningKey::hs256("a", "secret-a"), SigningKey::hs256("b", "secret-b"));
    let server = JwksServer::start(Answer::Serve(200, jwks(&[&a]))).await;
    // A refresh an hour away: only an early fetch can bring b in.
    let w = watched(&jwt_auth(|j| {
        j.jwks.url = Some(server.url.clone());
        j.jwks.url_refresh = Duration::from_secs(3600);
        j.jwks.url_retry = Duration::from_millis(50);
    }));
    w.until(&a.token(1), Ok(1)).await;
    server.answer(Answer::Serve(200, jwks(&[&a, &b])));
    assert_eq!(w.verify(&b.token(2)), Err(Error::UnknownKey));
    w.until(&b.token(2), Ok(2)).await;
    assert!(server.requests.load(Ordering::SeqCst) >= 2);
}
