//! The storage interface the consensus core reads its log and state from.
//!
//! The core never writes to storage: the application persists what a
//! `Ready` hands it, then reports back. Tandem's engine implements this
//! trait directly over its WAL and state machine; [`MemStorage`] is an
//! in-memory implementation for tests and examples.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::errors::{Error, Result, StorageError};
use crate::types::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

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

/// The state behind a [`MemStorage`].
#[derive(Debug, Default)]
pub struct MemStorageCore {
    raft_state: RaftState,
    /// Entries after the snapshot point; `entries[0].index == snapshot index + 1`.
    entries: Vec<Entry>,
    /// The compaction / snapshot point.
    snapshot_metadata: SnapshotMetadata,
    /// The payload of the stored snapshot.
    snapshot_data: Vec<u8>,
    /// Fail the next `snapshot()` call with `SnapshotTemporarilyUnavailable`.
    trigger_snap_unavailable: bool,
}

impl MemStorageCore {
    /// The persisted hard state.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.raft_state.hard_state
    }

    /// The persisted membership.
    #[must_use]
    pub fn conf_state(&self) -> &ConfState {
        &self.raft_state.conf_state
    }

    /// Persist a hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.raft_state.hard_state = hs;
    }

    /// Persist only the commit index.
    pub fn set_commit(&mut self, commit: u64) {
        self.raft_state.hard_state.commit = commit;
    }

    /// Persist a membership.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.raft_state.conf_state = cs;
    }

    fn first_index(&self) -> u64 {
        self.snapshot_metadata.index + 1
    }

    fn last_index(&self) -> u64 {
        self.snapshot_metadata.index + self.entries.len() as u64
    }

    /// The stored entries (after the snapshot point).
    #[must_use]
    pub fn entries_slice(&self) -> &[Entry] {
        &self.entries
    }

    /// Append `ents`, replacing any entries at or after `ents[0].index`.
    /// Entries below the first index are skipped.
    ///
    /// # Errors
    /// `Unavailable` if the entries would leave a gap after the last index,
    /// or are not consecutive.
    pub fn append(&mut self, ents: &[Entry]) -> Result<()> {
        if ents.is_empty() {
            return Ok(());
        }
        if ents.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(Error::Store(StorageError::Other(
                "appended entries are not consecutive".into(),
            )));
        }
        let first = self.first_index();
        let last_new = ents[ents.len() - 1].index;
        if last_new < first {
            return Ok(());
        }
        if ents[0].index > self.last_index() + 1 {
            return Err(Error::Store(StorageError::Unavailable));
        }
        let ents = if ents[0].index < first {
            &ents[(first - ents[0].index) as usize..]
        } else {
            ents
        };
        let keep = (ents[0].index - first) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Drop every entry below `compact_index`, remembering the term of the
    /// entry before it. The stored snapshot keeps its metadata.
    ///
    /// # Errors
    /// `Compacted` if already compacted past it; `Unavailable` if beyond the
    /// last index + 1.
    pub fn compact(&mut self, compact_index: u64) -> Result<()> {
        if compact_index <= self.first_index() {
            return Ok(());
        }
        if compact_index > self.last_index() + 1 {
            return Err(Error::Store(StorageError::Unavailable));
        }
        let n = (compact_index - self.first_index()) as usize;
        let term = self.entries[n - 1].term;
        self.entries.drain(..n);
        self.snapshot_metadata.index = compact_index - 1;
        self.snapshot_metadata.term = term;
        Ok(())
    }

    /// Record a snapshot of the state machine at `index` with membership
    /// `cs` and payload `data`, then compact the log up to it.
    ///
    /// # Errors
    /// `SnapshotOutOfDate` if not newer than the current one, `Unavailable`
    /// if beyond the last index.
    pub fn create_snapshot(&mut self, index: u64, cs: ConfState, data: Vec<u8>) -> Result<()> {
        if index <= self.snapshot_metadata.index {
            return Err(Error::Store(StorageError::SnapshotOutOfDate));
        }
        if index > self.last_index() {
            return Err(Error::Store(StorageError::Unavailable));
        }
        self.compact(index + 1)?;
        self.snapshot_metadata.conf_state = cs;
        self.snapshot_data = data;
        Ok(())
    }

    /// Replace everything with `snap` (a follower installing a snapshot).
    ///
    /// # Errors
    /// `SnapshotOutOfDate` if it is older than the current snapshot point.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<()> {
        let meta = snap.metadata;
        if meta.index < self.snapshot_metadata.index {
            return Err(Error::Store(StorageError::SnapshotOutOfDate));
        }
        self.raft_state.hard_state.commit = self.raft_state.hard_state.commit.max(meta.index);
        if self.raft_state.hard_state.term < meta.term {
            self.raft_state.hard_state.term = meta.term;
        }
        self.raft_state.conf_state = meta.conf_state.clone();
        self.entries.clear();
        self.snapshot_metadata = meta;
        self.snapshot_data = snap.data;
        Ok(())
    }

    /// Make the next `snapshot()` call fail with `SnapshotTemporarilyUnavailable`.
    pub fn trigger_snap_unavailable(&mut self) {
        self.trigger_snap_unavailable = true;
    }

    /// The stored snapshot.
    #[must_use]
    pub fn stored_snapshot(&self) -> Snapshot {
        Snapshot {
            data: self.snapshot_data.clone(),
            metadata: self.snapshot_metadata.clone(),
        }
    }
}

/// An in-memory [`Storage`], shared by clone (tests and examples). The
/// application side writes through [`MemStorage::wl`], the core reads.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    core: Arc<RwLock<MemStorageCore>>,
}

