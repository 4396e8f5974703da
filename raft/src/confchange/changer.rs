//! Computing the configuration a membership change yields.

use crate::errors::{Error, Result};
use crate::progress::Configuration;
use crate::types::{ConfChangeSingle, ConfChangeType};

fn err(msg: impl Into<String>) -> Error {
    Error::ConfChangeError(msg.into())
}

/// Applies membership changes to a copy of a configuration. The input is
/// never modified: a rejected change leaves the caller's state untouched.
#[derive(Debug)]
pub struct Changer<'a> {
    conf: &'a Configuration,
}

impl<'a> Changer<'a> {
    /// A changer starting from `conf`.
    #[must_use]
    pub fn new(conf: &'a Configuration) -> Self {
        Changer { conf }
    }

    /// Enter a joint configuration: the current voters become the outgoing
    /// half and `ccs` is applied to the incoming half.
    ///
    /// # Errors
    /// If already joint, if there are no voters, or if the changes are invalid.
    pub fn enter_joint(&self, auto_leave: bool, ccs: &[ConfChangeSingle]) -> Result<Configuration> {
        if self.conf.voters.is_joint() {
            return Err(err("configuration is already joint"));
        }
        if self.conf.voters.incoming.is_empty() {
            return Err(err("cannot make a zero-voter configuration joint"));
        }
        let mut cfg = self.conf.clone();
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        apply(&mut cfg, ccs)?;
        cfg.auto_leave = auto_leave;
        check_invariants(&cfg)?;
        Ok(cfg)
    }

    /// Leave a joint configuration: drop the outgoing half and turn
    /// `learners_next` into learners.
    ///
    /// # Errors
    /// If the configuration is not joint.
    pub fn leave_joint(&self) -> Result<Configuration> {
        if !self.conf.voters.is_joint() {
            return Err(err("cannot leave a non-joint configuration"));
        }
        let mut cfg = self.conf.clone();
        let next = std::mem::take(&mut cfg.learners_next);
        cfg.learners.extend(next);
        cfg.voters.outgoing = Default::default();
        cfg.auto_leave = false;
        check_invariants(&cfg)?;
        Ok(cfg)
    }

    /// Apply changes that alter at most one voter, without joint consensus.
    ///
    /// # Errors
    /// If joint, if more than one voter would change, or if invalid.
    pub fn simple(&self, ccs: &[ConfChangeSingle]) -> Result<Configuration> {
        if self.conf.voters.is_joint() {
            return Err(err("cannot apply a simple change in a joint configuration"));
        }
        let mut cfg = self.conf.clone();
        apply(&mut cfg, ccs)?;
        let before = self.conf.voters.incoming.ids();
        let after = cfg.voters.incoming.ids();
        if before.symmetric_difference(after).count() > 1 {
            return Err(err(
                "more than one voter changed without entering joint consensus",
            ));
        }
        check_invariants(&cfg)?;
        Ok(cfg)
    }
}

fn apply(cfg: &mut Configuration, ccs: &[ConfChangeSingle]) -> Result<()> {
    for cc in ccs {
        if cc.node_id == 0 {
            return Err(err("node id 0 is not a valid member"));
        }
        match cc.change_type {
            ConfChangeType::AddNode => make_voter(cfg, cc.node_id),
            ConfChangeType::AddLearnerNode => make_learner(cfg, cc.node_id),
            ConfChangeType::RemoveNode => remove(cfg, cc.node_id),
        }
    }
    if cfg.voters.incoming.is_empty() {
        return Err(err("removed all voters"));
    }
    Ok(())
}

