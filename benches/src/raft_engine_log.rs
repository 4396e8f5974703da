//! raft-engine 0.4.2 used as a raft log store (one raft group per stream).
//!
//! raft-engine stores protobuf messages and asks a [`MessageExt`] for each
//! one's index. The entry travels as protobuf 2's well-known `BytesValue`
//! whose value is `index (u64 LE) | term (u64 LE) | payload`.

use std::path::Path;

use protobuf::well_known_types::BytesValue;
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};
use tandem_raft::Entry;

use crate::logstore::{LogStore, TailCompaction};
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
        data: m.value[PREFIX_BYTES..].to_vec().into(),
        ..Entry::default()
    }
}

/// A raft-engine instance holding raft entries.
///
/// With [`RaftEngineLog::open_with_tail_compaction`] the streams are
/// compacted as they grow, as [`crate::wal_log::WalLog`] is: the appender
/// that crosses the threshold calls `compact_to` on every stream (a write
/// without sync, as Tandem's marker is not waited for), and a purge thread,
/// woken then, calls `purge_expired_files` off the append path (raft-engine's
/// own purge, which then recycles the freed files; TiKV runs it on a timer).
pub struct RaftEngineLog {
    engine: std::sync::Arc<Engine>,
    compaction: Option<(TailCompaction, std::sync::mpsc::Sender<()>)>,
    purger: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RaftEngineLog {
    fn drop(&mut self) {
        // Closing the channel ends the purge thread.
        self.compaction = None;
        if let Some(t) = self.purger.take() {
            let _ = t.join();
        }
    }
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
        Ok(RaftEngineLog {
            engine: std::sync::Arc::new(Engine::open(Self::config(dir)).map_err(engine_err)?),
            compaction: None,
            purger: None,
        })
    }

    fn config(dir: &Path) -> Config {
        Config {
            dir: dir.to_string_lossy().into_owned(),
            target_file_size: ReadableSize::mb(64),
            // Larger than any batch of the benches: never compress.
            batch_compression_threshold: ReadableSize::gb(1),
            ..Config::default()
        }
    }

    /// [`RaftEngineLog::open`], compacting the streams as they grow (see
    /// the type's docs). `purge_threshold` is lowered from 10 GiB to
    /// 128 MiB: raft-engine purges (and so recycles) only above it, and
    /// its recycling pool is then 3 files (`threshold / file size * 1.5`),
    /// like Tandem's default of 4 spares.
    ///
    /// # Errors
    /// `RaftEngine` when the engine cannot open or recover.
    pub fn open_with_tail_compaction(dir: &Path, c: TailCompaction) -> Result<Self> {
        let cfg = Config {
            purge_threshold: ReadableSize::mb(128),
            ..Self::config(dir)
        };
        let engine = std::sync::Arc::new(Engine::open(cfg).map_err(engine_err)?);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let e = engine.clone();
        let purger = std::thread::Builder::new()
            .name("raft-engine-purge".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Coalesce wake-ups that queued up meanwhile.
                    while rx.try_recv().is_ok() {}
                    if let Err(err) = e.purge_expired_files() {
                        eprintln!("raft-engine purge failed: {err}");
                    }
                }
            })?;
        Ok(RaftEngineLog {
            engine,
            compaction: Some((c, tx)),
            purger: Some(purger),
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
        if let Some((c, purge)) = &self.compaction {
            let entry_bytes = entries.first().map_or(0, |e| e.data.len() as u64);
            if c.due(entry_bytes * entries.len() as u64) {
                // The same tail as Tandem's single log, shared by the streams.
                let streams = self.engine.raft_groups();
                let keep = (c.keep_entries(entry_bytes) / streams.len().max(1) as u64).max(1);
                for s in streams {
                    if let Some(last) = self.engine.last_index(s) {
                        if last > keep {
                            self.engine.compact_to(s, last + 1 - keep);
                        }
                    }
                }
                let _ = purge.send(());
            }
        }
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
            data: b"payload".to_vec().into(),
            ..Entry::default()
        };
        let m = to_message(&e);
        assert_eq!(EntryExt::index(&m), e.index);
        let back = from_message(&m);
        assert_eq!((back.index, back.term, back.data), (e.index, 9, e.data));
    }

    #[test]
    fn tail_compaction_drops_old_entries_of_every_stream() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            RaftEngineLog::open_with_tail_compaction(dir.path(), TailCompaction::new(4000, 2000))
                .unwrap();
        let mut a = EntryBatch::new(100, 5);
        let mut b = EntryBatch::new(100, 5);
        for _ in 0..20 {
            log.append_durable(1, a.next_batch()).unwrap();
            log.append_durable(2, b.next_batch()).unwrap();
        }
        // 20 000 bytes appended: compacted 5 times, each stream keeping 10
        // entries then; at most 40 appended since.
        for s in [1, 2] {
            let first = log.engine.first_index(s).unwrap();
            assert_eq!(log.last_index(s), Some(100));
            assert!(first > 40 && first <= 91, "stream {s}: first {first}");
        }
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
