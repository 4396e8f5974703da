//! Bad input never panics: unknown senders, stale terms, out-of-range
//! indexes, malformed messages; plus `Status` and `Config::validate`.

use super::*;
use rand::{Rng, SeedableRng};
use tandem_raft::{ConfState, Entry, Error, MemStorage, RawNode, Snapshot, SnapshotMetadata};

#[test]
fn stepping_local_messages_is_an_error() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    for t in [
        MessageType::MsgHup,
        MessageType::MsgBeat,
        MessageType::MsgUnreachable,
        MessageType::MsgSnapStatus,
        MessageType::MsgCheckQuorum,
    ] {
        assert_eq!(net.raw(1).step(msg(t, 2, 1, 0)), Err(Error::StepLocalMsg));
    }
}

#[test]
fn response_from_unknown_peer_is_an_error() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let m = msg(MessageType::MsgAppendResponse, 9, 1, 1);
    assert_eq!(net.raw(1).step(m), Err(Error::StepPeerNotFound));
    assert_eq!(net.leader(), Some(1));
}

#[test]
fn malformed_append_is_dropped() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let before = last_index(&net, 2);
    // Entries not contiguous with the previous index.
    let mut m = msg(MessageType::MsgAppend, 1, 2, 1);
    m.index = 1;
    m.log_term = 1;
    m.entries = vec![Entry {
        index: 5,
        term: 1,
        ..Entry::default()
    }];
    net.raw(2).step(m).unwrap();
    // An entry with a term above the message's term.
    let mut m = msg(MessageType::MsgAppend, 1, 2, 1);
    m.index = 1;
    m.log_term = 1;
    m.entries = vec![Entry {
        index: 2,
        term: 7,
        ..Entry::default()
    }];
    net.raw(2).step(m).unwrap();
    assert_eq!(last_index(&net, 2), before);
}

#[test]
fn heartbeat_with_commit_beyond_log_is_capped() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let mut m = msg(MessageType::MsgHeartbeat, 1, 2, 1);
    m.commit = 1_000;
    net.raw(2).step(m).unwrap();
    assert_eq!(committed(&net, 2), last_index(&net, 2));
}

#[test]
fn malformed_conf_change_entry_is_rejected() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let mut m = msg(MessageType::MsgPropose, 1, 1, 0);
    m.entries = vec![Entry {
        entry_type: tandem_raft::EntryType::EntryConfChangeV2,
        data: vec![0xff, 0xff, 0xff].into(),
        ..Entry::default()
    }];
    assert!(matches!(net.raw(1).step(m), Err(Error::ConfChangeError(_))));
}

#[test]
fn random_garbage_messages_never_panic() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let types = [
        MessageType::MsgPropose,
        MessageType::MsgAppend,
        MessageType::MsgAppendResponse,
        MessageType::MsgRequestVote,
        MessageType::MsgRequestVoteResponse,
        MessageType::MsgSnapshot,
        MessageType::MsgHeartbeat,
        MessageType::MsgHeartbeatResponse,
        MessageType::MsgTransferLeader,
        MessageType::MsgTimeoutNow,
        MessageType::MsgReadIndex,
        MessageType::MsgReadIndexResp,
        MessageType::MsgRequestPreVote,
        MessageType::MsgRequestPreVoteResponse,
    ];
    for round in 0..300 {
        let mut net = cluster(&[1, 2, 3], |c| {
            c.pre_vote = round % 2 == 0;
            c.check_quorum = round % 3 == 0;
        });
        elect(&mut net, 1);
        propose(&mut net, 1, b"x");
        for _ in 0..20 {
            let to = rng.gen_range(1..=3);
            let t = types[rng.gen_range(0..types.len())];
            let mut m = msg(t, rng.gen_range(0..5), to, rng.gen_range(0..4));
            m.index = rng.gen_range(0..6);
            m.log_term = rng.gen_range(0..4);
            m.commit = rng.gen_range(0..6);
            m.reject = rng.gen_bool(0.3);
            m.reject_hint = rng.gen_range(0..6);
            if rng.gen_bool(0.3) {
                let n = rng.gen_range(0..3);
                m.entries = (0..n)
                    .map(|i| Entry {
                        index: m.index + 1 + i,
                        term: m.term,
                        ..Entry::default()
                    })
                    .collect();
            }
            if t == MessageType::MsgSnapshot && rng.gen_bool(0.5) {
                m.snapshot = Some(Snapshot {
                    data: vec![],
                    metadata: SnapshotMetadata {
                        index: rng.gen_range(0..6),
                        term: rng.gen_range(0..4),
                        conf_state: ConfState::from_voters([1, 2, 3]),
                    },
                });
            }
            let _ = net.raw(to).step(m);
            net.process(to);
        }
        // Garbage may move terms around (and a forged snapshot may replace
        // state), but the nodes keep their invariants.
        net.drain_queue();
        net.check().unwrap();
        for id in 1..=3 {
            let l = &net.raft(id).raft_log;
            assert!(l.applied <= l.committed && l.committed <= l.last_index());
        }
    }
}

#[test]
fn status_reports_progress_only_on_leader() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"x");
    let s = net.raw(1).status();
    assert_eq!(s.id, 1);
    assert_eq!(s.ss.raft_state, StateRole::Leader);
    assert_eq!(s.hs.commit, 2);
    assert_eq!(s.applied, 2);
    assert_eq!(s.conf_state.voters, vec![1, 2, 3]);
    let prs = s.progress.unwrap();
    assert_eq!(prs[&2].matched, 2);
    let f = net.raw(2).status();
    assert!(f.progress.is_none());
    assert_eq!(f.ss.leader_id, 1);
}

#[test]
fn raw_node_rejects_invalid_config() {
    let s = MemStorage::new_with_conf_state(ConfState::from_voters([1]));
    let c = Config {
        election_tick: 1,
        ..Config::new(1)
    };
    assert!(matches!(RawNode::new(&c, s), Err(Error::ConfigInvalid(_))));
}

#[test]
fn raw_node_rejects_malformed_persisted_membership() {
    let s = MemStorage::new_with_conf_state(ConfState::from_parts([1, 2], [2]));
    assert!(matches!(
        RawNode::new(&Config::new(1), s),
        Err(Error::ConfChangeError(_))
    ));
}

#[test]
fn raw_node_rejects_commit_beyond_log() {
    let s = MemStorage::new_with_conf_state(ConfState::from_voters([1]));
    s.wl().set_hard_state(tandem_raft::HardState {
        term: 1,
        vote: 1,
        commit: 5,
    });
    assert!(matches!(
        RawNode::new(&Config::new(1), s),
        Err(Error::Store(_))
    ));
}

#[test]
fn applied_beyond_log_is_rejected() {
    let s = MemStorage::new_with_conf_state(ConfState::from_voters([1]));
    let c = Config {
        applied: 3,
        ..Config::new(1)
    };
    assert!(matches!(RawNode::new(&c, s), Err(Error::ConfigInvalid(_))));
}

#[test]
fn message_from_non_member_does_not_disrupt_leader_with_check_quorum() {
    let mut net = cluster(&[1, 2, 3], |c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    elect(&mut net, 1);
    let mut m = msg(MessageType::MsgRequestPreVote, 9, 2, 5);
    m.index = 100;
    m.log_term = 5;
    net.raw(2).step(m).unwrap();
    let mut m = msg(MessageType::MsgRequestVote, 9, 3, 5);
    m.index = 100;
    m.log_term = 5;
    net.raw(3).step(m).unwrap();
    net.stabilize();
    assert_eq!(net.leader(), Some(1));
    assert_eq!(net.raft(1).term, 1);
}
