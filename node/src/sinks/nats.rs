//! NATS JetStream delivery, with a minimal hand-written NATS client (no credentials, no TLS, no
//! cluster discovery: the node talks to one server next to it).
//!
//! # What is published
//!
//! Each event's envelope (see `sinks::outbox`) is published to
//! `<subject_prefix>.<shop>.<type>` (a `.` in a shop id is written `%2E`, so that the shop stays
//! one subject token; shop ids never contain `%`) with the header `Nats-Msg-Id: <shop>:<seq>`,
//! and the publish counts only once JetStream acknowledged it (`{"stream": …, "seq": …}`, also
//! with `"duplicate": true`). JetStream drops a message whose id it saw within the stream's
//! duplicate window, so the republish after a crash between the acknowledgement and the cursor
//! write is stored once.
//!
//! The stream is created at each connection with `$JS.API.STREAM.CREATE.<stream>` (subjects
//! `<subject_prefix>.>`, file storage, the configured duplicate window); if a stream of that
//! name exists, its configuration is left alone.
//!
//! # The client
//!
//! [`Connection`] speaks just enough of the protocol: `INFO`, `CONNECT` (with `headers` and
//! `no_responders`), `PING`/`PONG`, `SUB` to a private inbox, `PUB`/`HPUB` with a reply subject,
//! and `MSG`/`HMSG`/`+OK`/`-ERR`. One request at a time: a request writes its message and
//! reads until the reply to it arrives, answering the server's `PING`s and dropping replies to
//! requests that timed out earlier. Every line and message it reads is bounded.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use super::{BoxFuture, Delivery, Transport};

/// Longest protocol line read (`INFO` is the longest, a few hundred bytes to a few KiB with
/// cluster URLs).
pub(crate) const LINE_BYTES_MAX: usize = 64 * 1024;
/// Largest message read (headers and payload). JetStream API replies are small; stream messages
/// read back by tests are envelopes of a few KiB. NATS' own default `max_payload` is 1 MiB.
pub(crate) const MESSAGE_BYTES_MAX: usize = 1024 * 1024;
/// Messages read while waiting for one reply before giving up: stale replies and server `PING`s
/// are few, so more means something is flooding the inbox.
const READS_PER_REQUEST_MAX: usize = 1024;
/// JetStream's error code for "stream name already in use" (with another configuration).
const STREAM_NAME_IN_USE: u64 = 10058;

/// A NATS server's address: `nats://host[:port]` (port 4222 by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Address {
    host: String,
    port: u16,
}

impl Address {
    /// Parses `nats://host[:port]`.
    pub(crate) fn parse(url: &str) -> Result<Address, String> {
        if url.len() > super::config::URL_BYTES_MAX {
            return Err("URL too long".into());
        }
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| format!("{url:?} is not a nats:// URL"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['@', '/', '?', ' ', ',']) {
            return Err(format!(
                "{url:?}: only nats://host[:port] is supported (no credentials, paths or lists)"
            ));
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
            None => 4222,
        };
        Ok(Address {
            host: host.to_owned(),
            port,
        })
    }
}

/// A reply to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The status of a header-only reply (`503`: no responders), if the reply had headers.
    pub(crate) status: Option<u16>,
    /// The reply's payload.
    pub(crate) payload: Vec<u8>,
}

/// One connection to a NATS server.
#[derive(Debug)]
pub(crate) struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// `_INBOX.<random>`: replies come to `<inbox>.<n>`.
    inbox: String,
    next_request: u64,
}

/// The subscription id of the inbox (the only subscription).
const INBOX_SID: &str = "1";

