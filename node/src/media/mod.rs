//! Media: the [`BlobStore`] trait (content-addressed, immutable blobs) with its filesystem default
//! [`FsBlobStore`], uploads in progress (`upload.rs`), type sniffing (`sniff.rs`), and [`Media`],
//! the node's service that ties them together for the session (requests) and the transport
//! (upload streams, download bytes).
//!
//! Layout under the data directory:
//!
//! ```text
//! media/<2 hex>/<sha256>          blobs (FsBlobStore), complete and fsynced before they appear
//! uploads/u-<user>/<upload>.part  bytes of an upload in progress, appended only
//! uploads/u-<user>/<upload>.meta  what the upload declared (size, sha256, type hint, owner)
//! uploaders/u-<user>/<sha256>     "this user uploaded this blob" (may download and send it)
//! ```
//!
//! **Boundary:** this module never names quinn. The transport hands it a header and byte pieces
//! ([`UploadWriter`]) and takes byte pieces from it ([`BlobReader`]).
//!
//! **Why the same bytes from another user are uploaded again.** `BeginUpload` answers `Ready` at
//! once only if the caller uploaded the blob before. Otherwise knowing a file's SHA-256 would be
//! enough to claim it (and download it, or learn that someone has it); sending the bytes proves
//! possession. The blob is still stored once.

mod fs;
mod sniff;
#[cfg(test)]
mod tests;
pub(crate) mod upload;

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use piazza_protocol::media::upload_stop;
use piazza_protocol::{
    ErrorCode, MediaId, MediaInfo, MediaResponse, UploadChunkHeader, UploadId, UserId,
};
use tokio::sync::watch;

pub use self::fs::FsBlobStore;
pub(crate) use self::upload::UploadWriter;
use self::upload::{BeginPlan, Slots, UploadDir, UploadMeta};
use crate::config::MediaSection;

/// Bytes read from a blob per blocking call while downloading: large enough to amortise the hop
/// to the blocking pool, small enough that a download holds little memory.
const DOWNLOAD_CHUNK_BYTES: u64 = 256 * 1024;

/// How long a stream or a finishing request waits for the upload's lock, held by an earlier stream
/// of the same upload that is still arriving. A minute covers a 64 MiB stream at ~1 MB/s.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Most time a stream that starts past the node's copy waits for earlier streams to fill the gap
/// (the client sends its streams back to back, so they are arriving), and a `FinishUpload` for the
/// last stream to be written.
const GAP_WAIT: Duration = Duration::from_secs(60);

/// The wait for a gap to fill ends early when the part stops growing for this long: then no earlier
/// stream is arriving. Streams the client has sent are on the node within a few round trips.
const GAP_STALL: Duration = Duration::from_secs(2);

/// A place that keeps verified blobs by id. Blobs are immutable: an id always names the same bytes.
/// Methods block (file or network I/O): call them from a blocking task.
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// The size and type of a stored blob, or `None` if it is not stored.
    fn stat(&self, id: &MediaId) -> Result<Option<MediaInfo>, BlobError>;

    /// Takes the complete, verified file at `source` into the store as `id` of type `mime`;
    /// `source` is gone afterwards. Atomic: readers see the whole blob or none. Inserting a blob
    /// that exists replaces it with the same bytes.
    fn insert(&self, id: &MediaId, source: &Path, mime: &str) -> Result<(), BlobError>;

    /// A reader of bytes `start..end` of a stored blob (`end` at most its size).
    fn open(&self, id: &MediaId, start: u64, end: u64) -> Result<Box<dyn Read + Send>, BlobError>;
}

/// Why a blob store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No such blob.
    #[error("no such blob")]
    NotFound,
    /// The underlying storage failed.
    #[error("blob store I/O: {0}")]
    Io(#[from] io::Error),
}

