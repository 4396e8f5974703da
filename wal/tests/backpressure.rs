//! Backpressure: bytes submitted but not yet written stay within
//! `pending_bytes_max`; submitters past it wait for the writer (or, in
//! manual mode, run it inline), and a poisoned log releases them.

mod common;

use std::sync::Arc;

use common::entries;
use tandem_wal::{Error, SimFs, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts(background_threads: bool) -> WalOptions {
    let o = WalOptions::small_for_tests();
    WalOptions {
        background_threads,
        pending_bytes_max: o.batch_bytes_max,
        ..o
    }
}

fn open(fs: &SimFs, o: WalOptions) -> Wal {
    Wal::open_with_fs(Arc::new(fs.clone()), DIR, o).unwrap()
}

#[test]
fn manual_mode_submissions_past_the_limit_write_inline_first() {
    let fs = SimFs::new();
    let o = opts(false);
    let max = o.pending_bytes_max;
    let wal = open(&fs, o);
    let mut pending = Vec::new();
    let mut inline_pumps = 0;
    for k in 0..40u64 {
        let before = wal.stats();
        assert!(before.pending_bytes <= max);
        let c = wal.submit(entries(1 + k, 1, 1, 1000), None).unwrap();
        let after = wal.stats();
        assert!(after.pending_bytes <= max, "{after:?}");
        let bytes = after.pending_bytes.checked_sub(before.pending_bytes);
        if after.write_groups == before.write_groups {
            // Fitted: nothing was written, nothing completed.
            assert!(bytes.is_some_and(|b| b > 0));
            assert!(pending
                .iter()
                .all(|c: &tandem_wal::Completion| c.poll().is_none()));
        } else {
            // Did not fit: everything earlier was written before it queued.
            inline_pumps += 1;
            for c in pending.drain(..) {
                c.poll().unwrap().unwrap();
            }
            assert!(after.pending_bytes > 0);
            assert!(before.pending_bytes + after.pending_bytes > max);
        }
        pending.push(c);
    }
    assert!(inline_pumps >= 4, "{inline_pumps}");
    wal.pump().unwrap();
    assert_eq!(wal.stats().pending_bytes, 0);
    for c in pending {
        c.poll().unwrap().unwrap();
    }
    assert_eq!(wal.entries(1, 41, None).unwrap(), entries(1, 40, 1, 1000));
}

#[test]
fn manual_mode_poison_during_the_inline_write_fails_the_submitter() {
    let fs = SimFs::new();
    let wal = open(&fs, opts(false));
    let mut k = 1;
    loop {
        let before = wal.stats();
        if before.pending_bytes + 1100 > wal.options().pending_bytes_max {
            break;
        }
        wal.submit(entries(k, 1, 1, 1000), None).unwrap();
        k += 1;
    }
    assert_eq!(wal.stats().write_groups, 0);
    fs.fail_next_sync();
    assert!(matches!(
        wal.submit(entries(k, 1, 1, 1000), None),
        Err(Error::Poisoned { .. })
    ));
    assert!(wal.last_index().is_err());
}

#[test]
fn with_the_writer_thread_pending_stays_bounded_and_poison_releases_waiters() {
    let fs = SimFs::new();
    let o = opts(true);
    let max = o.pending_bytes_max;
    let wal = Arc::new(open(&fs, o));
    // Fail after a while: every submitter, waiting or not, must return.
    fs.fail_after_ops(200);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut ok = 0u64;
                loop {
                    let r = wal.append_next(|next| entries(next, 1, 1, 1500));
                    assert!(wal.stats().pending_bytes <= max);
                    match r {
                        Ok(_) => ok += 1,
                        Err(Error::Poisoned { .. }) => return ok,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 0);
    assert!(wal.stats().pending_bytes <= max);
}
