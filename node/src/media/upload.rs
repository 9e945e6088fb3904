//! Uploads in progress: where their bytes and metadata live, the decisions of the upload state
//! machine (pure functions, tested in `tests.rs`), the per-upload lock, and the writer that
//! appends one stream's bytes.
//!
//! ```text
//! BeginUpload ──► <uploads>/u-<user>/<upload>.meta  (size, sha256, owner, hint, created)
//!                 <uploads>/u-<user>/<upload>.part  (the bytes so far, appended only)
//! upload stream ─► append at exactly the part's length, fsync at the stream's end
//! FinishUpload ─► size + sha256 + sniffed type checked ─► rename into the blob store, meta removed
//! abandoned   ──► the GC removes both files once untouched for `media.upload_ttl_secs`
//! ```
//!
//! The upload id is derived from (owner, sha256, size), so the same user asking to upload the same
//! file again finds the same files: that is how uploads resume, also across node restarts. Each
//! user has their own directory (`u-` + the user id, which cannot contain `/`), so another user
//! cannot even name someone else's upload, and counting a user's uploads is one directory listing.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use piazza_protocol::limits::{MIME_BYTES_MAX, UPLOAD_STREAM_BYTES_MAX};
use piazza_protocol::{MediaId, UploadId, UserId};
use ring::digest::{Context, SHA256};
use tokio::sync::{OwnedMutexGuard, watch};

use super::MediaError;

/// Bytes collected from a stream before they are written (and hashed) in one blocking call.
/// A MiB amortises the hop to the blocking pool; it is also the most one stream buffers.
pub(crate) const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Format byte of `.meta` files.
const META_V1: u8 = 1;

/// Most directory entries one GC sweep looks at; the rest wait for the next sweep.
const GC_ENTRIES_PER_SWEEP_MAX: usize = 100_000;

/// Extensions of an upload's two files.
const PART_EXT: &str = "part";
const META_EXT: &str = "meta";

/// What is stored beside an upload's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UploadMeta {
    pub(crate) owner: UserId,
    pub(crate) size_bytes: u64,
    pub(crate) sha256: MediaId,
    pub(crate) created_at_ms: u64,
    pub(crate) mime_hint: Option<String>,
}

