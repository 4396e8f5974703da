//! Fuzz target logic, shared by the cargo-fuzz targets in `fuzz/` and by
//! `engine/tests/fuzz_corpus.rs`, which replays the seed corpora and the
//! regression inputs on every `cargo test`, so stable CI runs every target.
//!
//! Every function takes arbitrary bytes and must not panic, except through
//! an assertion of a real invariant (a bug). Inputs are interpreted with a
//! small `Bytes` reader that yields zeros once exhausted, so every input,
//! including the empty one, is a valid program.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tandem_raft::testing::Network;
use tandem_raft::{Entry, EntryType, Message};
use tandem_snapshot::format::{verify_chunk, ChunkHeader, ChunkPairs};
use tandem_snapshot::{Manifest, TransferId, TransferMsg};
use tandem_wal::{FileSystem, RecoveryMode, SimFs, Wal, WalOptions};

use crate::sm::{Cas, Command, CommandResult, SmOptions, StateMachine, WriteBatch};

/// Reads fuzz input front to back; past the end it yields zeros.
struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

fn wal_options(mode: RecoveryMode) -> WalOptions {
    WalOptions {
        recovery: mode,
        background_threads: false,
        prefill_segments: false,
        ..WalOptions::small_for_tests()
    }
}

fn write_file(fs: &SimFs, path: &std::path::Path, bytes: &[u8]) {
    let f = fs.create(path).expect("SimFs create");
    f.write_at(0, bytes).expect("SimFs write");
    f.sync_data().expect("SimFs sync");
}

/// Open a WAL whose directory holds the given segment files, and check what
/// recovery produced: either an error, or a log whose every index between
/// `first_index` and `last_index` can be read back with a consistent term,
/// that accepts a new append, and that reopens to the same content.
fn open_and_check(segments: &[(u64, Vec<u8>)], mode: RecoveryMode) {
    let fs = Arc::new(SimFs::new());
    let dir = PathBuf::from("/wal");
    fs.create_dir_all(&dir).expect("SimFs mkdir");
    for (seq, bytes) in segments {
        write_file(&fs, &dir.join(tandem_wal::segment_file_name(*seq)), bytes);
    }
    let Ok(wal) = Wal::open_with_fs(fs.clone(), &dir, wal_options(mode)) else {
        return;
    };
    let first = wal.first_index().expect("first_index of an open log");
    let last = wal.last_index().expect("last_index of an open log");
    assert!(first <= last + 1, "first {first} > last {last} + 1");
    let entries = wal
        .entries(first, last + 1, None)
        .expect("every index in [first, last] is readable");
    assert_eq!(entries.len() as u64, last + 1 - first, "entries count");
    for (i, e) in (first..).zip(&entries) {
        assert_eq!(e.index, i, "entry index");
        assert_eq!(wal.term(i).expect("term of a present entry"), e.term);
    }
    let hs = wal.hard_state().expect("hard state");
    // A recovered log must stay writable: append one entry after it.
    let term = entries.last().map_or(hs.term, |e| e.term).max(hs.term);
    let next = Entry {
        entry_type: EntryType::EntryNormal,
        term,
        index: last + 1,
        data: b"after-recovery".to_vec().into(),
        context: tandem_raft::Bytes::new(),
    };
    let appended = wal
        .submit(vec![next.clone()], None)
        .and_then(|c| c.wait())
        .is_ok();
    drop(wal);
    // Reopen: the recovered prefix (and the append, if it succeeded) survive.
    let wal = Wal::open_with_fs(fs, &dir, wal_options(mode)).expect("reopen after recovery");
    let last2 = wal.last_index().expect("last_index after reopen");
    let expect_last = if appended { last + 1 } else { last };
    assert_eq!(last2, expect_last, "last index after reopen");
    let first2 = wal.first_index().expect("first_index after reopen");
    assert_eq!(first2, first, "first index after reopen");
    let again = wal
        .entries(first, last2 + 1, None)
        .expect("entries after reopen");
    assert_eq!(&again[..entries.len()], &entries[..], "prefix after reopen");
    if appended {
        assert_eq!(again.last(), Some(&next), "appended entry after reopen");
    }
}

/// WAL recovery from arbitrary segment bytes: the first byte picks the
/// recovery mode and how many segments, the rest is split into segment
/// files. Opening never panics; it yields an error or a usable log.
pub fn wal_recovery(data: &[u8]) {
    let mut b = Bytes::new(data);
    let ctl = b.u8();
    let mode = if ctl & 1 == 0 {
        RecoveryMode::TolerateTornTail
    } else {
        RecoveryMode::Strict
    };
    let count = usize::from((ctl >> 1) % 3) + 1;
    let rest = b.take(usize::MAX);
    let per = rest.len().div_ceil(count).max(1);
    let segments: Vec<(u64, Vec<u8>)> = rest
        .chunks(per)
        .enumerate()
        .map(|(i, c)| (i as u64 + 1, c.to_vec()))
        .collect();
    open_and_check(&segments, mode);
}

