//! The threads around the step function: a thin shell.
//!
//! - **raft loop** (`tandem-raft-<id>`): waits for any input — a client
//!   command, an incoming envelope, a WAL durability report, an apply
//!   report, a tick — then drains everything else already queued (so one
//!   `Ready` batches all pending proposals and messages), polls
//!   [`NodeCore`], and carries out the effects without waiting: messages go
//!   to the transport, entries and hard state to the [`LogWriter`], and
//!   committed entries to the apply thread.
//! - **WAL writer**: owned by the [`LogWriter`] (the WAL's own group-commit
//!   thread); once a task is durable it sends the messages that waited for
//!   it (a follower's acknowledgement) straight to the transport, then
//!   reports durability to the raft loop ([`Durability`]).
//! - **apply thread** (`tandem-apply-<id>`): applies committed entries
//!   through the [`Applier`] — everything queued when it gets to it, as one
//!   call (one state-machine batch) — completes the waiting proposals with
//!   their results, and reports the applied index back to the raft loop.
//!
//! Shutdown completes every request still in flight with
//! [`Error::ShuttingDown`]; nothing waits forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use parking_lot::Mutex;
use tandem_raft::{ConfChangeV2, Entry, EntryType, MemStorage, Storage};
use tandem_snapshot::{Manifest, TransferMsg};

use super::core::{ApplyTask, NodeCore, NodeStatus, PersistTask};
use super::oneshot;
use super::proposals::{CommittedProposal, Responder};
use super::snapshots::{SnapshotEvent, SnapshotJob};
use crate::config::{Config, ReadConsistency};
use crate::error::{Error, Result};
use crate::transport::{Envelope, Inbox, Payload, Transport};

/// Where a [`LogWriter`] reports a durable task: it sends the task's
/// [messages](PersistTask::messages) to the transport, then tells the raft
/// loop. Cheap to clone; callable from any thread (typically the WAL's
/// writer thread, in its completion callback).
#[derive(Clone)]
pub struct Durability {
    done: Sender<u64>,
    transport: Arc<dyn Transport>,
    cluster_id: u64,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl Durability {
    /// Report durability on `done` (the raft loop's channel), sending the
    /// tasks' messages through `transport` as `cluster_id`'s.
    #[must_use]
    pub fn new(done: Sender<u64>, transport: Arc<dyn Transport>, cluster_id: u64) -> Self {
        Durability {
            done,
            transport,
            cluster_id,
        }
    }

    /// Task `number` is durable, with everything submitted before it: send
    /// `messages` (its [`PersistTask::messages`]), then report it.
    ///
    /// A message the transport refuses is dropped: raft retransmits, and
    /// only a leader's own sends (which never travel this way) feed its
    /// view of unreachable peers.
    pub fn report(&self, number: u64, messages: Vec<tandem_raft::Message>) {
        for m in messages {
            let _ = self.transport.send(Envelope::raft(self.cluster_id, m));
        }
        // The raft loop may be gone (shutdown): nobody waits any more.
        let _ = self.done.send(number);
    }
}

/// Makes [`PersistTask`]s durable, in submission order, and reports each
/// task through [`Durability::report`] once it is (never before). A
/// [lazy](PersistTask::lazy) task is written in order but needs no sync of
/// its own and is not reported.
pub trait LogWriter: Send + 'static {
    /// Start persisting `task`. With `write_here`, the calling thread may
    /// write and sync it itself and return once it is durable, instead of
    /// handing it to a writer thread (see `RaftLoop::carry_out`).
    ///
    /// # Errors
    /// If the log can no longer accept writes (e.g. an fsync failed: the
    /// log is poisoned). The replica then stops.
    fn submit(&mut self, task: PersistTask, durable: &Durability, write_here: bool) -> Result<()>;

    /// Drop log entries below `first_index`, after everything submitted so
    /// far (the core asks only up to the durable applied index).
    ///
    /// # Errors
    /// If the log refuses (e.g. it is poisoned). The replica then stops.
    fn compact(&mut self, first_index: u64) -> Result<()> {
        let _ = first_index;
        Ok(())
    }

    /// Why the log can no longer be written, once it cannot (e.g. a failed
    /// fsync poisoned it, on whichever thread wrote); `None` while healthy.
    /// The raft loop checks it before every step: the raft core treats a
    /// failed read of the log as fatal, and a poisoned log fails reads too.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// A [`LogWriter`] over raft's in-memory storage: "durable" at once. For
/// tests of the runtime only — it survives no restart.
#[derive(Clone, Debug)]
pub struct MemLogWriter(pub MemStorage);

impl LogWriter for MemLogWriter {
    fn submit(&mut self, task: PersistTask, durable: &Durability, _write_here: bool) -> Result<()> {
        let mut w = self.0.wl();
        if let Some(snap) = task.snapshot {
            w.apply_snapshot(snap)?;
        }
        if !task.entries.is_empty() {
            w.append(&task.entries)?;
        }
        if let Some(hs) = task.hard_state {
            w.set_hard_state(hs);
        }
        drop(w);
        if !task.lazy {
            durable.report(task.number, task.messages);
        }
        Ok(())
    }

    fn compact(&mut self, first_index: u64) -> Result<()> {
        Ok(self.0.wl().compact(first_index)?)
    }
}

/// The state-machine side of snapshots and compaction, for the runtime's
/// background threads: heavy IO that must not run on the raft loop. The
/// runtime calls the flush and build methods from one maintenance thread
/// and the transfer methods from one snapshot IO thread, each in order.
pub trait SnapshotHost: Send + Sync + 'static {
    /// Make everything applied so far survive a power loss; returns the
    /// durable applied index.
    ///
    /// # Errors
    /// Storage errors (the durable index is then unchanged).
    fn flush_durable(&self) -> Result<u64>;

    /// Build a snapshot of the state machine at its applied index while
    /// applying continues, publish it, and return its manifest.
    ///
    /// # Errors
    /// Why the build failed (it is retried when raft asks again).
    fn build(&self) -> Result<Manifest>;

    /// Chunk `chunk_no` of the local snapshot `(index, term)`, encoded.
    ///
    /// # Errors
    /// If the snapshot or the chunk cannot be read.
    fn read_chunk(&self, index: u64, term: u64, chunk_no: u32) -> Result<Vec<u8>>;

    /// Start staging an incoming snapshot (dropping any other staging).
    ///
    /// # Errors
    /// IO errors.
    fn begin_staging(&self, manifest: &Manifest) -> tandem_snapshot::Result<()>;

    /// Write a chunk of the staging snapshot durably.
    ///
    /// # Errors
    /// IO errors, or no staging in progress.
    fn stage_chunk(&self, chunk_no: u32, bytes: &[u8]) -> tandem_snapshot::Result<()>;

