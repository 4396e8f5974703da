//! The replica's step function: everything the raft loop decides, as a
//! struct a test can drive on one thread.
//!
//! [`NodeCore`] owns the consensus core (`RawNode`), the proposal and read
//! trackers, and the bookkeeping of what is being persisted and applied.
//! Inputs are method calls (`tick`, `step`, `propose`, `read`,
//! `on_persisted`, `on_applied`, ...); [`NodeCore::poll`] turns everything
//! that became ready into [`Effects`] for the caller to carry out:
//!
//! 1. `send` — messages to send now: the leader's appends and heartbeats
//!    leave before its own entries are durable (the leader counts itself
//!    only once they are), and persisted messages whose state is durable;
//! 2. `persist` — entries and hard state for the WAL, each tagged with its
//!    Ready number; the caller reports durability with
//!    [`NodeCore::on_persisted`], which releases the messages that promised
//!    that state (votes, append acknowledgements). A Ready whose only change
//!    is the commit index gives a [lazy](PersistTask::lazy) task: written in
//!    order, never waited for;
//! 3. `apply` — committed entries with the waiters of this replica's
//!    proposals among them; the caller applies them and reports the new
//!    applied index with [`NodeCore::on_applied`].
//!
//! The loop never waits: it hands the Ready over (`advance_append_async`)
//! and goes on batching new inputs while the WAL syncs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use std::sync::Arc;

use tandem_raft::{
    ConfChangeI, ConfChangeV2, ConfState, Entry, HardState, Message, MessageType, ProgressState,
    RawNode, ReadOnlyOption, Snapshot, SnapshotStatus, StateRole, Storage, INVALID_ID,
};
use tandem_snapshot::{Manifest, TransferMsg};

use crate::config::{Config, ReadConsistency};
use crate::error::{Error, Result};
use crate::node::proposals::{CommittedProposal, Proposals, Responder};
use crate::node::reads::Reads;
use crate::node::snapshots::{
    InstallOutcome, SnapshotCatalog, SnapshotCounters, SnapshotEvent, SnapshotJob, Transfers,
};
use crate::sm::conf::removed_after;
use crate::transport::{Envelope, Payload};

/// Entries and hard state to make durable, as one WAL submission.
#[derive(Debug, Default)]
pub struct PersistTask {
    /// The Ready this comes from; report it to [`NodeCore::on_persisted`].
    pub number: u64,
    /// Entries to append (an append at index i replaces any suffix from i).
    pub entries: Vec<Entry>,
    /// The hard state to record, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot raft restored its log from (metadata only): the state
    /// machine already holds it; reset the log to `(index, term)` first,
    /// then persist `entries` and `hard_state`.
    pub snapshot: Option<Snapshot>,
    /// True if only the hard state's commit index changed (no entries, no
    /// snapshot, same term and vote: raft's `must_sync` is false). Such a
    /// task needs no fdatasync of its own — a lost commit index is learned
    /// again, and on restart it is raised to the applied index — so it is
    /// written in order with the other tasks but waits for no sync, and
    /// the writer does not report it: nothing waits for it.
    pub lazy: bool,
    /// Messages to send once this task is durable (with everything
    /// submitted before it), before reporting it with
    /// [`NodeCore::on_persisted`]: raft's persisted messages of this Ready,
    /// e.g. a follower's acknowledgement of the entries. The log writer
    /// sends them the moment the task is durable (in the threaded runtime,
    /// from the completion of the WAL group that made it durable, on
    /// whichever thread wrote it: one thread hand-off less on every write's
    /// critical path than a round through the raft loop). Messages
    /// of a Ready with nothing to sync (or only a lazy hard state) wait in
    /// the core for the Readies before it and leave in a later poll's
    /// [`Effects::send`], so they may reach the network after messages of
    /// later Readies; raft tolerates reordering, and every message still
    /// leaves only after what it promises is durable. Empty for lazy tasks.
    pub messages: Vec<Message>,
}

/// Committed entries for the apply thread.
#[derive(Debug)]
pub struct ApplyTask<R> {
    /// In index order, contiguous.
    pub entries: Vec<Entry>,
    /// Waiters of this replica's proposals among `entries`.
    pub waiters: Vec<CommittedProposal<R>>,
}

/// What the caller must do after [`NodeCore::poll`], in field order.
#[derive(Debug)]
pub struct Effects<R> {
    /// Messages to send now.
    pub send: Vec<Message>,
    /// Submissions to the WAL, in order.
    pub persist: Vec<PersistTask>,
    /// Committed entries to apply, in order.
    pub apply: Vec<ApplyTask<R>>,
    /// Make the state machine durable (flush and fsync) and report the
    /// durable applied index with [`NodeCore::on_durable`]. Asked for when
    /// enough has been applied that the log could be compacted.
    pub flush_durable: bool,
    /// Drop log entries below this index (the new first index). Never above
    /// the durable applied index reported + 1; carry it out after `persist`.
    pub compact: Option<u64>,
    /// Snapshot transfer frames to send now: `(to, message)`, carried as
    /// [`Payload::SnapshotChunk`] holding [`TransferMsg::encode`].
    pub transfer: Vec<(u64, TransferMsg)>,
    /// Snapshot disk work for background threads; report each outcome with
    /// [`NodeCore::on_snapshot_event`].
    pub snapshot_jobs: Vec<SnapshotJob>,
}

