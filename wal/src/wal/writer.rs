//! The writer: group commit into the active segment, rotation to spares
//! prepared in the background, and the background thread that prepares
//! spares and deletes compacted segments.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{Request, Shared};
use crate::error::{Error, Result};
use crate::format::{
    encode_hard_state, encode_marker, EncodedRecord, Kind, Marker, RawRecord, END_MARKER_BYTES,
    HEADER_BYTES, RECORD_HEADER_BYTES,
};
use crate::fs::{FileSystem, WalFile};
use crate::options::SyncPolicy;
use crate::recovery::{prepare_segment, remove_segments, PrefillCtl, Spares};

/// The segment the writer appends to.
pub(super) struct Active {
    /// Its sequence number.
    pub(super) seq: u64,
    /// Its file.
    pub(super) file: Arc<dyn WalFile>,
    /// Where the next record goes (end of the valid records).
    pub(super) offset: u64,
    /// File size: a group that would end past it goes to the next segment.
    pub(super) capacity: u64,
    /// False until the preamble (compaction point, hard state) is written.
    pub(super) has_records: bool,
    /// Bytes written since the last fdatasync.
    pub(super) unsynced: bool,
    /// Bytes below this offset are known to be written (not `fallocate`'s
    /// unwritten extents): a prefilled spare is written up to `capacity`;
    /// otherwise the writer zeroes ahead of itself (see `ZERO_AHEAD_BYTES`).
    pub(super) zeroed_until: u64,
}

/// How far a write zeroes ahead of the records when it runs past the
/// written part of a segment that was not prefilled: the extent conversion
/// is then paid once per this many bytes instead of by every fdatasync.
pub(super) const ZERO_AHEAD_BYTES: u64 = 1 << 20;

/// A spare from the background thread: `(sequence, file, zeroed_until)`.
pub(super) type Prepared = Result<(u64, Arc<dyn WalFile>, u64)>;

pub(super) enum BgMsg {
    /// Prepare segment `seq`; `prefill`: overwrite it with zeros first.
    Prepare {
        seq: u64,
        prefill: bool,
    },
    Delete(Vec<u64>),
}

pub(super) struct Bg {
    pub(super) tx: Sender<BgMsg>,
    pub(super) prepared: Receiver<Prepared>,
    /// Lets rotation hurry a prefill it would otherwise wait for.
    pub(super) ctl: Arc<PrefillCtl>,
}

pub(super) struct Writer {
    pub(super) active: Active,
    /// Sequence of the next segment to prepare (manual mode only; the
    /// background thread numbers its own).
    pub(super) next_seq: u64,
    /// The spare pool (manual mode only; the background thread owns it
    /// otherwise).
    pub(super) spares: Option<Spares>,
    pub(super) bg: Option<Bg>,
    /// Zeros for the end marker and the zero-ahead after a group's records.
    pub(super) zeros: Vec<u8>,
    pub(super) last_sync: Instant,
    /// Set while a submitter, not the writer thread, writes groups
    /// ([`WalStats::groups_led_by_callers`](crate::WalStats)).
    pub(super) caller_led: bool,
}

pub(super) fn background(
    fs: &dyn FileSystem,
    dir: &Path,
    segment_bytes: u64,
    ctl: &PrefillCtl,
    mut spares: Spares,
    rx: &Receiver<BgMsg>,
    prepared: &Sender<Prepared>,
) {
    while let Ok(msg) = rx.recv() {
        match msg {
            BgMsg::Prepare { seq, prefill } => {
                let r = prepare_segment(
                    fs,
                    dir,
                    seq,
                    segment_bytes,
                    prefill.then_some(ctl),
                    Some(&mut spares),
                )
                .map(|(f, zeroed_until)| (seq, f, zeroed_until));
                // The writer may be gone (shutdown): keep going, a queued
                // deletion must still happen; the unused spare is removed by
                // the next recovery.
                let _ = prepared.send(r);
            }
            BgMsg::Delete(seqs) => {
                if let Err(e) = remove_segments(fs, dir, &seqs, Some(&mut spares)) {
                    // A segment left behind is replayed and compacted away
                    // again on the next open: not a reason to stop.
                    tracing::warn!(error = %e, "wal could not delete compacted segments");
                }
            }
        }
    }
}

