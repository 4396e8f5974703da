//! The log as the core sees it: the persisted part (read through
//! [`Storage`]) followed by the unstable tail, plus the commit, persist and
//! apply cursors.

use tracing::{debug, warn};

use crate::errors::{Error, Result, StorageError};
use crate::log_unstable::Unstable;
use crate::storage::Storage;
use crate::types::{Entry, Snapshot};

/// The raft log.
///
/// Invariants: `applied <= committed <= last_index()`; `applied <= persisted`;
/// `persisted < unstable.offset` unless a snapshot is pending.
#[derive(Debug)]
pub struct RaftLog<S: Storage> {
    /// The persisted log.
    pub store: S,
    /// The unpersisted tail.
    pub unstable: Unstable,
    /// The highest index known to be committed by a quorum.
    pub committed: u64,
    /// The highest index known to be durable on this node.
    pub persisted: u64,
    /// The highest index the application has applied.
    pub applied: u64,
}

impl<S: Storage> RaftLog<S> {
    /// A log over `store`; everything in storage counts as persisted and
    /// committed up to the snapshot point.
    ///
    /// # Errors
    /// Storage failures.
    pub fn new(store: S) -> Result<Self> {
        let first = store.first_index()?;
        let last = store.last_index()?;
        if first == 0 || last + 1 < first {
            return Err(Error::Store(StorageError::Other(
                format!("storage bounds are inconsistent: first {first}, last {last}").into(),
            )));
        }
        Ok(RaftLog {
            store,
            unstable: Unstable::new(last + 1),
            committed: first - 1,
            persisted: last,
            applied: first - 1,
        })
    }

