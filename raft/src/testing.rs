//! A deterministic in-memory cluster for tests and simulators.
//!
//! [`Network`] runs several [`RawNode`]s over [`MemStorage`] and a message
//! queue. Nothing is timed and nothing is random unless the caller makes it
//! so: messages are delivered in FIFO order when asked, links can be cut,
//! nodes crashed (losing every write they had not persisted) and restarted
//! from their storage. Each node follows the `Ready` contract either
//! synchronously (persist, then advance) or asynchronously (persist later,
//! `advance_append_async` + `on_persist_ready`), so both paths are exercised.
//!
//! A [`Checker`] verifies the safety properties of Raft after every step:
//! election safety, log matching, leader completeness, state-machine safety
//! and `applied <= committed <= last`.
//!
//! ```
//! use tandem_raft::testing::Network;
//!
//! let mut net = Network::new(&[1, 2, 3], |_| {});
//! net.campaign(1);
//! net.stabilize();
//! assert_eq!(net.leader(), Some(1));
//! net.propose(1, b"x".to_vec()).unwrap();
//! net.stabilize();
//! for id in [1, 2, 3] {
//!     assert_eq!(net.applied_data(id), vec![b"x".to_vec()]);
//! }
//! net.check().unwrap();
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::config::Config;
use crate::errors::Result;
use crate::raft::{Raft, StateRole};
use crate::raw_node::{RawNode, Ready, SnapshotStatus};
use crate::read_only::ReadState;
use crate::storage::{MemStorage, Storage};
use crate::types::{
    decode, encode, ConfChange, ConfChangeI, ConfChangeV2, ConfState, Entry, EntryType, HardState,
    Message, MessageType, Snapshot,
};

/// FNV-1a, 64 bit: a stable hash for entry payloads and state digests.
#[must_use]
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn entry_hash(e: &Entry) -> u64 {
    let t = match e.entry_type {
        EntryType::EntryNormal => 0u8,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    };
    fnv1a(fnv1a(u64::from(t), &e.data), &e.context)
}

/// The state machine of a test node: a hash chain over applied entries. It
/// is durable (it survives a crash), like a state machine that persists its
/// applied index atomically with its data.
#[derive(Clone, Debug, Default)]
pub struct StateMachine {
    /// The last applied index.
    pub applied: u64,
    /// Digest of everything applied so far.
    pub hash: u64,
    /// The membership as of `applied`.
    pub conf_state: ConfState,
    /// The data of applied normal, non-empty entries (for assertions).
    pub data: Vec<Vec<u8>>,
}

impl StateMachine {
    fn snapshot_data(&self) -> Vec<u8> {
        encode(&(self.applied, self.hash, self.data.clone()))
    }

    fn restore(&mut self, snap: &Snapshot) {
        let (applied, hash, data): (u64, u64, Vec<Vec<u8>>) = if snap.data.is_empty() {
            (snap.metadata.index, 0, Vec::new())
        } else {
            decode(&snap.data).expect("test snapshot data decodes")
        };
        assert_eq!(applied, snap.metadata.index, "snapshot data index mismatch");
        self.applied = applied;
        self.hash = hash;
        self.data = data;
        self.conf_state = snap.metadata.conf_state.clone();
    }
}

/// Writes handed out by a Ready and not yet persisted (asynchronous mode).
#[derive(Debug)]
struct PendingWrite {
    number: u64,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    hs: Option<HardState>,
    persisted_messages: Vec<Message>,
}

/// One node of the test cluster.
#[derive(Debug)]
pub struct Node {
    /// The node's id.
    pub id: u64,
    /// The running node; `None` while crashed or stopped.
    pub raw: Option<RawNode<MemStorage>>,
    /// Its durable storage.
    pub storage: MemStorage,
    /// Its configuration (reused on restart).
    pub config: Config,
    /// Its durable state machine.
    pub sm: StateMachine,
    /// Persist Readies asynchronously (see [`Network::persist`]).
    pub async_persist: bool,
    /// Read states received, in order.
    pub read_states: Vec<ReadState>,
    /// True once the node applied its own removal (it is then stopped).
    pub removed: bool,
    /// Every Ready's number, for determinism checks: (number, summary).
    pub ready_log: Vec<String>,
    pending: VecDeque<PendingWrite>,
}

