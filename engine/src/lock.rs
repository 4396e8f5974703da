//! The `LOCK` file that makes a replica directory single-owner.
//!
//! Two handles writing one WAL and one sled tree would corrupt both, so the
//! first open takes an exclusive `flock` (fs2) on `<dir>/LOCK` and a second
//! open — from another process or from this one — fails with
//! [`Error::Locked`]. The lock is released when the [`DirLock`] drops or the
//! process dies; the file itself stays (it only records the last owner's pid).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::error::{Error, Result};

/// The name of the lock file inside a replica directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive hold on a replica directory; released on drop.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Create `dir` if needed and lock it.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle holds it; [`Error::Io`] if the
    /// directory or file cannot be created.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if let Err(e) = FileExt::try_lock_exclusive(&file) {
            if e.kind() == fs2::lock_contended_error().kind()
                || e.kind() == std::io::ErrorKind::WouldBlock
            {
                return Err(Error::Locked(dir.to_path_buf()));
            }
            return Err(Error::io(&path, e));
        }
        // The pid is informational (for `tandem status`); failing to write it
        // does not weaken the lock, so errors are ignored after logging.
        let written = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not record pid in LOCK");
        }
        Ok(DirLock { file, path })
    }

    /// True if some handle currently holds `dir`'s lock (probes by trying to take it).
    ///
    /// # Errors
    /// [`Error::Io`] if the lock file exists but cannot be opened.
    pub fn is_held(dir: &Path) -> Result<bool> {
        let path = dir.join(LOCK_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(&path, e)),
        };
        match FileExt::try_lock_shared(&file) {
            Ok(()) => {
                let _ = FileExt::unlock(&file);
                Ok(false)
            }
            Err(_) => Ok(true),
        }
    }

    /// The lock file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the file releases the flock anyway; unlocking first makes
        // the release explicit and immediate even if the fd were duplicated.
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_of_a_directory_fails_until_the_first_drops() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node-1");
        let first = DirLock::acquire(&dir).unwrap();
        assert!(DirLock::is_held(&dir).unwrap());
        match DirLock::acquire(&dir) {
            Err(Error::Locked(p)) => assert_eq!(p, dir),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        assert!(!DirLock::is_held(&dir).unwrap());
        let again = DirLock::acquire(&dir).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }
}
