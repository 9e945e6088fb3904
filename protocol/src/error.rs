use serde::{Deserialize, Serialize};

/// A wire-visible error. Stable: new variants go at the end, and existing ones never change meaning.
///
/// Every request either succeeds or gets exactly one of these; the node never panics on input and
/// never drops a request silently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorCode {
    /// No valid `Hello` yet on this connection, or the token is invalid or expired. Reconnect with a
    /// fresh token.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Why authentication failed, for humans.
        reason: String,
    },
    /// Authenticated, but not allowed to do this (for example: not a member of the group).
    #[error("forbidden")]
    Forbidden,
    /// The thing named does not exist.
    #[error("not found")]
    NotFound,
    /// A field is malformed or out of range. Do not retry unchanged.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Name of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request conflicts with the current state (for example the id is taken).
    #[error("conflict: {reason}")]
    Conflict {
        /// What conflicted.
        reason: String,
    },
    /// Too many requests; retry after the given delay.
    #[error("rate limited, retry after {retry_after_ms} ms")]
    RateLimited {
        /// How long to wait before retrying.
        retry_after_ms: u64,
    },
    /// A frame or a field is over a limit (see [`crate::limits`]).
    #[error("too large: {what} exceeds {limit}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// The limit it exceeded.
        limit: u64,
    },
    /// The node cannot serve this now (overloaded, shutting down, storage trouble). Retry, possibly
    /// on another node; a retried send with the same `client_msg_id` is safe.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A bug or an unexpected failure on the node. The id is in the node's log; nothing else leaks.
    #[error("internal error {id}")]
    Internal {
        /// Correlation id written to the node's log.
        id: u64,
    },
    /// The frame could not be decoded (bad encoding, unknown variant, trailing bytes).
    #[error("malformed frame: {reason}")]
    Malformed {
        /// What the decoder said.
        reason: String,
    },
}

impl ErrorCode {
    /// Shorthand for [`ErrorCode::Invalid`].
    pub fn invalid(field: &str, reason: impl Into<String>) -> ErrorCode {
        ErrorCode::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ErrorCode::Unavailable`].
    pub fn unavailable(reason: impl Into<String>) -> ErrorCode {
        ErrorCode::Unavailable {
            reason: reason.into(),
        }
    }

    /// A short, stable label for metrics (never carries ids).
    pub fn label(&self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated { .. } => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Invalid { .. } => "invalid",
            ErrorCode::Conflict { .. } => "conflict",
            ErrorCode::RateLimited { .. } => "rate_limited",
            ErrorCode::TooLarge { .. } => "too_large",
            ErrorCode::Unavailable { .. } => "unavailable",
            ErrorCode::Internal { .. } => "internal",
            ErrorCode::Malformed { .. } => "malformed",
        }
    }

    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited { .. } | ErrorCode::Unavailable { .. }
        )
    }
}
