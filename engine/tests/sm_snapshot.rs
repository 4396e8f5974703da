//! Building a snapshot from a state machine while it applies, and
//! installing it into another one atomically (versioned directories).

mod sm_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use tandem::sm::{SmOptions, StateMachine};
use tandem_snapshot::{BeforeImagesConfig, Stager, WriterConfig};

use sm_support::{command_at, conf_entry, entry, Model};

const SEED: u64 = 7;

fn model_at(index: u64) -> Model {
    let mut m = Model::default();
    for i in 1..=index {
        m.apply(&command_at(SEED, i, 8));
    }
    m
}

fn apply(sm: &StateMachine, from: u64, to: u64) {
    let entries: Vec<_> = (from..=to)
        .map(|i| entry(i, 1, &command_at(SEED, i, 8)))
        .collect();
    sm.apply(&entries).unwrap();
}

fn pairs(sm: &StateMachine) -> Vec<(Vec<u8>, Vec<u8>)> {
    sm.range::<&[u8], _>(..)
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[test]
fn build_while_applying_then_install_elsewhere_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let leader = StateMachine::open(dir.path().join("a/sm"), &SmOptions::default()).unwrap();
    apply(&leader, 1, 300);
    let stager = Stager::open(&dir.path().join("a/snap")).unwrap();
    let writer = WriterConfig { chunk_bytes: 256 };
    // Apply keeps going on another thread for the whole build. Whether a
    // given apply lands before, during or after the build is up to the
    // scheduler (on a loaded machine the build can finish first); the state
    // must be exact at the build's index either way. Every interleaving of
    // writes and builder steps is covered deterministically by the
    // before-image model test of `tandem-snapshot` (`tests/before_image.rs`).
    let stop = AtomicBool::new(false);
    let built = std::thread::scope(|s| {
        let writer_thread = s.spawn(|| {
            let mut next = 301;
            loop {
                apply(&leader, next, next + 2);
                next += 3;
                if stop.load(Ordering::Acquire) || next >= 2_000 {
                    break;
                }
            }
            next
        });
        let built = leader
            .build_snapshot(&stager, &writer, BeforeImagesConfig::default())
            .unwrap();
        stop.store(true, Ordering::Release);
        let next = writer_thread.join().unwrap();
        // The build saw an index the writer had reached, at a boundary of
        // its apply calls (each applies 3 entries atomically).
        let at = built.manifest().index;
        assert!(
            (300..next).contains(&at) && (at - 300) % 3 == 0,
            "built at {at} while the writer applied 301..{next} in threes"
        );
        built
    });
    let at = built.manifest().index;
    assert!(at >= 300);
    let expected: Vec<_> = model_at(at).map.into_iter().collect();
    assert!(built.manifest().chunk_count > 1, "several chunks");

    // A follower at an older state installs it.
    let fdir = dir.path().join("b/sm");
    {
        let follower = StateMachine::open(&fdir, &SmOptions::default()).unwrap();
        apply(&follower, 1, 10);
        let old_dir = follower.dir();
        follower.install_snapshot(&built).unwrap();
        assert_eq!(follower.applied(), (at, 1));
        assert_eq!(follower.durable_applied(), at);
        assert_eq!(follower.snapshot_metadata().index, at);
        assert_eq!(pairs(&follower), expected, "exactly the state at {at}");
        assert!(!old_dir.exists(), "the old version is removed");
        // Applying continues from the snapshot.
        apply(&follower, at + 1, at + 5);
        // Installing an older or equal snapshot is refused, nothing changes.
        assert!(follower.install_snapshot(&built).is_err());
        assert_eq!(follower.applied().0, at + 5);
        follower.flush_durable().unwrap();
    }
    let follower = StateMachine::open(&fdir, &SmOptions::default()).unwrap();
    assert_eq!(follower.applied().0, at + 5);
    assert_eq!(
        pairs(&follower),
        model_at(at + 5).map.into_iter().collect::<Vec<_>>()
    );
}

