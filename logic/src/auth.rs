//! Who a connection is: verifies the body of a client's auth packet (op 7).
//!
//! Two modes ([`crate::config::AuthMode`]):
//! - `jwt`: a signed JWT (HS256, RS256 or ES256). Claims: `mid` (or a numeric `sub`), `key`,
//!   `room` (alias `room_id`), `accepts`; `exp` is required; `iss`/`aud` are checked when configured.
//! - `json`: goim's unsigned token `{"mid":1,"key":"..","room_id":"live://1","platform":"web",
//!   "accepts":[1000]}`. Anyone can claim any user, so it is for development only.
//!
//! In both, a missing or empty key becomes a random UUID v4, as in goim.

use std::path::PathBuf;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{self, AuthMode, JwtAlgorithm};

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
            Error::Malformed => "malformed",
        }
    }
}

/// The verification key could not be loaded (at startup).
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

/// Verifies auth tokens; built once from the `[auth]` config.
pub struct Authenticator {
    mode: Mode,
}

enum Mode {
    Json,
    Jwt { key: DecodingKey, validation: Box<Validation> },
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
    /// Loads the key material (reading `public_key_pem` for RS256/ES256). Warns once when the
    /// JSON mode leaves connections unauthenticated.
    pub fn new(config: &config::Auth) -> Result<Authenticator, KeyError> {
        let mode = match config.mode {
            AuthMode::Json => {
                tracing::warn!(
                    "auth.mode = \"json\": client tokens are not authenticated, anyone can claim any user \
                     (development only)"
                );
                Mode::Json
            }
            AuthMode::Jwt => {
                let (key, validation) = jwt_key(&config.jwt)?;
                Mode::Jwt { key, validation: Box::new(validation) }
            }
        };
        Ok(Authenticator { mode })
    }

    /// Verifies `token` (the auth packet body). `cookie` is the WebSocket `Cookie` header; like goim,
    /// neither mode uses it yet.
    pub fn verify(&self, token: &[u8], _cookie: &str) -> Result<Claims, Error> {
        let mut claims = match &self.mode {
            Mode::Json => json_claims(token)?,
            Mode::Jwt { key, validation } => jwt_claims(token, key, validation)?,
        };
        if claims.key.is_empty() {
            claims.key = uuid::Uuid::new_v4().to_string();
        }
        Ok(claims)
    }
}

fn jwt_key(config: &config::Jwt) -> Result<(DecodingKey, Validation), KeyError> {
    let algorithm = config.algorithm;
    let key = match algorithm {
        JwtAlgorithm::HS256 => {
            let secret = config.secret.as_deref().filter(|s| !s.is_empty()).ok_or(KeyError::MissingSecret)?;
            // from_secret only fails for custom crypto providers; ours is rust_crypto.
            DecodingKey::from_secret(secret.as_bytes()).map_err(|e| KeyError::Invalid {
                path: PathBuf::new(),
                algorithm,
                reason: e.to_string(),
            })?
        }
        JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
            let path = config.public_key_pem.clone().ok_or(KeyError::MissingPublicKey(algorithm))?;
            let pem = std::fs::read(&path).map_err(|source| KeyError::Read { path: path.clone(), source })?;
            let parsed = if algorithm == JwtAlgorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            parsed.map_err(|e| KeyError::Invalid { path, algorithm, reason: e.to_string() })?
        }
    };
    let mut validation = Validation::new(match algorithm {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    });
    validation.leeway = config.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // Without a configured audience, a token naming one is still fine.
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    Ok((key, validation))
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

fn jwt_claims(token: &[u8], key: &DecodingKey, validation: &Validation) -> Result<Claims, Error> {
    // Clients may send the token with surrounding whitespace (e.g. a trailing newline).
    let token = token.trim_ascii();
    let body = jsonwebtoken::decode::<JwtBody>(token, key, validation).map_err(jwt_error)?.claims;
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
