//! Point-in-time reads over a store that keeps changing.
//!
//! sled 0.34 has no snapshot isolation for iterators: a long iteration
//! sees writes that happen while it runs. To build a snapshot at exactly
//! applied index `S` while the apply thread keeps applying `S+1, S+2, ...`,
//! the apply thread records, for every key it is about to overwrite or
//! remove, the value the key had *before* its first change after `S` (its
//! before-image). The builder iterates the live store and, for every key,
//! prefers the before-image when there is one; keys removed after `S` come
//! only from the before-images.
//!
//! Why this is exact (the race argument, also in `docs/snapshot.md`): the
//! apply thread records a key *before* writing it, and the iterator looks a
//! key up in the records *after* reading it from the live store. So if the
//! live read saw a post-`S` value, the record was made before that read and
//! the lookup finds it; if the lookup finds nothing, the key had not been
//! written since `S` when it was read, so the live value is the value at
//! `S`. Keys are emitted in strictly increasing order; a key inserted behind
//! the live cursor was absent at `S` (it was recorded as `None`) or is
//! emitted from the records.
//!
//! The cost on the apply path is one read of the old value per key written
//! for the first time during a build *ahead of the builder's cursor*, and
//! one short mutex hold. Keys the builder has already passed are never
//! looked at again, so writes to them need no before-image: no read, no
//! memory; records behind the cursor are pruned periodically. Hence memory
//! and reads both shrink as the build progresses.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Limits of a [`BeforeImages`] record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeforeImagesConfig {
    /// Bytes of keys and old values recorded, at most. Past this the record
    /// is dropped and the build fails with [`Error::LimitExceeded`] (it can
    /// be retried later); memory never grows without bound because of a
    /// slow build under a heavy write load.
    pub bytes_max: u64,
    /// Every this many builder steps, records at or before the builder's
    /// cursor are dropped: they can no longer matter, so memory held is
    /// what lies ahead of the cursor. Must be > 0.
    pub prune_every_steps: u32,
}

impl Default for BeforeImagesConfig {
    fn default() -> Self {
        BeforeImagesConfig {
            bytes_max: 64 * 1024 * 1024,
            prune_every_steps: 1024,
        }
    }
}

/// Per-record overhead counted against `bytes_max` (map node, lengths).
const RECORD_OVERHEAD_BYTES: u64 = 64;

#[derive(Debug, Default)]
struct Inner {
    /// key → value at the snapshot point (`None`: absent).
    map: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: u64,
    overflowed: bool,
    /// A key at or before the last key the builder has decided on (it
    /// lags by one step). Keys at or before it are never looked at again,
    /// so writes to them need no before-image: no read, no memory.
    passed: Option<Vec<u8>>,
    /// Lookups since the last prune.
    steps_since_prune: u32,
    /// Before-images recorded in total (pruned ones included).
    recorded_total: u64,
    /// Writes that needed no before-image because the builder had passed the key.
    skipped_passed: u64,
}

fn record_bytes(key: &[u8], old: Option<&[u8]>) -> u64 {
    RECORD_OVERHEAD_BYTES + key.len() as u64 + old.map_or(0, |v| v.len() as u64)
}

impl Inner {
    /// True if a write to `key` needs no before-image.
    fn settled(&mut self, key: &[u8]) -> bool {
        if self.overflowed || self.map.contains_key(key) {
            return true;
        }
        if self.passed.as_deref().is_some_and(|p| key <= p) {
            self.skipped_passed += 1;
            return true;
        }
        false
    }

    /// Drops records at or before `passed`.
    fn prune(&mut self) {
        let Some(passed) = self.passed.as_deref() else {
            return;
        };
        let mut ahead = self.map.split_off(passed);
        if let Some(v) = ahead.remove(passed) {
            self.bytes -= record_bytes(passed, v.as_deref());
        }
        for (k, v) in &self.map {
            self.bytes -= record_bytes(k, v.as_deref());
        }
        self.map = ahead;
    }
}

