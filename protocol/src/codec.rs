//! The body encoding. **The only module that names bincode** (unmaintained upstream,
//! RUSTSEC-2025-0141, pinned `=2.0.1`): swapping the codec means changing this file alone.
//!
//! A frame on a stream is a `u32` big-endian body length followed by the body; a datagram is a bare
//! body. Bodies are bincode 2 in serde mode with the standard (varint) configuration and a decode
//! byte limit, and must be consumed exactly: trailing bytes are an error.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::FRAME_BYTES_MAX;

/// Why a body could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The body is longer than the limit it was decoded or encoded with.
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Actual length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// Decoding succeeded but left bytes over.
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
    /// The value cannot be encoded (should not happen for protocol types).
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Length of the frame header.
pub const FRAME_HEADER_BYTES: usize = 4;

fn config() -> impl bincode::config::Config {
    // The limit bounds every allocation the decoder makes, so a hostile length inside a body (a
    // vector claiming 4 billion elements) cannot make it allocate more than a frame's worth.
    bincode::config::standard().with_limit::<{ FRAME_BYTES_MAX as usize }>()
}

/// Encodes a body.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a body of at most `max_bytes` bytes that must be consumed exactly.
pub fn decode<T: DeserializeOwned>(body: &[u8], max_bytes: usize) -> Result<T, CodecError> {
    if body.len() > max_bytes {
        return Err(CodecError::TooLarge {
            len: body.len(),
            max: max_bytes,
        });
    }
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != body.len() {
        return Err(CodecError::Trailing(body.len() - read));
    }
    Ok(value)
}

/// Encodes a whole frame: header plus body. Refuses bodies over [`FRAME_BYTES_MAX`], so nothing
/// this side sends can be refused by a conforming peer for size.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body = encode(value)?;
    frame_from_body(&body)
}

/// Prefixes an encoded body with its header.
pub fn frame_from_body(body: &[u8]) -> Result<Vec<u8>, CodecError> {
    if body.len() > FRAME_BYTES_MAX as usize {
        return Err(CodecError::TooLarge {
            len: body.len(),
            max: FRAME_BYTES_MAX as usize,
        });
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    // The cast is lossless: the length was just checked against a u32 limit.
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    Ok(frame)
}

/// Parses a frame header, rejecting a length over `max_bytes` before anything is allocated.
pub fn parse_header(header: [u8; FRAME_HEADER_BYTES], max_bytes: u32) -> Result<u32, CodecError> {
    let len = u32::from_be_bytes(header);
    if len > max_bytes {
        return Err(CodecError::TooLarge {
            len: len as usize,
            max: max_bytes as usize,
        });
    }
    Ok(len)
}
