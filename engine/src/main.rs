//! The `tandem` command-line tool: `demo`, `status <dir>`, `wal inspect <dir>`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tandem::lock::DirLock;

mod demo;
mod simcmd;

/// Tandem: an embedded, replicated key-value storage engine.
#[derive(Parser, Debug)]
#[command(name = "tandem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the demo: a replicated cluster on a local directory.
    Demo {
        /// Where the replicas keep their data.
        #[arg(long, default_value = "./tandem-data")]
        dir: PathBuf,
        /// Writes before the failover (as many again after it).
        #[arg(long, default_value_t = 2000)]
        writes: u64,
    },
    /// Measure end-to-end writes/s and latency of a 3-replica cluster (fsync on).
    Bench {
        /// Where the replicas keep their data (wiped first).
        #[arg(long, default_value = "./tandem-bench")]
        dir: PathBuf,
        /// Concurrent clients, one run per value.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        clients: Vec<usize>,
        /// Seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Value size in bytes.
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
        /// Key space: 0 writes a fresh key every time (the tree only grows);
        /// N loads N keys first and then overwrites keys drawn at random.
        #[arg(long, default_value_t = 0)]
        keys: u64,
        /// Run the replicas without fsync (`SyncPolicy::Never`): measures
        /// the software path of a write alone.
        #[arg(long)]
        no_fsync: bool,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the results as CSV to this file.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Measure a follower catching up by snapshot: build, transfer and
    /// install throughput, apply stall, process RSS during the transfer.
    Snapbench {
        /// Where the replicas keep their data (wiped first).
        #[arg(long, default_value = "./tandem-snapbench")]
        dir: PathBuf,
        /// MiB of values loaded before the follower restarts.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Size of each loaded value, in KiB.
        #[arg(long, default_value_t = 64)]
        value_kib: usize,
        /// Skip comparing the replicas' data after the catch-up.
        #[arg(long)]
        no_verify: bool,
        /// The client writing during the catch-up only inserts new keys
        /// (by default every 4th batch also overwrites a loaded key).
        #[arg(long)]
        no_overwrites: bool,
    },
    /// Show a replica's on-disk state (a `node-<id>` directory) or a cluster directory's replicas.
    Status {
        /// The replica or cluster directory.
        dir: PathBuf,
    },
    /// Run seeds of the deterministic simulator of the whole engine
    /// (replicas, WAL on a simulated disk, sled, network, faults, clients).
    Sim {
        /// Number of seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Events per seed.
        #[arg(long, default_value_t = tandem::sim::SimOptions::default().events)]
        events: u64,
        /// Only the network misbehaves: no crashes, fsync failures,
        /// partitions, transfers or membership changes.
        #[arg(long)]
        no_faults: bool,
        /// Plant a bug: none, ack-before-fsync (and with
        /// `--features planted-bugs`: count-stale-votes, commit-old-term,
        /// vote-for-stale-log).
        #[arg(long, default_value = "none")]
        planted: String,
        /// Print every seed's statistics instead of a progress bar.
        #[arg(long)]
        verbose: bool,
        /// Stop at the first failing seed.
        #[arg(long)]
        stop_on_failure: bool,
        /// Events shown before a failure.
        #[arg(long, default_value_t = tandem::sim::SimOptions::default().trace_events)]
        trace: usize,
    },
    /// Write-ahead log tools.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

#[derive(Subcommand, Debug)]
enum WalCommand {
    /// List a replica's WAL segments and records.
    Inspect {
        /// The replica directory (holding `wal/`) or the `wal/` directory itself.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // The simulator injects faults on purpose: their error
                // logs are noise unless asked for with RUST_LOG.
                let level = if matches!(cli.command, Command::Sim { .. }) {
                    "off"
                } else {
                    "error"
                };
                tracing_subscriber::EnvFilter::new(level)
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo { dir, writes } => demo::run(&dir, writes),
        Command::Bench {
            dir,
            clients,
            seconds,
            value_bytes,
            keys,
            no_fsync,
            json,
            csv,
        } => demo::bench(
            &dir,
            &demo::BenchLoad {
                clients: &clients,
                seconds,
                value_bytes,
                keys,
                fsync: !no_fsync,
            },
            json.as_deref(),
            csv.as_deref(),
        ),
        Command::Snapbench {
            dir,
            mib,
            value_kib,
            no_verify,
            no_overwrites,
        } => {
            let opts = tandem::snapbench::SnapBenchOptions {
                state_bytes: mib << 20,
                value_bytes: value_kib << 10,
                progress: true,
                verify: !no_verify,
                overwrites: !no_overwrites,
                ..tandem::snapbench::SnapBenchOptions::new(dir)
            };
            tandem::snapbench::run(&opts)
                .map(|r| print!("{}", r.table()))
                .map_err(|e| e.to_string())
        }
        Command::Status { dir } => status(&dir),
        Command::Sim {
            seeds,
            start,
            events,
            no_faults,
            planted,
            verbose,
            stop_on_failure,
            trace,
        } => simcmd::run(&simcmd::Args {
            trace_events: trace,
            start,
            seeds,
            events,
            no_faults,
            planted,
            verbose,
            stop_on_failure,
        }),
        Command::Wal {
            command: WalCommand::Inspect { dir },
        } => wal_inspect(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The replica directories under `dir`: `dir` itself if it is one, else its `node-<id>` children.
fn replica_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if dir.join("LOCK").exists() || dir.join("wal").is_dir() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("node-"))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(format!(
            "{} holds no replica (no LOCK, no wal/, no node-<id>/)",
            dir.display()
        ));
    }
    Ok(out)
}

fn status(dir: &Path) -> Result<(), String> {
    // Bad input fails before anything is printed.
    let replicas = replica_dirs(dir)?;
    println!(
        "{:<28} {:<7} {:>6} {:>8} {:>7} {:>10} {:>10} {:>10}  voters / learners",
        "replica", "state", "term", "vote", "commit", "applied", "log first", "log last"
    );
    for r in replicas {
        let held = DirLock::is_held(&r).map_err(|e| e.to_string())?;
        let wal = if r.join("wal").is_dir() {
            Some(tandem_wal::inspect(r.join("wal")).map_err(|e| e.to_string())?)
        } else {
            None
        };
        // Opening the state machine needs the replica closed (sled locks it).
        let sm = if held || !r.join("sm").is_dir() {
            None
        } else {
            let _lock = DirLock::acquire(&r).map_err(|e| e.to_string())?;
            let sm =
                tandem::sm::StateMachine::open(r.join("sm"), &tandem::sm::SmOptions::default())
                    .map_err(|e| e.to_string())?;
            Some((sm.applied_index(), sm.conf_state(), sm.removed()))
        };
        let dash = || "-".to_string();
        let (term, vote, commit, first, last) = wal.as_ref().map_or_else(
            || (dash(), dash(), dash(), dash(), dash()),
            |w| {
                (
                    w.hard_state.term.to_string(),
                    w.hard_state.vote.to_string(),
                    w.hard_state.commit.to_string(),
                    w.first_index.to_string(),
                    w.last_index.to_string(),
                )
            },
        );
        let (applied, members) = sm.map_or_else(
            || (if held { "in use".to_string() } else { dash() }, dash()),
            |(a, cs, removed)| {
                let mut members = format!("{:?} / {:?}", cs.voters, cs.learners);
                if !removed.is_empty() {
                    members += &format!(" (removed: {removed:?})");
                }
                (a.to_string(), members)
            },
        );
        println!(
            "{:<28} {:<7} {:>6} {:>8} {:>7} {:>10} {:>10} {:>10}  {}",
            r.display().to_string(),
            if held { "open" } else { "closed" },
            term,
            vote,
            commit,
            applied,
            first,
            last,
            members
        );
    }
    Ok(())
}

fn wal_inspect(dir: &Path) -> Result<(), String> {
    let wal = if dir.ends_with("wal") {
        dir.to_path_buf()
    } else {
        dir.join("wal")
    };
    if !wal.is_dir() {
        return Err(format!("{} has no wal/ directory", dir.display()));
    }
    let report = tandem_wal::inspect(&wal).map_err(|e| e.to_string())?;
    println!(
        "{}: entries {}..={}, compaction point {:?}, hard state term {} vote {} commit {}",
        wal.display(),
        report.first_index,
        report.last_index,
        report.snapshot,
        report.hard_state.term,
        report.hard_state.vote,
        report.hard_state.commit
    );
    println!(
        "{:>18} {:>12} {:>12} {:>9} {:>9} {:>21}  status",
        "segment", "file bytes", "used bytes", "records", "entries", "index range"
    );
    for s in &report.segments {
        let range = match (s.first_index, s.last_index) {
            (Some(a), Some(b)) => format!("{a}..={b}"),
            _ => "-".into(),
        };
        println!(
            "{:>18x} {:>12} {:>12} {:>9} {:>9} {:>21}  {:?}",
            s.sequence, s.file_bytes, s.used_bytes, s.records, s.entries, range, s.status
        );
    }
    for s in &report.spares {
        println!(
            "{:>18x} {:>12} {:>12} {:>9} {:>9} {:>21}  Spare (recycled, not part of the log)",
            s.sequence, s.file_bytes, "-", "-", "-", "-"
        );
    }
    Ok(())
}
