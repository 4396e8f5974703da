//! The log itself: submissions, the writer (group commit), reads, compaction.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use tandem_raft::types::ENTRY_OVERHEAD_BYTES;
use tandem_raft::{Entry, HardState};

use crate::error::{Error, Result};
use crate::format::{
    decode_entry, encode_entries, encode_hard_state, encode_marker, EncodedRecord, Marker,
    ENTRY_HEADER_BYTES, HEADER_BYTES,
};
use crate::fs::{DirLock, FileSystem, StdFs, WalFile};
use crate::index::LogState;
use crate::options::WalOptions;
use crate::recovery::{prepare_segment, recover, PrefillCtl, RecoveryReport, Spares};

mod writer;

use writer::{background, writer_loop, Active, Bg, BgMsg, Writer};

/// How a submitter learns that its submission is durable, besides
/// [`Completion`].
pub enum Notify {
    /// Send a [`Durable`] carrying `tag` (e.g. the raft `Ready` number).
    Channel {
        /// Where to send.
        sender: Sender<Durable>,
        /// Echoed back in [`Durable::tag`].
        tag: u64,
    },
    /// Call this with the ticket and the result, on the thread that wrote the
    /// group (the writer thread, or a thread waiting on a [`Completion`]). It
    /// must be quick and must not call back into the log.
    Callback(Box<dyn FnOnce(u64, Result<()>) + Send>),
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notify::Channel { tag, .. } => write!(f, "Notify::Channel {{ tag: {tag} }}"),
            Notify::Callback(_) => write!(f, "Notify::Callback"),
        }
    }
}

/// The message a [`Notify::Channel`] receives.
#[derive(Debug)]
pub struct Durable {
    /// The caller's tag.
    pub tag: u64,
    /// The submission's ticket.
    pub ticket: u64,
    /// `Ok` once durable (per the sync policy); the error that poisoned the
    /// log otherwise.
    pub result: Result<()>,
}

impl Notify {
    fn fire(self, ticket: u64, result: Result<()>) {
        match self {
            Notify::Channel { sender, tag } => {
                // A receiver that went away no longer cares.
                let _ = sender.send(Durable {
                    tag,
                    ticket,
                    result,
                });
            }
            Notify::Callback(f) => f(ticket, result),
        }
    }
}

struct Request {
    ticket: u64,
    records: Vec<EncodedRecord>,
    bytes: u64,
    notify: Option<Notify>,
    compaction: bool,
    /// False for a lazy submission ([`Wal::set_hard_state_lazy`]): its
    /// group is fdatasynced only if another submission of the group needs
    /// it.
    sync: bool,
    /// A synchronous submission ([`Mode::Lead`]): the thread blocked on it,
    /// to hand the writer to ([`Shared::hand_off`]).
    leader: Option<std::thread::Thread>,
}

/// How a submission is handed to the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Wake the writer thread (asynchronous submitters).
    Wake,
    /// Do not wake it: the caller leads the group commit itself
    /// ([`Completion::lead`]).
    Lead,
    /// Do not wake it and do not require a sync: written with the next
    /// group, durable with the next sync.
    Lazy,
}

/// Submissions waiting for the writer. Drained only by whoever holds the
/// writer lock, so groups are written in ticket order whichever thread
/// writes them.
#[derive(Default)]
struct Queue {
    reqs: VecDeque<Request>,
    shutdown: bool,
    /// When the active segment must be fdatasynced (`SyncPolicy::EveryMs`).
    /// Kept under the queue lock so the writer thread's timed wait never
    /// misses a deadline set by a caller-led cycle.
    sync_deadline: Option<Instant>,
    /// Encoded bytes of submissions reserved or queued and not yet written
    /// (compaction markers excluded); at most `pending_bytes_max`.
    pending_bytes: u64,
    /// Queued synchronous submissions ([`Request::leader`]).
    leads_queued: usize,
}

#[derive(Debug)]
struct CachedEntry {
    entry: Entry,
    ticket: u64,
}

/// Counters and sizes, for benchmarks and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// First index.
    pub first_index: u64,
    /// Last index.
    pub last_index: u64,
    /// Segment files in use.
    pub segments: usize,
    /// Entries in the on-disk index.
    pub index_entries: u64,
    /// Heap bytes of the on-disk index.
    pub index_bytes: u64,
    /// Entries held in memory (unwritten ones and the recent-entry cache).
    pub cache_entries: u64,
    /// Bytes of those entries (`Entry::size_bytes`).
    pub cache_bytes: u64,
    /// Submissions accepted.
    pub submits: u64,
    /// Write groups (one write each).
    pub write_groups: u64,
    /// `fdatasync` calls on segments.
    pub fsyncs: u64,
    /// Bytes written to segments.
    pub bytes_written: u64,
    /// Encoded bytes submitted and not yet written (never above
    /// `pending_bytes_max`).
    pub pending_bytes: u64,
    /// New segments made out of spare files (recycled) since open.
    pub segments_recycled: u64,
    /// Zeros written by the background thread to prefill new segments
    /// (`prefill_segments`), not counted in `bytes_written`.
    pub prefill_bytes: u64,
    /// Write groups written by a waiting submitter itself instead of the
    /// writer thread (caller-led group commit: [`Wal::submit_wait`],
    /// [`Wal::submit_notify_wait`], [`Completion::wait`]); included in
    /// `write_groups`.
    pub groups_led_by_callers: u64,
}

struct State {
    /// Mirror of the disk, updated by the writer after each group.
    log: LogState,
    segments: BTreeMap<u64, Arc<dyn WalFile>>,
    /// Visible compaction point (ahead of `log.snapshot` until written).
    snapshot: Marker,
    /// Visible hard state.
    hard_state: HardState,
    /// Entries `mem_start..=last_index`: every submitted entry not yet
    /// written, plus recently written ones up to `cache_bytes_max`.
    mem: VecDeque<CachedEntry>,
    mem_start: u64,
    mem_bytes: u64,
    last_index: u64,
    next_ticket: u64,
    written_ticket: u64,
    poison: Option<String>,
    stats: WalStats,
}

impl State {
    fn evict(&mut self, cache_bytes_max: u64) {
        while self.mem_bytes > cache_bytes_max {
            match self.mem.front() {
                Some(c) if c.ticket <= self.written_ticket => {
                    self.mem_bytes -= c.entry.size_bytes();
                    self.mem.pop_front();
                    self.mem_start += 1;
                }
                _ => break,
            }
        }
    }

