//! §5.3 log replication, flow control, and §5.4 commitment (Figure 8).

use super::*;
use tandem_raft::testing::Network;
use tandem_raft::{ConfState, Entry, HardState, MemStorage, ProgressState};

#[test]
fn proposals_replicate_commit_and_apply_everywhere() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    for i in 0..10u8 {
        propose(&mut net, 1, &[i]);
    }
    for id in [1, 2, 3] {
        assert_eq!(committed(&net, id), 11);
        assert_eq!(
            net.applied_data(id),
            (0..10u8).map(|i| vec![i]).collect::<Vec<_>>()
        );
    }
}

#[test]
fn follower_forwards_proposals_to_leader() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 2, b"via follower");
    assert_eq!(net.applied_data(1), vec![b"via follower".to_vec()]);
}

#[test]
fn proposal_without_leader_is_dropped() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    assert_eq!(
        net.propose(1, b"x".to_vec()),
        Err(tandem_raft::Error::ProposalDropped)
    );
    net.isolate(1);
    net.campaign(1);
    assert_eq!(
        net.propose(1, b"x".to_vec()),
        Err(tandem_raft::Error::ProposalDropped),
        "candidates drop proposals"
    );
}

#[test]
fn lagging_follower_catches_up_after_heal() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.isolate(3);
    for i in 0..20u8 {
        propose(&mut net, 1, &[i]);
    }
    assert_eq!(committed(&net, 3), 1);
    net.heal();
    tick_n(&mut net, 3);
    assert_eq!(committed(&net, 3), 21);
    assert_eq!(net.applied_data(3).len(), 20);
}

#[test]
fn conflicting_follower_entries_are_overwritten() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    // Leader 1 appends entries only it has.
    net.isolate(1);
    for i in 0..5u8 {
        net.propose(1, vec![i]).unwrap();
    }
    net.stabilize();
    assert_eq!(last_index(&net, 1), 6);
    // 2 and 3 elect 2 and commit different entries.
    net.heal();
    net.isolate(1);
    elect(&mut net, 2);
    propose(&mut net, 2, b"new");
    net.heal();
    tick_n(&mut net, 3);
    assert_eq!(net.raft(1).state, StateRole::Follower);
    assert_eq!(net.applied_data(1), vec![b"new".to_vec()]);
    assert_eq!(last_index(&net, 1), last_index(&net, 2));
}

#[test]
fn fast_backtracking_skips_whole_terms() {
    // Follower 3 holds a long tail of entries from a term the leader
    // never saw; the rejection hint lets the leader skip them in one step.
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 3);
    net.isolate(3);
    for i in 0..50u8 {
        net.propose(3, vec![i]).unwrap();
    }
    net.stabilize();
    net.heal();
    net.isolate(3);
    elect(&mut net, 1);
    propose(&mut net, 1, b"x");
    net.heal();
    // Count the rejections 3 sends while catching up.
    let mut rejections = 0;
    observe(&mut net, 10, |m| {
        if m.msg_type == MessageType::MsgAppendResponse && m.from == 3 && m.reject {
            rejections += 1;
        }
    });
    assert!(rejections <= 2, "{rejections} rejections: hint not used");
    assert_eq!(net.applied_data(3), vec![b"x".to_vec()]);
    net.check().unwrap();
}

#[test]
fn max_size_per_msg_bounds_appends() {
    let one = Entry {
        data: vec![0; 100].into(),
        ..Entry::default()
    }
    .size_bytes();
    let mut net = cluster(&[1, 2, 3], |c| c.max_size_per_msg = one * 3);
    elect(&mut net, 1);
    net.isolate(2);
    for _ in 0..10 {
        propose(&mut net, 1, &[0; 100]);
    }
    net.heal();
    let mut max_batch = 0;
    observe(&mut net, 10, |m| {
        if m.msg_type == MessageType::MsgAppend && m.to == 2 {
            max_batch = max_batch.max(m.entries.len());
        }
    });
    assert_eq!(max_batch, 3, "batches are filled up to the limit");
    assert_eq!(net.applied_data(2).len(), 10);
}

#[test]
fn inflight_window_limits_unacknowledged_appends() {
    let mut net = cluster(&[1, 2, 3], |c| c.max_inflight_msgs = 2);
    elect(&mut net, 1);
    assert_eq!(
        net.raft(1).prs().get(2).unwrap().state,
        ProgressState::Replicate
    );
    net.ignore(MessageType::MsgAppendResponse);
    net.drain_queue();
    for i in 0..5u8 {
        net.propose(1, vec![i]).unwrap();
    }
    let to2 = net
        .queue()
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgAppend && m.to == 2)
        .count();
    assert_eq!(to2, 2, "window of two");
    assert!(net.raft(1).prs().get(2).unwrap().is_paused());
}

