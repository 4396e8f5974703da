//! Lazy hard states (`Wal::set_hard_state_lazy`): written in order with the
//! other submissions, never synced on their own, durable with the next sync.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::entries;
use tandem_raft::HardState;
use tandem_wal::{CrashSpec, SimFs, Wal, WalOptions};

const DIR: &str = "/wal";

fn manual() -> WalOptions {
    WalOptions {
        background_threads: false,
        ..WalOptions::small_for_tests()
    }
}

fn open(fs: &SimFs) -> Wal {
    Wal::open_with_fs(Arc::new(fs.clone()), DIR, manual()).unwrap()
}

/// A fresh log holding entries 1..=3 and commit 0, all synced; returns it
/// with the sync count at that point.
fn open_with_three_synced(fs: &SimFs) -> (Wal, u64) {
    let wal = open(fs);
    wal.submit(entries(1, 3, 1, 40), Some(hs(0)))
        .unwrap()
        .wait()
        .unwrap();
    let syncs = fs.sync_count();
    (wal, syncs)
}

fn hs(commit: u64) -> HardState {
    HardState {
        term: 1,
        vote: 1,
        commit,
    }
}

/// Power loss keeping none of the unsynced writes.
fn power_loss(fs: &SimFs) {
    fs.crash(CrashSpec {
        keep_writes: 0,
        torn_bytes: 0,
    });
}

#[test]
fn a_lazy_hard_state_alone_is_written_but_not_synced_and_a_power_loss_may_drop_it() {
    let fs = SimFs::new();
    {
        let (wal, syncs) = open_with_three_synced(&fs);
        let c = wal.set_hard_state_lazy(hs(3)).unwrap();
        assert_eq!(wal.hard_state().unwrap(), hs(3), "visible at once");
        assert!(c.poll().is_none(), "nothing wrote it yet");
        wal.pump().unwrap();
        assert_eq!(c.poll().map(|r| r.is_ok()), Some(true), "written");
        assert_eq!(fs.sync_count(), syncs, "a lazy group asks for no sync");
        assert!(fs.unsynced_writes() > 0, "but it was written");
        // A power loss before any later sync.
        std::mem::forget(wal);
    }
    power_loss(&fs);
    let wal = open(&fs);
    assert_eq!(wal.hard_state().unwrap(), hs(0), "the lazy state was lost");
    assert_eq!(wal.last_index().unwrap(), 3, "the synced entries were not");
}

#[test]
fn a_lazy_hard_state_is_synced_with_the_next_group_that_syncs() {
    let fs = SimFs::new();
    {
        let (wal, syncs) = open_with_three_synced(&fs);
        wal.set_hard_state_lazy(hs(2)).unwrap();
        // Queued behind it; one group, one sync for both.
        let c = wal.submit(entries(4, 1, 1, 40), None).unwrap();
        wal.pump().unwrap();
        c.wait().unwrap();
        assert_eq!(fs.sync_count(), syncs + 1);
        assert_eq!(fs.unsynced_writes(), 0);
        // And in separate groups: the later sync covers the earlier write.
        wal.set_hard_state_lazy(hs(3)).unwrap();
        wal.pump().unwrap();
        assert_eq!(fs.sync_count(), syncs + 1);
        wal.submit(entries(5, 1, 1, 40), None)
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(fs.sync_count(), syncs + 2);
        std::mem::forget(wal);
    }
    power_loss(&fs);
    let wal = open(&fs);
    assert_eq!(wal.hard_state().unwrap(), hs(3));
    assert_eq!(wal.last_index().unwrap(), 5);
}

#[test]
fn flush_makes_a_lazy_hard_state_durable() {
    let fs = SimFs::new();
    {
        let (wal, syncs) = open_with_three_synced(&fs);
        wal.set_hard_state_lazy(hs(3)).unwrap();
        wal.flush().unwrap();
        assert_eq!(fs.sync_count(), syncs + 1);
        // Nothing unsynced left: another flush does not sync again.
        wal.flush().unwrap();
        assert_eq!(fs.sync_count(), syncs + 1);
        std::mem::forget(wal);
    }
    power_loss(&fs);
    assert_eq!(open(&fs).hard_state().unwrap(), hs(3));
}

#[test]
fn with_the_writer_thread_a_lazy_state_completes_when_waited_for_without_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap();
    wal.submit(entries(1, 2, 1, 40), Some(hs(0)))
        .unwrap()
        .wait()
        .unwrap();
    let before = wal.stats();
    // The writer thread is not woken for it; waiting writes it in this
    // thread (or lets the writer thread do it), in either case unsynced.
    wal.set_hard_state_lazy(hs(2)).unwrap().wait().unwrap();
    let after = wal.stats();
    assert_eq!(after.fsyncs, before.fsyncs);
    assert_eq!(after.write_groups, before.write_groups + 1);
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap();
    assert_eq!(
        wal.hard_state().unwrap(),
        hs(2),
        "a clean close syncs what was written"
    );
}

#[test]
fn lazy_submissions_that_fill_the_pending_budget_do_not_stall_the_submitter() {
    let dir = tempfile::tempdir().unwrap();
    let small = WalOptions::small_for_tests();
    let opts = WalOptions {
        pending_bytes_max: small.batch_bytes_max,
        ..small
    };
    let wal = Arc::new(Wal::open(dir.path(), opts.clone()).unwrap());
    // Enough lazy states to pass the budget several times over: nothing
    // else wakes the writer thread, so the submitter blocked on the budget
    // must wake it itself.
    let n = 4 * opts.pending_bytes_max / 16;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let submitter = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            let mut last = None;
            for commit in 0..n {
                last = Some(wal.set_hard_state_lazy(hs(commit)).unwrap());
            }
            let _ = tx.send(last.unwrap().wait());
        })
    };
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the lazy submissions drain")
        .unwrap();
    submitter.join().unwrap();
    assert_eq!(wal.hard_state().unwrap(), hs(n - 1));
}
