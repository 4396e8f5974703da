//! A linearizability checker for key-value histories.
//!
//! The algorithm is Wing & Gong's search with Lowe's improvements (as in
//! Lowe, "Testing for linearizability", 2017, and the Porcupine / Knossos
//! checkers):
//!
//! * **Partitioning.** Every operation touches one key, and linearizability
//!   is compositional (Herlihy & Wing): the history is linearizable iff the
//!   sub-history of every key is. Each key is checked on its own, so the
//!   search is exponential in the concurrency of one key, not of the store.
//! * **Search.** Invocations and returns of a key's operations are put in
//!   one doubly linked list in real-time order. The search walks the list:
//!   at an invocation it tries to linearize that operation now (the model
//!   must accept its output); at a return it has missed the operation's
//!   window and backtracks. Linearized operations are unlinked (dancing
//!   links), so the list always holds what is left.
//! * **Memoisation.** A configuration is (set of linearized operations,
//!   model state); reaching one twice cannot succeed the second time, so
//!   every configuration is cached and never revisited.
//! * **Pending operations** (no answer) get a return at +infinity and accept
//!   any output. An operation linearized after every completed one is not
//!   observed by anybody, so "linearized at the end" is "never took
//!   effect": the search succeeds as soon as every *completed* operation is
//!   linearized. Pending `get`s have no effect and are dropped up front.
//!
//! Memory and time are bounded by [`CheckConfig`]; when a budget runs out
//! the result is [`CheckResult::Unknown`], never a guess.
//!
//! A violation is reported with a *minimal* counterexample for the key: the
//! shortest failing real-time prefix (linearizability is prefix-closed), then
//! greedy relaxations that keep it failing — dropping reads and turning
//! completed writes into pending ones. Both only remove constraints, so what
//! remains is still a genuine contradiction, with nothing irrelevant in it.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::history::{fmt_bytes, History, Op, Operation, Outcome, Output};

/// Limits on one check. Each budget applies to the search of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Search steps (list moves, attempts, backtracks) allowed per key.
    pub steps_max: u64,
    /// Approximate bytes the memoisation cache of one key may use.
    pub cache_bytes_max: usize,
    /// Shrink a violation to a minimal counterexample (costs extra searches).
    pub shrink: bool,
    /// Skip the relaxation phase of shrinking when the failing prefix has
    /// more operations than this (the prefix is still reported).
    pub shrink_ops_max: usize,
    /// Search steps allowed for each search made while shrinking.
    pub shrink_steps_max: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            steps_max: 20_000_000,
            cache_bytes_max: 256 << 20,
            shrink: true,
            shrink_ops_max: 500,
            shrink_steps_max: 1_000_000,
        }
    }
}

/// The verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckResult {
    /// Every key's sub-history has a linearization.
    Linearizable,
    /// Some key's sub-history has none; the counterexample shows why.
    NotLinearizable(Box<Counterexample>),
    /// A budget ran out before the search of some key finished; no violation
    /// was found in the keys that finished.
    Unknown {
        /// The key whose search ran out of budget.
        key: Vec<u8>,
        /// Which budget, and how far the search got.
        reason: String,
    },
}

impl CheckResult {
    /// True for [`CheckResult::Linearizable`].
    #[must_use]
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }

    /// True for [`CheckResult::NotLinearizable`].
    #[must_use]
    pub fn is_violation(&self) -> bool {
        matches!(self, CheckResult::NotLinearizable(_))
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => f.write_str("linearizable"),
            CheckResult::NotLinearizable(counterexample) => {
                write!(f, "NOT linearizable: {counterexample}")
            }
            CheckResult::Unknown { key, reason } => write!(
                f,
                "unknown: the search of key {} gave up: {reason}",
                fmt_bytes(key)
            ),
        }
    }
}

/// Why one key's sub-history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The offending key.
    pub key: Vec<u8>,
    /// A minimal set of operations on `key` that has no linearization, in
    /// invocation order. Pending ones may or may not have taken effect;
    /// some were completed in the real history and relaxed while shrinking.
    pub operations: Vec<Operation>,
    /// How many operations the key had in the whole history.
    pub key_ops_total: usize,
    /// False if shrinking was skipped or ran out of budget, so
    /// `operations` may hold more than the minimum.
    pub minimal: bool,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {}: these {} of its {} operations have no linearization{} \
             (no order that respects real time explains every answer):",
            fmt_bytes(&self.key),
            self.operations.len(),
            self.key_ops_total,
            if self.minimal {
                ""
            } else {
                " (not fully shrunk)"
            }
        )?;
        if self
            .operations
            .iter()
            .any(|o| o.outcome == Outcome::Pending)
        {
            writeln!(
                f,
                "  (an operation shown without answer may have had one: it is not needed here)"
            )?;
        }
        for operation in &self.operations {
            writeln!(f, "  {operation}")?;
        }
        Ok(())
    }
}

