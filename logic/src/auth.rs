//! Who a connection is: verifies the body of a client's auth packet (op 7).
//!
//! Two modes ([`crate::config::AuthMode`]):
//! - `jwt`: a signed JWT (HS256, RS256 or ES256). Claims: `mid` (or a numeric `sub`), `key`,
//!   `room` (alias `room_id`), `accepts`; `exp` is required; `iss`/`aud` are checked when configured.
//! - `json`: goim's unsigned token `{"mid":1,"key":"..","room_id":"live://1","platform":"web",
//!   "accepts":[1000]}`. Anyone can claim any user, so it is for development only.
//!
//! In both, a missing or empty key becomes a random UUID v4, as in goim.
//!
//! Which key verifies a JWT ([`keyring`]): without a JWKS configured, the single key
//! (`auth.jwt.secret` or `public_key_pem`) verifies every token, whatever its header says, as
//! before JWKS support. With a JWKS (`auth.jwt.jwks.file` and/or `.url`), the header's `kid`
//! picks the key; a token without `kid` is verified by the single key when there is one, and
//! refused otherwise; an unknown `kid` is refused. Each JWKS key admits only its own algorithm.
//! The key sets are replaced while logic runs ([`Authenticator::watch`]), so keys rotate
//! without a restart.
//!
//! The push API's bearer tokens ([`PushTokens`]) live here too: several at once, so a token can
//! be rotated, optionally from a file re-read on change.

mod fetch;
mod jwks;
mod keyring;
mod push_token;
pub mod syntax;

use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{self, AuthMode, JwtAlgorithm};
use crate::metrics::Metrics;

pub use jwks::{JwksError, validate_jwks};
use keyring::KeyRing;
pub use push_token::PushTokens;
pub use syntax::{is_valid_push_token, jwks_url};

/// Why a token was refused. `Display` is a short reason that is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("bad token signature")]
    BadSignature,
    #[error("token algorithm not allowed")]
    WrongAlgorithm,
    #[error("wrong token issuer")]
    WrongIssuer,
    #[error("wrong token audience")]
    WrongAudience,
    #[error("token has no {0} claim")]
    MissingClaim(String),
    #[error("token claim {0} is invalid")]
    InvalidClaim(String),
    /// The header's `kid` names no key of the configured JWKS.
    #[error("unknown token key id")]
    UnknownKey,
    /// A JWKS is configured, the token has no `kid`, and there is no single key for it.
    #[error("token has no key id")]
    NoKeyId,
    /// Not a token at all: bad JSON, bad base64, not three parts.
    #[error("malformed token")]
    Malformed,
}

impl Error {
    /// A metric label for the rejection reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Expired => "expired",
            Error::NotYetValid => "not_yet_valid",
            Error::BadSignature => "bad_signature",
            Error::WrongAlgorithm => "wrong_algorithm",
            Error::WrongIssuer => "wrong_issuer",
            Error::WrongAudience => "wrong_audience",
            Error::MissingClaim(_) => "missing_claim",
            Error::InvalidClaim(_) => "invalid_claim",
            Error::UnknownKey => "unknown_kid",
            Error::NoKeyId => "no_kid",
            Error::Malformed => "malformed",
        }
    }
}

/// The verification keys or push tokens could not be loaded (at startup).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.jwt.secret: required for HS256")]
    MissingSecret,
    #[error("auth.jwt.public_key_pem: required for {0:?}")]
    MissingPublicKey(JwtAlgorithm),
    #[error("auth.jwt.public_key_pem: cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("auth.jwt.public_key_pem: {} is not a {algorithm:?} public key in PEM form: {reason}", path.display())]
    Invalid { path: PathBuf, algorithm: JwtAlgorithm, reason: String },
    #[error("auth.jwt.jwks.file: {}: {reason}", path.display())]
    Jwks { path: PathBuf, reason: String },
    #[error("http.push_token_file: {}: {reason}", path.display())]
    PushTokenFile { path: PathBuf, reason: String },
}

/// Who the token says the connection is.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Claims {
    /// The user; 0 for none.
    pub mid: i64,
    /// The connection (device) key; never empty.
    pub key: String,
    /// `type://id`, or empty for no room.
    pub room: String,
    /// Business ops the connection receives.
    pub accepts: Vec<i32>,
}

/// Verifies auth tokens; built once from the `[auth]` config. In JWT mode its keys can change
/// while it runs: see [`Authenticator::watch`].
pub struct Authenticator {
    mode: Mode,
}

enum Mode {
    Json,
    Jwt(Arc<KeyRing>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Json => "json",
            Mode::Jwt { .. } => "jwt",
        };
        f.debug_struct("Authenticator").field("mode", &mode).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// [`Authenticator::with_metrics`] with counters of its own.
    pub fn new(config: &config::AuthConfig) -> Result<Authenticator, KeyError> {
        Authenticator::with_metrics(config, Metrics::default())
    }