#[test]
fn heartbeat_response_reopens_full_window() {
    let mut net = cluster(&[1, 2], |c| c.max_inflight_msgs = 1);
    elect(&mut net, 1);
    net.drain_queue();
    net.propose(1, b"a".to_vec()).unwrap();
    net.propose(1, b"b".to_vec()).unwrap();
    assert!(net.raft(1).prs().get(2).unwrap().is_paused());
    net.drain_queue();
    let hb = msg(MessageType::MsgHeartbeatResponse, 2, 1, 1);
    net.raw(1).step(hb).unwrap();
    net.process(1);
    assert!(net
        .queue()
        .iter()
        .any(|m| m.msg_type == MessageType::MsgAppend && m.to == 2));
}

#[test]
fn max_uncommitted_size_drops_proposals() {
    let size = Entry {
        data: vec![0; 100].into(),
        ..Entry::default()
    }
    .size_bytes();
    let mut net = cluster(&[1, 2, 3], |c| c.max_uncommitted_size = size * 3);
    elect(&mut net, 1);
    net.isolate(1);
    let mut accepted = 0;
    for _ in 0..10 {
        if net.propose(1, vec![0; 100]).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 3);
    // Once the entries commit, the budget is free again.
    net.heal();
    tick_n(&mut net, 3);
    assert_eq!(net.raft(1).uncommitted_size(), 0);
    assert!(net.propose(1, vec![0; 100]).is_ok());
}

#[test]
fn oversized_single_proposal_is_accepted_when_nothing_pending() {
    let mut net = cluster(&[1, 2, 3], |c| c.max_uncommitted_size = 10);
    elect(&mut net, 1);
    propose(&mut net, 1, &[1; 1000]);
    assert_eq!(net.applied_data(2).len(), 1);
}

#[test]
fn batch_append_merges_consecutive_appends() {
    let mut net = cluster(&[1, 2, 3], |c| c.batch_append = true);
    elect(&mut net, 1);
    net.drain_queue();
    let raw = net.raw(1);
    for i in 0..5u8 {
        raw.propose(vec![], vec![i]).unwrap();
    }
    net.process(1);
    let to2: Vec<_> = net
        .queue()
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgAppend && m.to == 2)
        .collect();
    assert_eq!(to2.len(), 1, "merged into one message");
    assert_eq!(to2[0].entries.len(), 5);
    net.stabilize();
    assert_eq!(net.applied_data(3).len(), 5);
}

#[test]
fn without_batching_each_proposal_is_a_message() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.drain_queue();
    let raw = net.raw(1);
    for i in 0..5u8 {
        raw.propose(vec![], vec![i]).unwrap();
    }
    net.process(1);
    let to2 = net
        .queue()
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgAppend && m.to == 2)
        .count();
    assert_eq!(to2, 5);
}

#[test]
fn commit_index_reaches_followers() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"a");
    // After settling, followers know the commit (via the broadcast append).
    assert_eq!(committed(&net, 2), 2);
    assert_eq!(committed(&net, 3), 2);
}

#[test]
fn skip_bcast_commit_defers_commit_to_next_heartbeat() {
    let mut net = cluster(&[1, 2, 3], |c| c.skip_bcast_commit = true);
    elect(&mut net, 1);
    tick_n(&mut net, 3);
    propose(&mut net, 1, b"a");
    assert_eq!(committed(&net, 1), 2);
    assert!(committed(&net, 2) < 2, "no broadcast just for the commit");
    tick_n(&mut net, 3);
    assert_eq!(committed(&net, 2), 2);
}

#[test]
fn probe_sends_one_append_until_answered() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.raw(1).report_unreachable(2);
    assert_eq!(
        net.raft(1).prs().get(2).unwrap().state,
        ProgressState::Probe
    );
    net.drain_queue();
    for i in 0..3u8 {
        net.propose(1, vec![i]).unwrap();
    }
    let to2 = net
        .queue()
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgAppend && m.to == 2)
        .count();
    assert_eq!(to2, 1, "one probe in flight");
    net.stabilize();
    assert_eq!(
        net.raft(1).prs().get(2).unwrap().state,
        ProgressState::Replicate
    );
    assert_eq!(net.applied_data(2).len(), 3);
}