impl<R> Default for Effects<R> {
    fn default() -> Self {
        Effects {
            send: Vec::new(),
            persist: Vec::new(),
            apply: Vec::new(),
            flush_durable: false,
            compact: None,
            transfer: Vec::new(),
            snapshot_jobs: Vec::new(),
        }
    }
}

impl<R> Effects<R> {
    /// True if there is nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.send.is_empty()
            && self.persist.is_empty()
            && self.apply.is_empty()
            && !self.flush_durable
            && self.compact.is_none()
            && self.transfer.is_empty()
            && self.snapshot_jobs.is_empty()
    }
}

/// Counters of one replica, for monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Ticks processed.
    pub ticks: u64,
    /// Readies processed.
    pub readies: u64,
    /// Raft messages stepped.
    pub messages_received: u64,
    /// Raft messages handed out to send.
    pub messages_sent: u64,
    /// Messages dropped because their sender was removed from the cluster.
    pub dropped_from_removed: u64,
    /// Snapshot transfer frames received.
    pub snapshot_frames: u64,
    /// Proposals accepted by the consensus core.
    pub proposals: u64,
    /// Proposals refused (not leader, transfer in progress, overloaded...).
    pub proposals_refused: u64,
    /// Linearizable / lease reads started.
    pub reads: u64,
    /// WAL submissions handed out.
    pub persist_tasks: u64,
    /// Of those, lazy ones (commit-only hard state: no fdatasync asked).
    pub persist_tasks_lazy: u64,
    /// Entries handed to the WAL.
    pub entries_persisted: u64,
    /// Committed entries handed to the apply thread.
    pub entries_committed: u64,
    /// Times this replica became leader.
    pub became_leader: u64,
    /// Log compactions asked for.
    pub compactions: u64,
    /// Snapshot builds, transfers and installs.
    pub snapshot: SnapshotCounters,
}

/// Replication progress of one peer, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The peer.
    pub id: u64,
    /// Highest index known to be replicated to it.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    /// Probe / Replicate / Snapshot.
    pub state: String,
    /// True if it is a learner.
    pub learner: bool,
}

/// A replica's state, as reported by `status()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This replica.
    pub id: u64,
    /// Follower, candidate, pre-candidate or leader.
    pub role: StateRole,
    /// Current term.
    pub term: u64,
    /// Known leader, if any.
    pub leader: Option<u64>,
    /// Highest committed index known.
    pub commit: u64,
    /// Highest index applied to the state machine.
    pub applied: u64,
    /// First index still in the log.
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Voters and learners.
    pub conf_state: ConfState,
    /// Replicas this one has seen removed from the configuration, ascending:
    /// their messages are dropped (counted in
    /// [`Counters::dropped_from_removed`]). Kept across restarts.
    pub removed: Vec<u64>,
    /// Per-peer progress (leaders only).
    pub progress: Vec<PeerProgress>,
    /// Requests waiting on this replica.
    pub pending_proposals: usize,
    /// Reads waiting on this replica.
    pub pending_reads: usize,
    /// Counters.
    pub counters: Counters,
}

/// The step function of one replica. See the module docs.
pub struct NodeCore<S: Storage, R> {
    id: u64,
    cfg: Config,
    raw: RawNode<S>,
    proposals: Proposals<R>,
    reads: Reads,
    /// Readies handed to the WAL and not yet durable, with the messages
    /// that must wait for them (none for a Ready that needs IO: its
    /// messages ride its [`PersistTask`]). `needs_io == false` marks a Ready with
    /// nothing to make durable (nothing to write, or a lazy commit-only
    /// hard state), released as soon as everything before it is.
    awaiting_persist: VecDeque<(u64, Vec<Message>, bool)>,
    /// Messages released by `on_persisted`, sent at the next `poll`.
    outbox: Vec<Message>,
    /// Applied index reported by the apply thread.
    applied: u64,
    /// Last index handed to the apply thread.
    apply_handed: u64,
    /// Replicas that left a configuration this replica applied (and have
    /// not rejoined one since): their messages are dropped. Updated with
    /// the state machine's rule ([`removed_after`]) from raft's
    /// configuration before and after each change; the state machine keeps
    /// the same set durable, so a restart starts from it
    /// ([`NodeCore::with_removed`]).
    removed: BTreeSet<u64>,
    role: StateRole,
    leader: u64,
    /// The term in which this replica, as leader, last had a leadership
    /// transfer under way (0: never). Its lease is void for the rest of
    /// that term (see [`NodeCore::lease_valid`]).
    transfer_term: u64,
    counters: Counters,
    /// Compaction bookkeeping (see `maybe_compact`).
    compaction: Compaction,
    /// Snapshot transfers (see the `snapshots` module).
    snap: Transfers,
}

/// What the compaction policy remembers between polls.
#[derive(Debug, Default)]
struct Compaction {
    /// Highest durable applied index reported by `on_durable`.
    durable: u64,
    /// A flush was asked for and has not been reported yet.
    flush_inflight: bool,
    /// Bytes of entries handed to the WAL since the last compaction, plus
    /// those it left after the durable index.
    bytes_since: u64,
    /// `bytes_since` when the last flush was asked for.
    bytes_at_flush: u64,
    /// First index of the last compaction asked for.
    requested: u64,
    /// Bytes of log per persisted batch: `(last index, bytes of every
    /// entry up to it)`, oldest first, for the lagging-follower byte bound.
    /// Pruned at compaction: one mark per batch still in the log.
    marks: std::collections::VecDeque<(u64, u64)>,
    /// Followers this leader sent a snapshot to that have not yet come
    /// within the lag bounds since: peer id → the snapshot's index. See
    /// `NodeCore::maybe_compact`.
    catching_up: BTreeMap<u64, u64>,
}

