//! JWK Sets (RFC 7517) into verification keys by `kid`.
//!
//! A key is used when it is a signing key (`use` absent or `"sig"`) with a `kid` and an algorithm
//! logic verifies: its `alg` when given (HS256, RS256, ES256), else the one its `kty` implies
//! (`oct` → HS256, `RSA` → RS256, `EC` on P-256 → ES256). Other keys (encryption keys, other
//! algorithms, no `kid`) are skipped and named in the log, so an identity provider's set that
//! also holds keys for other uses still loads. A key that claims a usable algorithm but cannot
//! be one (wrong `kty`, bad base64, missing members), two keys with one `kid`, or a set with no
//! usable key refuses the whole document: the previous keys stay in force.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, CommonParameters, Jwk, OctetKeyParameters, OctetKeyType};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde::Deserialize;

use crate::config;

/// A key and the checks a token it verifies must pass (its one algorithm, `exp`, `iss`, `aud`).
pub(crate) struct VerifyKey {
    pub key: DecodingKey,
    pub validation: Validation,
}

/// The usable keys of one source, by `kid`.
pub(crate) type KeySet = HashMap<String, Arc<VerifyKey>>;

/// Why a JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWK Set (a JSON object with a \"keys\" array): {0}")]
    NotASet(String),
    #[error("keys[{index}] (kid {kid:?}): {reason}")]
    BadKey { index: usize, kid: String, reason: String },
    #[error("keys[{index}] and keys[{first}] have the same kid {kid:?}")]
    DuplicateKid { index: usize, first: usize, kid: String },
    #[error("no usable key: none is an HS256, RS256 or ES256 signing key with a kid")]
    NoUsableKey,
}

