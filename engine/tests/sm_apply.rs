//! Scenarios of the state machine: grouping, skipping, gaps, compare-and-swap
//! inside a group, membership changes, corrupt entries, reads, reopen.

use tandem::raft::{ConfChange, ConfChangeType, ConfState, Entry, EntryType};
use tandem::sm::{
    Cas, CasMismatch, Command, CommandResult, Error, SmOptions, StateMachine, WriteBatch,
};

fn open(dir: &std::path::Path) -> StateMachine {
    StateMachine::open(dir, &SmOptions::default()).unwrap()
}

fn entry(index: u64, term: u64, command: &Command) -> Entry {
    Entry {
        index,
        term,
        data: command.encode().into(),
        context: index.to_le_bytes().to_vec().into(),
        ..Entry::default()
    }
}

fn put(k: &str, v: &str) -> Command {
    let mut b = WriteBatch::new();
    b.insert(k.as_bytes(), v.as_bytes());
    Command::Batch(b)
}

fn cas(k: &str, expected: Option<&str>, new: Option<&str>) -> Command {
    Command::Cas(Cas {
        key: k.as_bytes().to_vec(),
        expected: expected.map(|v| v.as_bytes().to_vec()),
        new: new.map(|v| v.as_bytes().to_vec()),
    })
}

fn get(sm: &StateMachine, k: &str) -> Option<String> {
    sm.get(k.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

#[test]
fn cas_sees_earlier_entries_of_the_same_group() {
    let dir = tempfile::tempdir().unwrap();
    let sm = open(dir.path());
    let out = sm
        .apply(&[
            entry(1, 1, &put("a", "1")),
            entry(2, 1, &cas("a", Some("1"), Some("2"))),
            entry(3, 1, &cas("a", Some("1"), Some("3"))),
            entry(4, 2, &cas("b", None, Some("new"))),
            entry(5, 2, &cas("b", None, Some("again"))),
            entry(6, 2, &cas("a", Some("2"), None)),
        ])
        .unwrap();
    let results: Vec<_> = out.results.iter().map(|r| r.result.clone()).collect();
    assert_eq!(
        results,
        vec![
            CommandResult::Written { ops: 1 },
            CommandResult::Cas(Ok(())),
            CommandResult::Cas(Err(CasMismatch {
                current: Some(b"2".to_vec())
            })),
            CommandResult::Cas(Ok(())),
            CommandResult::Cas(Err(CasMismatch {
                current: Some(b"new".to_vec())
            })),
            CommandResult::Cas(Ok(())),
        ]
    );
    assert_eq!(out.results[3].context, &4u64.to_le_bytes()[..]);
    assert_eq!((out.applied_index, out.applied_term), (6, 2));
    assert_eq!(get(&sm, "a"), None);
    assert_eq!(get(&sm, "b").as_deref(), Some("new"));
    assert_eq!(sm.applied(), (6, 2));
}

#[test]
fn later_ops_in_a_batch_override_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sm = open(dir.path());
    let mut b = WriteBatch::new();
    b.insert(&b"k"[..], &b"1"[..]);
    b.remove(&b"k"[..]);
    b.insert(&b"j"[..], &b"x"[..]);
    b.remove(&b"j"[..]);
    b.insert(&b"j"[..], &b"y"[..]);
    sm.apply(&[entry(1, 1, &Command::Batch(b))]).unwrap();
    assert_eq!(get(&sm, "k"), None);
    assert_eq!(get(&sm, "j").as_deref(), Some("y"));
}

#[test]
fn reapplied_entries_are_skipped_and_gaps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sm = open(dir.path());
    sm.apply(&[entry(1, 1, &put("a", "1")), entry(2, 1, &put("b", "1"))])
        .unwrap();
    // Entry 2 again (with a different command: must not be applied twice),
    // then 3.
    let out = sm
        .apply(&[
            entry(2, 1, &put("b", "CHANGED")),
            entry(3, 1, &put("c", "1")),
        ])
        .unwrap();
    assert_eq!(out.results.len(), 1);
    assert_eq!(out.results[0].index, 3);
    assert_eq!(get(&sm, "b").as_deref(), Some("1"));
    // Everything already applied: nothing happens.
    let out = sm.apply(&[entry(1, 1, &put("a", "X"))]).unwrap();
    assert!(out.results.is_empty());
    assert_eq!(out.applied_index, 3);
    // A gap is refused and changes nothing; the machine stays usable.
    match sm.apply(&[entry(5, 1, &put("e", "1"))]) {
        Err(Error::Gap { expected, got }) => assert_eq!((expected, got), (4, 5)),
        other => panic!("expected a gap error, got {other:?}"),
    }
    match sm.apply(&[entry(4, 1, &put("d", "1")), entry(6, 1, &put("f", "1"))]) {
        Err(Error::Gap { expected, got }) => assert_eq!((expected, got), (5, 6)),
        other => panic!("expected a gap error, got {other:?}"),
    }
    assert_eq!(get(&sm, "d"), None, "a refused group applies nothing");
    assert_eq!(sm.applied().0, 3);
    sm.apply(&[entry(4, 1, &put("d", "1"))]).unwrap();
    assert_eq!(get(&sm, "d").as_deref(), Some("1"));
}

