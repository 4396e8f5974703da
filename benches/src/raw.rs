//! The physical limit: a `write` + `fdatasync` loop into a preallocated file.
//!
//! The file is filled with zeros and synced before the first measured write,
//! so a later `fdatasync` never has to persist a size change or convert an
//! unwritten extent: it flushes data only. No log can do better on the same
//! disk with one sync per append, which makes this the denominator of the
//! WAL's single-appender target.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use tandem_raft::Entry;

use crate::logstore::LogStore;
use crate::{Error, Result};

/// Zero-filling is done in chunks of this size.
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// A preallocated file written in a loop of `pwrite` + `fdatasync`, wrapping
/// to the start when it is full (the bytes are then overwritten in place,
/// which keeps every sync a data-only sync).
#[derive(Debug)]
pub struct RawSyncFile {
    file: File,
    dir: std::path::PathBuf,
    mode: Prealloc,
    offset: u64,
    capacity_bytes: u64,
    bytes_written: u64,
    syncs: u64,
}

/// How the raw file is preallocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prealloc {
    /// Zeros written and synced: later syncs persist data only (the
    /// physical limit). A full file is overwritten from the start.
    Zeroed,
    /// `fallocate` only: blocks are reserved but marked unwritten, so the
    /// first write to each block changes extent metadata that `fdatasync`
    /// must commit through the file system's journal. A full file is
    /// replaced by a fresh one, so every write stays a first write. This is
    /// what a log that preallocates with `fallocate` pays.
    Fallocate,
}

impl RawSyncFile {
    /// Creates `dir/raw.log` with `capacity_bytes` of zeros, synced, and the
    /// directory synced, so nothing but data is left to persist later.
    ///
    /// # Errors
    /// `InvalidParameter` for a zero capacity; `Io` when the file cannot be
    /// created, filled or synced.
    pub fn create(dir: &Path, capacity_bytes: u64) -> Result<Self> {
        Self::create_with(dir, capacity_bytes, Prealloc::Zeroed)
    }

    /// Creates `dir/raw.log` preallocated the way `mode` says.
    ///
    /// # Errors
    /// As [`RawSyncFile::create`].
    pub fn create_with(dir: &Path, capacity_bytes: u64, mode: Prealloc) -> Result<Self> {
        if capacity_bytes == 0 {
            return Err(Error::InvalidParameter("raw file capacity is 0".into()));
        }
        let path = dir.join("raw.log");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        match mode {
            Prealloc::Zeroed => {
                let zeros = vec![0u8; FILL_CHUNK_BYTES];
                let mut left = capacity_bytes;
                while left > 0 {
                    let n = left.min(FILL_CHUNK_BYTES as u64);
                    file.write_all(&zeros[..n as usize])?;
                    left -= n;
                }
            }
            Prealloc::Fallocate => fs2::FileExt::allocate(&file, capacity_bytes)?,
        }
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        assert_eq!(file.metadata()?.len(), capacity_bytes, "preallocation");
        Ok(RawSyncFile {
            file,
            dir: dir.to_path_buf(),
            mode,
            offset: 0,
            capacity_bytes,
            bytes_written: 0,
            syncs: 0,
        })
    }

    /// Writes `buf` at the current offset and `fdatasync`s.
    ///
    /// # Errors
    /// `InvalidParameter` when `buf` is larger than the file; `Io` when the
    /// write or the sync fails.
    pub fn write_sync(&mut self, buf: &[u8]) -> Result<()> {
        let len = buf.len() as u64;
        if len > self.capacity_bytes {
            return Err(Error::InvalidParameter(format!(
                "write of {len} bytes into a raw file of {} bytes",
                self.capacity_bytes
            )));
        }
        if self.offset + len > self.capacity_bytes {
            if self.mode == Prealloc::Fallocate {
                // A fresh file keeps every write a first write.
                let (written, syncs) = (self.bytes_written, self.syncs);
                *self = RawSyncFile::create_with(&self.dir, self.capacity_bytes, self.mode)?;
                (self.bytes_written, self.syncs) = (written, syncs);
            }
            self.offset = 0;
        }
        self.file.write_all_at(buf, self.offset)?;
        // `sync_data` is fdatasync(2) on Linux.
        self.file.sync_data()?;
        self.offset += len;
        self.bytes_written += len;
        self.syncs += 1;
        assert!(self.offset <= self.capacity_bytes);
        Ok(())
    }

