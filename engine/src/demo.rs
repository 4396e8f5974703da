//! `tandem demo` and `tandem bench`: a 3-replica cluster on local disk.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem::raft::Entry;
use tandem::sm::{Command, SmOptions, StateMachine};
use tandem::{Cluster, ClusterConfig, Db, ReadConsistency, WriteBatch};

/// Concurrent writers the demo uses.
const DEMO_CLIENTS: usize = 16;

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "  {what:<22} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

struct WriteRun {
    acked: Vec<(Vec<u8>, Vec<u8>)>,
    failed: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

/// Write `count` keys `<prefix><n>` with `clients` threads.
fn write_keys(db: &Db, prefix: &str, count: u64, clients: usize, pb: &ProgressBar) -> WriteRun {
    let next = Arc::new(AtomicU64::new(0));
    let out = Arc::new(Mutex::new(WriteRun {
        acked: Vec::new(),
        failed: 0,
        latencies_us: Vec::new(),
        elapsed: Duration::ZERO,
    }));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            let (db, next, out, pb) = (db.clone(), Arc::clone(&next), Arc::clone(&out), pb.clone());
            s.spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let k = format!("{prefix}{n:08}").into_bytes();
                let mut v = format!("value of {prefix}{n} ").into_bytes();
                v.resize(256, b'.');
                let t = Instant::now();
                let r = db.insert(&k, &v);
                let us = t.elapsed().as_micros() as u64;
                let mut o = out.lock().expect("no panics while holding");
                match r {
                    Ok(()) => {
                        o.acked.push((k, v));
                        o.latencies_us.push(us);
                    }
                    Err(_) => o.failed += 1,
                }
                pb.inc(1);
            });
        }
    });
    let mut run = std::mem::replace(
        &mut *out.lock().expect("no poison"),
        WriteRun {
            acked: Vec::new(),
            failed: 0,
            latencies_us: Vec::new(),
            elapsed: Duration::ZERO,
        },
    );
    run.elapsed = start.elapsed();
    run
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn demo_config() -> ClusterConfig {
    ClusterConfig::with_replicas(3)
}

