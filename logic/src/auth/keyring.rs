//! The JWT verification keys in force, and the loops that replace them while logic runs.
//!
//! Three sources: the single key of `auth.jwt` (fixed for the life of the process), the JWKS
//! file and the JWKS URL. Each JWKS source's set is replaced as a whole when a new version loads,
//! so removing a key from the file (or the provider's set) retires it at the next reload. A
//! `kid` found in both is taken from the file: the operator's own file overrides the provider.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::fetch;
use super::jwks::{self, KeySet, VerifyKey};
use super::{Error, KeyError};
use crate::config::{self, JwtAlgorithm};
use crate::metrics::Metrics;

/// `source` labels of the key metrics.
const SINGLE: &str = "single";
const FILE: &str = "jwks_file";
const URL: &str = "jwks_url";

pub(crate) struct KeyRing {
    /// `auth.jwt.secret` / `public_key_pem`: tokens without a `kid` (every token without a JWKS).
    single: Option<Arc<VerifyKey>>,
    /// A JWKS source is configured: the header's `kid` picks the key.
    by_kid: bool,
    /// The last good set of each JWKS source. Readers clone an `Arc` and let go at once; the
    /// watch loops swap in whole new sets.
    file: RwLock<Arc<KeySet>>,
    url: RwLock<Arc<KeySet>>,
    /// What the file held at the last look (its bytes, or why it could not be read), so each
    /// version is loaded, logged and counted once. Only the file loop touches it after `new`.
    file_seen: Mutex<Option<Result<Vec<u8>, String>>>,
    /// A token named a `kid` no source has: the URL loop may fetch early (at most once per
    /// `url_retry`). `verify` notifies, the URL loop waits; `notify_one` keeps one pending wake.
    unknown_kid: Notify,
    base: Validation,
    config: config::JwksConfig,
    metrics: Metrics,
}

impl KeyRing {
    /// Loads the single key and the JWKS file; a file that cannot be used stops logic here.
    pub(crate) fn new(config: &config::JwtConfig, metrics: Metrics) -> Result<KeyRing, KeyError> {
        let base = jwks::base_validation(config);
        let single = single_key(config, &base)?.map(Arc::new);
        metrics.keys_loaded(SINGLE, usize::from(single.is_some()));
        let mut file = KeySet::new();
        let mut file_seen = None;
        if let Some(path) = &config.jwks.file {
            let jwks_error = |reason: String| KeyError::Jwks { path: path.clone(), reason };
            let bytes =
                fetch::read_file_now(path, config.jwks.max_bytes).map_err(|e| jwks_error(e.to_string()))?;
            let parsed = jwks::parse(&bytes, &base).map_err(|e| jwks_error(e.to_string()))?;
            log_loaded(FILE, &parsed);
            let mut kids: Vec<&String> = parsed.keys.keys().collect();
            kids.sort();
            info!(source = FILE, path = %path.display(), kids = ?kids, "jwt keys loaded");
            file = parsed.keys;
            metrics.keys_loaded(FILE, file.len());
            file_seen = Some(Ok(bytes));
        }
        Ok(KeyRing {
            single,
            by_kid: config.jwks.is_set(),
            file: RwLock::new(Arc::new(file)),
            url: RwLock::new(Arc::new(KeySet::new())),
            file_seen: Mutex::new(file_seen),
            unknown_kid: Notify::new(),
            base,
            config: config.jwks.clone(),
            metrics,
        })
    }

    /// The key that verifies `token` (see the [module docs](super)).
    pub(crate) fn select(&self, token: &[u8]) -> Result<Arc<VerifyKey>, Error> {
        if !self.by_kid {
            // validate() requires the single key when there is no JWKS.
            return self.single.clone().ok_or(Error::NoKeyId);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::Malformed)?;
        let Some(kid) = header.kid else { return self.single.clone().ok_or(Error::NoKeyId) };
        let found = self.file.read().get(&kid).cloned().or_else(|| self.url.read().get(&kid).cloned());
        found.ok_or_else(|| {
            if self.config.url.is_some() {
                self.unknown_kid.notify_one();
            }
            Error::UnknownKey
        })
    }

    /// Runs the file and URL loops until `shutdown`.
    pub(crate) async fn watch(&self, shutdown: &CancellationToken) {
        let file = async {
            if let Some(path) = &self.config.file {
                self.watch_file(path, shutdown).await;
            }
        };
        let url = async {
            if let Some(url) = &self.config.url {
                self.watch_url(url, shutdown).await;
            }
        };
        tokio::join!(file, url);
    }

