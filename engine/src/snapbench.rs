//! `tandem snapbench`: a follower catching up by snapshot through the real
//! engine, measured.
//!
//! A 3-replica [`Cluster`] on disk; one follower is stopped; the state is
//! loaded with large values (`apply_batch`) until it holds
//! [`SnapBenchOptions::state_bytes`]; the leader's log is compacted past the
//! stopped follower; a client keeps writing (new keys and overwrites of
//! loaded ones) while the follower is restarted and catches up: the leader
//! builds a snapshot (before-images keep it point-in-time while applying
//! goes on), sends it chunk by chunk, the follower stages, verifies and
//! installs it, then replays the log after it.
//!
//! The phase figures come from the replicas' own timings
//! ([`crate::Replica::snapshot_timings`]); resident memory is sampled from
//! `/proc/self/status` every 10 ms — the whole process, i.e. all three
//! replicas and their sled caches, not the transfer alone.
//!
//! `tests/snapbench.rs` runs it at a few MiB so it cannot rot; the 1 GiB
//! figures in `docs/BENCHMARKS.md` come from `tandem snapbench`.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Error, Result};
use crate::sm::{SnapshotTimings, WriteBatch};
use crate::{Cluster, ClusterConfig};

/// What to measure.
#[derive(Clone, Debug)]
pub struct SnapBenchOptions {
    /// Cluster directory (wiped first).
    pub dir: PathBuf,
    /// Bytes of values to load before the follower restarts.
    pub state_bytes: u64,
    /// Size of each loaded value.
    pub value_bytes: usize,
    /// Values per `apply_batch` while loading.
    pub batch_values: usize,
    /// Concurrent loading clients.
    pub load_clients: usize,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// After the catch-up, check the three replicas hold the same data.
    pub verify: bool,
    /// The live client also overwrites a random loaded key every 4th batch
    /// (the build must then keep its old value: the apply thread reads it
    /// first). Without, it only inserts new keys.
    pub overwrites: bool,
}

impl SnapBenchOptions {
    /// 1 GiB of 64 KiB values in batches of 8, two loading clients.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SnapBenchOptions {
            dir: dir.into(),
            state_bytes: 1 << 30,
            value_bytes: 64 << 10,
            batch_values: 8,
            load_clients: 2,
            progress: false,
            verify: true,
            overwrites: true,
        }
    }
}

/// What was measured.
#[derive(Clone, Debug, Default)]
pub struct SnapBenchReport {
    /// Keys loaded.
    pub keys: u64,
    /// Value bytes loaded.
    pub state_bytes: u64,
    /// Time to load them (3 replicas, 2 of them running, fsync on).
    pub load: Duration,
    /// The builder's timings (the leader that sent the snapshot).
    pub leader: SnapshotTimings,
    /// The restarted follower's timings.
    pub follower: SnapshotTimings,
    /// From the restart of the follower until it applied the commit index
    /// the leader had at the restart.
    pub catch_up: Duration,
    /// Builds asked for, and transfers started and failed, by the leader
    /// (a failed build or transfer is retried: more than one of each means
    /// retries).
    pub builds_started: u64,
    /// Transfers started by the leader.
    pub sends_started: u64,
    /// Transfers the leader gave up.
    pub sends_failed: u64,
    /// Process RSS just before the transfer began staging (bytes).
    pub rss_before_transfer: u64,
    /// Highest process RSS sampled while the transfer ran (bytes).
    pub rss_peak_transfer: u64,
    /// Highest process RSS sampled during the whole catch-up (bytes).
    pub rss_peak_catch_up: u64,
    /// RSS samples taken during the transfer.
    pub rss_samples_transfer: u64,
    /// Client batches written while the follower caught up.
    pub live_batches: u64,
    /// Longest client-observed batch latency while the follower caught up.
    pub live_batch_us_max: u64,
    /// When that batch started, counted from the follower's restart.
    pub live_batch_max_at: Duration,
    /// True if the replicas' data was compared after the catch-up and
    /// found equal.
    pub verified: bool,
}

impl SnapBenchReport {
    /// Extra resident memory during the transfer (peak minus before).
    #[must_use]
    pub fn rss_extra_transfer(&self) -> u64 {
        self.rss_peak_transfer
            .saturating_sub(self.rss_before_transfer)
    }

