//! Interleaved comparison of a candidate against baselines in one run.
//!
//! The disk of this machine drifts by about 25% within minutes, so numbers
//! measured minutes apart cannot be divided. [`interleave`] runs every
//! contender for a short slice, round after round, rotating who goes first,
//! and every ratio is taken between slices of the same round. The reported
//! ratio is the median over rounds, with the spread beside it.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stats::{median, Percentiles};
use crate::{Error, Result};

/// What one run of a contender measured.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Operations completed (entries appended, writes applied, ...).
    pub ops: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of each individual call, in nanoseconds.
    pub latencies_ns: Vec<u64>,
}

impl Sample {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// A named workload runner: given a time slice, runs and reports.
pub struct Contender<'a> {
    /// Name in reports (`tandem`, `raw_fdatasync`, `raft_engine`, `sled`).
    pub name: String,
    /// Runs the workload for about the given duration.
    pub run: Box<dyn FnMut(Duration) -> Result<Sample> + 'a>,
}

impl std::fmt::Debug for Contender<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contender")
            .field("name", &self.name)
            .finish()
    }
}

impl<'a> Contender<'a> {
    /// A contender named `name` running `run`.
    pub fn new(name: impl Into<String>, run: impl FnMut(Duration) -> Result<Sample> + 'a) -> Self {
        Contender {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// One contender's results over all rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContenderResult {
    /// Contender name.
    pub name: String,
    /// Operations per second, one value per round.
    pub rates_per_round: Vec<f64>,
    /// Median latency of each round, microseconds.
    pub p50_us_per_round: Vec<f64>,
    /// Median of `rates_per_round`.
    pub rate_median: f64,
    /// Latency percentiles over all rounds pooled.
    pub latency: Option<Percentiles>,
}

/// The results of one scenario (one workload shape, all contenders).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// Scenario name, e.g. `append/256B/batch1/appenders1`.
    pub scenario: String,
    /// Rounds run.
    pub rounds: usize,
    /// Slice each contender ran per round, milliseconds.
    pub slice_ms: u64,
    /// Per-contender results, in the order given.
    pub contenders: Vec<ContenderResult>,
}

/// A ratio between two contenders, taken round by round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Median over rounds.
    pub median: f64,
    /// Smallest per-round ratio.
    pub min: f64,
    /// Largest per-round ratio.
    pub max: f64,
}

impl Ratio {
    fn from_pairs(pairs: impl Iterator<Item = (f64, f64)>) -> Option<Ratio> {
        let r: Vec<f64> = pairs
            .filter(|(_, b)| *b > 0.0)
            .map(|(a, b)| a / b)
            .collect();
        Some(Ratio {
            median: median(&r)?,
            min: r.iter().copied().fold(f64::INFINITY, f64::min),
            max: r.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

impl Comparison {
    /// The contender called `name`.
    pub fn get(&self, name: &str) -> Option<&ContenderResult> {
        self.contenders.iter().find(|c| c.name == name)
    }

    /// Throughput of `a` divided by throughput of `b`, round by round.
    pub fn rate_ratio(&self, a: &str, b: &str) -> Option<Ratio> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        Ratio::from_pairs(
            a.rates_per_round
                .iter()
                .copied()
                .zip(b.rates_per_round.iter().copied()),
        )
    }

    /// Median latency of `a` divided by that of `b`, round by round.
    pub fn p50_ratio(&self, a: &str, b: &str) -> Option<Ratio> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        Ratio::from_pairs(
            a.p50_us_per_round
                .iter()
                .copied()
                .zip(b.p50_us_per_round.iter().copied()),
        )
    }
}

/// The order of the contenders in round `round`: rotated by the round, and
/// reversed in odd rounds. Rotation alone would have every contender follow
/// the same one in every round (and so inherit the same predecessor's
/// leftover writeback each time); reversing odd rounds changes who comes
/// before whom.
#[must_use]
pub fn round_order(round: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).map(|k| (round + k) % n).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Runs every contender for `slice`, `rounds` times, interleaved in the
/// order of [`round_order`], so none always runs first (on a cold cache),
/// last (after the others filled the disk's write cache), or after the
/// same neighbour.
///
/// # Errors
/// `InvalidParameter` for zero rounds or no contenders; the first error a
/// contender returns.
pub fn interleave(
    scenario: &str,
    rounds: usize,
    slice: Duration,
    contenders: &mut [Contender<'_>],
) -> Result<Comparison> {
    interleave_settled(scenario, rounds, slice, contenders, &mut || {})
}

/// [`interleave`], calling `settle` before every slice, outside the timed
/// part: a disk benchmark passes a `sync` of the file system there, so
/// that no contender pays for the writeback another one left behind.
///
/// # Errors
/// As [`interleave`].
pub fn interleave_settled(
    scenario: &str,
    rounds: usize,
    slice: Duration,
    contenders: &mut [Contender<'_>],
    settle: &mut dyn FnMut(),
) -> Result<Comparison> {
    if rounds == 0 || contenders.is_empty() {
        return Err(Error::InvalidParameter(format!(
            "{scenario}: {rounds} rounds of {} contenders",
            contenders.len()
        )));
    }
    let n = contenders.len();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for i in round_order(round, n) {
            settle();
            let s = (contenders[i].run)(slice)?;
            samples[i].push(s);
        }
    }
    let results = contenders
        .iter()
        .zip(samples)
        .map(|(c, ss)| {
            let rates: Vec<f64> = ss.iter().map(Sample::rate).collect();
            let p50s = ss
                .iter()
                .map(|s| {
                    let mut l = s.latencies_ns.clone();
                    Percentiles::from_nanos(&mut l).map_or(0.0, |p| p.latency_us_p50)
                })
                .collect();
            let mut pooled: Vec<u64> = ss.into_iter().flat_map(|s| s.latencies_ns).collect();
            ContenderResult {
                name: c.name.clone(),
                rate_median: median(&rates).expect("rounds > 0"),
                rates_per_round: rates,
                p50_us_per_round: p50s,
                latency: Percentiles::from_nanos(&mut pooled),
            }
        })
        .collect();
    Ok(Comparison {
        scenario: scenario.to_string(),
        rounds,
        slice_ms: slice.as_millis() as u64,
        contenders: results,
    })
}

/// Which figure a [`Target`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Throughput ratio; the target is a lower bound.
    Throughput,
    /// Median-latency ratio; the target is an upper bound.
    LatencyP50,
}

/// A ratio the project promised, checked against a comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Scenario the target applies to.
    pub scenario: String,
    /// Candidate contender.
    pub candidate: String,
    /// Baseline contender.
    pub baseline: String,
    /// Which ratio.
    pub metric: Metric,
    /// The bound: at least this for throughput, at most this for latency.
    pub bound: f64,
}

/// The verdict on one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// The target checked.
    pub target: Target,
    /// The measured ratio, if both contenders ran.
    pub ratio: Option<Ratio>,
    /// Whether the median ratio meets the bound.
    pub met: bool,
}

