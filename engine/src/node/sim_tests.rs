//! Single-threaded tests of the step function: three [`NodeCore`]s over
//! `MemStorage`, a simulated network and simulated disks, driven by hand.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::oneshot::{channel, Receiver};
use tandem_raft::{ConfChange, ConfChangeType, ConfState, MemStorage, Message, MessageType};

use super::core::{conf_change_v2, NodeCore, PersistTask};
use crate::config::{Config, ReadConsistency};
use crate::error::{Error, Result};
use crate::transport::Envelope;

type Core = NodeCore<MemStorage, u64>;

struct Sim {
    nodes: BTreeMap<u64, Core>,
    /// Messages in flight.
    net: Vec<Message>,
    /// Nodes whose traffic is dropped.
    cut: HashSet<u64>,
    /// Persist tasks not yet durable, per node (when `hold_disk` has it).
    held: BTreeMap<u64, Vec<PersistTask>>,
    hold_disk: HashSet<u64>,
    /// Everything each node applied, in order.
    applied: BTreeMap<u64, Vec<(u64, Vec<u8>)>>,
    /// The first index of the last compaction each node asked for (the
    /// in-memory log is not compacted: only the request is recorded).
    compacted: BTreeMap<u64, u64>,
    /// Nodes whose state-machine flushes are slow: a flush asked for is
    /// recorded here (the applied index it makes durable) until
    /// `finish_flush`.
    slow_flush: HashSet<u64>,
    flushing: BTreeMap<u64, u64>,
    now: Instant,
}

/// The configuration of replica `id` in these tests.
fn node_config(id: u64) -> Config {
    Config {
        election_ticks: 10,
        heartbeat_ticks: 2,
        request_timeout: Duration::from_secs(5),
        ..Config::new(id)
    }
}

impl Sim {
    fn new(n: u64) -> Sim {
        Sim::with_config(n, |_| {})
    }

