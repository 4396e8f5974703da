//! The sled-backed state machine: apply, reads, durability.
//!
//! # Key space
//!
//! Everything lives in sled's default tree so that one `Tree::apply_batch`
//! covers user writes and metadata together:
//!
//! ```text
//! 0x00 "applied"   (index u64 LE, term u64 LE)   the applied index and term
//! 0x00 "conf"      ConfState (tandem codec)       membership as of `applied`
//! 0x00 "format"    u8                              on-disk format version
//! 0x00 "snapshot"  SnapshotMetadata                last installed/created snapshot
//! 0x01 <user key>  <user value>                    the data
//! ```
//!
//! User keys are stored behind the `0x01` prefix, so no user key can collide
//! with metadata, and range scans over user data never see metadata.
//!
//! # Why one tree and `apply_batch`
//!
//! `sled::Tree::apply_batch` writes all the batch's updates to sled's log
//! under one reservation and seals it with a batch manifest holding the last
//! LSN of the batch; recovery replays the batch only if the log is intact up
//! to that LSN, so after a crash either every write of the batch (including
//! the applied index) is visible or none is. It also holds sled's
//! process-wide concurrency-control write lock while inserting, so a point
//! read never sees half a batch. A multi-tree transaction would give the
//! same atomicity across trees but costs a read set, conflict detection and
//! retries we do not need (the apply thread is the only writer).
//!
//! What `apply_batch` does NOT give:
//! - durability: the batch is in memory/the OS page cache until a flush;
//!   see [`StateMachine::flush_durable`];
//! - a point-in-time view for iterators: `range`/`scan_prefix` take the lock
//!   per step, so a long scan may see batches applied while it runs (each
//!   key's value is from a whole batch, but different keys may be from
//!   different batches);
//! - conditional logic: compare-and-swap is evaluated by [`StateMachine::apply`]
//!   itself against sled plus the writes of earlier entries of the group.
//!
//! # Write-behind
//!
//! sled's `apply_batch` has a large fixed cost per call (it seals its IO
//! buffer around the batch and wakes its IO thread pool), so one batch per
//! leader apply put that cost, and the IO threads' CPU, on the path of every
//! client's write. [`StateMachine::apply`] therefore evaluates the entries
//! (compare-and-swap included) against sled plus an in-memory map of the
//! writes applied since the last sled batch, answers at once, and writes
//! the map to sled as ONE atomic batch, with the applied index and term of
//! the last entry in it (and the membership if it changed), when
//! [`StateMachine::flush_pending`] is called (the node's write thread calls
//! it once per tick, or at once under load), when the map holds `write_behind_entries` entries or
//! `write_behind_bytes` bytes, and before anything that needs sled itself
//! to be current: range scans, snapshot captures, durability flushes.
//!
//! This does not weaken what survives a crash: the log, not the state
//! machine, makes a write durable, and the applied index stored in sled
//! always matches the writes stored with it. A crash loses the map; the
//! restarted replica finds sled at the last batch's applied index and
//! re-applies the committed entries above it from the log. Point reads
//! consult the map before sled, so every reader sees the applied state.

use std::collections::{BTreeSet, HashMap};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};
use sled::IVec;
use tandem_raft::{ConfChangeV2, ConfState, Entry, EntryType, SnapshotMetadata};
use tandem_snapshot::{
    BeforeImages, BeforeImagesConfig, PointInTimeIter, SnapshotReader, Stager, StateSwitch,
    WriterConfig,
};
use tracing::{debug, error, info, warn};

use super::command::{CasMismatch, CommandResult, CommandView, OpView};
use super::conf::{decode_conf_change, next_conf_state, removed_after};
use super::durable::FileSyncer;
use super::error::{Error, Result};

/// The on-disk format version of the state machine's key space.
pub const SM_FORMAT_VERSION: u8 = 1;

const META_APPLIED: &[u8] = b"\x00applied";
const META_CONF: &[u8] = b"\x00conf";
const META_FORMAT: &[u8] = b"\x00format";
const META_SNAPSHOT: &[u8] = b"\x00snapshot";
const META_REMOVED: &[u8] = b"\x00removed";
const USER_PREFIX: u8 = 0x01;

// Metadata sorts before every user key.
const _: () = assert!(USER_PREFIX > 0x00);

/// Options of [`StateMachine::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmOptions {
    /// sled's page cache size, in bytes.
    pub cache_bytes: u64,
    /// How often sled's own background thread flushes (`None`: never).
    /// sled's flush is not durable against power loss (see
    /// [`StateMachine::flush_durable`]); this only bounds how much a process
    /// crash can lose before re-applying from the log.
    pub sled_flush_every_ms: Option<u64>,
    /// Most applied entries held in memory before they are written to sled
    /// (write-behind, see [`StateMachine::flush_pending`]); `0` writes
    /// every apply call through at once. A bound on memory: a node writes
    /// long before it (once per tick, or when 256 are held), and `apply`
    /// writes itself when it is reached. Default 4096.
    pub write_behind_entries: usize,
    /// Most bytes of keys and values held in memory the same way; a larger
    /// apply call is written through at once. Default 8 MiB.
    pub write_behind_bytes: usize,
}

impl Default for SmOptions {
    fn default() -> Self {
        SmOptions {
            cache_bytes: 64 * 1024 * 1024,
            sled_flush_every_ms: Some(500),
            write_behind_entries: 4096,
            write_behind_bytes: 8 * 1024 * 1024,
        }
    }
}

impl SmOptions {
    /// Check the options.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.cache_bytes < 1024 * 1024 {
            return Err(Error::Config(format!(
                "cache_bytes must be at least 1 MiB, got {}",
                self.cache_bytes
            )));
        }
        if self.sled_flush_every_ms == Some(0) {
            return Err(Error::Config(
                "sled_flush_every_ms must be > 0 (None disables it)".into(),
            ));
        }
        Ok(())
    }
}

/// The result of applying one committed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryResult {
    /// The entry's log index.
    pub index: u64,
    /// The entry's term.
    pub term: u64,
    /// The entry's context (the proposal id travels here).
    pub context: tandem_raft::Bytes,
    /// What applying it produced.
    pub result: CommandResult,
}

/// A membership change that took effect in this apply call. The node
/// runtime passes `change` to `RawNode::apply_conf_change`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedConfChange {
    /// The entry's log index.
    pub index: u64,
    /// The change, in its joint-capable form.
    pub change: ConfChangeV2,
    /// The configuration after the change (stored in the same batch).
    pub conf_state: ConfState,
}