impl Compaction {
    /// Entries `first..=last` of `bytes` bytes were handed to the WAL; a
    /// batch that overwrites a suffix replaces the marks of that suffix.
    fn record(&mut self, first: u64, last: u64, bytes: u64) {
        while self.marks.back().is_some_and(|&(i, _)| i >= first) {
            self.marks.pop_back();
        }
        let before = self.marks.back().map_or(0, |&(_, b)| b);
        self.marks.push_back((last, before + bytes));
    }

    /// Bytes of the log after `index` (from the marks, so a batch that
    /// straddles `index` counts whole).
    fn bytes_after(&self, index: u64) -> u64 {
        let total = self.marks.back().map_or(0, |&(_, b)| b);
        // The marks up to `index` are the prefix `..n`.
        let n = self.marks.partition_point(|&(i, _)| i <= index);
        let upto = n.checked_sub(1).map_or(0, |k| self.marks[k].1);
        total - upto
    }

    /// Whether a follower that needs the entries after `needs` is within
    /// the lag bounds (`lag_entries_max` below the durable applied index,
    /// `lag_bytes_max` of log after it).
    fn within_lag(&self, needs: u64, cfg: &crate::config::SnapshotConfig) -> bool {
        needs >= self.durable.saturating_sub(cfg.lag_entries_max)
            && self.bytes_after(needs) <= cfg.lag_bytes_max
    }

    /// The log now starts at `first`: drop marks no bound can ask about
    /// (keeping the last one below `first` as the base of the next).
    fn prune(&mut self, first: u64) {
        while self.marks.len() >= 2 && self.marks[1].0 < first {
            self.marks.pop_front();
        }
    }
}

impl<S: Storage, R> std::fmt::Debug for NodeCore<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("leader", &self.leader)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

/// The index after which a replicating or probing follower needs the log:
/// what it acknowledged when replicating (entries in flight may be lost and
/// re-sent); from the probe's index when probing (e.g. right after a
/// snapshot or a leader change, when `matched` is not known yet).
fn follower_needs(pr: &tandem_raft::Progress) -> u64 {
    if pr.state == ProgressState::Replicate {
        pr.matched
    } else {
        pr.matched.max(pr.next_idx.saturating_sub(1))
    }
}

/// The raft configuration a replica's [`Config`] implies.
#[must_use]
pub fn raft_config(cfg: &Config, applied: u64) -> tandem_raft::Config {
    tandem_raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied,
        max_size_per_msg: cfg.max_size_per_msg_bytes,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: cfg.check_quorum,
        pre_vote: cfg.pre_vote,
        read_only_option: ReadOnlyOption::Safe,
        // Followers learn a new commit index from the next append or
        // heartbeat instead of an extra broadcast per commit: under load
        // that halves the messages; clients are answered by the leader.
        skip_bcast_commit: true,
        // Appends to one follower produced by several proposals of one
        // Ready travel as one message.
        batch_append: true,
        max_uncommitted_size: cfg.max_uncommitted_bytes,
        seed: cfg.effective_seed(),
        #[cfg(feature = "planted-bugs")]
        planted_bug: cfg.planted_bug,
        ..tandem_raft::Config::default()
    }
}

impl<S: Storage, R> NodeCore<S, R> {
    /// A replica over `storage`, whose state machine has applied `applied`.
    /// `incarnation` must differ across restarts of the replica (a random
    /// number is fine): proposal ids carry it.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration, [`Error::Raft`] if the
    /// storage cannot be read.
    pub fn new(cfg: &Config, storage: S, applied: u64, incarnation: u64) -> Result<Self> {
        cfg.validate()?;
        let raft_cfg = raft_config(cfg, applied);
        raft_cfg
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        let raw = RawNode::new(&raft_cfg, storage)?;
        Ok(NodeCore {
            id: cfg.id,
            cfg: cfg.clone(),
            raw,
            proposals: Proposals::new(cfg.id, incarnation, cfg.max_pending_requests),
            reads: Reads::new(cfg.id, incarnation, cfg.max_pending_requests),
            awaiting_persist: VecDeque::new(),
            outbox: Vec::new(),
            applied,
            apply_handed: applied,
            removed: BTreeSet::new(),
            role: StateRole::Follower,
            leader: 0,
            transfer_term: 0,
            counters: Counters::default(),
            // Nothing is known durable until the host says so (a replay at
            // open applies entries without flushing them).
            compaction: Compaction::default(),
            snap: Transfers::new(
                cfg.id,
                &cfg.snapshot,
                Arc::new(SnapshotCatalog::default()),
                None,
            ),
        })
    }

    /// Start with `removed` as the replicas seen removed: the set the state
    /// machine kept durable ([`crate::sm::StateMachine::removed`]), so that a
    /// restarted replica keeps ignoring them.
    #[must_use]
    pub fn with_removed(mut self, removed: BTreeSet<u64>) -> Self {
        self.removed = removed;
        self
    }

    /// The replicas this replica has seen removed (their messages are
    /// dropped).
    #[must_use]
    pub fn removed(&self) -> &BTreeSet<u64> {
        &self.removed
    }

