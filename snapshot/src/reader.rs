//! Reading a snapshot directory back, chunk by chunk.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{
    verify_chunk, ChunkHeader, ChunkPairs, Manifest, CHUNK_HEADER_BYTES, CHUNK_PAYLOAD_BYTES_MAX,
    MANIFEST_BYTES_MAX,
};
use crate::fsutil::{chunk_file_name, read_bounded, MANIFEST_FILE};

/// A complete snapshot on disk: a directory with a valid `MANIFEST` and its
/// chunk files.
///
/// Opening reads only the manifest; chunks are read one at a time on demand,
/// so memory stays at one chunk whatever the snapshot size.
#[derive(Clone, Debug)]
pub struct SnapshotReader {
    dir: PathBuf,
    manifest: Manifest,
}

impl SnapshotReader {
    /// Opens the snapshot in `dir` by reading and validating its manifest.
    ///
    /// # Errors
    /// [`Error::Io`] if the manifest cannot be read (a directory without one
    /// is an incomplete snapshot), [`Error::Corruption`] if it does not
    /// decode.
    pub fn open(dir: &Path) -> Result<Self> {
        let bytes = read_bounded(&dir.join(MANIFEST_FILE), MANIFEST_BYTES_MAX)?;
        let manifest = Manifest::decode(&bytes)?;
        Ok(SnapshotReader {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The snapshot directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads chunk `chunk_no` as encoded bytes (what travels on the wire),
    /// verified: CRC, and that it belongs to this snapshot at this position.
    ///
    /// # Errors
    /// [`Error::InvalidState`] if `chunk_no` is out of range, [`Error::Io`],
    /// [`Error::Corruption`].
    pub fn read_chunk(&self, chunk_no: u32) -> Result<Vec<u8>> {
        if chunk_no >= self.manifest.chunk_count {
            return Err(Error::InvalidState(format!(
                "chunk {chunk_no} out of range (snapshot has {})",
                self.manifest.chunk_count
            )));
        }
        let path = self.dir.join(chunk_file_name(chunk_no));
        let bytes = read_bounded(&path, CHUNK_HEADER_BYTES + CHUNK_PAYLOAD_BYTES_MAX)?;
        check_chunk_belongs(&self.manifest, chunk_no, &bytes)?;
        Ok(bytes)
    }

    /// Streams all pairs in key order, reading one chunk at a time. The
    /// iterator also checks what only a full pass can: strictly increasing
    /// keys across chunks, the pair count, total bytes and the whole-snapshot
    /// checksum against the manifest. After the first error it ends.
    #[must_use]
    pub fn pairs(&self) -> Pairs<'_> {
        Pairs {
            reader: self,
            next_chunk: 0,
            buffered: VecDeque::new(),
            last_key: None,
            pairs_seen: 0,
            bytes_seen: 0,
            checksum: crc32fast::Hasher::new(),
            done: false,
        }
    }

    /// Reads every chunk and checks everything [`SnapshotReader::pairs`]
    /// checks, without keeping the pairs.
    ///
    /// # Errors
    /// The first error found.
    pub fn verify(&self) -> Result<()> {
        for p in self.pairs() {
            p?;
        }
        Ok(())
    }
}

/// Checks that `bytes` is a valid chunk of the snapshot `manifest` at
/// position `chunk_no`.
///
/// # Errors
/// [`Error::Corruption`] if it is not.
pub fn check_chunk_belongs(
    manifest: &Manifest,
    chunk_no: u32,
    bytes: &[u8],
) -> Result<ChunkHeader> {
    let h = verify_chunk(bytes)?;
    if (h.index, h.term, h.chunk_no) != (manifest.index, manifest.term, chunk_no) {
        return Err(Error::corrupt(format!(
            "chunk is ({}, {}, #{}), expected ({}, {}, #{chunk_no})",
            h.index, h.term, h.chunk_no, manifest.index, manifest.term
        )));
    }
    Ok(h)
}

/// Iterator over the pairs of a snapshot; see [`SnapshotReader::pairs`].
pub struct Pairs<'a> {
    reader: &'a SnapshotReader,
    next_chunk: u32,
    buffered: VecDeque<(Vec<u8>, Vec<u8>)>,
    last_key: Option<Vec<u8>>,
    pairs_seen: u64,
    bytes_seen: u64,
    checksum: crc32fast::Hasher,
    done: bool,
}

impl Pairs<'_> {
    fn load_next_chunk(&mut self) -> Result<()> {
        let bytes = self.reader.read_chunk(self.next_chunk)?;
        self.next_chunk += 1;
        self.checksum.update(&bytes);
        self.bytes_seen += bytes.len() as u64;
        for pair in ChunkPairs::new(&bytes)? {
            let (k, v) = pair?;
            if let Some(last) = self
                .buffered
                .back()
                .map(|(k, _)| k)
                .or(self.last_key.as_ref())
            {
                if k <= last.as_slice() {
                    return Err(Error::corrupt(format!(
                        "snapshot: keys not increasing in chunk {}",
                        self.next_chunk - 1
                    )));
                }
            }
            self.buffered.push_back((k.to_vec(), v.to_vec()));
        }
        if self.buffered.is_empty() {
            return Err(Error::corrupt(format!(
                "snapshot: chunk {} holds no pairs",
                self.next_chunk - 1
            )));
        }
        Ok(())
    }

    fn finish_checks(&self) -> Result<()> {
        let m = self.reader.manifest();
        if self.pairs_seen != m.pair_count {
            return Err(Error::corrupt(format!(
                "snapshot: {} pairs, manifest says {}",
                self.pairs_seen, m.pair_count
            )));
        }
        if self.bytes_seen != m.total_bytes {
            return Err(Error::corrupt(format!(
                "snapshot: {} bytes, manifest says {}",
                self.bytes_seen, m.total_bytes
            )));
        }
        let sum = self.checksum.clone().finalize();
        if sum != m.checksum {
            return Err(Error::corrupt(format!(
                "snapshot: checksum {sum:#010x}, manifest says {:#010x}",
                m.checksum
            )));
        }
        Ok(())
    }
}

impl Iterator for Pairs<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.buffered.is_empty() {
            let r = if self.next_chunk < self.reader.manifest().chunk_count {
                self.load_next_chunk()
            } else {
                self.done = true;
                match self.finish_checks() {
                    Ok(()) => return None,
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = r {
                self.done = true;
                return Some(Err(e));
            }
        }
        let (k, v) = self.buffered.pop_front()?;
        self.pairs_seen += 1;
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(&k);
            }
            None => self.last_key = Some(k.clone()),
        }
        Some(Ok((k, v)))
    }
}
