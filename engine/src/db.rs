//! [`Db`]: the handle applications use, with sled's names.
//!
//! Every call goes to the leader; on `NotLeader` it follows the hint, on a
//! leader change it retries elsewhere — until the cluster's
//! `client_deadline`. Writes are retried only when they certainly had no
//! effect (`NotLeader`, `Stale`, `Overloaded`); a write whose outcome is
//! unknown (`Timeout`, `ShuttingDown` while in flight) is reported, never
//! silently repeated.

use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sled::IVec;

use crate::cluster::Cluster;
use crate::config::ReadConsistency;
use crate::error::{Error, Result};
use crate::replica::Replica;
use crate::sm::command::{CasView, CommandView, OpView};
use crate::sm::{CasMismatch, Command, CommandResult, Iter, Limits, WriteBatch};

/// A value read with an explicit consistency, saying how it was served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read<T> {
    /// The value.
    pub value: T,
    /// The replica that served it.
    pub served_by: u64,
    /// That replica's applied index when it served it (at least the read index).
    pub applied_index: u64,
    /// True if the read may miss acknowledged writes ([`ReadConsistency::Stale`]).
    pub stale: bool,
}

/// A handle to a [`Cluster`] with sled's API. Cheap to clone; share freely
/// between threads.
#[derive(Clone, Debug)]
pub struct Db {
    cluster: Arc<Cluster>,
    leader_hint: Arc<AtomicU64>,
    deadline: Duration,
}

impl Db {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Db {
        let deadline = cluster.config().client_deadline;
        Db {
            cluster,
            leader_hint: Arc::new(AtomicU64::new(0)),
            deadline,
        }
    }

    /// The same handle with another retry deadline.
    #[must_use]
    pub fn with_deadline(&self, deadline: Duration) -> Db {
        Db {
            deadline,
            ..self.clone()
        }
    }

    fn limits(&self) -> Limits {
        let c = &self.cluster.config().node;
        Limits {
            key_bytes_max: c.max_key_bytes,
            value_bytes_max: c.max_value_bytes,
            batch_ops_max: c.max_batch_ops,
            command_bytes_max: c.max_proposal_bytes,
        }
    }

    /// Run `f` on the leader, following hints and retrying retryable errors
    /// until the deadline.
    fn on_leader<T>(&self, mut f: impl FnMut(&Replica, Duration) -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let deadline = start + self.deadline;
        let mut backoff = Duration::from_millis(2);
        let mut saw_leader = false;
        let mut rotate = 0usize;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(if saw_leader {
                    Error::Timeout(self.deadline)
                } else {
                    Error::NoQuorum(self.deadline)
                });
            }
            let hint = self.leader_hint.load(Ordering::Relaxed);
            let running = self.cluster.running();
            if running.is_empty() {
                return Err(Error::ShuttingDown);
            }
            let target = if running.contains(&hint) {
                hint
            } else {
                rotate += 1;
                running[rotate % running.len()]
            };
            let Some(replica) = self.cluster.replica(target) else {
                continue;
            };
            match f(&replica, deadline - now) {
                Ok(v) => {
                    self.leader_hint.store(target, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Error::NotLeader { leader: Some(l) }) if l != target => {
                    saw_leader = true;
                    self.leader_hint.store(l, Ordering::Relaxed);
                }
                Err(Error::NotLeader { .. }) => {
                    self.leader_hint.store(0, Ordering::Relaxed);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e @ (Error::Stale { .. } | Error::Overloaded(_))) => {
                    saw_leader = true;
                    tracing::debug!(error = %e, "retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(Error::Timeout(_)) if Instant::now() >= deadline => {
                    return Err(Error::Timeout(self.deadline));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write(&self, cmd: &CommandView<'_>) -> Result<CommandResult> {
        cmd.validate(&self.limits())?;
        // The first attempt takes the encoded command; a retry (after a
        // leader change) encodes it again.
        let mut encoded = Some(cmd.encode());
        self.on_leader(|r, left| {
            let data = encoded.take().unwrap_or_else(|| cmd.encode());
            r.propose_wait(data, left)
        })
    }

    /// Set `key` to `value`, replicated to a quorum and durable.
    ///
    /// # Errors
    /// [`Error::TooLarge`]; [`Error::NoQuorum`] / [`Error::Timeout`] when
    /// no leader commits it before the deadline (for `Timeout` the write
    /// may still be applied later).
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        // Encoded straight from the caller's slices, not copied into a batch.
        self.write_batch(&CommandView::Batch(vec![OpView::Insert {
            key: key.as_ref(),
            value: value.as_ref(),
        }]))
    }

    /// Remove `key`.
    ///
    /// # Errors
    /// As [`Db::insert`].
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.write_batch(&CommandView::Batch(vec![OpView::Remove {
            key: key.as_ref(),
        }]))
    }

    /// Apply every operation of `batch` atomically.
    ///
    /// # Errors
    /// As [`Db::insert`].
    pub fn apply_batch(&self, batch: WriteBatch) -> Result<()> {
        self.write_batch(&Command::Batch(batch).view())
    }

    fn write_batch(&self, batch: &CommandView<'_>) -> Result<()> {
        match self.write(batch)? {
            CommandResult::Written { .. } => Ok(()),
            other => Err(Error::Storage(format!("unexpected result {other:?}"))),
        }
    }

    /// Set `key` to `new` if it currently holds `old` (`None`: absent;
    /// `new == None` removes it). The inner error carries the current value
    /// on a mismatch, like sled's.
    ///
    /// # Errors
    /// As [`Db::insert`].
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: Option<impl AsRef<[u8]>>,
        new: Option<impl AsRef<[u8]>>,
    ) -> Result<std::result::Result<(), CasMismatch>> {
        let (old, new) = (old.as_ref(), new.as_ref());
        let cmd = CommandView::Cas(CasView {
            key: key.as_ref(),
            expected: old.map(AsRef::as_ref),
            new: new.map(AsRef::as_ref),
        });
        match self.write(&cmd)? {
            CommandResult::Cas(r) => Ok(r),
            other => Err(Error::Storage(format!("unexpected result {other:?}"))),
        }
    }

    /// Read on a replica chosen by `consistency` after the matching barrier.
    fn read<T>(
        &self,
        consistency: ReadConsistency,
        f: impl Fn(&Replica) -> Result<T>,
    ) -> Result<Read<T>> {
        if consistency == ReadConsistency::Stale {
            // Any running replica will do; prefer the leader hint's.
            let running = self.cluster.running();
            let hint = self.leader_hint.load(Ordering::Relaxed);
            let id = if running.contains(&hint) {
                hint
            } else {
                *running.first().ok_or(Error::ShuttingDown)?
            };
            let r = self.cluster.replica(id).ok_or(Error::ShuttingDown)?;
            return self.stale_read_on(&r, f);
        }
        self.on_leader(|r, left| {
            let index = r.read_barrier(consistency, left)?;
            let value = f(r)?;
            Ok(Read {
                value,
                served_by: r.id(),
                applied_index: r.state_machine().applied_index().max(index),
                stale: false,
            })
        })
    }

    fn stale_read_on<T>(&self, r: &Replica, f: impl Fn(&Replica) -> Result<T>) -> Result<Read<T>> {
        let applied = r.state_machine().applied_index();
        Ok(Read {
            value: f(r)?,
            served_by: r.id(),
            applied_index: applied,
            stale: true,
        })
    }

    /// A stale read served by replica `id` (whatever it has applied).
    ///
    /// # Errors
    /// [`Error::UnknownNode`] if `id` is not running.
    pub fn get_stale_from(&self, id: u64, key: impl AsRef<[u8]>) -> Result<Read<Option<IVec>>> {
        let r = self.cluster.replica(id).ok_or(Error::UnknownNode(id))?;
        let key = key.as_ref();
        self.stale_read_on(&r, |r| Ok(r.state_machine().get(key)?))
    }

    /// The value of `key`, linearizable (ReadIndex).
    ///
    /// # Errors
    /// [`Error::NoQuorum`] / [`Error::Timeout`] without a leader.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        Ok(self.get_with(key, ReadConsistency::Linearizable)?.value)
    }

