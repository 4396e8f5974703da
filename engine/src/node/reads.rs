//! Linearizable read tracking (ReadIndex).
//!
//! A read is registered with a context; the consensus core confirms
//! leadership (one heartbeat round, or the lease) and returns a read state
//! `(index, context)`; once this replica has applied `index` the waiter is
//! told it may read the state machine now. A read whose confirmation is
//! lost with a leader change completes with `NotLeader` — never hangs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::node::proposals::{ProposalId, Responder};

struct PendingRead {
    tx: Responder<u64>,
    deadline: Instant,
    timeout: Duration,
}

/// Reads in flight on one replica. Waiters receive `Ok(read_index)` when the
/// state machine has applied at least `read_index`.
pub struct Reads {
    node: u64,
    incarnation: u64,
    next_seq: u64,
    max_pending: usize,
    /// Waiting for the consensus core's confirmation.
    unconfirmed: HashMap<u64, PendingRead>,
    /// Confirmed at an index, waiting for apply.
    confirmed: BTreeMap<u64, Vec<PendingRead>>,
    confirmed_len: usize,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads")
            .field("unconfirmed", &self.unconfirmed.len())
            .field("confirmed", &self.confirmed_len)
            .finish_non_exhaustive()
    }
}

impl Reads {
    /// Tracking for replica `node`; at most `max_pending` in flight.
    #[must_use]
    pub fn new(node: u64, incarnation: u64, max_pending: usize) -> Reads {
        assert!(max_pending > 0, "max_pending must be positive");
        Reads {
            node,
            incarnation,
            next_seq: 1,
            max_pending,
            unconfirmed: HashMap::new(),
            confirmed: BTreeMap::new(),
            confirmed_len: 0,
        }
    }

