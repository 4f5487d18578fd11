//! What the suite sends: JWTs for its clients, and pushes through logic's HTTP API (goim's
//! `/goim/push/*`, with the cluster's push token).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The business op every suite push uses; clients accept it.
pub const OP: i32 = 1000;

#[derive(Serialize)]
struct Claims<'a> {
    mid: i64,
    key: &'a str,
    room: &'a str,
    accepts: [i32; 1],
    exp: u64,
}

/// An HS256 JWT for one connection, valid for two hours.
pub fn token(secret: &[u8], mid: i64, key: &str, room: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 7200;
    let claims = Claims { mid, key, room, accepts: [OP], exp };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret).expect("an HS256 key"),
    )
    .expect("HS256 signing cannot fail")
}

/// `type://id` split for the room push's query.
pub fn split_room(room: &str) -> Result<(&str, &str)> {
    room.split_once("://").with_context(|| format!("room {room:?} is not type://id"))
}

/// Pushes through one logic Service address.
#[derive(Clone)]
pub struct Pusher {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Pusher {
    pub fn new(api: SocketAddr, token: String) -> Result<Pusher> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Pusher { http, base: format!("http://{api}"), token })
    }

    async fn post(&self, path_and_query: String, body: String) -> Result<()> {
        let url = format!("{}{path_and_query}", self.base);
        let r = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST {url}: {status} {text}");
        }
        Ok(())
    }

    /// Retries a broadcast no client takes (op 1000 to nobody yet) until logic accepts one, or
    /// fails after `within`; returns how long that took.
    pub async fn until_answering(&self, within: Duration) -> Result<Duration> {
        let t0 = tokio::time::Instant::now();
        loop {
            match self.all("m probe".into()).await {
                Ok(()) => return Ok(t0.elapsed()),
                Err(e) if t0.elapsed() >= within => {
                    return Err(e.context(format!("no answer within {} s", within.as_secs())));
                }
                Err(e) => tracing::debug!(error = %e, "logic API not answering yet"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn keys(&self, keys: &[&str], body: String) -> Result<()> {
        let q: String = keys.iter().map(|k| format!("&keys={k}")).collect();
        self.post(format!("/goim/push/keys?operation={OP}{q}"), body).await
    }

    pub async fn mids(&self, mids: &[i64], body: String) -> Result<()> {
        let q: String = mids.iter().map(|m| format!("&mids={m}")).collect();
        self.post(format!("/goim/push/mids?operation={OP}{q}"), body).await
    }

    pub async fn room(&self, room: &str, body: String) -> Result<()> {
        let (kind, id) = split_room(room)?;
        self.post(format!("/goim/push/room?operation={OP}&type={kind}&room={id}"), body).await
    }

    pub async fn all(&self, body: String) -> Result<()> {
        self.post(format!("/goim/push/all?operation={OP}"), body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn a_token_carries_the_claims_logic_reads_and_verifies_with_the_secret_only() {
        let t = token(b"s3cret", 42, "k-1", "live://r1");
        let v = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &DecodingKey::from_secret(b"s3cret").unwrap(),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(v.claims["mid"], 42);
        assert_eq!(v.claims["key"], "k-1");
        assert_eq!(v.claims["room"], "live://r1");
        assert_eq!(v.claims["accepts"], serde_json::json!([OP]));
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &t,
                &DecodingKey::from_secret(b"other").unwrap(),
                &Validation::new(Algorithm::HS256)
            )
            .is_err()
        );
    }

    #[test]
    fn rooms_split_into_type_and_id() {
        assert_eq!(split_room("live://r7").unwrap(), ("live", "r7"));
        assert!(split_room("r7").is_err());
    }
}
