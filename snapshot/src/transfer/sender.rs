//! The sending side of a snapshot transfer, as a pure state machine.

use std::collections::BTreeMap;

use tracing::{debug, warn};

use super::{AbortReason, TransferId, TransferMsg};
use crate::error::{Error, Result};
use crate::format::Manifest;

/// Flow control and patience of a [`Sender`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// Chunks sent but not yet acknowledged, at most. With 1 MiB chunks the
    /// default keeps 4 MiB in flight, enough to fill a LAN link while the
    /// receiver fsyncs, and bounds what both sides hold in memory.
    pub window_chunks: u32,
    /// Ticks without an acknowledgement after which a chunk (or the offer)
    /// is sent again.
    pub retransmit_ticks: u32,
    /// Retransmissions of one chunk (or of the offer) without any sign of
    /// life from the receiver before the transfer is given up with
    /// [`AbortReason::TimedOut`]. The receiver answers a copy of a chunk it
    /// is still writing with `Accept`, which resets the count of every
    /// chunk in flight: a slow disk on the receiver is waited for, a
    /// silent receiver is not.
    pub max_retries: u32,
    /// Ticks to wait for `Done` after the last ack without hearing from the
    /// receiver (it re-reads and verifies the whole snapshot meanwhile, and
    /// answers the repeated offer with `Accept`, which restarts the wait:
    /// the bound is on silence, not on the length of the verification).
    pub done_timeout_ticks: u32,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            window_chunks: 4,
            retransmit_ticks: 10,
            max_retries: 8,
            done_timeout_ticks: 600,
        }
    }
}

/// Largest accepted window.
pub const WINDOW_CHUNKS_MAX: u32 = 256;

