//! An incremental frame decoder for byte streams that arrive in arbitrary chunks.

use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError, FRAME_HEADER_BYTES};

/// Why a frame could not be taken from a stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces a body over the limit; the stream must be closed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The body does not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Splits a byte stream into frame bodies.
///
/// Feed bytes with [`FrameDecoder::extend`], then take frames with [`FrameDecoder::next_frame`]
/// until it returns `Ok(None)` (an incomplete frame is not an error). The buffer never grows beyond
/// one maximal frame plus one chunk, because an oversize header is rejected as soon as it is read.
#[derive(Debug)]
pub struct FrameDecoder {
    max_bytes: u32,
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder that refuses bodies over `max_bytes`.
    pub fn new(max_bytes: u32) -> FrameDecoder {
        FrameDecoder {
            max_bytes,
            buf: Vec::new(),
        }
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(header) = self.buf.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Ok(None);
        };
        let len =
            codec::parse_header(*header, self.max_bytes).map_err(|_| FrameError::TooLarge {
                len: u64::from(u32::from_be_bytes(*header)),
                max: u64::from(self.max_bytes),
            })? as usize;
        if self.buf.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        let body = self.buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len].to_vec();
        self.buf.drain(..FRAME_HEADER_BYTES + len);
        Ok(Some(body))
    }

    /// Takes and decodes the next complete frame.
    pub fn next_value<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_frame()? {
            Some(body) => Ok(Some(codec::decode(&body, self.max_bytes as usize)?)),
            None => Ok(None),
        }
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }
}