impl Node {
    /// The raft state machine.
    ///
    /// # Panics
    /// If the node is down.
    #[must_use]
    pub fn raft(&self) -> &Raft<MemStorage> {
        &self.raw.as_ref().expect("node is down").raft
    }

    /// True if running.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.raw.is_some()
    }

    /// Number of Readies handed out and not yet persisted.
    #[must_use]
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }
}

/// Checks Raft's safety properties over a cluster's history.
#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<u64, u64>,
    entries: HashMap<(u64, u64), (u64, Option<u64>)>,
    committed: BTreeMap<u64, (u64, u64, u64)>,
    checked_commit: BTreeMap<u64, u64>,
    leader_checked: BTreeSet<(u64, u64)>,
    applied: BTreeMap<u64, u64>,
}

impl Checker {
    /// The leader recorded for each term so far.
    #[must_use]
    pub fn leaders(&self) -> &BTreeMap<u64, u64> {
        &self.leaders
    }

    /// The highest index known committed anywhere.
    #[must_use]
    pub fn max_committed(&self) -> u64 {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Number of distinct indexes known committed.
    #[must_use]
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }

    fn on_apply(
        &mut self,
        id: u64,
        index: u64,
        state_hash: u64,
    ) -> std::result::Result<(), String> {
        match self.applied.get(&index) {
            Some(&h) if h != state_hash => Err(format!(
                "state machine safety: node {id} applied a different history at index {index}"
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(index, state_hash);
                Ok(())
            }
        }
    }

    fn check_node(&mut self, r: &Raft<MemStorage>) -> std::result::Result<(), String> {
        let id = r.id;
        let log = &r.raft_log;
        let (first, last) = (log.first_index(), log.last_index());
        if !(log.applied <= log.committed && log.committed <= last) {
            return Err(format!(
                "node {id}: applied {} <= committed {} <= last {last} violated",
                log.applied, log.committed
            ));
        }
        if r.state == StateRole::Leader {
            let prev = *self.leaders.entry(r.term).or_insert(id);
            if prev != id {
                return Err(format!(
                    "election safety: nodes {prev} and {id} both leaders in term {}",
                    r.term
                ));
            }
        }
        // Log matching over the part of the log that can still change
        // (plus a margin below the commit index).
        let lo = first.max(log.committed.saturating_sub(8)).max(1);
        if lo <= last {
            let ents = log
                .slice(lo, last + 1, None)
                .map_err(|e| format!("node {id}: cannot read its log: {e}"))?;
            for e in &ents {
                let prev_term = log.term(e.index - 1).ok();
                let v = (entry_hash(e), prev_term);
                match self.entries.get(&(e.index, e.term)) {
                    Some(&(h, p)) => {
                        if h != v.0 {
                            return Err(format!(
                                "log matching: node {id} has a different entry at ({}, {})",
                                e.index, e.term
                            ));
                        }
                        if let (Some(p), Some(q)) = (p, prev_term) {
                            if p != q {
                                return Err(format!(
                                    "log matching: node {id} entry ({}, {}) follows term {q}, elsewhere {p}",
                                    e.index, e.term
                                ));
                            }
                        }
                    }
                    None => {
                        self.entries.insert((e.index, e.term), v);
                    }
                }
            }
        }
        // Committed entries never change.
        let from = self
            .checked_commit
            .get(&id)
            .copied()
            .unwrap_or(0)
            .max(first - 1)
            + 1;
        if from <= log.committed {
            let ents = log
                .slice(from, log.committed + 1, None)
                .map_err(|e| format!("node {id}: cannot read committed entries: {e}"))?;
            for e in &ents {
                let h = entry_hash(e);
                match self.committed.get_mut(&e.index) {
                    Some((t, hh, obs)) => {
                        if *t != e.term || *hh != h {
                            return Err(format!(
                                "committed entry {} changed on node {id}: term {} vs {}",
                                e.index, e.term, t
                            ));
                        }
                        *obs = (*obs).min(r.term);
                    }
                    None => {
                        self.committed.insert(e.index, (e.term, h, r.term));
                    }
                }
            }
            self.checked_commit.insert(id, log.committed);
        }
        // Leader completeness: a leader holds every entry committed in an
        // earlier term.
        if r.state == StateRole::Leader && self.leader_checked.insert((id, r.term)) {
            for (&i, &(t, h, obs)) in self.committed.range(first..) {
                if obs >= r.term {
                    continue;
                }
                let ok = log.term(i).ok() == Some(t)
                    && log
                        .slice(i, i + 1, None)
                        .ok()
                        .and_then(|v| v.first().map(entry_hash))
                        == Some(h);
                if !ok {
                    return Err(format!(
                        "leader completeness: leader {id} of term {} lacks committed entry ({i}, {t})",
                        r.term
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A deterministic in-memory cluster.
#[derive(Debug, Default)]
pub struct Network {
    /// The nodes, by id.
    pub nodes: BTreeMap<u64, Node>,
    /// The safety checker fed by every step.
    pub checker: Checker,
    queue: VecDeque<Message>,
    cut: BTreeSet<(u64, u64)>,
    ignored: Vec<MessageType>,
    violation: Option<String>,
    /// Messages delivered so far.
    pub delivered: u64,
    /// Messages dropped so far.
    pub dropped: u64,
    /// Stop a node as soon as it applies its own removal. Off by default:
    /// a removed leader may be the only node that knows its removal
    /// committed, and the old configuration may still need its vote.
    pub stop_removed: bool,
}

impl Network {
    /// A cluster of `voters`, bootstrapped with that membership; `f` adjusts
    /// each node's [`Config`] (created with [`Config::new`]).
    #[must_use]
    pub fn new(voters: &[u64], f: impl Fn(&mut Config)) -> Self {
        let mut net = Network::default();
        let cs = ConfState::from_voters(voters.iter().copied());
        for &id in voters {
            let mut c = Config::new(id);
            f(&mut c);
            net.add_node_with(id, c, MemStorage::new_with_conf_state(cs.clone()));
        }
        net
    }

    /// A cluster with voters and learners.
    #[must_use]
    pub fn new_with_learners(voters: &[u64], learners: &[u64], f: impl Fn(&mut Config)) -> Self {
        let mut net = Network::default();
        let cs = ConfState::from_parts(voters.iter().copied(), learners.iter().copied());
        for &id in voters.iter().chain(learners) {
            let mut c = Config::new(id);
            f(&mut c);
            net.add_node_with(id, c, MemStorage::new_with_conf_state(cs.clone()));
        }
        net
    }

    /// Add a node with an explicit config and storage (e.g. an empty one,
    /// for a node that will join through a conf change).
    ///
    /// # Panics
    /// If the config is invalid or the storage inconsistent.
    pub fn add_node_with(&mut self, id: u64, config: Config, storage: MemStorage) {
        let raw = RawNode::new(&config, storage.clone()).expect("valid test node");
        let sm = StateMachine {
            applied: raw.raft.raft_log.applied,
            conf_state: storage.rl().conf_state().clone(),
            ..StateMachine::default()
        };
        self.nodes.insert(
            id,
            Node {
                id,
                raw: Some(raw),
                storage,
                config,
                sm,
                async_persist: false,
                read_states: Vec::new(),
                removed: false,
                ready_log: Vec::new(),
                pending: VecDeque::new(),
            },
        );
    }

    /// Add an uninitialised node (empty storage) that joins later.
    pub fn add_empty_node(&mut self, id: u64, f: impl Fn(&mut Config)) {
        let mut c = Config::new(id);
        f(&mut c);
        self.add_node_with(id, c, MemStorage::new());
    }

    /// The node `id`.
    ///
    /// # Panics
    /// If there is no such node.
    #[must_use]
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// The node `id`, mutable.
    ///
    /// # Panics
    /// If there is no such node.
    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// The running raw node `id`.
    ///
    /// # Panics
    /// If it is down.
    pub fn raw(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.node_mut(id).raw.as_mut().expect("node is down")
    }

    /// The raft state of running node `id`.
    ///
    /// # Panics
    /// If it is down.
    #[must_use]
    pub fn raft(&self, id: u64) -> &Raft<MemStorage> {
        self.node(id).raft()
    }

    /// The leader with the highest term among running nodes.
    #[must_use]
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|n| n.raw.as_ref())
            .filter(|r| r.raft.state == StateRole::Leader)
            .max_by_key(|r| r.raft.term)
            .map(|r| r.raft.id)
    }

    /// The data of the normal entries `id` applied.
    #[must_use]
    pub fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.node(id).sm.data.clone()
    }

    /// Messages waiting for delivery.
    #[must_use]
    pub fn queue(&self) -> &VecDeque<Message> {
        &self.queue
    }

    /// Remove and return every queued message.
    pub fn drain_queue(&mut self) -> Vec<Message> {
        self.queue.drain(..).collect()
    }

    /// Drop the oldest queued message. Returns false if the queue is empty.
    pub fn drop_front(&mut self) -> bool {
        let dropped = self.queue.pop_front();
        if let Some(m) = &dropped {
            self.dropped += 1;
            if m.msg_type == MessageType::MsgSnapshot {
                let (from, to) = (m.from, m.to);
                if let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
                    raw.report_snapshot(to, SnapshotStatus::Failure);
                }
                self.process(from);
            }
        }
        dropped.is_some()
    }

    /// Queue a copy of the oldest message at the back (a duplicate that
    /// arrives late). Returns false if the queue is empty.
    pub fn duplicate_front(&mut self) -> bool {
        let Some(m) = self.queue.front().cloned() else {
            return false;
        };
        self.queue.push_back(m);
        true
    }

    /// Move the oldest message to the back (reordering).
    pub fn delay_front(&mut self) {
        if let Some(m) = self.queue.pop_front() {
            self.queue.push_back(m);
        }
    }

    /// Queue a message as if sent by its `from`.
    pub fn send(&mut self, m: Message) {
        self.queue.push_back(m);
    }

    // ---------------------------------------------------------------- faults

    /// Drop messages from `from` to `to`.
    pub fn cut(&mut self, from: u64, to: u64) {
        self.cut.insert((from, to));
    }

    /// Drop messages between `a` and `b`, both ways.
    pub fn cut_both(&mut self, a: u64, b: u64) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cut `id` off from every other node.
    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            self.cut_both(id, o);
        }
    }

    /// Split the cluster: no message crosses between the groups.
    pub fn partition(&mut self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.cut_both(x, y);
            }
        }
    }

