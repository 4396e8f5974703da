//! Snapshot transfers of one replica, as part of the step function.
//!
//! The pure transfer state machines of `tandem-snapshot` ([`Sender`],
//! [`Receiver`]) live inside [`crate::node::NodeCore`]: raft ticks drive
//! their timeouts, transfer frames come in through `NodeCore::step`, and
//! everything they want done leaves as effects — frames to send
//! ([`crate::node::Effects::transfer`]) and disk work
//! ([`crate::node::Effects::snapshot_jobs`]) that the runtime performs on
//! background threads and reports back as [`SnapshotEvent`]s. Nothing here
//! touches a disk or a clock, so a single-threaded simulator can drive it.
//!
//! Leader side: raft asks its storage for a snapshot; the storage answers
//! from the [`SnapshotCatalog`] (the latest snapshot published under
//! `snap/`) or records a request, which the core turns into a
//! [`SnapshotJob::Build`]. When raft then emits a `MsgSnapshot` for a peer,
//! the core keeps the message (metadata only, its `data` set to the
//! [`TransferId`]) and starts a [`Sender`]; the message is delivered once
//! the follower reports the snapshot staged and verified, followed by
//! `report_snapshot(Finish)` — or `report_snapshot(Failure)` if the
//! transfer fails.
//!
//! Follower side: a [`Receiver`] stages the chunks under `snap/`. When the
//! `MsgSnapshot` arrives and raft would restore from it, the core asks for
//! [`SnapshotJob::Install`] (switch the state machine to the snapshot) and
//! holds the message; while the install runs, appends and other snapshots
//! from the leader are dropped (raft resends them). Once installed, the
//! message is stepped into raft, which restores its log from the snapshot
//! metadata; the WAL is reset to the snapshot point when that `Ready` is
//! persisted.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use tandem_raft::{Message, SnapshotMetadata};
use tandem_snapshot::{
    AbortReason, Manifest, Receiver, ReceiverAction, Sender, SenderAction, TransferId, TransferMsg,
};

use crate::config::SnapshotConfig;

/// The snapshot raft's storage can offer, shared by the storage (which raft
/// asks) and the core (which builds snapshots on request).
#[derive(Debug, Default)]
pub struct SnapshotCatalog {
    inner: Mutex<CatalogState>,
}

#[derive(Debug, Default)]
struct CatalogState {
    latest: Option<SnapshotMetadata>,
    /// The least index a snapshot was asked for and not available at.
    wanted: Option<u64>,
}

impl SnapshotCatalog {
    /// A catalog offering `latest` (e.g. the newest snapshot found in
    /// `snap/` at startup).
    #[must_use]
    pub fn new(latest: Option<SnapshotMetadata>) -> Self {
        SnapshotCatalog {
            inner: Mutex::new(CatalogState {
                latest,
                wanted: None,
            }),
        }
    }

    /// The latest complete local snapshot.
    #[must_use]
    pub fn latest(&self) -> Option<SnapshotMetadata> {
        self.inner.lock().latest.clone()
    }

    /// Record a newer complete local snapshot.
    pub fn set_latest(&self, meta: SnapshotMetadata) {
        let mut st = self.inner.lock();
        if st.latest.as_ref().is_none_or(|l| l.index <= meta.index) {
            if st.wanted.is_some_and(|w| w <= meta.index) {
                st.wanted = None;
            }
            st.latest = Some(meta);
        }
    }

    /// The latest snapshot if it covers index `need`; otherwise `None`,
    /// and a build is requested.
    pub fn get_or_request(&self, need: u64) -> Option<SnapshotMetadata> {
        let mut st = self.inner.lock();
        match &st.latest {
            Some(l) if l.index >= need && l.index > 0 => Some(l.clone()),
            _ => {
                st.wanted = Some(need);
                None
            }
        }
    }

    /// Take the pending build request, if any.
    pub fn take_request(&self) -> Option<u64> {
        self.inner.lock().wanted.take()
    }
}

