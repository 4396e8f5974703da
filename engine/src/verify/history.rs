//! Client histories: what each client asked the store, when, and what it got back.
//!
//! A history is the raw material of the linearizability checker
//! ([`crate::verify::check`]). Clients record into a thread-safe
//! [`HistoryRecorder`] while they run; tests and the simulator may also build a
//! [`History`] directly with their own (simulated) timestamps.
//!
//! Time is a `u64` that only needs to be consistent with real time: operation
//! `a` *precedes* `b` when `a` returned strictly before `b` was invoked. Equal
//! timestamps mean "concurrent", which is the conservative reading (it can
//! only hide a violation, never invent one).

use std::fmt;

use parking_lot::Mutex;

/// The operations a client can run against the key-value store.
///
/// Semantics follow sled: `insert` and `remove` return the previous value;
/// `compare_and_swap` succeeds when the current value equals `expected` (with
/// `None` meaning "absent") and then sets `new` (`None` deletes the key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the value of `key`.
    Get {
        /// The key read.
        key: Vec<u8>,
    },
    /// Set `key` to `value`; returns the previous value.
    Insert {
        /// The key written.
        key: Vec<u8>,
        /// The value written.
        value: Vec<u8>,
    },
    /// Delete `key`; returns the previous value.
    Remove {
        /// The key deleted.
        key: Vec<u8>,
    },
    /// Atomically replace `expected` by `new`.
    CompareAndSwap {
        /// The key compared and swapped.
        key: Vec<u8>,
        /// The value the key must hold (`None`: absent) for the swap to happen.
        expected: Option<Vec<u8>>,
        /// The value to store on success (`None`: delete the key).
        new: Option<Vec<u8>>,
    },
}

impl Op {
    /// The single key this operation touches. The checker partitions a
    /// history by this key (linearizability is compositional per object).
    #[must_use]
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get { key }
            | Op::Insert { key, .. }
            | Op::Remove { key }
            | Op::CompareAndSwap { key, .. } => key,
        }
    }

    /// True if `output` is a possible shape of result for this operation
    /// (`Output::Value` for get/insert/remove, `Output::Written` for
    /// insert/remove, `Output::Cas` for CAS).
    #[must_use]
    pub fn accepts(&self, output: &Output) -> bool {
        matches!(
            (self, output),
            (Op::CompareAndSwap { .. }, Output::Cas(_))
                | (
                    Op::Get { .. } | Op::Insert { .. } | Op::Remove { .. },
                    Output::Value(_)
                )
                | (Op::Insert { .. } | Op::Remove { .. }, Output::Written)
        )
    }
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// `get`: the value read; `insert` / `remove`: the previous value.
    Value(Option<Vec<u8>>),
    /// `compare_and_swap`: `Ok(())` if it swapped, `Err(current)` with the
    /// value found otherwise.
    Cas(Result<(), Option<Vec<u8>>>),
    /// `insert` / `remove` acknowledged without reporting the previous
    /// value (as `tandem::Db::insert` does): it took effect, and its answer
    /// constrains nothing else.
    Written,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The client got an answer at `time`.
    Returned {
        /// When the answer arrived (same clock as the invocation).
        time: u64,
        /// The answer.
        output: Output,
    },
    /// No answer: the client crashed, timed out, or the server lost track of
    /// the request. The operation may or may not have taken effect, at any
    /// moment after its invocation.
    Pending,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// The client (process, thread) that ran it; only used in reports.
    pub client: u64,
    /// What was asked.
    pub op: Op,
    /// When it was invoked.
    pub invoke_time: u64,
    /// How it ended. Invariant: a returned time is `>= invoke_time`, and the
    /// output has the shape the operation accepts ([`Op::accepts`]).
    pub outcome: Outcome,
}

