//! Moving a snapshot from leader to follower, chunk by chunk.
//!
//! The protocol is two pure state machines, [`Sender`] and [`Receiver`]:
//! they own no clock, no disk and no socket. Time moves through `tick()`,
//! messages come in through `on_message`, and every effect leaves as an
//! action value that the caller performs (send a message, read or stage a
//! chunk, report the outcome). [`SenderDriver`] and [`ReceiverDriver`] are
//! thin shells that perform the disk actions with a [`crate::SnapshotReader`]
//! and a [`crate::Stager`], leaving only the network to the engine.
//!
//! Message flow of one transfer (see `docs/snapshot.md` for the full rules):
//!
//! ```text
//! leader (Sender)                         follower (Receiver)
//!   Offer{id, manifest}  ───────────────▶  begin staging (drops any stale one)
//!                        ◀───────────────  Accept{id}
//!   Chunk{id, n, bytes} × window ───────▶  verify CRC; stage durably
//!                        ◀───────────────  Ack{id, n}   (or Reject{id, n} on a bad CRC)
//!   ... until every chunk is acked ...
//!                        ◀───────────────  Done{id}     (after whole-snapshot verification)
//!   report_snapshot(Finish)                 install
//! ```
//!
//! Either side may send `Abort{id, reason}`. A leader that loses its term
//! aborts; a receiver drops a transfer whose leader term is older than the
//! newest it has seen. The raft `MsgSnapshot` itself carries only metadata
//! and the [`TransferId`] (see [`TransferId::encode`]).

mod driver;
mod receiver;
mod sender;

use bincode::{Decode, Encode};

pub use driver::{ReceiverDriver, ReceiverEvent, ReceiverOutput, SenderDriver, SenderOutput};
pub use receiver::{Receiver, ReceiverAction, ReceiverConfig, ReceiverStats};
pub use sender::{Sender, SenderAction, SenderConfig, SenderStats, WINDOW_CHUNKS_MAX};

use crate::error::{Error, Result};
use crate::format::{CHUNK_HEADER_BYTES, CHUNK_PAYLOAD_BYTES_MAX, MANIFEST_BYTES_MAX};

/// Identifies one transfer attempt of one snapshot from one leader.
///
/// Ordering between attempts that compete for the same receiver is by
/// `(leader_term, attempt)`: see [`TransferId::supersedes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct TransferId {
    /// Raft term of the leader that sends.
    pub leader_term: u64,
    /// Node id of the sender.
    pub from: u64,
    /// Index of the snapshot.
    pub index: u64,
    /// Term of the snapshot.
    pub term: u64,
    /// Sender-chosen attempt number, increasing for each new transfer a
    /// sender starts in the same term, so a restart is told apart from the
    /// abandoned attempt whose chunks may still be in the network.
    pub attempt: u64,
}

const TRANSFER_ID_BYTES: usize = 40;

impl TransferId {
    /// True if a transfer `self` should replace `other` at a receiver.
    #[must_use]
    pub fn supersedes(&self, other: &TransferId) -> bool {
        (self.leader_term, self.attempt) > (other.leader_term, other.attempt)
    }

    /// Fixed 40-byte little-endian encoding, for the `data` of the raft
    /// `MsgSnapshot` so the follower can match it with the staged snapshot.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TRANSFER_ID_BYTES);
        for v in [
            self.leader_term,
            self.from,
            self.index,
            self.term,
            self.attempt,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes [`TransferId::encode`].
    ///
    /// # Errors
    /// [`Error::Corruption`] if `bytes` is not exactly 40 bytes.
    pub fn decode(bytes: &[u8]) -> Result<TransferId> {
        if bytes.len() != TRANSFER_ID_BYTES {
            return Err(Error::corrupt(format!(
                "transfer id: {} bytes, want 40",
                bytes.len()
            )));
        }
        let f = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(a)
        };
        Ok(TransferId {
            leader_term: f(0),
            from: f(1),
            index: f(2),
            term: f(3),
            attempt: f(4),
        })
    }
}

/// Why a transfer ended without success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
#[non_exhaustive]
pub enum AbortReason {
    /// The sender stopped being leader of `leader_term`.
    LeaderChanged,
    /// The receiver has seen a newer transfer or a newer term.
    Superseded,
    /// A chunk, the offer or the final confirmation was not acknowledged
    /// after the configured retries, or the receiver heard nothing for its
    /// idle timeout.
    TimedOut,
    /// The receiver could not write or sync a chunk.
    ReceiverIo,
    /// The staged snapshot failed the whole-snapshot verification.
    VerifyFailed,
    /// The sender could not read a chunk of its own snapshot.
    SenderIo,
    /// The application cancelled it (shutdown, removal of the peer).
    Cancelled,
    /// The offered manifest is invalid.
    BadOffer,
}

