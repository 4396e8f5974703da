//! Helpers shared by the integration tests.
#![allow(dead_code)]

use tandem_raft::Entry;

/// A deterministic entry: its bytes are a function of `(index, term, len)`.
pub fn entry(index: u64, term: u64, len: usize) -> Entry {
    let fill = (index.wrapping_mul(0x9e37) ^ term.wrapping_mul(0x85eb)) as u8;
    Entry {
        term,
        index,
        data: (0..len).map(|k| fill.wrapping_add(k as u8)).collect(),
        context: vec![term as u8].into(),
        ..Entry::default()
    }
}

pub fn entries(first: u64, count: u64, term: u64, len: usize) -> Vec<Entry> {
    (first..first + count)
        .map(|i| entry(i, term, len))
        .collect()
}

/// Start offsets of the records of a segment image, walking the length
/// fields from the header on (stops at the zero end).
pub fn record_offsets(seg: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut pos = 32usize;
    while pos + 9 <= seg.len() {
        let len = u32::from_le_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push(pos as u64);
        pos += 9 + len;
    }
    out
}