    fn with_config(n: u64, tweak: impl Fn(&mut Config)) -> Sim {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let store = MemStorage::new_with_conf_state(ConfState::from_voters(1..=n));
            let mut cfg = node_config(id);
            tweak(&mut cfg);
            nodes.insert(id, NodeCore::new(&cfg, store, 0, 100 + id).unwrap());
        }
        Sim {
            nodes,
            net: Vec::new(),
            cut: HashSet::new(),
            held: BTreeMap::new(),
            hold_disk: HashSet::new(),
            applied: BTreeMap::new(),
            compacted: BTreeMap::new(),
            slow_flush: HashSet::new(),
            flushing: BTreeMap::new(),
            now: Instant::now(),
        }
    }

    /// Make `t` durable, then do what a log writer does: send the
    /// messages riding it, and report it.
    fn persist(node: &mut Core, t: &PersistTask, net: &mut Vec<Message>) {
        let store = node.raw().store().clone();
        let mut w = store.wl();
        if !t.entries.is_empty() {
            w.append(&t.entries).unwrap();
        }
        if let Some(hs) = t.hard_state {
            w.set_hard_state(hs);
        }
        drop(w);
        // Lazy tasks carry no messages and are not reported (see
        // `LogWriter`).
        net.extend(t.messages.iter().cloned());
        if !t.lazy {
            node.on_persisted(t.number);
        }
    }

    /// Poll every node until it has nothing more to do, carrying out its effects.
    fn cycle(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).unwrap();
            loop {
                let fx = node.poll(self.now);
                if fx.is_empty() {
                    break;
                }
                self.net.extend(fx.send);
                if let Some(first) = fx.compact {
                    self.compacted.insert(id, first);
                }
                for t in fx.persist {
                    if self.hold_disk.contains(&id) {
                        self.held.entry(id).or_default().push(t);
                    } else {
                        Self::persist(node, &t, &mut self.net);
                    }
                }
                for task in fx.apply {
                    let last = task.entries.last().unwrap().index;
                    let log = self.applied.entry(id).or_default();
                    for e in &task.entries {
                        log.push((e.index, e.data.to_vec()));
                    }
                    for w in task.waiters {
                        let _ = w.tx.send(Ok(w.index));
                    }
                    node.on_applied(last, &[]);
                }
                if fx.flush_durable {
                    // Everything applied is durable at once, or when a slow
                    // flush finishes.
                    let applied = self
                        .applied
                        .get(&id)
                        .and_then(|l| l.last())
                        .map_or(0, |e| e.0);
                    if self.slow_flush.contains(&id) {
                        assert!(
                            self.flushing.insert(id, applied).is_none(),
                            "a second flush asked for while one is in flight"
                        );
                    } else {
                        node.on_durable(applied);
                    }
                }
            }
        }
    }

    /// The slow flush of `id` finishes; a flush asked for after it is
    /// slow too while `id` is in `slow_flush`.
    fn finish_flush(&mut self, id: u64) {
        let index = self.flushing.remove(&id).expect("a flush in flight");
        self.nodes.get_mut(&id).unwrap().on_durable(index);
        self.settle();
    }

    fn deliver(&mut self) {
        let msgs = std::mem::take(&mut self.net);
        for m in msgs {
            if self.cut.contains(&m.from) || self.cut.contains(&m.to) {
                continue;
            }
            if let Some(n) = self.nodes.get_mut(&m.to) {
                n.step(Envelope::raft(1, m));
            }
        }
    }

    fn settle(&mut self) {
        for _ in 0..20 {
            self.cycle();
            self.deliver();
        }
        self.cycle();
    }

    fn tick_all(&mut self) {
        self.now += Duration::from_millis(10);
        for n in self.nodes.values_mut() {
            n.tick(self.now);
        }
    }

    /// Followers learn the commit index from the next append or heartbeat
    /// (`skip_bcast_commit`): let a heartbeat round pass.
    fn heartbeat(&mut self) {
        for _ in 0..2 {
            self.tick_all();
            self.settle();
        }
    }

    fn elect(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().campaign().unwrap();
        self.settle();
        assert!(self.nodes[&id].is_leader(), "node {id} should lead");
    }

    fn propose(&mut self, id: u64, data: &[u8]) -> Receiver<Result<u64>> {
        let (tx, rx) = channel();
        let now = self.now;
        self.nodes
            .get_mut(&id)
            .unwrap()
            .propose(data.to_vec(), tx, now);
        rx
    }

    /// Propose `n` writes of `bytes` bytes on leader `id`, one at a time,
    /// each settled and committed before the next.
    fn write_committed(&mut self, id: u64, n: u8, bytes: usize) {
        for k in 0..n {
            let rx = self.propose(id, &vec![k; bytes]);
            self.settle();
            assert!(rx.try_recv().unwrap().is_ok(), "write {k} did not commit");
        }
    }

    fn read(&mut self, id: u64, c: ReadConsistency) -> Receiver<Result<u64>> {
        let (tx, rx) = channel();
        let now = self.now;
        self.nodes.get_mut(&id).unwrap().read(c, tx, now);
        rx
    }
}

#[test]
fn a_proposal_completes_with_its_index_and_every_replica_applies_it() {
    let mut sim = Sim::new(3);
    sim.elect(1);
    let rx = sim.propose(1, b"x");
    sim.settle();
    let index = rx.try_recv().unwrap().unwrap();
    sim.heartbeat();
    for id in 1..=3 {
        let log = &sim.applied[&id];
        assert!(log.contains(&(index, b"x".to_vec())), "node {id}: {log:?}");
    }
    assert_eq!(sim.applied[&1], sim.applied[&2]);
    assert_eq!(sim.applied[&1], sim.applied[&3]);
    let st = sim.nodes[&1].status();
    assert_eq!(st.leader, Some(1));
    assert_eq!(st.commit, index);
    assert_eq!(st.progress.len(), 3);
}

#[test]
fn a_follower_refuses_proposals_naming_the_leader() {
    let mut sim = Sim::new(3);
    sim.elect(1);
    let rx = sim.propose(2, b"x");
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(Error::NotLeader { leader: Some(1) })
    ));
}