/// Disk work of snapshots, performed by the runtime off the raft loop and
/// answered with the matching [`SnapshotEvent`].
#[derive(Debug)]
pub enum SnapshotJob {
    /// Build a snapshot of the state machine at its applied index and
    /// publish it under `snap/`. Answer: [`SnapshotEvent::Built`].
    Build,
    /// Read chunk `chunk_no` of the local snapshot `(id.index, id.term)` and
    /// send it to `to` as a [`TransferMsg::Chunk`]. Answer only on failure:
    /// [`SnapshotEvent::ChunkUnreadable`].
    SendChunk {
        /// Receiving replica.
        to: u64,
        /// The transfer.
        id: TransferId,
        /// Chunk position.
        chunk_no: u32,
    },
    /// Start staging `manifest` (drops any other staging). Answer:
    /// [`SnapshotEvent::Begun`].
    Begin {
        /// The transfer.
        id: TransferId,
        /// Its manifest.
        manifest: Manifest,
    },
    /// Write a verified chunk durably. Answer: [`SnapshotEvent::Staged`].
    Stage {
        /// The transfer.
        id: TransferId,
        /// Chunk position.
        chunk_no: u32,
        /// The chunk, as received.
        bytes: Vec<u8>,
    },
    /// Verify the whole staged snapshot and publish it. Answer:
    /// [`SnapshotEvent::Verified`].
    Verify {
        /// The transfer.
        id: TransferId,
    },
    /// Drop the staging of `id`. No answer.
    Discard {
        /// The transfer.
        id: TransferId,
    },
    /// Install the published snapshot `(id.index, id.term)` into the state
    /// machine. Answer: [`SnapshotEvent::Installed`].
    Install {
        /// The transfer it came with.
        id: TransferId,
    },
}

/// Outcome of a [`SnapshotJob`], fed back with
/// [`crate::node::NodeCore::on_snapshot_event`].
#[derive(Debug)]
pub enum SnapshotEvent {
    /// A build finished: the manifest of the published snapshot, or why not.
    Built(Result<Manifest, String>),
    /// A chunk of a local snapshot could not be read for sending.
    ChunkUnreadable {
        /// The receiving replica.
        to: u64,
        /// The transfer.
        id: TransferId,
    },
    /// Answer to [`SnapshotJob::Begin`].
    Begun {
        /// The transfer.
        id: TransferId,
        /// The staging result.
        result: tandem_snapshot::Result<()>,
    },
    /// Answer to [`SnapshotJob::Stage`].
    Staged {
        /// The transfer.
        id: TransferId,
        /// Chunk position.
        chunk_no: u32,
        /// The write result.
        result: tandem_snapshot::Result<()>,
    },
    /// Answer to [`SnapshotJob::Verify`].
    Verified {
        /// The transfer.
        id: TransferId,
        /// The verification result.
        result: tandem_snapshot::Result<()>,
    },
    /// Answer to [`SnapshotJob::Install`].
    Installed {
        /// The transfer.
        id: TransferId,
        /// The install result.
        result: Result<(), String>,
    },
}

/// Counters of snapshot work, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCounters {
    /// Builds asked for.
    pub builds_started: u64,
    /// Builds that published a snapshot.
    pub builds_done: u64,
    /// Transfers started as sender.
    pub sends_started: u64,
    /// Transfers that ended with the follower holding the snapshot.
    pub sends_done: u64,
    /// Transfers given up as sender (timeouts, leader change, aborts).
    pub sends_failed: u64,
    /// Chunk frames rejected by this replica as receiver (bad CRC...).
    pub chunks_rejected: u64,
    /// Snapshots received, verified and published.
    pub received: u64,
    /// Snapshots installed into the state machine.
    pub installed: u64,
    /// Transfer frames that did not decode.
    pub frames_malformed: u64,
    /// Raft messages dropped while an install was running.
    pub dropped_while_installing: u64,
    /// Staging results for chunks never asked for (snapshot IO results
    /// out of order: a bug), each aborting a transfer. Always 0 unless a
    /// bug; the simulator checks it.
    pub staged_unrequested: u64,
}

/// An outgoing transfer and the raft message it delivers at the end.
#[derive(Debug)]
struct Outgoing {
    sender: Sender,
    held: Message,
}

/// A transfer as sender that ended: deliver `held` and report success, or
/// report failure.
#[derive(Debug)]
pub(crate) struct SendOutcome {
    pub peer: u64,
    pub held: Option<Message>,
}

