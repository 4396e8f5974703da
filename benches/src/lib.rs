//! Shared helpers for Tandem's benchmarks.
//!
//! Every speed claim of Tandem is a ratio against a baseline measured in the
//! same run, on the same disk, because the disk of a shared machine drifts
//! by a quarter within minutes. This crate holds:
//!
//! - the baselines: [`raw::RawSyncLog`] (a `write` + `fdatasync` loop into a
//!   preallocated file, the physical limit), [`raft_engine_log::RaftEngineLog`]
//!   (raft-engine 0.4.2 used as a raft log store) and [`sled_log::SledLog`]
//!   (sled used as a raft log store: `apply_batch` + `flush`);
//! - the [`logstore::LogStore`] trait they and Tandem's WAL ([`wal_log::WalLog`])
//!   implement, so one
//!   driver feeds them identical workloads ([`workload`]);
//! - [`compare`], which runs contenders in interleaved rounds and reports
//!   per-round ratios, and [`stats`] for latency percentiles.
//!
//! ```
//! use tandem_benches::logstore::LogStore;
//! use tandem_benches::raw::RawSyncLog;
//! use tandem_benches::workload::EntryBatch;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = RawSyncLog::create(dir.path(), 1 << 20).unwrap();
//! let mut batch = EntryBatch::new(64, 4);
//! log.append_durable(0, batch.next_batch()).unwrap();
//! assert_eq!(log.bytes_written(), 4 * 64);
//! ```

#![deny(missing_docs)]

pub mod compare;
pub mod error;
pub mod logstore;
pub mod plot;
pub mod raft_engine_log;
pub mod raw;
pub mod sled_log;
pub mod stats;
pub mod wal_log;
pub mod workload;

pub use error::{Error, Result};
