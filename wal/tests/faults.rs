//! Damage, faults and limits: bit flips, torn tails, fsync failure, a full
//! disk, a locked directory, oversize input, garbage files.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{entries, entry, record_offsets};
use tandem_raft::HardState;
use tandem_wal::{
    inspect_with_fs, segment_file_name, CrashSpec, Error, Notify, RecoveryMode, SegmentStatus,
    SimFs, SyncPolicy, Wal, WalOptions,
};

const DIR: &str = "/wal";

fn opts() -> WalOptions {
    WalOptions {
        background_threads: false,
        ..WalOptions::small_for_tests()
    }
}

fn open(fs: &SimFs, o: WalOptions) -> tandem_wal::Result<Wal> {
    Wal::open_with_fs(Arc::new(fs.clone()), DIR, o)
}

fn seg_path(seq: u64) -> std::path::PathBuf {
    Path::new(DIR).join(segment_file_name(seq))
}

/// 120 entries of 300 bytes in 40 submissions: three segments.
fn fill(fs: &SimFs) {
    let wal = open(fs, opts()).unwrap();
    for k in 0..40 {
        wal.submit(entries(1 + 3 * k, 3, 1, 300), None)
            .unwrap()
            .wait()
            .unwrap();
    }
}

#[test]
fn bit_flips_anywhere_but_the_last_record_are_corruption_naming_segment_and_offset() {
    let base = SimFs::new();
    fill(&base);
    let report = inspect_with_fs(&base, Path::new(DIR)).unwrap();
    assert!(report.segments.len() >= 3, "{report:?}");
    let segs: Vec<u64> = report.segments.iter().map(|s| s.sequence).collect();
    let mut checked = 0;
    for (k, &seq) in segs.iter().enumerate() {
        let image = base.file_bytes(&seg_path(seq)).unwrap();
        let recs = record_offsets(&image);
        let last_seg = k + 1 == segs.len();
        // In the last segment the final record may be a torn tail; every
        // other record is followed by valid data.
        let candidates = if last_seg {
            &recs[..recs.len() - 1]
        } else {
            &recs[..]
        };
        for (r, &start) in candidates.iter().enumerate() {
            let end = recs.get(r + 1).copied().unwrap_or_else(|| {
                start
                    + 9
                    + u64::from(u32::from_le_bytes(
                        image[start as usize..start as usize + 4]
                            .try_into()
                            .unwrap(),
                    ))
            });
            for pos in [start, start + 5, start + 8, (start + end) / 2, end - 1] {
                let fs = SimFs::new();
                fill(&fs);
                assert!(fs.corrupt_byte(&seg_path(seq), pos, 0x04));
                match open(&fs, opts()) {
                    Err(Error::Corruption {
                        segment, offset, ..
                    }) => {
                        assert_eq!((segment, offset), (seq, start), "flip at {seq}:{pos}");
                    }
                    other => panic!("flip at {seq}:{pos}: {other:?}"),
                }
                let ins = inspect_with_fs(&fs, Path::new(DIR)).unwrap();
                let s = ins.segments.iter().find(|s| s.sequence == seq).unwrap();
                assert!(
                    matches!(&s.status, SegmentStatus::Corrupt { offset, .. } if *offset == start),
                    "{s:?}"
                );
                checked += 1;
            }
        }
        // A flip in a segment header is corruption at offset 0.
        let fs = SimFs::new();
        fill(&fs);
        fs.corrupt_byte(&seg_path(seq), 17, 1);
        if !last_seg {
            assert!(matches!(
                open(&fs, opts()),
                Err(Error::Corruption { segment, offset: 0, .. }) if segment == seq
            ));
        }
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn bit_flip_on_a_real_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_bytes: 64 * 1024,
        ..WalOptions::small_for_tests()
    };
    {
        let wal = Wal::open(dir.path(), o.clone()).unwrap();
        for k in 0..10 {
            wal.submit(entries(1 + 2 * k, 2, 1, 100), None)
                .unwrap()
                .wait()
                .unwrap();
        }
    }
    let path = dir.path().join(segment_file_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    let recs = record_offsets(&bytes);
    let target = recs[4];
    bytes[target as usize + 20] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    match Wal::open(dir.path(), o) {
        Err(Error::Corruption {
            segment: 1, offset, ..
        }) => assert_eq!(offset, target),
        other => panic!("{other:?}"),
    }
}

#[test]
fn torn_tail_is_cut_and_reported_and_strict_mode_refuses_it() {
    for torn in [1usize, 9, 30, 200, 500] {
        let fs = SimFs::new();
        let o = WalOptions {
            sync: SyncPolicy::Never,
            ..opts()
        };
        let acked;
        {
            let wal = open(&fs, opts()).unwrap();
            wal.submit(entries(1, 5, 1, 100), None)
                .unwrap()
                .wait()
                .unwrap();
            acked = wal.last_index().unwrap();
        }
        {
            let wal = open(&fs, o.clone()).unwrap();
            // Three submissions in one unsynced group.
            wal.submit(entries(6, 2, 1, 100), None).unwrap();
            wal.submit(entries(8, 2, 1, 100), None).unwrap();
            wal.submit(
                vec![],
                Some(HardState {
                    term: 1,
                    vote: 2,
                    commit: 3,
                }),
            )
            .unwrap()
            .wait()
            .unwrap();
        }
        fs.crash(CrashSpec {
            keep_writes: 0,
            torn_bytes: torn,
        });
        let strict = WalOptions {
            recovery: RecoveryMode::Strict,
            ..opts()
        };
        let ins = inspect_with_fs(&fs, Path::new(DIR)).unwrap();
        let last = ins.segments.last().unwrap();
        assert!(
            matches!(last.status, SegmentStatus::TornTail { .. }),
            "{torn}: {ins:?}"
        );
        assert!(
            matches!(open(&fs, strict.clone()), Err(Error::Corruption { .. })),
            "strict mode refuses a torn tail"
        );
        let wal = open(&fs, opts()).unwrap();
        let t = wal
            .recovery_report()
            .truncated
            .clone()
            .expect("a cut is reported");
        assert!(t.bytes > 0);
        let last = wal.last_index().unwrap();
        assert!(last >= acked && last <= 9, "{torn}: {last}");
        assert_eq!(
            wal.entries(1, last + 1, None).unwrap(),
            entries(1, last, 1, 100)
        );
        // The cut is durable and the log continues after it; strict mode is
        // now happy too.
        wal.submit(entries(last + 1, 1, 2, 10), None)
            .unwrap()
            .wait()
            .unwrap();
        drop(wal);
        fs.crash(CrashSpec::default());
        let wal = open(&fs, strict).unwrap();
        assert!(wal.recovery_report().truncated.is_none());
        assert_eq!(wal.term(last + 1).unwrap(), 2);
    }
}

#[test]
fn an_fsync_failure_poisons_the_log() {
    let fs = SimFs::new();
    let wal = open(&fs, opts()).unwrap();
    wal.submit(entries(1, 3, 1, 50), None)
        .unwrap()
        .wait()
        .unwrap();
    fs.fail_next_sync();
    let (tx, rx) = crossbeam_channel::unbounded();
    let t = wal
        .submit_notify(
            entries(4, 1, 1, 50),
            None,
            Notify::Channel {
                sender: tx,
                tag: 77,
            },
        )
        .unwrap();
    assert!(matches!(wal.pump(), Err(Error::Poisoned { .. })));
    let d = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((d.tag, d.ticket), (77, t));
    assert!(matches!(d.result, Err(Error::Poisoned { .. })));
    assert!(matches!(
        wal.submit(entries(5, 1, 1, 1), None),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        wal.entries(1, 2, None),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(wal.last_index(), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.compact(2), Err(Error::Poisoned { .. })));
    // Never retried: no further sync reached the disk.
    let syncs = fs.sync_count();
    drop(wal);
    assert_eq!(fs.sync_count(), syncs);
    fs.crash(CrashSpec::default());
    let wal = open(&fs, opts()).unwrap();
    assert_eq!(wal.last_index().unwrap(), 3);
    assert_eq!(wal.entries(1, 4, None).unwrap(), entries(1, 3, 1, 50));
}

#[test]
fn fsync_failure_with_the_writer_thread_fails_waiters_and_callbacks() {
    let fs = SimFs::new();
    let wal = open(
        &fs,
        WalOptions {
            background_threads: true,
            ..opts()
        },
    )
    .unwrap();
    wal.submit(entries(1, 1, 1, 5), None)
        .unwrap()
        .wait()
        .unwrap();
    fs.fail_next_sync();
    let (tx, rx) = crossbeam_channel::unbounded();
    let c = wal.submit(entries(2, 1, 1, 5), None).unwrap();
    // Submitted before or after the writer hits the failure: either the
    // submission is refused, or its callback reports the poison.
    let accepted = wal
        .submit_notify(
            entries(3, 1, 1, 5),
            None,
            Notify::Callback(Box::new(move |ticket, r| {
                tx.send((ticket, r)).unwrap();
            })),
        )
        .is_ok();
    assert!(matches!(c.wait(), Err(Error::Poisoned { .. })));
    assert!(matches!(c.poll(), Some(Err(Error::Poisoned { .. }))));
    if accepted {
        let (ticket, r) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(ticket, c.ticket() + 1);
        assert!(matches!(r, Err(Error::Poisoned { .. })));
    }
    assert!(matches!(
        wal.submit(entries(3, 1, 1, 5), None),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn a_full_disk_fails_rotation_and_keeps_every_acknowledged_entry() {
    let fs = SimFs::new();
    let wal = open(&fs, opts()).unwrap();
    fs.set_capacity_bytes(Some(40 * 1024));
    let mut acked = 0;
    let mut err = None;
    for k in 0..200u64 {
        match wal
            .submit(entries(1 + k, 1, 1, 500), None)
            .and_then(|c| c.wait())
        {
            Ok(()) => acked = 1 + k,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("the disk fills up");
    assert!(
        matches!(err, Error::Poisoned { ref reason } if reason.contains("os error 28")),
        "{err}"
    );
    assert!(acked > 10);
    drop(wal);
    fs.crash(CrashSpec::default());
    fs.set_capacity_bytes(None);
    let wal = open(&fs, opts()).unwrap();
    assert!(wal.last_index().unwrap() >= acked);
    assert_eq!(
        wal.entries(1, acked + 1, None).unwrap(),
        entries(1, acked, 1, 500)
    );
}

#[test]
fn a_locked_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions::small_for_tests();
    let wal = Wal::open(dir.path(), o.clone()).unwrap();
    match Wal::open(dir.path(), o.clone()) {
        Err(e @ Error::Locked { .. }) => assert!(e.to_string().contains("locked")),
        other => panic!("{other:?}"),
    }
    drop(wal);
    Wal::open(dir.path(), o).unwrap();
    let fs = SimFs::new();
    let _a = open(&fs, opts()).unwrap();
    assert!(matches!(open(&fs, opts()), Err(Error::Locked { .. })));
}

#[test]
fn bad_input_is_rejected_without_side_effects() {
    let fs = SimFs::new();
    let wal = open(&fs, opts()).unwrap();
    let big = entry(1, 1, 4096);
    assert!(matches!(
        wal.submit(vec![big], None),
        Err(Error::EntryTooLarge { index: 1, .. })
    ));
    let many = entries(1, 10, 1, 1500);
    assert!(matches!(
        wal.submit(many, None),
        Err(Error::BatchTooLarge { .. })
    ));
    assert!(matches!(
        wal.submit(entries(2, 1, 1, 1), None),
        Err(Error::InvalidArgument(_))
    ));
    let mut gap = entries(1, 3, 1, 1);
    gap[2].index = 7;
    assert!(matches!(
        wal.submit(gap, None),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(wal.last_index().unwrap(), 0);
    wal.submit(entries(1, 5, 1, 10), None)
        .unwrap()
        .wait()
        .unwrap();
    wal.compact(3).unwrap().wait().unwrap();
    assert!(matches!(
        wal.submit(entries(2, 1, 1, 1), None),
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(wal.compact(7), Err(Error::Unavailable { .. })));
    assert!(matches!(
        wal.entries(4, 3, None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        wal.reset_to_snapshot(1, 1),
        Err(Error::InvalidArgument(_))
    ));
    let raft: tandem_raft::Error = wal.entries(1, 2, None).unwrap_err().into();
    assert_eq!(
        raft,
        tandem_raft::Error::Store(tandem_raft::StorageError::Compacted)
    );
    let raft: tandem_raft::Error = wal.term(9).unwrap_err().into();
    assert_eq!(
        raft,
        tandem_raft::Error::Store(tandem_raft::StorageError::Unavailable)
    );
    assert_eq!(wal.entries(3, 6, None).unwrap(), entries(3, 3, 1, 10));
}

#[test]
fn garbage_segment_files_never_panic() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..60u64 {
        let fs = SimFs::new();
        fill(&fs);
        let seq = 1 + next() % 3;
        let path = seg_path(seq);
        let len = fs.file_bytes(&path).map_or(0, |b| b.len() as u64);
        for _ in 0..(1 + round % 20) {
            if len > 0 {
                fs.corrupt_byte(&path, next() % len, (next() % 255 + 1) as u8);
            }
        }
        // Any outcome but a panic is acceptable; a success must read back.
        if let Ok(wal) = open(&fs, opts()) {
            let (f, l) = (wal.first_index().unwrap(), wal.last_index().unwrap());
            let _ = wal.entries(f, l + 1, None);
        }
        let _ = inspect_with_fs(&fs, Path::new(DIR));
    }
}

#[test]
fn leftover_empty_segments_are_removed_and_reported() {
    let fs = SimFs::new();
    fill(&fs);
    // The writer prepared no spare in manual mode; plant a half-created one.
    let before = inspect_with_fs(&fs, Path::new(DIR)).unwrap();
    let next = before.segments.last().unwrap().sequence + 1;
    {
        use tandem_wal::FileSystem;
        let f = fs.create(&seg_path(next)).unwrap();
        tandem_wal::WalFile::write_at(&*f, 0, b"TNDMW").unwrap();
    }
    let wal = open(&fs, opts()).unwrap();
    assert_eq!(wal.recovery_report().removed_segments, vec![next]);
    assert_eq!(wal.last_index().unwrap(), 120);
    assert!(fs.file_bytes(&seg_path(next)).is_none());
}

#[test]
fn channel_notifications_carry_the_tag_and_come_in_ticket_order() {
    let fs = SimFs::new();
    let wal = open(
        &fs,
        WalOptions {
            background_threads: true,
            ..opts()
        },
    )
    .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut tickets = Vec::new();
    for k in 0..20u64 {
        let t = wal
            .submit_notify(
                entries(1 + k, 1, 1, 30),
                Some(HardState {
                    term: 1,
                    vote: 0,
                    commit: k,
                }),
                Notify::Channel {
                    sender: tx.clone(),
                    tag: 100 + k,
                },
            )
            .unwrap();
        tickets.push(t);
    }
    let got: Vec<_> = (0..20)
        .map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap())
        .collect();
    for (k, d) in got.iter().enumerate() {
        assert_eq!((d.tag, d.ticket), (100 + k as u64, tickets[k]));
        assert!(d.result.is_ok());
    }
    assert_eq!(wal.hard_state().unwrap().commit, 19);
}

#[test]
fn concurrent_appenders_with_append_next_build_one_contiguous_log() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_bytes: 256 * 1024,
        batch_bytes_max: 64 * 1024,
        entry_bytes_max: 16 * 1024,
        ..WalOptions::default()
    };
    {
        let wal = Arc::new(Wal::open(dir.path(), o.clone()).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    for _ in 0..40 {
                        wal.append_next(|i| vec![entry(i, 1 + t, 200)])
                            .unwrap()
                            .wait()
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let st = wal.stats();
        assert_eq!(st.last_index, 320);
        assert!(st.write_groups <= st.submits && st.fsyncs >= 1, "{st:?}");
    }
    let wal = Wal::open(dir.path(), o).unwrap();
    let es = wal.entries(1, 321, None).unwrap();
    assert_eq!(es.len(), 320);
    for e in &es {
        assert_eq!(*e, entry(e.index, e.term, 200));
    }
}

#[test]
fn synchronous_and_asynchronous_appenders_share_one_contiguous_log() {
    // Half the threads lead their own group commits (`append_next_wait`,
    // `submit_wait` never wakes the writer thread unless it is busy), half
    // go through the writer thread (`append_next` + `wait`): every append
    // completes, in one gap-free log, byte for byte after a reopen.
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_bytes: 256 * 1024,
        batch_bytes_max: 64 * 1024,
        entry_bytes_max: 16 * 1024,
        ..WalOptions::default()
    };
    {
        let wal = Arc::new(Wal::open(dir.path(), o.clone()).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    for _ in 0..40 {
                        if t % 2 == 0 {
                            wal.append_next_wait(|i| vec![entry(i, 1 + t, 200)])
                                .unwrap();
                        } else {
                            wal.append_next(|i| vec![entry(i, 1 + t, 200)])
                                .unwrap()
                                .wait()
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(wal.stats().last_index, 320);
        // A lone synchronous submission with a hard state, too.
        wal.submit_wait(
            vec![entry(321, 9, 10)],
            Some(HardState {
                term: 9,
                vote: 1,
                commit: 321,
            }),
        )
        .unwrap();
    }
    let wal = Wal::open(dir.path(), o).unwrap();
    let es = wal.entries(1, 322, None).unwrap();
    assert_eq!(es.len(), 321);
    for e in &es[..320] {
        assert_eq!(*e, entry(e.index, e.term, 200));
    }
    assert_eq!(es[320], entry(321, 9, 10));
    assert_eq!(wal.hard_state().unwrap().commit, 321);
}

#[test]
fn submit_wait_reports_an_fsync_failure_and_the_poison_after_it() {
    for threads in [true, false] {
        let fs = SimFs::new();
        let o = WalOptions {
            background_threads: threads,
            ..opts()
        };
        let wal = open(&fs, o).unwrap();
        wal.submit_wait(entries(1, 2, 1, 100), None).unwrap();
        fs.fail_next_sync();
        assert!(
            matches!(
                wal.submit_wait(entries(3, 1, 1, 100), None),
                Err(Error::Poisoned { .. })
            ),
            "threads: {threads}"
        );
        assert!(matches!(
            wal.append_next_wait(|i| entries(i, 1, 1, 100)),
            Err(Error::Poisoned { .. })
        ));
    }
}

#[test]
fn relaxed_sync_policies_acknowledge_after_the_write_and_sync_later() {
    for (policy, threads) in [
        (SyncPolicy::EveryMs(5), true),
        (SyncPolicy::Never, true),
        (SyncPolicy::EveryMs(5), false),
        (SyncPolicy::Never, false),
    ] {
        let fs = SimFs::new();
        let o = WalOptions {
            sync: policy,
            background_threads: threads,
            ..opts()
        };
        let wal = open(&fs, o.clone()).unwrap();
        let syncs_at_open = fs.sync_count();
        for k in 0..30u64 {
            wal.submit(entries(1 + k, 1, 1, 700), None)
                .unwrap()
                .wait()
                .unwrap();
        }
        // Rotation syncs the segment it leaves, whatever the policy.
        assert!(fs.sync_count() > syncs_at_open, "{policy:?}");
        if policy == SyncPolicy::Never {
            assert!(
                fs.unsynced_writes() > 0,
                "{policy:?}: acked before any sync"
            );
        }
        // Close syncs what is left (threaded); a process crash loses nothing.
        drop(wal);
        let wal = open(&fs, o.clone()).unwrap();
        assert_eq!(wal.entries(1, 31, None).unwrap(), entries(1, 30, 1, 700));
        drop(wal);
        if threads {
            fs.crash(CrashSpec::default());
            let wal = open(&fs, o).unwrap();
            assert_eq!(wal.last_index().unwrap(), 30, "{policy:?}: close synced");
        }
    }
}

#[test]
fn every_ms_policy_syncs_an_idle_log_within_the_window() {
    let fs = SimFs::new();
    let o = WalOptions {
        sync: SyncPolicy::EveryMs(2),
        background_threads: true,
        ..opts()
    };
    let wal = open(&fs, o).unwrap();
    wal.submit(entries(1, 1, 1, 10), None)
        .unwrap()
        .wait()
        .unwrap();
    wal.submit(entries(2, 1, 1, 10), None)
        .unwrap()
        .wait()
        .unwrap();
    // Condition wait with a generous bound: the timer sync must come.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fs.unsynced_writes() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(fs.unsynced_writes(), 0);
    assert_eq!(wal.last_index().unwrap(), 2);
}

#[test]
fn reads_see_submissions_before_they_are_durable() {
    let fs = SimFs::new();
    let wal = open(&fs, opts()).unwrap();
    let c1 = wal.submit(entries(1, 4, 1, 20), None).unwrap();
    let c2 = wal.submit(entries(3, 2, 2, 20), None).unwrap();
    assert!(c1.poll().is_none() && c2.poll().is_none());
    assert_eq!(wal.last_index().unwrap(), 4);
    assert_eq!(wal.term(2).unwrap(), 1);
    assert_eq!(wal.term(3).unwrap(), 2);
    let mut want = entries(1, 2, 1, 20);
    want.extend(entries(3, 2, 2, 20));
    assert_eq!(wal.entries(1, 5, None).unwrap(), want);
    c2.wait().unwrap();
    assert!(matches!(c1.poll(), Some(Ok(()))));
    assert_eq!(wal.entries(1, 5, None).unwrap(), want);
}

#[test]
fn truncated_and_foreign_files_on_a_real_disk_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_bytes: 16 * 1024,
        ..WalOptions::small_for_tests()
    };
    {
        let wal = Wal::open(dir.path(), o.clone()).unwrap();
        for k in 0..60 {
            wal.submit(entries(1 + k, 1, 1, 500), None)
                .unwrap()
                .wait()
                .unwrap();
        }
    }
    let first = dir.path().join(segment_file_name(1));
    let image = std::fs::read(&first).unwrap();
    let recs = record_offsets(&image);
    let last = *recs.last().unwrap() as usize;
    let used = last + 9 + u32::from_le_bytes(image[last..last + 4].try_into().unwrap()) as usize;
    // Cutting only the zero tail loses nothing.
    std::fs::write(&first, &image[..used]).unwrap();
    assert_eq!(
        Wal::open(dir.path(), o.clone())
            .unwrap()
            .last_index()
            .unwrap(),
        60
    );
    for len in [0usize, 5, 31, 32, 33, 100, 5000, used - 1] {
        std::fs::write(&first, &image[..len]).unwrap();
        // A cut header or record is corruption of segment 1; a cut between
        // records is noticed where segment 2 resumes past what is left.
        match Wal::open(dir.path(), o.clone()) {
            Err(Error::Corruption {
                segment: 1,
                offset: 0,
                ..
            }) if len < 32 => {}
            Err(Error::Corruption { segment: 1 | 2, .. }) if len >= 32 => {}
            other => panic!("segment 1 cut to {len} bytes: {other:?}"),
        }
    }
    std::fs::write(&first, &image).unwrap();
    // Files that are not segments are ignored; a foreign file with a
    // segment name is corruption.
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    Wal::open(dir.path(), o.clone()).unwrap();
    std::fs::write(
        dir.path().join(segment_file_name(0)),
        b"not a segment at all, but long enough",
    )
    .unwrap();
    assert!(matches!(
        Wal::open(dir.path(), o),
        Err(Error::Corruption {
            segment: 0,
            offset: 0,
            ..
        })
    ));
}
