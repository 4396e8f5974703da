//! Thin shells that perform the disk actions of the transfer state
//! machines, so the engine only moves [`TransferMsg`]s and reacts to the
//! outcome. They do blocking disk IO (chunk reads and fsyncs; the final
//! verification re-reads the whole snapshot), so run them on a thread that
//! may block, not on the raft loop.

use std::collections::VecDeque;

use tracing::warn;

use super::{
    AbortReason, Receiver, ReceiverAction, ReceiverConfig, Sender, SenderAction, SenderConfig,
    TransferId, TransferMsg,
};
use crate::error::Result;
use crate::reader::SnapshotReader;
use crate::stage::{Stager, Staging};

/// A [`Sender`] bound to the snapshot it sends.
///
/// Memory: the state machine's per-chunk flags plus the chunk being read;
/// chunk bytes are read from disk when (re)sent and handed to the caller.
#[derive(Debug)]
pub struct SenderDriver {
    sender: Sender,
    reader: SnapshotReader,
}

/// Messages to send, and the outcome once the transfer is over.
pub type SenderOutput = (
    Vec<TransferMsg>,
    Option<std::result::Result<(), AbortReason>>,
);

impl SenderDriver {
    /// A driver sending `reader`'s snapshot under `id`.
    ///
    /// # Errors
    /// As [`Sender::new`].
    pub fn new(id: TransferId, reader: SnapshotReader, cfg: SenderConfig) -> Result<Self> {
        let sender = Sender::new(id, reader.manifest(), cfg)?;
        Ok(SenderDriver { sender, reader })
    }

    /// The state machine, for its id and counters.
    #[must_use]
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    fn run(&mut self, actions: Vec<SenderAction>) -> SenderOutput {
        let mut msgs = Vec::new();
        let mut finished = None;
        let mut queue: VecDeque<SenderAction> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                SenderAction::Send(m) => msgs.push(m),
                SenderAction::SendChunk(n) => match self.reader.read_chunk(n) {
                    Ok(bytes) => msgs.push(TransferMsg::Chunk {
                        id: self.sender.id(),
                        chunk_no: n,
                        bytes,
                    }),
                    Err(e) => {
                        warn!(chunk = n, error = %e, "cannot read snapshot chunk to send");
                        queue.clear();
                        queue.extend(self.sender.abort(AbortReason::SenderIo));
                    }
                },
                SenderAction::Finished(r) => finished = Some(r),
            }
        }
        (msgs, finished)
    }

    /// Sends the offer.
    pub fn start(&mut self) -> SenderOutput {
        let a = self.sender.start();
        self.run(a)
    }

    /// Handles a message from the receiver.
    pub fn on_message(&mut self, msg: &TransferMsg) -> SenderOutput {
        let a = self.sender.on_message(msg);
        self.run(a)
    }

    /// Advances time by one tick.
    pub fn tick(&mut self) -> SenderOutput {
        let a = self.sender.tick();
        self.run(a)
    }

    /// Reports the node's raft term and leadership; aborts on a change.
    pub fn on_leadership(&mut self, term: u64, is_leader: bool) -> SenderOutput {
        let a = self.sender.on_leadership(term, is_leader);
        self.run(a)
    }

    /// Ends the transfer (leader change, shutdown).
    pub fn abort(&mut self, reason: AbortReason) -> SenderOutput {
        let a = self.sender.abort(reason);
        self.run(a)
    }
}

/// What a [`ReceiverDriver`] reports besides messages.
#[derive(Debug)]
pub enum ReceiverEvent {
    /// A snapshot arrived, verified and published under `snap/`: install it.
    Completed {
        /// The transfer.
        id: TransferId,
        /// The published snapshot.
        snapshot: SnapshotReader,
    },
    /// A transfer ended without a snapshot; its staging area is gone.
    Failed {
        /// The transfer.
        id: TransferId,
        /// Why.
        reason: AbortReason,
    },
}

/// Messages to send back, and events.
pub type ReceiverOutput = (Vec<TransferMsg>, Vec<ReceiverEvent>);

/// A [`Receiver`] bound to the `snap/` directory it stages into.
#[derive(Debug)]
pub struct ReceiverDriver {
    receiver: Receiver,
    stager: Stager,
    staging: Option<Staging>,
    verified: Option<SnapshotReader>,
}

impl ReceiverDriver {
    /// A driver staging into `stager`.
    ///
    /// # Errors
    /// As [`Receiver::new`].
    pub fn new(stager: Stager, cfg: ReceiverConfig) -> Result<Self> {
        Ok(ReceiverDriver {
            receiver: Receiver::new(cfg)?,
            stager,
            staging: None,
            verified: None,
        })
    }

    /// The state machine, for its state and counters.
    #[must_use]
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// The stager, e.g. to list or prune snapshots.
    #[must_use]
    pub fn stager(&self) -> &Stager {
        &self.stager
    }

    fn discard(&mut self) {
        if let Some(s) = self.staging.take() {
            let dir = s.dir();
            if let Err(e) = s.abort() {
                // Recovery removes it at the next start.
                warn!(dir = %dir.display(), error = %e, "could not remove staging directory");
            }
        }
    }

    fn run(&mut self, actions: Vec<ReceiverAction>) -> ReceiverOutput {
        let mut msgs = Vec::new();
        let mut events = Vec::new();
        let mut queue: VecDeque<ReceiverAction> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                ReceiverAction::Send(m) => msgs.push(m),
                ReceiverAction::Begin { id, manifest } => {
                    self.discard();
                    let r = self.stager.begin(&manifest).map(|s| {
                        self.staging = Some(s);
                    });
                    queue.extend(self.receiver.on_begun(id, r));
                }
                ReceiverAction::Stage {
                    id,
                    chunk_no,
                    bytes,
                } => {
                    let r = match self.staging.as_mut() {
                        Some(s) => s.write_chunk(chunk_no, &bytes),
                        None => Err(crate::Error::InvalidState("no staging area".into())),
                    };
                    queue.extend(self.receiver.on_staged(id, chunk_no, r));
                }
                ReceiverAction::Verify { id } => {
                    let r = match self.staging.take() {
                        Some(s) => s.finish().map(|reader| {
                            self.verified = Some(reader);
                        }),
                        None => Err(crate::Error::InvalidState("no staging area".into())),
                    };
                    queue.extend(self.receiver.on_verified(id, r));
                }
                ReceiverAction::Discard { .. } => self.discard(),
                ReceiverAction::Complete { id } => {
                    let snapshot = self
                        .verified
                        .take()
                        .expect("Complete without a verified snapshot");
                    events.push(ReceiverEvent::Completed { id, snapshot });
                }
                ReceiverAction::Failed { id, reason } => {
                    events.push(ReceiverEvent::Failed { id, reason })
                }
            }
        }
        (msgs, events)
    }

    /// Handles a message from a sender.
    pub fn on_message(&mut self, msg: TransferMsg) -> ReceiverOutput {
        let a = self.receiver.on_message(msg);
        self.run(a)
    }

    /// Reports the raft term seen (call on every term change).
    pub fn on_term(&mut self, term: u64) -> ReceiverOutput {
        let a = self.receiver.on_term(term);
        self.run(a)
    }

    /// Advances time by one tick.
    pub fn tick(&mut self) -> ReceiverOutput {
        let a = self.receiver.tick();
        self.run(a)
    }

    /// Drops the current transfer.
    pub fn cancel(&mut self) -> ReceiverOutput {
        let a = self.receiver.cancel();
        self.run(a)
    }
}
