//! QUIC and TLS glue: TLS and transport settings, the client endpoint, one connection with its
//! `Hello`, one request as one bidirectional stream, and what a closed connection means. The only
//! module that names rustls and sets up quinn; the background task (`crate::driver`) reads the
//! event stream and datagrams of the connections opened here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use piazza_protocol::codec::{self, FRAME_HEADER_BYTES};
use piazza_protocol::limits::{FRAME_BYTES_MAX, REQUEST_FRAME_BYTES_MAX};
use piazza_protocol::{
    ALPN, DeviceId, ErrorCode, PROTOCOL_VERSION, Request, Response, UserId, close_code,
};
use quinn::{ConnectionError, ReadError, ReadExactError, WriteError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::time::timeout;

use crate::config::{ClientConfig, ReconnectPolicy};
use crate::error::ClientError;

/// QUIC keep-alive. A client connection is often idle for minutes; without keep-alives it would
/// hit the idle timeout. Ten seconds is a third of the idle timeout, so two keep-alives can be
/// lost before the connection is declared dead.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// QUIC idle timeout: how long a silent peer is tolerated before the connection is considered
/// lost and the client reconnects. 30 s, as the node uses.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Receive buffer for datagrams (typing indicators). 64 KiB holds about sixty maximal datagrams;
/// beyond that the oldest are dropped, which is fine for indicators that are stale in seconds.
const DATAGRAM_RECEIVE_BUFFER_BYTES: usize = 64 * 1024;

/// Application close code the client uses when it closes a connection on purpose.
pub(crate) const CLOSE_CLIENT: u32 = 0;

/// Everything needed to open a connection again, computed once from the [`ClientConfig`].
pub(crate) struct Settings {
    /// `host:port`, resolved again on each connection attempt.
    pub(crate) server: String,
    /// Name the node's certificate is verified against.
    pub(crate) server_name: String,
    pub(crate) quic: quinn::ClientConfig,
    pub(crate) token: String,
    pub(crate) device: DeviceId,
    pub(crate) request_timeout: Duration,
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) local_ip: Option<IpAddr>,
}

impl Settings {
    /// Reads the CA file and builds the TLS and QUIC configuration. No network access.
    pub(crate) fn from_config(config: &ClientConfig) -> Result<Settings, ClientError> {
        let server_name = match &config.server_name {
            Some(name) => name.clone(),
            None => server_name_of(&config.server)?,
        };
        Ok(Settings {
            server: config.server.clone(),
            server_name,
            quic: quic_config(&config.ca_file)?,
            token: config.token.clone(),
            device: config.device.clone(),
            request_timeout: config.request_timeout,
            reconnect: config.reconnect,
            local_ip: config.local_ip,
        })
    }

    pub(crate) fn request_timeout_ms(&self) -> u64 {
        u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a bearer credential and stays out of logs.
        f.debug_struct("Settings")
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .field("device", &self.device)
            .field("request_timeout", &self.request_timeout)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

/// An authenticated connection: `Hello` was answered with `Welcome`.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub(crate) connection: quinn::Connection,
    pub(crate) user: UserId,
    /// Name of the node serving the connection.
    pub(crate) node: String,
}

/// Binds a client endpoint of the address family of `server`.
pub(crate) async fn bind(settings: &Settings) -> Result<quinn::Endpoint, ClientError> {
    let addr = resolve(&settings.server, None, settings.request_timeout).await?;
    let local: SocketAddr = match settings.local_ip {
        Some(ip) => (ip, 0).into(),
        None if addr.is_ipv6() => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into(),
        None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).into(),
    };
    quinn::Endpoint::client(local).map_err(|e| ClientError::Connect {
        server: settings.server.clone(),
        reason: format!("cannot bind a UDP socket on {local}: {e}"),
    })
}

/// Connects, says `Hello` and waits for `Welcome`, each step within the request timeout.
pub(crate) async fn open(
    endpoint: &quinn::Endpoint,
    settings: &Settings,
) -> Result<Link, ClientError> {
    let family_v6 = endpoint.local_addr().map(|a| a.is_ipv6()).ok();
    let addr = resolve(&settings.server, family_v6, settings.request_timeout).await?;
    let connect_error = |reason: String| ClientError::Connect {
        server: settings.server.clone(),
        reason,
    };
    let connecting = endpoint
        .connect_with(settings.quic.clone(), addr, &settings.server_name)
        .map_err(|e| connect_error(e.to_string()))?;
    let connection = timeout(settings.request_timeout, connecting)
        .await
        .map_err(|_| {
            connect_error(format!(
                "no answer within {} ms (is the node running?)",
                settings.request_timeout_ms()
            ))
        })?
        .map_err(|e| connect_error(e.to_string()))?;

    let hello = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: settings.token.clone(),
        device: settings.device.clone(),
    };
    let answer = round_trip(&connection, &hello, settings.request_timeout).await;
    let refused = |connection: &quinn::Connection| close_if_open(connection, b"hello failed");
    match answer {
        Ok(Response::Welcome { user, node, .. }) => Ok(Link {
            connection,
            user,
            node,
        }),
        Ok(Response::Error(code)) => {
            refused(&connection);
            Err(ClientError::Server(code))
        }
        Ok(other) => {
            refused(&connection);
            Err(unexpected("hello", &other))
        }
        Err(e) => {
            refused(&connection);
            Err(e)
        }
    }
}

