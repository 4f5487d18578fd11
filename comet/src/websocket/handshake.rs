//! The WebSocket opening handshake (RFC 6455 §4.2) over a request head that HTTP parsed: is it an
//! upgrade, and the `101 Switching Protocols` answer.

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::http::Request;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value when `req` is a valid WebSocket upgrade, else why not.
pub fn accept(req: &Request) -> Result<String, &'static str> {
    if req.method != "GET" {
        return Err("websocket upgrade must be a GET");
    }
    if !req.has_token("upgrade", "websocket") {
        return Err("missing Upgrade: websocket");
    }
    if !req.has_token("connection", "upgrade") {
        return Err("missing Connection: upgrade");
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let key = req.header("sec-websocket-key").filter(|k| !k.is_empty()).ok_or("missing Sec-WebSocket-Key")?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(sha.finalize()))
}

/// The `101 Switching Protocols` response.
pub fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_matches_rfc_6455s_example() {
        let req = Request {
            version: 1,
            method: "GET".into(),
            target: "/sub".into(),
            headers: vec![
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "keep-alive, Upgrade".into()),
                ("Sec-WebSocket-Version".into(), "13".into()),
                ("Sec-WebSocket-Key".into(), "dGhlIHNhbXBsZSBub25jZQ==".into()),
            ],
        };
        assert_eq!(accept(&req).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
