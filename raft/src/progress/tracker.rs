//! The membership configuration and the progress of every member.

use std::collections::{BTreeMap, BTreeSet};

use crate::quorum::{JointConfig, VoteResult};
use crate::types::ConfState;

use super::Progress;

/// A membership configuration as the core works with it (the in-memory
/// form of [`ConfState`]).
///
/// Invariants (checked by [`crate::confchange`]): learners are disjoint
/// from both voter halves; `learners_next` is a subset of the outgoing
/// voters and disjoint from `learners`; outside a joint configuration
/// `learners_next` is empty and `auto_leave` is false.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    /// The voters, possibly joint.
    pub voters: JointConfig,
    /// Learners of the incoming configuration.
    pub learners: BTreeSet<u64>,
    /// Outgoing voters that turn into learners when the joint state is left.
    pub learners_next: BTreeSet<u64>,
    /// Leave the joint configuration automatically.
    pub auto_leave: bool,
}

impl Configuration {
    /// The persisted form.
    #[must_use]
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.ids().iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.ids().iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }

    /// True if no node has any role (a node that has not joined yet);
    /// the same as `all_ids().is_empty()`, without building the set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.voters.incoming.is_empty()
            && self.voters.outgoing.is_empty()
            && self.learners.is_empty()
            && self.learners_next.is_empty()
    }

    /// Every node that is part of the configuration in any role.
    #[must_use]
    pub fn all_ids(&self) -> BTreeSet<u64> {
        let mut ids = self.voters.ids();
        ids.extend(self.learners.iter().copied());
        ids.extend(self.learners_next.iter().copied());
        ids
    }
}

/// The configuration plus the progress and votes of its members. Maps are
/// ordered so that iteration (and so message order) is deterministic.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    progress: BTreeMap<u64, Progress>,
    conf: Configuration,
    votes: BTreeMap<u64, bool>,
    max_inflight: usize,
}

impl ProgressTracker {
    /// An empty tracker; appends to each peer are bounded by `max_inflight`.
    #[must_use]
    pub fn new(max_inflight: usize) -> Self {
        ProgressTracker {
            progress: BTreeMap::new(),
            conf: Configuration::default(),
            votes: BTreeMap::new(),
            max_inflight,
        }
    }

    /// The current configuration.
    #[must_use]
    pub fn conf(&self) -> &Configuration {
        &self.conf
    }

    /// The configuration in persisted form.
    #[must_use]
    pub fn conf_state(&self) -> ConfState {
        self.conf.to_conf_state()
    }

    /// Switch to `conf`: members that are new get a progress probing from
    /// `next_idx` (marked recently active so check-quorum gives them a
    /// chance); members that left lose theirs.
    pub fn apply_conf(&mut self, conf: Configuration, next_idx: u64) {
        let ids = conf.all_ids();
        self.progress.retain(|id, _| ids.contains(id));
        for id in ids {
            self.progress.entry(id).or_insert_with(|| {
                let mut pr = Progress::new(next_idx.max(1), self.max_inflight);
                pr.recent_active = true;
                pr
            });
        }
        self.votes.retain(|id, _| conf.voters.contains(*id));
        self.conf = conf;
    }