impl SenderConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero or oversized window, or zero ticks.
    pub fn validate(&self) -> Result<()> {
        if self.window_chunks == 0 || self.window_chunks > WINDOW_CHUNKS_MAX {
            return Err(Error::InvalidConfig(format!(
                "window_chunks {} outside 1..={WINDOW_CHUNKS_MAX}",
                self.window_chunks
            )));
        }
        if self.retransmit_ticks == 0 || self.done_timeout_ticks == 0 {
            return Err(Error::InvalidConfig(
                "retransmit_ticks and done_timeout_ticks must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// What the caller of a [`Sender`] must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderAction {
    /// Send this message to the receiver.
    Send(TransferMsg),
    /// Read chunk `chunk_no` of the snapshot and send it as
    /// [`TransferMsg::Chunk`] (the state machine holds no chunk bytes). If
    /// it cannot be read, call [`Sender::abort`] with
    /// [`AbortReason::SenderIo`].
    SendChunk(u32),
    /// The transfer is over: `Ok(())` when the receiver confirmed the
    /// verified snapshot (report `SnapshotStatus::Finish` to raft), or the
    /// reason it failed (report `SnapshotStatus::Failure`). Emitted once.
    Finished(std::result::Result<(), AbortReason>),
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Chunk sends, first sends and retransmissions.
    pub chunks_sent: u64,
    /// Chunk sends after the first.
    pub chunks_resent: u64,
    /// Chunks the receiver rejected as damaged.
    pub chunks_rejected: u64,
    /// Offers sent.
    pub offers_sent: u64,
    /// Messages ignored (other transfer, unexpected in this state).
    pub ignored: u64,
    /// `Accept`s received after the first: signs of life of a receiver busy
    /// staging or verifying.
    pub keepalives: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Created,
    /// Waiting for `Accept`; `since` is the tick of the last offer.
    Offering {
        since: u64,
        retries: u32,
    },
    Sending,
    /// Every chunk acked; waiting for `Done` since `since`. The offer is
    /// repeated every `retransmit_ticks` (last at `probed`) so that a
    /// receiver whose `Done` was lost sends it again.
    AwaitDone {
        since: u64,
        probed: u64,
    },
    Finished,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    sent_at: u64,
    retries: u32,
}

/// The leader's side of one transfer.
///
/// Invariants: at most `window_chunks` chunks in flight; a chunk is in
/// flight or acked, never both; `Finished` is emitted exactly once.
///
/// ```
/// use tandem_raft::ConfState;
/// use tandem_snapshot::{Manifest, Sender, SenderAction, SenderConfig, TransferId, TransferMsg};
///
/// let manifest = Manifest { index: 9, term: 1, conf_state: ConfState::from_voters([1]),
///     chunk_count: 3, total_bytes: 120, pair_count: 3, checksum: 0 };
/// let id = TransferId { leader_term: 1, from: 1, index: 9, term: 1, attempt: 0 };
/// let cfg = SenderConfig { window_chunks: 2, ..SenderConfig::default() };
/// let mut s = Sender::new(id, &manifest, cfg).unwrap();
/// assert!(matches!(&s.start()[..], [SenderAction::Send(TransferMsg::Offer { .. })]));
/// // Accepted: the first window goes out.
/// let a = s.on_message(&TransferMsg::Accept { id });
/// assert_eq!(a, vec![SenderAction::SendChunk(0), SenderAction::SendChunk(1)]);
/// // Each ack frees a slot.
/// assert_eq!(s.on_message(&TransferMsg::Ack { id, chunk_no: 0 }), vec![SenderAction::SendChunk(2)]);
/// s.on_message(&TransferMsg::Ack { id, chunk_no: 1 });
/// s.on_message(&TransferMsg::Ack { id, chunk_no: 2 });
/// assert_eq!(s.on_message(&TransferMsg::Done { id }), vec![SenderAction::Finished(Ok(()))]);
/// ```
#[derive(Debug)]
pub struct Sender {
    id: TransferId,
    manifest_bytes: Vec<u8>,
    chunk_count: u32,
    cfg: SenderConfig,
    state: State,
    now: u64,
    next_new: u32,
    inflight: BTreeMap<u32, InFlight>,
    acked: Vec<bool>,
    acked_count: u32,
    stats: SenderStats,
}

impl Sender {
    /// A sender for the snapshot `manifest` under transfer id `id`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config or an id that does not name
    /// the manifest's snapshot; [`Error::LimitExceeded`] for a bad manifest.
    pub fn new(id: TransferId, manifest: &Manifest, cfg: SenderConfig) -> Result<Self> {
        cfg.validate()?;
        manifest.validate()?;
        if (id.index, id.term) != (manifest.index, manifest.term) {
            return Err(Error::InvalidConfig(format!(
                "transfer id names snapshot ({}, {}), manifest is ({}, {})",
                id.index, id.term, manifest.index, manifest.term
            )));
        }
        Ok(Sender {
            id,
            manifest_bytes: manifest.encode(),
            chunk_count: manifest.chunk_count,
            cfg,
            state: State::Created,
            now: 0,
            next_new: 0,
            inflight: BTreeMap::new(),
            acked: vec![false; manifest.chunk_count as usize],
            acked_count: 0,
            stats: SenderStats::default(),
        })
    }

    /// The transfer id.
    #[must_use]
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// True once `Finished` has been emitted.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Chunks currently in flight.
    #[must_use]
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Sends the offer.
    ///
    /// # Panics
    /// If called twice.
    pub fn start(&mut self) -> Vec<SenderAction> {
        assert_eq!(self.state, State::Created, "Sender::start called twice");
        self.state = State::Offering {
            since: self.now,
            retries: 0,
        };
        self.stats.offers_sent += 1;
        vec![SenderAction::Send(self.offer())]
    }

    fn offer(&self) -> TransferMsg {
        TransferMsg::Offer {
            id: self.id,
            manifest: self.manifest_bytes.clone(),
        }
    }

    fn fill_window(&mut self, out: &mut Vec<SenderAction>) {
        while self.inflight.len() < self.cfg.window_chunks as usize
            && self.next_new < self.chunk_count
        {
            let n = self.next_new;
            self.next_new += 1;
            debug_assert!(!self.acked[n as usize]);
            self.inflight.insert(
                n,
                InFlight {
                    sent_at: self.now,
                    retries: 0,
                },
            );
            self.stats.chunks_sent += 1;
            out.push(SenderAction::SendChunk(n));
        }
        assert!(self.inflight.len() <= self.cfg.window_chunks as usize);
        if self.state == State::Sending && self.acked_count == self.chunk_count {
            assert!(self.inflight.is_empty());
            self.state = State::AwaitDone {
                since: self.now,
                probed: self.now,
            };
        }
    }

    fn finish(
        &mut self,
        result: std::result::Result<(), AbortReason>,
        out: &mut Vec<SenderAction>,
    ) {
        if let Err(reason) = result {
            warn!(id = ?self.id, ?reason, "snapshot transfer failed");
        } else {
            debug!(id = ?self.id, "snapshot transfer done");
        }
        self.state = State::Finished;
        self.inflight.clear();
        out.push(SenderAction::Finished(result));
    }

    /// Handles a message from the receiver. Messages of other transfers
    /// are ignored (counted in [`SenderStats::ignored`]).
    pub fn on_message(&mut self, msg: &TransferMsg) -> Vec<SenderAction> {
        let mut out = Vec::new();
        if *msg.id() != self.id || self.state == State::Finished {
            self.stats.ignored += 1;
            return out;
        }
        match (msg, self.state) {
            (TransferMsg::Accept { .. }, State::Offering { .. }) => {
                self.state = State::Sending;
                self.fill_window(&mut out);
            }
            (TransferMsg::Ack { chunk_no, .. }, State::Sending) => {
                let n = *chunk_no;
                if self.inflight.remove(&n).is_some() {
                    assert!(!self.acked[n as usize], "chunk {n} in flight and acked");
                    self.acked[n as usize] = true;
                    self.acked_count += 1;
                    self.fill_window(&mut out);
                } else {
                    // Duplicate ack of a retransmitted chunk, or a bogus number.
                    self.stats.ignored += 1;
                }
            }
            (TransferMsg::Reject { chunk_no, .. }, State::Sending) => {
                let n = *chunk_no;
                self.stats.chunks_rejected += 1;
                if self.inflight.contains_key(&n) {
                    self.resend(n, &mut out);
                } else {
                    self.stats.ignored += 1;
                }
            }
            (TransferMsg::Accept { .. }, State::Sending) => {
                // The receiver is alive and still writing chunks it has (a
                // copy of one of them arrived while it was being staged):
                // its disk is slow, nothing was lost. Retransmissions go on
                // at the same pace, but do not count towards giving up.
                self.stats.keepalives += 1;
                for f in self.inflight.values_mut() {
                    f.retries = 0;
                }
            }
            (TransferMsg::Accept { .. }, State::AwaitDone { probed, .. }) => {
                // Still verifying: the wait for `Done` starts over.
                self.stats.keepalives += 1;
                self.state = State::AwaitDone {
                    since: self.now,
                    probed,
                };
            }
            (TransferMsg::Done { .. }, State::AwaitDone { .. }) => self.finish(Ok(()), &mut out),
            (TransferMsg::Done { .. }, State::Sending) if self.next_new == self.chunk_count => {
                // Every chunk went out and the receiver has staged and
                // verified them all: the acks still missing were overtaken
                // on the way. Waiting for them would only stall the transfer
                // until a probe for `Done` got another answer.
                self.finish(Ok(()), &mut out);
            }
            (TransferMsg::Abort { reason, .. }, _) => self.finish(Err(*reason), &mut out),
            _ => self.stats.ignored += 1,
        }
        out
    }

    fn resend(&mut self, n: u32, out: &mut Vec<SenderAction>) {
        let f = self
            .inflight
            .get_mut(&n)
            .expect("resend of a chunk not in flight");
        if f.retries >= self.cfg.max_retries {
            out.push(SenderAction::Send(TransferMsg::Abort {
                id: self.id,
                reason: AbortReason::TimedOut,
            }));
            self.finish(Err(AbortReason::TimedOut), out);
            return;
        }
        f.retries += 1;
        f.sent_at = self.now;
        self.stats.chunks_sent += 1;
        self.stats.chunks_resent += 1;
        out.push(SenderAction::SendChunk(n));
    }

    /// Advances time by one tick: retransmits what timed out, gives up
    /// what exhausted its retries.
    pub fn tick(&mut self) -> Vec<SenderAction> {
        self.now += 1;
        let mut out = Vec::new();
        let rt = u64::from(self.cfg.retransmit_ticks);
        match self.state {
            State::Offering { since, retries } if self.now - since >= rt => {
                if retries >= self.cfg.max_retries {
                    out.push(SenderAction::Send(TransferMsg::Abort {
                        id: self.id,
                        reason: AbortReason::TimedOut,
                    }));
                    self.finish(Err(AbortReason::TimedOut), &mut out);
                } else {
                    self.state = State::Offering {
                        since: self.now,
                        retries: retries + 1,
                    };
                    self.stats.offers_sent += 1;
                    out.push(SenderAction::Send(self.offer()));
                }
            }
            State::Sending => {
                let due: Vec<u32> = self
                    .inflight
                    .iter()
                    .filter(|(_, f)| self.now - f.sent_at >= rt)
                    .map(|(&n, _)| n)
                    .collect();
                for n in due {
                    if self.state != State::Sending {
                        break;
                    }
                    self.resend(n, &mut out);
                }
            }
            State::AwaitDone { since, probed } => {
                if self.now - since >= u64::from(self.cfg.done_timeout_ticks) {
                    out.push(SenderAction::Send(TransferMsg::Abort {
                        id: self.id,
                        reason: AbortReason::TimedOut,
                    }));
                    self.finish(Err(AbortReason::TimedOut), &mut out);
                } else if self.now - probed >= rt {
                    self.state = State::AwaitDone {
                        since,
                        probed: self.now,
                    };
                    self.stats.offers_sent += 1;
                    out.push(SenderAction::Send(self.offer()));
                }
            }
            _ => {}
        }
        out
    }

    /// Tells the sender the node's current raft term and whether it still
    /// leads. A transfer started under an older term, or by a node that no
    /// longer leads, is aborted with [`AbortReason::LeaderChanged`].
    pub fn on_leadership(&mut self, term: u64, is_leader: bool) -> Vec<SenderAction> {
        if term != self.id.leader_term || !is_leader {
            return self.abort(AbortReason::LeaderChanged);
        }
        Vec::new()
    }

    /// Ends the transfer now, e.g. on leader or term change
    /// ([`AbortReason::LeaderChanged`]), a chunk read failure
    /// ([`AbortReason::SenderIo`]) or shutdown. Tells the receiver. Does
    /// nothing if already finished.
    pub fn abort(&mut self, reason: AbortReason) -> Vec<SenderAction> {
        let mut out = Vec::new();
        if self.state == State::Finished {
            return out;
        }
        out.push(SenderAction::Send(TransferMsg::Abort {
            id: self.id,
            reason,
        }));
        self.finish(Err(reason), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use tandem_raft::ConfState;

    use super::*;

    fn setup(chunks: u32, window: u32) -> (TransferId, Sender) {
        let m = Manifest {
            index: 5,
            term: 2,
            conf_state: ConfState::from_voters([1, 2]),
            chunk_count: chunks,
            total_bytes: u64::from(chunks) * 50,
            pair_count: u64::from(chunks),
            checksum: 1,
        };
        let id = TransferId {
            leader_term: 3,
            from: 1,
            index: 5,
            term: 2,
            attempt: 0,
        };
        let cfg = SenderConfig {
            window_chunks: window,
            retransmit_ticks: 2,
            max_retries: 2,
            done_timeout_ticks: 5,
        };
        (id, Sender::new(id, &m, cfg).unwrap())
    }

    #[test]
    fn offer_is_retransmitted_then_times_out() {
        let (_, mut s) = setup(3, 2);
        s.start();
        assert!(s.tick().is_empty());
        let a = s.tick();
        assert!(matches!(
            &a[..],
            [SenderAction::Send(TransferMsg::Offer { .. })]
        ));
        s.tick();
        s.tick(); // second retry
        s.tick();
        let a = s.tick();
        assert_eq!(
            a.last(),
            Some(&SenderAction::Finished(Err(AbortReason::TimedOut)))
        );
        assert!(s.is_finished());
        assert!(s.tick().is_empty());
    }

    #[test]
    fn unacked_chunk_is_resent_and_reject_resends_at_once() {
        let (id, mut s) = setup(3, 2);
        s.start();
        s.on_message(&TransferMsg::Accept { id });
        s.on_message(&TransferMsg::Ack { id, chunk_no: 1 });
        s.tick();
        let a = s.tick();
        // Chunk 0 timed out; chunk 2 (sent on the ack of 1) too, both at tick 0.
        assert_eq!(
            a,
            vec![SenderAction::SendChunk(0), SenderAction::SendChunk(2)]
        );
        let a = s.on_message(&TransferMsg::Reject { id, chunk_no: 2 });
        assert_eq!(a, vec![SenderAction::SendChunk(2)]);
        assert_eq!(s.stats().chunks_rejected, 1);
        // Third resend of chunk 2 exceeds max_retries = 2.
        let a = s.on_message(&TransferMsg::Reject { id, chunk_no: 2 });
        assert_eq!(
            a.last(),
            Some(&SenderAction::Finished(Err(AbortReason::TimedOut)))
        );
    }

    #[test]
    fn other_transfers_and_duplicates_are_ignored() {
        let (id, mut s) = setup(2, 1);
        s.start();
        let other = TransferId { attempt: 1, ..id };
        assert!(s.on_message(&TransferMsg::Accept { id: other }).is_empty());
        assert_eq!(
            s.on_message(&TransferMsg::Accept { id }),
            vec![SenderAction::SendChunk(0)]
        );
        // A repeated Accept is a sign of life, not a state change.
        assert!(s.on_message(&TransferMsg::Accept { id }).is_empty());
        assert_eq!(s.stats().keepalives, 1);
        assert!(s
            .on_message(&TransferMsg::Ack { id, chunk_no: 1 })
            .is_empty());
        assert!(
            s.on_message(&TransferMsg::Done { id }).is_empty(),
            "done before every chunk was even sent"
        );
        assert_eq!(
            s.on_message(&TransferMsg::Ack { id, chunk_no: 0 }),
            vec![SenderAction::SendChunk(1)]
        );
        assert!(s
            .on_message(&TransferMsg::Ack { id, chunk_no: 0 })
            .is_empty());
        assert_eq!(s.stats().ignored, 4);
        assert_eq!(s.inflight(), 1);
    }

    /// On a network that reorders, the receiver's `Done` can arrive before
    /// its acks of the last chunks. It still ends the transfer: the
    /// receiver verified every chunk. (It used to be ignored, and the
    /// transfer then waited for a probe for `Done` to be answered: found by
    /// the engine simulator, seed 750, as a follower that had not caught up
    /// after 600 events without faults.)
    #[test]
    fn a_done_that_overtakes_the_last_acks_ends_the_transfer() {
        let (id, mut s) = setup(3, 2);
        s.start();
        s.on_message(&TransferMsg::Accept { id });
        assert_eq!(
            s.on_message(&TransferMsg::Ack { id, chunk_no: 0 }),
            vec![SenderAction::SendChunk(2)]
        );
        // Chunks 1 and 2 are in flight and unacknowledged.
        assert_eq!(s.inflight(), 2);
        assert_eq!(
            s.on_message(&TransferMsg::Done { id }),
            vec![SenderAction::Finished(Ok(()))]
        );
        assert!(s.is_finished());
        // The late acks change nothing.
        assert!(s
            .on_message(&TransferMsg::Ack { id, chunk_no: 1 })
            .is_empty());
    }

    #[test]
    fn a_receiver_busy_staging_is_waited_for_a_silent_one_is_not() {
        let (id, mut s) = setup(1, 1);
        s.start();
        s.on_message(&TransferMsg::Accept { id });
        // retransmit_ticks = 2, max_retries = 2: resends at ticks 2 and 4.
        for _ in 0..2 {
            s.tick();
            assert_eq!(s.tick(), vec![SenderAction::SendChunk(0)]);
        }
        // The receiver answers a copy with Accept: it is still writing the
        // chunk. The retries start over, the resends go on.
        assert!(s.on_message(&TransferMsg::Accept { id }).is_empty());
        for _ in 0..2 {
            s.tick();
            assert_eq!(s.tick(), vec![SenderAction::SendChunk(0)]);
        }
        // Then silence: the third resend without a sign of life gives up.
        s.tick();
        assert_eq!(
            s.tick().last(),
            Some(&SenderAction::Finished(Err(AbortReason::TimedOut)))
        );
        assert_eq!(s.stats().keepalives, 1);
    }

    #[test]
    fn a_receiver_still_verifying_restarts_the_wait_for_done() {
        let (id, mut s) = setup(1, 1);
        s.start();
        s.on_message(&TransferMsg::Accept { id });
        s.on_message(&TransferMsg::Ack { id, chunk_no: 0 });
        // done_timeout_ticks = 5: answered offers keep the transfer alive
        // well past it.
        for _ in 0..4 {
            s.tick();
            s.tick();
            assert!(s.on_message(&TransferMsg::Accept { id }).is_empty());
        }
        assert!(!s.is_finished());
        assert_eq!(
            s.on_message(&TransferMsg::Done { id }),
            vec![SenderAction::Finished(Ok(()))]
        );
        // Without answers it times out after 5 ticks of silence.
        let (id, mut s) = setup(1, 1);
        s.start();
        s.on_message(&TransferMsg::Accept { id });
        s.on_message(&TransferMsg::Ack { id, chunk_no: 0 });
        s.tick();
        s.tick();
        s.tick();
        s.on_message(&TransferMsg::Accept { id });
        for _ in 0..4 {
            assert!(!s
                .tick()
                .contains(&SenderAction::Finished(Err(AbortReason::TimedOut))));
        }
        assert_eq!(
            s.tick().last(),
            Some(&SenderAction::Finished(Err(AbortReason::TimedOut)))
        );
    }

    #[test]
    fn leadership_check_aborts_only_on_change() {
        let (id, mut s) = setup(2, 1);
        s.start();
        assert!(s.on_leadership(3, true).is_empty());
        assert_eq!(
            s.on_leadership(4, true).last(),
            Some(&SenderAction::Finished(Err(AbortReason::LeaderChanged)))
        );
        let (_, mut s) = setup(2, 1);
        s.start();
        let a = s.on_leadership(3, false);
        assert_eq!(
            a[0],
            SenderAction::Send(TransferMsg::Abort {
                id,
                reason: AbortReason::LeaderChanged
            })
        );
        assert!(s.is_finished());
    }

    #[test]
    fn abort_on_leader_change_tells_receiver_once() {
        let (id, mut s) = setup(2, 1);
        s.start();
        let a = s.abort(AbortReason::LeaderChanged);
        assert_eq!(
            a,
            vec![
                SenderAction::Send(TransferMsg::Abort {
                    id,
                    reason: AbortReason::LeaderChanged
                }),
                SenderAction::Finished(Err(AbortReason::LeaderChanged)),
            ]
        );
        assert!(s.abort(AbortReason::LeaderChanged).is_empty());
    }

    #[test]
    fn missing_done_is_probed_for_then_times_out() {
        let (id, mut s) = setup(1, 1);
        s.start();
        s.on_message(&TransferMsg::Accept { id });
        s.on_message(&TransferMsg::Ack { id, chunk_no: 0 });
        assert!(s.tick().is_empty());
        // retransmit_ticks = 2: the offer is repeated so the receiver repeats Done.
        assert!(matches!(
            &s.tick()[..],
            [SenderAction::Send(TransferMsg::Offer { .. })]
        ));
        assert!(s.tick().is_empty());
        assert!(matches!(
            &s.tick()[..],
            [SenderAction::Send(TransferMsg::Offer { .. })]
        ));
        // done_timeout_ticks = 5.
        assert_eq!(
            s.tick().last(),
            Some(&SenderAction::Finished(Err(AbortReason::TimedOut)))
        );
    }

    #[test]
    fn empty_snapshot_goes_straight_to_await_done() {
        let (id, mut s) = setup(0, 1);
        s.start();
        assert!(s.on_message(&TransferMsg::Accept { id }).is_empty());
        assert_eq!(
            s.on_message(&TransferMsg::Done { id }),
            vec![SenderAction::Finished(Ok(()))]
        );
    }

    #[test]
    fn config_is_validated() {
        let (id, _) = setup(1, 1);
        let m = Manifest {
            index: 5,
            term: 2,
            conf_state: ConfState::default(),
            chunk_count: 0,
            total_bytes: 0,
            pair_count: 0,
            checksum: 0,
        };
        for cfg in [
            SenderConfig {
                window_chunks: 0,
                ..SenderConfig::default()
            },
            SenderConfig {
                window_chunks: WINDOW_CHUNKS_MAX + 1,
                ..SenderConfig::default()
            },
            SenderConfig {
                retransmit_ticks: 0,
                ..SenderConfig::default()
            },
        ] {
            assert!(Sender::new(id, &m, cfg).is_err());
        }
        assert!(Sender::new(TransferId { index: 6, ..id }, &m, SenderConfig::default()).is_err());
    }
}