impl UploadMeta {
    /// `[1][size u64][created u64][sha256 32 bytes][owner len u8][owner][hint len u16][hint]`,
    /// integers big-endian; no hint is an empty one.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let owner = self.owner.as_str().as_bytes();
        let hint = self.mime_hint.as_deref().unwrap_or_default().as_bytes();
        let mut bytes = Vec::with_capacity(1 + 8 + 8 + 32 + 1 + owner.len() + 2 + hint.len());
        bytes.push(META_V1);
        bytes.extend_from_slice(&self.size_bytes.to_be_bytes());
        bytes.extend_from_slice(&self.created_at_ms.to_be_bytes());
        bytes.extend_from_slice(&self.sha256.digest());
        // Both fit: user ids are at most 64 bytes, hints at most MIME_BYTES_MAX (255).
        bytes.push(owner.len() as u8);
        bytes.extend_from_slice(owner);
        bytes.extend_from_slice(&(hint.len() as u16).to_be_bytes());
        bytes.extend_from_slice(hint);
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<UploadMeta, MediaError> {
        let corrupt = |what: &str| MediaError::Corrupt(format!("upload meta: {what}"));
        let mut rest = match bytes.split_first() {
            Some((&META_V1, rest)) => rest,
            Some(_) => return Err(corrupt("unknown format")),
            None => return Err(corrupt("empty")),
        };
        let mut take = |n: usize| -> Result<&[u8], MediaError> {
            if rest.len() < n {
                return Err(corrupt("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let u64_of = |b: &[u8]| -> Result<u64, MediaError> {
            Ok(u64::from_be_bytes(
                b.try_into().map_err(|_| corrupt("integer"))?,
            ))
        };
        let size_bytes = u64_of(take(8)?)?;
        let created_at_ms = u64_of(take(8)?)?;
        let digest: [u8; 32] = take(32)?.try_into().map_err(|_| corrupt("digest"))?;
        let owner_len = usize::from(take(1)?[0]);
        let owner = std::str::from_utf8(take(owner_len)?)
            .map_err(|_| corrupt("owner"))?
            .parse::<UserId>()
            .map_err(|_| corrupt("owner"))?;
        let hint_bytes = take(2)?;
        let hint_len = usize::from(u16::from_be_bytes([hint_bytes[0], hint_bytes[1]]));
        if hint_len > MIME_BYTES_MAX {
            return Err(corrupt("hint length"));
        }
        let hint = std::str::from_utf8(take(hint_len)?).map_err(|_| corrupt("hint"))?;
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(UploadMeta {
            owner,
            size_bytes,
            sha256: MediaId::from_digest(&digest),
            created_at_ms,
            mime_hint: (!hint.is_empty()).then(|| hint.to_owned()),
        })
    }
}

/// The id of `owner`'s upload of the `size_bytes` bytes hashing to `sha256`: the first 64 bits of
/// a SHA-256 over all three (zero, which is not an id, becomes one).
pub(crate) fn upload_id(owner: &UserId, sha256: &MediaId, size_bytes: u64) -> UploadId {
    let mut context = Context::new(&SHA256);
    context.update(b"piazza-upload\0");
    context.update(owner.as_str().as_bytes());
    context.update(b"\0");
    context.update(sha256.as_str().as_bytes());
    context.update(&size_bytes.to_be_bytes());
    let digest = context.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    let raw = u64::from_be_bytes(first).max(1);
    #[allow(clippy::expect_used)]
    // Holds: `raw` is at least 1 and every non-zero number is an upload id.
    UploadId::new(raw).expect("a non-zero upload id")
}

/// What `BeginUpload` does, decided from what is on disk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BeginPlan {
    /// The upload exists: continue from `offset_bytes`.
    Resume { offset_bytes: u64 },
    /// Create the upload.
    Create,
}

/// Decides a `BeginUpload` of `requested`, given the upload's meta and part length if they exist
/// and how many uploads the user has in progress.
pub(crate) fn plan_begin(
    requested: &UploadMeta,
    existing: Option<(&UploadMeta, u64)>,
    uploads_of_user: usize,
    uploads_per_user_max: usize,
) -> Result<BeginPlan, MediaError> {
    match existing {
        Some((meta, part_bytes)) => {
            let same = meta.owner == requested.owner
                && meta.sha256 == requested.sha256
                && meta.size_bytes == requested.size_bytes;
            if !same {
                // Two different uploads of one user with the same 64-bit id: astronomically
                // unlikely, and refusing is safe.
                return Err(MediaError::Conflict("upload id collision".into()));
            }
            Ok(BeginPlan::Resume {
                offset_bytes: part_bytes.min(meta.size_bytes),
            })
        }
        None if uploads_of_user >= uploads_per_user_max => Err(MediaError::TooLarge {
            what: "uploads_in_progress",
            limit: uploads_per_user_max as u64,
        }),
        None => Ok(BeginPlan::Create),
    }
}

/// How many bytes a stream that says it starts at `offset_bytes` may append to a part holding
/// `part_bytes` of a `size_bytes` file.
pub(crate) fn stream_allowance(
    size_bytes: u64,
    part_bytes: u64,
    offset_bytes: u64,
) -> Result<u64, MediaError> {
    if offset_bytes != part_bytes {
        return Err(MediaError::OffsetMismatch {
            have: part_bytes,
            got: offset_bytes,
        });
    }
    Ok(size_bytes
        .saturating_sub(part_bytes)
        .min(UPLOAD_STREAM_BYTES_MAX))
}

/// Checks a complete upload: length and hash must match what `BeginUpload` declared.
pub(crate) fn check_complete(
    meta: &UploadMeta,
    part_bytes: u64,
    sha256: &MediaId,
) -> Result<(), MediaError> {
    if part_bytes < meta.size_bytes {
        return Err(MediaError::Incomplete {
            have: part_bytes,
            size: meta.size_bytes,
        });
    }
    if part_bytes > meta.size_bytes || *sha256 != meta.sha256 {
        return Err(MediaError::Mismatch);
    }
    Ok(())
}

/// Where uploads live.
#[derive(Debug)]
pub(crate) struct UploadDir {
    root: PathBuf,
}

impl UploadDir {
    pub(crate) fn open(root: &Path) -> Result<UploadDir, io::Error> {
        fs::create_dir_all(root)?;
        Ok(UploadDir {
            root: root.to_owned(),
        })
    }

    pub(crate) fn user_dir(&self, user: &UserId) -> PathBuf {
        self.root.join(format!("u-{user}"))
    }

    pub(crate) fn part(&self, user: &UserId, upload: UploadId) -> PathBuf {
        self.user_dir(user).join(format!("{upload}.{PART_EXT}"))
    }

    pub(crate) fn meta(&self, user: &UserId, upload: UploadId) -> PathBuf {
        self.user_dir(user).join(format!("{upload}.{META_EXT}"))
    }

    /// The upload's meta, or `None` if there is no such upload.
    pub(crate) fn read_meta(
        &self,
        user: &UserId,
        upload: UploadId,
    ) -> Result<Option<UploadMeta>, MediaError> {
        let mut bytes = Vec::new();
        match File::open(self.meta(user, upload)) {
            // Bounded: a meta file is under 400 bytes; a bigger one is corrupt anyway.
            Ok(file) => file.take(1024).read_to_end(&mut bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        UploadMeta::decode(&bytes).map(Some)
    }

    /// Length of the upload's part file (0 if it is missing).
    pub(crate) fn part_bytes(&self, user: &UserId, upload: UploadId) -> Result<u64, MediaError> {
        match fs::metadata(self.part(user, upload)) {
            Ok(metadata) => Ok(metadata.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the upload: an empty part file, then the meta (written to a temporary file and
    /// renamed, so a meta is always whole). The meta's presence is what makes the upload exist.
    pub(crate) fn create(&self, upload: UploadId, meta: &UploadMeta) -> Result<(), MediaError> {
        fs::create_dir_all(self.user_dir(&meta.owner))?;
        File::create(self.part(&meta.owner, upload))?;
        let path = self.meta(&meta.owner, upload);
        let temp = path.with_extension("meta.tmp");
        let mut file = File::create(&temp)?;
        file.write_all(&meta.encode())?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        Ok(())
    }

    /// Removes the upload's files (what is already gone is fine).
    pub(crate) fn remove(&self, user: &UserId, upload: UploadId) -> Result<(), MediaError> {
        for path in [self.meta(user, upload), self.part(user, upload)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The newest modification time of the upload's files (the epoch if there are none).
    fn last_modified(&self, user: &UserId, upload: UploadId) -> Result<SystemTime, MediaError> {
        let mut newest = SystemTime::UNIX_EPOCH;
        for path in [self.meta(user, upload), self.part(user, upload)] {
            match fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(modified) => newest = newest.max(modified),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(newest)
    }

    /// Number of uploads `user` has in progress (their meta files).
    pub(crate) fn count(&self, user: &UserId) -> Result<usize, MediaError> {
        let entries = match fs::read_dir(self.user_dir(user)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut count = 0;
        for entry in entries.take(GC_ENTRIES_PER_SWEEP_MAX) {
            let name = entry?.file_name();
            if Path::new(&name).extension().is_some_and(|e| e == META_EXT) {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Deletes uploads whose files were all last modified more than `ttl` before `now`, and stray
    /// files (temporary metas, leftovers) as old. An upload whose lock is held is in use and
    /// skipped. Returns the number of uploads removed. Blocking.
    pub(crate) fn sweep(
        &self,
        slots: &Slots,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<usize, MediaError> {
        let is_old =
            |modified: SystemTime| now.duration_since(modified).is_ok_and(|age| age >= ttl);
        let mut seen = 0usize;
        let mut removed = 0usize;
        for user_entry in fs::read_dir(&self.root)? {
            let user_entry = user_entry?;
            seen += 1;
            if seen > GC_ENTRIES_PER_SWEEP_MAX {
                break;
            }
            let name = user_entry.file_name();
            let Some(user) = name
                .to_str()
                .and_then(|n| n.strip_prefix("u-"))
                .and_then(|n| n.parse::<UserId>().ok())
            else {
                continue;
            };
            let dir = user_entry.path();
            // Newest modification per upload, and files that belong to no upload.
            let mut uploads: HashMap<UploadId, SystemTime> = HashMap::new();
            let mut strays: Vec<PathBuf> = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                seen += 1;
                if seen > GC_ENTRIES_PER_SWEEP_MAX {
                    break;
                }
                let modified = entry.metadata()?.modified()?;
                let path = entry.path();
                let stem = path.file_stem().and_then(|s| s.to_str());
                let ext = path.extension().and_then(|e| e.to_str());
                match (stem.and_then(|s| s.parse::<UploadId>().ok()), ext) {
                    (Some(upload), Some(PART_EXT | META_EXT)) => {
                        let newest = uploads.entry(upload).or_insert(modified);
                        *newest = (*newest).max(modified);
                    }
                    _ if is_old(modified) => strays.push(path),
                    _ => {}
                }
            }
            for (upload, modified) in uploads {
                if !is_old(modified) {
                    continue;
                }
                let key = (user.clone(), upload);
                let Some(slot) = slots.acquire(&key) else {
                    // Every slot is busy: try again at the next sweep.
                    continue;
                };
                // Held while deleting, so no stream or finish works on the files meanwhile;
                // whoever waits for the lock next finds the upload gone.
                let Ok(_guard) = slot.state.try_lock() else {
                    continue;
                };
                // A stream may have written between the listing and the lock.
                if !is_old(self.last_modified(&user, upload)?) {
                    continue;
                }
                self.remove(&user, upload)?;
                slots.forget(&key);
                removed += 1;
            }
            for path in strays {
                let _ = fs::remove_file(path);
            }
            // Only an old, empty directory goes: a new upload touches its directory first.
            if fs::metadata(&dir)
                .and_then(|m| m.modified())
                .is_ok_and(is_old)
            {
                let _ = fs::remove_dir(&dir);
            }
        }
        Ok(removed)
    }
}

/// SHA-256 of a part's bytes so far, kept between the streams of an upload so `FinishUpload`
/// does not read the file again (it does when the node restarted or the slot was evicted).
pub(crate) struct RunningHash {
    context: Context,
    bytes: u64,
}

impl std::fmt::Debug for RunningHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningHash")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl RunningHash {
    pub(crate) fn new() -> RunningHash {
        RunningHash {
            context: Context::new(&SHA256),
            bytes: 0,
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.context.update(data);
        self.bytes += data.len() as u64;
    }

    pub(crate) fn finish(self) -> MediaId {
        let digest = self.context.finish();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        MediaId::from_digest(&bytes)
    }
}

/// SHA-256 of a whole file, read in [`WRITE_BUFFER_BYTES`] pieces. Blocking.
pub(crate) fn hash_file(path: &Path) -> Result<(MediaId, u64), io::Error> {
    let mut file = File::open(path)?;
    let mut hash = RunningHash::new();
    let mut buffer = vec![0u8; WRITE_BUFFER_BYTES];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
    }
    let bytes = hash.bytes();
    Ok((hash.finish(), bytes))
}

/// Which upload a slot is for. Keyed by owner too: upload ids are only unique per user.
pub(crate) type SlotKey = (UserId, UploadId);

/// What an upload's lock protects.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    /// The hash of the part so far, if it is known without reading the file.
    pub(crate) hash: Option<RunningHash>,
}

/// The in-memory side of one upload: a lock that one stream (or the finishing request, or the GC)
/// holds while it touches the files, and the part's length for whoever waits for it to grow.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) state: Arc<tokio::sync::Mutex<SlotState>>,
    pub(crate) part_bytes: watch::Sender<u64>,
}

/// The slots of uploads in use, bounded: when full, slots nobody holds are evicted (losing only
/// their running hash); when all are held, new work is refused as busy.
#[derive(Debug)]
pub(crate) struct Slots {
    map: Mutex<HashMap<SlotKey, Arc<Slot>>>,
    max: usize,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// The slot of `key`, created if needed; `None` when every slot is in use.
    pub(crate) fn acquire(&self, key: &SlotKey) -> Option<Arc<Slot>> {
        // Held only for map operations, never across an await.
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = map.get(key) {
            return Some(slot.clone());
        }
        if map.len() >= self.max {
            map.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        if map.len() >= self.max {
            return None;
        }
        let slot = Arc::new(Slot {
            state: Arc::new(tokio::sync::Mutex::new(SlotState::default())),
            part_bytes: watch::Sender::new(0),
        });
        map.insert(key.clone(), slot.clone());
        Some(slot)
    }

    /// Drops the slot of an upload that is finished or removed.
    pub(crate) fn forget(&self, key: &SlotKey) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Appends one stream's bytes to a part file, holding the upload's lock until dropped or closed.
#[derive(Debug)]
pub(crate) struct UploadWriter {
    guard: OwnedMutexGuard<SlotState>,
    slot: Arc<Slot>,
    /// `None` only while a blocking write has it.
    file: Option<File>,
    hash: Option<RunningHash>,
    buffer: Vec<u8>,
    /// Bytes in the part file (written, not counting the buffer).
    part_bytes: u64,
    /// The part may grow to this length on this stream.
    limit_bytes: u64,
}

impl UploadWriter {
    /// A writer for a part of `part_bytes` bytes that may grow by `allowance` on this stream.
    pub(crate) fn new(
        mut guard: OwnedMutexGuard<SlotState>,
        slot: Arc<Slot>,
        file: File,
        part_bytes: u64,
        allowance: u64,
    ) -> UploadWriter {
        // The running hash continues only if it covers exactly the bytes on disk.
        let hash = match guard.hash.take() {
            Some(hash) if hash.bytes() == part_bytes => Some(hash),
            _ if part_bytes == 0 => Some(RunningHash::new()),
            _ => None,
        };
        UploadWriter {
            guard,
            slot,
            file: Some(file),
            hash,
            buffer: Vec::new(),
            part_bytes,
            limit_bytes: part_bytes.saturating_add(allowance),
        }
    }

    /// Takes bytes from the stream. Refuses (and writes nothing of) a piece that would pass the
    /// stream's allowance.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), MediaError> {
        let after = self.part_bytes + (self.buffer.len() + bytes.len()) as u64;
        if after > self.limit_bytes {
            return Err(MediaError::TooLarge {
                what: "upload stream",
                limit: self.limit_bytes,
            });
        }
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(WRITE_BUFFER_BYTES);
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is buffered and fsyncs it, then releases the lock. Called at the stream's end,
    /// and also when the stream broke: what arrived whole stays, for the resume.
    pub(crate) async fn close(mut self) -> Result<u64, MediaError> {
        self.flush().await?;
        if let Some(file) = self.file.take() {
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| MediaError::Io(io::Error::other(e)))??;
        }
        self.guard.hash = self.hash.take();
        Ok(self.part_bytes)
    }

    async fn flush(&mut self) -> Result<(), MediaError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let (Some(mut file), buffer) = (self.file.take(), std::mem::take(&mut self.buffer)) else {
            return Err(MediaError::Io(io::Error::other("part file is gone")));
        };
        let mut hash = self.hash.take();
        let (file, buffer, hash, written) = tokio::task::spawn_blocking(move || {
            let written = file.write_all(&buffer);
            if written.is_ok()
                && let Some(hash) = hash.as_mut()
            {
                hash.update(&buffer);
            }
            (file, buffer, hash, written)
        })
        .await
        .map_err(|e| MediaError::Io(io::Error::other(e)))?;
        // On failure the part may hold part of the buffer: its length on disk is the truth, and
        // the running hash is dropped so the finish reads the file.
        written?;
        self.part_bytes += buffer.len() as u64;
        self.file = Some(file);
        self.hash = hash;
        let mut buffer = buffer;
        buffer.clear();
        self.buffer = buffer;
        self.slot.part_bytes.send_replace(self.part_bytes);
        Ok(())
    }
}