#[test]
fn acknowledgements_wait_for_durability_but_leader_appends_do_not() {
    let mut sim = Sim::new(3);
    sim.elect(1);
    sim.hold_disk.insert(1);
    sim.hold_disk.insert(2);
    let rx = sim.propose(1, b"x");
    sim.cycle();
    // The leader sent its appends although its own write is not durable.
    assert!(sim
        .net
        .iter()
        .any(|m| m.from == 1 && m.msg_type == MessageType::MsgAppend));
    sim.deliver();
    sim.cycle();
    // Node 2 has not persisted: it must not acknowledge; node 3 has.
    assert!(!sim
        .net
        .iter()
        .any(|m| m.from == 2 && m.msg_type == MessageType::MsgAppendResponse));
    assert!(sim
        .net
        .iter()
        .any(|m| m.from == 3 && m.msg_type == MessageType::MsgAppendResponse));
    sim.deliver();
    sim.cycle();
    // Leader (not durable) + node 3 (durable) is a quorum of acks only if
    // the leader counts itself — it must not yet.
    assert!(
        rx.try_recv().is_err(),
        "committed before the leader's write was durable"
    );
    let held = sim.held.remove(&1).unwrap();
    for t in &held {
        Sim::persist(sim.nodes.get_mut(&1).unwrap(), t, &mut sim.net);
    }
    sim.hold_disk.remove(&1);
    sim.settle();
    assert!(rx.try_recv().unwrap().is_ok());
    // Node 2 finally persists and acknowledges.
    sim.hold_disk.remove(&2);
    for t in sim.held.remove(&2).unwrap() {
        Sim::persist(sim.nodes.get_mut(&2).unwrap(), &t, &mut sim.net);
    }
    sim.heartbeat();
    assert_eq!(sim.applied[&2], sim.applied[&1]);
}

#[test]
fn an_overwritten_proposal_completes_stale() {
    let mut sim = Sim::new(3);
    sim.elect(1);
    sim.cut.insert(1);
    let rx = sim.propose(1, b"lost");
    sim.settle();
    assert!(rx.try_recv().is_err());
    // Without heartbeats from 1, one of the others times out and wins.
    let mut new_leader = None;
    for _ in 0..100 {
        sim.tick_all();
        sim.settle();
        new_leader = [2, 3].into_iter().find(|id| sim.nodes[id].is_leader());
        if new_leader.is_some() {
            break;
        }
    }
    let new_leader = new_leader.expect("2 or 3 must take over");
    let rx2 = sim.propose(new_leader, b"won");
    sim.settle();
    assert!(rx2.try_recv().unwrap().is_ok());
    sim.cut.clear();
    for _ in 0..5 {
        sim.tick_all();
        sim.settle();
    }
    match rx.try_recv().unwrap() {
        Err(Error::Stale { .. }) => {}
        other => panic!("expected Stale, got {other:?}"),
    }
    assert!(sim.applied[&1].iter().all(|(_, d)| d != b"lost"));
    assert_eq!(sim.applied[&1], sim.applied[&new_leader]);
}

#[test]
fn reads_need_a_quorum_unless_stale_and_time_out_otherwise() {
    let mut sim = Sim::new(3);
    sim.elect(1);
    let w = sim.propose(1, b"x");
    sim.settle();
    let index = w.try_recv().unwrap().unwrap();
    let r = sim.read(1, ReadConsistency::Linearizable);
    sim.settle();
    assert!(r.try_recv().unwrap().unwrap() >= index);
    let r = sim.read(1, ReadConsistency::Lease);
    assert!(
        r.try_recv().unwrap().unwrap() >= index,
        "lease read needs no round"
    );
    // An isolated leader cannot confirm a linearizable read.
    sim.cut.insert(1);
    let r = sim.read(1, ReadConsistency::Linearizable);
    sim.settle();
    assert!(r.try_recv().is_err());
    for _ in 0..600 {
        sim.tick_all();
        sim.settle();
        if !r.is_empty() {
            break;
        }
    }
    match r.try_recv().unwrap() {
        Err(Error::NotLeader { .. } | Error::Timeout(_)) => {}
        other => panic!("an isolated leader served a read: {other:?}"),
    }
}

