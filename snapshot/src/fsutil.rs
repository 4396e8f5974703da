//! The few durable file-system moves everything else is built from.
//!
//! Disk assumptions (see `docs/snapshot.md`): `rename` within a directory is
//! atomic; a file's contents are durable after `fsync` of the file; a new
//! name (create or rename) is durable after `fsync` of its directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the manifest file inside a snapshot directory. A snapshot
/// directory is complete exactly when this file exists and decodes.
pub const MANIFEST_FILE: &str = "MANIFEST";

/// File name of chunk `chunk_no` inside a snapshot directory.
#[must_use]
pub fn chunk_file_name(chunk_no: u32) -> String {
    format!("chunk-{chunk_no:08}")
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(Error::io(dir))?;
    f.sync_all().map_err(Error::io(dir))
}

/// Writes `bytes` to `dir/name` and syncs the file (not the directory).
pub(crate) fn write_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let (f, path) = write_unsynced(dir, name, bytes)?;
    f.sync_all().map_err(Error::io(&path))
}

/// Writes `bytes` to `dir/name` without syncing; returns the open file so
/// the caller can sync it later.
pub(crate) fn write_unsynced(dir: &Path, name: &str, bytes: &[u8]) -> Result<(File, PathBuf)> {
    let path = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    f.write_all(bytes).map_err(Error::io(&path))?;
    Ok((f, path))
}

/// Replaces `dir/name` atomically with `bytes`: write `name.tmp`, fsync it,
/// rename over `name`, fsync `dir`. After a crash at any point, `name` holds
/// either its old contents (or is absent) or the new ones in full.
///
/// # Errors
/// [`Error::Io`] on any failed step; `name` is then unchanged or complete.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = format!("{name}.tmp");
    write_synced(dir, &tmp, bytes)?;
    let to = dir.join(name);
    fs::rename(dir.join(&tmp), &to).map_err(Error::io(&to))?;
    sync_dir(dir)
}

/// Reads a whole file that must not exceed `max_bytes`, checking the size
/// before allocating so a corrupt or hostile file cannot exhaust memory.
pub(crate) fn read_bounded(path: &Path, max_bytes: usize) -> Result<Vec<u8>> {
    let len = fs::metadata(path).map_err(Error::io(path))?.len();
    if len > max_bytes as u64 {
        return Err(Error::corrupt(format!(
            "{}: {len} bytes exceed the limit of {max_bytes}",
            path.display()
        )));
    }
    fs::read(path).map_err(Error::io(path))
}
