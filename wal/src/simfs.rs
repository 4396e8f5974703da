//! [`SimFs`]: a deterministic, in-memory, fault-injecting [`FileSystem`].
//!
//! It models what a real disk promises and nothing more:
//! - a write is visible at once but durable only after `sync_data` of its
//!   file; a created, renamed or removed name is durable only after
//!   `sync_dir`;
//! - [`SimFs::crash`] throws away everything not durable, optionally keeping a
//!   prefix of the unsynced writes (in the order they were issued) and tearing
//!   the next one at a chosen byte;
//! - [`SimFs::fail_after_ops`] makes the n-th mutating call fail and every
//!   later one too (the process is "dead" until `crash`), which lets a test
//!   stop a workload at every write and sync point;
//! - [`SimFs::fail_next_sync`] and [`SimFs::set_capacity_bytes`] inject an
//!   fsync error and a full disk.
//!
//! Nothing is random: the caller picks every fault, so runs replay exactly.
//! Handles opened before a crash stop working after it, like the file
//! descriptors of a killed process.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{DirLock, FileSystem, WalFile};

/// How much of the unsynced state survives a [`SimFs::crash`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashSpec {
    /// The first `keep_writes` unsynced writes (in issue order, across all
    /// files) reach the disk whole.
    pub keep_writes: usize,
    /// The write after those reaches the disk with only its first
    /// `torn_bytes` bytes (0: not at all).
    pub torn_bytes: usize,
}

#[derive(Debug, Clone)]
enum Pending {
    Write {
        file: u64,
        offset: u64,
        data: Vec<u8>,
    },
    Len {
        file: u64,
        len: u64,
    },
}

#[derive(Debug, Default)]
struct SimFile {
    durable: Vec<u8>,
    current: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: u64,
    next_id: u64,
    files: BTreeMap<u64, SimFile>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    pending: Vec<Pending>,
    locks: BTreeSet<PathBuf>,
    ops: u64,
    fail_at_op: Option<u64>,
    dead: bool,
    fail_next_sync: bool,
    capacity_bytes: Option<u64>,
    syncs: u64,
}

