//! Making sled's files truly durable.
//!
//! sled 0.34 ends `flush()` with `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)` on its log file. That pushes dirty pages to the device but
//! neither flushes the device's volatile write cache nor persists file
//! metadata (e.g. the file size after growth), so a power loss can drop
//! "flushed" writes. Blob files (large values and large tree nodes, in
//! `blobs/`) are written with plain `write` and never synced by sled at all,
//! and nothing fsyncs the directories that name new blobs.
//!
//! After a sled flush, [`FileSyncer::sync`] therefore calls `fdatasync` on
//! the log file (`db`), the config file (`conf`), every blob file not synced
//! before at its current length, and `fsync` on `blobs/` and the state
//! machine directory. Snapshot files (`snap.*`) are written by sled with
//! `sync_all` and renamed into place, so only the directory sync is needed
//! for them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// Syncs the files of one sled directory, remembering which blob files are
/// already durable (blobs are written once and never modified, so a blob
/// synced at its final length never needs another sync).
#[derive(Debug)]
pub(crate) struct FileSyncer {
    dir: PathBuf,
    /// Blob file name → length when it was last synced.
    synced_blobs: HashMap<OsString, u64>,
}

impl FileSyncer {
    pub(crate) fn new(dir: &Path) -> Self {
        FileSyncer {
            dir: dir.to_path_buf(),
            synced_blobs: HashMap::new(),
        }
    }

    /// `fdatasync` everything sled may have written since the last call.
    /// Call only after `sled::Db::flush` returned: the flush guarantees the
    /// writes reached the files; this makes them survive a power loss.
    pub(crate) fn sync(&mut self) -> Result<()> {
        sync_data(&self.dir.join("db"))?;
        sync_data(&self.dir.join("conf"))?;
        let blobs = self.dir.join("blobs");
        let mut present = Vec::new();
        match std::fs::read_dir(&blobs) {
            Ok(rd) => {
                for entry in rd {
                    let entry = entry.map_err(|e| Error::io(&blobs, e))?;
                    let name = entry.file_name();
                    // The length is read BEFORE the sync: if sled is still
                    // writing the blob, its length changes after this point
                    // and the next call syncs it again.
                    let len = match entry.metadata() {
                        Ok(m) => m.len(),
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io(entry.path(), e)),
                    };
                    if self.synced_blobs.get(&name) != Some(&len) {
                        sync_data(&entry.path())?;
                        self.synced_blobs.insert(name.clone(), len);
                    }
                    present.push(name);
                }
                // Forget blobs sled has deleted, so the map stays bounded.
                if self.synced_blobs.len() > present.len() {
                    let keep: std::collections::HashSet<_> = present.into_iter().collect();
                    self.synced_blobs.retain(|name, _| keep.contains(name));
                }
                sync_dir(&blobs)?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&blobs, e)),
        }
        sync_dir(&self.dir)
    }
}

/// `fdatasync` one file; a file that vanished (sled removed it) is fine.
fn sync_data(path: &Path) -> Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_data().map_err(|e| Error::io(path, e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `fsync` a directory so the names it holds are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_blobs_once_and_forgets_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/1"), b"blob").unwrap();
        let mut syncer = FileSyncer::new(dir.path());
        syncer.sync().unwrap();
        assert_eq!(syncer.synced_blobs.get(&OsString::from("1")), Some(&4));
        std::fs::write(dir.path().join("blobs/1"), b"blob grew").unwrap();
        std::fs::write(dir.path().join("blobs/2"), b"b").unwrap();
        syncer.sync().unwrap();
        assert_eq!(syncer.synced_blobs.get(&OsString::from("1")), Some(&9));
        std::fs::remove_file(dir.path().join("blobs/1")).unwrap();
        syncer.sync().unwrap();
        assert_eq!(syncer.synced_blobs.len(), 1);
        assert!(syncer.synced_blobs.contains_key(&OsString::from("2")));
    }
}