    /// The report as a table.
    #[must_use]
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        let ms = |us: u64| us as f64 / 1000.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "state: {} keys, {:.1} MiB of values, loaded in {:.1} s",
            self.keys,
            mib(self.state_bytes),
            self.load.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "{:<44} {:>12} {:>12} {:>10}",
            "phase", "bytes (MiB)", "time (ms)", "MB/s"
        );
        let mut row = |what: &str, bytes: u64, us: u64| {
            let _ = writeln!(
                s,
                "{:<44} {:>12.1} {:>12.1} {:>10.1}",
                what,
                mib(bytes),
                ms(us),
                crate::sm::snapshot_store::mb_per_s(bytes, us)
            );
        };
        row(
            "build (leader, while writes go on)",
            self.leader.build_bytes,
            self.leader.build_us,
        );
        row(
            "transfer (offer accepted → verified)",
            self.follower.receive_bytes,
            self.follower.receive_us,
        );
        row(
            "install (new sled version, switch)",
            self.follower.install_bytes,
            self.follower.install_us,
        );
        let _ = writeln!(
            s,
            "catch-up (restart → applied the restart's commit): {:.1} s",
            self.catch_up.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "longest apply stall during the build (apply_stall_us_max): {} µs",
            self.leader.build_apply_stall_us_max
        );
        let _ = writeln!(
            s,
            "process RSS (3 replicas + sled caches): {:.1} MiB before the transfer, \
             peak {:.1} MiB during it ({} samples): +{:.1} MiB; peak during catch-up {:.1} MiB",
            mib(self.rss_before_transfer),
            mib(self.rss_peak_transfer),
            self.rss_samples_transfer,
            mib(self.rss_extra_transfer()),
            mib(self.rss_peak_catch_up)
        );
        let _ = writeln!(
            s,
            "client during catch-up: {} batches, longest {:.1} ms (began {:.1} s into the \
             catch-up); leader: {} build(s), {} transfer(s), {} failed",
            self.live_batches,
            ms(self.live_batch_us_max),
            self.live_batch_max_at.as_secs_f64(),
            self.builds_started,
            self.sends_started,
            self.sends_failed
        );
        let _ = writeln!(
            s,
            "replicas compared after catch-up: {}",
            if self.verified {
                "identical"
            } else {
                "not checked"
            }
        );
        s
    }
}

/// The cluster configuration of the bench: defaults (fsync on, 10 ms
/// ticks, 1 MiB chunks, window 4) except for what makes a lagging follower
/// need a snapshot at this state size, and longer elections (1-2 s) so the
/// disk load of loading and building does not move the leader.
#[must_use]
pub fn config(opts: &SnapBenchOptions) -> ClusterConfig {
    let mut cfg = ClusterConfig::with_replicas(3);
    cfg.node.election_ticks = 100;
    cfg.node.max_value_bytes = cfg.node.max_value_bytes.max(opts.value_bytes);
    cfg.node.max_proposal_bytes = cfg
        .node
        .max_proposal_bytes
        .max(opts.value_bytes * opts.batch_values + (64 << 10));
    // Compact every 1/16 of the state (at most the default 64 MiB) and keep
    // at most half of the state's bytes of log for a lagging follower: the
    // stopped follower is then left behind once half the state is loaded.
    // A bound in bytes, not entries: the live client's small batches during
    // the catch-up stay well within it, so the follower, once it has
    // installed the snapshot, is not compacted past again while it replays
    // the log (an entry bound of a few batches did that under load, and a
    // second snapshot followed).
    cfg.node.snapshot.compact_log_bytes = (opts.state_bytes / 16).clamp(64 << 10, 64 << 20);
    cfg.node.snapshot.lag_bytes_max = (opts.state_bytes / 2).clamp(4096, 512 << 20);
    cfg.client_deadline = Duration::from_secs(120);
    cfg
}

fn bar(progress: bool, len: u64, template: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

fn spinner(progress: bool, msg: &str) -> ProgressBar {
    tracing::info!(phase = msg, "snapbench");
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("  {spinner} {elapsed:>4} {msg}").expect("valid"));
    pb.enable_steady_tick(Duration::from_millis(200));
    pb.set_message(msg.to_string());
    pb
}

/// Value bytes for key number `n`: a window of a random buffer, so values
/// differ and do not compress.
fn value_of(noise: &[u8], n: u64, len: usize) -> Vec<u8> {
    let start = (n.wrapping_mul(7919) as usize) % (noise.len() - len);
    noise[start..start + len].to_vec()
}

fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Resident set size of this process, from `/proc/self/status` (bytes).
/// `None` where there is no procfs.
#[must_use]
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How long a phase may take before the run is declared stuck: a minute,
/// plus a second per MiB of state (far above the 5–30 s a GiB takes).
fn phase_bound(state_bytes: u64) -> Duration {
    Duration::from_secs(60 + state_bytes / (1 << 20))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(Error::Config(format!(
                "snapbench: timed out waiting for {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Hash of every user key and value of a replica's state machine.
fn checksum(cluster: &Cluster, id: u64) -> Result<(u64, u64)> {
    let r = cluster.replica(id).ok_or(Error::UnknownNode(id))?;
    let mut h = DefaultHasher::new();
    let mut n = 0;
    for kv in r.state_machine().range::<&[u8], _>(..) {
        let (k, v) = kv?;
        h.write_usize(k.len());
        h.write(&k);
        h.write_usize(v.len());
        h.write(&v);
        n += 1;
    }
    Ok((n, h.finish()))
}

/// Run the measurement.
///
/// # Errors
/// Cluster errors, client errors, or a phase that did not happen within
/// its (generous) time bound.
///
/// # Panics
/// If `value_bytes` or `batch_values` is 0.
#[allow(clippy::too_many_lines)]
pub fn run(opts: &SnapBenchOptions) -> Result<SnapBenchReport> {
    if opts.state_bytes == 0 || opts.value_bytes == 0 || opts.batch_values == 0 {
        return Err(Error::Config(format!(
            "snapbench: state, value and batch sizes must be positive (state {} B, value {} B, batch {})",
            opts.state_bytes, opts.value_bytes, opts.batch_values
        )));
    }
    let io = |e: std::io::Error| Error::Storage(format!("snapbench dir: {e}"));
    if opts.dir.exists() {
        std::fs::remove_dir_all(&opts.dir).map_err(io)?;
    }
    std::fs::create_dir_all(&opts.dir).map_err(io)?;
    let cfg = config(opts);
    let cluster = Cluster::open(&opts.dir, cfg)?;
    let db = cluster.db();
    let leader = cluster.wait_leader(Duration::from_secs(30))?;
    let follower = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .expect("3 replicas");
    cluster.stop(follower)?;
    let mut report = SnapBenchReport::default();

    // Load.
    let noise = Arc::new(noise(4 << 20));
    let keys = opts.state_bytes.div_ceil(opts.value_bytes as u64);
    let pb = bar(
        opts.progress,
        keys * opts.value_bytes as u64,
        "  load  [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    let next = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..opts.load_clients.max(1))
            .map(|_| {
                let (db, noise, pb, next) = (db.clone(), Arc::clone(&noise), pb.clone(), &next);
                s.spawn(move || -> Result<()> {
                    loop {
                        let first = next.fetch_add(opts.batch_values as u64, Ordering::Relaxed);
                        if first >= keys {
                            return Ok(());
                        }
                        let last = (first + opts.batch_values as u64).min(keys);
                        let mut b = WriteBatch::new();
                        for n in first..last {
                            b.insert(
                                format!("bulk-{n:010}").into_bytes(),
                                value_of(&noise, n, opts.value_bytes),
                            );
                        }
                        db.apply_batch(b)?;
                        pb.inc((last - first) * opts.value_bytes as u64);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("loader panicked")?;
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    report.load = started.elapsed();
    report.keys = keys;
    report.state_bytes = keys * opts.value_bytes as u64;

    // The leader must have compacted well past the stopped follower (at
    // least half of the load), or the follower would catch up from the log.
    let loaded_index = cluster
        .leader()
        .and_then(|l| cluster.replica(l))
        .ok_or(Error::UnknownNode(0))?
        .status()?
        .last_index;
    let sp = spinner(opts.progress, "compacting the leader's log");
    wait_for(
        "the leader's log to be compacted past the stopped follower",
        phase_bound(opts.state_bytes),
        || {
            let Some(l) = cluster.leader().and_then(|l| cluster.replica(l)) else {
                return false;
            };
            let Ok(st) = l.status() else { return false };
            tracing::debug!(?st, "snapbench: waiting for compaction");
            st.progress
                .iter()
                .find(|p| p.id == follower)
                .is_some_and(|p| st.first_index > (p.matched + 1).max(loaded_index / 2))
        },
    )?;
    sp.finish_and_clear();

    // RSS sampler.
    let stop = AtomicBool::new(false);
    let samples = parking_lot::Mutex::new(Vec::<(Instant, u64)>::new());
    let live_batches = AtomicU64::new(0);
    let live_us_max = AtomicU64::new(0);
    let live_max_at = parking_lot::Mutex::new(Duration::ZERO);
    let writer_started = Instant::now();
    let result = std::thread::scope(|s| -> Result<()> {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes() {
                    samples.lock().push((Instant::now(), rss));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        // A client keeps writing during the whole catch-up: each batch
        // inserts 4 new 1 KiB keys; every 4th batch also overwrites a
        // random loaded key (so the builder's before-images must keep its
        // old value and the apply thread reads it first: the apply stall).
        let writer = {
            let (db, noise, stop, live_batches, live_us_max, live_max_at) = (
                db.clone(),
                Arc::clone(&noise),
                &stop,
                &live_batches,
                &live_us_max,
                &live_max_at,
            );
            s.spawn(move || -> Result<()> {
                let mut x = 0x2545_F491_4F6C_DD1Du64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut b = WriteBatch::new();
                    for _ in 0..4 {
                        b.insert(
                            format!("live-{n:010}").into_bytes(),
                            value_of(&noise, n, 1024),
                        );
                        n += 1;
                    }
                    if opts.overwrites && n % 16 == 0 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let k = x % keys;
                        b.insert(
                            format!("bulk-{k:010}").into_bytes(),
                            value_of(&noise, k + n, opts.value_bytes),
                        );
                    }
                    let t = Instant::now();
                    db.apply_batch(b)?;
                    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if live_us_max.fetch_max(us, Ordering::Relaxed) < us {
                        *live_max_at.lock() = t.duration_since(writer_started);
                    }
                    live_batches.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            })
        };
        let r = catch_up(&cluster, follower, opts.progress, &mut report);
        stop.store(true, Ordering::Relaxed);
        let w = writer.join().expect("writer panicked");
        r?;
        w
    });
    result?;
    report.live_batches = live_batches.load(Ordering::Relaxed);
    report.live_batch_us_max = live_us_max.load(Ordering::Relaxed);
    report.live_batch_max_at = live_max_at.into_inner();

    // Memory: the sample just before staging began, the peak while it ran.
    let samples = samples.into_inner();
    if let (Some(from), Some(to)) = (
        report.follower.receive_started_at,
        report.follower.receive_finished_at,
    ) {
        report.rss_before_transfer = samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .or(samples.first())
            .map_or(0, |&(_, r)| r);
        let during: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|&(_, r)| r)
            .collect();
        report.rss_samples_transfer = during.len() as u64;
        report.rss_peak_transfer = during.iter().copied().max().unwrap_or(0);
    }
    report.rss_peak_catch_up = samples.iter().map(|&(_, r)| r).max().unwrap_or(0);

    if opts.verify {
        let sp = spinner(opts.progress, "comparing the replicas");
        let leader = cluster.wait_leader(Duration::from_secs(30))?;
        let commit = cluster
            .replica(leader)
            .ok_or(Error::UnknownNode(leader))?
            .status()?
            .commit;
        wait_for(
            "every replica to apply the commit index",
            phase_bound(opts.state_bytes),
            || cluster.status().iter().all(|s| s.applied >= commit),
        )?;
        let sums = cluster
            .running()
            .into_iter()
            .map(|id| checksum(&cluster, id).map(|c| (id, c)))
            .collect::<Result<Vec<_>>>()?;
        sp.finish_and_clear();
        if let Some((id, sum)) = sums.iter().find(|(_, c)| *c != sums[0].1) {
            return Err(Error::Storage(format!(
                "snapbench: replica {id} holds {sum:?}, replica {} holds {:?}",
                sums[0].0, sums[0].1
            )));
        }
        report.verified = true;
    }
    cluster.shutdown();
    Ok(report)
}

/// Restart `follower` and wait until it caught up by snapshot; fill the
/// phase figures.
fn catch_up(
    cluster: &Cluster,
    follower: u64,
    progress: bool,
    report: &mut SnapBenchReport,
) -> Result<()> {
    let leader = cluster.wait_leader(Duration::from_secs(30))?;
    let l = cluster.replica(leader).ok_or(Error::UnknownNode(leader))?;
    let builds_before = l.snapshot_timings().builds;
    let commit = l.status()?.commit;
    let started = Instant::now();
    cluster.restart(follower)?;
    let f = cluster
        .replica(follower)
        .ok_or(Error::UnknownNode(follower))?;
    let sp = spinner(progress, "leader building a snapshot");
    let bound = phase_bound(report.state_bytes);
    wait_for("the leader to build a snapshot", bound, || {
        l.snapshot_timings().builds > builds_before
    })?;
    tracing::info!(phase = "follower receiving the snapshot", "snapbench");
    sp.set_message("follower receiving the snapshot");
    wait_for("the follower to receive the snapshot", bound, || {
        f.snapshot_timings().receives > 0
    })?;
    tracing::info!(phase = "follower installing the snapshot", "snapbench");
    sp.set_message("follower installing the snapshot");
    wait_for("the follower to install the snapshot", bound, || {
        f.snapshot_timings().installs > 0
    })?;
    tracing::info!(
        phase = "follower applying the log after the snapshot",
        "snapbench"
    );
    sp.set_message("follower applying the log after the snapshot");
    wait_for(
        "the follower to apply the restart's commit index",
        bound,
        || f.status().is_ok_and(|s| s.applied >= commit),
    )?;
    report.catch_up = started.elapsed();
    sp.finish_and_clear();
    report.leader = l.snapshot_timings();
    report.follower = f.snapshot_timings();
    let c = l.status()?.counters.snapshot;
    report.builds_started = c.builds_started;
    report.sends_started = c.sends_started;
    report.sends_failed = c.sends_failed;
    Ok(())
}