/// What one [`StateMachine::apply`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutput {
    /// The applied index after the call.
    pub applied_index: u64,
    /// The term of the entry at `applied_index`.
    pub applied_term: u64,
    /// One result per newly applied entry, in log order. Entries at or
    /// below the applied index before the call were skipped and have none.
    pub results: Vec<EntryResult>,
    /// Accepted membership changes, in log order (refused ones appear only
    /// in `results`, as `CommandResult::ConfChange(Err(..))`).
    pub conf_changes: Vec<AppliedConfChange>,
}

/// What the apply path owns; guarded by one mutex so applies are serial.
#[derive(Debug)]
struct ApplyState {
    applied_index: u64,
    applied_term: u64,
    conf_state: ConfState,
    /// Replicas that left a configuration applied here (see
    /// [`StateMachine::removed`]).
    removed: BTreeSet<u64>,
    /// The membership changed since the last sled batch.
    conf_unwritten: bool,
    snapshot: SnapshotMetadata,
    /// Set when an apply failed: the replica must stop, not skip the entry.
    stopped: Option<String>,
    /// Before-images of the snapshot being captured, if any.
    capture: Option<Arc<BeforeImages>>,
}

/// A snapshot point being captured while applying continues.
///
/// Created by [`StateMachine::begin_snapshot_capture`] at exactly the
/// applied index; from then on every apply records the old value of each
/// key it is about to change for the first time (its before-image), so
/// [`SnapshotCapture::iter`] yields the user data at exactly
/// `metadata.index` however long the iteration takes (see
/// `tandem_snapshot::PointInTimeIter` for the argument).
#[derive(Clone, Debug)]
pub struct SnapshotCapture {
    /// Index, term and membership of the snapshot point.
    pub metadata: SnapshotMetadata,
    images: Arc<BeforeImages>,
}

impl SnapshotCapture {
    /// The user keys and values at the snapshot point, in key order. One
    /// iterator per capture (the before-images track its cursor).
    pub fn iter<'a>(&'a self, sm: &'a StateMachine) -> PointInTimeIter<'a, Iter> {
        PointInTimeIter::new(sm.range_in_sled::<&[u8], _>(..), &self.images)
    }

    /// The before-images recorded for this capture.
    #[must_use]
    pub fn images(&self) -> &BeforeImages {
        &self.images
    }
}

/// The replicated state machine of one replica, stored in sled.
///
/// `apply` is serialised internally; reads (`get`, `range`, `scan_prefix`)
/// go straight to sled and may run concurrently with it from any thread.
///
/// # Versions
///
/// The sled database lives in a version directory `v-<index:020>` under
/// the state machine's root, named by the root's `CURRENT` pointer
/// ([`StateSwitch`]). [`StateMachine::install_snapshot`] fills a new version
/// from a snapshot next to the live one and switches `CURRENT` atomically,
/// so after a crash the root holds the old state or the complete new one.
/// (A root written before versions existed holds sled's files directly; it
/// opens in place and becomes versioned at the first install.)
#[derive(Debug)]
pub struct StateMachine {
    root: PathBuf,
    opts: SmOptions,
    /// The live version directory.
    dir: RwLock<PathBuf>,
    db: RwLock<sled::Db>,
    state: Mutex<ApplyState>,
    /// Applied writes not yet in sled.
    unwritten: RwLock<Unwritten>,
    /// Held writes moved aside while a write puts them into sled (empty
    /// otherwise); reads look here after `unwritten`, before sled.
    writing: RwLock<Arc<HashMap<IVec, Option<IVec>>>>,
    /// Held by the one write to sled under way. Lock order: `writer`,
    /// then `state`, then `syncer`.
    writer: Mutex<()>,
    /// Mirror of `state.applied_index`, readable without the apply lock.
    applied_index: AtomicU64,
    /// The applied index stored in sled: that of the last batch written.
    written_index: AtomicU64,
    /// The highest applied index known to survive a power loss.
    durable_applied: AtomicU64,
    syncer: Mutex<FileSyncer>,
    /// Longest time one apply call spent recording before-images during the
    /// current (or last) snapshot capture, in microseconds.
    capture_record_us_max: AtomicU64,
    /// Of which: the longest single old-value read (`tree.get`).
    capture_read_us_max: AtomicU64,
}

/// Writes applied but not yet in sled (see "Write-behind" above). Written
/// only under the apply lock; point reads take its read lock.
#[derive(Debug, Default)]
struct Unwritten {
    /// Prefixed key → its latest value (`None`: removed).
    writes: HashMap<IVec, Option<IVec>>,
    /// Entries applied into the map since the last sled batch.
    entries: usize,
    /// Bytes of keys and values written into the map (an upper bound of
    /// what it holds: overwrites are counted again).
    bytes: usize,
}

/// Held writes moved aside for one sled batch, with what goes with them.
struct HeldBatch {
    writes: Arc<HashMap<IVec, Option<IVec>>>,
    /// The applied index and term of the last entry they include.
    index: u64,
    term: u64,
    /// The membership and the replicas seen removed, if they changed since
    /// the last batch.
    conf: Option<(ConfState, BTreeSet<u64>)>,
    /// The snapshot capture under way, which records before-images.
    capture: Option<Arc<BeforeImages>>,
}

/// Name of the version directory of a state installed at `index`.
fn version_name(index: u64) -> String {
    format!("v-{index:020}")
}

