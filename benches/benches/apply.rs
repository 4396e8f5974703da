//! State machine apply throughput against raw sled, in the same run.
//!
//! One iteration applies a group of committed entries, each a `WriteBatch`
//! of `writes` inserts of 100-byte values, with `StateMachine::apply` (one
//! sled atomic batch with the applied index). The baseline builds a
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
                data: Command::Batch(batch).encode(),
                context: index.to_le_bytes().to_vec(),
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
/// ratios of the totals. The third side, `raw sled + index`, is the
/// baseline's batch plus one more insert of 16 bytes under a key sorting
/// before every user key — the shape of what Tandem must write (the applied
/// index and term go into the same atomic batch): it separates the cost of
/// that one extra insert from the rest of Tandem's apply path.
fn interleaved_ratio(writes: usize, group: u64) {
    const ROUNDS: usize = 40;
    let calls_per_round = (2048 / (group as usize * writes)).max(4);
    let dir = tempfile::tempdir().unwrap();
    let sm = StateMachine::open(dir.path().join("sm"), &sm_options()).unwrap();
    let db = open_raw(&dir.path().join("raw"));
    let db_ix = open_raw(&dir.path().join("raw_ix"));
    let (mut index, mut next_sm, mut next_raw, mut next_ix) = (0u64, 0u64, 0u64, 0u64);
    let (mut t_sm, mut t_raw, mut t_ix) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let groups: Vec<_> = (0..calls_per_round)
            .map(|_| entries_at(&mut index, &mut next_sm, group, writes))
            .collect();
        let raws = raw_calls(&mut next_raw, calls_per_round, group, writes);
        let run_sm = |groups: Vec<Vec<Entry>>| {
            let start = Instant::now();
            for entries in groups {
                black_box(sm.apply(&entries).unwrap());
            }
            start.elapsed()
        };
        let ixs = raw_calls(&mut next_ix, calls_per_round, group, writes);
        let run_raw = |raws: Vec<Vec<Writes>>| {
            let start = Instant::now();
            for entries in raws {
                db.apply_batch(raw_batch(entries)).unwrap();
            }
            start.elapsed()
        };
        let run_ix = |ixs: Vec<Vec<Writes>>| {
            let start = Instant::now();
            for (n, entries) in ixs.into_iter().enumerate() {
                let mut batch = raw_batch(entries);
                batch.insert(&b"\x00applied"[..], &(n as u128).to_le_bytes()[..]);
                db_ix.apply_batch(batch).unwrap();
            }
            start.elapsed()
        };
        // Rotate which side goes first; the first rounds warm up.
        let (a, b, c) = match round % 3 {
            0 => {
                let a = run_sm(groups);
                let b = run_raw(raws);
                (a, b, run_ix(ixs))
            }
            1 => {
                let b = run_raw(raws);
                let c = run_ix(ixs);
                (run_sm(groups), b, c)
            }
            _ => {
                let c = run_ix(ixs);
                let a = run_sm(groups);
                (a, run_raw(raws), c)
            }
        };
        if round >= 4 {
            t_sm += a;
            t_raw += b;
            t_ix += c;
        }
    }
    let entries = ((ROUNDS - 4) * calls_per_round) as f64 * group as f64;
    println!(
        "interleaved apply/{writes}w_x{group}e: tandem_sm {:.0} entries/s, raw sled {:.0} entries/s, ratio {:.2}; raw sled + index {:.0} entries/s, tandem / that {:.2}, raw sled + index / raw sled {:.2}",
        entries / t_sm.as_secs_f64(),
        entries / t_raw.as_secs_f64(),
        t_raw.as_secs_f64() / t_sm.as_secs_f64(),
        entries / t_ix.as_secs_f64(),
        t_ix.as_secs_f64() / t_sm.as_secs_f64(),
        t_raw.as_secs_f64() / t_ix.as_secs_f64(),
    );
}

const CASES: [(usize, u64); 4] = [(1, 1), (1, 32), (64, 1), (64, 8)];

fn sm_options() -> SmOptions {
    SmOptions {
        cache_bytes: 256 * 1024 * 1024,
        sled_flush_every_ms: Some(500),
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
