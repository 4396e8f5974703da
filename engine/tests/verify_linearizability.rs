//! Known histories for the linearizability checker: classic anomalies it must
//! reject, and legal concurrent behaviours it must accept.

use std::collections::HashMap;
use std::sync::Arc;

use tandem::verify::{
    check, check_with, CheckConfig, CheckResult, History, HistoryRecorder, Op, Operation, Outcome,
    Output,
};

fn key(name: &str) -> Vec<u8> {
    name.as_bytes().to_vec()
}

fn val(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn get(k: &str) -> Op {
    Op::Get { key: key(k) }
}

fn insert(k: &str, v: &str) -> Op {
    Op::Insert {
        key: key(k),
        value: v.as_bytes().to_vec(),
    }
}

fn remove(k: &str) -> Op {
    Op::Remove { key: key(k) }
}

fn cas(k: &str, expected: Option<&str>, new: Option<&str>) -> Op {
    Op::CompareAndSwap {
        key: key(k),
        expected: expected.and_then(val),
        new: new.and_then(val),
    }
}

fn value(v: Option<&str>) -> Output {
    Output::Value(v.and_then(val))
}

/// Small builder: `h.ret(client, op, invoke, return, output)`.
trait Build {
    fn ret(&mut self, client: u64, op: Op, invoke: u64, ret: u64, output: Output) -> &mut Self;
    fn pend(&mut self, client: u64, op: Op, invoke: u64) -> &mut Self;
}

impl Build for History {
    fn ret(&mut self, client: u64, op: Op, invoke: u64, ret: u64, output: Output) -> &mut Self {
        self.push_returned(client, op, invoke, ret, output);
        self
    }
    fn pend(&mut self, client: u64, op: Op, invoke: u64) -> &mut Self {
        self.push_pending(client, op, invoke);
        self
    }
}

#[track_caller]
fn assert_accepted(h: &History) {
    let result = check(h);
    assert!(
        result.is_linearizable(),
        "expected linearizable, got {result}"
    );
}

/// Asserts the history is rejected and returns the counterexample's ops as
/// `(client, invoke_time)` pairs, sorted, to compare with the expected core.
#[track_caller]
fn assert_rejected(h: &History) -> Vec<(u64, u64)> {
    let result = check(h);
    let CheckResult::NotLinearizable(counterexample) = result else {
        panic!("expected a violation, got {result}");
    };
    assert!(counterexample.minimal, "{counterexample}");
    let text = counterexample.to_string();
    assert!(text.contains("no linearization"), "{text}");
    let mut ids: Vec<(u64, u64)> = counterexample
        .operations
        .iter()
        .map(|o| (o.client, o.invoke_time))
        .collect();
    ids.sort_unstable();
    ids
}

// ---------------------------------------------------------------- rejected

#[test]
fn rejects_stale_read_after_completed_write() {
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .ret(2, get("k"), 3, 4, value(None));
    assert_eq!(assert_rejected(&h), vec![(1, 1), (2, 3)]);
}

#[test]
fn rejects_stale_read_of_an_older_value() {
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .ret(1, insert("k", "b"), 3, 4, value(Some("a")))
        .ret(2, get("k"), 5, 6, value(Some("a")));
    // insert "a" is relaxed to pending but stays: "b" saw it as previous, so it
    // cannot also come after "b".
    assert_eq!(assert_rejected(&h), vec![(1, 1), (1, 3), (2, 5)]);
}

#[test]
fn rejects_lost_update_via_insert_previous_values() {
    // Two sequential inserts both claim the key was absent before them.
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .ret(2, insert("k", "b"), 3, 4, value(None));
    assert_eq!(assert_rejected(&h), vec![(1, 1), (2, 3)]);
}

#[test]
fn rejects_lost_update_two_cas_from_the_same_value() {
    // Read-modify-write counter: both clients read 0, both CAS 0 -> 1
    // succeed, one after the other. The second must have failed.
    let mut h = History::new();
    h.ret(0, insert("c", "0"), 0, 1, value(None))
        .ret(1, get("c"), 2, 3, value(Some("0")))
        .ret(2, get("c"), 2, 3, value(Some("0")))
        .ret(1, cas("c", Some("0"), Some("1")), 4, 5, Output::Cas(Ok(())))
        .ret(2, cas("c", Some("0"), Some("1")), 6, 7, Output::Cas(Ok(())));
    assert_eq!(assert_rejected(&h), vec![(0, 0), (1, 4), (2, 6)]);
}

#[test]
fn rejects_concurrent_cas_both_succeeding_from_absent() {
    let mut h = History::new();
    h.ret(1, cas("k", None, Some("a")), 1, 10, Output::Cas(Ok(())))
        .ret(2, cas("k", None, Some("b")), 2, 9, Output::Cas(Ok(())));
    assert_eq!(assert_rejected(&h), vec![(1, 1), (2, 2)]);
}

#[test]
fn rejects_cas_failing_with_the_expected_value() {
    // Err(current) where current == expected is impossible.
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None)).ret(
        2,
        cas("k", Some("a"), Some("b")),
        3,
        4,
        Output::Cas(Err(val("a"))),
    );
    assert_rejected(&h);
}

