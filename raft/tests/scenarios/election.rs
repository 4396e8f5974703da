//! §5.2 leader election, §9.6 pre-vote and check-quorum, priority.

use super::*;
use tandem_raft::raft::INVALID_ID;

#[test]
fn campaign_elects_leader_and_followers_learn_it() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    for id in [1, 2, 3] {
        let r = net.raft(id);
        assert_eq!(r.term, 1);
        assert_eq!(r.leader_id, 1);
    }
    assert_eq!(net.raft(2).state, StateRole::Follower);
    assert_eq!(net.raft(2).vote, 1);
}

#[test]
fn election_timeout_elects_someone() {
    let mut net = cluster(&[1, 2, 3, 4, 5], |c| c.seed = 7);
    for _ in 0..40 {
        net.tick_all();
        net.stabilize();
        if net.leader().is_some() {
            break;
        }
    }
    let l = net.leader().expect("a leader within 40 ticks");
    for id in 1..=5 {
        assert_eq!(net.raft(id).leader_id, l);
    }
    net.check().unwrap();
}

#[test]
fn single_node_elects_itself() {
    let mut net = cluster(&[1], |_| {});
    net.campaign(1);
    net.stabilize();
    assert_eq!(net.raft(1).state, StateRole::Leader);
    assert_eq!(net.raft(1).term, 1);
}

#[test]
fn candidate_without_quorum_stays_candidate() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    net.isolate(1);
    net.campaign(1);
    net.stabilize();
    assert_eq!(net.raft(1).state, StateRole::Candidate);
    assert_eq!(net.raft(1).term, 1);
    // A new election after a timeout bumps the term again.
    tick_node(&mut net, 1, 40);
    net.stabilize();
    assert_eq!(net.raft(1).state, StateRole::Candidate);
    assert!(net.raft(1).term >= 2);
}

#[test]
fn voter_votes_at_most_once_per_term() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    let mut req = msg(MessageType::MsgRequestVote, 2, 1, 1);
    net.raw(1).step(req.clone()).unwrap();
    req.from = 3;
    net.raw(1).step(req).unwrap();
    net.process(1);
    let resps: Vec<Message> = net
        .drain_queue()
        .into_iter()
        .filter(|m| m.msg_type == MessageType::MsgRequestVoteResponse)
        .collect();
    assert_eq!(resps.len(), 2);
    assert!(!resps[0].reject && resps[0].to == 2);
    assert!(resps[1].reject && resps[1].to == 3);
    assert_eq!(net.raft(1).vote, 2);
}

#[test]
fn repeated_vote_request_from_same_candidate_is_granted() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    let req = msg(MessageType::MsgRequestVote, 2, 1, 1);
    net.raw(1).step(req.clone()).unwrap();
    net.raw(1).step(req).unwrap();
    net.process(1);
    let grants = net
        .drain_queue()
        .into_iter()
        .filter(|m| m.msg_type == MessageType::MsgRequestVoteResponse && !m.reject)
        .count();
    assert_eq!(grants, 2);
}

#[test]
fn vote_refused_to_candidate_with_stale_log() {
    // §5.4.1: node 3 misses entries; it cannot win against 1 and 2.
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.isolate(3);
    propose(&mut net, 1, b"a");
    net.heal();
    net.campaign(3);
    net.stabilize();
    assert_ne!(net.raft(3).state, StateRole::Leader);
    net.check().unwrap();
    // The higher term disrupted the leader, but the new leader has the entry.
    let l = {
        tick_n(&mut net, 40);
        net.leader().expect("leader")
    };
    assert_ne!(l, 3);
    assert!(net.applied_data(l).contains(&b"a".to_vec()));
}

#[test]
fn randomized_timeout_within_bounds_and_seed_dependent() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..30u64 {
        let net = cluster(&[1, 2, 3], |c| c.seed = seed);
        for id in [1, 2, 3] {
            let t = net.raft(id).randomized_election_timeout();
            assert!((10..20).contains(&t), "timeout {t} out of [10, 20)");
            seen.insert(t);
        }
    }
    assert!(
        seen.len() > 5,
        "timeouts should vary with seed and id: {seen:?}"
    );
}

