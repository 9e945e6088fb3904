//! A minimal HTTP/1.1 client for the provider adapter (and the test provider's webhooks): one
//! connection per request, a deadline over the whole exchange, a cap on the answer's size, and
//! errors that say whether the request may have reached the server.
//!
//! One connection per request keeps it simple and is cheap at the rate payments happen (a few
//! calls per order). Plain `http://` only: TLS would make this module the second one to name
//! rustls (see ARCHITECTURE's boundaries); for a real provider, run a TLS-originating proxy on
//! loopback until the node grows a shared outbound HTTPS client.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// Largest answer read, in bytes. A payment intent or a page of refunds is a few KiB; the cap
/// keeps a confused or hostile server from filling memory.
pub(crate) const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Longest base URL accepted, in bytes.
const BASE_URL_BYTES_MAX: usize = 2048;

/// Where the provider's API is: `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    /// Host name or address (IPv6 without brackets), for connecting.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// Path prefix without a trailing slash (`""` for none).
    prefix: String,
}

impl BaseUrl {
    /// Parses `http://host[:port][/prefix]`. `https://` is refused with an explanation.
    pub(crate) fn parse(url: &str) -> Result<BaseUrl, String> {
        if url.len() > BASE_URL_BYTES_MAX {
            return Err(format!("longer than {BASE_URL_BYTES_MAX} bytes"));
        }
        let rest = strip_http(url, "a real provider")?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if prefix.contains(['?', '#']) {
            return Err("the base URL may not have a query or fragment".into());
        }
        let (host, port) = host_and_port(url, authority)?;
        Ok(BaseUrl {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// What follows `http://` in `url`; `https://` is refused with advice naming `for_what` (the
/// built-in client speaks plain HTTP only).
pub(crate) fn strip_http<'u>(url: &'u str, for_what: &str) -> Result<&'u str, String> {
    if url.starts_with("https://") {
        return Err(format!(
            "https is not supported by the built-in client: use an http:// URL \
             (a TLS-originating proxy on loopback for {for_what})"
        ));
    }
    url.strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))
}

/// The host (without brackets for IPv6) and port (80 by default) of a URL's `authority`.
pub(crate) fn host_and_port<'a>(url: &str, authority: &'a str) -> Result<(&'a str, u16), String> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(format!(
            "{url:?} has no usable host (credentials are not supported)"
        ));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        None => 80,
    };
    Ok((host, port))
}

/// A complete answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// The server's `Date` header, in seconds since the epoch, if it sent a valid one.
    pub(crate) date_secs: Option<u64>,
    /// Whether the server says this is a replay of an earlier answer to the same idempotency
    /// key (`Idempotent-Replayed: true`).
    pub(crate) replayed: bool,
    pub(crate) body: Bytes,
}

/// Why no complete answer arrived.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// Nothing reached the server (it could not be reached, or the connection closed before
    /// the request was written): safe to send again.
    #[error("request not sent: {0}")]
    NotSent(String),
    /// The request may have reached the server, but no complete answer came in time.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The answer was larger than [`RESPONSE_BYTES_MAX`].
    #[error("answer larger than {RESPONSE_BYTES_MAX} bytes")]
    TooLarge,
}

/// Sends one request to `base` + `path_and_query` and reads the whole answer, all within
/// `timeout`. `body` is a content type and the bytes.
pub(crate) async fn call(
    base: &BaseUrl,
    method: Method,
    path_and_query: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Option<(&'static str, Vec<u8>)>,
    timeout: Duration,
) -> Result<Reply, CallError> {
    let deadline = Instant::now() + timeout;
    let stream = match timeout_at(
        deadline,
        TcpStream::connect((base.host.as_str(), base.port)),
    )
    .await
    {
        Err(_) => return Err(CallError::NotSent("connect timed out".into())),
        Ok(Err(e)) => return Err(CallError::NotSent(format!("connect: {e}"))),
        Ok(Ok(stream)) => stream,
    };
    // Requests are small and answered at once; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| CallError::NotSent(format!("handshake: {e}")))?;
    // The connection is driven by its own task, ended when this call returns either way.
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));

    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path_and_query}", base.prefix))
        .header(HOST, base.authority.as_str());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let bytes = match body {
        Some((content_type, bytes)) => {
            request = request
                .header(CONTENT_TYPE, content_type)
                .header(CONTENT_LENGTH, bytes.len());
            Bytes::from(bytes)
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(bytes))
        .map_err(|e| CallError::NotSent(format!("build request: {e}")))?;

    let response = match timeout_at(deadline, sender.send_request(request)).await {
        Err(_) => return Err(CallError::NoAnswer("timed out".into())),
        Ok(Err(e)) if e.is_canceled() => return Err(CallError::NotSent(e.to_string())),
        Ok(Err(e)) => return Err(CallError::NoAnswer(e.to_string())),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let date_secs = response
        .headers()
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > RESPONSE_BYTES_MAX as u64) {
        return Err(CallError::TooLarge);
    }
    let collected = timeout_at(
        deadline,
        Limited::new(response.into_body(), RESPONSE_BYTES_MAX).collect(),
    )
    .await;
    let body = match collected {
        Err(_) => return Err(CallError::NoAnswer("timed out reading the answer".into())),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(CallError::TooLarge);
        }
        Ok(Err(e)) => return Err(CallError::NoAnswer(format!("read the answer: {e}"))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    drop(driver);
    Ok(Reply {
        status,
        date_secs,
        replayed,
        body,
    })
}

/// Encodes `application/x-www-form-urlencoded` pairs (every byte but `A-Z a-z 0-9 - . _ ~`
/// percent-encoded).
pub(crate) fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        percent_encode(key, &mut out);
        out.push(b'=');
        percent_encode(value, &mut out);
    }
    out
}

/// Percent-encodes a query parameter value.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = Vec::new();
    percent_encode(s, &mut out);
    // Only ASCII was pushed.
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]);
        }
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
