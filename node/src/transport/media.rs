//! Media on the wire: upload streams in (a client-opened unidirectional stream: one
//! `UploadChunkHeader` frame, then raw bytes), download bytes out (after the `Download` header
//! frame, on the request's own stream). The decisions are `crate::media`'s; this file only moves
//! bytes between quinn and it.

use std::sync::Arc;
use std::time::Duration;

use piazza_protocol::limits::UPLOAD_HEADER_FRAME_BYTES_MAX;
use piazza_protocol::media::upload_stop;
use piazza_protocol::{MediaId, Response, UploadChunkHeader, UserId, codec};
use quinn::VarInt;

use super::{FrameError, read_frame};
use crate::media::{MediaError, UploadWriter};
use crate::node::NodeContext;

/// How long an upload stream may take to deliver its header.
const UPLOAD_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an upload stream may stay silent before it is stopped: it holds the upload's lock,
/// so a stalled client must not keep its own resume waiting for long.
const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest piece taken from quinn at once; the writer batches pieces into MiB writes anyway.
const UPLOAD_READ_BYTES_MAX: usize = 256 * 1024;

/// How long writing one piece of a download may take: a client that stops reading is given up on
/// instead of holding the stream (and a blob reader) forever.
const DOWNLOAD_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Stream error code when a download cannot be completed after its header went out.
const DOWNLOAD_FAILED: u32 = 2;

/// How a stream's bytes stopped flowing.
enum StreamEnd {
    /// The client finished the stream.
    Finished,
    /// The client reset it or the connection broke: keep what arrived.
    Broken,
    /// The node refuses the rest.
    Refused(MediaError),
}

/// Serves one upload stream: header, then bytes appended to the upload's part file.
pub(super) async fn serve_upload(ctx: Arc<NodeContext>, user: UserId, mut recv: quinn::RecvStream) {
    let header = tokio::time::timeout(
        UPLOAD_HEADER_TIMEOUT,
        read_frame::<UploadChunkHeader>(&mut recv, UPLOAD_HEADER_FRAME_BYTES_MAX),
    )
    .await;
    let header = match header {
        Ok(Ok(header)) => header,
        Ok(Err(FrameError::Connection(_))) => return,
        Ok(Err(e)) => {
            tracing::debug!(%user, error = %e, "refused upload stream");
            let _ = recv.stop(VarInt::from_u32(upload_stop::MALFORMED));
            return;
        }
        Err(_) => {
            let _ = recv.stop(VarInt::from_u32(upload_stop::TIMEOUT));
            return;
        }
    };
    let mut writer = match ctx.media.open_stream(&user, &header).await {
        Ok(writer) => writer,
        Err(e) => {
            refuse(&mut recv, &user, &e);
            return;
        }
    };
    let end = pump(&mut recv, &mut writer).await;
    // Whatever arrived whole is kept, also from a broken stream: that is what a resume continues.
    let closed = writer.close().await;
    match (end, closed) {
        (StreamEnd::Refused(e), _) | (_, Err(e)) => refuse(&mut recv, &user, &e),
        (StreamEnd::Finished | StreamEnd::Broken, Ok(part_bytes)) => {
            tracing::debug!(%user, upload = %header.upload, part_bytes, "upload stream done");
        }
    }
}

async fn pump(recv: &mut quinn::RecvStream, writer: &mut UploadWriter) -> StreamEnd {
    // Bounded: every turn consumes at least one byte of a stream the writer caps at its allowance,
    // or ends.
    loop {
        let chunk = tokio::time::timeout(
            UPLOAD_IDLE_TIMEOUT,
            recv.read_chunk(UPLOAD_READ_BYTES_MAX, true),
        )
        .await;
        match chunk {
            Err(_) => return StreamEnd::Refused(MediaError::Timeout),
            Ok(Ok(Some(chunk))) => {
                metrics::counter!("piazza_media_upload_bytes_total")
                    .increment(chunk.bytes.len() as u64);
                if let Err(e) = writer.write(&chunk.bytes).await {
                    return StreamEnd::Refused(e);
                }
            }
            Ok(Ok(None)) => return StreamEnd::Finished,
            Ok(Err(_)) => return StreamEnd::Broken,
        }
    }
}

/// Stops a stream with the code for `error`, logging the node's own failures.
fn refuse(recv: &mut quinn::RecvStream, user: &UserId, error: &MediaError) {
    if error.is_internal() {
        // Logs the failure with a correlation id; the stream code carries no details.
        let _ = error.to_error_code();
    } else {
        tracing::debug!(%user, %error, "refused upload stream");
    }
    let _ = recv.stop(VarInt::from_u32(error.stop_code()));
}

/// Writes a download: the header frame `response`, then bytes `start..end` of blob `id`, then
/// finishes the stream. If the blob cannot be opened, an error frame goes out instead.
pub(super) async fn send_download(
    ctx: &Arc<NodeContext>,
    send: &mut quinn::SendStream,
    response: &Response,
    id: &MediaId,
    start: u64,
    end: u64,
) {
    let mut reader = match ctx.media.open_range(id, start, end).await {
        Ok(reader) => reader,
        Err(e) => {
            let error = Response::Error(e.to_error_code());
            let _ = super::server::write_response(send, &error).await;
            return;
        }
    };
    let Ok(header) = codec::encode_frame(response) else {
        let _ = send.reset(VarInt::from_u32(DOWNLOAD_FAILED));
        return;
    };
    if send.write_all(&header).await.is_err() {
        return;
    }
    // Bounded by the blob reader, which yields exactly `end - start` bytes and then `None`.
    loop {
        let chunk = match reader.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                // Logs an I/O failure with a correlation id; the header already went out, so the
                // client learns of it from the reset.
                let _ = e.to_error_code();
                let _ = send.reset(VarInt::from_u32(DOWNLOAD_FAILED));
                return;
            }
        };
        let len = chunk.len() as u64;
        match tokio::time::timeout(DOWNLOAD_WRITE_TIMEOUT, send.write_chunk(chunk)).await {
            Ok(Ok(())) => metrics::counter!("piazza_media_download_bytes_total").increment(len),
            Ok(Err(_)) => return,
            Err(_) => {
                let _ = send.reset(VarInt::from_u32(DOWNLOAD_FAILED));
                return;
            }
        }
    }
    let _ = send.finish();
}