/// Find (or create) the live version directory under `root`.
fn open_version(root: &Path) -> Result<PathBuf> {
    let switch = StateSwitch::open(root).map_err(snap_err)?;
    if root.join(tandem_snapshot::CURRENT_FILE).exists() {
        // Removes `CURRENT.tmp` and every version but the live one.
        if let Some(dir) = switch.recover().map_err(snap_err)? {
            return Ok(dir);
        }
    }
    if root.join("conf").exists() || root.join("db").exists() {
        // sled files directly in the root: the layout before versions.
        // Leftover versions of an install that never switched are removed.
        for e in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
            let e = e.map_err(|e| Error::io(root, e))?;
            let name = e.file_name();
            if name.to_str().is_some_and(|n| n.starts_with("v-")) {
                let p = e.path();
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        return Ok(root.to_path_buf());
    }
    // A new state machine; a partial version left by a crash is replaced.
    let name = version_name(0);
    let dir = switch.create_version(&name).map_err(snap_err)?;
    switch.switch_to(&name).map_err(snap_err)?;
    Ok(dir)
}

fn snap_err(e: tandem_snapshot::Error) -> Error {
    Error::Snapshot(e.to_string())
}

impl StateMachine {
    /// Open (or create) the state machine stored in `dir`, and make the
    /// recovered state durable (so [`StateMachine::durable_applied`] starts
    /// at the recovered applied index).
    ///
    /// # Errors
    /// [`Error::Config`] for bad options, [`Error::Sled`]/[`Error::Io`] when
    /// the files cannot be opened or synced, [`Error::FormatVersion`] or
    /// [`Error::CorruptMetadata`] when the directory holds something else.
    pub fn open(dir: impl AsRef<Path>, opts: &SmOptions) -> Result<StateMachine> {
        opts.validate()?;
        let root = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let dir = open_version(&root)?;
        let db = open_sled(&dir, opts)?;
        Self::from_db(root, dir, opts, db)
    }

    /// For the deterministic simulator ([`crate::sim`]): a state machine
    /// over a new sled database in `dir` (no background flusher; the caller
    /// removes the directory) whose tree first receives `image`, as one atomic
    /// batch — the state a crash left behind (see [`StateMachine::raw_image`]).
    /// Then it opens exactly as [`StateMachine::open`] does.
    ///
    /// # Errors
    /// As [`StateMachine::open`].
    #[doc(hidden)]
    pub fn open_sim(dir: impl AsRef<Path>, image: &[(IVec, IVec)]) -> Result<StateMachine> {
        let dir = dir.as_ref().to_path_buf();
        let opts = SmOptions {
            cache_bytes: 1024 * 1024,
            sled_flush_every_ms: None,
            ..SmOptions::default()
        };
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(1024 * 1024)
            .flush_every_ms(None)
            .open()?;
        if !image.is_empty() {
            let mut batch = sled::Batch::default();
            for (k, v) in image {
                batch.insert(k.clone(), v.clone());
            }
            db.apply_batch(batch)?;
        }
        Self::from_db(dir.clone(), dir, &opts, db)
    }

    /// Every key and value of the sled tree, metadata included: what a
    /// crash right now could leave on disk (sled recovers a prefix of its
    /// atomic batches). Used by the simulator to model crashes honestly;
    /// memory is proportional to the data.
    ///
    /// # Errors
    /// sled errors.
    #[doc(hidden)]
    pub fn raw_image(&self) -> Result<Vec<(IVec, IVec)>> {
        let _st = self.state.lock();
        Ok(self.db().iter().collect::<sled::Result<Vec<_>>>()?)
    }

    fn from_db(
        root: PathBuf,
        dir: PathBuf,
        opts: &SmOptions,
        db: sled::Db,
    ) -> Result<StateMachine> {
        match db.get(META_FORMAT)? {
            Some(v) if v.as_ref() == [SM_FORMAT_VERSION] => {}
            Some(v) => {
                return Err(Error::FormatVersion {
                    found: v.first().copied().unwrap_or(0),
                    supported: SM_FORMAT_VERSION,
                })
            }
            None if db.is_empty() => {
                db.insert(META_FORMAT, &[SM_FORMAT_VERSION])?;
            }
            None => {
                return Err(Error::FormatVersion {
                    found: 0,
                    supported: SM_FORMAT_VERSION,
                })
            }
        }
        let (applied_index, applied_term) = match db.get(META_APPLIED)? {
            Some(v) => decode_applied(&v)?,
            None => (0, 0),
        };
        let conf_state = match db.get(META_CONF)? {
            Some(v) => decode_meta("conf", &v)?,
            None => ConfState::default(),
        };
        let removed = match db.get(META_REMOVED)? {
            Some(v) => decode_removed(&v)?,
            None => BTreeSet::new(),
        };
        let snapshot: SnapshotMetadata = match db.get(META_SNAPSHOT)? {
            Some(v) => decode_meta("snapshot", &v)?,
            None => SnapshotMetadata::default(),
        };
        if snapshot.index > applied_index {
            return Err(Error::CorruptMetadata {
                key: "snapshot",
                reason: format!(
                    "snapshot index {} is above the applied index {applied_index}",
                    snapshot.index
                ),
            });
        }
        let sm = StateMachine {
            syncer: Mutex::new(FileSyncer::new(&dir)),
            root,
            opts: opts.clone(),
            dir: RwLock::new(dir),
            db: RwLock::new(db),
            capture_record_us_max: AtomicU64::new(0),
            capture_read_us_max: AtomicU64::new(0),
            state: Mutex::new(ApplyState {
                applied_index,
                applied_term,
                conf_state,
                removed,
                conf_unwritten: false,
                snapshot,
                stopped: None,
                capture: None,
            }),
            unwritten: RwLock::new(Unwritten::default()),
            writing: RwLock::new(Arc::default()),
            writer: Mutex::new(()),
            applied_index: AtomicU64::new(applied_index),
            written_index: AtomicU64::new(applied_index),
            durable_applied: AtomicU64::new(0),
        };
        let durable = sm.flush_durable()?;
        assert_eq!(durable, applied_index, "nothing applies during open");
        info!(dir = %sm.dir().display(), applied_index, applied_term, "state machine opened");
        Ok(sm)
    }

    /// The root directory of the state machine (holding `CURRENT` and the
    /// version directories).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The live version directory (sled's files).
    #[must_use]
    pub fn dir(&self) -> PathBuf {
        self.dir.read().clone()
    }

    fn db(&self) -> sled::Db {
        self.db.read().clone()
    }

    /// The applied `(index, term)`.
    #[must_use]
    pub fn applied(&self) -> (u64, u64) {
        let st = self.state.lock();
        (st.applied_index, st.applied_term)
    }

    /// The applied index, without taking the apply lock.
    #[must_use]
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// The membership as of the applied index.
    #[must_use]
    pub fn conf_state(&self) -> ConfState {
        self.state.lock().conf_state.clone()
    }

    /// The replicas seen removed as of the applied index: members of a
    /// configuration applied here that a later one left out (and that no
    /// later one named again). Kept durable beside the configuration, in
    /// the same sled batches, so a restarted replica still ignores them
    /// (`docs/state-machine.md` §2).
    #[must_use]
    pub fn removed(&self) -> BTreeSet<u64> {
        self.state.lock().removed.clone()
    }

    /// Metadata of the last snapshot installed or created (index 0: none).
    #[must_use]
    pub fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.state.lock().snapshot.clone()
    }

    /// The highest applied index that survives a power loss: everything at
    /// or below it has been flushed by sled AND fdatasynced. The log may be
    /// compacted up to here, never beyond.
    #[must_use]
    pub fn durable_applied(&self) -> u64 {
        self.durable_applied.load(Ordering::Acquire)
    }

    /// The reason the state machine stopped, if an apply failed.
    #[must_use]
    pub fn stopped(&self) -> Option<String> {
        self.state.lock().stopped.clone()
    }

    /// Set the initial membership of a brand-new replica (nothing applied,
    /// no configuration yet), durably.
    ///
    /// # Errors
    /// [`Error::Config`] if the replica is not brand-new or `conf` has no
    /// voter; sled/IO errors.
    pub fn bootstrap(&self, conf: &ConfState) -> Result<()> {
        let mut st = self.state.lock();
        if st.applied_index != 0 || st.conf_state != ConfState::default() {
            return Err(Error::Config(format!(
                "bootstrap needs a new replica; this one has applied {} with {:?}",
                st.applied_index, st.conf_state
            )));
        }
        if conf.voters.is_empty() {
            return Err(Error::Config("bootstrap needs at least one voter".into()));
        }
        self.db()
            .insert(META_CONF, tandem_raft::types::encode(conf))?;
        st.conf_state = conf.clone();
        drop(st);
        self.flush_durable()?;
        Ok(())
    }

    /// Start capturing a snapshot at exactly the current applied index.
    ///
    /// # Errors
    /// [`Error::Config`] if a capture is already running.
    pub fn begin_snapshot_capture(&self, cfg: BeforeImagesConfig) -> Result<SnapshotCapture> {
        // The capture reads sled: it must hold the state at the applied
        // index; every later batch records its before-images.
        let (_writer, mut st) = self.lock_written()?;
        if st.capture.is_some() {
            return Err(Error::Config(
                "a snapshot capture is already running".into(),
            ));
        }
        let images = Arc::new(BeforeImages::new(cfg));
        st.capture = Some(Arc::clone(&images));
        self.capture_record_us_max.store(0, Ordering::Relaxed);
        self.capture_read_us_max.store(0, Ordering::Relaxed);
        Ok(SnapshotCapture {
            metadata: SnapshotMetadata {
                conf_state: st.conf_state.clone(),
                index: st.applied_index,
                term: st.applied_term,
            },
            images,
        })
    }

    /// Stop recording before-images (the capture's iterator must not be
    /// used afterwards: it would no longer be point-in-time).
    pub fn end_snapshot_capture(&self) {
        self.state.lock().capture = None;
    }

    /// Record the metadata of a snapshot created from (or installed into)
    /// this state machine. It must not be above the applied index.
    ///
    /// # Errors
    /// [`Error::Config`] if `meta.index` is above the applied index or below
    /// the current snapshot; sled errors.
    pub fn set_snapshot_metadata(&self, meta: &SnapshotMetadata) -> Result<()> {
        // sled must never hold a snapshot above its own applied index.
        let (_writer, mut st) = self.lock_written()?;
        if meta.index > st.applied_index || meta.index < st.snapshot.index {
            return Err(Error::Config(format!(
                "snapshot index {} outside [{}, {}]",
                meta.index, st.snapshot.index, st.applied_index
            )));
        }
        self.db()
            .insert(META_SNAPSHOT, tandem_raft::types::encode(meta))?;
        st.snapshot = meta.clone();
        Ok(())
    }

    /// Apply committed entries: evaluate them in order against the applied
    /// state and hold their writes in memory, to be written to sled as ONE
    /// atomic batch holding every held write, the new applied index and
    /// term, and the membership if it changed (see "Write-behind" in the
    /// module docs and [`StateMachine::flush_pending`]).
    ///
    /// Entries at or below the applied index are skipped (they were applied
    /// before, e.g. before a restart), so re-delivering entries never applies
    /// one twice. The rest must continue the applied index without a gap.
    /// Compare-and-swap is evaluated against the state including the writes
    /// of earlier entries of the same call.
    ///
    /// # Errors
    /// [`Error::Gap`] if the entries skip an index (nothing applied, the
    /// state machine stays usable). A corrupt or unknown command or a
    /// corrupt membership change STOPS the state machine: the entries before
    /// it are applied (in one batch, their results are not returned), the
    /// bad one and those after it are not, and this and every later call
    /// fail (later ones with [`Error::Stopped`]), because going on would
    /// diverge from the other replicas. A sled failure applies nothing of
    /// the call and stops it too.
    pub fn apply(&self, entries: &[Entry]) -> Result<ApplyOutput> {
        let mut st = self.state.lock();
        if let Some(why) = &st.stopped {
            return Err(Error::Stopped(why.clone()));
        }
        let skip = entries
            .iter()
            .take_while(|e| e.index <= st.applied_index)
            .count();
        if skip > 0 {
            debug!(
                skipped = skip,
                applied = st.applied_index,
                "skipping entries already applied"
            );
        }
        let entries = &entries[skip..];
        if entries.is_empty() {
            return Ok(ApplyOutput {
                applied_index: st.applied_index,
                applied_term: st.applied_term,
                ..ApplyOutput::default()
            });
        }
        let result = match self.apply_group(&mut st, entries) {
            Ok(out) => Ok(out),
            Err(e @ Error::Gap { .. }) => return Err(e),
            Err(e) => {
                error!(error = %e, "apply failed; stopping the state machine");
                st.stopped = Some(e.to_string());
                Err(e)
            }
        };
        // A stopped state machine writes what it applied before the bad
        // entry at once: its state then is exactly the one before it.
        let write_now = st.stopped.is_some() || {
            let u = self.unwritten.read();
            u.entries >= self.opts.write_behind_entries.max(1)
                || u.bytes >= self.opts.write_behind_bytes
        };
        // Writing takes the writer lock, which comes before the apply lock.
        drop(st);
        if write_now {
            self.flush_pending()?;
        }
        result
    }

    fn apply_group(&self, st: &mut ApplyState, entries: &[Entry]) -> Result<ApplyOutput> {
        // Contiguity first, so a gap refuses the whole call before any work.
        for (expected, e) in (st.applied_index + 1..).zip(entries) {
            if e.index != expected {
                return Err(Error::Gap {
                    expected,
                    got: e.index,
                });
            }
        }
        let db = self.db();
        let unwritten = self.unwritten.read();
        let writing = Arc::clone(&self.writing.read());
        let mut group = Group::new(&db, &unwritten.writes, &writing);
        let mut conf: Option<ConfState> = None;
        let mut removed: Option<BTreeSet<u64>> = None;
        let mut results = Vec::with_capacity(entries.len());
        let mut conf_changes = Vec::new();
        let mut last_term = st.applied_term;
        let mut failure = None;
        for e in entries {
            assert!(
                e.term >= last_term,
                "log terms never decrease: entry {} has term {} after term {last_term}",
                e.index,
                e.term
            );
            last_term = e.term;
            let result = match e.entry_type {
                EntryType::EntryNormal if e.data.is_empty() => Ok(CommandResult::Noop),
                EntryType::EntryNormal => CommandView::decode_entry(e.index, &e.data)
                    .and_then(|command| group.apply_command(command)),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    decode_conf_change(e.index, e.entry_type, &e.data).map(|change| {
                        let current = conf.as_ref().unwrap_or(&st.conf_state);
                        match next_conf_state(current, &change) {
                            Ok(next) => {
                                info!(index = e.index, ?next, "membership change applied");
                                removed = Some(removed_after(
                                    removed.as_ref().unwrap_or(&st.removed),
                                    current,
                                    &next,
                                ));
                                conf = Some(next.clone());
                                conf_changes.push(AppliedConfChange {
                                    index: e.index,
                                    change,
                                    conf_state: next.clone(),
                                });
                                CommandResult::ConfChange(Ok(next))
                            }
                            Err(reason) => {
                                info!(index = e.index, %reason, "membership change refused");
                                CommandResult::ConfChange(Err(reason))
                            }
                        }
                    })
                }
            };
            match result {
                Ok(result) => results.push(EntryResult {
                    index: e.index,
                    term: e.term,
                    context: e.context.clone(),
                    result,
                }),
                Err(err) => {
                    // Apply the entries before the bad one, then stop: the
                    // state then is exactly the one before the bad entry.
                    failure = Some(err);
                    break;
                }
            }
        }
        let Some(last) = entries.get(results.len().wrapping_sub(1)) else {
            return Err(failure.expect("an empty prefix only on failure"));
        };
        let pending = group.pending;
        let bytes: usize = pending
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum();
        drop(unwritten);
        {
            let mut unwritten = self.unwritten.write();
            unwritten.entries += results.len();
            unwritten.bytes += bytes;
            unwritten.writes.extend(pending);
        }
        st.applied_index = last.index;
        st.applied_term = last.term;
        if let Some(cs) = conf {
            st.removed = removed.expect("set with conf");
            st.conf_state = cs;
            st.conf_unwritten = true;
        }
        self.applied_index.store(last.index, Ordering::Release);
        if let Some(err) = failure {
            return Err(err);
        }
        Ok(ApplyOutput {
            applied_index: last.index,
            applied_term: last.term,
            results,
            conf_changes,
        })
    }

    /// Write every applied write held in memory to sled, as ONE atomic
    /// batch with the applied index and term (and the membership if it
    /// changed), so sled holds exactly the state at that applied index. Not
    /// durable by itself (see [`StateMachine::flush_durable`]). Returns
    /// whether there was anything to write.
    ///
    /// The held writes are moved aside under the apply lock and written
    /// without it, so `apply` and reads go on meanwhile (reads look at the
    /// writes being written too). One write runs at a time. The node's
    /// write thread calls it once per tick; `apply` calls it itself when
    /// the bounds of [`SmOptions`] are reached.
    ///
    /// # Errors
    /// sled errors: the state machine stops applying; the writes stay held
    /// (reads still see them) and the next call tries again.
    pub fn flush_pending(&self) -> Result<bool> {
        let _writer = self.writer.lock();
        self.write_held()
    }

    /// The writer and apply locks, with every applied write in sled: sled
    /// holds exactly the applied state until the guards are dropped.
    fn lock_written(&self) -> Result<(MutexGuard<'_, ()>, MutexGuard<'_, ApplyState>)> {
        let writer = self.writer.lock();
        // The bulk without the apply lock; what was applied meanwhile (a
        // few entries at most) under it.
        self.write_held()?;
        let mut st = self.state.lock();
        self.write_under(&mut st)?;
        Ok((writer, st))
    }

    /// [`StateMachine::flush_pending`] with the writer lock held: the sled
    /// write runs without the apply lock.
    fn write_held(&self) -> Result<bool> {
        let Some(batch) = self.take_held(&mut self.state.lock()) else {
            return Ok(false);
        };
        let written = self.write_batch(&batch);
        self.finish_write(&mut self.state.lock(), &batch, written)?;
        Ok(true)
    }

    /// [`StateMachine::write_held`] with the apply lock held throughout.
    fn write_under(&self, st: &mut ApplyState) -> Result<bool> {
        let Some(batch) = self.take_held(st) else {
            return Ok(false);
        };
        let written = self.write_batch(&batch);
        self.finish_write(st, &batch, written)?;
        Ok(true)
    }

    /// Move the held writes aside for a write (`None`: sled is current).
    /// Both maps are locked for the move, so a reader finds every write in
    /// one of them.
    fn take_held(&self, st: &mut ApplyState) -> Option<HeldBatch> {
        if self.written_index.load(Ordering::Acquire) == st.applied_index && !st.conf_unwritten {
            return None;
        }
        let mut active = self.unwritten.write();
        let mut writing = self.writing.write();
        let moved = std::mem::take(&mut *active).writes;
        if writing.is_empty() {
            *writing = Arc::new(moved);
        } else {
            // A write that failed before: this one carries both.
            Arc::make_mut(&mut writing).extend(moved);
        }
        let conf = st
            .conf_unwritten
            .then(|| (st.conf_state.clone(), st.removed.clone()));
        st.conf_unwritten = false;
        Some(HeldBatch {
            writes: Arc::clone(&writing),
            index: st.applied_index,
            term: st.applied_term,
            conf,
            capture: st.capture.clone(),
        })
    }

    /// After the sled write of `batch`: empty the moved-aside map and
    /// advance the written index, or, if it failed, stop applying and keep
    /// the writes for the next try.
    fn finish_write(
        &self,
        st: &mut ApplyState,
        batch: &HeldBatch,
        written: Result<()>,
    ) -> Result<()> {
        if let Err(e) = written {
            st.conf_unwritten |= batch.conf.is_some();
            if st.stopped.is_none() {
                error!(error = %e, "writing applied entries to sled failed; stopping the state machine");
                st.stopped = Some(e.to_string());
            }
            return Err(e);
        }
        *self.writing.write() = Arc::default();
        self.written_index.store(batch.index, Ordering::Release);
        Ok(())
    }

    fn write_batch(&self, held: &HeldBatch) -> Result<()> {
        let db = self.db();
        if let Some(images) = held.capture.as_deref() {
            // Before-images are recorded BEFORE the batch writes the keys
            // (only this writer changes sled, and a capture begins only
            // between two writes).
            let started = std::time::Instant::now();
            for key in held.writes.keys() {
                images.record_with(&key[1..], || {
                    let read = std::time::Instant::now();
                    let old = db.get(key);
                    let us = u64::try_from(read.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.capture_read_us_max.fetch_max(us, Ordering::Relaxed);
                    old
                })?;
            }
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.capture_record_us_max.fetch_max(us, Ordering::Relaxed);
        }
        let mut batch = sled::Batch::default();
        for (key, value) in held.writes.iter() {
            match value {
                Some(v) => batch.insert(key.clone(), v.clone()),
                None => batch.remove(key.clone()),
            }
        }
        batch.insert(META_APPLIED, &encode_applied(held.index, held.term)[..]);
        if let Some((cs, removed)) = &held.conf {
            batch.insert(META_CONF, tandem_raft::types::encode(cs));
            batch.insert(META_REMOVED, encode_removed(removed));
        }
        db.apply_batch(batch)?;
        Ok(())
    }

    /// Wait until the write to sled under way (if any) is done.
    pub fn wait_for_write(&self) {
        drop(self.writer.lock());
    }

    /// Whether applied writes are held in memory, not yet written to sled.
    #[must_use]
    pub fn has_pending(&self) -> bool {
        self.held_entries() > 0
    }

    /// How many applied entries sled does not hold yet (held in memory or
    /// being written).
    #[must_use]
    pub fn held_entries(&self) -> u64 {
        // Saturating: an install stores the two indexes one after the other.
        self.applied_index().saturating_sub(self.written_index())
    }

    /// The applied index stored in sled (at most [`StateMachine::applied_index`]):
    /// where a crash right now would restart applying from.
    #[must_use]
    pub fn written_index(&self) -> u64 {
        self.written_index.load(Ordering::Acquire)
    }

    /// Make everything applied so far survive a power loss: sled `flush`,
    /// then `fdatasync` of sled's files (see the `durable` module for why
    /// the flush alone is not enough). Returns the new durable applied index.
    ///
    /// # Errors
    /// sled or IO errors; the durable index is then unchanged.
    pub fn flush_durable(&self) -> Result<u64> {
        // Before the syncer lock: `install_snapshot` takes the apply lock
        // first and the syncer lock second, so this must not hold the
        // syncer lock while it waits for the apply lock.
        self.flush_pending()?;
        let mut syncer = self.syncer.lock();
        // Read before the flush: every batch up to here completed before the
        // flush started, so the flush covers it.
        let applied = self.written_index();
        self.db().flush()?;
        syncer.sync()?;
        let prev = self.durable_applied.fetch_max(applied, Ordering::AcqRel);
        debug!(durable_applied = applied.max(prev), "state machine durable");
        Ok(applied.max(prev))
    }

    /// Longest time (µs) one apply call spent recording before-images during
    /// the current or last snapshot capture: the apply stall a build causes.
    #[must_use]
    pub fn capture_record_us_max(&self) -> u64 {
        self.capture_record_us_max.load(Ordering::Relaxed)
    }

    /// Of [`StateMachine::capture_record_us_max`]: the longest single read
    /// of an old value (µs). The rest of the stall is the record's lock and
    /// bookkeeping.
    #[must_use]
    pub fn capture_read_us_max(&self) -> u64 {
        self.capture_read_us_max.load(Ordering::Relaxed)
    }

    /// Build a snapshot of the state at the current applied index into
    /// `stager` (`building-*`, then published as `snapshot-*`), while
    /// applying continues: before-images keep the view at exactly that
    /// index. Blocks for the whole build: call it from a background thread.
    ///
    /// # Errors
    /// [`Error::Config`] if another capture is running or nothing was
    /// applied yet; [`Error::Snapshot`] if the build fails (e.g. the
    /// before-images outgrew their bound under a heavy write load).
    pub fn build_snapshot(
        &self,
        stager: &Stager,
        writer: &WriterConfig,
        images: BeforeImagesConfig,
    ) -> Result<SnapshotReader> {
        let capture = self.begin_snapshot_capture(images)?;
        let meta = capture.metadata.clone();
        let result = if meta.index == 0 {
            Err(Error::Config(
                "nothing applied yet: no snapshot to build".into(),
            ))
        } else {
            stager
                .build(&meta, writer, capture.iter(self))
                .map_err(snap_err)
        };
        let recorded = capture.images().recorded_total();
        self.end_snapshot_capture();
        if let Ok(r) = &result {
            info!(
                index = meta.index,
                term = meta.term,
                chunks = r.manifest().chunk_count,
                bytes = r.manifest().total_bytes,
                before_images = recorded,
                apply_stall_us_max = self.capture_record_us_max(),
                old_value_read_us_max = self.capture_read_us_max(),
                "snapshot built"
            );
        }
        result
    }

    /// Replace the whole state with the snapshot `snap` (index, term and
    /// membership from its manifest), atomically:
    ///
    /// 1. a new version directory is filled from the snapshot's pairs (the
    ///    apply thread keeps applying to the live version meanwhile), with
    ///    the applied index, membership and snapshot metadata, then flushed
    ///    and fsynced;
    /// 2. under the apply lock, if the live state is still behind the
    ///    snapshot, `CURRENT` is switched to the new version (the commit
    ///    point: write tmp, fsync, rename, fsync dir) and the old one removed;
    ///    reads and applies from then on see the new state.
    ///
    /// A crash before the switch leaves the old state (the partial version
    /// is removed at the next open); after it, the complete new state.
    ///
    /// # Errors
    /// [`Error::Config`] if the state already applied the snapshot's index;
    /// [`Error::Snapshot`] if the snapshot does not read back; sled/IO errors.
    /// Nothing changes on error.
    pub fn install_snapshot(&self, snap: &SnapshotReader) -> Result<()> {
        let m = snap.manifest();
        let meta = SnapshotMetadata {
            conf_state: m.conf_state.clone(),
            index: m.index,
            term: m.term,
        };
        if self.applied_index() >= meta.index {
            return Err(Error::Config(format!(
                "snapshot at {} is not ahead of the applied index {}",
                meta.index,
                self.applied_index()
            )));
        }
        // Who the snapshot's configuration leaves out is removed, as if its
        // changes had been applied here (recomputed below if a change is
        // applied meanwhile).
        let removed = {
            let st = self.state.lock();
            removed_after(&st.removed, &st.conf_state, &meta.conf_state)
        };
        let switch = StateSwitch::open(&self.root).map_err(snap_err)?;
        let name = version_name(meta.index);
        let dir = switch.create_version(&name).map_err(snap_err)?;
        let filled = (|| -> Result<sled::Db> {
            let db = open_sled(&dir, &self.opts)?;
            db.insert(META_FORMAT, &[SM_FORMAT_VERSION])?;
            let mut batch = sled::Batch::default();
            let mut n = 0usize;
            for pair in snap.pairs() {
                let (k, v) = pair.map_err(snap_err)?;
                batch.insert(user_key(&k), v);
                n += 1;
                if n % INSTALL_BATCH_PAIRS == 0 {
                    db.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            batch.insert(META_APPLIED, &encode_applied(meta.index, meta.term)[..]);
            batch.insert(META_CONF, tandem_raft::types::encode(&meta.conf_state));
            batch.insert(META_REMOVED, encode_removed(&removed));
            batch.insert(META_SNAPSHOT, tandem_raft::types::encode(&meta));
            db.apply_batch(batch)?;
            db.flush()?;
            FileSyncer::new(&dir).sync()?;
            Ok(db)
        })();
        let db = match filled {
            Ok(db) => db,
            Err(e) => {
                if let Err(re) = std::fs::remove_dir_all(&dir) {
                    warn!(dir = %dir.display(), error = %re, "could not remove a failed install");
                }
                return Err(e);
            }
        };
        // No write may be under way while the database is replaced.
        let _writer = self.writer.lock();
        let mut st = self.state.lock();
        if st.applied_index >= meta.index {
            drop(st);
            drop(db);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::Config(format!(
                "the state applied past the snapshot at {} while it was installed",
                meta.index
            )));
        }
        let mut syncer = self.syncer.lock();
        if let Err(e) = switch.switch_to(&name) {
            // `switch_to` removes the old versions after the switch; sled's
            // background flusher may still write into the old one, so that
            // cleanup can fail. What counts is whether CURRENT moved.
            if switch.current().ok().flatten().as_deref() != Some(dir.as_path()) {
                return Err(snap_err(e));
            }
            warn!(error = %e, "old state versions not removed yet; the next open removes them");
        }
        // Applied writes not yet in the old database are superseded by the
        // snapshot; they go in the same step as the database they were for.
        let mut unwritten = self.unwritten.write();
        *self.db.write() = db;
        *unwritten = Unwritten::default();
        *self.writing.write() = Arc::default();
        drop(unwritten);
        let removed_now = removed_after(&st.removed, &st.conf_state, &meta.conf_state);
        // A membership change applied during the fill: the next sled batch
        // carries the set as it is now.
        st.conf_unwritten = removed_now != removed;
        st.removed = removed_now;
        *self.dir.write() = dir.clone();
        *syncer = FileSyncer::new(&dir);
        drop(syncer);
        // A capture of the old state reads the old database, which nothing
        // writes any more: it stays point-in-time without before-images.
        st.capture = None;
        st.applied_index = meta.index;
        st.applied_term = meta.term;
        st.conf_state = meta.conf_state.clone();
        st.snapshot = meta.clone();
        self.applied_index.store(meta.index, Ordering::Release);
        self.written_index.store(meta.index, Ordering::Release);
        self.durable_applied.fetch_max(meta.index, Ordering::AcqRel);
        info!(
            index = meta.index,
            term = meta.term,
            pairs = m.pair_count,
            "snapshot installed"
        );
        Ok(())
    }

    /// The value of `key` in the applied state.
    ///
    /// # Errors
    /// sled errors.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        let key = user_ivec(key.as_ref());
        if let Some(value) = self.unwritten.read().writes.get(&key) {
            return Ok(value.clone());
        }
        // Not held when looked at: a write moved it aside (both maps are
        // locked for the move), or sled has the key's latest value as of
        // then (the moved-aside map is emptied only after its batch is in
        // sled) or a later one.
        if let Some(value) = self.writing.read().get(&key) {
            return Ok(value.clone());
        }
        Ok(self.db().get(key)?)
    }

    /// Iterate over the user keys in `range`, in key order. Applied writes
    /// still held in memory are written to sled first (the iterator reads
    /// sled); if that fails, the iterator yields the error.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        if let Err(e) = self.flush_pending() {
            return Iter::failed(e);
        }
        self.range_in_sled(range)
    }

    fn range_in_sled<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let start = match range.start_bound() {
            Bound::Included(k) => Bound::Included(user_key(k.as_ref())),
            Bound::Excluded(k) => Bound::Excluded(user_key(k.as_ref())),
            Bound::Unbounded => Bound::Included(vec![USER_PREFIX]),
        };
        let end = match range.end_bound() {
            Bound::Included(k) => Bound::Included(user_key(k.as_ref())),
            Bound::Excluded(k) => Bound::Excluded(user_key(k.as_ref())),
            Bound::Unbounded => Bound::Excluded(vec![USER_PREFIX + 1]),
        };
        // sled panics on a range whose start is after its end; such a range
        // is simply empty.
        let empty = match (&start, &end) {
            (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
                s > e
                    || (s == e
                        && !(matches!(start, Bound::Included(_))
                            && matches!(end, Bound::Included(_))))
            }
            _ => false,
        };
        if empty {
            return Iter {
                inner: None,
                error: None,
            };
        }
        Iter {
            inner: Some(self.db().range::<Vec<u8>, _>((start, end))),
            error: None,
        }
    }

    /// Iterate over the user keys starting with `prefix`, in key order
    /// (after writing held writes to sled, as [`StateMachine::range`]).
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        if let Err(e) = self.flush_pending() {
            return Iter::failed(e);
        }
        Iter {
            inner: Some(self.db().scan_prefix(user_key(prefix.as_ref()))),
            error: None,
        }
    }
}

