//! `tandem sim`: run many seeds of the deterministic simulator.

use std::io::IsTerminal;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tandem::sim::{replay_command, run_seed, PlantedBug, SimFailure, SimOptions};

/// What to run.
pub struct Args {
    pub start: u64,
    pub seeds: u64,
    pub events: u64,
    pub no_faults: bool,
    pub planted: String,
    pub verbose: bool,
    pub stop_on_failure: bool,
    pub trace_events: usize,
}

fn planted(name: &str) -> Result<PlantedBug, String> {
    match name {
        "none" => Ok(PlantedBug::None),
        "ack-before-fsync" => Ok(PlantedBug::AckBeforeFsync),
        #[cfg(feature = "planted-bugs")]
        "count-stale-votes" => Ok(PlantedBug::Raft(tandem::raft::PlantedBug::CountStaleVotes)),
        #[cfg(feature = "planted-bugs")]
        "commit-old-term" => Ok(PlantedBug::Raft(
            tandem::raft::PlantedBug::CommitOldTermByCounting,
        )),
        #[cfg(feature = "planted-bugs")]
        "vote-for-stale-log" => Ok(PlantedBug::Raft(tandem::raft::PlantedBug::VoteForStaleLog)),
        other => Err(format!(
            "unknown planted bug {other:?} (none, ack-before-fsync; the raft ones \
             need --features planted-bugs: count-stale-votes, commit-old-term, vote-for-stale-log)"
        )),
    }
}

/// Run the seeds; print failures with their replay commands and a summary.
pub fn run(args: &Args) -> Result<(), String> {
    let base = SimOptions {
        events: args.events,
        faults: !args.no_faults,
        planted: planted(&args.planted)?,
        trace_events: args.trace_events,
        ..SimOptions::default()
    };
    // Without a terminal (a long run in the background), a line every 30 s.
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let bar = if args.verbose || !tty {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.seeds)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds ({per_sec}, eta {eta}) {msg}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut failures: Vec<SimFailure> = Vec::new();
    let (mut committed, mut acknowledged, mut crashes, mut events) = (0u64, 0u64, 0u64, 0u64);
    let (mut conf_changes, mut joint_configs, mut joint_left) = (0u64, 0u64, 0u64);
    let mut passed = 0u64;
    for seed in args.start..args.start + args.seeds {
        let opts = SimOptions {
            seed,
            ..base.clone()
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| run_seed(&opts))).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(SimFailure {
                seed,
                time_us: 0,
                violation: format!("panic: {msg}"),
                trace: Vec::new(),
                replay: replay_command(&opts),
            })
        });
        match outcome {
            Ok(stats) => {
                passed += 1;
                committed += stats.committed;
                acknowledged += stats.acknowledged;
                crashes += stats.crashes;
                events += stats.events;
                conf_changes += stats.conf_changes;
                joint_configs += stats.joint_configs;
                joint_left += stats.joint_left;
                if args.verbose {
                    println!("seed {seed}: ok {stats:?}");
                }
            }
            Err(f) => {
                bar.suspend(|| eprintln!("{f}"));
                failures.push(f);
                bar.set_message(format!("{} FAILED", failures.len()));
                if args.stop_on_failure {
                    bar.inc(1);
                    break;
                }
            }
        }
        bar.inc(1);
        if !tty && !args.verbose && last_line.elapsed().as_secs() >= 30 {
            last_line = Instant::now();
            let done = seed + 1 - args.start;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "progress: {done}/{} seeds, {} failed, {:.0} s, {:.1} seeds/s",
                args.seeds,
                failures.len(),
                secs,
                done as f64 / secs.max(1e-9)
            );
        }
    }
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    let ran = passed + failures.len() as u64;
    println!(
        "seeds {}..{}: {ran} run, {passed} passed, {} failed in {secs:.1} s ({:.1} seeds/s)",
        args.start,
        args.start + ran,
        failures.len(),
        ran as f64 / secs.max(1e-9)
    );
    println!(
        "totals over passing seeds: {events} events, {committed} committed entries (max index per seed, summed), {acknowledged} acknowledged writes, {crashes} crashes, {conf_changes} membership changes, {joint_configs} joint configurations entered and {joint_left} left"
    );
    for f in &failures {
        println!(
            "FAILED seed {}: {}\n  replay: {}",
            f.seed, f.violation, f.replay
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {ran} seeds failed", failures.len()))
    }
}
