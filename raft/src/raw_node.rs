//! The application-facing interface: feed in ticks, messages and
//! proposals; take out numbered [`Ready`]s; report what was persisted and
//! applied.
//!
//! # The Ready contract
//!
//! For each `Ready`, in this order:
//! 1. send [`Ready::messages`] (they do not depend on this Ready's state;
//!    a leader may replicate before its own write is durable);
//! 2. persist the snapshot (and install it in the state machine), the
//!    entries and the hard state; sync if [`Ready::must_sync`];
//! 3. send [`Ready::persisted_messages`] (votes, append acknowledgements:
//!    they promise the state just persisted);
//! 4. apply [`Ready::committed_entries`] (already durable locally);
//! 5. call `advance` (or `advance_append` / `advance_append_async` +
//!    `on_persist_ready`, then `advance_apply` / `advance_apply_to`).

use std::collections::VecDeque;

use tracing::warn;

use crate::config::Config;
use crate::errors::{Error, Result};
use crate::raft::{Raft, SoftState, StateRole};
use crate::read_only::ReadState;
use crate::status::Status;
use crate::storage::Storage;
use crate::types::{
    encode, ConfChangeI, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
};

/// The outcome of sending a snapshot, reported with `report_snapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The follower received and installed it.
    Finish,
    /// Sending failed; the leader will probe again.
    Failure,
}

/// Everything the application must do after a batch of inputs. See the
/// module documentation for the order.
#[derive(Debug, Default, PartialEq)]
pub struct Ready {
    number: u64,
    ss: Option<SoftState>,
    hs: Option<HardState>,
    read_states: Vec<ReadState>,
    entries: Vec<Entry>,
    snapshot: Snapshot,
    committed_entries: Vec<Entry>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    must_sync: bool,
}

impl Ready {
    /// The sequence number of this Ready (1, 2, ...), for `on_persist_ready`.
    #[must_use]
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The soft state, if it changed.
    #[must_use]
    pub fn ss(&self) -> Option<&SoftState> {
        self.ss.as_ref()
    }

    /// The hard state to persist, if it changed.
    #[must_use]
    pub fn hs(&self) -> Option<&HardState> {
        self.hs.as_ref()
    }

    /// Reads that may be served once `index` is applied.
    #[must_use]
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    /// Take the read states.
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    /// Entries to append to storage (replacing any at or after the first index).
    #[must_use]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Take the entries to persist.
    pub fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    /// The snapshot to install (empty if none).
    #[must_use]
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Committed entries to apply.
    #[must_use]
    pub fn committed_entries(&self) -> &[Entry] {
        &self.committed_entries
    }

    /// Take the committed entries.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }

    /// Messages that may be sent right away.
    #[must_use]
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Take the messages that may be sent right away.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// Messages to send only after this Ready is persisted.
    #[must_use]
    pub fn persisted_messages(&self) -> &[Message] {
        &self.persisted_messages
    }

    /// Take the messages to send after persisting.
    pub fn take_persisted_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.persisted_messages)
    }

    /// True if the writes of this Ready must be synced to disk before the
    /// persisted messages go out (new entries, snapshot, term or vote).
    #[must_use]
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }
}

/// What became ready while advancing: commit progress, entries to apply
/// and messages (all sendable at once).
#[derive(Debug, Default, PartialEq)]
pub struct LightReady {
    commit_index: Option<u64>,
    committed_entries: Vec<Entry>,
    messages: Vec<Message>,
}

impl LightReady {
    /// The new commit index, if it changed (persist it with the hard state).
    #[must_use]
    pub fn commit_index(&self) -> Option<u64> {
        self.commit_index
    }

    /// Committed entries to apply.
    #[must_use]
    pub fn committed_entries(&self) -> &[Entry] {
        &self.committed_entries
    }

    /// Take the committed entries.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }

    /// Messages to send.
    #[must_use]
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Take the messages to send.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }
}

/// What one Ready asked to persist, kept until it is reported persisted.
#[derive(Clone, Debug, Default)]
struct ReadyRecord {
    number: u64,
    last_entry: Option<(u64, u64)>,
    snapshot: Option<(u64, u64)>,
    term: u64,
}

/// A raft node driven by the application.
pub struct RawNode<S: Storage> {
    /// The raft state machine (exposed for tests and tools).
    pub raft: Raft<S>,
    prev_ss: SoftState,
    prev_hs: HardState,
    max_number: u64,
    records: VecDeque<ReadyRecord>,
    /// The last index of committed entries handed out.
    commit_since_index: u64,
}