    /// Verify the whole staged snapshot and publish it.
    ///
    /// # Errors
    /// Verification or IO errors (the staging is then removed).
    fn finish_staging(&self) -> tandem_snapshot::Result<()>;

    /// Drop the staging in progress, if any.
    fn discard_staging(&self);

    /// Install the published snapshot `(index, term)` into the state machine.
    ///
    /// # Errors
    /// If it is missing, does not read back, or is not ahead of the state.
    fn install(&self, index: u64, term: u64) -> Result<()>;
}

/// What one apply call produced.
#[derive(Debug)]
pub struct Applied<R> {
    /// The applied index after the call.
    pub applied_index: u64,
    /// Results of the newly applied entries, by index.
    pub results: Vec<(u64, R)>,
    /// Membership changes that took effect, in log order.
    pub conf_changes: Vec<ConfChangeV2>,
}

/// Applies committed entries to the state machine.
pub trait Applier: Send + Sync + 'static {
    /// The result handed back to a proposer.
    type Output: Send + 'static;

    /// Apply `entries` (contiguous, in order; already-applied ones skipped).
    ///
    /// # Errors
    /// If the state machine cannot apply them; the replica then stops.
    fn apply(&self, entries: &[Entry]) -> Result<Applied<Self::Output>>;

    /// How many applied entries are held in memory, not yet written to
    /// storage (write-behind): the node has [`Applier::write_pending`]
    /// called at most one tick after the first is held, or at once when
    /// [`WRITE_SOON_ENTRIES`] are held.
    fn held_entries(&self) -> u64 {
        0
    }

    /// Write what is held in memory to storage.
    ///
    /// # Errors
    /// If storage fails; the replica then stops.
    fn write_pending(&self) -> Result<()> {
        Ok(())
    }

    /// Wait until a write under way (if any) is done.
    fn wait_for_write(&self) {}
}

enum Cmd<R> {
    Propose(Vec<u8>, Responder<R>),
    ConfChange(ConfChangeV2, Responder<R>),
    Read(ReadConsistency, Responder<u64>),
    Transfer(u64, oneshot::Sender<Result<()>>),
    Campaign(oneshot::Sender<Result<()>>),
    Status(oneshot::Sender<NodeStatus>),
}

/// A running replica: the raft loop and apply threads, and the handle to
/// talk to them. Dropping it shuts it down.
pub struct Node<R: Send + 'static> {
    id: u64,
    cmd_tx: Sender<Cmd<R>>,
    inbox: Inbox,
    stop: Arc<AtomicBool>,
    stop_tx: Sender<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl<R: Send + 'static> std::fmt::Debug for Node<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Bound of a replica's inbound message queue; beyond it messages are
/// dropped and counted (raft retransmits).
pub const INBOX_CAPACITY: usize = 65_536;

/// Bound of the queue of committed batches waiting for the apply thread.
const APPLY_QUEUE: usize = 1024;

impl<R: Send + 'static> Node<R> {
    /// Start the threads of a replica around `core`.
    ///
    /// # Errors
    /// [`Error::Io`] if a thread cannot be spawned.
    pub fn start<S, W, A>(
        cfg: &Config,
        core: NodeCore<S, R>,
        writer: W,
        applier: Arc<A>,
        transport: Arc<dyn Transport>,
        host: Option<Arc<dyn SnapshotHost>>,
    ) -> Result<Node<R>>
    where
        S: Storage + Send + 'static,
        W: LogWriter,
        A: Applier<Output = R>,
    {
        let id = cfg.id;
        let (cmd_tx, cmd_rx) = unbounded();
        let (msg_tx, msg_rx) = bounded(INBOX_CAPACITY);
        let inbox = Inbox::new(id, cfg.cluster_id, msg_tx);
        let (stop_tx, stop_rx) = bounded(1);
        let (apply_tx, apply_rx) = bounded::<ApplyTask<R>>(APPLY_QUEUE);
        let (applied_tx, applied_rx) = unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None));
        let spawn_err = |e: std::io::Error| Error::io("thread", e);

        let apply_failed = Arc::clone(&failed);
        let apply_queue = ApplyQueue {
            rx: apply_rx,
            carry: None,
            max_entries: cfg.max_apply_batch_entries,
        };
        let (write_tx, write_thread) = spawn_writer(id, &applier, &failed).map_err(spawn_err)?;
        let loop_applier: Arc<dyn Applier<Output = R>> = applier.clone();
        let loop_write_tx = write_tx.clone();
        let apply_thread = std::thread::Builder::new()
            .name(format!("tandem-apply-{id}"))
            .spawn(move || {
                apply_loop(
                    &*applier,
                    apply_queue,
                    &write_tx,
                    &applied_tx,
                    &apply_failed,
                );
            })
            .map_err(spawn_err)?;
        let mut threads = vec![apply_thread, write_thread];

        // Background work for the host: flushes and builds on one thread,
        // transfer IO and installs on another (a long build must not delay
        // the chunks of a transfer).
        let (job_tx, job_rx) = unbounded::<HostJob>();
        let (io_tx, io_rx) = unbounded::<SnapshotJob>();
        let (host_tx, host_rx) = unbounded::<HostEvent>();
        if let Some(host) = host {
            let host_failed = Arc::clone(&failed);
            let maint_host = Arc::clone(&host);
            let maint_tx = host_tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tandem-maint-{id}"))
                    .spawn(move || {
                        maintenance_loop(&*maint_host, &job_rx, &maint_tx, &host_failed);
                    })
                    .map_err(spawn_err)?,
            );
            let io_transport = Arc::clone(&transport);
            let cluster_id = cfg.cluster_id;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tandem-snapio-{id}"))
                    .spawn(move || {
                        snapshot_io_loop(&*host, id, cluster_id, &*io_transport, &io_rx, &host_tx);
                    })
                    .map_err(spawn_err)?,
            );
        }

        let mut lp = RaftLoop {
            core,
            writer,
            transport,
            cluster_id: cfg.cluster_id,
            tick_interval: cfg.tick_interval,
            apply_tx,
            job_tx,
            held: Vec::new(),
            held_entries: 0,
            max_apply_batch_entries: cfg.max_apply_batch_entries,
            applier: loop_applier,
            write_tx: loop_write_tx,
            handed: 0,
            applied_here: false,
            io_tx,
            failed: Arc::clone(&failed),
        };
        let loop_stop = Arc::clone(&stop);
        let raft_thread = std::thread::Builder::new()
            .name(format!("tandem-raft-{id}"))
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    lp.run(
                        &cmd_rx,
                        &msg_rx,
                        &applied_rx,
                        &host_rx,
                        &stop_rx,
                        &loop_stop,
                    );
                }));
                if let Err(panic) = ran {
                    // The log failed on another thread (the writer's fsync)
                    // while this one was stepping, and the raft core met the
                    // failed log: a stop for that failure, not a bug. Any
                    // other panic is one, and goes on.
                    if !lp.log_failed() {
                        std::panic::resume_unwind(panic);
                    }
                    lp.finish(&cmd_rx);
                }
            })
            .map_err(spawn_err)?;
        threads.insert(0, raft_thread);
        Ok(Node {
            id,
            cmd_tx,
            inbox,
            stop,
            stop_tx,
            threads: Mutex::new(threads),
            failed,
        })
    }

    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where transports deliver this replica's incoming envelopes.
    #[must_use]
    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// Why the replica stopped on its own (a storage failure), if it did.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }

    fn send(&self, cmd: Cmd<R>) -> Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        self.cmd_tx.send(cmd).map_err(|_| Error::ShuttingDown)
    }

    /// Propose an encoded command; the receiver gets exactly one answer.
    #[must_use]
    pub fn propose(&self, data: Vec<u8>) -> oneshot::Receiver<Result<R>> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.send(Cmd::Propose(data, tx.clone())) {
            let _ = tx.send(Err(e));
        }
        rx
    }

    /// Propose a membership change; the receiver gets exactly one answer.
    #[must_use]
    pub fn propose_conf_change(&self, cc: ConfChangeV2) -> oneshot::Receiver<Result<R>> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.send(Cmd::ConfChange(cc, tx.clone())) {
            let _ = tx.send(Err(e));
        }
        rx
    }

    /// Wait until a read with `consistency` (not `Stale`) may be served
    /// from this replica's state machine; returns the read index.
    ///
    /// # Errors
    /// `NotLeader`, `Timeout`, `ShuttingDown`.
    pub fn read_barrier(&self, consistency: ReadConsistency, timeout: Duration) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Read(consistency, tx))?;
        wait(&rx, timeout)
    }

    /// Ask this replica (the leader) to hand leadership to `to`.
    ///
    /// # Errors
    /// `NotLeader`, `UnknownNode`, `ShuttingDown`.
    pub fn transfer_leader(&self, to: u64) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Transfer(to, tx))?;
        wait_flat(&rx)
    }

    /// Start an election now.
    ///
    /// # Errors
    /// `ShuttingDown`, or the consensus core's refusal.
    pub fn campaign(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Campaign(tx))?;
        wait_flat(&rx)
    }

    /// The replica's current state.
    ///
    /// # Errors
    /// `ShuttingDown` if the loop has stopped.
    pub fn status(&self) -> Result<NodeStatus> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Status(tx))?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| Error::ShuttingDown)
    }

    /// Stop the threads; requests in flight complete with `ShuttingDown`.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.stop_tx.try_send(());
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            if t.join().is_err() {
                tracing::error!(id = self.id, "a replica thread panicked");
            }
        }
    }
}

