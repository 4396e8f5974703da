//! One replica on disk: `LOCK`, `wal/`, `sm/` under its directory, and the
//! running [`Node`] over them.
//!
//! The raft log and hard state live in the WAL; the applied index, the
//! membership and the data live in the sled state machine; the raft
//! `Storage` over both is the state machine's [`DiskStorage`]. On open,
//! committed entries after the state machine's applied index are applied
//! again first (nothing is skipped or repeated, since the applied index is
//! written in the same atomic batch as the data), then the consensus core
//! starts from the WAL's hard state and that applied index.
//!
//! A new cluster is bootstrapped by writing the same first entries to every
//! initial replica: one `AddNode` membership change per voter, committed at
//! term 1. A replica added later starts empty, with no membership: raft
//! asks the leader for a snapshot, which brings the state and membership.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tandem_raft::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, SnapshotMetadata,
};
use tandem_wal::{FileSystem, Notify, StdFs, Wal, WalOptions};

use crate::config::{Config, ReadConsistency, SyncPolicy};
use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::node::{
    wait, Applied, Applier, Durability, LogWriter, Node, NodeCore, NodeStatus, PersistTask,
    SnapshotCatalog, SnapshotHost,
};
use crate::sm::{CommandResult, DiskStorage, SnapshotStore, SnapshotTimings, StateMachine};
use crate::transport::{Inbox, Transport};

/// Hands persist tasks to the WAL's group-commit writer and reports
/// durability on the raft loop's channel.
struct WalWriter {
    wal: Arc<Wal>,
    /// For compaction, which it bounds by the durable applied index.
    storage: DiskStorage,
}

impl LogWriter for WalWriter {
    fn submit(&mut self, task: PersistTask, durable: &Durability, write_here: bool) -> Result<()> {
        if let Some(snap) = &task.snapshot {
            // The state machine already switched to this snapshot (the
            // commit point of an install); the log now restarts after it.
            // Queued before the entries and hard state of the same Ready.
            let (index, term) = (snap.metadata.index, snap.metadata.term);
            self.wal
                .reset_to_snapshot(index, term)
                .map_err(|e| Error::Storage(format!("wal reset to snapshot: {e}")))?;
            tracing::info!(index, term, "log reset to the installed snapshot");
        }
        if task.lazy {
            // Only the commit index changed: written with the next group,
            // synced with the next sync; nothing waits for it.
            let hs = task.hard_state.expect("a lazy task carries a hard state");
            self.wal
                .set_hard_state_lazy(hs)
                .map_err(|e| Error::Storage(format!("wal: {e}")))?;
            return Ok(());
        }
        let number = task.number;
        let messages = task.messages;
        let durable = durable.clone();
        // One Ready can carry more entries than one WAL submission may hold
        // (a follower back from an install, or a slow one, receives many
        // appends at once: up to `max_inflight_msgs` messages of
        // `max_size_per_msg_bytes`). Leading pieces go first with no hard
        // state and nobody waiting; the WAL writes submissions in order and
        // the last one's fsync covers them all, so its callback reports the
        // whole Ready durable. A crash in between leaves a prefix of the
        // entries, which is a valid log (nothing was acknowledged).
        let budget = self
            .wal
            .options()
            .batch_bytes_max
            .saturating_sub(4096)
            .max(1);
        let mut entries = task.entries;
        while entries.len() > 1 {
            let mut bytes = 0u64;
            let fits = entries
                .iter()
                .take_while(|e| {
                    bytes += e.size_bytes();
                    bytes <= budget
                })
                .count()
                .max(1);
            if fits == entries.len() {
                break;
            }
            let rest = entries.split_off(fits);
            self.wal
                .submit_notify(entries, None, Notify::Callback(Box::new(|_, _| {})))
                .map_err(|e| Error::Storage(format!("wal: {e}")))?;
            entries = rest;
        }
        // Called the moment the group is durable, on the thread that wrote
        // it: a follower's acknowledgement leaves from there, without a
        // round through the raft loop.
        let notify = Notify::Callback(Box::new(move |_, res| match res {
            Ok(()) => durable.report(number, messages),
            // The WAL is poisoned: the raft loop sees it
            // (`LogWriter::failure`) and stops the replica; requests
            // waiting on this one fail or time out.
            Err(e) => tracing::error!(error = %e, "WAL write failed"),
        }));
        if write_here {
            // Written and synced on this thread unless another one is
            // writing (then taken into its group or handed over).
            self.wal
                .submit_notify_wait(entries, task.hard_state, notify)
                .map_err(|e| Error::Storage(format!("wal: {e}")))?;
        } else {
            self.wal
                .submit_notify(entries, task.hard_state, notify)
                .map_err(|e| Error::Storage(format!("wal: {e}")))?;
        }
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        self.wal
            .poisoned()
            .map(|reason| format!("storage: wal poisoned: {reason}"))
    }

