//! The Redis store over TLS (`rediss://`) against a real `redis-server` started here with
//! `--tls-port`, on certificates made by the test: the store contract over TLS, the server
//! checked against `[store.redis.tls] ca_file` (and refused when it does not chain to it), and
//! mutual TLS (`tls-auth-clients yes`) with and without a client certificate.
//!
//! Needs `GOIM_TEST_REDIS_SERVER` (set by `scripts/services.sh env`); without it these tests
//! fail, they never skip. Run with `--include-ignored`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use goim_logic::store::{self, RedisConfig, RedisTls};
use goim_logic::{RedisStore, Store};
use goim_test_support::services::{Redis, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate signed by it,
/// written as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = ca("goim-rs test CA");
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write("ca.crt", ca.pem());
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        write("server.crt", server.pem());
        write("server.key", server_key.serialize_pem());
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params.distinguished_name.push(DnType::CommonName, "goim-logic");
        let client = client_params.signed_by(&client_key, &ca).unwrap();
        write("client.crt", client.pem());
        write("client.key", client_key.serialize_pem());
        // Another CA, which signed nothing here: the server must not verify against it.
        write("other-ca.crt", self::ca("some other CA").pem());
        Pki { dir: dir.to_owned() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// `redis-server` with only a TLS port, on the PKI's certificates; killed on drop.
struct TlsRedis(Redis);

impl TlsRedis {
    async fn start(pki: &Pki, auth_clients: bool) -> TlsRedis {
        let files = TlsFiles {
            cert: pki.path("server.crt"),
            key: pki.path("server.key"),
            ca: pki.path("ca.crt"),
            auth_clients,
        };
        TlsRedis(Redis::start_tls(pki.dir.clone(), files).await)
    }

    fn config(&self, tls: RedisTls) -> RedisConfig {
        RedisConfig { url: self.0.url(), timeout: Duration::from_secs(2), pool: 2, tls }
    }
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("goim-redis-tls-{name}-{}", std::process::id()))
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn the_store_contract_holds_over_tls_checked_against_the_ca_file() {
    let pki = Pki::new(&scratch("contract"));
    let redis = TlsRedis::start(&pki, false).await;
    let config = redis.config(RedisTls { ca_file: Some(pki.path("ca.crt")), ..RedisTls::default() });
    config.validate().unwrap();
    let store = RedisStore::connect(&config).await.expect("rediss:// with the CA file connects");
    store::contract::store_contract(store).await;
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_server_that_does_not_chain_to_the_ca_is_refused() {
    let pki = Pki::new(&scratch("other-ca"));
    let redis = TlsRedis::start(&pki, false).await;

    // The wrong CA file, and the system's trust store (no ca_file): both refuse the handshake.
    for tls in
        [RedisTls { ca_file: Some(pki.path("other-ca.crt")), ..RedisTls::default() }, RedisTls::default()]
    {
        let err =
            RedisStore::connect(&redis.config(tls.clone())).await.expect_err("an unknown CA must be refused");
        let text = err.to_string();
        assert!(text.contains("cannot connect to redis"), "{tls:?}: {text}");
    }
    // The same server with the right CA works, so the refusals above were the certificate's.
    let ok = RedisStore::connect(
        &redis.config(RedisTls { ca_file: Some(pki.path("ca.crt")), ..RedisTls::default() }),
    )
    .await
    .expect("the right CA connects");
    ok.add_mapping(7, "tls-key", "comet-a").await.unwrap();
    assert_eq!(ok.servers_by_keys(&["tls-key".to_owned()]).await.unwrap(), vec![Some("comet-a".to_owned())]);
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new(&scratch("mtls"));
    let redis = TlsRedis::start(&pki, true).await;
    let ca_only = RedisTls { ca_file: Some(pki.path("ca.crt")), ..RedisTls::default() };
    assert!(
        RedisStore::connect(&redis.config(ca_only)).await.is_err(),
        "no client certificate must be refused"
    );

    let mtls = RedisTls {
        ca_file: Some(pki.path("ca.crt")),
        cert_file: Some(pki.path("client.crt")),
        key_file: Some(pki.path("client.key")),
    };
    let store = RedisStore::connect(&redis.config(mtls)).await.expect("the client certificate is accepted");
    store.add_mapping(8, "mtls-key", "comet-b").await.unwrap();
    assert_eq!(
        store.servers_by_keys(&["mtls-key".to_owned()]).await.unwrap(),
        vec![Some("comet-b".to_owned())]
    );
}

#[tokio::test]
async fn an_unreadable_tls_file_fails_the_connect_naming_it() {
    let config = RedisConfig {
        url: "rediss://127.0.0.1:1/0".into(),
        tls: RedisTls { ca_file: Some("/nonexistent/goim/ca.crt".into()), ..RedisTls::default() },
        ..RedisConfig::default()
    };
    let err = RedisStore::connect(&config).await.unwrap_err().to_string();
    assert!(err.contains("store.redis.tls.ca_file") && err.contains("/nonexistent/goim/ca.crt"), "{err}");
}
