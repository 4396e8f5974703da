//! # tandem-raft
//!
//! The consensus core of Tandem: a deterministic implementation of Raft
//! behind a `RawNode`-style interface. It does no IO, reads no clock, spawns
//! no thread and draws randomness only from a seed in its configuration, so
//! every run can be replayed exactly.

#![deny(missing_docs)]

mod errors;
mod storage;
pub mod types;

pub use errors::{Error, Result, StorageError};
pub use storage::{RaftState, Storage};
pub use types::{
    ConfChange, ConfChangeI, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
