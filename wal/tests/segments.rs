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