impl Operation {
    /// The return time, or `None` for a pending operation.
    #[must_use]
    pub fn return_time(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Returned { time, .. } => Some(time),
            Outcome::Pending => None,
        }
    }

    /// Panics if the operation breaks the invariants documented on the fields.
    fn must_be_well_formed(&self) {
        if let Outcome::Returned { time, output } = &self.outcome {
            assert!(
                *time >= self.invoke_time,
                "operation returned at {time} before its invocation at {}: {self}",
                self.invoke_time
            );
            assert!(
                self.op.accepts(output),
                "output {output:?} is not a possible result of {:?}",
                self.op
            );
        }
    }
}

/// Formats bytes for humans: printable ASCII as a quoted string, anything
/// else as hex; long values are cut so reports stay readable.
pub(crate) fn fmt_bytes(bytes: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 32;
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES_MAX)];
    let mut out = if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}")
    };
    if bytes.len() > SHOWN_BYTES_MAX {
        out.push_str(&format!("..({} bytes)", bytes.len()));
    }
    out
}

fn fmt_value(value: &Option<Vec<u8>>) -> String {
    match value {
        Some(v) => fmt_bytes(v),
        None => "None".to_owned(),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get { key } => write!(f, "get({})", fmt_bytes(key)),
            Op::Insert { key, value } => {
                write!(f, "insert({}, {})", fmt_bytes(key), fmt_bytes(value))
            }
            Op::Remove { key } => write!(f, "remove({})", fmt_bytes(key)),
            Op::CompareAndSwap { key, expected, new } => write!(
                f,
                "cas({}, {} -> {})",
                fmt_bytes(key),
                fmt_value(expected),
                fmt_value(new)
            ),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Value(v) => f.write_str(&fmt_value(v)),
            Output::Cas(Ok(())) => f.write_str("Ok"),
            Output::Cas(Err(current)) => write!(f, "Err(current: {})", fmt_value(current)),
            Output::Written => f.write_str("written"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Returned { time, output } => write!(
                f,
                "[{:>6} ..{:>6}] client {}: {} -> {}",
                self.invoke_time, time, self.client, self.op, output
            ),
            Outcome::Pending => write!(
                f,
                "[{:>6} ..   ...] client {}: {} -> no answer (may or may not have taken effect)",
                self.invoke_time, self.client, self.op
            ),
        }
    }
}

/// A finished (or snapshotted) client history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Operation>,
    truncated: bool,
}

impl History {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one operation.
    ///
    /// # Panics
    /// If the operation returned before it was invoked, or its output has
    /// the wrong shape for the operation (e.g. a CAS result for a `get`):
    /// both are bugs of the code that builds the history.
    pub fn push(&mut self, operation: Operation) {
        operation.must_be_well_formed();
        self.ops.push(operation);
    }

    /// Appends an operation that returned `output` at `return_time`.
    ///
    /// # Panics
    /// As [`History::push`].
    pub fn push_returned(
        &mut self,
        client: u64,
        op: Op,
        invoke_time: u64,
        return_time: u64,
        output: Output,
    ) {
        self.push(Operation {
            client,
            op,
            invoke_time,
            outcome: Outcome::Returned {
                time: return_time,
                output,
            },
        });
    }

    /// Appends an operation that never returned (it may or may not have taken effect).
    pub fn push_pending(&mut self, client: u64, op: Op, invoke_time: u64) {
        self.push(Operation {
            client,
            op,
            invoke_time,
            outcome: Outcome::Pending,
        });
    }

    /// The operations, in the order they were added.
    #[must_use]
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// Number of operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if there are no operations.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// True if the recorder that produced this history hit its capacity and
    /// kept only a prefix (see [`HistoryRecorder::with_ops_max`]).
    #[must_use]
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl FromIterator<Operation> for History {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        let mut history = History::new();
        for operation in iter {
            history.push(operation);
        }
        history
    }
}

/// Identifies an operation recorded by a [`HistoryRecorder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(u64);

impl OpId {
    /// The id handed out once the recorder is full: completing it is a no-op.
    const NOT_RECORDED: OpId = OpId(u64::MAX);

