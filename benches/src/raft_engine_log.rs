//! raft-engine 0.4.2 used as a raft log store (one raft group per stream).
//!
//! raft-engine stores protobuf messages and asks a [`MessageExt`] for each
//! one's index. The entry travels as protobuf 2's well-known `BytesValue`
//! whose value is `index (u64 LE) | term (u64 LE) | payload`.

use std::path::Path;

use protobuf::well_known_types::BytesValue;
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};
use tandem_raft::Entry;

use crate::logstore::LogStore;
use crate::{Error, Result};

/// Bytes of the `index | term` prefix of an encoded entry.
const PREFIX_BYTES: usize = 16;

/// The [`MessageExt`] that tells raft-engine where an entry's index is.
#[derive(Debug, Clone, Copy)]
pub struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = BytesValue;

    fn index(e: &BytesValue) -> u64 {
        assert!(
            e.value.len() >= PREFIX_BYTES,
            "entry written without its index prefix"
        );
        u64::from_le_bytes(e.value[..8].try_into().expect("8 bytes"))
    }
}

/// Encodes `e` the way this adapter stores it.
pub fn to_message(e: &Entry) -> BytesValue {
    let mut value = Vec::with_capacity(PREFIX_BYTES + e.data.len());
    value.extend_from_slice(&e.index.to_le_bytes());
    value.extend_from_slice(&e.term.to_le_bytes());
    value.extend_from_slice(&e.data);
    let mut m = BytesValue::new();
    m.value = value;
    m
}

/// Decodes what [`to_message`] made.
///
/// # Panics
/// If the value is shorter than its prefix (raft-engine returned bytes this
/// adapter never wrote).
pub fn from_message(m: &BytesValue) -> Entry {
    Entry {
        index: EntryExt::index(m),
        term: u64::from_le_bytes(m.value[8..16].try_into().expect("8 bytes")),
        data: m.value[PREFIX_BYTES..].to_vec(),
        ..Entry::default()
    }
}

/// A raft-engine instance holding raft entries.
pub struct RaftEngineLog {
    engine: Engine,
}

impl std::fmt::Debug for RaftEngineLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftEngineLog").finish_non_exhaustive()
    }
}

fn engine_err(e: raft_engine::Error) -> Error {
    Error::RaftEngine(e.to_string())
}

impl RaftEngineLog {
    /// Opens (or recovers) an engine in `dir`, with 64 MiB files (Tandem's
    /// segment size) and compression off (Tandem does not compress, and the
    /// payloads are not meant to measure lz4). Everything else is
    /// raft-engine's default, including log-file recycling.
    ///
    /// # Errors
    /// `RaftEngine` when the engine cannot open or recover.
    pub fn open(dir: &Path) -> Result<Self> {
        let cfg = Config {
            dir: dir.to_string_lossy().into_owned(),
            target_file_size: ReadableSize::mb(64),
            // Larger than any batch of the benches: never compress.
            batch_compression_threshold: ReadableSize::gb(1),
            ..Config::default()
        };
        Ok(RaftEngineLog {
            engine: Engine::open(cfg).map_err(engine_err)?,
        })
    }

    /// Reads entries `[low, high)` of `stream` back.
    ///
    /// # Errors
    /// `RaftEngine` on a read failure (including missing indexes).
    pub fn entries(&self, stream: u64, low: u64, high: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.engine
            .fetch_entries_to::<EntryExt>(stream, low, high, None, &mut out)
            .map_err(engine_err)?;
        Ok(out.iter().map(from_message).collect())
    }

    /// Last index of `stream`, if it has entries.
    pub fn last_index(&self, stream: u64) -> Option<u64> {
        self.engine.last_index(stream)
    }
}

impl LogStore for RaftEngineLog {
    fn name(&self) -> &str {
        "raft_engine"
    }

    fn append_durable(&self, stream: u64, entries: Vec<Entry>) -> Result<()> {
        let msgs: Vec<BytesValue> = entries.iter().map(to_message).collect();
        let mut batch = LogBatch::default();
        batch
            .add_entries::<EntryExt>(stream, &msgs)
            .map_err(engine_err)?;
        self.engine.write(&mut batch, true).map_err(engine_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::EntryBatch;

    #[test]
    fn message_round_trip_keeps_index_term_and_payload() {
        let e = Entry {
            index: 0x0102_0304_0506_0708,
            term: 9,
            data: b"payload".to_vec(),
            ..Entry::default()
        };
        let m = to_message(&e);
        assert_eq!(EntryExt::index(&m), e.index);
        let back = from_message(&m);
        assert_eq!((back.index, back.term, back.data), (e.index, 9, e.data));
    }

    #[test]
    fn appended_entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut gen = EntryBatch::new(256, 5);
        {
            let log = RaftEngineLog::open(dir.path()).unwrap();
            log.append_durable(3, gen.next_batch()).unwrap();
            log.append_durable(3, gen.next_batch()).unwrap();
            log.append_durable(4, EntryBatch::new(10, 2).next_batch())
                .unwrap();
        }
        let log = RaftEngineLog::open(dir.path()).unwrap();
        assert_eq!(log.last_index(3), Some(10));
        assert_eq!(log.last_index(4), Some(2));
        let got = log.entries(3, 6, 11).unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            [6, 7, 8, 9, 10]
        );
        assert!(got.iter().all(|e| e.data.len() == 256));
    }
}
