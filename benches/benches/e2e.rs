//! End-to-end benchmark: an in-process 3-replica cluster (`tandem::Cluster`,
//! WAL fsync on every replica, all replicas on the same disk), closed-loop
//! clients, throughput and write/read latency percentiles per client count.
//!
//! Before every client level the raw `write` + `fdatasync` latency of the
//! same disk is measured (interleaved), so the single-client latency target
//! is a ratio of the same minute.
//!
//! Knobs (environment): `TANDEM_E2E_CLIENTS` (`1,4,16,64`),
//! `TANDEM_E2E_SECS` (3 per level), `TANDEM_E2E_VALUE_BYTES` (256),
//! `TANDEM_E2E_READ_PCT` (0), `TANDEM_E2E_READS`
//! (`linearizable` | `lease` | `stale`), `TANDEM_E2E_REPLICAS` (3),
//! `TANDEM_BENCH_DIR`, `TANDEM_E2E_NAME` (`e2e`: the results file name).
//! Results: `benches/results/<name>.json` + `.csv`.

#![allow(missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tandem::{Cluster, ClusterConfig, ReadConsistency};
use tandem_benches::raw::RawSyncFile;
use tandem_benches::stats::Percentiles;

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_u64(name: &str, default: u64) -> u64 {
    env_str(name, &default.to_string())
        .parse()
        .unwrap_or(default)
}

