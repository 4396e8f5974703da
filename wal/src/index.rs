//! The compact in-memory index of what is on disk, and the replay rules
//! shared by recovery and the writer.
//!
//! Per entry the index stores 8 bytes: the entry's offset and length inside
//! its segment (`u32` each; segments are at most 4 GiB). Which segment holds
//! an entry and its term are stored as runs: live entries were written in
//! index order (an append at `i` drops everything at or above `i`), so
//! segment numbers never decrease along the index, and terms change rarely.

use std::collections::{BTreeMap, VecDeque};

use tandem_raft::HardState;

use crate::format::{
    decode_hard_state, decode_marker, parse_entries, Kind, Marker, RawRecord, RECORD_HEADER_BYTES,
};

/// Where one entry's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// Offset of the entry header in its segment.
    pub offset: u32,
    /// Bytes of the entry (header + data + context).
    pub len: u32,
}

const _: () = assert!(std::mem::size_of::<Loc>() == 8);

/// Index of on-disk entry locations `first..first + locs.len()`.
#[derive(Debug, Default)]
pub struct DiskIndex {
    first: u64,
    locs: VecDeque<Loc>,
    /// `(first index, segment)` runs, ascending in both.
    segs: VecDeque<(u64, u64)>,
    /// `(first index, term)` runs, ascending in index.
    terms: VecDeque<(u64, u64)>,
}

impl DiskIndex {
    /// Number of indexed entries.
    pub fn len(&self) -> u64 {
        self.locs.len() as u64
    }

    /// First indexed entry, if any.
    pub fn first(&self) -> Option<u64> {
        (!self.locs.is_empty()).then_some(self.first)
    }

    /// Last indexed entry, if any.
    pub fn last(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.len() - 1)
    }

    /// Drop everything.
    pub fn clear(&mut self) {
        self.locs.clear();
        self.segs.clear();
        self.terms.clear();
    }

    /// Drop entries at or above `i`.
    pub fn truncate_from(&mut self, i: u64) {
        if self.locs.is_empty() {
            return;
        }
        if i <= self.first {
            self.clear();
            return;
        }
        self.locs.truncate((i - self.first) as usize);
        while self.segs.back().is_some_and(|r| r.0 >= i) {
            self.segs.pop_back();
        }
        while self.terms.back().is_some_and(|r| r.0 >= i) {
            self.terms.pop_back();
        }
    }

    /// Drop entries below `i`.
    pub fn drop_before(&mut self, i: u64) {
        if self.locs.is_empty() || i <= self.first {
            return;
        }
        if i > self.last().expect("non-empty") {
            self.clear();
            return;
        }
        self.locs.drain(..(i - self.first) as usize);
        self.first = i;
        for runs in [&mut self.segs, &mut self.terms] {
            while runs.len() > 1 && runs[1].0 <= i {
                runs.pop_front();
            }
            runs[0].0 = i;
        }
    }

    /// Append the entry `index`, which must follow the last one (or start an
    /// empty index).
    pub fn push(&mut self, index: u64, term: u64, seg: u64, loc: Loc) {
        if self.locs.is_empty() {
            self.first = index;
        }
        assert_eq!(
            index,
            self.first + self.len(),
            "index pushes are contiguous"
        );
        assert!(
            self.segs.back().is_none_or(|r| r.1 <= seg),
            "segments never decrease along the index"
        );
        self.locs.push_back(loc);
        if self.segs.back().is_none_or(|r| r.1 != seg) {
            self.segs.push_back((index, seg));
        }
        if self.terms.back().is_none_or(|r| r.1 != term) {
            self.terms.push_back((index, term));
        }
    }

    fn run_at(runs: &VecDeque<(u64, u64)>, i: u64) -> u64 {
        let k = runs.partition_point(|r| r.0 <= i);
        assert!(k > 0, "index {i} below the first run");
        runs[k - 1].1
    }

    /// `(term, segment, location)` of entry `i`, if indexed.
    pub fn get(&self, i: u64) -> Option<(u64, u64, Loc)> {
        if self.locs.is_empty() || i < self.first || i > self.last()? {
            return None;
        }
        let loc = self.locs[(i - self.first) as usize];
        Some((
            Self::run_at(&self.terms, i),
            Self::run_at(&self.segs, i),
            loc,
        ))
    }

    /// Term of entry `i`, if indexed.
    pub fn term(&self, i: u64) -> Option<u64> {
        (self.first().is_some_and(|f| i >= f) && self.last().is_some_and(|l| i <= l))
            .then(|| Self::run_at(&self.terms, i))
    }

    /// Heap bytes held by the index.
    pub fn memory_bytes(&self) -> u64 {
        (self.locs.capacity() * std::mem::size_of::<Loc>()
            + (self.segs.capacity() + self.terms.capacity()) * 16) as u64
    }

    /// Shrink the buffers after a large drop.
    pub fn shrink(&mut self) {
        if self.locs.capacity() > 2 * self.locs.len() + 1024 {
            self.locs.shrink_to_fit();
        }
    }
}

