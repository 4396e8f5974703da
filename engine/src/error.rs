//! The error type of the `tandem` crate.
//!
//! Operating conditions a caller must handle are variants of [`Error`](enum@Error);
//! broken internal invariants are panics with a message, never errors.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// The result type of the `tandem` crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when using a replica, a cluster or a [`crate::Db`] handle.
///
/// The variants a client most often meets while the cluster changes leader
/// are [`Error::NotLeader`], [`Error::Stale`] and [`Error::Timeout`]; the
/// [`crate::Db`] handle retries the first two itself until its deadline.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// This replica is not the leader. `leader` is the replica it believes
    /// leads the current term, if it knows one; retry there.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The known leader, if any.
        leader: Option<u64>,
    },
    /// The proposal reached the log, but another entry was committed at its
    /// index: it was NOT applied (and never will be), and retrying is safe.
    #[error(
        "proposal at index {index} (term {term}) was superseded: another entry committed there"
    )]
    Stale {
        /// Where the proposal had been appended.
        index: u64,
        /// The term it had been appended in.
        term: u64,
    },
    /// The replica is shutting down; the request may or may not have been applied.
    #[error("the replica is shutting down")]
    ShuttingDown,
    /// The deadline passed before the request completed. For a write the
    /// outcome is unknown: it may still be applied later.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// No leader with a quorum could be reached before the deadline: the
    /// write was not accepted by any leader.
    #[error("no quorum: no leader could accept the request within {0:?}")]
    NoQuorum(Duration),
    /// Another process or handle holds the replica directory.
    #[error("{} is locked: another process or handle has this replica open", .0.display())]
    Locked(PathBuf),
    /// A configuration value is invalid; the message names the field.
    #[error("invalid config: {0}")]
    Config(String),
    /// A key, value or batch exceeds its configured limit.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Which limit (key, value, batch).
        what: &'static str,
        /// The offending size.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A request names a node id the cluster does not know.
    #[error("unknown node {0}")]
    UnknownNode(u64),
    /// Too many requests are in flight on this replica; retry later.
    #[error("overloaded: {0} requests already in flight")]
    Overloaded(usize),
    /// A membership change was refused (e.g. another one is still pending).
    #[error("membership change refused: {0}")]
    ConfChange(String),
    /// The request is malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The consensus core reported an error.
    #[error("raft: {0}")]
    Raft(#[from] tandem_raft::Error),
    /// On-disk data could not be decoded or failed a check.
    #[error("corrupt data: {0}")]
    Corruption(String),
    /// An IO operation failed.
    #[error("io error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A storage layer (WAL, state machine) failed; the message says which and why.
    #[error("storage: {0}")]
    Storage(String),
}

impl Error {
    /// True if the request certainly had no effect and can be retried
    /// elsewhere without risk of applying it twice.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. } | Error::Stale { .. } | Error::Overloaded(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl Clone for Error {
    /// Errors are cloned when one failure completes many waiters (e.g. shutdown);
    /// IO and raft sources are not `Clone`, so they are carried as text.
    fn clone(&self) -> Self {
        match self {
            Error::NotLeader { leader } => Error::NotLeader { leader: *leader },
            Error::Stale { index, term } => Error::Stale {
                index: *index,
                term: *term,
            },
            Error::ShuttingDown => Error::ShuttingDown,
            Error::Timeout(d) => Error::Timeout(*d),
            Error::NoQuorum(d) => Error::NoQuorum(*d),
            Error::Locked(p) => Error::Locked(p.clone()),
            Error::Config(s) => Error::Config(s.clone()),
            Error::TooLarge { what, len, max } => Error::TooLarge {
                what,
                len: *len,
                max: *max,
            },
            Error::UnknownNode(id) => Error::UnknownNode(*id),
            Error::Overloaded(n) => Error::Overloaded(*n),
            Error::ConfChange(s) => Error::ConfChange(s.clone()),
            Error::InvalidInput(s) => Error::InvalidInput(s.clone()),
            Error::Raft(e) => Error::Storage(format!("raft: {e}")),
            Error::Corruption(s) => Error::Corruption(s.clone()),
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Storage(s) => Error::Storage(s.clone()),
        }
    }
}

impl From<crate::sm::Error> for Error {
    fn from(e: crate::sm::Error) -> Self {
        match e {
            crate::sm::Error::TooLarge { what, len, max } => Error::TooLarge { what, len, max },
            other => Error::Storage(format!("state machine: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_exactly_the_ones_without_effect() {
        assert!(Error::NotLeader { leader: Some(2) }.is_retryable());
        assert!(Error::Stale { index: 3, term: 1 }.is_retryable());
        assert!(!Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!Error::ShuttingDown.is_retryable());
    }

    #[test]
    fn messages_name_the_cause() {
        let e = Error::TooLarge {
            what: "value",
            len: 10,
            max: 4,
        };
        assert_eq!(
            e.to_string(),
            "value of 10 bytes exceeds the limit of 4 bytes"
        );
        let e = Error::Locked(PathBuf::from("/x/node-1"));
        assert!(e.to_string().contains("/x/node-1 is locked"));
        let io = Error::io("/a", std::io::Error::other("boom")).clone();
        assert!(io.to_string().contains("boom"));
    }
}
