//! The replicated state machine: commands carried in log entries and their
//! application to sled, atomically with the applied index.
//!
//! - [`command`]: [`Command`] (`WriteBatch`, compare-and-swap, no-op), its
//!   versioned bincode encoding and the [`Limits`] checked at propose time.
//! - [`machine`]: [`StateMachine`], which applies a group of committed
//!   entries as ONE sled atomic batch together with the applied index, serves
//!   reads, and makes the applied index durable.
//! - [`conf`]: the membership a conf-change entry yields.
//! - [`open_sled_retrying`]: sled's open, waiting out the lock of a handle
//!   this process just dropped.
//! - [`storage`]: [`DiskStorage`], the raft `Storage` over the WAL and the
//!   state machine, with restart replay and compaction bounded by the
//!   durable applied index.
//!
//! See `docs/state-machine.md` for the key layout, the atomicity argument
//! and the durability guarantee.
//!
//! ```
//! use tandem::sm::{Command, CommandResult, SmOptions, StateMachine, WriteBatch};
//! use tandem::raft::Entry;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let sm = StateMachine::open(dir.path(), &SmOptions::default()).unwrap();
//! let mut batch = WriteBatch::new();
//! batch.insert(b"k".to_vec(), b"v".to_vec());
//! let entry = Entry { index: 1, term: 1, data: Command::Batch(batch).encode().into(), ..Entry::default() };
//! let out = sm.apply(&[entry]).unwrap();
//! assert_eq!(out.results[0].result, CommandResult::Written { ops: 1 });
//! assert_eq!(sm.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
//! assert_eq!(sm.applied(), (1, 1));
//! assert_eq!(sm.flush_durable().unwrap(), 1);
//! ```

pub mod command;
pub mod conf;
mod durable;
mod error;
pub mod machine;
mod sled_open;
pub mod snapshot_store;
pub mod storage;

pub use command::{
    Cas, CasMismatch, Command, CommandResult, Limits, Op, WriteBatch, COMMAND_FORMAT_VERSION,
};
pub use error::{Error, Result};
pub use machine::{
    AppliedConfChange, ApplyOutput, EntryResult, Iter, SmOptions, SnapshotCapture, StateMachine,
};
pub use sled_open::{is_sled_lock_error, open_sled_retrying};
pub use snapshot_store::{SnapshotStore, SnapshotTimings};
pub use storage::{DiskStorage, Replay};
