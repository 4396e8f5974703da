//! Proposal tracking: every write proposed on this replica has an id that
//! travels in its entry's context, and a waiter that is completed exactly
//! once — with the command's result when the entry is applied, or with a
//! typed error when it can no longer be (dropped, overwritten, timed out,
//! shut down). Nothing waits forever.
//!
//! Lifecycle of a proposal:
//! 1. [`Proposals::register`] gives it an id (this replica's id, the
//!    process incarnation and a sequence number, so ids never collide across
//!    replicas or restarts) and a deadline.
//! 2. If the consensus core refuses it, [`Proposals::fail`] completes it
//!    (`NotLeader`).
//! 3. When its entry shows up in a `Ready`, [`Proposals::on_appended`]
//!    records `(index, term)`. If a later `Ready` replaces that index with
//!    another entry (a new leader's log won), it completes `Stale`.
//! 4. When entries commit, [`Proposals::take_committed`] hands the waiters
//!    of this replica's entries to the apply thread, which completes them
//!    with the result; an entry at a tracked index that is not ours means
//!    ours was overwritten: `Stale`.
//! 5. [`Proposals::expire`] completes overdue ones with `Timeout`;
//!    [`Proposals::fail_all`] completes everything on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::node::oneshot::Sender;
use tandem_raft::Entry;

use crate::error::{Error, Result};

/// Length of an encoded [`ProposalId`] in an entry's context.
pub const PROPOSAL_ID_BYTES: usize = 24;

/// The identity of a proposal, carried in its entry's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProposalId {
    /// The replica that proposed it.
    pub node: u64,
    /// Random per process start: sequence numbers restart after a reboot.
    pub incarnation: u64,
    /// Sequence number within the incarnation.
    pub seq: u64,
}

impl ProposalId {
    /// Encode as an entry context (24 bytes little-endian).
    #[must_use]
    pub fn to_context(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PROPOSAL_ID_BYTES);
        out.extend_from_slice(&self.node.to_le_bytes());
        out.extend_from_slice(&self.incarnation.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out
    }

    /// Decode an entry context; `None` if it is not a proposal id (e.g. the
    /// empty entry of a new leader, or a membership change).
    #[must_use]
    pub fn from_context(ctx: &[u8]) -> Option<ProposalId> {
        if ctx.len() != PROPOSAL_ID_BYTES {
            return None;
        }
        let word =
            |i: usize| u64::from_le_bytes(ctx[i * 8..i * 8 + 8].try_into().expect("8-byte slice"));
        Some(ProposalId {
            node: word(0),
            incarnation: word(1),
            seq: word(2),
        })
    }
}

/// Where a waiter's answer goes.
pub type Responder<T> = Sender<Result<T>>;

struct Pending<T> {
    tx: Responder<T>,
    deadline: Instant,
    timeout: Duration,
    /// `(index, term)` once the entry is in this replica's log.
    placed: Option<(u64, u64)>,
}

/// A committed entry of this replica, with the waiter to complete once applied.
#[derive(Debug)]
pub struct CommittedProposal<T> {
    /// The entry's index.
    pub index: u64,
    /// Who waits for the result.
    pub tx: Responder<T>,
}

/// The proposals in flight on one replica.
pub struct Proposals<T> {
    node: u64,
    incarnation: u64,
    next_seq: u64,
    max_pending: usize,
    pending: HashMap<u64, Pending<T>>,
    /// Log index → sequence number of our entry there.
    by_index: BTreeMap<u64, u64>,
}

impl<T> std::fmt::Debug for Proposals<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposals")
            .field("pending", &self.pending.len())
            .field("placed", &self.by_index.len())
            .finish_non_exhaustive()
    }
}

impl<T> Proposals<T> {
    /// Tracking for replica `node`; at most `max_pending` in flight.
    #[must_use]
    pub fn new(node: u64, incarnation: u64, max_pending: usize) -> Self {
        assert!(max_pending > 0, "max_pending must be positive");
        Proposals {
            node,
            incarnation,
            next_seq: 1,
            max_pending,
            pending: HashMap::new(),
            by_index: BTreeMap::new(),
        }
    }

    /// Proposals not yet completed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if nothing is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Start tracking a proposal that must complete by `now + timeout`.
    ///
    /// # Errors
    /// [`Error::Overloaded`] if `max_pending` proposals are in flight; the
    /// caller still owns `tx` in that case (it is dropped unused).
    pub fn register(
        &mut self,
        tx: Responder<T>,
        now: Instant,
        timeout: Duration,
    ) -> Result<ProposalId> {
        if self.pending.len() >= self.max_pending {
            return Err(Error::Overloaded(self.pending.len()));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            seq,
            Pending {
                tx,
                deadline: now + timeout,
                timeout,
                placed: None,
            },
        );
        Ok(ProposalId {
            node: self.node,
            incarnation: self.incarnation,
            seq,
        })
    }

