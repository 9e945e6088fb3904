//! The SDK's one error type.

use piazza_protocol::ErrorCode;

/// Why a client operation failed. Each variant says what the caller can do about it.
///
/// It is `Clone` because one connection failure is reported to every request waiting on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot work: the CA file is unreadable or holds no usable certificate,
    /// the server address or name does not parse. Fix it; retrying does not help.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No connection could be established: the address does not resolve, the node does not
    /// answer, or the TLS handshake failed (wrong CA, wrong server name). Check the node and the
    /// settings, or retry later.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The `server` setting.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection broke and was not re-established within the reconnect budget, or it broke
    /// during a request that is not safe to repeat (group creation or leaving, whose outcome is
    /// then unknown: check before trying again).
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The node did not answer in time. The request may or may not have taken effect; a send can
    /// be retried safely with the same `client_msg_id`.
    #[error("{what} timed out after {after_ms} ms")]
    Timeout {
        /// Which request ([`piazza_protocol::Request::label`]).
        what: &'static str,
        /// The deadline that passed.
        after_ms: u64,
    },
    /// The node refused the request with this code. [`ErrorCode::is_retryable`] says whether the
    /// same request can succeed later.
    #[error("{0}")]
    Server(ErrorCode),
    /// The request breaks a wire limit ([`piazza_protocol::limits`]) and was not sent. Do not
    /// retry it unchanged.
    #[error("invalid request: {0}")]
    Invalid(ErrorCode),
    /// The node answered something this client does not understand: a bug, or a node speaking
    /// another protocol version. The client closes; reconnecting will not help.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The client was closed (by [`crate::Client::close`]) or its background task has stopped.
    #[error("client closed")]
    Closed,
    /// A local file (to upload) could not be read.
    #[error("file: {0}")]
    File(String),
}

impl ClientError {
    /// The node's error code, if the node refused the request.
    pub fn server_code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Server(code) => Some(code),
            _ => None,
        }
    }

    /// Whether repeating the same operation later can succeed without changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Timeout { .. } => true,
            ClientError::Server(code) => code.is_retryable(),
            ClientError::Config(_)
            | ClientError::ConnectionLost(_)
            | ClientError::Invalid(_)
            | ClientError::Protocol(_)
            | ClientError::Closed
            | ClientError::File(_) => false,
        }
    }
}