/// The snapshot side of one replica's step function.
#[derive(Debug)]
pub(crate) struct Transfers {
    id: u64,
    cfg: SnapshotConfig,
    pub(crate) catalog: std::sync::Arc<SnapshotCatalog>,
    /// Manifest of the latest local snapshot, for offers.
    latest: Option<Manifest>,
    senders: BTreeMap<u64, Outgoing>,
    receiver: Receiver,
    attempt: u64,
    building: bool,
    /// The manifest of the transfer being received.
    incoming: Option<(TransferId, Manifest)>,
    /// A transfer received and published, waiting for its `MsgSnapshot`.
    completed: Option<(TransferId, Manifest)>,
    /// The `MsgSnapshot` whose snapshot is being installed.
    pub(crate) installing: Option<(Message, Manifest)>,
    /// Highest raft term reported to the receiver.
    term: u64,
    pub(crate) out: Vec<(u64, TransferMsg)>,
    pub(crate) jobs: Vec<SnapshotJob>,
    pub(crate) finished: Vec<SendOutcome>,
    pub(crate) counters: SnapshotCounters,
}

impl Transfers {
    pub(crate) fn new(
        id: u64,
        cfg: &SnapshotConfig,
        catalog: std::sync::Arc<SnapshotCatalog>,
        latest: Option<Manifest>,
    ) -> Self {
        Transfers {
            id,
            cfg: cfg.clone(),
            catalog,
            latest,
            senders: BTreeMap::new(),
            receiver: Receiver::new(cfg.receiver.clone()).expect("validated with the config"),
            attempt: 0,
            building: false,
            incoming: None,
            completed: None,
            installing: None,
            term: 0,
            out: Vec::new(),
            jobs: Vec::new(),
            finished: Vec::new(),
            counters: SnapshotCounters::default(),
        }
    }

    /// The counters, with those the receiver keeps itself.
    pub(crate) fn counters(&self) -> SnapshotCounters {
        SnapshotCounters {
            staged_unrequested: self.receiver.stats().staged_unrequested,
            ..self.counters
        }
    }

    /// True while a build is running.
    pub(crate) fn is_building(&self) -> bool {
        self.building
    }

    /// One raft tick.
    pub(crate) fn tick(&mut self) {
        let peers: Vec<u64> = self.senders.keys().copied().collect();
        for peer in peers {
            let acts = self
                .senders
                .get_mut(&peer)
                .map(|o| o.sender.tick())
                .unwrap_or_default();
            self.on_sender_actions(peer, acts);
        }
        let acts = self.receiver.tick();
        self.on_receiver_actions(acts);
    }

    /// Ask for a build if raft's storage wanted a snapshot it lacks.
    pub(crate) fn maybe_build(&mut self) {
        if let Some(need) = self.catalog.take_request() {
            if !self.building {
                tracing::info!(id = self.id, need, "building a snapshot");
                self.building = true;
                self.counters.builds_started += 1;
                self.jobs.push(SnapshotJob::Build);
            }
        }
    }

    /// The raft term is now `term`: stale incoming transfers are dropped.
    pub(crate) fn on_term(&mut self, term: u64) {
        if term > self.term {
            self.term = term;
            let acts = self.receiver.on_term(term);
            self.on_receiver_actions(acts);
        }
    }

    /// This replica stopped leading (or its term moved): every outgoing
    /// transfer is abandoned; the receivers are told.
    pub(crate) fn on_leadership(&mut self, term: u64, is_leader: bool) {
        let peers: Vec<u64> = self.senders.keys().copied().collect();
        for peer in peers {
            let acts = self
                .senders
                .get_mut(&peer)
                .map(|o| o.sender.on_leadership(term, is_leader))
                .unwrap_or_default();
            self.on_sender_actions(peer, acts);
        }
    }

