//! The membership a committed conf-change entry yields.
//!
//! The state machine stores the [`ConfState`] in the same atomic batch as the
//! applied index, so it needs the configuration a change produces at apply
//! time, without a `RawNode` at hand. [`next_conf_state`] delegates to the
//! consensus core's pure changer (`tandem_raft::confchange`), the same code
//! `RawNode::apply_conf_change` runs, so the stored configuration and the
//! node's can never disagree.

use std::collections::BTreeSet;

use tandem_raft::{ConfChangeV2, ConfState, EntryType};

use super::error::{Error, Result};

/// A membership change decoded from a committed entry.
pub(crate) fn decode_conf_change(
    index: u64,
    entry_type: EntryType,
    data: &[u8],
) -> Result<ConfChangeV2> {
    let corrupt = |e: tandem_raft::Error| Error::CorruptConfChange {
        index,
        reason: e.to_string(),
    };
    match entry_type {
        EntryType::EntryConfChange => {
            let cc: tandem_raft::ConfChange = tandem_raft::types::decode(data).map_err(corrupt)?;
            Ok(tandem_raft::ConfChangeI::into_v2(cc))
        }
        // An empty V2 change is "leave the joint configuration"; leaders may
        // append it with empty data.
        EntryType::EntryConfChangeV2 if data.is_empty() => Ok(ConfChangeV2::default()),
        EntryType::EntryConfChangeV2 => tandem_raft::types::decode(data).map_err(corrupt),
        EntryType::EntryNormal => unreachable!("normal entries are commands"),
    }
}

/// The configuration that applying `cc` to `current` yields, or why `cc` is
/// refused. Deterministic: every replica computes the same answer.
///
/// # Errors
/// A description of the rule `cc` breaks (leaving a non-joint
/// configuration, entering joint twice, removing every voter, changing more
/// than one voter without joint consensus, ...).
pub fn next_conf_state(
    current: &ConfState,
    cc: &ConfChangeV2,
) -> std::result::Result<ConfState, String> {
    tandem_raft::confchange::apply_conf_change_to(current, cc).map_err(|e| e.to_string())
}

/// Every replica a configuration names: voters, learners, and both sides
/// of a joint configuration.
pub fn conf_members(cs: &ConfState) -> impl Iterator<Item = u64> + '_ {
    cs.voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next)
        .copied()
}

/// The replicas seen removed once the configuration moves from `old` to
/// `new`: those already removed, plus the members of `old` that `new`
/// leaves out, minus any that `new` names. Ids are never reused (see
/// `Cluster::add_learner`), so the last rule only matters for a
/// configuration that went back to an older one through a snapshot.
#[must_use]
pub fn removed_after(removed: &BTreeSet<u64>, old: &ConfState, new: &ConfState) -> BTreeSet<u64> {
    let next: BTreeSet<u64> = conf_members(new).collect();
    removed
        .iter()
        .copied()
        .chain(conf_members(old))
        .filter(|id| !next.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use tandem_raft::{ConfChangeSingle, ConfChangeTransition, ConfChangeType};

    use super::*;

    fn change(t: ConfChangeType, id: u64) -> ConfChangeSingle {
        ConfChangeSingle {
            change_type: t,
            node_id: id,
        }
    }

    fn v2(changes: Vec<ConfChangeSingle>) -> ConfChangeV2 {
        ConfChangeV2 {
            changes,
            ..ConfChangeV2::default()
        }
    }

    #[test]
    fn removed_replicas_accumulate_and_leave_the_set_when_named_again() {
        let none = BTreeSet::new();
        let three = ConfState::from_voters([1, 2, 3]);
        let mut joint = ConfState::from_voters([1, 2, 4]);
        joint.voters_outgoing = vec![1, 2, 3];
        // Entering the joint configuration removes nobody: 3 is outgoing.
        assert!(removed_after(&none, &three, &joint).is_empty());
        let left = ConfState::from_voters([1, 2, 4]);
        let removed = removed_after(&none, &joint, &left);
        assert_eq!(removed, BTreeSet::from([3]));
        // Later changes keep the tombstone; a learner leaving adds one.
        let mut with_learner = left.clone();
        with_learner.learners = vec![5];
        let removed = removed_after(&removed, &left, &with_learner);
        assert_eq!(removed, BTreeSet::from([3]));
        let removed = removed_after(&removed, &with_learner, &left);
        assert_eq!(removed, BTreeSet::from([3, 5]));
        // A configuration naming a removed id again (a snapshot of an older
        // one) takes it out of the set.
        assert_eq!(
            removed_after(&removed, &left, &three),
            BTreeSet::from([4, 5])
        );
    }

    #[test]
    fn simple_changes() {
        let cs = ConfState::from_voters([1, 2, 3]);
        let add = next_conf_state(&cs, &v2(vec![change(ConfChangeType::AddNode, 4)])).unwrap();
        assert_eq!(add.voters, vec![1, 2, 3, 4]);
        let learner =
            next_conf_state(&add, &v2(vec![change(ConfChangeType::AddLearnerNode, 4)])).unwrap();
        assert_eq!((learner.voters, learner.learners), (vec![1, 2, 3], vec![4]));
        let removed =
            next_conf_state(&cs, &v2(vec![change(ConfChangeType::RemoveNode, 2)])).unwrap();
        assert_eq!(removed.voters, vec![1, 3]);
    }

    #[test]
    fn refused_changes_say_why() {
        let one = ConfState::from_voters([1]);
        let err = next_conf_state(&one, &v2(vec![change(ConfChangeType::RemoveNode, 1)]));
        assert!(err.is_err());
        assert!(next_conf_state(&one, &ConfChangeV2::default()).is_err());
        let explicit_two = ConfChangeV2 {
            transition: ConfChangeTransition::Explicit,
            changes: vec![
                change(ConfChangeType::AddNode, 2),
                change(ConfChangeType::AddNode, 3),
            ],
            context: vec![],
        };
        let joint = next_conf_state(&one, &explicit_two).unwrap();
        assert!(next_conf_state(&joint, &explicit_two).is_err());
    }

    #[test]
    fn joint_round_trip_with_demotion() {
        let cs = ConfState::from_voters([1, 2, 3]);
        let cc = v2(vec![
            change(ConfChangeType::AddNode, 4),
            change(ConfChangeType::AddLearnerNode, 3),
        ]);
        let joint = next_conf_state(&cs, &cc).unwrap();
        assert_eq!(joint.voters, vec![1, 2, 4]);
        assert_eq!(joint.voters_outgoing, vec![1, 2, 3]);
        assert_eq!(joint.learners_next, vec![3]);
        assert!(joint.learners.is_empty());
        assert!(joint.auto_leave);
        let left = next_conf_state(&joint, &ConfChangeV2::default()).unwrap();
        assert_eq!(left.voters, vec![1, 2, 4]);
        assert!(left.voters_outgoing.is_empty());
        assert_eq!(left.learners, vec![3]);
        assert!(left.learners_next.is_empty());
        assert!(!left.auto_leave);
    }
}