#[test]
fn custom_election_bounds_are_respected() {
    let net = cluster(&[1, 2, 3], |c| {
        c.min_election_tick = 15;
        c.max_election_tick = 16;
    });
    for id in [1, 2, 3] {
        assert_eq!(net.raft(id).randomized_election_timeout(), 15);
    }
}

#[test]
fn candidate_steps_down_on_append_from_leader_of_same_term() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    net.isolate(2);
    net.campaign(2);
    net.stabilize();
    assert_eq!(net.raft(2).state, StateRole::Candidate);
    let mut app = msg(MessageType::MsgAppend, 3, 2, 1);
    app.index = 0;
    app.log_term = 0;
    net.raw(2).step(app).unwrap();
    assert_eq!(net.raft(2).state, StateRole::Follower);
    assert_eq!(net.raft(2).leader_id, 3);
}

#[test]
fn leader_steps_down_on_higher_term() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let hb = msg(MessageType::MsgHeartbeat, 2, 1, 5);
    net.raw(1).step(hb).unwrap();
    assert_eq!(net.raft(1).state, StateRole::Follower);
    assert_eq!(net.raft(1).term, 5);
    assert_eq!(net.raft(1).leader_id, 2);
}

#[test]
fn stale_term_messages_are_ignored() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.campaign(2);
    net.stabilize();
    assert_eq!(net.raft(2).state, StateRole::Leader);
    let before = net.raft(2).hard_state();
    // An append from the deposed leader of term 1.
    let app = msg(MessageType::MsgAppend, 1, 2, 1);
    net.raw(2).step(app).unwrap();
    assert_eq!(net.raft(2).hard_state(), before);
    assert_eq!(net.raft(2).state, StateRole::Leader);
}

#[test]
fn new_leader_appends_empty_entry_of_its_term() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    let r = net.raft(1);
    assert_eq!(r.raft_log.last_index(), 1);
    assert_eq!(r.raft_log.last_term(), 1);
    let e = r.raft_log.slice(1, 2, None).unwrap();
    assert!(e[0].data.is_empty());
    // Everyone commits and applies it.
    for id in [1, 2, 3] {
        assert_eq!(committed(&net, id), 1);
    }
}

#[test]
fn learner_never_campaigns() {
    let mut net = Network::new_with_learners(&[1, 2], &[3], |_| {});
    tick_node(&mut net, 3, 100);
    assert_eq!(net.raft(3).state, StateRole::Follower);
    assert_eq!(net.raft(3).term, 0);
    net.campaign(3);
    assert_eq!(net.raft(3).state, StateRole::Follower, "campaign ignored");
}

#[test]
fn learner_vote_does_not_count() {
    let mut net = Network::new_with_learners(&[1, 2, 3], &[4], |_| {});
    net.isolate(2);
    net.isolate(3);
    net.campaign(1);
    net.stabilize();
    assert_eq!(
        net.raft(1).state,
        StateRole::Candidate,
        "learner 4 cannot help"
    );
    assert!(net.queue().is_empty());
}

#[test]
fn pre_vote_keeps_partitioned_node_from_inflating_term() {
    let mut net = cluster(&[1, 2, 3], |c| c.pre_vote = true);
    elect(&mut net, 1);
    net.isolate(3);
    tick_node(&mut net, 3, 100);
    net.stabilize();
    assert_eq!(net.raft(3).state, StateRole::PreCandidate);
    assert_eq!(net.raft(3).term, 1, "pre-vote does not bump the term");
    net.heal();
    tick_n(&mut net, 5);
    assert_eq!(net.leader(), Some(1), "rejoining node did not disrupt");
    assert_eq!(net.raft(1).term, 1);
}

