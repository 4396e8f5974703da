//! [`SnapshotStore`]: a replica's snapshots on disk — building from the
//! state machine, reading chunks to send, staging incoming ones under
//! `snap/`, installing — as the [`SnapshotHost`] the node runtime's
//! background threads call.
//!
//! Memory: a build holds one chunk and the before-images (bounded); a send
//! reads one chunk at a time; staging writes each chunk straight to disk.
//! No side ever holds the whole snapshot.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tandem_snapshot::{Manifest, SnapshotReader, Stager, Staging};
use tracing::{info, warn};

use super::machine::StateMachine;
use crate::config::SnapshotConfig;
use crate::error::{Error, Result};
use crate::node::SnapshotHost;

/// A replica's `snap/` directory and state machine, for snapshot work.
#[derive(Debug)]
pub struct SnapshotStore {
    sm: Arc<StateMachine>,
    stager: Stager,
    cfg: SnapshotConfig,
    /// The incoming snapshot being staged.
    staging: Mutex<Option<Staging>>,
    /// The local snapshot being sent (kept open across chunk reads).
    sending: Mutex<Option<SnapshotReader>>,
    /// Durations of the last build, receive and install.
    timings: Mutex<SnapshotTimings>,
}

/// How long this replica's last snapshot build, receive and install took,
/// and how many bytes each moved (the snapshot's encoded size: chunk
/// headers and pairs). Zero until the first of each. Also logged at info
/// level when each phase ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotTimings {
    /// Builds that published a snapshot.
    pub builds: u64,
    /// Wall time of the last build (state machine → published chunk files),
    /// in µs.
    pub build_us: u64,
    /// Encoded bytes of the last build.
    pub build_bytes: u64,
    /// Longest time one apply call spent recording before-images during the
    /// last build (the apply stall a build causes), in µs.
    pub build_apply_stall_us_max: u64,
    /// Snapshots received, verified and published.
    pub receives: u64,
    /// When the last incoming transfer began staging (its offer accepted).
    pub receive_started_at: Option<Instant>,
    /// When the last incoming transfer was verified and published.
    pub receive_finished_at: Option<Instant>,
    /// Wall time of the last receive, from the accepted offer to the
    /// verified and published snapshot (every chunk fsynced, then re-read),
    /// in µs.
    pub receive_us: u64,
    /// Encoded bytes of the last receive.
    pub receive_bytes: u64,
    /// Snapshots installed.
    pub installs: u64,
    /// Wall time of the last install (published snapshot → new state
    /// machine version, flushed, fsynced, switched), in µs.
    pub install_us: u64,
    /// Encoded bytes of the last install.
    pub install_bytes: u64,
}

