//! Workload generation and the multi-threaded append driver shared by every
//! log-store benchmark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_raft::Entry;

use crate::compare::Sample;
use crate::logstore::LogStore;
use crate::{Error, Result};

/// Term stamped on generated entries; any non-zero value will do.
const BENCH_TERM: u64 = 1;

/// Generates batches of entries with consecutive indexes and a fixed payload
/// size, continuing where the previous batch stopped.
#[derive(Debug, Clone)]
pub struct EntryBatch {
    payload: Vec<u8>,
    batch_len: usize,
    next_index: u64,
}

impl EntryBatch {
    /// Batches of `batch_len` entries of `entry_bytes` payload each, starting
    /// at index 1. The payload is a non-constant pattern so that no layer can
    /// get away with compressing zeros.
    ///
    /// # Panics
    /// If `batch_len` is 0.
    pub fn new(entry_bytes: usize, batch_len: usize) -> Self {
        assert!(batch_len > 0, "a batch holds at least one entry");
        let payload = (0..entry_bytes)
            .map(|i| (i.wrapping_mul(131) ^ (i >> 8)) as u8)
            .collect();
        EntryBatch {
            payload,
            batch_len,
            next_index: 1,
        }
    }

    /// The next batch: `batch_len` entries with indexes continuing the last.
    pub fn next_batch(&mut self) -> Vec<Entry> {
        let first = self.next_index;
        self.next_index += self.batch_len as u64;
        (first..self.next_index)
            .map(|index| Entry {
                term: BENCH_TERM,
                index,
                data: self.payload.clone().into(),
                ..Entry::default()
            })
            .collect()
    }

    /// Index the next generated entry will carry.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Entries per batch.
    pub fn batch_len(&self) -> usize {
        self.batch_len
    }
}

/// Drives `appenders` threads that each append batches to their own stream
/// of one store, so state (next indexes) carries over between measurements.
pub struct AppendDriver {
    store: Arc<dyn LogStore>,
    streams: Vec<EntryBatch>,
}

impl std::fmt::Debug for AppendDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendDriver")
            .field("store", &self.store.name())
            .field("appenders", &self.streams.len())
            .finish()
    }
}

impl AppendDriver {
    /// A driver of `appenders` concurrent appenders, each appending batches
    /// of `batch_len` entries of `entry_bytes`.
    ///
    /// # Errors
    /// `InvalidParameter` when `appenders` or `batch_len` is 0.
    pub fn new(
        store: Arc<dyn LogStore>,
        appenders: usize,
        entry_bytes: usize,
        batch_len: usize,
    ) -> Result<Self> {
        if appenders == 0 || batch_len == 0 {
            return Err(Error::InvalidParameter(format!(
                "appenders {appenders} and batch_len {batch_len} must be positive"
            )));
        }
        Ok(AppendDriver {
            store,
            streams: vec![EntryBatch::new(entry_bytes, batch_len); appenders],
        })
    }

    /// The store driven.
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }

    /// Runs `total_batches` appends spread over the appenders (the first
    /// appenders take one more when it does not divide) and returns the wall
    /// time. This is the shape criterion's `iter_custom` wants.
    ///
    /// # Errors
    /// The first error of any appender.
    pub fn run_batches(&mut self, total_batches: u64) -> Result<Duration> {
        let n = self.streams.len() as u64;
        let start = Instant::now();
        let store = &self.store;
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .streams
                .iter_mut()
                .enumerate()
                .map(|(i, gen)| {
                    let count = total_batches / n + u64::from((i as u64) < total_batches % n);
                    s.spawn(move || -> Result<()> {
                        for _ in 0..count {
                            store.append_durable(i as u64, gen.next_batch())?;
                        }
                        Ok(())
                    })
                })
                .collect();
            join_all(handles)
        })?;
        Ok(start.elapsed())
    }

    /// Runs every appender for `duration`, recording the latency of each
    /// append, and returns entries appended, wall time and latencies.
    ///
    /// # Errors
    /// The first error of any appender.
    pub fn run_for(&mut self, duration: Duration) -> Result<Sample> {
        let start = Instant::now();
        let deadline = start + duration;
        let store = &self.store;
        let per_thread: Vec<(u64, Vec<u64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .streams
                .iter_mut()
                .enumerate()
                .map(|(i, gen)| {
                    s.spawn(move || -> Result<(u64, Vec<u64>)> {
                        let mut entries = 0u64;
                        let mut lat = Vec::new();
                        while Instant::now() < deadline {
                            let batch = gen.next_batch();
                            let len = batch.len() as u64;
                            let t = Instant::now();
                            store.append_durable(i as u64, batch)?;
                            lat.push(t.elapsed().as_nanos() as u64);
                            entries += len;
                        }
                        Ok((entries, lat))
                    })
                })
                .collect();
            join_all(handles)
        })?;
        let elapsed = start.elapsed();
        let mut ops = 0;
        let mut latencies_ns = Vec::new();
        for (n, lat) in per_thread {
            ops += n;
            latencies_ns.extend(lat);
        }
        Ok(Sample {
            ops,
            elapsed,
            latencies_ns,
        })
    }
}

