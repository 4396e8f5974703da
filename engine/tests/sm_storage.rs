//! `DiskStorage`: the raft storage over the WAL and the state machine;
//! restart replay; compaction bounded by the durable applied index.

mod sm_support;

use std::sync::Arc;

use tandem::raft::{ConfState, HardState, SnapshotMetadata, Storage, StorageError};
use tandem::sm::{DiskStorage, Error, SmOptions, StateMachine};
use tandem_wal::{Wal, WalOptions};

use sm_support::{command_at, contents, entry, Model};

const SEED: u64 = 7;

fn open(dir: &std::path::Path) -> (Arc<Wal>, Arc<StateMachine>) {
    let wal = Wal::open(dir.join("wal"), WalOptions::small_for_tests()).unwrap();
    let sm = StateMachine::open(dir.join("sm"), &SmOptions::default()).unwrap();
    (Arc::new(wal), Arc::new(sm))
}

/// Append entries `from..=to` of the seeded workload (term 1 + i/10) with
/// the given commit index, durably.
fn append(wal: &Wal, from: u64, to: u64, commit: u64) {
    let entries: Vec<_> = (from..=to)
        .map(|i| entry(i, 1 + i / 10, &command_at(SEED, i, 4)))
        .collect();
    let hs = HardState {
        term: 1 + to / 10,
        vote: 1,
        commit,
    };
    wal.submit(entries, Some(hs)).unwrap().wait().unwrap();
}

fn model_at(index: u64) -> Model {
    let mut m = Model::default();
    for i in 1..=index {
        m.apply(&command_at(SEED, i, 4));
    }
    m
}

#[test]
fn storage_reads_come_from_the_wal_and_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, sm) = open(dir.path());
    sm.bootstrap(&ConfState::from_voters([1, 2, 3])).unwrap();
    append(&wal, 1, 25, 12);
    let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm)).unwrap();
    let state = storage.initial_state().unwrap();
    assert_eq!(state.hard_state.commit, 12);
    assert_eq!(state.hard_state.term, 3);
    assert_eq!(state.conf_state, ConfState::from_voters([1, 2, 3]));
    assert_eq!(storage.first_index().unwrap(), 1);
    assert_eq!(storage.last_index().unwrap(), 25);
    assert_eq!(storage.term(0).unwrap(), 0);
    assert_eq!(storage.term(19).unwrap(), 2);
    let got = storage.entries(3, 8, None).unwrap();
    assert_eq!(got, wal.entries(3, 8, None).unwrap());
    assert_eq!(got.len(), 5);
    assert_eq!(got[0].data, command_at(SEED, 3, 4).encode());
    // A size limit still returns at least one entry.
    assert_eq!(storage.entries(3, 8, Some(1)).unwrap().len(), 1);
    assert_eq!(
        storage.entries(3, 27, None).unwrap_err(),
        tandem::raft::Error::Store(StorageError::Unavailable)
    );
    assert_eq!(
        storage.snapshot(0, 2).unwrap_err(),
        tandem::raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
    );
}

#[test]
fn replay_applies_exactly_the_committed_entries_above_applied() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, sm) = open(dir.path());
        append(&wal, 1, 40, 9);
        let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm)).unwrap();
        let replay = storage.replay_committed().unwrap();
        assert_eq!((replay.from, replay.to), (0, 9));
        assert_eq!(contents(&sm), model_at(9).map);
        // More entries commit; apply a part of them directly, as the node would.
        wal.set_hard_state(HardState {
            term: 5,
            vote: 1,
            commit: 30,
        })
        .unwrap()
        .wait()
        .unwrap();
        sm.apply(&wal.entries(10, 15, None).unwrap()).unwrap();
    }
    let (wal, sm) = open(dir.path());
    assert_eq!(sm.applied().0, 14);
    let storage = DiskStorage::open(wal, Arc::clone(&sm)).unwrap();
    let replay = storage.replay_committed().unwrap();
    assert_eq!((replay.from, replay.to), (14, 30));
    // Regression (simulator seed 163): what replay applied is durable, so
    // a node started at this applied index may compact up to it.
    assert_eq!(sm.durable_applied(), 30);
    assert_eq!(
        contents(&sm),
        model_at(30).map,
        "nothing twice, nothing skipped"
    );
    // Replaying again does nothing.
    let again = storage.replay_committed().unwrap();
    assert_eq!((again.from, again.to, again.chunks), (30, 30, 0));
}

