//! The storage interface the consensus core reads its log and state from.
//!
//! The core never writes to storage: the application persists what a
//! `Ready` hands it, then reports back. Tandem's engine implements this
//! trait directly over its WAL and state machine; [`MemStorage`] is an
//! in-memory implementation for tests and examples.

use crate::errors::Result;
use crate::types::{ConfState, Entry, HardState, Snapshot};

/// What a node recovers on start: its hard state and membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    /// Term, vote and commit as last persisted.
    pub hard_state: HardState,
    /// Membership as of the last applied configuration change or snapshot.
    pub conf_state: ConfState,
}

impl RaftState {
    /// Build from parts.
    #[must_use]
    pub fn new(hard_state: HardState, conf_state: ConfState) -> Self {
        RaftState {
            hard_state,
            conf_state,
        }
    }

    /// True if the node has never been initialised (no voters, no learners).
    #[must_use]
    pub fn initialized(&self) -> bool {
        self.conf_state != ConfState::default()
    }
}

/// Read access to the persisted raft log and state.
///
/// Index conventions: entries live at `first_index()..=last_index()`.
/// `term(first_index() - 1)` must succeed (it is the snapshot or compaction
/// point); lower indexes return [`crate::StorageError::Compacted`], higher
/// than `last_index()` return [`crate::StorageError::Unavailable`].
pub trait Storage {
    /// The hard state and membership at start-up.
    ///
    /// # Errors
    /// Storage failures.
    fn initial_state(&self) -> Result<RaftState>;

    /// Entries in `[low, high)`, limited to `max_size` bytes (as counted by
    /// [`Entry::size_bytes`]) but always at least one entry if any exists.
    ///
    /// # Errors
    /// `Compacted` if `low < first_index()`, `Unavailable` if `high > last_index() + 1`.
    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>>;

    /// The term of the entry at `idx`.
    ///
    /// # Errors
    /// `Compacted` / `Unavailable` as described on the trait.
    fn term(&self, idx: u64) -> Result<u64>;

    /// The index of the first entry still in the log (snapshot index + 1).
    ///
    /// # Errors
    /// Storage failures.
    fn first_index(&self) -> Result<u64>;

    /// The index of the last entry in the log (the snapshot index if empty).
    ///
    /// # Errors
    /// Storage failures.
    fn last_index(&self) -> Result<u64>;

    /// The most recent snapshot, at an index `>= request_index`, for peer `to`.
    ///
    /// # Errors
    /// `SnapshotTemporarilyUnavailable` while one is being built.
    fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot>;
}