    fn ours(&self, ctx: &[u8]) -> Option<u64> {
        ProposalId::from_context(ctx)
            .filter(|id| id.node == self.node && id.incarnation == self.incarnation)
            .map(|id| id.seq)
    }

    fn complete(&mut self, seq: u64, result: Result<T>) {
        if let Some(p) = self.pending.remove(&seq) {
            if let Some((index, _)) = p.placed {
                if self.by_index.get(&index) == Some(&seq) {
                    self.by_index.remove(&index);
                }
            }
            // The waiter may have given up; that is not an error here.
            let _ = p.tx.send(result);
        }
    }

    /// The consensus core refused proposal `id`: complete it with `err`.
    pub fn fail(&mut self, id: ProposalId, err: Error) {
        self.complete(id.seq, Err(err));
    }

    /// Entries were appended to this replica's log (from a `Ready`, in index
    /// order). Records where our proposals landed.
    ///
    /// A proposal whose entry is overwritten here is NOT completed: another
    /// replica may still hold the entry, win an election with it and
    /// commit it (Raft only promises that an entry is gone once another
    /// one is *committed* at its index). It stays placed at its index, and
    /// [`Proposals::take_committed`] decides when that index commits:
    /// applied if the entry is ours, `Stale` if it is not. Completing it
    /// with `Stale` at the overwrite told clients "not applied, retry" for
    /// writes that were then applied (found by the simulator, seed 693).
    pub fn on_appended(&mut self, entries: &[Entry]) {
        for e in entries {
            if let Some(seq) = self.ours(&e.context) {
                if let Some(p) = self.pending.get_mut(&seq) {
                    p.placed = Some((e.index, e.term));
                    self.by_index.insert(e.index, seq);
                }
            }
        }
    }

    /// Committed entries (in index order) are about to be applied: take the
    /// waiters of ours, and complete with `Stale` any proposal whose index
    /// now holds another entry.
    pub fn take_committed(&mut self, entries: &[Entry]) -> Vec<CommittedProposal<T>> {
        let mut out = Vec::new();
        for e in entries {
            if let Some(&seq) = self.by_index.get(&e.index) {
                if self.ours(&e.context) != Some(seq) {
                    let term = self.pending[&seq].placed.map_or(0, |p| p.1);
                    self.complete(
                        seq,
                        Err(Error::Stale {
                            index: e.index,
                            term,
                        }),
                    );
                }
            }
            if let Some(seq) = self.ours(&e.context) {
                if let Some(p) = self.pending.remove(&seq) {
                    self.by_index.remove(&e.index);
                    out.push(CommittedProposal {
                        index: e.index,
                        tx: p.tx,
                    });
                }
            }
        }
        out
    }

