//! The raft state machine: roles, elections, replication, commit, reads,
//! membership and leadership transfer. It reacts to `step` and `tick` and
//! queues messages; [`crate::RawNode`] turns its state into `Ready`s.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, info, warn};

use crate::confchange;
use crate::config::Config;
use crate::errors::{Error, Result, StorageError};
use crate::progress::{ProgressState, ProgressTracker};
use crate::quorum::VoteResult;
use crate::raft_log::RaftLog;
use crate::read_only::{ReadOnly, ReadOnlyOption, ReadState};
use crate::storage::Storage;
use crate::types::{
    decode, ConfChange, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, MessageType,
    Snapshot,
};

/// The id meaning "nobody".
pub const INVALID_ID: u64 = 0;

/// Context of vote requests sent on a leadership transfer: voters grant
/// them even while they believe in a leader (the leader asked for it).
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

/// The role of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StateRole {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Campaigning for votes in a new term.
    Candidate,
    /// Leads the cluster.
    Leader,
    /// Asking whether it would win, before incrementing the term (pre-vote).
    PreCandidate,
}

/// Volatile state the application may want to observe; not persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftState {
    /// The leader as known to this node (0: unknown).
    pub leader_id: u64,
    /// This node's role.
    pub raft_state: StateRole,
}

/// Which kind of campaign to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Campaign {
    PreElection,
    Election,
    Transfer,
}

/// The raft state machine of one node.
pub struct Raft<S: Storage> {
    /// This node's id.
    pub id: u64,
    /// The current term.
    pub term: u64,
    /// Who this node voted for in `term`.
    pub vote: u64,
    /// The log.
    pub raft_log: RaftLog<S>,
    /// Reads that became ready, waiting to be handed out.
    pub read_states: Vec<ReadState>,
    /// The role.
    pub state: StateRole,
    /// The known leader (0: none).
    pub leader_id: u64,
    /// The target of a leadership transfer in progress.
    pub lead_transferee: Option<u64>,
    /// The log index of the newest conf change not yet known applied; a new
    /// conf change may be proposed only once `applied >= pending_conf_index`.
    pub pending_conf_index: u64,
    /// The index a snapshot was requested for (follower), 0 otherwise.
    pub pending_request_snapshot: u64,
    /// Messages that may be sent at once.
    pub msgs: Vec<Message>,
    /// Messages that may be sent only once the state current at their
    /// creation is persisted (every message of a non-leader; a leader's
    /// before its term is durable).
    pub msgs_after_persist: Vec<Message>,
    /// The highest term known durable (hard state persisted).
    pub persisted_term: u64,
    prs: ProgressTracker,
    read_only: ReadOnly,
    /// Read requests that arrived before the leader committed an entry of its term.
    pending_read_index_messages: Vec<Message>,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    heartbeat_timeout: usize,
    election_timeout: usize,
    randomized_election_timeout: usize,
    min_election_timeout: usize,
    max_election_timeout: usize,
    rng: ChaCha8Rng,
    check_quorum: bool,
    pre_vote: bool,
    skip_bcast_commit: bool,
    batch_append: bool,
    priority: i64,
    max_msg_size: u64,
    max_uncommitted_size: u64,
    uncommitted_size: u64,
    max_committed_size_per_ready: u64,
    step_down_on_removal: bool,
    #[cfg(feature = "planted-bugs")]
    planted_bug: crate::config::PlantedBug,
}

impl<S: Storage> std::fmt::Debug for Raft<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.id)
            .field("term", &self.term)
            .field("vote", &self.vote)
            .field("state", &self.state)
            .field("leader_id", &self.leader_id)
            .field("committed", &self.raft_log.committed)
            .field("applied", &self.raft_log.applied)
            .field("last_index", &self.raft_log.last_index())
            .finish_non_exhaustive()
    }
}

fn new_message(to: u64, msg_type: MessageType, from: u64) -> Message {
    Message {
        to,
        from,
        msg_type,
        ..Message::default()
    }
}

