//! The `snap/` directory: staging received chunks, publishing verified
//! snapshots, and cleaning up after a crash.
//!
//! Layout (names sort by index because the numbers are zero-padded):
//!
//! ```text
//! snap/
//!   incoming-<index:020>-<term:020>/   chunks of a transfer in progress (no MANIFEST
//!                                      until every chunk is there; verified before rename)
//!   building-<index:020>-<term:020>/   a local build in progress (SnapshotWriter)
//!   snapshot-<index:020>-<term:020>/   complete, verified snapshots: MANIFEST + chunk files
//! ```
//!
//! Only `snapshot-*` directories are ever read as snapshots; a crash leaves at
//! worst an `incoming-*` or `building-*` directory, which [`Stager::recover`]
//! removes. The rename from `incoming-*` to `snapshot-*` is the commit point
//! of staging; it happens after every chunk and the manifest are fsynced and
//! the whole snapshot has been re-read and verified.

use std::fs;
use std::path::{Path, PathBuf};

use tandem_raft::SnapshotMetadata;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::format::Manifest;
use crate::fsutil::{chunk_file_name, sync_dir, write_atomically, write_synced, MANIFEST_FILE};
use crate::reader::{check_chunk_belongs, SnapshotReader};
use crate::writer::{SnapshotWriter, WriterConfig};

const INCOMING: &str = "incoming-";
const BUILDING: &str = "building-";
const SNAPSHOT: &str = "snapshot-";

/// A step of staging or install after which a test can make the operation
/// stop as if the process had crashed (fault injection). The next step is
/// not performed; everything already performed stays on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CrashPoint {
    /// After the `n`-th chunk (counting from 0 in arrival order) was written
    /// and synced into `incoming-*`.
    AfterChunk(u32),
    /// All chunks written; before the manifest is written.
    BeforeManifest,
    /// Manifest written and synced in `incoming-*`; before verification and
    /// the rename to `snapshot-*`.
    AfterManifest,
    /// `incoming-*` renamed to `snapshot-*`; before `snap/` is fsynced.
    AfterPublishRename,
    /// [`crate::StateSwitch`]: the new state directory is complete; before
    /// `CURRENT.tmp` is written.
    BeforeSwitch,
    /// [`crate::StateSwitch`]: `CURRENT.tmp` written and synced; before it is
    /// renamed over `CURRENT`.
    AfterSwitchTmp,
    /// [`crate::StateSwitch`]: `CURRENT` names the new state; before old
    /// state directories are removed.
    AfterSwitch,
}

pub(crate) fn maybe_crash(plan: Option<CrashPoint>, at: CrashPoint) -> Result<()> {
    if plan == Some(at) {
        warn!(?at, "injected crash");
        return Err(Error::InjectedCrash(at));
    }
    Ok(())
}

fn dir_name(prefix: &str, index: u64, term: u64) -> String {
    format!("{prefix}{index:020}-{term:020}")
}

/// Parses `<prefix><index>-<term>`.
fn parse_dir_name(name: &str, prefix: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix(prefix)?;
    let (i, t) = rest.split_once('-')?;
    if i.len() != 20 || t.len() != 20 {
        return None;
    }
    Some((i.parse().ok()?, t.parse().ok()?))
}

/// Owner of the `snap/` directory.
///
/// ```
/// use tandem_raft::{ConfState, SnapshotMetadata};
/// use tandem_snapshot::{Stager, WriterConfig};
///
/// let tmp = tempfile::tempdir().unwrap();
/// // Leader side: build a snapshot and publish it.
/// let leader = Stager::open(&tmp.path().join("a/snap")).unwrap();
/// let meta = SnapshotMetadata { conf_state: ConfState::from_voters([1]), index: 5, term: 1 };
/// let mut w = leader.create_writer(&meta, &WriterConfig::default()).unwrap();
/// w.push(b"k", b"v").unwrap();
/// let built = leader.publish_built(&w.finish().unwrap()).unwrap();
///
/// // Follower side: stage the chunks as they arrive, then finish.
/// let follower = Stager::open(&tmp.path().join("b/snap")).unwrap();
/// let mut staging = follower.begin(built.manifest()).unwrap();
/// for n in 0..built.manifest().chunk_count {
///     staging.write_chunk(n, &built.read_chunk(n).unwrap()).unwrap();
/// }
/// let staged = staging.finish().unwrap();
/// assert_eq!(staged.manifest(), built.manifest());
/// // After a restart, the complete snapshot is found again.
/// assert_eq!(follower.recover().unwrap().unwrap().manifest(), built.manifest());
/// ```
#[derive(Debug)]
pub struct Stager {
    dir: PathBuf,
    crash_at: Option<CrashPoint>,
}

