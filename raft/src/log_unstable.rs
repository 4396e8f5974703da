//! The tail of the log that is not yet known to be persisted.
//!
//! Entries and an incoming snapshot live here from the moment the core
//! accepts them until the application reports them durable. Each part is
//! handed out in exactly one `Ready`: `offset_in_progress` marks where the
//! entries already handed out (being persisted) end.

use crate::types::{Entry, Snapshot};

/// Unpersisted entries and snapshot.
///
/// Invariants: `entries[i].index == offset + i`; if a snapshot is present,
/// `offset == snapshot.index + 1`; `offset <= offset_in_progress <= offset + entries.len()`.
#[derive(Clone, Debug, Default)]
pub struct Unstable {
    /// An incoming snapshot, until persisted.
    pub snapshot: Option<Snapshot>,
    /// True once the snapshot was handed out for persisting.
    pub snapshot_in_progress: bool,
    /// Unpersisted entries, starting at `offset`.
    pub entries: Vec<Entry>,
    /// The index of `entries[0]` (or where it would be).
    pub offset: u64,
    /// Entries below this index were handed out for persisting.
    pub offset_in_progress: u64,
}

impl Unstable {
    /// An empty tail starting at `offset`.
    #[must_use]
    pub fn new(offset: u64) -> Self {
        Unstable {
            offset,
            offset_in_progress: offset,
            ..Unstable::default()
        }
    }

