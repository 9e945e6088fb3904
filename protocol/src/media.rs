//! Media: content-addressed blobs (photos, videos, documents) uploaded once and referenced by
//! messages.
//!
//! How a file travels (also in the README):
//!
//! 1. The client hashes the file and asks [`MediaRequest::BeginUpload`] with its size and SHA-256.
//!    The node answers [`MediaResponse::Upload`] with an [`UploadId`] and the number of bytes it
//!    already holds (zero for a new upload, more when resuming), or at once
//!    [`MediaResponse::Ready`] if this user already uploaded the same content.
//! 2. The bytes go on QUIC **unidirectional** streams: each starts with one frame
//!    [`UploadChunkHeader`] naming the upload and the offset of its first byte, followed by at most
//!    [`UPLOAD_STREAM_BYTES_MAX`](crate::limits::UPLOAD_STREAM_BYTES_MAX) raw bytes, and is
//!    finished. Streams must continue exactly where the node's copy ends (no holes, no overlap);
//!    a stream the node cannot take is stopped with one of the [`upload_stop`] codes.
//! 3. [`MediaRequest::FinishUpload`] makes the node check size and hash, sniff the type and store
//!    the blob under its [`MediaId`]; the answer is [`MediaResponse::Ready`].
//! 4. [`crate::Request::SendMedia`] sends a message that references the media with a caption.
//! 5. [`MediaRequest::Download`] is the one request answered with more than one frame: the node
//!    writes a [`MediaResponse::Download`] header frame and then exactly `end - start` raw bytes on
//!    the same bidirectional stream, and finishes it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;
use crate::ids::{ConversationRef, IdError};
use crate::limits::{
    FILE_NAME_BYTES_MAX, MEDIA_BYTES_HARD_MAX, MEDIA_ID_HEX_BYTES, MIME_BYTES_MAX,
};

/// A blob, named by the SHA-256 of its bytes as 64 lowercase hex digits. Two uploads of the same
/// bytes have the same id, so the node stores them once.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaId(String);

impl MediaId {
    /// The id of the bytes whose SHA-256 digest is `digest`.
    pub fn from_digest(digest: &[u8; 32]) -> MediaId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(MEDIA_ID_HEX_BYTES);
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        MediaId(hex)
    }

    /// The id as 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digest as bytes.
    pub fn digest(&self) -> [u8; 32] {
        let mut digest = [0u8; 32];
        for (i, pair) in self.0.as_bytes().chunks_exact(2).enumerate() {
            // Both digits were validated as lowercase hex when the id was built.
            digest[i] = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        digest
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => 0,
    }
}

fn check_media_id(s: &str) -> Result<(), IdError> {
    const KIND: &str = "media id";
    if s.is_empty() {
        return Err(IdError::Empty { kind: KIND });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_digit() || ('a'..='f').contains(c)))
    {
        return Err(IdError::BadChar {
            kind: KIND,
            ch,
            allowed: "0-9 a-f",
        });
    }
    if s.len() != MEDIA_ID_HEX_BYTES {
        return Err(IdError::Malformed {
            kind: KIND,
            reason: "a SHA-256 is exactly 64 hex digits",
        });
    }
    Ok(())
}

impl FromStr for MediaId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        check_media_id(s)?;
        Ok(MediaId(s.to_owned()))
    }
}

impl TryFrom<String> for MediaId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        check_media_id(&s)?;
        Ok(MediaId(s))
    }
}

impl From<MediaId> for String {
    fn from(id: MediaId) -> String {
        id.0
    }
}

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MediaId({})", self.0)
    }
}

/// An upload in progress, chosen by the node: a non-zero 64-bit number, shown as 16 hex digits.
/// The node derives it from the uploader and the content, so asking again for the same file finds
/// the same upload (that is how an upload resumes, also after the node restarted).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct UploadId(u64);

impl UploadId {
    /// Builds an upload id; zero is not one.
    pub fn new(raw: u64) -> Result<UploadId, IdError> {
        if raw == 0 {
            return Err(IdError::Malformed {
                kind: "upload id",
                reason: "zero is not an upload id",
            });
        }
        Ok(UploadId(raw))
    }

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for UploadId {
    type Error = IdError;
    fn try_from(raw: u64) -> Result<Self, IdError> {
        UploadId::new(raw)
    }
}

impl From<UploadId> for u64 {
    fn from(id: UploadId) -> u64 {
        id.0
    }
}

impl FromStr for UploadId {
    type Err = IdError;
    /// Parses the 16-hex-digit form printed by `Display`.
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > 16 {
            return Err(IdError::Malformed {
                kind: "upload id",
                reason: "expected 1 to 16 hex digits",
            });
        }
        let raw = u64::from_str_radix(s, 16).map_err(|_| IdError::Malformed {
            kind: "upload id",
            reason: "not hex",
        })?;
        UploadId::new(raw)
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({:016x})", self.0)
    }
}

/// What a stored blob is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Its id (SHA-256).
    pub id: MediaId,
    /// Its length in bytes.
    pub size_bytes: u64,
    /// Its type as the node sniffed it from the bytes (never the uploader's claim), for example
    /// `image/png` or `application/octet-stream`.
    pub mime: String,
}

