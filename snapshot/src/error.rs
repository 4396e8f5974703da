//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while building, reading, transferring or
/// installing a snapshot.
///
/// Operating conditions (IO failures, corrupt bytes, limits exceeded) are
/// returned as values; broken internal invariants panic instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system IO call failed.
    #[error("snapshot io error at {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes that should hold a manifest or a chunk do not decode, or a
    /// checksum does not match. `what` names the structure and the field.
    #[error("snapshot corruption: {what}")]
    Corruption {
        /// Human-readable description of what failed to validate.
        what: String,
    },
    /// A configured or format limit was exceeded (key, value, chunk or
    /// before-image bytes).
    #[error("snapshot limit exceeded: {what} is {actual}, limit {limit}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The offending size.
        actual: u64,
        /// The limit.
        limit: u64,
    },
    /// Keys handed to a [`crate::SnapshotWriter`] were not strictly increasing.
    #[error("snapshot keys out of order at pair {pair_no}")]
    KeysOutOfOrder {
        /// Zero-based number of the offending pair.
        pair_no: u64,
    },
    /// A configuration value is invalid.
    #[error("invalid snapshot config: {0}")]
    InvalidConfig(String),
    /// The operation needs a state the object is not in (for example a chunk
    /// for a transfer that was never started).
    #[error("snapshot: {0}")]
    InvalidState(String),
    /// The live state iterator fed to a [`crate::PointInTimeIter`] failed.
    #[error("live state iterator failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A failure injected by a test through [`crate::stage::CrashPoint`].
    #[error("injected crash at {0:?}")]
    InjectedCrash(crate::stage::CrashPoint),
}

impl Error {
    /// Shorthand for [`Error::Corruption`].
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Error::Corruption { what: what.into() }
    }

    /// Returns a closure that wraps an [`std::io::Error`] with a path, for
    /// `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