/// Sends one request on its own bidirectional stream and reads the one response frame, all within
/// `deadline`.
pub(crate) async fn round_trip(
    connection: &quinn::Connection,
    request: &Request,
    deadline: Duration,
) -> Result<Response, ClientError> {
    let frame = codec::encode_frame(request)
        .map_err(|e| ClientError::Protocol(format!("cannot encode {}: {e}", request.label())))?;
    let body_bytes = frame.len() - FRAME_HEADER_BYTES;
    if body_bytes > REQUEST_FRAME_BYTES_MAX as usize {
        return Err(ClientError::Invalid(ErrorCode::TooLarge {
            what: "request frame".into(),
            limit: u64::from(REQUEST_FRAME_BYTES_MAX),
        }));
    }
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(lost)?;
        send.write_all(&frame).await.map_err(write_error)?;
        // Finishing tells the node the request is complete; it fails only if the stream was
        // already reset, which `write_all` would have reported.
        send.finish()
            .map_err(|_| ClientError::Protocol("request stream closed while sending".into()))?;
        read_response(&mut recv).await
    };
    match timeout(deadline, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(ClientError::Timeout {
            what: request.label(),
            after_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// Sends one datagram (a typing indicator). Unreliable by design: no retry, no deadline needed.
pub(crate) fn send_datagram(
    connection: &quinn::Connection,
    body: bytes::Bytes,
) -> Result<(), ClientError> {
    connection.send_datagram(body).map_err(|error| match error {
        quinn::SendDatagramError::ConnectionLost(e) => lost(e),
        other => ClientError::Protocol(format!("cannot send a datagram: {other}")),
    })
}

/// How a closed connection should be handled.
#[derive(Debug)]
pub(crate) enum Closed {
    /// Transient: reconnect (network trouble, idle timeout, node restarting or shutting down).
    Reconnect(String),
    /// The node refused us for good (token revoked, protocol violation): do not reconnect.
    Fatal(ClientError),
    /// We closed it ourselves.
    Local,
}

/// Classifies why a connection ended.
pub(crate) fn classify_close(error: &ConnectionError) -> Closed {
    match error {
        ConnectionError::LocallyClosed => Closed::Local,
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let code = close.error_code.into_inner();
            if code == u64::from(close_code::UNAUTHENTICATED) {
                Closed::Fatal(ClientError::Server(ErrorCode::Unauthenticated { reason }))
            } else if code == u64::from(close_code::PROTOCOL_VIOLATION) {
                Closed::Fatal(ClientError::Protocol(format!(
                    "the node closed the connection for a protocol violation: {reason}"
                )))
            } else if code == u64::from(close_code::SHUTDOWN) {
                Closed::Reconnect(format!("the node is shutting down ({reason})"))
            } else {
                Closed::Reconnect(format!("closed by the node: code {code}: {reason}"))
            }
        }
        ConnectionError::VersionMismatch | ConnectionError::CidsExhausted => {
            Closed::Fatal(ClientError::Protocol(error.to_string()))
        }
        ConnectionError::TransportError(_)
        | ConnectionError::ConnectionClosed(_)
        | ConnectionError::Reset
        | ConnectionError::TimedOut => Closed::Reconnect(error.to_string()),
    }
}

/// The host part of `host:port`, without IPv6 brackets: the default TLS server name. rustls then
/// verifies an IP literal against the certificate's IP SANs and a name against its DNS SANs.
pub(crate) fn server_name_of(server: &str) -> Result<String, ClientError> {
    let bad = || {
        ClientError::Config(format!(
            "server address {server:?} is not host:port (write IPv6 as [::1]:4433)"
        ))
    };
    let host = if let Some(rest) = server.strip_prefix('[') {
        let (host, port) = rest.split_once(']').ok_or_else(bad)?;
        port.strip_prefix(':').ok_or_else(bad)?;
        host
    } else {
        let (host, _port) = server.rsplit_once(':').ok_or_else(bad)?;
        if host.contains(':') {
            return Err(bad());
        }
        host
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host.to_owned())
}

/// Builds the QUIC client configuration: rustls on the ring provider, TLS 1.3, the node's CA as
/// the only root, ALPN `piazza/1`, keep-alives and datagrams on.
pub(crate) fn quic_config(ca_file: &Path) -> Result<quinn::ClientConfig, ClientError> {
    let unreadable = |e: &dyn fmt::Display| {
        ClientError::Config(format!("cannot read CA file {}: {e}", ca_file.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(&e))?;
    for cert in certs {
        let cert = cert.map_err(|e| unreadable(&e))?;
        roots.add(cert).map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in it"));
    }

    // An explicit provider, so that building a client never depends on (or panics for lack of) a
    // process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Config(format!("TLS setup for QUIC: {e}")))?;

    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
            .map_err(|e| ClientError::Config(format!("idle timeout: {e}")))?,
    ));
    transport.datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER_BYTES));

    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The error for a response of the wrong kind.
pub(crate) fn unexpected(what: &str, response: &Response) -> ClientError {
    // The variant's name is the start of its Debug form; this keeps working as variants are added.
    let debug = format!("{response:?}");
    let kind = debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("unknown");
    ClientError::Protocol(format!("unexpected {kind} response to {what}"))
}

/// Resolves `host:port`, preferring the given address family (that of the bound endpoint).
async fn resolve(
    server: &str,
    prefer_v6: Option<bool>,
    deadline: Duration,
) -> Result<SocketAddr, ClientError> {
    let failed = |reason: String| ClientError::Connect {
        server: server.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> = timeout(deadline, tokio::net::lookup_host(server))
        .await
        .map_err(|_| failed("name resolution timed out".into()))?
        .map_err(|e| failed(format!("cannot resolve: {e}")))?
        .collect();
    let preferred = prefer_v6.and_then(|v6| addrs.iter().find(|a| a.is_ipv6() == v6));
    preferred
        .or(addrs.first())
        .copied()
        .ok_or_else(|| failed("the name has no address".into()))
}

async fn read_response(recv: &mut quinn::RecvStream) -> Result<Response, ClientError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    recv.read_exact(&mut header).await.map_err(read_error)?;
    let len = codec::parse_header(header, FRAME_BYTES_MAX)
        .map_err(|e| ClientError::Protocol(format!("response frame: {e}")))?;
    // Bounded: `parse_header` refused anything over FRAME_BYTES_MAX (2 MiB).
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body).await.map_err(read_error)?;
    codec::decode(&body, FRAME_BYTES_MAX as usize)
        .map_err(|e| ClientError::Protocol(format!("response frame: {e}")))
}