/// Why a media operation failed. Mapped to the wire in one place each: [`MediaError::to_error_code`]
/// for requests, [`MediaError::stop_code`] for upload streams.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MediaError {
    /// No such upload of this user, or no such blob.
    #[error("not found")]
    NotFound,
    /// A field is over a limit: the request cannot succeed unchanged.
    #[error("{what} exceeds {limit}")]
    TooLarge { what: &'static str, limit: u64 },
    /// A field is wrong.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// `FinishUpload` before all bytes arrived.
    #[error("incomplete: the node has {have} of {size} bytes")]
    Incomplete { have: u64, size: u64 },
    /// The bytes do not match the declared size or hash; the upload was discarded.
    #[error("the bytes do not match the declared size and SHA-256")]
    Mismatch,
    /// A stream does not start where the node's copy ends.
    #[error("stream starts at {got}, the node has {have} bytes")]
    OffsetMismatch { have: u64, got: u64 },
    /// The request conflicts with what exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too much going on (every upload slot in use, a lock not released in time): retry later.
    #[error("busy")]
    Busy,
    /// A stream stayed silent for too long.
    #[error("timed out")]
    Timeout,
    /// Disk trouble.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A metadata file does not decode.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

impl From<BlobError> for MediaError {
    fn from(e: BlobError) -> MediaError {
        match e {
            BlobError::NotFound => MediaError::NotFound,
            BlobError::Io(e) => MediaError::Io(e),
        }
    }
}

impl MediaError {
    /// The wire error for a request that failed with this. Unexpected failures are logged with the
    /// id the client sees.
    pub(crate) fn to_error_code(&self) -> ErrorCode {
        match self {
            MediaError::NotFound => ErrorCode::NotFound,
            MediaError::TooLarge { what, limit } => ErrorCode::TooLarge {
                what: (*what).to_owned(),
                limit: *limit,
            },
            MediaError::Invalid { field, reason } => ErrorCode::invalid(field, reason.clone()),
            MediaError::Incomplete { .. } | MediaError::Mismatch => {
                ErrorCode::invalid("upload", self.to_string())
            }
            MediaError::OffsetMismatch { .. } | MediaError::Conflict(_) => ErrorCode::Conflict {
                reason: self.to_string(),
            },
            MediaError::Busy | MediaError::Timeout => {
                ErrorCode::unavailable("media uploads are busy, retry")
            }
            MediaError::Io(_) | MediaError::Corrupt(_) => {
                crate::actors::conversation::internal_error("media", self)
            }
        }
    }

    /// The code to stop an upload stream with.
    pub(crate) fn stop_code(&self) -> u32 {
        match self {
            MediaError::NotFound => upload_stop::NOT_FOUND,
            MediaError::OffsetMismatch { .. } => upload_stop::OFFSET_MISMATCH,
            MediaError::TooLarge { .. } => upload_stop::TOO_LARGE,
            MediaError::Timeout => upload_stop::TIMEOUT,
            MediaError::Invalid { .. } => upload_stop::MALFORMED,
            MediaError::Incomplete { .. }
            | MediaError::Mismatch
            | MediaError::Conflict(_)
            | MediaError::Busy
            | MediaError::Io(_)
            | MediaError::Corrupt(_) => upload_stop::UNAVAILABLE,
        }
    }

    /// Whether this is the node's fault (worth an operator's look), not the client's.
    pub(crate) fn is_internal(&self) -> bool {
        matches!(self, MediaError::Io(_) | MediaError::Corrupt(_))
    }
}

/// The node's media service.
#[derive(Debug)]
pub(crate) struct Media {
    config: MediaSection,
    store: Arc<dyn BlobStore>,
    uploads: UploadDir,
    slots: Slots,
    uploaders: PathBuf,
}

impl Media {
    /// Opens (creating them if needed) the media directories under `data_dir`.
    pub(crate) fn open(data_dir: &Path, config: &MediaSection) -> Result<Media, MediaError> {
        let store = FsBlobStore::open(&data_dir.join("media"))?;
        let uploads = UploadDir::open(&data_dir.join("uploads"))?;
        let uploaders = data_dir.join("uploaders");
        std::fs::create_dir_all(&uploaders)?;
        Ok(Media {
            config: config.clone(),
            store: Arc::new(store),
            uploads,
            slots: Slots::new(config.uploads_active_max),
            uploaders,
        })
    }

    /// `BeginUpload`: `Ready` if the caller already uploaded these bytes, else the upload to send
    /// them to and where to start.
    pub(crate) async fn begin_upload(
        self: &Arc<Self>,
        user: UserId,
        size_bytes: u64,
        sha256: MediaId,
        mime_hint: Option<String>,
        file_name: Option<String>,
    ) -> Result<MediaResponse, MediaError> {
        if size_bytes > self.config.max_bytes {
            return Err(MediaError::TooLarge {
                what: "size_bytes",
                limit: self.config.max_bytes,
            });
        }
        tracing::debug!(%user, %sha256, size_bytes, file_name = file_name.as_deref().unwrap_or(""), "begin upload");
        let this = self.clone();
        blocking(move || {
            if this.uploaded_by_blocking(&user, &sha256)
                && let Some(info) = this.store.stat(&sha256)?
                && info.size_bytes == size_bytes
            {
                // The same check as after an upload, so the answer does not depend on history.
                if let Some(hint) = &mime_hint
                    && sniff::contradicts(hint, &info.mime)
                {
                    return Err(MediaError::Invalid {
                        field: "mime_hint",
                        reason: format!("declared {hint}, but the bytes are {}", info.mime),
                    });
                }
                return Ok(MediaResponse::Ready(info));
            }
            let upload = upload::upload_id(&user, &sha256, size_bytes);
            let requested = UploadMeta {
                owner: user.clone(),
                size_bytes,
                sha256,
                created_at_ms: crate::node::now_ms(),
                mime_hint,
            };
            // Resuming needs no lock: the offset is a snapshot, and a stream that starts at a
            // stale one is refused and the client asks again.
            if let Some(existing) = this.uploads.read_meta(&user, upload)? {
                let part_bytes = this.uploads.part_bytes(&user, upload)?;
                return resume(&requested, &existing, part_bytes, upload);
            }
            let key = (user.clone(), upload);
            let slot = this.slots.acquire(&key).ok_or(MediaError::Busy)?;
            // Creation holds the lock so a concurrent begin of the same file or the GC cannot
            // interleave; no stream can hold it yet, since the upload does not exist.
            let _guard = slot.state.blocking_lock();
            if let Some(existing) = this.uploads.read_meta(&user, upload)? {
                let part_bytes = this.uploads.part_bytes(&user, upload)?;
                return resume(&requested, &existing, part_bytes, upload);
            }
            let count = this.uploads.count(&user)?;
            match upload::plan_begin(&requested, None, count, this.config.uploads_per_user_max)? {
                BeginPlan::Create => this.uploads.create(upload, &requested)?,
                BeginPlan::Resume { .. } => {}
            }
            metrics::counter!("piazza_media_uploads_started_total").increment(1);
            Ok(MediaResponse::Upload {
                upload,
                offset_bytes: 0,
            })
        })
        .await
    }

    /// `FinishUpload`: verify, sniff, store. Waits (bounded) for streams still being written.
    pub(crate) async fn finish_upload(
        self: &Arc<Self>,
        user: UserId,
        upload: UploadId,
    ) -> Result<MediaInfo, MediaError> {
        let key = (user.clone(), upload);
        let slot = self.slots.acquire(&key).ok_or(MediaError::Busy)?;
        let mut waited = false;
        let (mut guard, meta, part_bytes) = loop {
            let guard = tokio::time::timeout(LOCK_WAIT, slot.state.clone().lock_owned())
                .await
                .map_err(|_| MediaError::Busy)?;
            let this = self.clone();
            let user = user.clone();
            let (meta, part_bytes) = blocking(move || {
                let meta = this.uploads.read_meta(&user, upload)?;
                Ok((meta, this.uploads.part_bytes(&user, upload)?))
            })
            .await?;
            let meta = meta.ok_or(MediaError::NotFound)?;
            if part_bytes >= meta.size_bytes || waited {
                break (guard, meta, part_bytes);
            }
            // The client finished its last stream, but the node may not have written all of it
            // yet: wait for the part to grow, once.
            drop(guard);
            wait_for_bytes(&slot.part_bytes, meta.size_bytes).await;
            waited = true;
        };
        if part_bytes < meta.size_bytes {
            return Err(MediaError::Incomplete {
                have: part_bytes,
                size: meta.size_bytes,
            });
        }
        let hash = guard.hash.take();
        let this = self.clone();
        let result =
            blocking(move || this.finish_blocking(&user, upload, &meta, part_bytes, hash)).await;
        drop(guard);
        if !matches!(result, Err(MediaError::Io(_) | MediaError::Busy)) {
            self.slots.forget(&key);
        }
        result
    }

    fn finish_blocking(
        &self,
        user: &UserId,
        upload: UploadId,
        meta: &UploadMeta,
        part_bytes: u64,
        hash: Option<upload::RunningHash>,
    ) -> Result<MediaInfo, MediaError> {
        let part = self.uploads.part(user, upload);
        let sha256 = match hash {
            Some(hash) if hash.bytes() == part_bytes => hash.finish(),
            _ => upload::hash_file(&part)?.0,
        };
        if let Err(e) = upload::check_complete(meta, part_bytes, &sha256) {
            if matches!(e, MediaError::Mismatch) {
                self.uploads.remove(user, upload)?;
                metrics::counter!("piazza_media_uploads_failed_total").increment(1);
            }
            return Err(e);
        }
        let mut file = std::fs::File::open(&part)?;
        let prefix = fs::read_prefix(&mut file)?;
        drop(file);
        let mime = sniff::sniff(&prefix, prefix.len() as u64 == part_bytes);
        if let Some(hint) = &meta.mime_hint
            && sniff::contradicts(hint, mime)
        {
            self.uploads.remove(user, upload)?;
            metrics::counter!("piazza_media_uploads_failed_total").increment(1);
            return Err(MediaError::Invalid {
                field: "mime_hint",
                reason: format!(
                    "declared {hint}, but the bytes are {mime}; the upload was discarded"
                ),
            });
        }
        self.store.insert(&meta.sha256, &part, mime)?;
        self.uploads.remove(user, upload)?;
        self.record_uploader(user, &meta.sha256)?;
        metrics::counter!("piazza_media_uploads_finished_total").increment(1);
        Ok(MediaInfo {
            id: meta.sha256.clone(),
            size_bytes: part_bytes,
            mime: mime.to_owned(),
        })
    }

    /// Opens an upload stream: takes the upload's lock (waiting, bounded, behind an earlier stream
    /// of the same upload) and checks that the stream continues exactly where the part ends.
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        user: &UserId,
        header: &UploadChunkHeader,
    ) -> Result<UploadWriter, MediaError> {
        let upload = header.upload;
        let key = (user.clone(), upload);
        let slot = self.slots.acquire(&key).ok_or(MediaError::Busy)?;
        let mut waited = false;
        loop {
            let guard = tokio::time::timeout(LOCK_WAIT, slot.state.clone().lock_owned())
                .await
                .map_err(|_| MediaError::Busy)?;
            let this = self.clone();
            let owner = user.clone();
            let (meta, part_bytes) = blocking(move || {
                let meta = this.uploads.read_meta(&owner, upload)?;
                Ok((meta, this.uploads.part_bytes(&owner, upload)?))
            })
            .await?;
            let meta = meta.ok_or(MediaError::NotFound)?;
            if header.offset_bytes > part_bytes && !waited {
                // An earlier stream of this upload is still arriving: let it fill the gap.
                drop(guard);
                wait_for_bytes(&slot.part_bytes, header.offset_bytes).await;
                waited = true;
                continue;
            }
            let allowance =
                upload::stream_allowance(meta.size_bytes, part_bytes, header.offset_bytes)?;
            let path = self.uploads.part(user, upload);
            // `create`: a crash between storing a blob and removing its upload's meta leaves a
            // meta without a part; the bytes are then simply sent again.
            let file = blocking(move || {
                Ok(std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?)
            })
            .await?;
            return Ok(UploadWriter::new(guard, slot, file, part_bytes, allowance));
        }
    }

    /// The size and type of a stored blob.
    pub(crate) async fn stat(
        self: &Arc<Self>,
        id: &MediaId,
    ) -> Result<Option<MediaInfo>, MediaError> {
        let this = self.clone();
        let id = id.clone();
        blocking(move || Ok(this.store.stat(&id)?)).await
    }

    /// Whether `user` uploaded blob `id` (and may therefore download and send it anywhere).
    pub(crate) async fn uploaded_by(self: &Arc<Self>, user: &UserId, id: &MediaId) -> bool {
        let this = self.clone();
        let (user, id) = (user.clone(), id.clone());
        blocking(move || Ok(this.uploaded_by_blocking(&user, &id)))
            .await
            .unwrap_or(false)
    }

    fn uploaded_by_blocking(&self, user: &UserId, id: &MediaId) -> bool {
        self.uploader_path(user, id).exists()
    }

    fn uploader_path(&self, user: &UserId, id: &MediaId) -> PathBuf {
        self.uploaders.join(format!("u-{user}")).join(id.as_str())
    }

    fn record_uploader(&self, user: &UserId, id: &MediaId) -> Result<(), MediaError> {
        let path = self.uploader_path(user, id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::File::create(path)?;
        Ok(())
    }

    /// A reader of bytes `start..end` of blob `id`, piece by piece.
    pub(crate) async fn open_range(
        self: &Arc<Self>,
        id: &MediaId,
        start: u64,
        end: u64,
    ) -> Result<BlobReader, MediaError> {
        let this = self.clone();
        let id = id.clone();
        let reader = blocking(move || Ok(this.store.open(&id, start, end)?)).await?;
        Ok(BlobReader {
            reader: Some(reader),
            remaining: end.saturating_sub(start),
        })
    }

    /// Removes abandoned uploads; returns how many.
    pub(crate) async fn collect_garbage(self: &Arc<Self>) -> Result<usize, MediaError> {
        let this = self.clone();
        let ttl = Duration::from_secs(self.config.upload_ttl_secs);
        blocking(move || this.uploads.sweep(&this.slots, ttl, SystemTime::now())).await
    }
}

fn resume(
    requested: &UploadMeta,
    existing: &UploadMeta,
    part_bytes: u64,
    upload: UploadId,
) -> Result<MediaResponse, MediaError> {
    match upload::plan_begin(requested, Some((existing, part_bytes)), 0, usize::MAX)? {
        BeginPlan::Resume { offset_bytes } => Ok(MediaResponse::Upload {
            upload,
            offset_bytes,
        }),
        BeginPlan::Create => Err(MediaError::Conflict("upload vanished".into())),
    }
}

/// Waits until the part of an upload holds at least `bytes` bytes, as long as it keeps growing
/// (at most [`GAP_WAIT`] in all, and [`GAP_STALL`] without growth).
async fn wait_for_bytes(part_bytes: &watch::Sender<u64>, bytes: u64) {
    let mut rx = part_bytes.subscribe();
    let deadline = tokio::time::Instant::now() + GAP_WAIT;
    // Bounded by the deadline: every turn waits for a change or ends.
    while *rx.borrow_and_update() < bytes && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(GAP_STALL, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MediaError> + Send + 'static,
) -> Result<T, MediaError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| MediaError::Io(io::Error::other(e)))?
}

