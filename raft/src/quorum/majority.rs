//! A simple majority configuration.

use std::collections::BTreeSet;

use super::VoteResult;

/// A set of voters deciding by simple majority. A `BTreeSet` keeps every
/// iteration in id order, which keeps the core deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    voters: BTreeSet<u64>,
}

impl MajorityConfig {
    /// A configuration of these voters.
    #[must_use]
    pub fn new(voters: BTreeSet<u64>) -> Self {
        MajorityConfig { voters }
    }

    /// The voters, in id order.
    #[must_use]
    pub fn ids(&self) -> &BTreeSet<u64> {
        &self.voters
    }

    /// Mutable access for the conf-change machinery.
    pub(crate) fn ids_mut(&mut self) -> &mut BTreeSet<u64> {
        &mut self.voters
    }

    /// Number of voters.
    #[must_use]
    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// True if there are no voters.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// True if `id` is a voter.
    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    /// The size of a quorum: more than half.
    #[must_use]
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The largest index acknowledged by a quorum, given each voter's acked
    /// index (`None`: unknown, counted as 0). An empty configuration returns
    /// `u64::MAX` so that it never holds back a joint configuration.
    pub fn committed_index(&self, acked: impl Fn(u64) -> Option<u64>) -> u64 {
        if self.voters.is_empty() {
            return u64::MAX;
        }
        let mut indexes: Vec<u64> = self
            .voters
            .iter()
            .map(|&id| acked(id).unwrap_or(0))
            .collect();
        // Descending: the quorum-th largest is acked by at least a quorum.
        indexes.sort_unstable_by(|a, b| b.cmp(a));
        indexes[self.quorum() - 1]
    }

    /// Tally the votes cast (`Some(true)` granted, `Some(false)` rejected,
    /// `None` not answered). An empty configuration wins, by convention, so
    /// that joint configurations with an empty half behave like simple ones.
    pub fn vote_result(&self, vote: impl Fn(u64) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0usize, 0usize);
        for &id in &self.voters {
            match vote(id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let q = self.quorum();
        if granted >= q {
            VoteResult::Won
        } else if granted + missing >= q {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }

    /// True if the ids in `set` include a quorum of this configuration.
    pub fn has_quorum(&self, set: &BTreeSet<u64>) -> bool {
        self.vote_result(|id| set.contains(&id).then_some(true)) == VoteResult::Won
    }
}

impl FromIterator<u64> for MajorityConfig {
    fn from_iter<T: IntoIterator<Item = u64>>(iter: T) -> Self {
        MajorityConfig::new(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(ids: &[u64]) -> MajorityConfig {
        ids.iter().copied().collect()
    }

    #[test]
    fn committed_index_table() {
        // (voters, acked indexes, expected)
        type Case = (Vec<u64>, Vec<(u64, u64)>, u64);
        let cases: Vec<Case> = vec![
            (vec![], vec![], u64::MAX),
            (vec![1], vec![], 0),
            (vec![1], vec![(1, 12)], 12),
            (vec![1, 2], vec![(1, 12)], 0),
            (vec![1, 2], vec![(1, 12), (2, 5)], 5),
            (vec![1, 2, 3], vec![(1, 12), (2, 5)], 5),
            (vec![1, 2, 3], vec![(1, 12), (2, 5), (3, 7)], 7),
            (vec![1, 2, 3, 4], vec![(1, 12), (2, 5), (3, 7), (4, 9)], 7),
            (
                vec![1, 2, 3, 4, 5],
                vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)],
                3,
            ),
            // Acks from non-voters do not count.
            (vec![1, 2, 3], vec![(1, 9), (9, 9), (8, 9)], 0),
        ];
        for (voters, acks, want) in cases {
            let acked: BTreeMap<u64, u64> = acks.into_iter().collect();
            let got = cfg(&voters).committed_index(|id| acked.get(&id).copied());
            assert_eq!(got, want, "voters {voters:?} acked {acked:?}");
        }
    }

    #[test]
    fn vote_result_table() {
        use VoteResult::*;
        type Case = (Vec<u64>, Vec<(u64, bool)>, VoteResult);
        let cases: Vec<Case> = vec![
            (vec![], vec![], Won),
            (vec![1], vec![], Pending),
            (vec![1], vec![(1, true)], Won),
            (vec![1], vec![(1, false)], Lost),
            (vec![1, 2], vec![(1, true)], Pending),
            (vec![1, 2], vec![(1, true), (2, false)], Lost),
            (vec![1, 2, 3], vec![(1, true), (2, false)], Pending),
            (vec![1, 2, 3], vec![(1, true), (2, true)], Won),
            (vec![1, 2, 3], vec![(1, false), (2, false)], Lost),
            (vec![1, 2, 3, 4], vec![(1, true), (2, true)], Pending),
            (
                vec![1, 2, 3, 4],
                vec![(1, true), (2, true), (3, false)],
                Pending,
            ),
            (
                vec![1, 2, 3, 4],
                vec![(1, true), (3, false), (4, false)],
                Lost,
            ),
            (
                vec![1, 2, 3, 4, 5],
                vec![(1, true), (2, true), (5, true)],
                Won,
            ),
        ];
        for (voters, votes, want) in cases {
            let v: BTreeMap<u64, bool> = votes.into_iter().collect();
            assert_eq!(
                cfg(&voters).vote_result(|id| v.get(&id).copied()),
                want,
                "voters {voters:?} votes {v:?}"
            );
        }
    }

    #[test]
    fn quorum_sizes() {
        for (n, q) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)] {
            let c: MajorityConfig = (1..=n).collect();
            assert_eq!(c.quorum(), q, "n = {n}");
        }
    }

    #[test]
    fn has_quorum_counts_only_voters() {
        let c = cfg(&[1, 2, 3]);
        assert!(c.has_quorum(&[1, 2].into_iter().collect()));
        assert!(!c.has_quorum(&[1, 7, 8].into_iter().collect()));
        assert!(c.has_quorum(&[1, 2, 3].into_iter().collect()));
    }
}
