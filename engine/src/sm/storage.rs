//! The raft [`Storage`] of a replica, read directly from the WAL and the
//! state machine — no copy of the log in memory.
//!
//! | what                     | from                                         |
//! |--------------------------|----------------------------------------------|
//! | hard state               | WAL (commit raised to the applied index)     |
//! | entries, terms, indexes  | WAL                                          |
//! | conf state               | state machine (as of its applied index)      |
//! | snapshot offered to raft | `SnapshotCatalog` (newest local snapshot)    |
//!
//! The commit index is raised to the applied index because the state
//! machine may have applied (and made durable) entries whose commit index
//! the WAL had not yet persisted when the process stopped: an applied entry
//! is committed by definition, and the consensus core requires
//! `applied <= committed`.
//!
//! # Restart
//!
//! [`DiskStorage::open`] checks that the WAL still holds every entry above
//! the state machine's applied index, then [`DiskStorage::replay_committed`]
//! applies the committed entries above it, in bounded chunks. The state
//! machine skips entries at or below its applied index and refuses gaps, so
//! no entry is applied twice and none is skipped.
//!
//! # Compaction
//!
//! [`DiskStorage::compact`] refuses to drop entries above the state
//! machine's *durable* applied index ([`StateMachine::durable_applied`]):
//! after a power loss sled may come back at that index, and every entry
//! after it must still be in the log to be applied again.

use std::sync::Arc;

use tandem_raft::{Entry, RaftState, Snapshot, Storage, StorageError};
use tandem_wal::{Completion, Wal};
use tracing::info;

use super::error::{Error, Result};
use super::machine::StateMachine;
use crate::node::SnapshotCatalog;

/// Bytes of entries read from the WAL per apply call during replay.
pub const REPLAY_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// The raft storage of one replica over its WAL and state machine.
#[derive(Clone, Debug)]
pub struct DiskStorage {
    wal: Arc<Wal>,
    sm: Arc<StateMachine>,
    catalog: Arc<SnapshotCatalog>,
}

/// What [`DiskStorage::replay_committed`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The applied index before replay.
    pub from: u64,
    /// The applied index after replay (the commit index).
    pub to: u64,
    /// Number of apply calls (chunks).
    pub chunks: u64,
}

impl DiskStorage {
    /// Pair a WAL and a state machine of one replica, checking that the log
    /// still holds every entry above the applied index.
    ///
    /// # Errors
    /// [`Error::LogCompactedPastApplied`] if the entries between the applied
    /// index and the log are lost, [`Error::LogBehindApplied`] if the state
    /// machine applied entries the log no longer has, [`Error::Wal`].
    pub fn open(wal: Arc<Wal>, sm: Arc<StateMachine>) -> Result<DiskStorage> {
        let (applied, applied_term) = sm.applied();
        let snap = sm.snapshot_metadata();
        if applied > 0 && snap.index == applied {
            // The state came from an installed snapshot and nothing was
            // applied since. If the process stopped after the state machine
            // switched but before the log was reset, the log still ends
            // before the snapshot or holds a conflicting entry there: reset
            // it now, as the install would have.
            let (compacted, _) = wal.snapshot_point()?;
            let agrees = compacted <= applied
                && applied <= wal.last_index()?
                && wal.term(applied).ok() == Some(applied_term);
            if !agrees {
                info!(
                    index = applied,
                    term = applied_term,
                    "resetting the log to the installed snapshot"
                );
                wal.reset_to_snapshot(applied, applied_term)?.wait()?;
            }
        }
        let (compacted, _) = wal.snapshot_point()?;
        let last = wal.last_index()?;
        if compacted > applied {
            return Err(Error::LogCompactedPastApplied { compacted, applied });
        }
        if applied > last {
            return Err(Error::LogBehindApplied { applied, last });
        }
        Ok(DiskStorage {
            wal,
            sm,
            catalog: Arc::new(SnapshotCatalog::default()),
        })
    }

    /// Answer raft's snapshot requests from `catalog` (shared with the
    /// node core, which builds a snapshot when one is missing).
    #[must_use]
    pub fn with_catalog(mut self, catalog: Arc<SnapshotCatalog>) -> Self {
        self.catalog = catalog;
        self
    }