impl<S: Storage> std::fmt::Debug for RawNode<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawNode")
            .field("raft", &self.raft)
            .field("max_number", &self.max_number)
            .field("commit_since_index", &self.commit_since_index)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> RawNode<S> {
    /// A node over `store` (which holds its persisted state).
    ///
    /// # Errors
    /// Invalid configuration, storage errors, inconsistent persisted state.
    pub fn new(config: &Config, store: S) -> Result<Self> {
        let raft = Raft::new(config, store)?;
        let prev_hs = raft.hard_state();
        let prev_ss = raft.soft_state();
        let commit_since_index = raft.raft_log.applied;
        Ok(RawNode {
            raft,
            prev_ss,
            prev_hs,
            max_number: 0,
            records: VecDeque::new(),
            commit_since_index,
        })
    }

    /// Advance the logical clock by one tick. Returns true if the tick
    /// started an election or sent heartbeats.
    pub fn tick(&mut self) -> bool {
        self.raft.tick()
    }

    /// Start an election now.
    ///
    /// # Errors
    /// None in practice; kept for symmetry with `step`.
    pub fn campaign(&mut self) -> Result<()> {
        self.raft.step(Message {
            msg_type: MessageType::MsgHup,
            from: self.raft.id,
            ..Message::default()
        })
    }

    /// Propose an application command.
    ///
    /// # Errors
    /// [`Error::ProposalDropped`] if there is no leader, a transfer is in
    /// progress, the node was removed, or the uncommitted budget is used up.
    pub fn propose(&mut self, context: Vec<u8>, data: Vec<u8>) -> Result<()> {
        let m = Message {
            msg_type: MessageType::MsgPropose,
            from: self.raft.id,
            entries: vec![Entry {
                data: data.into(),
                context: context.into(),
                ..Entry::default()
            }],
            ..Message::default()
        };
        self.raft.step(m)
    }

    /// Propose a membership change (applied with `apply_conf_change` once committed).
    ///
    /// # Errors
    /// As `propose`, plus [`Error::ConfChangeError`] if the change would be
    /// rejected from the current configuration, and `ProposalDropped` while
    /// another change is pending.
    pub fn propose_conf_change(&mut self, context: Vec<u8>, cc: impl ConfChangeI) -> Result<()> {
        let (data, entry_type) = match cc.as_v1() {
            Some(v1) => (encode(v1), EntryType::EntryConfChange),
            None => (encode(&cc.into_v2()), EntryType::EntryConfChangeV2),
        };
        let m = Message {
            msg_type: MessageType::MsgPropose,
            from: self.raft.id,
            entries: vec![Entry {
                entry_type,
                data: data.into(),
                context: context.into(),
                ..Entry::default()
            }],
            ..Message::default()
        };
        self.raft.step(m)
    }

    /// Apply a committed membership change; returns the new membership to
    /// persist with the applied index.
    ///
    /// # Errors
    /// [`Error::ConfChangeError`] if the change is invalid; nothing changes.
    pub fn apply_conf_change(&mut self, cc: &impl ConfChangeI) -> Result<ConfState> {
        self.raft.apply_conf_change(&cc.as_v2())
    }

    /// Process a message from a peer.
    ///
    /// # Errors
    /// [`Error::StepLocalMsg`] for local-only types; [`Error::StepPeerNotFound`]
    /// for a response from a non-member; proposal errors for forwarded proposals.
    pub fn step(&mut self, m: Message) -> Result<()> {
        if m.msg_type.is_local() {
            return Err(Error::StepLocalMsg);
        }
        if m.msg_type.is_response() && self.raft.prs().get(m.from).is_none() {
            return Err(Error::StepPeerNotFound);
        }
        self.raft.step(m)
    }

    /// Request a linearizable read; a [`ReadState`] with `rctx` appears in a
    /// later Ready once the read may be served at its index.
    pub fn read_index(&mut self, rctx: Vec<u8>) {
        let m = Message {
            msg_type: MessageType::MsgReadIndex,
            from: self.raft.id,
            entries: vec![Entry {
                data: rctx.into(),
                ..Entry::default()
            }],
            ..Message::default()
        };
        // Dropped requests are logged; the caller times out and retries.
        let _ = self.raft.step(m);
    }

    /// Ask the current leader to hand leadership to `transferee`.
    pub fn transfer_leader(&mut self, transferee: u64) {
        let m = Message {
            msg_type: MessageType::MsgTransferLeader,
            from: transferee,
            ..Message::default()
        };
        let _ = self.raft.step(m);
    }

    /// Ask the leader for a snapshot (a follower whose state machine is damaged).
    ///
    /// # Errors
    /// [`Error::RequestSnapshotDropped`] if not a follower with a leader.
    pub fn request_snapshot(&mut self) -> Result<()> {
        self.raft.request_snapshot()
    }

    /// Peer `id` could not be reached: the leader stops streaming to it.
    pub fn report_unreachable(&mut self, id: u64) {
        let m = Message {
            msg_type: MessageType::MsgUnreachable,
            from: id,
            ..Message::default()
        };
        let _ = self.raft.step(m);
    }

    /// Report how sending a snapshot to `id` ended.
    pub fn report_snapshot(&mut self, id: u64, status: SnapshotStatus) {
        let m = Message {
            msg_type: MessageType::MsgSnapStatus,
            from: id,
            reject: status == SnapshotStatus::Failure,
            ..Message::default()
        };
        let _ = self.raft.step(m);
    }

    /// True if `ready()` would return something to do.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.soft_state() != self.prev_ss
            || r.hard_state() != self.prev_hs
            || !r.read_states.is_empty()
            || !r.msgs.is_empty()
            || !r.msgs_after_persist.is_empty()
            || !r.raft_log.unstable.next_entries().is_empty()
            || r.raft_log.unstable.next_snapshot().is_some()
            || r.raft_log
                .has_next_committed_entries(self.commit_since_index)
    }

    /// Collect what is ready. Call `has_ready` first to avoid empty Readies.
    pub fn ready(&mut self) -> Ready {
        self.max_number += 1;
        let number = self.max_number;
        let mut rd = Ready {
            number,
            ..Ready::default()
        };
        let mut record = ReadyRecord {
            number,
            ..ReadyRecord::default()
        };
        let ss = self.raft.soft_state();
        if ss != self.prev_ss {
            rd.ss = Some(ss);
            self.prev_ss = ss;
        }
        let hs = self.raft.hard_state();
        if hs != self.prev_hs {
            if hs.term != self.prev_hs.term || hs.vote != self.prev_hs.vote {
                rd.must_sync = true;
            }
            rd.hs = Some(hs);
            self.prev_hs = hs;
        }
        record.term = hs.term;
        rd.read_states = std::mem::take(&mut self.raft.read_states);
        let log = &mut self.raft.raft_log;
        if let Some(snap) = log.unstable.next_snapshot() {
            record.snapshot = Some((snap.metadata.index, snap.metadata.term));
            rd.snapshot = snap.clone();
            rd.must_sync = true;
        }
        rd.entries = log.unstable.next_entries().to_vec();
        if let Some(e) = rd.entries.last() {
            record.last_entry = Some((e.index, e.term));
            rd.must_sync = true;
        }
        log.unstable.accept_in_progress();
        if let Some(ents) = self.take_committed() {
            rd.committed_entries = ents;
        }
        rd.messages = std::mem::take(&mut self.raft.msgs);
        rd.persisted_messages = std::mem::take(&mut self.raft.msgs_after_persist);
        self.records.push_back(record);
        rd
    }

    fn take_committed(&mut self) -> Option<Vec<Entry>> {
        let max = self.raft.max_committed_size_per_ready();
        let ents = self
            .raft
            .raft_log
            .next_committed_entries(self.commit_since_index, max)?;
        let last = ents.last().map_or(self.commit_since_index, |e| e.index);
        self.commit_since_index = last;
        self.raft.reduce_uncommitted_size(&ents);
        Some(ents)
    }

    /// The application persisted every Ready up to `number`.
    pub fn on_persist_ready(&mut self, number: u64) {
        if number > self.max_number {
            warn!(
                number,
                max = self.max_number,
                "on_persist_ready for an unknown Ready"
            );
        }
        while let Some(rec) = self.records.front() {
            if rec.number > number {
                break;
            }
            let rec = self.records.pop_front().expect("front exists");
            if let Some((index, _)) = rec.snapshot {
                self.raft.on_persist_snap(index);
                self.commit_since_index = self.commit_since_index.max(index);
            }
            self.raft.on_persist_term(rec.term);
            if let Some((index, term)) = rec.last_entry {
                self.raft.on_persist_entries(index, term);
            }
        }
    }

    /// The application persisted `rd` and sent its messages; returns what
    /// became ready since. Then apply the light ready's entries and call
    /// `advance_apply`.
    pub fn advance_append(&mut self, rd: Ready) -> LightReady {
        self.on_persist_ready(rd.number);
        self.light_ready()
    }

    /// The application took `rd` and will persist it asynchronously, then
    /// call `on_persist_ready(rd.number())`.
    pub fn advance_append_async(&mut self, rd: Ready) {
        debug_assert!(rd.number <= self.max_number);
        drop(rd);
    }

    /// `advance_append` then `advance_apply` for the committed entries of
    /// `rd`: the synchronous loop in one call. The returned light ready's
    /// committed entries still need applying and `advance_apply`.
    pub fn advance(&mut self, rd: Ready) -> LightReady {
        let applied = self.commit_since_index;
        let light = self.advance_append(rd);
        self.advance_apply_to(applied);
        light
    }

    fn light_ready(&mut self) -> LightReady {
        let mut lr = LightReady::default();
        let commit = self.raft.raft_log.committed;
        if commit != self.prev_hs.commit {
            lr.commit_index = Some(commit);
            self.prev_hs.commit = commit;
        }
        if let Some(ents) = self.take_committed() {
            lr.committed_entries = ents;
        }
        lr.messages = std::mem::take(&mut self.raft.msgs);
        lr
    }

    /// Every committed entry handed out so far is applied.
    pub fn advance_apply(&mut self) {
        let idx = self.commit_since_index;
        self.advance_apply_to(idx);
    }

    /// Entries up to `applied` are applied.
    pub fn advance_apply_to(&mut self, applied: u64) {
        self.raft.applied_to(applied);
    }

    /// The node's status.
    #[must_use]
    pub fn status(&self) -> Status {
        Status::new(&self.raft)
    }

    /// The storage.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.raft.raft_log.store
    }

    /// The storage, mutable.
    pub fn mut_store(&mut self) -> &mut S {
        &mut self.raft.raft_log.store
    }

    /// True if this node is the leader.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.raft.state == StateRole::Leader
    }
}
