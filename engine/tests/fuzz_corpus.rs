//! Replays every fuzz target's seed corpus (`fuzz/corpus/<target>/`) and
//! regression inputs (`fuzz/regressions/<target>/`) through the target's
//! logic in `tandem::fuzzing`, plus seeded random inputs, so a plain
//! `cargo test` on stable exercises every cargo-fuzz target.
//!
//! `TANDEM_FUZZ_WRITE_SEEDS=1 cargo test -p tandem --test fuzz_corpus`
//! regenerates the seed files from the public encoders.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem::fuzzing;
use tandem::raft::{ConfState, Entry, EntryType, HardState, Message, MessageType};
use tandem::sm::{Cas, Command, WriteBatch};
use tandem_snapshot::format::{encode_chunk, encode_pair};
use tandem_snapshot::{Manifest, TransferId, TransferMsg};
use tandem_wal::{SimFs, Wal, WalOptions};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("wal_recovery", fuzzing::wal_recovery),
    ("wal_record_decode", fuzzing::wal_record_decode),
    ("raft_messages", fuzzing::raft_messages),
    ("snapshot_decode", fuzzing::snapshot_decode),
    ("command_decode", fuzzing::command_decode),
    ("engine_model", fuzzing::engine_model),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every regular file in `dir`; panics if the directory is missing.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        // Dot files (`.gitkeep`) only keep empty directories in git.
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

fn replay(kind: &str, min_files: usize) {
    for (name, f) in TARGETS {
        let dir = fuzz_dir().join(kind).join(name);
        let inputs = files(&dir);
        assert!(
            inputs.len() >= min_files,
            "{}: {} files, expected at least {min_files}",
            dir.display(),
            inputs.len()
        );
        for p in inputs {
            let data = fs::read(&p).expect("read input");
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{name} panicked on {}", p.display());
        }
    }
}

#[test]
fn seed_corpora_replay() {
    replay("corpus", 2);
}

#[test]
fn regression_inputs_replay() {
    // Directories must exist; they may be empty for a target that never crashed.
    replay("regressions", 0);
}

/// Random inputs per target from a fixed seed; slow targets get fewer.
#[test]
fn seeded_random_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x007a_4de3);
    for (name, f) in TARGETS {
        let n = match name {
            "engine_model" => 40,
            "raft_messages" | "wal_recovery" | "wal_record_decode" => 300,
            _ => 3000,
        };
        for i in 0..n {
            let len = rng.gen_range(0..512);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{name} panicked on random input {i}: {data:?}");
        }
    }
}

// ------------------------------------------------------------ seed writing

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        entry_type: EntryType::EntryNormal,
        term,
        index,
        data: data.to_vec().into(),
        context: tandem::raft::Bytes::new(),
    }
}

/// Segment bytes of a small real log, trailing zeros trimmed.
fn wal_segment(entries: Vec<Entry>, hs: Option<HardState>) -> Vec<u8> {
    let fs = Arc::new(SimFs::new());
    let dir = PathBuf::from("/w");
    let opts = WalOptions {
        background_threads: false,
        prefill_segments: false,
        ..WalOptions::small_for_tests()
    };
    let wal = Wal::open_with_fs(fs.clone(), &dir, opts).expect("open");
    wal.submit(entries, hs)
        .expect("submit")
        .wait()
        .expect("write");
    drop(wal);
    let path = dir.join(tandem_wal::segment_file_name(1));
    let mut bytes = fs.file_bytes(&path).expect("segment 1");
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes.extend_from_slice(&[0; 9]);
    bytes
}

/// Convert a segment into `wal_record_decode`'s `kind | len u16 | payload` list.
fn records_of(segment: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    let mut at = 32;
    while at + 9 <= segment.len() {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 9 + len > segment.len() {
            break;
        }
        out.push(segment[at + 8]);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&segment[at + 9..at + 9 + len]);
        at += 9 + len;
    }
    out
}

fn write_seeds(name: &str, seeds: Vec<Vec<u8>>) {
    let dir = fuzz_dir().join("corpus").join(name);
    fs::create_dir_all(&dir).expect("mkdir");
    for (i, s) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:02}")), s).expect("write seed");
    }
}

