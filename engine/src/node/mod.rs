//! The replica runtime: the step function ([`core`]), proposal and read
//! tracking, and the threads around them.

pub mod core;
pub mod oneshot;
pub mod proposals;
pub mod reads;
pub mod runtime;
pub mod snapshots;

pub use self::core::{
    ApplyTask, Counters, Effects, NodeCore, NodeStatus, PeerProgress, PersistTask,
};
pub use self::runtime::{
    wait, Applied, Applier, Durability, LogWriter, MemLogWriter, Node, SnapshotHost,
    WRITE_SOON_ENTRIES,
};
pub use self::snapshots::{SnapshotCatalog, SnapshotCounters, SnapshotEvent, SnapshotJob};

#[cfg(test)]
mod sim_tests;