/// The state the records on disk describe, built by replaying them in
/// order. Recovery replays every segment; the writer replays each group it
/// wrote, so this always mirrors the disk.
#[derive(Debug, Default)]
pub struct LogState {
    /// Entry locations.
    pub index: DiskIndex,
    /// Latest compaction point or reset.
    pub snapshot: Marker,
    /// Latest hard state.
    pub hard_state: HardState,
    /// Per segment: highest entry index in it that may still be live
    /// (0: none). A closed segment whose value is below the first index holds
    /// nothing needed and can be deleted.
    pub seg_max: BTreeMap<u64, u64>,
    /// Where entries last started beyond the end of the log (a segment before
    /// it was deleted by compaction): `(segment, offset, index)`.
    pub hole: Option<(u64, u64, u64)>,
}

impl LogState {
    /// Last index of the log (the snapshot index if no entries).
    pub fn last_index(&self) -> u64 {
        self.index.last().unwrap_or(self.snapshot.index)
    }

    /// Apply one validated record found at `rec.offset` of segment `seg`.
    pub fn apply(&mut self, seg: u64, rec: RawRecord<'_>) -> Result<(), String> {
        self.seg_max.entry(seg).or_insert(0);
        match rec.kind {
            Kind::HardState => self.hard_state = decode_hard_state(rec.payload)?,
            Kind::Marker => {
                let m = decode_marker(rec.payload)?;
                if m.reset {
                    self.index.clear();
                    self.snapshot = m;
                    self.hole = None;
                    for v in self.seg_max.values_mut() {
                        *v = 0;
                    }
                } else if m.index >= self.snapshot.index {
                    self.snapshot = m;
                    self.index.drop_before(m.index + 1);
                }
            }
            Kind::Entries => {
                let (first, spans) = parse_entries(rec.payload)?;
                if first <= self.snapshot.index {
                    return Err(format!(
                        "entries from {first} at or below the compaction point {}",
                        self.snapshot.index
                    ));
                }
                let last = self.last_index();
                if first > last + 1 {
                    // Only legitimate at the start of replay, after compaction
                    // deleted the segments holding the entries before it; the
                    // final check in recovery rejects it otherwise.
                    self.index.clear();
                    self.hole = Some((seg, rec.offset, first));
                } else if first <= last {
                    self.index.truncate_from(first);
                    for v in self.seg_max.values_mut() {
                        *v = (*v).min(first - 1);
                    }
                }
                let base = rec.offset + RECORD_HEADER_BYTES;
                for s in &spans {
                    let offset = base + s.offset;
                    assert!(
                        offset + s.len <= u64::from(u32::MAX),
                        "segment offsets fit u32"
                    );
                    self.index.push(
                        s.index,
                        s.term,
                        seg,
                        Loc {
                            offset: offset as u32,
                            len: s.len as u32,
                        },
                    );
                }
                let top = spans.last().expect("non-empty").index;
                let v = self.seg_max.get_mut(&seg).expect("inserted above");
                *v = (*v).max(top);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(o: u32) -> Loc {
        Loc { offset: o, len: 20 }
    }

    #[test]
    fn index_truncates_drops_and_finds_runs() {
        let mut ix = DiskIndex::default();
        for i in 5..=20 {
            ix.push(i, i / 4, 1 + i / 10, loc(i as u32 * 100));
        }
        assert_eq!((ix.first(), ix.last()), (Some(5), Some(20)));
        assert_eq!(ix.get(9), Some((2, 1, loc(900))));
        assert_eq!(ix.get(10), Some((2, 2, loc(1000))));
        assert_eq!(ix.get(4), None);
        assert_eq!(ix.get(21), None);
        ix.truncate_from(12);
        assert_eq!(ix.last(), Some(11));
        ix.push(12, 9, 3, loc(1));
        assert_eq!(ix.get(12), Some((9, 3, loc(1))));
        assert_eq!(ix.term(11), Some(2));
        ix.drop_before(11);
        assert_eq!(ix.first(), Some(11));
        assert_eq!(ix.get(11), Some((2, 2, loc(1100))));
        ix.drop_before(100);
        assert_eq!(ix.first(), None);
        ix.push(200, 1, 4, loc(0));
        assert_eq!(ix.get(200), Some((1, 4, loc(0))));
    }

    #[test]
    fn index_uses_at_most_sixteen_bytes_per_entry() {
        let mut ix = DiskIndex::default();
        let n = 100_000;
        for i in 1..=n {
            ix.push(i, 1 + i / 50_000, 1 + i / 30_000, loc(0));
        }
        let per_entry = ix.memory_bytes() as f64 / n as f64;
        assert!(per_entry <= 16.0, "{per_entry} bytes per entry");
    }
}
