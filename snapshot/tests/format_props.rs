//! Property tests: round trips of the writer/reader, and decoders that
//! return errors — never panic — on arbitrary or damaged bytes.

mod common;

use proptest::prelude::*;
use tandem_snapshot::format::{verify_chunk, ChunkPairs};
use tandem_snapshot::{
    chunk_file_name, Error, Manifest, SnapshotReader, SnapshotWriter, TransferId, TransferMsg,
    WriterConfig, MANIFEST_FILE,
};

fn sorted_pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    proptest::collection::btree_map(
        proptest::collection::vec(any::<u8>(), 0..16),
        proptest::collection::vec(any::<u8>(), 0..300),
        0..120,
    )
    .prop_map(|m| m.into_iter().collect())
}

proptest! {
    // Cases that write files fsync every chunk: keep them few.
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn writer_reader_round_trip(pairs in sorted_pairs(), chunk_bytes in 64usize..2048) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let mut w = SnapshotWriter::create(&dir, &common::meta(9, 3), &WriterConfig { chunk_bytes }).unwrap();
        for (k, v) in &pairs {
            w.push(k, v).unwrap();
        }
        let m = w.finish().unwrap();
        prop_assert_eq!(m.pair_count, pairs.len() as u64);
        let r = SnapshotReader::open(&dir).unwrap();
        prop_assert_eq!(r.manifest(), &m);
        prop_assert_eq!(common::read_all(&r), pairs.clone());
        // Chunk sizes: at most chunk_bytes of payload unless a single pair.
        let mut total = 0u64;
        for n in 0..m.chunk_count {
            let b = r.read_chunk(n).unwrap();
            total += b.len() as u64;
            let h = verify_chunk(&b).unwrap();
            prop_assert!(h.pair_count >= 1);
            prop_assert!(h.payload_len as usize <= chunk_bytes || h.pair_count == 1);
        }
        prop_assert_eq!(total, m.total_bytes);
    }

    #[test]
    fn damaged_chunk_file_is_an_error_on_read(pairs in sorted_pairs(), which in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        prop_assume!(!pairs.is_empty());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let mut w = SnapshotWriter::create(&dir, &common::meta(9, 3), &WriterConfig { chunk_bytes: 128 }).unwrap();
        for (k, v) in &pairs {
            w.push(k, v).unwrap();
        }
        let m = w.finish().unwrap();
        let n = which.index(m.chunk_count as usize) as u32;
        let path = dir.join(chunk_file_name(n));
        let mut b = std::fs::read(&path).unwrap();
        let p = pos.index(b.len());
        b[p] ^= flip;
        std::fs::write(&path, b).unwrap();
        let r = SnapshotReader::open(&dir).unwrap();
        prop_assert!(r.read_chunk(n).is_err());
        prop_assert!(r.verify().is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn manifest_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Manifest::decode(&bytes);
    }

    #[test]
    fn manifest_mutations_are_errors_or_equal(i in any::<prop::sample::Index>(), b in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let m = Manifest {
            index: 9, term: 3, conf_state: common::meta(9, 3).conf_state,
            chunk_count: 2, total_bytes: 200, pair_count: 5, checksum: 77,
        };
        let mut bytes = m.encode();
        let at = i.index(bytes.len());
        bytes[at] = b;
        match Manifest::decode(&bytes) {
            Ok(d) => prop_assert_eq!(d, m.clone(), "a changed byte decoded to another manifest"),
            Err(Error::Corruption { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
        let bytes = m.encode();
        let len = cut.index(bytes.len());
        prop_assert!(Manifest::decode(&bytes[..len]).is_err());
    }

    #[test]
    fn chunk_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = verify_chunk(&bytes);
        if let Ok(it) = ChunkPairs::new(&bytes) {
            for p in it {
                let _ = p;
            }
        }
    }

    #[test]
    fn chunk_with_valid_crc_but_garbage_payload_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        pair_count_seed in any::<u32>(),
    ) {
        let pair_count = pair_count_seed % (payload.len() as u32 / 8 + 1);
        // Valid header and CRC around arbitrary payload bytes: only the
        // pair parser stands between garbage and a panic.
        let chunk = tandem_snapshot::format::encode_chunk(1, 1, 0, pair_count, &payload);
        if let Ok(it) = ChunkPairs::new(&chunk) {
            let n = it.count();
            prop_assert!(n <= pair_count as usize + 1);
        }
    }

    #[test]
    fn transfer_msg_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = TransferMsg::decode(&bytes);
        let _ = TransferId::decode(&bytes);
    }

    #[test]
    fn transfer_msg_mutations_never_panic(i in any::<prop::sample::Index>(), b in any::<u8>()) {
        let id = TransferId { leader_term: 1, from: 2, index: 3, term: 4, attempt: 5 };
        let msg = TransferMsg::Chunk { id, chunk_no: 3, bytes: vec![7; 64] };
        let mut bytes = msg.encode();
        let at = i.index(bytes.len());
        bytes[at] = b;
        let _ = TransferMsg::decode(&bytes);
    }
}

