//! Byte layout of segments and records (see `docs/wal.md`).
//!
//! ```text
//! segment header (32 bytes)
//!   0  magic    8  b"TNDMWAL\0"
//!   8  version  4  u32 = 1
//!  12  flags    4  u32 = 0
//!  16  sequence 8  u64, equals the number in the file name
//!  24  crc      4  CRC-32 of bytes 0..24
//!  28  reserved 4  zero
//! record (at any offset >= 32)
//!   0  len      4  u32, payload bytes (> 0)
//!   4  crc      4  CRC-32 of sequence(8, LE) || kind(1) || payload
//!   8  kind     1  1 = entries, 2 = hard state, 3 = marker
//!   9  payload len bytes
//! ```
//! All integers are little-endian. Nine zero bytes where a record header
//! would start (the *end marker*) end the records of a segment; the writer
//! writes one after every group, in the same write, so the end is explicit
//! even in a recycled segment whose later bytes are stale records of an
//! older sequence.

use tandem_raft::{Bytes, Entry, EntryType, HardState};

/// Segment header bytes.
pub const HEADER_BYTES: u64 = 32;
/// Record header bytes (`len | crc | kind`).
pub const RECORD_HEADER_BYTES: u64 = 9;
/// Bytes of the end marker: a record header of zeros.
pub const END_MARKER_BYTES: u64 = RECORD_HEADER_BYTES;
/// Per-entry header bytes inside an entries payload
/// (`type u8 | term u64 | data_len u32 | context_len u32`).
pub const ENTRY_HEADER_BYTES: u64 = 17;
/// Bytes before the first entry of an entries payload (`first_index u64 | count u32`).
pub const ENTRIES_PREFIX_BYTES: u64 = 12;
/// Segment magic.
pub const MAGIC: [u8; 8] = *b"TNDMWAL\0";
/// Current format version.
pub const VERSION: u32 = 1;
/// Largest index the log accepts (on disk and from callers), far beyond any
/// real log, so `index + 1` arithmetic can never overflow.
pub const INDEX_MAX: u64 = 1 << 62;

const HARD_STATE_BYTES: usize = 24;
const MARKER_BYTES: usize = 17;

const _: () = assert!(HEADER_BYTES % 8 == 0);
const _: () = assert!(ENTRY_HEADER_BYTES == 1 + 8 + 4 + 4);
// The raft size accounting must cover our per-entry header, so a size
// computed from an index location never under-counts.
const _: () = assert!(tandem_raft::types::ENTRY_OVERHEAD_BYTES >= ENTRY_HEADER_BYTES);

/// Record kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Entries starting at some index; replaces any suffix at or above it.
    Entries = 1,
    /// The hard state; the last one wins.
    HardState = 2,
    /// Compaction point (`reset = 0`) or snapshot reset (`reset = 1`).
    Marker = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Entries),
            2 => Some(Kind::HardState),
            3 => Some(Kind::Marker),
            _ => None,
        }
    }
}

/// File name of segment `seq`.
#[must_use]
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// Parse a segment file name.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<u64> {
    parse_hex_name(name, ".wal")
}

/// File name of a spare segment file (a recycled segment waiting for
/// reuse), named after the sequence it last had. Recovery never reads it as
/// part of the log.
#[must_use]
pub fn spare_name(seq: u64) -> String {
    format!("{seq:016x}.spare")
}

/// Parse a spare file name.
#[must_use]
pub fn parse_spare_name(name: &str) -> Option<u64> {
    parse_hex_name(name, ".spare")
}