/// The parsed set, and a description of each key skipped.
pub(crate) struct Parsed {
    pub keys: KeySet,
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The members logic reads; the rest (`x5c`, `key_ops`, ...) are ignored.
#[derive(Deserialize)]
struct RawKey {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    k: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Checks a JWKS document as logic would load it, with `config`'s claim checks; returns the
/// `kid`s of the keys it would use, sorted.
pub fn validate_jwks(document: &[u8], config: &config::JwtConfig) -> Result<Vec<String>, JwksError> {
    let mut kids: Vec<String> =
        parse(document, &base_validation(config)).map(|p| p.keys.into_keys().collect())?;
    kids.sort();
    Ok(kids)
}

/// The claim checks of `config`, for any algorithm (each key narrows `algorithms` to its own).
pub(crate) fn base_validation(config: &config::JwtConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
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
    validation
}

/// `base` with `algorithm` the only one allowed.
pub(crate) fn validation_for(base: &Validation, algorithm: Algorithm) -> Validation {
    let mut validation = base.clone();
    validation.algorithms = vec![algorithm];
    validation
}

pub(crate) fn parse(document: &[u8], base: &Validation) -> Result<Parsed, JwksError> {
    let doc: Document = serde_json::from_slice(document).map_err(|e| JwksError::NotASet(e.to_string()))?;
    let mut keys = KeySet::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    let mut skipped = Vec::new();
    for (index, value) in doc.keys.into_iter().enumerate() {
        let raw: RawKey = serde_json::from_value(value).map_err(|e| JwksError::BadKey {
            index,
            kid: String::new(),
            reason: format!("not a JWK: {e}"),
        })?;
        let kid = raw.kid.clone().unwrap_or_default();
        let algorithm = match usable(&raw) {
            Ok(algorithm) => algorithm,
            Err(why) => {
                skipped.push(format!("keys[{index}] (kid {kid:?}): {why}"));
                continue;
            }
        };
        let key = decoding_key(&raw, algorithm).map_err(|reason| JwksError::BadKey {
            index,
            kid: kid.clone(),
            reason,
        })?;
        if let Some(&first) = index_of.get(&kid) {
            return Err(JwksError::DuplicateKid { index, first, kid });
        }
        index_of.insert(kid.clone(), index);
        keys.insert(kid, Arc::new(VerifyKey { key, validation: validation_for(base, algorithm) }));
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(Parsed { keys, skipped })
}

/// The algorithm `raw` verifies, or why it is skipped.
fn usable(raw: &RawKey) -> Result<Algorithm, String> {
    if let Some(use_) = raw.use_.as_deref().filter(|u| *u != "sig") {
        return Err(format!("use {use_:?} is not \"sig\""));
    }
    if raw.kid.as_deref().is_none_or(str::is_empty) {
        return Err("no kid".into());
    }
    match (raw.alg.as_deref(), raw.kty.as_deref()) {
        (Some("HS256"), _) => Ok(Algorithm::HS256),
        (Some("RS256"), _) => Ok(Algorithm::RS256),
        (Some("ES256"), _) => Ok(Algorithm::ES256),
        (Some(alg), _) => Err(format!("alg {alg:?} is not HS256, RS256 or ES256")),
        (None, Some("oct")) => Ok(Algorithm::HS256),
        (None, Some("RSA")) => Ok(Algorithm::RS256),
        (None, Some("EC")) if raw.crv.as_deref() == Some("P-256") => Ok(Algorithm::ES256),
        (None, kty) => {
            Err(format!("no alg, and kty {kty:?} (crv {:?}) implies none logic verifies", raw.crv))
        }
    }
}

fn member<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, String> {
    value.as_deref().filter(|v| !v.is_empty()).ok_or_else(|| format!("no {name:?} member"))
}

fn want_kty(raw: &RawKey, kty: &str, algorithm: Algorithm) -> Result<(), String> {
    match raw.kty.as_deref() {
        Some(k) if k == kty => Ok(()),
        other => Err(format!("{algorithm:?} needs kty {kty:?}, not {other:?}")),
    }
}

fn decoding_key(raw: &RawKey, algorithm: Algorithm) -> Result<DecodingKey, String> {
    let bad = |e: jsonwebtoken::errors::Error| format!("invalid key material: {e}");
    match algorithm {
        Algorithm::HS256 => {
            want_kty(raw, "oct", algorithm)?;
            let jwk = Jwk {
                common: CommonParameters::default(),
                algorithm: AlgorithmParameters::OctetKey(OctetKeyParameters {
                    key_type: OctetKeyType::Octet,
                    value: member(&raw.k, "k")?.to_owned(),
                }),
            };
            DecodingKey::from_jwk(&jwk).map_err(bad)
        }
        Algorithm::RS256 => {
            want_kty(raw, "RSA", algorithm)?;
            let key =
                DecodingKey::from_rsa_components(member(&raw.n, "n")?, member(&raw.e, "e")?).map_err(bad)?;
            match key.kind() {
                DecodingKeyKind::RsaModulusExponent { n, e } if !n.is_empty() && !e.is_empty() => Ok(key),
                _ => Err("empty n or e".into()),
            }
        }
        Algorithm::ES256 => {
            want_kty(raw, "EC", algorithm)?;
            if raw.crv.as_deref() != Some("P-256") {
                return Err(format!("ES256 needs crv \"P-256\", not {:?}", raw.crv));
            }
            let key =
                DecodingKey::from_ec_components(member(&raw.x, "x")?, member(&raw.y, "y")?).map_err(bad)?;
            // An uncompressed P-256 point: 0x04, then 32 bytes of x and 32 of y.
            match key.try_get_as_bytes() {
                Ok(point) if point.len() == 65 => Ok(key),
                _ => Err("x and y must be 32 bytes each (P-256)".into()),
            }
        }
        // usable() returns only the three above.
        other => Err(format!("{other:?} is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Validation {
        base_validation(&config::JwtConfig::default())
    }

    fn kids(doc: &str) -> Result<Vec<String>, JwksError> {
        validate_jwks(doc.as_bytes(), &config::JwtConfig::default())
    }

    #[test]
    fn oct_keys_load_by_kid_and_keys_for_other_uses_are_skipped() {
        let doc = r#"{"keys":[
            {"kty":"oct","kid":"a","k":"c2VjcmV0LWE"},
            {"kty":"oct","kid":"b","alg":"HS256","k":"c2VjcmV0LWI","use":"sig"},
            {"kty":"oct","kid":"enc","k":"c2VjcmV0","use":"enc"},
            {"kty":"oct","kid":"hs512","alg":"HS512","k":"c2VjcmV0"},
            {"kty":"oct","k":"c2VjcmV0"},
            {"kty":"OKP","kid":"ed","crv":"Ed25519","x":"AAAA"}
        ]}"#;
        let parsed = parse(doc.as_bytes(), &base()).unwrap();
        let mut got: Vec<_> = parsed.keys.keys().cloned().collect();
        got.sort();
        assert_eq!(got, ["a", "b"]);
        assert_eq!(parsed.skipped.len(), 4, "{:?}", parsed.skipped);
        assert_eq!(parsed.keys["a"].validation.algorithms, [Algorithm::HS256]);
    }

    #[test]
    fn a_broken_usable_key_a_duplicate_kid_or_no_usable_key_refuses_the_set() {
        let cases = [
            (r#"{"keys":[{"kty":"RSA","kid":"a","alg":"HS256","k":"c2VjcmV0"}]}"#, "needs kty \"oct\""),
            (r#"{"keys":[{"kty":"oct","kid":"a","k":"!!"}]}"#, "invalid key material"),
            (r#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAB"}]}"#, "no \"e\" member"),
            (r#"{"keys":[{"kty":"EC","kid":"a","crv":"P-256","x":"AQAB","y":"AQAB"}]}"#, "32 bytes"),
            (r#"{"keys":[{"kty":"oct","kid":"a","k":"eA"},{"kty":"oct","kid":"a","k":"eQ"}]}"#, "same kid"),
            (r#"{"keys":[{"kty":"oct","kid":"a","k":"eA","use":"enc"}]}"#, "no usable key"),
            (r#"{"keys":[]}"#, "no usable key"),
            (r#"{"keys":[{"kty":"oct","kid":7,"k":"eA"}]}"#, "not a JWK"),
            (r#"[]"#, "not a JWK Set"),
            (r#"{"keys":"#, "not a JWK Set"),
        ];
        for (doc, want) in cases {
            let err = kids(doc).unwrap_err().to_string();
            assert!(err.contains(want), "{doc}: {err}");
        }
    }

    #[test]
    fn rsa_and_p256_keys_from_their_components_load() {
        // Well-formed base64url components; whether they are a real key shows only at verify time.
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let doc = format!(
            r#"{{"keys":[{{"kty":"EC","kid":"ec","crv":"P-256","x":"{x}","y":"{y}"}},
                {{"kty":"RSA","kid":"rsa","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4","e":"AQAB"}}]}}"#
        );
        assert_eq!(kids(&doc).unwrap(), ["ec", "rsa"]);
    }
}