#[test]
fn rejects_cas_reporting_a_wrong_current_value() {
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None)).ret(
        2,
        cas("k", Some("x"), Some("b")),
        3,
        4,
        Output::Cas(Err(val("z"))),
    );
    // Nothing ever held "z": the CAS alone is the contradiction.
    assert_eq!(assert_rejected(&h), vec![(2, 3)]);
}

#[test]
fn rejects_cas_succeeding_on_a_wrong_value_and_its_effect_being_lost() {
    // CAS a -> b succeeds while the key holds "x".
    let mut h = History::new();
    h.ret(1, insert("k", "x"), 1, 2, value(None)).ret(
        2,
        cas("k", Some("a"), Some("b")),
        3,
        4,
        Output::Cas(Ok(())),
    );
    assert_rejected(&h);
    // CAS swapped absent -> a, but a later read sees nothing.
    let mut h = History::new();
    h.ret(1, cas("k", None, Some("a")), 1, 2, Output::Cas(Ok(())))
        .ret(2, get("k"), 3, 4, value(None));
    assert_eq!(assert_rejected(&h), vec![(1, 1), (2, 3)]);
}

#[test]
fn rejects_read_of_a_never_written_value() {
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 10, value(None))
        .ret(2, get("k"), 2, 9, value(Some("ghost")));
    assert_eq!(assert_rejected(&h), vec![(2, 2)]);
}

#[test]
fn rejects_reordering_of_sequential_ops() {
    // Client 1 writes a then b; client 2, after both, reads b then a.
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .ret(1, insert("k", "b"), 3, 4, value(Some("a")))
        .ret(2, get("k"), 5, 6, value(Some("b")))
        .ret(2, get("k"), 7, 8, value(Some("a")));
    let core = assert_rejected(&h);
    assert!(
        core.contains(&(2, 7)),
        "the late read of a is the anomaly: {core:?}"
    );
    // Same with the reads overlapping the writes: reading b, then a later
    // read of a is still a step back in time.
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .ret(1, insert("k", "b"), 3, 20, value(Some("a")))
        .ret(2, get("k"), 4, 5, value(Some("b")))
        .ret(2, get("k"), 6, 7, value(Some("a")));
    assert_rejected(&h);
}

#[test]
fn rejects_read_after_completed_remove_seeing_the_old_value() {
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .ret(1, remove("k"), 3, 4, value(Some("a")))
        .ret(2, get("k"), 5, 6, value(Some("a")));
    assert_rejected(&h);
}