/// Checks `history` with the default [`CheckConfig`].
#[must_use]
pub fn check(history: &History) -> CheckResult {
    check_with(history, &CheckConfig::default())
}

/// Checks `history` within the budgets of `config`.
///
/// Keys are checked in byte order; the first key found not linearizable is
/// reported. If no key is found not linearizable but some key ran out of
/// budget, the result is [`CheckResult::Unknown`].
#[must_use]
pub fn check_with(history: &History, config: &CheckConfig) -> CheckResult {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for operation in history.operations() {
        by_key
            .entry(operation.op.key())
            .or_default()
            .push(operation);
    }
    let mut unknown = None;
    for (key, operations) in by_key {
        match check_key(&operations, config.steps_max, config.cache_bytes_max) {
            Search::Linearizable => {}
            Search::NotLinearizable => {
                tracing::debug!(key = %fmt_bytes(key), "key not linearizable, shrinking");
                return CheckResult::NotLinearizable(Box::new(counterexample(
                    key,
                    &operations,
                    config,
                )));
            }
            Search::GaveUp(reason) => {
                if unknown.is_none() {
                    unknown = Some(CheckResult::Unknown {
                        key: key.to_vec(),
                        reason,
                    });
                }
            }
        }
    }
    unknown.unwrap_or(CheckResult::Linearizable)
}

/// Outcome of one search.
#[derive(Debug, PartialEq, Eq)]
enum Search {
    Linearizable,
    NotLinearizable,
    GaveUp(String),
}

/// The model state of one key: 0 is "absent", other values are interned ids.
type State = u32;
const ABSENT: State = 0;

/// What a CAS answered, with interned values.
#[derive(Clone, Copy, Debug)]
enum CasAnswer {
    Swapped,
    Failed { current: State },
    Unknown,
}

/// One operation compiled for the search: values interned, answer folded in.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `get` that read `seen`.
    Read { seen: State },
    /// insert/remove/CAS-with-`new`: writes `new`; `prev` is what it
    /// reported as the previous value (`None`: no answer).
    Write { new: State, prev: Option<State> },
    /// compare-and-swap.
    Cas {
        expected: State,
        new: State,
        answer: CasAnswer,
    },
}

impl Step {
    /// The state after applying this step to `state`, or `None` if the
    /// recorded answer is impossible in `state`.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read { seen } => (seen == state).then_some(state),
            Step::Write { new, prev } => match prev {
                Some(prev) if prev != state => None,
                _ => Some(new),
            },
            Step::Cas {
                expected,
                new,
                answer,
            } => match answer {
                CasAnswer::Swapped => (state == expected).then_some(new),
                CasAnswer::Failed { current } => {
                    (current == state && current != expected).then_some(state)
                }
                CasAnswer::Unknown => Some(if state == expected { new } else { state }),
            },
        }
    }
}

/// A compiled operation with its real-time window.
#[derive(Clone, Copy, Debug)]
struct Call {
    step: Step,
    invoke: u64,
    /// `u64::MAX` for pending operations.
    ret: u64,
    pending: bool,
}

/// Interns the values of one key into small integers.
#[derive(Default)]
struct Interner {
    ids: HashMap<Vec<u8>, State>,
}

impl Interner {
    fn id(&mut self, value: &Option<Vec<u8>>) -> State {
        match value {
            None => ABSENT,
            Some(v) => {
                let next = State::try_from(self.ids.len() + 1).expect("fewer than 2^32 values");
                *self.ids.entry(v.clone()).or_insert(next)
            }
        }
    }
}

