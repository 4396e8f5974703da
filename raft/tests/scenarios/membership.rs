//! Membership changes (§6 of the paper, chapter 4 of the thesis): single
//! step, joint consensus, learners, removal of the leader.

use super::*;
use tandem_raft::confchange::apply_conf_change_to;
use tandem_raft::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Error,
};

fn cc(t: ConfChangeType, id: u64) -> ConfChange {
    ConfChange {
        change_type: t,
        node_id: id,
        context: vec![],
    }
}

fn single(t: ConfChangeType, id: u64) -> ConfChangeSingle {
    ConfChangeSingle {
        change_type: t,
        node_id: id,
    }
}

/// Add an empty node `id` as a voter through the leader `l`.
fn add_node(net: &mut Network, l: u64, id: u64, t: ConfChangeType) {
    net.add_empty_node(id, |_| {});
    net.propose_conf_change(l, cc(t, id)).unwrap();
    net.stabilize();
    tick_n(net, 5);
}

#[test]
fn add_voter_catches_up_and_counts() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"before");
    add_node(&mut net, 1, 4, ConfChangeType::AddNode);
    assert!(net.raft(1).prs().is_voter(4));
    assert_eq!(net.applied_data(4), vec![b"before".to_vec()]);
    // Now four voters: two nodes down block commit.
    net.isolate(2);
    net.isolate(3);
    net.propose(1, b"blocked".to_vec()).unwrap();
    net.stabilize();
    assert!(!net.applied_data(1).contains(&b"blocked".to_vec()));
    net.heal();
    tick_n(&mut net, 3);
    assert!(net.applied_data(4).contains(&b"blocked".to_vec()));
}

#[test]
fn remove_follower_shrinks_quorum() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.propose_conf_change(1, cc(ConfChangeType::RemoveNode, 3))
        .unwrap();
    net.stabilize();
    assert_eq!(net.raft(1).prs().conf_state().voters, vec![1, 2]);
    assert!(net.node(3).removed);
    // Two voters: losing 3 does not matter any more.
    net.isolate(3);
    propose(&mut net, 1, b"x");
    assert_eq!(net.applied_data(2), vec![b"x".to_vec()]);
}

#[test]
fn conf_change_takes_effect_on_apply_not_append() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.ignore(MessageType::MsgAppendResponse);
    net.propose_conf_change(1, cc(ConfChangeType::RemoveNode, 3))
        .unwrap();
    net.stabilize();
    assert_eq!(
        net.raft(1).prs().conf_state().voters,
        vec![1, 2, 3],
        "appended but not applied: old configuration in force"
    );
    net.heal();
    tick_n(&mut net, 3);
    assert_eq!(net.raft(1).prs().conf_state().voters, vec![1, 2]);
}

#[test]
fn only_one_conf_change_pending_at_a_time() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.ignore(MessageType::MsgAppendResponse);
    net.propose_conf_change(1, cc(ConfChangeType::AddLearnerNode, 4))
        .unwrap();
    assert_eq!(
        net.propose_conf_change(1, cc(ConfChangeType::AddLearnerNode, 5)),
        Err(Error::ProposalDropped)
    );
    net.heal();
    tick_n(&mut net, 3);
    assert!(net
        .propose_conf_change(1, cc(ConfChangeType::AddLearnerNode, 5))
        .is_ok());
}

#[test]
fn learner_receives_log_but_does_not_vote_or_count() {
    let mut net = Network::new_with_learners(&[1, 2], &[3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"x");
    assert_eq!(net.applied_data(3), vec![b"x".to_vec()]);
    net.isolate(2);
    net.propose(1, b"y".to_vec()).unwrap();
    net.stabilize();
    assert!(
        !net.applied_data(1).contains(&b"y".to_vec()),
        "a learner's ack does not make a quorum"
    );
}

#[test]
fn promote_learner_to_voter() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    add_node(&mut net, 1, 4, ConfChangeType::AddLearnerNode);
    assert!(net.raft(1).prs().is_learner(4));
    net.propose_conf_change(1, cc(ConfChangeType::AddNode, 4))
        .unwrap();
    net.stabilize();
    assert!(net.raft(1).prs().is_voter(4));
    assert!(net.raft(4).prs().is_voter(4));
    assert!(net.raft(4).promotable());
}