    /// Total bytes written since creation.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Number of `fdatasync` calls since creation.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Reads `len` bytes at `offset` (for tests of the baseline itself).
    ///
    /// # Errors
    /// `Io` when the read fails or the range is past the end.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// [`RawSyncFile`] as a [`LogStore`]: each append writes the entries'
/// payloads back to back with one write and one `fdatasync`. Concurrent
/// appenders take turns on a mutex, one sync each (no group commit: that is
/// what the logs under test add).
#[derive(Debug)]
pub struct RawSyncLog {
    inner: Mutex<(RawSyncFile, Vec<u8>)>,
    name: &'static str,
}

impl RawSyncLog {
    /// Creates the preallocated file in `dir`; see [`RawSyncFile::create`].
    ///
    /// # Errors
    /// As [`RawSyncFile::create`].
    pub fn create(dir: &Path, capacity_bytes: u64) -> Result<Self> {
        Self::create_with(dir, capacity_bytes, Prealloc::Zeroed)
    }

    /// Creates the file preallocated as `mode` says. The store is named
    /// `raw_fdatasync` (zeroed) or `raw_fallocate`.
    ///
    /// # Errors
    /// As [`RawSyncFile::create`].
    pub fn create_with(dir: &Path, capacity_bytes: u64, mode: Prealloc) -> Result<Self> {
        Ok(RawSyncLog {
            inner: Mutex::new((
                RawSyncFile::create_with(dir, capacity_bytes, mode)?,
                Vec::new(),
            )),
            name: match mode {
                Prealloc::Zeroed => "raw_fdatasync",
                Prealloc::Fallocate => "raw_fallocate",
            },
        })
    }

    /// Total payload bytes written.
    pub fn bytes_written(&self) -> u64 {
        self.lock().0.bytes_written()
    }

    /// Number of `fdatasync` calls.
    pub fn syncs(&self) -> u64 {
        self.lock().0.syncs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (RawSyncFile, Vec<u8>)> {
        // A panic while holding the lock already failed the benchmark.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogStore for RawSyncLog {
    fn name(&self) -> &str {
        self.name
    }

    fn append_durable(&self, _stream: u64, entries: Vec<Entry>) -> Result<()> {
        let mut guard = self.lock();
        let (file, buf) = &mut *guard;
        buf.clear();
        for e in &entries {
            buf.extend_from_slice(&e.data);
        }
        file.write_sync(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_preallocates_zeros_and_writes_land() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RawSyncFile::create(dir.path(), 3 * FILL_CHUNK_BYTES as u64 + 5).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("raw.log")).unwrap().len(),
            3 * FILL_CHUNK_BYTES as u64 + 5
        );
        assert_eq!(f.read_at(FILL_CHUNK_BYTES as u64, 4).unwrap(), vec![0; 4]);
        f.write_sync(b"abcd").unwrap();
        f.write_sync(b"ef").unwrap();
        assert_eq!(f.read_at(0, 6).unwrap(), b"abcdef");
        assert_eq!((f.bytes_written(), f.syncs()), (6, 2));
    }

    #[test]
    fn wraps_to_the_start_when_full_and_refuses_oversize() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RawSyncFile::create(dir.path(), 10).unwrap();
        f.write_sync(b"0123456").unwrap();
        f.write_sync(b"xyzw").unwrap(); // does not fit after 7: wraps
        assert_eq!(f.read_at(0, 10).unwrap(), b"xyzw456\0\0\0");
        assert!(matches!(
            f.write_sync(&[1u8; 11]),
            Err(Error::InvalidParameter(_))
        ));
        assert!(matches!(
            RawSyncFile::create(dir.path(), 0),
            Err(Error::InvalidParameter(_))
        ));
    }

    #[test]
    fn fallocated_file_is_replaced_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RawSyncFile::create_with(dir.path(), 8, Prealloc::Fallocate).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("raw.log")).unwrap().len(),
            8
        );
        f.write_sync(b"abcdef").unwrap();
        f.write_sync(b"xyz").unwrap(); // full: a fresh file, written from 0
        assert_eq!(f.read_at(0, 8).unwrap(), b"xyz\0\0\0\0\0");
        assert_eq!((f.bytes_written(), f.syncs()), (9, 2));
        let log = RawSyncLog::create_with(dir.path(), 8, Prealloc::Fallocate).unwrap();
        assert_eq!(log.name(), "raw_fallocate");
    }

    #[test]
    fn log_store_writes_payloads_back_to_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = RawSyncLog::create(dir.path(), 1 << 16).unwrap();
        let entries = (1..=3)
            .map(|i| Entry {
                index: i,
                term: 1,
                data: vec![i as u8; 5].into(),
                ..Entry::default()
            })
            .collect();
        log.append_durable(0, entries).unwrap();
        assert_eq!((log.bytes_written(), log.syncs()), (15, 1));
        let got = log.lock().0.read_at(0, 15).unwrap();
        assert_eq!(&got[..5], &[1; 5]);
        assert_eq!(&got[10..], &[3; 5]);
    }
}