#[test]
fn corrupt_or_unknown_commands_stop_the_replica_without_partial_writes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sm = open(dir.path());
        sm.apply(&[entry(1, 1, &put("a", "1"))]).unwrap();
        let mut bad = entry(3, 1, &put("c", "1"));
        bad.data.truncate(bad.data.len() - 1);
        let err = sm
            .apply(&[entry(2, 1, &put("b", "1")), bad.clone()])
            .unwrap_err();
        assert!(
            matches!(err, Error::CorruptCommand { index: 3, .. }),
            "{err}"
        );
        assert_eq!(
            get(&sm, "b").as_deref(),
            Some("1"),
            "the entries before the bad one are applied"
        );
        assert_eq!(get(&sm, "c"), None, "the bad one is not");
        assert_eq!(sm.applied().0, 2);
        assert!(sm.stopped().unwrap().contains("entry 3"));
        // Stopped: even a valid entry is refused now.
        assert!(matches!(
            sm.apply(&[entry(3, 1, &put("c", "1"))]),
            Err(Error::Stopped(_))
        ));
        // A corrupt first entry applies nothing.
        let dir2 = tempfile::tempdir().unwrap();
        let sm2 = open(dir2.path());
        assert!(matches!(sm2.apply(&[bad.clone()]), Err(Error::Gap { .. })));
        bad.index = 1;
        assert!(matches!(
            sm2.apply(&[bad, entry(2, 1, &put("x", "1"))]),
            Err(Error::CorruptCommand { index: 1, .. })
        ));
        assert_eq!(sm2.applied().0, 0);
        assert_eq!(get(&sm2, "x"), None);
    }
    // A restart replays the same committed entry and stops again, at the
    // same place: the replica never diverges by skipping it.
    let sm = open(dir.path());
    assert_eq!(sm.applied().0, 2);
    let mut unknown = entry(3, 1, &Command::Noop);
    let mut data = unknown.data.to_vec();
    data[0] = 0xEE;
    unknown.data = data.into();
    let err = sm.apply(&[unknown]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownCommandVersion {
                index: 3,
                version: 0xEE
            }
        ),
        "{err}"
    );
    // Garbage in a conf-change entry is just as fatal.
    let dir2 = tempfile::tempdir().unwrap();
    let sm2 = open(dir2.path());
    let cc = Entry {
        entry_type: EntryType::EntryConfChange,
        index: 1,
        term: 1,
        data: vec![0xFF; 3].into(),
        context: tandem::raft::Bytes::new(),
    };
    assert!(matches!(
        sm2.apply(&[cc]),
        Err(Error::CorruptConfChange { index: 1, .. })
    ));
}