/// Figure 8 of the Raft paper, state (b): S1 [1 2], S2 [1 2], S3 [1],
/// S4 [1], S5 [1 3] (entry terms), everyone in term 3, commit 1. One entry
/// per append so that single entries can be held back.
fn figure_8_cluster() -> Network {
    figure_8_cluster_with(|_| {})
}

fn figure_8_cluster_with(f: impl Fn(&mut Config)) -> Network {
    let mut net = Network::default();
    let logs: [(u64, &[u64]); 5] = [
        (1, &[1, 2]),
        (2, &[1, 2]),
        (3, &[1]),
        (4, &[1]),
        (5, &[1, 3]),
    ];
    for (id, terms) in logs {
        let s = MemStorage::new_with_conf_state(ConfState::from_voters(1..=5));
        let ents: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                index: i as u64 + 1,
                term: t,
                data: vec![i as u8 + 1, t as u8].into(),
                ..Entry::default()
            })
            .collect();
        // Entry 1 is committed everywhere and must be identical.
        let mut ents = ents;
        ents[0].data = b"committed".to_vec().into();
        s.wl().append(&ents).unwrap();
        s.wl().set_hard_state(HardState {
            term: 3,
            vote: 0,
            commit: 1,
        });
        let mut c = Config::new(id);
        c.max_size_per_msg = 1;
        f(&mut c);
        net.add_node_with(id, c, s);
    }
    net
}

#[test]
fn figure_8_old_term_entry_not_committed_by_counting() {
    let mut net = figure_8_cluster();
    // (c) S1 leads term 4 (votes of S2, S3, S4) ...
    net.isolate(5);
    net.campaign(1);
    let t = net.raft(1).term;
    assert_eq!(t, 4);
    // ... and replicates index 2 (term 2) to S3, but its own entry
    // (index 3, term 4) to nobody.
    for _ in 0..1000 {
        for id in 1..=5 {
            net.process(id);
        }
        let Some(m) = net.queue().front().cloned() else {
            break;
        };
        if m.msg_type == MessageType::MsgAppend && m.entries.iter().any(|e| e.term == 4) {
            // Deliver the append without the term-4 entry (as if it had
            // been cut off by a size limit).
            let mut q = net.drain_queue();
            q[0].entries.retain(|e| e.term < 4);
            for m in q {
                net.send(m);
            }
        }
        net.deliver_one();
        net.check().unwrap();
    }
    assert_eq!(net.raft(1).state, StateRole::Leader);
    assert_eq!(net.raft(3).raft_log.term(2).unwrap(), 2, "S3 has index 2");
    // Index 2 is on a majority {S1, S2, S3} but is of an older term.
    assert_eq!(
        committed(&net, 1),
        1,
        "must not commit an old-term entry by counting"
    );
    // (d) S1 crashes; S5 wins term 5 with S2, S3, S4 and overwrites index 2.
    net.crash(1);
    net.heal();
    // S5 is still in term 3: its first campaign (term 4) meets voters that
    // already voted in term 4; the second (term 5) wins.
    for _ in 0..2 {
        if net.raft(5).state != StateRole::Leader {
            net.campaign(5);
            net.stabilize();
        }
    }
    assert_eq!(net.raft(5).state, StateRole::Leader);
    assert_eq!(net.raft(5).term, 5);
    for id in [2, 3, 4] {
        assert_eq!(net.raft(id).raft_log.term(2).unwrap(), 3, "node {id}");
    }
    net.restart(1);
    tick_n(&mut net, 5);
    assert_eq!(net.raft(1).raft_log.term(2).unwrap(), 3);
    net.check().unwrap();
}

/// With the commit rule broken on purpose, the same schedule commits the
/// old-term entry and then loses it: the checker must notice.
#[cfg(feature = "planted-bugs")]
#[test]
fn figure_8_planted_bug_is_caught() {
    let mut net =
        figure_8_cluster_with(|c| c.planted_bug = tandem_raft::PlantedBug::CommitOldTermByCounting);
    net.isolate(5);
    net.campaign(1);
    for _ in 0..1000 {
        for id in 1..=5 {
            net.process(id);
        }
        let Some(m) = net.queue().front().cloned() else {
            break;
        };
        if m.msg_type == MessageType::MsgAppend && m.entries.iter().any(|e| e.term == 4) {
            let mut q = net.drain_queue();
            q[0].entries.retain(|e| e.term < 4);
            for m in q {
                net.send(m);
            }
        }
        net.deliver_one();
    }
    assert_eq!(committed(&net, 1), 2, "the bug commits the old-term entry");
    net.crash(1);
    net.heal();
    // S5 wins a later term and overwrites index 2: either the checker
    // flags the lost committed entry or a follower's own invariant
    // assertion (never truncate a committed entry) fires.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..3 {
            net.campaign(5);
            for _ in 0..5000 {
                if !net.deliver_one() {
                    break;
                }
                if let Err(e) = net.check() {
                    return Some(e);
                }
            }
        }
        None
    }));
    match caught {
        Ok(Some(e)) => assert!(e.contains("committed"), "{e}"),
        Ok(None) => panic!("the planted bug went unnoticed"),
        Err(_) => {} // the core's own assertion fired
    }
}

