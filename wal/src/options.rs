//! Configuration of a [`crate::Wal`].

use crate::error::{Error, Result};
use crate::format::{HEADER_BYTES, RECORD_HEADER_BYTES};

/// When the writer thread calls `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// After every write group, before completing its waiters (the default):
    /// a completed submission survives power loss.
    #[default]
    Always,
    /// At most every this many milliseconds; completions fire after the
    /// write reaches the OS, so a power loss may drop the last window
    /// (a process crash loses nothing).
    EveryMs(u64),
    /// Never explicitly (except at rotation and before deleting segments);
    /// completions fire after the write reaches the OS.
    Never,
}

/// What recovery does with damage at the end of the last segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// A torn or zeroed tail of the last written segment (no valid record
    /// after the damage) is cut off, zeroed, fsynced and reported in the
    /// [`crate::RecoveryReport`]; damage anywhere else is `Corruption`.
    #[default]
    TolerateTornTail,
    /// Any damage is `Corruption`.
    Strict,
}

/// Options of a [`crate::Wal`]. Every size has a limit; [`WalOptions::validate`]
/// checks the relationships between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size of each (preallocated) segment file. At most `u32::MAX` because the
    /// in-memory index stores 32-bit offsets.
    pub segment_bytes: u64,
    /// When to fsync.
    pub sync: SyncPolicy,
    /// What recovery tolerates.
    pub recovery: RecoveryMode,
    /// Bytes of recently written entries kept in memory (entries not yet
    /// written are always in memory, whatever this says).
    pub cache_bytes_max: u64,
    /// Largest single entry, as counted by `Entry::size_bytes`.
    pub entry_bytes_max: u64,
    /// Largest encoded submission, and the target size of one write group.
    pub batch_bytes_max: u64,
    /// Run the writer and the segment preparer on background threads (the
    /// default). With `false` nothing runs until [`crate::Wal::pump`] is
    /// called (or a [`crate::Completion`] is waited on): deterministic, for
    /// simulators and crash-point tests.
    pub background_threads: bool,
    /// Make appends land on blocks that are already written, so an
    /// fdatasync flushes data only, without also committing `fallocate`'s
    /// unwritten-extent conversions to the file-system journal: spare
    /// segments (from the second one on) are overwritten with zeros in the
    /// background before use, and in a segment that was not, a write that
    /// runs past the zeroed part carries 1 MiB of zeros after its records.
    /// Costs one extra sequential write of each segment.
    pub prefill_segments: bool,
    /// Backpressure: most encoded bytes of submissions accepted but not yet
    /// written. A submission that would pass it waits for the writer to
    /// drain groups (in manual mode it runs the writer inline instead, see
    /// [`crate::Wal::submit`]). At least `batch_bytes_max`, so one maximal
    /// submission always fits. Compaction markers are not counted.
    pub pending_bytes_max: u64,
    /// Most spare files kept for recycling: segments freed by compaction are
    /// renamed into this pool instead of being deleted, and the next segment
    /// reuses one (new header, stale bytes after it) instead of allocating
    /// and zero-filling a fresh file, so a compacted log writes every byte
    /// once into blocks that already exist. 0 disables recycling. At most
    /// [`SPARES_MAX`].
    pub recycle_segments_max: usize,
    /// Entry payloads (data or context) of at least this many bytes are
    /// written from the entry's own buffer, as a piece of the group's
    /// vectored write, instead of being copied into the encoded record
    /// first. The bytes on disk are the same; this only trades a memory copy
    /// for more pieces in the write. `usize::MAX` copies everything.
    pub shared_payload_min: usize,
}

/// Upper bound of [`WalOptions::recycle_segments_max`].
pub const SPARES_MAX: usize = 1024;

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 * 1024 * 1024,
            sync: SyncPolicy::Always,
            recovery: RecoveryMode::TolerateTornTail,
            cache_bytes_max: 32 * 1024 * 1024,
            entry_bytes_max: 8 * 1024 * 1024,
            batch_bytes_max: 16 * 1024 * 1024,
            background_threads: true,
            prefill_segments: true,
            pending_bytes_max: 64 * 1024 * 1024,
            recycle_segments_max: 4,
            shared_payload_min: 4096,
        }
    }
}

