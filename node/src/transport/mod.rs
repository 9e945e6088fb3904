//! QUIC transport: endpoints, TLS, framing on streams, and the per-connection driver.
//!
//! **Boundary:** this is the only module that names quinn and rustls. Everything above it deals in
//! protocol types and encoded frames.

mod media;
mod server;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use piazza_protocol::codec;
use quinn::crypto::rustls::QuicServerConfig;
use socket2::{Domain, Protocol, Socket, Type};

pub(crate) use server::serve;

use crate::config::ServerSection;

/// The bound client endpoint of a node.
pub(crate) type Endpoint = quinn::Endpoint;

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The header announced a body over the limit.
    #[error("frame of {len} bytes exceeds {max}")]
    TooLarge { len: usize, max: usize },
    /// The body does not decode as the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The peer finished or reset the stream before a whole frame arrived.
    #[error("stream ended before a whole frame")]
    Truncated,
    /// The connection failed.
    #[error("connection: {0}")]
    Connection(String),
}

/// Reads exactly one frame (header, then body) of at most `max` bytes and decodes it.
pub(crate) async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: u32,
) -> Result<T, FrameError> {
    let mut header = [0u8; codec::FRAME_HEADER_BYTES];
    recv.read_exact(&mut header)
        .await
        .map_err(read_exact_error)?;
    let len = codec::parse_header(header, max).map_err(|_| FrameError::TooLarge {
        len: u32::from_be_bytes(header) as usize,
        max: max as usize,
    })? as usize;
    // The length was checked against the limit before this allocation.
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(read_exact_error)?;
    codec::decode(&body, max as usize).map_err(|e| FrameError::Malformed(e.to_string()))
}

fn read_exact_error(e: quinn::ReadExactError) -> FrameError {
    match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
        quinn::ReadExactError::ReadError(e) => FrameError::Connection(e.to_string()),
    }
}

/// Creates the client-facing endpoint: a UDP socket with large buffers and a QUIC server
/// configuration with the node's certificate, ALPN `piazza/1`, and per-connection limits
/// (`upload_streams_max` concurrent media upload streams).
pub(crate) fn bind_endpoint(
    server: &ServerSection,
    upload_streams_max: u32,
    tls: Arc<rustls::ServerConfig>,
) -> Result<Endpoint, std::io::Error> {
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| std::io::Error::other(format!("QUIC TLS configuration: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(server.max_concurrent_requests.into())
        // Clients open unidirectional streams only to upload media.
        .max_concurrent_uni_streams(upload_streams_max.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(server.idle_timeout_ms))
                .map_err(|e| std::io::Error::other(format!("idle timeout: {e}")))?,
        ))
        .datagram_receive_buffer_size(Some(64 * 1024))
        .datagram_send_buffer_size(64 * 1024);
    config.transport_config(Arc::new(transport));

    let socket = udp_socket(server.listen, server.udp_buffer_bytes)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )
}

/// A bound UDP socket with the requested buffer sizes (the kernel may clamp them; that is logged).
fn udp_socket(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> Result<std::net::UdpSocket, std::io::Error> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
        tracing::warn!(error = %e, "cannot set UDP receive buffer size");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
        tracing::warn!(error = %e, "cannot set UDP send buffer size");
    }
    let granted = socket.recv_buffer_size().unwrap_or(0);
    if granted < buffer_bytes {
        tracing::info!(
            requested = buffer_bytes,
            granted,
            "UDP receive buffer clamped by the kernel (raise net.core.rmem_max for large fan-out)"
        );
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
