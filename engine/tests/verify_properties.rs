//! Property tests of the linearizability checker:
//!
//! * a history produced by a sequential model, with each operation's window
//!   stretched around its linearization point (so windows overlap at random)
//!   and some operations left pending, is always accepted;
//! * a sequential history with one output changed to a value no one ever
//!   wrote is always rejected, and the counterexample names that operation;
//! * on tiny random histories the checker agrees with a brute-force search
//!   over every order and every choice of pending operations.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use tandem::verify::{check, CheckResult, History, Op, Operation, Outcome, Output};

/// One generated operation on a tiny key and value space.
#[derive(Clone, Debug)]
enum GenOp {
    Get(u8),
    Insert(u8, u8),
    Remove(u8),
    Cas(u8, Option<u8>, Option<u8>),
}

fn gen_op(keys: u8, values: u8) -> impl Strategy<Value = GenOp> {
    let key = 0..keys;
    let value = 0..values;
    let maybe = proptest::option::of(0..values);
    prop_oneof![
        key.clone().prop_map(GenOp::Get),
        (key.clone(), value).prop_map(|(k, v)| GenOp::Insert(k, v)),
        key.clone().prop_map(GenOp::Remove),
        (key, maybe.clone(), maybe).prop_map(|(k, e, n)| GenOp::Cas(k, e, n)),
    ]
}

fn key_bytes(k: u8) -> Vec<u8> {
    vec![b'k', b'0' + k]
}

fn value_bytes(v: u8) -> Vec<u8> {
    vec![b'v', b'0' + v]
}

fn to_op(g: &GenOp) -> Op {
    match *g {
        GenOp::Get(k) => Op::Get { key: key_bytes(k) },
        GenOp::Insert(k, v) => Op::Insert {
            key: key_bytes(k),
            value: value_bytes(v),
        },
        GenOp::Remove(k) => Op::Remove { key: key_bytes(k) },
        GenOp::Cas(k, e, n) => Op::CompareAndSwap {
            key: key_bytes(k),
            expected: e.map(value_bytes),
            new: n.map(value_bytes),
        },
    }
}

/// A sequential key-value store: the specification.
#[derive(Default)]
struct Model {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn apply(&mut self, op: &Op) -> Output {
        match op {
            Op::Get { key } => Output::Value(self.map.get(key).cloned()),
            Op::Insert { key, value } => Output::Value(self.map.insert(key.clone(), value.clone())),
            Op::Remove { key } => Output::Value(self.map.remove(key)),
            Op::CompareAndSwap { key, expected, new } => {
                let current = self.map.get(key).cloned();
                if current != *expected {
                    return Output::Cas(Err(current));
                }
                match new {
                    Some(n) => self.map.insert(key.clone(), n.clone()),
                    None => self.map.remove(key),
                };
                Output::Cas(Ok(()))
            }
        }
    }
}

/// How a generated operation ends.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Completed,
    PendingApplied,
    PendingNotApplied,
}

fn gen_fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        8 => Just(Fate::Completed),
        1 => Just(Fate::PendingApplied),
        1 => Just(Fate::PendingNotApplied),
    ]
}