impl Drop for StateMachine {
    /// Applied writes held in memory are written to sled (not durably), so
    /// a state machine reopened in the same process starts where this one
    /// stopped. A crash skips this; the log re-applies them then.
    fn drop(&mut self) {
        if let Err(e) = self.flush_pending() {
            warn!(error = %e, "could not write the held applied writes at close; the log re-applies them");
        }
    }
}

/// Pairs per sled batch when a snapshot is installed.
const INSTALL_BATCH_PAIRS: usize = 4096;

/// How long [`StateMachine::open`] waits for a previous handle of the same
/// directory (in this process) to release sled's file lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Open sled, waiting a bounded time for the lock of a handle of the same
/// directory that this process just dropped
/// ([`super::open_sled_retrying`]); a lock held by another process
/// stays held and fails after it.
fn open_sled(dir: &Path, opts: &SmOptions) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(opts.cache_bytes)
        .flush_every_ms(opts.sled_flush_every_ms);
    Ok(super::open_sled_retrying(&config, LOCK_WAIT)?)
}

/// The writes of the entries applied so far in one group, on top of sled.
///
/// Writes are kept in order in a vector (a move, no hashing), which becomes
/// the sled batch at the end; a key index is built only when the group
/// holds a compare-and-swap that needs to read pending writes.
struct Group<'a> {
    tree: &'a sled::Tree,
    /// Writes of earlier groups not yet in sled, then those being written.
    unwritten: &'a HashMap<IVec, Option<IVec>>,
    writing: &'a HashMap<IVec, Option<IVec>>,
    /// Prefixed key → value (`None`: removed), in apply order; for a key
    /// written twice the later write wins.
    pending: Vec<(IVec, Option<IVec>)>,
    /// Key → position of its latest write in `pending`; built lazily.
    index: Option<HashMap<IVec, usize>>,
}