    fn check_poison(&self) -> Result<()> {
        match &self.poison {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn term(&self, i: u64) -> Result<u64> {
        if i == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if i < self.snapshot.index {
            return Err(Error::Compacted {
                index: i,
                first_index: self.snapshot.index + 1,
            });
        }
        if i > self.last_index {
            return Err(Error::Unavailable {
                index: i,
                last_index: self.last_index,
            });
        }
        if i >= self.mem_start {
            return Ok(self.mem[(i - self.mem_start) as usize].entry.term);
        }
        Ok(self
            .log
            .index
            .term(i)
            .expect("entries below the memory tail are indexed on disk"))
    }
}

struct Shared {
    opts: WalOptions,
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    state: Mutex<State>,
    durable: AtomicU64,
    poisoned: AtomicBool,
    closed: AtomicBool,
    /// Threads parked in [`Completion::wait`], with their tickets.
    waiters: Mutex<Vec<(u64, std::thread::Thread)>>,
    /// Serialises [`Wal::append_next`] callers.
    append_lock: Mutex<()>,
    queue: Mutex<Queue>,
    /// Wakes the writer thread: work queued, or shutdown.
    queue_cv: Condvar,
    /// Wakes submitters waiting for pending bytes to drain (with `queue`).
    space_cv: Condvar,
    writer: Mutex<Writer>,
    /// Spare files reused so far; bumped before a reuse overwrites a file
    /// that a reader may still hold a handle of (see [`Wal::entries`]).
    recycled: Arc<AtomicU64>,
}

/// The writer, held. Every holder releases it through this guard, which
/// then hands the writer to the first queued synchronous submitter
/// ([`Shared::hand_off`]): such a submitter, finding the writer taken,
/// parks without waking the writer thread.
struct WriterGuard<'a> {
    shared: &'a Shared,
    guard: Option<parking_lot::MutexGuard<'a, Writer>>,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.shared.hand_off();
    }
}

/// A handle on one submission; see [`Wal::submit`].
#[derive(Clone)]
pub struct Completion {
    ticket: u64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl Completion {
    /// The submission's ticket: tickets grow by one per submission, and a
    /// ticket is durable once every smaller one is.
    #[must_use]
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// `None` while pending; the outcome once known. Never blocks.
    #[must_use]
    pub fn poll(&self) -> Option<Result<()>> {
        self.shared.status(self.ticket)
    }

    /// Block until the submission is durable (per the sync policy). In
    /// manual mode (`background_threads: false`) this runs the writer.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a write or fsync failed, [`Error::Closed`].
    pub fn wait(&self) -> Result<()> {
        loop {
            if let Some(r) = self.wait_timeout(Duration::from_secs(3600)) {
                return r;
            }
        }
    }

    /// Wait for a submission that did not wake the writer thread: write the
    /// pending groups up to it in this thread if no one is writing;
    /// otherwise wait: the thread now writing either takes this submission
    /// into its group or, when it stops, hands the writer over to this
    /// thread or to an earlier synchronous submitter ([`Shared::hand_off`]).
    fn lead(&self) -> Result<()> {
        let s = &self.shared;
        if s.opts.background_threads {
            s.try_lead(self.ticket);
        }
        self.wait()
    }

    /// Like [`Completion::wait`], giving up after `timeout` (`None`).
    #[must_use]
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<()>> {
        let deadline = Instant::now() + timeout;
        let s = &self.shared;
        loop {
            if let Some(r) = s.status(self.ticket) {
                return Some(r);
            }
            if !s.opts.background_threads {
                if let Err(e) = s.pump() {
                    return Some(Err(e));
                }
                let r = s.status(self.ticket);
                assert!(r.is_some(), "a pump completes every submitted ticket");
                return r;
            }
            // Group commit led by the caller: if no one is writing, write the
            // pending groups (up to this ticket) in this thread instead of
            // handing off to the writer thread and back, which saves two
            // context switches per commit for a lone appender. The queue is
            // drained only under the writer lock, so order is kept.
            if s.try_lead(self.ticket) {
                if let Some(r) = s.status(self.ticket) {
                    return Some(r);
                }
            }
            // Park until the writer unparks this ticket's waiters (only
            // them: a group's completion wakes no waiter of a later group),
            // or hands this thread the writer. The bounded park is a safety
            // net, not a mechanism: every path that leaves a synchronous
            // submission queued hands off.
            s.register(self.ticket);
            let mut r = s.status(self.ticket);
            if r.is_none() {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .min(PARK_MAX);
                if !left.is_zero() {
                    std::thread::park_timeout(left);
                }
            }
            if r.is_none() {
                r = s.status(self.ticket);
            }
            // Once the ticket is durable, an entry left behind (registered
            // after the writer unparked its group) is removed, with a
            // harmless spurious unpark, by the next group's completion.
            if !matches!(r, Some(Ok(()))) {
                s.unregister(self.ticket);
            }
            if r.is_some() || Instant::now() >= deadline {
                return r;
            }
        }
    }
}

/// The bytes of a group counted in the pending budget (compaction markers
/// are not).
fn budget_bytes(batch: &[Request]) -> u64 {
    batch
        .iter()
        .filter(|r| !r.compaction)
        .map(|r| r.bytes)
        .sum()
}

/// The longest a waiter parks before it looks again (a safety net: see
/// [`Completion::wait_timeout`]). Unbounded in this crate's unit tests, so
/// that a missing hand-off hangs a test instead of slowing it.
const PARK_MAX: Duration = if cfg!(test) {
    Duration::from_secs(3600)
} else {
    Duration::from_millis(100)
};

/// The write-ahead log of one replica. `Send + Sync`: share it in an `Arc`.
pub struct Wal {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Aborts a segment prefill in progress at close (set only after the
    /// writer thread, which may still need a spare, has finished).
    bg_stop: Arc<PrefillCtl>,
    report: RecoveryReport,
    _lock: Box<dyn DirLock>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Open (or create) the log in `dir` on the real file system, recovering
    /// what is there.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`], [`Error::Locked`] if another process (or
    /// another `Wal`) has it open, [`Error::Corruption`] for damage recovery
    /// may not repair, [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        Wal::open_with_fs(StdFs::shared(), dir, opts)
    }

