//! WAL benchmarks: append latency and throughput across entry sizes, batch
//! sizes and concurrent appenders, against three baselines measured in the
//! same run; then a recovery scan and the index's bytes per entry.
//!
//! Per scenario (entry size × batch length × appenders, sync on):
//! 1. a criterion group with the four contenders side by side
//!    (`tandem`, `raw_fdatasync`, `raft_engine`, `sled`);
//! 2. an interleaved pass over the same stores: rounds of short slices,
//!    rotating who goes first, ratios taken within each round — the disk's
//!    speed drifts too much for ratios between runs minutes apart.
//!
//! At the end a summary table, the targets' verdicts, and
//! `benches/results/wal.json` + `.csv` (only under `cargo bench`, and only
//! for a whole run: not with `TANDEM_BENCH_FILTER` or `TANDEM_BENCH_ONLY`).
//!
//! Knobs (environment): `TANDEM_BENCH_ROUNDS` (3), `TANDEM_BENCH_SLICE_MS`
//! (500), `TANDEM_BENCH_FILTER` (substring of scenario names for the
//! interleaved pass), `TANDEM_BENCH_SKIP_CRITERION=1`,
//! `TANDEM_BENCH_RECOVERY_MIB` (1024), `TANDEM_BENCH_DIR` (where the logs
//! live; the default temp dir is on the root disk here),
//! `TANDEM_BENCH_ONLY` (comma-separated contender names to run; a target
//! whose baseline is left out shows as a miss without a ratio),
//! `TANDEM_BENCH_WARMUP_MS` (0: each contender runs this long, unmeasured,
//! before the interleaved pass), `TANDEM_BENCH_WAL_AB_RECYCLE=1` (adds `tandem_norecycle`: the same WAL
//! with `recycle_segments_max: 0`, to measure what recycling does).

// criterion's macros and this binary's helpers need no public docs.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tandem_benches::compare::{self, Comparison, Contender, Metric, Target, Verdict};
use tandem_benches::logstore::{LogStore, TailCompaction};
use tandem_benches::raft_engine_log::RaftEngineLog;
use tandem_benches::raw::{Prealloc, RawSyncLog};
use tandem_benches::sled_log::SledLog;
use tandem_benches::wal_log::{self, WalLog};
use tandem_benches::workload::{AppendDriver, EntryBatch};

const ENTRY_SIZES: [usize; 3] = [64, 1024, 16 * 1024];
const BATCH_LENS: [usize; 2] = [1, 64];
const APPENDERS: [usize; 2] = [1, 8];
/// Size of the raw baseline's preallocated file (one segment's worth).
const RAW_FILE_BYTES: u64 = 64 << 20;
/// Size of the fallocated raw file (reserving is free; a new one replaces
/// it when full).
const RAW_FALLOCATE_BYTES: u64 = 1 << 30;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    entry_bytes: usize,
    batch_len: usize,
    appenders: usize,
}

impl Scenario {
    fn name(&self) -> String {
        format!(
            "append/{}/batch{}/appenders{}",
            size_label(self.entry_bytes),
            self.batch_len,
            self.appenders
        )
    }
}

