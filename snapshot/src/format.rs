//! Byte layout of the manifest and of chunks (see `docs/snapshot.md`).
//!
//! Everything is little-endian. Every structure starts with a magic and a
//! format version and ends its covered bytes with a CRC-32 (Castagnoli is not
//! needed here; `crc32fast` computes IEEE CRC-32 at memory speed). Chunks
//! repeat the snapshot's `(index, term)` and their own number inside the CRC,
//! so a chunk of another snapshot, or one renamed on disk, never validates.
//!
//! Decoding never panics: every length is checked against the buffer and
//! against the format limits before it is used.

use tandem_raft::ConfState;

use crate::error::{Error, Result};

/// Current format version of manifests and chunks. Decoders reject others.
pub const FORMAT_VERSION: u16 = 1;
/// Magic at the start of a manifest: "TNSM".
pub const MANIFEST_MAGIC: [u8; 4] = *b"TNSM";
/// Magic at the start of a chunk: "TNSC".
pub const CHUNK_MAGIC: [u8; 4] = *b"TNSC";
/// Bytes of the fixed chunk header that precedes the payload.
pub const CHUNK_HEADER_BYTES: usize = 40;
/// Bytes of the fixed part of a manifest, before the conf state.
pub const MANIFEST_FIXED_BYTES: usize = 56;
/// Upper bound on an encoded manifest; it is read whole into memory.
pub const MANIFEST_BYTES_MAX: usize = 64 * 1024;
/// Upper bound on node ids in each list of the conf state.
pub const CONF_IDS_MAX: usize = 1024;
/// Largest key a snapshot may hold.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// Largest value a snapshot may hold.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bytes a pair takes in a payload besides key and value (two u32 lengths).
pub const PAIR_OVERHEAD_BYTES: usize = 8;
/// Largest chunk payload. A chunk normally holds up to the configured
/// `chunk_bytes`; only a single oversized pair may exceed that, and the
/// largest pair still fits here.
pub const CHUNK_PAYLOAD_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Largest number of chunks in a snapshot (a bitmap of this many bits is
/// what a receiver keeps in memory).
pub const CHUNK_COUNT_MAX: u32 = 1 << 24;

const _: () =
    assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX + PAIR_OVERHEAD_BYTES <= CHUNK_PAYLOAD_BYTES_MAX);
const _: () = assert!(CHUNK_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () =
    assert!(MANIFEST_FIXED_BYTES + 4 * 4 + 4 * CONF_IDS_MAX * 8 + 1 + 4 <= MANIFEST_BYTES_MAX);

/// What a snapshot is: its position in the log and how it was cut.
///
/// Invariant (checked by [`Manifest::decode`] and the reader): `total_bytes`
/// is the sum of the encoded sizes of the `chunk_count` chunks, and
/// `checksum` is the CRC-32 of their bytes concatenated in chunk order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// Membership as of `index`.
    pub conf_state: ConfState,
    /// Number of chunks, numbered `0..chunk_count`.
    pub chunk_count: u32,
    /// Sum of the encoded bytes of all chunks (headers included).
    pub total_bytes: u64,
    /// Number of key/value pairs in all chunks.
    pub pair_count: u64,
    /// CRC-32 of all chunk bytes in chunk order.
    pub checksum: u32,
}

/// Reads little-endian integers from a slice, failing instead of panicking.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, pos: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "{}: truncated at byte {} (need {n} more, have {})",
                    self.what,
                    self.pos,
                    self.buf.len() - self.pos
                ))
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