    /// The WAL.
    #[must_use]
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// The state machine.
    #[must_use]
    pub fn state_machine(&self) -> &Arc<StateMachine> {
        &self.sm
    }

    /// Apply every committed entry above the applied index (restart), and
    /// make the result durable: afterwards
    /// [`StateMachine::durable_applied`] equals the applied index.
    ///
    /// # Errors
    /// WAL read errors; apply errors (which stop the state machine).
    pub fn replay_committed(&self) -> Result<Replay> {
        let commit = self.wal.hard_state()?.commit;
        let last = self.wal.last_index()?;
        let commit = commit.min(last);
        let from = self.sm.applied_index();
        let mut replay = Replay {
            from,
            to: from,
            chunks: 0,
        };
        while replay.to < commit {
            let entries = self
                .wal
                .entries(replay.to + 1, commit + 1, Some(REPLAY_CHUNK_BYTES))?;
            assert!(
                !entries.is_empty(),
                "the log returns at least one entry of a non-empty range"
            );
            let out = self.sm.apply(&entries)?;
            assert!(out.applied_index > replay.to, "replay makes progress");
            replay.to = out.applied_index;
            replay.chunks += 1;
        }
        if replay.to > from {
            // What was replayed is made durable before the node starts: the
            // node's compaction policy starts from the applied index it is
            // given as the durable one. Without this, a restart that
            // replayed entries asked to compact past the durable index, the
            // storage refused, and the replica stopped (found by the
            // simulator, seed 163).
            self.sm.flush_durable()?;
            info!(
                from,
                to = replay.to,
                chunks = replay.chunks,
                "replayed committed entries"
            );
        }
        Ok(replay)
    }

    /// Drop log entries below `index` (the new first index), but never one
    /// the state machine has not durably applied: `index - 1` must be at most
    /// [`StateMachine::durable_applied`].
    ///
    /// # Errors
    /// [`Error::CompactBeyondDurable`]; WAL errors.
    pub fn compact(&self, index: u64) -> Result<Completion> {
        let durable = self.sm.durable_applied();
        if index.saturating_sub(1) > durable {
            return Err(Error::CompactBeyondDurable { index, durable });
        }
        Ok(self.wal.compact(index)?)
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> tandem_raft::Result<RaftState> {
        let mut hard_state = self.wal.hard_state()?;
        hard_state.commit = hard_state.commit.max(self.sm.applied_index());
        // The WAL recovers records, not submissions: a crash can keep the
        // entries of a submission and lose (or tear) the hard state written
        // after them, leaving entries of a term the recovered hard state
        // has not reached. Raft requires the current term to be at least
        // every log term (or the replica could vote in, and lead, an older
        // term than entries it holds: found by the simulator, seed 1031).
        // Holding an entry of term T proves the replica was in term T; its
        // vote in T was never durable, hence never sent: none.
        let last = self.wal.last_index()?;
        let last_term = self.wal.term(last)?;
        if last_term > hard_state.term {
            tracing::info!(
                recovered_term = hard_state.term,
                last_term,
                "the log holds a later term than the recovered hard state; adopting it"
            );
            hard_state.term = last_term;
            hard_state.vote = 0;
        }
        Ok(RaftState::new(hard_state, self.sm.conf_state()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> tandem_raft::Result<Vec<Entry>> {
        Ok(self.wal.entries(low, high, max_size)?)
    }

    fn term(&self, idx: u64) -> tandem_raft::Result<u64> {
        Ok(self.wal.term(idx)?)
    }

    fn first_index(&self) -> tandem_raft::Result<u64> {
        Ok(self.wal.first_index()?)
    }

    fn last_index(&self) -> tandem_raft::Result<u64> {
        Ok(self.wal.last_index()?)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> tandem_raft::Result<Snapshot> {
        // The snapshot must reach the compaction point, so the follower can
        // go on from the log after it.
        let need = request_index
            .max(self.wal.first_index()?.saturating_sub(1))
            .max(1);
        match self.catalog.get_or_request(need) {
            // Metadata only: the node core streams the chunks.
            Some(metadata) => Ok(Snapshot {
                data: Vec::new(),
                metadata,
            }),
            // A build is requested; raft asks again later.
            None => Err(StorageError::SnapshotTemporarilyUnavailable.into()),
        }
    }
}
