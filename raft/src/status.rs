//! A snapshot of a node's state for observability.

use std::collections::BTreeMap;

use crate::progress::Progress;
use crate::raft::{Raft, SoftState};
use crate::storage::Storage;
use crate::types::{ConfState, HardState};

/// What a node reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node's id.
    pub id: u64,
    /// Term, vote and commit.
    pub hs: HardState,
    /// Leader and role.
    pub ss: SoftState,
    /// The applied index.
    pub applied: u64,
    /// The persisted (durable) index.
    pub persisted: u64,
    /// The last log index.
    pub last_index: u64,
    /// The membership.
    pub conf_state: ConfState,
    /// Every member's replication progress; only on the leader.
    pub progress: Option<BTreeMap<u64, Progress>>,
    /// The transfer target, if a leadership transfer is in progress.
    pub lead_transferee: Option<u64>,
}

impl Status {
    /// Collect the status of `raft`.
    pub fn new<S: Storage>(raft: &Raft<S>) -> Self {
        let is_leader = raft.state == crate::raft::StateRole::Leader;
        Status {
            id: raft.id,
            hs: raft.hard_state(),
            ss: raft.soft_state(),
            applied: raft.raft_log.applied,
            persisted: raft.raft_log.persisted,
            last_index: raft.raft_log.last_index(),
            conf_state: raft.prs().conf_state(),
            progress: is_leader.then(|| raft.prs().progress_map()),
            lead_transferee: raft.lead_transferee,
        }
    }
}
