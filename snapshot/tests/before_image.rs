//! Point-in-time iteration over a changing store: a deterministic model
//! with every interleaving proptest can find, and the real thing against
//! sled with a concurrent writer.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Barrier};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_snapshot::{BeforeImages, BeforeImagesConfig, Error, PointInTimeIter};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// Behaves like a sled iterator: each `next` returns the first key after the
/// cursor in the map *as it is now*.
struct LiveIter {
    map: Rc<RefCell<Map>>,
    cursor: Option<Vec<u8>>,
}

impl Iterator for LiveIter {
    type Item = Result<(Vec<u8>, Vec<u8>), std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let map = self.map.borrow();
        let next = match &self.cursor {
            None => map.iter().next(),
            Some(c) => map
                .range::<Vec<u8>, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .next(),
        };
        let (k, v) = next?;
        self.cursor = Some(k.clone());
        Some(Ok((k.clone(), v.clone())))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Step,
    Write(u8, Option<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Step),
        3 => (0u8..24, proptest::option::of(any::<u8>())).prop_map(|(k, v)| Op::Write(k, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn merge_yields_exactly_the_state_at_the_snapshot_point(
        initial in proptest::collection::btree_map(0u8..24, any::<u8>(), 0..24),
        ops in proptest::collection::vec(op(), 0..80),
        prune_every_steps in prop_oneof![Just(1u32), Just(3), Just(1024)],
    ) {
        let initial: Map = initial.into_iter().map(|(k, v)| (vec![k], vec![v])).collect();
        let map = Rc::new(RefCell::new(initial.clone()));
        let images = BeforeImages::new(BeforeImagesConfig {
            prune_every_steps,
            ..BeforeImagesConfig::default()
        });
        let live = LiveIter { map: map.clone(), cursor: None };
        let mut pit = PointInTimeIter::new(live, &images);
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Step => {
                    if let Some(p) = pit.next() {
                        out.push(p.unwrap());
                    }
                }
                Op::Write(k, v) => {
                    // The apply thread: record first, then write.
                    let key = vec![k];
                    images
                        .record_with(&key, || Ok::<_, std::io::Error>(map.borrow().get(&key).cloned()))
                        .unwrap();
                    match v {
                        Some(v) => map.borrow_mut().insert(key, vec![v]),
                        None => map.borrow_mut().remove(&key),
                    };
                }
            }
        }
        for p in pit {
            out.push(p.unwrap());
        }
        let expected: Vec<_> = initial.into_iter().collect();
        prop_assert_eq!(out, expected);
        // Pruning keeps the byte count consistent with what is held.
        if images.is_empty() {
            prop_assert_eq!(images.bytes(), 0);
        }
    }
}

#[test]
fn overflow_fails_the_build_instead_of_growing() {
    let images = BeforeImages::new(BeforeImagesConfig {
        bytes_max: 1000,
        ..BeforeImagesConfig::default()
    });
    for i in 0u32..100 {
        images.record(&i.to_be_bytes(), Some(&[0u8; 20]));
    }
    assert!(images.is_overflowed());
    assert_eq!(images.len(), 0, "the record is dropped on overflow");
    let live = vec![Ok::<_, std::io::Error>((b"a".to_vec(), b"1".to_vec()))];
    let r: Vec<_> = PointInTimeIter::new(live.into_iter(), &images).collect();
    assert_eq!(r.len(), 1);
    assert!(matches!(r[0], Err(Error::LimitExceeded { .. })));
}

#[test]
fn first_record_wins_and_read_is_skipped_when_recorded() {
    let images = BeforeImages::new(BeforeImagesConfig::default());
    images.record(b"k", Some(b"old"));
    images.record(b"k", Some(b"newer"));
    images
        .record_with(b"k", || -> Result<Option<Vec<u8>>, std::io::Error> {
            panic!("old value read although already recorded")
        })
        .unwrap();
    let live = vec![Ok::<_, std::io::Error>((b"k".to_vec(), b"newest".to_vec()))];
    let r: Vec<_> = PointInTimeIter::new(live.into_iter(), &images)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(r, vec![(b"k".to_vec(), b"old".to_vec())]);
}