/// Fresh instances of every contender, each in its own directory under
/// `root`. Single-appender scenarios add `raw_fallocate`: the raw loop into
/// an `fallocate`d (not zero-filled) file, which shows what unwritten-extent
/// conversion costs each `fdatasync`.
fn open_stores(root: &Path, appenders: usize) -> (Vec<Arc<WalLog>>, Vec<Arc<dyn LogStore>>) {
    let sub = |name: &str| {
        let p = root.join(name);
        std::fs::create_dir_all(&p).expect("store dir");
        p
    };
    // The two raft logs are compacted as they grow, keeping a bounded tail,
    // as in production; the freed files are recycled (Tandem's spare pool,
    // raft-engine's purge + recycling). The raw baseline loops inside one
    // file; sled is not compacted (its tree would only get the deletes).
    let wal = Arc::new(
        WalLog::open(&sub("tandem"))
            .expect("open tandem wal")
            .with_tail_compaction(TailCompaction::bench()),
    );
    let mut wals = vec![wal.clone()];
    let mut stores: Vec<Arc<dyn LogStore>> = vec![
        wal,
        Arc::new(RawSyncLog::create(&sub("raw"), RAW_FILE_BYTES).expect("raw file")),
        Arc::new(
            RaftEngineLog::open_with_tail_compaction(&sub("raft_engine"), TailCompaction::bench())
                .expect("open raft-engine"),
        ),
        Arc::new(SledLog::open(&sub("sled")).expect("open sled")),
    ];
    if std::env::var_os("TANDEM_BENCH_WAL_AB_RECYCLE").is_some() {
        // A/B of segment recycling: the same WAL and compaction with the
        // spare pool off (fresh, prefilled segments as before recycling).
        let opts = tandem_wal::WalOptions {
            recycle_segments_max: 0,
            ..tandem_wal::WalOptions::default()
        };
        let off = Arc::new(
            WalLog::open_with(&sub("tandem_norecycle"), opts)
                .expect("open tandem wal")
                .with_tail_compaction(TailCompaction::bench())
                .named("tandem_norecycle"),
        );
        wals.push(off.clone());
        stores.push(off);
    }
    if appenders == 1 {
        stores.push(Arc::new(
            RawSyncLog::create_with(
                &sub("raw_fallocate"),
                RAW_FALLOCATE_BYTES,
                Prealloc::Fallocate,
            )
            .expect("raw fallocated file"),
        ));
    }
    (wals, stores)
}

fn targets_for(s: &Scenario) -> Vec<Target> {
    let name = s.name();
    if s.appenders == 1 {
        vec![Target {
            scenario: name,
            candidate: "tandem".into(),
            baseline: "raw_fdatasync".into(),
            metric: Metric::Throughput,
            bound: 0.9,
        }]
    } else {
        vec![Target {
            scenario: name,
            candidate: "tandem".into(),
            baseline: "raft_engine".into(),
            metric: Metric::Throughput,
            bound: 1.5,
        }]
    }
}

struct Settings {
    full: bool,
    rounds: usize,
    slice: Duration,
    filter: Option<String>,
    skip_criterion: bool,
    warmup: Duration,
    /// `sync` the file system before every measured slice.
    settle: bool,
    only: Option<Vec<String>>,
    recovery_bytes: u64,
    root: PathBuf,
}

fn settings() -> Settings {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then everything runs once, briefly, as a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let root = std::env::var_os("TANDEM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    Settings {
        full,
        rounds: if full {
            env_u64("TANDEM_BENCH_ROUNDS", 3) as usize
        } else {
            1
        },
        slice: Duration::from_millis(if full {
            env_u64("TANDEM_BENCH_SLICE_MS", 500)
        } else {
            5
        }),
        filter: std::env::var("TANDEM_BENCH_FILTER").ok(),
        skip_criterion: std::env::var_os("TANDEM_BENCH_SKIP_CRITERION").is_some(),
        warmup: Duration::from_millis(env_u64("TANDEM_BENCH_WARMUP_MS", 0)),
        settle: env_u64("TANDEM_BENCH_SETTLE", 1) != 0,
        only: std::env::var("TANDEM_BENCH_ONLY")
            .ok()
            .map(|v| v.split(',').map(str::to_string).collect()),
        recovery_bytes: if full {
            env_u64("TANDEM_BENCH_RECOVERY_MIB", 1024) << 20
        } else {
            4 << 20
        },
        root,
    }
}

/// What the WAL did for the appends of one scenario: how many bytes it
/// wrote per payload byte, and how many appends shared a write and a sync.
fn wal_amplification(s: &Scenario, wal: &WalLog) -> serde_json::Value {
    let stats = wal.wal().stats();
    let entries = stats.last_index;
    let payload = entries * s.entry_bytes as u64;
    let appends = stats.submits.max(1);
    let v = serde_json::json!({
        "scenario": s.name(),
        "contender": wal.name(),
        "entries": entries,
        "bytes_written_per_payload_byte": stats.bytes_written as f64 / payload.max(1) as f64,
        "prefill_bytes_per_payload_byte": stats.prefill_bytes as f64 / payload.max(1) as f64,
        "appends_per_write_group": appends as f64 / stats.write_groups.max(1) as f64,
        "fsyncs_per_write_group": stats.fsyncs as f64 / stats.write_groups.max(1) as f64,
        "segments": stats.segments,
        "segments_recycled": stats.segments_recycled,
    });
    eprintln!("{} wal stats {}: {v}", wal.name(), s.name());
    v
}

