//! Snapshot build and full read/verify throughput, with a raw sled baseline
//! measured in the same run.
//!
//! The state is a sled tree of `N` pairs with 16-byte keys and 1 KiB values
//! (about 20 MiB). Three cases, all with throughput in bytes of pair data:
//!
//! - `build`: `Stager::build` of the whole tree (through `PointInTimeIter`,
//!   as the engine builds) into chunk files (including
//!   the chunk and manifest fsyncs and the publish rename);
//! - `verify`: `SnapshotReader::verify`, a full read of every chunk checking
//!   chunk CRCs, key order, counts and the whole-snapshot checksum;
//! - `raw_sled_copy`: the baseline, iterating the same tree, copying every
//!   pair into one `Vec` and writing it to a file with a single
//!   `fdatasync`.
//!
//! Each build uses a fresh `(index, term)` and older snapshots are removed
//! outside the timed part, so no iteration reuses an existing snapshot.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tandem_raft::{ConfState, SnapshotMetadata};
use tandem_snapshot::{
    BeforeImages, BeforeImagesConfig, PointInTimeIter, SnapshotReader, Stager, WriterConfig,
};

const N: u64 = 20_000;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 1024;
const PAIR_BYTES: u64 = (N as usize * (KEY_BYTES + VALUE_BYTES)) as u64;

fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(b"user:key");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64) -> Vec<u8> {
    // Deterministic, not all one byte (xorshift of the index).
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..VALUE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn populate(dir: &Path) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(128 * 1024 * 1024)
        .open()
        .expect("open sled");
    let tree = db.open_tree("sm").expect("open tree");
    let mut b = sled::Batch::default();
    for i in 0..N {
        b.insert(&key(i)[..], value(i));
        if (i + 1) % 4096 == 0 {
            tree.apply_batch(std::mem::take(&mut b)).expect("batch");
        }
    }
    tree.apply_batch(b).expect("batch");
    db.flush().expect("flush");
    (db, tree)
}

fn meta(index: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        conf_state: ConfState::from_voters([1, 2, 3]),
        index,
        term: 1,
    }
}

/// Builds through `PointInTimeIter` as the engine does; with no writes
/// going on, its before-image set stays empty.
fn build(stager: &Stager, tree: &sled::Tree, index: u64) -> SnapshotReader {
    let images = BeforeImages::new(BeforeImagesConfig::default());
    stager
        .build(
            &meta(index),
            &WriterConfig::default(),
            PointInTimeIter::new(tree.iter(), &images),
        )
        .expect("build snapshot")
}

fn raw_copy(tree: &sled::Tree, path: &Path) -> usize {
    let mut buf = Vec::with_capacity(PAIR_BYTES as usize + N as usize * 8);
    for p in tree.iter() {
        let (k, v) = p.expect("sled iter");
        buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
        buf.extend_from_slice(&k);
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(&v);
    }
    let mut f = File::create(path).expect("create");
    f.write_all(&buf).expect("write");
    f.sync_data().expect("fdatasync");
    buf.len()
}

fn bench_snapshot(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in(".").expect("tempdir");
    let (_db, tree) = populate(&tmp.path().join("sm"));
    let stager = Stager::open(&tmp.path().join("snap")).expect("stager");
    let mut index = 1;

    // Sanity: the snapshot holds exactly the tree.
    let first = build(&stager, &tree, index);
    assert_eq!(first.manifest().pair_count, N);
    first.verify().expect("verify");
    drop(first);

    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(PAIR_BYTES));

    g.bench_function("build", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                index += 1;
                let t = Instant::now();
                let r = build(&stager, &tree, index);
                total += t.elapsed();
                black_box(r.manifest().total_bytes);
                drop(r);
                stager.remove_older_than(index, 1).expect("remove old");
            }
            total
        });
    });

    let built = build(&stager, &tree, index + 1);
    g.bench_function("verify", |b| {
        b.iter(|| built.verify().expect("verify"));
    });
    drop(built);

    let raw = tmp.path().join("raw.bin");
    g.bench_function("raw_sled_copy", |b| {
        b.iter(|| black_box(raw_copy(&tree, &raw)));
    });
    g.finish();
}

criterion_group!(benches, bench_snapshot);
criterion_main!(benches);