#[test]
fn empty_entries_and_noops_advance_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let sm = open(dir.path());
    let out = sm
        .apply(&[
            Entry {
                index: 1,
                term: 3,
                ..Entry::default()
            },
            entry(2, 3, &Command::Noop),
        ])
        .unwrap();
    assert_eq!(out.results[0].result, CommandResult::Noop);
    assert_eq!(out.results[1].result, CommandResult::Noop);
    drop(sm);
    assert_eq!(open(dir.path()).applied(), (2, 3));
}

#[test]
fn conf_changes_are_stored_with_the_batch_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sm = open(dir.path());
        sm.bootstrap(&ConfState::from_voters([1])).unwrap();
        assert!(sm.bootstrap(&ConfState::from_voters([1])).is_err());
        let add = |id, t| Entry {
            entry_type: EntryType::EntryConfChange,
            index: 0,
            term: 1,
            data: tandem::raft::types::encode(&ConfChange {
                change_type: t,
                node_id: id,
                context: vec![],
            })
            .into(),
            context: tandem::raft::Bytes::new(),
        };
        let mut e2 = add(2, ConfChangeType::AddNode);
        e2.index = 2;
        let mut e3 = add(1, ConfChangeType::RemoveNode);
        e3.index = 3;
        let mut e4 = add(3, ConfChangeType::AddLearnerNode);
        e4.index = 4;
        // Removing node 1 from {1, 2} is allowed; then node 2 alone.
        let out = sm
            .apply(&[entry(1, 1, &put("x", "1")), e2, e3, e4])
            .unwrap();
        assert_eq!(out.conf_changes.len(), 3);
        assert_eq!(out.conf_changes[0].conf_state.voters, vec![1, 2]);
        assert_eq!(out.conf_changes[1].conf_state.voters, vec![2]);
        assert_eq!(
            out.conf_changes[2].conf_state,
            ConfState::from_parts([2], [3])
        );
        assert_eq!(sm.conf_state(), ConfState::from_parts([2], [3]));
        // Removing the last voter is refused on every replica alike: the
        // configuration stays, the entry is applied (as a refusal).
        let mut last = add(2, ConfChangeType::RemoveNode);
        last.index = 5;
        let out = sm.apply(&[last]).unwrap();
        assert!(out.conf_changes.is_empty());
        assert!(matches!(
            out.results[0].result,
            CommandResult::ConfChange(Err(_))
        ));
        assert_eq!(sm.applied().0, 5);
    }
    let sm = open(dir.path());
    assert_eq!(sm.conf_state(), ConfState::from_parts([2], [3]));
    assert_eq!(sm.applied(), (5, 1));
}

#[test]
fn range_and_prefix_scans_cover_only_user_keys_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sm = open(dir.path());
    let mut b = WriteBatch::new();
    for k in ["app", "apple", "b", "ba", "c", "", "\u{0}"] {
        b.insert(k.as_bytes(), k.to_uppercase().as_bytes());
    }
    sm.apply(&[entry(1, 1, &Command::Batch(b))]).unwrap();
    let keys = |it: tandem::sm::Iter| -> Vec<String> {
        it.map(|r| String::from_utf8(r.unwrap().0.to_vec()).unwrap())
            .collect()
    };
    assert_eq!(
        keys(sm.range::<&[u8], _>(..)),
        vec!["", "\u{0}", "app", "apple", "b", "ba", "c"]
    );
    assert_eq!(keys(sm.scan_prefix(b"ap")), vec!["app", "apple"]);
    assert_eq!(
        keys(sm.range(&b"apple"[..]..&b"ba"[..])),
        vec!["apple", "b"]
    );
    assert_eq!(keys(sm.range(&b"b"[..]..=&b"c"[..])), vec!["b", "ba", "c"]);
    assert_eq!(keys(sm.range(&b"c"[..]..&b"a"[..])), Vec::<String>::new());
    assert_eq!(keys(sm.range(&b"b"[..]..&b"b"[..])), Vec::<String>::new());
    let back: Vec<_> = sm
        .scan_prefix(b"")
        .rev()
        .map(|r| r.unwrap().0.to_vec())
        .collect();
    assert_eq!(back.first().map(Vec::as_slice), Some(&b"c"[..]));
    assert_eq!(back.len(), 7);
    let (k, v) = sm.scan_prefix(b"ba").next().unwrap().unwrap();
    assert_eq!((&k[..], &v[..]), (&b"ba"[..], &b"BA"[..]));
}