    /// Reads not yet completed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.unconfirmed.len() + self.confirmed_len
    }

    /// True if no read is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Track a read; returns the context to pass to `read_index`.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when `max_pending` reads are in flight.
    pub fn register(
        &mut self,
        tx: Responder<u64>,
        now: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        if self.len() >= self.max_pending {
            return Err(Error::Overloaded(self.len()));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unconfirmed.insert(
            seq,
            PendingRead {
                tx,
                deadline: now + timeout,
                timeout,
            },
        );
        Ok(ProposalId {
            node: self.node,
            incarnation: self.incarnation,
            seq,
        }
        .to_context())
    }

    /// The consensus core could not start the read (`ctx` from `register`).
    pub fn fail(&mut self, ctx: &[u8], err: Error) {
        if let Some(seq) = self.ours(ctx) {
            if let Some(r) = self.unconfirmed.remove(&seq) {
                let _ = r.tx.send(Err(err));
            }
        }
    }

    fn ours(&self, ctx: &[u8]) -> Option<u64> {
        ProposalId::from_context(ctx)
            .filter(|id| id.node == self.node && id.incarnation == self.incarnation)
            .map(|id| id.seq)
    }

    /// The consensus core confirmed the read with context `ctx` at `index`.
    /// Unknown contexts (another replica's, or already expired) are ignored.
    pub fn on_read_state(&mut self, index: u64, ctx: &[u8], applied: u64) {
        let Some(seq) = self.ours(ctx) else { return };
        let Some(r) = self.unconfirmed.remove(&seq) else {
            return;
        };
        if index <= applied {
            let _ = r.tx.send(Ok(index));
        } else {
            self.confirmed.entry(index).or_default().push(r);
            self.confirmed_len += 1;
        }
    }

    /// The state machine has applied up to `applied`: release the reads it covers.
    pub fn on_applied(&mut self, applied: u64) {
        let later = self.confirmed.split_off(&(applied + 1));
        let ready = std::mem::replace(&mut self.confirmed, later);
        for (index, reads) in ready {
            self.confirmed_len -= reads.len();
            for r in reads {
                let _ = r.tx.send(Ok(index));
            }
        }
    }

    /// Leadership changed: confirmations requested from the old leader will
    /// never come. Confirmed reads stay valid and keep waiting for apply.
    pub fn fail_unconfirmed(&mut self, err: &Error) {
        for (_, r) in self.unconfirmed.drain() {
            let _ = r.tx.send(Err(err.clone()));
        }
    }

    /// Complete overdue reads with `Timeout`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        self.unconfirmed.retain(|_, r| {
            if r.deadline <= now {
                let _ = r.tx.send(Err(Error::Timeout(r.timeout)));
                n += 1;
                false
            } else {
                true
            }
        });
        for reads in self.confirmed.values_mut() {
            reads.retain(|r| {
                if r.deadline <= now {
                    let _ = r.tx.send(Err(Error::Timeout(r.timeout)));
                    n += 1;
                    false
                } else {
                    true
                }
            });
        }
        self.confirmed.retain(|_, v| !v.is_empty());
        self.confirmed_len = self.confirmed.values().map(Vec::len).sum();
        n
    }

    /// Complete everything with `err` (shutdown).
    pub fn fail_all(&mut self, err: &Error) {
        self.fail_unconfirmed(err);
        for (_, reads) in std::mem::take(&mut self.confirmed) {
            for r in reads {
                let _ = r.tx.send(Err(err.clone()));
            }
        }
        self.confirmed_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::oneshot::{channel, Receiver};

    fn reg(r: &mut Reads, now: Instant) -> (Vec<u8>, Receiver<Result<u64>>) {
        let (tx, rx) = channel();
        (r.register(tx, now, Duration::from_secs(1)).unwrap(), rx)
    }

    #[test]
    fn read_completes_only_once_confirmed_and_applied() {
        let now = Instant::now();
        let mut r = Reads::new(1, 5, 10);
        let (ctx, rx) = reg(&mut r, now);
        r.on_applied(100);
        assert!(rx.try_recv().is_err(), "not confirmed yet");
        r.on_read_state(12, &ctx, 10);
        assert!(rx.try_recv().is_err(), "confirmed but not applied");
        r.on_applied(11);
        assert!(rx.try_recv().is_err());
        r.on_applied(12);
        assert_eq!(rx.try_recv().unwrap().unwrap(), 12);
        let (ctx2, rx2) = reg(&mut r, now);
        r.on_read_state(12, &ctx2, 12);
        assert_eq!(rx2.try_recv().unwrap().unwrap(), 12);
        assert!(r.is_empty());
    }

    #[test]
    fn leader_change_fails_unconfirmed_but_keeps_confirmed() {
        let now = Instant::now();
        let mut r = Reads::new(1, 5, 10);
        let (a, ra) = reg(&mut r, now);
        let (_b, rb) = reg(&mut r, now);
        r.on_read_state(9, &a, 1);
        r.fail_unconfirmed(&Error::NotLeader { leader: None });
        assert!(matches!(
            rb.try_recv().unwrap(),
            Err(Error::NotLeader { .. })
        ));
        assert!(ra.try_recv().is_err());
        r.on_applied(9);
        assert_eq!(ra.try_recv().unwrap().unwrap(), 9);
    }

    #[test]
    fn foreign_contexts_are_ignored_and_deadlines_hold() {
        let now = Instant::now();
        let mut r = Reads::new(1, 5, 2);
        let (a, ra) = reg(&mut r, now);
        let (b, rb) = reg(&mut r, now);
        let (tx, _) = channel();
        assert!(matches!(
            r.register(tx, now, Duration::from_secs(1)),
            Err(Error::Overloaded(2))
        ));
        let mut foreign = a.clone();
        foreign[0] = 9;
        r.on_read_state(1, &foreign, 5);
        assert!(ra.try_recv().is_err());
        r.on_read_state(50, &b, 5);
        assert_eq!(r.expire(now + Duration::from_secs(2)), 2);
        assert!(matches!(ra.try_recv().unwrap(), Err(Error::Timeout(_))));
        assert!(matches!(rb.try_recv().unwrap(), Err(Error::Timeout(_))));
        assert!(r.is_empty());
    }
}