/// Bytes a segment reserves for the header and the preamble records (the
/// compaction marker and the hard state) written at the start of each segment.
pub(crate) const SEGMENT_OVERHEAD_BYTES: u64 = HEADER_BYTES + 2 * RECORD_HEADER_BYTES + 64;

impl WalOptions {
    /// Check the options.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] naming the first violated rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::InvalidOptions(s));
        if self.segment_bytes < 4096 || self.segment_bytes > u64::from(u32::MAX) {
            return bad(format!(
                "segment_bytes {} must be in [4096, {}]",
                self.segment_bytes,
                u32::MAX
            ));
        }
        if self.entry_bytes_max == 0 {
            return bad("entry_bytes_max must be > 0".into());
        }
        if self.batch_bytes_max < self.entry_bytes_max + 64 {
            return bad(format!(
                "batch_bytes_max {} must hold one maximal entry ({} + 64)",
                self.batch_bytes_max, self.entry_bytes_max
            ));
        }
        if self.batch_bytes_max + SEGMENT_OVERHEAD_BYTES > self.segment_bytes {
            return bad(format!(
                "batch_bytes_max {} plus segment overhead {} must fit in segment_bytes {}",
                self.batch_bytes_max, SEGMENT_OVERHEAD_BYTES, self.segment_bytes
            ));
        }
        if self.pending_bytes_max == 0 || self.pending_bytes_max < self.batch_bytes_max {
            return bad(format!(
                "pending_bytes_max {} must be > 0 and >= batch_bytes_max {}",
                self.pending_bytes_max, self.batch_bytes_max
            ));
        }
        if self.recycle_segments_max > SPARES_MAX {
            return bad(format!(
                "recycle_segments_max {} must be at most {SPARES_MAX}",
                self.recycle_segments_max
            ));
        }
        if let SyncPolicy::EveryMs(0) = self.sync {
            return bad("SyncPolicy::EveryMs(0): use SyncPolicy::Always".into());
        }
        Ok(())
    }

    /// Small segments and limits for tests: rotation and compaction happen
    /// after a few KiB.
    #[must_use]
    pub fn small_for_tests() -> Self {
        WalOptions {
            segment_bytes: 16 * 1024,
            cache_bytes_max: 4 * 1024,
            entry_bytes_max: 2 * 1024,
            batch_bytes_max: 8 * 1024,
            // Both ways of encoding a payload occur in tests.
            shared_payload_min: 128,
            ..WalOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_combinations_do_not() {
        WalOptions::default().validate().unwrap();
        WalOptions::small_for_tests().validate().unwrap();
        let cases = [
            WalOptions {
                segment_bytes: 100,
                ..WalOptions::default()
            },
            WalOptions {
                segment_bytes: 8 << 30,
                ..WalOptions::default()
            },
            WalOptions {
                batch_bytes_max: 64 << 20,
                ..WalOptions::default()
            },
            WalOptions {
                entry_bytes_max: 0,
                ..WalOptions::default()
            },
            WalOptions {
                entry_bytes_max: 16 << 20,
                ..WalOptions::default()
            },
            WalOptions {
                pending_bytes_max: 0,
                ..WalOptions::default()
            },
            WalOptions {
                pending_bytes_max: 16 * 1024 * 1024 - 1,
                ..WalOptions::default()
            },
            WalOptions {
                sync: SyncPolicy::EveryMs(0),
                ..WalOptions::default()
            },
            WalOptions {
                recycle_segments_max: SPARES_MAX + 1,
                ..WalOptions::default()
            },
        ];
        for o in cases {
            assert!(
                matches!(o.validate(), Err(Error::InvalidOptions(_))),
                "{o:?}"
            );
        }
    }
}