/// Segment header for `seq`, as the WAL writes it (see `docs/wal.md`).
fn segment_header(seq: u64) -> Vec<u8> {
    let mut h = vec![0u8; 32];
    h[0..8].copy_from_slice(b"TNDMWAL\0");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// CRC-32 (IEEE), bitwise: the fuzzing module does not depend on crc32fast.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// WAL record decoding: the input is a list of `kind u8 | len u16 | payload`
/// records, written after a valid segment header with correct record CRCs
/// (unless the kind's high bit asks for a bad one), so the payload decoders
/// (entries, hard state, markers) see arbitrary bytes. Same checks as
/// [`wal_recovery`].
pub fn wal_record_decode(data: &[u8]) {
    const SEQ: u64 = 1;
    let mut b = Bytes::new(data);
    let strict = b.u8() & 1 == 1;
    let mut seg = segment_header(SEQ);
    while !b.is_empty() {
        let k = b.u8();
        let kind = (k & 0x7f) % 4;
        let len = usize::from(b.u16() % 1024);
        let payload = b.take(len);
        let mut salted = SEQ.to_le_bytes().to_vec();
        salted.push(kind);
        salted.extend_from_slice(payload);
        let mut crc = crc32(&salted);
        if k & 0x80 != 0 {
            crc ^= 1;
        }
        seg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        seg.extend_from_slice(&crc.to_le_bytes());
        seg.push(kind);
        seg.extend_from_slice(payload);
    }
    let mode = if strict {
        RecoveryMode::Strict
    } else {
        RecoveryMode::TolerateTornTail
    };
    open_and_check(&[(SEQ, seg)], mode);
}

/// Raft: decode the input as a [`Message`] (must not panic; a decoded
/// message re-encodes to itself), then use it as a schedule of a 3-node
/// in-memory cluster (deliver, drop, duplicate, delay, tick, campaign,
/// propose, crash, restart, partition, heal, transfer, read index,
/// compact). The safety checker runs after every step; at the end the
/// network is healed and must elect a leader and commit a write.
pub fn raft_messages(data: &[u8]) {
    if let Ok(m) = tandem_raft::types::decode::<Message>(data) {
        let again = tandem_raft::types::encode(&m);
        let m2: Message = tandem_raft::types::decode(&again).expect("re-encoded message decodes");
        assert_eq!(m, m2, "message round trip");
    }
    let ids = [1u64, 2, 3];
    let mut net = Network::new(&ids, |_| {});
    let mut b = Bytes::new(data);
    let mut steps = 0;
    while !b.is_empty() && steps < 400 {
        steps += 1;
        let op = b.u8();
        let id = ids[usize::from(b.u8() % 3)];
        let up = net.node(id).is_up();
        match op % 16 {
            0..=3 => {
                net.deliver_one();
            }
            4 => {
                net.drop_front();
            }
            5 => {
                net.duplicate_front();
            }
            6 => net.delay_front(),
            7 => net.tick(id),
            8 if up => net.campaign(id),
            9 if up => {
                let _ = net.propose(id, vec![b.u8()]);
            }
            10 if up => net.crash(id),
            10 => net.restart(id),
            11 => net.isolate(id),
            12 => net.heal(),
            13 if up => net.transfer_leader(id, ids[usize::from(b.u8() % 3)]),
            14 if up => net.read_index(id, &[b.u8()]),
            15 => {
                net.compact(id);
            }
            _ => {}
        }
        if let Err(v) = net.check() {
            panic!(
                "safety violation after step {steps}: {v}\n{}",
                net.describe()
            );
        }
    }
    // Liveness after healing: restart everyone, elect, commit.
    net.heal();
    for id in ids {
        if !net.node(id).is_up() {
            net.restart(id);
        }
    }
    net.stabilize();
    let mut leader = net.leader();
    for _ in 0..200 {
        if leader.is_some() {
            break;
        }
        net.tick_all();
        net.stabilize();
        leader = net.leader();
    }
    let leader = leader.unwrap_or_else(|| panic!("no leader after healing\n{}", net.describe()));
    let _ = net.propose(leader, b"final".to_vec());
    // Heartbeats resume paused followers; a lost proposal is retried.
    let done = |net: &Network| {
        ids.iter()
            .all(|&id| net.applied_data(id).iter().any(|d| d == b"final"))
    };
    for round in 1..=400 {
        net.stabilize();
        if done(&net) {
            break;
        }
        if round % 50 == 0 {
            if let Some(l) = net.leader() {
                let _ = net.propose(l, b"final".to_vec());
            }
        }
        net.tick_all();
    }
    assert!(
        done(&net),
        "the final write was not applied everywhere\n{}",
        net.describe()
    );
    if let Err(v) = net.check() {
        panic!("safety violation at the end: {v}\n{}", net.describe());
    }
}

/// Snapshot decoding: the input goes through the manifest, chunk header,
/// chunk verification, chunk pair iteration, transfer id and transfer
/// message decoders. None may panic; whatever decodes re-encodes to an
/// equal value.
pub fn snapshot_decode(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        let again = Manifest::decode(&m.encode()).expect("re-encoded manifest decodes");
        assert_eq!(m, again, "manifest round trip");
    }
    let _ = ChunkHeader::decode(data);
    if let Ok(h) = verify_chunk(data) {
        assert!(
            h.chunk_bytes() <= data.len(),
            "verified chunk longer than input"
        );
    }
    if let Ok(pairs) = ChunkPairs::new(data) {
        for p in pairs.take(100_000) {
            if p.is_err() {
                break;
            }
        }
    }
    if let Ok(id) = TransferId::decode(data) {
        let again = TransferId::decode(&id.encode()).expect("re-encoded id decodes");
        assert_eq!(id, again, "transfer id round trip");
    }
    if let Ok(msg) = TransferMsg::decode(data) {
        let again = TransferMsg::decode(&msg.encode()).expect("re-encoded message decodes");
        assert_eq!(msg, again, "transfer message round trip");
    }
}