#[test]
fn a_leader_that_started_a_transfer_serves_no_lease_reads_for_the_rest_of_its_term() {
    // Found by the engine simulator (seed 929701): a transfer's
    // MsgTimeoutNow let the target win a forced election while the old
    // leader, its transfer aborted, still answered lease reads.
    let mut sim = Sim::new(3);
    sim.elect(1);
    sim.write_committed(1, 1, 8);
    sim.heartbeat();
    let r = sim.read(1, ReadConsistency::Lease);
    assert!(r.try_recv().unwrap().is_ok(), "a lease read needs no round");
    // The target is up to date, so MsgTimeoutNow leaves at once; it is lost.
    sim.cut.insert(2);
    sim.nodes.get_mut(&1).unwrap().transfer_leader(2).unwrap();
    sim.settle();
    // An election timeout later the transfer is aborted; node 3 keeps
    // node 1's quorum, so it still leads the same term.
    let term = sim.nodes[&1].status().term;
    for _ in 0..12 {
        sim.tick_all();
        sim.settle();
    }
    assert!(sim.nodes[&1].is_leader());
    assert_eq!(sim.nodes[&1].status().term, term);
    // A lease read is no longer answered on the spot: it takes a round.
    let r = sim.read(1, ReadConsistency::Lease);
    assert!(r.try_recv().is_err(), "answered from a void lease");
    sim.settle();
    assert!(
        r.try_recv().unwrap().is_ok(),
        "answered after a quorum round"
    );
}

#[test]
fn shutdown_completes_everything_in_flight() {
    let mut sim = Sim::new(3);
    sim.elect(1);
    sim.cut.insert(1);
    let w = sim.propose(1, b"x");
    let r = sim.read(1, ReadConsistency::Linearizable);
    sim.settle();
    sim.nodes.get_mut(&1).unwrap().shutdown();
    assert!(matches!(w.try_recv().unwrap(), Err(Error::ShuttingDown)));
    assert!(matches!(r.try_recv().unwrap(), Err(Error::ShuttingDown)));
}

/// A vote request from `from` at a term well above the current one.
fn vote_from(from: u64, to: u64, term: u64) -> Message {
    Message {
        msg_type: MessageType::MsgRequestVote,
        from,
        to,
        term,
        log_term: term,
        index: 1_000,
        ..Message::default()
    }
}

#[test]
fn messages_from_a_removed_replica_are_dropped_and_counted() {
    let mut sim = Sim::new(3);
    sim.elect(1);
    // Replica 2 applies the removal of 3.
    let remove_3 = conf_change_v2(ConfChange {
        change_type: ConfChangeType::RemoveNode,
        node_id: 3,
        context: Vec::new(),
    });
    let node = sim.nodes.get_mut(&2).unwrap();
    let applied = node.status().applied;
    node.on_applied(applied, &[remove_3]);
    let term = sim.nodes[&2].status().term;
    let before = sim.nodes[&2].status();
    // The removed replica campaigning at a higher term must not disturb it.
    let vote = vote_from(3, 2, term + 5);
    sim.nodes.get_mut(&2).unwrap().step(Envelope::raft(3, vote));
    sim.settle();
    let after = sim.nodes[&2].status();
    assert_eq!(
        after.counters.dropped_from_removed,
        before.counters.dropped_from_removed + 1
    );
    assert_eq!(after.term, before.term, "a removed replica moved the term");
    assert_eq!(after.leader, Some(1));
}

/// A replica whose configuration does not hold the leader (it restarted
/// from, or installed, an older state) must still take the leader's
/// traffic: the leader's appends are how it learns the newer
/// configuration. Dropping messages from every non-member instead left a
/// cluster without a leader after voters were replaced one by one (a
/// joiner installed a snapshot older than the replicas leading it).
#[test]
fn a_replica_whose_configuration_lacks_the_leader_follows_it() {
    let mut sim = Sim::new(3);
    sim.cut.insert(3);
    sim.elect(1);
    sim.write_committed(1, 3, 16);
    // Replica 3 comes up, empty, with a configuration of 2, 3 and 4 only.
    let stale = MemStorage::new_with_conf_state(ConfState::from_voters([2, 3, 4]));
    sim.nodes
        .insert(3, NodeCore::new(&node_config(3), stale, 0, 999).unwrap());
    sim.cut.remove(&3);
    sim.write_committed(1, 2, 16);
    for _ in 0..5 {
        sim.heartbeat();
    }
    let st = sim.nodes[&3].status();
    assert_eq!(st.counters.dropped_from_removed, 0);
    assert_eq!(st.leader, Some(1), "{st:?}");
    let leader_commit = sim.nodes[&1].status().commit;
    assert_eq!(st.commit, leader_commit, "it caught up with the leader");
}