    /// Use `catalog` (shared with the raft storage, which answers raft's
    /// snapshot requests from it) and offer `latest` (the newest complete
    /// local snapshot's manifest) to followers that need a snapshot.
    #[must_use]
    pub fn with_snapshots(
        mut self,
        catalog: Arc<SnapshotCatalog>,
        latest: Option<Manifest>,
    ) -> Self {
        if let Some(m) = &latest {
            catalog.set_latest(tandem_raft::SnapshotMetadata {
                conf_state: m.conf_state.clone(),
                index: m.index,
                term: m.term,
            });
        }
        self.snap = Transfers::new(self.id, &self.cfg.snapshot, catalog, latest);
        self
    }

    /// Proposals of this replica waiting to commit.
    #[must_use]
    pub fn pending_proposals(&self) -> usize {
        self.proposals.len()
    }

    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The consensus core (read-only).
    #[must_use]
    pub fn raw(&self) -> &RawNode<S> {
        &self.raw
    }

    /// The consensus core, mutable (tests that set a peer's progress).
    #[cfg(test)]
    pub(crate) fn raw_mut(&mut self) -> &mut RawNode<S> {
        &mut self.raw
    }

    /// The known leader.
    #[must_use]
    pub fn leader(&self) -> Option<u64> {
        (self.leader != 0).then_some(self.leader)
    }

