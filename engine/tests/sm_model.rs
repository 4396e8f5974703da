//! Property test: the state machine against a `BTreeMap` model.
//!
//! Random command sequences (batches, compare-and-swap that succeed and
//! fail, removes, no-ops, empty leader entries) are applied in random group
//! sizes, with the state machine closed and reopened at random points and
//! already-applied entries delivered again after a reopen. Every result and
//! the whole state must match the model.
//!
//! `TANDEM_SM_CASES` sets the number of cases (default 40).

mod sm_support;

use proptest::prelude::*;
use tandem::raft::Entry;
use tandem::sm::{Cas, Command, CommandResult, SmOptions, StateMachine, WriteBatch};

use sm_support::{contents, entry, Model};

fn key() -> impl Strategy<Value = Vec<u8>> {
    (0u8..6).prop_map(|k| vec![b'k', k])
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    (0u8..3, 0usize..3).prop_map(|(v, len)| vec![v; [0, 1, 100][len]])
}

/// `None`: an empty entry (what a new leader appends).
fn command() -> impl Strategy<Value = Option<Command>> {
    let op = prop_oneof![
        (key(), value()).prop_map(|(k, v)| (k, Some(v))),
        key().prop_map(|k| (k, None)),
    ];
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Command::Noop)),
        4 => (key(), proptest::option::of(value()), proptest::option::of(value()))
            .prop_map(|(key, expected, new)| Some(Command::Cas(Cas { key, expected, new }))),
        4 => proptest::collection::vec(op, 0..6).prop_map(|ops| {
            let mut b = WriteBatch::new();
            for (k, v) in ops {
                match v {
                    Some(v) => b.insert(k, v),
                    None => b.remove(k),
                }
            }
            Some(Command::Batch(b))
        }),
    ]
}

fn cases() -> u32 {
    std::env::var("TANDEM_SM_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn state_machine_matches_the_model(
        commands in proptest::collection::vec(command(), 1..80),
        groups in proptest::collection::vec((1usize..10, proptest::bool::weighted(0.2), 0usize..4), 1..80),
        write_behind_entries in prop_oneof![Just(0usize), Just(1), Just(3), Just(1024)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = SmOptions { sled_flush_every_ms: None, write_behind_entries, ..SmOptions::default() };
        let mut sm = StateMachine::open(dir.path(), &opts).unwrap();
        let mut model = Model::default();
        let entries: Vec<Entry> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let index = i as u64 + 1;
                let term = 1 + index / 7;
                match c {
                    Some(c) => entry(index, term, c),
                    None => Entry { index, term, context: index.to_le_bytes().to_vec().into(), ..Entry::default() },
                }
            })
            .collect();
        let mut next = 0usize;
        let mut redeliver = 0usize;
        for (size, reopen, back) in groups.iter().cycle().take(commands.len() * 2) {
            if next >= entries.len() {
                break;
            }
            let end = (next + size).min(entries.len());
            let start = next.saturating_sub(redeliver);
            redeliver = 0;
            let out = sm.apply(&entries[start..end]).unwrap();
            prop_assert_eq!(out.results.len(), end - next, "only new entries have results");
            for (r, c) in out.results.iter().zip(&commands[next..end]) {
                let expected = match c {
                    Some(c) => model.apply(c),
                    None => { model.applied += 1; CommandResult::Noop }
                };
                prop_assert_eq!(&r.result, &expected, "entry {}", r.index);
                prop_assert_eq!(&r.context, &r.index.to_le_bytes().to_vec());
            }
            next = end;
            prop_assert_eq!(sm.applied().0, model.applied);
            prop_assert_eq!(out.applied_index, model.applied);
            // sled holds a prefix of the applied entries, all of them when
            // nothing may be held back.
            prop_assert!(sm.written_index() <= model.applied);
            if write_behind_entries == 0 {
                prop_assert_eq!(sm.written_index(), model.applied);
            }
            if *reopen {
                if *back > 0 {
                    prop_assert_eq!(sm.flush_durable().unwrap(), model.applied);
                }
                drop(sm);
                sm = StateMachine::open(dir.path(), &opts).unwrap();
                prop_assert_eq!(sm.applied().0, model.applied);
                prop_assert_eq!(&contents(&sm), &model.map);
                redeliver = *back;
            }
        }
        prop_assert_eq!(&contents(&sm), &model.map);
        for (k, v) in &model.map {
            prop_assert_eq!(sm.get(k).unwrap().map(|v| v.to_vec()), Some(v.clone()));
        }
    }
}