#[test]
fn without_pre_vote_partitioned_node_disrupts_on_rejoin() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    net.isolate(3);
    tick_node(&mut net, 3, 100);
    net.stabilize();
    let t3 = net.raft(3).term;
    assert!(t3 > 1, "term inflated to {t3}");
    net.heal();
    tick_n(&mut net, 40);
    let l = net.leader().expect("a leader again");
    assert!(
        net.raft(l).term > t3,
        "the cluster had to move past term {t3}"
    );
}

#[test]
fn pre_candidate_that_loses_returns_to_follower_same_term() {
    let mut net = cluster(&[1, 2, 3], |c| c.pre_vote = true);
    elect(&mut net, 1);
    net.isolate(3);
    net.campaign(3);
    assert_eq!(net.raft(3).state, StateRole::PreCandidate);
    for from in [1, 2] {
        let mut r = msg(MessageType::MsgRequestPreVoteResponse, from, 3, 1);
        r.reject = true;
        net.raw(3).step(r).unwrap();
    }
    assert_eq!(net.raft(3).state, StateRole::Follower);
    assert_eq!(net.raft(3).term, 1, "a lost pre-election costs no term");
}

#[test]
fn pre_vote_then_vote_elects_with_one_term_bump() {
    let mut net = cluster(&[1, 2, 3], |c| c.pre_vote = true);
    elect(&mut net, 1);
    assert_eq!(net.raft(1).term, 1);
    net.crash(1);
    // Node 3 grants pre-votes only once it has not heard from the leader
    // for an election timeout.
    net.campaign(2);
    net.stabilize();
    assert_ne!(
        net.raft(2).state,
        StateRole::Leader,
        "3 still trusts leader 1"
    );
    assert_eq!(net.raft(2).term, 1);
    tick_node(&mut net, 3, 10);
    net.campaign(2);
    net.stabilize();
    assert_eq!(net.raft(2).state, StateRole::Leader);
    assert_eq!(net.raft(2).term, 2);
}

#[test]
fn check_quorum_leader_steps_down_when_isolated() {
    let mut net = cluster(&[1, 2, 3], |c| c.check_quorum = true);
    elect(&mut net, 1);
    net.isolate(1);
    for _ in 0..25 {
        net.tick(1);
    }
    assert_eq!(net.raft(1).state, StateRole::Follower);
}

#[test]
fn check_quorum_leader_with_quorum_stays() {
    let mut net = cluster(&[1, 2, 3], |c| c.check_quorum = true);
    elect(&mut net, 1);
    net.isolate(3);
    tick_n(&mut net, 50);
    assert_eq!(net.leader(), Some(1));
}

#[test]
fn check_quorum_follower_in_lease_ignores_vote_requests() {
    let mut net = cluster(&[1, 2, 3], |c| c.check_quorum = true);
    elect(&mut net, 1);
    let mut req = msg(MessageType::MsgRequestVote, 3, 2, 5);
    req.index = 100;
    req.log_term = 5;
    net.raw(2).step(req).unwrap();
    assert_eq!(net.raft(2).term, 1, "vote request in lease ignored");
    assert_eq!(net.raft(2).leader_id, 1);
    // A transfer campaign is honoured even in lease.
    let mut req = msg(MessageType::MsgRequestVote, 3, 2, 5);
    req.index = 100;
    req.log_term = 5;
    req.context = tandem_raft::CAMPAIGN_TRANSFER.to_vec();
    net.raw(2).step(req).unwrap();
    assert_eq!(net.raft(2).term, 5);
    assert_eq!(net.raft(2).vote, 3);
}