/// An append from leader 1 in term 1 after `(index, log_term)`.
fn append_msg(index: u64, log_term: u64, entries: &[u64], commit: u64) -> Message {
    Message {
        msg_type: MessageType::MsgAppend,
        from: 1,
        to: 2,
        term: 1,
        index,
        log_term,
        commit,
        entries: entries
            .iter()
            .map(|&i| tandem_raft::Entry {
                index: i,
                term: 1,
                data: vec![i as u8].into(),
                ..tandem_raft::Entry::default()
            })
            .collect(),
        ..Message::default()
    }
}

fn acks(msgs: &[Message]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.msg_type == MessageType::MsgAppendResponse && !m.reject)
        .map(|m| m.index)
        .collect()
}

#[test]
fn a_commit_only_hard_state_is_lazy_and_releases_nothing_early() {
    let mut sim = Sim::new(3);
    let now = sim.now;
    let f = sim.nodes.get_mut(&2).unwrap();
    // Entries 1..=2 arrive; their write is in flight (not reported).
    f.step(Envelope::raft(1, append_msg(0, 0, &[1, 2], 0)));
    let fx = f.poll(now);
    let a = fx
        .persist
        .into_iter()
        .next()
        .expect("a task for the entries");
    assert!(!a.lazy, "entries (and a new term) must be synced");
    assert!(acks(&fx.send).is_empty(), "the ack waits for durability");
    // It rides the task, for the log writer to send once durable.
    assert_eq!(acks(&a.messages), vec![2]);
    // The same entries again, now with the commit index: only the commit
    // index changes, which needs no sync...
    f.step(Envelope::raft(1, append_msg(0, 0, &[1, 2], 2)));
    let fx = f.poll(now);
    assert_eq!(fx.persist.len(), 1);
    let b = &fx.persist[0];
    assert!(b.lazy, "a commit-only hard state is lazy: {b:?}");
    assert!(b.entries.is_empty() && b.snapshot.is_none());
    assert_eq!(b.hard_state.map(|hs| hs.commit), Some(2));
    assert!(b.messages.is_empty(), "nothing rides a lazy task");
    // ...but its ack promises entries 1..=2, whose write is still in
    // flight: it must wait for that write, not for the lazy one.
    assert!(
        acks(&fx.send).is_empty(),
        "acked before durable: {:?}",
        fx.send
    );
    assert!(fx.apply.is_empty(), "nothing applies before it is durable");
    let sent_before = f.counters().messages_sent;
    let mut wire = Vec::new();
    Sim::persist(f, &a, &mut wire);
    let fx = f.poll(now);
    // `a`'s ack left with the task; the core releases the lazy Ready's ack
    // now, and never `a`'s again.
    assert_eq!(acks(&wire), vec![2]);
    assert_eq!(acks(&fx.send), vec![2]);
    assert_eq!(fx.apply.len(), 1, "entries 1..=2 apply once durable");
    assert_eq!(
        f.counters().messages_sent,
        sent_before + fx.send.len() as u64,
        "a riding message is counted once, when it is put in its task"
    );
    // With nothing in flight, a lazy Ready's messages leave at once.
    let mut hb = append_msg(0, 0, &[], 0);
    hb.msg_type = MessageType::MsgHeartbeat;
    hb.commit = 2;
    f.step(Envelope::raft(1, hb));
    let fx = f.poll(now);
    assert!(fx.persist.iter().all(|t| t.lazy));
    assert!(fx
        .send
        .iter()
        .any(|m| m.msg_type == MessageType::MsgHeartbeatResponse));
    assert!(f.counters().persist_tasks_lazy >= 1);
}

