//! The interface every log store under test implements, Tandem's WAL and
//! the baselines alike, so one driver feeds them identical workloads.

use tandem_raft::Entry;

use crate::Result;

/// A durable store of raft log entries, seen from a benchmark.
///
/// `stream` names an independent log: a raft group for raft-engine, a key
/// prefix for sled. Concurrent appenders each use their own stream, the way
/// several raft groups share one raft-engine instance. A store with a single
/// log (Tandem's WAL, the raw file) maps every stream onto it and orders the
/// concurrent batches itself.
pub trait LogStore: Send + Sync {
    /// A short stable name used in reports (`tandem`, `raw_fdatasync`, ...).
    fn name(&self) -> &str;

    /// Appends `entries` (consecutive indexes, continuing the stream) and
    /// returns only once they are durable on disk.
    ///
    /// # Errors
    /// Whatever the store reports; a benchmark treats it as fatal.
    fn append_durable(&self, stream: u64, entries: Vec<Entry>) -> Result<()>;
}

/// Compaction that keeps a bounded tail of the log, the way a raft log is
/// compacted in production (after each snapshot, or behind the applied
/// index): every `every_bytes` of payload appended, the log is compacted so
/// that about the last `keep_bytes` of payload stay. Without it a log under
/// a benchmark only grows, and a store that recycles the files compaction
/// frees never gets to.
#[derive(Debug)]
pub struct TailCompaction {
    /// Payload bytes between two compactions.
    pub every_bytes: u64,
    /// Payload bytes kept behind the last index.
    pub keep_bytes: u64,
    appended: std::sync::atomic::AtomicU64,
}

impl TailCompaction {
    /// The benchmarks' setting: every 16 MiB of payload, keep the last
    /// 16 MiB (a quarter of a 64 MiB segment).
    pub fn bench() -> Self {
        TailCompaction::new(16 << 20, 16 << 20)
    }

    /// Compact every `every_bytes`, keeping `keep_bytes`.
    ///
    /// # Panics
    /// If `every_bytes` is 0.
    pub fn new(every_bytes: u64, keep_bytes: u64) -> Self {
        assert!(every_bytes > 0, "every_bytes must be > 0");
        TailCompaction {
            every_bytes,
            keep_bytes,
            appended: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Count `bytes` of appended payload; true (for exactly one caller) each
    /// time the total crosses a multiple of `every_bytes`.
    pub fn due(&self, bytes: u64) -> bool {
        let before = self
            .appended
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        before / self.every_bytes != (before + bytes) / self.every_bytes
    }

    /// Entries of `entry_bytes` payload to keep (at least one).
    pub fn keep_entries(&self, entry_bytes: u64) -> u64 {
        (self.keep_bytes / entry_bytes.max(1)).max(1)
    }
}
