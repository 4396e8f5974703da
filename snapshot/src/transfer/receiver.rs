//! The receiving side of a snapshot transfer, as a pure state machine.

use tracing::{debug, warn};

use super::{AbortReason, TransferId, TransferMsg};
use crate::error::{Error, Result};
use crate::format::Manifest;
use crate::reader::check_chunk_belongs;

/// Patience of a [`Receiver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Ticks without any message of the current transfer after which it is
    /// dropped (the sender crashed or was partitioned away; a new leader
    /// will start over). Must exceed the sender's retransmission period.
    pub idle_timeout_ticks: u32,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            idle_timeout_ticks: 100,
        }
    }
}

impl ReceiverConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `idle_timeout_ticks` is 0.
    pub fn validate(&self) -> Result<()> {
        if self.idle_timeout_ticks == 0 {
            return Err(Error::InvalidConfig(
                "idle_timeout_ticks must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// What the caller of a [`Receiver`] must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverAction {
    /// Send this message to the sender (`id.from`).
    Send(TransferMsg),
    /// Start staging `manifest` (dropping any other staging), then call
    /// [`Receiver::on_begun`].
    Begin {
        /// The transfer.
        id: TransferId,
        /// Its decoded manifest.
        manifest: Manifest,
    },
    /// Write this verified chunk durably to the staging area, then call
    /// [`Receiver::on_staged`].
    Stage {
        /// The transfer.
        id: TransferId,
        /// Chunk position.
        chunk_no: u32,
        /// Encoded chunk, CRC already checked.
        bytes: Vec<u8>,
    },
    /// Every chunk is staged: verify the whole snapshot and publish it, then
    /// call [`Receiver::on_verified`].
    Verify {
        /// The transfer.
        id: TransferId,
    },
    /// Remove the staging area of this transfer.
    Discard {
        /// The transfer.
        id: TransferId,
    },
    /// The snapshot of this transfer is verified and published: install it
    /// (step the raft `MsgSnapshot`, switch the state machine).
    Complete {
        /// The transfer.
        id: TransferId,
    },
    /// The transfer ended without a snapshot.
    Failed {
        /// The transfer.
        id: TransferId,
        /// Why.
        reason: AbortReason,
    },
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Chunks that failed their CRC or did not belong to the transfer.
    pub chunks_rejected: u64,
    /// Chunks that arrived again after being staged.
    pub chunks_duplicate: u64,
    /// Messages of older or unknown transfers.
    pub stale_messages: u64,
    /// Transfers dropped in favour of a newer one.
    pub superseded: u64,
    /// Staging results for a chunk the current transfer never asked to
    /// stage: a caller bug (results out of order), each aborting a transfer.
    pub staged_unrequested: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the staging area to be created.
    Beginning,
    Receiving,
    Verifying,
    /// Verified and published; answers repeats with `Done`.
    Done,
}

#[derive(Debug)]
struct Current {
    id: TransferId,
    manifest: Manifest,
    state: State,
    /// Chunks handed out for staging (possibly not yet durable).
    requested: Vec<bool>,
    /// Chunks durably staged.
    staged: Vec<bool>,
    staged_count: u32,
    idle_ticks: u32,
}

/// The follower's side of snapshot transfers. One transfer at a time; a
/// newer one (by [`TransferId::supersedes`]) replaces the current one.
///
/// Invariants: a chunk is acked only after [`Receiver::on_staged`]
/// reported it durable; `Done` is sent only after
/// [`Receiver::on_verified`] succeeded.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    /// The highest leader term seen; older transfers are refused.
    term: u64,
    current: Option<Current>,
    stats: ReceiverStats,
}

impl Receiver {
    /// A receiver with no transfer.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(cfg: ReceiverConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Receiver {
            cfg,
            term: 0,
            current: None,
            stats: ReceiverStats::default(),
        })
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The transfer in progress or completed last, if any.
    #[must_use]
    pub fn current(&self) -> Option<TransferId> {
        self.current.as_ref().map(|c| c.id)
    }

    /// True if no transfer is in progress (idle or the last one done).
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.current.as_ref().is_none_or(|c| c.state == State::Done)
    }

    fn drop_current(&mut self, reason: AbortReason, out: &mut Vec<ReceiverAction>) {
        if let Some(c) = self.current.take() {
            if c.state == State::Done {
                return;
            }
            warn!(id = ?c.id, ?reason, "dropping snapshot transfer");
            out.push(ReceiverAction::Discard { id: c.id });
            out.push(ReceiverAction::Failed { id: c.id, reason });
        }
    }

    /// Tell the sender of `id` (the current transfer) that it is aborted,
    /// and drop it.
    fn abort_current(
        &mut self,
        id: TransferId,
        reason: AbortReason,
        out: &mut Vec<ReceiverAction>,
    ) {
        out.push(ReceiverAction::Send(TransferMsg::Abort { id, reason }));
        self.drop_current(reason, out);
    }

    /// Tells the receiver the raft term it has seen (on every term change).
    /// A transfer from an older leader term is dropped.
    pub fn on_term(&mut self, term: u64) -> Vec<ReceiverAction> {
        let mut out = Vec::new();
        if term <= self.term {
            return out;
        }
        self.term = term;
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.id.leader_term < term)
        {
            self.drop_current(AbortReason::Superseded, &mut out);
        }
        out
    }

    /// Handles a message from a sender.
    pub fn on_message(&mut self, msg: TransferMsg) -> Vec<ReceiverAction> {
        let mut out = Vec::new();
        let id = *msg.id();
        if id.leader_term < self.term {
            self.stats.stale_messages += 1;
            // Tell an old leader to stop, unless it is already stopping.
            if !matches!(msg, TransferMsg::Abort { .. }) {
                out.push(ReceiverAction::Send(TransferMsg::Abort {
                    id,
                    reason: AbortReason::Superseded,
                }));
            }
            return out;
        }
        self.on_term(id.leader_term)
            .into_iter()
            .for_each(|a| out.push(a));
        let is_current = self.current.as_ref().is_some_and(|c| c.id == id);
        match msg {
            TransferMsg::Offer { manifest, .. } => {
                if is_current {
                    let c = self.current.as_mut().expect("current");
                    c.idle_ticks = 0;
                    match c.state {
                        State::Receiving => {
                            out.push(ReceiverAction::Send(TransferMsg::Accept { id }))
                        }
                        State::Done => out.push(ReceiverAction::Send(TransferMsg::Done { id })),
                        // Still verifying (a long re-read for a large
                        // snapshot): tell the sender it is being worked on.
                        State::Verifying => {
                            out.push(ReceiverAction::Send(TransferMsg::Accept { id }));
                        }
                        State::Beginning => {}
                    }
                    return out;
                }
                if let Some(c) = &self.current {
                    if !id.supersedes(&c.id) {
                        self.stats.stale_messages += 1;
                        out.push(ReceiverAction::Send(TransferMsg::Abort {
                            id,
                            reason: AbortReason::Superseded,
                        }));
                        return out;
                    }
                    self.stats.superseded += 1;
                    self.drop_current(AbortReason::Superseded, &mut out);
                }
                let manifest = match Manifest::decode(&manifest) {
                    Ok(m) if (m.index, m.term) == (id.index, id.term) => m,
                    Ok(_) | Err(_) => {
                        warn!(?id, "invalid snapshot offer");
                        out.push(ReceiverAction::Send(TransferMsg::Abort {
                            id,
                            reason: AbortReason::BadOffer,
                        }));
                        return out;
                    }
                };
                debug!(?id, chunks = manifest.chunk_count, "snapshot offer");
                let n = manifest.chunk_count as usize;
                self.current = Some(Current {
                    id,
                    manifest: manifest.clone(),
                    state: State::Beginning,
                    requested: vec![false; n],
                    staged: vec![false; n],
                    staged_count: 0,
                    idle_ticks: 0,
                });
                out.push(ReceiverAction::Begin { id, manifest });
            }
            TransferMsg::Chunk {
                chunk_no, bytes, ..
            } => {
                let Some(c) = self.current.as_mut().filter(|_| is_current) else {
                    self.stats.stale_messages += 1;
                    return out;
                };
                c.idle_ticks = 0;
                match c.state {
                    State::Receiving | State::Verifying | State::Done => {}
                    State::Beginning => return out,
                }
                if chunk_no >= c.manifest.chunk_count
                    || check_chunk_belongs(&c.manifest, chunk_no, &bytes).is_err()
                {
                    self.stats.chunks_rejected += 1;
                    out.push(ReceiverAction::Send(TransferMsg::Reject { id, chunk_no }));
                    return out;
                }
                let i = chunk_no as usize;
                // Once verifying or done every chunk is staged (and the
                // per-chunk flags may be freed): a late copy is acked again.
                if matches!(c.state, State::Verifying | State::Done) || c.staged[i] {
                    self.stats.chunks_duplicate += 1;
                    out.push(ReceiverAction::Send(TransferMsg::Ack { id, chunk_no }));
                } else if c.requested[i] {
                    // A retransmission while the first copy is being staged:
                    // its ack follows from `on_staged`. Meanwhile tell the
                    // sender its chunks are being written (a slow fsync is
                    // not a loss).
                    self.stats.chunks_duplicate += 1;
                    out.push(ReceiverAction::Send(TransferMsg::Accept { id }));
                } else {
                    c.requested[i] = true;
                    out.push(ReceiverAction::Stage {
                        id,
                        chunk_no,
                        bytes,
                    });
                }
            }
            TransferMsg::Abort { reason, .. } => {
                if is_current {
                    self.drop_current(reason, &mut out);
                } else {
                    self.stats.stale_messages += 1;
                }
            }
            TransferMsg::Accept { .. }
            | TransferMsg::Ack { .. }
            | TransferMsg::Reject { .. }
            | TransferMsg::Done { .. } => {
                // Sender-bound messages sent to a receiver: ignore.
                self.stats.stale_messages += 1;
            }
        }
        out
    }

    /// Result of a [`ReceiverAction::Begin`].
    pub fn on_begun(&mut self, id: TransferId, result: Result<()>) -> Vec<ReceiverAction> {
        let mut out = Vec::new();
        let Some(c) = self
            .current
            .as_mut()
            .filter(|c| c.id == id && c.state == State::Beginning)
        else {
            return out;
        };
        match result {
            Ok(()) => {
                c.state = State::Receiving;
                out.push(ReceiverAction::Send(TransferMsg::Accept { id }));
                if c.manifest.chunk_count == 0 {
                    c.state = State::Verifying;
                    out.push(ReceiverAction::Verify { id });
                }
            }
            Err(e) => {
                warn!(?id, error = %e, "could not begin staging");
                self.abort_current(id, AbortReason::ReceiverIo, &mut out);
            }
        }
        out
    }

    /// Result of a [`ReceiverAction::Stage`].
    ///
    /// Results must come back in the order the actions were handed out (one
    /// IO thread does them in turn), so that a staging begun for a dropped
    /// transfer completes before a new transfer with the same id has begun
    /// and is ignored. A result for a chunk the current transfer never asked
    /// for is a caller bug: it is logged as an error and the transfer is
    /// aborted (the sender starts over), rather than taking the replica down.
    pub fn on_staged(
        &mut self,
        id: TransferId,
        chunk_no: u32,
        result: Result<()>,
    ) -> Vec<ReceiverAction> {
        let mut out = Vec::new();
        let Some(c) = self
            .current
            .as_mut()
            .filter(|c| c.id == id && c.state == State::Receiving)
        else {
            return out;
        };
        let i = chunk_no as usize;
        if !c.requested.get(i).copied().unwrap_or(false) {
            self.stats.staged_unrequested += 1;
            tracing::error!(
                ?id,
                chunk_no,
                "a chunk was reported staged that this transfer never asked to stage \
                 (a bug in the caller's IO ordering); aborting the transfer"
            );
            self.abort_current(id, AbortReason::ReceiverIo, &mut out);
            return out;
        }
        if let Err(e) = result {
            warn!(?id, chunk_no, error = %e, "could not stage chunk");
            self.abort_current(id, AbortReason::ReceiverIo, &mut out);
            return out;
        }
        if !c.staged[i] {
            c.staged[i] = true;
            c.staged_count += 1;
        }
        out.push(ReceiverAction::Send(TransferMsg::Ack { id, chunk_no }));
        if c.staged_count == c.manifest.chunk_count {
            c.state = State::Verifying;
            out.push(ReceiverAction::Verify { id });
        }
        out
    }

    /// Result of a [`ReceiverAction::Verify`].
    pub fn on_verified(&mut self, id: TransferId, result: Result<()>) -> Vec<ReceiverAction> {
        let mut out = Vec::new();
        let Some(c) = self
            .current
            .as_mut()
            .filter(|c| c.id == id && c.state == State::Verifying)
        else {
            return out;
        };
        match result {
            Ok(()) => {
                c.state = State::Done;
                // Staging memory is no longer needed.
                c.requested = Vec::new();
                c.staged = Vec::new();
                out.push(ReceiverAction::Send(TransferMsg::Done { id }));
                out.push(ReceiverAction::Complete { id });
            }
            Err(e) => {
                warn!(?id, error = %e, "staged snapshot failed verification");
                // The staging area is already gone (Staging::finish removes
                // it on failure); Discard is harmless if so.
                self.abort_current(id, AbortReason::VerifyFailed, &mut out);
            }
        }
        out
    }

    /// Advances time by one tick; drops a transfer that went quiet.
    pub fn tick(&mut self) -> Vec<ReceiverAction> {
        let mut out = Vec::new();
        if let Some(c) = self.current.as_mut() {
            if matches!(c.state, State::Receiving | State::Beginning) {
                c.idle_ticks += 1;
                if c.idle_ticks >= self.cfg.idle_timeout_ticks {
                    self.drop_current(AbortReason::TimedOut, &mut out);
                }
            }
        }
        out
    }

    /// Drops the current transfer (shutdown, or the node learned by other
    /// means that it is not needed).
    pub fn cancel(&mut self) -> Vec<ReceiverAction> {
        let mut out = Vec::new();
        if let Some(id) = self.current() {
            if !self.is_idle() {
                out.push(ReceiverAction::Send(TransferMsg::Abort {
                    id,
                    reason: AbortReason::Cancelled,
                }));
            }
        }
        self.drop_current(AbortReason::Cancelled, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use tandem_raft::ConfState;

    use super::*;
    use crate::format::{encode_chunk, encode_pair};

    fn id() -> TransferId {
        TransferId {
            leader_term: 3,
            from: 1,
            index: 5,
            term: 2,
            attempt: 0,
        }
    }

    /// A manifest and its two chunks.
    fn snapshot() -> (Manifest, Vec<Vec<u8>>) {
        let chunks: Vec<Vec<u8>> = (0..2u8)
            .map(|n| {
                let mut p = Vec::new();
                encode_pair(&mut p, &[n], b"v");
                encode_chunk(5, 2, u32::from(n), 1, &p)
            })
            .collect();
        let mut h = crc32fast::Hasher::new();
        chunks.iter().for_each(|c| h.update(c));
        let m = Manifest {
            index: 5,
            term: 2,
            conf_state: ConfState::from_voters([1, 2]),
            chunk_count: 2,
            total_bytes: chunks.iter().map(|c| c.len() as u64).sum(),
            pair_count: 2,
            checksum: h.finalize(),
        };
        (m, chunks)
    }

    fn offer(id: TransferId, m: &Manifest) -> TransferMsg {
        TransferMsg::Offer {
            id,
            manifest: m.encode(),
        }
    }

    fn send(msg: TransferMsg) -> ReceiverAction {
        ReceiverAction::Send(msg)
    }

    /// What the receiver does when it aborts the current transfer `id()`.
    fn aborted(reason: AbortReason) -> Vec<ReceiverAction> {
        vec![
            send(TransferMsg::Abort { id: id(), reason }),
            ReceiverAction::Discard { id: id() },
            ReceiverAction::Failed { id: id(), reason },
        ]
    }

    fn started(r: &mut Receiver, m: &Manifest) {
        let a = r.on_message(offer(id(), m));
        assert_eq!(
            a,
            vec![ReceiverAction::Begin {
                id: id(),
                manifest: m.clone()
            }]
        );
        assert_eq!(
            r.on_begun(id(), Ok(())),
            vec![send(TransferMsg::Accept { id: id() })]
        );
    }

    #[test]
    fn a_staging_result_for_a_chunk_never_asked_for_aborts_the_transfer() {
        let (m, _) = snapshot();
        for chunk_no in [1, 1000] {
            let mut r = Receiver::new(ReceiverConfig::default()).unwrap();
            started(&mut r, &m);
            // Chunk 1 was never received, so never handed out to stage; 1000
            // is not a chunk of this snapshot at all.
            assert_eq!(
                r.on_staged(id(), chunk_no, Ok(())),
                aborted(AbortReason::ReceiverIo)
            );
            assert!(r.is_idle(), "chunk {chunk_no}");
            assert_eq!(r.stats().staged_unrequested, 1);
        }
    }

    /// A transfer dropped while a chunk is being staged and then offered
    /// again under the same id: the old staging's completion, reported in
    /// order (before the new staging has begun), is ignored, and the new
    /// transfer stages that chunk itself. (Out of order, the old completion
    /// would reach the new transfer, which never asked for the chunk: the
    /// receiver treats that as a caller bug and aborts the transfer.)
    #[test]
    fn an_old_staging_completion_after_a_reoffer_of_the_same_id_is_ignored() {
        let (m, chunks) = snapshot();
        let mut r = Receiver::new(ReceiverConfig {
            idle_timeout_ticks: 2,
        })
        .unwrap();
        started(&mut r, &m);
        let chunk0 = TransferMsg::Chunk {
            id: id(),
            chunk_no: 0,
            bytes: chunks[0].clone(),
        };
        assert!(matches!(
            &r.on_message(chunk0.clone())[..],
            [ReceiverAction::Stage { chunk_no: 0, .. }]
        ));
        // The sender goes quiet: the transfer is dropped mid-staging.
        r.tick();
        let dropped = r.tick();
        assert!(dropped.contains(&ReceiverAction::Discard { id: id() }));
        // The same transfer is offered again, then the old completion (and
        // the discard's) come back in the order they were handed out.
        assert!(matches!(
            &r.on_message(offer(id(), &m))[..],
            [ReceiverAction::Begin { .. }]
        ));
        assert!(
            r.on_staged(id(), 0, Ok(())).is_empty(),
            "a stale completion"
        );
        assert_eq!(
            r.on_begun(id(), Ok(())),
            vec![send(TransferMsg::Accept { id: id() })]
        );
        // Chunk 0 is not taken as staged: its next copy is staged anew.
        assert!(matches!(
            &r.on_message(chunk0)[..],
            [ReceiverAction::Stage { chunk_no: 0, .. }]
        ));
    }

    #[test]
    fn happy_path_acks_only_after_staging_and_done_only_after_verify() {
        let (m, chunks) = snapshot();
        let mut r = Receiver::new(ReceiverConfig::default()).unwrap();
        started(&mut r, &m);
        let chunk = |n: u32| TransferMsg::Chunk {
            id: id(),
            chunk_no: n,
            bytes: chunks[n as usize].clone(),
        };
        let a = r.on_message(chunk(1));
        assert!(matches!(
            &a[..],
            [ReceiverAction::Stage { chunk_no: 1, .. }]
        ));
        // A copy arriving while the first is being staged: no second Stage,
        // only a sign of life for the sender.
        assert_eq!(
            r.on_message(chunk(1)),
            vec![send(TransferMsg::Accept { id: id() })]
        );
        assert_eq!(
            r.on_staged(id(), 1, Ok(())),
            vec![send(TransferMsg::Ack {
                id: id(),
                chunk_no: 1
            })]
        );
        // Staged already: acked again at once.
        assert_eq!(
            r.on_message(chunk(1)),
            vec![send(TransferMsg::Ack {
                id: id(),
                chunk_no: 1
            })]
        );
        r.on_message(chunk(0));
        assert_eq!(
            r.on_staged(id(), 0, Ok(())),
            vec![
                send(TransferMsg::Ack {
                    id: id(),
                    chunk_no: 0
                }),
                ReceiverAction::Verify { id: id() }
            ]
        );
        assert!(!r.is_idle());
        // A repeated offer while verifying: still working.
        assert_eq!(
            r.on_message(offer(id(), &m)),
            vec![send(TransferMsg::Accept { id: id() })]
        );
        assert_eq!(
            r.on_verified(id(), Ok(())),
            vec![
                send(TransferMsg::Done { id: id() }),
                ReceiverAction::Complete { id: id() }
            ]
        );
        assert!(r.is_idle());
        // A late chunk and a repeated offer (sender probing for a lost Done).
        assert_eq!(
            r.on_message(chunk(0)),
            vec![send(TransferMsg::Ack {
                id: id(),
                chunk_no: 0
            })]
        );
        assert_eq!(
            r.on_message(offer(id(), &m)),
            vec![send(TransferMsg::Done { id: id() })]
        );
        assert_eq!(r.stats().chunks_duplicate, 3);
    }

    #[test]
    fn damaged_or_misplaced_chunk_is_rejected() {
        let (m, chunks) = snapshot();
        let mut r = Receiver::new(ReceiverConfig::default()).unwrap();
        started(&mut r, &m);
        let mut bad = chunks[0].clone();
        bad[41] ^= 1;
        for (n, bytes) in [(0, bad), (1, chunks[0].clone()), (7, chunks[0].clone())] {
            assert_eq!(
                r.on_message(TransferMsg::Chunk {
                    id: id(),
                    chunk_no: n,
                    bytes
                }),
                vec![send(TransferMsg::Reject {
                    id: id(),
                    chunk_no: n
                })]
            );
        }
        assert_eq!(r.stats().chunks_rejected, 3);
    }

    #[test]
    fn offer_whose_manifest_does_not_match_is_refused() {
        let (m, _) = snapshot();
        let mut r = Receiver::new(ReceiverConfig::default()).unwrap();
        let wrong = TransferId { index: 6, ..id() };
        assert_eq!(
            r.on_message(offer(wrong, &m)),
            vec![send(TransferMsg::Abort {
                id: wrong,
                reason: AbortReason::BadOffer
            })]
        );
        let garbage = TransferMsg::Offer {
            id: id(),
            manifest: vec![1, 2, 3],
        };
        assert!(matches!(
            &r.on_message(garbage)[..],
            [ReceiverAction::Send(TransferMsg::Abort {
                reason: AbortReason::BadOffer,
                ..
            })]
        ));
        assert!(r.is_idle());
    }

    #[test]
    fn staging_failure_aborts_and_discards() {
        let (m, chunks) = snapshot();
        let mut r = Receiver::new(ReceiverConfig::default()).unwrap();
        started(&mut r, &m);
        r.on_message(TransferMsg::Chunk {
            id: id(),
            chunk_no: 0,
            bytes: chunks[0].clone(),
        });
        let a = r.on_staged(id(), 0, Err(Error::InvalidState("disk full".into())));
        assert_eq!(a, aborted(AbortReason::ReceiverIo));
        assert!(r.is_idle());
        assert_eq!(r.current(), None);
    }

    #[test]
    fn idle_timeout_also_covers_a_begin_that_never_completes() {
        let (m, _) = snapshot();
        let mut r = Receiver::new(ReceiverConfig {
            idle_timeout_ticks: 3,
        })
        .unwrap();
        r.on_message(offer(id(), &m));
        assert!(r.tick().is_empty());
        assert!(r.tick().is_empty());
        assert_eq!(
            r.tick(),
            vec![
                ReceiverAction::Discard { id: id() },
                ReceiverAction::Failed {
                    id: id(),
                    reason: AbortReason::TimedOut
                }
            ]
        );
        // The late result of the begin is ignored.
        assert!(r.on_begun(id(), Ok(())).is_empty());
        assert!(Receiver::new(ReceiverConfig {
            idle_timeout_ticks: 0
        })
        .is_err());
    }

    #[test]
    fn cancel_tells_the_sender_and_discards() {
        let (m, _) = snapshot();
        let mut r = Receiver::new(ReceiverConfig::default()).unwrap();
        assert!(r.cancel().is_empty());
        started(&mut r, &m);
        assert_eq!(r.cancel(), aborted(AbortReason::Cancelled));
    }

    #[test]
    fn newer_term_supersedes_and_older_is_told_to_stop() {
        let (m, _) = snapshot();
        let mut r = Receiver::new(ReceiverConfig::default()).unwrap();
        started(&mut r, &m);
        let newer = TransferId {
            leader_term: 4,
            from: 2,
            ..id()
        };
        let a = r.on_message(offer(newer, &m));
        assert_eq!(
            a,
            vec![
                ReceiverAction::Discard { id: id() },
                ReceiverAction::Failed {
                    id: id(),
                    reason: AbortReason::Superseded
                },
                ReceiverAction::Begin {
                    id: newer,
                    manifest: m.clone()
                },
            ]
        );
        assert_eq!(
            r.on_message(TransferMsg::Ack {
                id: id(),
                chunk_no: 0
            }),
            vec![send(TransferMsg::Abort {
                id: id(),
                reason: AbortReason::Superseded
            })]
        );
        assert_eq!(r.current(), Some(newer));
    }
}