#[test]
fn durable_applied_index_advances_only_on_flush_durable() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SmOptions {
        sled_flush_every_ms: None,
        ..SmOptions::default()
    };
    {
        let sm = StateMachine::open(dir.path(), &opts).unwrap();
        assert_eq!(sm.durable_applied(), 0);
        // Large values go to sled blob files, which sled itself never syncs.
        let mut b = WriteBatch::new();
        b.insert(&b"big"[..], vec![7u8; 200_000]);
        sm.apply(&[entry(1, 1, &Command::Batch(b)), entry(2, 1, &put("s", "1"))])
            .unwrap();
        assert_eq!(sm.durable_applied(), 0, "apply alone is not durable");
        sm.flush_durable().unwrap();
        assert!(
            std::fs::read_dir(sm.dir().join("blobs")).unwrap().count() > 0,
            "the large value exercises sled's blob files"
        );
        assert_eq!(sm.durable_applied(), 2);
        assert_eq!(sm.flush_durable().unwrap(), 2, "idempotent");
        sm.apply(&[entry(3, 1, &put("t", "1"))]).unwrap();
        assert_eq!(sm.durable_applied(), 2);
    }
    // Reopening makes the recovered state durable and starts there.
    let sm = StateMachine::open(dir.path(), &opts).unwrap();
    assert_eq!(sm.durable_applied(), sm.applied().0);
    assert_eq!(sm.get(b"big").unwrap().unwrap().len(), 200_000);
}

#[test]
fn snapshot_metadata_is_persisted_and_bounded_by_applied() {
    let dir = tempfile::tempdir().unwrap();
    let meta = tandem::raft::SnapshotMetadata {
        conf_state: ConfState::from_voters([1, 2, 3]),
        index: 2,
        term: 1,
    };
    {
        let sm = open(dir.path());
        assert!(sm.set_snapshot_metadata(&meta).is_err(), "above applied");
        sm.apply(&[entry(1, 1, &put("a", "1")), entry(2, 1, &put("b", "1"))])
            .unwrap();
        sm.set_snapshot_metadata(&meta).unwrap();
    }
    let sm = open(dir.path());
    assert_eq!(sm.snapshot_metadata(), meta);
}

#[test]
fn a_directory_with_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"someone else's key", b"v").unwrap();
        db.flush().unwrap();
    }
    let r = StateMachine::open(dir.path(), &SmOptions::default());
    assert!(
        matches!(r, Err(Error::FormatVersion { found: 0, .. })),
        "{r:?}"
    );
}

#[test]
fn a_corrupt_removed_record_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let sled_dir = {
        let sm = open(dir.path());
        sm.bootstrap(&ConfState::from_voters([1, 2])).unwrap();
        sm.dir()
    };
    {
        let config = sled::Config::new().path(&sled_dir);
        let db =
            tandem::sm::open_sled_retrying(&config, std::time::Duration::from_secs(10)).unwrap();
        // Ids are whole u64s: 7 bytes cannot be one.
        db.insert(b"\x00removed", &[1u8; 7][..]).unwrap();
        db.flush().unwrap();
    }
    let r = StateMachine::open(dir.path(), &SmOptions::default());
    assert!(
        matches!(r, Err(Error::CorruptMetadata { key: "removed", .. })),
        "{r:?}"
    );
}

/// Apply entries 1..=n, one per call: entry i sets "counter" to i and
/// inserts "k<i>" with a `value_len`-byte value.
fn apply_counted(sm: &StateMachine, n: u64, value_len: usize) {
    for i in 1..=n {
        let mut b = WriteBatch::new();
        b.insert(&b"counter"[..], i.to_le_bytes().to_vec());
        b.insert(format!("k{i}").into_bytes(), vec![1u8; value_len]);
        sm.apply(&[entry(i, 1, &Command::Batch(b))]).unwrap();
    }
}

