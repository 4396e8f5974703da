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
    decode_hard_state, decode_marker, entries_header, walk_entries, EntrySpan, Kind, Marker,
    RawRecord, RECORD_HEADER_BYTES,
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

/// Entries per chunk of [`Locs`].
const CHUNK_ENTRIES: usize = 4096;

/// A deque of [`Loc`] in fixed-size chunks: unlike a `VecDeque`, whose
/// capacity doubles, the slack is at most two chunks (64 KiB), so the index
/// stays at 8 bytes per entry at any size.
#[derive(Debug, Default)]
struct Locs {
    chunks: VecDeque<Vec<Loc>>,
    /// Entries dropped from the front of the first chunk.
    skip: usize,
    len: usize,
}

impl Locs {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.skip = 0;
        self.len = 0;
    }

    fn push_back(&mut self, loc: Loc) {
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK_ENTRIES) {
            self.chunks.push_back(Vec::with_capacity(CHUNK_ENTRIES));
        }
        self.chunks.back_mut().expect("pushed above").push(loc);
        self.len += 1;
    }

    fn get(&self, k: usize) -> Loc {
        assert!(k < self.len, "loc {k} of {}", self.len);
        let p = self.skip + k;
        self.chunks[p / CHUNK_ENTRIES][p % CHUNK_ENTRIES]
    }

    /// Keep the first `n` entries.
    fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        if n == 0 {
            self.clear();
            return;
        }
        let p = self.skip + n;
        let chunks = p.div_ceil(CHUNK_ENTRIES);
        self.chunks.truncate(chunks);
        let rem = p - (chunks - 1) * CHUNK_ENTRIES;
        self.chunks.back_mut().expect("n > 0").truncate(rem);
        self.len = n;
    }

    /// Drop the first `n` entries.
    fn drain_front(&mut self, n: usize) {
        if n >= self.len {
            self.clear();
            return;
        }
        self.skip += n;
        self.len -= n;
        while self.skip >= CHUNK_ENTRIES {
            self.chunks.pop_front();
            self.skip -= CHUNK_ENTRIES;
        }
    }

    fn memory_bytes(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum::<usize>() * std::mem::size_of::<Loc>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Loc>>()
    }
}

/// Index of on-disk entry locations `first..first + locs.len()`.
#[derive(Debug, Default)]
pub struct DiskIndex {
    first: u64,
    locs: Locs,
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
        self.locs.drain_front((i - self.first) as usize);
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
        let loc = self.locs.get((i - self.first) as usize);
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
        (self.locs.memory_bytes() + (self.segs.capacity() + self.terms.capacity()) * 16) as u64
    }

    /// Shrink the run buffers after a large drop.
    pub fn shrink(&mut self) {
        self.segs.shrink_to_fit();
        self.terms.shrink_to_fit();
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
                // The record was validated (structure and CRC) by the scan
                // or built by the writer; only its place in the log is
                // checked here.
                let (first, count) = entries_header(rec.payload);
                self.apply_entries(seg, rec.offset, rec.payload.len(), first, count, |f| {
                    walk_entries(rec.payload, f).map(|_| ())
                })?;
            }
        }
        Ok(())
    }

    /// [`LogState::apply`] of an entries record the writer built, from the
    /// entries' spans instead of its bytes (its large payloads are not in
    /// one buffer).
    ///
    /// # Errors
    /// As [`LogState::apply`].
    pub fn apply_entry_spans(
        &mut self,
        seg: u64,
        offset: u64,
        payload_len: usize,
        spans: &[EntrySpan],
    ) -> Result<(), String> {
        let first = spans.first().ok_or("entries record with no entries")?.index;
        self.apply_entries(seg, offset, payload_len, first, spans.len() as u64, |f| {
            spans.iter().copied().for_each(f);
            Ok(())
        })
    }

    /// Index the entries of a record at `offset` of segment `seg`, which
    /// `walk` lists in order.
    fn apply_entries(
        &mut self,
        seg: u64,
        offset: u64,
        payload_len: usize,
        first: u64,
        count: u64,
        walk: impl FnOnce(&mut dyn FnMut(EntrySpan)) -> Result<(), String>,
    ) -> Result<(), String> {
        self.seg_max.entry(seg).or_insert(0);
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
            self.hole = Some((seg, offset, first));
        } else if first <= last {
            self.index.truncate_from(first);
            for v in self.seg_max.values_mut() {
                *v = (*v).min(first - 1);
            }
        }
        let base = offset + RECORD_HEADER_BYTES;
        assert!(
            base + payload_len as u64 <= u64::from(u32::MAX),
            "segment offsets fit u32"
        );
        let index = &mut self.index;
        walk(&mut |s: EntrySpan| {
            index.push(
                s.index,
                s.term,
                seg,
                Loc {
                    offset: (base + s.offset) as u32,
                    len: s.len as u32,
                },
            );
        })?;
        let top = first + count - 1;
        let v = self.seg_max.get_mut(&seg).expect("inserted above");
        *v = (*v).max(top);
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
    fn chunked_locs_match_a_vecdeque() {
        let mut x: u64 = 88_172_645_463_325_252;
        let mut rnd = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut locs = Locs::default();
        let mut model: VecDeque<Loc> = VecDeque::new();
        for step in 0..20_000u32 {
            match rnd(10) {
                0 => {
                    let n = rnd(model.len() as u64 + 1) as usize;
                    locs.truncate(n);
                    model.truncate(n);
                }
                1 => {
                    let n = rnd(model.len() as u64 / 2 + 1) as usize;
                    locs.drain_front(n);
                    model.drain(..n);
                }
                _ => {
                    for k in 0..rnd(3000) {
                        let l = loc(step.wrapping_mul(7) ^ k as u32);
                        locs.push_back(l);
                        model.push_back(l);
                    }
                }
            }
            assert_eq!(locs.len(), model.len());
            assert_eq!(locs.is_empty(), model.is_empty());
            if !model.is_empty() {
                for k in [0, model.len() / 2, model.len() - 1] {
                    assert_eq!(locs.get(k), model[k]);
                }
            }
            assert!(locs.memory_bytes() <= model.len() * 8 + 3 * CHUNK_ENTRIES * 8 + 4096);
        }
    }

    #[test]
    fn index_uses_at_most_sixteen_bytes_per_entry() {
        let mut ix = DiskIndex::default();
        let n = 100_000;
        for i in 1..=n {
            ix.push(i, 1 + i / 50_000, 1 + i / 30_000, loc(i as u32));
        }
        let per_entry = ix.memory_bytes() as f64 / n as f64;
        assert!(per_entry <= 8.5, "{per_entry} bytes per entry");
        // Truncations and front drops across chunk boundaries.
        ix.truncate_from(50_001);
        ix.drop_before(4_000);
        assert_eq!((ix.first(), ix.last()), (Some(4_000), Some(50_000)));
        for i in [4_000, 4_095, 4_096, 8_192, 50_000] {
            assert_eq!(ix.get(i).map(|g| g.2), Some(loc(i as u32)));
        }
        ix.push(50_001, 9, 9, loc(7));
        assert_eq!(ix.get(50_001), Some((9, 9, loc(7))));
        ix.truncate_from(4_001);
        assert_eq!(ix.last(), Some(4_000));
        ix.drop_before(4_001);
        assert_eq!(ix.first(), None);
    }
}
