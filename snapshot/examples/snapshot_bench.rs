//! Build, transfer and install throughput of a large snapshot, peak extra
//! resident memory during the transfer, and apply-batch latency while a
//! build runs (with before-image recording) against the same workload
//! without a build.
//!
//! ```text
//! cargo run --release -p tandem-snapshot --example snapshot_bench -- [MiB] [dir]
//! ```
//!
//! Defaults: 1024 MiB of 1 KiB values, in a temporary directory under the
//! current directory. Results print as a table; `docs/snapshot.md` records
//! them for this machine.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_raft::{ConfState, SnapshotMetadata};
use tandem_snapshot::{
    BeforeImages, BeforeImagesConfig, PointInTimeIter, ReceiverConfig, ReceiverDriver,
    ReceiverEvent, SenderConfig, SenderDriver, Stager, StateSwitch, TransferId, WriterConfig,
};

const VALUE_BYTES: usize = 1024;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the kernel's peak-RSS counter (Linux ≥ 4.0) so VmHWM measures
/// one phase.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(b"user:key");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// Applies batches of 64 random writes to keys `0..key_range` until `stop`,
/// recording before-images when `images` is set. Returns per-batch
/// latencies and, separately, the time spent recording (µs).
fn apply_load(
    tree: sled::Tree,
    key_range: u64,
    images: Option<Arc<BeforeImages>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (Vec<u64>, Vec<u64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut lat = Vec::new();
    let mut rec = Vec::new();
    let value = vec![7u8; VALUE_BYTES];
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let mut batch = sled::Batch::default();
        let mut rec_time = Duration::ZERO;
        for _ in 0..64 {
            let k = key(rng.gen_range(0..key_range));
            if let Some(im) = &images {
                let r = Instant::now();
                im.record_with(&k, || tree.get(k)).expect("read old value");
                rec_time += r.elapsed();
            }
            batch.insert(&k[..], &value[..]);
        }
        tree.apply_batch(batch).expect("apply batch");
        lat.push(t.elapsed().as_micros() as u64);
        rec.push(rec_time.as_micros() as u64);
        // About 5k batches/s at most: a steady load, not a saturating one.
        std::thread::sleep(Duration::from_micros(200));
    }
    (lat, rec)
}

fn summary(lat: &mut [u64]) -> (usize, u64, u64) {
    lat.sort_unstable();
    if lat.is_empty() {
        return (0, 0, 0);
    }
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    (lat.len(), p99, *lat.last().unwrap_or(&0))
}