    /// True if this replica leads.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.raw.is_leader()
    }

    /// The applied index reported by the apply side.
    #[must_use]
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Counters so far.
    #[must_use]
    pub fn counters(&self) -> Counters {
        Counters {
            snapshot: self.snap.counters(),
            ..self.counters
        }
    }

    fn not_leader(&self) -> Error {
        let leader = self.raw.raft.lead_transferee.or(self.leader());
        Error::NotLeader {
            leader: leader.filter(|&l| l != self.id),
        }
    }

    /// One tick of the logical clock; also expires overdue requests.
    pub fn tick(&mut self, now: Instant) {
        self.counters.ticks += 1;
        self.raw.tick();
        self.note_transfer();
        self.proposals.expire(now);
        self.reads.expire(now);
        self.snap.tick();
        self.take_send_outcomes();
    }

    /// Start an election now (tests and bootstrap of a single replica).
    ///
    /// # Errors
    /// From the consensus core.
    pub fn campaign(&mut self) -> Result<()> {
        Ok(self.raw.campaign()?)
    }

    /// Handle an incoming envelope (already checked for cluster id).
    ///
    /// Messages from replicas this replica saw removed are dropped and
    /// counted, so a removed replica cannot disturb the cluster (by
    /// campaigning at higher terms, say). Messages from replicas merely
    /// absent from this replica's configuration are not: that configuration
    /// may be stale (restored from an older snapshot, or not yet caught up),
    /// and the sender a leader elected in a newer one that this replica
    /// learns only from that leader's appends.
    pub fn step(&mut self, env: Envelope) {
        match env.payload {
            Payload::Raft(m) => {
                if self.removed.contains(&m.from) {
                    self.counters.dropped_from_removed += 1;
                    tracing::debug!(
                        id = self.id,
                        from = m.from,
                        "dropped message from a removed replica"
                    );
                    return;
                }
                self.counters.messages_received += 1;
                if self.snap.installing.is_some()
                    && matches!(
                        m.msg_type,
                        MessageType::MsgAppend | MessageType::MsgSnapshot
                    )
                {
                    // Raft resends them; stepping them now could move the
                    // log under the snapshot being installed.
                    self.snap.counters.dropped_while_installing += 1;
                    return;
                }
                if m.msg_type == MessageType::MsgSnapshot
                    && m.term >= self.raw.raft.term
                    && self.would_restore(&m)
                {
                    // Install the state first; raft sees the message after.
                    let _ = self.snap.on_incoming_snapshot(m);
                    return;
                }
                self.step_raft(m);
            }
            Payload::SnapshotChunk(bytes) => {
                if self.removed.contains(&env.from) {
                    self.counters.dropped_from_removed += 1;
                    return;
                }
                self.counters.snapshot_frames += 1;
                self.snap.on_frame(env.from, &bytes);
                self.take_send_outcomes();
            }
        }
    }

    fn step_raft(&mut self, m: Message) {
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(id = self.id, error = %e, "step refused a message");
        }
        self.note_transfer();
    }

    /// Remember a leadership transfer under way in this leader's term. The
    /// transfer target is set before raft sends `MsgTimeoutNow` and is
    /// cleared only by a later tick (abort) or a step-down, so checking
    /// after every step and tick sees every transfer that sent one.
    fn note_transfer(&mut self) {
        let r = &self.raw.raft;
        if r.state == StateRole::Leader && r.lead_transferee.is_some() {
            self.transfer_term = r.term;
        }
    }

    /// True if raft would replace its log with the snapshot `m` carries
    /// (the conditions of `Raft::restore`): it is ahead of the commit index
    /// and not already in the log.
    fn would_restore(&self, m: &Message) -> bool {
        let Some(s) = &m.snapshot else {
            return false;
        };
        let meta = &s.metadata;
        let r = &self.raw.raft;
        let log = &r.raft_log;
        let ahead = meta.index > log.committed
            || (meta.index == log.committed && r.pending_request_snapshot != 0);
        ahead && !(r.pending_request_snapshot == 0 && log.match_term(meta.index, meta.term))
    }

    /// Report the outcome of a [`SnapshotJob`].
    pub fn on_snapshot_event(&mut self, ev: SnapshotEvent) {
        match self.snap.on_event(ev) {
            Some(InstallOutcome::Installed(m)) => self.on_installed(*m),
            Some(InstallOutcome::Failed) | None => {}
        }
        self.take_send_outcomes();
    }

    /// The state machine holds the snapshot `m` names: bring the core's view
    /// up to it, then let raft restore its log from the message.
    fn on_installed(&mut self, m: Message) {
        let Some(meta) = m.snapshot.as_ref().map(|s| s.metadata.clone()) else {
            return;
        };
        let index = meta.index;
        self.applied = self.applied.max(index);
        self.apply_handed = self.apply_handed.max(index);
        self.compaction.durable = self.compaction.durable.max(index);
        // Raft's configuration is still the one before the snapshot.
        let current = self.raw.raft.prs().conf().to_conf_state();
        self.removed = removed_after(&self.removed, &current, &meta.conf_state);
        self.reads.on_applied(self.applied);
        self.step_raft(m);
        let restored = self.raw.raft.raft_log.has_pending_snapshot();
        if !restored && self.raw.raft.raft_log.committed < index {
            // Raft's term or role moved while the state machine was being
            // switched (the message was stale by then). The state machine
            // holds committed state at `index`, so raft's log must start
            // there too: restore it directly.
            tracing::info!(
                id = self.id,
                index,
                "restoring raft from the installed snapshot"
            );
            if self.raw.raft.state != StateRole::Follower {
                let term = self.raw.raft.term;
                self.raw.raft.become_follower(term, INVALID_ID);
            }
            let ok = self.raw.raft.restore(Snapshot {
                data: Vec::new(),
                metadata: meta,
            });
            assert!(
                ok,
                "raft refused a snapshot ahead of its commit index that the state machine holds"
            );
        } else if !restored {
            // Raft already committed past the snapshot: its entries up to
            // `index` are in the state machine.
            self.raw
                .advance_apply_to(index.min(self.raw.raft.raft_log.committed));
        }
    }

    /// Outgoing transfers that ended: deliver the held `MsgSnapshot` and
    /// report to raft.
    fn take_send_outcomes(&mut self) {
        for o in std::mem::take(&mut self.snap.finished) {
            if !self.raw.is_leader() {
                continue;
            }
            match o.held {
                Some(m) => {
                    self.outbox.push(m);
                    self.raw.report_snapshot(o.peer, SnapshotStatus::Finish);
                }
                None => self.raw.report_snapshot(o.peer, SnapshotStatus::Failure),
            }
        }
    }

    /// Propose an encoded command; `tx` receives the apply result or a typed error.
    pub fn propose(&mut self, data: Vec<u8>, tx: Responder<R>, now: Instant) {
        self.propose_with(tx, now, |raw, ctx| raw.propose(ctx, data));
    }

    /// Propose a membership change; `tx` receives the apply result.
    pub fn propose_conf_change(&mut self, cc: ConfChangeV2, tx: Responder<R>, now: Instant) {
        self.propose_with(tx, now, |raw, ctx| raw.propose_conf_change(ctx, cc));
    }

    fn propose_with(
        &mut self,
        tx: Responder<R>,
        now: Instant,
        f: impl FnOnce(&mut RawNode<S>, Vec<u8>) -> tandem_raft::Result<()>,
    ) {
        if !self.raw.is_leader() {
            self.counters.proposals_refused += 1;
            let _ = tx.send(Err(self.not_leader()));
            return;
        }
        let id = match self
            .proposals
            .register(tx.clone(), now, self.cfg.request_timeout)
        {
            Ok(id) => id,
            Err(e) => {
                self.counters.proposals_refused += 1;
                let _ = tx.send(Err(e));
                return;
            }
        };
        match f(&mut self.raw, id.to_context()) {
            Ok(()) => self.counters.proposals += 1,
            Err(e) => {
                self.counters.proposals_refused += 1;
                let err = match e {
                    tandem_raft::Error::ProposalDropped => self.not_leader(),
                    tandem_raft::Error::ConfChangeError(s) => Error::ConfChange(s),
                    other => Error::Raft(other),
                };
                self.proposals.fail(id, err);
            }
        }
    }

    /// Start a read; `tx` receives the index the state machine must have
    /// applied before reading, once it has. Stale reads never come here.
    pub fn read(&mut self, consistency: ReadConsistency, tx: Responder<u64>, now: Instant) {
        if !self.raw.is_leader() {
            let _ = tx.send(Err(self.not_leader()));
            return;
        }
        let ctx = match self
            .reads
            .register(tx.clone(), now, self.cfg.request_timeout)
        {
            Ok(ctx) => ctx,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        self.counters.reads += 1;
        match consistency {
            ReadConsistency::Lease if self.lease_valid() => {
                // Check-quorum makes a leader step down within an election
                // timeout of losing its quorum, and a new leader cannot be
                // elected sooner (followers ignore votes while they hear
                // from a leader): the commit index is safe to read at.
                let commit = self.raw.raft.raft_log.committed;
                self.reads.on_read_state(commit, &ctx, self.applied);
            }
            _ => self.raw.read_index(ctx),
        }
    }

    /// Whether this leader may answer a lease read at its commit index.
    ///
    /// Not once it has started a leadership transfer in its current term:
    /// its `MsgTimeoutNow` makes the target campaign with `force`, which
    /// voters grant even while they hear from this leader, so a new leader
    /// can be elected inside the lease — also after the transfer was
    /// aborted, as the message may arrive late. Lease reads then go through
    /// ReadIndex (a quorum round) until this replica leads a later term.
    fn lease_valid(&self) -> bool {
        let r = &self.raw.raft;
        self.cfg.check_quorum
            && r.state == StateRole::Leader
            && r.lead_transferee.is_none()
            && self.transfer_term != r.term
            && r.raft_log.term(r.raft_log.committed).ok() == Some(r.term)
    }

    /// Ask the consensus core to hand leadership to `to`.
    ///
    /// # Errors
    /// [`Error::NotLeader`] if this replica does not lead;
    /// [`Error::UnknownNode`] if `to` is not a voter.
    pub fn transfer_leader(&mut self, to: u64) -> Result<()> {
        if !self.raw.is_leader() {
            return Err(self.not_leader());
        }
        if !self.raw.raft.prs().is_voter(to) {
            return Err(Error::UnknownNode(to));
        }
        self.raw.transfer_leader(to);
        self.note_transfer();
        Ok(())
    }

    /// Tell the consensus core a peer could not be reached.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// The WAL made every submission up to Ready `number` durable.
    pub fn on_persisted(&mut self, number: u64) {
        let mut last = None;
        while let Some((n, _, needs_io)) = self.awaiting_persist.front() {
            if *n > number && (*needs_io || last.is_none()) {
                break;
            }
            let (n, msgs, _) = self.awaiting_persist.pop_front().expect("front exists");
            self.outbox.extend(msgs);
            last = Some(n);
        }
        if let Some(n) = last {
            self.raw.on_persist_ready(n);
        }
    }

    /// The apply thread applied everything up to `index`; `conf_changes`
    /// are the membership changes that took effect, in order.
    ///
    /// # Panics
    /// If the applied index goes backwards (an apply-thread bug).
    pub fn on_applied(&mut self, index: u64, conf_changes: &[ConfChangeV2]) {
        if index < self.applied && self.snap.counters.installed > 0 {
            // A report from before a snapshot install, which moved the
            // applied index past it.
            return;
        }
        assert!(
            index >= self.applied,
            "applied index went backwards: {} -> {index}",
            self.applied
        );
        for cc in conf_changes {
            let current = self.raw.raft.prs().conf().to_conf_state();
            match self.raw.apply_conf_change(cc) {
                Ok(cs) => {
                    self.removed = removed_after(&self.removed, &current, &cs);
                    tracing::info!(id = self.id, ?cs, "membership changed");
                }
                Err(e) => tracing::warn!(id = self.id, error = %e, "conf change not applied"),
            }
        }
        self.applied = index;
        self.raw.advance_apply_to(index);
        self.reads.on_applied(index);
    }

    /// The state machine is durable (flushed and fsynced) up to `index`, in
    /// answer to [`Effects::flush_durable`] (or on its own).
    pub fn on_durable(&mut self, index: u64) {
        self.compaction.flush_inflight = false;
        self.compaction.durable = self.compaction.durable.max(index);
    }

    /// Collect everything ready to do.
    pub fn poll(&mut self, now: Instant) -> Effects<R> {
        let _ = now;
        let mut fx = Effects::default();
        fx.send.append(&mut self.outbox);
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            self.counters.readies += 1;
            if let Some(ss) = rd.ss() {
                self.on_soft_state(ss.raft_state, ss.leader_id);
            }
            for m in rd.take_messages() {
                if m.msg_type == MessageType::MsgSnapshot {
                    let (to, term) = (m.to, self.raw.raft.term);
                    if !self.snap.start_send(m, term) {
                        self.raw.report_snapshot(to, SnapshotStatus::Failure);
                    }
                } else {
                    fx.send.push(m);
                }
            }
            let entries = rd.take_entries();
            self.proposals.on_appended(&entries);
            let hard_state = rd.hs().copied();
            let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
            if let Some(s) = &snapshot {
                tracing::info!(
                    id = self.id,
                    index = s.metadata.index,
                    "raft restored its log from a snapshot"
                );
            }
            let needs_io = !entries.is_empty() || hard_state.is_some() || snapshot.is_some();
            // Only the commit index changed: write it, but nothing this
            // Ready releases depends on it being durable (etcd's MustSync).
            let lazy = needs_io && !rd.must_sync();
            assert!(
                !lazy || (entries.is_empty() && snapshot.is_none()),
                "raft asks to sync every Ready with entries or a snapshot"
            );
            let number = rd.number();
            let mut persisted_msgs = rd.take_persisted_messages();
            for rs in rd.take_read_states() {
                self.reads
                    .on_read_state(rs.index, &rs.request_ctx, self.applied);
            }
            let committed = rd.take_committed_entries();
            self.raw.advance_append_async(rd);
            if needs_io {
                self.counters.persist_tasks += 1;
                self.counters.persist_tasks_lazy += u64::from(lazy);
                self.counters.entries_persisted += entries.len() as u64;
                let bytes = entries.iter().map(Entry::size_bytes).sum::<u64>();
                self.compaction.bytes_since += bytes;
                if snapshot.is_some() {
                    self.compaction.marks.clear();
                }
                if let (Some(f), Some(l)) = (entries.first(), entries.last()) {
                    self.compaction.record(f.index, l.index, bytes);
                }
                let messages = if lazy {
                    Vec::new()
                } else {
                    self.counters.messages_sent += persisted_msgs.len() as u64;
                    std::mem::take(&mut persisted_msgs)
                };
                fx.persist.push(PersistTask {
                    number,
                    entries,
                    hard_state,
                    snapshot,
                    lazy,
                    messages,
                });
            }
            if needs_io && !lazy {
                self.awaiting_persist
                    .push_back((number, persisted_msgs, true));
            } else if self.awaiting_persist.is_empty() {
                // Nothing to make durable and nothing in flight: durable
                // already.
                fx.send.extend(persisted_msgs);
                self.raw.on_persist_ready(number);
            } else {
                self.awaiting_persist
                    .push_back((number, persisted_msgs, false));
            }
            self.hand_to_apply(committed, &mut fx);
        }
        self.maybe_compact(&mut fx);
        self.snap.on_term(self.raw.raft.term);
        self.snap.maybe_build();
        self.take_send_outcomes();
        fx.send.append(&mut self.outbox);
        fx.transfer.append(&mut self.snap.out);
        fx.snapshot_jobs.append(&mut self.snap.jobs);
        self.counters.messages_sent += fx.send.len() as u64;
        fx
    }

    /// Remember (on every poll, whether or not a compaction is due) each
    /// follower this leader is sending a snapshot to, for the grace after
    /// the install (see `maybe_compact`); forget departed members, and
    /// everything when not leading.
    fn note_snapshot_transfers(&mut self) {
        let c = &mut self.compaction;
        if self.raw.raft.state != StateRole::Leader {
            c.catching_up.clear();
            return;
        }
        let prs = self.raw.raft.prs();
        let cfg = &self.cfg.snapshot;
        // Done: departed, or back within the bounds since.
        let done: Vec<u64> = c
            .catching_up
            .keys()
            .copied()
            .filter(|&id| {
                prs.get(id).is_none_or(|pr| {
                    pr.state != ProgressState::Snapshot && c.within_lag(follower_needs(pr), cfg)
                })
            })
            .collect();
        for id in done {
            c.catching_up.remove(&id);
        }
        for (&id, pr) in prs.iter() {
            if pr.state == ProgressState::Snapshot {
                c.catching_up.insert(id, pr.pending_snapshot);
            }
        }
    }

    /// The compaction policy (see [`crate::config::SnapshotConfig`]): once
    /// the log holds `compact_log_entries` applied entries, or
    /// `compact_log_bytes` were appended since the last compaction, ask for
    /// the state machine to be made durable; once it is, compact up to the
    /// durable applied index, held back (by at most `lag_entries_max`
    /// entries and `lag_bytes_max` bytes) for followers that are
    /// replicating or being sent a snapshot.
    fn maybe_compact(&mut self, fx: &mut Effects<R>) {
        self.note_snapshot_transfers();
        if self.snap.is_building() {
            // The snapshot being built must still cover the compaction
            // point when it is done, or raft would ask for another one.
            return;
        }
        let cfg = &self.cfg.snapshot;
        let first = self.raw.raft.raft_log.first_index();
        let c = &mut self.compaction;
        let due = |upto: u64| {
            upto >= first
                && (upto + 1 - first >= cfg.compact_log_entries
                    || c.bytes_since >= cfg.compact_log_bytes)
        };
        // Flush when compaction is due but the durable index holds it back:
        // at first, and then every half threshold of newly applied entries
        // or newly appended bytes (a follower may hold compaction back while
        // the floor moves up). The bytes rule matters for large entries: a
        // byte-triggered compaction makes `due` true at any index, so
        // without it the durable index would wait for half of
        // `compact_log_entries` entries (5 000 by default: 2.5 GiB of 512 KiB
        // batches) and the log would not be compacted at all meanwhile.
        let stale = self.applied.saturating_sub(c.durable);
        let stale_bytes = c.bytes_since.saturating_sub(c.bytes_at_flush);
        if !c.flush_inflight
            && stale > 0
            && due(self.applied)
            && (!due(c.durable)
                || stale >= cfg.compact_log_entries.div_ceil(2)
                || (c.bytes_since >= cfg.compact_log_bytes
                    && stale_bytes >= cfg.compact_log_bytes.div_ceil(2)))
        {
            c.flush_inflight = true;
            c.bytes_at_flush = c.bytes_since;
            fx.flush_durable = true;
        }
        if !due(c.durable) {
            return;
        }
        let durable = c.durable;
        let mut upto = durable;
        if self.raw.raft.state == StateRole::Leader {
            for (&id, pr) in self.raw.raft.prs().iter() {
                if id == self.id {
                    continue;
                }
                match pr.state {
                    // The follower goes on from the snapshot's index once
                    // it has it: keep what follows it however long the
                    // transfer takes (it is bounded by its own timeouts).
                    ProgressState::Snapshot => upto = upto.min(pr.pending_snapshot),
                    // Replicating: keep what it has not acknowledged (entries
                    // in flight may still be lost and re-sent), within the
                    // bounds. Probing (e.g. right after a snapshot or a
                    // leader change, when `matched` is not known yet): keep
                    // from the probe's index.
                    ProgressState::Replicate | ProgressState::Probe => {
                        let needs = follower_needs(pr);
                        if c.within_lag(needs, cfg) {
                            upto = upto.min(needs);
                        } else if let Some(&snapshot) = c.catching_up.get(&id) {
                            // Back from a snapshot and replaying what the
                            // leader wrote during the transfer, which can
                            // exceed the bounds: compacting it away now
                            // would send it another snapshot, and again
                            // after that one whenever a transfer takes
                            // longer than writing past the bounds. Kept
                            // until it is within them, or until twice the
                            // byte bound follows it (then it cannot keep up).
                            let bytes = c.bytes_after(needs);
                            if bytes <= cfg.lag_bytes_max.saturating_mul(2) {
                                upto = upto.min(needs);
                            } else {
                                c.catching_up.remove(&id);
                                tracing::warn!(
                                    id = self.id,
                                    follower = id,
                                    snapshot,
                                    needs,
                                    bytes,
                                    "a follower back from a snapshot fell more than twice \
                                     lag_bytes_max behind; compacting past it"
                                );
                            }
                        }
                    }
                }
            }
        }
        let new_first = upto + 1;
        if new_first <= first || new_first <= c.requested {
            return;
        }
        c.requested = new_first;
        c.prune(new_first);
        // The bytes after the durable index still count towards the next
        // compaction: they were appended while the flush ran, and without
        // them a compaction that a slow flush held back would stay where it
        // is once the writes stop (until as many bytes again are written).
        // Bytes kept for a lagging follower do not count: flushing cannot
        // free them, and counting them would compact on every poll.
        let remaining = c.bytes_after(durable);
        let counted = c.bytes_since.saturating_sub(remaining);
        c.bytes_since = remaining;
        c.bytes_at_flush = c.bytes_at_flush.saturating_sub(counted);
        self.counters.compactions += 1;
        tracing::debug!(
            id = self.id,
            first,
            new_first,
            durable,
            "compacting the log"
        );
        fx.compact = Some(new_first);
    }

    fn hand_to_apply(&mut self, committed: Vec<Entry>, fx: &mut Effects<R>) {
        // Entries at or below an installed snapshot are in the state machine.
        let committed: Vec<Entry> = committed
            .into_iter()
            .filter(|e| e.index > self.apply_handed)
            .collect();
        if committed.is_empty() {
            return;
        }
        let first = committed[0].index;
        assert_eq!(
            first,
            self.apply_handed + 1,
            "committed entries must continue what was handed to apply"
        );
        self.apply_handed = committed.last().expect("non-empty").index;
        self.counters.entries_committed += committed.len() as u64;
        let mut rest = committed;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(self.cfg.max_apply_batch_entries));
            let waiters = self.proposals.take_committed(&rest);
            fx.apply.push(ApplyTask {
                entries: rest,
                waiters,
            });
            rest = tail;
        }
    }

    fn on_soft_state(&mut self, role: StateRole, leader: u64) {
        let was_leader = self.role == StateRole::Leader;
        if role == StateRole::Leader && !was_leader {
            self.counters.became_leader += 1;
            tracing::info!(id = self.id, term = self.raw.raft.term, "became leader");
        }
        if was_leader && role != StateRole::Leader {
            self.snap.on_leadership(self.raw.raft.term, false);
        }
        if leader != self.leader || (was_leader && role != StateRole::Leader) {
            // Confirmations asked of the old leader will never arrive.
            let err = Error::NotLeader {
                leader: (leader != 0 && leader != self.id).then_some(leader),
            };
            self.reads.fail_unconfirmed(&err);
        }
        self.role = role;
        self.leader = leader;
    }

    /// Complete every request with `ShuttingDown`.
    pub fn shutdown(&mut self) {
        self.proposals.fail_all(&Error::ShuttingDown);
        self.reads.fail_all(&Error::ShuttingDown);
    }

    /// The replica's state for `status()`.
    #[must_use]
    pub fn status(&self) -> NodeStatus {
        let st = self.raw.status();
        let log = &self.raw.raft.raft_log;
        let progress = st
            .progress
            .as_ref()
            .map(|prs| {
                prs.iter()
                    .map(|(&id, p)| PeerProgress {
                        id,
                        matched: p.matched,
                        next: p.next_idx,
                        state: format!("{:?}", p.state),
                        learner: st.conf_state.learners.contains(&id),
                    })
                    .collect()
            })
            .unwrap_or_default();
        NodeStatus {
            id: self.id,
            role: st.ss.raft_state,
            term: st.hs.term,
            leader: (st.ss.leader_id != 0).then_some(st.ss.leader_id),
            commit: st.hs.commit,
            applied: self.applied,
            first_index: log.first_index(),
            last_index: log.last_index(),
            conf_state: st.conf_state,
            removed: self.removed.iter().copied().collect(),
            progress,
            pending_proposals: self.proposals.len(),
            pending_reads: self.reads.len(),
            counters: self.counters(),
        }
    }
}