pub(super) fn writer_loop(shared: &Shared) {
    loop {
        let shutdown = {
            let mut q = shared.queue.lock();
            loop {
                if !q.reqs.is_empty() || q.shutdown {
                    break;
                }
                match q.sync_deadline {
                    Some(d) => {
                        if shared.queue_cv.wait_until(&mut q, d).timed_out() {
                            break;
                        }
                    }
                    None => shared.queue_cv.wait(&mut q),
                }
            }
            q.shutdown
        };
        let mut w = shared.lock_writer();
        shared.drain(&mut w, u64::MAX);
        w.maybe_sync_due(shared);
        if shutdown && shared.queue.lock().reqs.is_empty() {
            if w.active.unsynced && shared.poison_reason().is_none() {
                w.sync(shared);
            }
            // Dropping the sender ends the background thread.
            w.bg = None;
            break;
        }
    }
}

impl Writer {
    pub(super) fn sync_due_in(&self, shared: &Shared) -> Option<Duration> {
        // Also publish the deadline for the writer thread's timed wait.
        let due = self.sync_due_in_inner(shared);
        let deadline = due.map(|d| Instant::now() + d);
        let mut q = shared.queue.lock();
        if q.sync_deadline.is_none() && deadline.is_some() {
            shared.queue_cv.notify_one();
        }
        q.sync_deadline = deadline;
        due
    }