/// A media request, carried by [`crate::Request::Media`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaRequest {
    /// Start (or resume) uploading a file. Answered with [`MediaResponse::Upload`], or at once with
    /// [`MediaResponse::Ready`] if this user already uploaded the same bytes.
    BeginUpload {
        /// Length of the file, 1..=the node's configured maximum (at most
        /// [`MEDIA_BYTES_HARD_MAX`](crate::limits::MEDIA_BYTES_HARD_MAX)).
        size_bytes: u64,
        /// SHA-256 of the whole file: the id it will have.
        sha256: MediaId,
        /// What the client believes the type is. Informational, except that an `image/`,
        /// `video/` or `audio/` hint the bytes contradict fails the upload.
        mime_hint: Option<String>,
        /// The file's name, for the node's logs; not stored with the blob.
        file_name: Option<String>,
    },
    /// All bytes are sent: verify and store. Answered with [`MediaResponse::Ready`], or
    /// [`crate::ErrorCode::Invalid`] (field `upload`) naming how many bytes the node has when the
    /// upload is incomplete or does not match its size and hash (then the upload is discarded).
    FinishUpload {
        /// Which upload.
        upload: UploadId,
    },
    /// Read a blob that a message of `conversation` references (or that the caller uploaded).
    /// Answered with a [`MediaResponse::Download`] header frame followed by the raw bytes.
    Download {
        /// Which blob.
        media: MediaId,
        /// A conversation the caller can read in which a message references the blob.
        conversation: ConversationRef,
        /// Only bytes `start..end` (end exclusive; an `end` past the blob's size means "to the
        /// end"). `None`: the whole blob.
        range: Option<(u64, u64)>,
    },
}

impl MediaRequest {
    /// Checks every wire limit of the request (the node's own size limit is checked by the node).
    pub fn validate(&self) -> Result<(), ErrorCode> {
        match self {
            MediaRequest::BeginUpload {
                size_bytes,
                mime_hint,
                file_name,
                ..
            } => {
                if *size_bytes == 0 {
                    return Err(ErrorCode::invalid("size_bytes", "empty file"));
                }
                if *size_bytes > MEDIA_BYTES_HARD_MAX {
                    return Err(ErrorCode::TooLarge {
                        what: "size_bytes".into(),
                        limit: MEDIA_BYTES_HARD_MAX,
                    });
                }
                if let Some(hint) = mime_hint {
                    check_text("mime_hint", hint, MIME_BYTES_MAX)?;
                }
                if let Some(name) = file_name {
                    check_text("file_name", name, FILE_NAME_BYTES_MAX)?;
                }
            }
            MediaRequest::FinishUpload { .. } => {}
            MediaRequest::Download { range, .. } => {
                if let Some((start, end)) = range
                    && start > end
                {
                    return Err(ErrorCode::invalid("range", "start is after end"));
                }
            }
        }
        Ok(())
    }

    /// A short, stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            MediaRequest::BeginUpload { .. } => "media_begin_upload",
            MediaRequest::FinishUpload { .. } => "media_finish_upload",
            MediaRequest::Download { .. } => "media_download",
        }
    }
}

/// A short text field: at most `max` bytes, no control characters (it ends up in logs).
fn check_text(field: &str, value: &str, max: usize) -> Result<(), ErrorCode> {
    if value.len() > max {
        return Err(ErrorCode::TooLarge {
            what: field.to_owned(),
            limit: max as u64,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(ErrorCode::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// The node's answer to a [`MediaRequest`], carried by [`crate::Response::Media`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaResponse {
    /// Send the bytes from `offset_bytes` on.
    Upload {
        /// The upload to name in [`UploadChunkHeader`]s and in `FinishUpload`.
        upload: UploadId,
        /// How many bytes of the file the node already has: the next stream starts here.
        offset_bytes: u64,
    },
    /// The blob is stored.
    Ready(MediaInfo),
    /// Header of a download: exactly `end - start` raw bytes follow on the same stream.
    Download {
        /// The whole blob's id, size and type.
        info: MediaInfo,
        /// Offset of the first byte that follows.
        start: u64,
        /// Offset after the last byte that follows.
        end: u64,
    },
}

/// The one frame at the start of an upload stream (a client-opened unidirectional stream); raw
/// bytes follow it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadChunkHeader {
    /// Which upload.
    pub upload: UploadId,
    /// Offset in the file of the first byte that follows; must equal the bytes the node has.
    pub offset_bytes: u64,
}

/// Application codes a node uses to stop (`STOP_SENDING`) an upload stream it does not take.
/// Bytes it had already appended stay; ask `BeginUpload` again for the offset to continue from.
pub mod upload_stop {
    /// The header frame is missing, too large or malformed.
    pub const MALFORMED: u32 = 1;
    /// No such upload of this user (never begun, finished, or collected as abandoned).
    pub const NOT_FOUND: u32 = 2;
    /// The stream does not start where the node's copy ends.
    pub const OFFSET_MISMATCH: u32 = 3;
    /// The stream carries more than allowed: past the file's size or over
    /// [`UPLOAD_STREAM_BYTES_MAX`](crate::limits::UPLOAD_STREAM_BYTES_MAX).
    pub const TOO_LARGE: u32 = 4;
    /// The node could not store the bytes (disk full, I/O error) or is too busy: retry later.
    pub const UNAVAILABLE: u32 = 5;
    /// The stream sent nothing for too long.
    pub const TIMEOUT: u32 = 6;
}