impl<R: Send + 'static> Drop for Node<R> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Wait for one answer on `rx`, parked (see [`oneshot`]).
///
/// # Errors
/// The answer's error; `Timeout` after `timeout`; `ShuttingDown` if the
/// sender vanished without answering.
pub fn wait<T>(rx: &oneshot::Receiver<Result<T>>, timeout: Duration) -> Result<T> {
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(oneshot::RecvTimeoutError::Timeout) => Err(Error::Timeout(timeout)),
        Err(oneshot::RecvTimeoutError::Disconnected) => Err(Error::ShuttingDown),
    }
}

fn wait_flat<T>(rx: &oneshot::Receiver<Result<T>>) -> Result<T> {
    wait(rx, Duration::from_secs(30))
}

struct RaftLoop<S: Storage, R, W> {
    core: NodeCore<S, R>,
    writer: W,
    transport: Arc<dyn Transport>,
    cluster_id: u64,
    tick_interval: Duration,
    apply_tx: Sender<ApplyTask<R>>,
    job_tx: Sender<HostJob>,
    /// Committed entries a follower holds back to apply in larger groups
    /// (see [`RaftLoop::hand_to_apply`]), and how many entries they hold.
    held: Vec<ApplyTask<R>>,
    held_entries: usize,
    max_apply_batch_entries: usize,
    /// The applier, for small tasks applied on this thread (see
    /// [`RaftLoop::apply_here`]), and the write thread's request channel.
    applier: Arc<dyn Applier<Output = R>>,
    write_tx: Sender<()>,
    /// The last index sent to the apply thread.
    handed: u64,
    /// Entries were applied on this thread since the last poll: poll again
    /// before waiting (reads and conf changes may be released).
    applied_here: bool,
    io_tx: Sender<SnapshotJob>,
    failed: Arc<Mutex<Option<String>>>,
}

/// Work for the maintenance thread.
#[derive(Debug)]
enum HostJob {
    Flush,
    Build,
}

/// What the background threads report to the raft loop.
#[derive(Debug)]
enum HostEvent {
    Durable(u64),
    Snapshot(SnapshotEvent),
}

/// Most inputs drained into one Ready before polling.
const MAX_BATCH_INPUTS: usize = 4096;