fn encode_ids(out: &mut Vec<u8>, ids: &[u64]) {
    assert!(
        ids.len() <= CONF_IDS_MAX,
        "conf state list too long: {}",
        ids.len()
    );
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

fn decode_ids(c: &mut Cursor<'_>) -> Result<Vec<u64>> {
    let n = c.u32()? as usize;
    if n > CONF_IDS_MAX {
        return Err(Error::corrupt(format!(
            "manifest: conf state list of {n} ids exceeds {CONF_IDS_MAX}"
        )));
    }
    (0..n).map(|_| c.u64()).collect()
}

impl Manifest {
    /// Checks the limits the encoder relies on.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] if a conf state list is longer than
    /// [`CONF_IDS_MAX`] or the chunk count exceeds [`CHUNK_COUNT_MAX`].
    pub fn validate(&self) -> Result<()> {
        let cs = &self.conf_state;
        for list in [
            &cs.voters,
            &cs.learners,
            &cs.voters_outgoing,
            &cs.learners_next,
        ] {
            if list.len() > CONF_IDS_MAX {
                return Err(Error::LimitExceeded {
                    what: "conf state ids",
                    actual: list.len() as u64,
                    limit: CONF_IDS_MAX as u64,
                });
            }
        }
        if self.chunk_count > CHUNK_COUNT_MAX {
            return Err(Error::LimitExceeded {
                what: "chunk count",
                actual: u64::from(self.chunk_count),
                limit: u64::from(CHUNK_COUNT_MAX),
            });
        }
        Ok(())
    }

    /// Encodes the manifest (layout in `docs/snapshot.md`).
    ///
    /// # Panics
    /// If [`Manifest::validate`] fails: building such a manifest is a bug of
    /// the caller, which validates before encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        if let Err(e) = self.validate() {
            panic!("encoding an invalid manifest: {e}");
        }
        let mut out = Vec::with_capacity(MANIFEST_FIXED_BYTES + 64);
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.extend_from_slice(&self.chunk_count.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.total_bytes.to_le_bytes());
        out.extend_from_slice(&self.pair_count.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
        let conf_len_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        debug_assert_eq!(out.len(), MANIFEST_FIXED_BYTES);
        let cs = &self.conf_state;
        encode_ids(&mut out, &cs.voters);
        encode_ids(&mut out, &cs.learners);
        encode_ids(&mut out, &cs.voters_outgoing);
        encode_ids(&mut out, &cs.learners_next);
        out.push(u8::from(cs.auto_leave));
        let conf_len = (out.len() - MANIFEST_FIXED_BYTES) as u32;
        out[conf_len_at..conf_len_at + 4].copy_from_slice(&conf_len.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        assert!(out.len() <= MANIFEST_BYTES_MAX);
        out
    }

    /// Decodes and validates a manifest.
    ///
    /// # Errors
    /// [`Error::Corruption`] for any malformed input: wrong magic, version,
    /// CRC, lengths, or values that contradict each other.
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(Error::corrupt(format!(
                "manifest: {} bytes exceed {MANIFEST_BYTES_MAX}",
                bytes.len()
            )));
        }
        if bytes.len() < MANIFEST_FIXED_BYTES + 4 {
            return Err(Error::corrupt(format!(
                "manifest: only {} bytes",
                bytes.len()
            )));
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(Error::corrupt(format!(
                "manifest: crc mismatch (stored {stored:#010x}, computed {actual:#010x})"
            )));
        }
        let mut c = Cursor::new(body, "manifest");
        if c.take(4)? != MANIFEST_MAGIC {
            return Err(Error::corrupt("manifest: bad magic"));
        }
        let version = c.u16()?;
        if version != FORMAT_VERSION {
            return Err(Error::corrupt(format!(
                "manifest: unknown format version {version}"
            )));
        }
        let flags = c.u16()?;
        if flags != 0 {
            return Err(Error::corrupt(format!(
                "manifest: unknown flags {flags:#x}"
            )));
        }
        let index = c.u64()?;
        let term = c.u64()?;
        let chunk_count = c.u32()?;
        let reserved = c.u32()?;
        let total_bytes = c.u64()?;
        let pair_count = c.u64()?;
        let checksum = c.u32()?;
        let conf_len = c.u32()? as usize;
        if reserved != 0 {
            return Err(Error::corrupt("manifest: reserved field not zero"));
        }
        if conf_len != body.len() - MANIFEST_FIXED_BYTES {
            return Err(Error::corrupt(format!(
                "manifest: conf state length {conf_len} does not match the {} bytes present",
                body.len() - MANIFEST_FIXED_BYTES
            )));
        }
        let voters = decode_ids(&mut c)?;
        let learners = decode_ids(&mut c)?;
        let voters_outgoing = decode_ids(&mut c)?;
        let learners_next = decode_ids(&mut c)?;
        let auto_leave = match c.take(1)?[0] {
            0 => false,
            1 => true,
            b => return Err(Error::corrupt(format!("manifest: auto_leave byte {b}"))),
        };
        if c.pos != body.len() {
            return Err(Error::corrupt("manifest: trailing bytes after conf state"));
        }
        if chunk_count > CHUNK_COUNT_MAX {
            return Err(Error::corrupt(format!(
                "manifest: chunk count {chunk_count} too large"
            )));
        }
        // Each chunk is at least a header, at most a header plus the largest payload.
        let n = u64::from(chunk_count);
        let min = n * CHUNK_HEADER_BYTES as u64;
        let max = n * (CHUNK_HEADER_BYTES + CHUNK_PAYLOAD_BYTES_MAX) as u64;
        if total_bytes < min || total_bytes > max {
            return Err(Error::corrupt(format!(
                "manifest: total bytes {total_bytes} impossible for {chunk_count} chunks"
            )));
        }
        if chunk_count == 0 && pair_count != 0 {
            return Err(Error::corrupt("manifest: pairs without chunks"));
        }
        if index == 0 {
            return Err(Error::corrupt("manifest: snapshot index 0"));
        }
        Ok(Manifest {
            index,
            term,
            conf_state: ConfState {
                voters,
                learners,
                voters_outgoing,
                learners_next,
                auto_leave,
            },
            chunk_count,
            total_bytes,
            pair_count,
            checksum,
        })
    }
}