/// Gap between consecutive linearization points.
const POINT_GAP: u64 = 100;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn histories_of_a_sequential_model_with_random_overlap_are_accepted(
        calls in prop::collection::vec(
            (gen_op(3, 4), 0..=250u64, 0..=250u64, gen_fate()),
            1..60,
        )
    ) {
        // Operation i takes effect at point i * POINT_GAP (+ an offset so the
        // stretch below never underflows); its window is stretched up to
        // 2.5 gaps either way, so it overlaps up to five neighbours.
        let mut model = Model::default();
        let mut history = History::new();
        for (i, (g, lead, lag, fate)) in calls.iter().enumerate() {
            let op = to_op(g);
            let point = 1_000 + i as u64 * POINT_GAP;
            let invoke = point - lead;
            match fate {
                Fate::Completed => {
                    let mut output = model.apply(&op);
                    if *lead % 3 == 0 && matches!(op, Op::Insert { .. } | Op::Remove { .. }) {
                        // Acknowledged without the previous value, as `Db` does.
                        output = Output::Written;
                    }
                    history.push_returned(i as u64, op, invoke, point + lag, output);
                }
                Fate::PendingApplied => {
                    model.apply(&op);
                    history.push_pending(i as u64, op, invoke);
                }
                Fate::PendingNotApplied => history.push_pending(i as u64, op, invoke),
            }
        }
        let result = check(&history);
        prop_assert!(result.is_linearizable(), "{}", result);
    }

    #[test]
    fn a_sequential_history_with_one_impossible_output_is_rejected(
        ops in prop::collection::vec(gen_op(2, 3), 1..50),
        victim in any::<Index>(),
    ) {
        let mut model = Model::default();
        let mut history = History::new();
        let victim = victim.index(ops.len());
        let impossible = Some(b"never-written".to_vec());
        for (i, g) in ops.iter().enumerate() {
            let op = to_op(g);
            let mut output = model.apply(&op);
            if i == victim {
                output = match output {
                    Output::Value(_) | Output::Written => Output::Value(impossible.clone()),
                    Output::Cas(_) => Output::Cas(Err(impossible.clone())),
                };
            }
            let t = i as u64 * 10;
            history.push_returned(i as u64, op, t, t + 5, output);
        }
        let result = check(&history);
        let CheckResult::NotLinearizable(counterexample) = result else {
            return Err(TestCaseError::fail(format!("mutated op {victim} accepted: {result}")));
        };
        // Without the mutation the history is linearizable, so any genuine
        // counterexample must contain the mutated operation, completed.
        prop_assert!(
            counterexample.operations.iter().any(|o| o.client == victim as u64
                && matches!(o.outcome, Outcome::Returned { .. })),
            "{}", counterexample
        );
        prop_assert!(counterexample.minimal, "{}", counterexample);
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_histories(
        calls in prop::collection::vec(
            (gen_op(1, 2), 0..12u64, 0..6u64, 0..10u8, gen_output()),
            1..7,
        )
    ) {
        let mut history = History::new();
        for (i, (g, invoke, length, pending, output)) in calls.iter().enumerate() {
            let op = to_op(g);
            if *pending == 0 {
                history.push_pending(i as u64, op, *invoke);
            } else {
                let output = fit_output(&op, output);
                history.push_returned(i as u64, op, *invoke, invoke + length, output);
            }
        }
        let expected = brute_force(history.operations());
        let result = check(&history);
        prop_assert!(
            !matches!(result, CheckResult::Unknown { .. }),
            "budget exhausted on a tiny history: {}", result
        );
        prop_assert_eq!(result.is_linearizable(), expected, "{}", result);
        if let CheckResult::NotLinearizable(counterexample) = &result {
            // The counterexample must itself be non-linearizable.
            prop_assert!(!brute_force(&counterexample.operations), "{}", counterexample);
        }
    }
}

/// A random answer: a value (or absent) and a CAS flavour; made to fit the
/// operation by [`fit_output`].
fn gen_output() -> impl Strategy<Value = (Option<u8>, bool)> {
    (proptest::option::of(0..2u8), any::<bool>())
}

fn fit_output(op: &Op, &(v, ok): &(Option<u8>, bool)) -> Output {
    let v = v.map(value_bytes);
    match op {
        Op::CompareAndSwap { .. } if ok => Output::Cas(Ok(())),
        Op::CompareAndSwap { .. } => Output::Cas(Err(v)),
        Op::Insert { .. } | Op::Remove { .. } if ok && v.is_none() => Output::Written,
        _ => Output::Value(v),
    }
}

/// Linearizable iff some subset of the pending operations, together with all
/// completed ones, has an order respecting real time in which the model
/// produces every completed output.
fn brute_force(ops: &[Operation]) -> bool {
    let pending: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].outcome == Outcome::Pending)
        .collect();
    (0u32..1 << pending.len()).any(|mask| {
        let chosen: Vec<usize> = (0..ops.len())
            .filter(|i| match pending.iter().position(|p| p == i) {
                Some(bit) => mask & (1 << bit) != 0,
                None => true,
            })
            .collect();
        let mut order = Vec::new();
        let mut used = vec![false; ops.len()];
        permute(ops, &chosen, &mut used, &mut order)
    })
}

fn precedes(a: &Operation, b: &Operation) -> bool {
    a.return_time().is_some_and(|r| r < b.invoke_time)
}

fn permute(ops: &[Operation], chosen: &[usize], used: &mut [bool], order: &mut Vec<usize>) -> bool {
    if order.len() == chosen.len() {
        let mut model = Model::default();
        return order.iter().all(|&i| {
            let output = model.apply(&ops[i].op);
            match &ops[i].outcome {
                Outcome::Returned { output: seen, .. } => {
                    *seen == Output::Written || *seen == output
                }
                Outcome::Pending => true,
            }
        });
    }
    for &i in chosen {
        if used[i] {
            continue;
        }
        // Real time: everything that precedes i must already be placed, and
        // nothing omitted (a pending op not chosen) constrains anything.
        let ready = chosen
            .iter()
            .all(|&j| j == i || used[j] || !precedes(&ops[j], &ops[i]));
        if !ready {
            continue;
        }
        used[i] = true;
        order.push(i);
        if permute(ops, chosen, used, order) {
            return true;
        }
        order.pop();
        used[i] = false;
    }
    false
}