fn run_scenario(c: &mut Criterion, st: &Settings, s: Scenario) -> (Comparison, serde_json::Value) {
    let dir = tempfile::tempdir_in(&st.root).expect("bench dir");
    let (wals, mut stores) = open_stores(dir.path(), s.appenders);
    if let Some(only) = &st.only {
        stores.retain(|store| only.iter().any(|n| n == store.name()));
    }
    let mut drivers: Vec<AppendDriver> = stores
        .iter()
        .map(|store| {
            AppendDriver::new(store.clone(), s.appenders, s.entry_bytes, s.batch_len)
                .expect("driver")
        })
        .collect();

    if !st.skip_criterion {
        let mut group = c.benchmark_group(s.name());
        group.throughput(Throughput::Elements(s.batch_len as u64));
        for d in &mut drivers {
            let name = d.store().name().to_string();
            group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter_custom(|iters| d.run_batches(iters).expect("append"));
            });
        }
        group.finish();
    }

    // Optional warm-up, not measured: a log that has run for a while has
    // rotated, compacted and (Tandem, raft-engine) refilled its pool of
    // files to recycle; a fresh one writes new files first.
    if !st.warmup.is_zero() {
        for d in &mut drivers {
            d.run_for(st.warmup).expect("warm-up");
        }
    }
    let mut contenders: Vec<Contender<'_>> = drivers
        .iter_mut()
        .map(|d| {
            let name = d.store().name().to_string();
            Contender::new(name, move |slice| d.run_for(slice))
        })
        .collect();
    // Each slice starts from a quiet disk: what a contender left unsynced
    // (sled does not fdatasync) is written back before the next one runs,
    // outside both timings. TANDEM_BENCH_SETTLE=0 turns this off.
    let mut settle = || {
        if st.settle {
            nix::unistd::sync();
        }
    };
    let cmp =
        compare::interleave_settled(&s.name(), st.rounds, st.slice, &mut contenders, &mut settle)
            .expect("interleave");
    drop(contenders);
    // The first is `tandem`; the others (A/B variants) are printed only.
    let mut amps = wals.iter().map(|w| wal_amplification(&s, w));
    let amp = amps.next().expect("tandem is first");
    amps.for_each(drop);
    (cmp, amp)
}

