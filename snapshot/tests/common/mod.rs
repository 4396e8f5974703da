//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_raft::{ConfState, SnapshotMetadata};
use tandem_snapshot::{SnapshotReader, Stager, WriterConfig};

/// `n` pairs with sorted distinct keys and values of random length.
pub fn pairs(seed: u64, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keys = std::collections::BTreeMap::new();
    while keys.len() < n {
        let klen = rng.gen_range(1..24);
        let k: Vec<u8> = (0..klen).map(|_| rng.gen()).collect();
        let vlen = rng.gen_range(0..200);
        let v: Vec<u8> = (0..vlen).map(|_| rng.gen()).collect();
        keys.insert(k, v);
    }
    keys.into_iter().collect()
}

pub fn meta(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        conf_state: ConfState::from_parts([1, 2, 3], [4]),
        index,
        term,
    }
}

/// Builds and publishes a snapshot of `pairs` under `snap_dir`.
pub fn build(
    snap_dir: &Path,
    index: u64,
    term: u64,
    pairs: &[(Vec<u8>, Vec<u8>)],
    chunk_bytes: usize,
) -> SnapshotReader {
    let stager = Stager::open(snap_dir).unwrap();
    let mut w = stager
        .create_writer(&meta(index, term), &WriterConfig { chunk_bytes })
        .unwrap();
    for (k, v) in pairs {
        w.push(k, v).unwrap();
    }
    let m = w.finish().unwrap();
    stager.publish_built(&m).unwrap()
}

pub fn read_all(r: &SnapshotReader) -> Vec<(Vec<u8>, Vec<u8>)> {
    r.pairs().collect::<Result<_, _>>().unwrap()
}

/// `sled::open`, retried while the lock of an earlier handle of the same
/// directory in this process is still held. sled 0.34 releases its file
/// lock only when its background flusher drops the last handle, which can
/// be a moment after the `Db` itself was dropped, so reopening right away
/// fails now and then ("could not acquire lock"). Bounded: 10 s.
/// (The engine's `tandem::sm::open_sled_retrying` does the same; this crate
/// depends on neither sled nor the engine outside its tests.)
pub fn open_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other.unwrap(),
        }
    }
}