impl Target {
    /// Checks the target against `c` (which must be its scenario).
    pub fn check(&self, c: &Comparison) -> Verdict {
        assert_eq!(
            self.scenario, c.scenario,
            "target checked on another scenario"
        );
        let ratio = match self.metric {
            Metric::Throughput => c.rate_ratio(&self.candidate, &self.baseline),
            Metric::LatencyP50 => c.p50_ratio(&self.candidate, &self.baseline),
        };
        let met = ratio.is_some_and(|r| match self.metric {
            Metric::Throughput => r.median >= self.bound,
            Metric::LatencyP50 => r.median <= self.bound,
        });
        Verdict {
            target: self.clone(),
            ratio,
            met,
        }
    }
}

/// Formats comparisons as a text table: per contender its median rate, and
/// the throughput of `reference` divided by the contender's (median and
/// per-round range): above 1, the reference is faster.
pub fn table(comparisons: &[Comparison], reference: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<40} {:<14} {:>12} {:>10} {:>10} {:>20}\n",
        "scenario", "contender", "ops/s", "p50 us", "p99 us", "ref/this [range]"
    ));
    for c in comparisons {
        for r in &c.contenders {
            let ratio = if r.name == reference {
                "1 (reference)".to_string()
            } else {
                c.rate_ratio(reference, &r.name).map_or("-".into(), |x| {
                    format!("{:.2} [{:.2}-{:.2}]", x.median, x.min, x.max)
                })
            };
            let (p50, p99) = r.latency.map_or((f64::NAN, f64::NAN), |p| {
                (p.latency_us_p50, p.latency_us_p99)
            });
            out.push_str(&format!(
                "{:<40} {:<14} {:>12.0} {:>10.1} {:>10.1} {:>20}\n",
                c.scenario, r.name, r.rate_median, p50, p99, ratio
            ));
        }
    }
    out
}