#[test]
fn rejects_a_pending_write_seen_before_its_invocation() {
    let mut h = History::new();
    h.ret(2, get("k"), 1, 2, value(Some("a")))
        .pend(1, insert("k", "a"), 3);
    // The shortest failing prefix ends before the insert is invoked: up to
    // then, nothing had written "a".
    assert_eq!(assert_rejected(&h), vec![(2, 1)]);
}

#[test]
fn rejects_a_pending_write_taking_effect_twice() {
    // One pending insert of "a" and one completed remove: the reads see
    // a, then nothing, then a again — "a" would have to be written twice.
    let mut h = History::new();
    h.pend(1, insert("k", "a"), 1)
        .ret(2, get("k"), 2, 3, value(Some("a")))
        .ret(3, remove("k"), 4, 5, value(Some("a")))
        .ret(2, get("k"), 6, 7, value(Some("a")));
    assert_rejected(&h);
}

#[test]
fn rejects_on_one_key_even_when_other_keys_are_fine() {
    let mut h = History::new();
    for i in 0..20u64 {
        h.ret(
            10 + i,
            insert("other", "x"),
            i * 10,
            i * 10 + 5,
            value((i > 0).then_some("x")),
        );
    }
    h.ret(1, insert("bad", "a"), 1, 2, value(None))
        .ret(2, get("bad"), 3, 4, value(None));
    let CheckResult::NotLinearizable(counterexample) = check(&h) else {
        panic!("the key \"bad\" has a stale read");
    };
    assert_eq!(counterexample.key, key("bad"));
    assert_eq!(counterexample.key_ops_total, 2);
}

#[test]
fn counterexample_is_shrunk_to_the_contradiction() {
    // A long, correct history on one key, then a single stale read near the
    // end, with concurrent noise around it.
    let mut h = History::new();
    let mut prev: Option<String> = None;
    for i in 0..40u64 {
        let v = format!("v{i}");
        h.ret(
            1,
            insert("k", &v),
            i * 10,
            i * 10 + 3,
            value(prev.as_deref()),
        );
        h.ret(2, get("k"), i * 10 + 4, i * 10 + 6, value(Some(&v)));
        prev = Some(v);
    }
    // After v39 completed (at 393), a read sees v37.
    h.ret(3, get("k"), 400, 401, value(Some("v37")));
    h.ret(4, get("k"), 402, 403, value(Some("v39")));
    // The core: v37 was written (pended: when does not matter), v38
    // overwrote it and completed, then a read saw v37.
    assert_eq!(assert_rejected(&h), vec![(1, 370), (1, 380), (3, 400)]);
    let CheckResult::NotLinearizable(counterexample) = check(&h) else {
        unreachable!()
    };
    assert_eq!(counterexample.key_ops_total, 82);
}

#[test]
fn unshrunk_counterexample_when_shrinking_is_off() {
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .ret(3, get("k"), 3, 4, value(Some("a")))
        .ret(2, get("k"), 5, 6, value(None));
    let config = CheckConfig {
        shrink: false,
        ..CheckConfig::default()
    };
    let CheckResult::NotLinearizable(counterexample) = check_with(&h, &config) else {
        panic!("stale read");
    };
    assert!(!counterexample.minimal);
    assert_eq!(counterexample.operations.len(), 3);
}

// ---------------------------------------------------------------- accepted

#[test]
fn accepts_empty_and_sequential_histories() {
    assert_accepted(&History::new());
    let mut h = History::new();
    h.ret(1, get("k"), 1, 2, value(None))
        .ret(1, insert("k", "a"), 3, 4, value(None))
        .ret(2, get("k"), 5, 6, value(Some("a")))
        .ret(2, cas("k", Some("a"), Some("b")), 7, 8, Output::Cas(Ok(())))
        .ret(
            1,
            cas("k", Some("a"), Some("c")),
            9,
            10,
            Output::Cas(Err(val("b"))),
        )
        .ret(1, cas("k", Some("b"), None), 11, 12, Output::Cas(Ok(())))
        .ret(2, remove("k"), 13, 14, value(None))
        .ret(2, cas("k", None, Some("d")), 15, 16, Output::Cas(Ok(())))
        .ret(1, remove("k"), 17, 18, value(Some("d")));
    assert_accepted(&h);
}