/// Command decoding ([`WriteBatch`], [`Cas`], noop): never panics; a decoded
/// command re-encodes to bytes that decode to the same command. (The
/// encoding is not canonical: bincode accepts non-minimal varints, so
/// several byte strings decode to one command. That is harmless because
/// every replica decodes the same replicated bytes.)
pub fn command_decode(data: &[u8]) {
    if let Ok(c) = Command::decode(data) {
        let enc = c.encode();
        assert!(enc.len() <= data.len(), "re-encoding grew the command");
        let again = Command::decode(&enc).expect("re-encoded command decodes");
        assert_eq!(again, c, "command round trip");
        assert_eq!(again.encode(), enc, "encoding is deterministic");
        let _ = c.validate(&crate::sm::Limits::default());
    }
    let _ = Command::decode_entry(u64::from(data.first().copied().unwrap_or(0)), data);
}

static MODEL_DIRS: AtomicU64 = AtomicU64::new(0);

/// Removes the model test's directory on every exit, panics included.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(b: &mut Bytes<'_>) -> Vec<u8> {
    // A small key space, so operations hit the same keys.
    let k = b.u8();
    match k % 4 {
        0 => Vec::new(),
        1 => vec![k % 8],
        _ => vec![k % 8, b.u8() % 4],
    }
}

fn value(b: &mut Bytes<'_>) -> Vec<u8> {
    let n = usize::from(b.u8() % 8);
    b.take(n).to_vec()
}

fn bound(b: &mut Bytes<'_>) -> Bound<Vec<u8>> {
    match b.u8() % 3 {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(b)),
        _ => Bound::Excluded(key(b)),
    }
}