#[test]
fn initial_commit_is_raised_to_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, sm) = open(dir.path());
    append(&wal, 1, 10, 4);
    // The state machine applied past the persisted commit (the commit index
    // in the hard state is persisted lazily).
    sm.apply(&wal.entries(1, 9, None).unwrap()).unwrap();
    let storage = DiskStorage::open(wal, sm).unwrap();
    assert_eq!(storage.initial_state().unwrap().hard_state.commit, 8);
}

#[test]
fn compaction_never_passes_the_durable_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, sm) = open(dir.path());
    append(&wal, 1, 30, 30);
    let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm)).unwrap();
    // Applied as the node's apply thread does: not durable yet (a replay
    // at open would have made it durable).
    sm.apply(&wal.entries(1, 31, None).unwrap()).unwrap();
    assert_eq!(sm.applied().0, 30);
    assert_eq!(sm.durable_applied(), 0);
    match storage.compact(5) {
        Err(Error::CompactBeyondDurable { index, durable }) => assert_eq!((index, durable), (5, 0)),
        other => panic!("expected CompactBeyondDurable, got {other:?}"),
    }
    assert_eq!(storage.first_index().unwrap(), 1);
    storage.compact(1).unwrap().wait().unwrap();
    assert_eq!(sm.flush_durable().unwrap(), 30);
    assert!(matches!(
        storage.compact(32),
        Err(Error::CompactBeyondDurable { .. })
    ));
    storage.compact(21).unwrap().wait().unwrap();
    assert_eq!(storage.first_index().unwrap(), 21);
    assert_eq!(storage.term(20).unwrap(), 3);
    assert_eq!(
        storage.entries(19, 22, None).unwrap_err(),
        tandem::raft::Error::Store(StorageError::Compacted)
    );
    storage.compact(31).unwrap().wait().unwrap();
    assert_eq!(storage.first_index().unwrap(), 31);
    assert_eq!(storage.last_index().unwrap(), 30);
}

#[test]
fn open_refuses_a_log_compacted_past_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, sm) = open(dir.path());
    append(&wal, 1, 20, 20);
    wal.compact(8).unwrap().wait().unwrap();
    let err = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LogCompactedPastApplied {
                compacted: 7,
                applied: 0
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("entries 1..=7 are lost"), "{err}");
    // And a state machine ahead of the log is refused too.
    let dir2 = tempfile::tempdir().unwrap();
    let (wal2, sm2) = open(dir2.path());
    append(&wal2, 1, 5, 5);
    sm2.apply(&wal2.entries(1, 6, None).unwrap()).unwrap();
    let dir3 = tempfile::tempdir().unwrap();
    let (empty_wal, _) = open(dir3.path());
    assert!(matches!(
        DiskStorage::open(empty_wal, sm2),
        Err(Error::LogBehindApplied {
            applied: 5,
            last: 0
        })
    ));
}

