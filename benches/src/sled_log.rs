//! sled 0.34 used as a raft log store: one key per entry (stream and index,
//! big-endian, so a stream's entries sort in index order), each append one
//! `apply_batch` followed by one `flush` to make it durable.

use std::path::Path;

use tandem_raft::types::{decode, encode};
use tandem_raft::Entry;

use crate::logstore::LogStore;
use crate::{Error, Result};

/// Key of entry `index` of `stream`: 16 bytes, big-endian.
pub fn entry_key(stream: u64, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&stream.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// A sled database holding raft entries.
#[derive(Debug)]
pub struct SledLog {
    db: sled::Db,
}

impl SledLog {
    /// Opens (or recovers) the store in `dir`. sled's background flusher is
    /// off: durability comes only from the explicit `flush` of each append,
    /// exactly as a log store must provide it.
    ///
    /// # Errors
    /// `Sled` when the database cannot be opened.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = sled::Config::new().path(dir).flush_every_ms(None);
        // A reopen right after a close in this process can find sled's lock
        // still held by its background threads: retried for up to 10 s.
        let db = tandem::sm::open_sled_retrying(&config, std::time::Duration::from_secs(10))?;
        Ok(SledLog { db })
    }

    /// Reads entry `index` of `stream` back, if present.
    ///
    /// # Errors
    /// `Sled` on a read failure; `InvalidParameter` if the stored bytes do
    /// not decode as an entry.
    pub fn get(&self, stream: u64, index: u64) -> Result<Option<Entry>> {
        match self.db.get(entry_key(stream, index))? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| Error::InvalidParameter(format!("stored entry: {e}"))),
        }
    }
}

impl LogStore for SledLog {
    fn name(&self) -> &str {
        "sled"
    }

    fn append_durable(&self, stream: u64, entries: Vec<Entry>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for e in &entries {
            batch.insert(&entry_key(stream, e.index), encode(e));
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::EntryBatch;

    #[test]
    fn keys_sort_by_stream_then_index() {
        assert!(entry_key(0, 255) < entry_key(0, 256));
        assert!(entry_key(0, u64::MAX) < entry_key(1, 0));
    }

    #[test]
    fn appended_entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut gen = EntryBatch::new(100, 4);
        {
            let log = SledLog::open(dir.path()).unwrap();
            log.append_durable(7, gen.next_batch()).unwrap();
            log.append_durable(7, gen.next_batch()).unwrap();
        }
        let log = SledLog::open(dir.path()).unwrap();
        let e = log.get(7, 8).unwrap().expect("entry 8 durable");
        assert_eq!((e.index, e.data.len()), (8, 100));
        assert!(log.get(7, 9).unwrap().is_none());
        assert!(log.get(6, 1).unwrap().is_none());
    }
}