fn model_range(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    lo: &Bound<Vec<u8>>,
    hi: &Bound<Vec<u8>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    // BTreeMap::range panics on inverted or empty-excluded ranges; filter.
    model
        .iter()
        .filter(|(k, _)| {
            let above = match lo {
                Bound::Unbounded => true,
                Bound::Included(l) => *k >= l,
                Bound::Excluded(l) => *k > l,
            };
            let below = match hi {
                Bound::Unbounded => true,
                Bound::Included(h) => *k <= h,
                Bound::Excluded(h) => *k < h,
            };
            above && below
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn collect(iter: crate::sm::Iter) -> Vec<(Vec<u8>, Vec<u8>)> {
    iter.map(|r| {
        let (k, v) = r.expect("iterating the state machine");
        (k.to_vec(), v.to_vec())
    })
    .collect()
}

/// Engine model test: batches, compare-and-swaps and noops applied to one
/// replica's [`StateMachine`] (through log entries, as the replica applies
/// them) are checked against a `BTreeMap`: every result, every `get`, every
/// `range` and `scan_prefix`, and the full contents at the end.
///
/// # Panics
/// If the temporary directory cannot be created or sled cannot open.
pub fn engine_model(data: &[u8]) {
    let n = MODEL_DIRS.fetch_add(1, Ordering::Relaxed);
    let dir =
        TempDir(std::env::temp_dir().join(format!("tandem-fuzz-model-{}-{n}", std::process::id())));
    let opts = SmOptions {
        cache_bytes: 1024 * 1024,
        sled_flush_every_ms: None,
        // Small, so inputs cross the write-behind bound both ways.
        write_behind_entries: 3,
        ..SmOptions::default()
    };
    let sm = StateMachine::open(&dir.0, &opts).expect("open state machine");
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut b = Bytes::new(data);
    let mut index = sm.applied_index();
    let mut pending: Vec<(Entry, CommandResult)> = Vec::new();
    let mut steps = 0;
    while !b.is_empty() && steps < 300 {
        steps += 1;
        match b.u8() % 8 {
            // Writes are queued as entries with the result the model expects.
            op @ 0..=3 => {
                let cmd = match op {
                    0 | 1 => {
                        let mut batch = WriteBatch::new();
                        for _ in 0..=(b.u8() % 4) {
                            let k = key(&mut b);
                            if b.u8() % 3 == 0 {
                                batch.remove(k);
                            } else {
                                batch.insert(k, value(&mut b));
                            }
                        }
                        Command::Batch(batch)
                    }
                    2 => {
                        let k = key(&mut b);
                        let expected = match b.u8() % 3 {
                            0 => None,
                            1 => model.get(&k).cloned(),
                            _ => Some(value(&mut b)),
                        };
                        let new = if b.u8() % 4 == 0 {
                            None
                        } else {
                            Some(value(&mut b))
                        };
                        Command::Cas(Cas {
                            key: k,
                            expected,
                            new,
                        })
                    }
                    _ => Command::Noop,
                };
                let result = apply_model(&mut model, &cmd);
                index += 1;
                let entry = Entry {
                    entry_type: EntryType::EntryNormal,
                    term: 1,
                    index,
                    data: cmd.encode().into(),
                    context: index.to_le_bytes().to_vec().into(),
                };
                pending.push((entry, result));
            }
            // Apply what is queued (several entries in one call).
            4 => flush(&sm, &mut pending),
            5 => {
                flush(&sm, &mut pending);
                let k = key(&mut b);
                let got = sm.get(&k).expect("get").map(|v| v.to_vec());
                assert_eq!(got, model.get(&k).cloned(), "get {k:?}");
            }
            6 => {
                flush(&sm, &mut pending);
                let lo = bound(&mut b);
                let hi = bound(&mut b);
                let got = collect(sm.range::<Vec<u8>, _>((lo.clone(), hi.clone())));
                assert_eq!(got, model_range(&model, &lo, &hi), "range {lo:?}..{hi:?}");
            }
            _ => {
                flush(&sm, &mut pending);
                let p = key(&mut b);
                let got = collect(sm.scan_prefix(&p));
                let want: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(&p))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want, "scan_prefix {p:?}");
            }
        }
    }
    flush(&sm, &mut pending);
    assert_eq!(sm.applied_index(), index, "applied index");
    let all = collect(sm.range::<Vec<u8>, _>(..));
    let want: Vec<_> = model.into_iter().collect();
    assert_eq!(all, want, "final contents");
}

fn apply_model(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, cmd: &Command) -> CommandResult {
    match cmd {
        Command::Batch(batch) => {
            for op in batch.ops() {
                match op {
                    crate::sm::Op::Insert { key, value } => {
                        model.insert(key.clone(), value.clone());
                    }
                    crate::sm::Op::Remove { key } => {
                        model.remove(key);
                    }
                }
            }
            CommandResult::Written { ops: batch.len() }
        }
        Command::Cas(cas) => {
            let current = model.get(&cas.key).cloned();
            if current != cas.expected {
                return CommandResult::Cas(Err(crate::sm::CasMismatch { current }));
            }
            match &cas.new {
                Some(v) => model.insert(cas.key.clone(), v.clone()),
                None => model.remove(&cas.key),
            };
            CommandResult::Cas(Ok(()))
        }
        Command::Noop => CommandResult::Noop,
    }
}

fn flush(sm: &StateMachine, pending: &mut Vec<(Entry, CommandResult)>) {
    if pending.is_empty() {
        return;
    }
    let entries: Vec<Entry> = pending.iter().map(|(e, _)| e.clone()).collect();
    let out = sm.apply(&entries).expect("apply valid commands");
    assert_eq!(out.results.len(), pending.len(), "one result per entry");
    for (r, (e, want)) in out.results.iter().zip(pending.iter()) {
        assert_eq!(r.index, e.index, "result index");
        assert_eq!(&r.result, want, "result of entry {}", e.index);
        assert_eq!(r.context, e.context, "result context");
    }
    pending.clear();
}
