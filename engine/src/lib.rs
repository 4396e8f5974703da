//! # Tandem
//!
//! An embedded, replicated key-value storage engine. Every write is
//! replicated with Raft to a quorum of replicas, made durable in a
//! segmented, CRC-checked write-ahead log, and applied to a sled-backed
//! state machine atomically with the applied index.
//!
//! The crate is being built up issue by issue; see the README's feature
//! table for what works today. The pieces available now:
//!
//! - [`Config`] / [`ClusterConfig`]: documented defaults, validated at open.
//! - [`Error`]: one enum for every operating condition (`NotLeader`,
//!   `Stale`, `Timeout`, `Locked`, ...).
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

#![deny(missing_docs)]

pub use tandem_raft as raft;

pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod lock;
pub mod node;
pub mod replica;
pub mod sm;
pub mod transport;
pub mod verify;

pub use cluster::Cluster;
pub use config::{ClusterConfig, Config, ReadConsistency, SyncPolicy};
pub use db::{Db, Read};
pub use error::{Error, Result};
pub use replica::Replica;
pub use sm::{CasMismatch, WriteBatch};
pub use transport::{Envelope, InProcNetwork, Inbox, Payload, Transport};