/// A connection-level failure seen by a request: the connection is gone.
///
/// A local close is reported as lost too, not as [`ClientError::Closed`]: the background task
/// closes a connection it is replacing, and a request caught by that must be retried on the next
/// one. If the client itself is closing, the retry finds it closed and reports that.
pub(crate) fn lost(error: ConnectionError) -> ClientError {
    match classify_close(&error) {
        Closed::Fatal(fatal) => fatal,
        Closed::Local => ClientError::ConnectionLost("connection closed by this client".into()),
        Closed::Reconnect(reason) => ClientError::ConnectionLost(reason),
    }
}

/// Closes a connection unless it is closed already. Closing a connection the node has closed
/// would replace the node's reason (say, "shutting down") with "locally closed" for every request
/// still looking at it.
pub(crate) fn close_if_open(connection: &quinn::Connection, reason: &'static [u8]) {
    if connection.close_reason().is_none() {
        connection.close(CLOSE_CLIENT.into(), reason);
    }
}

fn write_error(error: WriteError) -> ClientError {
    match error {
        WriteError::ConnectionLost(e) => lost(e),
        WriteError::Stopped(code) => ClientError::Protocol(format!(
            "the node stopped reading the request (code {code})"
        )),
        WriteError::ClosedStream | WriteError::ZeroRttRejected => {
            ClientError::Protocol(format!("cannot send the request: {error}"))
        }
    }
}

fn read_error(error: ReadExactError) -> ClientError {
    match error {
        ReadExactError::FinishedEarly(0) => {
            ClientError::Protocol("the node closed the request stream without answering".into())
        }
        ReadExactError::FinishedEarly(n) => {
            ClientError::Protocol(format!("response ended early after {n} bytes"))
        }
        ReadExactError::ReadError(ReadError::ConnectionLost(e)) => lost(e),
        ReadExactError::ReadError(e) => {
            ClientError::Protocol(format!("cannot read the response: {e}"))
        }
    }
}

pub(crate) mod media;
#[cfg(test)]
mod tests;
