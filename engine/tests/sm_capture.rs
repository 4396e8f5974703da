//! Snapshot capture: iterating at exactly the captured applied index while
//! later entries keep overwriting, removing and inserting keys.

mod sm_support;

use tandem::sm::{SmOptions, StateMachine};
use tandem_snapshot::BeforeImagesConfig;

use sm_support::{command_at, entry, Model};

const SEED: u64 = 99;

fn model_at(index: u64) -> Model {
    let mut m = Model::default();
    for i in 1..=index {
        m.apply(&command_at(SEED, i, 8));
    }
    m
}

#[test]
fn capture_iterates_the_state_at_its_index_while_applying_continues() {
    // Write-through, a few entries held, the default (whose held writes
    // reach sled when the loop below flushes them, as a tick would).
    for write_behind_entries in [0, 4, 1024] {
        capture_at_index(&SmOptions {
            write_behind_entries,
            ..SmOptions::default()
        });
    }
}

fn capture_at_index(opts: &SmOptions) {
    let dir = tempfile::tempdir().unwrap();
    let sm = StateMachine::open(dir.path(), opts).unwrap();
    let apply = |from: u64, to: u64| {
        let entries: Vec<_> = (from..=to)
            .map(|i| entry(i, 1, &command_at(SEED, i, 8)))
            .collect();
        sm.apply(&entries).unwrap();
    };
    apply(1, 200);
    let capture = sm
        .begin_snapshot_capture(BeforeImagesConfig::default())
        .unwrap();
    assert_eq!(capture.metadata.index, 200);
    assert!(sm
        .begin_snapshot_capture(BeforeImagesConfig::default())
        .is_err());
    // Changes before the iteration starts, then between every few steps.
    apply(201, 260);
    let mut got = Vec::new();
    let mut next = 261;
    for (n, item) in capture.iter(&sm).enumerate() {
        got.push(item.unwrap());
        if n % 3 == 0 {
            apply(next, next + 4);
            next += 5;
        }
        if n % 7 == 0 {
            sm.flush_pending().unwrap();
        }
    }
    sm.end_snapshot_capture();
    assert!(next > 300, "writes really happened during the iteration");
    assert!(capture.images().recorded_total() > 0);
    let expected: Vec<_> = model_at(200).map.into_iter().collect();
    assert_eq!(got, expected, "the capture shows exactly index 200");
    // The live state moved on.
    assert_eq!(sm.applied().0, next - 1);
    let live: Vec<_> = sm
        .range::<&[u8], _>(..)
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect();
    assert_eq!(live, model_at(next - 1).map.into_iter().collect::<Vec<_>>());
    assert_ne!(live, expected);
}
