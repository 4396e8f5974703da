//! Cutting a stream of key-ordered pairs into chunk files plus a manifest.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};

use tandem_raft::SnapshotMetadata;
use tracing::debug;

use crate::error::{Error, Result};
use crate::format::{
    encode_chunk, encode_pair, Manifest, CHUNK_COUNT_MAX, CHUNK_HEADER_BYTES,
    CHUNK_PAYLOAD_BYTES_MAX, KEY_BYTES_MAX, PAIR_OVERHEAD_BYTES, VALUE_BYTES_MAX,
};
use crate::fsutil::{chunk_file_name, sync_dir, write_atomically, write_unsynced, MANIFEST_FILE};

/// Default target payload bytes per chunk: 1 MiB.
pub const DEFAULT_CHUNK_BYTES: usize = 1024 * 1024;
/// Smallest accepted `chunk_bytes` (small values exist for tests).
pub const CHUNK_BYTES_MIN: usize = 64;
/// Largest accepted `chunk_bytes`.
pub const CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;

const _: () =
    assert!(CHUNK_BYTES_MIN <= DEFAULT_CHUNK_BYTES && DEFAULT_CHUNK_BYTES <= CHUNK_BYTES_MAX);
const _: () = assert!(CHUNK_BYTES_MAX <= CHUNK_PAYLOAD_BYTES_MAX);

/// How snapshots are cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// Target payload bytes per chunk. A chunk is closed before a pair that
    /// would take it past this; a single pair larger than this gets a chunk
    /// of its own. Both sides of a transfer hold at most a window of chunks
    /// in memory, so this bounds memory together with the window.
    pub chunk_bytes: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

impl WriterConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `chunk_bytes` is outside
    /// [`CHUNK_BYTES_MIN`]`..=`[`CHUNK_BYTES_MAX`].
    pub fn validate(&self) -> Result<()> {
        if !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&self.chunk_bytes) {
            return Err(Error::InvalidConfig(format!(
                "chunk_bytes {} outside {CHUNK_BYTES_MIN}..={CHUNK_BYTES_MAX}",
                self.chunk_bytes
            )));
        }
        Ok(())
    }
}

/// Writes a snapshot into a fresh directory, one chunk file at a time.
///
/// Memory held: one chunk payload (about `chunk_bytes`) and the last key.
/// The directory becomes a complete snapshot only when [`finish`] writes the
/// manifest; a crash before that leaves a directory without `MANIFEST`,
/// which readers reject and [`crate::Stager::recover`] removes.
///
/// [`finish`]: SnapshotWriter::finish
///
/// ```
/// use tandem_raft::{ConfState, SnapshotMetadata};
/// use tandem_snapshot::{SnapshotReader, SnapshotWriter, WriterConfig};
///
/// let tmp = tempfile::tempdir().unwrap();
/// let dir = tmp.path().join("snap-1");
/// let meta = SnapshotMetadata { conf_state: ConfState::from_voters([1, 2, 3]), index: 10, term: 2 };
/// let mut w = SnapshotWriter::create(&dir, &meta, &WriterConfig { chunk_bytes: 64 }).unwrap();
/// for i in 0u32..100 {
///     w.push(&i.to_be_bytes(), b"value").unwrap();
/// }
/// let manifest = w.finish().unwrap();
/// assert_eq!(manifest.pair_count, 100);
/// assert!(manifest.chunk_count > 1);
///
/// let r = SnapshotReader::open(&dir).unwrap();
/// assert_eq!(r.manifest(), &manifest);
/// let back: Vec<_> = r.pairs().collect::<Result<_, _>>().unwrap();
/// assert_eq!(back.len(), 100);
/// assert_eq!(back[5], (5u32.to_be_bytes().to_vec(), b"value".to_vec()));
/// ```
pub struct SnapshotWriter {
    dir: PathBuf,
    meta: SnapshotMetadata,
    chunk_bytes: usize,
    payload: Vec<u8>,
    chunk_pairs: u32,
    chunk_no: u32,
    total_bytes: u64,
    pair_count: u64,
    checksum: crc32fast::Hasher,
    last_key: Option<Vec<u8>>,
    /// Chunk files written but not yet fsynced, oldest first; at most
    /// [`SYNC_LAG_CHUNKS`]. Syncing a chunk only once a few newer ones are
    /// written lets the kernel write it back meanwhile, so the fsync rarely
    /// waits, while dirty data stays bounded.
    unsynced: VecDeque<(File, PathBuf)>,
}

/// How many chunk files may be written ahead of their fsync.
const SYNC_LAG_CHUNKS: usize = 8;

