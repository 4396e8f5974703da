//! The data types that travel through the consensus core: log entries, hard
//! state, membership, snapshots and messages.
//!
//! They mirror the `eraftpb` types of raft-rs / etcd, as plain Rust structs.
//! All of them derive `bincode` `Encode`/`Decode` so a transport or a log can
//! serialise them; the core itself never encodes anything.

use std::borrow::Cow;

use bincode::{Decode, Encode};
pub use bytes::Bytes;

/// The kind of a log entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EntryType {
    /// An application command (or the empty entry a new leader appends).
    #[default]
    EntryNormal,
    /// A single-step membership change, `data` holds an encoded [`ConfChange`].
    EntryConfChange,
    /// A joint-consensus membership change, `data` holds an encoded [`ConfChangeV2`].
    EntryConfChangeV2,
}

/// One entry of the replicated log.
///
/// The payload and the context are reference-counted [`Bytes`]: an entry is
/// held at once by the unstable log, the log's cache, the append messages to
/// every follower and the apply task, and cloning it copies no payload.
/// Build one from a `Vec<u8>` with `.into()` (which does not copy either).
///
/// The `bincode` encoding is that of the same struct with `Vec<u8>` fields
/// (a length, then the bytes), so it does not depend on the in-memory type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Entry {
    /// What `data` holds.
    pub entry_type: EntryType,
    /// The term in which the leader created the entry.
    pub term: u64,
    /// The position of the entry in the log; the first entry ever is index 1.
    pub index: u64,
    /// The application payload.
    pub data: Bytes,
    /// Opaque context supplied with the proposal (e.g. a proposal id).
    pub context: Bytes,
}

impl Encode for Entry {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.entry_type.encode(encoder)?;
        self.term.encode(encoder)?;
        self.index.encode(encoder)?;
        self.data.as_ref().encode(encoder)?;
        self.context.as_ref().encode(encoder)
    }
}

impl<Context> Decode<Context> for Entry {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        Ok(Entry {
            entry_type: EntryType::decode(decoder)?,
            term: u64::decode(decoder)?,
            index: u64::decode(decoder)?,
            data: Vec::<u8>::decode(decoder)?.into(),
            context: Vec::<u8>::decode(decoder)?.into(),
        })
    }
}

bincode::impl_borrow_decode!(Entry);

impl Entry {
    /// Bytes this entry counts for in size limits (`max_size_per_msg`,
    /// `max_uncommitted_size`, `entries(.., max_size)`): payload plus context
    /// plus a fixed per-entry overhead for the header fields.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        ENTRY_OVERHEAD_BYTES + self.data.len() as u64 + self.context.len() as u64
    }
}

/// Fixed per-entry overhead counted by [`Entry::size_bytes`] (type, term, index).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// State that must be persisted before messages that depend on it are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The candidate this node voted for in `term` (0: none).
    pub vote: u64,
    /// The highest index known to be committed.
    pub commit: u64,
}

impl HardState {
    /// True if this is the all-zero state of a fresh node.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// The membership configuration.
///
/// Invariant: `voters`, `learners` are disjoint; in a joint configuration
/// `voters_outgoing` is non-empty and `learners_next` holds outgoing voters
/// that become learners when the joint state is left.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ConfState {
    /// Voters of the incoming (or only) configuration.
    pub voters: Vec<u64>,
    /// Learners: receive the log, do not vote.
    pub learners: Vec<u64>,
    /// Voters of the outgoing configuration; empty unless joint.
    pub voters_outgoing: Vec<u64>,
    /// Nodes that will become learners when the joint configuration is left.
    pub learners_next: Vec<u64>,
    /// Leave the joint configuration automatically once it is committed.
    pub auto_leave: bool,
}

impl ConfState {
    /// A configuration with just these voters.
    #[must_use]
    pub fn from_voters(voters: impl IntoIterator<Item = u64>) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            ..ConfState::default()
        }
    }

    /// A configuration with these voters and learners.
    #[must_use]
    pub fn from_parts(
        voters: impl IntoIterator<Item = u64>,
        learners: impl IntoIterator<Item = u64>,
    ) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            learners: learners.into_iter().collect(),
            ..ConfState::default()
        }
    }
}

/// Where a snapshot sits in the log, and the membership at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct SnapshotMetadata {
    /// Membership as of `index`.
    pub conf_state: ConfState,
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
}

/// A snapshot as the consensus core sees it.
///
/// In Tandem the snapshot message carries only metadata and a small
/// descriptor in `data`; the state machine image travels chunk by chunk
/// outside the core (see `tandem-snapshot`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Snapshot {
    /// Application-defined payload or descriptor.
    pub data: Vec<u8>,
    /// Position and membership.
    pub metadata: SnapshotMetadata,
}

impl Snapshot {
    /// True for the empty snapshot (index 0).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }
}

