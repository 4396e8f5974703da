//! # tandem-raft
//!
//! The consensus core of Tandem: a deterministic implementation of Raft
//! behind a `RawNode`-style interface. It does no IO, reads no clock, spawns
//! no thread and draws randomness only from a seed in its configuration, so
//! every run can be replayed exactly.
//!
//! The application owns time (it calls [`RawNode::tick`]), the disk (it
//! persists what a [`Ready`] hands it, through its [`Storage`]) and the
//! network (it sends the Ready's messages and steps received ones).
//!
//! ```
//! use tandem_raft::{Config, ConfState, MemStorage, RawNode, Storage};
//!
//! // A single-voter cluster: node 1 elects itself.
//! let storage = MemStorage::new_with_conf_state(ConfState::from_voters([1]));
//! let mut node = RawNode::new(&Config::new(1), storage).unwrap();
//! node.campaign().unwrap();
//! node.propose(vec![], b"hello".to_vec()).unwrap();
//!
//! let mut applied = Vec::new();
//! while node.has_ready() {
//!     let mut rd = node.ready();
//!     // 1. messages (none in a single-node cluster); 2. persist:
//!     let store = node.store().clone();
//!     store.wl().append(rd.entries()).unwrap();
//!     if let Some(hs) = rd.hs() {
//!         store.wl().set_hard_state(*hs);
//!     }
//!     // 3. persisted messages; 4. apply:
//!     applied.extend(rd.take_committed_entries());
//!     let mut light = node.advance(rd);
//!     if let Some(commit) = light.commit_index() {
//!         store.wl().set_commit(commit);
//!     }
//!     applied.extend(light.take_committed_entries());
//!     node.advance_apply();
//! }
//! assert!(applied.iter().any(|e| e.data == &b"hello"[..]));
//! assert_eq!(node.store().last_index().unwrap(), 2); // empty entry + "hello"
//! ```

#![deny(missing_docs)]

pub mod confchange;
pub mod config;
mod errors;
pub mod log_unstable;
pub mod progress;
pub mod quorum;
pub mod raft;
pub mod raft_log;
pub mod raw_node;
pub mod read_only;
pub mod status;
mod storage;
pub mod testing;
pub mod types;

pub use config::Config;
#[cfg(feature = "planted-bugs")]
pub use config::PlantedBug;
pub use errors::{Error, Result, StorageError};
pub use progress::{Progress, ProgressState};
pub use raft::{Raft, SoftState, StateRole, CAMPAIGN_TRANSFER, INVALID_ID};
pub use raw_node::{LightReady, RawNode, Ready, SnapshotStatus};
pub use read_only::{ReadOnlyOption, ReadState};
pub use status::Status;
pub use storage::{MemStorage, MemStorageCore, RaftState, Storage};
pub use types::{
    Bytes, ConfChange, ConfChangeI, ConfChangeSingle, ConfChangeTransition, ConfChangeType,
    ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
    SnapshotMetadata,
};
