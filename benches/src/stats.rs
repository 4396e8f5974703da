//! Latency percentiles.

use serde::{Deserialize, Serialize};

/// Latency summary of a set of samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples summarised.
    pub count: u64,
    /// Median.
    pub latency_us_p50: f64,
    /// 99th percentile.
    pub latency_us_p99: f64,
    /// 99.9th percentile.
    pub latency_us_p999: f64,
    /// Largest sample.
    pub latency_us_max: f64,
    /// Arithmetic mean.
    pub latency_us_mean: f64,
}

/// The nearest-rank `q`-quantile (`0 < q <= 1`) of ascending `sorted`.
///
/// # Panics
/// If `sorted` is empty or `q` is outside `(0, 1]`.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    assert!(!sorted.is_empty(), "quantile of no samples");
    assert!(q > 0.0 && q <= 1.0, "quantile {q} outside (0, 1]");
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "not sorted");
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Percentiles {
    /// Summarises latencies given in nanoseconds (sorts them in place).
    /// Returns `None` for no samples.
    pub fn from_nanos(samples: &mut [u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Percentiles {
            count: samples.len() as u64,
            latency_us_p50: us(quantile(samples, 0.5)),
            latency_us_p99: us(quantile(samples, 0.99)),
            latency_us_p999: us(quantile(samples, 0.999)),
            latency_us_max: us(*samples.last().expect("non-empty")),
            latency_us_mean: (sum as f64 / samples.len() as f64) / 1000.0,
        })
    }
}

/// Median of `values` (mean of the middle two for an even count).
/// Returns `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&[7], 0.001), 7);
    }

    #[test]
    fn percentiles_from_unsorted_nanos() {
        let mut v = vec![3000, 1000, 2000, 4000];
        let p = Percentiles::from_nanos(&mut v).unwrap();
        assert_eq!(p.count, 4);
        assert_eq!(p.latency_us_p50, 2.0);
        assert_eq!(p.latency_us_max, 4.0);
        assert_eq!(p.latency_us_mean, 2.5);
        assert!(Percentiles::from_nanos(&mut []).is_none());
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
