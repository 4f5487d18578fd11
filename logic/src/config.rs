//! logic's configuration: the `[http]`, `[auth]`, `[node]`, `[session]`, `[queue]` and
//! `[history]` tables.
//!
//! Every table takes `#[serde(default, deny_unknown_fields)]`, so an empty file is a valid
//! config and a misspelt key is an error. Durations are humantime strings (`"30s"`, `"4m"`).
//! The defaults are goim's (`cmd/logic/logic-example.toml`), except `auth.mode`, which is `jwt`:
//! a production logic authenticates. The embedded binary switches to `json` for the demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A config value that cannot work; `field` is its dotted path, e.g. `auth.jwt.secret`.
pub type Error = goim_kit::Invalid;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub node: NodeConfig,
    pub session: SessionConfig,
    pub queue: QueueConfig,
    /// Positions and the history a reconnecting client resumes from (`docs/recovery.md`).
    pub history: crate::history::HistoryConfig,
}

/// The push and query API (reference §3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Default `0.0.0.0:3111`.
    pub addr: String,
    /// When set, every `/goim/push/*` request needs `Authorization: Bearer <token>`.
    pub push_token: Option<String>,
    /// More accepted bearer tokens, besides `push_token`: list the new one beside the old while
    /// a token is rotated. Default: none.
    pub push_tokens: Vec<String>,
    /// A file of accepted bearer tokens, one a line (blank lines and `#` comments skipped),
    /// re-read when its contents change (a mounted Kubernetes Secret is updated in place). A
    /// changed file that cannot be used is refused and the tokens last read stay accepted.
    pub push_token_file: Option<PathBuf>,
    /// How often `push_token_file` is checked for changes. Default 10s.
    #[serde(with = "humantime_serde")]
    pub push_token_file_poll: Duration,
    /// Largest `push_token_file` in bytes; a larger one is refused. Default 64 KiB.
    pub push_token_file_max_bytes: usize,
    /// Largest push message body in bytes; a larger one gets HTTP 413. Default 64 KiB.
    pub max_body: usize,
    /// Browser origins allowed to call the API (CORS), e.g. the demo page on the comet port.
    /// `"*"` allows any origin. Default: none, and no CORS headers are sent.
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            addr: "0.0.0.0:3111".into(),
            push_token: None,
            push_tokens: Vec::new(),
            push_token_file: None,
            push_token_file_poll: Duration::from_secs(10),
            push_token_file_max_bytes: 64 * 1024,
            max_body: 64 * 1024,
            cors_origins: Vec::new(),
        }
    }
}

/// How a client's auth packet (op 7 body) is verified.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub jwt: JwtConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// goim's plain JSON token: anyone can claim any user. Development only.
    Json,
    /// A signed JWT.
    #[default]
    Jwt,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The algorithm of the single key (`secret` or `public_key_pem`).
    pub algorithm: JwtAlgorithm,
    /// The shared secret (HS256).
    pub secret: Option<String>,
    /// Path of the PEM public key (RS256, ES256). Read when logic starts.
    pub public_key_pem: Option<PathBuf>,
    /// When set, the `iss` claim must equal it.
    pub issuer: Option<String>,
    /// When set, the `aud` claim must contain it.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`. Default 30s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Keys selected by the token header's `kid`. Last: a TOML table follows the plain values.
    pub jwks: JwksConfig,
}

impl Default for JwtConfig {
    fn default() -> JwtConfig {
        JwtConfig {
            algorithm: JwtAlgorithm::default(),
            secret: None,
            public_key_pem: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            jwks: JwksConfig::default(),
        }
    }
}

/// JWT verification keys as JWK Sets (RFC 7517), from a file, a URL, or both; see
/// [`crate::auth`] for how a token's key is chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwksConfig {
    /// A JWKS file, re-read when its contents change. A changed file that cannot be used is
    /// refused (logged, counted) and the keys last read stay in force.
    pub file: Option<PathBuf>,
    /// How often `file` is checked for changes. Default 10s.
    #[serde(with = "humantime_serde")]
    pub file_poll: Duration,
    /// An `http://` or `https://` URL serving a JWKS, fetched at start and every `url_refresh`.
    pub url: Option<String>,
    /// Time between successful fetches of `url`. Default 5m.
    #[serde(with = "humantime_serde")]
    pub url_refresh: Duration,
    /// Time before the next fetch after a failed one; also the least time between the early
    /// fetches a token with an unknown `kid` asks for. Default 30s.
    #[serde(with = "humantime_serde")]
    pub url_retry: Duration,
    /// Limit on one fetch of `url`, connecting included. Default 5s.
    #[serde(with = "humantime_serde")]
    pub url_timeout: Duration,
    /// Largest JWKS document (file or response) in bytes; a larger one is refused. Default 1 MiB.
    pub max_bytes: usize,
}

