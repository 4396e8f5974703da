//! Leadership transfer (thesis §3.10): MsgTransferLeader / MsgTimeoutNow.

use super::*;
use tandem_raft::Error;

#[test]
fn transfer_to_up_to_date_follower() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"x");
    net.transfer_leader(1, 2);
    net.stabilize();
    assert_eq!(net.leader(), Some(2));
    assert_eq!(net.raft(1).state, StateRole::Follower);
    assert_eq!(net.raft(2).term, 2);
    net.check().unwrap();
}

#[test]
fn transfer_works_with_pre_vote_and_check_quorum() {
    let mut net = cluster(&[1, 2, 3], |c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    elect(&mut net, 1);
    net.transfer_leader(1, 3);
    net.stabilize();
    assert_eq!(net.leader(), Some(3), "the lease does not block a transfer");
}

#[test]
fn transfer_to_lagging_follower_catches_it_up_first() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.isolate(3);
    for i in 0..5u8 {
        propose(&mut net, 1, &[i]);
    }
    net.heal();
    net.transfer_leader(1, 3);
    assert_eq!(net.raft(1).lead_transferee, Some(3));
    net.stabilize();
    assert_eq!(net.leader(), Some(3));
    assert_eq!(net.applied_data(3).len(), 5);
}

#[test]
fn proposals_dropped_during_transfer() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.isolate(3);
    net.transfer_leader(1, 3);
    assert_eq!(net.propose(1, b"x".to_vec()), Err(Error::ProposalDropped));
}

#[test]
fn transfer_aborts_after_election_timeout() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.crash(3);
    net.transfer_leader(1, 3);
    assert_eq!(net.raft(1).lead_transferee, Some(3));
    for _ in 0..10 {
        net.tick(1);
    }
    net.stabilize();
    assert_eq!(net.raft(1).lead_transferee, None);
    assert_eq!(net.raft(1).state, StateRole::Leader);
    assert!(net.propose(1, b"ok again".to_vec()).is_ok());
}

#[test]
fn transfer_to_self_is_ignored() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.transfer_leader(1, 1);
    assert_eq!(net.raft(1).lead_transferee, None);
    assert_eq!(net.leader(), Some(1));
}

#[test]
fn transfer_to_non_member_or_learner_is_ignored() {
    let mut net = Network::new_with_learners(&[1, 2], &[3], |_| {});
    elect(&mut net, 1);
    net.transfer_leader(1, 3);
    assert_eq!(net.raft(1).lead_transferee, None);
    net.transfer_leader(1, 9);
    assert_eq!(net.raft(1).lead_transferee, None);
    net.stabilize();
    assert_eq!(net.leader(), Some(1));
}

#[test]
fn follower_forwards_transfer_request() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.transfer_leader(2, 3);
    net.stabilize();
    assert_eq!(net.leader(), Some(3));
}

#[test]
fn second_transfer_to_same_node_is_not_restarted() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.crash(2);
    net.transfer_leader(1, 2);
    for _ in 0..5 {
        net.tick(1);
    }
    let elapsed = net.raft(1).election_elapsed();
    net.transfer_leader(1, 2);
    assert_eq!(net.raft(1).election_elapsed(), elapsed, "timer not reset");
    // A transfer to another node replaces it.
    net.transfer_leader(1, 3);
    net.stabilize();
    assert_eq!(net.leader(), Some(3));
}

#[test]
fn timeout_now_to_non_promotable_node_does_nothing() {
    let mut net = Network::new_with_learners(&[1, 2], &[3], |_| {});
    elect(&mut net, 1);
    let m = msg(MessageType::MsgTimeoutNow, 1, 3, 1);
    net.raw(3).step(m).unwrap();
    assert_eq!(net.raft(3).state, StateRole::Follower);
    assert_eq!(net.raft(3).term, 1);
}