    /// Drop every message of type `t`.
    pub fn ignore(&mut self, t: MessageType) {
        if !self.ignored.contains(&t) {
            self.ignored.push(t);
        }
    }

    /// Restore every link and stop ignoring message types.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.ignored.clear();
    }

    /// Crash `id`: it loses its unpersisted writes and queued input.
    pub fn crash(&mut self, id: u64) {
        let n = self.node_mut(id);
        n.raw = None;
        n.pending.clear();
    }

    /// Restart a crashed node from its storage and state machine.
    ///
    /// # Panics
    /// If the node is running or its storage cannot be loaded.
    pub fn restart(&mut self, id: u64) {
        let n = self.node_mut(id);
        assert!(n.raw.is_none(), "node {id} is running");
        let mut c = n.config.clone();
        c.applied = n.sm.applied;
        let raw = RawNode::new(&c, n.storage.clone()).expect("restart from storage");
        n.raw = Some(raw);
    }

    // ---------------------------------------------------------------- inputs

    /// Propose `data` at node `id`.
    ///
    /// # Errors
    /// What `RawNode::propose` returns.
    pub fn propose(&mut self, id: u64, data: Vec<u8>) -> Result<()> {
        let r = self.raw(id).propose(vec![], data);
        self.process(id);
        r
    }

    /// Propose a membership change at node `id`.
    ///
    /// # Errors
    /// What `RawNode::propose_conf_change` returns.
    pub fn propose_conf_change(&mut self, id: u64, cc: impl ConfChangeI) -> Result<()> {
        let r = self.raw(id).propose_conf_change(vec![], cc);
        self.process(id);
        r
    }

    /// Make `id` campaign.
    pub fn campaign(&mut self, id: u64) {
        let _ = self.raw(id).campaign();
        self.process(id);
    }

    /// Request a read at `id` with context `ctx`.
    pub fn read_index(&mut self, id: u64, ctx: &[u8]) {
        self.raw(id).read_index(ctx.to_vec());
        self.process(id);
    }

    /// Ask `id` (the leader, or a follower that forwards) to transfer leadership.
    pub fn transfer_leader(&mut self, id: u64, to: u64) {
        self.raw(id).transfer_leader(to);
        self.process(id);
    }

    /// Tick node `id` once. A leader whose followers asked for a snapshot
    /// first snapshots its state machine (as an engine builds snapshots on
    /// demand).
    pub fn tick(&mut self, id: u64) {
        let wants_snapshot = self
            .nodes
            .get(&id)
            .and_then(|n| n.raw.as_ref())
            .is_some_and(|r| {
                r.raft.state == StateRole::Leader
                    && r.raft
                        .prs()
                        .iter()
                        .any(|(_, p)| p.pending_request_snapshot != 0)
            });
        if wants_snapshot {
            self.compact(id);
        }
        if let Some(raw) = self.node_mut(id).raw.as_mut() {
            raw.tick();
            self.process(id);
        }
    }

    /// Tick every running node once.
    pub fn tick_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.tick(id);
        }
    }

    /// Compact `id`'s log up to its applied index (creating a snapshot of
    /// its state machine there). Returns the snapshot index, if any.
    pub fn compact(&mut self, id: u64) -> Option<u64> {
        let n = self.node_mut(id);
        let applied = n.sm.applied;
        let mut core = n.storage.wl();
        let snap_index = core.stored_snapshot().metadata.index;
        if applied <= snap_index || applied > core.hard_state().commit.max(applied) {
            return None;
        }
        let data = n.sm.snapshot_data();
        core.create_snapshot(applied, n.sm.conf_state.clone(), data)
            .ok()
            .map(|()| applied)
    }

    // ---------------------------------------------------------------- ready loop

    /// Handle every Ready of node `id` (persisting synchronously unless the
    /// node is asynchronous), queueing its messages.
    pub fn process(&mut self, id: u64) {
        loop {
            let Some(n) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(raw) = n.raw.as_mut() else { return };
            if !raw.has_ready() {
                return;
            }
            let mut rd = raw.ready();
            n.ready_log.push(summarize(&rd));
            self.queue.extend(rd.take_messages());
            let n = self.nodes.get_mut(&id).expect("exists");
            n.read_states.extend(rd.take_read_states());
            if n.async_persist {
                let committed = rd.take_committed_entries();
                let w = PendingWrite {
                    number: rd.number(),
                    snapshot: rd.snapshot().clone(),
                    entries: rd.take_entries(),
                    hs: rd.hs().copied(),
                    persisted_messages: rd.take_persisted_messages(),
                };
                n.pending.push_back(w);
                let raw = n.raw.as_mut().expect("up");
                raw.advance_append_async(rd);
                if let Some(last) = committed.last().map(|e| e.index) {
                    self.apply(id, committed);
                    if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
                        raw.advance_apply_to(last);
                    }
                }
            } else {
                let snap = rd.snapshot().clone();
                let entries = rd.take_entries();
                let hs = rd.hs().copied();
                persist(n, &snap, &entries, hs);
                self.queue.extend(rd.take_persisted_messages());
                let committed = rd.take_committed_entries();
                self.apply(id, committed);
                let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) else {
                    return;
                };
                let mut light = raw.advance(rd);
                let n = self.nodes.get_mut(&id).expect("exists");
                if let Some(c) = light.commit_index() {
                    n.storage.wl().set_commit(c);
                }
                self.queue.extend(light.take_messages());
                let committed = light.take_committed_entries();
                self.apply(id, committed);
                if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
                    raw.advance_apply();
                }
            }
            self.stop_if_removed(id);
        }
    }

    /// Persist the oldest outstanding Ready of asynchronous node `id`.
    /// Returns false if there was none.
    pub fn persist(&mut self, id: u64) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        if n.raw.is_none() {
            return false;
        }
        let Some(w) = n.pending.pop_front() else {
            return false;
        };
        persist(n, &w.snapshot, &w.entries, w.hs);
        self.queue.extend(w.persisted_messages);
        if let Some(raw) = n.raw.as_mut() {
            raw.on_persist_ready(w.number);
        }
        self.process(id);
        true
    }

    fn apply(&mut self, id: u64, entries: Vec<Entry>) {
        for e in entries {
            let n = self.nodes.get_mut(&id).expect("exists");
            if e.index != n.sm.applied + 1 {
                self.violation.get_or_insert(format!(
                    "node {id} asked to apply {} after {}",
                    e.index, n.sm.applied
                ));
                continue;
            }
            n.sm.applied = e.index;
            n.sm.hash = fnv1a(n.sm.hash, &entry_hash(&e).to_le_bytes());
            match e.entry_type {
                EntryType::EntryNormal => {
                    if !e.data.is_empty() {
                        n.sm.data.push(e.data.to_vec());
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let cc = if e.entry_type == EntryType::EntryConfChange {
                        decode::<ConfChange>(&e.data).map(ConfChangeI::into_v2)
                    } else {
                        decode::<ConfChangeV2>(&e.data)
                    };
                    if let (Ok(cc), Some(raw)) = (cc, n.raw.as_mut()) {
                        if let Ok(cs) = raw.apply_conf_change(&cc) {
                            n.storage.wl().set_conf_state(cs.clone());
                            let was_member = is_member(&n.sm.conf_state, id);
                            if was_member && !is_member(&cs, id) {
                                n.removed = true;
                            }
                            n.sm.conf_state = cs;
                        }
                    }
                }
            }
            let (applied, hash) = (n.sm.applied, n.sm.hash);
            if let Err(v) = self.checker.on_apply(id, applied, hash) {
                self.violation.get_or_insert(v);
            }
        }
    }

    /// A node that applied its own removal shuts down if
    /// [`Network::stop_removed`] is set.
    fn stop_if_removed(&mut self, id: u64) {
        if !self.stop_removed {
            return;
        }
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.removed && n.raw.is_some() {
            n.raw = None;
            n.pending.clear();
        }
    }

    /// Deliver the oldest queued message. Returns false if the queue is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else {
            return false;
        };
        let (from, to, t) = (m.from, m.to, m.msg_type);
        let up = self.nodes.get(&to).is_some_and(Node::is_up);
        if !up || self.cut.contains(&(from, to)) || self.ignored.contains(&t) {
            self.dropped += 1;
            if t == MessageType::MsgSnapshot {
                if let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
                    raw.report_snapshot(to, SnapshotStatus::Failure);
                }
                self.process(from);
            }
            return true;
        }
        self.delivered += 1;
        let _ = self.raw(to).step(m);
        self.process(to);
        if t == MessageType::MsgSnapshot {
            if let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
                raw.report_snapshot(to, SnapshotStatus::Finish);
            }
            self.process(from);
        }
        true
    }

    /// Deliver, persist and process until nothing is left to do.
    ///
    /// # Panics
    /// If the cluster does not quiesce within a generous bound (a livelock).
    pub fn stabilize(&mut self) {
        for _ in 0..1_000_000 {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for &id in &ids {
                self.process(id);
            }
            let mut progressed = false;
            for &id in &ids {
                while self.persist(id) {
                    progressed = true;
                }
            }
            while self.deliver_one() {
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
        panic!("network did not stabilize");
    }

    /// A multi-line description of every node, for failure messages.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for n in self.nodes.values() {
            match &n.raw {
                Some(raw) => {
                    let r = &raw.raft;
                    out.push_str(&format!(
                        "node {}: {:?} term {} vote {} leader {} commit {} applied {} last {} persisted {} conf {:?} pending writes {} req snap {} first {}\n",
                        n.id,
                        r.state,
                        r.term,
                        r.vote,
                        r.leader_id,
                        r.raft_log.committed,
                        r.raft_log.applied,
                        r.raft_log.last_index(),
                        r.raft_log.persisted,
                        r.prs().conf_state(),
                        n.pending.len(),
                        r.pending_request_snapshot,
                        r.raft_log.first_index(),
                    ));
                    if r.state == StateRole::Leader {
                        for (id, p) in r.prs().iter() {
                            out.push_str(&format!(
                                "    progress {id}: {:?} match {} next {} paused {} pending snap {} req snap {} active {} inflight {}\n",
                                p.state, p.matched, p.next_idx, p.is_paused(), p.pending_snapshot, p.pending_request_snapshot, p.recent_active, p.ins.count()
                            ));
                        }
                    }
                }
                None => out.push_str(&format!(
                    "node {}: down (removed: {}) sm applied {} conf {:?}\n",
                    n.id, n.removed, n.sm.applied, n.sm.conf_state
                )),
            }
        }
        out
    }

    /// Check every safety property on every running node.
    ///
    /// # Errors
    /// A description of the first violation found.
    pub fn check(&mut self) -> std::result::Result<(), String> {
        if let Some(v) = &self.violation {
            return Err(v.clone());
        }
        for n in self.nodes.values() {
            if let Some(raw) = &n.raw {
                self.checker.check_node(&raw.raft)?;
                if raw.raft.raft_log.applied > n.sm.applied {
                    return Err(format!(
                        "node {}: raft applied {} beyond state machine {}",
                        n.id, raw.raft.raft_log.applied, n.sm.applied
                    ));
                }
            }
        }
        Ok(())
    }
}

