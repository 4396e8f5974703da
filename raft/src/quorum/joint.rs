//! Joint configurations: during a membership change under joint consensus
//! every decision needs a majority of the old *and* of the new voters.

use std::collections::BTreeSet;

use super::{MajorityConfig, VoteResult};

/// Two majority configurations; `outgoing` is empty unless a joint change
/// is in progress, in which case it holds the voters being replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    /// The configuration being moved to (or the only one).
    pub incoming: MajorityConfig,
    /// The configuration being moved away from; empty if not joint.
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// A non-joint configuration with these voters.
    #[must_use]
    pub fn new(voters: BTreeSet<u64>) -> Self {
        JointConfig {
            incoming: MajorityConfig::new(voters),
            outgoing: MajorityConfig::default(),
        }
    }

    /// True while in a joint configuration.
    #[must_use]
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// All voters of either half, in id order.
    #[must_use]
    pub fn ids(&self) -> BTreeSet<u64> {
        self.incoming
            .ids()
            .union(self.outgoing.ids())
            .copied()
            .collect()
    }

    /// True if `id` votes in either half.
    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// The largest index acknowledged by a quorum of both halves.
    pub fn committed_index(&self, acked: impl Fn(u64) -> Option<u64> + Copy) -> u64 {
        let i = self.incoming.committed_index(acked);
        let o = self.outgoing.committed_index(acked);
        i.min(o)
    }

    /// Both halves must win; either losing loses.
    pub fn vote_result(&self, vote: impl Fn(u64) -> Option<bool> + Copy) -> VoteResult {
        let i = self.incoming.vote_result(vote);
        let o = self.outgoing.vote_result(vote);
        match (i, o) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// True if `set` contains a quorum of both halves.
    #[must_use]
    pub fn has_quorum(&self, set: &BTreeSet<u64>) -> bool {
        self.incoming.has_quorum(set) && self.outgoing.has_quorum(set)
    }

    /// True if the only voter is `id` (and nothing is joint).
    #[must_use]
    pub fn is_singleton(&self) -> bool {
        !self.is_joint() && self.incoming.len() == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn joint(inc: &[u64], out: &[u64]) -> JointConfig {
        JointConfig {
            incoming: inc.iter().copied().collect(),
            outgoing: out.iter().copied().collect(),
        }
    }

    #[test]
    fn joint_commit_is_min_of_halves() {
        let acked: BTreeMap<u64, u64> = [(1, 10), (2, 8), (3, 3), (4, 2), (5, 1)]
            .into_iter()
            .collect();
        let a = |id| acked.get(&id).copied();
        assert_eq!(joint(&[1, 2, 3], &[]).committed_index(a), 8);
        assert_eq!(joint(&[1, 2, 3], &[3, 4, 5]).committed_index(a), 2);
        assert_eq!(joint(&[3, 4, 5], &[1, 2, 3]).committed_index(a), 2);
        assert_eq!(joint(&[1, 2], &[1]).committed_index(a), 8);
        assert_eq!(joint(&[], &[]).committed_index(a), u64::MAX);
    }

    #[test]
    fn joint_votes_need_both_halves() {
        use VoteResult::*;
        type Case = (Vec<u64>, Vec<u64>, Vec<(u64, bool)>, VoteResult);
        let cases: Vec<Case> = vec![
            (vec![1, 2, 3], vec![], vec![(1, true), (2, true)], Won),
            (
                vec![1, 2, 3],
                vec![4, 5, 6],
                vec![(1, true), (2, true)],
                Pending,
            ),
            (
                vec![1, 2, 3],
                vec![4, 5, 6],
                vec![(1, true), (2, true), (4, true), (5, true)],
                Won,
            ),
            (
                vec![1, 2, 3],
                vec![4, 5, 6],
                vec![(1, true), (2, true), (4, false), (5, false)],
                Lost,
            ),
            (
                vec![1, 2, 3],
                vec![3, 4, 5],
                vec![(3, true), (1, false), (2, false)],
                Lost,
            ),
            (
                vec![1, 2, 3],
                vec![3, 4, 5],
                vec![(3, true), (2, true), (4, true)],
                Won,
            ),
        ];
        for (i, o, votes, want) in cases {
            let v: BTreeMap<u64, bool> = votes.into_iter().collect();
            assert_eq!(
                joint(&i, &o).vote_result(|id| v.get(&id).copied()),
                want,
                "{i:?} {o:?} {v:?}"
            );
        }
    }

    #[test]
    fn ids_union_and_singleton() {
        let j = joint(&[1, 2], &[2, 3]);
        assert_eq!(j.ids().into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(j.is_joint());
        assert!(!j.is_singleton());
        assert!(joint(&[7], &[]).is_singleton());
        assert!(!joint(&[7], &[7]).is_singleton());
    }

    #[test]
    fn joint_has_quorum() {
        let j = joint(&[1, 2, 3], &[4, 5, 6]);
        assert!(!j.has_quorum(&[1, 2].into_iter().collect()));
        assert!(j.has_quorum(&[1, 2, 4, 6].into_iter().collect()));
    }
}