#[test]
fn accepts_concurrent_overlapping_writes_in_either_order() {
    for (first, last) in [("a", "b"), ("b", "a")] {
        let mut h = History::new();
        // Both inserts overlap; whichever went first reported absent.
        h.ret(1, insert("k", first), 1, 10, value(None))
            .ret(2, insert("k", last), 2, 9, value(Some(first)))
            .ret(3, get("k"), 11, 12, value(Some(last)));
        assert_accepted(&h);
    }
}

#[test]
fn accepts_concurrent_read_seeing_old_or_new_value() {
    for seen in [None, Some("a")] {
        let mut h = History::new();
        h.ret(1, insert("k", "a"), 1, 10, value(None))
            .ret(2, get("k"), 2, 3, value(seen));
        assert_accepted(&h);
    }
    // Two readers during one write: one sees new, the other (starting
    // earlier, finishing later) still old. Legal.
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 10, value(None))
        .ret(2, get("k"), 2, 8, value(None))
        .ret(3, get("k"), 3, 4, value(Some("a")));
    assert_accepted(&h);
}

#[test]
fn accepts_equal_timestamps_as_concurrent() {
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 5, 5, value(None))
        .ret(2, get("k"), 5, 5, value(None));
    assert_accepted(&h);
}

#[test]
fn accepts_pending_ops_that_took_effect() {
    let mut h = History::new();
    h.pend(1, insert("k", "a"), 1)
        .ret(2, get("k"), 5, 6, value(Some("a")))
        .ret(2, insert("k", "b"), 7, 8, value(Some("a")));
    assert_accepted(&h);
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .pend(1, cas("k", Some("a"), Some("b")), 3)
        .ret(2, get("k"), 5, 6, value(Some("b")));
    assert_accepted(&h);
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .pend(1, remove("k"), 3)
        .ret(2, get("k"), 5, 6, value(None));
    assert_accepted(&h);
}

#[test]
fn accepts_pending_ops_that_did_not_take_effect() {
    let mut h = History::new();
    h.pend(1, insert("k", "a"), 1)
        .ret(2, get("k"), 5, 6, value(None))
        .ret(2, get("k"), 7, 8, value(None));
    assert_accepted(&h);
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .pend(1, remove("k"), 3)
        .pend(1, cas("k", Some("a"), Some("z")), 4)
        .ret(2, get("k"), 5, 6, value(Some("a")));
    assert_accepted(&h);
}

#[test]
fn accepts_pending_op_taking_effect_late() {
    // The pending insert is invoked early but is seen only much later,
    // after reads that saw nothing: it took effect between them.
    let mut h = History::new();
    h.pend(1, insert("k", "a"), 1)
        .ret(2, get("k"), 2, 3, value(None))
        .ret(2, get("k"), 50, 51, value(None))
        .ret(2, get("k"), 90, 91, value(Some("a")));
    assert_accepted(&h);
}

#[test]
fn accepts_many_keys_with_high_concurrency_quickly() {
    // 8 keys x 12 fully concurrent inserts of distinct values, each answering
    // the previous value along one fixed order: exponential without
    // memoisation and partitioning, immediate with them.
    let mut h = History::new();
    for k in 0..8 {
        let name = format!("k{k}");
        let mut prev: Option<String> = None;
        for c in 0..12u64 {
            let v = format!("{k}-{c}");
            h.ret(c, insert(&name, &v), 0, 100, value(prev.as_deref()));
            prev = Some(v);
        }
        h.ret(99, get(&name), 101, 102, value(prev.as_deref()));
    }
    assert_accepted(&h);
}