/// The fixed header of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Index of the snapshot the chunk belongs to.
    pub index: u64,
    /// Term of the snapshot the chunk belongs to.
    pub term: u64,
    /// Position of the chunk in the snapshot, from 0.
    pub chunk_no: u32,
    /// Number of pairs in the payload.
    pub pair_count: u32,
    /// Bytes of payload after the header.
    pub payload_len: u32,
    /// CRC-32 of header bytes 0..36 followed by the payload.
    pub crc: u32,
}

impl ChunkHeader {
    /// Total encoded bytes of this chunk.
    #[must_use]
    pub fn chunk_bytes(&self) -> usize {
        CHUNK_HEADER_BYTES + self.payload_len as usize
    }

    /// Decodes the header and checks magic, version, flags and the payload
    /// bound. Does not check the CRC (it needs the payload).
    ///
    /// # Errors
    /// [`Error::Corruption`] if the bytes are not a valid header.
    pub fn decode(bytes: &[u8]) -> Result<ChunkHeader> {
        let mut c = Cursor::new(bytes, "chunk header");
        if c.take(4)? != CHUNK_MAGIC {
            return Err(Error::corrupt("chunk: bad magic"));
        }
        let version = c.u16()?;
        if version != FORMAT_VERSION {
            return Err(Error::corrupt(format!(
                "chunk: unknown format version {version}"
            )));
        }
        let flags = c.u16()?;
        if flags != 0 {
            return Err(Error::corrupt(format!("chunk: unknown flags {flags:#x}")));
        }
        let h = ChunkHeader {
            index: c.u64()?,
            term: c.u64()?,
            chunk_no: c.u32()?,
            pair_count: c.u32()?,
            payload_len: c.u32()?,
            crc: c.u32()?,
        };
        if h.payload_len as usize > CHUNK_PAYLOAD_BYTES_MAX {
            return Err(Error::corrupt(format!(
                "chunk {}: payload {} bytes exceeds {CHUNK_PAYLOAD_BYTES_MAX}",
                h.chunk_no, h.payload_len
            )));
        }
        // Every pair takes at least its two lengths.
        if h.pair_count as usize > h.payload_len as usize / PAIR_OVERHEAD_BYTES {
            return Err(Error::corrupt(format!(
                "chunk {}: {} pairs cannot fit in {} bytes",
                h.chunk_no, h.pair_count, h.payload_len
            )));
        }
        Ok(h)
    }