#[test]
fn snapshots_are_offered_from_the_catalog_and_requested_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, sm) = open(dir.path());
    append(&wal, 1, 10, 10);
    let catalog = Arc::new(tandem::node::SnapshotCatalog::default());
    let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm))
        .unwrap()
        .with_catalog(Arc::clone(&catalog));
    storage.replay_committed().unwrap();
    // No local snapshot: raft is told to retry, and a build is requested.
    assert_eq!(
        storage.snapshot(5, 2).unwrap_err(),
        tandem::raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
    );
    assert_eq!(catalog.take_request(), Some(5));
    assert_eq!(catalog.take_request(), None);
    let meta = SnapshotMetadata {
        conf_state: ConfState::from_voters([1]),
        index: 8,
        term: 1,
    };
    catalog.set_latest(meta.clone());
    let snap = storage.snapshot(5, 2).unwrap();
    assert_eq!(snap.metadata, meta);
    assert!(
        snap.data.is_empty(),
        "metadata only: the chunks travel apart"
    );
    // Too old for the request, or for the compaction point.
    assert!(storage.snapshot(9, 2).is_err());
    assert_eq!(catalog.take_request(), Some(9));
    sm.flush_durable().unwrap();
    storage.compact(10).unwrap().wait().unwrap();
    assert!(
        storage.snapshot(1, 2).is_err(),
        "must reach the compaction point 9"
    );
    assert_eq!(catalog.take_request(), Some(9));
}

#[test]
fn a_corrupt_committed_entry_stops_replay_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, sm) = open(dir.path());
        append(&wal, 1, 4, 4);
        let mut bad = entry(5, 1, &command_at(SEED, 5, 4));
        let mut data = bad.data.to_vec();
        data[0] = 0x7F; // unknown command version
        bad.data = data.into();
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: 6,
        };
        wal.submit(vec![bad, entry(6, 1, &command_at(SEED, 6, 4))], Some(hs))
            .unwrap()
            .wait()
            .unwrap();
        let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm)).unwrap();
        let err = storage.replay_committed().unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnknownCommandVersion {
                    index: 5,
                    version: 0x7F
                }
            ),
            "{err}"
        );
        assert_eq!(sm.applied_index(), 4, "applied up to the entry before");
        assert_eq!(contents(&sm), model_at(4).map);
        assert!(matches!(storage.replay_committed(), Err(Error::Stopped(_))));
    }
    // After a restart it stops at the same entry again.
    let (wal, sm) = open(dir.path());
    let storage = DiskStorage::open(wal, Arc::clone(&sm)).unwrap();
    assert!(matches!(
        storage.replay_committed(),
        Err(Error::UnknownCommandVersion { index: 5, .. })
    ));
    assert_eq!(sm.applied_index(), 4);
}

/// Regression (simulator seed 1031): a crash kept the entries of a WAL
/// submission but tore the hard state record written after them, so the
/// replica restarted in term 3 holding entries of term 5 — and could have
/// voted in, and led, term 4 with them. The storage must report a term at
/// least the last log term, with no vote in it.
#[test]
fn a_hard_state_lost_behind_its_entries_does_not_lower_the_term() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, sm) = open(dir.path());
    sm.bootstrap(&ConfState::from_voters([1, 2, 3])).unwrap();
    append(&wal, 1, 25, 12); // hard state: term 3, vote 1
                             // Entries of term 5 whose hard state never made it to disk.
    let entries: Vec<_> = (26..=27)
        .map(|i| entry(i, 5, &command_at(SEED, i, 4)))
        .collect();
    wal.submit(entries, None).unwrap().wait().unwrap();
    drop(wal);
    drop(sm);
    let (wal, sm) = open(dir.path());
    assert_eq!(wal.hard_state().unwrap().term, 3);
    let storage = DiskStorage::open(wal, sm).unwrap();
    let hs = storage.initial_state().unwrap().hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), (5, 0, 12));
    // A hard state at or beyond the log's last term is kept as it is.
    drop(storage);
    let (wal, sm) = open(dir.path());
    wal.set_hard_state(HardState {
        term: 6,
        vote: 2,
        commit: 12,
    })
    .unwrap()
    .wait()
    .unwrap();
    let hs = DiskStorage::open(wal, sm)
        .unwrap()
        .initial_state()
        .unwrap()
        .hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), (6, 2, 12));
}
