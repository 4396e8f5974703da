//! Property test of restart: entries are appended to the WAL, committed
//! with a random lag, applied partly, the log compacted as far as the
//! durable applied index allows, and the replica (WAL + state machine)
//! reopened at random points. After every reopen, `DiskStorage` replay must
//! bring the state machine to exactly the commit index, equal to the model.
//!
//! `TANDEM_SM_CASES` sets the number of cases (default 24).

mod sm_support;

use std::sync::Arc;

use proptest::prelude::*;
use tandem::raft::{HardState, Storage};
use tandem::sm::{DiskStorage, SmOptions, StateMachine};
use tandem_wal::{Wal, WalOptions};

use sm_support::{command_at, contents, entry, Model};

fn open(dir: &std::path::Path) -> DiskStorage {
    let wal = Arc::new(Wal::open(dir.join("wal"), WalOptions::small_for_tests()).unwrap());
    let sm = Arc::new(
        StateMachine::open(
            dir.join("sm"),
            &SmOptions {
                sled_flush_every_ms: None,
                ..SmOptions::default()
            },
        )
        .unwrap(),
    );
    DiskStorage::open(wal, sm).unwrap()
}

fn cases() -> u32 {
    std::env::var("TANDEM_SM_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn replay_after_reopen_reaches_exactly_the_commit_index(
        seed in any::<u64>(),
        steps in proptest::collection::vec(
            (1u64..8, 0u64..8, 0u64..10, proptest::bool::weighted(0.3), proptest::bool::weighted(0.2)),
            1..40,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        let mut model = Model::default();
        let mut commit = 0u64;
        for (append, advance, apply, compact, reopen) in steps {
            let wal = Arc::clone(storage.wal());
            let sm = Arc::clone(storage.state_machine());
            let last = wal.last_index().unwrap();
            let entries: Vec<_> = (last + 1..=last + append)
                .map(|i| entry(i, 1, &command_at(seed, i, 4)))
                .collect();
            commit = (commit + advance).min(last + append);
            let hs = HardState { term: 1, vote: 1, commit };
            wal.submit(entries, Some(hs)).unwrap().wait().unwrap();
            // The node applies some of the committed entries.
            let applied = sm.applied_index();
            let upto = (applied + apply).min(commit);
            if upto > applied {
                sm.apply(&wal.entries(applied + 1, upto + 1, None).unwrap()).unwrap();
            }
            if compact {
                let durable = sm.flush_durable().unwrap();
                storage.compact(durable + 1).unwrap().wait().unwrap();
                prop_assert_eq!(storage.first_index().unwrap(), durable + 1);
            }
            if reopen {
                drop(wal);
                drop(sm);
                drop(storage);
                storage = open(dir.path());
                let replay = storage.replay_committed().unwrap();
                prop_assert_eq!(replay.to, commit);
                while model.applied < commit {
                    let i = model.applied + 1;
                    model.apply(&command_at(seed, i, 4));
                }
                prop_assert_eq!(&contents(storage.state_machine()), &model.map);
                let state = storage.initial_state().unwrap();
                prop_assert_eq!(state.hard_state.commit, commit);
            }
        }
        let replay = storage.replay_committed().unwrap();
        prop_assert_eq!(replay.to, commit);
        while model.applied < commit {
            let i = model.applied + 1;
            model.apply(&command_at(seed, i, 4));
        }
        prop_assert_eq!(&contents(storage.state_machine()), &model.map);
    }
}