    pub(super) fn sync_due_in_inner(&self, shared: &Shared) -> Option<Duration> {
        match shared.opts.sync {
            SyncPolicy::EveryMs(ms) if self.active.unsynced => {
                Some(Duration::from_millis(ms).saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    pub(super) fn maybe_sync_due(&mut self, shared: &Shared) {
        if self.sync_due_in(shared) == Some(Duration::ZERO) {
            self.sync(shared);
        }
    }

    /// fsync the active segment; false (and the log poisoned) on failure.
    pub(super) fn sync(&mut self, shared: &Shared) -> bool {
        if shared.poisoned.load(Ordering::SeqCst) {
            return false;
        }
        match self.active.file.sync_data() {
            Ok(()) => {
                self.active.unsynced = false;
                self.last_sync = Instant::now();
                shared.state.lock().stats.fsyncs += 1;
                true
            }
            Err(e) => {
                shared.poison(format!("fsync of segment {}: {e}", self.active.seq));
                false
            }
        }
    }

    /// Fail the notifications of `batch` not fired yet with the poison
    /// reason, and wake the waiters (which find the log poisoned).
    pub(super) fn fail(shared: &Shared, batch: &mut [Request]) {
        let reason = shared.poison_reason().unwrap_or_default();
        for r in batch {
            if let Some(n) = r.notify.take() {
                n.fire(
                    r.ticket,
                    Err(Error::Poisoned {
                        reason: reason.clone(),
                    }),
                );
            }
        }
        shared.wake_all();
    }

    pub(super) fn rotate(&mut self, shared: &Shared) -> Result<()> {
        if self.active.unsynced && !self.sync(shared) {
            return Err(Error::Poisoned {
                reason: shared.poison_reason().unwrap_or_default(),
            });
        }
        let (seq, file, zeroed_until) = match &self.bg {
            Some(bg) => {
                // Normally the spare is ready. If it is still being
                // prefilled, have it finished at once rather than wait: the
                // writer zeroes ahead of itself in the unfilled part.
                let r = match bg.prepared.try_recv() {
                    Ok(r) => r,
                    Err(_) => {
                        bg.ctl.urgent.store(true, Ordering::Relaxed);
                        let r = bg.prepared.recv();
                        bg.ctl.urgent.store(false, Ordering::Relaxed);
                        r.map_err(|_| Error::Closed)?
                    }
                }?;
                bg.tx
                    .send(BgMsg::Prepare {
                        seq: r.0 + 1,
                        prefill: shared.opts.prefill_segments,
                    })
                    .map_err(|_| Error::Closed)?;
                r
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let (file, zeroed_until) = prepare_segment(
                    &*shared.fs,
                    &shared.dir,
                    seq,
                    shared.opts.segment_bytes,
                    None,
                    self.spares.as_mut(),
                )?;
                (seq, file, zeroed_until)
            }
        };
        assert!(seq > self.active.seq, "segments are used in sequence order");
        let capacity = file.len().map_err(|e| Error::io("stat", &shared.dir, e))?;
        {
            let mut st = shared.state.lock();
            st.segments.insert(seq, file.clone());
            st.log.seg_max.insert(seq, 0);
        }
        tracing::debug!(from = self.active.seq, to = seq, "wal rotated segment");
        let zeroed_until = if shared.opts.prefill_segments {
            zeroed_until.clamp(HEADER_BYTES, capacity)
        } else {
            capacity
        };
        self.active = Active {
            seq,
            file,
            offset: HEADER_BYTES,
            capacity,
            has_records: false,
            unsynced: false,
            zeroed_until,
        };
        Ok(())
    }

    /// One group: every record of `batch` in one write, one fsync (per the
    /// policy), then the index update and the completions.
    /// Notifications are taken out of `batch` as they fire, so a caller
    /// that catches a panic can fail the ones left.
    pub(super) fn cycle(&mut self, shared: &Shared, batch: &mut [Request]) {
        if shared.poisoned.load(Ordering::SeqCst) {
            return Self::fail(shared, batch);
        }
        let total: u64 = batch.iter().map(|r| r.bytes).sum();
        let preamble_max = crate::options::SEGMENT_OVERHEAD_BYTES;
        if self.active.offset + total + preamble_max > self.active.capacity {
            if let Err(e) = self.rotate(shared) {
                shared.poison(format!("segment rotation: {e}"));
                return Self::fail(shared, batch);
            }
        }
        let seq = self.active.seq;
        let mut preamble = Vec::new();
        // A group of empty submissions (barriers) writes nothing.
        let has_records = batch.iter().any(|r| !r.records.is_empty());
        if has_records && !self.active.has_records {
            // Each segment starts with the compaction point and hard state
            // as of its start, so older segments can be deleted whole.
            let st = shared.state.lock();
            // Never a reset: replaying it would drop the entries written
            // after the reset in earlier segments.
            preamble.push(encode_marker(&Marker {
                reset: false,
                ..st.log.snapshot
            }));
            preamble.push(encode_hard_state(&st.log.hard_state));
        }
        let mut offsets: Vec<u64> = Vec::new();
        let mut records_len = 0u64;
        for rec in preamble
            .iter_mut()
            .chain(batch.iter_mut().flat_map(|r| r.records.iter_mut()))
        {
            rec.seal(seq);
            offsets.push(self.active.offset + records_len);
            records_len += rec.len();
        }
        assert!(
            self.active.offset + records_len + END_MARKER_BYTES <= self.active.capacity,
            "a group and its end marker fit the segment after rotation"
        );
        // Check before writing what recovery will check after reading back.
        debug_assert!(
            preamble
                .iter()
                .chain(batch.iter().flat_map(|r| r.records.iter()))
                .all(|rec| crate::format::check_record(&rec.to_vec(), seq).is_ok()),
            "the writer's records validate"
        );
        let end = self.active.offset + records_len;
        // After the records, in the same write: the end marker (zeros), so
        // the records of the segment end here even if the bytes after it
        // are stale (a recycled segment); the next group overwrites it. A
        // group of barriers writes nothing: the marker of the previous group
        // (or of the segment's preparation) is still in place.
        let mut tail_len = 0u64;
        if records_len > 0 {
            tail_len = END_MARKER_BYTES;
            if end + END_MARKER_BYTES > self.active.zeroed_until {
                // More zeros after the records, so the extent conversion of
                // unwritten blocks is paid once per ZERO_AHEAD_BYTES.
                let target = (end + ZERO_AHEAD_BYTES)
                    .min(self.active.capacity)
                    .max(end + END_MARKER_BYTES);
                tail_len = target - end;
                self.active.zeroed_until = target;
            }
        }
        // The tail is all zeros; the buffer only ever grows to the largest.
        if (self.zeros.len() as u64) < tail_len {
            self.zeros.resize(tail_len as usize, 0);
        }
        if records_len > 0 {
            // One vectored write straight from the encoded records: no copy
            // of the group into a buffer first.
            let written = {
                let pieces: Vec<&[u8]> = preamble
                    .iter()
                    .chain(batch.iter().flat_map(|r| r.records.iter()))
                    .flat_map(EncodedRecord::pieces)
                    .chain(std::iter::once(&self.zeros[..tail_len as usize]))
                    .collect();
                self.active
                    .file
                    .write_vectored_at(self.active.offset, &pieces)
            };
            if let Err(e) = written {
                shared.poison(format!("write to segment {seq}: {e}"));
                return Self::fail(shared, batch);
            }
            self.active.unsynced = true;
        }
        let compaction = batch.iter().any(|r| r.compaction);
        // Lazy submissions (a commit-only hard state) are written but do not
        // ask for a sync; they become durable with the next one. A group
        // that holds any other submission syncs as the policy says.
        let wants_sync = batch.iter().any(|r| r.sync);
        let must_sync = compaction
            || (wants_sync
                && match shared.opts.sync {
                    SyncPolicy::Always => true,
                    SyncPolicy::EveryMs(ms) => {
                        self.last_sync.elapsed() >= Duration::from_millis(ms)
                    }
                    SyncPolicy::Never => false,
                });
        if must_sync && self.active.unsynced && !self.sync(shared) {
            return Self::fail(shared, batch);
        }
        self.active.offset += records_len;
        // Only a group that wrote records (and so the preamble) makes the
        // segment's preamble present: a barrier-only first group in a new
        // segment must leave it to the next group.
        self.active.has_records |= has_records;
        let last_ticket = batch.last().expect("non-empty batch").ticket;
        let mut delete = Vec::new();
        {
            let mut st = shared.state.lock();
            let records = preamble
                .iter()
                .chain(batch.iter().flat_map(|r| r.records.iter()));
            for (&offset, rec) in offsets.iter().zip(records) {
                let h = RECORD_HEADER_BYTES as usize;
                let payload_len = rec.len() as usize - h;
                let replayed = match (rec.kind(), rec.contiguous_payload()) {
                    (Kind::Entries, _) => {
                        st.log
                            .apply_entry_spans(seq, offset, payload_len, rec.entry_spans())
                    }
                    (kind, Some(payload)) => st.log.apply(
                        seq,
                        RawRecord {
                            offset,
                            kind,
                            payload,
                        },
                    ),
                    (kind, None) => unreachable!("only entries records share payloads ({kind:?})"),
                };
                if let Err(reason) = replayed {
                    panic!("the writer's own record at {seq}:{offset} does not replay: {reason}");
                }
            }
            st.written_ticket = last_ticket;
            st.stats.write_groups += 1;
            st.stats.groups_led_by_callers += u64::from(self.caller_led);
            st.stats.bytes_written += records_len + tail_len;
            let cache_max = shared.opts.cache_bytes_max;
            st.evict(cache_max);
            if compaction {
                let first = st.log.snapshot.index + 1;
                let st = &mut *st;
                for (&s, &max) in &st.log.seg_max {
                    if s >= seq || max >= first {
                        break;
                    }
                    delete.push(s);
                }
                for s in &delete {
                    st.segments.remove(s);
                    st.log.seg_max.remove(s);
                }
                st.log.index.shrink();
            }
        }
        shared.publish_durable(last_ticket);
        for r in batch.iter_mut() {
            if let Some(n) = r.notify.take() {
                n.fire(r.ticket, Ok(()));
            }
        }
        self.sync_due_in(shared);
        if !delete.is_empty() {
            tracing::debug!(segments = ?delete, "wal deleting compacted segments");
            match &self.bg {
                Some(bg) => {
                    let _ = bg.tx.send(BgMsg::Delete(delete));
                }
                None => {
                    if let Err(e) =
                        remove_segments(&*shared.fs, &shared.dir, &delete, self.spares.as_mut())
                    {
                        tracing::warn!(error = %e, "wal could not delete compacted segments");
                    }
                }
            }
        }
    }
}