    /// Loads the key material: the single key (reading `public_key_pem` for RS256/ES256) and the
    /// JWKS file; the JWKS URL is first fetched by [`Authenticator::watch`]. Warns once when the
    /// JSON mode leaves connections unauthenticated. Key reloads are counted in `metrics`.
    pub fn with_metrics(config: &config::AuthConfig, metrics: Metrics) -> Result<Authenticator, KeyError> {
        let mode = match config.mode {
            AuthMode::Json => {
                tracing::warn!(
                    "auth.mode = \"json\": client tokens are not authenticated, anyone can claim any user \
                     (development only)"
                );
                Mode::Json
            }
            AuthMode::Jwt => Mode::Jwt(Arc::new(KeyRing::new(&config.jwt, metrics)?)),
        };
        Ok(Authenticator { mode })
    }

    /// Verifies `token` (the auth packet body). `cookie` is the WebSocket `Cookie` header; like goim,
    /// neither mode uses it yet.
    pub fn verify(&self, token: &[u8], _cookie: &str) -> Result<Claims, Error> {
        let mut claims = match &self.mode {
            Mode::Json => json_claims(token)?,
            Mode::Jwt(ring) => jwt_claims(token, ring)?,
        };
        if claims.key.is_empty() {
            claims.key = uuid::Uuid::new_v4().to_string();
        }
        Ok(claims)
    }

    /// Keeps the JWKS key sets current until `shutdown`: re-reads `auth.jwt.jwks.file` every
    /// `file_poll` and installs it when its contents changed; fetches `url` now and every
    /// `url_refresh` (`url_retry` after a failure, or early when a token names an unknown
    /// `kid`). A source that fails keeps its last good keys. Returns at once without a JWKS.
    pub async fn watch(&self, shutdown: CancellationToken) {
        if let Mode::Jwt(ring) = &self.mode {
            ring.watch(&shutdown).await;
        }
    }
}

/// goim's token (`internal/logic/conn.go`). Unknown fields, such as `platform`, are ignored.
/// Every field may be absent or `null` (Go's zero value).
#[derive(Deserialize)]
struct JsonToken {
    mid: Option<i64>,
    key: Option<String>,
    room_id: Option<String>,
    accepts: Option<Vec<i32>>,
}

fn json_claims(token: &[u8]) -> Result<Claims, Error> {
    let token: JsonToken = serde_json::from_slice(token).map_err(|_| Error::Malformed)?;
    Ok(Claims {
        mid: token.mid.unwrap_or_default(),
        key: token.key.unwrap_or_default(),
        room: token.room_id.unwrap_or_default(),
        accepts: token.accepts.unwrap_or_default(),
    })
}

#[derive(Deserialize)]
struct JwtBody {
    mid: Option<i64>,
    sub: Option<String>,
    key: Option<String>,
    #[serde(alias = "room_id")]
    room: Option<String>,
    accepts: Option<Vec<i32>>,
}

fn jwt_claims(token: &[u8], ring: &KeyRing) -> Result<Claims, Error> {
    // Clients may send the token with surrounding whitespace (e.g. a trailing newline).
    let token = token.trim_ascii();
    let key = ring.select(token)?;
    let body = jsonwebtoken::decode::<JwtBody>(token, &key.key, &key.validation).map_err(jwt_error)?.claims;
    let mid = match (body.mid, body.sub) {
        (Some(mid), _) => mid,
        (None, Some(sub)) => sub.parse().map_err(|_| Error::InvalidClaim("sub".into()))?,
        (None, None) => 0,
    };
    Ok(Claims {
        mid,
        key: body.key.unwrap_or_default(),
        room: body.room.unwrap_or_default(),
        accepts: body.accepts.unwrap_or_default(),
    })
}

fn jwt_error(e: jsonwebtoken::errors::Error) -> Error {
    match e.into_kind() {
        ErrorKind::ExpiredSignature => Error::Expired,
        ErrorKind::ImmatureSignature => Error::NotYetValid,
        ErrorKind::InvalidSignature => Error::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            Error::WrongAlgorithm
        }
        ErrorKind::InvalidIssuer => Error::WrongIssuer,
        ErrorKind::InvalidAudience => Error::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => Error::MissingClaim(claim),
        ErrorKind::InvalidClaimFormat(claim) => Error::InvalidClaim(claim),
        // A mistyped claim of ours (e.g. "mid":"x") surfaces as a JSON error; so does a payload
        // that is not JSON. Both are malformed tokens.
        _ => Error::Malformed,
    }
}