impl<S: Storage, R: Send + 'static, W: LogWriter> RaftLoop<S, R, W> {
    fn run(
        &mut self,
        cmd_rx: &Receiver<Cmd<R>>,
        msg_rx: &Receiver<Envelope>,
        applied_rx: &Receiver<(u64, Vec<ConfChangeV2>)>,
        host_rx: &Receiver<HostEvent>,
        stop_rx: &Receiver<()>,
        stop: &AtomicBool,
    ) {
        let (done_tx, done_rx) = unbounded::<u64>();
        let durable = Durability::new(done_tx, Arc::clone(&self.transport), self.cluster_id);
        let mut next_tick = Instant::now() + self.tick_interval;
        while !stop.load(Ordering::Acquire) && self.failed.lock().is_none() && !self.log_failed() {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            select! {
                recv(stop_rx) -> _ => break,
                recv(cmd_rx) -> c => if let Ok(c) = c { self.on_cmd_after_applied(c, applied_rx) },
                recv(msg_rx) -> m => if let Ok(m) = m { self.core.step(m) },
                recv(done_rx) -> n => if let Ok(n) = n { self.core.on_persisted(n) },
                recv(applied_rx) -> a => if let Ok((i, cc)) = a { self.core.on_applied(i, &cc) },
                recv(host_rx) -> e => if let Ok(e) = e { self.on_host_event(e) },
                default(timeout) => {},
            }
            // Batch everything else already waiting into this Ready. When
            // the queue runs dry and other proposals of this replica are in
            // flight (several clients), yield once: clients woken by the
            // last apply are usually about to propose, and one Ready (one
            // WAL write, one append per follower) for all of them is far
            // cheaper than one each. With at most one proposal in flight (a
            // lone client) or none (a follower) there is nobody to wait
            // for, and a yield would only put the write's Ready behind
            // whatever else is runnable on a busy core.
            let mut yielded = false;
            for _ in 0..MAX_BATCH_INPUTS {
                let mut any = false;
                if let Ok(n) = done_rx.try_recv() {
                    self.core.on_persisted(n);
                    any = true;
                }
                if let Ok((i, cc)) = applied_rx.try_recv() {
                    self.core.on_applied(i, &cc);
                    any = true;
                }
                if let Ok(m) = msg_rx.try_recv() {
                    self.core.step(m);
                    any = true;
                }
                if let Ok(c) = cmd_rx.try_recv() {
                    self.on_cmd_after_applied(c, applied_rx);
                    any = true;
                }
                if let Ok(e) = host_rx.try_recv() {
                    self.on_host_event(e);
                    any = true;
                }
                if !any {
                    if yielded || self.core.pending_proposals() < 2 {
                        break;
                    }
                    yielded = true;
                    std::thread::yield_now();
                }
            }
            if self.log_failed() {
                break;
            }
            let now = Instant::now();
            let mut ticked = false;
            while now >= next_tick {
                self.core.tick(now);
                next_tick += self.tick_interval;
                ticked = true;
            }
            self.carry_out(now, &durable);
            while std::mem::take(&mut self.applied_here) {
                self.carry_out(Instant::now(), &durable);
            }
            if ticked {
                self.release_held();
                if self.applier.held_entries() > 0 {
                    // Held applies (of this thread or the apply thread)
                    // reach storage within a tick.
                    let _ = self.write_tx.try_send(());
                }
            }
        }
        self.finish(cmd_rx);
    }

    /// After the loop: what a follower held back is applied before the
    /// apply thread stops, requests in flight are failed, and commands that
    /// raced with the stop are answered too.
    fn finish(&mut self, cmd_rx: &Receiver<Cmd<R>>) {
        self.release_held();
        self.core.shutdown();
        while let Ok(c) = cmd_rx.try_recv() {
            self.refuse(c);
        }
    }

    /// True (and the replica's failure recorded) once the log can no longer
    /// be written: stop before the raft core reads the failed log.
    fn log_failed(&self) -> bool {
        let Some(why) = self.writer.failure() else {
            return false;
        };
        let mut failed = self.failed.lock();
        if failed.is_none() {
            tracing::error!(id = self.core.id(), error = %why, "log failed; stopping");
            *failed = Some(why);
        }
        true
    }

    fn refuse(&self, c: Cmd<R>) {
        match c {
            Cmd::Propose(_, tx) | Cmd::ConfChange(_, tx) => {
                let _ = tx.send(Err(Error::ShuttingDown));
            }
            Cmd::Read(_, tx) => {
                let _ = tx.send(Err(Error::ShuttingDown));
            }
            Cmd::Transfer(_, tx) | Cmd::Campaign(tx) => {
                let _ = tx.send(Err(Error::ShuttingDown));
            }
            Cmd::Status(_) => {}
        }
    }

    fn on_host_event(&mut self, e: HostEvent) {
        match e {
            HostEvent::Durable(index) => self.core.on_durable(index),
            HostEvent::Snapshot(ev) => self.core.on_snapshot_event(ev),
        }
    }

    /// Handle a command after every apply report already queued: the
    /// apply thread reports before it answers clients (see `apply_loop`),
    /// so a client's next command sees its own writes applied.
    fn on_cmd_after_applied(&mut self, c: Cmd<R>, applied_rx: &Receiver<(u64, Vec<ConfChangeV2>)>) {
        while let Ok((i, cc)) = applied_rx.try_recv() {
            self.core.on_applied(i, &cc);
        }
        self.on_cmd(c);
    }

    fn on_cmd(&mut self, c: Cmd<R>) {
        let now = Instant::now();
        match c {
            Cmd::Propose(data, tx) => self.core.propose(data, tx, now),
            Cmd::ConfChange(cc, tx) => self.core.propose_conf_change(cc, tx, now),
            Cmd::Read(consistency, tx) => self.core.read(consistency, tx, now),
            Cmd::Transfer(to, tx) => {
                let _ = tx.send(self.core.transfer_leader(to));
            }
            Cmd::Campaign(tx) => {
                let _ = tx.send(self.core.campaign());
            }
            Cmd::Status(tx) => {
                let _ = tx.send(self.core.status());
            }
        }
    }

    fn carry_out(&mut self, now: Instant, durable: &Durability) {
        // Polling twice covers messages released by durability reports
        // handled in the same iteration.
        let fx = self.core.poll(now);
        for m in fx.send {
            let to = m.to;
            if self
                .transport
                .send(Envelope::raft(self.cluster_id, m))
                .is_err()
            {
                self.core.report_unreachable(to);
            }
        }
        // Who writes the log. A follower writes its own appends: it has
        // nothing else to do until they are durable (what arrives meanwhile
        // waits in its inbox and forms the next group, as it would behind
        // the writer thread), and waking the writer thread would put one
        // more thread hand-off on every write's critical path. So does a
        // leader with at most one proposal in flight and nothing to apply
        // (a lone client): its appends to the followers have left already,
        // and their acknowledgements are waiting by the time its own sync
        // returns. A busy leader hands its writes to the writer thread, so
        // that it can take proposals, acknowledgements and applies while
        // the disk syncs.
        let write_here =
            !self.core.is_leader() || (fx.apply.is_empty() && self.core.pending_proposals() < 2);
        for t in fx.persist {
            if let Err(e) = self.writer.submit(t, durable, write_here) {
                tracing::error!(id = self.core.id(), error = %e, "log write failed; stopping");
                *self.failed.lock() = Some(e.to_string());
                return;
            }
        }
        if let Some(first) = fx.compact {
            if let Err(e) = self.writer.compact(first) {
                tracing::error!(id = self.core.id(), error = %e, "log compaction failed; stopping");
                *self.failed.lock() = Some(e.to_string());
                return;
            }
        }
        if fx.flush_durable {
            // Without a host nothing flushes and the log is never compacted.
            let _ = self.job_tx.send(HostJob::Flush);
        }
        for (to, msg) in fx.transfer {
            let env = Envelope {
                cluster_id: self.cluster_id,
                from: self.core.id(),
                to,
                payload: Payload::SnapshotChunk(msg.encode()),
            };
            // Lost frames are retransmitted by the transfer protocol.
            let _ = self.transport.send(env);
        }
        for job in fx.snapshot_jobs {
            // Without a host (tests) no snapshot work is ever asked for:
            // storage never offers a snapshot and nothing arrives to stage.
            let _ = match job {
                SnapshotJob::Build => self.job_tx.send(HostJob::Build).is_ok(),
                other => self.io_tx.send(other).is_ok(),
            };
        }
        for task in fx.apply {
            self.hand_to_apply(task);
        }
    }

    /// Send committed entries to the apply thread — or, on a follower, hold
    /// them back until the next tick or until `max_apply_batch_entries` are
    /// held.
    ///
    /// Every apply call is one sled atomic batch, and sled's `apply_batch`
    /// has a large fixed cost (it seals and writes its IO buffer around each
    /// batch and wakes its IO thread pool), so a follower that applied each
    /// append's entries as they commit would pay it once per leader append.
    /// Nobody waits on a follower's apply: clients are answered by the leader,
    /// and linearizable and lease reads are served by the leader. The cost is
    /// a follower state machine up to one tick behind (stale reads there see
    /// slightly older data). Entries are never held when a proposal of this
    /// replica waits on them (a leader that just stepped down), when they
    /// change the membership (raft must see it applied promptly), or when
    /// this replica leads.
    fn hand_to_apply(&mut self, task: ApplyTask<R>) {
        if self.can_apply_here(&task) {
            self.apply_here(task);
            return;
        }
        let hold = !self.core.is_leader()
            && task.waiters.is_empty()
            && task
                .entries
                .iter()
                .all(|e| e.entry_type == EntryType::EntryNormal);
        self.held_entries += task.entries.len();
        self.held.push(task);
        if !hold || self.held_entries >= self.max_apply_batch_entries {
            self.release_held();
        }
    }

    /// Send every held task to the apply thread (which applies what is
    /// queued together).
    fn release_held(&mut self) {
        self.held_entries = 0;
        for task in self.held.drain(..) {
            if let Some(last) = task.entries.last() {
                self.handed = last.index;
            }
            if self.apply_tx.send(task).is_err() {
                *self.failed.lock() = Some("apply thread stopped".into());
                return;
            }
        }
    }

    /// Whether `task` may be applied on this thread instead of the apply
    /// thread: it has a local waiter (a proposal of this replica, so a
    /// client waits on it), it is small, the apply thread has applied
    /// everything handed to it (so applying here keeps the log order) and
    /// the write thread is not behind. With write-behind an apply is an
    /// evaluation into memory, cheaper than the hand-off to another thread
    /// and back, which the client's write would otherwise wait for.
    fn can_apply_here(&self, task: &ApplyTask<R>) -> bool {
        !task.waiters.is_empty()
            && task.entries.len() <= APPLY_HERE_MAX_ENTRIES
            && self.held.is_empty()
            && self.handed <= self.core.applied()
            && task
                .entries
                .first()
                .is_some_and(|e| e.index == self.core.applied() + 1)
            && self.applier.held_entries() < WRITE_WAIT_ENTRIES
    }

    /// Apply `task` on this thread, report it to the core and answer its
    /// waiters (in that order, as the apply thread does).
    fn apply_here(&mut self, task: ApplyTask<R>) {
        match self.applier.apply(&task.entries) {
            Ok(out) => {
                self.core.on_applied(out.applied_index, &out.conf_changes);
                self.applied_here = true;
                answer(out.results, task.waiters);
                if self.applier.held_entries() >= WRITE_SOON_ENTRIES {
                    let _ = self.write_tx.try_send(());
                }
            }
            Err(e) => apply_failed(&e, task.waiters, &self.failed),
        }
    }
}

