//! Model-based property test: random appends (with overwrites), hard states,
//! compactions, snapshot resets and reopens (clean or after a crash that
//! loses unsynced bytes), checked after every step against a plain in-memory
//! model of the log.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use tandem_raft::{Entry, EntryType, HardState};
use tandem_wal::{CrashSpec, Error, SimFs, Wal, WalOptions};

#[derive(Clone, Debug)]
enum Op {
    Append {
        back: u64,
        count: u64,
        len: usize,
        wait: bool,
    },
    /// `Wal::append`: the log places the entries after its last index.
    Place {
        count: u64,
        len: usize,
        wait: bool,
    },
    HardState {
        commit: u64,
    },
    Compact {
        pct: u64,
    },
    Reset {
        ahead: u64,
    },
    Reopen {
        crash: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..4, 1u64..6, 0usize..400, any::<bool>())
            .prop_map(|(back, count, len, wait)| Op::Append { back, count, len, wait }),
        3 => (1u64..6, 0usize..400, any::<bool>())
            .prop_map(|(count, len, wait)| Op::Place { count, len, wait }),
        2 => (0u64..50).prop_map(|commit| Op::HardState { commit }),
        2 => (0u64..=100).prop_map(|pct| Op::Compact { pct }),
        1 => (0u64..4).prop_map(|ahead| Op::Reset { ahead }),
        2 => any::<bool>().prop_map(|crash| Op::Reopen { crash }),
    ]
}

#[derive(Default)]
struct Model {
    snap: (u64, u64),
    entries: Vec<Entry>,
    hs: HardState,
}

impl Model {
    fn last(&self) -> u64 {
        self.snap.0 + self.entries.len() as u64
    }
    fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snap.1, |e| e.term)
    }
    fn truncate_from(&mut self, i: u64) {
        self.entries.truncate((i - self.snap.0 - 1) as usize);
    }
}

fn entry(index: u64, term: u64, len: usize) -> Entry {
    let fill = (index * 31 + term * 7) as u8;
    Entry {
        entry_type: if index % 7 == 0 {
            EntryType::EntryConfChange
        } else {
            EntryType::EntryNormal
        },
        term,
        index,
        data: (0..len).map(|k| fill.wrapping_add(k as u8)).collect(),
        context: if index % 3 == 0 {
            vec![fill; 3].into()
        } else {
            tandem_raft::Bytes::new()
        },
    }
}

fn check(wal: &Wal, m: &Model) {
    assert_eq!(wal.first_index().unwrap(), m.snap.0 + 1);
    assert_eq!(wal.last_index().unwrap(), m.last());
    assert_eq!(wal.snapshot_point().unwrap(), m.snap);
    assert_eq!(wal.term(m.snap.0).unwrap(), m.snap.1);
    assert_eq!(wal.hard_state().unwrap(), m.hs);
    if m.snap.0 > 0 {
        assert!(matches!(
            wal.term(m.snap.0 - 1),
            Err(Error::Compacted { .. })
        ));
        assert!(matches!(
            wal.entries(m.snap.0, m.last() + 1, None),
            Err(Error::Compacted { .. })
        ));
    }
    assert!(matches!(
        wal.term(m.last() + 1),
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        wal.entries(m.snap.0 + 1, m.last() + 2, None),
        Err(Error::Unavailable { .. })
    ));
    let got = wal.entries(m.snap.0 + 1, m.last() + 1, None).unwrap();
    assert_eq!(got, m.entries);
    for e in &m.entries {
        assert_eq!(wal.term(e.index).unwrap(), e.term);
    }
    if m.entries.len() > 2 {
        let cap = m.entries[0].size_bytes() + m.entries[1].size_bytes();
        let got = wal.entries(m.snap.0 + 1, m.last() + 1, Some(cap)).unwrap();
        assert_eq!(got, m.entries[..2]);
        let got = wal.entries(m.snap.0 + 1, m.last() + 1, Some(1)).unwrap();
        assert_eq!(got, m.entries[..1]);
    }
}

fn open(fs: &SimFs, threads: bool) -> Wal {
    let opts = WalOptions {
        background_threads: threads,
        // Zeroing ahead runs with the manual writer; the threaded runs cover
        // plain fallocated segments (prefilled spares: tests/segments.rs).
        prefill_segments: !threads,
        ..WalOptions::small_for_tests()
    };
    Wal::open_with_fs(Arc::new(fs.clone()), Path::new("/wal"), opts).unwrap()
}

fn run(ops: &[Op], threads: bool) -> u64 {
    run_with(ops, threads, false)
}