impl<S: Storage> Raft<S> {
    /// A node recovered from `store`.
    ///
    /// # Errors
    /// Invalid configuration, storage failures, or a persisted state that
    /// contradicts itself (commit beyond the log, malformed membership).
    pub fn new(c: &Config, store: S) -> Result<Self> {
        c.validate()?;
        let rs = store.initial_state()?;
        let raft_log = RaftLog::new(store)?;
        let conf = confchange::restore(&rs.conf_state)?;
        let seed = c.seed ^ c.id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut r = Raft {
            id: c.id,
            term: 0,
            vote: 0,
            raft_log,
            read_states: Vec::new(),
            state: StateRole::Follower,
            leader_id: INVALID_ID,
            lead_transferee: None,
            pending_conf_index: 0,
            pending_request_snapshot: 0,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            persisted_term: rs.hard_state.term,
            prs: ProgressTracker::new(c.max_inflight_msgs),
            read_only: ReadOnly::new(c.read_only_option),
            pending_read_index_messages: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            heartbeat_timeout: c.heartbeat_tick,
            election_timeout: c.election_tick,
            randomized_election_timeout: 0,
            min_election_timeout: c.min_election_tick(),
            max_election_timeout: c.max_election_tick(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            check_quorum: c.check_quorum,
            pre_vote: c.pre_vote,
            skip_bcast_commit: c.skip_bcast_commit,
            batch_append: c.batch_append,
            priority: c.priority,
            max_msg_size: c.max_size_per_msg,
            max_uncommitted_size: c.max_uncommitted_size,
            uncommitted_size: 0,
            max_committed_size_per_ready: c.max_committed_size_per_ready,
            step_down_on_removal: c.step_down_on_removal,
            #[cfg(feature = "planted-bugs")]
            planted_bug: c.planted_bug,
        };
        let last = r.raft_log.last_index();
        r.prs.apply_conf(conf, last + 1);
        if !rs.hard_state.is_empty() {
            r.load_state(&rs.hard_state)?;
        }
        if c.applied > 0 {
            if c.applied > r.raft_log.last_index() {
                return Err(Error::ConfigInvalid(format!(
                    "applied {} is beyond the last log index {}",
                    c.applied,
                    r.raft_log.last_index()
                )));
            }
            // The application may have applied entries whose commit index
            // was not yet durable when it stopped: they were committed.
            r.raft_log.commit_to(c.applied);
            r.raft_log.applied_to(c.applied);
        }
        let term = r.term;
        r.become_follower(term, INVALID_ID);
        info!(
            id = r.id,
            term = r.term,
            commit = r.raft_log.committed,
            applied = r.raft_log.applied,
            last_index = r.raft_log.last_index(),
            "newRaft"
        );
        Ok(r)
    }

    fn load_state(&mut self, hs: &HardState) -> Result<()> {
        let last = self.raft_log.last_index();
        if hs.commit > last {
            return Err(Error::Store(StorageError::Other(
                format!(
                    "persisted commit {} is beyond the last index {last}",
                    hs.commit
                )
                .into(),
            )));
        }
        // A commit index below the snapshot point is stale, not wrong: the
        // snapshot itself proves its index committed.
        self.raft_log.committed = hs.commit.max(self.raft_log.committed);
        self.term = hs.term;
        self.vote = hs.vote;
        Ok(())
    }

    /// The progress tracker (membership and replication state).
    #[must_use]
    pub fn prs(&self) -> &ProgressTracker {
        &self.prs
    }

    /// The progress tracker, mutable: for tests that put a peer's progress
    /// in a given state. Changing it otherwise bypasses the protocol.
    pub fn mut_prs(&mut self) -> &mut ProgressTracker {
        &mut self.prs
    }

    /// The volatile state.
    #[must_use]
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            raft_state: self.state,
        }
    }

    /// The state that must be persisted.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.raft_log.committed,
        }
    }

    /// The byte budget for committed entries in one `Ready`.
    #[must_use]
    pub fn max_committed_size_per_ready(&self) -> u64 {
        self.max_committed_size_per_ready
    }

    /// Bytes of uncommitted entries the leader currently accounts for.
    #[must_use]
    pub fn uncommitted_size(&self) -> u64 {
        self.uncommitted_size
    }

    /// The current randomised election timeout, in ticks.
    #[must_use]
    pub fn randomized_election_timeout(&self) -> usize {
        self.randomized_election_timeout
    }

    /// Ticks since the last election-timer reset.
    #[must_use]
    pub fn election_elapsed(&self) -> usize {
        self.election_elapsed
    }

    /// Number of read requests waiting for a quorum or for the first commit.
    #[must_use]
    pub fn pending_read_count(&self) -> usize {
        self.read_only.pending_read_count() + self.pending_read_index_messages.len()
    }

    #[cfg(feature = "planted-bugs")]
    fn bug(&self, b: crate::config::PlantedBug) -> bool {
        self.planted_bug == b
    }

    // ---------------------------------------------------------------- sending

    fn send(&mut self, mut m: Message) {
        if m.from == INVALID_ID {
            m.from = self.id;
        }
        match m.msg_type {
            MessageType::MsgRequestVote
            | MessageType::MsgRequestPreVote
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVoteResponse => {
                // Vote messages carry their term explicitly (a pre-vote is
                // for a future term), so it must already be set.
                assert!(
                    m.term != 0,
                    "term should be set when sending {:?}",
                    m.msg_type
                );
            }
            MessageType::MsgPropose | MessageType::MsgReadIndex => {
                // Forwarded requests carry no term: they are not bound to one.
            }
            _ => {
                assert_eq!(
                    m.term, 0,
                    "term should not be set when sending {:?}",
                    m.msg_type
                );
                m.term = self.term;
            }
        }
        if self.state == StateRole::Leader && self.term <= self.persisted_term {
            if self.batch_append && m.msg_type == MessageType::MsgAppend && self.try_batch(&m) {
                return;
            }
            self.msgs.push(m);
        } else {
            self.msgs_after_persist.push(m);
        }
    }

    /// Merge `m` into a queued append to the same peer if it continues it.
    fn try_batch(&mut self, m: &Message) -> bool {
        let Some(prev) = self
            .msgs
            .iter_mut()
            .rev()
            .find(|p| p.to == m.to && p.msg_type == MessageType::MsgAppend)
        else {
            return false;
        };
        let prev_last = prev.index + prev.entries.len() as u64;
        if prev.term != m.term || prev_last != m.index {
            return false;
        }
        prev.entries.extend_from_slice(&m.entries);
        prev.commit = prev.commit.max(m.commit);
        true
    }

    fn send_append(&mut self, to: u64) {
        self.maybe_send_append(to, true);
    }

    /// Send entries (or a snapshot) to `to` if its progress allows.
    /// Returns true if a message was sent.
    fn maybe_send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs.get(to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_idx;
        let request_snapshot = pr.pending_request_snapshot;
        let mut m = new_message(to, MessageType::MsgAppend, INVALID_ID);
        let term = self.raft_log.term(next - 1);
        let ents = self.raft_log.entries(next, Some(self.max_msg_size));
        match (term, ents) {
            (Ok(term), Ok(ents)) if request_snapshot == 0 => {
                if ents.is_empty() && !send_if_empty {
                    return false;
                }
                m.index = next - 1;
                m.log_term = term;
                m.commit = self.raft_log.committed;
                let last = ents.last().map(|e| e.index);
                m.entries = ents;
                let pr = self.prs.get_mut(to).expect("checked above");
                if let Some(last) = last {
                    match pr.state {
                        ProgressState::Replicate => {
                            pr.optimistic_update(last);
                            pr.ins.add(last);
                        }
                        ProgressState::Probe => pr.pause(),
                        ProgressState::Snapshot => {
                            panic!("sending append to {to} in snapshot state")
                        }
                    }
                }
            }
            _ => {
                // The entries are compacted (or a snapshot was requested).
                if !self.prs.get(to).is_some_and(|p| p.recent_active) {
                    debug!(to, "ignore sending snapshot to inactive peer");
                    return false;
                }
                let snap = match self.raft_log.snapshot(request_snapshot, to) {
                    Ok(s) => s,
                    Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {
                        debug!(to, "snapshot temporarily unavailable");
                        return false;
                    }
                    Err(e) => {
                        warn!(to, error = %e, "failed to get snapshot");
                        return false;
                    }
                };
                if snap.is_empty() {
                    warn!(to, "storage returned an empty snapshot");
                    return false;
                }
                let sindex = snap.metadata.index;
                debug!(
                    to,
                    index = sindex,
                    term = snap.metadata.term,
                    "sending snapshot"
                );
                m.msg_type = MessageType::MsgSnapshot;
                m.snapshot = Some(snap);
                let pr = self.prs.get_mut(to).expect("checked above");
                pr.become_snapshot(sindex);
                pr.pending_request_snapshot = 0;
            }
        }
        self.send(m);
        true
    }

    fn send_heartbeat(&mut self, to: u64, ctx: Vec<u8>) {
        let Some(pr) = self.prs.get(to) else { return };
        // A follower may not have the leader's log up to `committed` yet;
        // never tell it to commit beyond what it is known to match.
        let commit = pr.matched.min(self.raft_log.committed);
        let mut m = new_message(to, MessageType::MsgHeartbeat, INVALID_ID);
        m.commit = commit;
        m.context = ctx;
        self.send(m);
    }

    /// Send appends to every peer that can take one.
    pub fn bcast_append(&mut self) {
        for id in self.prs.ids() {
            if id != self.id {
                self.send_append(id);
            }
        }
    }

    fn bcast_heartbeat(&mut self) {
        let ctx = self
            .read_only
            .last_pending_request_ctx()
            .unwrap_or_default();
        self.bcast_heartbeat_with_ctx(ctx);
    }

    fn bcast_heartbeat_with_ctx(&mut self, ctx: Vec<u8>) {
        for id in self.prs.ids() {
            if id != self.id {
                self.send_heartbeat(id, ctx.clone());
            }
        }
    }

    // -------------------------------------------------------------- commit

    /// Advance the commit index if a quorum matched further. Returns true
    /// if it moved.
    pub fn maybe_commit(&mut self) -> bool {
        let mci = self.prs.committed();
        #[allow(unused_mut)]
        let mut check_term = true;
        #[cfg(feature = "planted-bugs")]
        if self.bug(crate::config::PlantedBug::CommitOldTermByCounting) {
            check_term = false;
        }
        self.raft_log.maybe_commit(mci, self.term, check_term)
    }

    fn on_commit_advanced(&mut self) {
        if !self.skip_bcast_commit {
            self.bcast_append();
        }
        self.release_pending_read_index();
    }

    fn committed_entry_in_current_term(&self) -> bool {
        self.raft_log.term(self.raft_log.committed).ok() == Some(self.term)
    }

    // -------------------------------------------------------------- roles

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = INVALID_ID;
        }
        self.leader_id = INVALID_ID;
        self.reset_randomized_election_timeout();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.abort_leader_transfer();
        self.prs.reset_votes();
        self.pending_conf_index = 0;
        self.read_only = ReadOnly::new(self.read_only.option);
        self.pending_read_index_messages.clear();
        self.uncommitted_size = 0;
        let last = self.raft_log.last_index();
        let (id, persisted) = (self.id, self.raft_log.persisted);
        for (&pid, pr) in self.prs.iter_mut() {
            pr.matched = 0;
            pr.next_idx = last + 1;
            pr.state = ProgressState::Probe;
            pr.pending_snapshot = 0;
            pr.pending_request_snapshot = 0;
            pr.probe_sent = false;
            pr.recent_active = false;
            pr.ins.reset();
            if pid == id {
                pr.matched = persisted.min(last);
                pr.recent_active = true;
            }
        }
    }

    fn reset_randomized_election_timeout(&mut self) {
        self.randomized_election_timeout = self
            .rng
            .gen_range(self.min_election_timeout..self.max_election_timeout);
    }

    /// Become a follower of `leader_id` in `term`.
    pub fn become_follower(&mut self, term: u64, leader_id: u64) {
        let pending_request_snapshot = self.pending_request_snapshot;
        self.reset(term);
        self.leader_id = leader_id;
        self.state = StateRole::Follower;
        self.pending_request_snapshot = pending_request_snapshot;
        info!(id = self.id, term, leader_id, "became follower");
    }

    /// Become a candidate in the next term, voting for itself.
    ///
    /// # Panics
    /// If called on a leader (an invalid transition).
    pub fn become_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "invalid transition [leader -> candidate]"
        );
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.state = StateRole::Candidate;
        info!(id = self.id, term, "became candidate");
    }

    /// Become a pre-candidate: ask for pre-votes without changing the term.
    ///
    /// # Panics
    /// If called on a leader (an invalid transition).
    pub fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "invalid transition [leader -> pre-candidate]"
        );
        self.state = StateRole::PreCandidate;
        self.prs.reset_votes();
        self.leader_id = INVALID_ID;
        info!(id = self.id, term = self.term, "became pre-candidate");
    }

    /// Become the leader of the current term and append an empty entry so
    /// that entries of earlier terms can commit (§5.4.2).
    ///
    /// # Panics
    /// If called on a follower (an invalid transition).
    pub fn become_leader(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Follower,
            "invalid transition [follower -> leader]"
        );
        let term = self.term;
        self.reset(term);
        self.leader_id = self.id;
        self.state = StateRole::Leader;
        if let Some(pr) = self.prs.get_mut(self.id) {
            // The leader replicates to itself by persisting.
            pr.become_replicate();
        }
        // Conf changes in the uncommitted tail may exist: be conservative
        // and treat the tail as holding one.
        self.pending_conf_index = self.raft_log.last_index();
        let appended = self.append_entry(vec![Entry::default()]);
        assert!(
            appended,
            "the empty entry of a new leader cannot be dropped"
        );
        // The empty entry does not count towards the uncommitted budget.
        self.uncommitted_size = 0;
        info!(id = self.id, term, "became leader");
    }

    fn append_entry(&mut self, mut es: Vec<Entry>) -> bool {
        let li = self.raft_log.last_index();
        for (i, e) in es.iter_mut().enumerate() {
            e.term = self.term;
            e.index = li + 1 + i as u64;
        }
        if !self.increase_uncommitted_size(&es) {
            debug!(
                id = self.id,
                "appending entries would exceed max_uncommitted_size"
            );
            return false;
        }
        self.raft_log.append(&es);
        // The leader's own progress advances only once the entries are
        // persisted (`on_persist_entries`).
        true
    }

    fn increase_uncommitted_size(&mut self, es: &[Entry]) -> bool {
        let size: u64 = es.iter().map(Entry::size_bytes).sum();
        if self.uncommitted_size > 0
            && size > 0
            && self.uncommitted_size.saturating_add(size) > self.max_uncommitted_size
        {
            return false;
        }
        self.uncommitted_size = self.uncommitted_size.saturating_add(size);
        true
    }

    /// Committed entries left the core: they no longer count as uncommitted.
    pub fn reduce_uncommitted_size(&mut self, ents: &[Entry]) {
        if self.state != StateRole::Leader {
            return;
        }
        let size: u64 = ents.iter().map(Entry::size_bytes).sum();
        self.uncommitted_size = self.uncommitted_size.saturating_sub(size);
    }

    // -------------------------------------------------------------- ticks

    /// Advance the logical clock by one tick. Returns true if the tick
    /// caused an election or heartbeat.
    pub fn tick(&mut self) -> bool {
        match self.state {
            StateRole::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) -> bool {
        self.election_elapsed += 1;
        if self.promotable() && self.past_election_timeout() {
            self.election_elapsed = 0;
            let m = new_message(INVALID_ID, MessageType::MsgHup, self.id);
            let _ = self.step(m);
            return true;
        }
        false
    }

    fn tick_heartbeat(&mut self) -> bool {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        let mut fired = false;
        if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            if self.check_quorum {
                let m = new_message(INVALID_ID, MessageType::MsgCheckQuorum, self.id);
                let _ = self.step(m);
                fired = true;
            }
            if self.state == StateRole::Leader && self.lead_transferee.is_some() {
                // The transfer did not finish within an election timeout.
                self.abort_leader_transfer();
            }
        }
        if self.state != StateRole::Leader {
            return fired;
        }
        if self.heartbeat_elapsed >= self.heartbeat_timeout {
            self.heartbeat_elapsed = 0;
            let m = new_message(INVALID_ID, MessageType::MsgBeat, self.id);
            let _ = self.step(m);
            fired = true;
        }
        fired
    }

    /// True once the randomised election timeout elapsed.
    #[must_use]
    pub fn past_election_timeout(&self) -> bool {
        self.election_elapsed >= self.randomized_election_timeout
    }

    /// True if this node may become leader: a voter with no snapshot pending.
    #[must_use]
    pub fn promotable(&self) -> bool {
        self.prs.is_voter(self.id) && !self.raft_log.has_pending_snapshot()
    }

    // -------------------------------------------------------------- elections

    fn hup(&mut self, transfer: bool) {
        if self.state == StateRole::Leader {
            debug!(id = self.id, "ignoring MsgHup because already leader");
            return;
        }
        if !self.promotable() {
            warn!(id = self.id, "is unpromotable and can not campaign");
            return;
        }
        // An unapplied conf change could change who may vote: wait for it.
        if self.has_unapplied_conf_change() {
            warn!(
                id = self.id,
                "cannot campaign: pending configuration changes to apply"
            );
            return;
        }
        info!(id = self.id, term = self.term, "starting a new election");
        if transfer {
            self.campaign(Campaign::Transfer);
        } else if self.pre_vote {
            self.campaign(Campaign::PreElection);
        } else {
            self.campaign(Campaign::Election);
        }
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let lo = self.raft_log.applied + 1;
        let hi = self.raft_log.committed + 1;
        if lo >= hi {
            return false;
        }
        let mut cursor = lo;
        // Page through to bound memory.
        while cursor < hi {
            match self.raft_log.slice(cursor, hi, Some(self.max_msg_size)) {
                Ok(ents) if !ents.is_empty() => {
                    if ents.iter().any(|e| e.entry_type != EntryType::EntryNormal) {
                        return true;
                    }
                    cursor = ents[ents.len() - 1].index + 1;
                }
                _ => return false,
            }
        }
        false
    }

    fn campaign(&mut self, kind: Campaign) {
        let (vote_msg, term) = if kind == Campaign::PreElection {
            self.become_pre_candidate();
            (MessageType::MsgRequestPreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::MsgRequestVote, self.term)
        };
        let self_id = self.id;
        let resp = if vote_msg == MessageType::MsgRequestPreVote {
            MessageType::MsgRequestPreVoteResponse
        } else {
            MessageType::MsgRequestVoteResponse
        };
        if self.poll(self_id, resp, true) == VoteResult::Won {
            // A single-voter cluster wins at once.
            if kind == Campaign::PreElection {
                self.campaign(Campaign::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let voters: Vec<u64> = self.prs.conf().voters.ids().into_iter().collect();
        let (last_index, last_term) = (self.raft_log.last_index(), self.raft_log.last_term());
        for id in voters {
            if id == self_id {
                continue;
            }
            let mut m = new_message(id, vote_msg, INVALID_ID);
            m.term = term;
            m.index = last_index;
            m.log_term = last_term;
            m.commit = self.raft_log.committed;
            m.priority = self.priority;
            if kind == Campaign::Transfer {
                m.context = CAMPAIGN_TRANSFER.to_vec();
            }
            info!(id = self.id, to = id, term, ?vote_msg, "sent vote request");
            self.send(m);
        }
    }

    fn poll(&mut self, from: u64, msg_type: MessageType, granted: bool) -> VoteResult {
        self.prs.record_vote(from, granted);
        let (g, r, res) = self.prs.tally_votes();
        debug!(
            id = self.id,
            from,
            ?msg_type,
            granted,
            g,
            r,
            "received vote"
        );
        res
    }

    // -------------------------------------------------------------- step

    /// Process one message.
    ///
    /// # Errors
    /// [`Error::ProposalDropped`] when a proposal cannot be accepted now;
    /// [`Error::ConfChangeError`] for a malformed conf change proposal.
    pub fn step(&mut self, m: Message) -> Result<()> {
        if m.term == 0
            && !m.msg_type.is_local()
            && !matches!(
                m.msg_type,
                MessageType::MsgPropose
                    | MessageType::MsgReadIndex
                    | MessageType::MsgTransferLeader
            )
        {
            // Every other message from a peer carries the sender's term;
            // without it the message cannot be ordered against ours.
            warn!(id = self.id, from = m.from, msg = ?m.msg_type, "dropped a peer message without term");
            return Ok(());
        }
        if m.term == 0 {
            // Local message or forwarded request.
        } else if m.term > self.term {
            if matches!(
                m.msg_type,
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
            ) {
                let force = m.context == CAMPAIGN_TRANSFER;
                // A node that heard from a leader within the election
                // timeout keeps it: with check-quorum for every vote
                // request, and always for pre-votes (thesis §9.6: a pre-vote
                // is granted only if no leader was heard from recently, so
                // a rejoining node cannot disrupt a healthy cluster).
                let in_lease = (self.check_quorum || m.msg_type == MessageType::MsgRequestPreVote)
                    && self.leader_id != INVALID_ID
                    && self.election_elapsed < self.election_timeout;
                if !force && in_lease {
                    // We heard from a leader within the minimum election
                    // timeout: this candidate cannot be legitimate (§6).
                    info!(
                        id = self.id,
                        from = m.from,
                        term = m.term,
                        "ignored vote request: lease is not expired"
                    );
                    return Ok(());
                }
            }
            match m.msg_type {
                MessageType::MsgRequestPreVote => {
                    // Never change the term for a pre-vote.
                }
                MessageType::MsgRequestPreVoteResponse if !m.reject => {
                    // Granted pre-votes carry the future term; the term
                    // advances when the pre-election is won.
                }
                _ => {
                    info!(
                        id = self.id,
                        term = self.term,
                        msg_term = m.term,
                        from = m.from,
                        msg = ?m.msg_type,
                        "received a message with higher term"
                    );
                    if matches!(
                        m.msg_type,
                        MessageType::MsgAppend
                            | MessageType::MsgHeartbeat
                            | MessageType::MsgSnapshot
                    ) {
                        self.become_follower(m.term, m.from);
                    } else {
                        self.become_follower(m.term, INVALID_ID);
                    }
                }
            }
        } else if m.term < self.term {
            #[cfg(feature = "planted-bugs")]
            if self.bug(crate::config::PlantedBug::CountStaleVotes)
                && m.msg_type == MessageType::MsgRequestVoteResponse
                && self.state == StateRole::Candidate
            {
                return self.step_candidate(m);
            }
            if matches!(
                m.msg_type,
                MessageType::MsgHeartbeat | MessageType::MsgAppend
            ) {
                // A stale leader (e.g. healed from a partition) would keep
                // sending; tell it the new term so it steps down (§5.1: a
                // reply carries the current term). With pre-vote or
                // check-quorum it might otherwise never learn. Without
                // either, etcd leaves this to vote requests at the higher
                // term, but a replica that cannot campaign (a learner in its
                // own, stale configuration) whose term a removed replica
                // raised has only this reply to offer: the host drops the
                // removed replica's votes, and the leader would never step
                // down for it to catch up.
                let to = m.from;
                self.send(new_message(to, MessageType::MsgAppendResponse, INVALID_ID));
            } else if matches!(
                m.msg_type,
                MessageType::MsgRequestPreVote | MessageType::MsgRequestVote
            ) {
                // Reject with our term so the candidate learns it (§5.1: a
                // reply carries the current term). Silently ignoring it can
                // livelock: a candidate that only talks to voters ahead of
                // it in term would chase their terms forever.
                let resp = if m.msg_type == MessageType::MsgRequestPreVote {
                    MessageType::MsgRequestPreVoteResponse
                } else {
                    MessageType::MsgRequestVoteResponse
                };
                let mut r = new_message(m.from, resp, INVALID_ID);
                r.term = self.term;
                r.reject = true;
                self.send(r);
            } else {
                debug!(
                    id = self.id,
                    term = self.term,
                    msg_term = m.term,
                    from = m.from,
                    msg = ?m.msg_type,
                    "ignored a message with lower term"
                );
            }
            return Ok(());
        }

        if matches!(
            m.msg_type,
            MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse
        ) {
            self.maybe_learn_commit(m.commit, m.commit_term);
        }

        match m.msg_type {
            MessageType::MsgHup => {
                self.hup(false);
                Ok(())
            }
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                self.handle_vote_request(m);
                Ok(())
            }
            _ => match self.state {
                StateRole::Leader => self.step_leader(m),
                StateRole::Candidate | StateRole::PreCandidate => self.step_candidate(m),
                StateRole::Follower => self.step_follower(m),
            },
        }
    }

    /// A voter told us it knows `commit` is committed and its entry there
    /// has `commit_term`. If our log has the same entry, log matching makes
    /// our prefix up to it identical, so it is committed here too. This
    /// lets a candidate apply a configuration change whose commit only a
    /// (removed) node learned, instead of needing that node's vote forever.
    fn maybe_learn_commit(&mut self, commit: u64, commit_term: u64) {
        if commit > self.raft_log.committed
            && commit <= self.raft_log.last_index()
            && self.raft_log.match_term(commit, commit_term)
        {
            info!(
                id = self.id,
                commit, "learned commit index from a vote response"
            );
            self.raft_log.commit_to(commit);
        }
    }

    /// Attach our commit index (and its term) to a vote response.
    fn with_commit(&self, mut r: Message) -> Message {
        r.commit = self.raft_log.committed;
        r.commit_term = self.raft_log.term(r.commit).unwrap_or(0);
        r
    }

    fn handle_vote_request(&mut self, m: Message) {
        let is_pre = m.msg_type == MessageType::MsgRequestPreVote;
        let resp_type = if is_pre {
            MessageType::MsgRequestPreVoteResponse
        } else {
            MessageType::MsgRequestVoteResponse
        };
        // We can vote for a candidate we already voted for (a repeat), or
        // anyone if we have neither voted nor know a leader, or (pre-vote)
        // anyone asking for a future term.
        let can_vote = self.vote == m.from
            || (self.vote == INVALID_ID && self.leader_id == INVALID_ID)
            || (is_pre && m.term > self.term);
        #[allow(unused_mut)]
        let mut up_to_date = self.raft_log.is_up_to_date(m.index, m.log_term);
        #[cfg(feature = "planted-bugs")]
        if self.bug(crate::config::PlantedBug::VoteForStaleLog) {
            up_to_date = true;
        }
        // Priority breaks ties: with an equally long log, a candidate of
        // lower priority than ours is refused.
        let priority_ok = m.index > self.raft_log.last_index() || self.priority <= m.priority;
        if can_vote && up_to_date && priority_ok {
            info!(
                id = self.id,
                term = self.term,
                candidate = m.from,
                msg = ?m.msg_type,
                "granted vote"
            );
            let mut r = new_message(m.from, resp_type, INVALID_ID);
            // A pre-vote grant carries the future term the candidate asked
            // about; a real vote is in our (now equal) term.
            r.term = m.term;
            let r = self.with_commit(r);
            self.send(r);
            if !is_pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            info!(
                id = self.id,
                term = self.term,
                candidate = m.from,
                vote = self.vote,
                can_vote,
                up_to_date,
                priority_ok,
                msg = ?m.msg_type,
                "rejected vote"
            );
            if self.term == 0 {
                // A fresh node has no term to reject with (a pre-vote asks
                // about a future term): staying silent counts as no vote.
                return;
            }
            let mut r = new_message(m.from, resp_type, INVALID_ID);
            r.term = self.term;
            r.reject = true;
            let r = self.with_commit(r);
            self.send(r);
        }
    }

    fn step_leader(&mut self, mut m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::MsgBeat => {
                self.bcast_heartbeat();
                return Ok(());
            }
            MessageType::MsgCheckQuorum => {
                if !self.prs.quorum_recently_active(self.id) {
                    warn!(
                        id = self.id,
                        term = self.term,
                        "stepped down: quorum is not active"
                    );
                    let term = self.term;
                    self.become_follower(term, INVALID_ID);
                }
                return Ok(());
            }
            MessageType::MsgPropose => {
                if m.entries.is_empty() {
                    warn!(id = self.id, "dropping an empty proposal");
                    return Err(Error::ProposalDropped);
                }
                if self.prs.get(self.id).is_none() {
                    // Removed from the configuration while leader: do not
                    // accept new work.
                    return Err(Error::ProposalDropped);
                }
                if let Some(t) = self.lead_transferee {
                    debug!(
                        id = self.id,
                        transferee = t,
                        "proposal dropped: transfer in progress"
                    );
                    return Err(Error::ProposalDropped);
                }
                self.check_conf_change_proposal(&m.entries)?;
                let li = self.raft_log.last_index();
                let conf_idx = m
                    .entries
                    .iter()
                    .rposition(|e| e.entry_type != EntryType::EntryNormal)
                    .map(|pos| li + 1 + pos as u64);
                if !self.append_entry(std::mem::take(&mut m.entries)) {
                    return Err(Error::ProposalDropped);
                }
                if let Some(ci) = conf_idx {
                    self.pending_conf_index = ci;
                }
                self.bcast_append();
                return Ok(());
            }
            MessageType::MsgReadIndex => {
                if !self.committed_entry_in_current_term() {
                    // The commit index of a new leader may lag (§6.4): wait
                    // until an entry of this term commits. This holds for a
                    // single voter too: entries a larger configuration
                    // committed may not be known committed here yet.
                    self.pending_read_index_messages.push(m);
                    return Ok(());
                }
                self.handle_ready_read_index(m);
                return Ok(());
            }
            _ => {}
        }

        let from = m.from;
        if self.prs.get(from).is_none() {
            debug!(id = self.id, from, msg = ?m.msg_type, "no progress available for sender");
            return Ok(());
        }
        match m.msg_type {
            MessageType::MsgAppendResponse => self.handle_append_response(&m),
            MessageType::MsgHeartbeatResponse => self.handle_heartbeat_response(&m),
            MessageType::MsgSnapStatus => {
                let pr = self.prs.get_mut(from).expect("checked");
                if pr.state != ProgressState::Snapshot {
                    return Ok(());
                }
                if m.reject {
                    pr.pending_snapshot = 0;
                }
                pr.become_probe();
                // Wait for a heartbeat response (or an append response)
                // before probing: the snapshot may still be applying.
                pr.pause();
                debug!(
                    id = self.id,
                    to = from,
                    reject = m.reject,
                    "snapshot status"
                );
            }
            MessageType::MsgUnreachable => {
                let pr = self.prs.get_mut(from).expect("checked");
                // Optimistic sends may have been lost: fall back to probing.
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
            }
            MessageType::MsgTransferLeader => self.handle_transfer_leader(&m),
            _ => {
                debug!(id = self.id, from, msg = ?m.msg_type, "leader ignored message");
            }
        }
        Ok(())
    }

    /// Check conf change entries of a proposal against the current state.
    fn check_conf_change_proposal(&self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            let cc = match e.entry_type {
                EntryType::EntryNormal => continue,
                EntryType::EntryConfChange => decode::<ConfChange>(&e.data).map(|c| {
                    use crate::types::ConfChangeI;
                    c.into_v2()
                }),
                EntryType::EntryConfChangeV2 => decode::<ConfChangeV2>(&e.data),
            };
            let cc = cc.map_err(|e| Error::ConfChangeError(format!("undecodable: {e}")))?;
            if self.pending_conf_index > self.raft_log.applied {
                info!(
                    id = self.id,
                    pending = self.pending_conf_index,
                    applied = self.raft_log.applied,
                    "proposal dropped: a conf change is still pending"
                );
                return Err(Error::ProposalDropped);
            }
            // Reject what would fail when applied (leaving a non-joint
            // configuration, two voter changes at once, no voters, ...).
            confchange::apply_to_configuration(self.prs.conf(), &cc)?;
        }
        Ok(())
    }

    fn handle_append_response(&mut self, m: &Message) {
        let from = m.from;
        let last_index = self.raft_log.last_index();
        {
            let pr = self.prs.get_mut(from).expect("checked");
            pr.recent_active = true;
        }
        if m.reject {
            debug!(
                id = self.id,
                from,
                index = m.index,
                hint = m.reject_hint,
                hint_term = m.log_term,
                "received append rejection"
            );
            let mut next_probe = m.reject_hint;
            if m.log_term > 0 {
                // Fast backtracking: skip every entry of a term the follower
                // cannot have at those positions.
                next_probe = self
                    .raft_log
                    .find_conflict_by_term(m.reject_hint, m.log_term)
                    .0;
            }
            let pr = self.prs.get_mut(from).expect("checked");
            if pr.maybe_decr_to(m.index, next_probe, m.request_snapshot) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from);
            }
            return;
        }
        let pr = self.prs.get_mut(from).expect("checked");
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.is_snapshot_caught_up() => pr.become_probe(),
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.ins.free_to(m.index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.on_commit_advanced();
        } else if old_paused {
            self.send_append(from);
        }
        // Keep the pipeline full.
        while self.maybe_send_append(from, false) {}
        if Some(from) == self.lead_transferee && matched == last_index {
            info!(
                id = self.id,
                to = from,
                "sent MsgTimeoutNow after log caught up"
            );
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, m: &Message) {
        let from = m.from;
        let last_index = self.raft_log.last_index();
        let pr = self.prs.get_mut(from).expect("checked");
        pr.recent_active = true;
        pr.resume();
        if pr.state == ProgressState::Replicate && pr.ins.full() {
            pr.ins.free_first_one();
        }
        if pr.matched < last_index || pr.pending_request_snapshot != 0 {
            self.send_append(from);
        }
        if self.read_only.option != ReadOnlyOption::Safe || m.context.is_empty() {
            return;
        }
        let Some(acks) = self.read_only.recv_ack(from, &m.context) else {
            return;
        };
        if !self.prs.has_quorum(acks) {
            return;
        }
        for rs in self.read_only.advance(&m.context) {
            self.respond_read_index(rs.req, rs.index);
        }
    }

    fn handle_transfer_leader(&mut self, m: &Message) {
        self.start_transfer(m.from);
    }

    fn start_transfer(&mut self, transferee: u64) {
        if !self.prs.is_voter(transferee) {
            debug!(id = self.id, transferee, "ignored transfer to a non-voter");
            return;
        }
        if let Some(last) = self.lead_transferee {
            if last == transferee {
                debug!(
                    id = self.id,
                    transferee, "transfer to the same node already in progress"
                );
                return;
            }
            self.abort_leader_transfer();
        }
        if transferee == self.id {
            debug!(id = self.id, "already leader; transfer to self ignored");
            return;
        }
        // The transfer must finish within an election timeout.
        self.election_elapsed = 0;
        self.lead_transferee = Some(transferee);
        info!(id = self.id, transferee, "starting leadership transfer");
        let matched = self.prs.get(transferee).map_or(0, |p| p.matched);
        if matched == self.raft_log.last_index() {
            self.send_timeout_now(transferee);
        } else {
            self.send_append(transferee);
        }
    }

    fn send_timeout_now(&mut self, to: u64) {
        self.send(new_message(to, MessageType::MsgTimeoutNow, INVALID_ID));
    }

    /// Stop a leadership transfer in progress.
    pub fn abort_leader_transfer(&mut self) {
        self.lead_transferee = None;
    }

    fn handle_ready_read_index(&mut self, m: Message) {
        if self.prs.is_singleton() && self.prs.is_voter(self.id) {
            // We are the only voter: no one else can have been elected, so
            // no heartbeat round is needed. (A removed leader still leading
            // a single-voter configuration is not that voter: it must ask.)
            let idx = self.raft_log.committed;
            self.respond_read_index(m, idx);
            return;
        }
        match self.read_only.option {
            ReadOnlyOption::Safe => {
                let Some(ctx) = m.entries.first().map(|e| e.data.to_vec()) else {
                    warn!(id = self.id, "read index request without context dropped");
                    return;
                };
                let idx = self.raft_log.committed;
                self.read_only.add_request(idx, ctx.clone(), m, self.id);
                self.bcast_heartbeat_with_ctx(ctx);
            }
            ReadOnlyOption::LeaseBased => {
                let idx = self.raft_log.committed;
                self.respond_read_index(m, idx);
            }
        }
    }

    fn respond_read_index(&mut self, req: Message, index: u64) {
        if req.from == INVALID_ID || req.from == self.id {
            let ctx = req
                .entries
                .into_iter()
                .next()
                .map(|e| Vec::from(e.data))
                .unwrap_or_default();
            self.read_states.push(ReadState {
                index,
                request_ctx: ctx,
            });
        } else {
            let mut m = new_message(req.from, MessageType::MsgReadIndexResp, INVALID_ID);
            m.index = index;
            m.entries = req.entries;
            self.send(m);
        }
    }

    fn release_pending_read_index(&mut self) {
        if self.state != StateRole::Leader || !self.committed_entry_in_current_term() {
            return;
        }
        for m in std::mem::take(&mut self.pending_read_index_messages) {
            self.handle_ready_read_index(m);
        }
    }

    fn step_candidate(&mut self, m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::MsgPropose => {
                info!(
                    id = self.id,
                    term = self.term,
                    "no leader; dropping proposal"
                );
                return Err(Error::ProposalDropped);
            }
            MessageType::MsgAppend => {
                self.become_follower(m.term, m.from);
                self.handle_append_entries(&m);
            }
            MessageType::MsgHeartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m);
            }
            MessageType::MsgSnapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m);
            }
            MessageType::MsgRequestPreVoteResponse | MessageType::MsgRequestVoteResponse => {
                // Only count responses to the election we are running.
                let expected = if self.state == StateRole::PreCandidate {
                    MessageType::MsgRequestPreVoteResponse
                } else {
                    MessageType::MsgRequestVoteResponse
                };
                if m.msg_type != expected {
                    return Ok(());
                }
                match self.poll(m.from, m.msg_type, !m.reject) {
                    VoteResult::Won => {
                        if self.state == StateRole::PreCandidate {
                            self.campaign(Campaign::Election);
                        } else {
                            self.become_leader();
                            self.bcast_append();
                        }
                    }
                    VoteResult::Lost => {
                        // A rejecting pre-vote response may carry a newer
                        // term (handled above); stay in the current term.
                        let term = self.term;
                        self.become_follower(term, INVALID_ID);
                    }
                    VoteResult::Pending => {}
                }
            }
            MessageType::MsgTimeoutNow => {
                debug!(id = self.id, "ignored MsgTimeoutNow as candidate");
            }
            _ => {
                debug!(id = self.id, msg = ?m.msg_type, "candidate ignored message");
            }
        }
        Ok(())
    }

    fn step_follower(&mut self, mut m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::MsgPropose => {
                if self.leader_id == INVALID_ID {
                    info!(
                        id = self.id,
                        term = self.term,
                        "no leader; dropping proposal"
                    );
                    return Err(Error::ProposalDropped);
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::MsgAppend => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append_entries(&m);
            }
            MessageType::MsgHeartbeat => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(m);
            }
            MessageType::MsgSnapshot => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m);
            }
            MessageType::MsgTransferLeader => {
                if self.leader_id == INVALID_ID {
                    info!(id = self.id, "no leader; dropping leader transfer");
                    return Ok(());
                }
                m.to = self.leader_id;
                m.term = 0;
                self.send(m);
            }
            MessageType::MsgTimeoutNow => {
                if self.promotable() {
                    info!(
                        id = self.id,
                        term = self.term,
                        "received MsgTimeoutNow; campaigning"
                    );
                    // A leader transfer never uses pre-vote: the leader
                    // asked for it, so the election must not be refused.
                    self.hup(true);
                } else {
                    info!(id = self.id, "received MsgTimeoutNow but is not promotable");
                }
            }
            MessageType::MsgReadIndex => {
                if self.leader_id == INVALID_ID {
                    info!(id = self.id, "no leader; dropping read index request");
                    return Ok(());
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::MsgReadIndexResp => {
                if m.entries.len() != 1 {
                    warn!(
                        id = self.id,
                        from = m.from,
                        n = m.entries.len(),
                        "invalid MsgReadIndexResp: expected one context entry"
                    );
                    return Ok(());
                }
                let ctx = m
                    .entries
                    .pop()
                    .map(|e| Vec::from(e.data))
                    .unwrap_or_default();
                self.read_states.push(ReadState {
                    index: m.index,
                    request_ctx: ctx,
                });
            }
            _ => {
                debug!(id = self.id, msg = ?m.msg_type, "follower ignored message");
            }
        }
        Ok(())
    }

    fn valid_append(m: &Message) -> bool {
        m.entries.iter().enumerate().all(|(i, e)| {
            e.index == m.index + 1 + i as u64 && e.term <= m.term && e.term >= m.log_term
        }) && m.entries.windows(2).all(|w| w[0].term <= w[1].term)
    }

    fn handle_append_entries(&mut self, m: &Message) {
        if !Self::valid_append(m) {
            warn!(
                id = self.id,
                from = m.from,
                index = m.index,
                "malformed append dropped"
            );
            return;
        }
        if self.prs.conf().is_empty() && self.pending_request_snapshot == 0 {
            // An uninitialised node (joining, empty membership) cannot
            // interpret the log without the configuration it starts from:
            // it asks for a snapshot instead of replaying entries.
            info!(
                id = self.id,
                leader = m.from,
                "uninitialised; requesting a snapshot"
            );
            self.pending_request_snapshot = self.raft_log.committed.max(1);
        }
        if self.pending_request_snapshot != 0 {
            self.send_request_snapshot();
            return;
        }
        let mut r = new_message(m.from, MessageType::MsgAppendResponse, INVALID_ID);
        if m.index < self.raft_log.committed {
            // Everything up to our commit index matches the leader's log.
            r.index = self.raft_log.committed;
            self.send(r);
            return;
        }
        if let Some((_, last_idx)) = self
            .raft_log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            r.index = last_idx;
            self.send(r);
        } else {
            // Tell the leader where our log could match: the largest
            // index <= m.index whose term is <= m.log_term.
            let hint = m.index.min(self.raft_log.last_index());
            let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(hint, m.log_term);
            debug!(
                id = self.id,
                index = m.index,
                log_term = m.log_term,
                hint_index,
                hint_term,
                "rejected append"
            );
            r.index = m.index;
            r.reject = true;
            r.reject_hint = hint_index;
            r.log_term = hint_term;
            self.send(r);
        }
    }

    fn handle_heartbeat(&mut self, m: Message) {
        let commit = m.commit.min(self.raft_log.last_index());
        self.raft_log.commit_to(commit);
        if self.pending_request_snapshot != 0 {
            self.send_request_snapshot();
            return;
        }
        let mut r = new_message(m.from, MessageType::MsgHeartbeatResponse, INVALID_ID);
        r.context = m.context;
        self.send(r);
    }

    fn handle_snapshot(&mut self, mut m: Message) {
        let Some(snap) = m.snapshot.take() else {
            warn!(
                id = self.id,
                from = m.from,
                "MsgSnapshot without snapshot dropped"
            );
            return;
        };
        let (sindex, sterm) = (snap.metadata.index, snap.metadata.term);
        let mut r = new_message(m.from, MessageType::MsgAppendResponse, INVALID_ID);
        if self.restore(snap) {
            info!(
                id = self.id,
                index = sindex,
                term = sterm,
                "restored snapshot"
            );
            r.index = self.raft_log.last_index();
        } else {
            info!(
                id = self.id,
                index = sindex,
                term = sterm,
                "ignored snapshot"
            );
            r.index = self.raft_log.committed;
        }
        self.send(r);
    }

    /// Install `snap` if it is ahead of the log. Returns false if ignored.
    pub fn restore(&mut self, snap: Snapshot) -> bool {
        let meta = &snap.metadata;
        // A snapshot at the commit index is only useful if we asked for one
        // (our state machine needs rebuilding).
        if meta.index < self.raft_log.committed
            || (meta.index == self.raft_log.committed && self.pending_request_snapshot == 0)
        {
            return false;
        }
        if self.state != StateRole::Follower {
            warn!(
                id = self.id,
                "non-follower attempted to restore snapshot; ignored"
            );
            return false;
        }
        let cs = &meta.conf_state;
        // The snapshot's membership may predate this node's addition (the
        // leader only sends to members of its newer configuration, and a
        // stored snapshot can be older): the entries after the snapshot add
        // the node again, so such a snapshot is accepted.
        let member = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .any(|&id| id == self.id);
        if !member {
            debug!(
                id = self.id,
                "restoring a snapshot whose membership predates this node"
            );
        }
        let conf = match confchange::restore(cs) {
            Ok(c) => c,
            Err(e) => {
                warn!(id = self.id, error = %e, "snapshot carries a malformed configuration; ignored");
                return false;
            }
        };
        if self.pending_request_snapshot == 0 && self.raft_log.match_term(meta.index, meta.term) {
            // We already have the log up to the snapshot: just commit.
            info!(
                id = self.id,
                index = meta.index,
                "fast-forwarded commit to snapshot"
            );
            self.raft_log.commit_to(meta.index);
            return false;
        }
        self.raft_log.restore(snap);
        let last = self.raft_log.last_index();
        self.prs.apply_conf(conf, last + 1);
        for (_, pr) in self.prs.iter_mut() {
            pr.matched = 0;
            pr.next_idx = last + 1;
        }
        self.pending_request_snapshot = 0;
        true
    }

    fn send_request_snapshot(&mut self) {
        let mut r = new_message(self.leader_id, MessageType::MsgAppendResponse, INVALID_ID);
        r.reject = true;
        r.index = self.raft_log.committed;
        r.reject_hint = self.raft_log.last_index();
        r.request_snapshot = self.pending_request_snapshot;
        self.send(r);
    }

    /// Ask the leader for a snapshot (follower only).
    ///
    /// # Errors
    /// [`Error::RequestSnapshotDropped`] on a leader, without a leader, or
    /// with a request already pending.
    pub fn request_snapshot(&mut self) -> Result<()> {
        if self.state == StateRole::Leader || self.leader_id == INVALID_ID {
            return Err(Error::RequestSnapshotDropped);
        }
        if self.pending_request_snapshot != 0 {
            return Err(Error::RequestSnapshotDropped);
        }
        let idx = self.raft_log.committed.max(1);
        self.pending_request_snapshot = idx;
        self.send_request_snapshot();
        Ok(())
    }

    // -------------------------------------------------------------- persistence

    /// Entries up to `(index, term)` became durable.
    pub fn on_persist_entries(&mut self, index: u64, term: u64) {
        let moved = self.raft_log.on_persist_entries(index, term);
        if moved && self.state == StateRole::Leader {
            let persisted = self.raft_log.persisted;
            let id = self.id;
            if let Some(pr) = self.prs.get_mut(id) {
                pr.maybe_update(persisted);
            }
            if self.maybe_commit() {
                self.on_commit_advanced();
            }
        }
    }

    /// The snapshot at `index` became durable.
    pub fn on_persist_snap(&mut self, index: u64) {
        self.raft_log.on_persist_snap(index);
    }

    /// The hard state of `term` became durable.
    pub fn on_persist_term(&mut self, term: u64) {
        self.persisted_term = self.persisted_term.max(term);
    }

    /// The application applied up to `applied`.
    pub fn applied_to(&mut self, applied: u64) {
        self.raft_log.applied_to(applied);
        let cfg = self.prs.conf();
        if self.state == StateRole::Leader
            && cfg.auto_leave
            && cfg.voters.is_joint()
            && self.raft_log.applied >= self.pending_conf_index
        {
            // The joint configuration is applied: propose leaving it.
            let data = crate::types::encode(&ConfChangeV2::default());
            let m = Message {
                msg_type: MessageType::MsgPropose,
                from: self.id,
                entries: vec![Entry {
                    entry_type: EntryType::EntryConfChangeV2,
                    data: data.into(),
                    ..Entry::default()
                }],
                ..Message::default()
            };
            match self.step(m) {
                Ok(()) => info!(
                    id = self.id,
                    "initiating automatic transition out of joint configuration"
                ),
                Err(e) => debug!(id = self.id, error = %e, "not leaving joint configuration yet"),
            }
        }
    }

    // -------------------------------------------------------------- membership

    /// Apply a committed membership change.
    ///
    /// # Errors
    /// [`Error::ConfChangeError`] if the change is invalid from the current
    /// configuration; the configuration is then unchanged.
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        let conf = confchange::apply_to_configuration(self.prs.conf(), cc)?;
        let last = self.raft_log.last_index();
        self.prs.apply_conf(conf, last);
        Ok(self.post_conf_change())
    }

    fn post_conf_change(&mut self) -> ConfState {
        let cs = self.prs.conf_state();
        let is_voter = self.prs.is_voter(self.id);
        if self.state == StateRole::Leader && !is_voter {
            // Removed or demoted. Spread the commit index so the others
            // learn that the change committed.
            self.bcast_append();
            if self.step_down_on_removal {
                let term = self.term;
                info!(id = self.id, "leader removed from voters; stepping down");
                self.become_follower(term, INVALID_ID);
                return cs;
            }
            // Keep leading (new proposals are refused) so that the others
            // keep learning the commit index, and hand leadership to the
            // most caught-up voter. Stepping down at once could strand the
            // remaining voters: they may still need this node's log.
            let best = self
                .prs
                .iter()
                .filter(|(id, _)| self.prs.is_voter(**id))
                .max_by_key(|(id, p)| (p.matched, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            if let Some(best) = best {
                info!(
                    id = self.id,
                    transferee = best,
                    "leader removed; transferring leadership"
                );
                self.start_transfer(best);
            }
            return cs;
        }
        if self.state != StateRole::Leader || cs.voters.is_empty() {
            return cs;
        }
        if self.maybe_commit() {
            self.on_commit_advanced();
        } else {
            for id in self.prs.ids() {
                if id != self.id {
                    self.maybe_send_append(id, false);
                }
            }
        }
        if let Some(t) = self.lead_transferee {
            if !self.prs.is_voter(t) {
                self.abort_leader_transfer();
            }
        }
        cs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn raft(id: u64, voters: &[u64]) -> Raft<MemStorage> {
        let s = MemStorage::new_with_conf_state(ConfState::from_voters(voters.iter().copied()));
        Raft::new(&Config::new(id), s).unwrap()
    }

    #[test]
    fn starts_as_follower_in_persisted_term() {
        let s = MemStorage::new_with_conf_state(ConfState::from_voters([1, 2, 3]));
        s.wl().set_hard_state(HardState {
            term: 7,
            vote: 2,
            commit: 0,
        });
        let r = Raft::new(&Config::new(1), s).unwrap();
        assert_eq!((r.state, r.term, r.vote), (StateRole::Follower, 7, 2));
        assert_eq!(r.persisted_term, 7);
    }

    #[test]
    fn tick_election_campaigns_after_randomized_timeout() {
        let mut r = raft(1, &[1, 2, 3]);
        let timeout = r.randomized_election_timeout();
        for _ in 1..timeout {
            assert!(!r.tick());
            assert_eq!(r.state, StateRole::Follower);
        }
        assert!(r.tick());
        assert_eq!(r.state, StateRole::Candidate);
        assert_eq!(r.term, 1);
        assert_eq!(
            r.msgs_after_persist.len(),
            2,
            "vote requests wait for persistence"
        );
    }

    #[test]
    #[should_panic(expected = "invalid transition")]
    fn leader_cannot_become_candidate() {
        let mut r = raft(1, &[1]);
        r.become_candidate();
        r.become_leader();
        r.become_candidate();
    }

    #[test]
    #[should_panic(expected = "invalid transition")]
    fn follower_cannot_become_leader() {
        let mut r = raft(1, &[1, 2, 3]);
        r.become_leader();
    }

    #[test]
    fn pre_candidate_keeps_term_and_vote() {
        let mut r = raft(1, &[1, 2, 3]);
        r.term = 3;
        r.vote = 2;
        r.become_pre_candidate();
        assert_eq!((r.term, r.vote), (3, 2));
        assert_eq!(r.state, StateRole::PreCandidate);
    }

    #[test]
    fn single_voter_becomes_leader_on_campaign() {
        let mut r = raft(1, &[1]);
        r.step(new_message(INVALID_ID, MessageType::MsgHup, 1))
            .unwrap();
        assert_eq!(r.state, StateRole::Leader);
        assert_eq!(r.raft_log.last_index(), 1, "empty entry appended");
        assert_eq!(r.raft_log.committed, 0, "not committed before persisted");
    }

    #[test]
    fn leader_messages_wait_until_term_persisted() {
        let mut r = raft(1, &[1, 2]);
        r.become_candidate();
        r.become_leader();
        r.bcast_append();
        assert!(r.msgs.is_empty(), "term 1 not yet durable");
        assert!(!r.msgs_after_persist.is_empty());
        r.on_persist_term(1);
        r.bcast_heartbeat();
        assert!(!r.msgs.is_empty());
    }

    #[test]
    fn learner_is_not_promotable() {
        let s = MemStorage::new_with_conf_state(ConfState::from_parts([1, 2], [3]));
        let r = Raft::new(&Config::new(3), s).unwrap();
        assert!(!r.promotable());
        let s = MemStorage::new_with_conf_state(ConfState::from_parts([1, 2], [3]));
        let r = Raft::new(&Config::new(1), s).unwrap();
        assert!(r.promotable());
    }

    #[test]
    fn uncommitted_budget_allows_one_oversized_entry() {
        let s = MemStorage::new_with_conf_state(ConfState::from_voters([1, 2]));
        let c = Config {
            max_uncommitted_size: 10,
            ..Config::new(1)
        };
        let mut r = Raft::new(&c, s).unwrap();
        let big = Entry {
            data: vec![0; 100].into(),
            ..Entry::default()
        };
        assert!(r.increase_uncommitted_size(std::slice::from_ref(&big)));
        assert!(!r.increase_uncommitted_size(std::slice::from_ref(&big)));
        r.state = StateRole::Leader;
        r.reduce_uncommitted_size(std::slice::from_ref(&big));
        assert_eq!(r.uncommitted_size(), 0);
        assert!(r.increase_uncommitted_size(&[Entry::default()]));
    }

    #[test]
    fn request_snapshot_needs_a_leader() {
        let mut r = raft(2, &[1, 2, 3]);
        assert_eq!(r.request_snapshot(), Err(Error::RequestSnapshotDropped));
        r.become_follower(1, 1);
        assert!(r.request_snapshot().is_ok());
        assert_eq!(r.pending_request_snapshot, 1);
        assert_eq!(r.request_snapshot(), Err(Error::RequestSnapshotDropped));
    }

    #[test]
    fn same_seed_same_timeouts_different_ids_differ() {
        let a = raft(1, &[1, 2, 3]).randomized_election_timeout();
        let b = raft(1, &[1, 2, 3]).randomized_election_timeout();
        assert_eq!(a, b, "deterministic");
        let draws: std::collections::BTreeSet<usize> = (1..=20)
            .map(|id| raft(id, &[1, 2, 3]).randomized_election_timeout())
            .collect();
        assert!(draws.len() > 3, "ids decorrelate the draws: {draws:?}");
    }
}