impl SnapshotWriter {
    /// Creates `dir` (which must not exist yet; its parent must) and
    /// prepares to write the snapshot described by `meta`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config or `meta.index == 0`,
    /// [`Error::Io`] if the directory cannot be created (also if it exists).
    pub fn create(dir: &Path, meta: &SnapshotMetadata, config: &WriterConfig) -> Result<Self> {
        config.validate()?;
        if meta.index == 0 {
            return Err(Error::InvalidConfig("snapshot index 0".into()));
        }
        std::fs::create_dir(dir).map_err(Error::io(dir))?;
        Ok(SnapshotWriter {
            dir: dir.to_path_buf(),
            meta: meta.clone(),
            chunk_bytes: config.chunk_bytes,
            payload: Vec::with_capacity(config.chunk_bytes.min(DEFAULT_CHUNK_BYTES) + 64),
            chunk_pairs: 0,
            chunk_no: 0,
            total_bytes: 0,
            pair_count: 0,
            checksum: crc32fast::Hasher::new(),
            last_key: None,
            unsynced: VecDeque::with_capacity(SYNC_LAG_CHUNKS + 1),
        })
    }

    /// Appends a pair. Keys must be strictly increasing (byte order, as sled
    /// iterates).
    ///
    /// # Errors
    /// [`Error::KeysOutOfOrder`], [`Error::LimitExceeded`] for an oversized
    /// key or value or too many chunks, [`Error::Io`] when writing a chunk.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if let Some(last) = &self.last_key {
            if key <= last.as_slice() {
                return Err(Error::KeysOutOfOrder {
                    pair_no: self.pair_count,
                });
            }
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "key bytes",
                actual: key.len() as u64,
                limit: KEY_BYTES_MAX as u64,
            });
        }
        if value.len() > VALUE_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "value bytes",
                actual: value.len() as u64,
                limit: VALUE_BYTES_MAX as u64,
            });
        }
        let pair_bytes = PAIR_OVERHEAD_BYTES + key.len() + value.len();
        if self.chunk_pairs > 0 && self.payload.len() + pair_bytes > self.chunk_bytes {
            self.flush_chunk()?;
        }
        encode_pair(&mut self.payload, key, value);
        assert!(self.payload.len() <= CHUNK_PAYLOAD_BYTES_MAX);
        self.chunk_pairs += 1;
        self.pair_count += 1;
        match &mut self.last_key {
            Some(k) => {
                k.clear();
                k.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        assert!(self.chunk_pairs > 0, "flushing an empty chunk");
        if self.chunk_no >= CHUNK_COUNT_MAX {
            return Err(Error::LimitExceeded {
                what: "chunk count",
                actual: u64::from(self.chunk_no) + 1,
                limit: u64::from(CHUNK_COUNT_MAX),
            });
        }
        let bytes = encode_chunk(
            self.meta.index,
            self.meta.term,
            self.chunk_no,
            self.chunk_pairs,
            &self.payload,
        );
        self.unsynced.push_back(write_unsynced(
            &self.dir,
            &chunk_file_name(self.chunk_no),
            &bytes,
        )?);
        while self.unsynced.len() > SYNC_LAG_CHUNKS {
            self.sync_oldest()?;
        }
        self.checksum.update(&bytes);
        self.total_bytes += bytes.len() as u64;
        self.chunk_no += 1;
        self.chunk_pairs = 0;
        self.payload.clear();
        Ok(())
    }

    fn sync_oldest(&mut self) -> Result<()> {
        if let Some((f, path)) = self.unsynced.pop_front() {
            f.sync_all().map_err(Error::io(&path))?;
        }
        Ok(())
    }

    /// Pairs pushed so far.
    #[must_use]
    pub fn pair_count(&self) -> u64 {
        self.pair_count
    }

    /// Writes the last chunk and the manifest, and makes the directory
    /// durable. Returns the manifest.
    ///
    /// # Errors
    /// [`Error::Io`] on a failed write or sync.
    pub fn finish(mut self) -> Result<Manifest> {
        if self.chunk_pairs > 0 {
            self.flush_chunk()?;
        }
        while !self.unsynced.is_empty() {
            self.sync_oldest()?;
        }
        let manifest = Manifest {
            index: self.meta.index,
            term: self.meta.term,
            conf_state: self.meta.conf_state.clone(),
            chunk_count: self.chunk_no,
            total_bytes: self.total_bytes,
            pair_count: self.pair_count,
            checksum: self.checksum.clone().finalize(),
        };
        manifest.validate()?;
        assert!(
            manifest.total_bytes >= u64::from(manifest.chunk_count) * CHUNK_HEADER_BYTES as u64
        );
        // Every chunk file is synced now; their names become durable
        // with this directory sync, strictly before the manifest exists.
        sync_dir(&self.dir)?;
        write_atomically(&self.dir, MANIFEST_FILE, &manifest.encode())?;
        debug!(
            index = manifest.index,
            term = manifest.term,
            chunks = manifest.chunk_count,
            bytes = manifest.total_bytes,
            pairs = manifest.pair_count,
            "snapshot written"
        );
        Ok(manifest)
    }
}
