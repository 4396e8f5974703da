//! The error type of the write-ahead log.

use std::path::PathBuf;

/// The result type of the write-ahead log.
pub type Result<T> = std::result::Result<T, Error>;

/// An operating condition the caller must handle. Broken internal invariants
/// are not errors: they panic with a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    #[error("wal io: {op} {path}: {source}")]
    Io {
        /// What the log was doing (`"open"`, `"write"`, `"sync"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk do not validate: a CRC mismatch, a bad header, an
    /// impossible record, or damage outside the tolerated torn tail.
    #[error("wal corruption in segment {segment} at offset {offset}: {reason}")]
    Corruption {
        /// Sequence number of the damaged segment (its file name, in hex).
        segment: u64,
        /// Byte offset of the damaged record (or header) inside the segment.
        offset: u64,
        /// What did not validate.
        reason: String,
    },
    /// Another process (or another `Wal` in this process) holds the directory lock.
    #[error("wal directory {dir} is locked by another process")]
    Locked {
        /// The locked directory.
        dir: PathBuf,
    },
    /// A write or fsync failed earlier; the log refuses all further work
    /// (an fsync is never retried: the kernel may have dropped the dirty pages).
    #[error("wal poisoned by an earlier failure: {reason}")]
    Poisoned {
        /// The failure that poisoned the log.
        reason: String,
    },
    /// One entry is larger than `WalOptions::entry_bytes_max`.
    #[error("entry {index} is {bytes} bytes, the limit is {max}")]
    EntryTooLarge {
        /// Index of the entry.
        index: u64,
        /// Its size as counted by [`tandem_raft::Entry::size_bytes`].
        bytes: u64,
        /// The configured limit.
        max: u64,
    },
    /// One submission encodes to more than `WalOptions::batch_bytes_max`.
    #[error("submission encodes to {bytes} bytes, the limit is {max}")]
    BatchTooLarge {
        /// Encoded size of the submission.
        bytes: u64,
        /// The configured limit.
        max: u64,
    },
    /// The requested index is below the first index (compacted away).
    #[error("index {index} is compacted, first index is {first_index}")]
    Compacted {
        /// The requested index.
        index: u64,
        /// The first index still in the log.
        first_index: u64,
    },
    /// The requested index is above the last index.
    #[error("index {index} is unavailable, last index is {last_index}")]
    Unavailable {
        /// The requested index.
        index: u64,
        /// The last index of the log.
        last_index: u64,
    },
    /// The caller passed something the log cannot accept (non-contiguous
    /// entries, an append leaving a gap, `lo > hi`, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `WalOptions::validate` rejected the options.
    #[error("invalid wal options: {0}")]
    InvalidOptions(String),
    /// The log was closed while the request was pending.
    #[error("wal closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(segment: u64, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            segment,
            offset,
            reason: reason.into(),
        }
    }

    /// A copy for broadcasting one failure to many waiters. `Io` loses its
    /// source type (kept as text); every other variant is copied exactly.
    #[must_use]
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Corruption {
                segment,
                offset,
                reason,
            } => Error::corruption(*segment, *offset, reason.clone()),
            Error::Locked { dir } => Error::Locked { dir: dir.clone() },
            Error::Poisoned { reason } => Error::Poisoned {
                reason: reason.clone(),
            },
            Error::EntryTooLarge { index, bytes, max } => Error::EntryTooLarge {
                index: *index,
                bytes: *bytes,
                max: *max,
            },
            Error::BatchTooLarge { bytes, max } => Error::BatchTooLarge {
                bytes: *bytes,
                max: *max,
            },
            Error::Compacted { index, first_index } => Error::Compacted {
                index: *index,
                first_index: *first_index,
            },
            Error::Unavailable { index, last_index } => Error::Unavailable {
                index: *index,
                last_index: *last_index,
            },
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::InvalidOptions(s) => Error::InvalidOptions(s.clone()),
            Error::Closed => Error::Closed,
        }
    }
}

impl From<Error> for tandem_raft::StorageError {
    /// `Compacted` and `Unavailable` map to their raft counterparts so the
    /// engine's `Storage` implementation is a thin wrapper; everything else
    /// travels as `Other`.
    fn from(e: Error) -> Self {
        match e {
            Error::Compacted { .. } => tandem_raft::StorageError::Compacted,
            Error::Unavailable { .. } => tandem_raft::StorageError::Unavailable,
            other => tandem_raft::StorageError::Other(Box::new(other)),
        }
    }
}

impl From<Error> for tandem_raft::Error {
    fn from(e: Error) -> Self {
        tandem_raft::Error::Store(e.into())
    }
}
