//! Errors of the state machine and the disk storage.

use std::path::PathBuf;

use thiserror::Error;

/// The result type of the state machine.
pub type Result<T> = std::result::Result<T, Error>;

/// An operating condition of the state machine.
///
/// Errors raised while applying committed entries ([`Error::CorruptCommand`],
/// [`Error::UnknownCommandVersion`], [`Error::CorruptConfChange`], a sled or IO
/// failure) stop the replica: the state machine refuses every later `apply`
/// with [`Error::Stopped`], because continuing past an entry it could not
/// apply would make this replica diverge silently from the others.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// sled reported an error (IO, corruption, unsupported).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A file-system operation on the state machine's directory failed.
    #[error("io error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The payload of a committed entry is not a valid command.
    #[error("corrupt command in entry {index}: {reason}")]
    CorruptCommand {
        /// The log index of the entry (0 when decoding outside the log).
        index: u64,
        /// What the decoder found.
        reason: String,
    },
    /// The payload of a committed entry starts with a version byte this
    /// build does not know (written by a newer version, or garbage).
    #[error("entry {index}: unknown command format version {version}")]
    UnknownCommandVersion {
        /// The log index of the entry (0 when decoding outside the log).
        index: u64,
        /// The version byte found.
        version: u8,
    },
    /// The payload of a committed membership-change entry cannot be decoded.
    #[error("corrupt conf change in entry {index}: {reason}")]
    CorruptConfChange {
        /// The log index of the entry.
        index: u64,
        /// What the decoder found.
        reason: String,
    },
    /// A metadata record of the state machine cannot be decoded.
    #[error("corrupt state machine metadata {key}: {reason}")]
    CorruptMetadata {
        /// Which record.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The on-disk format of the state machine is not the one this build writes.
    #[error("state machine format version {found} is not supported (this build: {supported})")]
    FormatVersion {
        /// The version found on disk (0: data without a version record).
        found: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// A key, value or batch exceeds its configured limit (checked when proposing).
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// Which limit: `key bytes`, `value bytes`, `batch operations`, `command bytes`.
        what: &'static str,
        /// The offending size.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Entries handed to `apply` do not continue the applied index.
    #[error("entries are not contiguous with the applied index: expected {expected}, got {got}")]
    Gap {
        /// The index that had to come next.
        expected: u64,
        /// The index that came.
        got: u64,
    },
    /// An earlier apply failed; the replica is stopped and needs an operator.
    #[error("state machine stopped after a failed apply: {0}")]
    Stopped(String),
    /// Log compaction was asked to pass the applied index that is durable in sled.
    #[error("cannot compact the log to {index}: only {durable} is durably applied")]
    CompactBeyondDurable {
        /// The requested compaction index.
        index: u64,
        /// The durable applied index.
        durable: u64,
    },
    /// The write-ahead log reported an error.
    #[error("wal: {0}")]
    Wal(#[from] tandem_wal::Error),
    /// The log was compacted past the state machine's applied index: the
    /// entries in between are lost (e.g. the state machine directory was
    /// replaced by an older copy).
    #[error(
        "log compacted to {compacted} but the state machine applied only {applied}: \
         entries {}..={compacted} are lost",
        applied + 1
    )]
    LogCompactedPastApplied {
        /// The log's compaction point.
        compacted: u64,
        /// The state machine's applied index.
        applied: u64,
    },
    /// The state machine applied entries the log no longer holds (e.g. the
    /// log was written without fsync and lost its tail).
    #[error("state machine applied {applied} but the log ends at {last}")]
    LogBehindApplied {
        /// The state machine's applied index.
        applied: u64,
        /// The log's last index.
        last: u64,
    },
    /// A configuration value is invalid; the message names the field.
    #[error("invalid state machine options: {0}")]
    Config(String),
    /// Building, reading or installing a snapshot failed.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_entry_and_the_cause() {
        let e = Error::UnknownCommandVersion {
            index: 17,
            version: 9,
        };
        assert_eq!(e.to_string(), "entry 17: unknown command format version 9");
        let e = Error::CompactBeyondDurable {
            index: 10,
            durable: 4,
        };
        assert!(e.to_string().contains("only 4 is durably applied"));
    }
}