fn make_voter(cfg: &mut Configuration, id: u64) {
    cfg.voters.incoming.ids_mut().insert(id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
}

fn make_learner(cfg: &mut Configuration, id: u64) {
    if cfg.learners.contains(&id) {
        return;
    }
    cfg.voters.incoming.ids_mut().remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    // An outgoing voter keeps voting until the joint state is left, so it
    // can only become a learner then.
    if cfg.voters.outgoing.contains(id) {
        cfg.learners_next.insert(id);
    } else {
        cfg.learners.insert(id);
    }
}

fn remove(cfg: &mut Configuration, id: u64) {
    cfg.voters.incoming.ids_mut().remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
}

/// Check the invariants documented on [`Configuration`].
///
/// # Errors
/// A description of the first violated invariant.
pub fn check_invariants(cfg: &Configuration) -> Result<()> {
    for id in &cfg.learners {
        if cfg.voters.contains(*id) {
            return Err(err(format!("node {id} is both a learner and a voter")));
        }
    }
    for id in &cfg.learners_next {
        if !cfg.voters.outgoing.contains(*id) {
            return Err(err(format!(
                "node {id} is in learners_next but not an outgoing voter"
            )));
        }
        if cfg.learners.contains(id) {
            return Err(err(format!(
                "node {id} is in both learners and learners_next"
            )));
        }
    }
    if !cfg.voters.is_joint() {
        if !cfg.learners_next.is_empty() {
            return Err(err("learners_next is set outside a joint configuration"));
        }
        if cfg.auto_leave {
            return Err(err("auto_leave is set outside a joint configuration"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::JointConfig;
    use std::collections::BTreeSet;

    fn add(id: u64) -> ConfChangeSingle {
        ConfChangeSingle {
            change_type: ConfChangeType::AddNode,
            node_id: id,
        }
    }
    fn learner(id: u64) -> ConfChangeSingle {
        ConfChangeSingle {
            change_type: ConfChangeType::AddLearnerNode,
            node_id: id,
        }
    }
    fn rm(id: u64) -> ConfChangeSingle {
        ConfChangeSingle {
            change_type: ConfChangeType::RemoveNode,
            node_id: id,
        }
    }
    fn voters(ids: &[u64]) -> Configuration {
        Configuration {
            voters: JointConfig::new(ids.iter().copied().collect()),
            ..Configuration::default()
        }
    }
    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn simple_adds_and_removes_one_voter() {
        let c = voters(&[1]);
        let c = Changer::new(&c).simple(&[add(2)]).unwrap();
        assert_eq!(c.voters.incoming.ids(), &set(&[1, 2]));
        let c = Changer::new(&c).simple(&[add(3), learner(4)]).unwrap();
        assert_eq!(c.voters.incoming.ids(), &set(&[1, 2, 3]));
        assert_eq!(c.learners, set(&[4]));
        let c = Changer::new(&c).simple(&[rm(2)]).unwrap();
        assert_eq!(c.voters.incoming.ids(), &set(&[1, 3]));
        // Re-adding an existing voter is a no-op, not an error.
        let c2 = Changer::new(&c).simple(&[add(1)]).unwrap();
        assert_eq!(c2, c);
    }

    #[test]
    fn simple_rejects_two_voter_changes() {
        let c = voters(&[1, 2, 3]);
        let e = Changer::new(&c).simple(&[add(4), add(5)]).unwrap_err();
        assert!(matches!(e, Error::ConfChangeError(ref m) if m.contains("more than one voter")));
        let e = Changer::new(&c).simple(&[rm(1), add(4)]).unwrap_err();
        assert!(matches!(e, Error::ConfChangeError(_)));
        // Promoting a learner while adding another learner is one voter change.
        let c = Changer::new(&c).simple(&[learner(4)]).unwrap();
        assert!(Changer::new(&c).simple(&[add(4), learner(5)]).is_ok());
    }

    #[test]
    fn cannot_remove_all_voters_or_use_id_zero() {
        let c = voters(&[1]);
        assert!(Changer::new(&c).simple(&[rm(1)]).is_err());
        assert!(Changer::new(&c).simple(&[add(0)]).is_err());
        assert!(Changer::new(&c).enter_joint(true, &[rm(1)]).is_err());
    }

    #[test]
    fn promote_and_demote() {
        let c = voters(&[1, 2]);
        let c = Changer::new(&c).simple(&[learner(3)]).unwrap();
        let c = Changer::new(&c).simple(&[add(3)]).unwrap();
        assert_eq!(c.voters.incoming.ids(), &set(&[1, 2, 3]));
        assert!(c.learners.is_empty());
        let c = Changer::new(&c).simple(&[learner(3)]).unwrap();
        assert_eq!(c.voters.incoming.ids(), &set(&[1, 2]));
        assert_eq!(c.learners, set(&[3]));
    }

    #[test]
    fn joint_enter_and_leave() {
        let c = voters(&[1, 2, 3]);
        let j = Changer::new(&c)
            .enter_joint(true, &[add(4), rm(3), learner(3)])
            .unwrap();
        assert_eq!(j.voters.incoming.ids(), &set(&[1, 2, 4]));
        assert_eq!(j.voters.outgoing.ids(), &set(&[1, 2, 3]));
        assert_eq!(
            j.learners_next,
            set(&[3]),
            "outgoing voter demotes on leave"
        );
        assert!(j.learners.is_empty());
        assert!(j.auto_leave);
        // No nesting, no simple changes while joint.
        assert!(Changer::new(&j).enter_joint(false, &[add(5)]).is_err());
        assert!(Changer::new(&j).simple(&[add(5)]).is_err());
        let l = Changer::new(&j).leave_joint().unwrap();
        assert_eq!(l.voters.incoming.ids(), &set(&[1, 2, 4]));
        assert!(!l.voters.is_joint());
        assert_eq!(l.learners, set(&[3]));
        assert!(l.learners_next.is_empty());
        assert!(!l.auto_leave);
        assert!(Changer::new(&l).leave_joint().is_err());
    }

    #[test]
    fn invariants_catch_bad_configurations() {
        let mut c = voters(&[1, 2]);
        c.learners.insert(2);
        assert!(check_invariants(&c).is_err());
        let mut c = voters(&[1, 2]);
        c.auto_leave = true;
        assert!(check_invariants(&c).is_err());
        let mut c = voters(&[1, 2]);
        c.learners_next.insert(3);
        assert!(check_invariants(&c).is_err());
        assert!(check_invariants(&voters(&[1, 2])).is_ok());
    }

    #[test]
    fn rejected_change_leaves_input_untouched() {
        let c = voters(&[1, 2, 3]);
        let before = c.clone();
        let _ = Changer::new(&c).simple(&[add(4), add(5)]);
        assert_eq!(c, before);
    }
}
