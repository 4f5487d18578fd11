//! Fuzzes what a connecting client controls in logic's auth: the op-7 token. The input is tried
//! as a whole token in each mode (goim's JSON token, a JWT against a single key, a JWT against a
//! JWKS chosen by `kid`), as the header of a JWT and as the payload of a correctly signed JWT (so
//! the claim decoding behind the signature check is reached), and as a JWKS document.
//!
//! Besides "no panic": a JWT is accepted only when its payload is a JSON object with an `exp`;
//! an accepted connection always has a non-empty key; and a key set loads only with a key.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use goim_logic::config::{self, AuthMode};
use goim_logic::{Authenticator, auth};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret";
/// `SECRET` as a JWKS under kid "k1" (and another key under "k2").
const JWKS: &str = r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"ZnV6ei1zZWNyZXQ"},
    {"kty":"oct","kid":"k2","k":"b3RoZXI"}]}"#;

struct Setup {
    json: Authenticator,
    single: Authenticator,
    jwks: Authenticator,
    jwt: config::JwtConfig,
    signing: EncodingKey,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let jwks_path = std::env::temp_dir().join(format!("goim-fuzz-jwks-{}.json", std::process::id()));
    std::fs::write(&jwks_path, JWKS).expect("write the fuzz jwks");
    let mut jwt =
        config::JwtConfig { secret: Some(String::from_utf8_lossy(SECRET).into()), ..config::JwtConfig::default() };
    jwt.leeway = Duration::from_secs(30);
    let single = config::AuthConfig { mode: AuthMode::Jwt, jwt: jwt.clone() };
    let mut with_jwks = single.clone();
    with_jwks.jwt.jwks.file = Some(jwks_path);
    let json = config::AuthConfig { mode: AuthMode::Json, ..config::AuthConfig::default() };
    // The JWKS file is read once, here; its reload loop (`watch`) never runs in the fuzzer.
    let jwks = Authenticator::new(&with_jwks).expect("jwks file");
    let _ = std::fs::remove_file(with_jwks.jwt.jwks.file.as_ref().expect("set above"));
    Setup {
        json: Authenticator::new(&json).expect("json mode"),
        single: Authenticator::new(&single).expect("single key"),
        jwks,
        jwt,
        signing: EncodingKey::from_secret(SECRET).expect("hmac key"),
    }
});

fuzz_target!(|data: &[u8]| {
    let s = &*SETUP;
    // The input as the whole token.
    for auth in [&s.json, &s.single, &s.jwks] {
        if let Ok(claims) = auth.verify(data, "") {
            assert!(!claims.key.is_empty(), "an accepted connection always has a key");
        }
    }
    // The input as a header ("alg", "kid", "typ", "crit", ...) over a good payload and signature.
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let payload = format!(r#"{{"mid":1,"exp":{exp}}}"#);
    let header = URL_SAFE_NO_PAD.encode(data);
    let _ = s.jwks.verify(signed(&header, &URL_SAFE_NO_PAD.encode(&payload), s).as_bytes(), "");
    // The input as the payload of a correctly signed token.
    for (auth, header) in [(&s.single, r#"{"alg":"HS256"}"#), (&s.jwks, r#"{"alg":"HS256","kid":"k1"}"#)] {
        let token = signed(&URL_SAFE_NO_PAD.encode(header), &URL_SAFE_NO_PAD.encode(data), s);
        if let Ok(claims) = auth.verify(token.as_bytes(), "") {
            let payload: serde_json::Value =
                serde_json::from_slice(data).expect("an accepted payload is JSON");
            assert!(payload.get("exp").is_some(), "exp is required: {payload}");
            assert!(!claims.key.is_empty());
        }
    }
    // The input as a JWKS document.
    if let Ok(kids) = auth::validate_jwks(data, &s.jwt) {
        assert!(!kids.is_empty(), "a key set loads only with a usable key");
    }
});

/// `header.payload.signature`, signed with the fuzz secret.
fn signed(header: &str, payload: &str, s: &Setup) -> String {
    let message = format!("{header}.{payload}");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &s.signing, Algorithm::HS256).expect("hmac signs");
    format!("{message}.{signature}")
}