    fn encode_without_crc(&self) -> [u8; CHUNK_HEADER_BYTES] {
        let mut out = [0u8; CHUNK_HEADER_BYTES];
        out[0..4].copy_from_slice(&CHUNK_MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&0u16.to_le_bytes());
        out[8..16].copy_from_slice(&self.index.to_le_bytes());
        out[16..24].copy_from_slice(&self.term.to_le_bytes());
        out[24..28].copy_from_slice(&self.chunk_no.to_le_bytes());
        out[28..32].copy_from_slice(&self.pair_count.to_le_bytes());
        out[32..36].copy_from_slice(&self.payload_len.to_le_bytes());
        out
    }
}

/// Builds the complete encoded chunk from its payload: header, then payload.
///
/// # Panics
/// If the payload exceeds [`CHUNK_PAYLOAD_BYTES_MAX`] or cannot hold
/// `pair_count` pairs (the writer never produces such a chunk).
#[must_use]
pub fn encode_chunk(
    index: u64,
    term: u64,
    chunk_no: u32,
    pair_count: u32,
    payload: &[u8],
) -> Vec<u8> {
    assert!(
        payload.len() <= CHUNK_PAYLOAD_BYTES_MAX,
        "chunk payload too large"
    );
    assert!(
        pair_count as usize <= payload.len() / PAIR_OVERHEAD_BYTES,
        "{pair_count} pairs cannot fit in a {}-byte payload",
        payload.len()
    );
    let mut h = ChunkHeader {
        index,
        term,
        chunk_no,
        pair_count,
        payload_len: payload.len() as u32,
        crc: 0,
    };
    let mut head = h.encode_without_crc();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[..36]);
    hasher.update(payload);
    h.crc = hasher.finalize();
    head[36..40].copy_from_slice(&h.crc.to_le_bytes());
    let mut out = Vec::with_capacity(CHUNK_HEADER_BYTES + payload.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    debug_assert!(verify_chunk(&out).is_ok());
    out
}

/// Checks a complete encoded chunk: header, exact length, CRC. Returns the
/// header. The payload's pairs are checked by [`ChunkPairs`].
///
/// # Errors
/// [`Error::Corruption`] if anything does not validate.
pub fn verify_chunk(bytes: &[u8]) -> Result<ChunkHeader> {
    let h = ChunkHeader::decode(bytes)?;
    if bytes.len() != h.chunk_bytes() {
        return Err(Error::corrupt(format!(
            "chunk {}: {} bytes, header says {}",
            h.chunk_no,
            bytes.len(),
            h.chunk_bytes()
        )));
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..36]);
    hasher.update(&bytes[CHUNK_HEADER_BYTES..]);
    let actual = hasher.finalize();
    if actual != h.crc {
        return Err(Error::corrupt(format!(
            "chunk {}: crc mismatch (stored {:#010x}, computed {actual:#010x})",
            h.chunk_no, h.crc
        )));
    }
    Ok(h)
}

/// Appends one pair to a payload buffer.
///
/// # Panics
/// If key or value exceed [`KEY_BYTES_MAX`] / [`VALUE_BYTES_MAX`]; the
/// writer checks and returns an error before calling this.
pub fn encode_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    assert!(key.len() <= KEY_BYTES_MAX && value.len() <= VALUE_BYTES_MAX);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// Iterates the pairs of a verified chunk's payload, borrowing from it.
///
/// Yields exactly `pair_count` pairs, then checks that the payload is used
/// up; a malformed payload yields one error and then ends.
pub struct ChunkPairs<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
    failed: bool,
}