/// Writes comparisons and verdicts as JSON to `path` and as CSV (one line
/// per scenario, contender and round) to `path` with a `.csv` extension.
///
/// # Errors
/// `Io` or `Json` when a file cannot be written.
pub fn write_results(path: &Path, comparisons: &[Comparison], verdicts: &[Verdict]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json = serde_json::json!({
        "comparisons": comparisons,
        "verdicts": verdicts,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    let mut csv = std::fs::File::create(path.with_extension("csv"))?;
    writeln!(csv, "scenario,contender,round,ops_per_s,latency_us_p50")?;
    for c in comparisons {
        for r in &c.contenders {
            for (round, (rate, p50)) in r
                .rates_per_round
                .iter()
                .zip(&r.p50_us_per_round)
                .enumerate()
            {
                writeln!(csv, "{},{},{round},{rate:.1},{p50:.1}", c.scenario, r.name)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn fixed(ops: u64, ms: u64, lat_ns: u64) -> Sample {
        Sample {
            ops,
            elapsed: Duration::from_millis(ms),
            latencies_ns: vec![lat_ns; 3],
        }
    }

    #[test]
    fn rounds_rotate_the_starting_contender() {
        let order = RefCell::new(Vec::new());
        let mut cs = vec![
            Contender::new("a", |_| {
                order.borrow_mut().push('a');
                Ok(fixed(10, 10, 1))
            }),
            Contender::new("b", |_| {
                order.borrow_mut().push('b');
                Ok(fixed(10, 10, 1))
            }),
            Contender::new("c", |_| {
                order.borrow_mut().push('c');
                Ok(fixed(10, 10, 1))
            }),
        ];
        let mut settles = 0;
        interleave_settled("s", 3, Duration::ZERO, &mut cs, &mut || settles += 1).unwrap();
        let got: String = order.borrow().iter().collect();
        // Round 1 is rotated and reversed: `a` now follows `c`, `b` follows `a`.
        assert_eq!(got, "abcacbcab");
        assert_eq!(settles, 9, "before every slice");
    }

    #[test]
    fn ratios_are_taken_within_rounds() {
        // The disk halves its speed every round; the candidate is always 2x
        // the baseline on the disk of its own round.
        let calls = RefCell::new(0u64);
        let speed = || {
            let round = *calls.borrow() / 2;
            *calls.borrow_mut() += 1;
            1000u64 >> round
        };
        let mut cs = vec![
            Contender::new("cand", |_| Ok(fixed(2 * speed(), 1000, 100))),
            Contender::new("base", |_| Ok(fixed(speed(), 1000, 400))),
        ];
        let c = interleave("s", 3, Duration::ZERO, &mut cs).unwrap();
        assert_eq!(
            c.get("cand").unwrap().rates_per_round,
            [2000.0, 1000.0, 500.0]
        );
        assert_eq!(
            c.get("base").unwrap().rates_per_round,
            [1000.0, 500.0, 250.0]
        );
        let r = c.rate_ratio("cand", "base").unwrap();
        assert_eq!((r.median, r.min, r.max), (2.0, 2.0, 2.0));
        let p = c.p50_ratio("cand", "base").unwrap();
        assert_eq!((p.median, p.min, p.max), (0.25, 0.25, 0.25));
        assert!(c.rate_ratio("cand", "nobody").is_none());
    }

    #[test]
    fn targets_use_the_right_direction() {
        let mut cs = vec![
            Contender::new("cand", |_| Ok(fixed(900, 1000, 250))),
            Contender::new("base", |_| Ok(fixed(1000, 1000, 100))),
        ];
        let c = interleave("s", 1, Duration::ZERO, &mut cs).unwrap();
        let t = |metric, bound| Target {
            scenario: "s".into(),
            candidate: "cand".into(),
            baseline: "base".into(),
            metric,
            bound,
        };
        assert!(t(Metric::Throughput, 0.9).check(&c).met);
        assert!(!t(Metric::Throughput, 0.91).check(&c).met);
        assert!(t(Metric::LatencyP50, 2.5).check(&c).met);
        assert!(!t(Metric::LatencyP50, 2.4).check(&c).met);
    }

    #[test]
    fn results_round_trip_through_json_and_csv() {
        let mut cs = vec![
            Contender::new("x", |_| Ok(fixed(5, 1000, 1000))),
            Contender::new("y", |_| Ok(fixed(10, 1000, 2000))),
        ];
        let c = interleave("scen", 2, Duration::ZERO, &mut cs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.json");
        write_results(&path, &[c], &[]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let back: Vec<Comparison> = serde_json::from_value(v["comparisons"].clone()).unwrap();
        assert_eq!(back[0].get("y").unwrap().rate_median, 10.0);
        let csv = std::fs::read_to_string(path.with_extension("csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 2 * 2);
        assert!(csv.contains("scen,y,1,10.0,2.0"));
        let t = table(&back, "y");
        assert!(
            t.contains("1 (reference)") && t.contains("2.00 [2.00-2.00]"),
            "{t}"
        );
    }

    #[test]
    fn zero_rounds_is_refused() {
        let mut cs = vec![Contender::new("x", |_| Ok(Sample::default()))];
        assert!(interleave("s", 0, Duration::ZERO, &mut cs).is_err());
    }
}