#[test]
fn swapped_chunk_files_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(1, 100);
    let r = common::build(&tmp.path().join("snap"), 9, 3, &pairs, 256);
    assert!(r.manifest().chunk_count >= 2);
    let a = r.dir().join(chunk_file_name(0));
    let b = r.dir().join(chunk_file_name(1));
    let tmpf = r.dir().join("swap");
    std::fs::rename(&a, &tmpf).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmpf, &b).unwrap();
    assert!(matches!(r.read_chunk(0), Err(Error::Corruption { .. })));
    assert!(r.verify().is_err());
}

#[test]
fn chunk_of_another_snapshot_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(1, 50);
    let r1 = common::build(&tmp.path().join("one"), 9, 3, &pairs, 256);
    let r2 = common::build(&tmp.path().join("two"), 10, 3, &pairs, 256);
    std::fs::copy(
        r2.dir().join(chunk_file_name(0)),
        r1.dir().join(chunk_file_name(0)),
    )
    .unwrap();
    assert!(r1.read_chunk(0).is_err());
}

#[test]
fn truncated_or_missing_pieces_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(2, 80);
    let r = common::build(&tmp.path().join("snap"), 9, 3, &pairs, 256);
    let last = r.manifest().chunk_count - 1;
    std::fs::remove_file(r.dir().join(chunk_file_name(last))).unwrap();
    assert!(matches!(r.verify(), Err(Error::Io { .. })));
    std::fs::remove_file(r.dir().join(MANIFEST_FILE)).unwrap();
    assert!(SnapshotReader::open(r.dir()).is_err());
}

#[test]
fn manifest_checksum_mismatch_is_detected_by_full_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(3, 80);
    let r = common::build(&tmp.path().join("snap"), 9, 3, &pairs, 256);
    let mut m = r.manifest().clone();
    m.checksum ^= 1;
    tandem_snapshot::write_atomically(r.dir(), MANIFEST_FILE, &m.encode()).unwrap();
    let r = SnapshotReader::open(r.dir()).unwrap();
    // Every chunk is fine on its own; only the whole pass sees the mismatch.
    for n in 0..m.chunk_count {
        r.read_chunk(n).unwrap();
    }
    assert!(matches!(r.verify(), Err(Error::Corruption { .. })));
}

#[test]
fn writer_rejects_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = SnapshotWriter::create(
        &tmp.path().join("a"),
        &common::meta(1, 1),
        &WriterConfig::default(),
    )
    .unwrap();
    w.push(b"b", b"1").unwrap();
    assert!(matches!(
        w.push(b"b", b"2"),
        Err(Error::KeysOutOfOrder { pair_no: 1 })
    ));
    assert!(matches!(
        w.push(b"a", b"2"),
        Err(Error::KeysOutOfOrder { .. })
    ));
    let big = vec![0xffu8; tandem_snapshot::format::KEY_BYTES_MAX + 1];
    assert!(matches!(
        w.push(&big, b""),
        Err(Error::LimitExceeded { .. })
    ));
    for chunk_bytes in [0, 63, 16 * 1024 * 1024 + 1] {
        assert!(SnapshotWriter::create(
            &tmp.path().join("b"),
            &common::meta(1, 1),
            &WriterConfig { chunk_bytes }
        )
        .is_err());
    }
    assert!(SnapshotWriter::create(
        &tmp.path().join("c"),
        &common::meta(0, 1),
        &WriterConfig::default()
    )
    .is_err());
    // An existing directory is refused: a snapshot is never written over another.
    assert!(SnapshotWriter::create(
        &tmp.path().join("a"),
        &common::meta(1, 1),
        &WriterConfig::default()
    )
    .is_err());
}

#[test]
fn oversized_pair_gets_its_own_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut w =
        SnapshotWriter::create(&dir, &common::meta(1, 1), &WriterConfig { chunk_bytes: 64 })
            .unwrap();
    w.push(b"a", b"x").unwrap();
    w.push(b"b", &[7u8; 1000]).unwrap();
    w.push(b"c", b"y").unwrap();
    let m = w.finish().unwrap();
    assert_eq!(m.chunk_count, 3);
    let r = SnapshotReader::open(&dir).unwrap();
    assert_eq!(
        verify_chunk(&r.read_chunk(1).unwrap()).unwrap().pair_count,
        1
    );
    assert_eq!(common::read_all(&r)[1].1.len(), 1000);
}
