//! Crash at every step of staging and install (fault injection): after
//! recovery the replica holds its old state or the complete new one, never
//! a mix, and a retried install then succeeds.

mod common;

use std::path::Path;

use tandem_snapshot::{CrashPoint, Error, SnapshotReader, Stager, StateSwitch};

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Opens the live state (a sled db inside the current version) and reads it.
fn live_state(root: &Path) -> Option<Pairs> {
    let sw = StateSwitch::open(root).unwrap();
    let dir = sw.recover().unwrap()?;
    let db = common::open_sled(&dir);
    let out = db
        .iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    Some(out)
}

/// Fills a fresh version directory from `pairs` and switches to it.
fn install_pairs(
    sw: &StateSwitch,
    name: &str,
    pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), Error>>,
    stop_after: Option<usize>,
) -> Result<(), Error> {
    let dir = sw.create_version(name)?;
    {
        let db = common::open_sled(&dir);
        for (i, p) in pairs.enumerate() {
            if stop_after == Some(i) {
                // Crash in the middle of filling the new state.
                db.flush().unwrap();
                return Err(Error::InvalidState("crash while filling".into()));
            }
            let (k, v) = p?;
            db.insert(k, v).unwrap();
        }
        db.flush().unwrap();
    }
    sw.switch_to(name)
}

/// The follower's whole path: stage every chunk, verify and publish, build
/// the new state version, switch.
fn receive_and_install(
    src: &SnapshotReader,
    snap: &Path,
    sm: &Path,
    crash: Option<CrashPoint>,
    stop_fill_after: Option<usize>,
) -> Result<(), Error> {
    let mut stager = Stager::open(snap)?;
    stager.set_crash_point(crash);
    let mut staging = stager.begin(src.manifest())?;
    for n in 0..src.manifest().chunk_count {
        staging.write_chunk(n, &src.read_chunk(n)?)?;
    }
    let staged = staging.finish()?;
    let mut sw = StateSwitch::open(sm)?;
    sw.set_crash_point(crash);
    let name = format!("v-{:020}", staged.manifest().index);
    install_pairs(&sw, &name, staged.pairs(), stop_fill_after)
}

#[test]
fn crash_at_every_install_step_leaves_old_or_new_state() {
    let old = common::pairs(1, 150);
    let new = common::pairs(2, 200);
    let mut crashes: Vec<(Option<CrashPoint>, Option<usize>, &str)> = vec![
        (Some(CrashPoint::AfterChunk(0)), None, "old"),
        (Some(CrashPoint::AfterChunk(5)), None, "old"),
        (Some(CrashPoint::BeforeManifest), None, "old"),
        (Some(CrashPoint::AfterManifest), None, "old"),
        (Some(CrashPoint::AfterPublishRename), None, "old"),
        (None, Some(0), "old"),
        (None, Some(100), "old"),
        (Some(CrashPoint::BeforeSwitch), None, "old"),
        (Some(CrashPoint::AfterSwitchTmp), None, "old"),
        (Some(CrashPoint::AfterSwitch), None, "new"),
    ];
    crashes.push((None, None, "new"));
    for (crash, stop_fill, want) in crashes {
        let tmp = tempfile::tempdir().unwrap();
        let leader = common::build(&tmp.path().join("leader"), 500, 7, &new, 512);
        assert!(leader.manifest().chunk_count > 6);
        let (snap, sm) = (tmp.path().join("f/snap"), tmp.path().join("f/sm"));
        // The follower's current state.
        let sw = StateSwitch::open(&sm).unwrap();
        install_pairs(
            &sw,
            "v-00000000000000000010",
            old.clone().into_iter().map(Ok),
            None,
        )
        .unwrap();
        drop(sw);

        let r = receive_and_install(&leader, &snap, &sm, crash, stop_fill);
        let label = format!("{crash:?}/{stop_fill:?}");
        if crash.is_some() || stop_fill.is_some() {
            assert!(r.is_err(), "{label}: the injected crash did not happen");
        } else {
            r.unwrap();
        }

        // "Restart": recovery of snap/ and of the state directory.
        let stager = Stager::open(&snap).unwrap();
        let recovered = stager.recover().unwrap();
        let state = live_state(&sm).unwrap();
        let expected = if want == "old" { &old } else { &new };
        assert!(
            state == *expected,
            "{label}: state is neither the old nor the new one as expected ({want})"
        );
        // Nothing half-done is left behind.
        for e in std::fs::read_dir(&snap).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(name.starts_with("snapshot-"), "{label}: left {name}");
        }
        assert_eq!(
            std::fs::read_dir(&sm).unwrap().count(),
            2,
            "{label}: CURRENT + one version"
        );
        // A published snapshot survives the crash and can be installed
        // without a new transfer; otherwise the transfer is redone.
        if want == "old" {
            match recovered {
                Some(s) => {
                    assert_eq!(s.manifest(), leader.manifest(), "{label}");
                    let sw = StateSwitch::open(&sm).unwrap();
                    install_pairs(&sw, "v-00000000000000000500", s.pairs(), None).unwrap();
                }
                None => receive_and_install(&leader, &snap, &sm, None, None).unwrap(),
            }
            assert!(
                live_state(&sm).unwrap() == new,
                "{label}: retry did not install the new state"
            );
        }
    }
}

