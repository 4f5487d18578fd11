//! The Secret the operator generates once per cluster: the push API token and the HS256 JWT
//! secret, for whatever the spec does not reference. Created when missing, never rewritten.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distr::Alphanumeric;

use super::Owner;

pub const PUSH_TOKEN_KEY: &str = "push-token";
pub const JWT_SECRET_KEY: &str = "jwt-secret";

/// 40 random alphanumerics after a prefix, so the `GOIM_...` override always reads it as a
/// string (an all-digit value would read as a TOML integer).
fn token(prefix: &str) -> String {
    let tail: String = rand::rng().sample_iter(&Alphanumeric).take(40).map(char::from).collect();
    format!("{prefix}_{tail}")
}

pub fn generated(owner: &Owner) -> Secret {
    Secret {
        metadata: owner.meta(owner.names.generated_secret(), None),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (PUSH_TOKEN_KEY.to_owned(), token("pt")),
            (JWT_SECRET_KEY.to_owned(), token("jwt")),
        ])),
        ..Default::default()
    }
}
