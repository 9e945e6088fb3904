//! Media methods of [`Client`]: resumable uploads, downloads with ranges (resumed after a lost
//! connection), and media messages.

use std::collections::VecDeque;
use std::io::{Read, SeekFrom};
use std::path::Path;
use std::time::Duration;

use piazza_protocol::limits::MEDIA_BYTES_HARD_MAX;
use piazza_protocol::{
    ClientMsgId, ConversationRef, ErrorCode, MediaId, MediaInfo, MediaRequest, MediaResponse,
    Request, Response, SendAck, UploadChunkHeader, UploadId,
};
use ring::digest::{Context, SHA256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;

use super::{Client, REQUEST_ATTEMPTS_MAX, Retry};
use crate::error::ClientError;
use crate::transport::{self, media as wire};

/// Bytes per upload stream. Smaller than the protocol's 64 MiB cap so that a broken stream costs
/// little to resend, large enough that the per-stream overhead (a header, an fsync on the node) is
/// noise.
const UPLOAD_STREAM_BYTES: u64 = 8 * 1024 * 1024;

/// Bytes read from the file and written to a stream at once.
const UPLOAD_CHUNK_BYTES: usize = 1024 * 1024;

/// Upload streams sent but not yet confirmed by the node. The node takes an upload's streams one
/// after another; a few in flight keep the link busy meanwhile.
const UPLOAD_STREAMS_IN_FLIGHT_MAX: usize = 4;

/// How long an upload stream may make no progress (flow control, the node busy with an earlier
/// stream) before the attempt is abandoned and resumed. The node waits up to a minute for an
/// earlier stream of the same upload, so this is a little longer.
const UPLOAD_STALL_TIMEOUT: Duration = Duration::from_secs(75);

/// Download bytes collected before they are handed to the writer: QUIC delivers packet-sized
/// pieces, and a writer such as a file pays per call.
const DOWNLOAD_WRITE_BYTES: usize = 256 * 1024;

/// Attempts of one upload: `BeginUpload`, streams, `FinishUpload`, repeated after a lost
/// connection or a refused stream. Each attempt continues where the node's copy ends.
const UPLOAD_ATTEMPTS_MAX: u32 = 16;

/// Pause before resuming after the node refused a stream (it may still be writing an earlier one).
const UPLOAD_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Hashing and `FinishUpload` (which hashes on the node if it restarted) are given this many bytes
/// per second on top of the request timeout; a slow disk is slower than this only when it fails.
const HASH_BYTES_PER_S_MIN: u64 = 50 * 1024 * 1024;

/// How far an upload has come, for a progress bar: `done_bytes` of `total_bytes` are on the node
/// or on their way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadProgress {
    /// Bytes the node has or that were handed to the connection.
    pub done_bytes: u64,
    /// The file's size.
    pub total_bytes: u64,
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The stored blob: use `info.id` in [`Client::send_media`] and [`Client::download`].
    pub info: MediaInfo,
    /// Bytes the node already had when this call began (resuming an earlier, interrupted upload of
    /// the same file), or the file's size when it had the whole blob.
    pub resumed_from_bytes: u64,
    /// Bytes this call sent (more than `size - resumed_from_bytes` if the connection broke
    /// meanwhile and some were sent again).
    pub sent_bytes: u64,
}

/// What a download wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// The whole blob's id, size and type.
    pub info: MediaInfo,
    /// Offset of the first byte written.
    pub start: u64,
    /// Offset after the last byte written (`end - start` bytes were written).
    pub end: u64,
}

