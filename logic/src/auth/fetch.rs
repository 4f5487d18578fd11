//! Reading key material with a size limit: a file (at start and on each poll) or an HTTP(S)
//! response (the JWKS URL, with a timeout).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// Why key material could not be read. `Display` is for the log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("larger than the limit of {max} bytes")]
    TooLarge { max: usize },
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(u16),
}

/// The contents of `path`, refused when longer than `max` (blocking; for startup).
pub(crate) fn read_file_now(path: &Path, max: usize) -> Result<Vec<u8>, FetchError> {
    let read = |source| FetchError::Read { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(read)?.take(max as u64 + 1).read_to_end(&mut bytes).map_err(read)?;
    within(bytes, max)
}

/// The contents of `path`, refused when longer than `max`, read on the blocking pool (tokio's
/// `fs` does the same; the workspace does not enable it).
pub(crate) async fn read_file(path: &Path, max: usize) -> Result<Vec<u8>, FetchError> {
    let owned = path.to_owned();
    match tokio::task::spawn_blocking(move || read_file_now(&owned, max)).await {
        Ok(read) => read,
        // The closure does not panic; a runtime shutting down cancels it.
        Err(e) => Err(FetchError::Read { path: path.to_owned(), source: std::io::Error::other(e) }),
    }
}

fn within(bytes: Vec<u8>, max: usize) -> Result<Vec<u8>, FetchError> {
    if bytes.len() > max { Err(FetchError::TooLarge { max }) } else { Ok(bytes) }
}

/// An HTTP/1.1 client for JWKS fetches: plain http, or https verified against the system's root
/// certificates with ring as the crypto provider (passed in, not installed process-wide).
/// Redirects are not followed: configure the final URL.
pub(crate) struct Client {
    client: legacy::Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// Bounds a whole fetch: connect, TLS, request and body.
    timeout: Duration,
}

pub(crate) fn client(timeout: Duration) -> Result<Client, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    // Unreadable or unparsable certificates are skipped; with none at all only http:// works.
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(errors = ?native.errors, "no system root certificates: an https:// jwks url will fail");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Request(format!("tls setup: {}", chain(&e))))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false); // https:// URLs reach the TLS layer wrapped around it.
    http.set_connect_timeout(Some(timeout));
    let connector =
        HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http);
    Ok(Client { client: legacy::Client::builder(TokioExecutor::new()).build(connector), timeout })
}

/// GETs `url`; a status other than 2xx, or a body over `max` bytes, is an error. The body is read
/// through a limit, so a huge response is cut off there, not buffered.
pub(crate) async fn get(client: &Client, url: &Uri, max: usize) -> Result<Vec<u8>, FetchError> {
    let request = Request::get(url.clone())
        .header(header::USER_AGENT, concat!("goim-logic/", env!("CARGO_PKG_VERSION")))
        .header(header::ACCEPT, "application/json, application/jwk-set+json")
        .body(Empty::new())
        .map_err(|e| FetchError::Request(chain(&e)))?;
    let fetch = async {
        let response = client.client.request(request).await.map_err(|e| FetchError::Request(chain(&e)))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let declared =
            response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max as u64) {
            return Err(FetchError::TooLarge { max });
        }
        match Limited::new(response.into_body(), max).collect().await {
            Ok(body) => Ok(body.to_bytes().to_vec()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(FetchError::TooLarge { max }),
            Err(e) => Err(FetchError::Request(chain(&*e))),
        }
    };
    tokio::time::timeout(client.timeout, fetch)
        .await
        .unwrap_or_else(|_| Err(FetchError::Request(format!("timed out after {:?}", client.timeout))))
}

/// An error and its causes on one line (hyper's own message omits the cause: "connection
/// refused", "dns error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
