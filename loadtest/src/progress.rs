//! The live progress line on stderr: elapsed / total seconds, deliveries per second over the
//! last second, p99 latency so far, and missing / duplicate / out-of-order deliveries so far,
//! rewritten in place (`\r`) about once a second.
//!
//! It is shown only when stderr is a terminal, the `CI` environment variable is not set, and
//! `--quiet` is not given ([`wanted`]). It reads the [`Live`] counters the sender and receiver
//! tasks bump with relaxed atomic adds (no lock, nothing shared but the counters); the latency
//! goes into a coarse atomic histogram ([`LiveHist`], ~6 % resolution) next to the exact
//! per-receiver histograms the report is made from. The final summary does not depend on it.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// Values below this many microseconds have a bucket each.
const LINEAR: u64 = 32;
/// Sub-buckets per power of two above [`LINEAR`] (16: each bucket within ~6 % of its value).
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every `u64` of microseconds: 32 linear, then 16 per power of two from 2^5 to 2^63.
const BUCKETS: usize = (LINEAR + (64 - 5) * SUB) as usize;

/// A latency histogram in microseconds that many tasks record into at once (one relaxed atomic
/// add per value) and the progress line reads.
#[derive(Debug)]
pub(crate) struct LiveHist {
    counts: Box<[AtomicU64]>,
}

impl Default for LiveHist {
    fn default() -> Self {
        LiveHist {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The bucket of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = u64::from(63 - us.leading_zeros());
    let sub = (us >> (exp - u64::from(SUB_BITS))) & (SUB - 1);
    (LINEAR + (exp - 5) * SUB + sub) as usize
}

/// The largest value of bucket `index`, in microseconds.
fn bucket_max(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let exp = (index - LINEAR) / SUB + 5;
    let sub = (index - LINEAR) % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    ((SUB + sub) * width).saturating_add(width - 1)
}

impl LiveHist {
    pub(crate) fn record_ns(&self, ns: u64) {
        if let Some(count) = self.counts.get(bucket(ns / 1_000)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `q` quantile (0 to 1) so far in microseconds (the top of its bucket); `None` before
    /// the first value.
    pub(crate) fn quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_max(index));
            }
        }
        None
    }
}

/// Counters shared by all tasks of a run, for the progress line and the drain.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) attempts: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Deliveries owed for the acked messages: each ack adds the number of its listeners.
    pub(crate) expected: AtomicU64,
    /// First deliveries.
    pub(crate) delivered: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) out_of_order: AtomicU64,
    /// When the latest first delivery arrived, in ns after `t0`.
    pub(crate) last_delivery_ns: AtomicU64,
    /// Latency of measured first deliveries (intended send → received).
    pub(crate) latency: LiveHist,
}

/// Whether to show the progress line: not with `--quiet`, only on a terminal, never in CI.
pub(crate) fn enabled(quiet: bool, stderr_is_terminal: bool, ci: bool) -> bool {
    !quiet && stderr_is_terminal && !ci
}

/// [`enabled`] for this process: stderr and the `CI` environment variable.
pub(crate) fn wanted(quiet: bool) -> bool {
    enabled(
        quiet,
        std::io::stderr().is_terminal(),
        std::env::var_os("CI").is_some(),
    )
}

/// What one line shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) elapsed_s: u64,
    pub(crate) total_s: u64,
    pub(crate) deliveries_per_s: f64,
    pub(crate) p99_us: Option<u64>,
    /// Acked deliveries not (yet) arrived: what is in flight, and what will be `lost` if it
    /// never comes.
    pub(crate) missing: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
}

/// The line for `snapshot`, starting with `\r` and padded so it overwrites a longer one.
pub(crate) fn line(snapshot: &Snapshot) -> String {
    let p99 = match snapshot.p99_us {
        Some(us) => format!("{:.1} ms", us as f64 / 1000.0),
        None => "-".to_owned(),
    };
    let text = format!(
        "[{:>4}/{} s] {:>9.0} deliveries/s  p99 {p99}  missing {}  dup {}  ooo {}",
        snapshot.elapsed_s,
        snapshot.total_s,
        snapshot.deliveries_per_s,
        snapshot.missing,
        snapshot.duplicates,
        snapshot.out_of_order,
    );
    format!("\r{text:<90}")
}