impl Client {
    /// Uploads a file and returns the stored blob.
    ///
    /// The file is hashed first (its SHA-256 is its id). If the node already has part of it from
    /// an earlier attempt of this user (this process or another), only the rest is sent; if this
    /// user uploaded the same bytes before, nothing is sent. When the connection breaks, the
    /// upload continues from where the node's copy ends after the reconnect. `progress`, if
    /// given, is updated as bytes go out.
    ///
    /// `mime_hint` is what the caller believes the type is: an `image/`, `video/` or `audio/`
    /// claim that the bytes contradict fails the upload ([`ErrorCode::Invalid`], field
    /// `mime_hint`). The stored type is always the one the node sniffs.
    pub async fn upload(
        &self,
        path: &Path,
        mime_hint: Option<String>,
        progress: Option<&watch::Sender<UploadProgress>>,
    ) -> Result<Uploaded, ClientError> {
        let size_bytes = tokio::fs::metadata(path)
            .await
            .map_err(|e| file_error(path, &e))?
            .len();
        if size_bytes == 0 || size_bytes > MEDIA_BYTES_HARD_MAX {
            return Err(ClientError::Invalid(ErrorCode::invalid(
                "size_bytes",
                format!(
                    "a media file has 1 to {MEDIA_BYTES_HARD_MAX} bytes, this one {size_bytes}"
                ),
            )));
        }
        let sha256 = hash_file(path).await?;
        let begin = Request::Media(MediaRequest::BeginUpload {
            size_bytes,
            sha256,
            mime_hint,
            file_name: path
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| n.len() <= piazza_protocol::limits::FILE_NAME_BYTES_MAX)
                .map(str::to_owned),
        });
        begin.validate().map_err(ClientError::Invalid)?;
        let report = |done_bytes: u64| {
            if let Some(progress) = progress {
                progress.send_replace(UploadProgress {
                    done_bytes,
                    total_bytes: size_bytes,
                });
            }
        };
        let finish_deadline = self.settings.request_timeout + hashing_time(size_bytes);
        let mut resumed_from_bytes = None;
        let mut sent_bytes = 0u64;
        let mut lost_generation = None;
        for attempt in 1..=UPLOAD_ATTEMPTS_MAX {
            let (generation, connection) = self.connection(lost_generation).await?;
            let (upload, offset_bytes) =
                match transport::round_trip(&connection, &begin, self.settings.request_timeout)
                    .await
                {
                    Ok(Response::Media(MediaResponse::Ready(info))) => {
                        report(size_bytes);
                        return Ok(Uploaded {
                            info,
                            resumed_from_bytes: resumed_from_bytes.unwrap_or(size_bytes),
                            sent_bytes,
                        });
                    }
                    Ok(Response::Media(MediaResponse::Upload {
                        upload,
                        offset_bytes,
                    })) if offset_bytes <= size_bytes => (upload, offset_bytes),
                    Ok(Response::Error(code)) => return Err(ClientError::Server(code)),
                    Ok(other) => return Err(transport::unexpected("media_begin_upload", &other)),
                    Err(ClientError::ConnectionLost(why)) => {
                        debug!(attempt, "upload cut off ({why}); resuming after reconnect");
                        lost_generation = Some(generation);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
            resumed_from_bytes.get_or_insert(offset_bytes);
            report(offset_bytes);
            let streams = send_streams(
                &connection,
                path,
                upload,
                offset_bytes,
                size_bytes,
                &mut sent_bytes,
                &report,
            )
            .await;
            match streams {
                Ok(()) => {}
                Err(e) if e.resumable() => {
                    debug!(attempt, "upload stream failed ({e:?}); resuming");
                    if let wire::StreamError::Lost(_) = e {
                        lost_generation = Some(generation);
                    } else {
                        tokio::time::sleep(UPLOAD_RETRY_PAUSE).await;
                    }
                    continue;
                }
                Err(e) => return Err(e.into_client_error()),
            }
            let finish = Request::Media(MediaRequest::FinishUpload { upload });
            match transport::round_trip(&connection, &finish, finish_deadline).await {
                Ok(Response::Media(MediaResponse::Ready(info))) => {
                    report(size_bytes);
                    return Ok(Uploaded {
                        info,
                        resumed_from_bytes: resumed_from_bytes.unwrap_or(0),
                        sent_bytes,
                    });
                }
                // Incomplete (a stream was lost after all): ask where to continue.
                Ok(Response::Error(ErrorCode::Invalid { field, reason }))
                    if field == "upload" && reason.starts_with("incomplete") =>
                {
                    debug!(attempt, "{reason}; resuming");
                }
                // The upload vanished between the streams and the finish (collected, or finished
                // by another device): begin again.
                Ok(Response::Error(ErrorCode::NotFound)) => {}
                Ok(Response::Error(code)) => return Err(ClientError::Server(code)),
                Ok(other) => return Err(transport::unexpected("media_finish_upload", &other)),
                Err(ClientError::ConnectionLost(_)) => lost_generation = Some(generation),
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::ConnectionLost(format!(
            "the upload did not complete in {UPLOAD_ATTEMPTS_MAX} attempts"
        )))
    }

    /// Downloads blob `media` (or bytes `start..end` of it with `range`; an `end` past the blob
    /// means "to the end") into `out`, which receives exactly the bytes of the range, in order.
    /// `conversation` is one the caller can read in which a message references the blob (any, if
    /// the caller uploaded it). A download cut off by a lost connection continues after the
    /// reconnect from the first byte not yet written.
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        media: &MediaId,
        conversation: ConversationRef,
        range: Option<(u64, u64)>,
        out: &mut W,
    ) -> Result<Downloaded, ClientError> {
        let mut wanted = range;
        let mut first: Option<wire::DownloadHeader> = None;
        let mut written = 0u64;
        let mut pending: Vec<u8> = Vec::with_capacity(DOWNLOAD_WRITE_BYTES);
        let mut lost_generation = None;
        for attempt in 1..=REQUEST_ATTEMPTS_MAX {
            let request = Request::Media(MediaRequest::Download {
                media: media.clone(),
                conversation: conversation.clone(),
                range: wanted,
            });
            request.validate().map_err(ClientError::Invalid)?;
            let (generation, connection) = self.connection(lost_generation).await?;
            let deadline = self.settings.request_timeout;
            let outcome = async {
                let (header, mut recv) =
                    wire::open_download(&connection, &request, deadline).await?;
                let expected_start = first.as_ref().map_or(header.start, |f| f.start + written);
                if header.start != expected_start || header.info.id != *media {
                    return Err(ClientError::Protocol(
                        "the node answered a download with another range".into(),
                    ));
                }
                let end = header.end;
                let first = first.get_or_insert(header);
                // Bounded: every piece is at least one byte of a range the node declared.
                while let Some(chunk) = wire::read_download(&mut recv, deadline).await? {
                    let len = chunk.len() as u64;
                    if first.start + written + pending.len() as u64 + len > end {
                        return Err(ClientError::Protocol(
                            "the node sent more bytes than the download's range".into(),
                        ));
                    }
                    // QUIC hands over packet-sized pieces; the writer gets them in larger ones.
                    pending.extend_from_slice(&chunk);
                    if pending.len() >= DOWNLOAD_WRITE_BYTES {
                        write_out(out, &mut pending, &mut written).await?;
                    }
                }
                write_out(out, &mut pending, &mut written).await?;
                if first.start + written != end {
                    return Err(ClientError::Protocol(
                        "the download ended before its range".into(),
                    ));
                }
                Ok(())
            }
            .await;
            // Bytes received before a failure are good: keep them, the resume starts after them.
            write_out(out, &mut pending, &mut written).await?;
            match outcome {
                Ok(()) => {
                    out.flush().await.map_err(|e| {
                        ClientError::File(format!("cannot write the download: {e}"))
                    })?;
                    let header = first.take().ok_or(ClientError::Closed)?;
                    return Ok(Downloaded {
                        info: header.info,
                        start: header.start,
                        end: header.end,
                    });
                }
                Err(ClientError::ConnectionLost(why)) => {
                    debug!(
                        attempt,
                        "download cut off ({why}); resuming after reconnect"
                    );
                    lost_generation = Some(generation);
                    if let Some(header) = &first {
                        wanted = Some((header.start + written, header.end));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::ConnectionLost(format!(
            "media_download: the connection was lost {REQUEST_ATTEMPTS_MAX} times"
        )))
    }

    /// Sends a message showing blob `media` with `caption` (may be empty). The caller must have
    /// uploaded the blob, or it must already be referenced in `conversation`. Retried after a lost
    /// connection with the same `client_msg_id`, like [`Client::send`].
    pub async fn send_media(
        &self,
        conversation: ConversationRef,
        media: MediaId,
        caption: impl Into<String>,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<SendAck, ClientError> {
        let request = Request::SendMedia {
            conversation,
            client_msg_id: client_msg_id.unwrap_or_else(|| self.new_client_msg_id()),
            media,
            caption: caption.into(),
        };
        match self.call(request, Retry::Safe).await? {
            Response::Ack(ack) => Ok(ack),
            other => Err(transport::unexpected("send_media", &other)),
        }
    }
}

/// Hands the buffered download bytes to the writer and counts them as written.
async fn write_out<W: AsyncWrite + Unpin>(
    out: &mut W,
    pending: &mut Vec<u8>,
    written: &mut u64,
) -> Result<(), ClientError> {
    if pending.is_empty() {
        return Ok(());
    }
    out.write_all(pending)
        .await
        .map_err(|e| ClientError::File(format!("cannot write the download: {e}")))?;
    *written += pending.len() as u64;
    pending.clear();
    Ok(())
}

/// Sends bytes `offset_bytes..size_bytes` of the file on upload streams of
/// [`UPLOAD_STREAM_BYTES`] each, back to back, and waits until the node has received them all.
async fn send_streams(
    connection: &quinn::Connection,
    path: &Path,
    upload: UploadId,
    offset_bytes: u64,
    size_bytes: u64,
    sent_bytes: &mut u64,
    report: &impl Fn(u64),
) -> Result<(), wire::StreamError> {
    let fatal = |e: &std::io::Error| wire::StreamError::Fatal(file_error(path, e));
    let mut file = tokio::fs::File::open(path).await.map_err(|e| fatal(&e))?;
    file.seek(SeekFrom::Start(offset_bytes))
        .await
        .map_err(|e| fatal(&e))?;
    let mut buffer = vec![0u8; UPLOAD_CHUNK_BYTES];
    let mut in_flight: VecDeque<quinn::SendStream> = VecDeque::new();
    let mut position = offset_bytes;
    let result = async {
        // Bounded: every turn sends one stream of at least one byte of the file.
        while position < size_bytes {
            if in_flight.len() >= UPLOAD_STREAMS_IN_FLIGHT_MAX
                && let Some(mut oldest) = in_flight.pop_front()
            {
                wire::confirm_upload(&mut oldest, UPLOAD_STALL_TIMEOUT).await?;
            }
            let header = UploadChunkHeader {
                upload,
                offset_bytes: position,
            };
            let mut send = wire::open_upload(connection, &header, UPLOAD_STALL_TIMEOUT).await?;
            let stream_end = size_bytes.min(position + UPLOAD_STREAM_BYTES);
            while position < stream_end {
                // Lossless: at most UPLOAD_CHUNK_BYTES.
                let n = (stream_end - position).min(UPLOAD_CHUNK_BYTES as u64) as usize;
                file.read_exact(&mut buffer[..n])
                    .await
                    .map_err(|e| fatal(&e))?;
                if let Err(e) =
                    wire::write_upload(&mut send, &buffer[..n], UPLOAD_STALL_TIMEOUT).await
                {
                    wire::reset_upload(&mut send);
                    return Err(e);
                }
                position += n as u64;
                *sent_bytes += n as u64;
                report(position);
            }
            wire::finish_upload(&mut send)?;
            in_flight.push_back(send);
        }
        while let Some(mut send) = in_flight.pop_front() {
            wire::confirm_upload(&mut send, UPLOAD_STALL_TIMEOUT).await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        for send in &mut in_flight {
            wire::reset_upload(send);
        }
    }
    result
}

/// SHA-256 of a file, on the blocking pool.
async fn hash_file(path: &Path) -> Result<MediaId, ClientError> {
    let owned = path.to_owned();
    let hashed = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&owned)?;
        let mut context = Context::new(&SHA256);
        let mut buffer = vec![0u8; UPLOAD_CHUNK_BYTES];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            context.update(&buffer[..n]);
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(context.finish().as_ref());
        Ok::<_, std::io::Error>(MediaId::from_digest(&digest))
    })
    .await
    .map_err(|e| ClientError::Protocol(format!("hashing task failed: {e}")))?;
    hashed.map_err(|e| file_error(path, &e))
}

/// Time to allow for hashing `size_bytes` bytes.
fn hashing_time(size_bytes: u64) -> Duration {
    Duration::from_secs(size_bytes / HASH_BYTES_PER_S_MIN + 1)
}

fn file_error(path: &Path, error: &std::io::Error) -> ClientError {
    ClientError::File(format!("{}: {error}", path.display()))
}