/// A message of the transfer protocol. Travels over the engine's transport
/// next to raft messages; [`TransferMsg::encode`] gives its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[non_exhaustive]
pub enum TransferMsg {
    /// Sender → receiver: a snapshot is coming; `manifest` is
    /// [`crate::Manifest::encode`] output.
    Offer {
        /// The transfer.
        id: TransferId,
        /// Encoded manifest.
        manifest: Vec<u8>,
    },
    /// Receiver → sender: staging has begun; send chunks. Also the
    /// receiver's sign of life while it is busy with its own disk: it
    /// answers a copy of a chunk it is still writing, and a repeated offer
    /// while it verifies, with `Accept`, so a slow fsync or a long
    /// verification does not look like a lost message to the sender.
    Accept {
        /// The transfer.
        id: TransferId,
    },
    /// Sender → receiver: one encoded chunk, exactly as stored on disk.
    Chunk {
        /// The transfer.
        id: TransferId,
        /// Chunk position.
        chunk_no: u32,
        /// Encoded chunk (header and payload).
        bytes: Vec<u8>,
    },
    /// Receiver → sender: chunk `chunk_no` is durably staged.
    Ack {
        /// The transfer.
        id: TransferId,
        /// Chunk position.
        chunk_no: u32,
    },
    /// Receiver → sender: chunk `chunk_no` arrived damaged; send it again.
    Reject {
        /// The transfer.
        id: TransferId,
        /// Chunk position.
        chunk_no: u32,
    },
    /// Receiver → sender: every chunk is staged and the whole snapshot
    /// verified; the receiver will install it.
    Done {
        /// The transfer.
        id: TransferId,
    },
    /// Either way: the transfer is over, unsuccessfully.
    Abort {
        /// The transfer.
        id: TransferId,
        /// Why.
        reason: AbortReason,
    },
}

/// Largest encoded [`TransferMsg`]: a chunk of the largest payload plus
/// framing. Decoding refuses to allocate past this.
pub const TRANSFER_MSG_BYTES_MAX: usize = CHUNK_HEADER_BYTES + CHUNK_PAYLOAD_BYTES_MAX + 128;

const _: () = assert!(MANIFEST_BYTES_MAX + 128 <= TRANSFER_MSG_BYTES_MAX);

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<TRANSFER_MSG_BYTES_MAX>()
}

impl TransferMsg {
    /// The transfer this message belongs to.
    #[must_use]
    pub fn id(&self) -> &TransferId {
        match self {
            TransferMsg::Offer { id, .. }
            | TransferMsg::Accept { id }
            | TransferMsg::Chunk { id, .. }
            | TransferMsg::Ack { id, .. }
            | TransferMsg::Reject { id, .. }
            | TransferMsg::Done { id }
            | TransferMsg::Abort { id, .. } => id,
        }
    }

    /// Encodes the message (bincode, fixed-width little-endian integers).
    ///
    /// # Panics
    /// If encoding into a `Vec` fails or exceeds the size limit, which the
    /// constructors of chunks and manifests rule out.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        match bincode::encode_to_vec(self, bincode_config()) {
            Ok(v) => v,
            Err(e) => panic!("encoding a transfer message failed: {e}"),
        }
    }

    /// Decodes a message; the whole buffer must be consumed.
    ///
    /// # Errors
    /// [`Error::Corruption`] for malformed or oversized input.
    pub fn decode(bytes: &[u8]) -> Result<TransferMsg> {
        if bytes.len() > TRANSFER_MSG_BYTES_MAX {
            return Err(Error::corrupt(format!(
                "transfer message of {} bytes",
                bytes.len()
            )));
        }
        let (msg, used) = bincode::decode_from_slice(bytes, bincode_config())
            .map_err(|e| Error::corrupt(format!("transfer message: {e}")))?;
        if used != bytes.len() {
            return Err(Error::corrupt("transfer message: trailing bytes"));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TransferId {
        TransferId {
            leader_term: 3,
            from: 1,
            index: 100,
            term: 2,
            attempt: 7,
        }
    }

    #[test]
    fn transfer_id_round_trips_and_orders() {
        let a = id();
        assert_eq!(TransferId::decode(&a.encode()).unwrap(), a);
        assert!(TransferId::decode(&a.encode()[..39]).is_err());
        let later = TransferId { attempt: 8, ..a };
        let newer_term = TransferId {
            leader_term: 4,
            attempt: 0,
            ..a
        };
        assert!(later.supersedes(&a) && !a.supersedes(&later));
        assert!(newer_term.supersedes(&later));
        assert!(!a.supersedes(&a));
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            TransferMsg::Offer {
                id: id(),
                manifest: vec![1, 2, 3],
            },
            TransferMsg::Accept { id: id() },
            TransferMsg::Chunk {
                id: id(),
                chunk_no: 4,
                bytes: vec![9; 100],
            },
            TransferMsg::Ack {
                id: id(),
                chunk_no: 4,
            },
            TransferMsg::Reject {
                id: id(),
                chunk_no: 4,
            },
            TransferMsg::Done { id: id() },
            TransferMsg::Abort {
                id: id(),
                reason: AbortReason::LeaderChanged,
            },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(TransferMsg::decode(&b).unwrap(), m);
            assert!(TransferMsg::decode(&b[..b.len() - 1]).is_err());
            let mut longer = b.clone();
            longer.push(0);
            assert!(TransferMsg::decode(&longer).is_err());
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        let mut b = TransferMsg::Chunk {
            id: id(),
            chunk_no: 0,
            bytes: vec![],
        }
        .encode();
        // The Vec length is the last 8 bytes (fixed-int encoding).
        let n = b.len();
        b[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(TransferMsg::decode(&b).is_err());
    }
}