impl Inner {
    /// Count a mutating operation; error if the simulated process is dead or
    /// this is the operation chosen to fail.
    fn tick(&mut self, epoch: u64) -> io::Result<()> {
        if epoch != self.epoch {
            return Err(io::Error::other("simfs: handle from before a crash"));
        }
        if self.dead {
            return Err(io::Error::other("simfs: injected crash"));
        }
        self.ops += 1;
        if self.fail_at_op == Some(self.ops) {
            self.dead = true;
            return Err(io::Error::other("simfs: injected crash"));
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .map(|id| self.files[id].current.len() as u64)
            .sum()
    }

    fn check_space(&self, file: u64, new_len: u64) -> io::Result<()> {
        if let Some(cap) = self.capacity_bytes {
            let cur = self.files[&file].current.len() as u64;
            if new_len > cur && self.used_bytes() + (new_len - cur) > cap {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
        }
        Ok(())
    }
}

/// The in-memory file system. Cloning gives another handle to the same disk.
#[derive(Debug, Default, Clone)]
pub struct SimFs {
    inner: Arc<Mutex<Inner>>,
}

impl SimFs {
    /// An empty disk.
    #[must_use]
    pub fn new() -> Self {
        SimFs::default()
    }

    /// Mutating operations so far (writes, syncs, allocations, creates,
    /// renames, removes, directory syncs), counting from 1.
    #[must_use]
    pub fn op_count(&self) -> u64 {
        self.inner.lock().ops
    }

    /// `fdatasync` calls that succeeded so far.
    #[must_use]
    pub fn sync_count(&self) -> u64 {
        self.inner.lock().syncs
    }

    /// Make the `n`-th mutating operation from now (1 = the next one) fail,
    /// and every one after it, until [`SimFs::crash`].
    pub fn fail_after_ops(&self, n: u64) {
        let mut g = self.inner.lock();
        g.fail_at_op = Some(g.ops + n.max(1));
    }

    /// True once an injected failure has "killed" the process.
    #[must_use]
    pub fn is_dead(&self) -> bool {
        self.inner.lock().dead
    }

    /// The next `sync_data` fails with an IO error (and syncs nothing).
    pub fn fail_next_sync(&self) {
        self.inner.lock().fail_next_sync = true;
    }

    /// Limit the total bytes of all files; growing beyond fails with ENOSPC.
    pub fn set_capacity_bytes(&self, cap: Option<u64>) {
        self.inner.lock().capacity_bytes = cap;
    }

    /// Number of writes (and length changes) not yet made durable.
    #[must_use]
    pub fn unsynced_writes(&self) -> usize {
        self.inner.lock().pending.len()
    }

    /// Simulate power loss and restart: keep durable state, plus what `spec`
    /// lets through of the unsynced writes; forget unsynced directory
    /// changes, locks, injected faults and all open handles.
    pub fn crash(&self, spec: CrashSpec) {
        let mut g = self.inner.lock();
        let g = &mut *g;
        let pending = std::mem::take(&mut g.pending);
        let mut next: BTreeMap<u64, Vec<u8>> = g
            .files
            .iter()
            .map(|(id, f)| (*id, f.durable.clone()))
            .collect();
        for (i, p) in pending.iter().enumerate() {
            let torn = if i < spec.keep_writes {
                None
            } else if i == spec.keep_writes && spec.torn_bytes > 0 {
                Some(spec.torn_bytes)
            } else {
                break;
            };
            match p {
                Pending::Write { file, offset, data } => {
                    let data = match torn {
                        Some(n) => &data[..n.min(data.len())],
                        None => &data[..],
                    };
                    let buf = next.get_mut(file).expect("pending write to a known file");
                    let end = *offset as usize + data.len();
                    if buf.len() < end {
                        buf.resize(end, 0);
                    }
                    buf[*offset as usize..end].copy_from_slice(data);
                }
                Pending::Len { file, len } => {
                    if torn.is_none() {
                        let buf = next.get_mut(file).expect("pending length of a known file");
                        if (buf.len() as u64) < *len {
                            buf.resize(*len as usize, 0);
                        }
                    }
                }
            }
        }
        g.names = g.durable_names.clone();
        let live: BTreeSet<u64> = g.names.values().copied().collect();
        g.files.retain(|id, _| live.contains(id));
        for (id, f) in &mut g.files {
            let bytes = next.remove(id).expect("file survives");
            f.durable = bytes.clone();
            f.current = bytes;
        }
        g.locks.clear();
        g.epoch += 1;
        g.dead = false;
        g.fail_at_op = None;
        g.fail_next_sync = false;
    }

    /// The current (visible) bytes of a file.
    #[must_use]
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let g = self.inner.lock();
        g.names.get(path).map(|id| g.files[id].current.clone())
    }

    /// Flip bits of a byte in both the visible and the durable copy (media
    /// corruption). Returns false if the file or offset does not exist.
    pub fn corrupt_byte(&self, path: &Path, offset: u64, xor: u8) -> bool {
        let mut g = self.inner.lock();
        let Some(id) = g.names.get(path).copied() else {
            return false;
        };
        let f = g.files.get_mut(&id).expect("named file exists");
        let o = offset as usize;
        if o >= f.current.len() {
            return false;
        }
        f.current[o] ^= xor;
        if o < f.durable.len() {
            f.durable[o] ^= xor;
        }
        true
    }

    fn handle(&self, id: u64, epoch: u64) -> Arc<dyn WalFile> {
        Arc::new(SimHandle {
            fs: self.clone(),
            id,
            epoch,
        })
    }
}

#[derive(Debug)]
struct SimHandle {
    fs: SimFs,
    id: u64,
    epoch: u64,
}

impl SimHandle {
    fn stale(&self, g: &Inner) -> io::Result<()> {
        if g.epoch != self.epoch {
            return Err(io::Error::other("simfs: handle from before a crash"));
        }
        Ok(())
    }
}

impl WalFile for SimHandle {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let g = self.fs.inner.lock();
        self.stale(&g)?;
        let f = &g.files[&self.id];
        let end = offset as usize + buf.len();
        if end > f.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "simfs: read past end",
            ));
        }
        buf.copy_from_slice(&f.current[offset as usize..end]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut g = self.fs.inner.lock();
        g.tick(self.epoch)?;
        let end = offset + buf.len() as u64;
        g.check_space(self.id, end)?;
        let f = g.files.get_mut(&self.id).expect("open file exists");
        if (f.current.len() as u64) < end {
            f.current.resize(end as usize, 0);
        }
        f.current[offset as usize..end as usize].copy_from_slice(buf);
        g.pending.push(Pending::Write {
            file: self.id,
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut g = self.fs.inner.lock();
        g.tick(self.epoch)?;
        if std::mem::take(&mut g.fail_next_sync) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        let id = self.id;
        let f = g.files.get_mut(&id).expect("open file exists");
        f.durable = f.current.clone();
        g.pending.retain(|p| match p {
            Pending::Write { file, .. } | Pending::Len { file, .. } => *file != id,
        });
        g.syncs += 1;
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut g = self.fs.inner.lock();
        g.tick(self.epoch)?;
        g.check_space(self.id, len)?;
        let f = g.files.get_mut(&self.id).expect("open file exists");
        if (f.current.len() as u64) < len {
            f.current.resize(len as usize, 0);
            g.pending.push(Pending::Len { file: self.id, len });
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let g = self.fs.inner.lock();
        self.stale(&g)?;
        Ok(g.files[&self.id].current.len() as u64)
    }
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    dir: PathBuf,
    epoch: u64,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut g = self.fs.inner.lock();
        if g.epoch == self.epoch {
            g.locks.remove(&self.dir);
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("simfs: {} not found", path.display()),
    )
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories are durable at once: the log creates its directory
        // before it writes anything that depends on it.
        let mut g = self.inner.lock();
        let mut p = Some(dir);
        while let Some(d) = p {
            g.dirs.insert(d.to_path_buf());
            p = d.parent();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let g = self.inner.lock();
        if !g.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(g.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let g = self.inner.lock();
        let id = *g.names.get(path).ok_or_else(|| not_found(path))?;
        let epoch = g.epoch;
        drop(g);
        Ok(self.handle(id, epoch))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let mut g = self.inner.lock();
        let epoch = g.epoch;
        g.tick(epoch)?;
        if g.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "simfs: exists",
            ));
        }
        match path.parent() {
            Some(d) if g.dirs.contains(d) => {}
            _ => return Err(not_found(path)),
        }
        g.next_id += 1;
        let id = g.next_id;
        g.files.insert(id, SimFile::default());
        g.names.insert(path.to_path_buf(), id);
        drop(g);
        Ok(self.handle(id, epoch))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut g = self.inner.lock();
        let epoch = g.epoch;
        g.tick(epoch)?;
        let id = g.names.remove(from).ok_or_else(|| not_found(from))?;
        g.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut g = self.inner.lock();
        let epoch = g.epoch;
        g.tick(epoch)?;
        g.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut g = self.inner.lock();
        let epoch = g.epoch;
        g.tick(epoch)?;
        let g = &mut *g;
        g.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, id) in &g.names {
            if p.parent() == Some(dir) {
                g.durable_names.insert(p.clone(), *id);
            }
        }
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut g = self.inner.lock();
        if !g.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "simfs: directory locked",
            ));
        }
        Ok(Box::new(SimLock {
            fs: self.clone(),
            dir: dir.to_path_buf(),
            epoch: g.epoch,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_bytes_and_the_chosen_prefix_of_unsynced_ones() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let f = fs.create(&dir.join("a")).unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_at(0, b"hello").unwrap();
        f.sync_data().unwrap();
        f.write_at(5, b" world").unwrap();
        f.write_at(11, b"!!").unwrap();
        assert_eq!(fs.unsynced_writes(), 2);
        fs.crash(CrashSpec {
            keep_writes: 0,
            torn_bytes: 3,
        });
        assert_eq!(fs.file_bytes(&dir.join("a")).unwrap(), b"hello wo");
        assert!(f.write_at(0, b"x").is_err(), "old handles die in a crash");
        let f = fs.open(&dir.join("a")).unwrap();
        f.write_at(0, b"J").unwrap();
        fs.crash(CrashSpec::default());
        assert_eq!(fs.file_bytes(&dir.join("a")).unwrap(), b"hello wo");
    }

    #[test]
    fn unsynced_names_vanish_and_faults_fire() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let f = fs.create(&dir.join("a")).unwrap();
        f.write_at(0, b"x").unwrap();
        f.sync_data().unwrap();
        fs.crash(CrashSpec::default());
        assert!(fs.file_bytes(&dir.join("a")).is_none());
        let f = fs.create(&dir.join("b")).unwrap();
        fs.fail_next_sync();
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
        fs.set_capacity_bytes(Some(10));
        assert_eq!(f.allocate(11).unwrap_err().raw_os_error(), Some(28));
        f.allocate(10).unwrap();
        fs.fail_after_ops(2);
        f.write_at(0, b"1").unwrap();
        assert!(f.write_at(0, b"2").is_err());
        assert!(fs.is_dead());
        assert!(f.sync_data().is_err());
        let _l = fs.lock_dir(dir).unwrap();
        assert_eq!(
            fs.lock_dir(dir).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