/// Recovery scan of a WAL holding `bytes` of 256-byte entries, warm and cold
/// page cache, and raft-engine's recovery of the same volume.
fn recovery(st: &Settings) -> serde_json::Value {
    const ENTRY_BYTES: usize = 256;
    let dir = tempfile::tempdir_in(&st.root).expect("bench dir");
    let t = Instant::now();
    let entries = wal_log::fill_wal(dir.path(), st.recovery_bytes, ENTRY_BYTES).expect("fill");
    eprintln!(
        "recovery: wrote {entries} entries of {ENTRY_BYTES} B ({} MiB) in {:.1?}",
        st.recovery_bytes >> 20,
        t.elapsed()
    );
    let runs = if st.full { 3 } else { 1 };
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    for _ in 0..runs {
        warm.push(wal_log::time_recovery(dir.path()).expect("recover"));
        wal_log::drop_page_cache(dir.path()).expect("fadvise");
        cold.push(wal_log::time_recovery(dir.path()).expect("recover"));
    }
    for (label, scans) in [("warm", &warm), ("cold", &cold)] {
        for s in scans.iter() {
            assert_eq!(s.entries, entries, "recovery lost entries");
            eprintln!(
                "recovery {label}: {:.0} MB/s ({} MB in {:.2?}), index {:.2} B/entry",
                s.mb_per_s(),
                s.bytes_scanned / 1_000_000,
                s.elapsed,
                s.index_bytes_per_entry()
            );
        }
    }
    drop(dir);

    // raft-engine with the same volume, written through its durable path
    // in ~1 MiB batches.
    let re_dir = tempfile::tempdir_in(&st.root).expect("bench dir");
    let batch_len = (1 << 20) / ENTRY_BYTES;
    {
        let log = RaftEngineLog::open(re_dir.path()).expect("open raft-engine");
        let mut gen = EntryBatch::new(ENTRY_BYTES, batch_len);
        let mut written = 0u64;
        while written < st.recovery_bytes {
            log.append_durable(1, gen.next_batch()).expect("append");
            written += (batch_len * ENTRY_BYTES) as u64;
        }
    }
    let re_bytes: u64 = std::fs::read_dir(re_dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    let mut re = Vec::new();
    for cold_cache in [false, true] {
        if cold_cache {
            wal_log::drop_page_cache(re_dir.path()).expect("fadvise");
        }
        let t = Instant::now();
        let log = RaftEngineLog::open(re_dir.path()).expect("recover raft-engine");
        let el = t.elapsed();
        assert!(log.last_index(1).is_some());
        let mbps = re_bytes as f64 / 1e6 / el.as_secs_f64();
        eprintln!(
            "raft-engine recovery {}: {mbps:.0} MB/s ({} MB in {el:.2?})",
            if cold_cache { "cold" } else { "warm" },
            re_bytes / 1_000_000
        );
        re.push(serde_json::json!({"cold": cold_cache, "mb_per_s": mbps, "bytes": re_bytes}));
    }

    let scan_json = |s: &wal_log::RecoveryScan| {
        serde_json::json!({
            "mb_per_s": s.mb_per_s(),
            "bytes_scanned": s.bytes_scanned,
            "elapsed_ms": s.elapsed.as_secs_f64() * 1e3,
            "index_bytes_per_entry": s.index_bytes_per_entry(),
        })
    };
    serde_json::json!({
        "entry_bytes": ENTRY_BYTES,
        "entries": entries,
        "tandem_warm": warm.iter().map(scan_json).collect::<Vec<_>>(),
        "tandem_cold": cold.iter().map(scan_json).collect::<Vec<_>>(),
        "raft_engine": re,
    })
}

fn main() {
    let st = settings();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();

    let mut comparisons = Vec::new();
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut wal_stats = Vec::new();
    for &entry_bytes in &ENTRY_SIZES {
        for &batch_len in &BATCH_LENS {
            for &appenders in &APPENDERS {
                let s = Scenario {
                    entry_bytes,
                    batch_len,
                    appenders,
                };
                if st.filter.as_ref().is_some_and(|f| !s.name().contains(f)) {
                    continue;
                }
                let (cmp, amp) = run_scenario(&mut c, &st, s);
                wal_stats.push(amp);
                eprint!("{}", compare::table(std::slice::from_ref(&cmp), "tandem"));
                verdicts.extend(targets_for(&s).iter().map(|t| t.check(&cmp)));
                comparisons.push(cmp);
            }
        }
    }

    let recovery = if st.filter.is_none() || st.filter.as_deref() == Some("recovery") {
        Some(recovery(&st))
    } else {
        None
    };

    println!(
        "\n== WAL summary (ref/this = tandem / contender throughput, median [min-max] over rounds)"
    );
    print!("{}", compare::table(&comparisons, "tandem"));
    println!("\n== targets");
    for v in &verdicts {
        let r = v.ratio.map_or("n/a".to_string(), |r| {
            format!("{:.2} [{:.2}-{:.2}]", r.median, r.min, r.max)
        });
        println!(
            "{:<5} {:<36} {} / {} = {r} (target {} {:.2})",
            if v.met { "MET" } else { "MISS" },
            v.target.scenario,
            v.target.candidate,
            v.target.baseline,
            if v.target.metric == Metric::Throughput {
                ">="
            } else {
                "<="
            },
            v.target.bound
        );
    }

    // A partial run (a filter, or some contenders only) must not replace
    // the results of a whole one.
    let partial = st.filter.is_some() || st.only.is_some();
    if st.full && partial {
        println!("results: not written (a partial run: TANDEM_BENCH_FILTER or TANDEM_BENCH_ONLY)");
    }
    if st.full && !partial {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/wal.json");
        compare::write_results(&out, &comparisons, &verdicts).expect("write results");
        if let Some(r) = recovery {
            let p = out.with_file_name("wal_recovery.json");
            std::fs::write(&p, serde_json::to_vec_pretty(&r).expect("json")).expect("write");
        }
        let p = out.with_file_name("wal_stats.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&wal_stats).expect("json")).expect("write");
        println!("results: {}", out.display());
    }
    c.final_summary();
}