    /// The value of `key` with the chosen consistency.
    ///
    /// # Errors
    /// As [`Db::get`].
    pub fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<Read<Option<IVec>>> {
        let key = key.as_ref();
        self.read(consistency, |r| Ok(r.state_machine().get(key)?))
    }

    /// Keys and values in `range`, in key order, from the leader after a
    /// linearizable barrier. The iterator reads live state: later writes
    /// may show up as it advances (sled has no snapshot iterators).
    ///
    /// # Errors
    /// As [`Db::get`].
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K> + Clone>(&self, range: R) -> Result<Iter> {
        Ok(self
            .read(ReadConsistency::Linearizable, |r| {
                Ok(r.state_machine().range(range.clone()))
            })?
            .value)
    }

    /// Keys starting with `prefix`, as [`Db::range`].
    ///
    /// # Errors
    /// As [`Db::get`].
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Iter> {
        let prefix = prefix.as_ref();
        Ok(self
            .read(ReadConsistency::Linearizable, |r| {
                Ok(r.state_machine().scan_prefix(prefix))
            })?
            .value)
    }

    /// Status of every running replica: role, term, leader, commit,
    /// applied, log range, per-follower progress (on the leader), counters.
    #[must_use]
    pub fn status(&self) -> Vec<crate::node::NodeStatus> {
        self.cluster.status()
    }

    /// Add a new replica `id` as a learner. See [`Cluster::add_learner`].
    ///
    /// # Errors
    /// As [`Cluster::add_learner`].
    pub fn add_learner(&self, id: u64) -> Result<()> {
        self.cluster.add_learner(id)
    }

    /// Add (or promote) `id` as a voter. See [`Cluster::add_voter`].
    ///
    /// # Errors
    /// As [`Cluster::add_voter`].
    pub fn add_voter(&self, id: u64) -> Result<()> {
        self.cluster.add_voter(id)
    }

    /// Promote learner `id`. See [`Cluster::promote`].
    ///
    /// # Errors
    /// As [`Cluster::promote`].
    pub fn promote(&self, id: u64) -> Result<()> {
        self.cluster.promote(id)
    }

    /// Remove member `id`. See [`Cluster::remove`].
    ///
    /// # Errors
    /// As [`Cluster::remove`].
    pub fn remove_member(&self, id: u64) -> Result<()> {
        self.cluster.remove(id)
    }

    /// Hand leadership to voter `to`. See [`Cluster::transfer_leadership`].
    ///
    /// # Errors
    /// As [`Cluster::transfer_leadership`].
    pub fn transfer_leadership(&self, to: u64) -> Result<()> {
        self.cluster.transfer_leadership(to)
    }

    /// The cluster behind this handle (membership, status, faults).
    #[must_use]
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}