/// p50 of `write(256 B)` + `fdatasync` into a preallocated file, in µs.
fn raw_fdatasync_p50_us(dir: &Path, run_for: Duration) -> f64 {
    let mut f = RawSyncFile::create(dir, 16 << 20).expect("raw file");
    let buf = vec![0x5au8; 256];
    let mut lat = Vec::new();
    let end = Instant::now() + run_for;
    while Instant::now() < end {
        let t = Instant::now();
        f.write_sync(&buf).expect("raw write");
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Percentiles::from_nanos(&mut lat).map_or(f64::NAN, |p| p.latency_us_p50)
}

struct ClientResult {
    writes: Vec<u64>,
    reads: Vec<u64>,
    errors: u64,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let clients: Vec<usize> = env_str("TANDEM_E2E_CLIENTS", if full { "1,4,16,64" } else { "1" })
        .split(',')
        .map(|s| s.trim().parse().expect("TANDEM_E2E_CLIENTS: numbers"))
        .collect();
    let secs = Duration::from_millis(if full {
        env_u64("TANDEM_E2E_SECS", 3) * 1000
    } else {
        200
    });
    let value_bytes = env_u64("TANDEM_E2E_VALUE_BYTES", 256) as usize;
    let read_pct = env_u64("TANDEM_E2E_READ_PCT", 0).min(100);
    let reads = match env_str("TANDEM_E2E_READS", "linearizable").as_str() {
        "lease" => ReadConsistency::Lease,
        "stale" => ReadConsistency::Stale,
        _ => ReadConsistency::Linearizable,
    };
    let replicas = env_u64("TANDEM_E2E_REPLICAS", 3);
    let root = std::env::var_os("TANDEM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&root).expect("bench dir");

    let cluster = Cluster::open(
        dir.path().join("cluster"),
        ClusterConfig::with_replicas(replicas),
    )
    .expect("open cluster");
    let db = cluster.db();
    cluster
        .wait_leader(Duration::from_secs(30))
        .expect("leader elected");
    println!(
        "e2e: {replicas} replicas, fsync on, value {value_bytes} B, {read_pct}% reads ({reads:?}), {:?} per level",
        secs
    );
    println!(
        "{:>7} {:>11} {:>10} {:>10} {:>10} {:>11} {:>10} {:>8}",
        "clients", "writes/s", "p50 us", "p99 us", "p999 us", "reads/s", "raw p50", "p50/raw"
    );
    let mut runs = Vec::new();
    for (level, &n) in clients.iter().enumerate() {
        let raw_dir = tempfile::tempdir_in(&root).expect("raw dir");
        let raw_p50 = raw_fdatasync_p50_us(raw_dir.path(), Duration::from_millis(500));
        drop(raw_dir);
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let results: Vec<ClientResult> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|c| {
                    let (db, stop) = (db.clone(), &stop);
                    s.spawn(move || {
                        let value = vec![b'v'; value_bytes];
                        let mut r = ClientResult {
                            writes: Vec::new(),
                            reads: Vec::new(),
                            errors: 0,
                        };
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let is_read = i > 0 && (i * 37 + c as u64) % 100 < read_pct;
                            let t = Instant::now();
                            let ok = if is_read {
                                let k = format!("b/{level}/{c}/{}", i / 2);
                                db.get_with(k.as_bytes(), reads).is_ok()
                            } else {
                                let k = format!("b/{level}/{c}/{i}");
                                db.insert(k.as_bytes(), &value).is_ok()
                            };
                            let ns = t.elapsed().as_nanos() as u64;
                            match (ok, is_read) {
                                (false, _) => r.errors += 1,
                                (true, true) => r.reads.push(ns),
                                (true, false) => r.writes.push(ns),
                            }
                            i += 1;
                        }
                        r
                    })
                })
                .collect();
            std::thread::sleep(secs);
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        let elapsed = start.elapsed().as_secs_f64();
        let mut w: Vec<u64> = results
            .iter()
            .flat_map(|r| r.writes.iter().copied())
            .collect();
        let mut rd: Vec<u64> = results
            .iter()
            .flat_map(|r| r.reads.iter().copied())
            .collect();
        let errors: u64 = results.iter().map(|r| r.errors).sum();
        let wp = Percentiles::from_nanos(&mut w);
        let rp = Percentiles::from_nanos(&mut rd);
        let writes_per_s = w.len() as f64 / elapsed;
        let reads_per_s = rd.len() as f64 / elapsed;
        let p = wp.unwrap_or(Percentiles {
            count: 0,
            latency_us_p50: f64::NAN,
            latency_us_p99: f64::NAN,
            latency_us_p999: f64::NAN,
            latency_us_max: f64::NAN,
            latency_us_mean: f64::NAN,
        });
        println!(
            "{n:>7} {writes_per_s:>11.0} {:>10.0} {:>10.0} {:>10.0} {reads_per_s:>11.0} {raw_p50:>10.0} {:>8.2}{}",
            p.latency_us_p50,
            p.latency_us_p99,
            p.latency_us_p999,
            p.latency_us_p50 / raw_p50,
            if errors > 0 { format!("  ({errors} errors)") } else { String::new() }
        );
        runs.push(serde_json::json!({
            "clients": n,
            "writes_per_s": writes_per_s,
            "reads_per_s": reads_per_s,
            "errors": errors,
            "latency_us_p50": p.latency_us_p50,
            "latency_us_p99": p.latency_us_p99,
            "latency_us_p999": p.latency_us_p999,
            "read_latency": rp,
            "raw_fdatasync_us_p50": raw_p50,
            "p50_over_raw": p.latency_us_p50 / raw_p50,
        }));
    }
    cluster.shutdown();

    if full {
        let name = env_str("TANDEM_E2E_NAME", "e2e");
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("results/{name}.json"));
        std::fs::create_dir_all(out.parent().expect("parent")).expect("results dir");
        let doc = serde_json::json!({
            "replicas": replicas,
            "value_bytes": value_bytes,
            "read_pct": read_pct,
            "read_consistency": format!("{reads:?}"),
            "secs_per_level": secs.as_secs_f64(),
            "runs": runs,
        });
        std::fs::write(&out, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
        let mut csv = std::fs::File::create(out.with_extension("csv")).expect("csv");
        writeln!(csv, "clients,writes_per_s,latency_us_p50,latency_us_p99,latency_us_p999,raw_fdatasync_us_p50").expect("csv");
        for r in &runs {
            writeln!(
                csv,
                "{},{:.0},{:.1},{:.1},{:.1},{:.1}",
                r["clients"],
                r["writes_per_s"].as_f64().unwrap_or(f64::NAN),
                r["latency_us_p50"].as_f64().unwrap_or(f64::NAN),
                r["latency_us_p99"].as_f64().unwrap_or(f64::NAN),
                r["latency_us_p999"].as_f64().unwrap_or(f64::NAN),
                r["raw_fdatasync_us_p50"].as_f64().unwrap_or(f64::NAN),
            )
            .expect("csv");
        }
        println!("results: {}", out.display());
    }
}