/// Compiles the operations of one key. Pending reads are dropped: they
/// have no effect and nobody saw their answer.
fn compile(operations: &[&Operation]) -> Vec<Call> {
    let mut interner = Interner::default();
    let mut calls = Vec::with_capacity(operations.len());
    for operation in operations {
        let (ret, output) = match &operation.outcome {
            Outcome::Returned { time, output } => (*time, Some(output)),
            Outcome::Pending => (u64::MAX, None),
        };
        let prev_of = |interner: &mut Interner, output: Option<&Output>| match output {
            Some(Output::Value(prev)) => Some(interner.id(prev)),
            Some(Output::Cas(_)) => unreachable!("History::push checks output shapes"),
            Some(Output::Written) | None => None,
        };
        let step = match &operation.op {
            Op::Get { .. } => match output {
                Some(Output::Value(seen)) => Step::Read {
                    seen: interner.id(seen),
                },
                Some(Output::Cas(_) | Output::Written) => {
                    unreachable!("History::push checks output shapes")
                }
                None => continue,
            },
            Op::Insert { value, .. } => Step::Write {
                new: interner.id(&Some(value.clone())),
                prev: prev_of(&mut interner, output),
            },
            Op::Remove { .. } => Step::Write {
                new: ABSENT,
                prev: prev_of(&mut interner, output),
            },
            Op::CompareAndSwap { expected, new, .. } => Step::Cas {
                expected: interner.id(expected),
                new: interner.id(new),
                answer: match output {
                    Some(Output::Cas(Ok(()))) => CasAnswer::Swapped,
                    Some(Output::Cas(Err(current))) => CasAnswer::Failed {
                        current: interner.id(current),
                    },
                    Some(Output::Value(_) | Output::Written) => {
                        unreachable!("History::push checks output shapes")
                    }
                    None => CasAnswer::Unknown,
                },
            },
        };
        calls.push(Call {
            step,
            invoke: operation.invoke_time,
            ret,
            pending: output.is_none(),
        });
    }
    calls
}

/// Checks the operations of one key.
fn check_key(operations: &[&Operation], steps_max: u64, cache_bytes_max: usize) -> Search {
    // Pending writes nobody can observe change no verdict (see
    // `drop_unobserved_pending`) but each one doubles the search space.
    let droppable = droppable_pending(operations);
    let mut sorted: Vec<&Operation> = operations
        .iter()
        .zip(droppable)
        .filter_map(|(&o, drop)| (!drop).then_some(o))
        .collect();
    // Invocation order keeps the cache keys of `Linearized` short.
    sorted.sort_by_key(|o| o.invoke_time);
    search(&compile(&sorted), steps_max, cache_bytes_max)
}

/// Sentinel "no node" in the linked list.
const NIL: usize = usize::MAX;

/// Fixed bytes a cache entry costs beyond its bit sets (hash table slot,
/// two boxed slices, watermark, state), used for the memory budget.
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 64;

/// A memoised configuration: which calls are linearized, and the state.
#[derive(PartialEq, Eq, Hash)]
struct CacheKey {
    low: usize,
    completed: Box<[u64]>,
    pending: Box<[u64]>,
    state: State,
}

/// The set of linearized calls, kept so that cache keys stay small on long
/// histories. Completed calls are numbered in invocation order; every one
/// below `low` is linearized, so a key stores `low` and the bits from its
/// word up to the last non-zero word only. That span is bounded by the
/// concurrency of the history, not its length: a call linearized above `low`
/// was invoked before call `low` returned. Pending calls never have to be
/// linearized, so they get their own (usually tiny) bit set instead of
/// holding `low` back forever.
struct Linearized {
    completed: Vec<u64>,
    pending: Vec<u64>,
    completed_total: usize,
    /// First completed call not linearized (`completed_total` if none).
    low: usize,
    /// No completed bit is set in a word above this one.
    high_word: usize,
}

/// Where a call's bit lives in [`Linearized`].
#[derive(Clone, Copy)]
enum Slot {
    Completed(usize),
    Pending(usize),
}

impl Linearized {
    fn new(completed_total: usize, pending_total: usize) -> Self {
        Self {
            completed: vec![0; completed_total.div_ceil(64)],
            pending: vec![0; pending_total.div_ceil(64)],
            completed_total,
            low: 0,
            high_word: 0,
        }
    }

    fn is_set(bits: &[u64], i: usize) -> bool {
        bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, slot: Slot) {
        match slot {
            Slot::Completed(i) => {
                debug_assert!(!Self::is_set(&self.completed, i), "call linearized twice");
                self.completed[i / 64] |= 1 << (i % 64);
                self.high_word = self.high_word.max(i / 64);
                while self.low < self.completed_total && Self::is_set(&self.completed, self.low) {
                    self.low += 1;
                }
            }
            Slot::Pending(i) => self.pending[i / 64] |= 1 << (i % 64),
        }
    }