#[test]
fn live_iterator_error_is_returned() {
    let images = BeforeImages::new(BeforeImagesConfig::default());
    let live = vec![
        Ok((b"a".to_vec(), b"1".to_vec())),
        Err(std::io::Error::other("disk gone")),
    ];
    let r: Vec<_> = PointInTimeIter::new(live.into_iter(), &images).collect();
    assert_eq!(r.len(), 2);
    assert!(matches!(r[1], Err(Error::Source(_))));
}

/// The real store: sled with a writer thread applying changes while the
/// builder iterates. Whatever the interleaving, the build sees the state at
/// the snapshot point.
#[test]
fn sled_build_under_concurrent_writes_is_point_in_time() {
    for seed in 0..3u64 {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut model = BTreeMap::new();
        for _ in 0..3000 {
            let k: u32 = rng.gen_range(0..6000);
            let v: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
            tree.insert(k.to_be_bytes(), v.clone()).unwrap();
            model.insert(k.to_be_bytes().to_vec(), v);
        }
        // Snapshot point: the apply thread activates the record before the next write.
        let images = Arc::new(BeforeImages::new(BeforeImagesConfig::default()));
        let barrier = Arc::new(Barrier::new(2));
        let writer = {
            let (tree, images, barrier) = (tree.clone(), images.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
                for i in 0..6000 {
                    // The first 100 writes happen after the snapshot point but
                    // before the build starts, so some before-images are certain;
                    // the rest race with the build.
                    if i == 100 {
                        barrier.wait();
                    }
                    let k = rng.gen_range(0u32..6000).to_be_bytes();
                    images.record_with(&k, || tree.get(k)).unwrap();
                    if rng.gen_bool(0.3) {
                        tree.remove(k).unwrap();
                    } else {
                        let v: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
                        tree.insert(k, v).unwrap();
                    }
                }
            })
        };
        barrier.wait();
        let built: Vec<(Vec<u8>, Vec<u8>)> = PointInTimeIter::new(tree.iter(), &images)
            .collect::<Result<_, _>>()
            .unwrap();
        writer.join().unwrap();
        let expected: Vec<_> = model.into_iter().collect();
        assert_eq!(built.len(), expected.len(), "seed {seed}");
        assert!(
            built == expected,
            "seed {seed}: build differs from the state at the snapshot point"
        );
        assert!(images.recorded_total() > 0, "seed {seed}");
    }
}

#[test]
fn writes_behind_the_cursor_need_no_before_image_and_records_are_pruned() {
    let images = BeforeImages::new(BeforeImagesConfig {
        prune_every_steps: 1,
        ..BeforeImagesConfig::default()
    });
    let live = (0u8..10).map(|i| Ok::<_, std::io::Error>((vec![i], vec![i])));
    images.record(&[7], Some(&[7]));
    images.record(&[2], Some(&[2]));
    let mut pit = PointInTimeIter::new(live, &images);
    for _ in 0..5 {
        pit.next().unwrap().unwrap(); // keys 0..=4 decided
    }
    pit.next().unwrap().unwrap(); // publishes the cursor (lags one step)
                                  // Key 2 is behind the cursor: its record was pruned and a write to it needs no read.
    assert!(!images.contains(&[2]));
    assert!(images.contains(&[7]));
    images
        .record_with(&[3], || -> Result<Option<Vec<u8>>, std::io::Error> {
            panic!("old value read for a key the builder has passed")
        })
        .unwrap();
    assert_eq!(images.skipped_passed(), 1);
    // A key ahead of the cursor is still recorded.
    images.record(&[9], Some(&[9]));
    assert!(images.contains(&[9]));
    assert_eq!(images.recorded_total(), 3);
    let rest: Vec<_> = pit.map(Result::unwrap).collect();
    assert_eq!(rest.len(), 4);
}