impl Connection {
    /// Connects, handshakes and subscribes to a private inbox, all before `deadline`.
    pub(crate) async fn connect(
        address: &Address,
        timeout: Duration,
    ) -> Result<Connection, String> {
        let deadline = Instant::now() + timeout;
        let stream = match timeout_at(
            deadline,
            TcpStream::connect((address.host.as_str(), address.port)),
        )
        .await
        {
            Err(_) => return Err("connect timed out".into()),
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Ok(Ok(stream)) => stream,
        };
        // Requests wait for their reply: Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        let mut connection = Connection {
            reader: BufReader::new(read),
            writer,
            inbox: format!("_INBOX.{:016x}", crate::node::random_u64()),
            next_request: 1,
        };
        let info = connection.read_line(deadline).await?;
        let info = info
            .strip_prefix("INFO ")
            .ok_or_else(|| format!("expected INFO, got {:?}", clip(&info)))?;
        let info: serde_json::Value =
            serde_json::from_str(info).map_err(|e| format!("bad INFO: {e}"))?;
        if info.get("headers").and_then(serde_json::Value::as_bool) != Some(true) {
            return Err("the server does not support headers (NATS 2.2 or later is needed)".into());
        }
        let connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": false,
            "headers": true,
            "no_responders": true,
            "echo": false,
            "name": "piazza-node",
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
        });
        let hello = format!(
            "CONNECT {connect}\r\nSUB {}.* {INBOX_SID}\r\nPING\r\n",
            connection.inbox
        );
        connection.write(hello.as_bytes(), deadline).await?;
        // The server answers in order: an error about CONNECT or SUB comes before the PONG.
        loop {
            let line = connection.read_line(deadline).await?;
            match line.as_str() {
                "PONG" => return Ok(connection),
                "PING" => connection.write(b"PONG\r\n", deadline).await?,
                "+OK" => {}
                _ if line.starts_with("INFO ") => {}
                _ => return Err(format!("handshake: {}", clip(&line))),
            }
        }
    }

    /// Publishes `payload` with `headers` to `subject` and waits for the reply, all within
    /// `timeout`.
    pub(crate) async fn request(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, String> {
        let deadline = Instant::now() + timeout;
        let reply_to = format!("{}.{}", self.inbox, self.next_request);
        self.next_request += 1;
        let mut frame = Vec::with_capacity(payload.len() + 256);
        if headers.is_empty() {
            frame.extend_from_slice(
                format!("PUB {subject} {reply_to} {}\r\n", payload.len()).as_bytes(),
            );
        } else {
            let mut block = String::from("NATS/1.0\r\n");
            for (name, value) in headers {
                block.push_str(&format!("{name}: {value}\r\n"));
            }
            block.push_str("\r\n");
            frame.extend_from_slice(
                format!(
                    "HPUB {subject} {reply_to} {} {}\r\n",
                    block.len(),
                    block.len() + payload.len()
                )
                .as_bytes(),
            );
            frame.extend_from_slice(block.as_bytes());
        }
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.write(&frame, deadline).await?;
        for _ in 0..READS_PER_REQUEST_MAX {
            let line = self.read_line(deadline).await?;
            let mut words = line.split(' ');
            match words.next() {
                Some("MSG") => {
                    // MSG <subject> <sid> [reply-to] <#bytes>
                    let parts: Vec<&str> = words.collect();
                    let (to, len) = match parts.as_slice() {
                        [to, _, len] | [to, _, _, len] => (*to, *len),
                        _ => return Err(format!("bad MSG line {:?}", clip(&line))),
                    };
                    let len = parse_len(len)?;
                    let payload = self.read_payload(len, deadline).await?;
                    if to == reply_to {
                        return Ok(Reply {
                            status: None,
                            payload,
                        });
                    }
                }
                Some("HMSG") => {
                    // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
                    let parts: Vec<&str> = words.collect();
                    let (to, header_len, total_len) = match parts.as_slice() {
                        [to, _, h, t] | [to, _, _, h, t] => (*to, *h, *t),
                        _ => return Err(format!("bad HMSG line {:?}", clip(&line))),
                    };
                    let header_len = parse_len(header_len)?;
                    let total_len = parse_len(total_len)?;
                    if header_len > total_len {
                        return Err("HMSG header longer than the message".into());
                    }
                    let mut message = self.read_payload(total_len, deadline).await?;
                    if to == reply_to {
                        let status = header_status(&message[..header_len]);
                        let payload = message.split_off(header_len);
                        return Ok(Reply { status, payload });
                    }
                }
                Some("PING") => self.write(b"PONG\r\n", deadline).await?,
                Some("PONG" | "+OK" | "INFO") => {}
                Some("-ERR") => return Err(format!("server: {}", clip(&line))),
                _ => return Err(format!("unexpected {:?}", clip(&line))),
            }
        }
        Err("too many messages while waiting for a reply".into())
    }

    async fn write(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), String> {
        match timeout_at(deadline, self.writer.write_all(bytes)).await {
            Err(_) => Err("write timed out".into()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// One protocol line without its `\r\n`, at most [`LINE_BYTES_MAX`] bytes.
    async fn read_line(&mut self, deadline: Instant) -> Result<String, String> {
        let mut line = Vec::new();
        let mut limited = (&mut self.reader).take(LINE_BYTES_MAX as u64);
        let read = limited.read_until(b'\n', &mut line);
        match timeout_at(deadline, read).await {
            Err(_) => return Err("timed out waiting for the server".into()),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Ok(Ok(0)) => return Err("the server closed the connection".into()),
            Ok(Ok(_)) => {}
        }
        if line.last() != Some(&b'\n') {
            return Err(format!("line longer than {LINE_BYTES_MAX} bytes"));
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| "line is not UTF-8".to_owned())
    }

    /// `len` bytes and the `\r\n` after them.
    async fn read_payload(&mut self, len: usize, deadline: Instant) -> Result<Vec<u8>, String> {
        let mut payload = vec![0u8; len + 2];
        match timeout_at(deadline, self.reader.read_exact(&mut payload)).await {
            Err(_) => return Err("timed out reading a message".into()),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Ok(Ok(_)) => {}
        }
        if payload[len..] != *b"\r\n" {
            return Err("message not followed by CRLF".into());
        }
        payload.truncate(len);
        Ok(payload)
    }
}

fn parse_len(text: &str) -> Result<usize, String> {
    let len: usize = text
        .parse()
        .map_err(|_| format!("bad length {:?}", clip(text)))?;
    if len > MESSAGE_BYTES_MAX {
        return Err(format!("message longer than {MESSAGE_BYTES_MAX} bytes"));
    }
    Ok(len)
}

/// The status code on the first line of a header block (`NATS/1.0 503`), if any.
fn header_status(block: &[u8]) -> Option<u16> {
    let first = block.split(|&b| b == b'\r').next()?;
    let first = std::str::from_utf8(first).ok()?;
    first
        .strip_prefix("NATS/1.0 ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// A short prefix of server text for error messages.
fn clip(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What the NATS sink publishes to.
#[derive(Clone, Debug)]
pub(crate) struct NatsTarget {
    /// The server.
    pub(crate) address: Address,
    /// The stream's name.
    pub(crate) stream: String,
    /// Subjects are `<prefix>.<shop>.<type>`.
    pub(crate) subject_prefix: String,
    /// The stream's duplicate window, when the node creates it.
    pub(crate) duplicate_window: Duration,
    /// Deadline of one connection or request.
    pub(crate) timeout: Duration,
    /// First delay before reconnecting after a failed connection.
    pub(crate) reconnect_min: Duration,
    /// Longest delay before reconnecting.
    pub(crate) reconnect_max: Duration,
}

impl NatsTarget {
    /// The subject of an event of `shop` of type `event_type`.
    pub(crate) fn subject(&self, shop: &str, event_type: &str) -> String {
        format!(
            "{}.{}.{event_type}",
            self.subject_prefix,
            shop.replace('.', "%2E")
        )
    }
}

/// Publishes to JetStream over one connection, reconnecting with backoff.
#[derive(Debug)]
pub(crate) struct NatsTransport {
    target: NatsTarget,
    /// The connection, if up. A `tokio` mutex because it is held across the request's awaits:
    /// requests on one connection are one at a time.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    connection: Option<Connection>,
    /// After a failed connection, attempts fail at once until then (so thousands of shops do
    /// not each wait for a connect timeout).
    down_until: Option<Instant>,
    reconnect_delay: Duration,
}

impl NatsTransport {
    /// A transport for `target`; it connects at the first delivery.
    pub(crate) fn new(target: NatsTarget) -> NatsTransport {
        let reconnect_delay = target.reconnect_min;
        NatsTransport {
            target,
            state: Mutex::new(State {
                connection: None,
                down_until: None,
                reconnect_delay,
            }),
        }
    }

    async fn publish(&self, delivery: &Delivery<'_>) -> Result<(), String> {
        let mut state = self.state.lock().await;
        if state.connection.is_none() {
            if state.down_until.is_some_and(|until| Instant::now() < until) {
                return Err("NATS is unreachable; waiting to reconnect".into());
            }
            match self.open().await {
                Ok(connection) => {
                    state.connection = Some(connection);
                    state.down_until = None;
                    state.reconnect_delay = self.target.reconnect_min;
                }
                Err(e) => {
                    state.down_until = Some(Instant::now() + state.reconnect_delay);
                    state.reconnect_delay =
                        (state.reconnect_delay * 2).min(self.target.reconnect_max);
                    return Err(e);
                }
            }
        }
        let Some(connection) = state.connection.as_mut() else {
            return Err("not connected".into());
        };
        let subject = self
            .target
            .subject(delivery.shop.as_str(), delivery.event_type);
        let reply = connection
            .request(
                &subject,
                &[("Nats-Msg-Id", delivery.id.as_str())],
                delivery.body,
                self.target.timeout,
            )
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // The connection's state is unknown (a reply may still come): start afresh.
                state.connection = None;
                return Err(e);
            }
        };
        if reply.status == Some(503) {
            // No stream listens on the subject (deleted since we connected): reconnecting
            // creates it again.
            state.connection = None;
            return Err(format!("no stream listens on {subject}"));
        }
        check_ack(&reply.payload)
    }

    /// Connects and makes sure the stream exists.
    async fn open(&self) -> Result<Connection, String> {
        let target = &self.target;
        let mut connection = Connection::connect(&target.address, target.timeout).await?;
        let config = serde_json::json!({
            "name": target.stream,
            "subjects": [format!("{}.>", target.subject_prefix)],
            "storage": "file",
            "retention": "limits",
            "duplicate_window": u64::try_from(target.duplicate_window.as_nanos()).unwrap_or(u64::MAX),
        });
        let reply = connection
            .request(
                &format!("$JS.API.STREAM.CREATE.{}", target.stream),
                &[],
                config.to_string().as_bytes(),
                target.timeout,
            )
            .await?;
        if reply.status == Some(503) {
            return Err("JetStream is not enabled on the NATS server".into());
        }
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| format!("bad stream create answer: {e}"))?;
        if let Some(error) = answer.get("error")
            && error.get("err_code").and_then(serde_json::Value::as_u64) != Some(STREAM_NAME_IN_USE)
        {
            return Err(format!("create stream {}: {error}", target.stream));
        }
        Ok(connection)
    }
}

/// Whether a JetStream publish acknowledgement says the message is stored.
pub(crate) fn check_ack(payload: &[u8]) -> Result<(), String> {
    let ack: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("bad publish ack: {e}"))?;
    if let Some(error) = ack.get("error") {
        return Err(format!("JetStream refused the message: {error}"));
    }
    if ack.get("stream").is_some() && ack.get("seq").and_then(serde_json::Value::as_u64).is_some() {
        Ok(())
    } else {
        Err(format!(
            "unexpected publish ack {:?}",
            clip(&String::from_utf8_lossy(payload))
        ))
    }
}

impl Transport for NatsTransport {
    fn deliver<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.publish(delivery))
    }
}