/// Child mode: sends the snapshot in `from` to a receiver staging into
/// `to`, over an in-process loss-free link, and prints time and peak RSS.
fn transfer_child(from: &str, to: &str) {
    let built = tandem_snapshot::SnapshotReader::open(Path::new(from)).unwrap();
    let rss_before = status_kib("VmRSS:");
    reset_peak_rss();
    let m = built.manifest().clone();
    let id = TransferId {
        leader_term: 3,
        from: 1,
        index: m.index,
        term: m.term,
        attempt: 0,
    };
    let t = Instant::now();
    let mut tx = SenderDriver::new(id, built, SenderConfig::default()).unwrap();
    let mut rx = ReceiverDriver::new(
        Stager::open(Path::new(to)).unwrap(),
        ReceiverConfig::default(),
    )
    .unwrap();
    let (mut to_rx, _) = tx.start();
    let mut completed = false;
    let mut outcome = None;
    while outcome.is_none() {
        let mut to_tx = Vec::new();
        for msg in to_rx.drain(..) {
            let (msgs, events) = rx.on_message(msg);
            to_tx.extend(msgs);
            completed |= events
                .iter()
                .any(|e| matches!(e, ReceiverEvent::Completed { .. }));
        }
        for msg in to_tx {
            let (msgs, done) = tx.on_message(&msg);
            to_rx.extend(msgs);
            outcome = outcome.or(done);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(outcome, Some(Ok(())));
    assert!(completed);
    let peak = status_kib("VmHWM:");
    println!(
        "secs={secs} peak_kib={peak} peak_extra_kib={}",
        peak.saturating_sub(rss_before)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--transfer") {
        transfer_child(&args[2], &args[3]);
        return;
    }
    let mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let base = args
        .get(2)
        .map_or_else(|| std::env::current_dir().unwrap(), Into::into);
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let root = tmp.path();
    let n_keys = mib * 1024 * 1024 / VALUE_BYTES as u64;
    println!(
        "state: {mib} MiB, {n_keys} keys of 16 B with {VALUE_BYTES} B values, in {}",
        root.display()
    );

    // Populate the leader's state machine.
    let t = Instant::now();
    let db = sled::Config::new()
        .path(root.join("leader-sm"))
        .cache_capacity(256 * 1024 * 1024)
        .open()
        .unwrap();
    let tree = db.open_tree("sm").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for chunk in (0..n_keys).collect::<Vec<_>>().chunks(4096) {
        let mut b = sled::Batch::default();
        for &i in chunk {
            let v: Vec<u8> = (0..VALUE_BYTES).map(|_| rng.gen()).collect();
            b.insert(&key(i)[..], v);
        }
        tree.apply_batch(b).unwrap();
    }
    db.flush().unwrap();
    println!("populate: {:.1} s", t.elapsed().as_secs_f64());

    // Baseline apply latency without a build.
    let stop = Arc::new(AtomicBool::new(false));
    let h = {
        let (tree, stop) = (tree.clone(), stop.clone());
        // Overwrites only: the key count at the build point stays `n_keys`.
        std::thread::spawn(move || apply_load(tree, n_keys, None, stop, 2))
    };
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let (mut base_lat, _) = h.join().unwrap();

    // Build with no writes going on, for comparison.
    let leader_snap = Stager::open(&root.join("leader-snap")).unwrap();
    let quiet_images = BeforeImages::new(BeforeImagesConfig::default());
    let quiet_meta = SnapshotMetadata {
        conf_state: ConfState::from_voters([1, 2, 3]),
        index: 999,
        term: 2,
    };
    let t = Instant::now();
    let mut w = leader_snap
        .create_writer(&quiet_meta, &WriterConfig::default())
        .unwrap();
    for p in PointInTimeIter::new(tree.iter(), &quiet_images) {
        let (k, v) = p.unwrap();
        w.push(&k, &v).unwrap();
    }
    let quiet = leader_snap.publish_built(&w.finish().unwrap()).unwrap();
    let quiet_time = t.elapsed();
    let quiet_bytes = quiet.manifest().total_bytes;
    drop(quiet);
    leader_snap.remove_older_than(1_000, 0).unwrap();

    // Build while applying continues.
    let images = Arc::new(BeforeImages::new(BeforeImagesConfig {
        bytes_max: 512 * 1024 * 1024,
        ..BeforeImagesConfig::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let h = {
        let (tree, stop, images) = (tree.clone(), stop.clone(), images.clone());
        // Also creates keys past `n_keys`, which the build must not see.
        std::thread::spawn(move || apply_load(tree, n_keys + n_keys / 10, Some(images), stop, 3))
    };
    let meta = SnapshotMetadata {
        conf_state: ConfState::from_voters([1, 2, 3]),
        index: 1_000,
        term: 2,
    };
    let t = Instant::now();
    let mut w = leader_snap
        .create_writer(&meta, &WriterConfig::default())
        .unwrap();
    for p in PointInTimeIter::new(tree.iter(), &images) {
        let (k, v) = p.unwrap();
        w.push(&k, &v).unwrap();
    }
    let built = leader_snap.publish_built(&w.finish().unwrap()).unwrap();
    let build_time = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut build_lat, mut rec_lat) = h.join().unwrap();
    let snap_bytes = built.manifest().total_bytes;
    assert_eq!(
        built.manifest().pair_count,
        n_keys,
        "the build must see the state at its start"
    );
    let recorded = images.recorded_total();
    let skipped = images.skipped_passed();
    drop(images);
    drop(tree);
    drop(db);

    // Transfer in a child process so its peak RSS is the transfer's alone
    // (in this process, memory sled freed would hide the transfer's use).
    let built_dir = built.dir().to_path_buf();
    drop(built);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--transfer")
        .arg(&built_dir)
        .arg(root.join("follower-snap"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "transfer child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| -> f64 {
        child
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let transfer_time = Duration::from_secs_f64(field("secs="));
    let peak_extra_kib = field("peak_extra_kib=");
    let peak_kib = field("peak_kib=");
    let staged = Stager::open(&root.join("follower-snap"))
        .unwrap()
        .recover()
        .unwrap()
        .expect("staged snapshot");

    // Install into a fresh state version and switch.
    let t = Instant::now();
    let sw = StateSwitch::open(&root.join("follower-sm")).unwrap();
    let dir = sw.create_version("v-00000000000000001000").unwrap();
    {
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .unwrap();
        let tree = db.open_tree("sm").unwrap();
        let mut b = sled::Batch::default();
        let mut in_batch = 0;
        for p in staged.pairs() {
            let (k, v) = p.unwrap();
            b.insert(k, v);
            in_batch += 1;
            if in_batch == 4096 {
                tree.apply_batch(std::mem::take(&mut b)).unwrap();
                in_batch = 0;
            }
        }
        tree.apply_batch(b).unwrap();
        db.flush().unwrap();
    }
    sw.switch_to("v-00000000000000001000").unwrap();
    let install_time = t.elapsed();

    let (bn, bp99, bmax) = summary(&mut base_lat);
    let (sn, sp99, smax) = summary(&mut build_lat);
    let (_, rp99, rmax) = summary(&mut rec_lat);
    println!();
    println!("| phase | time (s) | throughput (MiB/s of snapshot) |");
    println!("|---|---|---|");
    println!(
        "| build (sled → chunks, no writes) | {:.1} | {:.1} |",
        quiet_time.as_secs_f64(),
        mbps(quiet_bytes, quiet_time)
    );
    println!(
        "| build (sled → chunks, writes continuing) | {:.1} | {:.1} |",
        build_time.as_secs_f64(),
        mbps(snap_bytes, build_time)
    );
    println!(
        "| transfer (offer → Done, incl. staging fsyncs + verification) | {:.1} | {:.1} |",
        transfer_time.as_secs_f64(),
        mbps(snap_bytes, transfer_time)
    );
    println!(
        "| install (chunks → new sled version + switch) | {:.1} | {:.1} |",
        install_time.as_secs_f64(),
        mbps(snap_bytes, install_time)
    );
    println!();
    println!(
        "snapshot bytes: {snap_bytes}; chunks: {}",
        staged.manifest().chunk_count
    );
    println!(
        "transfer process: peak RSS {:.1} MiB, of which {:.1} MiB above its RSS before the transfer began",
        peak_kib / 1024.0,
        peak_extra_kib / 1024.0
    );
    println!(
        "before-images recorded during the build: {recorded}; writes behind the builder's cursor that needed none: {skipped}"
    );
    println!();
    println!("| apply batches of 64 writes | batches | p99 (µs) | max (µs) |");
    println!("|---|---|---|---|");
    println!("| without a build | {bn} | {bp99} | {bmax} |");
    println!("| during the build (with before-images) | {sn} | {sp99} | {smax} |");
    println!("| of which recording before-images (old-value reads) | {sn} | {rp99} | {rmax} |");
}
