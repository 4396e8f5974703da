//! Opening sled when a handle of the same directory was just dropped.
//!
//! sled 0.34 releases its exclusive file lock only when the last of its
//! background threads drops its handle, a moment after the `Db` itself was
//! dropped. A reopen in the same process right after a close (a replica
//! restart, an install that replaces the database, a test) can therefore
//! find the lock still held. [`open_sled_retrying`] retries that one error
//! for a bounded time; every other error, and a lock another process keeps,
//! is returned.

use std::time::{Duration, Instant};

/// sled's message for a lock held by another handle (sled 0.34 has no
/// dedicated error variant for it).
const LOCK_HELD: &str = "could not acquire lock";

/// True if `e` is sled's "the directory is locked" error.
#[must_use]
pub fn is_sled_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains(LOCK_HELD))
}

/// `config.open()`, retried while sled reports its directory lock held, for
/// at most `wait` (pauses from 1 ms doubling to 50 ms).
///
/// # Errors
/// The last error of `config.open()`: the lock error once `wait` has passed,
/// any other error at once.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let config = sled::Config::new().path(dir.path());
/// let db = tandem::sm::open_sled_retrying(&config, std::time::Duration::from_secs(10)).unwrap();
/// drop(db);
/// // A reopen right away succeeds even if sled's threads still hold the lock.
/// let db = tandem::sm::open_sled_retrying(&config, std::time::Duration::from_secs(10)).unwrap();
/// # drop(db);
/// ```
pub fn open_sled_retrying(config: &sled::Config, wait: Duration) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(1);
    loop {
        match config.open() {
            Err(e) if is_sled_lock_error(&e) && Instant::now() < deadline => {
                tracing::debug!("sled lock still held; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_past_the_wait_is_returned_as_the_lock_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path());
        let held = config.open().unwrap();
        let err = open_sled_retrying(&config, Duration::from_millis(20)).unwrap_err();
        assert!(is_sled_lock_error(&err), "{err:?}");
        drop(held);
        // Once released (sled's threads drop their handles shortly), it opens.
        open_sled_retrying(&config, Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn other_errors_are_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let config = sled::Config::new().path(&file);
        let start = Instant::now();
        let err = open_sled_retrying(&config, Duration::from_secs(30)).unwrap_err();
        assert!(!is_sled_lock_error(&err), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
