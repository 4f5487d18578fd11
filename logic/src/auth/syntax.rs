//! What an auth setting must look like: the checks that config validation and the key loaders
//! share. A leaf: it imports nothing of logic, so `config` can use it without a circle.

use axum::http::Uri;

/// Whether `token` can be a bearer token: non-empty printable ASCII without spaces.
pub fn is_valid_push_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks a JWKS URL: `http://` or `https://` with a host.
pub fn jwks_url(url: &str) -> Result<Uri, String> {
    let parsed: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
    if !scheme_ok || parsed.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} is not an http:// or https:// URL with a host"));
    }
    Ok(parsed)
}