/// Joins scoped threads, re-raising a panic and returning the first error.
fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what it is given, to check the driver's bookkeeping.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(u64, Vec<u64>)>>,
    }

    impl LogStore for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn append_durable(&self, stream: u64, entries: Vec<Entry>) -> Result<()> {
            let idx = entries.iter().map(|e| e.index).collect();
            self.seen.lock().unwrap().push((stream, idx));
            Ok(())
        }
    }

    #[test]
    fn batches_continue_indexes_and_carry_the_payload() {
        let mut g = EntryBatch::new(300, 3);
        let a = g.next_batch();
        let b = g.next_batch();
        assert_eq!(a.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(b.iter().map(|e| e.index).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(a
            .iter()
            .all(|e| e.data.len() == 300 && e.term == BENCH_TERM));
        assert_ne!(a[0].data[1], a[0].data[2], "payload is not constant");
        assert_eq!(g.next_index(), 7);
    }

    #[test]
    fn driver_spreads_batches_and_keeps_each_stream_consecutive() {
        let rec = Arc::new(Recorder::default());
        let mut d = AppendDriver::new(rec.clone(), 3, 8, 2).unwrap();
        d.run_batches(7).unwrap();
        d.run_batches(3).unwrap();
        let seen = rec.seen.lock().unwrap();
        assert_eq!(seen.len(), 10);
        for stream in 0..3u64 {
            let idx: Vec<u64> = seen
                .iter()
                .filter(|(s, _)| *s == stream)
                .flat_map(|(_, i)| i.clone())
                .collect();
            // Stream 0 got 3 + 1 batches, the others 2 + 1; all consecutive from 1.
            let want = if stream == 0 { 8 } else { 6 };
            assert_eq!(idx, (1..=want).collect::<Vec<_>>(), "stream {stream}");
        }
    }

    #[test]
    fn run_for_counts_entries_and_latencies() {
        let rec = Arc::new(Recorder::default());
        let mut d = AppendDriver::new(rec.clone(), 2, 8, 4).unwrap();
        let s = d.run_for(Duration::from_millis(20)).unwrap();
        let appends = rec.seen.lock().unwrap().len() as u64;
        assert!(appends > 0);
        assert_eq!(s.ops, appends * 4);
        assert_eq!(s.latencies_ns.len() as u64, appends);
    }

    #[test]
    fn driver_rejects_zero_appenders_and_reports_store_errors() {
        struct Failing;
        impl LogStore for Failing {
            fn name(&self) -> &str {
                "failing"
            }
            fn append_durable(&self, _: u64, _: Vec<Entry>) -> Result<()> {
                Err(Error::Wal("disk on fire".into()))
            }
        }
        assert!(AppendDriver::new(Arc::new(Failing), 0, 8, 1).is_err());
        let mut d = AppendDriver::new(Arc::new(Failing), 2, 8, 1).unwrap();
        assert!(matches!(d.run_batches(4), Err(Error::Wal(_))));
    }
}
