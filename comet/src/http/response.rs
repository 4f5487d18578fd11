//! The HTTP/1.1 responses comet's HTTP port writes: a [`Response`] with a complete body, and the
//! short plain-text [`error_response`] that ends a connection.

use bytes::Bytes;

/// A response; always a complete body with `Content-Length`.
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Long-poll answers allow any origin: the session id is the credential, no cookies.
    pub cors: bool,
    /// A poll response with packets: its seq goes in a header, and it learns whether the
    /// response was written (confirmed after a complete write, failed when dropped).
    pub receipt: Option<Box<dyn Receipt>>,
    /// A `Retry-After` header in seconds, for a refusal that asks to come back later; 0: none.
    /// (A `u32`, which fits in the padding: a waiting long-poll's future holds responses.)
    pub retry_after_secs: u32,
}

/// Travels with a response that must learn whether it reached the client (a long-poll response
/// with packets). Implemented by `long_poll`; here so that HTTP needs nothing of long-polling.
pub trait Receipt: Send + Sync {
    /// The header that names the response (name and value), also exposed to scripts.
    fn header(&self) -> (&'static str, u64);
    /// The whole response was written (and flushed). Dropped unconfirmed, the write failed.
    fn confirm(self: Box<Self>);
}

impl Response {
    pub fn json(status: &'static str, value: serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
            cors: true,
            receipt: None,
            retry_after_secs: 0,
        }
    }

    pub fn error(status: &'static str, error: &str, message: &str) -> Response {
        Response::json(status, serde_json::json!({"error": error, "message": message}))
    }

    pub fn packets(body: Bytes) -> Response {
        Response {
            status: "200 OK",
            content_type: "application/octet-stream",
            body,
            cors: true,
            receipt: None,
            retry_after_secs: 0,
        }
    }

    pub fn empty(status: &'static str) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: Bytes::new(),
            cors: true,
            receipt: None,
            retry_after_secs: 0,
        }
    }

    /// The status line and headers, with `Connection: close` when `close`.
    pub fn head(&self, close: bool) -> String {
        let mut h = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.cors {
            h.push_str("Access-Control-Allow-Origin: *\r\n");
        }
        if let Some(r) = &self.receipt {
            let (name, value) = r.header();
            h.push_str(&format!("{name}: {value}\r\nAccess-Control-Expose-Headers: {name}\r\n"));
        }
        if self.retry_after_secs > 0 {
            h.push_str(&format!("Retry-After: {}\r\n", self.retry_after_secs));
        }
        if close {
            h.push_str("Connection: close\r\n");
        }
        h.push_str("\r\n");
        h
    }
}

/// A `Retry-After` value: whole seconds, rounded up (so never 0 for a delay).
pub fn retry_after_secs(after: std::time::Duration) -> u32 {
    after.as_millis().div_ceil(1000).min(u32::MAX as u128) as u32
}

/// A short plain-text HTTP error response, after which the connection closes.
pub fn error_response(status: &str, message: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}\n",
        message.len() + 1
    )
}