    fn compact(&mut self, first_index: u64) -> Result<()> {
        // Never past the durable applied index (the core asks only up to
        // what was reported durable, which can only grow; clamp anyway).
        let durable = self.storage.state_machine().durable_applied();
        let first_index = first_index.min(durable + 1);
        // The marker is queued behind every earlier submission; the
        // in-memory first index moves at once. Nothing waits for it.
        self.storage.compact(first_index)?;
        Ok(())
    }
}

impl Applier for StateMachine {
    type Output = CommandResult;

    fn apply(&self, entries: &[Entry]) -> Result<Applied<CommandResult>> {
        let out = StateMachine::apply(self, entries)?;
        Ok(Applied {
            applied_index: out.applied_index,
            results: out
                .results
                .into_iter()
                .map(|r| (r.index, r.result))
                .collect(),
            conf_changes: out.conf_changes.into_iter().map(|c| c.change).collect(),
        })
    }

    fn held_entries(&self) -> u64 {
        StateMachine::held_entries(self)
    }

    fn wait_for_write(&self) {
        StateMachine::wait_for_write(self);
    }

    fn write_pending(&self) -> Result<()> {
        self.flush_pending()?;
        Ok(())
    }
}

/// The WAL options a replica's configuration implies: the segment size
/// from the config, and batch and entry bounds that fit in a segment.
fn wal_options(cfg: &Config) -> WalOptions {
    let d = WalOptions::default();
    // Header and preamble records of a segment, with room to spare.
    let batch_bytes_max = d.batch_bytes_max.min(cfg.wal_segment_bytes - 4096);
    WalOptions {
        sync: match cfg.sync {
            SyncPolicy::Always => tandem_wal::SyncPolicy::Always,
            SyncPolicy::Never => tandem_wal::SyncPolicy::Never,
        },
        segment_bytes: cfg.wal_segment_bytes,
        batch_bytes_max,
        entry_bytes_max: d.entry_bytes_max.min(batch_bytes_max - 64),
        ..d
    }
}

/// The first log entries of a new cluster: one `AddNode` per voter, term 1.
pub(crate) fn bootstrap_entries(voters: &[u64]) -> Vec<Entry> {
    voters
        .iter()
        .zip(1u64..)
        .map(|(&id, index)| Entry {
            entry_type: EntryType::EntryConfChange,
            term: 1,
            index,
            data: tandem_raft::types::encode(&ConfChange {
                change_type: ConfChangeType::AddNode,
                node_id: id,
                context: Vec::new(),
            })
            .into(),
            context: tandem_raft::Bytes::new(),
        })
        .collect()
}

/// One running replica.
pub struct Replica {
    id: u64,
    dir: PathBuf,
    cfg: Config,
    node: Node<CommandResult>,
    sm: Arc<StateMachine>,
    wal: Arc<Wal>,
    snapshots: Arc<SnapshotStore>,
    _lock: DirLock,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Open the replica stored in `dir` (creating it if new) and start it.
    /// `bootstrap`: the initial voters if this is a replica of a brand-new
    /// cluster; ignored when the directory already holds a replica. A new
    /// replica without `bootstrap` waits to be added by a leader.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config, [`Error::Locked`] if the
    /// directory is open elsewhere, storage errors.
    pub fn open(
        cfg: &Config,
        dir: &Path,
        transport: Arc<dyn Transport>,
        bootstrap: Option<&[u64]>,
    ) -> Result<Replica> {
        Self::open_with_wal_fs(cfg, dir, transport, bootstrap, StdFs::shared())
    }