    /// Raft emitted `m` (a `MsgSnapshot` to `m.to`) while leading in
    /// `leader_term`. Returns false if no transfer could be started (the
    /// caller reports the snapshot failed).
    pub(crate) fn start_send(&mut self, mut m: Message, leader_term: u64) -> bool {
        let to = m.to;
        let Some(meta) = m.snapshot.as_ref().map(|s| s.metadata.clone()) else {
            return false;
        };
        let manifest = match &self.latest {
            Some(l) if l.index == meta.index && l.term == meta.term => l.clone(),
            _ => {
                tracing::warn!(
                    id = self.id,
                    to,
                    index = meta.index,
                    "raft offered a snapshot that is not the latest local one"
                );
                return false;
            }
        };
        if let Some(old) = self.senders.remove(&to) {
            // Replaced: raft asked again (the old attempt is stale). Tell
            // the receiver; the old outcome is not reported.
            let mut sender = old.sender;
            for a in sender.abort(AbortReason::Cancelled) {
                if let SenderAction::Send(msg) = a {
                    self.out.push((to, msg));
                }
            }
        }
        self.attempt += 1;
        let id = TransferId {
            leader_term,
            from: self.id,
            index: meta.index,
            term: meta.term,
            attempt: self.attempt,
        };
        let mut sender = match Sender::new(id, &manifest, self.cfg.sender.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(id = self.id, to, error = %e, "cannot start a snapshot transfer");
                return false;
            }
        };
        if let Some(s) = m.snapshot.as_mut() {
            s.data = id.encode();
        }
        tracing::info!(
            id = self.id,
            to,
            index = id.index,
            attempt = id.attempt,
            chunks = manifest.chunk_count,
            "sending a snapshot"
        );
        self.counters.sends_started += 1;
        let acts = sender.start();
        self.senders.insert(to, Outgoing { sender, held: m });
        self.on_sender_actions(to, acts);
        true
    }

    /// A transfer frame from `from`.
    pub(crate) fn on_frame(&mut self, from: u64, bytes: &[u8]) {
        let msg = match TransferMsg::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.counters.frames_malformed += 1;
                tracing::debug!(id = self.id, from, error = %e, "malformed transfer frame");
                return;
            }
        };
        if msg.id().from == self.id {
            let acts = match self.senders.get_mut(&from) {
                Some(o) if o.sender.id() == *msg.id() => o.sender.on_message(&msg),
                _ => return,
            };
            self.on_sender_actions(from, acts);
        } else {
            if msg.id().from != from {
                // Frames of a transfer travel from its sender only.
                self.counters.frames_malformed += 1;
                return;
            }
            let acts = self.receiver.on_message(msg);
            self.on_receiver_actions(acts);
        }
    }

    fn on_sender_actions(&mut self, peer: u64, acts: Vec<SenderAction>) {
        for a in acts {
            match a {
                SenderAction::Send(m) => self.out.push((peer, m)),
                SenderAction::SendChunk(chunk_no) => {
                    if let Some(o) = self.senders.get(&peer) {
                        self.jobs.push(SnapshotJob::SendChunk {
                            to: peer,
                            id: o.sender.id(),
                            chunk_no,
                        });
                    }
                }
                SenderAction::Finished(r) => {
                    let Some(o) = self.senders.remove(&peer) else {
                        continue;
                    };
                    match r {
                        Ok(()) => {
                            tracing::info!(id = self.id, to = peer, "snapshot transfer done");
                            self.counters.sends_done += 1;
                            self.finished.push(SendOutcome {
                                peer,
                                held: Some(o.held),
                            });
                        }
                        Err(reason) => {
                            tracing::info!(
                                id = self.id,
                                to = peer,
                                ?reason,
                                "snapshot transfer failed"
                            );
                            self.counters.sends_failed += 1;
                            self.finished.push(SendOutcome { peer, held: None });
                        }
                    }
                }
            }
        }
    }

    fn on_receiver_actions(&mut self, acts: Vec<ReceiverAction>) {
        for a in acts {
            match a {
                ReceiverAction::Send(m) => {
                    if matches!(m, TransferMsg::Reject { .. }) {
                        self.counters.chunks_rejected += 1;
                    }
                    let to = m.id().from;
                    self.out.push((to, m));
                }
                ReceiverAction::Begin { id, manifest } => {
                    self.incoming = Some((id, manifest.clone()));
                    self.jobs.push(SnapshotJob::Begin { id, manifest });
                }
                ReceiverAction::Stage {
                    id,
                    chunk_no,
                    bytes,
                } => self.jobs.push(SnapshotJob::Stage {
                    id,
                    chunk_no,
                    bytes,
                }),
                ReceiverAction::Verify { id } => self.jobs.push(SnapshotJob::Verify { id }),
                ReceiverAction::Discard { id } => {
                    if self.incoming.as_ref().is_some_and(|(i, _)| *i == id) {
                        self.incoming = None;
                    }
                    self.jobs.push(SnapshotJob::Discard { id });
                }
                ReceiverAction::Complete { id } => {
                    tracing::info!(id = self.id, index = id.index, "snapshot received");
                    self.counters.received += 1;
                    if let Some((i, m)) = self.incoming.take() {
                        if i == id {
                            self.completed = Some((id, m));
                        }
                    }
                }
                ReceiverAction::Failed { id, reason } => {
                    tracing::info!(
                        id = self.id,
                        index = id.index,
                        ?reason,
                        "incoming snapshot failed"
                    );
                }
            }
        }
    }

    /// A snapshot job finished.
    pub(crate) fn on_event(&mut self, ev: SnapshotEvent) -> Option<InstallOutcome> {
        match ev {
            SnapshotEvent::Built(Ok(manifest)) => {
                self.building = false;
                self.counters.builds_done += 1;
                self.note_local(manifest);
            }
            SnapshotEvent::Built(Err(e)) => {
                self.building = false;
                tracing::warn!(id = self.id, error = %e, "snapshot build failed; raft will ask again");
            }
            SnapshotEvent::ChunkUnreadable { to, id } => {
                let acts = match self.senders.get_mut(&to) {
                    Some(o) if o.sender.id() == id => o.sender.abort(AbortReason::SenderIo),
                    _ => Vec::new(),
                };
                self.on_sender_actions(to, acts);
            }
            SnapshotEvent::Begun { id, result } => {
                let acts = self.receiver.on_begun(id, result);
                self.on_receiver_actions(acts);
            }
            SnapshotEvent::Staged {
                id,
                chunk_no,
                result,
            } => {
                let acts = self.receiver.on_staged(id, chunk_no, result);
                self.on_receiver_actions(acts);
            }
            SnapshotEvent::Verified { id, result } => {
                let acts = self.receiver.on_verified(id, result);
                self.on_receiver_actions(acts);
            }
            SnapshotEvent::Installed { id, result } => {
                let (msg, manifest) = self.installing.take()?;
                let decoded = msg
                    .snapshot
                    .as_ref()
                    .and_then(|s| TransferId::decode(&s.data).ok());
                if decoded != Some(id) {
                    tracing::warn!(id = self.id, "install report for another snapshot ignored");
                    self.installing = Some((msg, manifest));
                    return None;
                }
                return Some(match result {
                    Ok(()) => {
                        self.counters.installed += 1;
                        self.note_local(manifest);
                        InstallOutcome::Installed(Box::new(msg))
                    }
                    Err(e) => {
                        tracing::warn!(id = self.id, error = %e, "snapshot install failed");
                        InstallOutcome::Failed
                    }
                });
            }
        }
        None
    }

    /// A complete local snapshot: offer it from now on.
    fn note_local(&mut self, manifest: Manifest) {
        if self
            .latest
            .as_ref()
            .is_none_or(|l| l.index <= manifest.index)
        {
            self.catalog.set_latest(SnapshotMetadata {
                conf_state: manifest.conf_state.clone(),
                index: manifest.index,
                term: manifest.term,
            });
            self.latest = Some(manifest);
        }
    }

    /// The follower got `m` (a `MsgSnapshot`): if its snapshot was received
    /// here, start installing and keep the message. Returns the message
    /// back if it should be stepped into raft as it is.
    pub(crate) fn on_incoming_snapshot(&mut self, m: Message) -> Option<Message> {
        let id = m
            .snapshot
            .as_ref()
            .and_then(|s| TransferId::decode(&s.data).ok());
        let Some(id) = id else {
            tracing::warn!(
                id = self.id,
                from = m.from,
                "MsgSnapshot without a transfer id dropped"
            );
            return None;
        };
        match self.completed.take() {
            Some((done, manifest)) if done == id => {
                tracing::info!(id = self.id, index = id.index, "installing a snapshot");
                self.jobs.push(SnapshotJob::Install { id });
                self.installing = Some((m, manifest));
                None
            }
            other => {
                self.completed = other;
                tracing::info!(
                    id = self.id,
                    index = id.index,
                    "MsgSnapshot for a snapshot not received here dropped"
                );
                None
            }
        }
    }
}

/// How an install ended.
#[derive(Debug)]
pub(crate) enum InstallOutcome {
    /// The state machine holds the snapshot: step this message into raft.
    Installed(Box<Message>),
    /// Nothing changed.
    Failed,
}
