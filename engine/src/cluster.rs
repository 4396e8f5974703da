//! [`Cluster`]: N replicas in one process under one directory
//! (`dir/node-<id>`), talking over an [`InProcNetwork`]; reopened from disk
//! with the same call.
//!
//! The cluster is what tests, the demo and single-process deployments use
//! (replicas on different disks still protect against a disk failure).
//! Replicas in separate processes use [`Replica::open`] with their own
//! [`crate::Transport`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tandem_raft::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, StateRole,
};

use crate::config::{ClusterConfig, Config};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::node::{wait, NodeStatus};
use crate::replica::Replica;
use crate::sm::CommandResult;
use crate::transport::InProcNetwork;

/// N replicas in one process. Cheap to share: wrap it in an `Arc` (as
/// [`Cluster::open`] does).
pub struct Cluster {
    dir: PathBuf,
    cfg: ClusterConfig,
    net: InProcNetwork,
    replicas: RwLock<BTreeMap<u64, Arc<Replica>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

/// The directory of replica `id` under a cluster directory.
#[must_use]
pub fn replica_dir(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}"))
}

/// The replica ids found under a cluster directory (`node-<id>` children).
///
/// # Errors
/// [`Error::Io`] if the directory cannot be read.
pub fn existing_replicas(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node-"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            if id != 0 && entry.path().join("sm").is_dir() {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl Cluster {
    /// Open the cluster stored in `dir`, or create one with
    /// `cfg.replicas` voters (ids `1..=replicas`) if `dir` holds none.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config; [`Error::Locked`] if a replica is
    /// open elsewhere; storage errors.
    pub fn open(dir: impl AsRef<Path>, cfg: ClusterConfig) -> Result<Arc<Cluster>> {
        cfg.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let net = InProcNetwork::new(cfg.node.cluster_id ^ 0x5EED);
        let cluster = Arc::new(Cluster {
            dir: dir.clone(),
            cfg: cfg.clone(),
            net,
            replicas: RwLock::new(BTreeMap::new()),
        });
        let existing = existing_replicas(&dir)?;
        if existing.is_empty() {
            let voters: Vec<u64> = (1..=cfg.replicas).collect();
            for &id in &voters {
                cluster.start_replica(id, Some(&voters))?;
            }
        } else {
            for id in existing {
                cluster.start_replica(id, None)?;
            }
        }
        Ok(cluster)
    }

    fn node_config(&self, id: u64) -> Config {
        Config {
            id,
            ..self.cfg.node.clone()
        }
    }

    fn start_replica(&self, id: u64, bootstrap: Option<&[u64]>) -> Result<Arc<Replica>> {
        let cfg = self.node_config(id);
        let replica = Arc::new(Replica::open(
            &cfg,
            &replica_dir(&self.dir, id),
            Arc::new(self.net.transport(id)),
            bootstrap,
        )?);
        self.register(replica)
    }

    /// Start a brand-new, empty replica that a leader will add: it has no
    /// membership, so raft asks the leader for a snapshot.
    fn start_joining(&self, id: u64) -> Result<Arc<Replica>> {
        self.start_replica(id, None)
    }

    fn register(&self, replica: Arc<Replica>) -> Result<Arc<Replica>> {
        let id = replica.id();
        self.net.register(replica.inbox());
        self.replicas.write().insert(id, Arc::clone(&replica));
        Ok(replica)
    }

    /// The cluster directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster configuration.
    #[must_use]
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The in-process network, for fault injection.
    #[must_use]
    pub fn network(&self) -> &InProcNetwork {
        &self.net
    }

    /// A handle with sled's API that routes to the leader.
    #[must_use]
    pub fn db(self: &Arc<Self>) -> Db {
        Db::new(Arc::clone(self))
    }

    /// Ids of the running replicas.
    #[must_use]
    pub fn running(&self) -> Vec<u64> {
        self.replicas.read().keys().copied().collect()
    }

    /// A running replica.
    #[must_use]
    pub fn replica(&self, id: u64) -> Option<Arc<Replica>> {
        self.replicas.read().get(&id).cloned()
    }

    /// Stop replica `id` (its data stays on disk).
    ///
    /// # Errors
    /// [`Error::UnknownNode`] if it is not running.
    pub fn stop(&self, id: u64) -> Result<()> {
        let r = self
            .replicas
            .write()
            .remove(&id)
            .ok_or(Error::UnknownNode(id))?;
        self.net.unregister(id);
        r.shutdown();
        Ok(())
    }

    /// Restart a stopped replica from its directory.
    ///
    /// # Errors
    /// [`Error::UnknownNode`] if it has no directory; open errors.
    pub fn restart(&self, id: u64) -> Result<()> {
        if self.replicas.read().contains_key(&id) {
            return Ok(());
        }
        if !replica_dir(&self.dir, id).join("sm").is_dir() {
            return Err(Error::UnknownNode(id));
        }
        self.start_replica(id, None)?;
        Ok(())
    }

    /// Status of every running replica.
    #[must_use]
    pub fn status(&self) -> Vec<NodeStatus> {
        let replicas: Vec<Arc<Replica>> = self.replicas.read().values().cloned().collect();
        replicas.iter().filter_map(|r| r.status().ok()).collect()
    }

    /// The leader of the highest term among running replicas, if any.
    #[must_use]
    pub fn leader(&self) -> Option<u64> {
        self.status()
            .into_iter()
            .filter(|s| s.role == StateRole::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    /// Wait until some running replica leads.
    ///
    /// # Errors
    /// [`Error::NoQuorum`] if none does within `timeout`.
    pub fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                return Err(Error::NoQuorum(timeout));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn leader_replica(&self) -> Result<Arc<Replica>> {
        let id = self.wait_leader(self.cfg.client_deadline)?;
        self.replica(id).ok_or(Error::NotLeader { leader: None })
    }

    fn change(&self, change_type: ConfChangeType, id: u64) -> Result<()> {
        if id == 0 {
            return Err(Error::UnknownNode(0));
        }
        self.propose_conf_change(ConfChangeV2 {
            changes: vec![ConfChangeSingle {
                change_type,
                node_id: id,
            }],
            ..ConfChangeV2::default()
        })
    }

    /// Propose `cc` through the leader, retrying across leader changes
    /// within the client deadline, until it is applied or refused.
    fn propose_conf_change(&self, cc: ConfChangeV2) -> Result<()> {
        let deadline = Instant::now() + self.cfg.client_deadline;
        loop {
            let leader = self.leader_replica()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match wait(&leader.node().propose_conf_change(cc.clone()), left) {
                Ok(CommandResult::ConfChange(Ok(_))) => return Ok(()),
                Ok(CommandResult::ConfChange(Err(why))) => return Err(Error::ConfChange(why)),
                Ok(other) => return Err(Error::Storage(format!("conf change produced {other:?}"))),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The leader's status.
    fn leader_status(&self) -> Result<NodeStatus> {
        self.leader_replica()?.status()
    }

    /// Refuse to add `id` back if the `leader` has seen it removed: as in
    /// etcd, ids are never reused, and the replicas that saw it removed
    /// ignore its messages (and keep doing so across restarts).
    fn refuse_removed(leader: &NodeStatus, id: u64) -> Result<()> {
        if leader.removed.contains(&id) {
            return Err(Error::InvalidInput(format!(
                "replica {id} was removed from this cluster; ids are never reused, add a new one"
            )));
        }
        Ok(())
    }

    /// Start a new, empty replica `id` and add it as a learner: it receives
    /// the log but does not vote.
    ///
    /// Use a new id: as in etcd, the id of a removed replica is never
    /// reused (replicas that saw it removed ignore its messages).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the leader has seen `id` removed;
    /// [`Error::ConfChange`] if refused; open errors.
    pub fn add_learner(&self, id: u64) -> Result<()> {
        Self::refuse_removed(&self.leader_status()?, id)?;
        if self.replica(id).is_none() {
            self.start_joining(id)?;
        }
        self.change(ConfChangeType::AddLearnerNode, id)
    }

    /// Make `id` a voter (promoting a learner, or starting and adding a new replica).
    ///
    /// # Errors
    /// As [`Cluster::add_learner`].
    pub fn add_voter(&self, id: u64) -> Result<()> {
        Self::refuse_removed(&self.leader_status()?, id)?;
        if self.replica(id).is_none() {
            self.start_joining(id)?;
        }
        self.change(ConfChangeType::AddNode, id)
    }

    /// Promote learner `id` to voter.
    ///
    /// # Errors
    /// [`Error::UnknownNode`] if `id` is not a learner; as [`Cluster::add_voter`].
    pub fn promote(&self, id: u64) -> Result<()> {
        if !self.leader_status()?.conf_state.learners.contains(&id) {
            return Err(Error::UnknownNode(id));
        }
        self.change(ConfChangeType::AddNode, id)
    }

    /// Remove `id` from the membership (the leader too), then stop it.
    ///
    /// # Errors
    /// [`Error::UnknownNode`] if `id` is not a member; conf change errors.
    pub fn remove(&self, id: u64) -> Result<()> {
        let cs = self.leader_status()?.conf_state;
        if !cs.voters.contains(&id) && !cs.learners.contains(&id) {
            return Err(Error::UnknownNode(id));
        }
        self.change(ConfChangeType::RemoveNode, id)?;
        if self.replica(id).is_some() {
            self.stop(id)?;
        }
        Ok(())
    }

    /// Replace voter `old` by `new` in one membership change, through a
    /// joint configuration: while it lasts, every decision needs a quorum of
    /// the old voters and one of the new, so the cluster never passes
    /// through a configuration that a single failure could stall (as adding
    /// first, to an even number of voters, would) and never runs with one
    /// voter fewer (as removing first would). `new` is started, empty, if it
    /// does not run here; a learner is promoted. Returns once the cluster has
    /// left the joint configuration; `old` (the leader too) is then stopped
    /// if it runs here.
    ///
    /// # Errors
    /// [`Error::UnknownNode`] if `old` is not a voter;
    /// [`Error::InvalidInput`] if `new` is `old`, `0`, already a voter or a
    /// replica the leader has seen removed;
    /// [`Error::ConfChange`] if refused (for instance while another joint
    /// change is under way); [`Error::Timeout`] if the joint configuration
    /// is not left within the client deadline; open errors.
    ///
    /// # Examples
    /// ```no_run
    /// # use tandem::{Cluster, ClusterConfig};
    /// # fn main() -> tandem::Result<()> {
    /// let cluster = Cluster::open("./data", ClusterConfig::with_replicas(3))?;
    /// cluster.replace(3, 4)?; // voters 1, 2, 4; replica 3 stopped
    /// # Ok(())
    /// # }
    /// ```
    pub fn replace(&self, old: u64, new: u64) -> Result<()> {
        if new == old || new == 0 {
            return Err(Error::InvalidInput(format!(
                "cannot replace voter {old} by {new}"
            )));
        }
        let leader = self.leader_status()?;
        if !leader.conf_state.voters.contains(&old) {
            return Err(Error::UnknownNode(old));
        }
        if leader.conf_state.voters.contains(&new) {
            return Err(Error::InvalidInput(format!("{new} is a voter already")));
        }
        Self::refuse_removed(&leader, new)?;
        if self.replica(new).is_none() {
            self.start_joining(new)?;
        }
        let cc = ConfChangeV2 {
            // Two voters change: a joint configuration, left automatically.
            transition: ConfChangeTransition::Auto,
            changes: vec![
                ConfChangeSingle {
                    change_type: ConfChangeType::AddNode,
                    node_id: new,
                },
                ConfChangeSingle {
                    change_type: ConfChangeType::RemoveNode,
                    node_id: old,
                },
            ],
            context: Vec::new(),
        };
        let target = |cs: &ConfState| cs.voters.contains(&new) && !cs.voters.contains(&old);
        match self.propose_conf_change(cc) {
            Ok(()) => {}
            // A retry after a leader change can meet the first attempt
            // already applied, and be refused for it.
            Err(Error::ConfChange(_)) if target(&self.leader_status()?.conf_state) => {}
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + self.cfg.client_deadline;
        loop {
            let cs = self.leader_status()?.conf_state;
            if target(&cs) && cs.voters_outgoing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(self.cfg.client_deadline));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.replica(old).is_some() {
            self.stop(old)?;
        }
        Ok(())
    }

    /// Hand leadership to voter `to` and wait until it leads.
    ///
    /// # Errors
    /// [`Error::UnknownNode`] if `to` is not a voter; [`Error::Timeout`].
    pub fn transfer_leadership(&self, to: u64) -> Result<()> {
        let deadline = Instant::now() + self.cfg.client_deadline;
        loop {
            let leader = self.leader_replica()?;
            if leader.id() == to {
                return Ok(());
            }
            match leader.node().transfer_leader(to) {
                Ok(()) | Err(Error::NotLeader { .. }) => {}
                Err(e) => return Err(e),
            }
            std::thread::sleep(Duration::from_millis(10));
            if Instant::now() >= deadline {
                return Err(Error::Timeout(self.cfg.client_deadline));
            }
        }
    }

    /// Stop every replica.
    pub fn shutdown(&self) {
        let all: Vec<u64> = self.running();
        for id in all {
            let _ = self.stop(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