#[test]
fn flushes_and_reads_run_concurrently_with_apply() {
    let dir = tempfile::tempdir().unwrap();
    let sm = std::sync::Arc::new(open(dir.path()));
    const GROUPS: u64 = 300;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let (sm, done) = (sm.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            let mut flushes = 0u32;
            while !done.load(std::sync::atomic::Ordering::Acquire) || flushes == 0 {
                let durable = sm.flush_durable().unwrap();
                assert!(durable >= last, "the durable index never goes back");
                assert!(durable <= sm.applied_index(), "durable <= applied");
                assert!(sm.durable_applied() >= durable);
                last = durable;
                flushes += 1;
            }
        })
    };
    let reader = {
        let (sm, done) = (sm.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if let Some(v) = sm.get(b"counter").unwrap() {
                    let n = u64::from_le_bytes(v.as_ref().try_into().unwrap());
                    assert!(n >= last, "reads never go back in time: {n} < {last}");
                    last = n;
                }
            }
        })
    };
    apply_counted(&sm, GROUPS, 64);
    done.store(true, std::sync::atomic::Ordering::Release);
    flusher.join().unwrap();
    reader.join().unwrap();
    assert_eq!(sm.flush_durable().unwrap(), GROUPS);
    assert_eq!(sm.durable_applied(), GROUPS);
}

/// Whether sled itself (not the held writes) has user key `k`.
fn in_sled(sm: &StateMachine, k: &str) -> bool {
    let mut key = vec![0x01];
    key.extend_from_slice(k.as_bytes());
    sm.raw_image()
        .unwrap()
        .iter()
        .any(|(stored, _)| stored.as_ref() == key.as_slice())
}

#[test]
fn held_writes_are_read_before_sled_and_written_as_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let sm = open(dir.path());
    sm.apply(&[entry(1, 1, &put("a", "1")), entry(2, 1, &put("gone", "x"))])
        .unwrap();
    assert!(sm.flush_pending().unwrap(), "there was something to write");
    assert!(!sm.flush_pending().unwrap(), "and then nothing");
    assert_eq!(sm.written_index(), 2);

    let mut rm = WriteBatch::new();
    rm.remove(&b"gone"[..]);
    let out = sm
        .apply(&[
            entry(3, 1, &put("b", "1")),
            entry(4, 1, &Command::Batch(rm)),
        ])
        .unwrap();
    assert_eq!(out.applied_index, 4);
    // A later call's compare-and-swap sees the held writes.
    let out = sm
        .apply(&[
            entry(5, 2, &cas("b", Some("1"), Some("2"))),
            entry(6, 2, &cas("gone", None, None)),
        ])
        .unwrap();
    assert_eq!(out.results[0].result, CommandResult::Cas(Ok(())));
    assert_eq!(out.results[1].result, CommandResult::Cas(Ok(())));
    assert!(sm.has_pending());
    assert_eq!((sm.applied_index(), sm.written_index()), (6, 2));
    assert!(!in_sled(&sm, "b") && in_sled(&sm, "gone"), "sled is behind");
    // Point reads see the applied state.
    assert_eq!(get(&sm, "b").as_deref(), Some("2"));
    assert_eq!(get(&sm, "gone"), None);
    assert_eq!(get(&sm, "a").as_deref(), Some("1"));
    // A scan writes the held writes first and sees them all.
    let keys: Vec<_> = sm
        .range::<&[u8], _>(..)
        .map(|r| String::from_utf8(r.unwrap().0.to_vec()).unwrap())
        .collect();
    assert_eq!(keys, ["a", "b"]);
    assert!(!sm.has_pending());
    assert_eq!(sm.written_index(), 6);
    assert!(in_sled(&sm, "b") && !in_sled(&sm, "gone"));

    // Held writes survive a reopen of the same process (drop writes them).
    sm.apply(&[entry(7, 2, &put("c", "1"))]).unwrap();
    assert_eq!(sm.written_index(), 6);
    drop(sm);
    let sm = open(dir.path());
    assert_eq!(sm.applied(), (7, 2));
    assert_eq!(get(&sm, "c").as_deref(), Some("1"));
}

