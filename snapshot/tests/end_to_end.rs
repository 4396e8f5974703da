//! The whole path on real sled: a leader builds a point-in-time snapshot
//! while its apply thread keeps writing, sends it over a lossy link to a
//! follower, which stages, verifies and installs it into a new state
//! version. The follower's state must equal the leader's state at the
//! snapshot point, compared by a checksum of all pairs.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_snapshot::{
    BeforeImages, BeforeImagesConfig, PointInTimeIter, ReceiverConfig, ReceiverDriver,
    ReceiverEvent, SenderConfig, SenderDriver, Stager, StateSwitch, TransferId, TransferMsg,
    WriterConfig,
};

/// Order-sensitive checksum of a whole key space.
fn checksum<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> (u64, u32) {
    let mut h = crc32fast::Hasher::new();
    let mut n = 0;
    for (k, v) in pairs {
        h.update(&(k.len() as u32).to_le_bytes());
        h.update(k);
        h.update(&(v.len() as u32).to_le_bytes());
        h.update(v);
        n += 1;
    }
    (n, h.finalize())
}

#[test]
fn leader_state_at_snapshot_point_arrives_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(tmp.path().join("leader-sm"))
        .open()
        .unwrap();
    let tree = db.open_tree("sm").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut at_snapshot = BTreeMap::new();
    for _ in 0..4000 {
        let k = rng.gen_range(0u32..8000).to_be_bytes();
        let v: Vec<u8> = (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect();
        tree.insert(k, v.clone()).unwrap();
        at_snapshot.insert(k.to_vec(), v);
    }
    let expected = checksum(
        at_snapshot
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice())),
    );

    // Snapshot point reached: the apply thread keeps writing, recording before-images.
    let images = Arc::new(BeforeImages::new(BeforeImagesConfig::default()));
    let barrier = Arc::new(Barrier::new(2));
    let apply = {
        let (tree, images, barrier) = (tree.clone(), images.clone(), barrier.clone());
        std::thread::spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(43);
            for i in 0..4000 {
                if i == 50 {
                    barrier.wait();
                }
                let k = rng.gen_range(0u32..9000).to_be_bytes();
                let mut batch = sled::Batch::default();
                images.record_with(&k, || tree.get(k)).unwrap();
                if rng.gen_bool(0.25) {
                    batch.remove(&k);
                } else {
                    batch.insert(&k, vec![i as u8; 40]);
                }
                tree.apply_batch(batch).unwrap();
            }
        })
    };
    barrier.wait();
    let leader_snap = Stager::open(&tmp.path().join("leader-snap")).unwrap();
    let meta = common::meta(777, 5);
    let mut w = leader_snap
        .create_writer(
            &meta,
            &WriterConfig {
                chunk_bytes: 16 * 1024,
            },
        )
        .unwrap();
    for p in PointInTimeIter::new(tree.iter(), &images) {
        let (k, v) = p.unwrap();
        w.push(&k, &v).unwrap();
    }
    let built = leader_snap.publish_built(&w.finish().unwrap()).unwrap();
    apply.join().unwrap();
    assert!(built.manifest().chunk_count > 10);

    // Transfer over a link that loses every 5th message each way.
    let id = TransferId {
        leader_term: 6,
        from: 1,
        index: 777,
        term: 5,
        attempt: 0,
    };
    let cfg = SenderConfig {
        retransmit_ticks: 2,
        max_retries: 20,
        ..SenderConfig::default()
    };
    let mut tx = SenderDriver::new(id, built, cfg).unwrap();
    let mut rx = ReceiverDriver::new(
        Stager::open(&tmp.path().join("follower-snap")).unwrap(),
        ReceiverConfig::default(),
    )
    .unwrap();
    let mut sent = 0u64;
    let mut lossy = |msgs: Vec<TransferMsg>| -> Vec<TransferMsg> {
        msgs.into_iter()
            .filter(|_| {
                sent += 1;
                sent % 5 != 0
            })
            .collect()
    };
    let (first, _) = tx.start();
    let mut to_rx = lossy(first);
    let mut staged = None;
    let mut outcome = None;
    for _ in 0..10_000 {
        let mut to_tx = Vec::new();
        for m in std::mem::take(&mut to_rx) {
            let (msgs, events) = rx.on_message(m);
            to_tx.extend(msgs);
            for e in events {
                if let ReceiverEvent::Completed { snapshot, .. } = e {
                    staged = Some(snapshot);
                }
            }
        }
        for m in lossy(to_tx) {
            let (msgs, done) = tx.on_message(&m);
            to_rx.extend(msgs);
            outcome = outcome.or(done);
        }
        let (msgs, done) = tx.tick();
        to_rx.extend(msgs);
        outcome = outcome.or(done);
        to_rx = lossy(to_rx);
        if outcome.is_some() {
            break;
        }
    }
    assert_eq!(outcome, Some(Ok(())));
    let staged = staged.expect("follower completed");
    assert!(
        tx.sender().stats().chunks_resent > 0,
        "the lossy link caused no retransmission"
    );

    // Install on the follower and compare.
    let sw = StateSwitch::open(&tmp.path().join("follower-sm")).unwrap();
    let dir = sw.create_version("v-00000000000000000777").unwrap();
    {
        let fdb = common::open_sled(&dir);
        for p in staged.pairs() {
            let (k, v) = p.unwrap();
            fdb.insert(k, v).unwrap();
        }
        fdb.flush().unwrap();
    }
    sw.switch_to("v-00000000000000000777").unwrap();
    let live = common::open_sled(&sw.recover().unwrap().unwrap());
    let got: Vec<_> = live
        .iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        checksum(got.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
        expected
    );
    // And the leader has moved on: its live state differs from the snapshot.
    let leader_now: Vec<_> = tree
        .iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_ne!(
        checksum(leader_now.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
        expected
    );
}
