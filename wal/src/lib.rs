//! # tandem-wal
//!
//! The persistent raft log of one Tandem replica: segment files of
//! CRC-checked records holding entries, the hard state and the compaction
//! point, written by one writer thread with group commit.
//!
//! - [`Wal::submit`] never blocks on disk: entries are visible to reads at
//!   once, and the returned [`Completion`] (or a [`Notify`] channel message)
//!   reports when they are durable. The writer drains every pending
//!   submission, writes them with one write and one `fdatasync`, then
//!   completes them all.
//! - An append at index `i` replaces every entry at or above `i`.
//! - Reads ([`Wal::entries`], [`Wal::term`], [`Wal::first_index`],
//!   [`Wal::last_index`], [`Wal::hard_state`]) come from memory or from the
//!   segments through an 8-byte-per-entry index; errors convert into the
//!   raft `StorageError::{Compacted, Unavailable}`.
//! - [`Wal::compact`] drops a prefix; [`Wal::reset_to_snapshot`] restarts the
//!   log after an installed snapshot.
//! - All IO goes through [`FileSystem`]; [`SimFs`] is a deterministic,
//!   fault-injecting in-memory disk for tests and simulators.
//!
//! ```
//! use tandem_raft::{Entry, HardState};
//! use tandem_wal::{Wal, WalOptions};
//!
//! # fn main() -> tandem_wal::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let opts = WalOptions { segment_bytes: 1 << 20, batch_bytes_max: 1 << 19,
//!                         entry_bytes_max: 1 << 18, ..WalOptions::default() };
//! let entry = |index, term| Entry { index, term, data: vec![index as u8; 8].into(), ..Entry::default() };
//! {
//!     let wal = Wal::open(dir.path(), opts.clone())?;
//!     let done = wal.submit(vec![entry(1, 1), entry(2, 1), entry(3, 1)],
//!                           Some(HardState { term: 1, vote: 1, commit: 0 }))?;
//!     assert_eq!(wal.last_index()?, 3);          // visible at once
//!     done.wait()?;                              // durable now
//!     // A conflicting append at 2 replaces 2 and 3.
//!     wal.submit(vec![entry(2, 2)], None)?.wait()?;
//!     wal.compact(2)?.wait()?;                   // drop entry 1
//! }
//! let wal = Wal::open(dir.path(), opts)?;       // recover
//! assert_eq!((wal.first_index()?, wal.last_index()?), (2, 2));
//! assert_eq!(wal.term(1)?, 1);                   // the compaction point
//! assert_eq!(wal.entries(2, 3, None)?, vec![entry(2, 2)]);
//! assert_eq!(wal.hard_state()?.vote, 1);
//! assert!(wal.recovery_report().truncated.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! The raft `Storage` trait's log half is a thin wrapper; `?` converts
//! [`Error::Compacted`] / [`Error::Unavailable`] into their raft
//! counterparts:
//!
//! ```
//! use tandem_raft::{ConfState, Entry, RaftState, Snapshot, Storage};
//! use tandem_wal::{Wal, WalOptions};
//!
//! struct DiskStorage { wal: Wal, conf_state: ConfState }
//!
//! impl Storage for DiskStorage {
//!     fn initial_state(&self) -> tandem_raft::Result<RaftState> {
//!         Ok(RaftState::new(self.wal.hard_state()?, self.conf_state.clone()))
//!     }
//!     fn entries(&self, lo: u64, hi: u64, max: Option<u64>) -> tandem_raft::Result<Vec<Entry>> {
//!         Ok(self.wal.entries(lo, hi, max)?)
//!     }
//!     fn term(&self, idx: u64) -> tandem_raft::Result<u64> { Ok(self.wal.term(idx)?) }
//!     fn first_index(&self) -> tandem_raft::Result<u64> { Ok(self.wal.first_index()?) }
//!     fn last_index(&self) -> tandem_raft::Result<u64> { Ok(self.wal.last_index()?) }
//!     fn snapshot(&self, _: u64, _: u64) -> tandem_raft::Result<Snapshot> {
//!         let (index, term) = self.wal.snapshot_point()?;
//!         let mut s = Snapshot::default();
//!         s.metadata.index = index;
//!         s.metadata.term = term;
//!         Ok(s)
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let opts = WalOptions { segment_bytes: 1 << 20, batch_bytes_max: 1 << 19,
//!                         entry_bytes_max: 1 << 18, ..WalOptions::default() };
//! let s = DiskStorage { wal: Wal::open(dir.path(), opts).unwrap(), conf_state: ConfState::from_voters([1]) };
//! s.wal.submit(vec![Entry { index: 1, term: 1, ..Entry::default() }], None).unwrap().wait().unwrap();
//! s.wal.compact(2).unwrap().wait().unwrap();
//! assert_eq!(s.term(1), Ok(1));
//! assert_eq!(s.term(0), Err(tandem_raft::Error::Store(tandem_raft::StorageError::Compacted)));
//! assert_eq!(s.entries(2, 3, None), Err(tandem_raft::Error::Store(tandem_raft::StorageError::Unavailable)));
//! ```
//!
//! The byte layout, the disk assumptions and every crash point are in
//! `docs/wal.md`.

#![deny(missing_docs)]

mod error;
mod format;
mod fs;
mod index;
mod options;
mod recovery;
mod simfs;
mod wal;

pub use error::{Error, Result};
pub use fs::{DirLock, FileSystem, StdFs, WalFile};
pub use options::{RecoveryMode, SyncPolicy, WalOptions, SPARES_MAX};
pub use recovery::{
    inspect, inspect_with_fs, InspectReport, RecoveryReport, SegmentReport, SegmentStatus,
    SpareReport, Truncation,
};
pub use simfs::{CrashSpec, SimFs};
pub use wal::{Completion, Durable, Notify, Wal, WalStats};

/// File name of segment `seq` inside the log directory (for tests and tools).
#[must_use]
pub fn segment_file_name(seq: u64) -> String {
    format::segment_name(seq)
}

/// File name of the spare file that was segment `seq` (for tests and tools).
#[must_use]
pub fn spare_file_name(seq: u64) -> String {
    format::spare_name(seq)
}
