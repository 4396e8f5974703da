//! The Ready contract: what may leave before and after persisting, Ready
//! numbering, asynchronous persistence, crashes losing unpersisted state.

use super::*;
use tandem_raft::{ConfState, MemStorage, RawNode, Storage};

fn single(id: u64) -> RawNode<MemStorage> {
    let s = MemStorage::new_with_conf_state(ConfState::from_voters([1, 2, 3]));
    RawNode::new(&Config::new(id), s).unwrap()
}

#[test]
fn vote_response_waits_for_persistence() {
    let mut n = single(2);
    let mut req = msg(MessageType::MsgRequestVote, 1, 2, 1);
    req.index = 0;
    req.log_term = 0;
    n.step(req).unwrap();
    let rd = n.ready();
    assert!(
        rd.messages().is_empty(),
        "a vote must not leave before it is durable"
    );
    assert_eq!(rd.persisted_messages().len(), 1);
    assert_eq!(
        rd.persisted_messages()[0].msg_type,
        MessageType::MsgRequestVoteResponse
    );
    assert_eq!(rd.hs().unwrap().vote, 1);
    assert!(rd.must_sync());
}

#[test]
fn candidate_vote_requests_wait_for_its_own_vote() {
    let mut n = single(1);
    n.campaign().unwrap();
    let rd = n.ready();
    assert!(rd.messages().is_empty());
    assert_eq!(rd.persisted_messages().len(), 2);
    assert_eq!(rd.hs().unwrap().term, 1);
    assert_eq!(rd.hs().unwrap().vote, 1);
}

#[test]
fn append_ack_waits_for_persistence() {
    let mut n = single(2);
    let mut app = msg(MessageType::MsgAppend, 1, 2, 1);
    app.entries = vec![tandem_raft::Entry {
        index: 1,
        term: 1,
        ..Default::default()
    }];
    n.step(app).unwrap();
    let rd = n.ready();
    assert_eq!(rd.entries().len(), 1);
    assert!(rd.messages().is_empty());
    let acks: Vec<_> = rd
        .persisted_messages()
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgAppendResponse)
        .collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].index, 1);
}

#[test]
fn leader_sends_appends_before_persisting_its_entries() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let raw = net.raw(1);
    raw.propose(vec![], b"x".to_vec()).unwrap();
    let rd = raw.ready();
    assert_eq!(rd.entries().len(), 1);
    let appends = rd
        .messages()
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgAppend)
        .count();
    assert_eq!(appends, 2, "sent at once, in parallel with the local write");
}

#[test]
fn leader_counts_itself_only_after_persisting() {
    let mut net = cluster(&[1], |_| {});
    net.campaign(1);
    net.stabilize();
    let raw = net.raw(1);
    raw.propose(vec![], b"x".to_vec()).unwrap();
    let rd = raw.ready();
    assert_eq!(rd.entries().len(), 1);
    assert_eq!(
        raw.raft.raft_log.committed, 1,
        "not committed before persisted"
    );
    let store = raw.store().clone();
    store.wl().append(rd.entries()).unwrap();
    let light = raw.advance(rd);
    assert_eq!(light.commit_index(), Some(2));
    assert_eq!(light.committed_entries().len(), 1);
    assert_eq!(light.committed_entries()[0].data, &b"x"[..]);
}

#[test]
fn ready_numbers_increase() {
    let mut n = single(1);
    n.campaign().unwrap();
    let a = n.ready();
    n.tick();
    let mut req = msg(MessageType::MsgRequestVoteResponse, 2, 1, 1);
    req.reject = false;
    n.step(req).unwrap();
    let b = n.ready();
    assert_eq!(a.number() + 1, b.number());
}

#[test]
fn has_ready_is_false_after_handling_everything() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    for id in [1, 2, 3] {
        assert!(!net.raw(id).has_ready(), "node {id}");
    }
    net.raw(1).propose(vec![], b"x".to_vec()).unwrap();
    assert!(net.raw(1).has_ready());
}

