//! # Tandem
//!
//! An embedded, replicated key-value storage engine. Every write is
//! replicated with Raft to a quorum of replicas, made durable in a
//! segmented, CRC-checked write-ahead log, and applied to a sled-backed
//! state machine atomically with the applied index.
//!
//! ## Tutorial
//!
//! A [`Cluster`] runs N replicas in one process, each in its own directory
//! (`dir/node-<id>`: `LOCK`, `wal/`, `sm/`), talking over an in-process
//! network. [`Cluster::db`] gives a [`Db`] handle with sled's names that
//! finds the leader and retries across leader changes:
//!
//! ```
//! use tandem::{Cluster, ClusterConfig, ReadConsistency, WriteBatch};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let cluster = Cluster::open(dir.path(), ClusterConfig::with_replicas(3)).unwrap();
//! let db = cluster.db();
//!
//! db.insert(b"hello", b"world").unwrap();                   // replicated, fsynced
//! assert_eq!(db.get(b"hello").unwrap().as_deref(), Some(&b"world"[..])); // ReadIndex
//!
//! let mut batch = WriteBatch::new();                         // atomic, in order
//! batch.insert(b"a".to_vec(), b"1".to_vec());
//! batch.remove(b"hello".to_vec());
//! db.apply_batch(batch).unwrap();
//!
//! // compare_and_swap returns the current value on a mismatch, like sled.
//! let cas = db.compare_and_swap(b"a", Some(b"0"), Some(b"2")).unwrap();
//! assert_eq!(cas.unwrap_err().current.as_deref(), Some(&b"1"[..]));
//!
//! // Consistency is chosen per call; stale reads say they are stale.
//! let read = db.get_with(b"a", ReadConsistency::Stale).unwrap();
//! assert!(read.stale);
//!
//! // Membership and status.
//! cluster.add_learner(4).unwrap();
//! cluster.promote(4).unwrap();
//! let leader = cluster.leader().unwrap();
//! let status = cluster.replica(leader).unwrap().status().unwrap();
//! assert_eq!(status.conf_state.voters, vec![1, 2, 3, 4]);
//!
//! // Replace a voter in one change, through a joint configuration.
//! cluster.replace(4, 5).unwrap();
//! let leader = cluster.leader().unwrap();
//! let status = cluster.replica(leader).unwrap().status().unwrap();
//! assert_eq!(status.conf_state.voters, vec![1, 2, 3, 5]);
//! ```
//!
//! Reopening the same directory with [`Cluster::open`] restarts every
//! replica from disk. Replicas in separate processes use [`Replica::open`]
//! with their own [`Transport`], delivering incoming envelopes to
//! [`Replica::inbox`].
//!
//! ## Layers
//!
//! - [`Config`] / [`ClusterConfig`]: documented defaults, validated at open.
//! - [`Error`]: one enum for every operating condition (`NotLeader`,
//!   `Stale`, `Timeout`, `NoQuorum`, `Locked`, ...).
//! - [`node`]: the replica runtime — [`node::NodeCore`], the step function a
//!   test can drive on one thread, and [`node::Node`], its threads.
//! - [`transport`]: the [`Transport`] trait, the [`Envelope`] every message
//!   travels in, and the in-process network with fault injection:
//!
//! ```
//! use tandem::transport::{Envelope, InProcNetwork, Inbox, Transport};
//! use tandem::raft::{Message, MessageType};
//!
//! let net = InProcNetwork::manual(7); // seeded; delivers only when asked
//! let (tx, rx) = crossbeam_channel::unbounded();
//! net.register(Inbox::new(2, 1, tx));
//! let msg = Message { msg_type: MessageType::MsgHeartbeat, from: 1, to: 2, ..Message::default() };
//! net.transport(1).send(Envelope::raft(1, msg)).unwrap();
//! assert!(rx.try_recv().is_err());      // still in flight
//! net.deliver_all();
//! assert_eq!(rx.try_recv().unwrap().from, 1);
//! ```
//!
//! - [`sm`]: the sled state machine and the raft storage over the WAL.
//! - [`verify`]: the linearizability checker used by the tests.
//!
//! See `docs/engine.md` for the threads, the Ready loop and the failure handling.

#![deny(missing_docs)]

pub use tandem_raft as raft;

pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod lock;
pub mod node;
pub mod replica;
pub mod sim;
pub mod sm;
pub mod snapbench;
pub mod transport;
pub mod verify;

pub use cluster::Cluster;
pub use config::{ClusterConfig, Config, ReadConsistency, SnapshotConfig, SyncPolicy};
pub use db::{Db, Read};
pub use error::{Error, Result};
pub use replica::Replica;
pub use sm::{CasMismatch, WriteBatch};
pub use transport::{Envelope, InProcNetwork, Inbox, Payload, Transport};

/// The README's examples, compiled by `cargo test` so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
