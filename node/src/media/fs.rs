//! The default [`BlobStore`]: one file per blob at `<root>/<first 2 hex digits>/<sha256>`.
//!
//! A blob enters the store by `rename` of a file that is already complete and fsynced, followed by
//! an fsync of the directory, so a reader sees either no blob or the whole blob, also after a
//! crash. Blobs are immutable and named by their content: inserting one that exists is a no-op.
//! The store keeps nothing but the bytes; a blob's type is sniffed again from its first bytes,
//! which gives the type it was stored with (sniffing is a pure function of the prefix).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use piazza_protocol::{MediaId, MediaInfo};

use super::sniff::{self, SNIFF_BYTES};
use super::{BlobError, BlobStore};

/// Prefix of temporary files in the store's directories (a copy in progress when the source is on
/// another file system). Never a valid blob name, which is hex only.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// The filesystem blob store.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: &Path) -> Result<FsBlobStore, BlobError> {
        fs::create_dir_all(root)?;
        Ok(FsBlobStore {
            root: root.to_owned(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, id: &MediaId) -> PathBuf {
        let hex = id.as_str();
        self.root.join(&hex[..2]).join(hex)
    }
}

impl BlobStore for FsBlobStore {
    fn stat(&self, id: &MediaId) -> Result<Option<MediaInfo>, BlobError> {
        let mut file = match File::open(self.path(id)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size_bytes = file.metadata()?.len();
        let prefix = read_prefix(&mut file)?;
        let complete = prefix.len() as u64 == size_bytes;
        Ok(Some(MediaInfo {
            id: id.clone(),
            size_bytes,
            mime: sniff::sniff(&prefix, complete).to_owned(),
        }))
    }

    fn insert(&self, id: &MediaId, source: &Path, _mime: &str) -> Result<(), BlobError> {
        let target = self.path(id);
        let dir = self.root.join(&id.as_str()[..2]);
        fs::create_dir_all(&dir)?;
        match fs::rename(source, &target) {
            Ok(()) => {}
            // EXDEV: the source is on another file system. Copy to a temporary file beside the
            // target, fsync it, then rename, so the blob still appears whole or not at all.
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let temp = dir.join(format!(
                    "{TEMP_PREFIX}{}-{:016x}",
                    id.as_str(),
                    crate::node::random_u64()
                ));
                let copied = copy_synced(source, &temp).and_then(|()| fs::rename(&temp, &target));
                if let Err(e) = copied {
                    let _ = fs::remove_file(&temp);
                    return Err(e.into());
                }
                fs::remove_file(source)?;
            }
            Err(e) => return Err(e.into()),
        }
        // The rename is durable only once the directory entry is.
        File::open(&dir)?.sync_all()?;
        Ok(())
    }

    fn open(&self, id: &MediaId, start: u64, end: u64) -> Result<Box<dyn Read + Send>, BlobError> {
        let mut file = match File::open(self.path(id)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound),
            Err(e) => return Err(e.into()),
        };
        file.seek(SeekFrom::Start(start))?;
        Ok(Box::new(file.take(end.saturating_sub(start))))
    }
}

/// The first [`SNIFF_BYTES`] bytes of a file (fewer if it is shorter).
pub(crate) fn read_prefix(file: &mut File) -> Result<Vec<u8>, io::Error> {
    let mut prefix = Vec::with_capacity(SNIFF_BYTES);
    file.take(SNIFF_BYTES as u64).read_to_end(&mut prefix)?;
    Ok(prefix)
}

fn copy_synced(source: &Path, target: &Path) -> Result<(), io::Error> {
    let mut from = File::open(source)?;
    let mut to = File::create(target)?;
    io::copy(&mut from, &mut to)?;
    to.flush()?;
    to.sync_all()
}
