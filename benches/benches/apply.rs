//! State machine apply throughput against raw sled, in the same run.
//!
//! One iteration applies a group of committed entries, each a `WriteBatch`
//! of `writes` inserts of 100-byte values, with `StateMachine::apply`:
//! the writes are held in memory and written to sled as one atomic batch
//! with the applied index per 256 entries, as a node under load does (that
//! cost falls inside the iterations that reach the bound); with
//! `write_behind_entries: 0` (`tandem_sm_write_through`), one sled batch
//! per call. The baseline builds a
//! `sled::Batch` of exactly the same writes and calls `Tree::apply_batch` on
//! a plain sled database with the same configuration. Throughput is in
//! entries per second; the goal is at least 0.8x the baseline.
//!
//! Keys cycle over a bounded key space so both trees stay the same size and
//! the run measures steady-state overwrites.
//!
//! The machine running this is shared, so the criterion figures of the two
//! sides can be taken under different load. Before the criterion groups the
//! bench therefore prints a ratio measured by interleaving: many short
//! rounds alternate between the two sides and the ratio of the summed times
//! is reported (`TANDEM_APPLY_RATIO_ONLY=1` prints only that).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use tandem::raft::Entry;
use tandem::sm::{Command, SmOptions, StateMachine, WriteBatch};

const VALUE_BYTES: usize = 100;
const KEY_SPACE: u64 = 200_000;

fn key(n: u64) -> Vec<u8> {
    // Spread consecutive writes over the key space (multiplicative hash).
    let k = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEY_SPACE;
    format!("user{k:012}").into_bytes()
}

/// The (key, value) writes of one entry.
type Writes = Vec<(Vec<u8>, Vec<u8>)>;

/// The writes of one entry: `writes` (key, value) pairs starting at `*next`.
fn writes_at(next: &mut u64, writes: usize) -> Writes {
    (0..writes)
        .map(|_| {
            *next += 1;
            (key(*next), vec![(*next % 251) as u8; VALUE_BYTES])
        })
        .collect()
}

fn entries_at(index: &mut u64, next: &mut u64, group: u64, writes: usize) -> Vec<Entry> {
    (0..group)
        .map(|_| {
            *index += 1;
            let mut batch = WriteBatch::new();
            for (k, v) in writes_at(next, writes) {
                batch.insert(k, v);
            }
            Entry {
                index: *index,
                term: 1,
                data: Command::Batch(batch).encode().into(),
                context: index.to_le_bytes().to_vec().into(),
                ..Entry::default()
            }
        })
        .collect()
}

/// The writes of `calls` raw apply calls of `group` entries each.
fn raw_calls(next: &mut u64, calls: usize, group: u64, writes: usize) -> Vec<Vec<Writes>> {
    (0..calls)
        .map(|_| (0..group).map(|_| writes_at(next, writes)).collect())
        .collect()
}

fn raw_batch(entries: Vec<Writes>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (k, v) in entries.into_iter().flatten() {
        batch.insert(k, v);
    }
    batch
}

fn open_raw(path: &std::path::Path) -> sled::Db {
    let opts = sm_options();
    sled::Config::new()
        .path(path)
        .cache_capacity(opts.cache_bytes)
        .flush_every_ms(opts.sled_flush_every_ms)
        .open()
        .unwrap()
}

