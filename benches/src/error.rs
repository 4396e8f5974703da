//! The one error type of the bench helpers.

/// Why a benchmark helper failed. Benchmarks usually `expect` these: a
/// failing baseline makes every number of the run meaningless.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The sled baseline failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// The raft-engine baseline failed (its error type is not `Sync`, so it
    /// is carried as text).
    #[error("raft-engine: {0}")]
    RaftEngine(String),
    /// The Tandem WAL failed.
    #[error("tandem-wal: {0}")]
    Wal(String),
    /// A benchmark was configured with values it cannot run with.
    #[error("invalid bench parameter: {0}")]
    InvalidParameter(String),
    /// Reading or writing a results file failed to (de)serialise.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias of the bench helpers.
pub type Result<T> = std::result::Result<T, Error>;
