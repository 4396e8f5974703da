//! The membership a committed conf-change entry yields.
//!
//! The state machine stores the [`ConfState`] in the same atomic batch as the
//! applied index, so it needs the configuration a change produces at apply
//! time, without a `RawNode` at hand. [`next_conf_state`] is the one function
//! that computes it; it is deliberately small so it can be replaced by the
//! consensus core's own pure changer once that is available, keeping a
//! single definition of the rules.
//!
//! Rules (Raft thesis §4.3, joint consensus):
//! - a simple change (one change, `Auto` transition) may alter at most one voter;
//! - entering a joint configuration copies the voters to `voters_outgoing`,
//!   then applies the changes to the incoming side; a voter demoted to learner
//!   stays a voter of the outgoing side and is parked in `learners_next`;
//! - leaving (an empty `Auto` change) drops the outgoing side and turns
//!   `learners_next` into learners;
//! - the incoming configuration must keep at least one voter.

use tandem_raft::{ConfChangeType, ConfChangeV2, ConfState, EntryType};

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
/// A description of the rule `cc` breaks.
pub fn next_conf_state(
    current: &ConfState,
    cc: &ConfChangeV2,
) -> std::result::Result<ConfState, String> {
    let joint = !current.voters_outgoing.is_empty();
    let mut next = current.clone();
    if cc.leave_joint() {
        if !joint {
            return Err("cannot leave a joint configuration: not in one".into());
        }
        next.voters_outgoing.clear();
        for id in std::mem::take(&mut next.learners_next) {
            insert_sorted(&mut next.learners, id);
        }
        next.auto_leave = false;
        return Ok(next);
    }
    if joint {
        return Err("configuration is joint; leave it before another change".into());
    }
    let enter = cc.enter_joint();
    if let Some(auto_leave) = enter {
        next.voters_outgoing = next.voters.clone();
        next.auto_leave = auto_leave;
    }
    for change in &cc.changes {
        let id = change.node_id;
        if id == 0 {
            return Err("node id 0 is not allowed".into());
        }
        match change.change_type {
            ConfChangeType::AddNode => {
                remove(&mut next.learners, id);
                remove(&mut next.learners_next, id);
                insert_sorted(&mut next.voters, id);
            }
            ConfChangeType::AddLearnerNode => {
                remove(&mut next.voters, id);
                if next.voters_outgoing.contains(&id) {
                    // Still votes in the outgoing configuration: becomes a
                    // learner only once the joint state is left.
                    insert_sorted(&mut next.learners_next, id);
                } else {
                    insert_sorted(&mut next.learners, id);
                }
            }
            ConfChangeType::RemoveNode => {
                remove(&mut next.voters, id);
                remove(&mut next.learners, id);
                remove(&mut next.learners_next, id);
            }
        }
    }
    if next.voters.is_empty() {
        return Err("removed all voters".into());
    }
    if enter.is_none() {
        let changed = symmetric_difference(&current.voters, &next.voters);
        if changed > 1 {
            return Err(format!(
                "a simple change may alter one voter, this one alters {changed}; use joint consensus"
            ));
        }
    }
    Ok(next)
}

fn insert_sorted(set: &mut Vec<u64>, id: u64) {
    if let Err(pos) = set.binary_search(&id) {
        set.insert(pos, id);
    }
}

fn remove(set: &mut Vec<u64>, id: u64) {
    set.retain(|&x| x != id);
}

fn symmetric_difference(a: &[u64], b: &[u64]) -> usize {
    a.iter().filter(|x| !b.contains(x)).count() + b.iter().filter(|x| !a.contains(x)).count()
}

#[cfg(test)]
mod tests {
    use tandem_raft::{ConfChangeSingle, ConfChangeTransition};

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
        assert_eq!(err.unwrap_err(), "removed all voters");
        assert!(next_conf_state(&one, &ConfChangeV2::default())
            .unwrap_err()
            .contains("not in one"));
        let explicit_two = ConfChangeV2 {
            transition: ConfChangeTransition::Explicit,
            changes: vec![
                change(ConfChangeType::AddNode, 2),
                change(ConfChangeType::AddNode, 3),
            ],
            context: vec![],
        };
        let joint = next_conf_state(&one, &explicit_two).unwrap();
        assert!(next_conf_state(&joint, &explicit_two)
            .unwrap_err()
            .contains("joint"));
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
