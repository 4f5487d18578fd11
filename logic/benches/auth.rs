//! Verifying a client's auth token: JWT with each algorithm logic accepts, against goim's
//! unsigned JSON token (the same claims parsed, no signature): the price of the signature.
//!
//! `cargo bench -p goim-logic --bench auth`; the ratios go in docs/benchmarks.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use goim_logic::Authenticator;
use goim_logic::config::{self, AuthMode, JwtAlgorithm};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "bench-secret";

/// The test key pairs of logic's auth tests.
fn key(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn claims() -> serde_json::Value {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() + 3600;
    json!({"mid": 123456, "key": "device-7f3a", "room": "live://1000", "accepts": [1000, 1001], "exp": exp})
}

fn jwt(algorithm: JwtAlgorithm) -> (Authenticator, String) {
    let mut auth = config::AuthConfig { mode: AuthMode::Jwt, ..config::AuthConfig::default() };
    auth.jwt.algorithm = algorithm;
    let (alg, signing) = match algorithm {
        JwtAlgorithm::HS256 => {
            auth.jwt.secret = Some(SECRET.into());
            (Algorithm::HS256, EncodingKey::from_secret(SECRET.as_bytes()).expect("hmac key"))
        }
        JwtAlgorithm::RS256 => {
            auth.jwt.public_key_pem =
                Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys/rs256.pub.pem"));
            (Algorithm::RS256, EncodingKey::from_rsa_pem(&key("rs256.key.pem")).expect("rsa key"))
        }
        JwtAlgorithm::ES256 => {
            auth.jwt.public_key_pem =
                Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys/es256.pub.pem"));
            (Algorithm::ES256, EncodingKey::from_ec_pem(&key("es256.key.pem")).expect("ec key"))
        }
    };
    let token = jsonwebtoken::encode(&Header::new(alg), &claims(), &signing).expect("token signs");
    (Authenticator::new(&auth).expect("authenticator"), token)
}

fn verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    let json_auth =
        Authenticator::new(&config::AuthConfig { mode: AuthMode::Json, ..config::AuthConfig::default() })
            .expect("json authenticator");
    let goim_token =
        json!({"mid": 123456, "key": "device-7f3a", "room_id": "live://1000", "platform": "web", "accepts": [1000, 1001]})
            .to_string();
    g.bench_function("json_token_baseline", |b| {
        b.iter(|| black_box(json_auth.verify(black_box(goim_token.as_bytes()), "").expect("valid")))
    });
    for (name, algorithm) in [
        ("jwt_hs256", JwtAlgorithm::HS256),
        ("jwt_es256", JwtAlgorithm::ES256),
        ("jwt_rs256", JwtAlgorithm::RS256),
    ] {
        let (auth, token) = jwt(algorithm);
        g.bench_function(name, |b| {
            b.iter(|| black_box(auth.verify(black_box(token.as_bytes()), "").expect("valid")))
        });
    }
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