impl<'a> Group<'a> {
    fn new(
        tree: &'a sled::Tree,
        unwritten: &'a HashMap<IVec, Option<IVec>>,
        writing: &'a HashMap<IVec, Option<IVec>>,
    ) -> Group<'a> {
        Group {
            tree,
            unwritten,
            writing,
            pending: Vec::new(),
            index: None,
        }
    }

    fn write(&mut self, key: IVec, value: Option<IVec>) {
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.pending.len());
        }
        self.pending.push((key, value));
    }

    fn current(&mut self, key: &IVec) -> Result<Option<IVec>> {
        let pending = &self.pending;
        let index = self.index.get_or_insert_with(|| {
            pending
                .iter()
                .enumerate()
                .map(|(pos, (k, _))| (k.clone(), pos))
                .collect()
        });
        match index.get(key) {
            Some(&pos) => Ok(self.pending[pos].1.clone()),
            None => match self.unwritten.get(key).or_else(|| self.writing.get(key)) {
                Some(value) => Ok(value.clone()),
                None => Ok(self.tree.get(key)?),
            },
        }
    }

    fn apply_command(&mut self, command: CommandView<'_>) -> Result<CommandResult> {
        Ok(match command {
            CommandView::Noop => CommandResult::Noop,
            CommandView::Batch(ops) => {
                self.pending.reserve(ops.len());
                for op in &ops {
                    match *op {
                        OpView::Insert { key, value } => {
                            self.write(user_ivec(key), Some(IVec::from(value)));
                        }
                        OpView::Remove { key } => self.write(user_ivec(key), None),
                    }
                }
                CommandResult::Written { ops: ops.len() }
            }
            CommandView::Cas(cas) => {
                let key = user_ivec(cas.key);
                let current = self.current(&key)?;
                if current.as_deref() == cas.expected {
                    self.write(key, cas.new.map(IVec::from));
                    CommandResult::Cas(Ok(()))
                } else {
                    CommandResult::Cas(Err(CasMismatch {
                        current: current.map(|v| v.to_vec()),
                    }))
                }
            }
        })
    }
}