#[test]
fn a_leader_writes_each_commit_lazily() {
    let mut sim = Sim::new(3);
    sim.elect(1);
    let before = sim.nodes[&1].counters();
    sim.write_committed(1, 5, 1);
    let c = sim.nodes[&1].counters();
    let (tasks, lazy) = (
        c.persist_tasks - before.persist_tasks,
        c.persist_tasks_lazy - before.persist_tasks_lazy,
    );
    // One synced task for each write's entry, one lazy one for its commit.
    assert_eq!((tasks, lazy), (10, 5), "{c:?}");
}

/// A leader with follower 3 cut off since before the election (so it stays
/// probing at the election's index) and 40 entries of ~1 KB applied:
/// the first index of the compaction the leader asks for.
fn compaction_with_a_lagging_follower(lag_entries_max: u64, lag_bytes_max: u64) -> u64 {
    let mut sim = Sim::with_config(3, |c| {
        c.snapshot.compact_log_entries = 8;
        c.snapshot.lag_entries_max = lag_entries_max;
        c.snapshot.lag_bytes_max = lag_bytes_max;
    });
    sim.cut.insert(3);
    sim.elect(1);
    sim.write_committed(1, 40, 1000);
    sim.heartbeat();
    let applied = sim.applied[&1].last().unwrap().0;
    let first = sim.compacted.get(&1).copied().unwrap_or(1);
    assert!(first <= applied + 1, "compacted past the durable index");
    first
}

#[test]
fn a_lagging_follower_holds_compaction_back_within_both_bounds_only() {
    // Within both bounds: the leader keeps everything the follower needs
    // (it probes from the election's index, so nothing is compacted).
    assert_eq!(compaction_with_a_lagging_follower(1_000, 1 << 30), 1);
    // Past the byte bound (40 KB of entries after its index, 8 KiB
    // allowed): compacted as if the follower were not there; it will get a
    // snapshot.
    let by_bytes = compaction_with_a_lagging_follower(1_000, 8 << 10);
    assert!(by_bytes > 30, "not compacted past the follower: {by_bytes}");
    // Past the entry bound: the same, as before.
    let by_entries = compaction_with_a_lagging_follower(4, 1 << 30);
    assert!(
        by_entries > 30,
        "not compacted past the follower: {by_entries}"
    );
}

#[test]
fn compaction_held_back_by_a_slow_flush_catches_up_once_writes_stop() {
    // Compaction by bytes only. The leader's flush is slow: the compaction
    // it allows stops where the flush started, far behind the last entry.
    // After the writes stop, the log must still be compacted close to its
    // end: what that compaction kept still counts towards the next one.
    let mut sim = Sim::with_config(3, |c| {
        c.snapshot.compact_log_entries = 1_000_000;
        c.snapshot.compact_log_bytes = 4096;
    });
    sim.elect(1);
    sim.slow_flush.insert(1);
    sim.write_committed(1, 30, 200);
    let flushed = *sim.flushing.get(&1).expect("a flush was asked for");
    sim.write_committed(1, 40, 200);
    let last = sim.applied[&1].last().unwrap().0;
    assert!(flushed + 30 < last);
    sim.finish_flush(1);
    let first = sim.compacted[&1];
    assert!(first <= flushed + 1, "compacted past the durable index");
    // No more writes. The next flush (asked for at once: the bytes written
    // during the first one) is quick, and time passes.
    sim.slow_flush.remove(&1);
    sim.finish_flush(1);
    for _ in 0..5 {
        sim.heartbeat();
    }
    let first = sim.compacted[&1];
    // Within one compaction threshold (about 20 entries here) of the end.
    assert!(
        first + 25 > last,
        "the log stayed uncompacted from {first} to {last}"
    );
}

#[test]
fn a_replicating_follower_keeps_its_unacknowledged_entries() {
    // Follower 3 replicates, then its traffic is dropped: the leader keeps
    // sending (its next index runs ahead), but nothing past what it
    // acknowledged may be compacted while it is within the bounds.
    let mut sim = Sim::with_config(3, |c| c.snapshot.compact_log_entries = 8);
    sim.elect(1);
    sim.write_committed(1, 3, 100);
    // A heartbeat round tells follower 3 the commit index: it has applied
    // exactly what it acknowledged.
    sim.heartbeat();
    let acked = sim.applied[&3].last().unwrap().0;
    sim.cut.insert(3);
    sim.write_committed(1, 40, 100);
    sim.heartbeat();
    let first = sim.compacted.get(&1).copied().unwrap_or(1);
    assert!(
        first <= acked + 1,
        "compacted to {first}, past what follower 3 acknowledged ({acked})"
    );
}