fn parse_hex_name(name: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_suffix(suffix)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Encode the header of segment `seq`.
#[must_use]
pub fn encode_header(seq: u64) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Check a header; `Err(reason)` if it does not validate for `seq`.
pub fn check_header(bytes: &[u8], seq: u64) -> Result<(), String> {
    if bytes.len() < HEADER_BYTES as usize {
        return Err(format!(
            "file is {} bytes, shorter than a header",
            bytes.len()
        ));
    }
    if bytes[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    let crc = u32_at(bytes, 24);
    if crc32fast::hash(&bytes[0..24]) != crc {
        return Err("header crc mismatch".into());
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let s = u64_at(bytes, 16);
    if s != seq {
        return Err(format!(
            "header sequence {s} does not match file name {seq}"
        ));
    }
    Ok(())
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// A record encoded by a submitter: header (with the CRC not yet salted),
/// payload, and the running CRC of `kind || payload`, so the writer only
/// combines it with the segment sequence (O(log n), not a pass over the
/// bytes).
///
/// The bytes are held in pieces: `head` holds everything except the large
/// payloads (see [`encode_entries`]), which stay in the entries' own
/// buffers; the writer hands all pieces to one vectored write.
#[derive(Debug)]
pub struct EncodedRecord {
    /// `len | crc placeholder | kind | payload`, without the shared payloads.
    head: Vec<u8>,
    /// Shared payloads, in order: each goes right after `head[..at]`.
    shared: Vec<(usize, Bytes)>,
    /// Record bytes in all.
    len: usize,
    /// An entries record's entries, as their spans in the payload (the
    /// writer indexes them from these instead of re-reading the bytes).
    spans: Vec<EntrySpan>,
    /// CRC of `kind || payload` (the salt is added by [`EncodedRecord::seal`]).
    crc_body: crc32fast::Hasher,
    /// An entries record's CRC of its payload after `first_index`, so that
    /// [`EncodedRecord::set_first_index`] needs no pass over the payload.
    crc_after_index: Option<crc32fast::Hasher>,
}

/// The pieces of an [`EncodedRecord`], in order (none empty).
pub struct Pieces<'a> {
    rec: &'a EncodedRecord,
    /// Next shared payload.
    k: usize,
    /// Start of the next piece of `head`.
    at: usize,
    /// The next piece is shared payload `k` (not `head` up to it).
    in_shared: bool,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let r = self.rec;
            if self.in_shared {
                self.in_shared = false;
                let (_, b) = &r.shared[self.k];
                self.k += 1;
                if !b.is_empty() {
                    return Some(&b[..]);
                }
                continue;
            }
            let end = match r.shared.get(self.k) {
                Some(&(pos, _)) => {
                    self.in_shared = true;
                    pos
                }
                None if self.at < r.head.len() => r.head.len(),
                None => return None,
            };
            let piece = &r.head[self.at..end];
            self.at = end;
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }
}

impl EncodedRecord {
    fn new(kind: Kind, payload_hint: usize) -> Self {
        let mut head = Vec::with_capacity(RECORD_HEADER_BYTES as usize + payload_hint);
        head.extend_from_slice(&[0u8; 8]);
        head.push(kind as u8);
        EncodedRecord {
            len: head.len(),
            head,
            shared: Vec::new(),
            spans: Vec::new(),
            crc_body: crc32fast::Hasher::new(),
            crc_after_index: None,
        }
    }

    /// Append bytes copied into the record.
    fn put(&mut self, b: &[u8]) {
        self.head.extend_from_slice(b);
        self.len += b.len();
    }

    /// Whether a payload is shared rather than copied.
    fn shares(b: &Bytes, shared_min: usize) -> bool {
        !b.is_empty() && b.len() >= shared_min
    }

    /// Append a payload: shared if [`EncodedRecord::shares`], copied
    /// otherwise.
    fn put_payload(&mut self, b: &Bytes, shared_min: usize) {
        if Self::shares(b, shared_min) {
            self.shared.push((self.head.len(), b.clone()));
            self.len += b.len();
        } else {
            self.put(b);
        }
    }

    fn finish(mut self) -> Self {
        let len = self.len - RECORD_HEADER_BYTES as usize;
        assert!(
            len > 0 && len <= u32::MAX as usize,
            "record payload length {len}"
        );
        self.head[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        if self.kind() == Kind::Entries {
            // kind and first_index are checksummed apart from the rest, so
            // the first index can change without a pass over the payload.
            self.crc_after_index = Some(self.crc_from(RECORD_HEADER_BYTES as usize + 8));
            self.checksum_entries_head();
        } else {
            // kind || payload: everything after len and crc.
            self.crc_body = self.crc_from(8);
        }
        self
    }

    /// CRC of the record's bytes from offset `skip` on, over all pieces.
    fn crc_from(&self, mut skip: usize) -> crc32fast::Hasher {
        let mut h = crc32fast::Hasher::new();
        for piece in self.pieces() {
            let n = skip.min(piece.len());
            skip -= n;
            h.update(&piece[n..]);
        }
        h
    }

    /// `crc_body` of an entries record from its kind, first index and
    /// `crc_after_index` (an O(log n) combine).
    fn checksum_entries_head(&mut self) {
        let after = self
            .crc_after_index
            .as_ref()
            .expect("an entries record keeps the CRC after its first index");
        let h0 = RECORD_HEADER_BYTES as usize - 1;
        let mut h = crc32fast::Hasher::new();
        h.update(&self.head[h0..RECORD_HEADER_BYTES as usize + 8]);
        h.combine(after);
        self.crc_body = h;
    }

    /// The first index of an entries record (`None` for other kinds).
    #[cfg(test)]
    #[must_use]
    pub fn first_index(&self) -> Option<u64> {
        self.crc_after_index.as_ref()?;
        let at = RECORD_HEADER_BYTES as usize;
        Some(u64::from_le_bytes(
            self.head[at..at + 8].try_into().expect("8 bytes"),
        ))
    }

    /// Move an entries record to start at `first` (its entries become
    /// `first, first + 1, ...`): the index field, the spans and the CRC are
    /// updated without a pass over the payload, since entry indexes are
    /// implicit. Lets a submitter encode before it knows where its entries
    /// land. Panics on any other kind of record (a bug).
    pub fn set_first_index(&mut self, first: u64) {
        assert_eq!(self.kind(), Kind::Entries, "only entries records move");
        let at = RECORD_HEADER_BYTES as usize;
        self.head[at..at + 8].copy_from_slice(&first.to_le_bytes());
        for (k, span) in self.spans.iter_mut().enumerate() {
            span.index = first + k as u64;
        }
        self.checksum_entries_head();
    }

    /// Fill in the CRC salted with segment `seq`; the bytes are then final.
    pub fn seal(&mut self, seq: u64) {
        let mut h = crc32fast::Hasher::new();
        h.update(&seq.to_le_bytes());
        h.combine(&self.crc_body);
        let crc = h.finalize();
        self.head[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Total bytes on disk.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// The record's kind.
    #[must_use]
    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.head[8]).expect("the kind byte was written from a Kind")
    }

    /// The record's bytes as pieces, for a vectored write.
    #[must_use]
    pub fn pieces(&self) -> Pieces<'_> {
        Pieces {
            rec: self,
            k: 0,
            at: 0,
            in_shared: false,
        }
    }

    /// The payload, if it is held in one piece (hard states, markers, and
    /// entries records without shared payloads).
    #[must_use]
    pub fn contiguous_payload(&self) -> Option<&[u8]> {
        self.shared
            .is_empty()
            .then(|| &self.head[RECORD_HEADER_BYTES as usize..])
    }

    /// An entries record's entries, in order (empty for other kinds).
    #[must_use]
    pub fn entry_spans(&self) -> &[EntrySpan] {
        &self.spans
    }

    /// The record's bytes in one buffer (tests and checks).
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        self.pieces().for_each(|p| v.extend_from_slice(p));
        v
    }
}

/// Encode an entries record. `entries` must be non-empty and contiguous.
/// Payloads (data or context) of at least `shared_min` bytes are referenced
/// (a clone of their [`Bytes`]), not copied: for large entries the copy
/// costs as much memory bandwidth as the write itself. The bytes the record
/// stands for are the same either way.
#[must_use]
pub fn encode_entries(entries: &[Entry], shared_min: usize) -> EncodedRecord {
    assert!(
        !entries.is_empty(),
        "an entries record holds at least one entry"
    );
    let hint = entries
        .iter()
        .map(|e| {
            let inline = |b: &Bytes| {
                if EncodedRecord::shares(b, shared_min) {
                    0
                } else {
                    b.len()
                }
            };
            ENTRY_HEADER_BYTES as usize + inline(&e.data) + inline(&e.context)
        })
        .sum::<usize>()
        + ENTRIES_PREFIX_BYTES as usize;
    let mut r = EncodedRecord::new(Kind::Entries, hint);
    r.spans.reserve_exact(entries.len());
    r.put(&entries[0].index.to_le_bytes());
    r.put(&(entries.len() as u32).to_le_bytes());
    for (k, e) in entries.iter().enumerate() {
        assert_eq!(
            e.index,
            entries[0].index + k as u64,
            "entries are contiguous"
        );
        let offset = (r.len - RECORD_HEADER_BYTES as usize) as u64;
        r.put(&[entry_type_to_u8(e.entry_type)]);
        r.put(&e.term.to_le_bytes());
        r.put(&(e.data.len() as u32).to_le_bytes());
        r.put(&(e.context.len() as u32).to_le_bytes());
        r.put_payload(&e.data, shared_min);
        r.put_payload(&e.context, shared_min);
        r.spans.push(EntrySpan {
            index: e.index,
            term: e.term,
            offset,
            len: ENTRY_HEADER_BYTES + e.data.len() as u64 + e.context.len() as u64,
        });
    }
    r.finish()
}

/// Encode a hard-state record.
#[must_use]
pub fn encode_hard_state(hs: &HardState) -> EncodedRecord {
    let mut r = EncodedRecord::new(Kind::HardState, HARD_STATE_BYTES);
    r.put(&hs.term.to_le_bytes());
    r.put(&hs.vote.to_le_bytes());
    r.put(&hs.commit.to_le_bytes());
    r.finish()
}

/// A compaction point or snapshot reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Marker {
    /// Entries at or below this index are gone; `term(index)` is `term`.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
    /// True: every entry is dropped and the log restarts at `index + 1`.
    pub reset: bool,
}

