//! Membership changes: computing the configuration a change yields
//! ([`changer`]) and rebuilding a configuration from its persisted form
//! ([`restore`](mod@restore)). Both are pure: they touch no progress and no log, so the
//! engine can compute the next [`ConfState`] outside a `RawNode` with
//! [`apply_conf_change_to`] and get exactly what `RawNode::apply_conf_change`
//! produces.

pub mod changer;
pub mod restore;

pub use changer::Changer;
pub use restore::restore;

use crate::errors::Result;
use crate::progress::Configuration;
use crate::types::{ConfChangeV2, ConfState};

/// Apply `cc` to `conf`, returning the new configuration.
///
/// # Errors
/// [`crate::Error::ConfChangeError`] if the change is not allowed (leaving
/// a non-joint configuration, entering joint twice, removing every voter,
/// changing more than one voter without joint consensus, ...).
pub fn apply_to_configuration(conf: &Configuration, cc: &ConfChangeV2) -> Result<Configuration> {
    let changer = Changer::new(conf);
    if cc.leave_joint() {
        changer.leave_joint()
    } else if let Some(auto_leave) = cc.enter_joint() {
        changer.enter_joint(auto_leave, &cc.changes)
    } else {
        changer.simple(&cc.changes)
    }
}

/// The membership that applying `cc` to `cs` yields: the same computation
/// `RawNode::apply_conf_change` performs, usable without a node.
///
/// # Errors
/// [`crate::Error::ConfChangeError`] if `cs` is malformed or the change is
/// not allowed from it.
pub fn apply_conf_change_to(cs: &ConfState, cc: &ConfChangeV2) -> Result<ConfState> {
    let conf = restore(cs)?;
    Ok(apply_to_configuration(&conf, cc)?.to_conf_state())
}
