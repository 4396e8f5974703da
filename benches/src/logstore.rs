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