    /// Progress of `id`.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// Mutable progress of `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Progress> {
        self.progress.get_mut(&id)
    }

    /// All progress, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Progress)> {
        self.progress.iter()
    }

    /// All progress, mutable, in id order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Progress)> {
        self.progress.iter_mut()
    }

    /// A copy of every member's progress.
    #[must_use]
    pub fn progress_map(&self) -> BTreeMap<u64, Progress> {
        self.progress.clone()
    }

    /// The ids of all members with a progress, in order.
    #[must_use]
    pub fn ids(&self) -> Vec<u64> {
        self.progress.keys().copied().collect()
    }

    /// True if `id` votes (in either half).
    #[must_use]
    pub fn is_voter(&self, id: u64) -> bool {
        self.conf.voters.contains(id)
    }

    /// True if `id` is a learner (now or after leaving the joint state) and
    /// not a voter.
    #[must_use]
    pub fn is_learner(&self, id: u64) -> bool {
        !self.is_voter(id)
            && (self.conf.learners.contains(&id) || self.conf.learners_next.contains(&id))
    }

    /// True if the configuration has exactly one voter.
    #[must_use]
    pub fn is_singleton(&self) -> bool {
        self.conf.voters.is_singleton()
    }

    /// The largest index a quorum has matched.
    #[must_use]
    pub fn committed(&self) -> u64 {
        let prs = &self.progress;
        self.conf
            .voters
            .committed_index(|id| prs.get(&id).map(|p| p.matched))
    }

    /// Forget all recorded votes.
    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Record `id`'s vote unless it already voted.
    pub fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// Count votes: `(granted, rejected, result)`, counting only voters.
    #[must_use]
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let (mut granted, mut rejected) = (0, 0);
        for (id, &v) in &self.votes {
            if !self.conf.voters.contains(*id) {
                continue;
            }
            if v {
                granted += 1;
            } else {
                rejected += 1;
            }
        }
        let votes = &self.votes;
        (
            granted,
            rejected,
            self.conf.voters.vote_result(|id| votes.get(&id).copied()),
        )
    }

    /// True if a quorum has been active since the last check, counting
    /// `self_id` as active. Clears every `recent_active` flag but the
    /// leader's own, so the next check needs fresh evidence.
    pub fn quorum_recently_active(&mut self, self_id: u64) -> bool {
        let mut active = BTreeSet::new();
        for (&id, pr) in &mut self.progress {
            if id == self_id {
                pr.recent_active = true;
                active.insert(id);
                continue;
            }
            if pr.recent_active {
                active.insert(id);
            }
            pr.recent_active = false;
        }
        self.conf.voters.has_quorum(&active)
    }

    /// True if the ids in `set` contain a quorum.
    #[must_use]
    pub fn has_quorum(&self, set: &BTreeSet<u64>) -> bool {
        self.conf.voters.has_quorum(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::MajorityConfig;

    fn tracker(voters: &[u64], learners: &[u64]) -> ProgressTracker {
        let mut t = ProgressTracker::new(8);
        let conf = Configuration {
            voters: JointConfig::new(voters.iter().copied().collect()),
            learners: learners.iter().copied().collect(),
            ..Configuration::default()
        };
        t.apply_conf(conf, 5);
        t
    }

    #[test]
    fn is_empty_agrees_with_all_ids() {
        let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
        let mut confs = vec![Configuration::default()];
        for (incoming, outgoing, learners, next) in [
            (&[1u64][..], &[][..], &[][..], &[][..]),
            (&[], &[2], &[], &[]),
            (&[], &[], &[3], &[]),
            (&[], &[], &[], &[4]),
            (&[1, 2], &[2, 3], &[5], &[3]),
        ] {
            let mut voters = JointConfig::new(set(incoming));
            voters.outgoing = MajorityConfig::new(set(outgoing));
            confs.push(Configuration {
                voters,
                learners: set(learners),
                learners_next: set(next),
                auto_leave: false,
            });
        }
        let empties: Vec<bool> = confs.iter().map(Configuration::is_empty).collect();
        assert_eq!(empties, [true, false, false, false, false, false]);
        for c in &confs {
            assert_eq!(c.is_empty(), c.all_ids().is_empty(), "{c:?}");
        }
    }

    #[test]
    fn apply_conf_adds_and_removes_progress() {
        let mut t = tracker(&[1, 2, 3], &[4]);
        assert_eq!(t.ids(), vec![1, 2, 3, 4]);
        assert_eq!(t.get(2).unwrap().next_idx, 5);
        assert!(t.get(2).unwrap().recent_active);
        t.get_mut(2).unwrap().matched = 4;
        let conf = Configuration {
            voters: JointConfig::new([1, 2].into_iter().collect()),
            ..Configuration::default()
        };
        t.apply_conf(conf, 9);
        assert_eq!(t.ids(), vec![1, 2]);
        assert_eq!(t.get(2).unwrap().matched, 4, "existing progress is kept");
        assert!(!t.is_learner(4) && !t.is_voter(4));
    }

    #[test]
    fn committed_ignores_learners() {
        let mut t = tracker(&[1, 2, 3], &[4, 5]);
        for (id, m) in [(1, 10), (2, 2), (3, 1), (4, 10), (5, 10)] {
            t.get_mut(id).unwrap().matched = m;
        }
        assert_eq!(t.committed(), 2);
    }

    #[test]
    fn votes_count_once_and_only_from_voters() {
        let mut t = tracker(&[1, 2, 3], &[4]);
        t.record_vote(1, true);
        t.record_vote(1, false);
        t.record_vote(4, true);
        assert_eq!(t.tally_votes(), (1, 0, VoteResult::Pending));
        t.record_vote(2, false);
        t.record_vote(3, false);
        assert_eq!(t.tally_votes(), (1, 2, VoteResult::Lost));
        t.reset_votes();
        assert_eq!(t.tally_votes(), (0, 0, VoteResult::Pending));
    }

    #[test]
    fn quorum_recently_active_resets_flags() {
        let mut t = tracker(&[1, 2, 3], &[]);
        for id in [2, 3] {
            t.get_mut(id).unwrap().recent_active = false;
        }
        assert!(!t.quorum_recently_active(1));
        t.get_mut(3).unwrap().recent_active = true;
        assert!(t.quorum_recently_active(1));
        assert!(!t.get(3).unwrap().recent_active);
        assert!(!t.quorum_recently_active(1), "flags were cleared");
    }

    #[test]
    fn joint_commit_and_conf_state() {
        let mut t = ProgressTracker::new(4);
        let conf = Configuration {
            voters: JointConfig {
                incoming: MajorityConfig::new([1, 2, 3].into_iter().collect()),
                outgoing: MajorityConfig::new([1, 4, 5].into_iter().collect()),
            },
            learners_next: [4].into_iter().collect(),
            auto_leave: true,
            ..Configuration::default()
        };
        t.apply_conf(conf, 1);
        assert_eq!(t.ids(), vec![1, 2, 3, 4, 5]);
        for (id, m) in [(1, 9), (2, 9), (3, 9), (4, 1), (5, 1)] {
            t.get_mut(id).unwrap().matched = m;
        }
        assert_eq!(t.committed(), 1, "outgoing half holds the commit back");
        let cs = t.conf_state();
        assert_eq!(cs.voters, vec![1, 2, 3]);
        assert_eq!(cs.voters_outgoing, vec![1, 4, 5]);
        assert_eq!(cs.learners_next, vec![4]);
        assert!(cs.auto_leave);
        assert!(!t.is_learner(4), "still an outgoing voter");
    }
}