#[test]
fn held_writes_are_bounded_by_entries_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SmOptions {
        write_behind_entries: 3,
        write_behind_bytes: 1000,
        ..SmOptions::default()
    };
    let sm = StateMachine::open(dir.path(), &opts).unwrap();
    sm.apply(&[entry(1, 1, &put("a", "1")), entry(2, 1, &put("b", "1"))])
        .unwrap();
    assert_eq!(sm.written_index(), 0, "two of three entries are held");
    sm.apply(&[entry(3, 1, &Command::Noop)]).unwrap();
    assert_eq!(sm.written_index(), 3, "the third reaches the bound");
    let mut big = WriteBatch::new();
    big.insert(&b"big"[..], vec![7u8; 1000]);
    sm.apply(&[entry(4, 1, &Command::Batch(big))]).unwrap();
    assert_eq!(sm.written_index(), 4, "1000 bytes reach the byte bound");
    drop(sm);

    // Write-through: sled is current after every call.
    let dir = tempfile::tempdir().unwrap();
    let opts = SmOptions {
        write_behind_entries: 0,
        ..SmOptions::default()
    };
    let sm = StateMachine::open(dir.path(), &opts).unwrap();
    for i in 1..=3 {
        sm.apply(&[entry(i, 1, &put("k", "v"))]).unwrap();
        assert_eq!(sm.written_index(), i);
        assert!(!sm.has_pending());
    }
}

#[test]
fn a_reader_never_misses_a_held_write_while_it_moves_to_sled() {
    // Entry i sets "counter" to i and inserts "k<i>" (never removed): a
    // reader that saw counter = c must then find k<c>, whichever of the held
    // map, the moved-aside map and sled it is in at that moment.
    const ENTRIES: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let opts = SmOptions {
        sled_flush_every_ms: None,
        ..SmOptions::default()
    };
    let sm = std::sync::Arc::new(StateMachine::open(dir.path(), &opts).unwrap());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = |d: &std::sync::atomic::AtomicBool| d.load(std::sync::atomic::Ordering::Acquire);
    let writer = {
        let (sm, done) = (sm.clone(), done.clone());
        std::thread::spawn(move || {
            let mut writes = 0u32;
            while !stop(&done) {
                if sm.flush_pending().unwrap() {
                    writes += 1;
                }
            }
            writes
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (sm, done) = (sm.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checked = 0u64;
                while !stop(&done) {
                    let Some(c) = sm.get(b"counter").unwrap() else {
                        continue;
                    };
                    let c = u64::from_le_bytes(c.as_ref().try_into().unwrap());
                    let key = format!("k{c}");
                    assert!(
                        sm.get(key.as_bytes()).unwrap().is_some(),
                        "counter {c} was visible but {key} was not"
                    );
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    let scanner = {
        let (sm, done) = (sm.clone(), done.clone());
        std::thread::spawn(move || {
            let mut scans = 0u32;
            while !stop(&done) {
                let before = sm.applied_index();
                let n = sm.scan_prefix(b"k").count() as u64;
                assert!(n >= before, "a scan after index {before} saw only {n} keys");
                scans += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            scans
        })
    };
    apply_counted(&sm, ENTRIES, 32);
    done.store(true, std::sync::atomic::Ordering::Release);
    let writes = writer.join().unwrap();
    let checked: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let scans = scanner.join().unwrap();
    assert!(
        writes > 0 && checked > 0 && scans > 0,
        "{writes} {checked} {scans}"
    );
    sm.flush_pending().unwrap();
    assert_eq!(sm.written_index(), ENTRIES);
    assert_eq!(sm.scan_prefix(b"k").count() as u64, ENTRIES);
}
