//! # tandem-snapshot
//!
//! Point-in-time images of a Tandem state machine, cut into CRC-checked
//! chunks, and the pure sender/receiver state machines that move them
//! between replicas.
//!
//! The pieces, in the order a snapshot meets them:
//!
//! 1. [`BeforeImages`] + [`PointInTimeIter`]: while the apply thread keeps
//!    applying, it records the old value of every key it overwrites; the
//!    builder merges the live (changing) sled iterator with those records to
//!    see the state exactly at the snapshot index.
//! 2. [`SnapshotWriter`] cuts the key-ordered pairs into chunk files of
//!    about `chunk_bytes` (default 1 MiB) plus a [`Manifest`];
//!    [`Stager::create_writer`] / [`Stager::publish_built`] place it in
//!    `snap/`.
//! 3. [`Sender`] / [`Receiver`] (pure) or [`SenderDriver`] /
//!    [`ReceiverDriver`] (with disk IO) run the transfer protocol: offer,
//!    window of chunks, acks, retransmission, abort on leader change.
//! 4. [`Staging`] writes received chunks durably, verifies the whole
//!    snapshot, and publishes it by rename.
//! 5. [`StateSwitch`] installs: the state machine lives in a versioned
//!    directory and a `CURRENT` pointer is switched atomically.
//!
//! Neither side ever holds more than a window of chunks in memory. Bytes
//! from disk or network are decoded without panics; byte layouts are in
//! `docs/snapshot.md`.
//!
//! ## A whole round trip
//!
//! ```
//! use tandem_raft::{ConfState, SnapshotMetadata};
//! use tandem_snapshot::*;
//!
//! let tmp = tempfile::tempdir().unwrap();
//! // Leader: build and publish a snapshot at index 7.
//! let leader_snap = Stager::open(&tmp.path().join("leader/snap")).unwrap();
//! let meta = SnapshotMetadata { conf_state: ConfState::from_voters([1, 2]), index: 7, term: 3 };
//! let mut w = leader_snap.create_writer(&meta, &WriterConfig { chunk_bytes: 128 }).unwrap();
//! for i in 0u32..50 {
//!     w.push(&i.to_be_bytes(), &[i as u8; 20]).unwrap();
//! }
//! let built = leader_snap.publish_built(&w.finish().unwrap()).unwrap();
//!
//! // Transfer it through a perfect in-memory "network".
//! let id = TransferId { leader_term: 4, from: 1, index: 7, term: 3, attempt: 0 };
//! let mut tx = SenderDriver::new(id, built, SenderConfig::default()).unwrap();
//! let follower_snap = Stager::open(&tmp.path().join("follower/snap")).unwrap();
//! let mut rx = ReceiverDriver::new(follower_snap, ReceiverConfig::default()).unwrap();
//!
//! let (mut to_rx, _) = tx.start();
//! let mut installed = None;
//! let mut outcome = None;
//! while outcome.is_none() {
//!     let mut to_tx = Vec::new();
//!     for m in to_rx.drain(..) {
//!         let (msgs, events) = rx.on_message(m);
//!         to_tx.extend(msgs);
//!         for e in events {
//!             if let ReceiverEvent::Completed { snapshot, .. } = e {
//!                 installed = Some(snapshot);
//!             }
//!         }
//!     }
//!     for m in to_tx {
//!         let (msgs, done) = tx.on_message(&m);
//!         to_rx.extend(msgs);
//!         outcome = outcome.or(done);
//!     }
//! }
//! assert_eq!(outcome, Some(Ok(())));
//! let snap = installed.unwrap();
//! assert_eq!(snap.pairs().count(), 50);
//! ```

#![deny(missing_docs)]

mod before_image;
mod error;
pub mod format;
mod fsutil;
mod reader;
pub mod stage;
mod switch;
pub mod transfer;
mod writer;

pub use before_image::{BeforeImages, BeforeImagesConfig, PointInTimeIter};
pub use error::{Error, Result};
pub use format::Manifest;
pub use fsutil::{chunk_file_name, sync_dir, write_atomically, MANIFEST_FILE};
pub use reader::{check_chunk_belongs, Pairs, SnapshotReader};
pub use stage::{CrashPoint, Stager, Staging};
pub use switch::{StateSwitch, CURRENT_FILE};
pub use transfer::{
    AbortReason, Receiver, ReceiverAction, ReceiverConfig, ReceiverDriver, ReceiverEvent,
    ReceiverStats, Sender, SenderAction, SenderConfig, SenderDriver, SenderStats, TransferId,
    TransferMsg,
};
pub use writer::{
    SnapshotWriter, WriterConfig, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN, DEFAULT_CHUNK_BYTES,
};