    /// [`Wal::open`] through any [`FileSystem`] (e.g. [`crate::SimFs`]).
    ///
    /// # Errors
    /// As [`Wal::open`].
    pub fn open_with_fs(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<Wal> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create dir", &dir, e))?;
        let lock = fs.lock_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { dir: dir.clone() }
            } else {
                Error::io("lock", &dir, e)
            }
        })?;
        let rec = recover(
            &*fs,
            &dir,
            opts.recovery,
            opts.segment_bytes,
            opts.recycle_segments_max,
        )?;
        let report = rec.report;
        let mut segments = rec.segments;
        let mut log = rec.state;
        let mut next_seq = rec.max_seq + 1;
        let recycled = Arc::new(AtomicU64::new(0));
        let mut spares = Spares {
            seqs: rec.spares.into_iter().collect(),
            max: opts.recycle_segments_max,
            reused: recycled.clone(),
        };
        let active = match rec.active {
            Some((seq, file, offset, has_records)) => (seq, file, offset, has_records),
            None => {
                let seq = next_seq;
                next_seq += 1;
                let (file, _) =
                    prepare_segment(&*fs, &dir, seq, opts.segment_bytes, None, Some(&mut spares))?;
                segments.insert(seq, file.clone());
                (seq, file, HEADER_BYTES, false)
            }
        };
        for &seq in segments.keys() {
            log.seg_max.entry(seq).or_insert(0);
        }
        let capacity = active.1.len().map_err(|e| Error::io("stat", &dir, e))?;
        let last_index = log.last_index();
        let state = State {
            snapshot: log.snapshot,
            hard_state: log.hard_state,
            mem: VecDeque::new(),
            mem_start: last_index + 1,
            mem_bytes: 0,
            last_index,
            next_ticket: 1,
            written_ticket: 0,
            poison: None,
            stats: WalStats::default(),
            log,
            segments,
        };
        let mut threads = Vec::new();
        let bg_stop = Arc::new(PrefillCtl::default());
        let mut manual_spares = None;
        let bg = if opts.background_threads {
            let (btx, brx) = crossbeam_channel::unbounded::<BgMsg>();
            let (ptx, prx) = crossbeam_channel::bounded(1);
            let fs2 = fs.clone();
            let dir2 = dir.clone();
            let seg_bytes = opts.segment_bytes;
            let stop = bg_stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("wal-prepare".into())
                    .spawn(move || background(&*fs2, &dir2, seg_bytes, &stop, spares, &brx, &ptx))
                    .map_err(|e| Error::io("spawn", &dir, e))?,
            );
            // The first spare is only fallocated: a log that never fills a
            // segment (tests, idle replicas) never pays for a prefill.
            btx.send(BgMsg::Prepare {
                seq: next_seq,
                prefill: false,
            })
            .expect("the background thread is running");
            Some(Bg {
                tx: btx,
                prepared: prx,
                ctl: bg_stop.clone(),
            })
        } else {
            manual_spares = Some(spares);
            None
        };
        let writer = Writer {
            active: Active {
                seq: active.0,
                file: active.1,
                offset: active.2,
                capacity,
                has_records: active.3,
                unsynced: false,
                // Whether a recovered segment was prefilled is unknown: zero
                // ahead from the end of its records (harmless if it was).
                zeroed_until: if opts.prefill_segments {
                    active.2
                } else {
                    capacity
                },
            },
            next_seq,
            spares: manual_spares,
            bg,
            zeros: Vec::new(),
            last_sync: Instant::now(),
            caller_led: false,
        };
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            dir: dir.clone(),
            fs,
            state: Mutex::new(state),
            durable: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            append_lock: Mutex::new(()),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            space_cv: Condvar::new(),
            writer: Mutex::new(writer),
            recycled,
        });
        if opts.background_threads {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("wal-writer".into())
                    .spawn(move || writer_loop(&s))
                    .map_err(|e| Error::io("spawn", &dir, e))?,
            );
        }
        tracing::info!(
            dir = %dir.display(),
            first_index = report.first_index,
            last_index = report.last_index,
            segments = report.segments.len(),
            "wal opened"
        );
        Ok(Wal {
            shared,
            threads,
            bg_stop,
            report,
            _lock: lock,
        })
    }

    /// What recovery found when this log was opened.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The options in use.
    #[must_use]
    pub fn options(&self) -> &WalOptions {
        &self.shared.opts
    }

    /// Append `entries` (contiguous indexes; the first at most
    /// `last_index() + 1`, replacing every entry at or above it) and/or
    /// persist `hard_state`. Returns at once: the entries are visible to
    /// reads immediately, the [`Completion`] reports durability. Both may be
    /// empty: the completion then is a barrier for all earlier submissions.
    ///
    /// Backpressure: if the submission would take the bytes submitted but not
    /// yet written past `pending_bytes_max`, this blocks until the writer
    /// drains enough. In manual mode (`background_threads: false`) nothing
    /// else would drain, so the caller runs the writer inline (as
    /// [`Wal::pump`]) instead of blocking. Must not be called from a
    /// [`Notify::Callback`].
    ///
    /// # Errors
    /// [`Error::EntryTooLarge`], [`Error::BatchTooLarge`],
    /// [`Error::Compacted`] if the first entry is at or below the compaction
    /// point, [`Error::InvalidArgument`] for gaps, [`Error::Poisoned`].
    pub fn submit(&self, entries: Vec<Entry>, hard_state: Option<HardState>) -> Result<Completion> {
        let ticket = self.submit_inner(entries, hard_state, None, Mode::Wake)?;
        Ok(self.completion(ticket))
    }

    /// [`Wal::submit`] and wait until durable, writing the group in the
    /// calling thread when no other thread is writing.
    ///
    /// `submit` + [`Completion::wait`] wakes the writer thread at submit
    /// and then usually writes the group itself (it is not ahead of the
    /// waiter), so for a lone synchronous appender one of the two threads
    /// wakes for nothing on every append. This call wakes the writer thread
    /// only if another thread holds the writer, to hand the submission over;
    /// groups stay in ticket order either way.
    ///
    /// # Errors
    /// As [`Wal::submit`] and [`Completion::wait`].
    pub fn submit_wait(&self, entries: Vec<Entry>, hard_state: Option<HardState>) -> Result<()> {
        let ticket = self.submit_inner(entries, hard_state, None, Mode::Lead)?;
        self.completion(ticket).lead()
    }

    /// [`Wal::submit`], reporting durability through `notify` instead.
    /// Returns the ticket.
    ///
    /// # Errors
    /// As [`Wal::submit`]; `notify` is then not called.
    pub fn submit_notify(
        &self,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        notify: Notify,
    ) -> Result<u64> {
        self.submit_inner(entries, hard_state, Some(notify), Mode::Wake)
    }

    /// [`Wal::submit_notify`], then wait until durable, writing the group in
    /// the calling thread when no other thread is writing (as
    /// [`Wal::submit_wait`]). `notify` fires on the thread that writes the
    /// group: when that is this one, before the call returns.
    ///
    /// # Errors
    /// As [`Wal::submit_wait`]; `notify` is not called if the submission
    /// itself fails.
    pub fn submit_notify_wait(
        &self,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        notify: Notify,
    ) -> Result<()> {
        let ticket = self.submit_inner(entries, hard_state, Some(notify), Mode::Lead)?;
        self.completion(ticket).lead()
    }

    /// Append entries built from the next free index, atomically with
    /// choosing it: `build(last_index() + 1)` returns the entries (which must
    /// start there). For several threads appending to one log.
    ///
    /// # Errors
    /// As [`Wal::submit`].
    pub fn append_next(&self, build: impl FnOnce(u64) -> Vec<Entry>) -> Result<Completion> {
        let ticket = self.append_next_inner(build, Mode::Wake)?;
        Ok(self.completion(ticket))
    }

    /// [`Wal::append_next`] and wait until durable, writing the group in the
    /// calling thread when no other thread is writing (see
    /// [`Wal::submit_wait`]).
    ///
    /// # Errors
    /// As [`Wal::submit_wait`].
    pub fn append_next_wait(&self, build: impl FnOnce(u64) -> Vec<Entry>) -> Result<()> {
        let ticket = self.append_next_inner(build, Mode::Lead)?;
        self.completion(ticket).lead()
    }

    /// Append `entries` at the next free indexes, for several threads
    /// appending to one log: their `index` fields are ignored and set to
    /// `first, first + 1, ...`, where `first` is `last_index() + 1` when the
    /// submission is ordered. Returns `first` and the completion.
    ///
    /// Unlike [`Wal::append_next`], the record is encoded and checksummed
    /// before its index is known, outside every lock, so concurrent
    /// appenders encode in parallel; ordering a submission then takes a
    /// short critical section (the record's first index is patched and its
    /// CRC fixed up in O(log n); `docs/wal.md` §4).
    /// Ordered with `append_next` callers; like them, it must not race with
    /// [`Wal::submit`] calls that choose their own indexes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty `entries`; otherwise as
    /// [`Wal::submit`].
    pub fn append(&self, entries: Vec<Entry>) -> Result<(u64, Completion)> {
        let (first, ticket) = self.append_inner(entries, Mode::Wake)?;
        Ok((first, self.completion(ticket)))
    }

    /// [`Wal::append`] and wait until durable, writing the group in the
    /// calling thread when no other thread is writing (see
    /// [`Wal::submit_wait`]). Returns the first index of the entries.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tandem_raft::Entry;
    /// use tandem_wal::{Wal, WalOptions};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let wal = Arc::new(Wal::open(dir.path(), WalOptions::default()).unwrap());
    /// let threads: Vec<_> = (0..4u8)
    ///     .map(|t| {
    ///         let wal = Arc::clone(&wal);
    ///         std::thread::spawn(move || {
    ///             // The index given here does not matter: the log places it.
    ///             let e = Entry { term: 1, data: vec![t; 16].into(), ..Entry::default() };
    ///             (t, wal.append_wait(vec![e]).unwrap())
    ///         })
    ///     })
    ///     .collect();
    /// for th in threads {
    ///     let (t, index) = th.join().unwrap();
    ///     assert_eq!(wal.entries(index, index + 1, None).unwrap()[0].data[0], t);
    /// }
    /// assert_eq!(wal.last_index().unwrap(), 4);
    /// ```
    ///
    /// # Errors
    /// As [`Wal::append`] and [`Wal::submit_wait`].
    pub fn append_wait(&self, entries: Vec<Entry>) -> Result<u64> {
        let (first, ticket) = self.append_inner(entries, Mode::Lead)?;
        self.completion(ticket).lead()?;
        Ok(first)
    }

    fn append_inner(&self, mut entries: Vec<Entry>, mode: Mode) -> Result<(u64, u64)> {
        if entries.is_empty() {
            return Err(Error::InvalidArgument("append: no entries".into()));
        }
        // Provisional indexes, for the checks and the encoding; the real
        // ones are set when the submission is ordered.
        for (k, e) in entries.iter_mut().enumerate() {
            e.index = 1 + k as u64;
        }
        let (records, bytes) = self.encode_checked(&entries, None)?;
        self.shared.reserve(bytes)?;
        let r = {
            let _g = self.shared.append_lock.lock();
            self.submit_locked(entries, None, None, records, bytes, mode, true)
        };
        if r.is_err() {
            self.shared.release(bytes);
        }
        r
    }

    fn append_next_inner(&self, build: impl FnOnce(u64) -> Vec<Entry>, mode: Mode) -> Result<u64> {
        // Holding the appender lock keeps index choice and submission atomic
        // without holding the state lock while `build` runs.
        let _g = self.shared.append_lock.lock();
        let next = self.last_index()? + 1;
        let entries = build(next);
        if entries.first().is_some_and(|e| e.index != next) {
            return Err(Error::InvalidArgument(format!(
                "append_next: entries start at {}, expected {next}",
                entries[0].index
            )));
        }
        self.submit_inner(entries, None, None, mode)
    }

    fn completion(&self, ticket: u64) -> Completion {
        Completion {
            ticket,
            shared: self.shared.clone(),
        }
    }

    fn submit_inner(
        &self,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        notify: Option<Notify>,
        mode: Mode,
    ) -> Result<u64> {
        let (records, bytes) = self.encode_checked(&entries, hard_state.as_ref())?;
        self.shared.reserve(bytes)?;
        let r = self
            .submit_locked(entries, hard_state, notify, records, bytes, mode, false)
            .map(|(_, ticket)| ticket);
        if r.is_err() {
            self.shared.release(bytes);
        }
        r
    }

    /// Check a submission's entries and encode it: `(records, bytes)`.
    fn encode_checked(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(Vec<EncodedRecord>, u64)> {
        let opts = &self.shared.opts;
        for (k, e) in entries.iter().enumerate() {
            if e.size_bytes() > opts.entry_bytes_max {
                return Err(Error::EntryTooLarge {
                    index: e.index,
                    bytes: e.size_bytes(),
                    max: opts.entry_bytes_max,
                });
            }
            if e.index != entries[0].index + k as u64 {
                return Err(Error::InvalidArgument(format!(
                    "entries are not contiguous: {} follows {}",
                    e.index,
                    entries[0].index + k as u64 - 1
                )));
            }
        }
        if let Some(e) = entries.first() {
            if e.index == 0 || e.index + entries.len() as u64 > crate::format::INDEX_MAX {
                return Err(Error::InvalidArgument(format!("entry index {}", e.index)));
            }
        }
        let mut records = Vec::with_capacity(2);
        if !entries.is_empty() {
            records.push(encode_entries(entries, opts.shared_payload_min));
        }
        if let Some(hs) = hard_state {
            records.push(encode_hard_state(hs));
        }
        let bytes: u64 = records.iter().map(EncodedRecord::len).sum();
        if bytes > opts.batch_bytes_max {
            return Err(Error::BatchTooLarge {
                bytes,
                max: opts.batch_bytes_max,
            });
        }
        Ok((records, bytes))
    }

    /// Order a checked, encoded submission: update the visible state and
    /// queue it. With `place`, the entries (encoded in `records[0]`) are
    /// first moved to `last_index() + 1`. Returns `(first index, ticket)`
    /// (the first index is 0 without entries).
    #[allow(clippy::too_many_arguments)]
    fn submit_locked(
        &self,
        mut entries: Vec<Entry>,
        hard_state: Option<HardState>,
        notify: Option<Notify>,
        mut records: Vec<EncodedRecord>,
        bytes: u64,
        mode: Mode,
        place: bool,
    ) -> Result<(u64, u64)> {
        let opts = &self.shared.opts;
        let mut st = self.shared.state.lock();
        st.check_poison()?;
        if place {
            let first = st.last_index + 1;
            if first + entries.len() as u64 > crate::format::INDEX_MAX {
                return Err(Error::InvalidArgument(format!("entry index {first}")));
            }
            for (k, e) in entries.iter_mut().enumerate() {
                e.index = first + k as u64;
            }
            records[0].set_first_index(first);
        }
        let first_index = entries.first().map_or(0, |e| e.index);
        if let Some(first) = entries.first().map(|e| e.index) {
            if first <= st.snapshot.index {
                return Err(Error::Compacted {
                    index: first,
                    first_index: st.snapshot.index + 1,
                });
            }
            if first > st.last_index + 1 {
                return Err(Error::InvalidArgument(format!(
                    "append at {first} leaves a gap after last index {}",
                    st.last_index
                )));
            }
            if first < st.mem_start {
                st.mem.clear();
                st.mem_bytes = 0;
                st.mem_start = first;
            } else {
                let keep = (first - st.mem_start) as usize;
                while st.mem.len() > keep {
                    let c = st.mem.pop_back().expect("len > keep");
                    st.mem_bytes -= c.entry.size_bytes();
                }
            }
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        if let Some(last) = entries.last() {
            st.last_index = last.index;
        }
        for entry in entries {
            st.mem_bytes += entry.size_bytes();
            st.mem.push_back(CachedEntry { entry, ticket });
        }
        if let Some(hs) = hard_state {
            st.hard_state = hs;
        }
        st.stats.submits += 1;
        debug_assert_eq!(st.mem_start + st.mem.len() as u64, st.last_index + 1);
        // Queued under the state lock so the writer sees submissions in the
        // order they changed the visible state.
        let lead = mode == Mode::Lead;
        let mut q = self.shared.queue.lock();
        q.reqs.push_back(Request {
            ticket,
            records,
            bytes,
            notify,
            compaction: false,
            sync: mode != Mode::Lazy,
            leader: lead.then(std::thread::current),
        });
        q.leads_queued += usize::from(lead);
        drop(q);
        st.evict(opts.cache_bytes_max);
        drop(st);
        if mode == Mode::Wake {
            self.shared.queue_cv.notify_one();
        }
        Ok((first_index, ticket))
    }

    /// Persist a hard state (shorthand for `submit(vec![], Some(hs))`).
    ///
    /// # Errors
    /// As [`Wal::submit`].
    pub fn set_hard_state(&self, hs: HardState) -> Result<Completion> {
        self.submit(Vec::new(), Some(hs))
    }

    /// Record a hard state that need not be durable on its own, e.g. one
    /// whose only change is the commit index (which a replica can always
    /// learn again): ordered with every other submission, but it neither
    /// wakes the writer thread nor asks for an fdatasync. It is written
    /// with the next group (and synced if that group needs a sync), so it
    /// is durable once any later non-lazy submission is; a crash before
    /// that may recover an earlier hard state.
    ///
    /// The [`Completion`] reports when it is *written* (not necessarily
    /// synced); every earlier submission is then durable. Waiting on it
    /// writes the pending groups if no one else does. [`Wal::flush`] and
    /// any plain [`Wal::submit`] make it durable.
    ///
    /// # Errors
    /// As [`Wal::submit`].
    pub fn set_hard_state_lazy(&self, hs: HardState) -> Result<Completion> {
        let ticket = self.submit_inner(Vec::new(), Some(hs), None, Mode::Lazy)?;
        Ok(self.completion(ticket))
    }

    /// Drop entries below `index` (the new first index; at most
    /// `last_index() + 1`). `term(index - 1)` keeps working. Whole segments
    /// holding only dropped entries are deleted once the compaction marker is
    /// durable. Compacting at or below the first index does nothing.
    ///
    /// # Errors
    /// [`Error::Unavailable`] beyond `last_index() + 1`, [`Error::Poisoned`].
    pub fn compact(&self, index: u64) -> Result<Completion> {
        let mut st = self.shared.state.lock();
        st.check_poison()?;
        if index <= st.snapshot.index + 1 {
            let ticket = st.next_ticket - 1;
            drop(st);
            return Ok(self.completion(ticket));
        }
        if index > st.last_index + 1 {
            return Err(Error::Unavailable {
                index,
                last_index: st.last_index,
            });
        }
        let term = st.term(index - 1)?;
        let marker = Marker {
            index: index - 1,
            term,
            reset: false,
        };
        st.snapshot = marker;
        while st.mem_start < index {
            match st.mem.pop_front() {
                Some(c) => st.mem_bytes -= c.entry.size_bytes(),
                None => {
                    st.mem_start = index;
                    break;
                }
            }
            st.mem_start += 1;
        }
        Ok(self.completion(self.send_marker(&mut st, marker)))
    }

    /// Drop every entry and restart the log after a snapshot at
    /// `(index, term)`: afterwards `first_index() == index + 1`,
    /// `last_index() == index`, `term(index) == term`. The index may be
    /// below, inside or above the current log.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `index` is below the compaction point,
    /// [`Error::Poisoned`].
    pub fn reset_to_snapshot(&self, index: u64, term: u64) -> Result<Completion> {
        let mut st = self.shared.state.lock();
        st.check_poison()?;
        if index >= crate::format::INDEX_MAX {
            return Err(Error::InvalidArgument(format!("snapshot index {index}")));
        }
        if index < st.snapshot.index {
            return Err(Error::InvalidArgument(format!(
                "snapshot at {index} is older than the compaction point {}",
                st.snapshot.index
            )));
        }
        let marker = Marker {
            index,
            term,
            reset: true,
        };
        st.snapshot = marker;
        st.mem.clear();
        st.mem_bytes = 0;
        st.mem_start = index + 1;
        st.last_index = index;
        Ok(self.completion(self.send_marker(&mut st, marker)))
    }

    fn send_marker(&self, st: &mut State, marker: Marker) -> u64 {
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        let rec = encode_marker(&marker);
        self.shared.queue.lock().reqs.push_back(Request {
            ticket,
            bytes: rec.len(),
            records: vec![rec],
            notify: None,
            compaction: true,
            sync: true,
            leader: None,
        });
        self.shared.queue_cv.notify_one();
        ticket
    }

    /// The first index in the log (compaction point + 1).
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn first_index(&self) -> Result<u64> {
        let st = self.shared.state.lock();
        st.check_poison()?;
        Ok(st.snapshot.index + 1)
    }

    /// The last index in the log (the compaction point if it is empty).
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn last_index(&self) -> Result<u64> {
        let st = self.shared.state.lock();
        st.check_poison()?;
        Ok(st.last_index)
    }

    /// The compaction point `(index, term)` (`(0, 0)` for a new log).
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn snapshot_point(&self) -> Result<(u64, u64)> {
        let st = self.shared.state.lock();
        st.check_poison()?;
        Ok((st.snapshot.index, st.snapshot.term))
    }

    /// The latest submitted hard state.
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn hard_state(&self) -> Result<HardState> {
        let st = self.shared.state.lock();
        st.check_poison()?;
        Ok(st.hard_state)
    }

    /// Term of entry `i`; `term(first_index() - 1)` is the compaction point's.
    ///
    /// # Errors
    /// [`Error::Compacted`], [`Error::Unavailable`], [`Error::Poisoned`].
    pub fn term(&self, i: u64) -> Result<u64> {
        let st = self.shared.state.lock();
        st.check_poison()?;
        st.term(i)
    }

    /// Entries in `[lo, hi)`, at most `max_size` bytes (as counted by
    /// `Entry::size_bytes`) but at least one if the range is not empty.
    ///
    /// # Errors
    /// [`Error::Compacted`] if `lo < first_index()`, [`Error::Unavailable`]
    /// if `hi > last_index() + 1`, [`Error::InvalidArgument`] if `lo > hi`,
    /// [`Error::Corruption`] if bytes on disk no longer decode,
    /// [`Error::Io`], [`Error::Poisoned`].
    pub fn entries(&self, lo: u64, hi: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        loop {
            let mut reused = 0;
            let r = self.entries_inner(lo, hi, max_size, &mut reused);
            // Disk reads run outside the state lock through handles taken
            // under it. A segment compacted away meanwhile may have become a
            // spare and been reused, its bytes overwritten; a reuse bumps the
            // counter before it writes, so an unchanged count means the read
            // saw the bytes the index pointed at. Otherwise read again (the
            // range is then compacted, or lives in other segments).
            if self.shared.recycled.load(Ordering::SeqCst) == reused {
                return r;
            }
        }
    }

    /// One attempt of [`Wal::entries`]; sets `reused` to the reuse count
    /// seen under the state lock.
    fn entries_inner(
        &self,
        lo: u64,
        hi: u64,
        max_size: Option<u64>,
        reused: &mut u64,
    ) -> Result<Vec<Entry>> {
        enum Item {
            Mem(Entry),
            Disk(u64, Arc<dyn WalFile>, u64, u32, u32),
        }
        let mut items = Vec::new();
        {
            let st = self.shared.state.lock();
            *reused = self.shared.recycled.load(Ordering::SeqCst);
            st.check_poison()?;
            if lo > hi {
                return Err(Error::InvalidArgument(format!("entries({lo}, {hi})")));
            }
            if lo <= st.snapshot.index {
                return Err(Error::Compacted {
                    index: lo,
                    first_index: st.snapshot.index + 1,
                });
            }
            if hi > st.last_index + 1 {
                return Err(Error::Unavailable {
                    index: hi - 1,
                    last_index: st.last_index,
                });
            }
            let max = max_size.unwrap_or(u64::MAX);
            let mut total = 0u64;
            for i in lo..hi {
                let (size, item) = if i >= st.mem_start {
                    let e = &st.mem[(i - st.mem_start) as usize].entry;
                    (e.size_bytes(), Item::Mem(e.clone()))
                } else {
                    let (_, seg, loc) = st
                        .log
                        .index
                        .get(i)
                        .expect("entries below the memory tail are indexed on disk");
                    let file = st.segments.get(&seg).expect("indexed segments are open");
                    (
                        ENTRY_OVERHEAD_BYTES + u64::from(loc.len) - ENTRY_HEADER_BYTES,
                        Item::Disk(i, file.clone(), seg, loc.offset, loc.len),
                    )
                };
                if !items.is_empty() && total.saturating_add(size) > max {
                    break;
                }
                total = total.saturating_add(size);
                items.push(item);
            }
        }
        // Disk reads happen outside the lock: bytes at an indexed location
        // never change while the segment is live, and an open handle
        // outlives a deleted file (a recycled one: see `entries`).
        let mut out = Vec::with_capacity(items.len());
        let mut k = 0;
        let mut buf = Vec::new();
        while k < items.len() {
            match &items[k] {
                Item::Mem(e) => {
                    out.push(e.clone());
                    k += 1;
                }
                Item::Disk(_, file, seg, offset, _) => {
                    // Read a run of adjacent entries of one segment at once.
                    let mut end = k;
                    let mut next = u64::from(*offset);
                    while let Some(Item::Disk(_, _, s, o, l)) = items.get(end) {
                        if s != seg || u64::from(*o) != next {
                            break;
                        }
                        next += u64::from(*l);
                        end += 1;
                    }
                    let start = u64::from(*offset);
                    buf.resize((next - start) as usize, 0);
                    file.read_at(start, &mut buf).map_err(|e| {
                        Error::io(
                            "read",
                            self.shared.dir.join(crate::format::segment_name(*seg)),
                            e,
                        )
                    })?;
                    for item in &items[k..end] {
                        let Item::Disk(i, _, _, o, l) = item else {
                            unreachable!("the run holds disk items only")
                        };
                        let from = (u64::from(*o) - start) as usize;
                        let e = decode_entry(*i, &buf[from..from + *l as usize])
                            .map_err(|r| Error::corruption(*seg, u64::from(*o), r))?;
                        out.push(e);
                    }
                    k = end;
                }
            }
        }
        Ok(out)
    }

    /// Run the writer on everything submitted so far, in the calling thread.
    /// Only in manual mode (`background_threads: false`); a no-op otherwise.
    /// Returns the number of submissions processed.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a write or sync failed.
    pub fn pump(&self) -> Result<usize> {
        if self.shared.opts.background_threads {
            return Ok(0);
        }
        self.shared.pump()
    }

    /// Block until every submission so far is durable (lazy ones too: an
    /// empty barrier submission asks for the sync).
    ///
    /// # Errors
    /// As [`Wal::submit`] and [`Completion::wait`].
    pub fn flush(&self) -> Result<()> {
        let ticket = self.submit_inner(Vec::new(), None, None, Mode::Lead)?;
        self.completion(ticket).lead()
    }

    /// Counters and sizes.
    #[must_use]
    pub fn stats(&self) -> WalStats {
        let st = self.shared.state.lock();
        let mut s = st.stats.clone();
        s.first_index = st.snapshot.index + 1;
        s.last_index = st.last_index;
        s.segments = st.segments.len();
        s.index_entries = st.log.index.len();
        s.index_bytes = st.log.index.memory_bytes();
        s.cache_entries = st.mem.len() as u64;
        s.cache_bytes = st.mem_bytes;
        drop(st);
        s.pending_bytes = self.shared.queue.lock().pending_bytes;
        s.segments_recycled = self.shared.recycled.load(Ordering::SeqCst);
        s.prefill_bytes = self.bg_stop.prefilled_bytes.load(Ordering::Relaxed);
        s
    }

    /// Why the log can no longer be written, once a write or fsync failed
    /// (it is poisoned: every later call fails); `None` while it is healthy.
    #[must_use]
    pub fn poisoned(&self) -> Option<String> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            Some(self.shared.poison_reason().unwrap_or_default())
        } else {
            None
        }
    }

    /// The directory of this log.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if self.shared.opts.background_threads {
            self.shared.queue.lock().shutdown = true;
            self.shared.queue_cv.notify_all();
            let mut threads = self.threads.drain(..).rev();
            if let Some(writer) = threads.next() {
                let _ = writer.join();
            }
            // Normally the writer thread did this; if it died, the preparer
            // would otherwise wait for work forever.
            self.shared.writer.lock().bg = None;
            self.bg_stop.stop.store(true, Ordering::Relaxed);
            for t in threads {
                let _ = t.join();
            }
        } else {
            let _ = self.shared.pump();
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake_all();
        self.shared.wake_space();
    }
}