/// Regenerates the seed corpora (only with `TANDEM_FUZZ_WRITE_SEEDS=1`;
/// otherwise it checks that the committed seeds still match the encoders).
#[test]
fn seeds_match_the_encoders() {
    let hs = HardState {
        term: 2,
        vote: 1,
        commit: 2,
    };
    let seg_a = wal_segment(
        vec![entry(1, 1, b"a"), entry(2, 2, b"bb"), entry(3, 2, b"")],
        Some(hs),
    );
    let seg_b = wal_segment(vec![entry(1, 1, &[7; 100])], None);
    let mut recovery = Vec::new();
    for (ctl, seg) in [(0u8, &seg_a), (1, &seg_a), (0, &seg_b)] {
        let mut s = vec![ctl];
        s.extend_from_slice(seg);
        recovery.push(s);
    }
    let records = vec![records_of(&seg_a), records_of(&seg_b)];

    let msg = Message {
        msg_type: MessageType::MsgAppend,
        to: 2,
        from: 1,
        term: 3,
        log_term: 2,
        index: 5,
        entries: vec![entry(6, 3, b"x")],
        commit: 5,
        ..Message::default()
    };
    let raft = vec![
        tandem::raft::types::encode(&msg),
        // campaign at 1, deliver many, propose at the leader, crash 2, tick...
        vec![
            8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 42, 0, 0, 0, 0, 10, 1, 0, 0, 0, 0, 7, 2, 10,
            1, 12, 0,
        ],
        vec![
            8, 1, 11, 1, 8, 0, 0, 0, 0, 0, 7, 1, 12, 0, 0, 0, 0, 0, 15, 0,
        ],
    ];

    let manifest = Manifest {
        index: 9,
        term: 2,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
        chunk_count: 1,
        total_bytes: 80,
        pair_count: 2,
        checksum: 0x1234_5678,
    };
    let mut payload = Vec::new();
    encode_pair(&mut payload, b"k1", b"v1");
    encode_pair(&mut payload, b"k2", b"");
    let chunk = encode_chunk(9, 2, 0, 2, &payload);
    let id = TransferId {
        leader_term: 3,
        from: 1,
        index: 9,
        term: 2,
        attempt: 1,
    };
    let snapshot = vec![
        manifest.encode(),
        chunk.clone(),
        id.encode(),
        TransferMsg::Offer {
            id,
            manifest: manifest.encode(),
        }
        .encode(),
        TransferMsg::Chunk {
            id,
            chunk_no: 0,
            bytes: chunk,
        }
        .encode(),
    ];

    let mut batch = WriteBatch::new();
    batch.insert(b"a".to_vec(), b"1".to_vec());
    batch.remove(b"b".to_vec());
    let command = vec![
        Command::Batch(batch).encode(),
        Command::Cas(Cas {
            key: b"a".to_vec(),
            expected: Some(b"1".to_vec()),
            new: None,
        })
        .encode(),
        Command::Noop.encode(),
    ];
    let engine = vec![
        // insert, flush, get, range, scan
        vec![0, 1, 1, 5, 3, b'x', b'y', b'z', 4, 5, 1, 6, 0, 0, 7, 1],
        // cas on absent, cas on the model value, batch remove, full range
        vec![
            2, 1, 0, 1, 2, 2, 1, 2, 1, 1, 0, 0, 0, 0, 5, 1, 5, 2, 6, 1, 1, 2, 2, 3,
        ],
    ];

    let all = [
        ("wal_recovery", recovery),
        ("wal_record_decode", records),
        ("raft_messages", raft),
        ("snapshot_decode", snapshot),
        ("command_decode", command),
        ("engine_model", engine),
    ];
    if std::env::var_os("TANDEM_FUZZ_WRITE_SEEDS").is_some() {
        for (name, seeds) in all {
            write_seeds(name, seeds);
        }
        return;
    }
    for (name, seeds) in all {
        let dir = fuzz_dir().join("corpus").join(name);
        for (i, s) in seeds.iter().enumerate() {
            let p = dir.join(format!("seed-{i:02}"));
            let on_disk = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(
                &on_disk,
                s,
                "{} is stale: rerun with TANDEM_FUZZ_WRITE_SEEDS=1",
                p.display()
            );
        }
    }
}
