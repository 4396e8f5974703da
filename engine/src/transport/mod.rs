//! How replicas talk: the [`Transport`] trait (outgoing), the [`Inbox`]
//! (incoming) and the [`Envelope`] every message travels in.
//!
//! A transport only moves envelopes; it never interprets raft. Every
//! envelope carries the cluster id, so a replica drops (and counts)
//! messages that stray in from another cluster sharing the network;
//! messages from nodes outside the membership are dropped by the node
//! itself, which knows the membership. [`InProcNetwork`] is the in-process
//! implementation, with fault injection for tests and the demo; replicas in
//! separate processes plug in any other implementation through
//! [`Replica::open`](crate::Replica::open).

mod inproc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bincode::{Decode, Encode};
use crossbeam_channel::{Sender, TrySendError};
use tandem_raft::Message;
use thiserror::Error;

pub use inproc::{Faults, InProcNetwork, InProcTransport, NetworkStats};

/// Version of the envelope encoding; bumped on any incompatible change.
pub const WIRE_VERSION: u8 = 1;

/// One message between replicas, with the routing a transport needs.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Envelope {
    /// The sender's cluster id; receivers drop envelopes of other clusters.
    pub cluster_id: u64,
    /// Sending replica.
    pub from: u64,
    /// Receiving replica.
    pub to: u64,
    /// What is carried.
    pub payload: Payload,
}

/// The content of an [`Envelope`].
// Raft messages are nearly all the traffic: boxing them to shrink the rare
// chunk variant would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Payload {
    /// A raft message (`from`/`to` equal the envelope's).
    Raft(Message),
    /// One frame of a snapshot transfer (see `tandem-snapshot`); opaque here.
    SnapshotChunk(Vec<u8>),
}

impl Envelope {
    /// Wrap a raft message.
    #[must_use]
    pub fn raft(cluster_id: u64, msg: Message) -> Envelope {
        Envelope {
            cluster_id,
            from: msg.from,
            to: msg.to,
            payload: Payload::Raft(msg),
        }
    }

    /// Bytes this envelope occupies on a wire: `WIRE_VERSION` then the bincode body.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        out.extend_from_slice(&tandem_raft::types::encode(self));
        out
    }

    /// Decode bytes made by [`Envelope::encode`].
    ///
    /// # Errors
    /// [`TransportError::Malformed`] on an unknown version or bad bytes.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, TransportError> {
        match bytes.split_first() {
            Some((&WIRE_VERSION, body)) => tandem_raft::types::decode(body)
                .map_err(|e| TransportError::Malformed(e.to_string())),
            Some((v, _)) => Err(TransportError::Malformed(format!(
                "unknown wire version {v}"
            ))),
            None => Err(TransportError::Malformed("empty envelope".into())),
        }
    }
}

/// Why a send failed. Raft tolerates lost messages, so the node only counts
/// these and reports the peer unreachable to the consensus core.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The destination is not known to the transport.
    #[error("unknown destination {0}")]
    UnknownPeer(u64),
    /// The destination cannot be reached right now.
    #[error("peer {0} unreachable")]
    Unreachable(u64),
    /// Bytes on the wire could not be decoded.
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

/// Sends envelopes to other replicas. Implementations must not block for
/// long: the raft loop calls `send` inline, and so does the WAL's writer
/// thread for the acknowledgements it releases once their entries are
/// durable (a slow `send` there delays every later group commit).
pub trait Transport: Send + Sync + 'static {
    /// Send one envelope (best effort: it may be lost, delayed, reordered).
    ///
    /// # Errors
    /// [`TransportError`] if the envelope certainly cannot be delivered.
    fn send(&self, envelope: Envelope) -> Result<(), TransportError>;
}

/// Counters of a replica's inbound traffic, readable while it runs.
#[derive(Debug, Default)]
pub struct InboxCounters {
    /// Envelopes accepted into the replica's queue.
    pub received: AtomicU64,
    /// Dropped: carried another cluster's id.
    pub dropped_foreign_cluster: AtomicU64,
    /// Dropped: addressed to another replica.
    pub dropped_misrouted: AtomicU64,
    /// Dropped: the replica's queue was full (raft retransmits).
    pub dropped_queue_full: AtomicU64,
    /// Dropped: the replica had stopped.
    pub dropped_closed: AtomicU64,
}

/// The receiving side of a replica: a transport hands every incoming
/// envelope to [`Inbox::deliver`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Inbox {
    id: u64,
    cluster_id: u64,
    tx: Sender<Envelope>,
    counters: Arc<InboxCounters>,
}

impl Inbox {
    /// An inbox for replica `id` of cluster `cluster_id` feeding `tx`.
    #[must_use]
    pub fn new(id: u64, cluster_id: u64, tx: Sender<Envelope>) -> Inbox {
        Inbox {
            id,
            cluster_id,
            tx,
            counters: Arc::new(InboxCounters::default()),
        }
    }

    /// The replica this inbox belongs to.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hand over one envelope. Returns true if it was queued; envelopes of
    /// another cluster, for another replica, or beyond the queue's bound are
    /// dropped and counted — never an error, since raft tolerates loss.
    pub fn deliver(&self, envelope: Envelope) -> bool {
        let c = &self.counters;
        if envelope.cluster_id != self.cluster_id {
            c.dropped_foreign_cluster.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                from = envelope.from,
                cluster = envelope.cluster_id,
                "dropped envelope of another cluster"
            );
            return false;
        }
        if envelope.to != self.id {
            c.dropped_misrouted.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(envelope) {
            Ok(()) => {
                c.received.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) => {
                c.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                c.dropped_closed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The counters of this inbox.
    #[must_use]
    pub fn counters(&self) -> &Arc<InboxCounters> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_raft::MessageType;

    fn msg(from: u64, to: u64) -> Message {
        Message {
            msg_type: MessageType::MsgHeartbeat,
            from,
            to,
            term: 3,
            ..Message::default()
        }
    }

    #[test]
    fn envelope_round_trips_and_rejects_bad_bytes() {
        let e = Envelope::raft(9, msg(1, 2));
        assert_eq!((e.from, e.to), (1, 2));
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(matches!(
            Envelope::decode(&wrong),
            Err(TransportError::Malformed(_))
        ));
        assert!(Envelope::decode(&[]).is_err());
        assert!(Envelope::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn inbox_drops_and_counts_foreign_misrouted_and_overflow() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let inbox = Inbox::new(2, 7, tx);
        assert!(!inbox.deliver(Envelope::raft(8, msg(1, 2))));
        assert!(!inbox.deliver(Envelope::raft(7, msg(1, 3))));
        assert!(inbox.deliver(Envelope::raft(7, msg(1, 2))));
        assert!(!inbox.deliver(Envelope::raft(7, msg(1, 2))));
        let c = inbox.counters();
        assert_eq!(c.dropped_foreign_cluster.load(Ordering::Relaxed), 1);
        assert_eq!(c.dropped_misrouted.load(Ordering::Relaxed), 1);
        assert_eq!(c.received.load(Ordering::Relaxed), 1);
        assert_eq!(c.dropped_queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(rx.try_recv().unwrap().from, 1);
        drop(rx);
        assert!(!inbox.deliver(Envelope::raft(7, msg(1, 2))));
        assert_eq!(c.dropped_closed.load(Ordering::Relaxed), 1);
    }
}