    /// False if the recorder was full when the operation was invoked and did
    /// not record it.
    #[must_use]
    pub fn is_recorded(self) -> bool {
        self != Self::NOT_RECORDED
    }
}

/// The state of one operation inside the recorder.
#[derive(Debug)]
enum Slot {
    /// Invoked, no answer yet.
    InFlight {
        client: u64,
        op: Op,
        invoke_time: u64,
    },
    /// Returned, or declared unknown ([`Outcome::Pending`] for good).
    Done(Operation),
    /// Certainly had no effect: left out of the history.
    NoEffect,
}

#[derive(Debug)]
struct RecorderInner {
    /// Logical clock: every invocation and completion takes the next tick,
    /// so the order of ticks is consistent with real time across threads.
    clock: u64,
    slots: Vec<Slot>,
    ops_max: usize,
    /// Set when the capacity was reached: the history is the prefix of
    /// events up to this tick, and later completions are ignored.
    full_at: Option<u64>,
}

/// A thread-safe recorder of client operations.
///
/// Every client thread calls [`invoke`](Self::invoke) right before sending a
/// request and [`complete`](Self::complete) right after the answer arrives,
/// or [`fail_unknown`](Self::fail_unknown) when the outcome is unknown (time
/// out, connection lost, shutdown), or [`fail_no_effect`](Self::fail_no_effect)
/// when the request certainly had no effect (e.g. `NotLeader`). A single
/// logical clock under a mutex timestamps every event, so "returned before
/// invoked" in the recorder means it also happened so in real time.
///
/// ```
/// use tandem::verify::{check, HistoryRecorder, Op, Output};
///
/// let recorder = HistoryRecorder::new();
/// let id = recorder.invoke(1, Op::Insert { key: b"k".to_vec(), value: b"v".to_vec() });
/// recorder.complete(id, Output::Value(None));
/// let id = recorder.invoke(2, Op::Get { key: b"k".to_vec() });
/// recorder.complete(id, Output::Value(Some(b"v".to_vec())));
/// assert!(check(&recorder.history()).is_linearizable());
/// ```
#[derive(Debug)]
pub struct HistoryRecorder {
    inner: Mutex<RecorderInner>,
}

impl Default for HistoryRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryRecorder {
    /// Default capacity: one million operations (a few hundred MiB at most
    /// with small keys and values).
    pub const OPS_MAX_DEFAULT: usize = 1_000_000;

    /// A recorder holding at most [`Self::OPS_MAX_DEFAULT`] operations.
    #[must_use]
    pub fn new() -> Self {
        Self::with_ops_max(Self::OPS_MAX_DEFAULT)
    }

    /// A recorder holding at most `ops_max` operations. Once full it stops
    /// recording: later invocations get an id that is not recorded, and
    /// completions arriving after that moment are ignored, so the history is
    /// an exact real-time *prefix* of what happened (operations still in
    /// flight at the cut are pending). Linearizability is prefix-closed, so
    /// checking the prefix is sound.
    ///
    /// # Panics
    /// If `ops_max` is 0.
    #[must_use]
    pub fn with_ops_max(ops_max: usize) -> Self {
        assert!(
            ops_max > 0,
            "a history recorder needs room for at least one operation"
        );
        Self {
            inner: Mutex::new(RecorderInner {
                clock: 0,
                slots: Vec::new(),
                ops_max,
                full_at: None,
            }),
        }
    }

    /// Records the invocation of `op` by `client` and returns its id.
    pub fn invoke(&self, client: u64, op: Op) -> OpId {
        let mut inner = self.inner.lock();
        if inner.full_at.is_some() {
            return OpId::NOT_RECORDED;
        }
        if inner.slots.len() >= inner.ops_max {
            let now = inner.clock;
            inner.full_at = Some(now);
            tracing::warn!(
                ops_max = inner.ops_max,
                "history recorder full: keeping the prefix recorded so far"
            );
            return OpId::NOT_RECORDED;
        }
        inner.clock += 1;
        let invoke_time = inner.clock;
        inner.slots.push(Slot::InFlight {
            client,
            op,
            invoke_time,
        });
        OpId(inner.slots.len() as u64 - 1)
    }

