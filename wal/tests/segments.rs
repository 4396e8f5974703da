//! Segment life cycle: spares prepared ahead of use, rotation, deletion by
//! compaction and reset, and what `inspect` reports.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::entries;
use tandem_wal::{inspect_with_fs, FileSystem, SegmentStatus, SimFs, Wal, WalOptions};

fn segment_files(fs: &SimFs) -> Vec<String> {
    fs.list(Path::new("/wal"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect()
}

/// Wait (bounded, not timed) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn spares_are_prepared_ahead_and_compaction_deletes_whole_segments() {
    let fs = SimFs::new();
    let opts = WalOptions::small_for_tests();
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", opts.clone()).unwrap();
    eventually("a spare segment is prepared at open", || {
        segment_files(&fs).len() == 2
    });
    let ins = inspect_with_fs(&fs, Path::new("/wal")).unwrap();
    assert_eq!(ins.segments[1].status, SegmentStatus::Empty);
    // About 25 entries of 600 bytes fit a 16 KiB segment: rotate a few times.
    for k in 0..80u64 {
        wal.submit(entries(1 + k, 1, 1, 600), None)
            .unwrap()
            .wait()
            .unwrap();
    }
    let st = wal.stats();
    assert!(st.segments >= 4, "{st:?}");
    eventually("the next spare is prepared after rotation", || {
        segment_files(&fs).len() == st.segments + 1
    });
    let ins = inspect_with_fs(&fs, Path::new("/wal")).unwrap();
    let used: Vec<_> = ins.segments.iter().filter(|s| s.records > 0).collect();
    assert_eq!(used.len(), st.segments);
    // Index ranges tile 1..=80 in segment order.
    let mut next = 1;
    for s in &used {
        assert_eq!(s.status, SegmentStatus::Ok);
        assert_eq!(s.first_index, Some(next), "{s:?}");
        next = s.last_index.unwrap() + 1;
    }
    assert_eq!(next, 81);
    assert_eq!((ins.first_index, ins.last_index), (1, 80));

    // Compact into the last segment: every closed segment goes.
    wal.compact(79).unwrap().wait().unwrap();
    eventually("compacted segments are deleted", || {
        segment_files(&fs).len() == 2
    });
    assert_eq!(wal.stats().segments, 1);
    assert_eq!(wal.term(78).unwrap(), 1);
    drop(wal);
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", opts.clone()).unwrap();
    assert_eq!(
        (wal.first_index().unwrap(), wal.last_index().unwrap()),
        (79, 80)
    );
    assert_eq!(wal.entries(79, 81, None).unwrap(), entries(79, 2, 1, 600));

    // A snapshot reset far ahead drops everything; the log restarts there.
    for k in 0..30u64 {
        wal.submit(entries(81 + k, 2, 2, 600), None).unwrap();
    }
    wal.flush().unwrap();
    wal.reset_to_snapshot(1000, 5).unwrap().wait().unwrap();
    eventually("segments before the reset are deleted", || {
        wal.stats().segments == 1
    });
    wal.submit(entries(1001, 3, 5, 10), None)
        .unwrap()
        .wait()
        .unwrap();
    drop(wal);
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", opts).unwrap();
    assert_eq!(
        (wal.first_index().unwrap(), wal.last_index().unwrap()),
        (1001, 1003)
    );
    assert_eq!(wal.term(1000).unwrap(), 5);
    assert_eq!(wal.recovery_report().segments.len(), 1);
}

fn spare_files(fs: &SimFs) -> Vec<String> {
    fs.list(Path::new("/wal"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".spare"))
        .collect()
}

#[test]
fn compaction_fills_a_bounded_spare_pool_and_new_segments_reuse_it() {
    let fs = SimFs::new();
    let opts = WalOptions {
        background_threads: false,
        recycle_segments_max: 2,
        ..WalOptions::small_for_tests()
    };
    let open = |o: &WalOptions| Wal::open_with_fs(Arc::new(fs.clone()), "/wal", o.clone()).unwrap();
    let wal = open(&opts);
    // About 25 entries of 600 bytes fit a 16 KiB segment: 5 segments.
    for k in 0..120u64 {
        wal.submit(entries(1 + k, 1, 1, 600), None)
            .unwrap()
            .wait()
            .unwrap();
    }
    let segments = wal.stats().segments;
    assert!(segments >= 5, "{segments}");
    wal.compact(118).unwrap().wait().unwrap();
    // Every closed segment left the log; two became spares, the rest were
    // deleted.
    assert_eq!(wal.stats().segments, 1);
    assert_eq!(segment_files(&fs).len(), 1);
    let spares = spare_files(&fs);
    assert_eq!(spares.len(), 2, "{spares:?}");
    let ins = inspect_with_fs(&fs, Path::new("/wal")).unwrap();
    let names: Vec<String> = ins
        .spares
        .iter()
        .map(|s| tandem_wal::spare_file_name(s.sequence))
        .collect();
    assert_eq!(names, spares);
    assert!(ins
        .spares
        .iter()
        .all(|s| s.file_bytes == opts.segment_bytes));
    assert_eq!((ins.first_index, ins.last_index), (118, 120));

    // The next two segments are made out of the spares; their stale bytes
    // (valid records of their old sequences) are never read as log.
    for k in 0..60u64 {
        wal.submit(entries(121 + k, 1, 2, 600), None)
            .unwrap()
            .wait()
            .unwrap();
    }
    assert_eq!(wal.stats().segments_recycled, 2);
    assert!(spare_files(&fs).is_empty());
    let expect = |wal: &Wal| {
        let mut all = entries(118, 3, 1, 600);
        all.extend(entries(121, 60, 2, 600));
        assert_eq!(
            (wal.first_index().unwrap(), wal.last_index().unwrap()),
            (118, 180)
        );
        assert_eq!(wal.entries(118, 181, None).unwrap(), all);
    };
    expect(&wal);
    drop(wal);
    let ins = inspect_with_fs(&fs, Path::new("/wal")).unwrap();
    let used: Vec<_> = ins.segments.iter().filter(|s| s.records > 0).collect();
    assert!(
        used.iter().all(|s| s.status == SegmentStatus::Ok),
        "{used:?}"
    );
    // Only this generation's records are read: the segments' index ranges
    // tile the log (the active one at the compaction also holds the
    // compacted 101..=117), with no stale entries of the older sequences.
    let mut next = used[0].first_index.unwrap();
    for s in &used {
        assert_eq!(s.first_index, Some(next), "{used:?}");
        assert_eq!(s.entries, s.last_index.unwrap() - next + 1, "{used:?}");
        next = s.last_index.unwrap() + 1;
    }
    assert_eq!(next, 181);
    assert!(used.len() >= 3, "{used:?}");
    // A cleanly closed log with recycled segments opens in strict mode.
    let strict = WalOptions {
        recovery: tandem_wal::RecoveryMode::Strict,
        ..opts.clone()
    };
    let wal = open(&strict);
    assert!(wal.recovery_report().truncated.is_none());
    expect(&wal);
    // Compact everything again: spares come back (bounded), and a reopen
    // keeps them.
    wal.compact(180).unwrap().wait().unwrap();
    assert_eq!(spare_files(&fs).len(), 2);
    drop(wal);
    let wal = open(&strict);
    assert_eq!(wal.recovery_report().spares.len(), 2);
    assert_eq!(wal.last_index().unwrap(), 180);
    drop(wal);
    // With recycling off, recovery deletes the spares.
    let off = WalOptions {
        recycle_segments_max: 0,
        ..opts
    };
    let wal = open(&off);
    assert!(wal.recovery_report().spares.is_empty());
    assert!(spare_files(&fs).is_empty());
    assert_eq!(wal.last_index().unwrap(), 180);
}

#[test]
fn a_torn_group_in_a_recycled_segment_is_cut_at_its_end_marker() {
    let fs = SimFs::new();
    let opts = WalOptions {
        background_threads: false,
        ..WalOptions::small_for_tests()
    };
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", opts.clone()).unwrap();
    for k in 0..60u64 {
        wal.submit(entries(1 + k, 1, 1, 600), None)
            .unwrap()
            .wait()
            .unwrap();
    }
    wal.compact(59).unwrap().wait().unwrap();
    // Fill until a spare is in use, then tear the next group.
    let mut next = 61;
    while wal.stats().segments_recycled == 0 {
        wal.submit(entries(next, 2, 2, 600), None)
            .unwrap()
            .wait()
            .unwrap();
        next += 1;
    }
    wal.submit(entries(next, 1, 2, 600), None)
        .unwrap()
        .wait()
        .unwrap();
    let acked = next;
    // The group is written (not synced) and then torn after 100 bytes.
    let fs2 = fs.clone();
    let wal2 = wal;
    fs2.fail_after_ops(2);
    let _ = wal2
        .submit(entries(acked + 1, 1, 2, 600), None)
        .unwrap()
        .wait();
    drop(wal2);
    fs.crash(tandem_wal::CrashSpec {
        keep_writes: 0,
        torn_bytes: 100,
    });
    let strict = WalOptions {
        recovery: tandem_wal::RecoveryMode::Strict,
        ..opts.clone()
    };
    assert!(matches!(
        Wal::open_with_fs(Arc::new(fs.clone()), "/wal", strict.clone()),
        Err(tandem_wal::Error::Corruption { .. })
    ));
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", opts).unwrap();
    let t = wal
        .recovery_report()
        .truncated
        .clone()
        .expect("a torn tail");
    assert!(t.bytes > 0);
    assert_eq!(wal.last_index().unwrap(), acked);
    assert_eq!(
        wal.entries(acked, acked + 1, None).unwrap(),
        entries(acked, 1, 2, 600)
    );
    drop(wal);
    // The cut is durable: strict mode now opens it.
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", strict).unwrap();
    assert_eq!(wal.last_index().unwrap(), acked);
}

#[test]
fn a_barrier_that_rotates_leaves_the_preamble_to_the_next_group() {
    // The first group of segment 1 fills it to within the rotation margin,
    // so the next group, a barrier (flush), rotates to segment 2 writing
    // nothing there. The group after it must still start segment 2 with
    // the preamble (compaction point, hard state): once segment 1 is
    // compacted away, the hard state lives only there.
    let fs = SimFs::new();
    let opts = WalOptions {
        background_threads: false,
        segment_bytes: 8192,
        batch_bytes_max: 8192 - 114,
        entry_bytes_max: 8000,
        cache_bytes_max: 1024,
        ..WalOptions::default()
    };
    let hs = tandem_raft::HardState {
        term: 1,
        vote: 1,
        commit: 1,
    };
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", opts.clone()).unwrap();
    wal.submit(entries(1, 1, 1, 7920), Some(hs))
        .unwrap()
        .wait()
        .unwrap();
    wal.flush().unwrap();
    wal.submit(entries(2, 2, 1, 100), None)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(wal.stats().segments, 2, "the barrier rotated");
    wal.compact(3).unwrap().wait().unwrap();
    assert_eq!(wal.stats().segments, 1);
    drop(wal);
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", opts).unwrap();
    assert_eq!(wal.hard_state().unwrap(), hs);
    assert_eq!(wal.snapshot_point().unwrap(), (2, 1));
    assert_eq!(wal.entries(3, 4, None).unwrap(), entries(3, 1, 1, 100));
}

/// A compaction that nobody waits for is written, at the latest, with the
/// next append's group (submissions are written in order), and is durable
/// once that append is: power loss then keeps it.
#[test]
fn a_compaction_nobody_waits_for_is_durable_with_the_next_append() {
    let fs = SimFs::new();
    let wal =
        Wal::open_with_fs(Arc::new(fs.clone()), "/wal", WalOptions::small_for_tests()).unwrap();
    for k in 0..10u64 {
        wal.submit_wait(entries(1 + k, 1, 1, 100), None).unwrap();
    }
    let compaction = wal.compact(6).unwrap();
    assert_eq!(wal.first_index().unwrap(), 6, "reads below move at once");
    wal.submit_wait(entries(11, 1, 1, 100), None).unwrap();
    assert!(matches!(compaction.poll(), Some(Ok(()))));
    // Power loss with the log still open: only what was synced survives.
    fs.crash(tandem_wal::CrashSpec::default());
    drop(wal);
    let wal =
        Wal::open_with_fs(Arc::new(fs.clone()), "/wal", WalOptions::small_for_tests()).unwrap();
    assert_eq!(wal.first_index().unwrap(), 6);
    assert_eq!(wal.last_index().unwrap(), 11);
}