impl Shared {
    fn status(&self, ticket: u64) -> Option<Result<()>> {
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Some(Ok(()));
        }
        if self.poisoned.load(Ordering::SeqCst) {
            let reason = self.state.lock().poison.clone().unwrap_or_default();
            return Some(Err(Error::Poisoned { reason }));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Some(Err(Error::Closed));
        }
        None
    }

    /// Register the calling thread as waiting for `ticket`; check the
    /// status after this (a completion published before it is not
    /// signalled to it).
    fn register(&self, ticket: u64) {
        self.waiters.lock().push((ticket, std::thread::current()));
    }

    fn unregister(&self, ticket: u64) {
        let me = std::thread::current().id();
        let mut w = self.waiters.lock();
        if let Some(k) = w.iter().position(|(t, th)| *t == ticket && th.id() == me) {
            w.swap_remove(k);
        }
    }

    /// Publish `ticket` as durable and unpark its waiters and earlier ones.
    fn publish_durable(&self, ticket: u64) {
        self.durable.store(ticket, Ordering::SeqCst);
        // Unparked after the lock is released: an unpark is a system call
        // (and may switch to the thread it wakes), and the threads it wakes,
        // like new waiters, take this lock next.
        let mut woken = Vec::new();
        {
            let mut w = self.waiters.lock();
            let mut k = 0;
            while k < w.len() {
                if w[k].0 <= ticket {
                    woken.push(w.swap_remove(k).1);
                } else {
                    k += 1;
                }
            }
        }
        for th in woken {
            th.unpark();
        }
    }

    /// Unpark every waiter (poison, close).
    fn wake_all(&self) {
        for (_, th) in self.waiters.lock().drain(..) {
            th.unpark();
        }
    }

    /// Caller-led group commit: if no one holds the writer, write the
    /// pending groups until `until` is durable, then hand off. False if
    /// another thread holds the writer.
    fn try_lead(&self, until: u64) -> bool {
        let Some(mut w) = self.try_lock_writer() else {
            return false;
        };
        w.caller_led = true;
        self.drain(&mut w, until);
        w.caller_led = false;
        true
    }

    /// Take the writer; releasing it hands off ([`WriterGuard`]).
    fn lock_writer(&self) -> WriterGuard<'_> {
        WriterGuard {
            shared: self,
            guard: Some(self.writer.lock()),
        }
    }

    fn try_lock_writer(&self) -> Option<WriterGuard<'_>> {
        Some(WriterGuard {
            shared: self,
            guard: Some(self.writer.try_lock()?),
        })
    }

    /// On releasing the writer: unpark the thread of the first queued
    /// synchronous submission, which then leads the next group. A
    /// synchronous submitter whose `try_lead` failed does not wake the
    /// writer thread; it parks, and relies on this or on being taken into
    /// the group of whoever held the writer. (Asynchronous submissions wake
    /// the writer thread, which drains until the queue is empty.)
    fn hand_off(&self) {
        let q = self.queue.lock();
        if q.leads_queued > 0 {
            if let Some(t) = q.reqs.iter().find_map(|r| r.leader.as_ref()) {
                t.unpark();
            }
        }
    }

    fn pump(&self) -> Result<usize> {
        let mut writer = self.lock_writer();
        let n = self.drain(&mut writer, u64::MAX);
        writer.maybe_sync_due(self);
        drop(writer);
        self.state.lock().check_poison()?;
        Ok(n)
    }

    /// Take the next group off the queue: everything pending, up to
    /// `batch_bytes_max` (at least one submission).
    fn next_batch(&self) -> Vec<Request> {
        let mut q = self.queue.lock();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(r) = q.reqs.front() {
            if !batch.is_empty() && bytes + r.bytes > self.opts.batch_bytes_max {
                break;
            }
            bytes += r.bytes;
            let r = q.reqs.pop_front().expect("front exists");
            q.leads_queued -= usize::from(r.leader.is_some());
            batch.push(r);
        }
        batch
    }

    /// Write groups until the queue is empty or `until` is durable. The
    /// caller holds the writer lock. Returns the submissions processed.
    fn drain(&self, writer: &mut Writer, until: u64) -> usize {
        let mut n = 0;
        while self.durable.load(Ordering::SeqCst) < until {
            let batch = self.next_batch();
            if batch.is_empty() {
                break;
            }
            n += batch.len();
            let bytes = budget_bytes(&batch);
            // A panic while writing is a bug, but it must not leave the
            // group's waiters (and every later one) waiting forever: poison
            // the log, so that they and every later call get `Poisoned`,
            // fail the group's notifications not fired yet, then let the
            // panic go on.
            let mut batch = batch;
            let cycled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                writer.cycle(self, &mut batch);
            }));
            if let Err(panic) = cycled {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                self.poison(format!("the wal writer panicked: {what}"));
                Writer::fail(self, &mut batch);
                self.release(bytes);
                // Everything queued behind it fails too: the thread that
                // would have drained the queue may be the one unwinding.
                // Nothing is queued after the poison (submissions check it).
                loop {
                    let mut rest = self.next_batch();
                    if rest.is_empty() {
                        break;
                    }
                    Writer::fail(self, &mut rest);
                    self.release(budget_bytes(&rest));
                }
                std::panic::resume_unwind(panic);
            }
            self.release(bytes);
        }
        n
    }

    /// Give back `bytes` of the pending budget and wake blocked submitters.
    fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut q = self.queue.lock();
        q.pending_bytes -= bytes;
        drop(q);
        self.space_cv.notify_all();
    }

    fn wake_space(&self) {
        let _q = self.queue.lock();
        self.space_cv.notify_all();
    }

    /// Reserve `bytes` (at most `batch_bytes_max`, so at most
    /// `pending_bytes_max`) of the pending budget, waiting for the writer to
    /// drain if it is spent. In manual mode, runs the writer inline instead
    /// of waiting (nothing else would). Fails if the log is poisoned or
    /// closed meanwhile.
    fn reserve(&self, bytes: u64) -> Result<()> {
        let max = self.opts.pending_bytes_max;
        let mut q = self.queue.lock();
        loop {
            if self.poisoned.load(Ordering::SeqCst) {
                drop(q);
                self.state.lock().check_poison()?;
                unreachable!("poisoned implies a poison reason");
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            if q.pending_bytes + bytes <= max {
                q.pending_bytes += bytes;
                return Ok(());
            }
            if self.opts.background_threads {
                // Lazy submissions do not wake the writer thread: make sure
                // it drains what holds the budget.
                self.queue_cv.notify_one();
                self.space_cv.wait(&mut q);
            } else {
                drop(q);
                self.pump()?;
                q = self.queue.lock();
            }
        }
    }

    fn poison(&self, reason: String) {
        tracing::error!(%reason, "wal poisoned");
        {
            let mut st = self.state.lock();
            if st.poison.is_none() {
                st.poison = Some(reason);
            }
        }
        self.poisoned.store(true, Ordering::SeqCst);
        self.wake_all();
        self.wake_space();
    }

    fn poison_reason(&self) -> Option<String> {
        self.state.lock().poison.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            index,
            term: 1,
            data: vec![7; 32].into(),
            ..Entry::default()
        }
    }

    /// Run `submit` (a synchronous submission of entry 1) on another thread
    /// while this one holds the writer, then release it: the submitter must
    /// be handed the writer (or be taken into the group of whoever holds
    /// it).
    fn hands_over_while_another_thread_writes(
        submit: impl FnOnce(&Wal) -> Result<()> + Send + 'static,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap());
        // Another thread "is writing": the writer is taken.
        let busy = wal.shared.lock_writer();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let submitter = {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let _ = tx.send(submit(&wal));
            })
        };
        // The submission is queued; the submitter cannot write it while the
        // writer is taken, did not wake the writer thread when it
        // submitted, and is parked (registered as a waiter, it parks unless
        // its ticket completes). Whoever held the writer may or may not have
        // taken it.
        while wal.shared.waiters.lock().is_empty() {
            std::thread::yield_now();
        }
        assert_eq!(wal.shared.queue.lock().reqs.len(), 1);
        assert_eq!(wal.shared.durable.load(Ordering::SeqCst), 0);
        drop(busy);
        // Nothing else will ever submit: unless releasing the writer hands
        // it to the parked submitter, this waits forever (in unit tests a
        // waiter parks without a bound).
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the submission completes after the writer is released");
        r.unwrap();
        submitter.join().unwrap();
        assert_eq!(wal.entries(1, 2, None).unwrap(), vec![entry(1)]);
    }

    #[test]
    fn a_synchronous_submitter_hands_over_when_another_thread_is_writing() {
        hands_over_while_another_thread_writes(|wal| wal.submit_wait(vec![entry(1)], None));
    }

    #[test]
    fn submit_notify_wait_writes_in_the_calling_thread_when_the_writer_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap();
        let me = std::thread::current().id();
        let mut here = 0;
        for i in 1..=20u64 {
            let (tx, rx) = crossbeam_channel::bounded(1);
            wal.submit_notify_wait(
                vec![entry(i)],
                None,
                Notify::Callback(Box::new(move |_, r| {
                    let _ = tx.send((std::thread::current().id(), r.is_ok()));
                })),
            )
            .unwrap();
            // A group written here was notified before the call returned.
            // The writer thread may have taken the group in first (it can,
            // for a moment after it starts: it checks the queue before it
            // sleeps); it notifies right after publishing the group durable.
            let (thread, ok) = rx.try_recv().unwrap_or_else(|_| {
                let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
                assert_ne!(got.0, me, "written here but not notified before returning");
                got
            });
            assert!(ok);
            here += usize::from(thread == me);
        }
        let st = wal.stats();
        assert_eq!(st.write_groups, 20);
        assert_eq!(st.groups_led_by_callers, here as u64);
        assert!(here > 0, "no group was written by the submitting thread");
        assert_eq!(
            wal.entries(1, 21, None).unwrap(),
            (1..=20).map(entry).collect::<Vec<_>>()
        );
        // Asynchronous submissions are written by the writer thread.
        let (tx, rx) = crossbeam_channel::bounded(1);
        wal.submit_notify(
            vec![entry(21)],
            None,
            Notify::Callback(Box::new(move |_, r| {
                let _ = tx.send((std::thread::current().id(), r.is_ok()));
            })),
        )
        .unwrap();
        let (thread, ok) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(ok);
        assert_ne!(thread, me);
        let st = wal.stats();
        assert_eq!(
            (st.write_groups, st.groups_led_by_callers),
            (21, here as u64)
        );
    }

    #[test]
    fn submit_notify_wait_hands_over_when_another_thread_is_writing() {
        let (ntx, nrx) = crossbeam_channel::bounded(1);
        hands_over_while_another_thread_writes(move |wal| {
            let notify = Notify::Callback(Box::new(move |_, r| {
                let _ = ntx.send(r.is_ok());
            }));
            wal.submit_notify_wait(vec![entry(1)], None, notify)
        });
        assert!(nrx.recv_timeout(Duration::from_secs(60)).unwrap());
    }

    #[test]
    fn a_completion_unparks_only_the_waiters_it_completes() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap();
        let s = &wal.shared;
        s.register(5);
        s.register(7);
        s.register(6);
        s.publish_durable(6);
        let left: Vec<u64> = s.waiters.lock().iter().map(|(t, _)| *t).collect();
        assert_eq!(left, vec![7]);
        s.unregister(7);
        assert!(s.waiters.lock().is_empty());
    }

    /// Synchronous appenders that hand the writer to one another, mixed with
    /// asynchronous ones served by the writer thread, in groups split by
    /// `batch_bytes_max` and across segment rotations, keep every append, in
    /// order. (A lost hand-off is usually rescued here by a later append;
    /// `a_round_of_synchronous_appends_always_ends` is the test that catches
    /// one.)
    #[test]
    fn concurrent_appenders_are_all_served_and_their_entries_kept() {
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 150;
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let (placed_tx, placed_rx) = crossbeam_channel::unbounded::<Vec<(u64, u64, u64)>>();
        for t in 0..THREADS {
            let wal = Arc::clone(&wal);
            let tx = tx.clone();
            let placed_tx = placed_tx.clone();
            std::thread::spawn(move || {
                let mut placed = Vec::new();
                for k in 0..PER_THREAD {
                    // Payloads from 1 to 1.5 KiB: several appends fill a
                    // group's 8 KiB, so groups split.
                    let len = 1024 + ((t * 131 + k * 17) % 512) as usize;
                    let build = |next: u64| {
                        vec![Entry {
                            index: next,
                            term: 1,
                            data: vec![t as u8; len].into(),
                            context: k.to_le_bytes().to_vec().into(),
                            ..Entry::default()
                        }]
                    };
                    // Four ways in: the index chosen in a closure or
                    // assigned to encoded entries, waited on or led.
                    let r = match t % 4 {
                        0 => wal.append_next_wait(build),
                        1 => wal
                            .append_wait(build(0))
                            .map(|first| placed.push((first, t, k))),
                        2 => wal.append(build(0)).and_then(|(first, c)| {
                            placed.push((first, t, k));
                            c.wait()
                        }),
                        _ => wal.append_next(build).and_then(|c| c.wait()),
                    };
                    if let Err(e) = r {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                let _ = placed_tx.send(placed);
                let _ = tx.send(Ok(t));
            });
        }
        drop(tx);
        drop(placed_tx);
        for _ in 0..THREADS {
            rx.recv_timeout(Duration::from_secs(120))
                .expect("every appender finishes")
                .unwrap();
        }
        let n = THREADS * PER_THREAD;
        assert_eq!(wal.last_index().unwrap(), n);
        let mut next_k = [0u64; THREADS as usize];
        for e in wal.entries(1, n + 1, None).unwrap() {
            let t = e.data[0] as usize;
            assert!(e.data.iter().all(|b| *b as usize == t));
            let k = u64::from_le_bytes(e.context[..].try_into().unwrap());
            assert_eq!(k, next_k[t], "thread {t}'s appends in order, none lost");
            next_k[t] += 1;
        }
        assert_eq!(next_k, [PER_THREAD; THREADS as usize]);
        // The indexes `append` returned are where those entries are, also
        // as read back from the segments after a reopen (records moved to
        // their index after encoding carry valid CRCs).
        let placed: Vec<(u64, u64, u64)> = placed_rx.iter().flatten().collect();
        assert_eq!(placed.len() as u64, 2 * (THREADS / 4) * PER_THREAD);
        drop(wal);
        let wal = Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap();
        assert_eq!(wal.last_index().unwrap(), n);
        for (first, t, k) in placed {
            let e = &wal.entries(first, first + 1, None).unwrap()[0];
            assert_eq!(e.index, first);
            assert_eq!(
                (e.data[0] as u64, &e.context[..]),
                (t, &k.to_le_bytes()[..])
            );
        }
    }

    #[test]
    fn append_places_entries_after_the_last_index_and_refuses_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap();
        wal.submit_wait((1..=3).map(entry).collect(), None).unwrap();
        // The indexes passed in do not matter.
        let first = wal.append_wait(vec![entry(77), entry(12)]).unwrap();
        assert_eq!(first, 4);
        let (first, c) = wal.append(vec![entry(0)]).unwrap();
        assert_eq!(first, 6);
        c.wait().unwrap();
        let got: Vec<u64> = wal
            .entries(1, 7, None)
            .unwrap()
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
        assert!(matches!(
            wal.append(Vec::new()),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            wal.append_wait(Vec::new()),
            Err(Error::InvalidArgument(_))
        ));
        // After a compaction past the end and a snapshot reset alike, the
        // next append lands right after the (new) last index.
        wal.reset_to_snapshot(100, 2).unwrap().wait().unwrap();
        assert_eq!(wal.append_wait(vec![entry(1)]).unwrap(), 101);
        drop(wal);
        let wal = Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap();
        assert_eq!(
            (wal.first_index().unwrap(), wal.last_index().unwrap()),
            (101, 101)
        );
    }

    /// Rounds of synchronous appends that start together and end with every
    /// appender waiting: a submitter left queued, parked, by a leader that
    /// did not hand off has no later append to rescue it, and the round
    /// never ends.
    #[test]
    fn a_round_of_synchronous_appends_always_ends() {
        const THREADS: usize = 6;
        const ROUNDS: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), WalOptions::small_for_tests()).unwrap());
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let (tx, rx) = crossbeam_channel::unbounded();
        for t in 0..THREADS {
            let (wal, barrier, tx) = (Arc::clone(&wal), Arc::clone(&barrier), tx.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    barrier.wait();
                    let r = wal.append_next_wait(|next| vec![entry(next)]);
                    let _ = tx.send((round, t, r));
                }
            });
        }
        drop(tx);
        for _ in 0..THREADS * ROUNDS {
            let (round, t, r) = rx
                .recv_timeout(Duration::from_secs(120))
                .expect("every synchronous append of every round completes");
            r.unwrap_or_else(|e| panic!("round {round}, thread {t}: {e}"));
        }
        assert_eq!(wal.last_index().unwrap(), (THREADS * ROUNDS) as u64);
    }
}
