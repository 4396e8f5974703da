//! A panic inside the writer (a bug) poisons the log: waiters and later
//! calls get `Poisoned` instead of waiting forever.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::entry;
use tandem_wal::{DirLock, Error, FileSystem, Notify, SimFs, Wal, WalFile, WalOptions};

/// `SimFs`, except that once `armed` a write past a segment header panics.
#[derive(Debug)]
struct PanicFs {
    inner: SimFs,
    armed: Arc<AtomicBool>,
}

#[derive(Debug)]
struct PanicFile {
    inner: Arc<dyn WalFile>,
    armed: Arc<AtomicBool>,
}

impl PanicFs {
    fn wrap(&self, f: Arc<dyn WalFile>) -> Arc<dyn WalFile> {
        Arc::new(PanicFile {
            inner: f,
            armed: self.armed.clone(),
        })
    }
}

impl WalFile for PanicFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        // Segment headers (offset 0) are written by the background
        // preparer; records only by the writer.
        assert!(
            offset == 0 || !self.armed.load(Ordering::SeqCst),
            "planted panic in a record write"
        );
        self.inner.write_at(offset, buf)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl FileSystem for PanicFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        Ok(self.wrap(self.inner.open(path)?))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        Ok(self.wrap(self.inner.create(path)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock_dir(dir)
    }
}

fn open(background_threads: bool) -> (Wal, Arc<AtomicBool>) {
    open_with(WalOptions {
        background_threads,
        ..WalOptions::small_for_tests()
    })
}

fn open_with(opts: WalOptions) -> (Wal, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let fs = Arc::new(PanicFs {
        inner: SimFs::new(),
        armed: armed.clone(),
    });
    (Wal::open_with_fs(fs, "/wal", opts).unwrap(), armed)
}

fn is_writer_panic(r: &tandem_wal::Result<()>) -> bool {
    matches!(r, Err(Error::Poisoned { reason }) if reason.contains("writer panicked")
        && reason.contains("planted panic"))
}

#[test]
fn a_panic_on_the_writer_thread_fails_the_waiters_instead_of_hanging_them() {
    let (wal, armed) = open(true);
    wal.submit(vec![entry(1, 1, 10)], None)
        .unwrap()
        .wait()
        .unwrap();
    armed.store(true, Ordering::SeqCst);
    let c = wal.submit(vec![entry(2, 1, 10)], None).unwrap();
    // `poll` never writes in this thread, so the writer thread takes the
    // group and panics. The deadline only turns a hang into a failure.
    let deadline = Instant::now() + Duration::from_secs(120);
    let r = loop {
        if let Some(r) = c.poll() {
            break r;
        }
        assert!(Instant::now() < deadline, "the waiter was left hanging");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(is_writer_panic(&r), "{r:?}");
    assert!(matches!(
        wal.submit(vec![entry(3, 1, 10)], None),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn notifications_of_the_lost_group_and_of_groups_queued_behind_it_fire_with_the_error() {
    let (wal, armed) = open_with(WalOptions {
        background_threads: false,
        segment_bytes: 64 * 1024,
        entry_bytes_max: 6000,
        batch_bytes_max: 8000,
        cache_bytes_max: 64 * 1024,
        ..WalOptions::default()
    });
    wal.submit_wait(vec![entry(1, 1, 10)], None).unwrap();
    armed.store(true, Ordering::SeqCst);
    // Manual mode: nothing is written until the pump, and two 5000-byte
    // entries do not fit one 8000-byte group, so the pump writes (and
    // panics in) the first group while the second is still queued.
    let (tx, rx) = crossbeam_channel::unbounded();
    for (index, tag) in [(2, 20), (3, 30)] {
        wal.submit_notify(
            vec![entry(index, 1, 5000)],
            None,
            Notify::Channel {
                sender: tx.clone(),
                tag,
            },
        )
        .unwrap();
    }
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wal.pump()));
    assert!(caught.is_err(), "the pump sees the panic");
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.iter().map(|d| d.tag).collect::<Vec<_>>(), [20, 30]);
    for d in &got {
        assert!(is_writer_panic(&d.result), "{:?}", d.result);
    }
    assert_eq!(
        wal.stats().pending_bytes,
        0,
        "the failed groups give their budget back"
    );
}

#[test]
fn a_panic_in_a_caller_led_group_poisons_the_log_and_reaches_the_caller() {
    let (wal, armed) = open(false);
    wal.submit_wait(vec![entry(1, 1, 10)], None).unwrap();
    armed.store(true, Ordering::SeqCst);
    // Manual mode: the caller writes the group itself, so the panic unwinds
    // through its call.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wal.submit_wait(vec![entry(2, 1, 10)], None)
    }));
    assert!(caught.is_err(), "the caller sees the panic");
    armed.store(false, Ordering::SeqCst);
    let r = wal.submit(vec![entry(2, 1, 10)], None).map(|_| ());
    assert!(is_writer_panic(&r), "{r:?}");
    assert!(is_writer_panic(&wal.flush()), "later calls fail too");
}