#[test]
fn joint_consensus_with_auto_leave() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.add_empty_node(4, |_| {});
    net.add_empty_node(5, |_| {});
    let v2 = ConfChangeV2 {
        transition: ConfChangeTransition::Auto,
        changes: vec![
            single(ConfChangeType::AddNode, 4),
            single(ConfChangeType::AddNode, 5),
            single(ConfChangeType::RemoveNode, 3),
        ],
        context: vec![],
    };
    net.propose_conf_change(1, v2).unwrap();
    net.stabilize();
    tick_n(&mut net, 5);
    let cs = net.raft(1).prs().conf_state();
    assert_eq!(cs.voters, vec![1, 2, 4, 5]);
    assert!(
        cs.voters_outgoing.is_empty(),
        "left the joint state automatically"
    );
    propose(&mut net, 1, b"after");
    assert!(net.applied_data(5).contains(&b"after".to_vec()));
}

#[test]
fn joint_consensus_explicit_leave() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.add_empty_node(4, |_| {});
    let v2 = ConfChangeV2 {
        transition: ConfChangeTransition::Explicit,
        changes: vec![
            single(ConfChangeType::AddNode, 4),
            single(ConfChangeType::RemoveNode, 2),
        ],
        context: vec![],
    };
    net.propose_conf_change(1, v2).unwrap();
    net.stabilize();
    tick_n(&mut net, 5);
    let cs = net.raft(1).prs().conf_state();
    assert_eq!(cs.voters_outgoing, vec![1, 2, 3], "stays joint until told");
    // While joint, both majorities are needed: {1,3,4} and {1,2,3}. With
    // 2 and 3 away, {1,4} is a majority of the new voters but not of the old.
    net.isolate(2);
    net.isolate(3);
    net.propose(1, b"needs both".to_vec()).unwrap();
    net.stabilize();
    assert!(!net.applied_data(1).contains(&b"needs both".to_vec()));
    net.heal();
    tick_n(&mut net, 3);
    net.propose_conf_change(1, ConfChangeV2::default()).unwrap();
    net.stabilize();
    let cs = net.raft(1).prs().conf_state();
    assert_eq!(cs.voters, vec![1, 3, 4]);
    assert!(cs.voters_outgoing.is_empty());
}

#[test]
fn invalid_conf_changes_are_rejected_at_proposal() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    // Leaving a joint state that does not exist.
    assert!(matches!(
        net.propose_conf_change(1, ConfChangeV2::default()),
        Err(Error::ConfChangeError(_))
    ));
    // Two voter changes without joint consensus (Auto with one change is
    // simple; build a simple change that changes two voters by hand).
    let two = ConfChangeV2 {
        transition: ConfChangeTransition::Auto,
        changes: vec![single(ConfChangeType::RemoveNode, 1)],
        context: vec![],
    };
    assert!(
        net.propose_conf_change(1, two).is_ok(),
        "removing one voter is fine"
    );
}

#[test]
fn removing_every_voter_is_rejected() {
    let mut net = cluster(&[1], |_| {});
    net.campaign(1);
    net.stabilize();
    assert!(matches!(
        net.propose_conf_change(1, cc(ConfChangeType::RemoveNode, 1)),
        Err(Error::ConfChangeError(_))
    ));
}

#[test]
fn removed_leader_hands_over_leadership() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"x");
    net.propose_conf_change(1, cc(ConfChangeType::RemoveNode, 1))
        .unwrap();
    net.stabilize();
    tick_n(&mut net, 30);
    let l = net.leader().expect("a leader");
    assert_ne!(l, 1, "the removed leader handed over");
    assert_eq!(net.raft(l).prs().conf_state().voters, vec![2, 3]);
    propose(&mut net, l, b"y");
    assert!(net.applied_data(2).contains(&b"y".to_vec()));
}

