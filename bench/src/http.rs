//! A minimal HTTP/1.1 client over one kept-alive connection: what the publisher and the
//! long-poll subscriber need, and no more (Content-Length or chunked bodies, no redirects).

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    pub stream: TcpStream,
    host: String,
    /// Bytes read past the last response.
    buf: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        let host = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "localhost".into());
        Conn { stream, host, buf: Vec::new() }
    }

    /// Sends one request and reads its response.
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host).into_bytes();
        if method != "GET" {
            req.extend_from_slice(
                format!("Content-Type: text/plain\r\nContent-Length: {}\r\n", body.len()).as_bytes(),
            );
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.stream.write_all(&req).await.context("write request")?;
        self.response().await
    }

    async fn response(&mut self) -> Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {:?}", head.lines().next()))?;
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
            })
        };
        self.buf.drain(..head_end);
        if let Some(len) = header("content-length") {
            let len: usize = len.parse().context("bad content-length")?;
            while self.buf.len() < len {
                self.fill().await?;
            }
            return Ok(Response { status, body: self.buf.drain(..len).collect() });
        }
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            return Ok(Response { status, body: self.chunked().await? });
        }
        // No length given: only bodiless answers (204, 304) are expected here.
        Ok(Response { status, body: Vec::new() })
    }

    async fn chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            while self.buf.len() < line_end + 2 + size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.context("read response")?;
        if n == 0 {
            bail!("server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_connection() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let replies: [&[u8]; 2] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ];
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            for (i, reply) in replies.iter().enumerate() {
                while got.windows(4).filter(|w| w == b"\r\n\r\n").count() <= i {
                    let n = s.read(&mut chunk).await.unwrap();
                    got.extend_from_slice(&chunk[..n]);
                }
                s.write_all(reply).await.unwrap();
            }
        });
        let mut c = Conn::new(TcpStream::connect(addr).await.unwrap());
        let a = c.request("POST", "/a", b"x").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
        let b = c.request("GET", "/b", b"").await.unwrap();
        assert_eq!((b.status, b.body.as_slice()), (201, &b"abc"[..]));
        server.await.unwrap();
    }
}
