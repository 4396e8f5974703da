//! The narrow file-system interface the log does all its IO through, and
//! [`StdFs`], the real implementation.
//!
//! The log needs only positional reads and writes on preallocated files,
//! `fdatasync`, and a handful of directory operations. Keeping the trait this
//! small lets [`crate::SimFs`] model a disk exactly: which bytes are durable,
//! which are lost in a crash, where a write tears.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs2::FileExt as _;
use parking_lot::RwLock;

/// A file the log reads and writes by position.
#[allow(clippy::len_without_is_empty)] // `len` is a syscall result, not a collection size
pub trait WalFile: Send + Sync + Debug {
    /// Fill `buf` from `offset`; reading past the end is an error
    /// (`UnexpectedEof`).
    ///
    /// # Errors
    /// IO failures.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write all of `buf` at `offset`, extending the file if needed. Not
    /// durable until [`WalFile::sync_data`] returns.
    ///
    /// # Errors
    /// IO failures, disk full.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Write `bufs` back to back from `offset`, exactly as [`WalFile::write_at`]
    /// of their concatenation would (the same durability, and a crash may
    /// tear it at any byte the same way). The default concatenates; a real
    /// file hands the pieces to the kernel in one vectored write
    /// (`pwritev`), which saves copying them together.
    ///
    /// # Errors
    /// As [`WalFile::write_at`].
    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.write_at(offset, &bufs.concat())
    }
    /// Make the file's data (and the metadata needed to read it) durable:
    /// `fdatasync`.
    ///
    /// # Errors
    /// IO failures. After an error the log is poisoned: it never retries.
    fn sync_data(&self) -> io::Result<()>;
    /// Ensure the file is at least `len` bytes, new bytes reading as zero,
    /// with the blocks reserved (`fallocate`) so later writes do not
    /// allocate.
    ///
    /// # Errors
    /// IO failures, disk full.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Current length in bytes.
    ///
    /// # Errors
    /// IO failures.
    fn len(&self) -> io::Result<u64>;
}

/// Held while a directory is locked; dropping it releases the lock.
pub trait DirLock: Send + Sync + Debug {}

/// The directory operations the log needs.
pub trait FileSystem: Send + Sync + Debug {
    /// Create `dir` and its parents if missing.
    ///
    /// # Errors
    /// IO failures.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files in `dir`.
    ///
    /// # Errors
    /// IO failures, a missing directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Open an existing file for reading and writing.
    ///
    /// # Errors
    /// `NotFound`, IO failures.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>>;
    /// Create a new, empty file; fails with `AlreadyExists` if it exists.
    ///
    /// # Errors
    /// IO failures.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WalFile>>;
    /// Rename a file (atomic replace). Durable after [`FileSystem::sync_dir`].
    ///
    /// # Errors
    /// IO failures.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file. Durable after [`FileSystem::sync_dir`]; open handles
    /// stay readable.
    ///
    /// # Errors
    /// IO failures.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Make creations, renames and removals in `dir` durable.
    ///
    /// # Errors
    /// IO failures.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Take the exclusive lock of `dir` (a `LOCK` file inside it). Fails with
    /// `WouldBlock` if someone else holds it.
    ///
    /// # Errors
    /// `WouldBlock` when locked, IO failures.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// The real file system: `std::fs`, `pwrite`/`pread`, `fdatasync`,
/// `fallocate` and `flock` through `fs2`, reads through a memory map.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl StdFs {
    /// A shareable handle.
    #[must_use]
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(StdFs)
    }
}

/// Most buffers one `pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

#[derive(Debug)]
struct StdFile {
    file: File,
    /// A read-only map of the first `map.len()` bytes. Segments are
    /// preallocated to their final size before use, so the map is made once
    /// the file has its full length and only replaced if the file grows.
    map: RwLock<Option<memmap2::Mmap>>,
}

impl StdFile {
    fn new(file: File) -> Self {
        StdFile {
            file,
            map: RwLock::new(None),
        }
    }

    #[allow(unsafe_code)]
    fn remap(&self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the map is read-only, and the mapped file is only modified
        // by this process, which holds the directory lock: the log never
        // shrinks a file (torn tails are zeroed in place, not truncated) and
        // only removes whole files, which keeps the pages of an existing map
        // valid. Bytes are read only at offsets the log wrote or validated.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(len as usize)
                .map(&self.file)?
        };
        *self.map.write() = Some(map);
        Ok(())
    }
}

impl WalFile for StdFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        // Large reads (recovery scans whole segments) use pread: one copy
        // out of the page cache with kernel readahead, instead of a page
        // fault per 4 KiB of a fresh map.
        if buf.len() < 256 * 1024 {
            let map = self.map.read();
            if let Some(m) = map.as_ref() {
                if end <= m.len() as u64 {
                    buf.copy_from_slice(&m[offset as usize..end as usize]);
                    return Ok(());
                }
            }
        }
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> = bufs
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| io::IoSlice::new(b))
            .collect();
        let mut left: &mut [io::IoSlice<'_>] = &mut slices;
        let mut at = offset;
        while !left.is_empty() {
            let n = left.len().min(IOV_MAX);
            match rustix::io::pwritev(&self.file, &left[..n], at) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    at += written as u64;
                    io::IoSlice::advance_slices(&mut left, written);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.file.metadata()?.len() < len {
            match self.file.allocate(len) {
                Ok(()) => {}
                // File systems without fallocate get a sparse file: appends
                // then allocate as they go, which is slower but correct.
                Err(e) if e.raw_os_error() == Some(95) => {} // EOPNOTSUPP
                Err(e) => return Err(e),
            }
            if self.file.metadata()?.len() < len {
                self.file.set_len(len)?;
            }
        }
        self.remap()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

#[derive(Debug)]
struct StdLock {
    _file: File,
}

impl DirLock for StdLock {}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let f = StdFile::new(file);
        f.remap()?;
        Ok(Arc::new(f))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile::new(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let path: PathBuf = dir.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock_exclusive() {
            Ok(()) => Ok(Box::new(StdLock { _file: file })),
            Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
                Err(io::Error::new(io::ErrorKind::WouldBlock, e))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vectored write lands exactly as a write of the concatenation: more
    /// pieces than one `pwritev` takes, empty pieces, at an offset, over
    /// bytes already there.
    #[test]
    fn vectored_writes_equal_writing_the_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let file = fs.create(&dir.path().join("f")).unwrap();
        file.allocate(1 << 20).unwrap();
        file.write_at(0, &vec![0xee; 1 << 20]).unwrap();
        let pieces: Vec<Vec<u8>> = (0..3 * IOV_MAX + 7)
            .map(|i| vec![(i % 251) as u8; i % 13])
            .collect();
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let offset = 4093;
        file.write_vectored_at(offset, &refs).unwrap();
        let expected: Vec<u8> = pieces.concat();
        assert!(expected.len() > 4096, "the pieces span pages");
        let mut back = vec![0u8; expected.len() + 2];
        file.read_at(offset - 1, &mut back).unwrap();
        assert_eq!(back[0], 0xee, "the byte before is untouched");
        assert_eq!(&back[1..=expected.len()], &expected[..]);
        assert_eq!(
            back[expected.len() + 1],
            0xee,
            "the byte after is untouched"
        );
        // Nothing at all to write is a no-op.
        file.write_vectored_at(0, &[&[], &[]]).unwrap();
        let mut first = [0u8; 1];
        file.read_at(0, &mut first).unwrap();
        assert_eq!(first[0], 0xee);
    }
}
