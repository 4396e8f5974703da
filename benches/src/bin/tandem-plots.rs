//! Draws the plots of `docs/BENCHMARKS.md` from the benchmark results.
//!
//! ```text
//! cargo run -p tandem-benches --bin tandem-plots -- benches/results docs/img
//! ```
//!
//! Reads `wal.json` (from `cargo bench --bench wal`) and `e2e.json` (from
//! `cargo bench --bench e2e`) when present and writes one SVG per figure,
//! plus `tables.md`: the same numbers as Markdown tables for the docs.

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
    let mut md = String::new();
    if let Some(v) = read_json(&results.join("wal.json")) {
        let comparisons: Vec<Comparison> =
            serde_json::from_value(v["comparisons"].clone()).expect("wal.json comparisons");
        md.push_str(&wal_table(&comparisons));
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
        md.push_str(&e2e_table(&runs));
    }
    std::fs::write(out.join("tables.md"), md).expect("write tables.md");
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

/// Markdown: per scenario, entries/s of each contender and Tandem's ratio to
/// it (median over rounds, range in brackets).
fn wal_table(comparisons: &[Comparison]) -> String {
    let mut names: Vec<String> = Vec::new();
    for c in comparisons {
        for r in &c.contenders {
            if !names.contains(&r.name) {
                names.push(r.name.clone());
            }
        }
    }
    let mut s = String::from("| scenario |");
    for n in &names {
        s.push_str(&format!(" {n} entries/s |"));
    }
    for n in names.iter().filter(|n| *n != "tandem") {
        s.push_str(&format!(" tandem / {n} |"));
    }
    s.push_str("\n|---|");
    for _ in 0..(2 * names.len() - 1) {
        s.push_str("---:|");
    }
    s.push('\n');
    for c in comparisons {
        s.push_str(&format!("| {} |", c.scenario));
        for n in &names {
            match c.get(n) {
                Some(r) => s.push_str(&format!(" {:.0} |", r.rate_median)),
                None => s.push_str(" – |"),
            }
        }
        for n in names.iter().filter(|n| *n != "tandem") {
            match c.rate_ratio("tandem", n) {
                Some(r) => s.push_str(&format!(" {:.2} [{:.2}–{:.2}] |", r.median, r.min, r.max)),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

fn e2e_table(runs: &[serde_json::Value]) -> String {
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let mut s = String::from(
        "| clients | writes/s | p50 µs | p99 µs | p99.9 µs | raw fdatasync p50 µs | p50 / raw |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |\n",
            r["clients"],
            f(r, "writes_per_s"),
            f(r, "latency_us_p50"),
            f(r, "latency_us_p99"),
            f(r, "latency_us_p999"),
            f(r, "raw_fdatasync_us_p50"),
            f(r, "p50_over_raw"),
        ));
    }
    s.push('\n');
    s
}