impl Default for JwksConfig {
    fn default() -> JwksConfig {
        JwksConfig {
            file: None,
            file_poll: Duration::from_secs(10),
            url: None,
            url_refresh: Duration::from_secs(5 * 60),
            url_retry: Duration::from_secs(30),
            url_timeout: Duration::from_secs(5),
            max_bytes: 1024 * 1024,
        }
    }
}

impl JwksConfig {
    /// Whether a JWKS source is configured, so tokens choose their key by `kid`.
    pub fn is_set(&self) -> bool {
        self.file.is_some() || self.url.is_some()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

/// What clients are told about the comets (goim's `[node]` and `[backoff]`), via
/// `/goim/nodes/weighted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Returned as the only node when no comet is known. Default `conn.goim.io`.
    pub default_domain: String,
    /// Appended to a comet's server id for web clients. Default `.goim.io`.
    pub host_domain: String,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub wss_port: u16,
    /// The client heartbeat interval, reported in seconds. Default 4m.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Missed heartbeats before comet closes a connection. Default 2.
    pub heartbeat_max: u32,
    pub backoff: BackoffConfig,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            default_domain: "conn.goim.io".into(),
            host_domain: ".goim.io".into(),
            tcp_port: 3101,
            ws_port: 3102,
            wss_port: 3103,
            heartbeat: Duration::from_secs(4 * 60),
            heartbeat_max: 2,
            backoff: BackoffConfig::default(),
        }
    }
}

/// Client reconnect backoff hints, passed through verbatim (seconds, multiplier, jitter fraction).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    pub max_delay: i32,
    pub base_delay: i32,
    pub factor: f32,
    pub jitter: f32,
}

impl Default for BackoffConfig {
    fn default() -> BackoffConfig {
        BackoffConfig { max_delay: 300, base_delay: 3, factor: 1.8, jitter: 0.3 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A comet whose last online report is older than this is ignored and its record dropped.
    /// Default 30s (comets report every 10s).
    #[serde(with = "humantime_serde")]
    pub online_stale_after: Duration,
    /// How long comet waits for a heartbeat (the connect reply). Default: `node.heartbeat` ×
    /// `node.heartbeat_max`, as in goim; see [`Config::heartbeat_timeout`].
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Option<Duration>,
    /// How long a key/mid → comet mapping lives unless a connect or heartbeat refreshes it
    /// (goim's `redis.expire`). Default 30m.
    #[serde(with = "humantime_serde")]
    pub mapping_ttl: Duration,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            online_stale_after: Duration::from_secs(30),
            heartbeat_timeout: None,
            mapping_ttl: Duration::from_secs(30 * 60),
        }
    }
}

/// The in-process push queue of the embedded setup ([`crate::queue::Memory`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Pushes waiting for job. Default 1024.
    pub capacity: usize,
    /// How long a push request waits for room in a full queue before failing. Default 1s.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig { capacity: 1024, publish_timeout: Duration::from_secs(1) }
    }
}

impl Config {
    /// What `Connect` returns as the session heartbeat: the configured
    /// `session.heartbeat_timeout`, else `node.heartbeat × node.heartbeat_max` (goim: 8 minutes).
    pub fn heartbeat_timeout(&self) -> Duration {
        self.session.heartbeat_timeout.unwrap_or(self.node.heartbeat * self.node.heartbeat_max)
    }