    /// The first index if a snapshot is pending.
    #[must_use]
    pub fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.metadata.index + 1)
    }

    /// The last index held here, if any.
    #[must_use]
    pub fn maybe_last_index(&self) -> Option<u64> {
        match self.entries.last() {
            Some(e) => Some(e.index),
            None => self.snapshot.as_ref().map(|s| s.metadata.index),
        }
    }

    /// The term of `idx` if this tail knows it.
    #[must_use]
    pub fn maybe_term(&self, idx: u64) -> Option<u64> {
        if idx < self.offset {
            let snap = self.snapshot.as_ref()?;
            return (snap.metadata.index == idx).then_some(snap.metadata.term);
        }
        let pos = usize::try_from(idx - self.offset).ok()?;
        self.entries.get(pos).map(|e| e.term)
    }

    /// Entries not yet handed out for persisting.
    #[must_use]
    pub fn next_entries(&self) -> &[Entry] {
        let start = (self.offset_in_progress - self.offset) as usize;
        &self.entries[start.min(self.entries.len())..]
    }

    /// The snapshot, if not yet handed out for persisting.
    #[must_use]
    pub fn next_snapshot(&self) -> Option<&Snapshot> {
        if self.snapshot_in_progress {
            None
        } else {
            self.snapshot.as_ref()
        }
    }

    /// Mark everything currently held as handed out.
    pub fn accept_in_progress(&mut self) {
        self.offset_in_progress = self.offset + self.entries.len() as u64;
        if self.snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// Entries up to `(index, term)` are persisted: drop them. Ignored if
    /// the entry at `index` has since been replaced (other term) or was
    /// already dropped.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if index < self.offset || self.maybe_term(index) != Some(term) {
            return;
        }
        let n = (index + 1 - self.offset) as usize;
        self.entries.drain(..n);
        self.offset = index + 1;
        self.offset_in_progress = self.offset_in_progress.max(self.offset);
        self.shrink();
    }

    fn shrink(&mut self) {
        if self.entries.capacity() > 1024 && self.entries.len() * 4 < self.entries.capacity() {
            self.entries.shrink_to_fit();
        }
    }

    /// The snapshot at `index` is persisted: drop it.
    pub fn stable_snap(&mut self, index: u64) {
        if self.snapshot.as_ref().map(|s| s.metadata.index) == Some(index) {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    /// Replace everything with `snap`.
    pub fn restore(&mut self, snap: Snapshot) {
        self.entries.clear();
        self.offset = snap.metadata.index + 1;
        self.offset_in_progress = self.offset;
        self.snapshot = Some(snap);
        self.snapshot_in_progress = false;
    }

    /// Append `ents`, first truncating anything at or after `ents[0].index`.
    ///
    /// # Panics
    /// If `ents` would leave a gap after the held entries (callers check).
    pub fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        let after = first.index;
        let end = self.offset + self.entries.len() as u64;
        if after == end {
            // Plain append.
        } else if after <= self.offset {
            // Replace the whole tail; the log below `after` is in storage.
            self.offset = after;
            self.entries.clear();
        } else {
            assert!(
                after < end,
                "gap in unstable log: append at {after}, end {end}"
            );
            self.entries.truncate((after - self.offset) as usize);
        }
        self.offset_in_progress = self.offset_in_progress.min(after).max(self.offset);
        self.entries.extend_from_slice(ents);
    }

    /// Entries in `[lo, hi)`, which must lie within this tail.
    ///
    /// # Panics
    /// If the range is outside the tail (callers check).
    #[must_use]
    pub fn slice(&self, lo: u64, hi: u64) -> &[Entry] {
        let end = self.offset + self.entries.len() as u64;
        assert!(
            self.offset <= lo && lo <= hi && hi <= end,
            "unstable slice [{lo}, {hi}) out of [{}, {end})",
            self.offset
        );
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SnapshotMetadata;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }
    fn snap(index: u64, term: u64) -> Snapshot {
        Snapshot {
            metadata: SnapshotMetadata {
                index,
                term,
                ..SnapshotMetadata::default()
            },
            ..Snapshot::default()
        }
    }

    #[test]
    fn first_last_and_term() {
        let mut u = Unstable::new(5);
        assert_eq!(u.maybe_first_index(), None);
        assert_eq!(u.maybe_last_index(), None);
        u.truncate_and_append(&[ent(5, 1), ent(6, 2)]);
        assert_eq!(u.maybe_last_index(), Some(6));
        assert_eq!(u.maybe_term(5), Some(1));
        assert_eq!(u.maybe_term(6), Some(2));
        assert_eq!(u.maybe_term(7), None);
        assert_eq!(u.maybe_term(4), None);
        u.restore(snap(10, 3));
        assert_eq!(u.maybe_first_index(), Some(11));
        assert_eq!(u.maybe_last_index(), Some(10));
        assert_eq!(u.maybe_term(10), Some(3));
        assert_eq!(u.maybe_term(9), None);
    }

    #[test]
    fn truncate_and_append_cases() {
        // Append at the end.
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1)]);
        u.truncate_and_append(&[ent(6, 1), ent(7, 1)]);
        assert_eq!(u.entries.len(), 3);
        // Replace from the middle.
        u.truncate_and_append(&[ent(6, 2)]);
        assert_eq!(
            u.entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            vec![(5, 1), (6, 2)]
        );
        // Replace everything, even below the offset.
        u.truncate_and_append(&[ent(4, 3)]);
        assert_eq!(u.offset, 4);
        assert_eq!(u.entries.len(), 1);
    }

    #[test]
    fn in_progress_tracking() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        assert_eq!(u.next_entries().len(), 3);
        u.accept_in_progress();
        assert!(u.next_entries().is_empty());
        u.truncate_and_append(&[ent(4, 1)]);
        assert_eq!(u.next_entries().len(), 1);
        // Overwriting an entry handed out makes it (and later ones) due again.
        u.accept_in_progress();
        u.truncate_and_append(&[ent(2, 2)]);
        assert_eq!(
            u.next_entries().iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn stable_to_ignores_replaced_entries() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(&[ent(1, 1), ent(2, 1)]);
        u.accept_in_progress();
        u.truncate_and_append(&[ent(2, 2)]);
        u.stable_to(2, 1); // the persisted entry 2 was of term 1: stale
        assert_eq!(u.offset, 1);
        u.stable_to(1, 1);
        assert_eq!(u.offset, 2);
        assert_eq!(u.entries.len(), 1);
        u.stable_to(1, 1); // already stable
        assert_eq!(u.offset, 2);
        u.stable_to(2, 2);
        assert!(u.entries.is_empty());
        assert_eq!(u.offset, 3);
    }

    #[test]
    fn snapshot_lifecycle() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(&[ent(1, 1)]);
        u.restore(snap(5, 2));
        assert!(u.entries.is_empty());
        assert!(u.next_snapshot().is_some());
        u.accept_in_progress();
        assert!(u.next_snapshot().is_none());
        u.stable_snap(4);
        assert!(u.snapshot.is_some(), "wrong index is ignored");
        u.stable_snap(5);
        assert!(u.snapshot.is_none());
        assert_eq!(u.offset, 6);
    }

    #[test]
    fn slice_bounds() {
        let mut u = Unstable::new(3);
        u.truncate_and_append(&[ent(3, 1), ent(4, 1), ent(5, 1)]);
        assert_eq!(u.slice(4, 6).len(), 2);
        assert!(u.slice(3, 3).is_empty());
    }

    #[test]
    #[should_panic(expected = "out of")]
    fn slice_out_of_range_panics() {
        let mut u = Unstable::new(3);
        u.truncate_and_append(&[ent(3, 1)]);
        let _ = u.slice(2, 4);
    }
}