/// Encode a marker record.
#[must_use]
pub fn encode_marker(m: &Marker) -> EncodedRecord {
    let mut r = EncodedRecord::new(Kind::Marker, MARKER_BYTES);
    r.put(&m.index.to_le_bytes());
    r.put(&m.term.to_le_bytes());
    r.put(&[u8::from(m.reset)]);
    r.finish()
}

fn entry_type_to_u8(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type_from_u8(b: u8) -> Option<EntryType> {
    match b {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

/// One entry's place inside an entries payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySpan {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Offset of the entry header from the start of the payload.
    pub offset: u64,
    /// Entry bytes (header + data + context).
    pub len: u64,
}

/// Walk an entries payload: `(first_index, spans)` (tests).
#[cfg(test)]
pub fn parse_entries(payload: &[u8]) -> Result<(u64, Vec<EntrySpan>), String> {
    let mut spans = Vec::new();
    let (first, _) = walk_entries(payload, |s| spans.push(s))?;
    Ok((first, spans))
}

/// `(first_index, count)` of an entries payload already validated.
#[must_use]
pub fn entries_header(payload: &[u8]) -> (u64, u64) {
    (u64_at(payload, 0), u64::from(u32_at(payload, 8)))
}

/// Walk an entries payload without allocating, calling `f` for each entry
/// in order: `(first_index, count)`. Checks that the entries tile the payload
/// exactly; on an error `f` may have seen a prefix.
pub fn walk_entries(payload: &[u8], mut f: impl FnMut(EntrySpan)) -> Result<(u64, u64), String> {
    if payload.len() < ENTRIES_PREFIX_BYTES as usize {
        return Err("entries payload shorter than its prefix".into());
    }
    let (first, count) = entries_header(payload);
    if count == 0 {
        return Err("entries record with zero entries".into());
    }
    if count.saturating_mul(ENTRY_HEADER_BYTES) > payload.len() as u64 {
        return Err(format!("entry count {count} cannot fit"));
    }
    if first == 0 || first + count > INDEX_MAX {
        return Err(format!("impossible first index {first}"));
    }
    let mut pos = ENTRIES_PREFIX_BYTES;
    for k in 0..count {
        let len = entry_len_at(payload, pos)?;
        f(EntrySpan {
            index: first + k,
            term: u64_at(payload, pos as usize + 1),
            offset: pos,
            len,
        });
        pos += len;
    }
    if pos != payload.len() as u64 {
        return Err(format!(
            "entries end at {pos}, payload has {} bytes",
            payload.len()
        ));
    }
    Ok((first, count))
}

fn entry_len_at(buf: &[u8], pos: u64) -> Result<u64, String> {
    let p = pos as usize;
    if p + ENTRY_HEADER_BYTES as usize > buf.len() {
        return Err("entry header past end of payload".into());
    }
    if entry_type_from_u8(buf[p]).is_none() {
        return Err(format!("bad entry type {}", buf[p]));
    }
    let len = ENTRY_HEADER_BYTES + u64::from(u32_at(buf, p + 9)) + u64::from(u32_at(buf, p + 13));
    if pos + len > buf.len() as u64 {
        return Err("entry past end of payload".into());
    }
    Ok(len)
}

/// Decode one entry from its bytes (header + data + context).
pub fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, String> {
    let len = entry_len_at(bytes, 0)?;
    if len != bytes.len() as u64 {
        return Err(format!("entry is {} bytes, expected {len}", bytes.len()));
    }
    let entry_type = entry_type_from_u8(bytes[0]).expect("checked by entry_len_at");
    let term = u64_at(bytes, 1);
    let dlen = u32_at(bytes, 9) as usize;
    let h = ENTRY_HEADER_BYTES as usize;
    // One allocation for both: the context is usually empty or short.
    let body = Bytes::copy_from_slice(&bytes[h..]);
    Ok(Entry {
        entry_type,
        term,
        index,
        data: body.slice(..dlen),
        context: body.slice(dlen..),
    })
}

/// Decode a hard-state payload.
pub fn decode_hard_state(p: &[u8]) -> Result<HardState, String> {
    if p.len() != HARD_STATE_BYTES {
        return Err(format!("hard state payload is {} bytes", p.len()));
    }
    Ok(HardState {
        term: u64_at(p, 0),
        vote: u64_at(p, 8),
        commit: u64_at(p, 16),
    })
}

/// Decode a marker payload.
pub fn decode_marker(p: &[u8]) -> Result<Marker, String> {
    if p.len() != MARKER_BYTES || p[16] > 1 || u64_at(p, 0) > INDEX_MAX {
        return Err("bad marker payload".into());
    }
    Ok(Marker {
        index: u64_at(p, 0),
        term: u64_at(p, 8),
        reset: p[16] == 1,
    })
}

/// A record found by [`scan_segment`].
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Offset of the record header in the segment.
    pub offset: u64,
    /// Kind.
    pub kind: Kind,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// Where the valid records of a segment stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Records end at `end`: an end marker (or the zero tail, or the end of
    /// the file) is there, and no valid record of this segment follows.
    Clean {
        /// First byte after the last record.
        end: u64,
    },
    /// The bytes at `offset` are not a valid record (and not the zero end).
    Damaged {
        /// Offset of the bad record header.
        offset: u64,
        /// What failed.
        reason: String,
        /// Offset of a valid record found later in the segment, if any:
        /// then the damage is not a torn tail.
        later_valid: Option<u64>,
        /// One past the last non-zero byte of the segment (in a recycled
        /// segment, stale bytes count).
        nonzero_end: u64,
    },
}

/// Validate the record at `pos`, returning it and its total length.
fn record_at(buf: &[u8], seq: u64, pos: usize) -> Result<(RawRecord<'_>, usize), String> {
    let h = RECORD_HEADER_BYTES as usize;
    if pos + h > buf.len() {
        return Err("record header past end of segment".into());
    }
    let len = u32_at(buf, pos) as usize;
    let crc = u32_at(buf, pos + 4);
    let kind =
        Kind::from_u8(buf[pos + 8]).ok_or_else(|| format!("bad record kind {}", buf[pos + 8]))?;
    if len == 0 {
        return Err("zero-length record".into());
    }
    if len > buf.len() - pos - h {
        return Err(format!("record length {len} past end of segment"));
    }
    let payload = &buf[pos + h..pos + h + len];
    // Cheap structural checks first: a stray candidate in a scan for later
    // records rarely gets as far as the CRC.
    match kind {
        Kind::HardState if len != HARD_STATE_BYTES => return Err("bad hard state length".into()),
        Kind::Marker if len != MARKER_BYTES => return Err("bad marker length".into()),
        _ => {}
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&buf[pos + 8..pos + h + len]);
    if hasher.finalize() != crc {
        return Err("record crc mismatch".into());
    }
    // A record with a valid CRC but an impossible payload is corruption we
    // wrote ourselves; report it the same way.
    match kind {
        Kind::Entries => {
            walk_entries(payload, |_| {})?;
        }
        Kind::HardState => {
            decode_hard_state(payload)?;
        }
        Kind::Marker => {
            decode_marker(payload)?;
        }
    }
    Ok((
        RawRecord {
            offset: pos as u64,
            kind,
            payload,
        },
        h + len,
    ))
}

/// Validate one complete record image (`bytes` holds exactly the record) as
/// recovery would for segment `seq`.
pub fn check_record(bytes: &[u8], seq: u64) -> Result<(), String> {
    let (_, len) = record_at(bytes, seq, 0)?;
    if len != bytes.len() {
        return Err(format!("record is {len} bytes, image has {}", bytes.len()));
    }
    Ok(())
}

/// Cheap pre-check of a candidate record header before paying for a CRC.
fn plausible(buf: &[u8], pos: usize) -> bool {
    let h = RECORD_HEADER_BYTES as usize;
    if pos + h > buf.len() {
        return false;
    }
    let len = u32_at(buf, pos) as usize;
    if len == 0 || len > buf.len() - pos - h {
        return false;
    }
    match Kind::from_u8(buf[pos + 8]) {
        None => false,
        Some(Kind::HardState) => len == HARD_STATE_BYTES,
        Some(Kind::Marker) => len == MARKER_BYTES,
        Some(Kind::Entries) => {
            let p = &buf[pos + h..pos + h + len];
            // Walking the entry lengths is much cheaper than the CRC and
            // rejects nearly every random candidate.
            walk_entries(p, |_| {}).is_ok()
        }
    }
}

/// True if `pos` is where records may legitimately stop: the end of the
/// image, or an end marker (nine zero bytes; fewer if the image ends first).
fn is_end_at(buf: &[u8], pos: usize) -> bool {
    let h = RECORD_HEADER_BYTES as usize;
    buf[pos.min(buf.len())..(pos + h).min(buf.len())]
        .iter()
        .all(|&b| b == 0)
}

/// Look for a valid record of segment `seq` starting after `from` that is
/// followed by another valid record or by an end: the bytes of a log the
/// writer wrote. Requiring the second link makes a stale record of an older
/// generation (in a recycled segment, millions of them) that happens to pass
/// the 32-bit CRC under this sequence count only if its successor does too.
fn find_valid_after(buf: &[u8], seq: u64, from: usize, nonzero_end: usize) -> Option<u64> {
    let end = nonzero_end.min(buf.len());
    let mut pos = from + 1;
    // A valid record has a non-zero kind byte at `pos + 8` before `end`.
    while pos + 8 < end {
        // The kind byte is 1, 2 or 3: jump between those.
        let k = buf[pos + 8..end]
            .iter()
            .position(|&b| (1..=3).contains(&b))?;
        pos += k;
        if plausible(buf, pos) {
            if let Ok((_, len)) = record_at(buf, seq, pos) {
                let next = pos + len;
                if is_end_at(buf, next) || record_at(buf, seq, next).is_ok() {
                    return Some(pos as u64);
                }
            }
        }
        pos += 1;
    }
    None
}

/// One past the last non-zero byte (0 if all zero). Scans 8 bytes at a time:
/// the zero tail of a preallocated segment is most of the file.
fn nonzero_end(buf: &[u8]) -> usize {
    let words = buf.len() / 8 * 8;
    if let Some(p) = buf[words..].iter().rposition(|&b| b != 0) {
        return words + p + 1;
    }
    let word = buf[..words]
        .chunks_exact(8)
        .rposition(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) != 0);
    match word {
        None => 0,
        Some(w) => {
            let p = buf[w * 8..w * 8 + 8]
                .iter()
                .rposition(|&b| b != 0)
                .expect("a non-zero word has a non-zero byte");
            w * 8 + p + 1
        }
    }
}