impl Stager {
    /// Opens (creating if needed) the `snap/` directory. Does not clean up:
    /// call [`Stager::recover`] once at startup.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        Ok(Stager {
            dir: dir.to_path_buf(),
            crash_at: None,
        })
    }

    /// Fault injection for tests: stop at `at` as if crashed.
    pub fn set_crash_point(&mut self, at: Option<CrashPoint>) {
        self.crash_at = at;
    }

    /// The `snap/` directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entries(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(Error::io(&self.dir))? {
            let e = e.map_err(Error::io(&self.dir))?;
            if let Some(n) = e.file_name().to_str() {
                names.push(n.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn remove_dir(&self, name: &str) -> Result<()> {
        let p = self.dir.join(name);
        fs::remove_dir_all(&p).map_err(Error::io(&p))
    }

    /// Startup cleanup: removes every `incoming-*` and `building-*`
    /// directory (a transfer or build cut short by a crash), every
    /// `snapshot-*` directory whose manifest does not open, and all but the
    /// newest complete snapshot. Returns the newest complete snapshot.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be listed or cleaned.
    pub fn recover(&self) -> Result<Option<SnapshotReader>> {
        let mut newest: Option<SnapshotReader> = None;
        let mut changed = false;
        for name in self.entries()? {
            if name.starts_with(INCOMING) || name.starts_with(BUILDING) {
                info!(name, "removing an interrupted snapshot directory");
                self.remove_dir(&name)?;
                changed = true;
                continue;
            }
            if parse_dir_name(&name, SNAPSHOT).is_none() {
                continue;
            }
            match SnapshotReader::open(&self.dir.join(&name)) {
                Ok(r) => {
                    // Names sort by (index, term): a later one is newer.
                    if let Some(old) = newest.replace(r) {
                        fs::remove_dir_all(old.dir()).map_err(Error::io(old.dir()))?;
                        changed = true;
                    }
                }
                Err(e) => {
                    warn!(name, error = %e, "removing a snapshot directory that does not open");
                    self.remove_dir(&name)?;
                    changed = true;
                }
            }
        }
        if changed {
            sync_dir(&self.dir)?;
        }
        Ok(newest)
    }

    /// Complete snapshots present, oldest first.
    ///
    /// # Errors
    /// [`Error::Io`] if `snap/` cannot be listed.
    pub fn list(&self) -> Result<Vec<(u64, u64)>> {
        Ok(self
            .entries()?
            .iter()
            .filter_map(|n| parse_dir_name(n, SNAPSHOT))
            .filter(|&(i, t)| {
                self.dir
                    .join(dir_name(SNAPSHOT, i, t))
                    .join(MANIFEST_FILE)
                    .exists()
            })
            .collect())
    }

    /// Opens the complete snapshot `(index, term)` if it is present, e.g.
    /// when the raft `MsgSnapshot` naming it is stepped on a follower.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Corruption`] if it is present but its
    /// manifest cannot be read.
    pub fn open_snapshot(&self, index: u64, term: u64) -> Result<Option<SnapshotReader>> {
        let dir = self.dir.join(dir_name(SNAPSHOT, index, term));
        if !dir.join(MANIFEST_FILE).exists() {
            return Ok(None);
        }
        SnapshotReader::open(&dir).map(Some)
    }

    /// Removes complete snapshots older than `(index, term)`, e.g. once a
    /// newer one is installed. The caller must make sure no
    /// [`crate::SenderDriver`] still reads one of them: its next chunk read
    /// would fail and abort that transfer with `SenderIo`.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove_older_than(&self, index: u64, term: u64) -> Result<usize> {
        let mut removed = 0;
        for (i, t) in self.list()? {
            if (i, t) < (index, term) {
                self.remove_dir(&dir_name(SNAPSHOT, i, t))?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Starts a local build at `meta` in `building-*` (replacing a leftover
    /// of the same name). Finish the writer, then call
    /// [`Stager::publish_built`].
    ///
    /// # Errors
    /// As [`SnapshotWriter::create`].
    pub fn create_writer(
        &self,
        meta: &SnapshotMetadata,
        config: &WriterConfig,
    ) -> Result<SnapshotWriter> {
        let name = dir_name(BUILDING, meta.index, meta.term);
        if self.dir.join(&name).exists() {
            self.remove_dir(&name)?;
        }
        SnapshotWriter::create(&self.dir.join(name), meta, config)
    }

    /// Builds and publishes a snapshot of `pairs` (strictly increasing
    /// keys, e.g. a [`crate::PointInTimeIter`]) in one call. On any error
    /// the partial build is removed.
    ///
    /// # Errors
    /// The first error of `pairs`, of the writer, or of publishing.
    pub fn build<K, V>(
        &self,
        meta: &SnapshotMetadata,
        config: &WriterConfig,
        pairs: impl IntoIterator<Item = Result<(K, V)>>,
    ) -> Result<SnapshotReader>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let name = dir_name(BUILDING, meta.index, meta.term);
        let result = (|| {
            let mut w = self.create_writer(meta, config)?;
            for p in pairs {
                let (k, v) = p?;
                w.push(k.as_ref(), v.as_ref())?;
            }
            let manifest = w.finish()?;
            self.publish_built(&manifest)
        })();
        if result.is_err() && self.dir.join(&name).exists() {
            // Best effort: `recover` removes it at the next start otherwise.
            if let Err(e) = self.remove_dir(&name) {
                warn!(name, error = %e, "could not remove a failed build");
            }
        }
        result
    }

    /// Publishes a finished local build as `snapshot-*`. If a snapshot of
    /// the same `(index, term)` exists it is the same state; the build is
    /// dropped and the existing one returned.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::Corruption`] if the build does not open.
    pub fn publish_built(&self, manifest: &Manifest) -> Result<SnapshotReader> {
        let from = dir_name(BUILDING, manifest.index, manifest.term);
        self.publish(&from, manifest)
    }

    fn publish(&self, from: &str, manifest: &Manifest) -> Result<SnapshotReader> {
        let to = self
            .dir
            .join(dir_name(SNAPSHOT, manifest.index, manifest.term));
        if to.join(MANIFEST_FILE).exists() {
            debug!(
                index = manifest.index,
                "snapshot already present; dropping duplicate"
            );
            self.remove_dir(from)?;
        } else {
            if to.exists() {
                fs::remove_dir_all(&to).map_err(Error::io(&to))?;
            }
            fs::rename(self.dir.join(from), &to).map_err(Error::io(&to))?;
            maybe_crash(self.crash_at, CrashPoint::AfterPublishRename)?;
        }
        sync_dir(&self.dir)?;
        let r = SnapshotReader::open(&to)?;
        if r.manifest() != manifest {
            return Err(Error::corrupt(format!(
                "published snapshot at {} has a different manifest",
                to.display()
            )));
        }
        Ok(r)
    }

    /// Starts staging an incoming transfer of the snapshot `manifest`. Any
    /// other `incoming-*` directory is a stale transfer and is removed first
    /// (one transfer at a time); an `incoming-*` of the same snapshot is
    /// also restarted from scratch, because which of its chunks were acked is
    /// not known after a restart.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::LimitExceeded`] for an invalid manifest.
    pub fn begin(&self, manifest: &Manifest) -> Result<Staging> {
        manifest.validate()?;
        for name in self.entries()? {
            if name.starts_with(INCOMING) {
                debug!(name, "removing a stale incoming snapshot");
                self.remove_dir(&name)?;
            }
        }
        let name = dir_name(INCOMING, manifest.index, manifest.term);
        let dir = self.dir.join(&name);
        fs::create_dir(&dir).map_err(Error::io(&dir))?;
        sync_dir(&self.dir)?;
        Ok(Staging {
            stager_dir: self.dir.clone(),
            name,
            manifest: manifest.clone(),
            received: vec![false; manifest.chunk_count as usize],
            missing: manifest.chunk_count,
            written: 0,
            crash_at: self.crash_at,
        })
    }
}

/// An incoming snapshot being staged; see [`Stager::begin`].
///
/// Memory: one bit-sized flag per chunk; chunk bytes go straight to disk.
#[derive(Debug)]
pub struct Staging {
    stager_dir: PathBuf,
    name: String,
    manifest: Manifest,
    received: Vec<bool>,
    missing: u32,
    written: u32,
    crash_at: Option<CrashPoint>,
}

impl Staging {
    /// The manifest being staged.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The staging directory.
    #[must_use]
    pub fn dir(&self) -> PathBuf {
        self.stager_dir.join(&self.name)
    }

    /// Verifies chunk `chunk_no` (CRC, snapshot and position) and writes it
    /// durably. A chunk already staged is accepted again without rewriting
    /// (a retransmission whose ack was lost).
    ///
    /// # Errors
    /// [`Error::Corruption`] if the bytes do not verify (nothing written),
    /// [`Error::InvalidState`] if `chunk_no` is out of range, [`Error::Io`].
    pub fn write_chunk(&mut self, chunk_no: u32, bytes: &[u8]) -> Result<()> {
        if chunk_no >= self.manifest.chunk_count {
            return Err(Error::InvalidState(format!(
                "chunk {chunk_no} out of range ({} chunks)",
                self.manifest.chunk_count
            )));
        }
        check_chunk_belongs(&self.manifest, chunk_no, bytes)?;
        if self.received[chunk_no as usize] {
            return Ok(());
        }
        write_synced(&self.dir(), &chunk_file_name(chunk_no), bytes)?;
        self.received[chunk_no as usize] = true;
        self.missing -= 1;
        let n = self.written;
        self.written += 1;
        maybe_crash(self.crash_at, CrashPoint::AfterChunk(n))
    }

    /// True if chunk `chunk_no` is staged.
    #[must_use]
    pub fn has_chunk(&self, chunk_no: u32) -> bool {
        self.received
            .get(chunk_no as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Number of chunks not yet staged.
    #[must_use]
    pub fn missing(&self) -> u32 {
        self.missing
    }

    /// Makes the staged snapshot complete: syncs the directory, writes the
    /// manifest, re-reads and verifies everything (CRCs, key order, pair
    /// count, total bytes, whole checksum), then renames it to `snapshot-*`
    /// and syncs `snap/`. On a verification failure the staging directory is
    /// removed and the error returned; the transfer must start over.
    ///
    /// # Errors
    /// [`Error::InvalidState`] if chunks are missing, [`Error::Corruption`],
    /// [`Error::Io`].
    pub fn finish(self) -> Result<SnapshotReader> {
        if self.missing != 0 {
            return Err(Error::InvalidState(format!(
                "{} of {} chunks missing",
                self.missing, self.manifest.chunk_count
            )));
        }
        let dir = self.dir();
        sync_dir(&dir)?;
        maybe_crash(self.crash_at, CrashPoint::BeforeManifest)?;
        write_atomically(&dir, MANIFEST_FILE, &self.manifest.encode())?;
        maybe_crash(self.crash_at, CrashPoint::AfterManifest)?;
        let staged = SnapshotReader::open(&dir)?;
        if let Err(e) = staged.verify() {
            warn!(error = %e, index = self.manifest.index, "staged snapshot failed verification");
            fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
            sync_dir(&self.stager_dir)?;
            return Err(e);
        }
        let stager = Stager {
            dir: self.stager_dir.clone(),
            crash_at: self.crash_at,
        };
        let r = stager.publish(&self.name, &self.manifest)?;
        info!(
            index = self.manifest.index,
            term = self.manifest.term,
            bytes = self.manifest.total_bytes,
            "snapshot staged and verified"
        );
        Ok(r)
    }

    /// Abandons the transfer and removes the staging directory.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn abort(self) -> Result<()> {
        let dir = self.dir();
        fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
        sync_dir(&self.stager_dir)
    }
}
