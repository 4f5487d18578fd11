//! The push API's bearer tokens: `http.push_token`, `http.push_tokens` and the lines of
//! `http.push_token_file`, all accepted at once so a token is rotated by adding the new one,
//! moving the callers over, then removing the old one.
//!
//! The file is re-read every `push_token_file_poll` and replaced as a whole when its contents
//! change. A changed file that cannot be used (unreadable, too large, a line that is not a token,
//! no token at all) is refused, logged and counted, and the tokens read last stay accepted: an
//! empty or broken file never opens the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::KeyError;
use super::fetch;
use super::syntax::is_valid_push_token;
use crate::config;
use crate::metrics::Metrics;

const SOURCE: &str = "push_token_file";

/// The accepted push API tokens.
pub struct PushTokens {
    /// `push_token` and `push_tokens`: fixed for the life of the process.
    configured: Vec<Box<[u8]>>,
    file: Option<TokenFile>,
    metrics: Metrics,
}

struct TokenFile {
    path: PathBuf,
    poll: Duration,
    max_bytes: usize,
    /// The last good file's tokens; swapped whole by the watch loop.
    tokens: RwLock<Arc<Vec<Box<[u8]>>>>,
    /// What the file held at the last look, so each version is loaded and counted once.
    seen: Mutex<Result<Vec<u8>, String>>,
}

impl std::fmt::Debug for PushTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTokens")
            .field("configured", &self.configured.len())
            .field("file", &self.file.as_ref().map(|f| &f.path))
            .finish_non_exhaustive()
    }
}

impl PushTokens {
    /// The tokens of `http`, reading `push_token_file` (which must be usable at start); `None`
    /// when no token is configured and the push API is open.
    pub fn new(http: &config::HttpConfig, metrics: Metrics) -> Result<Option<PushTokens>, KeyError> {
        let configured: Vec<Box<[u8]>> =
            http.push_token.iter().chain(&http.push_tokens).map(|t| t.as_bytes().into()).collect();
        let file = match &http.push_token_file {
            None => None,
            Some(path) => {
                let invalid = |reason: String| KeyError::PushTokenFile { path: path.clone(), reason };
                let bytes = fetch::read_file_now(path, http.push_token_file_max_bytes)
                    .map_err(|e| invalid(e.to_string()))?;
                let tokens = parse(&bytes).map_err(invalid)?;
                metrics.push_tokens_loaded("file", tokens.len());
                Some(TokenFile {
                    path: path.clone(),
                    poll: http.push_token_file_poll,
                    max_bytes: http.push_token_file_max_bytes,
                    tokens: RwLock::new(Arc::new(tokens)),
                    seen: Mutex::new(Ok(bytes)),
                })
            }
        };
        if configured.is_empty() && file.is_none() {
            return Ok(None);
        }
        metrics.push_tokens_loaded("config", configured.len());
        Ok(Some(PushTokens { configured, file, metrics }))
    }

    /// Whether `presented` (the bearer token of a request, if it had one) is accepted; a refusal
    /// is counted by reason (`missing`, `wrong`). Every accepted token is compared in constant
    /// time and none ends the loop early, so timing tells nothing about which one came close.
    pub fn check(&self, presented: Option<&str>) -> bool {
        let Some(presented) = presented else {
            self.metrics.push_auth_failed("missing");
            return false;
        };
        let file = self.file.as_ref().map(|f| f.tokens.read().clone());
        let file_tokens = file.as_deref().map(Vec::as_slice).unwrap_or_default();
        let mut accepted = false;
        for token in self.configured.iter().chain(file_tokens) {
            accepted |= constant_time_eq(presented.as_bytes(), token);
        }
        if !accepted {
            self.metrics.push_auth_failed("wrong");
        }
        accepted
    }

    /// Re-reads `push_token_file` on change until `shutdown`; returns at once without one.
    pub async fn watch(&self, shutdown: CancellationToken) {
        let Some(file) = &self.file else { return };
        let mut ticks = tokio::time::interval(file.poll);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await; // Immediate; new() has just read the file.
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let seen = fetch::read_file(&file.path, file.max_bytes).await.map_err(|e| e.to_string());
            if *file.seen.lock() == seen {
                continue;
            }
            match seen.clone().and_then(|bytes| parse(&bytes)) {
                Ok(tokens) => {
                    info!(path = %file.path.display(), tokens = tokens.len(), "push tokens reloaded");
                    self.metrics.push_tokens_loaded("file", tokens.len());
                    self.metrics.key_reload(SOURCE, true);
                    *file.tokens.write() = Arc::new(tokens);
                }
                Err(reason) => refused(&file.path, &reason, &self.metrics),
            }
            *file.seen.lock() = seen;
        }
    }
}

fn refused(path: &Path, reason: &str, metrics: &Metrics) {
    error!(path = %path.display(), reason, "push token file refused; the tokens read last stay accepted");
    metrics.key_reload(SOURCE, false);
}

/// One token a line; blank lines and lines starting with `#` are skipped. The reasons name the
/// line, never the token.
fn parse(bytes: &[u8]) -> Result<Vec<Box<[u8]>>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !is_valid_push_token(line) {
            return Err(format!("line {}: a token must be printable ASCII without spaces", i + 1));
        }
        tokens.push(line.as_bytes().into());
    }
    if tokens.is_empty() {
        return Err("no token in the file".into());
    }
    Ok(tokens)
}

/// Compares without an early exit, so response timing does not reveal how much of a guess matched.
/// (A length mismatch returns at once: token lengths are not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_only_identical_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn a_token_file_skips_blanks_and_comments_and_refuses_bad_lines_or_no_token() {
        let tokens = parse(b"# rotated 2026-01\n\n  new-token  \nold-token\n").unwrap();
        assert_eq!(tokens, [b"new-token"[..].into(), b"old-token"[..].into()]);
        assert_eq!(
            parse(b"ok\nhas space\n").unwrap_err(),
            "line 2: a token must be printable ASCII without spaces"
        );
        assert_eq!(parse(b"# only a comment\n\n").unwrap_err(), "no token in the file");
        assert_eq!(parse(b"").unwrap_err(), "no token in the file");
        assert!(parse(b"\xff").is_err());
    }

    #[test]
    fn every_configured_token_is_accepted_and_refusals_are_told_apart() {
        let http = config::HttpConfig {
            push_token: Some("old".into()),
            push_tokens: vec!["new".into()],
            ..config::HttpConfig::default()
        };
        let tokens = PushTokens::new(&http, Metrics::default()).unwrap().unwrap();
        assert!(tokens.check(Some("old")));
        assert!(tokens.check(Some("new")));
        assert!(!tokens.check(Some("ne")));
        assert!(!tokens.check(None));
        assert!(PushTokens::new(&config::HttpConfig::default(), Metrics::default()).unwrap().is_none());
    }
}