/// Bytes of a blob, read piece by piece on the blocking pool (no thread waits for the network).
pub(crate) struct BlobReader {
    reader: Option<Box<dyn Read + Send>>,
    remaining: u64,
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl BlobReader {
    /// The next piece, or `None` when all bytes were read. A blob shorter than promised is an
    /// error (the store changed under us, which immutable blobs never should).
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, MediaError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let Some(mut reader) = self.reader.take() else {
            return Ok(None);
        };
        // Lossless: at most DOWNLOAD_CHUNK_BYTES.
        let n = self.remaining.min(DOWNLOAD_CHUNK_BYTES) as usize;
        let (reader, chunk) = tokio::task::spawn_blocking(move || {
            let mut chunk = vec![0u8; n];
            let read = reader.read_exact(&mut chunk).map(|()| chunk);
            (reader, read)
        })
        .await
        .map_err(|e| MediaError::Io(io::Error::other(e)))?;
        let chunk = chunk?;
        self.remaining -= n as u64;
        self.reader = Some(reader);
        Ok(Some(Bytes::from(chunk)))
    }
}

/// Runs the upload GC: once at start-up, then every `media.gc_interval_secs`, until `shutdown`.
pub(crate) async fn run_gc(media: Arc<Media>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_secs(media.config.gc_interval_secs);
    loop {
        match media.collect_garbage().await {
            Ok(0) => {}
            Ok(removed) => {
                metrics::counter!("piazza_media_uploads_collected_total").increment(removed as u64);
                tracing::info!(removed, "removed abandoned uploads");
            }
            Err(e) => tracing::warn!(error = %e, "upload garbage collection failed"),
        }
        // Either the next period or shutdown; shutdown wins.
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}