/// Validate every record of a segment image (header already checked),
/// calling `f` for each, in order. Stops at the end of the records (an end
/// marker, or the zero tail) or at the first damage; `f` returning an error
/// stops the scan with that error.
///
/// An end marker followed by a valid record of this segment is damage (a
/// zeroed region in the middle), not an end; any other bytes after it (the
/// stale records of a recycled segment, the rest of a torn write that
/// recovery cut) are not part of the log.
pub fn scan_segment<'a, E>(
    buf: &'a [u8],
    seq: u64,
    mut f: impl FnMut(RawRecord<'a>) -> Result<(), E>,
) -> Result<ScanEnd, E> {
    let nonzero_end = nonzero_end(buf);
    let mut pos = HEADER_BYTES as usize;
    loop {
        if pos >= nonzero_end {
            return Ok(ScanEnd::Clean { end: pos as u64 });
        }
        if is_end_at(buf, pos) {
            return Ok(match find_valid_after(buf, seq, pos, nonzero_end) {
                None => ScanEnd::Clean { end: pos as u64 },
                Some(later) => ScanEnd::Damaged {
                    offset: pos as u64,
                    reason: "zeroed bytes followed by valid records".into(),
                    later_valid: Some(later),
                    nonzero_end: nonzero_end as u64,
                },
            });
        }
        match record_at(buf, seq, pos) {
            Ok((rec, len)) => {
                f(rec)?;
                pos += len;
            }
            Err(reason) => {
                return Ok(ScanEnd::Damaged {
                    offset: pos as u64,
                    reason,
                    later_valid: find_valid_after(buf, seq, pos, nonzero_end),
                    nonzero_end: nonzero_end as u64,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            entry_type: EntryType::EntryConfChangeV2,
            term,
            index,
            data: data.to_vec().into(),
            context: b"ctx".to_vec().into(),
        }
    }

    #[test]
    fn a_moved_entries_record_is_the_record_encoded_at_its_new_index() {
        // Shared (>= 8 bytes) and copied payloads, so the CRC after the
        // index spans pieces of both kinds.
        let at = |first: u64| -> Vec<Entry> {
            (0..3)
                .map(|k| entry(first + k, 7, &[k as u8; 40][..(10 + 10 * k as usize)]))
                .collect()
        };
        for shared_min in [8, usize::MAX] {
            let mut moved = encode_entries(&at(5), shared_min);
            assert_eq!(moved.first_index(), Some(5));
            moved.set_first_index(1_000_000);
            let mut direct = encode_entries(&at(1_000_000), shared_min);
            moved.seal(3);
            direct.seal(3);
            assert_eq!(moved.to_vec(), direct.to_vec(), "shared_min {shared_min}");
            assert_eq!(moved.first_index(), Some(1_000_000));
            let idx: Vec<u64> = moved.entry_spans().iter().map(|e| e.index).collect();
            assert_eq!(idx, vec![1_000_000, 1_000_001, 1_000_002]);
            assert!(check_record(&moved.to_vec(), 3).is_ok());
        }
        assert_eq!(encode_hard_state(&HardState::default()).first_index(), None);
    }

    fn segment(seq: u64, records: &mut [EncodedRecord], size: usize) -> Vec<u8> {
        let mut buf = encode_header(seq).to_vec();
        for r in records.iter_mut() {
            r.seal(seq);
            buf.extend_from_slice(&r.to_vec());
        }
        buf.resize(size, 0);
        buf
    }

    #[test]
    fn shared_payloads_encode_the_same_bytes_as_copied_ones() {
        let sized = |index: u64, data: usize, ctx: usize| Entry {
            entry_type: EntryType::EntryNormal,
            term: 2 + index % 3,
            index,
            data: (0..data).map(|k| (k * 7 + index as usize) as u8).collect(),
            context: (0..ctx).map(|k| (k * 13) as u8).collect(),
        };
        let es: Vec<Entry> = [
            (0, 0),
            (5, 0),
            (511, 3),
            (512, 0),
            (4096, 600),
            (0, 900),
            (20_000, 0),
        ]
        .iter()
        .enumerate()
        .map(|(k, &(d, c))| sized(10 + k as u64, d, c))
        .collect();
        let mut copied = encode_entries(&es, usize::MAX);
        assert!(copied.contiguous_payload().is_some());
        assert_eq!(copied.pieces().count(), 1);
        for min in [1, 512, 4096, 20_000, 20_001] {
            let mut shared = encode_entries(&es, min);
            let n_shared = es
                .iter()
                .flat_map(|e| [e.data.len(), e.context.len()])
                .filter(|&l| l > 0 && l >= min)
                .count();
            assert_eq!(shared.shared.len(), n_shared, "min {min}");
            assert!(shared.pieces().all(|p| !p.is_empty()));
            assert_eq!(shared.len(), copied.len());
            for seq in [1, 9] {
                copied.seal(seq);
                shared.seal(seq);
                let bytes = shared.to_vec();
                assert_eq!(bytes, copied.to_vec(), "min {min} seq {seq}");
                check_record(&bytes, seq).unwrap();
            }
            // The writer indexes from the spans: they are what a scan finds.
            let (first, spans) =
                parse_entries(&shared.to_vec()[RECORD_HEADER_BYTES as usize..]).unwrap();
            assert_eq!(first, 10);
            assert_eq!(shared.entry_spans(), &spans[..]);
            assert_eq!(shared.kind(), Kind::Entries);
        }
    }

    #[test]
    fn records_round_trip_and_crc_is_salted_with_the_sequence() {
        let es = vec![entry(5, 2, b"a"), entry(6, 3, b"")];
        let hs = HardState {
            term: 3,
            vote: 1,
            commit: 5,
        };
        let m = Marker {
            index: 4,
            term: 2,
            reset: true,
        };
        let mut recs = [
            encode_entries(&es, 1),
            encode_hard_state(&hs),
            encode_marker(&m),
        ];
        let buf = segment(7, &mut recs, 4096);
        check_header(&buf, 7).unwrap();
        assert!(check_header(&buf, 8).is_err());
        let mut got = Vec::new();
        let end = scan_segment::<()>(&buf, 7, |r| {
            got.push((r.kind, r.payload.to_vec()));
            Ok(())
        })
        .unwrap();
        assert!(matches!(end, ScanEnd::Clean { .. }));
        assert_eq!(got.len(), 3);
        let (first, spans) = parse_entries(&got[0].1).unwrap();
        assert_eq!(first, 5);
        let back: Vec<Entry> = spans
            .iter()
            .map(|s| {
                decode_entry(
                    s.index,
                    &got[0].1[s.offset as usize..(s.offset + s.len) as usize],
                )
                .unwrap()
            })
            .collect();
        assert_eq!(back, es);
        assert_eq!(decode_hard_state(&got[1].1).unwrap(), hs);
        assert_eq!(decode_marker(&got[2].1).unwrap(), m);
        // The same bytes under another sequence number do not validate.
        let mut other = buf.clone();
        other[..32].copy_from_slice(&encode_header(8));
        let end = scan_segment::<()>(&other, 8, |_| Ok(())).unwrap();
        assert!(
            matches!(
                end,
                ScanEnd::Damaged {
                    offset: 32,
                    later_valid: None,
                    ..
                }
            ),
            "{end:?}"
        );
    }

    #[test]
    fn damage_before_a_valid_record_is_found_and_a_torn_tail_is_not() {
        let mut recs: Vec<EncodedRecord> = (1..=3)
            .map(|i| encode_entries(&[entry(i, 1, b"payload")], 1))
            .collect();
        let buf = segment(1, &mut recs, 1024);
        let second = 32 + recs[0].len() as usize;
        let mut flipped = buf.clone();
        flipped[second + 12] ^= 0x10;
        let end = scan_segment::<()>(&flipped, 1, |_| Ok(())).unwrap();
        match end {
            ScanEnd::Damaged {
                offset,
                later_valid,
                ..
            } => {
                assert_eq!(offset, second as u64);
                assert_eq!(later_valid, Some((second + recs[1].len() as usize) as u64));
            }
            e => panic!("{e:?}"),
        }
        let third = second + recs[1].len() as usize;
        let mut torn = buf.clone();
        torn[third + 20..].fill(0);
        let end = scan_segment::<()>(&torn, 1, |_| Ok(())).unwrap();
        assert!(
            matches!(end, ScanEnd::Damaged { offset, later_valid: None, .. } if offset == third as u64),
            "{end:?}"
        );
    }

    #[test]
    fn records_with_a_valid_crc_but_impossible_values_are_damage() {
        let mut recs = [
            encode_entries(&[entry(1, 1, b"x")], 1),
            encode_marker(&Marker {
                index: u64::MAX,
                term: 1,
                reset: false,
            }),
        ];
        let buf = segment(2, &mut recs, 512);
        let end = scan_segment::<()>(&buf, 2, |_| Ok(())).unwrap();
        let at = 32 + recs[0].len();
        assert!(
            matches!(end, ScanEnd::Damaged { offset, .. } if offset == at),
            "{end:?}"
        );
        let mut recs = [encode_entries(&[entry(INDEX_MAX, 1, b"x")], 1)];
        let buf = segment(2, &mut recs, 512);
        let end = scan_segment::<()>(&buf, 2, |_| Ok(())).unwrap();
        assert!(
            matches!(end, ScanEnd::Damaged { offset: 32, .. }),
            "{end:?}"
        );
    }

    /// A segment image as the writer leaves it: header, records, end marker.
    fn written(seq: u64, records: &mut [EncodedRecord]) -> Vec<u8> {
        let mut buf = encode_header(seq).to_vec();
        for r in records.iter_mut() {
            r.seal(seq);
            buf.extend_from_slice(&r.to_vec());
        }
        buf.extend_from_slice(&[0u8; END_MARKER_BYTES as usize]);
        buf
    }

    fn count(buf: &[u8], seq: u64) -> (usize, ScanEnd) {
        let mut n = 0;
        let end = scan_segment::<()>(buf, seq, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        (n, end)
    }

    #[test]
    fn a_recycled_segment_ends_at_its_end_marker_and_stale_records_never_count() {
        // Segment 3, full of valid records of its own.
        let mut old: Vec<EncodedRecord> = (1..=40)
            .map(|i| encode_entries(&[entry(i, 1, b"old generation")], 1))
            .collect();
        let old_image = written(3, &mut old);
        assert_eq!(count(&old_image, 3).0, 40);
        // Reused as segment 9: new header and end marker over it, nothing else.
        let mut image = old_image.clone();
        let head = written(9, &mut []);
        image[..head.len()].copy_from_slice(&head);
        let (n, end) = count(&image, 9);
        assert_eq!((n, end), (0, ScanEnd::Clean { end: HEADER_BYTES }));
        // Two groups written into it, each followed by its end marker.
        let mut new: Vec<EncodedRecord> = (100..=102)
            .map(|i| encode_entries(&[entry(i, 4, b"new")], 1))
            .collect();
        let fresh = written(9, &mut new);
        image[..fresh.len()].copy_from_slice(&fresh);
        let (n, end) = count(&image, 9);
        let records_end = (fresh.len() - END_MARKER_BYTES as usize) as u64;
        assert_eq!((n, end), (3, ScanEnd::Clean { end: records_end }));
        // A torn group over stale bytes: damage with nothing valid after it.
        let mut torn = image.clone();
        let second = 32 + new[0].len() as usize;
        torn[second + 11..fresh.len()].fill(0x5a);
        match count(&torn, 9) {
            (
                1,
                ScanEnd::Damaged {
                    offset,
                    later_valid: None,
                    ..
                },
            ) => {
                assert_eq!(offset, second as u64);
            }
            other => panic!("{other:?}"),
        }
        // Zeros in the middle with records of this segment after them are
        // not an end: a zeroed region, reported with the record after it.
        let mut zeroed = image.clone();
        zeroed[second..second + 9].fill(0);
        match count(&zeroed, 9) {
            (
                1,
                ScanEnd::Damaged {
                    offset,
                    later_valid: Some(l),
                    ..
                },
            ) => {
                assert_eq!(offset, second as u64);
                assert_eq!(l, (second + new[1].len() as usize) as u64);
            }
            other => panic!("{other:?}"),
        }
        // The stale records do validate under their own sequence: only the
        // salt keeps them out of segment 9.
        let stale_at = fresh.len() + 64;
        let p = find_valid_after(&old_image, 3, stale_at - 1, old_image.len());
        assert!(p.is_some());
        assert!(find_valid_after(&image, 9, fresh.len(), image.len()).is_none());
    }

    #[test]
    fn a_lone_crc_match_among_stale_bytes_is_not_a_later_record() {
        // A valid record of this segment followed by garbage (not a record,
        // not an end) is what a stale record that passed the CRC by chance
        // looks like: it does not make earlier damage corruption.
        let mut r = [encode_entries(&[entry(5, 1, b"x")], 1)];
        let rec = written(2, &mut r);
        let rec = &rec[32..32 + r[0].len() as usize];
        let mut buf = encode_header(2).to_vec();
        buf.extend_from_slice(&[0x77; 40]);
        let at = buf.len();
        buf.extend_from_slice(rec);
        buf.extend_from_slice(&[0x66; 40]);
        assert!(find_valid_after(&buf, 2, 32, buf.len()).is_none());
        // Followed by an end marker it is a real record.
        buf.truncate(at + rec.len());
        buf.extend_from_slice(&[0; 9]);
        buf.extend_from_slice(&[0x66; 40]);
        assert_eq!(find_valid_after(&buf, 2, 32, buf.len()), Some(at as u64));
    }

    #[test]
    fn nonzero_end_finds_the_last_non_zero_byte() {
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65] {
            let mut b = vec![0u8; len];
            assert_eq!(nonzero_end(&b), 0);
            for p in 0..len {
                b.fill(0);
                b[p] = 0x80;
                assert_eq!(nonzero_end(&b), p + 1, "len {len} p {p}");
                if p > 0 {
                    b[0] = 1;
                    assert_eq!(nonzero_end(&b), p + 1);
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let mut buf = encode_header(3).to_vec();
            for _ in 0..(round * 7 % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push((x % 5) as u8);
            }
            let _ = scan_segment::<()>(&buf, 3, |_| Ok(()));
            for i in 0..buf.len() {
                let _ = parse_entries(&buf[i..]);
                let _ = decode_entry(1, &buf[i..]);
            }
        }
    }
}
