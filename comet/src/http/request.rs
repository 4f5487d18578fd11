//! The HTTP/1.1 request head, read from a client of comet's HTTP port: every request there (a
//! WebSocket upgrade, a long-poll, a demo page) starts with one. Bounded: a head larger than the
//! configured limit is refused before it is read whole.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Default)]
pub struct Request {
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub method: String,
    /// The request target, query included.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The first value of query parameter `name` (no percent-decoding: comet's parameters are
    /// plain tokens and numbers).
    pub fn query(&self, name: &str) -> Option<&str> {
        let (_, q) = self.target.split_once('?')?;
        q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Whether the client asked to close the connection after this request.
    pub fn wants_close(&self) -> bool {
        self.has_token("connection", "close")
            || (self.version == 0 && !self.has_token("connection", "keep-alive"))
    }

    /// Whether header `name` lists `token` (comma-separated, any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request head larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(httparse::Error),
    #[error("connection closed before the request head ended")]
    Closed,
}

/// Reads a request head of at most `max` bytes. Returns it and any bytes that followed it.
pub async fn read_request<R: AsyncRead + Unpin>(
    rd: &mut R,
    max: usize,
) -> Result<(Request, BytesMut), Error> {
    read_request_after(rd, BytesMut::with_capacity(1024), max).await
}

/// Like [`read_request`], starting with bytes already read (a keep-alive connection's leftover).
pub async fn read_request_after<R: AsyncRead + Unpin>(
    rd: &mut R,
    mut buf: BytesMut,
    max: usize,
) -> Result<(Request, BytesMut), Error> {
    loop {
        if let Some((out, n)) = parse(&buf)? {
            let mut rest = buf.split_off(n);
            if rest.is_empty() {
                // Not a slice of the head buffer, which would otherwise live as long as `rest`.
                rest = BytesMut::new();
            }
            return Ok((out, rest));
        }
        if buf.len() >= max {
            return Err(Error::TooLarge(max));
        }
        buf.reserve(1024.min(max - buf.len()));
        let room = max - buf.len();
        let n = (&mut *rd).take(room as u64).read_buf(&mut buf).await.map_err(|_| Error::Closed)?;
        if n == 0 {
            return Err(Error::Closed);
        }
    }
}

/// The request head at the start of `buf` and its length, or `None` if it is incomplete. A
/// function of its own so that its header array (2 KB) lives on the stack while it parses, not
/// in the reading future (and so in every connection's) across its wait for bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf).map_err(Error::Malformed)? {
        httparse::Status::Complete(n) => Ok(Some((
            Request {
                version: req.version.unwrap_or(1),
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect(),
            },
            n,
        ))),
        httparse::Status::Partial => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused() {
        let big = format!("GET /sub HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        let err = read_request(&mut big.as_bytes(), 600).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge(600)));
    }

    #[tokio::test]
    async fn bytes_after_the_head_are_kept() {
        let raw = b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n\x82\x80";
        let (req, rest) = read_request(&mut &raw[..], 8192).await.unwrap();
        assert_eq!(req.path(), "/sub");
        assert_eq!(&rest[..], b"\x82\x80");
    }
}