/// `tandem demo`.
pub fn run(dir: &Path, writes: u64) -> Result<(), String> {
    let e = |e: tandem::Error| e.to_string();
    println!("tandem demo: 3 replicas under {}", dir.display());
    let cluster = Cluster::open(dir, demo_config()).map_err(e)?;
    let db = cluster.db();
    let t = Instant::now();
    let leader = cluster.wait_leader(Duration::from_secs(30)).map_err(e)?;
    println!(
        "  replicas {:?} up; node {leader} leads (elected in {} ms)",
        cluster.running(),
        t.elapsed().as_millis()
    );
    // Keys of this run are unique, so reruns on the same directory add to it.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prefix = format!("demo/{run_id}/");

    println!(
        "\n1. {writes} writes of 256 B, {DEMO_CLIENTS} concurrent clients, fsync on every replica"
    );
    let pb = bar(writes, "writing");
    let first = write_keys(&db, &format!("{prefix}a/"), writes, DEMO_CLIENTS, &pb);
    pb.finish();

    println!("\n2. stopping the leader (node {leader})");
    let t = Instant::now();
    cluster.stop(leader).map_err(e)?;
    let new_leader = loop {
        match cluster.wait_leader(Duration::from_secs(30)).map_err(e)? {
            l if l != leader => break l,
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let failover = t.elapsed();
    println!(
        "  node {new_leader} took over in {} ms; writing on with 2 of 3 replicas",
        failover.as_millis()
    );
    let pb = bar(writes, "writing (degraded)");
    let second = write_keys(&db, &format!("{prefix}b/"), writes, DEMO_CLIENTS, &pb);
    pb.finish();

    println!("\n3. restarting node {leader}");
    let t = Instant::now();
    cluster.restart(leader).map_err(e)?;
    let target = cluster
        .replica(new_leader)
        .ok_or("the new leader vanished")?
        .status()
        .map_err(e)?
        .commit;
    let restarted = cluster.replica(leader).ok_or("restart failed")?;
    let pb = bar(target, "catching up");
    loop {
        let applied = restarted.status().map_err(e)?.applied;
        pb.set_position(applied.min(target));
        if applied >= target {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "node {leader} did not catch up (applied {applied} of {target})"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    pb.finish();
    let catch_up = t.elapsed();

    println!("\n4. verifying every acknowledged write on every replica");
    let acked: Vec<&(Vec<u8>, Vec<u8>)> = first.acked.iter().chain(&second.acked).collect();
    let mut missing = 0u64;
    for id in cluster.running() {
        let r = cluster.replica(id).ok_or("replica vanished")?;
        for (k, v) in &acked {
            if r.state_machine()
                .get(k)
                .map_err(|x| x.to_string())?
                .as_deref()
                != Some(v.as_slice())
            {
                missing += 1;
            }
        }
    }
    // And through the client API: a linearizable read of a sample.
    for (k, v) in acked.iter().step_by(97) {
        let got = db.get_with(k, ReadConsistency::Linearizable).map_err(e)?;
        if got.value.as_deref() != Some(v.as_slice()) {
            missing += 1;
        }
    }

    let mut lat: Vec<u64> = first
        .latencies_us
        .iter()
        .chain(&second.latencies_us)
        .copied()
        .collect();
    lat.sort_unstable();
    let total = first.elapsed + second.elapsed;
    println!("\nsummary");
    println!("  {:<32} {}", "acknowledged writes", acked.len());
    println!(
        "  {:<32} {}",
        "failed writes (not acknowledged)",
        first.failed + second.failed
    );
    println!(
        "  {:<32} {:.0}",
        "writes/s (both phases)",
        acked.len() as f64 / total.as_secs_f64()
    );
    println!(
        "  {:<32} {:.2} / {:.2} ms",
        "latency p50 / p99",
        percentile(&lat, 0.5) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0
    );
    println!("  {:<32} {} ms", "failover", failover.as_millis());
    println!(
        "  {:<32} {} ms",
        "catch-up of the restarted node",
        catch_up.as_millis()
    );
    println!(
        "  {:<32} {}",
        "acknowledged writes verified",
        if missing == 0 {
            format!("all {} on all 3 replicas", acked.len())
        } else {
            format!("{missing} MISSING")
        }
    );
    for s in cluster.status() {
        println!(
            "  node {}: {:?} term {} commit {} applied {} log {}..={}",
            s.id, s.role, s.term, s.commit, s.applied, s.first_index, s.last_index
        );
    }
    cluster.shutdown();
    if missing > 0 {
        return Err(format!("{missing} acknowledged writes are missing"));
    }
    Ok(())
}

/// A zero-filled, synced file in which `write` + `fdatasync` of one value
/// is measured back to back (the condition the WAL writes in: no block
/// allocation or extent conversion left for the sync). Removed on drop.
struct SyncProbe {
    path: std::path::PathBuf,
    file: std::fs::File,
    buf: Vec<u8>,
    at: u64,
}

impl SyncProbe {
    const FILE_BYTES: u64 = 4 << 20;

    fn create(path: std::path::PathBuf, value_bytes: usize) -> Result<SyncProbe, String> {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).map_err(|e| Self::error(&path, &e))?;
        file.write_all(&vec![0u8; Self::FILE_BYTES as usize])
            .and_then(|()| file.sync_all())
            .map_err(|e| Self::error(&path, &e))?;
        Ok(SyncProbe {
            path,
            file,
            buf: vec![7u8; value_bytes.max(1)],
            at: 0,
        })
    }

    fn error(path: &Path, e: &std::io::Error) -> String {
        format!("fdatasync probe in {}: {e}", path.display())
    }

    /// Write the value after the previous one (wrapping at the end of the
    /// file) and `fdatasync`.
    fn write_sync(&mut self) -> Result<(), String> {
        use std::io::{Seek, SeekFrom, Write};
        if self.at + self.buf.len() as u64 > Self::FILE_BYTES {
            self.at = 0;
        }
        self.file
            .seek(SeekFrom::Start(self.at))
            .and_then(|_| self.file.write_all(&self.buf))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Self::error(&self.path, &e))?;
        self.at += self.buf.len() as u64;
        Ok(())
    }
}

impl Drop for SyncProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// p50 of `write(value_bytes)` + `fdatasync`, appended back to back for
/// `run_for` (and at least 20 times) into a [`SyncProbe`] in `dir`.
fn raw_fdatasync_us(dir: &Path, value_bytes: usize, run_for: Duration) -> Result<u64, String> {
    let mut probe = SyncProbe::create(dir.join("fdatasync-probe"), value_bytes)?;
    let mut lat = Vec::new();
    let end = Instant::now() + run_for;
    while Instant::now() < end || lat.len() < 20 {
        let t = Instant::now();
        probe.write_sync()?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    Ok(percentile(&lat, 0.5))
}

/// p50, in µs, of the time until the *second* of three concurrent
/// `write` + `fdatasync`s (one [`SyncProbe`] each, started together)
/// completes: the durability part of a 3-replica commit on this one disk
/// (the leader and one follower), with no consensus work at all. Concurrent
/// syncs of one device are slower than a lone one, so this — not the lone
/// fdatasync — is the floor under a 3-replica write here.
fn quorum_fdatasync_us(dir: &Path, value_bytes: usize, run_for: Duration) -> Result<u64, String> {
    use std::sync::Barrier;
    const REPLICAS: usize = 3;
    let mut probes = (0..REPLICAS)
        .map(|i| SyncProbe::create(dir.join(format!("quorum-probe-{i}")), value_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let stop = AtomicBool::new(false);
    let start = Barrier::new(REPLICAS + 1);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Result<Instant, String>>();
    let mut lat = Vec::new();
    std::thread::scope(|s| {
        for probe in &mut probes {
            let (start, stop, done_tx) = (&start, &stop, done_tx.clone());
            s.spawn(move || loop {
                start.wait();
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let _ = done_tx.send(probe.write_sync().map(|()| Instant::now()));
            });
        }
        let end = Instant::now() + run_for;
        let mut result = Ok(());
        while result.is_ok() && (Instant::now() < end || lat.len() < 20) {
            let t0 = Instant::now();
            start.wait();
            let mut done = Vec::with_capacity(REPLICAS);
            for _ in 0..REPLICAS {
                match done_rx.recv().expect("probe threads live") {
                    Ok(t) => done.push(t),
                    Err(e) => result = Err(e),
                }
            }
            done.sort_unstable();
            if let Some(second) = done.get(1) {
                lat.push(second.duration_since(t0).as_micros() as u64);
            }
        }
        stop.store(true, Ordering::Release);
        start.wait();
        result
    })?;
    lat.sort_unstable();
    Ok(percentile(&lat, 0.5))
}

/// CPU time (user + system) this process has used so far, if the platform
/// tells (Linux: `/proc/self/stat`, in clock ticks of 10 ms).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// What the state machines alone cost: three [`StateMachine`]s (one per
/// replica, each on its own thread, as in the cluster) apply the same
/// stream of one-write entries (fresh keys, `value_bytes` values) in groups
/// of `group`, writing one sled batch per `per_batch` entries (a multiple of
/// `group`), with nothing else running — no raft, no WAL, no clients.
/// Returns the process CPU time per write (all three replicas applying it,
/// sled's IO thread pool included) and the wall time per write.
///
/// CPU per write bounds the cluster's throughput on this machine from
/// above: `cores / cpu_per_write` writes/s even if everything else were
/// free.
fn apply_floor(
    dir: &Path,
    value_bytes: usize,
    group: u64,
    per_batch: u64,
) -> Result<(Duration, Duration), String> {
    const WRITES: u64 = 16_384;
    let v = vec![b'v'; value_bytes];
    let entries: Vec<Vec<Entry>> = (0..WRITES / group)
        .map(|g| {
            (0..group)
                .map(|i| {
                    let index = g * group + i + 1;
                    let mut batch = WriteBatch::new();
                    batch.insert(format!("floor/{index}").into_bytes(), v.clone());
                    Entry {
                        index,
                        term: 1,
                        data: Command::Batch(batch).encode().into(),
                        ..Entry::default()
                    }
                })
                .collect()
        })
        .collect();
    let machines = (1..=3)
        .map(|i| {
            // Written explicitly below, never by the bound.
            let opts = SmOptions {
                write_behind_entries: usize::MAX,
                write_behind_bytes: usize::MAX,
                ..SmOptions::default()
            };
            StateMachine::open(dir.join(format!("floor-{i}")), &opts)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let cpu_before = process_cpu();
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = machines
            .iter()
            .map(|sm| {
                let entries = &entries;
                s.spawn(move || {
                    entries.iter().try_for_each(|g| {
                        sm.apply(g)?;
                        if sm.applied_index() % per_batch == 0 {
                            sm.flush_pending()?;
                        }
                        Ok::<_, tandem::sm::Error>(())
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("apply thread").map_err(|e| e.to_string()))
    })?;
    let wall = start.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map_or(Duration::ZERO, |(a, b)| a.saturating_sub(b));
    drop(machines);
    for i in 1..=3 {
        let _ = std::fs::remove_dir_all(dir.join(format!("floor-{i}")));
    }
    Ok((cpu / WRITES as u32, wall / WRITES as u32))
}

/// The workload of `tandem bench`.
#[derive(Clone, Copy, Debug)]
pub struct BenchLoad<'a> {
    /// Concurrent clients, one run per value.
    pub clients: &'a [usize],
    /// Seconds per run.
    pub seconds: u64,
    /// Value size in bytes.
    pub value_bytes: usize,
    /// Key space (see [`bench`]).
    pub keys: u64,
    /// Sync the logs (the default) or not.
    pub fsync: bool,
}

/// Key `n` of the key space of `tandem bench --keys`.
fn bench_key(n: u64) -> String {
    format!("bench/{n:010}")
}

/// Write every key of `0..keys` once, in batches, before the timed runs.
fn preload_keys(db: &Db, keys: u64, value_bytes: usize) -> Result<(), String> {
    const PER_BATCH: u64 = 1000;
    if keys == 0 {
        return Ok(());
    }
    let bar = ProgressBar::new(keys);
    bar.set_style(
        ProgressStyle::with_template("loading {pos}/{len} keys {wide_bar} {eta}")
            .map_err(|e| e.to_string())?,
    );
    let v = vec![b'v'; value_bytes];
    for start in (0..keys).step_by(PER_BATCH as usize) {
        let mut batch = WriteBatch::new();
        for n in start..(start + PER_BATCH).min(keys) {
            batch.insert(bench_key(n).into_bytes(), v.clone());
        }
        db.apply_batch(batch).map_err(|e| e.to_string())?;
        bar.set_position((start + PER_BATCH).min(keys));
    }
    bar.finish_and_clear();
    println!("loaded {keys} keys of {value_bytes} B; each write overwrites one drawn at random");
    Ok(())
}

/// `tandem bench`.
///
/// `keys`: 0 gives every write a fresh key (the tree only grows, so the
/// state machine keeps splitting leaves); `n > 0` first loads `n` keys and
/// then overwrites keys drawn uniformly from them (each client with its own
/// seeded generator), the steady state of an update-heavy workload.
///
/// `fsync: false` runs the replicas with `SyncPolicy::Never`: what is left
/// is the software path of a write (consensus, thread hand-offs, apply),
/// free of the disk's latency and of its drift.
pub fn bench(
    dir: &Path,
    load: &BenchLoad<'_>,
    json_out: Option<&Path>,
    csv_out: Option<&Path>,
) -> Result<(), String> {
    let BenchLoad {
        clients,
        seconds,
        value_bytes,
        keys,
        fsync,
    } = *load;
    let e = |e: tandem::Error| e.to_string();
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut config = demo_config();
    if !fsync {
        config.node.sync = tandem::SyncPolicy::Never;
        println!("fsync OFF: the replicas never sync their logs (software path only)");
    }
    let cluster = Cluster::open(dir, config).map_err(e)?;
    let db = cluster.db();
    cluster.wait_leader(Duration::from_secs(30)).map_err(e)?;
    preload_keys(&db, keys, value_bytes)?;
    println!(
        "raw fdatasync: {value_bytes} B appends + fdatasync into a zero-filled file in {}, 500 ms before each level; quorum: the second of three such syncs started together (3 files)",
        dir.display()
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>10} {:>12} {:>14} {:>13} {:>10} {:>11}",
        "clients",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "fdatasync ms",
        "p50/fdatasync",
        "CPU us/write",
        "quorum ms",
        "p50/quorum"
    );
    let mut rows = Vec::new();
    for (run, &n) in clients.iter().enumerate() {
        // The disk's speed drifts within minutes here: measure the baseline
        // right before the level it is compared with.
        let fsync_us = raw_fdatasync_us(dir, value_bytes, Duration::from_millis(500))?;
        let quorum_us = quorum_fdatasync_us(dir, value_bytes, Duration::from_millis(500))?;
        let cpu_before = process_cpu();
        let stop = Arc::new(AtomicBool::new(false));
        let lat = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        std::thread::scope(|s| {
            for c in 0..n {
                let (db, stop, lat) = (db.clone(), Arc::clone(&stop), Arc::clone(&lat));
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let v = vec![b'v'; value_bytes];
                    let mut i = 0u64;
                    let mut rng = ChaCha8Rng::seed_from_u64(((run as u64) << 32) | c as u64);
                    while !stop.load(Ordering::Relaxed) {
                        let k = if keys == 0 {
                            format!("bench/{run}/{c}/{i}")
                        } else {
                            bench_key(rng.gen_range(0..keys))
                        };
                        i += 1;
                        let t = Instant::now();
                        if db.insert(k.as_bytes(), &v).is_ok() {
                            mine.push(t.elapsed().as_micros() as u64);
                        }
                    }
                    lat.lock().expect("no poison").extend(mine);
                });
            }
            std::thread::sleep(Duration::from_secs(seconds));
            stop.store(true, Ordering::Relaxed);
        });
        let elapsed = start.elapsed();
        let cpu = process_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        let mut lat = std::mem::take(&mut *lat.lock().expect("no poison"));
        lat.sort_unstable();
        let row = BenchRow {
            clients: n,
            value_bytes,
            seconds: elapsed.as_secs_f64(),
            writes: lat.len() as u64,
            writes_per_s: lat.len() as f64 / elapsed.as_secs_f64(),
            latency_us_p50: percentile(&lat, 0.5),
            latency_us_p99: percentile(&lat, 0.99),
            latency_us_p999: percentile(&lat, 0.999),
            fdatasync_us_p50: fsync_us,
            quorum_fdatasync_us_p50: Some(quorum_us),
            cpu_us_per_write: cpu.map(|c| c.as_secs_f64() * 1e6 / lat.len().max(1) as f64),
        };
        println!(
            "{:>8} {:>12.0} {:>10.3} {:>10.3} {:>10.3} {:>12.3} {:>14.2} {:>13} {:>10.3} {:>11.2}",
            n,
            row.writes_per_s,
            row.latency_us_p50 as f64 / 1000.0,
            row.latency_us_p99 as f64 / 1000.0,
            row.latency_us_p999 as f64 / 1000.0,
            fsync_us as f64 / 1000.0,
            row.latency_us_p50 as f64 / fsync_us.max(1) as f64,
            row.cpu_us_per_write
                .map_or_else(|| "-".to_string(), |c| format!("{c:.0}")),
            quorum_us as f64 / 1000.0,
            row.latency_us_p50 as f64 / quorum_us.max(1) as f64,
        );
        rows.push(row);
    }
    if let Some(path) = json_out {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("results written to {}", path.display());
    }
    if let Some(path) = csv_out {
        std::fs::write(path, bench_csv(&rows))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("results written to {}", path.display());
    }
    for st in cluster.status() {
        let c = st.counters;
        println!(
            "node {} {:?}: readies {} wal submits {} (lazy {}) entries {} ({:.1}/submit) msgs sent {} recv {}",
            st.id,
            st.role,
            c.readies,
            c.persist_tasks,
            c.persist_tasks_lazy,
            c.entries_persisted,
            c.entries_persisted as f64 / c.persist_tasks.max(1) as f64,
            c.messages_sent,
            c.messages_received
        );
    }
    cluster.shutdown();
    // After the runs: what the writes it leaves behind cost the disk must
    // not slow the measured levels.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for (group, per_batch) in [(8, 8), (64, 64), (8, 256)] {
        let (cpu, wall) = apply_floor(dir, value_bytes, group, per_batch)?;
        println!(
            "state machines alone (3 replicas applying one-write entries, groups of {group}, \
             one sled batch per {per_batch}): \
             {:.1} us CPU per write ({:.1} us wall): at most {:.0} writes/s on {cores} cores",
            cpu.as_secs_f64() * 1e6,
            wall.as_secs_f64() * 1e6,
            cores as f64 / cpu.as_secs_f64().max(1e-9),
        );
    }
    Ok(())
}

/// One line of `tandem bench` results, as written to JSON and CSV.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct BenchRow {
    clients: usize,
    value_bytes: usize,
    seconds: f64,
    writes: u64,
    writes_per_s: f64,
    latency_us_p50: u64,
    latency_us_p99: u64,
    latency_us_p999: u64,
    /// Raw `write` + `fdatasync` p50 measured right before this level.
    fdatasync_us_p50: u64,
    /// The second of three concurrent `write` + `fdatasync`s, p50, measured
    /// right before this level (see `quorum_fdatasync_us`); absent in
    /// results written before it was measured.
    #[serde(default)]
    quorum_fdatasync_us_p50: Option<u64>,
    /// CPU time of the whole process (all replicas and clients) during the
    /// level, per acknowledged write; `None` where the platform does not say.
    cpu_us_per_write: Option<f64>,
}

/// The rows as CSV with a header line, for comparison across commits.
fn bench_csv(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "clients,value_bytes,seconds,writes,writes_per_s,latency_us_p50,latency_us_p99,latency_us_p999,fdatasync_us_p50,cpu_us_per_write,quorum_fdatasync_us_p50\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{:.3},{},{:.1},{},{},{},{},{},{}\n",
            r.clients,
            r.value_bytes,
            r.seconds,
            r.writes,
            r.writes_per_s,
            r.latency_us_p50,
            r.latency_us_p99,
            r.latency_us_p999,
            r.fdatasync_us_p50,
            r.cpu_us_per_write
                .map_or_else(String::new, |c| format!("{c:.1}")),
            r.quorum_fdatasync_us_p50
                .map_or_else(String::new, |q| q.to_string())
        ));
    }
    out
}

#[cfg(test)]
mod bench_output_tests {
    use super::*;

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let row = BenchRow {
            clients: 64,
            value_bytes: 256,
            seconds: 5.0,
            writes: 70_000,
            writes_per_s: 14_000.0,
            latency_us_p50: 3_500,
            latency_us_p99: 20_000,
            latency_us_p999: 40_000,
            fdatasync_us_p50: 150,
            quorum_fdatasync_us_p50: Some(210),
            cpu_us_per_write: Some(61.25),
        };
        let csv = bench_csv(&[
            row.clone(),
            BenchRow {
                clients: 1,
                ..row.clone()
            },
        ]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("clients,value_bytes"));
        assert_eq!(
            lines[1],
            "64,256,5.000,70000,14000.0,3500,20000,40000,150,61.2,210"
        );
        assert!(lines[2].starts_with("1,256,"));
        let unknown = bench_csv(&[BenchRow {
            cpu_us_per_write: None,
            quorum_fdatasync_us_p50: None,
            ..row.clone()
        }]);
        assert!(unknown.lines().nth(1).unwrap().ends_with(",150,,"));
        // Results written before the quorum probe existed still load.
        let old = r#"[{"clients":1,"value_bytes":256,"seconds":5.0,"writes":9000,"writes_per_s":1800.0,
            "latency_us_p50":500,"latency_us_p99":900,"latency_us_p999":2000,"fdatasync_us_p50":120,
            "cpu_us_per_write":600.0}]"#;
        let old: Vec<BenchRow> = serde_json::from_str(old).unwrap();
        assert_eq!(old[0].quorum_fdatasync_us_p50, None);
        let json = serde_json::to_string(std::slice::from_ref(&row)).unwrap();
        let back: Vec<BenchRow> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![row]);
    }

    #[test]
    fn a_sync_probe_wraps_in_its_file_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe");
        let value = 1 << 20;
        let mut probe = SyncProbe::create(path.clone(), value).unwrap();
        let fits = SyncProbe::FILE_BYTES / value as u64;
        for _ in 0..=fits {
            probe.write_sync().unwrap();
        }
        // The write after the last one that fits went back to the start.
        assert_eq!(probe.at, value as u64);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            SyncProbe::FILE_BYTES
        );
        drop(probe);
        assert!(!path.exists(), "the probe removes its file");
        let missing = dir.path().join("no-such-dir").join("probe");
        let err = SyncProbe::create(missing, 256).err().expect("no directory");
        assert!(err.contains("no-such-dir"), "{err}");
    }

    #[test]
    fn process_cpu_grows_with_work() {
        let Some(before) = process_cpu() else {
            return; // not Linux: nothing to check
        };
        // Burn CPU until the counter (10 ms ticks) moves; a counter that
        // never moves (a parse of the wrong fields) fails after a minute.
        let start = Instant::now();
        let mut x = 0u64;
        loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let now = process_cpu().expect("readable once");
            if now > before {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "process CPU stuck at {now:?} (x = {x})"
            );
        }
    }
}
