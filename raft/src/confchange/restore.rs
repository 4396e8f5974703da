//! Rebuilding a configuration from its persisted form.

use crate::errors::Result;
use crate::progress::Configuration;
use crate::quorum::{JointConfig, MajorityConfig};
use crate::types::ConfState;

use super::changer::check_invariants;

/// The configuration a [`ConfState`] describes.
///
/// # Errors
/// [`crate::Error::ConfChangeError`] if `cs` breaks a configuration
/// invariant (a node both learner and voter, `learners_next` outside a joint
/// configuration, ...), e.g. because it was read from a damaged store.
pub fn restore(cs: &ConfState) -> Result<Configuration> {
    let conf = Configuration {
        voters: JointConfig {
            incoming: MajorityConfig::new(cs.voters.iter().copied().collect()),
            outgoing: MajorityConfig::new(cs.voters_outgoing.iter().copied().collect()),
        },
        learners: cs.learners.iter().copied().collect(),
        learners_next: cs.learners_next.iter().copied().collect(),
        auto_leave: cs.auto_leave,
    };
    if conf.all_ids().contains(&0) {
        return Err(crate::Error::ConfChangeError(
            "node id 0 in configuration".into(),
        ));
    }
    check_invariants(&conf)?;
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confchange::{apply_conf_change_to, Changer};
    use crate::types::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

    fn cc(t: ConfChangeType, id: u64) -> ConfChangeSingle {
        ConfChangeSingle {
            change_type: t,
            node_id: id,
        }
    }

    #[test]
    fn round_trips_simple_and_joint_states() {
        let states = [
            ConfState::from_voters([1, 2, 3]),
            ConfState::from_parts([1, 2], [3, 4]),
            ConfState {
                voters: vec![1, 2, 4],
                learners: vec![5],
                voters_outgoing: vec![1, 2, 3],
                learners_next: vec![3],
                auto_leave: true,
            },
        ];
        for cs in states {
            let conf = restore(&cs).unwrap();
            assert_eq!(conf.to_conf_state(), cs);
        }
    }

    #[test]
    fn restore_equals_replaying_the_changes() {
        // Build a joint state by changes, then check that restoring its
        // ConfState gives the same configuration.
        let base = restore(&ConfState::from_voters([1, 2, 3])).unwrap();
        let joint = Changer::new(&base)
            .enter_joint(
                false,
                &[
                    cc(ConfChangeType::AddNode, 4),
                    cc(ConfChangeType::AddLearnerNode, 2),
                    cc(ConfChangeType::AddLearnerNode, 6),
                ],
            )
            .unwrap();
        assert_eq!(restore(&joint.to_conf_state()).unwrap(), joint);
    }

    #[test]
    fn malformed_states_are_errors() {
        let bad = [
            ConfState::from_parts([1, 2], [2]),
            ConfState {
                voters: vec![1],
                learners_next: vec![1],
                ..ConfState::default()
            },
            ConfState {
                voters: vec![1],
                auto_leave: true,
                ..ConfState::default()
            },
            ConfState::from_voters([0, 1]),
        ];
        for cs in bad {
            assert!(restore(&cs).is_err(), "{cs:?} should be rejected");
        }
    }

    #[test]
    fn apply_conf_change_to_is_pure() {
        let cs = ConfState::from_voters([1, 2, 3]);
        let v2 = ConfChangeV2 {
            transition: ConfChangeTransition::Explicit,
            changes: vec![
                cc(ConfChangeType::AddNode, 4),
                cc(ConfChangeType::RemoveNode, 1),
            ],
            context: vec![],
        };
        let joint = apply_conf_change_to(&cs, &v2).unwrap();
        assert_eq!(joint.voters, vec![2, 3, 4]);
        assert_eq!(joint.voters_outgoing, vec![1, 2, 3]);
        assert!(!joint.auto_leave);
        let left = apply_conf_change_to(&joint, &ConfChangeV2::default()).unwrap();
        assert_eq!(left, ConfState::from_voters([2, 3, 4]));
        assert!(apply_conf_change_to(&left, &ConfChangeV2::default()).is_err());
    }
}