impl MemStorage {
    /// An empty, uninitialised storage.
    #[must_use]
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// A storage whose membership is `cs` (a freshly bootstrapped cluster).
    #[must_use]
    pub fn new_with_conf_state(cs: ConfState) -> Self {
        let s = MemStorage::new();
        s.wl().set_conf_state(cs);
        s
    }

    /// Write access.
    ///
    /// # Panics
    /// If the lock is poisoned (a writer panicked).
    pub fn wl(&self) -> RwLockWriteGuard<'_, MemStorageCore> {
        self.core.write().expect("MemStorage lock poisoned")
    }

    /// Read access.
    ///
    /// # Panics
    /// If the lock is poisoned (a writer panicked).
    pub fn rl(&self) -> RwLockReadGuard<'_, MemStorageCore> {
        self.core.read().expect("MemStorage lock poisoned")
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState> {
        Ok(self.rl().raft_state.clone())
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        let core = self.rl();
        if low < core.first_index() {
            return Err(Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 || low > high {
            return Err(Error::Store(StorageError::Unavailable));
        }
        let off = core.first_index();
        let mut ents = core.entries[(low - off) as usize..(high - off) as usize].to_vec();
        crate::raft_log::limit_size(&mut ents, max_size);
        Ok(ents)
    }

    fn term(&self, idx: u64) -> Result<u64> {
        let core = self.rl();
        if idx == core.snapshot_metadata.index {
            return Ok(core.snapshot_metadata.term);
        }
        if idx < core.first_index() {
            return Err(Error::Store(StorageError::Compacted));
        }
        if idx > core.last_index() {
            return Err(Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(idx - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> Result<u64> {
        Ok(self.rl().first_index())
    }

    fn last_index(&self) -> Result<u64> {
        Ok(self.rl().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> Result<Snapshot> {
        let mut core = self.wl();
        if core.trigger_snap_unavailable {
            core.trigger_snap_unavailable = false;
            return Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        if core.snapshot_metadata.index < request_index {
            return Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(core.stored_snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn storage(n: u64) -> MemStorage {
        let s = MemStorage::new_with_conf_state(ConfState::from_voters([1, 2, 3]));
        let ents: Vec<Entry> = (1..=n).map(|i| ent(i, i)).collect();
        s.wl().append(&ents).unwrap();
        s
    }

    #[test]
    fn bounds_and_terms() {
        let s = storage(5);
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 5));
        assert_eq!(s.term(0).unwrap(), 0);
        assert_eq!(s.term(3).unwrap(), 3);
        assert_eq!(s.term(6), Err(Error::Store(StorageError::Unavailable)));
        assert!(s.initial_state().unwrap().initialized());
        assert!(!MemStorage::new().initial_state().unwrap().initialized());
    }

    #[test]
    fn entries_ranges_and_limits() {
        let s = storage(5);
        assert_eq!(s.entries(2, 4, None).unwrap().len(), 2);
        assert_eq!(s.entries(1, 6, Some(0)).unwrap().len(), 1);
        assert_eq!(
            s.entries(1, 6, Some(ent(1, 1).size_bytes() * 3))
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            s.entries(1, 7, None),
            Err(Error::Store(StorageError::Unavailable))
        );
        s.wl().compact(3).unwrap();
        assert_eq!(
            s.entries(2, 4, None),
            Err(Error::Store(StorageError::Compacted))
        );
        assert_eq!(s.term(2).unwrap(), 2, "compaction point keeps its term");
        assert_eq!(s.term(1), Err(Error::Store(StorageError::Compacted)));
    }

    #[test]
    fn append_truncates_and_rejects_gaps() {
        let s = storage(5);
        s.wl().append(&[ent(3, 9)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 3);
        assert_eq!(s.term(3).unwrap(), 9);
        assert_eq!(
            s.wl().append(&[ent(5, 9)]),
            Err(Error::Store(StorageError::Unavailable))
        );
        assert!(s.wl().append(&[ent(4, 9), ent(6, 9)]).is_err());
        // Entries below the compaction point are skipped.
        s.wl().compact(3).unwrap();
        s.wl()
            .append(&[ent(1, 1), ent(2, 2), ent(3, 9), ent(4, 10)])
            .unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (3, 4));
    }

    #[test]
    fn snapshots() {
        let s = storage(5);
        s.wl()
            .create_snapshot(4, ConfState::from_voters([1, 2]), b"sm".to_vec())
            .unwrap();
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!((snap.metadata.index, snap.metadata.term), (4, 4));
        assert_eq!(snap.data, b"sm");
        assert_eq!(s.first_index().unwrap(), 5);
        assert_eq!(
            s.wl().create_snapshot(3, ConfState::default(), vec![]),
            Err(Error::Store(StorageError::SnapshotOutOfDate))
        );
        assert_eq!(
            s.snapshot(5, 2),
            Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable))
        );
        s.wl().trigger_snap_unavailable();
        assert!(s.snapshot(0, 2).is_err());
        assert!(s.snapshot(0, 2).is_ok(), "only the next call fails");

        let f = MemStorage::new();
        f.wl().apply_snapshot(snap.clone()).unwrap();
        assert_eq!((f.first_index().unwrap(), f.last_index().unwrap()), (5, 4));
        assert_eq!(f.rl().hard_state().commit, 4);
        assert_eq!(f.rl().conf_state(), &ConfState::from_voters([1, 2]));
        let mut old = snap;
        old.metadata.index = 2;
        assert_eq!(
            f.wl().apply_snapshot(old),
            Err(Error::Store(StorageError::SnapshotOutOfDate))
        );
    }
}