#[test]
fn writes_acknowledged_without_previous_value() {
    // Db::insert / Db::remove answer "written" only: any previous value.
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, Output::Written)
        .ret(2, insert("k", "b"), 1, 3, Output::Written)
        .ret(3, get("k"), 4, 5, value(Some("b")))
        .ret(1, remove("k"), 6, 7, Output::Written)
        .ret(3, get("k"), 8, 9, value(None));
    assert_accepted(&h);
    // ...but they still take effect: a later read must see them.
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, Output::Written)
        .ret(1, insert("k", "b"), 3, 4, Output::Written)
        .ret(3, get("k"), 5, 6, value(Some("a")));
    assert_eq!(assert_rejected(&h), vec![(1, 1), (1, 3), (3, 5)]);
    let mut h = History::new();
    h.ret(1, insert("k", "a"), 1, 2, value(None))
        .ret(1, remove("k"), 3, 4, Output::Written)
        .ret(3, get("k"), 5, 6, value(Some("a")));
    assert_rejected(&h);
}

// ---------------------------------------------------------------- recorder

#[test]
fn recorder_records_completions_unknowns_and_no_effects() {
    let r = HistoryRecorder::new();
    let a = r.invoke(1, insert("k", "a"));
    let b = r.invoke(2, insert("k", "b"));
    let c = r.invoke(3, insert("k", "c"));
    let d = r.invoke(4, get("k"));
    r.complete(a, value(None));
    r.fail_unknown(b);
    r.fail_no_effect(c);
    let h = r.history();
    assert_eq!(h.len(), 3, "the no-effect op is left out");
    assert!(!h.is_truncated());
    let ops = h.operations();
    assert!(matches!(ops[0].outcome, Outcome::Returned { time, .. } if time > ops[0].invoke_time));
    assert_eq!(ops[1].outcome, Outcome::Pending);
    assert_eq!(
        ops[2].outcome,
        Outcome::Pending,
        "in flight at snapshot time"
    );
    assert!(check(&h).is_linearizable());
    r.complete(d, value(Some("c")));
    // "c" was declared without effect, so reading it is a violation.
    assert!(check(&r.history()).is_violation());
}

#[test]
fn recorder_timestamps_follow_real_time() {
    let r = HistoryRecorder::new();
    let a = r.invoke(1, insert("k", "a"));
    r.complete(a, value(None));
    let b = r.invoke(2, get("k"));
    r.complete(b, value(None));
    let h = r.history();
    let ops: &[Operation] = h.operations();
    assert!(ops[0].return_time().unwrap() < ops[1].invoke_time);
    assert!(check(&h).is_violation(), "stale read through the recorder");
}

#[test]
fn recorder_capacity_keeps_a_sound_prefix() {
    let r = HistoryRecorder::with_ops_max(2);
    let a = r.invoke(1, insert("k", "a"));
    let b = r.invoke(2, get("k"));
    let late = r.invoke(3, insert("k", "z"));
    assert!(a.is_recorded() && b.is_recorded());
    assert!(!late.is_recorded());
    // Completions after the cut are ignored: they could depend on
    // unrecorded operations (here the read sees "z").
    r.complete(late, value(Some("a")));
    r.complete(a, value(None));
    r.complete(b, value(Some("z")));
    let h = r.history();
    assert!(h.is_truncated());
    assert_eq!(h.len(), 2);
    assert!(h.operations().iter().all(|o| o.outcome == Outcome::Pending));
    assert!(check(&h).is_linearizable());
}

#[test]
#[should_panic(expected = "completed twice")]
fn recorder_rejects_double_completion() {
    let r = HistoryRecorder::new();
    let a = r.invoke(1, get("k"));
    r.complete(a, value(None));
    r.fail_unknown(a);
}