    /// Records that operation `id` returned `output`.
    ///
    /// # Panics
    /// If `id` was never handed out, was already completed or failed, or
    /// `output` has the wrong shape for the operation: bugs of the caller.
    pub fn complete(&self, id: OpId, output: Output) {
        let mut inner = self.inner.lock();
        if !id.is_recorded() || inner.full_at.is_some() {
            return;
        }
        inner.clock += 1;
        let time = inner.clock;
        let slot = Self::must_take_in_flight(&mut inner, id);
        let Slot::InFlight {
            client,
            op,
            invoke_time,
        } = slot
        else {
            unreachable!("must_take_in_flight returns in-flight slots only")
        };
        let operation = Operation {
            client,
            op,
            invoke_time,
            outcome: Outcome::Returned { time, output },
        };
        operation.must_be_well_formed();
        inner.slots[id.0 as usize] = Slot::Done(operation);
    }

    /// Records that the outcome of operation `id` is unknown: it may or may
    /// not have taken effect (timeout, lost connection, crash, shutdown).
    ///
    /// # Panics
    /// If `id` was never handed out or was already completed or failed.
    pub fn fail_unknown(&self, id: OpId) {
        let mut inner = self.inner.lock();
        if !id.is_recorded() || inner.full_at.is_some() {
            return;
        }
        let Slot::InFlight {
            client,
            op,
            invoke_time,
        } = Self::must_take_in_flight(&mut inner, id)
        else {
            unreachable!("must_take_in_flight returns in-flight slots only")
        };
        inner.slots[id.0 as usize] = Slot::Done(Operation {
            client,
            op,
            invoke_time,
            outcome: Outcome::Pending,
        });
    }

    /// Records that operation `id` certainly had no effect (e.g. the replica
    /// answered `NotLeader` before proposing it); it is left out of the history.
    ///
    /// Only use this when the store guarantees the request was not applied:
    /// wrongly dropping an operation that did take effect makes the checker
    /// report violations that are not there.
    ///
    /// # Panics
    /// If `id` was never handed out or was already completed or failed.
    pub fn fail_no_effect(&self, id: OpId) {
        let mut inner = self.inner.lock();
        if !id.is_recorded() || inner.full_at.is_some() {
            return;
        }
        Self::must_take_in_flight(&mut inner, id);
        inner.slots[id.0 as usize] = Slot::NoEffect;
    }

    fn must_take_in_flight(inner: &mut RecorderInner, id: OpId) -> Slot {
        let index = usize::try_from(id.0).expect("op ids fit in usize");
        let slot = inner
            .slots
            .get_mut(index)
            .unwrap_or_else(|| panic!("unknown operation id {id:?}"));
        assert!(
            matches!(slot, Slot::InFlight { .. }),
            "operation {id:?} completed twice"
        );
        std::mem::replace(slot, Slot::NoEffect)
    }

    /// Number of operations recorded so far (including those in flight).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().slots.len()
    }

    /// True if nothing was recorded yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the history so far. Operations still in flight appear
    /// as pending, which is exactly what they are at this instant.
    #[must_use]
    pub fn history(&self) -> History {
        let inner = self.inner.lock();
        let ops = inner
            .slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::InFlight {
                    client,
                    op,
                    invoke_time,
                } => Some(Operation {
                    client: *client,
                    op: op.clone(),
                    invoke_time: *invoke_time,
                    outcome: Outcome::Pending,
                }),
                Slot::Done(operation) => Some(operation.clone()),
                Slot::NoEffect => None,
            })
            .collect();
        History {
            ops,
            truncated: inner.full_at.is_some(),
        }
    }
}