/// The type of a raft message. Local messages (`Hup`, `Beat`, `Unreachable`,
/// `SnapStatus`, `CheckQuorum`) never cross the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub enum MessageType {
    /// Local: start an election.
    #[default]
    MsgHup,
    /// Local: leader should broadcast heartbeats.
    MsgBeat,
    /// A proposal of new entries (local, or forwarded by a follower).
    MsgPropose,
    /// Leader → follower: entries to append.
    MsgAppend,
    /// Follower → leader: result of an append.
    MsgAppendResponse,
    /// Candidate → voter: request a vote.
    MsgRequestVote,
    /// Voter → candidate: the vote.
    MsgRequestVoteResponse,
    /// Leader → follower: install a snapshot.
    MsgSnapshot,
    /// Leader → follower: heartbeat carrying the commit index.
    MsgHeartbeat,
    /// Follower → leader: heartbeat response.
    MsgHeartbeatResponse,
    /// Local: a peer could not be reached.
    MsgUnreachable,
    /// Local: result of sending a snapshot.
    MsgSnapStatus,
    /// Local: leader checks it still has a quorum.
    MsgCheckQuorum,
    /// Request to transfer leadership (local or forwarded).
    MsgTransferLeader,
    /// Leader → transferee: campaign now, ignoring the lease.
    MsgTimeoutNow,
    /// A read-index request (local, or forwarded by a follower).
    MsgReadIndex,
    /// Leader → follower: answer to a forwarded read-index request.
    MsgReadIndexResp,
    /// Pre-candidate → voter: would you vote for me?
    MsgRequestPreVote,
    /// Voter → pre-candidate: the pre-vote.
    MsgRequestPreVoteResponse,
}

impl MessageType {
    /// True for message types that never leave the node.
    #[must_use]
    pub fn is_local(self) -> bool {
        matches!(
            self,
            MessageType::MsgHup
                | MessageType::MsgBeat
                | MessageType::MsgUnreachable
                | MessageType::MsgSnapStatus
                | MessageType::MsgCheckQuorum
        )
    }

    /// True for the responses that are sent back to a sender.
    #[must_use]
    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageType::MsgAppendResponse
                | MessageType::MsgRequestVoteResponse
                | MessageType::MsgHeartbeatResponse
                | MessageType::MsgUnreachable
                | MessageType::MsgRequestPreVoteResponse
        )
    }
}

/// A message between raft nodes (or from the application to its own node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Message {
    /// What kind of message this is.
    pub msg_type: MessageType,
    /// Destination node id.
    pub to: u64,
    /// Source node id.
    pub from: u64,
    /// Sender's term (0 for local messages and proposals).
    pub term: u64,
    /// Term of the entry at `index` (append: the entry preceding `entries`).
    pub log_term: u64,
    /// Log index (append: the index preceding `entries`; response: the match or reject index).
    pub index: u64,
    /// Entries carried by appends and proposals.
    pub entries: Vec<Entry>,
    /// Leader's commit index.
    pub commit: u64,
    /// Term of the entry at `commit`, when known.
    pub commit_term: u64,
    /// The snapshot (metadata) carried by `MsgSnapshot`.
    pub snapshot: Option<Snapshot>,
    /// Index the follower asks a snapshot for (`request_snapshot`), 0 otherwise.
    pub request_snapshot: u64,
    /// True if an append or vote is rejected.
    pub reject: bool,
    /// On a rejected append: the follower's hint for where to probe next.
    pub reject_hint: u64,
    /// Opaque context (read-index request context, campaign type, ...).
    pub context: Vec<u8>,
    /// Election priority of the sender (used in votes).
    pub priority: i64,
}

/// The kind of a single membership change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub enum ConfChangeType {
    /// Add a voter (or promote a learner).
    #[default]
    AddNode,
    /// Remove a voter or learner.
    RemoveNode,
    /// Add a learner (or demote a voter).
    AddLearnerNode,
}

/// A single-step membership change (the classic, non-joint API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ConfChange {
    /// What to do.
    pub change_type: ConfChangeType,
    /// To whom.
    pub node_id: u64,
    /// Opaque application context.
    pub context: Vec<u8>,
}

/// How a [`ConfChangeV2`] moves through joint consensus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub enum ConfChangeTransition {
    /// Use a simple change if possible (one voter changes), else joint with auto-leave.
    #[default]
    Auto,
    /// Always joint; leave automatically once committed.
    Implicit,
    /// Always joint; the application proposes the leave explicitly.
    Explicit,
}

/// One change inside a [`ConfChangeV2`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ConfChangeSingle {
    /// What to do.
    pub change_type: ConfChangeType,
    /// To whom.
    pub node_id: u64,
}

/// A membership change that may use joint consensus. An empty `changes`
/// list means "leave the joint configuration".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ConfChangeV2 {
    /// How to transition.
    pub transition: ConfChangeTransition,
    /// The changes, applied together.
    pub changes: Vec<ConfChangeSingle>,
    /// Opaque application context.
    pub context: Vec<u8>,
}

impl ConfChangeV2 {
    /// True if this change leaves a joint configuration (no changes, auto transition).
    #[must_use]
    pub fn leave_joint(&self) -> bool {
        self.changes.is_empty() && self.transition == ConfChangeTransition::Auto
    }

