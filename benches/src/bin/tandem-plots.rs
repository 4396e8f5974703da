//! Draws the plots of `docs/BENCHMARKS.md` from the benchmark results.
//!
//! ```text
//! cargo run -p tandem-benches --bin tandem-plots -- benches/results docs/img
//! ```
//!
//! Reads `wal.json` (from `cargo bench --bench wal`) and `e2e.json` (from
//! `cargo bench --bench e2e`) when present and writes one SVG per figure.

use std::path::{Path, PathBuf};

use tandem_benches::compare::Comparison;
use tandem_benches::plot::{Chart, Scale, Series};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        eprintln!("usage: tandem-plots <results dir> <output dir>");
        std::process::exit(2);
    }
    let (results, out) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    std::fs::create_dir_all(&out).expect("create output dir");
    let mut wrote = 0;
    if let Some(v) = read_json(&results.join("wal.json")) {
        let comparisons: Vec<Comparison> =
            serde_json::from_value(v["comparisons"].clone()).expect("wal.json comparisons");
        for (appenders, batch) in [(1, 1), (8, 1), (1, 64), (8, 64)] {
            let chart = wal_chart(&comparisons, appenders, batch);
            if !chart.series.is_empty() {
                let name = format!("wal_append_appenders{appenders}_batch{batch}.svg");
                write(&out.join(name), &chart);
                wrote += 1;
            }
        }
    }
    if let Some(v) = read_json(&results.join("e2e.json")) {
        let runs = v["runs"].as_array().expect("e2e.json runs").clone();
        let get = |r: &serde_json::Value, k: &str| r[k].as_f64().expect(k);
        let clients: Vec<f64> = runs.iter().map(|r| get(r, "clients")).collect();
        let line = |name: &str, key: &str| Series {
            name: name.into(),
            points: clients
                .iter()
                .zip(&runs)
                .map(|(&c, r)| (c, get(r, key)))
                .collect(),
        };
        write(
            &out.join("e2e_throughput.svg"),
            &Chart {
                title: "End to end: writes/s vs clients (3 replicas, fsync)".into(),
                x_label: "concurrent clients".into(),
                y_label: "acknowledged writes per second".into(),
                x_scale: Scale::Log10,
                y_scale: Scale::Linear,
                series: vec![line("tandem", "writes_per_s")],
            },
        );
        write(
            &out.join("e2e_latency.svg"),
            &Chart {
                title: "End to end: write latency percentiles vs clients".into(),
                x_label: "concurrent clients".into(),
                y_label: "latency (µs, log scale)".into(),
                x_scale: Scale::Log10,
                y_scale: Scale::Log10,
                series: vec![
                    line("p50", "latency_us_p50"),
                    line("p99", "latency_us_p99"),
                    line("p99.9", "latency_us_p999"),
                    line("raw fdatasync p50", "raw_fdatasync_us_p50"),
                ],
            },
        );
        wrote += 2;
    }
    println!("wrote {wrote} plots to {}", out.display());
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).expect("valid results JSON"))
}

fn write(path: &Path, chart: &Chart) {
    std::fs::write(path, chart.to_svg()).expect("write svg");
}

/// Entries/s of every contender against entry size, for one appender count
/// and batch length.
fn wal_chart(comparisons: &[Comparison], appenders: usize, batch: usize) -> Chart {
    let suffix = format!("/batch{batch}/appenders{appenders}");
    let mut series: Vec<Series> = Vec::new();
    for c in comparisons.iter().filter(|c| c.scenario.ends_with(&suffix)) {
        let size = c
            .scenario
            .split('/')
            .nth(1)
            .and_then(parse_size)
            .expect("scenario names carry the entry size");
        for r in &c.contenders {
            match series.iter_mut().find(|s| s.name == r.name) {
                Some(s) => s.points.push((size, r.rate_median)),
                None => series.push(Series {
                    name: r.name.clone(),
                    points: vec![(size, r.rate_median)],
                }),
            }
        }
    }
    Chart {
        title: format!("WAL append, {appenders} appender(s), batch {batch}, fdatasync on"),
        x_label: "entry size (bytes)".into(),
        y_label: "entries per second (log scale)".into(),
        x_scale: Scale::Log10,
        y_scale: Scale::Log10,
        series,
    }
}

/// "64B" -> 64, "16KiB" -> 16384.
fn parse_size(s: &str) -> Option<f64> {
    if let Some(k) = s.strip_suffix("KiB") {
        return k.parse::<f64>().ok().map(|v| v * 1024.0);
    }
    s.strip_suffix('B')?.parse().ok()
}