impl<'a> ChunkPairs<'a> {
    /// Pairs of `chunk`, which must be a whole encoded chunk.
    ///
    /// # Errors
    /// [`Error::Corruption`] if the chunk does not verify.
    pub fn new(chunk: &'a [u8]) -> Result<Self> {
        let h = verify_chunk(chunk)?;
        Ok(ChunkPairs {
            cursor: Cursor::new(&chunk[CHUNK_HEADER_BYTES..], "chunk payload"),
            remaining: h.pair_count,
            failed: false,
        })
    }

    fn next_pair(&mut self) -> Result<(&'a [u8], &'a [u8])> {
        let klen = self.cursor.u32()? as usize;
        if klen > KEY_BYTES_MAX {
            return Err(Error::corrupt(format!(
                "chunk payload: key of {klen} bytes"
            )));
        }
        let key = self.cursor.take(klen)?;
        let vlen = self.cursor.u32()? as usize;
        if vlen > VALUE_BYTES_MAX {
            return Err(Error::corrupt(format!(
                "chunk payload: value of {vlen} bytes"
            )));
        }
        let value = self.cursor.take(vlen)?;
        Ok((key, value))
    }
}

impl<'a> Iterator for ChunkPairs<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if self.cursor.pos != self.cursor.buf.len() {
                self.failed = true;
                return Some(Err(Error::corrupt(
                    "chunk payload: bytes left after the last pair",
                )));
            }
            return None;
        }
        self.remaining -= 1;
        let r = self.next_pair();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            index: 42,
            term: 7,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                voters_outgoing: vec![1, 2],
                learners_next: vec![],
                auto_leave: true,
            },
            chunk_count: 3,
            total_bytes: 3 * CHUNK_HEADER_BYTES as u64 + 10,
            pair_count: 2,
            checksum: 0xdead_beef,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = manifest();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn manifest_every_single_bit_flip_is_detected() {
        let bytes = manifest().encode();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                Manifest::decode(&b).is_err(),
                "flip of bit {i} not detected"
            );
        }
    }

    #[test]
    fn manifest_every_truncation_is_detected() {
        let bytes = manifest().encode();
        for len in 0..bytes.len() {
            assert!(
                Manifest::decode(&bytes[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
    }

    #[test]
    fn chunk_round_trips_and_detects_flips() {
        let mut payload = Vec::new();
        encode_pair(&mut payload, b"a", b"one");
        encode_pair(&mut payload, b"bb", b"");
        let chunk = encode_chunk(9, 2, 5, 2, &payload);
        let h = verify_chunk(&chunk).unwrap();
        assert_eq!((h.index, h.term, h.chunk_no, h.pair_count), (9, 2, 5, 2));
        let pairs: Vec<_> = ChunkPairs::new(&chunk)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            pairs,
            vec![(&b"a"[..], &b"one"[..]), (&b"bb"[..], &b""[..])]
        );
        for i in 0..chunk.len() * 8 {
            let mut b = chunk.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(verify_chunk(&b).is_err(), "flip of bit {i} not detected");
        }
    }

    #[test]
    fn chunk_with_wrong_pair_count_fails_in_iteration() {
        let mut payload = Vec::new();
        encode_pair(&mut payload, b"a", b"one");
        // Claims zero pairs but carries one: leftover bytes.
        let chunk = encode_chunk(1, 1, 0, 0, &payload);
        let r: Vec<_> = ChunkPairs::new(&chunk).unwrap().collect();
        assert_eq!(r.len(), 1);
        assert!(r[0].is_err());
        // Claims two pairs but carries one: truncated.
        let chunk = encode_chunk(1, 1, 0, 1, &payload[..payload.len() - 1]);
        let r: Vec<_> = ChunkPairs::new(&chunk).unwrap().collect();
        assert!(r.last().unwrap().is_err());
    }
}