/// Old values of keys changed since the snapshot point; shared (in an
/// `Arc`) between the apply thread, which records, and the builder, which
/// reads through [`PointInTimeIter`].
///
/// ```
/// use tandem_snapshot::{BeforeImages, BeforeImagesConfig, PointInTimeIter};
/// use std::collections::BTreeMap;
///
/// // The "store" at the snapshot point.
/// let mut store: BTreeMap<Vec<u8>, Vec<u8>> =
///     [(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())].into();
/// let images = BeforeImages::new(BeforeImagesConfig::default());
///
/// // The apply thread changes the store after the snapshot point, recording first.
/// images.record_with(b"a", || Ok::<_, std::io::Error>(store.get(&b"a"[..]).cloned())).unwrap();
/// store.insert(b"a".to_vec(), b"changed".to_vec());
/// images.record_with(b"b", || Ok::<_, std::io::Error>(store.get(&b"b"[..]).cloned())).unwrap();
/// store.remove(&b"b"[..]);
/// images.record_with(b"c", || Ok::<_, std::io::Error>(store.get(&b"c"[..]).cloned())).unwrap();
/// store.insert(b"c".to_vec(), b"new".to_vec());
///
/// // The builder sees the state at the snapshot point.
/// let live = store.clone().into_iter().map(Ok::<_, std::io::Error>);
/// let at_snapshot: Vec<_> = PointInTimeIter::new(live, &images).collect::<Result<_, _>>().unwrap();
/// assert_eq!(at_snapshot, vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
/// ```
#[derive(Debug)]
pub struct BeforeImages {
    cfg: BeforeImagesConfig,
    inner: Mutex<Inner>,
}

impl BeforeImages {
    /// An empty record. Activate it in the apply thread after applying the
    /// snapshot index and before applying the next entry.
    #[must_use]
    ///
    /// # Panics
    /// If `cfg.prune_every_steps` is 0.
    pub fn new(cfg: BeforeImagesConfig) -> Self {
        assert!(cfg.prune_every_steps > 0, "prune_every_steps must be > 0");
        BeforeImages {
            cfg,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// True if `key` currently holds a before-image.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner.lock().map.contains_key(key)
    }

    /// Records that `key` had value `old` (`None`: absent) at the snapshot
    /// point, unless it is recorded already — only the first change after
    /// the snapshot point matters. Call before writing the key.
    pub fn record(&self, key: &[u8], old: Option<&[u8]>) {
        let mut inner = self.inner.lock();
        if inner.settled(key) {
            return;
        }
        let bytes = record_bytes(key, old);
        if inner.bytes + bytes > self.cfg.bytes_max {
            tracing::warn!(
                bytes_max = self.cfg.bytes_max,
                "before-image record overflowed; the snapshot build will fail"
            );
            inner.overflowed = true;
            inner.map = BTreeMap::new();
            inner.bytes = 0;
            return;
        }
        inner.bytes += bytes;
        inner.recorded_total += 1;
        inner.map.insert(key.to_vec(), old.map(<[u8]>::to_vec));
    }

    /// Like [`BeforeImages::record`], reading the old value with `read_old`
    /// only if it is needed: not when the key is recorded already, and not
    /// when the builder has already passed the key. Call before writing
    /// the key, on the thread that writes it.
    ///
    /// # Errors
    /// Whatever `read_old` returns; nothing is recorded then, and the
    /// caller must not write the key (or must fail the build).
    pub fn record_with<V, E>(
        &self,
        key: &[u8],
        read_old: impl FnOnce() -> std::result::Result<Option<V>, E>,
    ) -> std::result::Result<(), E>
    where
        V: AsRef<[u8]>,
    {
        if self.inner.lock().settled(key) {
            return Ok(());
        }
        // Only the writing thread calls this, so the key cannot change
        // between the read and the record.
        let old = read_old()?;
        self.record(key, old.as_ref().map(AsRef::as_ref));
        Ok(())
    }

    /// Before-images recorded since creation, including pruned ones.
    #[must_use]
    pub fn recorded_total(&self) -> u64 {
        self.inner.lock().recorded_total
    }

    /// Writes that needed no before-image because the builder had already
    /// passed their key.
    #[must_use]
    pub fn skipped_passed(&self) -> u64 {
        self.inner.lock().skipped_passed
    }

    /// Before-images currently held (records behind the builder are pruned).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// True if nothing is recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes counted against the limit.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    /// True if the limit was exceeded; a build using this record fails.
    #[must_use]
    pub fn is_overflowed(&self) -> bool {
        self.inner.lock().overflowed
    }

    /// The first recorded key after `after` (or the first at all) and, if
    /// `probe` is given, the record of `probe`. One lock for both so they
    /// are consistent.
    #[allow(clippy::type_complexity)]
    fn lookup(
        &self,
        after: Option<&[u8]>,
        probe: Option<&[u8]>,
    ) -> Result<(Option<(Vec<u8>, Option<Vec<u8>>)>, Option<Option<Vec<u8>>>)> {
        let mut inner = self.inner.lock();
        if inner.overflowed {
            return Err(Error::LimitExceeded {
                what: "before-image bytes",
                actual: self.cfg.bytes_max + 1,
                limit: self.cfg.bytes_max,
            });
        }
        // Publish the builder's progress: it has decided every key up to
        // `after`, so writes to such keys need no before-image any more.
        if let Some(a) = after {
            match &mut inner.passed {
                Some(p) => {
                    debug_assert!(a >= p.as_slice(), "builder cursor went backwards");
                    p.clear();
                    p.extend_from_slice(a);
                }
                None => inner.passed = Some(a.to_vec()),
            }
        }
        inner.steps_since_prune += 1;
        if inner.steps_since_prune >= self.cfg.prune_every_steps {
            inner.steps_since_prune = 0;
            inner.prune();
        }
        let lower = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let next = inner
            .map
            .range::<[u8], _>((lower, Bound::Unbounded))
            .next()
            .map(|(k, v)| (k.clone(), v.clone()));
        let probed = probe.and_then(|p| inner.map.get(p).cloned());
        Ok((next, probed))
    }
}

/// The state at the snapshot point: the live iterator merged with the
/// before-images. Yields pairs in strictly increasing key order.
///
/// `live` must yield the live store's pairs in increasing key order, like
/// `sled::Tree::iter()`, reading each pair at the time `next` is called.
/// One iterator per [`BeforeImages`]: the record tracks that iterator's
/// cursor to skip and prune what lies behind it.
pub struct PointInTimeIter<'a, I> {
    live: I,
    live_done: bool,
    /// A live pair read but not yet emitted.
    peeked: Option<(Vec<u8>, Vec<u8>)>,
    images: &'a BeforeImages,
    last: Option<Vec<u8>>,
    failed: bool,
}