/// Three replicas with small lag bounds: 4 entries, 8 KiB (the tests write
/// entries of 1 000 bytes), compacting every 8 entries.
fn small_lag_bounds() -> Sim {
    Sim::with_config(3, |c| {
        c.snapshot.compact_log_entries = 8;
        c.snapshot.lag_entries_max = 4;
        c.snapshot.lag_bytes_max = 8 << 10;
    })
}

/// Put the leader's progress of `peer` in the snapshot state (a snapshot at
/// `index` being sent), or back to probing (the install finished).
fn set_progress(sim: &mut Sim, leader: u64, peer: u64, snapshot: Option<u64>) {
    let raw = sim.nodes.get_mut(&leader).unwrap().raw_mut();
    let pr = raw.raft.mut_prs().get_mut(peer).unwrap();
    match snapshot {
        Some(index) => pr.become_snapshot(index),
        None => pr.become_probe(),
    }
}

#[test]
fn a_follower_back_from_a_snapshot_keeps_what_followed_it_within_twice_the_byte_bound() {
    let mut sim = small_lag_bounds();
    sim.cut.insert(3);
    sim.elect(1);
    sim.write_committed(1, 10, 1000);
    // Follower 3 is sent a snapshot of everything applied so far.
    let snapshot = sim.applied[&1].last().unwrap().0;
    set_progress(&mut sim, 1, 3, Some(snapshot));
    // The transfer takes a while; the leader writes past both bounds.
    sim.write_committed(1, 12, 1000);
    let first = sim.compacted[&1];
    assert!(
        first <= snapshot + 1,
        "compacted to {first} during the transfer of a snapshot at {snapshot}"
    );
    // The install is done: the follower will go on from the snapshot. More
    // than 4 entries and 8 KiB follow it, but less than 16 KiB: kept, or it
    // would need another snapshot at once.
    set_progress(&mut sim, 1, 3, None);
    sim.write_committed(1, 2, 1000);
    let first = sim.compacted[&1];
    assert!(
        first <= snapshot + 1,
        "compacted to {first}, past a follower replaying from its snapshot at {snapshot}"
    );
    // It cannot keep up (its traffic is still dropped): once more than
    // twice the byte bound follows it, the log is compacted past it.
    sim.write_committed(1, 12, 1000);
    let first = sim.compacted[&1];
    assert!(
        first > snapshot + 10,
        "compacted to {first} only, with 26 KB after the follower's snapshot at {snapshot}"
    );
}

#[test]
fn a_follower_back_from_a_snapshot_that_catches_up_is_bounded_as_before() {
    let mut sim = small_lag_bounds();
    sim.elect(1);
    sim.write_committed(1, 10, 1000);
    sim.heartbeat();
    // Follower 3 holds everything up to `snapshot`, as if it had installed
    // a snapshot there: the leader's progress says it is being sent one.
    let snapshot = sim.applied[&1].last().unwrap().0;
    assert_eq!(sim.applied[&3].last().unwrap().0, snapshot);
    sim.cut.insert(3);
    set_progress(&mut sim, 1, 3, Some(snapshot));
    sim.write_committed(1, 12, 1000);
    set_progress(&mut sim, 1, 3, None);
    // Back in touch, it replays from the snapshot what the leader kept.
    sim.cut.remove(&3);
    sim.write_committed(1, 2, 1000);
    sim.heartbeat();
    let last = sim.applied[&1].last().unwrap().0;
    assert_eq!(
        sim.applied[&3].last().unwrap().0,
        last,
        "follower 3 caught up"
    );
    // Caught up, it lags again: now the usual bounds apply. About 12 KB
    // behind (past the 8 KiB bound, within twice it), it no longer holds
    // compaction back.
    sim.cut.insert(3);
    sim.write_committed(1, 12, 1000);
    let first = sim.compacted[&1];
    assert!(
        first > last + 1,
        "the grace outlived the catch-up: compacted to {first}, follower at {last}"
    );
}