/// Alternate short rounds of the sides; print entries/s of each and the
/// ratios of the totals.
///
/// - `tandem` is `StateMachine::apply` with the default options: it holds
///   applied writes in memory and writes them to sled as one batch when
///   256 entries are held (write-behind; a node under load writes at 256,
///   `tandem::node::WRITE_SOON_ENTRIES`). Each round ends with
///   `flush_pending` INSIDE the timed part, so every write it applied is in
///   sled when its time stops, as on the other sides.
/// - `tandem write-through` is the same with `write_behind_entries: 0`:
///   one sled batch per apply call.
/// - `raw sled + index` is the baseline's batch plus one more insert of 16
///   bytes under a key sorting before every user key — the shape of what a
///   write-through apply must write (the applied index and term go into the
///   same atomic batch): it separates the cost of that one extra insert
///   from the rest of Tandem's apply path.
fn interleaved_ratio(writes: usize, group: u64) {
    const ROUNDS: usize = 40;
    let calls_per_round = (2048 / (group as usize * writes)).max(4);
    let dir = tempfile::tempdir().unwrap();
    let sm = StateMachine::open(dir.path().join("sm"), &sm_options()).unwrap();
    let sm_wt = StateMachine::open(dir.path().join("sm_wt"), &write_through()).unwrap();
    let db = open_raw(&dir.path().join("raw"));
    let db_ix = open_raw(&dir.path().join("raw_ix"));
    let (mut index, mut index_wt) = (0u64, 0u64);
    let mut next = [0u64; 4];
    let mut total = [Duration::ZERO; 4];
    let run_sm = |sm: &StateMachine, groups: Vec<Vec<Entry>>| {
        let start = Instant::now();
        for entries in groups {
            black_box(sm.apply(&entries).unwrap());
        }
        sm.flush_pending().unwrap();
        start.elapsed()
    };
    let run_raw = |db: &sled::Db, raws: Vec<Vec<Writes>>, index: bool| {
        let start = Instant::now();
        for (n, entries) in raws.into_iter().enumerate() {
            let mut batch = raw_batch(entries);
            if index {
                batch.insert(&b"\x00applied"[..], &(n as u128).to_le_bytes()[..]);
            }
            db.apply_batch(batch).unwrap();
        }
        start.elapsed()
    };
    for round in 0..ROUNDS {
        let groups: Vec<_> = (0..calls_per_round)
            .map(|_| entries_at(&mut index, &mut next[0], group, writes))
            .collect();
        let groups_wt: Vec<_> = (0..calls_per_round)
            .map(|_| entries_at(&mut index_wt, &mut next[1], group, writes))
            .collect();
        let raws = raw_calls(&mut next[2], calls_per_round, group, writes);
        let ixs = raw_calls(&mut next[3], calls_per_round, group, writes);
        let mut inputs = (Some(groups), Some(groups_wt), Some(raws), Some(ixs));
        // Rotate which side goes first; the first rounds warm up.
        for k in 0..4 {
            let side = (round + k) % 4;
            let t = match side {
                0 => run_sm(&sm, inputs.0.take().expect("once")),
                1 => run_sm(&sm_wt, inputs.1.take().expect("once")),
                2 => run_raw(&db, inputs.2.take().expect("once"), false),
                _ => run_raw(&db_ix, inputs.3.take().expect("once"), true),
            };
            if round >= 4 {
                total[side] += t;
            }
        }
    }
    let entries = ((ROUNDS - 4) * calls_per_round) as f64 * group as f64;
    let rate = |t: Duration| entries / t.as_secs_f64();
    let [t_sm, t_wt, t_raw, t_ix] = total.map(|t| t.as_secs_f64());
    println!(
        "interleaved apply/{writes}w_x{group}e: tandem {:.0} entries/s, raw sled {:.0} entries/s, ratio {:.2}; \
         tandem write-through {:.0} entries/s, ratio {:.2}; raw sled + index {:.0} entries/s, \
         write-through / that {:.2}, raw sled + index / raw sled {:.2}",
        rate(total[0]),
        rate(total[2]),
        t_raw / t_sm,
        rate(total[1]),
        t_raw / t_wt,
        rate(total[3]),
        t_ix / t_wt,
        t_raw / t_ix,
    );
}

const CASES: [(usize, u64); 4] = [(1, 1), (1, 32), (64, 1), (64, 8)];

fn sm_options() -> SmOptions {
    SmOptions {
        cache_bytes: 256 * 1024 * 1024,
        sled_flush_every_ms: Some(500),
        write_behind_entries: 256,
        ..SmOptions::default()
    }
}

fn write_through() -> SmOptions {
    SmOptions {
        write_behind_entries: 0,
        ..sm_options()
    }
}

fn bench_apply(c: &mut Criterion) {
    for (writes, group) in CASES {
        let mut g = c.benchmark_group(format!("apply/{writes}w_x{group}e"));
        g.throughput(Throughput::Elements(group));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(3));

        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::open(dir.path().join("sm"), &sm_options()).unwrap();
        let (mut index, mut next) = (0u64, 0u64);
        g.bench_function("tandem_sm", |b| {
            b.iter_batched(
                || entries_at(&mut index, &mut next, group, writes),
                |entries| black_box(sm.apply(&entries).unwrap()),
                BatchSize::SmallInput,
            );
        });
        drop(sm);

        let sm = StateMachine::open(dir.path().join("sm_wt"), &write_through()).unwrap();
        let (mut index, mut next) = (0u64, 0u64);
        g.bench_function("tandem_sm_write_through", |b| {
            b.iter_batched(
                || entries_at(&mut index, &mut next, group, writes),
                |entries| black_box(sm.apply(&entries).unwrap()),
                BatchSize::SmallInput,
            );
        });
        drop(sm);

        let db = open_raw(&dir.path().join("raw"));
        let mut next = 0u64;
        g.bench_function("raw_sled_apply_batch", |b| {
            b.iter_batched(
                || {
                    (0..group)
                        .map(|_| writes_at(&mut next, writes))
                        .collect::<Vec<_>>()
                },
                |entries| db.apply_batch(raw_batch(entries)).unwrap(),
                BatchSize::SmallInput,
            );
        });
        g.finish();
    }
}

criterion_group!(benches, bench_apply);

fn main() {
    for (writes, group) in CASES {
        interleaved_ratio(writes, group);
    }
    if std::env::var_os("TANDEM_APPLY_RATIO_ONLY").is_some() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