#[test]
fn figure_8_entry_of_current_term_commits_the_old_one() {
    let mut net = figure_8_cluster();
    net.isolate(5);
    net.campaign(1);
    net.stabilize();
    // (e) S1 replicated its term-4 entry to a majority: 2 and 3 commit.
    assert_eq!(committed(&net, 1), 3);
    net.crash(1);
    net.heal();
    for _ in 0..3 {
        net.campaign(5);
        net.stabilize();
        assert_ne!(
            net.raft(5).state,
            StateRole::Leader,
            "S5 cannot win any more"
        );
    }
    net.check().unwrap();
}

#[test]
fn leader_commits_old_entries_only_with_current_term_entry() {
    // The leader's log has an entry of an older term replicated on a
    // majority; its commit waits until an entry of the current term is.
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.ignore(MessageType::MsgAppendResponse);
    net.propose(1, b"old".to_vec()).unwrap();
    net.stabilize();
    assert_eq!(last_index(&net, 2), 2);
    assert_eq!(committed(&net, 1), 1);
    net.heal();
    // Node 2 becomes leader of term 2 with the old entry; while its own
    // empty entry is not replicated, index 2 (term 1) stays uncommitted.
    net.ignore(MessageType::MsgAppend);
    net.campaign(2);
    net.stabilize();
    assert_eq!(net.raft(2).state, StateRole::Leader);
    assert_eq!(
        committed(&net, 2),
        1,
        "old-term entry not committed by counting"
    );
    net.heal();
    tick_n(&mut net, 3);
    assert_eq!(committed(&net, 2), 3);
    assert_eq!(net.applied_data(3), vec![b"old".to_vec()]);
}

#[test]
fn empty_proposal_is_rejected_not_panicking() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let m = msg(MessageType::MsgPropose, 1, 1, 0);
    assert_eq!(net.raw(1).step(m), Err(tandem_raft::Error::ProposalDropped));
}

#[test]
fn unreachable_report_moves_replicate_to_probe() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    assert_eq!(
        net.raft(1).prs().get(3).unwrap().state,
        ProgressState::Replicate
    );
    net.raw(1).report_unreachable(3);
    assert_eq!(
        net.raft(1).prs().get(3).unwrap().state,
        ProgressState::Probe
    );
    // The next append is a probe; its acknowledgement restores streaming.
    propose(&mut net, 1, b"p");
    assert_eq!(
        net.raft(1).prs().get(3).unwrap().state,
        ProgressState::Replicate
    );
    assert_eq!(net.applied_data(3), vec![b"p".to_vec()]);
}

#[test]
fn follower_rejection_carries_hint_and_term() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    // An append at an index far beyond node 2's log.
    let mut app = msg(MessageType::MsgAppend, 1, 2, 1);
    app.index = 50;
    app.log_term = 1;
    net.raw(2).step(app).unwrap();
    net.process(2);
    let r = net
        .drain_queue()
        .into_iter()
        .find(|m| m.msg_type == MessageType::MsgAppendResponse)
        .unwrap();
    assert!(r.reject);
    assert_eq!(r.index, 50);
    assert_eq!(r.reject_hint, 1, "hint is the follower's last index");
    assert_eq!(r.log_term, 1);
}

#[test]
fn append_below_commit_is_acked_with_commit() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    propose(&mut net, 1, b"a");
    let mut app = msg(MessageType::MsgAppend, 1, 2, 1);
    app.index = 0;
    app.log_term = 0;
    net.raw(2).step(app).unwrap();
    net.process(2);
    let r = net
        .drain_queue()
        .into_iter()
        .find(|m| m.msg_type == MessageType::MsgAppendResponse)
        .unwrap();
    assert!(!r.reject);
    assert_eq!(r.index, 2);
}