    /// The first index still in the log.
    #[must_use]
    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self
                .store
                .first_index()
                .expect("storage first_index failed"),
        }
    }

    /// The last index in the log.
    #[must_use]
    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self.store.last_index().expect("storage last_index failed"),
        }
    }

    /// The term of the entry at `idx`.
    ///
    /// # Errors
    /// `Compacted` below the first index - 1, `Unavailable` above the last.
    pub fn term(&self, idx: u64) -> Result<u64> {
        let dummy = self.first_index() - 1;
        if idx < dummy {
            return Err(Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index() {
            return Err(Error::Store(StorageError::Unavailable));
        }
        if let Some(t) = self.unstable.maybe_term(idx) {
            return Ok(t);
        }
        self.store.term(idx)
    }

    /// The term of the last entry.
    #[must_use]
    pub fn last_term(&self) -> u64 {
        self.term(self.last_index())
            .expect("the last entry's term is always known")
    }

    /// True if the entry at `idx` exists and has `term`.
    #[must_use]
    pub fn match_term(&self, idx: u64, term: u64) -> bool {
        self.term(idx).map(|t| t == term).unwrap_or(false)
    }

    /// True if a log ending at `(last_idx, term)` is at least as up to date
    /// as this one (§5.4.1).
    #[must_use]
    pub fn is_up_to_date(&self, last_idx: u64, term: u64) -> bool {
        let lt = self.last_term();
        term > lt || (term == lt && last_idx >= self.last_index())
    }

    /// The index of the first entry of `ents` that conflicts with this log
    /// (same index, other term), or of the first new entry; 0 if all match.
    #[must_use]
    pub fn find_conflict(&self, ents: &[Entry]) -> u64 {
        for e in ents {
            if !self.match_term(e.index, e.term) {
                if e.index <= self.last_index() {
                    debug!(
                        index = e.index,
                        term = e.term,
                        existing = ?self.term(e.index).ok(),
                        "found conflicting entry"
                    );
                }
                return e.index;
            }
        }
        0
    }

    /// Fast backtracking: the largest index `<= index` whose term is
    /// `<= term`, with that term. Entries in between cannot match a leader
    /// whose entry at `index` has `term`, so the leader may skip them all.
    #[must_use]
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut idx = index.min(self.last_index());
        loop {
            match self.term(idx) {
                Ok(t) if t > term => {
                    if idx == 0 {
                        return (0, 0);
                    }
                    idx -= 1;
                }
                Ok(t) => return (idx, t),
                // Compacted: everything below was committed, so matches.
                Err(_) => return (idx, 0),
            }
        }
    }

    /// Append `ents` after the entry `(idx, log_term)` if this log has it,
    /// truncating a conflicting suffix, and raise the commit index to
    /// `min(committed, last new index)`. Returns `(conflict, last_new_index)`.
    ///
    /// # Panics
    /// If a conflict is at or below the commit index: committed entries
    /// never change, so that is a broken invariant.
    pub fn maybe_append(
        &mut self,
        idx: u64,
        log_term: u64,
        committed: u64,
        ents: &[Entry],
    ) -> Option<(u64, u64)> {
        if !self.match_term(idx, log_term) {
            return None;
        }
        let last_new = idx + ents.len() as u64;
        let conflict = self.find_conflict(ents);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with committed entry (committed {})",
                self.committed
            );
            let start = (conflict - (idx + 1)) as usize;
            self.append(&ents[start..]);
        }
        self.commit_to(committed.min(last_new));
        Some((conflict, last_new))
    }

    /// Append entries to the unstable tail; returns the new last index.
    ///
    /// # Panics
    /// If the entries would overwrite committed entries or leave a gap.
    pub fn append(&mut self, ents: &[Entry]) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        let after = first.index - 1;
        assert!(
            after >= self.committed,
            "append after {after} is below committed {}",
            self.committed
        );
        assert!(
            after <= self.last_index(),
            "append after {after} leaves a gap after last index {}",
            self.last_index()
        );
        if after < self.persisted {
            // Entries already durable are being replaced: they no longer
            // count as persisted until their replacements are.
            self.persisted = after;
        }
        self.unstable.truncate_and_append(ents);
        self.last_index()
    }

    /// Raise the commit index.
    ///
    /// # Panics
    /// If `to` is beyond the last index.
    pub fn commit_to(&mut self, to: u64) {
        if self.committed < to {
            assert!(
                to <= self.last_index(),
                "commit {to} is out of range [last index {}]",
                self.last_index()
            );
            self.committed = to;
        }
    }

    /// Commit up to `max_index` if the entry there is of `term` (§5.4.2:
    /// only entries of the current term are committed by counting).
    pub fn maybe_commit(&mut self, max_index: u64, term: u64, check_term: bool) -> bool {
        if max_index > self.committed
            && max_index <= self.last_index()
            && (!check_term || self.match_term(max_index, term))
        {
            self.commit_to(max_index);
            true
        } else {
            false
        }
    }

    /// Record that the application applied up to `idx`.
    pub fn applied_to(&mut self, idx: u64) {
        if idx == 0 || idx <= self.applied {
            return;
        }
        if idx > self.committed || idx > self.persisted {
            warn!(
                idx,
                committed = self.committed,
                persisted = self.persisted,
                "ignoring applied index beyond committed or persisted"
            );
            return;
        }
        self.applied = idx;
    }

    /// Entries in `[lo, hi)`, at most `max_size` bytes (at least one).
    ///
    /// # Errors
    /// `Compacted` if `lo` is below the first index.
    ///
    /// # Panics
    /// If `hi` is beyond the last index + 1 or `lo > hi` (callers check).
    pub fn slice(&self, lo: u64, hi: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        assert!(lo <= hi, "invalid slice {lo} > {hi}");
        let last = self.last_index();
        assert!(hi <= last + 1, "slice [{lo}, {hi}) out of bound {last}");
        if lo < self.first_index() {
            return Err(Error::Store(StorageError::Compacted));
        }
        if lo == hi {
            return Ok(Vec::new());
        }
        let mut ents = Vec::new();
        let off = self.unstable.offset;
        if lo < off {
            let stored = self.store.entries(lo, hi.min(off), max_size)?;
            let complete = stored.len() as u64 == hi.min(off) - lo;
            ents = stored;
            if !complete {
                // Limited by size.
                return Ok(ents);
            }
        }
        if hi > off {
            let part = self.unstable.slice(lo.max(off), hi);
            ents.extend_from_slice(part);
        }
        limit_size(&mut ents, max_size);
        Ok(ents)
    }

    /// Entries from `idx` to the end, at most `max_size` bytes.
    ///
    /// # Errors
    /// `Compacted` if `idx` is below the first index.
    pub fn entries(&self, idx: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        let last = self.last_index();
        if idx > last {
            return Ok(Vec::new());
        }
        self.slice(idx, last + 1, max_size)
    }

    /// Committed, persisted entries after `since` (and after `applied`),
    /// at most `max_size` bytes, for the application to apply. None while a
    /// snapshot is pending: it must be applied first.
    #[must_use]
    pub fn next_committed_entries(&self, since: u64, max_size: u64) -> Option<Vec<Entry>> {
        if self.unstable.snapshot.is_some() {
            return None;
        }
        let lo = since.max(self.applied) + 1;
        let hi = self.committed.min(self.persisted) + 1;
        if lo >= hi {
            return None;
        }
        match self.slice(lo, hi, Some(max_size)) {
            Ok(ents) if !ents.is_empty() => Some(ents),
            Ok(_) => None,
            Err(e) => panic!("committed entries [{lo}, {hi}) unavailable: {e}"),
        }
    }

    /// True if `next_committed_entries(since, _)` would return something.
    #[must_use]
    pub fn has_next_committed_entries(&self, since: u64) -> bool {
        self.unstable.snapshot.is_none()
            && since.max(self.applied) < self.committed.min(self.persisted)
    }

    /// The snapshot to send to `to`: a pending incoming one, or the storage's.
    ///
    /// # Errors
    /// Storage errors, e.g. `SnapshotTemporarilyUnavailable`.
    pub fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot> {
        if let Some(s) = &self.unstable.snapshot {
            if s.metadata.index >= request_index {
                return Ok(s.clone());
            }
        }
        self.store.snapshot(request_index, to)
    }

    /// Replace the log with `snap` (which must be ahead of `committed`).
    pub fn restore(&mut self, snap: Snapshot) {
        debug!(
            index = snap.metadata.index,
            term = snap.metadata.term,
            "log starts to restore snapshot"
        );
        let index = snap.metadata.index;
        assert!(
            index >= self.committed,
            "restore {index} < committed {}",
            self.committed
        );
        self.committed = index;
        // The entries above the snapshot in storage no longer count as
        // persisted; the snapshot becomes durable when its Ready is.
        if self.persisted > index {
            self.persisted = index;
        }
        self.unstable.restore(snap);
    }

    /// Entries up to `(index, term)` became durable. Returns true if the
    /// persisted index moved.
    pub fn on_persist_entries(&mut self, index: u64, term: u64) -> bool {
        self.unstable.stable_to(index, term);
        let first_unstable = match &self.unstable.snapshot {
            Some(s) => s.metadata.index,
            None => self.unstable.offset,
        };
        if index > self.persisted
            && index < first_unstable
            && self.store.term(index).map(|t| t == term).unwrap_or(false)
        {
            self.persisted = index;
            true
        } else {
            false
        }
    }

    /// The snapshot at `index` became durable (and was applied).
    pub fn on_persist_snap(&mut self, index: u64) {
        self.unstable.stable_snap(index);
        if index > self.persisted {
            self.persisted = index;
        }
        if index > self.applied {
            self.applied = index;
        }
    }

    /// True if a snapshot is waiting to be persisted.
    #[must_use]
    pub fn has_pending_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some()
    }
}