impl<'a, I> PointInTimeIter<'a, I> {
    /// Merges `live` with `images`.
    pub fn new(live: I, images: &'a BeforeImages) -> Self {
        PointInTimeIter {
            live,
            live_done: false,
            peeked: None,
            images,
            last: None,
            failed: false,
        }
    }
}

impl<I, K, V, E> PointInTimeIter<'_, I>
where
    I: Iterator<Item = std::result::Result<(K, V), E>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    E: std::error::Error + Send + Sync + 'static,
{
    fn fill_peek(&mut self) -> Result<()> {
        while self.peeked.is_none() && !self.live_done {
            match self.live.next() {
                None => self.live_done = true,
                Some(Err(e)) => return Err(Error::Source(Box::new(e))),
                Some(Ok((k, v))) => {
                    let k = k.as_ref();
                    // A live iterator never goes backwards; be safe anyway.
                    if self.last.as_deref().is_some_and(|last| k <= last) {
                        continue;
                    }
                    self.peeked = Some((k.to_vec(), v.as_ref().to_vec()));
                }
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            self.fill_peek()?;
            let probe = self.peeked.as_ref().map(|(k, _)| k.as_slice());
            let (image_next, probed) = self.images.lookup(self.last.as_deref(), probe)?;
            let take_image = match (&image_next, &self.peeked) {
                (Some((ik, _)), Some((lk, _))) => ik < lk,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let (key, value) = if take_image {
                let (k, v) = image_next.expect("image chosen");
                (k, v)
            } else {
                let Some((k, live_v)) = self.peeked.take() else {
                    return Ok(None);
                };
                match probed {
                    // Changed since the snapshot point: the record wins.
                    Some(old) => (k, old),
                    None => (k, Some(live_v)),
                }
            };
            assert!(
                self.last.as_ref().is_none_or(|l| key > *l),
                "point-in-time iterator went backwards"
            );
            self.last = Some(key.clone());
            if let Some(v) = value {
                return Ok(Some((key, v)));
            }
            // Absent at the snapshot point (created later): skip.
        }
    }
}

impl<I, K, V, E> Iterator for PointInTimeIter<'_, I>
where
    I: Iterator<Item = std::result::Result<(K, V), E>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    E: std::error::Error + Send + Sync + 'static,
{
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