    async fn watch_file(&self, path: &Path, shutdown: &CancellationToken) {
        let mut ticks = tokio::time::interval(self.config.file_poll);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await; // The first tick is immediate; new() has just read the file.
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let seen = fetch::read_file(path, self.config.max_bytes).await.map_err(|e| e.to_string());
            if self.file_seen.lock().as_ref() == Some(&seen) {
                continue;
            }
            match &seen {
                Ok(bytes) => match jwks::parse(bytes, &self.base) {
                    Ok(parsed) => self.install(FILE, &self.file, parsed),
                    Err(e) => self.refuse(FILE, &path.display().to_string(), &e.to_string()),
                },
                Err(e) => self.refuse(FILE, &path.display().to_string(), e),
            }
            *self.file_seen.lock() = Some(seen);
        }
    }

    async fn watch_url(&self, url: &str, shutdown: &CancellationToken) {
        let client = fetch::client(self.config.url_timeout);
        // validate() checked the URL.
        let parsed_url = super::syntax::jwks_url(url);
        let (client, parsed_url) = match (client, parsed_url) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) => return self.refuse(URL, url, &e.to_string()),
            (_, Err(e)) => return self.refuse(URL, url, &e),
        };
        loop {
            let fetched = Instant::now();
            let loaded = fetch::get(&client, &parsed_url, self.config.max_bytes)
                .await
                .map_err(|e| e.to_string())
                .and_then(|bytes| jwks::parse(&bytes, &self.base).map_err(|e| e.to_string()));
            let ok = match loaded {
                Ok(parsed) => {
                    self.install(URL, &self.url, parsed);
                    true
                }
                Err(e) => {
                    self.refuse(URL, url, &e);
                    false
                }
            };
            let earliest = fetched + self.config.url_retry;
            let mut next = if ok { fetched + self.config.url_refresh } else { earliest };
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = sleep_until(next) => break,
                    // A token with an unknown kid: fetch early, but not before `earliest`.
                    () = self.unknown_kid.notified() => next = next.min(earliest),
                }
            }
        }
    }

    fn install(&self, source: &'static str, slot: &RwLock<Arc<KeySet>>, parsed: jwks::Parsed) {
        log_loaded(source, &parsed);
        let mut kids: Vec<&String> = parsed.keys.keys().collect();
        kids.sort();
        let changed = {
            let old = slot.read();
            let mut old_kids: Vec<&String> = old.keys().collect();
            old_kids.sort();
            old_kids != kids
        };
        if changed {
            info!(source, kids = ?kids, "jwt keys reloaded");
        }
        self.metrics.keys_loaded(source, parsed.keys.len());
        self.metrics.key_reload(source, true);
        *slot.write() = Arc::new(parsed.keys);
    }

    fn refuse(&self, source: &'static str, from: &str, reason: &str) {
        error!(source, from, reason, "jwt key set refused; the last good keys stay in force");
        self.metrics.key_reload(source, false);
    }
}

fn log_loaded(source: &'static str, parsed: &jwks::Parsed) {
    for skipped in &parsed.skipped {
        warn!(source, key = %skipped, "jwks key skipped");
    }
}

/// The single key of `auth.jwt`, if one is configured.
fn single_key(config: &config::JwtConfig, base: &Validation) -> Result<Option<VerifyKey>, KeyError> {
    let algorithm = config.algorithm;
    let key = match algorithm {
        JwtAlgorithm::HS256 => {
            let Some(secret) = config.secret.as_deref().filter(|s| !s.is_empty()) else {
                // validate() allows no single key only beside a JWKS.
                return if config.jwks.is_set() { Ok(None) } else { Err(KeyError::MissingSecret) };
            };
            // from_secret only fails for an empty secret, excluded above.
            DecodingKey::from_secret(secret.as_bytes()).map_err(|e| KeyError::Invalid {
                path: Default::default(),
                algorithm,
                reason: e.to_string(),
            })?
        }
        JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
            let Some(path) = config.public_key_pem.clone() else {
                return if config.jwks.is_set() {
                    Ok(None)
                } else {
                    Err(KeyError::MissingPublicKey(algorithm))
                };
            };
            let pem = std::fs::read(&path).map_err(|source| KeyError::Read { path: path.clone(), source })?;
            let parsed = if algorithm == JwtAlgorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            parsed.map_err(|e| KeyError::Invalid { path, algorithm, reason: e.to_string() })?
        }
    };
    let algorithm = match algorithm {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    };
    Ok(Some(VerifyKey { key, validation: jwks::validation_for(base, algorithm) }))
}