fn is_member(cs: &ConfState, id: u64) -> bool {
    cs.voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next)
        .any(|&x| x == id)
}

fn persist(n: &mut Node, snap: &Snapshot, entries: &[Entry], hs: Option<HardState>) {
    if !snap.is_empty() {
        n.storage
            .wl()
            .apply_snapshot(snap.clone())
            .expect("apply snapshot to test storage");
        n.sm.restore(snap);
    }
    if !entries.is_empty() {
        n.storage
            .wl()
            .append(entries)
            .expect("append to test storage");
    }
    if let Some(hs) = hs {
        n.storage.wl().set_hard_state(hs);
    }
    debug_assert!(n.storage.last_index().is_ok());
}

/// A one-line description of a Ready, for determinism comparisons.
#[must_use]
pub fn summarize(rd: &Ready) -> String {
    format!(
        "#{} ss={:?} hs={:?} ents={:?} snap={} committed={:?} msgs={:?} pmsgs={:?} reads={:?}",
        rd.number(),
        rd.ss(),
        rd.hs(),
        rd.entries()
            .iter()
            .map(|e| (e.index, e.term, e.data.len()))
            .collect::<Vec<_>>(),
        rd.snapshot().metadata.index,
        rd.committed_entries()
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        rd.messages()
            .iter()
            .map(|m| (m.msg_type, m.to, m.term, m.index, m.entries.len(), m.commit))
            .collect::<Vec<_>>(),
        rd.persisted_messages()
            .iter()
            .map(|m| (m.msg_type, m.to, m.term, m.index, m.reject))
            .collect::<Vec<_>>(),
        rd.read_states(),
    )
}
