//! Verification tools: a linearizability checker for client histories, and
//! the building blocks of the deterministic simulator (a seeded event
//! scheduler with a simulated clock, and the Raft safety invariants as
//! functions over plain observations).
//!
//! # Checking a history
//!
//! Clients record what they do in a [`HistoryRecorder`]; [`check`] decides
//! whether some order of the operations, consistent with real time, explains
//! every answer (linearizability).
//!
//! ```
//! use tandem::verify::{check, CheckResult, History, Op, Output};
//!
//! let key = b"k".to_vec();
//! let mut history = History::new();
//! // Client 1 writes "a" and gets its answer at time 2...
//! history.push_returned(1, Op::Insert { key: key.clone(), value: b"a".to_vec() }, 1, 2, Output::Value(None));
//! // ...then client 2 starts a read at time 3 and sees nothing: a stale read.
//! history.push_returned(2, Op::Get { key: key.clone() }, 3, 4, Output::Value(None));
//! let CheckResult::NotLinearizable(counterexample) = check(&history) else {
//!     panic!("a stale read must be rejected");
//! };
//! assert_eq!(counterexample.operations.len(), 2);
//! println!("{counterexample}");
//! ```

mod history;
pub mod invariants;
mod linearizability;
mod scheduler;

pub use history::{History, HistoryRecorder, Op, OpId, Operation, Outcome, Output};
pub use linearizability::{check, check_with, CheckConfig, CheckResult, Counterexample};
pub use scheduler::{EventId, Scheduler, TieOrder};