    /// [`Replica::open`] with the write-ahead log on another file system:
    /// for tests that inject faults into the log, e.g. a
    /// [`tandem_wal::SimFs`] whose next fsync fails. The state machine and
    /// snapshots stay on the real file system.
    ///
    /// # Errors
    /// As [`Replica::open`].
    pub fn open_with_wal_fs(
        cfg: &Config,
        dir: &Path,
        transport: Arc<dyn Transport>,
        bootstrap: Option<&[u64]>,
        wal_fs: Arc<dyn FileSystem>,
    ) -> Result<Replica> {
        cfg.validate()?;
        let lock = DirLock::acquire(dir)?;
        let sm = Arc::new(StateMachine::open(dir.join("sm"), &cfg.state_machine)?);
        let wal_opts = wal_options(cfg);
        let wal = Arc::new(
            Wal::open_with_fs(wal_fs, dir.join("wal"), wal_opts)
                .map_err(|e| Error::Storage(format!("wal: {e}")))?,
        );
        let fresh = wal
            .last_index()
            .map_err(|e| Error::Storage(e.to_string()))?
            == 0
            && sm.applied_index() == 0
            && sm.conf_state() == ConfState::default();
        if let (true, Some(voters)) = (fresh, bootstrap) {
            if voters.is_empty() || voters.contains(&0) {
                return Err(Error::Config(
                    "bootstrap voters must be non-empty ids".into(),
                ));
            }
            sm.bootstrap(&ConfState::from_voters(voters.iter().copied()))?;
            let entries = bootstrap_entries(voters);
            let hs = HardState {
                term: 1,
                vote: 0,
                commit: entries.len() as u64,
            };
            wal.submit(entries, Some(hs))
                .and_then(|c| c.wait())
                .map_err(|e| Error::Storage(format!("wal bootstrap: {e}")))?;
            tracing::info!(id = cfg.id, ?voters, "bootstrapped a new replica");
        } else if fresh {
            // A replica added to a running cluster starts with no
            // membership: raft asks the leader for a snapshot, which brings
            // the state and the membership at once.
            tracing::info!(id = cfg.id, "new replica waits to be added");
        }
        let (store, newest) =
            SnapshotStore::open(Arc::clone(&sm), &dir.join("snap"), &cfg.snapshot)?;
        let store = Arc::new(store);
        let catalog = Arc::new(SnapshotCatalog::default());
        let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm))?
            .with_catalog(Arc::clone(&catalog));
        // Committed entries the state machine had not applied (or not made
        // durable) before the stop are applied now, before raft starts.
        storage.replay_committed()?;
        // Proposal ids must not repeat across restarts: clock nanoseconds
        // mixed with the pid differ for every open.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let incarnation = nanos ^ (u64::from(std::process::id()) << 48);
        let core = NodeCore::new(cfg, storage.clone(), sm.applied_index(), incarnation)?
            .with_removed(sm.removed())
            .with_snapshots(catalog, newest);
        let node = Node::start(
            cfg,
            core,
            WalWriter {
                wal: Arc::clone(&wal),
                storage,
            },
            Arc::clone(&sm),
            transport,
            Some(Arc::clone(&store) as Arc<dyn SnapshotHost>),
        )?;
        Ok(Replica {
            id: cfg.id,
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            node,
            sm,
            wal,
            snapshots: store,
            _lock: lock,
        })
    }

    /// Durations and sizes of this replica's last snapshot build, receive
    /// and install (since it was opened).
    #[must_use]
    pub fn snapshot_timings(&self) -> SnapshotTimings {
        self.snapshots.timings()
    }

    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The running node (propose, read barriers, membership, status).
    #[must_use]
    pub fn node(&self) -> &Node<CommandResult> {
        &self.node
    }

    /// The state machine (for reads after a barrier, and stale reads).
    #[must_use]
    pub fn state_machine(&self) -> &Arc<StateMachine> {
        &self.sm
    }

    /// The write-ahead log.
    #[must_use]
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// Where the transport delivers this replica's messages.
    #[must_use]
    pub fn inbox(&self) -> Inbox {
        self.node.inbox()
    }

    /// The replica's state.
    ///
    /// # Errors
    /// `ShuttingDown` if it stopped.
    pub fn status(&self) -> Result<NodeStatus> {
        self.node.status()
    }

    /// Propose an encoded command and wait for its result.
    ///
    /// # Errors
    /// `NotLeader`, `Stale`, `Timeout`, `ShuttingDown`, storage errors.
    pub fn propose_wait(&self, data: Vec<u8>, timeout: Duration) -> Result<CommandResult> {
        wait(&self.node.propose(data), timeout)
    }

    /// Wait until a read with `consistency` may be served here.
    ///
    /// # Errors
    /// `NotLeader`, `Timeout`, `ShuttingDown`.
    pub fn read_barrier(&self, consistency: ReadConsistency, timeout: Duration) -> Result<u64> {
        match consistency {
            ReadConsistency::Stale => Ok(self.sm.applied_index()),
            c => self.node.read_barrier(c, timeout),
        }
    }

    /// Stop the threads and make the state machine durable.
    pub fn shutdown(&self) {
        self.node.shutdown();
        if let Err(e) = self.sm.flush_durable() {
            tracing::warn!(id = self.id, error = %e, "state machine flush at shutdown failed");
        }
    }

    /// The snapshot metadata a status report shows.
    #[must_use]
    pub fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.sm.snapshot_metadata()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Envelope;

    /// Records what is sent through it.
    #[derive(Default)]
    struct Recording(parking_lot::Mutex<Vec<Envelope>>);

    impl Transport for Recording {
        fn send(
            &self,
            envelope: Envelope,
        ) -> std::result::Result<(), crate::transport::TransportError> {
            self.0.lock().push(envelope);
            Ok(())
        }
    }

    /// A Ready whose entries exceed one WAL submission is written in
    /// pieces and reported durable once, with everything readable; the
    /// messages waiting for it are sent once, when it is durable.
    #[test]
    fn a_ready_larger_than_one_wal_submission_is_split() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            wal_segment_bytes: 1 << 20,
            ..Config::default()
        };
        let opts = wal_options(&cfg);
        assert!(opts.batch_bytes_max < 1 << 20);
        let wal = Arc::new(Wal::open(dir.path().join("wal"), opts).unwrap());
        let sm = Arc::new(
            StateMachine::open(dir.path().join("sm"), &crate::sm::SmOptions::default()).unwrap(),
        );
        let storage = DiskStorage::open(Arc::clone(&wal), sm).unwrap();
        let mut w = WalWriter {
            wal: Arc::clone(&wal),
            storage,
        };
        // 3 MiB of entries against a submission limit under 1 MiB.
        let entries: Vec<Entry> = (1..=30u64)
            .map(|index| Entry {
                entry_type: EntryType::EntryNormal,
                term: 1,
                index,
                data: vec![index as u8; 100 << 10].into(),
                context: tandem_raft::Bytes::new(),
            })
            .collect();
        let (tx, rx) = crossbeam_channel::unbounded();
        let sent = Arc::new(Recording::default());
        let ack = tandem_raft::Message {
            msg_type: tandem_raft::MessageType::MsgAppendResponse,
            from: 2,
            to: 1,
            term: 1,
            index: 30,
            ..tandem_raft::Message::default()
        };
        w.submit(
            PersistTask {
                number: 7,
                entries: entries.clone(),
                hard_state: Some(HardState {
                    term: 1,
                    vote: 1,
                    commit: 30,
                }),
                snapshot: None,
                lazy: false,
                messages: vec![ack.clone()],
            },
            &Durability::new(tx, Arc::clone(&sent) as Arc<dyn Transport>, 9),
            false,
        )
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), 7);
        assert!(rx.try_recv().is_err(), "reported once");
        // Sent before the report, exactly once, as this cluster's.
        let sent = sent.0.lock();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].cluster_id, 9);
        assert!(matches!(&sent[0].payload, crate::transport::Payload::Raft(m) if m == &ack));
        assert_eq!(wal.last_index().unwrap(), 30);
        assert_eq!(wal.entries(1, 31, None).unwrap(), entries);
    }
}