    /// Complete every proposal whose deadline is before `now` with
    /// `Timeout`. Returns how many expired.
    pub fn expire(&mut self, now: Instant) -> usize {
        let due: Vec<(u64, Duration)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&s, p)| (s, p.timeout))
            .collect();
        for &(seq, timeout) in &due {
            self.complete(seq, Err(Error::Timeout(timeout)));
        }
        due.len()
    }

    /// Complete every proposal with `err` (shutdown).
    pub fn fail_all(&mut self, err: &Error) {
        let seqs: Vec<u64> = self.pending.keys().copied().collect();
        for seq in seqs {
            self.complete(seq, Err(err.clone()));
        }
        debug_assert!(self.by_index.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::oneshot::{channel, Receiver};

    type Rx = Receiver<Result<u32>>;

    fn entry(index: u64, term: u64, ctx: Vec<u8>) -> Entry {
        Entry {
            index,
            term,
            context: ctx.into(),
            ..Entry::default()
        }
    }

    fn setup() -> (Proposals<u32>, Instant) {
        (Proposals::new(1, 77, 3), Instant::now())
    }

    fn reg(p: &mut Proposals<u32>, now: Instant) -> (ProposalId, Rx) {
        let (tx, rx) = channel();
        (p.register(tx, now, Duration::from_secs(1)).unwrap(), rx)
    }

    #[test]
    fn context_round_trips_and_rejects_other_shapes() {
        let id = ProposalId {
            node: 3,
            incarnation: u64::MAX,
            seq: 9,
        };
        assert_eq!(ProposalId::from_context(&id.to_context()), Some(id));
        assert_eq!(ProposalId::from_context(&[]), None);
        assert_eq!(ProposalId::from_context(&[0; 23]), None);
    }

    #[test]
    fn applied_proposal_goes_to_the_apply_thread_with_its_index() {
        let (mut p, now) = setup();
        let (id, rx) = reg(&mut p, now);
        p.on_appended(&[entry(5, 2, id.to_context())]);
        let taken = p.take_committed(&[entry(4, 2, vec![]), entry(5, 2, id.to_context())]);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].index, 5);
        taken[0].tx.send(Ok(42)).unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap(), 42);
        assert!(p.is_empty());
    }

    #[test]
    fn an_overwritten_proposal_is_stale_only_once_another_entry_commits_there() {
        let (_, now) = setup();
        let mut p = Proposals::new(1, 77, 8);
        let (a, ra) = reg(&mut p, now);
        let (b, rb) = reg(&mut p, now);
        let (c, rc) = reg(&mut p, now);
        let (d, rd) = reg(&mut p, now);
        p.on_appended(&[
            entry(5, 2, a.to_context()),
            entry(6, 2, b.to_context()),
            entry(7, 2, c.to_context()),
            entry(8, 2, d.to_context()),
        ]);
        // A new leader's entries replace index 6 onwards; 5 survives. Until
        // those indexes commit, b, c and d may still commit from another
        // replica's copy: nothing is decided.
        p.on_appended(&[entry(6, 3, vec![]), entry(7, 3, vec![])]);
        assert!(rb.try_recv().is_err());
        assert!(rc.try_recv().is_err());
        assert!(rd.try_recv().is_err());
        // A later leader that held c's entry puts it back at 7, and it commits.
        p.on_appended(&[entry(7, 2, c.to_context())]);
        let taken = p.take_committed(&[entry(6, 3, vec![]), entry(7, 2, c.to_context())]);
        assert!(matches!(
            rb.try_recv().unwrap(),
            Err(Error::Stale { index: 6, term: 2 })
        ));
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].index, 7);
        drop(rc);
        // Another entry commits at 8: d was not applied.
        assert!(p.take_committed(&[entry(8, 4, vec![])]).is_empty());
        assert!(matches!(
            rd.try_recv().unwrap(),
            Err(Error::Stale { index: 8, term: 2 })
        ));
        assert!(ra.try_recv().is_err());
        // Commit finds another entry at 5 (e.g. a snapshot jumped over our append).
        let other = ProposalId { node: 2, ..a };
        let taken = p.take_committed(&[entry(5, 3, other.to_context())]);
        assert!(taken.is_empty());
        assert!(matches!(
            ra.try_recv().unwrap(),
            Err(Error::Stale { index: 5, .. })
        ));
        assert!(p.is_empty());
    }

    #[test]
    fn another_incarnations_entry_is_not_ours() {
        let (mut p, now) = setup();
        let (id, rx) = reg(&mut p, now);
        let old = ProposalId {
            incarnation: 76,
            ..id
        };
        p.on_appended(&[entry(1, 1, old.to_context())]);
        assert!(p
            .take_committed(&[entry(1, 1, old.to_context())])
            .is_empty());
        assert!(rx.try_recv().is_err());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn refusal_timeout_overload_and_shutdown_complete_every_waiter() {
        let (mut p, now) = setup();
        let (a, ra) = reg(&mut p, now);
        let (_b, rb) = reg(&mut p, now);
        let (_c, rc) = reg(&mut p, now);
        let (tx, _rx) = channel();
        assert!(matches!(
            p.register(tx, now, Duration::from_secs(1)),
            Err(Error::Overloaded(3))
        ));
        p.fail(a, Error::NotLeader { leader: Some(2) });
        assert!(matches!(
            ra.try_recv().unwrap(),
            Err(Error::NotLeader { leader: Some(2) })
        ));
        assert_eq!(p.expire(now), 0);
        assert_eq!(p.expire(now + Duration::from_secs(1)), 2);
        assert!(matches!(rb.try_recv().unwrap(), Err(Error::Timeout(_))));
        assert!(matches!(rc.try_recv().unwrap(), Err(Error::Timeout(_))));
        let (_d, rd) = reg(&mut p, now);
        p.fail_all(&Error::ShuttingDown);
        assert!(matches!(rd.try_recv().unwrap(), Err(Error::ShuttingDown)));
        assert!(p.is_empty());
    }
}