    /// Checks what serde cannot. Files (the PEM key, the JWKS and push token files) are read
    /// later, by [`crate::Authenticator::new`] and [`crate::Logic::new`].
    pub fn validate(&self) -> Result<(), Error> {
        self.http.validate()?;
        self.auth.validate()?;
        self.node.validate()?;
        self.session.validate()?;
        self.queue.validate()?;
        self.history.validate()
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), Error> {
        if let Err(e) = self.addr.parse::<SocketAddr>() {
            return Err(Error::new("http.addr", format!("{:?} is not ip:port ({e})", self.addr)));
        }
        if let Some(token) = &self.push_token
            && !crate::auth::syntax::is_valid_push_token(token)
        {
            return Err(Error::new("http.push_token", "must be non-empty printable ASCII without spaces"));
        }
        if let Some(i) = self.push_tokens.iter().position(|t| !crate::auth::syntax::is_valid_push_token(t)) {
            return Err(Error::new(
                "http.push_tokens",
                format!("token {i} must be non-empty printable ASCII without spaces"),
            ));
        }
        if self.push_token_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(Error::new("http.push_token_file", "must be a path"));
        }
        if self.push_token_file_poll < MIN_POLL {
            return Err(Error::new("http.push_token_file_poll", "must be at least 10ms"));
        }
        if self.push_token_file_max_bytes == 0 {
            return Err(Error::new("http.push_token_file_max_bytes", "must be at least 1"));
        }
        if self.max_body == 0 {
            return Err(Error::new("http.max_body", "must be at least 1"));
        }
        for origin in &self.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(Error::new(
                    "http.cors_origins",
                    format!("{origin:?} is not \"*\" or an http(s) origin"),
                ));
            }
            if axum::http::HeaderValue::from_str(origin).is_err() {
                return Err(Error::new(
                    "http.cors_origins",
                    format!("{origin:?} is not a valid header value"),
                ));
            }
        }
        Ok(())
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.mode == AuthMode::Json {
            return Ok(());
        }
        let jwt = &self.jwt;
        jwt.jwks.validate()?;
        // With a JWKS the single key is optional: it then verifies only tokens without a `kid`.
        if jwt.jwks.is_set() && jwt.secret.is_none() && jwt.public_key_pem.is_none() {
            return Ok(());
        }
        match jwt.algorithm {
            JwtAlgorithm::HS256 => {
                if jwt.secret.as_deref().is_none_or(str::is_empty) {
                    return Err(Error::new(
                        "auth.jwt.secret",
                        "required when auth.mode = \"jwt\" with HS256",
                    ));
                }
                if jwt.public_key_pem.is_some() {
                    return Err(Error::new("auth.jwt.public_key_pem", "is for RS256/ES256, not HS256"));
                }
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                if jwt.public_key_pem.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                    return Err(Error::new(
                        "auth.jwt.public_key_pem",
                        format!("required when auth.mode = \"jwt\" with {:?}", jwt.algorithm),
                    ));
                }
                if jwt.secret.is_some() {
                    return Err(Error::new("auth.jwt.secret", "is for HS256 only"));
                }
            }
        }
        Ok(())
    }
}

/// The shortest poll or retry interval: anything shorter is a busy loop.
const MIN_POLL: Duration = Duration::from_millis(10);

impl JwksConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(Error::new("auth.jwt.jwks.file", "must be a path"));
        }
        if let Some(url) = &self.url {
            crate::auth::syntax::jwks_url(url).map_err(|reason| Error::new("auth.jwt.jwks.url", reason))?;
        }
        for (field, interval) in [
            ("auth.jwt.jwks.file_poll", self.file_poll),
            ("auth.jwt.jwks.url_refresh", self.url_refresh),
            ("auth.jwt.jwks.url_retry", self.url_retry),
        ] {
            if interval < MIN_POLL {
                return Err(Error::new(field, "must be at least 10ms"));
            }
        }
        if self.url_timeout.is_zero() {
            return Err(Error::new("auth.jwt.jwks.url_timeout", "must be positive"));
        }
        if self.max_bytes == 0 {
            return Err(Error::new("auth.jwt.jwks.max_bytes", "must be at least 1"));
        }
        Ok(())
    }
}

impl NodeConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.heartbeat < Duration::from_secs(1) {
            return Err(Error::new("node.heartbeat", "must be at least 1s (clients are told whole seconds)"));
        }
        if self.heartbeat.as_secs() > i32::MAX as u64 {
            return Err(Error::new("node.heartbeat", "is too long"));
        }
        if self.heartbeat_max == 0 {
            return Err(Error::new("node.heartbeat_max", "must be at least 1"));
        }
        let b = &self.backoff;
        if b.base_delay < 0 || b.max_delay < b.base_delay {
            return Err(Error::new("node.backoff.max_delay", "must be at least base_delay, and both >= 0"));
        }
        if !(b.factor.is_finite() && b.factor >= 1.0) {
            return Err(Error::new("node.backoff.factor", "must be at least 1"));
        }
        if !(b.jitter.is_finite() && b.jitter >= 0.0) {
            return Err(Error::new("node.backoff.jitter", "must be at least 0"));
        }
        Ok(())
    }
}

impl SessionConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.online_stale_after.is_zero() {
            return Err(Error::new("session.online_stale_after", "must be positive"));
        }
        if self.heartbeat_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::new("session.heartbeat_timeout", "must be positive"));
        }
        if self.mapping_ttl < Duration::from_secs(1) {
            return Err(Error::new("session.mapping_ttl", "must be at least 1s"));
        }
        Ok(())
    }
}

impl QueueConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.capacity == 0 {
            return Err(Error::new("queue.capacity", "must be at least 1"));
        }
        if self.publish_timeout.is_zero() {
            return Err(Error::new("queue.publish_timeout", "must be positive"));
        }
        Ok(())
    }
}