/// The replicas a state machine has seen removed are durable, and a
/// snapshot install adds those its configuration leaves out: a restarted
/// replica keeps ignoring them (the node drops their messages).
#[test]
fn replicas_seen_removed_survive_reopen_and_install() {
    use tandem::raft::{ConfChangeType, ConfState};
    let dir = tempfile::tempdir().unwrap();
    let leader = StateMachine::open(dir.path().join("a/sm"), &SmOptions::default()).unwrap();
    leader
        .bootstrap(&ConfState::from_voters([1, 2, 3]))
        .unwrap();
    apply(&leader, 1, 10);
    leader
        .apply(&[
            conf_entry(11, 1, ConfChangeType::AddNode, 4),
            conf_entry(12, 1, ConfChangeType::RemoveNode, 3),
        ])
        .unwrap();
    assert_eq!(leader.conf_state(), ConfState::from_voters([1, 2, 4]));
    assert_eq!(leader.removed(), BTreeSet::from([3]));
    let stager = Stager::open(&dir.path().join("a/snap")).unwrap();
    let built = leader
        .build_snapshot(
            &stager,
            &WriterConfig { chunk_bytes: 256 },
            BeforeImagesConfig::default(),
        )
        .unwrap();
    assert_eq!(built.manifest().index, 12);

    // A follower that saw learner 9 come and go, then installs the snapshot.
    let fdir = dir.path().join("b/sm");
    {
        let follower = StateMachine::open(&fdir, &SmOptions::default()).unwrap();
        follower
            .bootstrap(&ConfState::from_voters([1, 2, 3]))
            .unwrap();
        follower
            .apply(&[
                conf_entry(1, 1, ConfChangeType::AddLearnerNode, 9),
                conf_entry(2, 1, ConfChangeType::RemoveNode, 9),
            ])
            .unwrap();
        assert_eq!(follower.removed(), BTreeSet::from([9]));
        follower.flush_durable().unwrap();
    }
    {
        let follower = StateMachine::open(&fdir, &SmOptions::default()).unwrap();
        assert_eq!(follower.removed(), BTreeSet::from([9]), "after a reopen");
        follower.install_snapshot(&built).unwrap();
        assert_eq!(follower.conf_state(), ConfState::from_voters([1, 2, 4]));
        assert_eq!(follower.removed(), BTreeSet::from([3, 9]));
    }
    let follower = StateMachine::open(&fdir, &SmOptions::default()).unwrap();
    assert_eq!(
        follower.removed(),
        BTreeSet::from([3, 9]),
        "after install and reopen"
    );
    let leader_dir = leader.dir();
    drop(leader);
    let leader = StateMachine::open(dir.path().join("a/sm"), &SmOptions::default()).unwrap();
    assert_eq!(
        leader.removed(),
        BTreeSet::from([3]),
        "{}",
        leader_dir.display()
    );
}

#[test]
fn a_crash_before_the_switch_leaves_the_old_state_and_after_it_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sm");
    {
        let sm = StateMachine::open(&root, &SmOptions::default()).unwrap();
        apply(&sm, 1, 20);
        sm.flush_durable().unwrap();
    }
    // Crash while a new version was being filled: a partial directory.
    std::fs::create_dir_all(root.join("v-00000000000000000099")).unwrap();
    std::fs::write(root.join("v-00000000000000000099/db"), b"half").unwrap();
    std::fs::write(root.join("CURRENT.tmp"), b"torn").unwrap();
    {
        let sm = StateMachine::open(&root, &SmOptions::default()).unwrap();
        assert_eq!(sm.applied().0, 20, "old state");
        assert_eq!(pairs(&sm), model_at(20).map.into_iter().collect::<Vec<_>>());
        assert!(!root.join("v-00000000000000000099").exists());
        assert!(!root.join("CURRENT.tmp").exists());
    }
    // Crash right after the switch, before the old version was removed:
    // build a snapshot elsewhere, install it, then put an old version back.
    let other = StateMachine::open(dir.path().join("o/sm"), &SmOptions::default()).unwrap();
    apply(&other, 1, 50);
    let stager = Stager::open(&dir.path().join("o/snap")).unwrap();
    let snap = other
        .build_snapshot(
            &stager,
            &WriterConfig::default(),
            BeforeImagesConfig::default(),
        )
        .unwrap();
    {
        let sm = StateMachine::open(&root, &SmOptions::default()).unwrap();
        sm.install_snapshot(&snap).unwrap();
    }
    std::fs::create_dir_all(root.join("v-00000000000000000000")).unwrap();
    let sm = StateMachine::open(&root, &SmOptions::default()).unwrap();
    assert_eq!(sm.applied().0, 50, "new state");
    assert_eq!(pairs(&sm), model_at(50).map.into_iter().collect::<Vec<_>>());
    assert!(!root.join("v-00000000000000000000").exists());
}
