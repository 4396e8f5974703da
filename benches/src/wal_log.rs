//! Tandem's WAL as a [`LogStore`], plus the recovery-scan and cache-dropping
//! helpers of the WAL benchmarks.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_raft::Entry;
use tandem_wal::{SyncPolicy, Wal, WalOptions};

use crate::logstore::{LogStore, TailCompaction};
use crate::workload::EntryBatch;
use crate::{Error, Result};

fn wal_err(e: tandem_wal::Error) -> Error {
    Error::Wal(e.to_string())
}

/// A Tandem WAL driven by the benchmarks.
///
/// A raft replica has one log, so every stream maps onto it: a batch is
/// placed at the log's next free index ([`Wal::append_wait`]: encoded
/// first, then ordered in a short critical section) and the appender waits
/// for its completion. Concurrent appenders therefore meet in the WAL's group commit, which
/// is what the 8-appender scenario measures.
///
/// With [`WalLog::with_tail_compaction`] the log is also compacted as it
/// grows ([`TailCompaction`]): the appender that crosses the threshold
/// submits `compact(last_index + 1 - keep)` without waiting for it (the
/// marker rides with the next group), and the segments it frees go to the
/// WAL's spare pool for reuse.
#[derive(Debug)]
pub struct WalLog {
    wal: Wal,
    compaction: Option<TailCompaction>,
    name: &'static str,
    /// Append through [`Wal::append_next_wait`] (the index chosen in a
    /// closure, encoding under the append lock) instead of
    /// [`Wal::append_wait`]: `TANDEM_BENCH_APPEND_NEXT=1`, to compare.
    append_next: bool,
}

impl WalLog {
    /// Opens (or recovers) a WAL in `dir` with the default options (64 MiB
    /// preallocated segments, sync always).
    ///
    /// # Errors
    /// `Wal` when the log cannot be opened or recovered.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, WalOptions::default())
    }

    /// Opens with explicit options.
    ///
    /// # Errors
    /// `Wal` when the options are invalid or the log cannot be opened.
    pub fn open_with(dir: &Path, opts: WalOptions) -> Result<Self> {
        Ok(WalLog {
            wal: Wal::open(dir, opts).map_err(wal_err)?,
            compaction: None,
            name: "tandem",
            append_next: std::env::var_os("TANDEM_BENCH_APPEND_NEXT").is_some(),
        })
    }

    /// Report under another contender name (for A/B runs of options).
    #[must_use]
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Compact the log as it grows, keeping a bounded tail.
    #[must_use]
    pub fn with_tail_compaction(mut self, c: TailCompaction) -> Self {
        self.compaction = Some(c);
        self
    }

    /// The WAL itself.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }
}

impl LogStore for WalLog {
    fn name(&self) -> &str {
        self.name
    }

    fn append_durable(&self, _stream: u64, entries: Vec<Entry>) -> Result<()> {
        let entry_bytes = entries.first().map_or(0, |e| e.data.len() as u64);
        let payload = entry_bytes * entries.len() as u64;
        // The synchronous call: the appender writes its own group when no
        // one else is writing, without waking the WAL's writer thread; the
        // entries are encoded before the log places them at its next index,
        // so concurrent appenders encode in parallel.
        if self.append_next {
            let mut entries = entries;
            self.wal
                .append_next_wait(move |next| {
                    for (k, e) in entries.iter_mut().enumerate() {
                        e.index = next + k as u64;
                    }
                    entries
                })
                .map_err(wal_err)?;
        } else {
            self.wal.append_wait(entries).map_err(wal_err)?;
        }
        if let Some(c) = &self.compaction {
            if c.due(payload) {
                let last = self.wal.last_index().map_err(wal_err)?;
                let keep = c.keep_entries(entry_bytes);
                if last > keep {
                    // Not waited for: durable with the next group.
                    self.wal.compact(last + 1 - keep).map_err(wal_err)?;
                }
            }
        }
        Ok(())
    }
}

/// What a recovery scan measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecoveryScan {
    /// Bytes recovery read and checked.
    pub bytes_scanned: u64,
    /// Entries recovered.
    pub entries: u64,
    /// Wall time of `Wal::open`.
    pub elapsed: Duration,
    /// Heap bytes of the in-memory index after recovery.
    pub index_bytes: u64,
}

impl RecoveryScan {
    /// Scan speed in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes_scanned as f64 / 1e6 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Index bytes per recovered entry.
    pub fn index_bytes_per_entry(&self) -> f64 {
        self.index_bytes as f64 / (self.entries.max(1)) as f64
    }
}