/// MB/s (10^6 bytes per second) of `bytes` in `us` microseconds.
#[must_use]
pub fn mb_per_s(bytes: u64, us: u64) -> f64 {
    if us == 0 {
        return 0.0;
    }
    bytes as f64 / us as f64
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl SnapshotStore {
    /// Open `snap_dir`, removing interrupted builds and transfers and all
    /// but the newest complete snapshot, whose manifest is returned.
    ///
    /// # Errors
    /// [`Error::Storage`] if the directory cannot be opened or cleaned.
    pub fn open(
        sm: Arc<StateMachine>,
        snap_dir: &std::path::Path,
        cfg: &SnapshotConfig,
    ) -> Result<(SnapshotStore, Option<Manifest>)> {
        let stager = Stager::open(snap_dir).map_err(snap_err)?;
        let newest = stager.recover().map_err(snap_err)?;
        let manifest = newest.map(|r| r.manifest().clone());
        Ok((
            SnapshotStore {
                sm,
                stager,
                cfg: cfg.clone(),
                staging: Mutex::new(None),
                sending: Mutex::new(None),
                timings: Mutex::new(SnapshotTimings::default()),
            },
            manifest,
        ))
    }

    /// The `snap/` directory.
    #[must_use]
    pub fn stager(&self) -> &Stager {
        &self.stager
    }

    /// Durations of the last build, receive and install.
    #[must_use]
    pub fn timings(&self) -> SnapshotTimings {
        *self.timings.lock()
    }

    /// Keep only the newest two complete snapshots: one may still be being
    /// sent while the newer one is offered.
    fn prune(&self) {
        match self.stager.list() {
            Ok(list) if list.len() > 2 => {
                let (i, t) = list[list.len() - 2];
                if let Err(e) = self.stager.remove_older_than(i, t) {
                    warn!(error = %e, "could not prune old snapshots");
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not list snapshots"),
        }
    }
}

fn snap_err(e: tandem_snapshot::Error) -> Error {
    Error::Storage(format!("snapshot: {e}"))
}

impl SnapshotHost for SnapshotStore {
    fn flush_durable(&self) -> Result<u64> {
        Ok(self.sm.flush_durable()?)
    }

    fn build(&self) -> Result<Manifest> {
        let started = Instant::now();
        let reader = self.sm.build_snapshot(
            &self.stager,
            &self.cfg.writer,
            self.cfg.before_images.clone(),
        )?;
        let us = elapsed_us(started);
        let bytes = reader.manifest().total_bytes;
        let stall = self.sm.capture_record_us_max();
        {
            let mut t = self.timings.lock();
            t.builds += 1;
            t.build_us = us;
            t.build_bytes = bytes;
            t.build_apply_stall_us_max = stall;
        }
        info!(
            index = reader.manifest().index,
            bytes,
            ms = us / 1000,
            mb_per_s = format_args!("{:.1}", mb_per_s(bytes, us)),
            apply_stall_us_max = stall,
            "snapshot build timed"
        );
        self.prune();
        Ok(reader.manifest().clone())
    }

    fn read_chunk(&self, index: u64, term: u64, chunk_no: u32) -> Result<Vec<u8>> {
        let mut sending = self.sending.lock();
        let open = sending
            .as_ref()
            .is_some_and(|r| r.manifest().index == index && r.manifest().term == term);
        if !open {
            *sending = Some(
                self.stager
                    .open_snapshot(index, term)
                    .map_err(snap_err)?
                    .ok_or_else(|| {
                        Error::Storage(format!("no local snapshot at ({index}, {term})"))
                    })?,
            );
        }
        let reader = sending.as_ref().expect("opened above");
        reader.read_chunk(chunk_no).map_err(snap_err)
    }

    fn begin_staging(&self, manifest: &Manifest) -> tandem_snapshot::Result<()> {
        let mut staging = self.staging.lock();
        if let Some(old) = staging.take() {
            let _ = old.abort();
        }
        *staging = Some(self.stager.begin(manifest)?);
        let mut t = self.timings.lock();
        t.receive_started_at = Some(Instant::now());
        t.receive_finished_at = None;
        Ok(())
    }

    fn stage_chunk(&self, chunk_no: u32, bytes: &[u8]) -> tandem_snapshot::Result<()> {
        match self.staging.lock().as_mut() {
            Some(s) => s.write_chunk(chunk_no, bytes),
            None => Err(tandem_snapshot::Error::InvalidState(
                "no staging in progress".into(),
            )),
        }
    }

    fn finish_staging(&self) -> tandem_snapshot::Result<()> {
        let staging = self.staging.lock().take();
        match staging {
            Some(s) => {
                let reader = s.finish()?;
                let now = Instant::now();
                let bytes = reader.manifest().total_bytes;
                let mut t = self.timings.lock();
                let us = t.receive_started_at.map_or(0, |at| {
                    u64::try_from(now.duration_since(at).as_micros()).unwrap_or(u64::MAX)
                });
                t.receives += 1;
                t.receive_finished_at = Some(now);
                t.receive_us = us;
                t.receive_bytes = bytes;
                drop(t);
                info!(
                    index = reader.manifest().index,
                    chunks = reader.manifest().chunk_count,
                    bytes,
                    ms = us / 1000,
                    mb_per_s = format_args!("{:.1}", mb_per_s(bytes, us)),
                    "incoming snapshot verified and published"
                );
                Ok(())
            }
            None => Err(tandem_snapshot::Error::InvalidState(
                "no staging in progress".into(),
            )),
        }
    }

    fn discard_staging(&self) {
        if let Some(s) = self.staging.lock().take() {
            if let Err(e) = s.abort() {
                warn!(error = %e, "could not remove a staging directory");
            }
        }
    }

    fn install(&self, index: u64, term: u64) -> Result<()> {
        let reader = self
            .stager
            .open_snapshot(index, term)
            .map_err(snap_err)?
            .ok_or_else(|| {
                Error::Storage(format!("no snapshot at ({index}, {term}) to install"))
            })?;
        let started = Instant::now();
        self.sm.install_snapshot(&reader)?;
        let us = elapsed_us(started);
        let bytes = reader.manifest().total_bytes;
        {
            let mut t = self.timings.lock();
            t.installs += 1;
            t.install_us = us;
            t.install_bytes = bytes;
        }
        info!(
            index,
            bytes,
            ms = us / 1000,
            mb_per_s = format_args!("{:.1}", mb_per_s(bytes, us)),
            "snapshot install timed"
        );
        self.prune();
        Ok(())
    }
}