    /// Whether this change needs joint consensus, and if so whether it leaves
    /// automatically: `(use_joint, auto_leave)`.
    #[must_use]
    pub fn enter_joint(&self) -> Option<bool> {
        if self.transition != ConfChangeTransition::Auto || self.changes.len() > 1 {
            let auto_leave = match self.transition {
                ConfChangeTransition::Auto | ConfChangeTransition::Implicit => true,
                ConfChangeTransition::Explicit => false,
            };
            Some(auto_leave)
        } else {
            None
        }
    }
}

/// Anything that can be proposed as a membership change.
pub trait ConfChangeI {
    /// Convert into the joint-capable form.
    fn into_v2(self) -> ConfChangeV2;
    /// View as the joint-capable form.
    fn as_v2(&self) -> Cow<'_, ConfChangeV2>;
    /// The classic form, if this is one.
    fn as_v1(&self) -> Option<&ConfChange>;
}

impl ConfChangeI for ConfChange {
    fn into_v2(self) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle {
                change_type: self.change_type,
                node_id: self.node_id,
            }],
            context: self.context,
        }
    }

    fn as_v2(&self) -> Cow<'_, ConfChangeV2> {
        Cow::Owned(self.clone().into_v2())
    }

    fn as_v1(&self) -> Option<&ConfChange> {
        Some(self)
    }
}

impl ConfChangeI for ConfChangeV2 {
    fn into_v2(self) -> ConfChangeV2 {
        self
    }

    fn as_v2(&self) -> Cow<'_, ConfChangeV2> {
        Cow::Borrowed(self)
    }

    fn as_v1(&self) -> Option<&ConfChange> {
        None
    }
}

/// The bincode configuration used for every Tandem encoding of these types:
/// little-endian, variable-length integers, a hard limit on decoded size.
#[must_use]
pub fn codec_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<{ 256 * 1024 * 1024 }>()
}

/// Encode a value with [`codec_config`].
///
/// # Panics
/// Never in practice: encoding into a `Vec` of these types cannot fail.
#[must_use]
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, codec_config()).expect("encoding into a Vec cannot fail")
}

/// Decode a value with [`codec_config`]; trailing bytes are an error.
///
/// # Errors
/// [`crate::Error::Codec`] on malformed or trailing bytes.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> crate::Result<T> {
    let (value, read) = bincode::decode_from_slice(bytes, codec_config())
        .map_err(|e| crate::Error::Codec(e.to_string()))?;
    if read != bytes.len() {
        return Err(crate::Error::Codec(format!(
            "{} trailing bytes after value",
            bytes.len() - read
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout `Entry` had with `Vec<u8>` fields: its encoding must not
    /// change with the in-memory type (messages between versions, corpora).
    #[derive(Encode, Decode, PartialEq, Debug)]
    struct VecEntry {
        entry_type: EntryType,
        term: u64,
        index: u64,
        data: Vec<u8>,
        context: Vec<u8>,
    }

    #[test]
    fn entry_encodes_as_with_vec_fields() {
        for (data, context) in [
            (Vec::new(), Vec::new()),
            (b"payload".to_vec(), Vec::new()),
            (vec![7; 300], b"ctx".to_vec()),
        ] {
            let e = Entry {
                entry_type: EntryType::EntryConfChange,
                term: 3,
                index: 1 << 40,
                data: data.clone().into(),
                context: context.clone().into(),
            };
            let v = VecEntry {
                entry_type: EntryType::EntryConfChange,
                term: 3,
                index: 1 << 40,
                data,
                context,
            };
            let bytes = encode(&e);
            assert_eq!(bytes, encode(&v));
            assert_eq!(decode::<Entry>(&bytes).unwrap(), e);
            assert_eq!(decode::<VecEntry>(&bytes).unwrap(), v);
        }
    }

    #[test]
    fn message_round_trips_through_codec() {
        let m = Message {
            msg_type: MessageType::MsgAppend,
            to: 2,
            from: 1,
            term: 7,
            log_term: 6,
            index: 41,
            entries: vec![Entry {
                entry_type: EntryType::EntryNormal,
                term: 7,
                index: 42,
                data: b"hello".to_vec().into(),
                context: vec![1, 2, 3].into(),
            }],
            commit: 40,
            snapshot: Some(Snapshot::default()),
            ..Message::default()
        };
        let bytes = encode(&m);
        let back: Message = decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert!(decode::<Message>(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode::<Message>(&extra).is_err());
    }

    #[test]
    fn conf_change_v1_converts_to_simple_v2() {
        let cc = ConfChange {
            change_type: ConfChangeType::AddLearnerNode,
            node_id: 4,
            context: b"ctx".to_vec(),
        };
        let v2 = cc.as_v2();
        assert_eq!(v2.changes.len(), 1);
        assert_eq!(v2.enter_joint(), None);
        assert!(!v2.leave_joint());
        assert_eq!(v2.context, b"ctx");
        let joint = ConfChangeV2 {
            transition: ConfChangeTransition::Explicit,
            ..ConfChangeV2::default()
        };
        assert_eq!(joint.enter_joint(), Some(false));
        assert!(ConfChangeV2::default().leave_joint());
    }
}
