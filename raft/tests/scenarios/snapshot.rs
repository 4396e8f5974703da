//! Snapshots (§7): sending, installing, failure reports, requests, restarts.

use super::*;
use tandem_raft::{ProgressState, SnapshotStatus, Storage};

/// Leader 1 with a compacted log while node 3 was away.
fn compacted_cluster() -> Network {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.isolate(3);
    for i in 0..10u8 {
        propose(&mut net, 1, &[i]);
    }
    assert_eq!(net.compact(1), Some(11));
    assert_eq!(net.node(1).storage.first_index().unwrap(), 12);
    net
}

#[test]
fn lagging_follower_receives_snapshot_and_catches_up() {
    let mut net = compacted_cluster();
    net.heal();
    let mut snaps = 0;
    observe(&mut net, 5, |m| {
        if m.msg_type == MessageType::MsgSnapshot {
            snaps += 1;
        }
    });
    assert_eq!(snaps, 1);
    propose(&mut net, 1, b"after");
    assert_eq!(
        net.applied_data(3).len(),
        11,
        "snapshot data plus the new entry"
    );
    assert_eq!(net.node(3).storage.first_index().unwrap(), 12);
    net.check().unwrap();
}

#[test]
fn snapshot_temporarily_unavailable_is_retried() {
    let mut net = compacted_cluster();
    net.node(1).storage.wl().trigger_snap_unavailable();
    net.heal();
    tick_n(&mut net, 5);
    assert_eq!(committed(&net, 3), 11, "second attempt succeeded");
}

#[test]
fn failed_snapshot_returns_to_probe() {
    let mut net = compacted_cluster();
    net.heal();
    net.ignore(MessageType::MsgSnapshot);
    tick_n(&mut net, 3);
    // The dropped snapshot was reported as failed: back to probing.
    assert_eq!(
        net.raft(1).prs().get(3).unwrap().state,
        ProgressState::Probe
    );
    net.heal();
    tick_n(&mut net, 5);
    assert_eq!(committed(&net, 3), 11);
}

#[test]
fn report_snapshot_finish_moves_to_probe_after_snapshot() {
    let mut net = compacted_cluster();
    net.heal();
    net.ignore(MessageType::MsgSnapshot);
    net.tick(1);
    net.tick(1);
    // Put 3 into snapshot state by hand, then report success.
    net.heal();
    net.drain_queue();
    let raw = net.raw(1);
    raw.report_snapshot(3, SnapshotStatus::Finish);
    net.stabilize();
    let pr = net.raft(1).prs().get(3).unwrap().clone();
    assert_ne!(pr.state, ProgressState::Snapshot);
}

#[test]
fn follower_request_snapshot() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"x");
    net.compact(1);
    assert!(net.raw(2).request_snapshot().is_ok());
    assert!(
        net.raw(2).request_snapshot().is_err(),
        "one request at a time"
    );
    tick_n(&mut net, 3);
    assert_eq!(net.raft(2).pending_request_snapshot, 0);
    assert_eq!(net.node(2).storage.first_index().unwrap(), 3);
}

#[test]
fn leader_cannot_request_snapshot() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    assert_eq!(
        net.raw(1).request_snapshot(),
        Err(tandem_raft::Error::RequestSnapshotDropped)
    );
}

#[test]
fn restart_from_snapshot() {
    let mut net = compacted_cluster();
    net.heal();
    tick_n(&mut net, 5);
    net.crash(3);
    net.restart(3);
    assert_eq!(net.raft(3).raft_log.first_index(), 12);
    assert_eq!(net.raft(3).raft_log.committed, 11);
    assert_eq!(net.raft(3).prs().conf_state().voters, vec![1, 2, 3]);
    tick_n(&mut net, 3);
    propose(&mut net, 1, b"y");
    assert_eq!(net.applied_data(3).last().unwrap(), b"y");
}

#[test]
fn stale_snapshot_is_ignored() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    for i in 0..3u8 {
        propose(&mut net, 1, &[i]);
    }
    net.compact(1);
    let snap = net.node(1).storage.rl().stored_snapshot();
    // Node 2 already has everything: a snapshot at its commit is ignored.
    let mut m = msg(MessageType::MsgSnapshot, 1, 2, 1);
    m.snapshot = Some(snap);
    let before = net.raft(2).raft_log.first_index();
    net.raw(2).step(m).unwrap();
    assert_eq!(net.raft(2).raft_log.first_index(), before);
    assert!(!net.raft(2).raft_log.has_pending_snapshot());
}

#[test]
fn snapshot_matching_the_log_fast_forwards_commit() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.ignore(MessageType::MsgHeartbeat);
    net.ignore(MessageType::MsgAppendResponse);
    propose(&mut net, 1, b"x");
    net.heal();
    // Node 2 has index 2 but does not know it committed.
    assert_eq!(committed(&net, 2), 1);
    let mut snap = net.node(1).storage.rl().stored_snapshot();
    snap.metadata.index = 2;
    snap.metadata.term = 1;
    snap.metadata.conf_state = tandem_raft::ConfState::from_voters([1, 2, 3]);
    let mut m = msg(MessageType::MsgSnapshot, 1, 2, 1);
    m.snapshot = Some(snap);
    net.raw(2).step(m).unwrap();
    assert_eq!(committed(&net, 2), 2);
    assert!(!net.raft(2).raft_log.has_pending_snapshot(), "log kept");
}

#[test]
fn snapshot_message_without_snapshot_is_ignored() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let m = msg(MessageType::MsgSnapshot, 1, 2, 1);
    net.raw(2).step(m).unwrap();
    assert_eq!(net.raft(2).raft_log.committed, 1);
}

#[test]
fn new_node_joins_through_snapshot() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"early");
    net.add_empty_node(4, |_| {});
    net.propose_conf_change(
        1,
        tandem_raft::ConfChange {
            change_type: tandem_raft::ConfChangeType::AddLearnerNode,
            node_id: 4,
            context: vec![],
        },
    )
    .unwrap();
    let mut snaps = 0;
    observe(&mut net, 6, |m| {
        if m.msg_type == MessageType::MsgSnapshot && m.to == 4 {
            snaps += 1;
        }
    });
    assert!(
        snaps >= 1,
        "an uninitialised node is initialised by a snapshot"
    );
    assert_eq!(net.applied_data(4), vec![b"early".to_vec()]);
    assert!(net.raft(4).prs().is_learner(4));
}