/// Largest task (in entries) the raft loop applies itself.
const APPLY_HERE_MAX_ENTRIES: usize = 64;

fn maintenance_loop(
    host: &dyn SnapshotHost,
    rx: &Receiver<HostJob>,
    tx: &Sender<HostEvent>,
    failed: &Mutex<Option<String>>,
) {
    while let Ok(job) = rx.recv() {
        match job {
            HostJob::Flush => match host.flush_durable() {
                Ok(index) => {
                    if tx.send(HostEvent::Durable(index)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // sled or fsync failure: the state machine can no longer
                    // promise durability; stop rather than compact on a lie.
                    tracing::error!(error = %e, "state machine flush failed; the replica stops");
                    *failed.lock() = Some(format!("state machine flush failed: {e}"));
                    return;
                }
            },
            HostJob::Build => {
                let r = host.build().map_err(|e| e.to_string());
                if tx
                    .send(HostEvent::Snapshot(SnapshotEvent::Built(r)))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn snapshot_io_loop(
    host: &dyn SnapshotHost,
    id: u64,
    cluster_id: u64,
    transport: &dyn Transport,
    rx: &Receiver<SnapshotJob>,
    tx: &Sender<HostEvent>,
) {
    while let Ok(job) = rx.recv() {
        let ev = match job {
            SnapshotJob::Build => continue,
            SnapshotJob::SendChunk {
                to,
                id: tid,
                chunk_no,
            } => match host.read_chunk(tid.index, tid.term, chunk_no) {
                Ok(bytes) => {
                    let msg = TransferMsg::Chunk {
                        id: tid,
                        chunk_no,
                        bytes,
                    };
                    let env = Envelope {
                        cluster_id,
                        from: id,
                        to,
                        payload: Payload::SnapshotChunk(msg.encode()),
                    };
                    // A lost chunk is retransmitted by the sender.
                    let _ = transport.send(env);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(to, chunk_no, error = %e, "cannot read a snapshot chunk to send");
                    SnapshotEvent::ChunkUnreadable { to, id: tid }
                }
            },
            SnapshotJob::Begin { id: tid, manifest } => SnapshotEvent::Begun {
                id: tid,
                result: host.begin_staging(&manifest),
            },
            SnapshotJob::Stage {
                id: tid,
                chunk_no,
                bytes,
            } => SnapshotEvent::Staged {
                id: tid,
                chunk_no,
                result: host.stage_chunk(chunk_no, &bytes),
            },
            SnapshotJob::Verify { id: tid } => SnapshotEvent::Verified {
                id: tid,
                result: host.finish_staging(),
            },
            SnapshotJob::Discard { .. } => {
                host.discard_staging();
                continue;
            }
            SnapshotJob::Install { id: tid } => SnapshotEvent::Installed {
                id: tid,
                result: host.install(tid.index, tid.term).map_err(|e| e.to_string()),
            },
        };
        if tx.send(HostEvent::Snapshot(ev)).is_err() {
            return;
        }
    }
}

/// Groups the apply thread's queue into apply calls: the next queued task
/// plus every task already queued behind it, up to `max_entries` entries
/// (tasks are never split; a task that would pass the bound starts the
/// next group).
///
/// One apply call per group instead of per task: each call is one sled
/// atomic batch, and sled's `apply_batch` has a large fixed cost (it seals
/// its IO buffer before and after every batch and hands the write to its IO
/// thread pool), so when the apply thread falls behind, the tasks that
/// queued up meanwhile cost one batch instead of one each.
struct ApplyQueue<R> {
    rx: Receiver<ApplyTask<R>>,
    /// A task taken off the queue that did not fit the previous group.
    carry: Option<ApplyTask<R>>,
    max_entries: usize,
}

impl<R> ApplyQueue<R> {
    /// The next group, waiting for one; `None` once the raft loop is gone
    /// and everything queued was handed out.
    fn next_group(&mut self) -> Option<ApplyTask<R>> {
        let mut group = match self.carry.take() {
            Some(t) => t,
            None => self.rx.recv().ok()?,
        };
        while group.entries.len() < self.max_entries {
            let Ok(next) = self.rx.try_recv() else { break };
            if group.entries.len() + next.entries.len() > self.max_entries {
                self.carry = Some(next);
                break;
            }
            debug_assert_eq!(
                group.entries.last().map(|e| e.index + 1),
                next.entries.first().map(|e| e.index),
                "apply tasks continue each other"
            );
            group.entries.extend(next.entries);
            group.waiters.extend(next.waiters);
        }
        Some(group)
    }
}

/// Stop the replica after a failed apply or write: waiters of `task` (if
/// any) get the error.
fn apply_failed<R>(e: &Error, waiters: Vec<CommittedProposal<R>>, failed: &Mutex<Option<String>>) {
    tracing::error!(error = %e, "apply failed; the replica stops");
    for w in waiters {
        let _ = w.tx.send(Err(e.clone()));
    }
    *failed.lock() = Some(format!("apply failed: {e}"));
}

/// Held applied entries at which the write thread is asked to write at
/// once instead of at the next tick: large enough that sled's fixed cost
/// per batch is spread thin, small enough that a write is short.
pub const WRITE_SOON_ENTRIES: u64 = 256;

/// Held applied entries at which the apply thread waits for the write under
/// way to finish before it applies more (back-pressure on a write thread
/// that fell behind).
pub const WRITE_WAIT_ENTRIES: u64 = 2 * WRITE_SOON_ENTRIES;

/// Complete each waiter with the result of its entry.
fn answer<R>(results: Vec<(u64, R)>, waiters: Vec<CommittedProposal<R>>) {
    let mut waiters = waiters.into_iter().peekable();
    for (index, result) in results {
        while waiters.peek().is_some_and(|w| w.index < index) {
            let w = waiters.next().expect("peeked");
            // Applied before a restart: the result is gone, but it was applied.
            let _ = w.tx.send(Err(Error::Storage(format!(
                "entry {} was applied earlier; its result is unavailable",
                w.index
            ))));
        }
        if waiters.peek().is_some_and(|w| w.index == index) {
            let w = waiters.next().expect("peeked");
            let _ = w.tx.send(Ok(result));
        }
    }
    for w in waiters {
        let _ = w.tx.send(Err(Error::Storage(format!(
            "entry {} produced no result",
            w.index
        ))));
    }
}

/// Start the write thread of an applier that holds applied results in
/// memory: each message on the returned sender asks it to write them
/// (`Applier::write_pending`), on its own thread, so applying goes on
/// meanwhile. It ends when the sender is dropped.
fn spawn_writer<A: Applier>(
    id: u64,
    applier: &Arc<A>,
    failed: &Arc<Mutex<Option<String>>>,
) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (tx, rx) = bounded::<()>(1);
    let applier = Arc::clone(applier);
    let failed = Arc::clone(failed);
    let handle = std::thread::Builder::new()
        .name(format!("tandem-write-{id}"))
        .spawn(move || {
            while rx.recv().is_ok() {
                if let Err(e) = applier.write_pending() {
                    apply_failed::<A::Output>(&e, Vec::new(), &failed);
                    return;
                }
            }
        })?;
    Ok((tx, handle))
}

/// The apply thread: applies groups of committed tasks and answers their
/// proposers. An applier that holds results in memory (write-behind) has
/// the write thread (`write_tx`) write them at once when
/// [`WRITE_SOON_ENTRIES`] are held (the raft loop asks for a write once per
/// tick otherwise); when the apply thread ends, it writes what is held
/// itself.
fn apply_loop<A: Applier>(
    applier: &A,
    mut queue: ApplyQueue<A::Output>,
    write_tx: &Sender<()>,
    applied_tx: &Sender<(u64, Vec<ConfChangeV2>)>,
    failed: &Mutex<Option<String>>,
) {
    loop {
        if applier.held_entries() >= WRITE_WAIT_ENTRIES {
            // The write thread fell behind (it competes for the CPU with
            // everything else): let its write under way finish before
            // applying more, so memory stays bounded and the wait is one
            // write, not the growing backlog `apply` would write at its
            // bound.
            applier.wait_for_write();
        }
        let Some(task) = queue.next_group() else {
            break;
        };
        let result = applier.apply(&task.entries);
        if applier.held_entries() >= WRITE_SOON_ENTRIES {
            // Under load: keep the write thread busy (a request made while
            // it writes makes it write again right after). Full: a write
            // is already asked for; gone: it failed and the replica stops.
            let _ = write_tx.try_send(());
        }
        match result {
            Ok(out) => {
                // Report to the raft loop before answering: a client that
                // has its answer and then asks the replica (status, a
                // membership change's effect) finds the report queued, and
                // the loop takes queued reports before any command.
                let loop_gone = applied_tx
                    .send((out.applied_index, out.conf_changes))
                    .is_err();
                answer(out.results, task.waiters);
                if loop_gone {
                    break;
                }
            }
            Err(e) => {
                apply_failed(&e, task.waiters, failed);
                return;
            }
        }
    }
    if let Err(e) = applier.write_pending() {
        apply_failed::<A::Output>(&e, Vec::new(), failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::proposals::CommittedProposal;
    use crate::transport::InProcNetwork;
    use tandem_raft::ConfState;

    /// An applier that records entry payloads and answers with the index;
    /// the second field counts apply calls.
    #[derive(Default)]
    struct Recorder(
        Mutex<(u64, Vec<Vec<u8>>)>,
        std::sync::atomic::AtomicU64,
        /// The thread of each apply call with a non-empty entry.
        Mutex<Vec<String>>,
    );

    impl Applier for Recorder {
        type Output = u64;
        fn apply(&self, entries: &[Entry]) -> Result<Applied<u64>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            if entries.iter().any(|e| !e.data.is_empty()) {
                let thread = std::thread::current();
                self.2.lock().push(thread.name().unwrap_or("?").to_owned());
            }
            let mut st = self.0.lock();
            let mut results = Vec::new();
            let applied = st.0;
            for e in entries.iter().filter(|e| e.index > applied) {
                assert_eq!(e.index, st.0 + 1, "gap in applied entries");
                st.0 = e.index;
                st.1.push(e.data.to_vec());
                results.push((e.index, e.index));
            }
            Ok(Applied {
                applied_index: st.0,
                results,
                conf_changes: Vec::new(),
            })
        }
    }

    fn start(net: &InProcNetwork, id: u64) -> (Node<u64>, Arc<Recorder>) {
        start_ticking(net, id, Duration::from_millis(2))
    }

    fn start_ticking(net: &InProcNetwork, id: u64, tick: Duration) -> (Node<u64>, Arc<Recorder>) {
        let cfg = Config {
            tick_interval: tick,
            ..Config::new(id)
        };
        start_in(net, &cfg, &[1, 2, 3])
    }

    /// Replica `cfg.id` of a cluster of `voters`, on a recorder.
    fn start_in(net: &InProcNetwork, cfg: &Config, voters: &[u64]) -> (Node<u64>, Arc<Recorder>) {
        let id = cfg.id;
        let store = MemStorage::new_with_conf_state(ConfState::from_voters(voters.iter().copied()));
        let core = NodeCore::new(cfg, store.clone(), 0, id).unwrap();
        let rec = Arc::new(Recorder::default());
        let node = Node::start(
            cfg,
            core,
            MemLogWriter(store),
            Arc::clone(&rec),
            Arc::new(net.transport(id)),
            None,
        )
        .unwrap();
        net.register(node.inbox());
        (node, rec)
    }

    fn leader_of(nodes: &[&Node<u64>]) -> Option<u64> {
        nodes
            .iter()
            .filter_map(|n| n.status().ok())
            .find(|s| s.role == tandem_raft::StateRole::Leader)
            .map(|s| s.id)
    }

    fn wait_leader(nodes: &[&Node<u64>]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = leader_of(nodes) {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn three_threaded_replicas_elect_commit_fail_over_and_shut_down() {
        let net = InProcNetwork::new(1);
        let (n1, r1) = start(&net, 1);
        let (n2, r2) = start(&net, 2);
        let (n3, r3) = start(&net, 3);
        let all = [&n1, &n2, &n3];
        let leader = wait_leader(&all);
        let node = |id: u64| all[(id - 1) as usize];
        let t = Duration::from_secs(20);
        let idx = wait(&node(leader).propose(b"a".to_vec()), t).unwrap();
        assert!(idx >= 2, "the leader's empty entry comes first");
        // A follower refuses, naming the leader (once it has heard from it:
        // the commit above may not have needed this follower).
        let follower = if leader == 1 { 2 } else { 1 };
        let deadline = Instant::now() + t;
        while node(follower).status().unwrap().leader != Some(leader) {
            assert!(
                Instant::now() < deadline,
                "the follower never heard from the leader"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        match wait(&node(follower).propose(b"x".to_vec()), t) {
            Err(Error::NotLeader { leader: Some(l) }) => assert_eq!(l, leader),
            other => panic!("expected NotLeader, got {other:?}"),
        }
        assert!(
            node(leader)
                .read_barrier(ReadConsistency::Linearizable, t)
                .unwrap()
                >= idx
        );
        // Isolate the leader; the others elect a new one and keep committing.
        net.isolate(leader);
        let rest: Vec<&Node<u64>> = all.iter().copied().filter(|n| n.id() != leader).collect();
        let new_leader = loop {
            let l = wait_leader(&rest);
            if l != leader {
                break l;
            }
        };
        let idx2 = wait(&node(new_leader).propose(b"b".to_vec()), t).unwrap();
        assert!(idx2 > idx);
        net.rejoin(leader);
        // Every replica converges on the same applied log.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs: Vec<Vec<Vec<u8>>> = [&r1, &r2, &r3]
                .iter()
                .map(|r| r.0.lock().1.clone())
                .collect();
            if logs.iter().all(|l| l.len() as u64 >= idx2)
                && logs[0] == logs[1]
                && logs[1] == logs[2]
            {
                break;
            }
            assert!(Instant::now() < deadline, "replicas did not converge");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A request in flight at shutdown completes.
        net.isolate(new_leader);
        let pending = node(new_leader).propose(b"c".to_vec());
        node(new_leader).shutdown();
        assert!(matches!(wait(&pending, t), Err(Error::ShuttingDown)));
        assert!(matches!(
            wait(&node(new_leader).propose(b"d".to_vec()), t),
            Err(Error::ShuttingDown)
        ));
    }

    fn task(first: u64, len: u64) -> ApplyTask<u64> {
        ApplyTask {
            entries: (first..first + len)
                .map(|index| Entry {
                    index,
                    term: 1,
                    ..Entry::default()
                })
                .collect(),
            waiters: vec![CommittedProposal {
                index: first,
                tx: oneshot::channel().0,
            }],
        }
    }

    #[test]
    fn the_apply_queue_groups_what_is_queued_within_the_bound() {
        let (tx, rx) = bounded(16);
        let mut q = ApplyQueue {
            rx,
            carry: None,
            max_entries: 4,
        };
        for t in [task(1, 2), task(3, 1), task(4, 3), task(7, 5), task(12, 1)] {
            tx.send(t).unwrap();
        }
        drop(tx);
        let mut groups = Vec::new();
        while let Some(g) = q.next_group() {
            let indexes: Vec<u64> = g.entries.iter().map(|e| e.index).collect();
            let waiters: Vec<u64> = g.waiters.iter().map(|w| w.index).collect();
            groups.push((indexes, waiters));
        }
        assert_eq!(
            groups,
            vec![
                // 1..=3 fit; 4..=6 would pass the bound of 4 and waits.
                (vec![1, 2, 3], vec![1, 3]),
                (vec![4, 5, 6], vec![4]),
                // A task larger than the bound goes alone, never split.
                (vec![7, 8, 9, 10, 11], vec![7]),
                (vec![12], vec![12]),
            ]
        );
    }

    /// An applier that holds what it applies until `write_pending` (which
    /// never catches up when `stuck`), and counts writes and waits.
    #[derive(Default)]
    struct Holding {
        held: std::sync::atomic::AtomicU64,
        stuck: AtomicBool,
        writes: std::sync::atomic::AtomicU64,
        waits: std::sync::atomic::AtomicU64,
    }

    impl Applier for Holding {
        type Output = u64;

        fn apply(&self, entries: &[Entry]) -> Result<Applied<u64>> {
            self.held.fetch_add(entries.len() as u64, Ordering::SeqCst);
            Ok(Applied {
                applied_index: entries.last().map_or(0, |e| e.index),
                results: entries.iter().map(|e| (e.index, e.index)).collect(),
                conf_changes: Vec::new(),
            })
        }

        fn held_entries(&self) -> u64 {
            self.held.load(Ordering::SeqCst)
        }

        fn write_pending(&self) -> Result<()> {
            if !self.stuck.load(Ordering::SeqCst) && self.held.swap(0, Ordering::SeqCst) > 0 {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }

        fn wait_for_write(&self) {
            self.waits.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn run_apply_loop(applier: &Arc<Holding>) -> (Sender<ApplyTask<u64>>, JoinHandle<()>) {
        let (tx, rx) = bounded(16);
        let (applied_tx, applied_rx) = unbounded();
        let failed = Arc::new(Mutex::new(None));
        let (write_tx, writer) = spawn_writer(1, applier, &failed).unwrap();
        let applier = Arc::clone(applier);
        let handle = std::thread::spawn(move || {
            let _reports = applied_rx;
            let queue = ApplyQueue {
                rx,
                carry: None,
                max_entries: 64,
            };
            apply_loop(&*applier, queue, &write_tx, &applied_tx, &failed);
            drop(write_tx);
            writer.join().unwrap();
            assert!(failed.lock().is_none());
        });
        (tx, handle)
    }

    #[test]
    fn held_applies_are_written_within_a_tick_even_when_idle() {
        // One voter with an applier that holds what it applies: after one
        // write nothing else happens, and the tick must still have it
        // written (fewer than WRITE_SOON_ENTRIES are held).
        let net = InProcNetwork::new(1);
        let cfg = Config::new(1);
        let store = MemStorage::new_with_conf_state(ConfState::from_voters([1]));
        let core = NodeCore::new(&cfg, store.clone(), 0, 1).unwrap();
        let applier = Arc::new(Holding::default());
        let node = Node::start(
            &cfg,
            core,
            MemLogWriter(store),
            Arc::clone(&applier),
            Arc::new(net.transport(1)),
            None,
        )
        .unwrap();
        net.register(node.inbox());
        node.campaign().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while wait(&node.propose(b"x".to_vec()), Duration::from_secs(30)).is_err() {
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The proposal completed, so its entry was applied and is held
        // until written. A tick may already have written the election's
        // empty entry alone, so `writes > 0` proves nothing about this one:
        // wait until nothing is held.
        while applier.held_entries() > 0 {
            assert!(
                Instant::now() < deadline,
                "the held apply was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(applier.writes.load(Ordering::SeqCst) > 0);
        node.shutdown();
    }

    #[test]
    fn held_applies_are_written_when_the_apply_thread_stops() {
        let applier = Arc::new(Holding::default());
        // Fewer than WRITE_SOON_ENTRIES held and no raft loop: only the
        // stop can write.
        let (tx, handle) = run_apply_loop(&applier);
        tx.send(task(1, 1)).unwrap();
        tx.send(task(2, 3)).unwrap();
        drop(tx);
        handle.join().unwrap();
        assert_eq!(applier.writes.load(Ordering::SeqCst), 1);
        assert_eq!(applier.held_entries(), 0);
    }

    #[test]
    fn a_lone_clients_writes_are_applied_on_the_raft_thread() {
        // One voter: it leads at once and nothing else happens.
        let net = InProcNetwork::new(1);
        let (node, rec) = start_in(&net, &Config::new(1), &[1]);
        node.campaign().unwrap();
        let t = Duration::from_secs(30);
        for i in 0..5u8 {
            // Retried until the replica leads (the campaign is asynchronous).
            let deadline = Instant::now() + t;
            loop {
                match wait(&node.propose(vec![i]), t) {
                    Ok(_) => break,
                    Err(Error::NotLeader { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("propose: {e}"),
                }
            }
        }
        let threads = rec.2.lock().clone();
        assert_eq!(threads.len(), 5, "{threads:?}");
        // The first write may find the leader's first (empty) entry still
        // on the apply thread; each later one finds it idle, as its client
        // waited for the previous write's answer, which comes after the
        // apply thread's report.
        assert!(
            threads[1..].iter().all(|t| t == "tandem-raft-1"),
            "{threads:?}"
        );
        node.shutdown();
    }

    #[test]
    fn a_write_thread_that_falls_behind_holds_the_apply_thread_back() {
        let applier = Arc::new(Holding {
            stuck: AtomicBool::new(true),
            ..Holding::default()
        });
        let (tx, handle) = run_apply_loop(&applier);
        // Below the wait threshold: applied without waiting.
        let below = WRITE_WAIT_ENTRIES - 1;
        tx.send(task(1, below)).unwrap();
        // At it (the writer never catches up): before each further group
        // and before stopping, the apply thread waits for the write.
        // (Tasks of the queue's 64-entry bound are never grouped.)
        tx.send(task(below + 1, 64)).unwrap();
        tx.send(task(below + 65, 64)).unwrap();
        drop(tx);
        handle.join().unwrap();
        assert_eq!(applier.waits.load(Ordering::SeqCst), 2);
        assert_eq!(applier.writes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn followers_apply_once_per_tick_and_still_converge() {
        // A long tick, so that the writes below take far less than one: a
        // follower that applied every commit as it arrived would make about
        // one apply call per write.
        let tick = Duration::from_millis(100);
        let net = InProcNetwork::new(2);
        let (n1, r1) = start_ticking(&net, 1, tick);
        let (n2, r2) = start_ticking(&net, 2, tick);
        let (n3, r3) = start_ticking(&net, 3, tick);
        n1.campaign().unwrap();
        let all = [&n1, &n2, &n3];
        let leader = wait_leader(&all);
        let node = |id: u64| all[(id - 1) as usize];
        let rec = |id: u64| [&r1, &r2, &r3][(id - 1) as usize];
        let follower = if leader == 1 { 2 } else { 1 };
        let ticks = || node(follower).status().unwrap().counters.ticks;
        let calls = || rec(follower).1.load(Ordering::SeqCst);
        let (ticks_before, calls_before) = (ticks(), calls());
        let t = Duration::from_secs(20);
        let mut last = 0;
        const WRITES: u64 = 20;
        for i in 0..WRITES {
            last = wait(&node(leader).propose(vec![i as u8]), t).unwrap();
        }
        let (ticks_after, calls_after) = (ticks(), calls());
        // Held entries are released on ticks only (no waiter, no membership
        // change, never above the batch bound here), and the apply thread
        // makes at most one call per release; one more for a release just
        // before the first reading whose call came after it.
        assert!(
            calls_after - calls_before <= ticks_after - ticks_before + 1,
            "{} apply calls on follower {follower} for {WRITES} writes over {} ticks",
            calls_after - calls_before,
            ticks_after - ticks_before
        );
        // The leader applies at once: each write was answered after its apply.
        assert!(rec(leader).0.lock().0 >= last);
        // And the follower catches up at its next tick.
        let deadline = Instant::now() + Duration::from_secs(30);
        while rec(follower).0.lock().0 < last {
            assert!(
                Instant::now() < deadline,
                "follower {follower} never applied {last}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let logs: Vec<Vec<Vec<u8>>> = [&r1, &r2, &r3]
            .iter()
            .map(|r| r.0.lock().1.clone())
            .collect();
        assert_eq!(
            logs[leader as usize - 1][..last as usize],
            logs[follower as usize - 1][..last as usize]
        );
    }
}