    fn clear(&mut self, slot: Slot) {
        match slot {
            Slot::Completed(i) => {
                debug_assert!(Self::is_set(&self.completed, i), "undoing an unset call");
                self.completed[i / 64] &= !(1 << (i % 64));
                self.low = self.low.min(i);
            }
            Slot::Pending(i) => self.pending[i / 64] &= !(1 << (i % 64)),
        }
    }

    fn key(&mut self, state: State) -> CacheKey {
        let low_word = self.low / 64;
        while self.high_word > low_word && self.completed[self.high_word] == 0 {
            self.high_word -= 1;
        }
        let completed = if self.low < self.completed_total {
            self.completed[low_word..=self.high_word.max(low_word)].into()
        } else {
            Box::default()
        };
        let pending_len = self
            .pending
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |last| last + 1);
        CacheKey {
            low: self.low,
            completed,
            pending: self.pending[..pending_len].into(),
            state,
        }
    }
}

/// Wing & Gong / Lowe search over the calls of one key, from the empty state.
fn search(calls: &[Call], steps_max: u64, cache_bytes_max: usize) -> Search {
    let n = calls.len();
    let mut slots = Vec::with_capacity(n);
    let (mut completed_total, mut pending_total) = (0, 0);
    for call in calls {
        if call.pending {
            slots.push(Slot::Pending(pending_total));
            pending_total += 1;
        } else {
            slots.push(Slot::Completed(completed_total));
            completed_total += 1;
        }
    }
    if completed_total == 0 {
        return Search::Linearizable;
    }

    // Events in real-time order; at equal times invocations come first, so
    // equal timestamps read as "concurrent".
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, call) in calls.iter().enumerate() {
        assert!(
            call.invoke <= call.ret,
            "call {i} returns before it is invoked"
        );
        events.push((call.invoke, false, i));
        events.push((call.ret, true, i));
    }
    events.sort_unstable();

    // Node 0 is the head; event k is node k + 1.
    let nodes = 2 * n + 1;
    let mut next = vec![NIL; nodes];
    let mut prev = vec![NIL; nodes];
    let mut node_call = vec![0usize; nodes];
    let mut node_is_return = vec![false; nodes];
    let mut invoke_node = vec![NIL; n];
    let mut return_node = vec![NIL; n];
    for (k, &(_, is_return, i)) in events.iter().enumerate() {
        let node = k + 1;
        prev[node] = k;
        next[k] = node;
        node_call[node] = i;
        node_is_return[node] = is_return;
        if is_return {
            return_node[i] = node;
        } else {
            invoke_node[i] = node;
        }
    }

    let mut cache: HashSet<CacheKey> = HashSet::new();
    let mut cache_bytes = 0usize;
    let mut linearized = Linearized::new(completed_total, pending_total);
    let mut state = ABSENT;
    let mut completed_done = 0usize;
    // (call, state before it) for every linearized call, in order.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut entry = next[0];
    let mut steps = 0u64;

    loop {
        if completed_done == completed_total {
            return Search::Linearizable;
        }
        steps += 1;
        if steps > steps_max {
            return Search::GaveUp(format!(
                "step budget of {steps_max} exhausted ({n} operations, {} configurations cached)",
                cache.len()
            ));
        }
        // A completed call's return is still linked (completed_done <
        // completed_total), and pending returns sort after it, so the walk
        // meets a return before it can fall off the end.
        assert_ne!(entry, NIL, "the search walked past every return");
        let i = node_call[entry];
        if node_is_return[entry] {
            // Call i had to be linearized by now: undo the latest choice.
            let Some((undo, before)) = stack.pop() else {
                return Search::NotLinearizable;
            };
            linearized.clear(slots[undo]);
            state = before;
            // Relink in reverse order of unlinking.
            relink(&mut next, &mut prev, return_node[undo]);
            relink(&mut next, &mut prev, invoke_node[undo]);
            if !calls[undo].pending {
                completed_done -= 1;
            }
            entry = next[invoke_node[undo]];
            continue;
        }
        if let Some(after) = calls[i].step.apply(state) {
            linearized.set(slots[i]);
            let key = linearized.key(after);
            if !cache.contains(&key) {
                let key_bytes =
                    (key.completed.len() + key.pending.len()) * 8 + CACHE_ENTRY_OVERHEAD_BYTES;
                cache_bytes += key_bytes;
                if cache_bytes > cache_bytes_max {
                    return Search::GaveUp(format!(
                        "cache budget of {cache_bytes_max} bytes exhausted \
                         ({n} operations, {} configurations cached)",
                        cache.len()
                    ));
                }
                cache.insert(key);
                stack.push((i, state));
                state = after;
                unlink(&mut next, &mut prev, invoke_node[i]);
                unlink(&mut next, &mut prev, return_node[i]);
                if !calls[i].pending {
                    completed_done += 1;
                }
                entry = next[0];
                continue;
            }
            linearized.clear(slots[i]);
        }
        entry = next[entry];
    }
}

