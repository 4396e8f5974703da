//! [`SnapshotStore`]: a replica's snapshots on disk — building from the
//! state machine, reading chunks to send, staging incoming ones under
//! `snap/`, installing — as the [`SnapshotHost`] the node runtime's
//! background threads call.
//!
//! Memory: a build holds one chunk and the before-images (bounded); a send
//! reads one chunk at a time; staging writes each chunk straight to disk.
//! No side ever holds the whole snapshot.

use std::sync::Arc;

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
            },
            manifest,
        ))
    }

    /// The `snap/` directory.
    #[must_use]
    pub fn stager(&self) -> &Stager {
        &self.stager
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
        let reader = self.sm.build_snapshot(
            &self.stager,
            &self.cfg.writer,
            self.cfg.before_images.clone(),
        )?;
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
                info!(
                    index = reader.manifest().index,
                    chunks = reader.manifest().chunk_count,
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
        self.sm.install_snapshot(&reader)?;
        self.prune();
        Ok(())
    }
}