/// `reopen_every_step`: after every operation, also crash (losing unsynced
/// bytes: none, since everything is waited for) and reopen. Returns how many
/// segments were made out of spare files (recycled).
fn run_with(ops: &[Op], threads: bool, reopen_every_step: bool) -> u64 {
    let fs = SimFs::new();
    let mut wal = open(&fs, threads);
    let mut recycled = 0;
    let mut m = Model::default();
    let mut term = 1;
    for op in ops {
        match *op {
            Op::Append {
                back,
                count,
                len,
                wait,
            } => {
                let first = (m.last() + 1).saturating_sub(back).max(m.snap.0 + 1);
                if first <= m.last() {
                    term += 1;
                }
                term = term.max(m.last_term());
                let es: Vec<Entry> = (first..first + count)
                    .map(|i| entry(i, term, len))
                    .collect();
                m.truncate_from(first);
                m.entries.extend(es.iter().cloned());
                let c = wal.submit(es, None).unwrap();
                if wait {
                    c.wait().unwrap();
                }
            }
            Op::Place { count, len, wait } => {
                term = term.max(m.last_term());
                let first = m.last() + 1;
                let es: Vec<Entry> = (first..first + count)
                    .map(|i| entry(i, term, len))
                    .collect();
                m.entries.extend(es.iter().cloned());
                // The indexes passed in are ignored: the log assigns them.
                let given: Vec<Entry> = es.into_iter().map(|e| Entry { index: 7, ..e }).collect();
                let (placed, c) = wal.append(given).unwrap();
                assert_eq!(placed, first, "append places after the last index");
                if wait {
                    c.wait().unwrap();
                }
            }
            Op::HardState { commit } => {
                m.hs = HardState {
                    term,
                    vote: commit % 3,
                    commit: commit.min(m.last()),
                };
                wal.set_hard_state(m.hs).unwrap();
            }
            Op::Compact { pct } => {
                let first = m.snap.0 + 1;
                let to = first + (m.last() + 1 - first) * pct / 100;
                let c = wal.compact(to).unwrap();
                if to > first {
                    let t = m.entries[(to - first - 1) as usize].term;
                    m.entries.drain(..(to - first) as usize);
                    m.snap = (to - 1, t);
                }
                c.wait().unwrap();
            }
            Op::Reset { ahead } => {
                term += 1;
                let index = m.last() + ahead;
                wal.reset_to_snapshot(index, term).unwrap();
                m.snap = (index, term);
                m.entries.clear();
            }
            Op::Reopen { crash } => {
                wal.flush().unwrap();
                recycled += wal.stats().segments_recycled;
                drop(wal);
                if crash {
                    fs.crash(CrashSpec::default());
                }
                wal = open(&fs, threads);
                let r = wal.recovery_report();
                assert!(r.truncated.is_none(), "{r:?}");
            }
        }
        check(&wal, &m);
        if reopen_every_step {
            wal.flush().unwrap();
            recycled += wal.stats().segments_recycled;
            drop(wal);
            fs.crash(CrashSpec::default());
            wal = open(&fs, threads);
            check(&wal, &m);
        }
    }
    wal.flush().unwrap();
    recycled += wal.stats().segments_recycled;
    drop(wal);
    fs.crash(CrashSpec::default());
    let wal = open(&fs, threads);
    check(&wal, &m);
    let st = wal.stats();
    // 8 bytes per entry plus at most a few fixed-size chunks of slack.
    assert!(
        st.index_bytes <= 8 * st.index_entries + 128 * 1024,
        "{st:?}"
    );
    recycled
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_manual_writer(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, false);
    }

    #[test]
    fn log_matches_model_with_crash_and_reopen_after_every_step(ops in prop::collection::vec(op(), 1..40)) {
        run_with(&ops, false, true);
    }

    #[test]
    fn log_matches_model_threaded_writer(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops, true);
    }
}

#[test]
fn long_run_rotates_and_compacts_segments_away() {
    let mut ops = Vec::new();
    for k in 0..400u64 {
        ops.push(Op::Append {
            back: u64::from(k % 17 == 0),
            count: 1 + k % 4,
            len: 200,
            wait: k % 2 == 0,
        });
        if k % 25 == 0 {
            ops.push(Op::Compact { pct: 80 });
        }
        if k % 60 == 0 {
            ops.push(Op::Reopen {
                crash: k % 120 == 0,
            });
        }
    }
    // Compaction frees segments into the spare pool and rotation reuses
    // them: the model is checked over recycled segments too.
    let manual = run(&ops, false);
    let threaded = run(&ops, true);
    assert!(manual >= 3 && threaded >= 3, "{manual} {threaded}");
}
