//! Media on the wire, client side: upload streams (a unidirectional stream per piece of a file:
//! one `UploadChunkHeader` frame, then raw bytes) and downloads (a request whose answer is a
//! header frame followed by raw bytes on the same stream).

use std::time::Duration;

use bytes::Bytes;
use piazza_protocol::limits::REQUEST_FRAME_BYTES_MAX;
use piazza_protocol::media::upload_stop;
use piazza_protocol::{MediaInfo, MediaResponse, Request, Response, UploadChunkHeader, codec};
use quinn::{StoppedError, WriteError};
use tokio::time::timeout;

use super::{lost, read_response};
use crate::error::ClientError;

/// Largest piece read from a download stream at once.
const DOWNLOAD_READ_BYTES_MAX: usize = 256 * 1024;

/// Why an upload stream did not carry its bytes.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The connection is gone: reconnect, ask where the node's copy ends, and continue.
    Lost(ClientError),
    /// The node stopped the stream with one of the [`upload_stop`] codes.
    Stopped(u32),
    /// The node took nothing for longer than the stall timeout.
    Stalled,
    /// Anything else: give up.
    Fatal(ClientError),
}

impl StreamError {
    /// Whether asking `BeginUpload` again and continuing from the node's offset can help.
    pub(crate) fn resumable(&self) -> bool {
        match self {
            StreamError::Lost(_) | StreamError::Stalled => true,
            StreamError::Stopped(code) => matches!(
                *code,
                upload_stop::NOT_FOUND
                    | upload_stop::OFFSET_MISMATCH
                    | upload_stop::UNAVAILABLE
                    | upload_stop::TIMEOUT
            ),
            StreamError::Fatal(_) => false,
        }
    }

    pub(crate) fn into_client_error(self) -> ClientError {
        match self {
            StreamError::Lost(e) | StreamError::Fatal(e) => e,
            StreamError::Stopped(code) => {
                ClientError::Protocol(format!("the node refused an upload stream (code {code})"))
            }
            StreamError::Stalled => {
                ClientError::ConnectionLost("the node stopped taking upload bytes".into())
            }
        }
    }
}

/// Opens an upload stream and writes its header.
pub(crate) async fn open_upload(
    connection: &quinn::Connection,
    header: &UploadChunkHeader,
    stall: Duration,
) -> Result<quinn::SendStream, StreamError> {
    let frame = codec::encode_frame(header)
        .map_err(|e| StreamError::Fatal(ClientError::Protocol(format!("upload header: {e}"))))?;
    // Waits while the node has as many upload streams open as it allows.
    let mut send = match timeout(stall, connection.open_uni()).await {
        Ok(Ok(send)) => send,
        Ok(Err(e)) => return Err(StreamError::Lost(lost(e))),
        Err(_) => return Err(StreamError::Stalled),
    };
    write_upload(&mut send, &frame, stall).await?;
    Ok(send)
}

/// Writes bytes to an upload stream; flow control may hold them back, but not beyond `stall`.
pub(crate) async fn write_upload(
    send: &mut quinn::SendStream,
    bytes: &[u8],
    stall: Duration,
) -> Result<(), StreamError> {
    match timeout(stall, send.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(WriteError::Stopped(code))) => Err(StreamError::Stopped(stop_code(code))),
        Ok(Err(WriteError::ConnectionLost(e))) => Err(StreamError::Lost(lost(e))),
        Ok(Err(e)) => Err(StreamError::Fatal(ClientError::Protocol(format!(
            "cannot write an upload stream: {e}"
        )))),
        Err(_) => Err(StreamError::Stalled),
    }
}

/// Finishes an upload stream (the node may still be reading it).
pub(crate) fn finish_upload(send: &mut quinn::SendStream) -> Result<(), StreamError> {
    send.finish()
        .map_err(|_| StreamError::Fatal(ClientError::Protocol("upload stream closed".into())))
}

/// Waits until the node has received every byte of a finished stream (or stopped it).
pub(crate) async fn confirm_upload(
    send: &mut quinn::SendStream,
    stall: Duration,
) -> Result<(), StreamError> {
    match timeout(stall, send.stopped()).await {
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(code))) => Err(StreamError::Stopped(stop_code(code))),
        Ok(Err(StoppedError::ConnectionLost(e))) => Err(StreamError::Lost(lost(e))),
        Ok(Err(e)) => Err(StreamError::Fatal(ClientError::Protocol(format!(
            "upload stream: {e}"
        )))),
        Err(_) => Err(StreamError::Stalled),
    }
}

/// Abandons an upload stream whose bytes are no longer wanted.
pub(crate) fn reset_upload(send: &mut quinn::SendStream) {
    let _ = send.reset(quinn::VarInt::from_u32(0));
}

fn stop_code(code: quinn::VarInt) -> u32 {
    u32::try_from(code.into_inner()).unwrap_or(u32::MAX)
}

/// The header of a download: the blob and the byte range that follows.
#[derive(Debug)]
pub(crate) struct DownloadHeader {
    pub(crate) info: MediaInfo,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// Sends a download request and reads its header frame within `deadline`; the bytes follow on the
/// returned stream.
pub(crate) async fn open_download(
    connection: &quinn::Connection,
    request: &Request,
    deadline: Duration,
) -> Result<(DownloadHeader, quinn::RecvStream), ClientError> {
    let frame = codec::encode_frame(request)
        .map_err(|e| ClientError::Protocol(format!("cannot encode download: {e}")))?;
    if frame.len() > REQUEST_FRAME_BYTES_MAX as usize {
        return Err(ClientError::Protocol("download request too large".into()));
    }
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(lost)?;
        send.write_all(&frame).await.map_err(|e| match e {
            WriteError::ConnectionLost(e) => lost(e),
            other => ClientError::Protocol(format!("cannot send the download request: {other}")),
        })?;
        send.finish()
            .map_err(|_| ClientError::Protocol("download stream closed while sending".into()))?;
        let response = read_response(&mut recv).await?;
        Ok::<_, ClientError>((response, recv))
    };
    let (response, recv) =
        timeout(deadline, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                what: "media_download",
                after_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            })??;
    match response {
        Response::Media(MediaResponse::Download { info, start, end }) if start <= end => {
            Ok((DownloadHeader { info, start, end }, recv))
        }
        Response::Error(code) => Err(ClientError::Server(code)),
        other => Err(super::unexpected("media_download", &other)),
    }
}

/// The next piece of a download's bytes, or `None` at the stream's end; each piece within
/// `deadline`.
pub(crate) async fn read_download(
    recv: &mut quinn::RecvStream,
    deadline: Duration,
) -> Result<Option<Bytes>, ClientError> {
    match timeout(deadline, recv.read_chunk(DOWNLOAD_READ_BYTES_MAX, true)).await {
        Ok(Ok(chunk)) => Ok(chunk.map(|c| c.bytes)),
        Ok(Err(quinn::ReadError::ConnectionLost(e))) => Err(lost(e)),
        Ok(Err(quinn::ReadError::Reset(code))) => Err(ClientError::Protocol(format!(
            "the node aborted the download (code {code})"
        ))),
        Ok(Err(e)) => Err(ClientError::Protocol(format!("download stream: {e}"))),
        Err(_) => Err(ClientError::Timeout {
            what: "media_download",
            after_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}
