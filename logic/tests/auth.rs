//! The authenticator against real signed tokens: HS256, RS256 and ES256 (keys in tests/keys/).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use goim_logic::auth::{Error, KeyError};
use goim_logic::config::{self, AuthMode, JwtAlgorithm};
use goim_logic::{Authenticator, Claims};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "test-secret";

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys").join(name)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn jwt_config(algorithm: JwtAlgorithm) -> config::AuthConfig {
    let mut auth = config::AuthConfig { mode: AuthMode::Jwt, ..config::AuthConfig::default() };
    auth.jwt.algorithm = algorithm;
    match algorithm {
        JwtAlgorithm::HS256 => auth.jwt.secret = Some(SECRET.into()),
        JwtAlgorithm::RS256 => auth.jwt.public_key_pem = Some(key_path("rs256.pub.pem")),
        JwtAlgorithm::ES256 => auth.jwt.public_key_pem = Some(key_path("es256.pub.pem")),
    }
    auth
}

fn authenticator(algorithm: JwtAlgorithm) -> Authenticator {
    Authenticator::new(&jwt_config(algorithm)).unwrap()
}

/// Signs `claims` with the key of `algorithm`; `other` picks the key pair the verifier does not know.
fn sign(algorithm: JwtAlgorithm, claims: &Value, other: bool) -> String {
    let suffix = if other { "-other" } else { "" };
    let (alg, key) = match algorithm {
        JwtAlgorithm::HS256 => {
            let secret = if other { "another-secret" } else { SECRET };
            (Algorithm::HS256, EncodingKey::from_secret(secret.as_bytes()).unwrap())
        }
        JwtAlgorithm::RS256 => {
            let pem = std::fs::read(key_path(&format!("rs256{suffix}.key.pem"))).unwrap();
            (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap())
        }
        JwtAlgorithm::ES256 => {
            let pem = std::fs::read(key_path(&format!("es256{suffix}.key.pem"))).unwrap();
            (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap())
        }
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

const ALGORITHMS: [JwtAlgorithm; 3] = [JwtAlgorithm::HS256, JwtAlgorithm::RS256, JwtAlgorithm::ES256];

#[test]
fn a_valid_token_of_each_algorithm_gives_its_claims() {
    for alg in ALGORITHMS {
        let claims = json!({"mid": 42, "key": "dev-1", "room": "live://1000", "accepts": [1000, 1001], "exp": now() + 60});
        let token = sign(alg, &claims, false);
        let got = authenticator(alg).verify(token.as_bytes(), "").unwrap();
        let want =
            Claims { mid: 42, key: "dev-1".into(), room: "live://1000".into(), accepts: vec![1000, 1001] };
        assert_eq!(got, want, "{alg:?}");
    }
}

#[test]
fn an_expired_token_is_refused_as_expired() {
    for alg in ALGORITHMS {
        // Past the 30s default leeway.
        let token = sign(alg, &json!({"mid": 1, "exp": now() - 120}), false);
        assert_eq!(authenticator(alg).verify(token.as_bytes(), ""), Err(Error::Expired), "{alg:?}");
    }
}

#[test]
fn a_token_expired_within_the_leeway_is_accepted() {
    let token = sign(JwtAlgorithm::HS256, &json!({"mid": 1, "exp": now() - 5}), false);
    assert!(authenticator(JwtAlgorithm::HS256).verify(token.as_bytes(), "").is_ok());
}

#[test]
fn a_token_signed_with_another_key_is_refused_as_a_bad_signature() {
    for alg in ALGORITHMS {
        let token = sign(alg, &json!({"mid": 1, "exp": now() + 60}), true);
        assert_eq!(authenticator(alg).verify(token.as_bytes(), ""), Err(Error::BadSignature), "{alg:?}");
    }
}

#[test]
fn a_tampered_payload_is_refused() {
    let token = sign(JwtAlgorithm::HS256, &json!({"mid": 1, "exp": now() + 60}), false);
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = sign(JwtAlgorithm::HS256, &json!({"mid": 2, "exp": now() + 60}), true);
    parts[1] = forged.split('.').nth(1).unwrap();
    let tampered = parts.join(".");
    assert_eq!(authenticator(JwtAlgorithm::HS256).verify(tampered.as_bytes(), ""), Err(Error::BadSignature));
}

#[test]
fn a_token_of_another_algorithm_is_refused() {
    let token = sign(JwtAlgorithm::HS256, &json!({"mid": 1, "exp": now() + 60}), false);
    assert_eq!(authenticator(JwtAlgorithm::RS256).verify(token.as_bytes(), ""), Err(Error::WrongAlgorithm));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let mut config = jwt_config(JwtAlgorithm::HS256);
    config.jwt.issuer = Some("https://auth.example".into());
    config.jwt.audience = Some("goim".into());
    let auth = Authenticator::new(&config).unwrap();
    let exp = now() + 60;
    let good = sign(
        JwtAlgorithm::HS256,
        &json!({"mid": 1, "exp": exp, "iss": "https://auth.example", "aud": "goim"}),
        false,
    );
    assert!(auth.verify(good.as_bytes(), "").is_ok());
    let wrong_iss =
        sign(JwtAlgorithm::HS256, &json!({"mid": 1, "exp": exp, "iss": "evil", "aud": "goim"}), false);
    assert_eq!(auth.verify(wrong_iss.as_bytes(), ""), Err(Error::WrongIssuer));
    let wrong_aud = sign(
        JwtAlgorithm::HS256,
        &json!({"mid": 1, "exp": exp, "iss": "https://auth.example", "aud": "x"}),
        false,
    );
    assert_eq!(auth.verify(wrong_aud.as_bytes(), ""), Err(Error::WrongAudience));
    let no_iss = sign(JwtAlgorithm::HS256, &json!({"mid": 1, "exp": exp, "aud": "goim"}), false);
    assert_eq!(auth.verify(no_iss.as_bytes(), ""), Err(Error::MissingClaim("iss".into())));
}

#[test]
fn an_unconfigured_audience_does_not_refuse_tokens_that_name_one() {
    let token = sign(JwtAlgorithm::HS256, &json!({"mid": 1, "exp": now() + 60, "aud": "anyone"}), false);
    assert!(authenticator(JwtAlgorithm::HS256).verify(token.as_bytes(), "").is_ok());
}

#[test]
fn a_token_without_exp_is_refused() {
    let token = sign(JwtAlgorithm::HS256, &json!({"mid": 1}), false);
    let err = authenticator(JwtAlgorithm::HS256).verify(token.as_bytes(), "").unwrap_err();
    assert_eq!(err, Error::MissingClaim("exp".into()));
    assert_eq!(err.to_string(), "token has no exp claim");
}

#[test]
fn a_numeric_sub_is_the_mid_when_mid_is_absent_and_room_id_is_an_alias() {
    let auth = authenticator(JwtAlgorithm::HS256);
    let token =
        sign(JwtAlgorithm::HS256, &json!({"sub": "77", "room_id": "live://9", "exp": now() + 60}), false);
    let claims = auth.verify(token.as_bytes(), "").unwrap();
    assert_eq!((claims.mid, claims.room.as_str()), (77, "live://9"));
    let token = sign(JwtAlgorithm::HS256, &json!({"sub": "alice", "exp": now() + 60}), false);
    assert_eq!(auth.verify(token.as_bytes(), ""), Err(Error::InvalidClaim("sub".into())));
}

#[test]
fn garbage_is_a_malformed_token_with_a_short_client_safe_reason() {
    let auth = authenticator(JwtAlgorithm::HS256);
    for garbage in [&b"not a jwt"[..], b"", b"a.b.c", b"{\"mid\":1}"] {
        let err = auth.verify(garbage, "").unwrap_err();
        assert_eq!(err, Error::Malformed, "{garbage:?}");
        assert_eq!(err.to_string(), "malformed token");
    }
    let token = sign(JwtAlgorithm::HS256, &json!({"mid": "one", "exp": now() + 60}), false);
    assert_eq!(auth.verify(token.as_bytes(), ""), Err(Error::Malformed));
}

#[test]
fn a_jwt_without_key_gets_a_uuid_key() {
    let token = sign(JwtAlgorithm::ES256, &json!({"mid": 3, "exp": now() + 60}), false);
    let claims = authenticator(JwtAlgorithm::ES256).verify(token.as_bytes(), "").unwrap();
    assert!(uuid::Uuid::parse_str(&claims.key).is_ok_and(|u| u.get_version_num() == 4), "{}", claims.key);
}

fn json_auth() -> Authenticator {
    Authenticator::new(&config::AuthConfig { mode: AuthMode::Json, ..config::AuthConfig::default() }).unwrap()
}

#[test]
fn json_mode_reads_goims_token_and_ignores_unknown_fields() {
    let token =
        br#"{"mid":123,"key":"k","room_id":"live://1000","platform":"web","accepts":[1000,1001],"x":1}"#;
    let claims = json_auth().verify(token, "cookie=1").unwrap();
    assert_eq!(
        claims,
        Claims { mid: 123, key: "k".into(), room: "live://1000".into(), accepts: vec![1000, 1001] }
    );
}

#[test]
fn json_mode_generates_distinct_uuid_keys_for_missing_empty_or_null_keys() {
    let auth = json_auth();
    let mut keys = Vec::new();
    for token in [&br#"{"mid":1}"#[..], br#"{"key":""}"#, br#"{"key":null,"accepts":null}"#, b"{}"] {
        let claims = auth.verify(token, "").unwrap();
        assert!(uuid::Uuid::parse_str(&claims.key).is_ok(), "{:?}", claims.key);
        keys.push(claims.key);
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4);
}

#[test]
fn json_mode_refuses_invalid_json() {
    assert_eq!(json_auth().verify(b"{mid:1}", ""), Err(Error::Malformed));
    assert_eq!(json_auth().verify(br#"{"mid":"1"}"#, ""), Err(Error::Malformed));
}

#[test]
fn a_missing_or_invalid_public_key_file_fails_at_construction() {
    let mut config = jwt_config(JwtAlgorithm::RS256);
    config.jwt.public_key_pem = Some(key_path("missing.pem"));
    assert!(matches!(Authenticator::new(&config), Err(KeyError::Read { .. })));
    // An EC key where an RSA key is expected.
    config.jwt.public_key_pem = Some(key_path("es256.pub.pem"));
    let err = Authenticator::new(&config).unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().starts_with("auth.jwt.public_key_pem: "), "{err}");
    let mut config = jwt_config(JwtAlgorithm::HS256);
    config.jwt.secret = None;
    assert!(matches!(Authenticator::new(&config), Err(KeyError::MissingSecret)));
}

#[test]
fn an_nbf_in_the_future_is_not_yet_valid() {
    let token = sign(JwtAlgorithm::HS256, &json!({"mid": 1, "nbf": now() + 600, "exp": now() + 900}), false);
    let err = authenticator(JwtAlgorithm::HS256).verify(token.as_bytes(), "").unwrap_err();
    assert_eq!(err, Error::NotYetValid);
}