/// Fills a WAL in `dir` with at least `total_bytes` of `entry_bytes`-sized
/// entries (sync off while filling: only the recovery is measured), then
/// closes it. Returns the number of entries written.
///
/// # Errors
/// `Wal` on any failure; `InvalidParameter` for a zero entry size.
pub fn fill_wal(dir: &Path, total_bytes: u64, entry_bytes: usize) -> Result<u64> {
    if entry_bytes == 0 {
        return Err(Error::InvalidParameter("entry_bytes is 0".into()));
    }
    let opts = WalOptions {
        sync: SyncPolicy::Never,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir, opts).map_err(wal_err)?;
    // About 1 MiB per submission.
    let batch_len = ((1 << 20) / entry_bytes).max(1);
    let mut gen = EntryBatch::new(entry_bytes, batch_len);
    let mut written = 0u64;
    let mut last = None;
    while written < total_bytes {
        last = Some(wal.submit(gen.next_batch(), None).map_err(wal_err)?);
        written += (batch_len * entry_bytes) as u64;
    }
    if let Some(c) = last {
        c.wait().map_err(wal_err)?;
    }
    wal.flush().map_err(wal_err)?;
    Ok(gen.next_index() - 1)
}

/// Times `Wal::open` of the log in `dir` (a full recovery scan) and drops
/// the log again.
///
/// # Errors
/// `Wal` if recovery fails.
pub fn time_recovery(dir: &Path) -> Result<RecoveryScan> {
    let start = Instant::now();
    let wal = Wal::open(dir, WalOptions::default()).map_err(wal_err)?;
    let elapsed = start.elapsed();
    let report = wal.recovery_report().clone();
    let stats = wal.stats();
    Ok(RecoveryScan {
        bytes_scanned: report.bytes_scanned,
        entries: stats.index_entries,
        elapsed,
        index_bytes: stats.index_bytes,
    })
}

/// Asks the kernel to drop its cached pages of every file in `dir`
/// (`posix_fadvise(DONTNEED)`, after an `fsync` so the pages are clean), so
/// the next read of them comes from the disk: a cold-cache recovery.
///
/// # Errors
/// `Io` when a file cannot be opened, synced or advised.
pub fn drop_page_cache(dir: &Path) -> Result<()> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let f = std::fs::File::open(&path)?;
        f.sync_all()?;
        posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::AppendDriver;
    use std::sync::Arc;

    #[test]
    fn concurrent_streams_share_one_consecutive_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(WalLog::open_with(dir.path(), WalOptions::small_for_tests()).unwrap());
        let mut d = AppendDriver::new(log.clone(), 3, 40, 2).unwrap();
        d.run_batches(30).unwrap();
        assert_eq!(log.wal().last_index().unwrap(), 60);
        drop(d);
        let log = Arc::into_inner(log).expect("driver dropped");
        drop(log);
        let back = WalLog::open_with(dir.path(), WalOptions::small_for_tests()).unwrap();
        let all = back.wal().entries(1, 61, None).unwrap();
        assert_eq!(all.len(), 60);
        assert!(all.iter().enumerate().all(|(k, e)| e.index == k as u64 + 1));
        assert!(all.iter().all(|e| e.data.len() == 40));
    }

    #[test]
    fn tail_compaction_bounds_the_log_and_recycles_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions::small_for_tests();
        let log = Arc::new(
            WalLog::open_with(dir.path(), opts.clone())
                .unwrap()
                .with_tail_compaction(TailCompaction::new(8 << 10, 4 << 10)),
        );
        let mut d = AppendDriver::new(log.clone(), 2, 100, 4).unwrap();
        d.run_batches(400).unwrap();
        drop(d);
        let wal = log.wal();
        wal.flush().unwrap();
        let (first, last) = (wal.first_index().unwrap(), wal.last_index().unwrap());
        assert_eq!(last, 1600);
        // At most one compaction period plus the kept tail (entries of
        // 100 bytes) behind the last index.
        assert!(last + 1 - first <= 40 + 82 + 8, "{first}..={last}");
        let st = wal.stats();
        assert!(st.segments_recycled > 0, "{st:?}");
        assert!(st.segments <= 3, "{st:?}");
    }

    #[test]
    fn fill_then_recover_counts_entries_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let n = fill_wal(dir.path(), 3 << 20, 1000).unwrap();
        assert!(n * 1000 >= 3 << 20, "{n} entries");
        drop_page_cache(dir.path()).unwrap();
        let scan = time_recovery(dir.path()).unwrap();
        assert_eq!(scan.entries, n);
        assert!(scan.bytes_scanned >= n * 1000, "{scan:?}");
        assert!(scan.index_bytes > 0 && scan.index_bytes_per_entry() < 64.0);
        assert!(fill_wal(dir.path(), 1, 0).is_err());
    }
}