#[test]
fn check_quorum_stale_leader_learns_new_term_from_response() {
    let mut net = cluster(&[1, 2, 3], |c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    elect(&mut net, 1);
    net.isolate(1);
    // 2 and 3 elect a new leader once their lease expires.
    for _ in 0..60 {
        net.tick(2);
        net.tick(3);
        net.stabilize();
    }
    let l = net.leader().expect("leader among 2, 3");
    assert_ne!(l, 1);
    // Node 1 (still leader in term 1 if it did not tick) heals and hears
    // about the newer term as soon as it sends.
    net.heal();
    net.raw(1).tick();
    for _ in 0..3 {
        net.tick(1);
        net.stabilize();
    }
    assert_eq!(net.raft(1).state, StateRole::Follower);
    assert_eq!(net.raft(1).term, net.raft(l).term);
}

#[test]
fn priority_breaks_ties_between_equal_logs() {
    let mut net = cluster(&[1, 2, 3], |c| {
        if c.id == 2 {
            c.priority = 10;
        }
    });
    // Node 1 (priority 0) asks node 2 (priority 10) with an equal log.
    let mut req = msg(MessageType::MsgRequestVote, 1, 2, 1);
    req.priority = 0;
    net.raw(2).step(req).unwrap();
    net.process(2);
    let r: Vec<Message> = net.drain_queue();
    assert!(r
        .iter()
        .any(|m| m.msg_type == MessageType::MsgRequestVoteResponse && m.reject));
    // A candidate with a longer log is granted regardless of priority.
    let mut req = msg(MessageType::MsgRequestVote, 3, 2, 2);
    req.index = 5;
    req.log_term = 1;
    net.raw(2).step(req).unwrap();
    net.process(2);
    let r: Vec<Message> = net.drain_queue();
    assert!(r
        .iter()
        .any(|m| m.msg_type == MessageType::MsgRequestVoteResponse && !m.reject));
}

#[test]
fn higher_priority_node_wins_when_both_campaign() {
    let mut net = cluster(&[1, 2, 3], |c| c.priority = if c.id == 3 { 5 } else { 1 });
    // Node 1 campaigns but 3 refuses; 2 grants. Then 3 campaigns in a
    // higher term and everyone grants it.
    net.cut_both(1, 2);
    net.campaign(1);
    net.stabilize();
    assert_ne!(net.raft(1).state, StateRole::Leader);
    net.heal();
    net.campaign(3);
    net.stabilize();
    assert_eq!(net.leader(), Some(3));
}

#[test]
fn vote_response_of_other_type_is_not_counted() {
    let mut net = cluster(&[1, 2, 3], |c| c.pre_vote = true);
    elect(&mut net, 1);
    net.isolate(3);
    net.campaign(3);
    assert_eq!(net.raft(3).state, StateRole::PreCandidate);
    // A real vote response of the same term does not count for a pre-election.
    let r = msg(MessageType::MsgRequestVoteResponse, 2, 3, 1);
    net.raw(3).step(r).unwrap();
    assert_eq!(net.raft(3).state, StateRole::PreCandidate);
    // A granted pre-vote (for the future term 2) wins the pre-election.
    let r = msg(MessageType::MsgRequestPreVoteResponse, 2, 3, 2);
    net.raw(3).step(r).unwrap();
    assert_eq!(net.raft(3).state, StateRole::Candidate);
    assert_eq!(net.raft(3).term, 2);
}

#[test]
fn follower_resets_election_timer_on_heartbeat() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    tick_n(&mut net, 100);
    assert_eq!(net.leader(), Some(1), "heartbeats keep followers quiet");
    assert_eq!(net.raft(2).term, 1);
    assert_eq!(net.raft(3).leader_id, 1);
    assert_ne!(net.raft(3).leader_id, INVALID_ID);
}

#[test]
fn leader_sends_heartbeat_every_heartbeat_tick() {
    let mut net = cluster(&[1, 2, 3], |c| c.heartbeat_tick = 3);
    elect(&mut net, 1);
    net.tick(1);
    net.tick(1);
    assert!(net.queue().is_empty());
    net.tick(1);
    let hbs = net
        .drain_queue()
        .into_iter()
        .filter(|m| m.msg_type == MessageType::MsgHeartbeat)
        .count();
    assert_eq!(hbs, 2);
}

