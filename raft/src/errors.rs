//! Errors of the consensus core.

use thiserror::Error;

/// The result type of the consensus core.
pub type Result<T> = std::result::Result<T, Error>;

/// An operating condition the application must handle. Broken internal
/// invariants are not errors: they panic with a message.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage reported a condition (compaction, unavailability, ...).
    #[error("storage: {0}")]
    Store(#[from] StorageError),
    /// A local-only message type was passed to `step`.
    #[error("raft: cannot step raft local message")]
    StepLocalMsg,
    /// A response arrived from a node that is not in the configuration.
    #[error("raft: cannot step as peer not found")]
    StepPeerNotFound,
    /// The proposal was dropped: no leader, leadership transfer in progress,
    /// the node is not a member, or the uncommitted log is over its limit.
    #[error("raft: proposal dropped")]
    ProposalDropped,
    /// The configuration is invalid.
    #[error("invalid config: {0}")]
    ConfigInvalid(String),
    /// A membership change is malformed or not allowed now.
    #[error("conf change: {0}")]
    ConfChangeError(String),
    /// A snapshot request was dropped (e.g. the node is the leader or not replicating).
    #[error("raft: request snapshot dropped")]
    RequestSnapshotDropped,
    /// A node is already present in the given set.
    #[error("node {id} already exists in the {set} set")]
    Exists {
        /// The node.
        id: u64,
        /// Which set.
        set: &'static str,
    },
    /// A node is absent from the given set.
    #[error("node {id} does not exist in the {set} set")]
    NotExists {
        /// The node.
        id: u64,
        /// Which set.
        set: &'static str,
    },
    /// Bytes could not be decoded into a raft type.
    #[error("codec: {0}")]
    Codec(String),
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Error::Store(a), Error::Store(b)) => a == b,
            (Error::ConfigInvalid(a), Error::ConfigInvalid(b))
            | (Error::ConfChangeError(a), Error::ConfChangeError(b))
            | (Error::Codec(a), Error::Codec(b)) => a == b,
            (Error::Exists { id: a, set: s }, Error::Exists { id: b, set: t })
            | (Error::NotExists { id: a, set: s }, Error::NotExists { id: b, set: t }) => {
                a == b && s == t
            }
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// A condition reported by a [`crate::Storage`] implementation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The requested index is below the first index: compacted away.
    #[error("log compacted")]
    Compacted,
    /// The requested index is above the last index.
    #[error("log unavailable")]
    Unavailable,
    /// The snapshot is older than the one already applied.
    #[error("snapshot out of date")]
    SnapshotOutOfDate,
    /// A snapshot is being built; ask again later.
    #[error("snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Any other failure of the storage (IO, corruption), described.
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StorageError::Other(a), StorageError::Other(b)) => a.to_string() == b.to_string(),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}
