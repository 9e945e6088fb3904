//! Webhook delivery: one signed HTTP/1.1 `POST` of the event's envelope per attempt.
//!
//! # The request
//!
//! ```text
//! POST <url path and query> HTTP/1.1
//! Content-Type: application/json
//! Piazza-Event-Id: shop-1:7
//! Piazza-Event-Type: OrderPaid
//! Piazza-Signature: t=1767225600,v1=5f0c…(64 hex digits)
//! Piazza-Redelivery: false
//! Piazza-Attempt: 1
//!
//! <the envelope JSON, see `sinks::outbox`>
//! ```
//!
//! * `Piazza-Signature`: `t` is the Unix time of this attempt in seconds; `v1` is the lower-case
//!   hex HMAC-SHA256, keyed with the sink's secret, of `<t>.<body>` (the decimal `t`, a dot, the
//!   body's exact bytes). Receivers recompute it, compare in constant time, and should refuse a
//!   `t` far from their clock (five minutes) to limit replays.
//! * `Piazza-Redelivery: true` when this event was attempted before (also before a restart of
//!   the node: attempts are recorded durably before they are made), so it may have been
//!   received already; deduplicate with `Piazza-Event-Id`. `Piazza-Attempt` counts attempts
//!   from 1.
//! * Any `2xx` answer means delivered. Anything else, or no answer within
//!   `sinks.request_timeout_ms`, is a failure, retried with backoff (see `sinks`).
//!
//! One connection per request: simple, and at webhook rates the handshake is not the cost.
//! Plain `http://` only: TLS would make this the second module to name rustls (see
//! ARCHITECTURE's boundaries); for an `https://` receiver, run a TLS-originating proxy on
//! loopback.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use ring::hmac;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::{BoxFuture, Delivery, Transport};

/// Where a webhook goes: `http://host[:port]/path[?query]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Host name or address (IPv6 without brackets), for connecting.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// Path and query, at least `/`.
    path_and_query: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/path][?query]`; `https://` is refused with an explanation.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        if url.len() > super::config::URL_BYTES_MAX {
            return Err(format!(
                "longer than {} bytes",
                super::config::URL_BYTES_MAX
            ));
        }
        let rest = crate::payments::http::client::strip_http(url, "an https receiver")?;
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if path_and_query.contains(['#', ' ']) {
            return Err("the URL may not have a fragment or spaces".into());
        }
        let (host, port) = crate::payments::http::client::host_and_port(url, authority)?;
        // Reject what the request builder would: better at start-up than at every attempt.
        path_and_query
            .parse::<hyper::Uri>()
            .map_err(|e| format!("{url:?}: {e}"))?;
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path_and_query,
        })
    }
}

/// `t=<unix secs>,v1=<hex hmac-sha256(secret, "<t>.<body>")>`: the payment providers' scheme,
/// so one function signs both.
pub(crate) fn signature(key: &hmac::Key, unix_secs: u64, body: &[u8]) -> String {
    crate::payments::signature::header_value_with(key, unix_secs, body)
}

/// Delivers to one endpoint with one secret.
pub(crate) struct WebhookTransport {
    endpoint: Endpoint,
    key: hmac::Key,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTransport")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookTransport {
    /// A transport posting to `endpoint`, signing with `secret`.
    pub(crate) fn new(endpoint: Endpoint, secret: &[u8], timeout: Duration) -> WebhookTransport {
        WebhookTransport {
            endpoint,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            timeout,
        }
    }

    async fn post(&self, delivery: &Delivery<'_>) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let endpoint = &self.endpoint;
        let stream = match timeout_at(
            deadline,
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await
        {
            Err(_) => return Err("connect timed out".into()),
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Ok(Ok(stream)) => stream,
        };
        // One small request, answered at once: Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let handshake =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream));
        let (mut sender, connection) = match timeout_at(deadline, handshake).await {
            Err(_) => return Err("handshake timed out".into()),
            Ok(Err(e)) => return Err(format!("handshake: {e}")),
            Ok(Ok(pair)) => pair,
        };
        // The connection is driven by its own task, ended when this call returns either way.
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let _abort = AbortOnDrop(driver);

        let unix_secs = crate::node::now_ms() / 1000;
        let request = Request::builder()
            .method(Method::POST)
            .uri(endpoint.path_and_query.as_str())
            .header(HOST, endpoint.authority.as_str())
            .header(USER_AGENT, "piazza-node")
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, delivery.body.len())
            .header("Piazza-Event-Id", delivery.id.as_str())
            .header("Piazza-Event-Type", delivery.event_type)
            .header(
                "Piazza-Signature",
                signature(&self.key, unix_secs, delivery.body),
            )
            .header(
                "Piazza-Redelivery",
                if delivery.redelivery { "true" } else { "false" },
            )
            .header("Piazza-Attempt", delivery.attempt)
            .body(Full::new(Bytes::copy_from_slice(delivery.body)))
            .map_err(|e| format!("build request: {e}"))?;
        let response = match timeout_at(deadline, sender.send_request(request)).await {
            Err(_) => return Err("timed out waiting for the answer".into()),
            Ok(Err(e)) => return Err(format!("request: {e}")),
            Ok(Ok(response)) => response,
        };
        // The answer's body is not read: only the status matters, and dropping the connection
        // discards the rest.
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", status.as_u16()))
        }
    }
}

impl Transport for WebhookTransport {
    fn deliver<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.post(delivery))
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