/// An iterator over user keys and values, in key order.
pub struct Iter {
    inner: Option<sled::Iter>,
    /// Yielded first (and alone): the iterator could not be set up.
    error: Option<Error>,
}

impl Iter {
    fn failed(e: Error) -> Iter {
        Iter {
            inner: None,
            error: Some(e),
        }
    }
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

fn strip(item: sled::Result<(IVec, IVec)>) -> Result<(IVec, IVec)> {
    let (k, v) = item?;
    assert_eq!(
        k.first(),
        Some(&USER_PREFIX),
        "user iterators only cover the user key space"
    );
    Ok((IVec::from(&k[1..]), v))
}

impl Iterator for Iter {
    type Item = Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        self.inner.as_mut()?.next().map(strip)
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        self.inner.as_mut()?.next_back().map(strip)
    }
}

/// The prefixed key as an `IVec`; short keys are built on the stack and
/// stored inline by sled (no heap allocation).
fn user_ivec(key: &[u8]) -> IVec {
    const INLINE: usize = 22;
    if key.len() < INLINE {
        let mut buf = [0u8; INLINE];
        buf[0] = USER_PREFIX;
        buf[1..=key.len()].copy_from_slice(key);
        IVec::from(&buf[..=key.len()])
    } else {
        IVec::from(user_key(key))
    }
}

fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(USER_PREFIX);
    k.extend_from_slice(key);
    k
}

fn encode_applied(index: u64, term: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&index.to_le_bytes());
    out[8..].copy_from_slice(&term.to_le_bytes());
    out
}

fn decode_applied(bytes: &[u8]) -> Result<(u64, u64)> {
    let arr: [u8; 16] = bytes.try_into().map_err(|_| Error::CorruptMetadata {
        key: "applied",
        reason: format!("{} bytes, expected 16", bytes.len()),
    })?;
    let (i, t) = arr.split_at(8);
    Ok((
        u64::from_le_bytes(i.try_into().expect("8 bytes")),
        u64::from_le_bytes(t.try_into().expect("8 bytes")),
    ))
}

/// The removed set as ascending u64 LE ids.
fn encode_removed(removed: &BTreeSet<u64>) -> Vec<u8> {
    removed.iter().flat_map(|id| id.to_le_bytes()).collect()
}

fn decode_removed(bytes: &[u8]) -> Result<BTreeSet<u64>> {
    if bytes.len() % 8 != 0 {
        return Err(Error::CorruptMetadata {
            key: "removed",
            reason: format!("{} bytes, not a multiple of 8", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

fn decode_meta<T: bincode::Decode<()>>(key: &'static str, bytes: &[u8]) -> Result<T> {
    tandem_raft::types::decode(bytes).map_err(|e| Error::CorruptMetadata {
        key,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_record_round_trips_and_rejects_bad_lengths() {
        assert_eq!(
            decode_applied(&encode_applied(7, 3)).unwrap(),
            (7, 3),
            "round trip"
        );
        assert!(matches!(
            decode_applied(&[0; 15]),
            Err(Error::CorruptMetadata { key: "applied", .. })
        ));
    }

    #[test]
    fn inline_and_heap_user_keys_are_the_same_bytes() {
        for len in [0usize, 1, 20, 21, 22, 23, 100] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(&user_ivec(&key)[..], &user_key(&key)[..], "len {len}");
            assert_eq!(user_ivec(&key)[0], USER_PREFIX);
        }
    }

    #[test]
    fn options_are_validated() {
        SmOptions::default().validate().unwrap();
        assert!(SmOptions {
            cache_bytes: 10,
            ..SmOptions::default()
        }
        .validate()
        .is_err());
        assert!(SmOptions {
            sled_flush_every_ms: Some(0),
            ..SmOptions::default()
        }
        .validate()
        .is_err());
    }
}