#[test]
fn staging_rejects_damaged_or_foreign_chunks_and_verifies_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(3, 100);
    let src = common::build(&tmp.path().join("leader"), 20, 2, &pairs, 256);
    let other = common::build(&tmp.path().join("other"), 21, 2, &pairs, 256);
    let stager = Stager::open(&tmp.path().join("snap")).unwrap();
    let mut st = stager.begin(src.manifest()).unwrap();
    let mut bad = src.read_chunk(1).unwrap();
    bad[45] ^= 4;
    assert!(matches!(
        st.write_chunk(1, &bad),
        Err(Error::Corruption { .. })
    ));
    assert!(st.write_chunk(1, &other.read_chunk(1).unwrap()).is_err());
    assert!(
        st.write_chunk(0, &src.read_chunk(1).unwrap()).is_err(),
        "chunk 1 at position 0"
    );
    assert!(st
        .write_chunk(src.manifest().chunk_count, &src.read_chunk(0).unwrap())
        .is_err());
    assert!(!st.has_chunk(1));
    for n in (0..src.manifest().chunk_count).rev() {
        st.write_chunk(n, &src.read_chunk(n).unwrap()).unwrap();
        // A duplicate is accepted and changes nothing.
        st.write_chunk(n, &src.read_chunk(n).unwrap()).unwrap();
    }
    assert_eq!(st.missing(), 0);
    assert_eq!(common::read_all(&st.finish().unwrap()), pairs);

    // A manifest whose checksum does not match its chunks: every chunk is
    // individually valid, the whole-snapshot verification refuses it and
    // removes the staging directory.
    let mut m = src.manifest().clone();
    m.index = 30;
    let stager = Stager::open(&tmp.path().join("snap2")).unwrap();
    let lie = common::build(&tmp.path().join("lie"), 30, 2, &common::pairs(4, 100), 256);
    m.chunk_count = lie.manifest().chunk_count;
    m.total_bytes = lie.manifest().total_bytes;
    m.checksum = lie.manifest().checksum ^ 1;
    m.pair_count = lie.manifest().pair_count;
    m.term = 2;
    let mut st = stager.begin(&m).unwrap();
    for n in 0..m.chunk_count {
        st.write_chunk(n, &lie.read_chunk(n).unwrap()).unwrap();
    }
    assert!(matches!(st.finish(), Err(Error::Corruption { .. })));
    assert_eq!(std::fs::read_dir(stager.dir()).unwrap().count(), 0);
    assert!(stager.recover().unwrap().is_none());
}

#[test]
fn recover_keeps_only_the_newest_complete_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let a = common::build(&snap, 10, 1, &common::pairs(1, 10), 256);
    let b = common::build(&snap, 20, 2, &common::pairs(2, 10), 256);
    let stager = Stager::open(&snap).unwrap();
    assert_eq!(stager.list().unwrap(), vec![(10, 1), (20, 2)]);
    assert_eq!(
        stager.open_snapshot(20, 2).unwrap().unwrap().manifest(),
        b.manifest()
    );
    assert!(stager.open_snapshot(20, 3).unwrap().is_none());
    // A snapshot directory whose manifest is damaged is removed too.
    let c = common::build(&snap, 30, 2, &common::pairs(3, 10), 256);
    std::fs::write(c.dir().join(tandem_snapshot::MANIFEST_FILE), b"garbage").unwrap();
    let newest = stager.recover().unwrap().unwrap();
    assert_eq!(newest.manifest(), b.manifest());
    assert!(!a.dir().exists() && !c.dir().exists());
    assert_eq!(stager.list().unwrap(), vec![(20, 2)]);
    assert_eq!(stager.remove_older_than(21, 0).unwrap(), 1);
    assert!(stager.recover().unwrap().is_none());
}

#[test]
fn publishing_the_same_snapshot_twice_keeps_one() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let pairs = common::pairs(5, 30);
    let a = common::build(&snap, 10, 1, &pairs, 256);
    let b = common::build(&snap, 10, 1, &pairs, 256);
    assert_eq!(a.dir(), b.dir());
    assert_eq!(Stager::open(&snap).unwrap().list().unwrap(), vec![(10, 1)]);
    assert_eq!(common::read_all(&b), pairs);
}

#[test]
fn build_in_one_call_and_cleanup_after_a_failed_build() {
    let tmp = tempfile::tempdir().unwrap();
    let stager = Stager::open(&tmp.path().join("snap")).unwrap();
    let pairs = common::pairs(6, 40);
    let cfg = tandem_snapshot::WriterConfig { chunk_bytes: 256 };
    let r = stager
        .build(
            &common::meta(8, 1),
            &cfg,
            pairs.iter().map(|(k, v)| Ok((k, v))),
        )
        .unwrap();
    assert_eq!(common::read_all(&r), pairs);
    // Keys out of order: the build fails and leaves nothing behind.
    let bad = vec![
        Ok((b"b".to_vec(), b"1".to_vec())),
        Ok((b"a".to_vec(), b"2".to_vec())),
    ];
    assert!(matches!(
        stager.build(&common::meta(9, 1), &cfg, bad),
        Err(Error::KeysOutOfOrder { .. })
    ));
    // The source fails midway: same.
    let failing = vec![
        Ok((b"a".to_vec(), b"1".to_vec())),
        Err(Error::InvalidState("live iterator failed".into())),
    ];
    assert!(stager.build(&common::meta(10, 1), &cfg, failing).is_err());
    let names: Vec<_> = std::fs::read_dir(stager.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![format!("snapshot-{:020}-{:020}", 8, 1)]);
}