#[test]
fn async_persistence_commits_after_on_persist_ready() {
    let mut net = cluster(&[1], |_| {});
    net.node_mut(1).async_persist = true;
    net.campaign(1);
    // The election Ready is handed out but not persisted.
    assert_eq!(net.node(1).pending_writes(), 1);
    assert_eq!(committed(&net, 1), 0);
    net.persist(1);
    net.stabilize();
    assert_eq!(committed(&net, 1), 1);
    net.raw(1).propose(vec![], b"a".to_vec()).unwrap();
    net.process(1);
    net.raw(1).propose(vec![], b"b".to_vec()).unwrap();
    net.process(1);
    assert_eq!(net.node(1).pending_writes(), 2);
    net.persist(1);
    assert_eq!(committed(&net, 1), 2, "only the first write is durable");
    net.persist(1);
    assert_eq!(committed(&net, 1), 3);
    assert_eq!(net.applied_data(1), vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn async_follower_acks_only_after_persist() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.node_mut(2).async_persist = true;
    net.node_mut(3).async_persist = true;
    net.propose(1, b"x".to_vec()).unwrap();
    for _ in 0..10 {
        net.deliver_one();
    }
    assert_eq!(committed(&net, 1), 1, "no follower persisted yet");
    assert!(net.node(2).pending_writes() > 0);
    net.persist(2);
    for _ in 0..10 {
        net.deliver_one();
    }
    assert_eq!(committed(&net, 1), 2, "one follower ack plus the leader");
    net.stabilize();
    net.check().unwrap();
}

#[test]
fn crash_before_persist_loses_the_vote_but_nothing_was_promised() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    net.node_mut(2).async_persist = true;
    let mut req = msg(MessageType::MsgRequestVote, 1, 2, 1);
    req.index = 0;
    net.raw(2).step(req).unwrap();
    net.process(2);
    // The grant was not sent: it waits in the pending write.
    assert!(!net
        .queue()
        .iter()
        .any(|m| m.msg_type == MessageType::MsgRequestVoteResponse));
    net.crash(2);
    net.restart(2);
    assert_eq!(net.raft(2).vote, 0, "unpersisted vote is gone");
    assert_eq!(net.raft(2).term, 0);
}

#[test]
fn persisted_vote_survives_restart_and_blocks_second_vote() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    let mut req = msg(MessageType::MsgRequestVote, 1, 2, 1);
    req.index = 0;
    net.raw(2).step(req).unwrap();
    net.process(2);
    net.drain_queue();
    net.crash(2);
    net.restart(2);
    assert_eq!(net.raft(2).vote, 1);
    let req = msg(MessageType::MsgRequestVote, 3, 2, 1);
    net.raw(2).step(req).unwrap();
    net.process(2);
    let r = net.drain_queue();
    assert!(r.iter().all(|m| m.reject), "{r:?}");
}

#[test]
fn restart_recovers_log_and_commit() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    for i in 0..5u8 {
        propose(&mut net, 1, &[i]);
    }
    net.crash(2);
    net.restart(2);
    assert_eq!(last_index(&net, 2), 6);
    assert_eq!(committed(&net, 2), 6);
    assert_eq!(
        net.raft(2).raft_log.applied,
        6,
        "applied index from the state machine"
    );
    tick_n(&mut net, 5);
    propose(&mut net, 1, b"after");
    assert_eq!(net.applied_data(2).last().unwrap(), b"after");
}

#[test]
fn committed_entries_are_handed_out_once() {
    let mut net = cluster(&[1], |_| {});
    net.campaign(1);
    net.stabilize();
    let raw = net.raw(1);
    raw.propose(vec![], b"a".to_vec()).unwrap();
    let rd = raw.ready();
    let store = raw.store().clone();
    store.wl().append(rd.entries()).unwrap();
    let number = rd.number();
    raw.advance_append_async(rd);
    raw.on_persist_ready(number);
    let rd2 = raw.ready();
    assert_eq!(rd2.committed_entries().len(), 1);
    // Not applied yet, but not handed out again either.
    raw.advance_append_async(rd2);
    assert!(!raw.has_ready());
    raw.advance_apply_to(2);
    assert_eq!(raw.raft.raft_log.applied, 2);
}

#[test]
fn max_committed_size_per_ready_splits_application() {
    let one = tandem_raft::Entry {
        data: vec![0; 10].into(),
        ..Default::default()
    }
    .size_bytes();
    let mut net = cluster(&[1], |c| c.max_committed_size_per_ready = one * 2);
    net.campaign(1);
    net.stabilize();
    let raw = net.raw(1);
    for _ in 0..6 {
        raw.propose(vec![], vec![0; 10]).unwrap();
    }
    let rd = raw.ready();
    raw.store().wl().append(rd.entries()).unwrap();
    let mut light = raw.advance(rd);
    let mut batches = vec![light.take_committed_entries().len()];
    raw.advance_apply();
    while raw.has_ready() {
        let mut rd = raw.ready();
        batches.push(rd.take_committed_entries().len());
        let mut light = raw.advance(rd);
        batches.push(light.take_committed_entries().len());
        raw.advance_apply();
    }
    assert!(batches.iter().all(|&b| b <= 2), "{batches:?}");
    assert_eq!(batches.iter().sum::<usize>(), 6);
}

#[test]
fn storage_reflects_persisted_state() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"x");
    let s = net.node(3).storage.clone();
    assert_eq!(s.last_index().unwrap(), 2);
    let hs = s.rl().hard_state();
    assert_eq!((hs.term, hs.vote), (1, 1));
    assert_eq!(hs.commit, 2);
}
