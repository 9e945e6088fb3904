//! Latency histograms: an HDR histogram of nanoseconds (3 significant digits, 1 ns to 1 hour), and
//! the percentile summary the report prints in microseconds.

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency tracked: one hour. Anything longer is recorded as one hour (a run is bounded
/// far below that, so it never happens in practice).
const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;

/// Significant digits kept: values are exact to 0.1 %.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in nanoseconds.
#[derive(Clone, Debug)]
pub(crate) struct LatencyHist {
    inner: Histogram<u64>,
}

/// Percentiles of a histogram in microseconds, as they appear in the report. All `None` when
/// nothing was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    /// How many values were recorded.
    pub(crate) count: u64,
    pub(crate) p50: Option<u64>,
    pub(crate) p90: Option<u64>,
    pub(crate) p99: Option<u64>,
    pub(crate) p999: Option<u64>,
    pub(crate) max: Option<u64>,
    pub(crate) mean: Option<u64>,
}

impl LatencyHist {
    /// An empty histogram.
    pub(crate) fn new() -> Result<LatencyHist> {
        let inner = Histogram::new_with_bounds(1, HIGHEST_NS, SIGNIFICANT_DIGITS)
            .context("create a latency histogram")?;
        Ok(LatencyHist { inner })
    }

    /// Records one latency. Zero is recorded as 1 ns, anything above an hour as an hour.
    pub(crate) fn record_ns(&mut self, ns: u64) {
        self.inner.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Adds every value of `other`.
    pub(crate) fn merge(&mut self, other: &LatencyHist) -> Result<()> {
        self.inner
            .add(&other.inner)
            .context("merge latency histograms")
    }

    /// Number of values recorded.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.inner.len()
    }

    /// p50, p90, p99, p99.9, max and mean in microseconds (rounded to the nearest).
    pub(crate) fn percentiles(&self) -> Percentiles {
        if self.inner.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| Some((ns + 500) / 1_000);
        Percentiles {
            count: self.inner.len(),
            p50: us(self.inner.value_at_quantile(0.5)),
            p90: us(self.inner.value_at_quantile(0.9)),
            p99: us(self.inner.value_at_quantile(0.99)),
            p999: us(self.inner.value_at_quantile(0.999)),
            max: us(self.inner.max()),
            // The mean of values of at most an hour fits a u64; whole nanoseconds are enough.
            mean: us(self.inner.mean().round() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the histogram's 0.1 % precision (plus the rounding to whole microseconds).
    fn close(actual: Option<u64>, expected: u64) -> bool {
        let actual = actual.unwrap() as f64;
        let expected = expected as f64;
        (actual - expected).abs() <= expected * 0.001 + 1.0
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let hist = LatencyHist::new().unwrap();
        assert_eq!(hist.percentiles(), Percentiles::default());
        assert_eq!(hist.percentiles().p50, None);
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut hist = LatencyHist::new().unwrap();
        // 1 µs, 2 µs, …, 10,000 µs.
        for us in 1..=10_000u64 {
            hist.record_ns(us * 1_000);
        }
        let p = hist.percentiles();
        assert_eq!(p.count, 10_000);
        assert!(close(p.p50, 5_000), "{p:?}");
        assert!(close(p.p90, 9_000), "{p:?}");
        assert!(close(p.p99, 9_900), "{p:?}");
        assert!(close(p.p999, 9_990), "{p:?}");
        assert!(close(p.max, 10_000), "{p:?}");
        assert!(close(p.mean, 5_000), "{p:?}");
    }

    #[test]
    fn one_outlier_shows_in_max_and_p999_only() {
        let mut hist = LatencyHist::new().unwrap();
        for _ in 0..999 {
            hist.record_ns(1_000_000); // 1 ms
        }
        hist.record_ns(2_000_000_000); // one 2 s stall
        let p = hist.percentiles();
        assert!(close(p.p50, 1_000));
        assert!(close(p.p99, 1_000));
        assert!(close(p.p999, 1_000));
        assert!(close(p.max, 2_000_000));
        hist.record_ns(2_000_000_000);
        assert!(close(hist.percentiles().p999, 2_000_000));
    }

    #[test]
    fn merge_adds_counts_and_extremes() {
        let mut a = LatencyHist::new().unwrap();
        let mut b = LatencyHist::new().unwrap();
        a.record_ns(1_000);
        b.record_ns(5_000_000);
        b.record_ns(0); // clamped to 1 ns, still counted
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 3);
        assert!(close(a.percentiles().max, 5_000));
    }

    #[test]
    fn values_beyond_an_hour_are_clamped() {
        let mut hist = LatencyHist::new().unwrap();
        hist.record_ns(u64::MAX);
        assert_eq!(hist.count(), 1);
        assert!(close(hist.percentiles().max, 3_600_000_000));
    }
}