#[test]
#[should_panic(expected = "not a possible result")]
fn recorder_rejects_mismatched_output() {
    let r = HistoryRecorder::new();
    let a = r.invoke(1, get("k"));
    r.complete(a, Output::Cas(Ok(())));
}

/// A correct store: one mutex around a map. Many threads hammer a few
/// keys through it, recording everything; the history must check out.
#[test]
fn recorder_under_threads_with_a_correct_store() {
    let store = Arc::new(parking_lot::Mutex::new(HashMap::<Vec<u8>, Vec<u8>>::new()));
    let recorder = Arc::new(HistoryRecorder::new());
    let threads: Vec<_> = (0..4u64)
        .map(|client| {
            let store = Arc::clone(&store);
            let recorder = Arc::clone(&recorder);
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let k = format!("k{}", (i + client) % 3);
                    let v = format!("{client}-{i}");
                    let op = match i % 4 {
                        0 => get(&k),
                        1 => insert(&k, &v),
                        2 => cas(&k, Some(&format!("{client}-{}", i - 1)), Some(&v)),
                        _ => remove(&k),
                    };
                    let id = recorder.invoke(client, op.clone());
                    let output = {
                        let mut map = store.lock();
                        match op {
                            Op::Get { key } => Output::Value(map.get(&key).cloned()),
                            Op::Insert { key, value } => Output::Value(map.insert(key, value)),
                            Op::Remove { key } => Output::Value(map.remove(&key)),
                            Op::CompareAndSwap { key, expected, new } => {
                                let current = map.get(&key).cloned();
                                if current == expected {
                                    match new {
                                        Some(n) => map.insert(key, n),
                                        None => map.remove(&key),
                                    };
                                    Output::Cas(Ok(()))
                                } else {
                                    Output::Cas(Err(current))
                                }
                            }
                        }
                    };
                    if i % 50 == 7 {
                        recorder.fail_unknown(id);
                    } else {
                        recorder.complete(id, output);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let h = recorder.history();
    assert_eq!(h.len(), 800);
    let result = check(&h);
    assert!(result.is_linearizable(), "{result}");
}

// ---------------------------------------------------------------- scale

/// A long single-key history of a sequential register with random overlap
/// (each window spans up to ~8 neighbours) and some pending writes; the
/// op at `bad` (if any) reads a value nobody wrote.
fn long_history(ops: u64, bad: Option<u64>) -> History {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(ops);
    let mut current: Option<String> = None;
    let mut h = History::new();
    for i in 0..ops {
        let point = 1_000 + i * 10;
        let invoke = point - rng.gen_range(0..=40);
        let ret = point + rng.gen_range(0..=40);
        if rng.gen_bool(0.5) || bad == Some(i) {
            let seen = if bad == Some(i) {
                Some("never-written")
            } else {
                current.as_deref()
            };
            h.ret(2, get("k"), invoke, ret, value(seen));
        } else {
            let v = format!("v{i}");
            if rng.gen_range(0..50) == 0 {
                h.pend(1, insert("k", &v), invoke);
            } else {
                h.ret(1, insert("k", &v), invoke, ret, value(current.as_deref()));
            }
            current = Some(v);
        }
    }
    h
}

#[test]
fn long_single_key_histories_are_checked_and_shrunk() {
    assert_accepted(&long_history(10_000, None));
    let h = long_history(10_000, Some(6_001));
    let CheckResult::NotLinearizable(counterexample) = check(&h) else {
        panic!("a read of a never-written value must be rejected");
    };
    assert!(counterexample.minimal, "{counterexample}");
    assert_eq!(counterexample.operations.len(), 1, "{counterexample}");
    assert_eq!(
        counterexample.operations[0].outcome,
        Outcome::Returned {
            time: counterexample.operations[0].return_time().unwrap(),
            output: value(Some("never-written"))
        },
        "{counterexample}"
    );
    assert_eq!(counterexample.key_ops_total, 10_000);
}