/// Writes a line about once a second until told to stop or `limit` after `t0`, then ends it with
/// a newline. `total` is the load's length (warmup + window) shown after the elapsed seconds.
pub(crate) async fn run(
    live: Arc<Live>,
    t0: Instant,
    total: Duration,
    limit: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let end = t0 + limit;
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (t0, 0u64);
    let mut shown = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            () = sleep_until(end) => break,
            _ = tick.tick() => {
                let now = Instant::now();
                let delivered = live.delivered.load(Ordering::Relaxed);
                let seconds = now.saturating_duration_since(last.0).as_secs_f64();
                let snapshot = Snapshot {
                    elapsed_s: now.saturating_duration_since(t0).as_secs(),
                    total_s: total.as_secs(),
                    deliveries_per_s: if seconds > 0.0 {
                        delivered.saturating_sub(last.1) as f64 / seconds
                    } else {
                        0.0
                    },
                    p99_us: live.latency.quantile_us(0.99),
                    missing: live
                        .expected
                        .load(Ordering::Relaxed)
                        .saturating_sub(delivered),
                    duplicates: live.duplicates.load(Ordering::Relaxed),
                    out_of_order: live.out_of_order.load(Ordering::Relaxed),
                };
                last = (now, delivered);
                let mut stderr = std::io::stderr().lock();
                let _ = stderr.write_all(line(&snapshot).as_bytes());
                let _ = stderr.flush();
                shown = true;
            }
        }
    }
    if shown {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_within_seven_percent() {
        let mut previous = 0;
        for us in (0..5_000u64).chain([1 << 20, 123_456_789, u64::MAX / 3, u64::MAX]) {
            let index = bucket(us);
            assert!(index < BUCKETS, "{us}");
            assert!(index >= previous, "{us} went to an earlier bucket");
            previous = index;
            let top = bucket_max(index);
            assert!(top >= us, "{us} above its bucket's top {top}");
            assert!((top - us) as f64 <= us as f64 * 0.07 + 1.0, "{us} vs {top}");
        }
        assert_eq!(bucket_max(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let hist = LiveHist::default();
        assert_eq!(hist.quantile_us(0.99), None);
        for us in 1..=1000u64 {
            hist.record_ns(us * 1_000 + 500);
        }
        let p99 = hist.quantile_us(0.99).unwrap();
        assert!((990..=1060).contains(&p99), "p99 {p99}");
        let p50 = hist.quantile_us(0.5).unwrap();
        assert!((500..=535).contains(&p50), "p50 {p50}");
        assert_eq!(hist.quantile_us(0.0), Some(1));
    }

    #[test]
    fn the_line_shows_progress_rate_p99_and_faults() {
        let text = line(&Snapshot {
            elapsed_s: 3,
            total_s: 11,
            deliveries_per_s: 998.6,
            p99_us: Some(3_700),
            missing: 12,
            duplicates: 0,
            out_of_order: 1,
        });
        assert!(text.starts_with("\r[   3/11 s]"), "{text:?}");
        assert!(text.contains("999 deliveries/s"), "{text:?}");
        assert!(text.contains("p99 3.7 ms"), "{text:?}");
        assert!(text.contains("missing 12  dup 0  ooo 1"), "{text:?}");
        assert!(!text.contains('\n'));
        let early = line(&Snapshot {
            elapsed_s: 0,
            total_s: 1,
            deliveries_per_s: 0.0,
            p99_us: None,
            missing: 0,
            duplicates: 0,
            out_of_order: 0,
        });
        assert!(early.contains("p99 -"), "{early:?}");
    }

    #[test]
    fn shown_only_on_a_terminal_outside_ci_without_quiet() {
        assert!(enabled(false, true, false));
        assert!(!enabled(true, true, false));
        assert!(!enabled(false, false, false));
        assert!(!enabled(false, true, true));
    }
}