#[test]
fn removed_leader_can_step_down_at_once() {
    let mut net = cluster(&[1, 2, 3], |c| c.step_down_on_removal = true);
    elect(&mut net, 1);
    net.propose_conf_change(1, cc(ConfChangeType::RemoveNode, 1))
        .unwrap();
    net.stabilize();
    assert_eq!(net.raft(1).state, StateRole::Follower);
    tick_n(&mut net, 40);
    let l = net.leader().expect("a new leader");
    assert_ne!(l, 1);
}

#[test]
fn removed_node_with_pre_vote_cannot_disrupt() {
    let mut net = cluster(&[1, 2, 3], |c| c.pre_vote = true);
    elect(&mut net, 1);
    // Node 3 is removed but never learns it (cut off before the change).
    net.isolate(3);
    net.propose_conf_change(1, cc(ConfChangeType::RemoveNode, 3))
        .unwrap();
    net.stabilize();
    assert_eq!(net.raft(1).prs().conf_state().voters, vec![1, 2]);
    net.heal();
    tick_n(&mut net, 100);
    assert_eq!(net.leader(), Some(1));
    assert_eq!(
        net.raft(1).term,
        1,
        "the removed node never bumped the term"
    );
}

#[test]
fn apply_conf_change_to_matches_raw_node() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let before = net.raft(2).prs().conf_state();
    let v2 = ConfChangeV2 {
        transition: ConfChangeTransition::Implicit,
        changes: vec![
            single(ConfChangeType::AddLearnerNode, 4),
            single(ConfChangeType::AddLearnerNode, 3),
        ],
        context: vec![],
    };
    let pure = apply_conf_change_to(&before, &v2).unwrap();
    let real = net.raw(2).apply_conf_change(&v2).unwrap();
    assert_eq!(pure, real);
    let leave = ConfChangeV2::default();
    assert_eq!(
        apply_conf_change_to(&real, &leave).unwrap(),
        net.raw(2).apply_conf_change(&leave).unwrap()
    );
    assert_eq!(
        net.raft(2).prs().conf_state(),
        ConfState {
            voters: vec![1, 2],
            learners: vec![3, 4],
            ..ConfState::default()
        }
    );
}

#[test]
fn invalid_apply_leaves_configuration_unchanged() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    let before = net.raft(1).prs().conf_state();
    assert!(net
        .raw(1)
        .apply_conf_change(&ConfChangeV2::default())
        .is_err());
    assert_eq!(net.raft(1).prs().conf_state(), before);
}

#[test]
fn demoting_voter_to_learner() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.propose_conf_change(1, cc(ConfChangeType::AddLearnerNode, 3))
        .unwrap();
    net.stabilize();
    assert!(net.raft(1).prs().is_learner(3));
    assert!(!net.raft(3).promotable());
    propose(&mut net, 1, b"x");
    assert_eq!(net.applied_data(3), vec![b"x".to_vec()]);
}

#[test]
fn campaign_refused_with_unapplied_conf_change() {
    use tandem_raft::{types::encode, Entry, EntryType, HardState, MemStorage, RawNode};
    // A node restarts with a committed but unapplied conf change.
    let s = MemStorage::new_with_conf_state(ConfState::from_voters([1, 2, 3]));
    s.wl()
        .append(&[Entry {
            entry_type: EntryType::EntryConfChange,
            index: 1,
            term: 1,
            data: encode(&cc(ConfChangeType::AddLearnerNode, 4)).into(),
            ..Entry::default()
        }])
        .unwrap();
    s.wl().set_hard_state(HardState {
        term: 1,
        vote: 0,
        commit: 1,
    });
    let mut n = RawNode::new(&Config::new(2), s).unwrap();
    n.campaign().unwrap();
    assert_eq!(
        n.raft.term, 1,
        "no campaign while a conf change is unapplied"
    );
    assert_eq!(n.raft.state, StateRole::Follower);
    // Once applied, it may campaign.
    let mut rd = n.ready();
    let ents = rd.take_committed_entries();
    assert_eq!(ents.len(), 1);
    n.apply_conf_change(&cc(ConfChangeType::AddLearnerNode, 4))
        .unwrap();
    n.advance(rd);
    n.campaign().unwrap();
    assert_eq!(n.raft.term, 2);
    assert_eq!(n.raft.state, StateRole::Candidate);
}