/// Truncate `ents` to at most `max_size` bytes, keeping at least one.
pub fn limit_size(ents: &mut Vec<Entry>, max_size: Option<u64>) {
    let Some(max) = max_size else { return };
    if ents.len() <= 1 {
        return;
    }
    let mut size = 0u64;
    let keep = ents
        .iter()
        .take_while(|e| {
            size += e.size_bytes();
            size <= max
        })
        .count()
        .max(1);
    ents.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::types::{ConfState, SnapshotMetadata};

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }
    fn ents(terms: &[(u64, u64)]) -> Vec<Entry> {
        terms.iter().map(|&(i, t)| ent(i, t)).collect()
    }
    fn log_with(stored: &[(u64, u64)], unstable: &[(u64, u64)]) -> RaftLog<MemStorage> {
        let s = MemStorage::new_with_conf_state(ConfState::from_voters([1]));
        s.wl().append(&ents(stored)).unwrap();
        let mut l = RaftLog::new(s).unwrap();
        l.append(&ents(unstable));
        l
    }

    #[test]
    fn new_log_bounds() {
        let l = log_with(&[(1, 1), (2, 1)], &[]);
        assert_eq!((l.first_index(), l.last_index()), (1, 2));
        assert_eq!((l.committed, l.applied, l.persisted), (0, 0, 2));
        assert_eq!(l.last_term(), 1);
    }

    #[test]
    fn term_out_of_range_is_error() {
        let l = log_with(&[(1, 1), (2, 2)], &[(3, 3)]);
        assert_eq!(l.term(0).unwrap(), 0);
        assert_eq!(l.term(2).unwrap(), 2);
        assert_eq!(l.term(3).unwrap(), 3);
        assert_eq!(l.term(4), Err(Error::Store(StorageError::Unavailable)));
        let s = MemStorage::new_with_conf_state(ConfState::from_voters([1]));
        s.wl().append(&ents(&[(1, 1), (2, 1), (3, 2)])).unwrap();
        s.wl().compact(3).unwrap();
        let l = RaftLog::new(s).unwrap();
        assert_eq!(l.term(1), Err(Error::Store(StorageError::Compacted)));
        assert_eq!(l.term(2).unwrap(), 1);
    }

    #[test]
    fn find_conflict_table() {
        let l = log_with(&[(1, 1), (2, 2), (3, 3)], &[]);
        let cases: Vec<(Vec<(u64, u64)>, u64)> = vec![
            (vec![], 0),
            (vec![(1, 1), (2, 2), (3, 3)], 0),
            (vec![(2, 2), (3, 3)], 0),
            (vec![(3, 3)], 0),
            (vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 4)], 4),
            (vec![(3, 3), (4, 4)], 4),
            (vec![(1, 4), (2, 4)], 1),
            (vec![(2, 1), (3, 4), (4, 4)], 2),
            (vec![(3, 1), (4, 2), (5, 4), (6, 4)], 3),
        ];
        for (e, want) in cases {
            assert_eq!(l.find_conflict(&ents(&e)), want, "{e:?}");
        }
    }

    #[test]
    fn find_conflict_by_term_table() {
        // Terms 1..=10: [1 1 1 4 4 5 5 5 5 6] (index 1..10).
        let terms = [1, 1, 1, 4, 4, 5, 5, 5, 5, 6];
        let stored: Vec<(u64, u64)> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| (i as u64 + 1, t))
            .collect();
        let l = log_with(&stored, &[]);
        let cases = [
            (10, 6, (10, 6)),
            (10, 5, (9, 5)),
            (10, 4, (5, 4)),
            (10, 3, (3, 1)),
            (10, 0, (0, 0)),
            (5, 2, (3, 1)),
            (12, 6, (10, 6)),
            (1, 1, (1, 1)),
        ];
        for (idx, term, want) in cases {
            assert_eq!(l.find_conflict_by_term(idx, term), want, "({idx}, {term})");
        }
    }

    #[test]
    fn maybe_append_table() {
        // (prev idx, prev term, commit, entries, want result, want last, want commit)
        type Case = (u64, u64, u64, Vec<(u64, u64)>, Option<(u64, u64)>, u64, u64);
        let cases: Vec<Case> = vec![
            // Mismatching previous entry.
            (3, 2, 3, vec![(4, 4)], None, 3, 1),
            (4, 3, 3, vec![(5, 4)], None, 3, 1),
            // Matching, no new entries.
            (3, 3, 3, vec![], Some((0, 3)), 3, 3),
            (3, 3, 4, vec![], Some((0, 3)), 3, 3),
            (3, 3, 2, vec![], Some((0, 3)), 3, 2),
            (3, 3, 0, vec![], Some((0, 3)), 3, 1),
            // Appending.
            (3, 3, 3, vec![(4, 4)], Some((4, 4)), 4, 3),
            (3, 3, 4, vec![(4, 4)], Some((4, 4)), 4, 4),
            (3, 3, 5, vec![(4, 4)], Some((4, 4)), 4, 4),
            (3, 3, 5, vec![(4, 4), (5, 4)], Some((4, 5)), 5, 5),
            // Conflicting suffix replaced.
            (2, 2, 3, vec![(3, 4)], Some((3, 3)), 3, 3),
            (1, 1, 3, vec![(2, 4), (3, 4)], Some((2, 3)), 3, 3),
            // Entries that all exist.
            (1, 1, 1, vec![(2, 2)], Some((0, 2)), 3, 1),
        ];
        for (idx, lt, commit, e, want, last, wcommit) in cases {
            let mut l = log_with(&[(1, 1), (2, 2), (3, 3)], &[]);
            l.commit_to(1);
            let got = l.maybe_append(idx, lt, commit, &ents(&e));
            assert_eq!(got, want, "case ({idx}, {lt}, {commit}, {e:?})");
            assert_eq!(l.last_index(), last, "last for {e:?}");
            assert_eq!(l.committed, wcommit, "commit for {e:?}");
        }
    }

    #[test]
    #[should_panic(expected = "conflicts with committed")]
    fn maybe_append_over_committed_panics() {
        let mut l = log_with(&[(1, 1), (2, 2), (3, 3)], &[]);
        l.commit_to(3);
        l.maybe_append(1, 1, 3, &ents(&[(2, 9)]));
    }

    #[test]
    fn maybe_commit_requires_term() {
        let mut l = log_with(&[(1, 1), (2, 2)], &[(3, 3)]);
        assert!(
            !l.maybe_commit(2, 3, true),
            "old-term entry not committed by counting"
        );
        assert!(l.maybe_commit(3, 3, true));
        assert_eq!(l.committed, 3);
        assert!(!l.maybe_commit(3, 3, true));
        assert!(!l.maybe_commit(9, 3, true), "beyond last index");
        let mut l = log_with(&[(1, 1), (2, 2)], &[]);
        assert!(
            l.maybe_commit(2, 3, false),
            "unchecked commit ignores the term"
        );
    }

    #[test]
    fn slice_spans_storage_and_unstable_with_limits() {
        let l = log_with(&[(1, 1), (2, 1), (3, 1)], &[(4, 2), (5, 2)]);
        assert_eq!(l.slice(2, 6, None).unwrap().len(), 4);
        assert_eq!(l.slice(4, 6, None).unwrap().len(), 2);
        let one = ent(1, 1).size_bytes();
        assert_eq!(l.slice(1, 6, Some(one * 2)).unwrap().len(), 2);
        assert_eq!(l.slice(1, 6, Some(one * 4)).unwrap().len(), 4);
        assert_eq!(
            l.slice(1, 6, Some(0)).unwrap().len(),
            1,
            "at least one entry"
        );
        assert!(l.slice(3, 3, None).unwrap().is_empty());
        l.store.wl().compact(3).unwrap();
        assert_eq!(
            l.slice(1, 3, None),
            Err(Error::Store(StorageError::Compacted))
        );
        assert!(l.entries(9, None).unwrap().is_empty());
    }

    #[test]
    fn next_committed_entries_bounded_by_persist_and_apply() {
        let mut l = log_with(&[(1, 1), (2, 1)], &[(3, 1), (4, 1)]);
        l.commit_to(4);
        // Only 1..=2 are persisted.
        let got = l.next_committed_entries(0, u64::MAX).unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2]);
        assert!(l.next_committed_entries(2, u64::MAX).is_none());
        l.store.wl().append(&ents(&[(3, 1), (4, 1)])).unwrap();
        assert!(l.on_persist_entries(4, 1));
        assert_eq!(l.persisted, 4);
        let got = l.next_committed_entries(2, u64::MAX).unwrap();
        assert_eq!(got.len(), 2);
        l.applied_to(3);
        assert_eq!(l.next_committed_entries(0, u64::MAX).unwrap().len(), 1);
        l.applied_to(9);
        assert_eq!(l.applied, 3, "applied beyond committed is ignored");
        assert!(l.has_next_committed_entries(0));
        let size_one = ent(4, 1).size_bytes();
        assert_eq!(l.next_committed_entries(0, size_one).unwrap().len(), 1);
    }

    #[test]
    fn persist_of_replaced_entries_is_ignored() {
        let mut l = log_with(&[(1, 1)], &[(2, 1), (3, 1)]);
        // Entries 2 and 3 of term 1 are handed out; then replaced by term 2.
        l.unstable.accept_in_progress();
        l.append(&ents(&[(2, 2)]));
        assert!(!l.on_persist_entries(3, 1));
        assert_eq!(l.persisted, 1);
        l.store.wl().append(&ents(&[(2, 2)])).unwrap();
        assert!(l.on_persist_entries(2, 2));
        assert_eq!(l.persisted, 2);
    }

    #[test]
    fn replacing_persisted_entries_lowers_persisted() {
        let mut l = log_with(&[(1, 1), (2, 1), (3, 1)], &[]);
        assert_eq!(l.persisted, 3);
        l.append(&ents(&[(2, 2)]));
        assert_eq!(l.persisted, 1);
        assert_eq!(l.last_index(), 2);
    }

    #[test]
    fn restore_snapshot_resets_log() {
        let mut l = log_with(&[(1, 1), (2, 1)], &[]);
        l.restore(Snapshot {
            metadata: SnapshotMetadata {
                index: 10,
                term: 3,
                conf_state: ConfState::from_voters([1]),
            },
            data: vec![],
        });
        assert_eq!((l.first_index(), l.last_index(), l.committed), (11, 10, 10));
        assert_eq!(l.term(10).unwrap(), 3);
        assert!(l.has_pending_snapshot());
        assert!(l.next_committed_entries(0, u64::MAX).is_none());
        assert_eq!(l.snapshot(0, 2).unwrap().metadata.index, 10);
        l.on_persist_snap(10);
        assert!(!l.has_pending_snapshot());
        assert_eq!((l.persisted, l.applied), (10, 10));
    }

    #[test]
    fn up_to_date_comparison() {
        let l = log_with(&[(1, 1), (2, 2), (3, 3)], &[]);
        let cases = [
            (2, 4, true),
            (3, 4, true),
            (4, 4, true),
            (2, 2, false),
            (3, 2, false),
            (4, 2, false),
            (2, 3, false),
            (3, 3, true),
            (4, 3, true),
        ];
        for (idx, term, want) in cases {
            assert_eq!(l.is_up_to_date(idx, term), want, "({idx}, {term})");
        }
    }

    #[test]
    fn limit_size_keeps_at_least_one() {
        let mut v = ents(&[(1, 1), (2, 1), (3, 1)]);
        limit_size(&mut v, Some(1));
        assert_eq!(v.len(), 1);
        let mut v = ents(&[(1, 1), (2, 1), (3, 1)]);
        limit_size(&mut v, None);
        assert_eq!(v.len(), 3);
    }
}
