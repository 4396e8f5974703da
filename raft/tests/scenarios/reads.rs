//! ReadIndex (§6.4 of the thesis) and lease-based reads.

use super::*;
use tandem_raft::ReadOnlyOption;

#[test]
fn read_index_on_leader_after_heartbeat_quorum() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"a");
    net.read_index(1, b"r1");
    assert!(
        net.node(1).read_states.is_empty(),
        "needs a heartbeat round"
    );
    net.stabilize();
    let rs = &net.node(1).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, 2);
    assert_eq!(rs[0].request_ctx, b"r1");
}

#[test]
fn read_index_from_follower_is_forwarded() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"a");
    net.read_index(2, b"f");
    net.stabilize();
    let rs = &net.node(2).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, 2);
    assert_eq!(rs[0].request_ctx, b"f");
    assert!(net.node(1).read_states.is_empty());
}

#[test]
fn read_index_without_quorum_never_completes() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.isolate(1);
    net.read_index(1, b"x");
    for _ in 0..5 {
        net.tick(1);
        net.stabilize();
    }
    assert!(net.node(1).read_states.is_empty());
    assert_eq!(net.raft(1).pending_read_count(), 1);
}

#[test]
fn new_leader_defers_reads_until_it_commits_in_its_term() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    // Node 2 becomes leader but its empty entry cannot commit yet.
    net.ignore(MessageType::MsgAppendResponse);
    net.campaign(2);
    net.stabilize();
    assert_eq!(net.raft(2).state, StateRole::Leader);
    net.read_index(2, b"r");
    net.stabilize();
    assert!(net.node(2).read_states.is_empty(), "deferred");
    net.heal();
    tick_n(&mut net, 3);
    let rs = &net.node(2).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, 2, "index of the new term's empty entry");
}

#[test]
fn lease_based_read_needs_no_round_trip() {
    let mut net = cluster(&[1, 2, 3], |c| {
        c.check_quorum = true;
        c.read_only_option = ReadOnlyOption::LeaseBased;
    });
    elect(&mut net, 1);
    net.isolate(1);
    net.read_index(1, b"lease");
    assert_eq!(net.node(1).read_states.len(), 1, "answered at once");
}

#[test]
fn single_node_read_is_immediate() {
    let mut net = cluster(&[1], |_| {});
    net.campaign(1);
    net.stabilize();
    net.read_index(1, b"solo");
    assert_eq!(net.node(1).read_states.len(), 1);
    assert_eq!(net.node(1).read_states[0].index, 1);
}

#[test]
fn reads_complete_in_order() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    for ctx in [b"a", b"b", b"c"] {
        net.raw(1).read_index(ctx.to_vec());
    }
    net.process(1);
    net.stabilize();
    let ctxs: Vec<Vec<u8>> = net
        .node(1)
        .read_states
        .iter()
        .map(|r| r.request_ctx.clone())
        .collect();
    assert_eq!(ctxs, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
}

#[test]
fn read_without_leader_is_dropped() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    net.read_index(2, b"x");
    net.stabilize();
    assert!(net.node(2).read_states.is_empty());
    assert!(net.queue().is_empty());
}

#[test]
fn read_index_index_covers_prior_writes() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    for i in 0..3u8 {
        propose(&mut net, 1, &[i]);
    }
    net.read_index(3, b"after writes");
    net.stabilize();
    let rs = &net.node(3).read_states;
    assert_eq!(rs[0].index, 4);
    assert!(net.raft(3).raft_log.applied >= rs[0].index);
}

#[test]
fn malformed_read_index_response_is_ignored() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let mut m = msg(MessageType::MsgReadIndexResp, 1, 2, 1);
    m.index = 5;
    net.raw(2).step(m).unwrap();
    assert!(net.raft(2).read_states.is_empty());
}

#[test]
fn removed_leader_of_single_voter_config_does_not_answer_alone() {
    use tandem_raft::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    // Keep node 1 leading after its removal (no hand-over).
    net.ignore(MessageType::MsgTimeoutNow);
    let rm = |id| ConfChangeSingle {
        change_type: ConfChangeType::RemoveNode,
        node_id: id,
    };
    let cc = ConfChangeV2 {
        transition: ConfChangeTransition::Auto,
        changes: vec![rm(1), rm(2)],
        context: vec![],
    };
    net.propose_conf_change(1, cc).unwrap();
    net.stabilize();
    assert_eq!(net.raft(1).prs().conf_state().voters, vec![3]);
    assert_eq!(net.raft(1).state, StateRole::Leader);
    // Node 3, the only voter, may elect itself at any time: node 1 must
    // confirm with it before serving a read.
    net.isolate(3);
    net.read_index(1, b"r");
    net.stabilize();
    assert!(net.node(1).read_states.is_empty());
    net.heal();
    net.ignore(MessageType::MsgTimeoutNow);
    net.tick(1);
    net.tick(1);
    net.stabilize();
    assert_eq!(net.node(1).read_states.len(), 1, "answered once 3 acked");
}