/// Encode a membership change the way `propose_conf_change` carries it.
#[must_use]
pub fn conf_change_v2(cc: impl ConfChangeI) -> ConfChangeV2 {
    cc.into_v2()
}

#[cfg(test)]
mod compaction_tests {
    use super::Compaction;

    #[test]
    fn bytes_after_counts_whole_batches_and_follows_overwrites() {
        let mut c = Compaction::default();
        assert_eq!(c.bytes_after(0), 0);
        c.record(1, 3, 300); // entries 1..=3
        c.record(4, 4, 50); // entry 4
        c.record(5, 9, 500); // entries 5..=9
        assert_eq!(c.bytes_after(0), 850);
        assert_eq!(c.bytes_after(3), 550);
        assert_eq!(c.bytes_after(4), 500);
        // A batch straddling the index counts whole.
        assert_eq!(c.bytes_after(6), 500);
        assert_eq!(c.bytes_after(9), 0);
        assert_eq!(c.bytes_after(100), 0);
        // A new leader's entries overwrite 5..: the old batch is dropped.
        c.record(5, 5, 10);
        assert_eq!(c.bytes_after(4), 10);
        assert_eq!(c.bytes_after(0), 360);
        // Compaction keeps the base below the new first index.
        c.prune(5);
        assert_eq!(c.marks.len(), 2);
        assert_eq!(c.bytes_after(4), 10);
        c.record(6, 7, 20);
        assert_eq!(c.bytes_after(4), 30);
        assert_eq!(c.bytes_after(5), 20);
    }
}