fn unlink(next: &mut [usize], prev: &mut [usize], node: usize) {
    let (p, n) = (prev[node], next[node]);
    next[p] = n;
    if n != NIL {
        prev[n] = p;
    }
}

fn relink(next: &mut [usize], prev: &mut [usize], node: usize) {
    let (p, n) = (prev[node], next[node]);
    next[p] = node;
    if n != NIL {
        prev[n] = node;
    }
}

/// Shrinks a failing key history to a minimal counterexample.
fn counterexample(key: &[u8], operations: &[&Operation], config: &CheckConfig) -> Counterexample {
    let mut ops: Vec<Operation> = operations.iter().map(|&o| o.clone()).collect();
    ops.sort_by_key(|o| o.invoke_time);
    let total = ops.len();
    if !config.shrink {
        return Counterexample {
            key: key.to_vec(),
            operations: ops,
            key_ops_total: total,
            minimal: false,
        };
    }
    let fails = |candidate: &[Operation]| {
        let refs: Vec<&Operation> = candidate.iter().collect();
        check_key(&refs, config.shrink_steps_max, config.cache_bytes_max) == Search::NotLinearizable
    };

    // Phase 1: the shortest failing real-time prefix. Failing is monotone
    // in the prefix length, so binary search over the invocations.
    let (mut low, mut high) = (1usize, total);
    while low < high {
        let mid = (low + high) / 2;
        if fails(&prefix(&ops, mid)) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    let mut shrunk = if fails(&prefix(&ops, low)) {
        prefix(&ops, low)
    } else {
        // Only possible if a shrinking search gave up: keep everything.
        ops.clone()
    };
    drop_unobserved_pending(&mut shrunk);

    // Phase 2a: relax whole chunks at once, halving the chunk size (as in
    // delta debugging), so long prefixes shrink with few searches. Levels
    // with more than `CHUNKS_MAX` chunks are left to the per-operation pass.
    const CHUNKS_MAX: usize = 64;
    let mut chunk = shrunk.len() / 2;
    while chunk >= 1 && shrunk.len().div_ceil(chunk) <= CHUNKS_MAX {
        let mut end = shrunk.len();
        while end > 0 {
            let start = end.saturating_sub(chunk);
            if let Some(relaxed) = relax_range(&shrunk, start..end) {
                if fails(&relaxed) {
                    shrunk = relaxed;
                }
            }
            end = start.min(shrunk.len());
        }
        chunk /= 2;
    }
    if shrunk.len() > config.shrink_ops_max {
        return Counterexample {
            key: key.to_vec(),
            operations: shrunk,
            key_ops_total: total,
            minimal: false,
        };
    }

    // Phase 2: relax one operation at a time and keep the relaxation if the
    // history still fails. One pass suffices: relaxing more operations only
    // makes histories easier to linearize, so an operation whose relaxation
    // was refused would still be refused after later relaxations. Latest
    // first, because later operations are the ones whose relaxation makes
    // earlier pending writes unobserved.
    let mut minimal = true;
    let mut i = shrunk.len();
    while i > 0 {
        i -= 1;
        if i >= shrunk.len() {
            // Dropping unobserved writes shortened the list past i.
            continue;
        }
        let Some(relaxed) = relax(&shrunk, i) else {
            continue;
        };
        let refs: Vec<&Operation> = relaxed.iter().collect();
        match check_key(&refs, config.shrink_steps_max, config.cache_bytes_max) {
            Search::NotLinearizable => shrunk = relaxed,
            Search::Linearizable => {}
            Search::GaveUp(_) => minimal = false,
        }
    }
    Counterexample {
        key: key.to_vec(),
        operations: shrunk,
        key_ops_total: total,
        minimal,
    }
}

/// The real-time prefix of `ops` (sorted by invocation) that ends right
/// before the invocation of `ops[len]`: the first `len` operations, where
/// those that had not returned by then become pending.
fn prefix(ops: &[Operation], len: usize) -> Vec<Operation> {
    let cut = ops.get(len).map_or(u64::MAX, |o| o.invoke_time);
    ops[..len]
        .iter()
        .filter(|o| o.invoke_time < cut || len == ops.len())
        .map(|o| match o.outcome {
            Outcome::Returned { time, .. } if time >= cut => Operation {
                outcome: Outcome::Pending,
                ..o.clone()
            },
            _ => o.clone(),
        })
        .collect()
}

/// `ops` with operation `i` relaxed, if it can be: an operation without
/// effect (a read, a failed CAS) is dropped; a completed operation with an
/// effect becomes pending. Then pending operations that can no longer matter
/// are dropped ([`drop_unobserved_pending`]). All of this only removes
/// constraints, so a failing result is still a genuine counterexample.
fn relax(ops: &[Operation], i: usize) -> Option<Vec<Operation>> {
    relax_range(ops, i..i + 1)
}

/// [`relax`] applied to every operation in `range` at once; `None` if
/// none of them can be relaxed.
fn relax_range(ops: &[Operation], range: std::ops::Range<usize>) -> Option<Vec<Operation>> {
    let mut relaxed = Vec::with_capacity(ops.len());
    let mut any = false;
    for (i, operation) in ops.iter().enumerate() {
        if !range.contains(&i) {
            relaxed.push(operation.clone());
            continue;
        }
        let effect_free = matches!(
            (&operation.op, &operation.outcome),
            (Op::Get { .. }, _)
                | (
                    Op::CompareAndSwap { .. },
                    Outcome::Returned {
                        output: Output::Cas(Err(_)),
                        ..
                    },
                )
        );
        if effect_free {
            any = true;
        } else if matches!(operation.outcome, Outcome::Returned { .. }) {
            any = true;
            relaxed.push(Operation {
                outcome: Outcome::Pending,
                ..operation.clone()
            });
        } else {
            relaxed.push(operation.clone());
        }
    }
    if !any {
        return None;
    }
    drop_unobserved_pending(&mut relaxed);
    Some(relaxed)
}

/// The value a write leaves in the key when it takes effect.
fn written(op: &Op) -> Option<Option<&[u8]>> {
    match op {
        Op::Get { .. } => None,
        Op::Insert { value, .. } => Some(Some(value)),
        Op::Remove { .. } => Some(None),
        Op::CompareAndSwap { new, .. } => Some(new.as_deref()),
    }
}

/// The value the key must hold for `operation` to be linearized with its
/// recorded answer, if any: what a completed operation saw, or what a
/// pending CAS expects to swap. A write acknowledged without a previous
/// value requires nothing.
fn required(operation: &Operation) -> Option<Option<&[u8]>> {
    match (&operation.op, &operation.outcome) {
        (
            _,
            Outcome::Returned {
                output: Output::Written,
                ..
            },
        ) => None,
        (_, Outcome::Returned { output, .. }) => Some(match output {
            Output::Value(v) => v.as_deref(),
            Output::Cas(Ok(())) => match &operation.op {
                Op::CompareAndSwap { expected, .. } => expected.as_deref(),
                _ => unreachable!("History::push checks output shapes"),
            },
            Output::Cas(Err(current)) => current.as_deref(),
            Output::Written => unreachable!("matched above"),
        }),
        (Op::CompareAndSwap { expected, .. }, Outcome::Pending) => Some(expected.as_deref()),
        (_, Outcome::Pending) => None,
    }
}

/// Drops pending reads (no effect, no answer) and the largest set `Q` of
/// pending writes that nobody outside `Q` can observe: no completed
/// operation that may be linearized after a write of `Q` (it returned at or
/// after the write's invocation), and no pending CAS outside `Q`, requires
/// the key to hold the value that write leaves.
///
/// This keeps a failing history failing, so the smaller history is still a
/// genuine counterexample. Take any linearization of the history with `Q`.
/// After an operation of `Q` takes effect the key holds a value that no
/// operation outside `Q` placed there accepts: completed ones would observe
/// it, pending CASes outside `Q` do not expect it and do nothing. So the
/// next effect from outside `Q` is a pending insert or remove, or one
/// acknowledged without a previous value, which overwrites the key
/// whatever it held. Deleting `Q`'s operations, and
/// declaring the pending CASes in those stretches never to have happened,
/// leaves a linearization of the history without `Q`.
fn drop_unobserved_pending(ops: &mut Vec<Operation>) {
    let mut keep = droppable_pending(ops).into_iter().map(|drop| !drop);
    ops.retain(|_| keep.next().unwrap_or(true));
}

/// Marks what [`drop_unobserved_pending`] drops.
fn droppable_pending<O: Borrow<Operation>>(ops: &[O]) -> Vec<bool> {
    // Latest return among completed operations requiring each value: they
    // may follow (and so observe) writes invoked at or before it.
    let mut latest_requirer: HashMap<Option<&[u8]>, u64> = HashMap::new();
    for operation in ops.iter().map(Borrow::borrow) {
        if let (Some(value), Some(ret)) = (required(operation), operation.return_time()) {
            let latest = latest_requirer.entry(value).or_insert(ret);
            *latest = (*latest).max(ret);
        }
    }
    let mut in_q: Vec<bool> = ops
        .iter()
        .map(|o| {
            let o: &Operation = o.borrow();
            o.outcome == Outcome::Pending && written(&o.op).is_some()
        })
        .collect();
    // Pending CASes outside `Q`, by expected value: they may follow any
    // pending write, since a pending write never returns.
    let mut outside_cas_expecting: HashMap<Option<&[u8]>, usize> = HashMap::new();
    loop {
        let mut changed = false;
        for (i, operation) in ops.iter().map(Borrow::borrow).enumerate() {
            if !in_q[i] {
                continue;
            }
            let value = written(&operation.op).expect("Q holds writes only");
            let observed = latest_requirer
                .get(&value)
                .is_some_and(|&ret| ret >= operation.invoke_time)
                || outside_cas_expecting.get(&value).is_some_and(|&n| n > 0);
            if observed {
                in_q[i] = false;
                changed = true;
                if let Some(expected) = required(operation) {
                    *outside_cas_expecting.entry(expected).or_insert(0) += 1;
                }
            }
        }
        if !changed {
            break;
        }
    }
    ops.iter()
        .zip(in_q)
        .map(|(o, q)| {
            let o: &Operation = o.borrow();
            let pending_read = o.outcome == Outcome::Pending && matches!(o.op, Op::Get { .. });
            q || pending_read
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> Vec<u8> {
        b"k".to_vec()
    }

    fn v(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn prefix_turns_late_returns_into_pending_and_drops_later_invocations() {
        let mut h = History::new();
        h.push_returned(1, Op::Get { key: k() }, 1, 10, Output::Value(None));
        h.push_returned(2, Op::Get { key: k() }, 2, 3, Output::Value(None));
        h.push_returned(3, Op::Get { key: k() }, 5, 6, Output::Value(None));
        let ops = h.operations().to_vec();
        let p = prefix(&ops, 2);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].outcome,
            Outcome::Pending,
            "returned at 10, after the cut at 5"
        );
        assert_eq!(p[1].return_time(), Some(3));
        assert_eq!(prefix(&ops, 3), ops);
    }

    #[test]
    fn relax_drops_reads_and_failed_cas_and_pends_writes() {
        let mut h = History::new();
        h.push_returned(1, Op::Get { key: k() }, 1, 2, Output::Value(None));
        h.push_returned(
            1,
            Op::CompareAndSwap {
                key: k(),
                expected: v("a"),
                new: v("b"),
            },
            3,
            4,
            Output::Cas(Err(None)),
        );
        h.push_returned(
            1,
            Op::Insert {
                key: k(),
                value: b"a".to_vec(),
            },
            5,
            6,
            Output::Value(None),
        );
        h.push_pending(1, Op::Remove { key: k() }, 7);
        h.push_returned(2, Op::Get { key: k() }, 8, 9, Output::Value(v("a")));
        h.push_returned(2, Op::Get { key: k() }, 10, 11, Output::Value(None));
        let ops = h.operations().to_vec();
        assert_eq!(relax(&ops, 0).map(|r| r.len()), Some(5));
        assert_eq!(relax(&ops, 1).map(|r| r.len()), Some(5));
        let pended = relax(&ops, 2).expect("a completed write can be pended");
        assert_eq!(
            pended.len(),
            6,
            "the get at 8 observes \"a\": keep its write"
        );
        assert_eq!(pended[2].outcome, Outcome::Pending);
        assert_eq!(relax(&ops, 3), None, "a pending write is already relaxed");
        let without_reader = relax(&ops, 4).expect("a read can be dropped");
        assert_eq!(
            relax(&without_reader, 2).map(|r| r.len()),
            Some(4),
            "nobody observes \"a\" any more: its write goes"
        );
        let without_late_read = relax(&ops, 5).expect("a read can be dropped");
        assert_eq!(
            without_late_read.len(),
            4,
            "the pending remove goes too: the reads of None returned before it"
        );
        assert!(without_late_read
            .iter()
            .all(|o| o.outcome != Outcome::Pending));
    }

    #[test]
    fn unobserved_pending_writes_go_together_observed_ones_stay() {
        let insert = |value: &str| Op::Insert {
            key: k(),
            value: value.as_bytes().to_vec(),
        };
        let cas = |expected: &str, new: &str| Op::CompareAndSwap {
            key: k(),
            expected: v(expected),
            new: v(new),
        };
        // Pending writes of x and y and a pending CAS y -> z only observe
        // each other: all go. The pending w is read by a later get: stays.
        let mut h = History::new();
        h.push_pending(1, insert("x"), 1);
        h.push_pending(2, insert("y"), 2);
        h.push_pending(3, cas("y", "z"), 3);
        h.push_pending(4, insert("w"), 4);
        h.push_pending(5, Op::Get { key: k() }, 5);
        h.push_returned(6, Op::Get { key: k() }, 6, 7, Output::Value(v("w")));
        let mut ops = h.operations().to_vec();
        drop_unobserved_pending(&mut ops);
        let clients: Vec<u64> = ops.iter().map(|o| o.client).collect();
        assert_eq!(clients, vec![4, 6]);
        // A completed read of z keeps the CAS that writes z; that CAS, now
        // outside Q, expects y, which keeps the insert of y.
        let mut h = History::new();
        h.push_pending(2, insert("y"), 2);
        h.push_pending(3, cas("y", "z"), 3);
        h.push_returned(6, Op::Get { key: k() }, 6, 7, Output::Value(v("z")));
        let mut ops = h.operations().to_vec();
        drop_unobserved_pending(&mut ops);
        assert_eq!(ops.len(), 3);
        // A read that returned before a pending write was invoked cannot
        // observe it.
        let mut h = History::new();
        h.push_returned(6, Op::Get { key: k() }, 1, 2, Output::Value(v("y")));
        h.push_pending(2, insert("y"), 3);
        let mut ops = h.operations().to_vec();
        drop_unobserved_pending(&mut ops);
        assert_eq!(ops.len(), 1);
    }

    #[test]
    fn cas_step_semantics() {
        let cas = |answer| Step::Cas {
            expected: 1,
            new: 2,
            answer,
        };
        assert_eq!(cas(CasAnswer::Swapped).apply(1), Some(2));
        assert_eq!(cas(CasAnswer::Swapped).apply(3), None);
        assert_eq!(cas(CasAnswer::Failed { current: 3 }).apply(3), Some(3));
        assert_eq!(cas(CasAnswer::Failed { current: 3 }).apply(1), None);
        assert_eq!(
            cas(CasAnswer::Failed { current: 1 }).apply(1),
            None,
            "a CAS cannot fail when the current value is the expected one"
        );
        assert_eq!(cas(CasAnswer::Unknown).apply(1), Some(2));
        assert_eq!(cas(CasAnswer::Unknown).apply(5), Some(5));
    }

    #[test]
    fn step_budget_gives_unknown() {
        // Many concurrent inserts that each claim the key was absent before
        // them: only one can be first, but the search must try each.
        let mut h = History::new();
        for c in 0..14u64 {
            h.push_returned(
                c,
                Op::Insert {
                    key: k(),
                    value: c.to_le_bytes().to_vec(),
                },
                0,
                100,
                Output::Value(None),
            );
        }
        let config = CheckConfig {
            steps_max: 50,
            ..CheckConfig::default()
        };
        let result = check_with(&h, &config);
        assert!(
            matches!(result, CheckResult::Unknown { ref key, .. } if key == b"k"),
            "{result}"
        );
        let config = CheckConfig {
            cache_bytes_max: 10 * CACHE_ENTRY_OVERHEAD_BYTES,
            ..CheckConfig::default()
        };
        let result = check_with(&h, &config);
        assert!(
            matches!(result, CheckResult::Unknown { ref reason, .. } if reason.contains("cache")),
            "{result}"
        );
    }
}