#[test]
fn stale_candidate_learns_newer_term_from_rejection() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    // Node 2 is far ahead in term; node 1 campaigns in an older term.
    let hb = msg(MessageType::MsgHeartbeat, 3, 2, 9);
    net.raw(2).step(hb).unwrap();
    net.drain_queue();
    net.cut_both(1, 3);
    net.campaign(1);
    net.stabilize();
    // The rejection carried term 9: node 1 moved to it instead of chasing.
    assert_eq!(net.raft(1).term, 9);
    assert_eq!(net.raft(1).state, StateRole::Follower);
}

#[test]
fn fresh_node_rejecting_a_pre_vote_stays_silent() {
    // Priority makes a fresh node (term 0) refuse an equally long log.
    let mut net = cluster(&[1, 2, 3], |c| {
        c.pre_vote = true;
        if c.id == 2 {
            c.priority = 9;
        }
    });
    let mut req = msg(MessageType::MsgRequestPreVote, 1, 2, 1);
    req.priority = 0;
    net.raw(2).step(req).unwrap();
    net.process(2);
    assert!(net.queue().is_empty(), "no response with term 0");
    assert_eq!(net.raft(2).term, 0);
}

#[test]
fn candidate_learns_commit_from_vote_response_when_logs_match() {
    let mut net = cluster(&[1, 2, 3], |_| {});
    elect(&mut net, 1);
    // Node 3 gets entry 2 but never hears that it committed.
    net.ignore(MessageType::MsgHeartbeat);
    net.raw(1).propose(vec![], b"x".to_vec()).unwrap();
    net.process(1);
    for _ in 0..6 {
        let Some(m) = net.queue().front().cloned() else {
            break;
        };
        if m.to == 3 && m.msg_type == MessageType::MsgAppend && m.commit >= 2 {
            net.drop_front();
        } else {
            net.deliver_one();
        }
    }
    net.cut(1, 3);
    net.stabilize();
    assert_eq!(last_index(&net, 3), 2);
    assert_eq!(committed(&net, 3), 1);
    net.isolate(3);
    net.campaign(3);
    let term = net.raft(3).term;
    // A response whose commit entry does not match our log teaches nothing.
    let mut r = msg(MessageType::MsgRequestVoteResponse, 2, 3, term);
    r.reject = true;
    r.commit = 2;
    r.commit_term = 9;
    net.raw(3).step(r.clone()).unwrap();
    assert_eq!(committed(&net, 3), 1);
    // A matching one does: entries up to 2 are committed.
    r.commit_term = 1;
    net.raw(3).step(r).unwrap();
    assert_eq!(committed(&net, 3), 2);
}

/// Without check-quorum or pre-vote, a follower whose term was raised by a
/// vote request the leader never saw (in the engine: from a removed replica,
/// whose messages the other replicas drop) must still answer the leader's
/// lower-term heartbeats with its term. Otherwise, if it cannot campaign
/// itself (a learner in its own stale configuration), the leader never
/// learns the term, the follower ignores it for good and never catches up.
#[test]
fn without_check_quorum_a_stale_leader_still_learns_a_followers_higher_term() {
    let mut net = cluster(&[1, 2, 3], |c| {
        c.check_quorum = false;
        c.pre_vote = false;
    });
    elect(&mut net, 1);
    // A vote request at term 5 reaches 3 alone (refused: its log is behind).
    let req = msg(MessageType::MsgRequestVote, 2, 3, 5);
    net.raw(3).step(req).unwrap();
    net.process(3);
    net.drain_queue();
    assert_eq!(net.raft(3).term, 5);
    assert_eq!(net.raft(1).term, 1, "the leader did not hear of it");
    // 3 does not tick, so it never campaigns (as a learner would not): the
    // leader's heartbeats, answered with term 5, are the only way out.
    for _ in 0..40 {
        net.tick(1);
        net.tick(2);
        net.stabilize();
        net.check().unwrap();
    }
    assert!(net.raft(1).term >= 5, "the leader learned the term");
    let leader = net.leader().expect("a leader");
    assert!(net.raft(leader).term > 5);
    assert_eq!(net.raft(3).leader_id, leader);
    assert_eq!(committed(&net, 3), committed(&net, leader));
}
