//! A goim v2 client over TCP or WebSocket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use goim_api::frame::{decode_message, decode_stream, split_packets};
use goim_api::{Frame, Op};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
}

enum Conn {
    Tcp { stream: TcpStream, buf: BytesMut },
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
}

/// What the server sent that was not a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The TCP stream ended.
    Eof,
    /// A WebSocket close frame, with its code.
    Close(u16),
}

pub struct Client {
    conn: Conn,
    /// Inner packets of a WebSocket op-9 message not yet returned.
    pending: VecDeque<Frame>,
    /// How many WebSocket messages carried pushes (op 9), to check the wrapping.
    pub raw_messages: usize,
    seq: i32,
}

/// goim's JSON token.
pub fn json_token(mid: i64, key: &str, room: &str, accepts: &[i32]) -> String {
    serde_json::json!({"mid": mid, "key": key, "room_id": room, "platform": "web", "accepts": accepts})
        .to_string()
}

impl Client {
    pub async fn connect(transport: Transport, addr: SocketAddr) -> Result<Client> {
        match transport {
            Transport::Tcp => Client::tcp(addr).await,
            Transport::Ws => Client::ws(&format!("ws://{addr}/sub")).await,
        }
    }

    pub async fn tcp(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Client::new(Conn::Tcp { stream, buf: BytesMut::with_capacity(4096) }))
    }

    pub async fn ws(url: &str) -> Result<Client> {
        let (ws, _) =
            tokio_tungstenite::connect_async(url).await.with_context(|| format!("connect {url}"))?;
        Ok(Client::new(Conn::Ws(Box::new(ws))))
    }

    fn new(conn: Conn) -> Client {
        Client { conn, pending: VecDeque::new(), raw_messages: 0, seq: 0 }
    }

    pub fn next_seq(&mut self) -> i32 {
        self.seq += 1;
        self.seq
    }

    /// Sends raw bytes: on TCP into the stream, on WebSocket as one binary message.
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<()> {
        match &mut self.conn {
            Conn::Tcp { stream, .. } => stream.write_all(&bytes).await?,
            Conn::Ws(ws) => ws.send(Message::Binary(bytes)).await?,
        }
        Ok(())
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<()> {
        self.send_raw(frame.to_bytes()).await
    }

    /// Sends op 7 with `token` and waits for the reply packet (op 8 on success, op 6 on refusal).
    pub async fn auth(&mut self, token: &str) -> Result<Frame> {
        let seq = self.next_seq();
        self.send(&Frame {
            ver: 1,
            op: Op::Auth.code(),
            seq,
            body: Bytes::copy_from_slice(token.as_bytes()),
        })
        .await?;
        self.recv_timeout(Duration::from_secs(5)).await?.ok_or_else(|| anyhow!("closed before auth reply"))
    }

    /// Authenticates with goim's JSON token and checks for op 8.
    pub async fn login(&mut self, mid: i64, key: &str, room: &str, accepts: &[i32]) -> Result<()> {
        let reply = self.auth(&json_token(mid, key, room, accepts)).await?;
        if reply.op != Op::AuthReply.code() {
            bail!("auth refused: op {} {}", reply.op, String::from_utf8_lossy(&reply.body));
        }
        Ok(())
    }

    /// Sends a heartbeat and returns the room online count from its reply.
    pub async fn heartbeat(&mut self) -> Result<i32> {
        let seq = self.next_seq();
        self.send(&Frame { ver: 1, op: Op::Heartbeat.code(), seq, body: Bytes::new() }).await?;
        loop {
            let f = self.recv_timeout(Duration::from_secs(5)).await?.ok_or_else(|| anyhow!("closed"))?;
            if f.op == Op::HeartbeatReply.code() {
                let body: [u8; 4] = f.body[..].try_into().context("heartbeat reply body is not 4 bytes")?;
                return Ok(i32::from_be_bytes(body));
            }
        }
    }

    /// The next packet from the server (inner packets of op 9 one by one); `None` when closed.
    pub async fn recv(&mut self) -> Result<Option<Frame>> {
        match self.recv_or_close().await? {
            Ok(f) => Ok(Some(f)),
            Err(_) => Ok(None),
        }
    }

    /// Like [`Client::recv`], but says how the connection closed.
    pub async fn recv_or_close(&mut self) -> Result<std::result::Result<Frame, Closed>> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(Ok(f));
        }
        match &mut self.conn {
            Conn::Tcp { stream, buf } => loop {
                if let Some(f) = decode_stream(buf, usize::MAX / 2)? {
                    return Ok(Ok(f));
                }
                if stream.read_buf(buf).await? == 0 {
                    return Ok(Err(Closed::Eof));
                }
            },
            Conn::Ws(ws) => loop {
                let Some(msg) = ws.next().await else { return Ok(Err(Closed::Eof)) };
                match msg? {
                    Message::Binary(b) => {
                        let f = decode_message(b, usize::MAX / 2)?;
                        if f.op != Op::Raw.code() {
                            return Ok(Ok(f));
                        }
                        self.raw_messages += 1;
                        for inner in split_packets(f.body) {
                            self.pending.push_back(inner?);
                        }
                        if let Some(f) = self.pending.pop_front() {
                            return Ok(Ok(f));
                        }
                    }
                    Message::Close(c) => {
                        return Ok(Err(Closed::Close(c.map(|c| c.code.into()).unwrap_or(1005))));
                    }
                    _ => {}
                }
            },
        }
    }

    pub async fn recv_timeout(&mut self, d: Duration) -> Result<Option<Frame>> {
        tokio::time::timeout(d, self.recv()).await.map_err(|_| anyhow!("no packet within {d:?}"))?
    }

    /// Waits for the next packet whose op is `op`, skipping others.
    pub async fn recv_op(&mut self, op: i32, d: Duration) -> Result<Frame> {
        tokio::time::timeout(d, async {
            loop {
                match self.recv().await? {
                    Some(f) if f.op == op => return Ok(f),
                    Some(_) => {}
                    None => bail!("closed while waiting for op {op}"),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no op {op} within {d:?}"))?
    }

    /// Reads until the server closes; returns the packets seen on the way.
    pub async fn until_closed(&mut self, d: Duration) -> Result<(Vec<Frame>, Closed)> {
        let mut seen = Vec::new();
        tokio::time::timeout(d, async {
            loop {
                match self.recv_or_close().await {
                    Ok(Ok(f)) => seen.push(f),
                    Ok(Err(c)) => return Ok((seen, c)),
                    // A reset after the server's last bytes counts as closed.
                    Err(_) => return Ok((seen, Closed::Eof)),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("not closed within {d:?}"))?
    }
}

/// A packet with a static body.
pub fn packet(ver: i16, op: Op, seq: i32, body: &'static [u8]) -> Frame {
    Frame { ver, op: op.code(), seq, body: Bytes::from_static(body) }
}

/// The `reason` of an op 6 (disconnect reply); asserts `f` is one, with a JSON body.
pub fn op6_reason(f: &Frame) -> String {
    assert_eq!(f.op, Op::DisconnectReply.code(), "expected op 6, got {f:?}");
    let v: serde_json::Value = serde_json::from_slice(&f.body).expect("op 6 body is JSON");
    v["reason"].as_str().unwrap_or_default().to_string()
}
