//! The open-loop schedule: `rate` messages per second in total, spread evenly over `senders`.
//!
//! Slot `j` (0, 1, 2, …) is due at `j / rate` seconds after the start and belongs to sender
//! `j % senders`, so each sender sends every `senders / rate` seconds and the senders are staggered
//! by `1 / rate` seconds: the node sees a constant stream, not bursts of `senders` messages at
//! once. The schedule never adapts to how the node keeps up: a message due at `t` is measured from
//! `t`, however late it actually leaves (no coordinated omission).
//!
//! With `--arrivals poisson` the instants are random instead: each sender draws exponential gaps
//! of mean `senders / rate` seconds from its own PRNG (seeded from `--seed` and its place among the
//! senders), so the senders together form one Poisson stream of `rate` messages per second (a sum
//! of independent Poisson streams is one). The run is reproducible for a seed, and the latency is
//! still measured from each message's drawn instant.

const NS_PER_S: u128 = 1_000_000_000;

/// The seed of `--arrivals poisson` when `--seed` is not given.
pub(crate) const DEFAULT_SEED: u64 = 0x5eed_2026;

/// How the open-loop instants are spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrivals {
    /// Evenly: slot `j` at `j / rate` (the default).
    Constant,
    /// Exponential gaps from a PRNG seeded with `seed`.
    Poisson { seed: u64 },
}

/// Upper bound on one sender's Poisson schedule, as a multiple of its expected count (plus a
/// constant), so a schedule is bounded in length whatever the draws: exceeding it has a
/// vanishingly small probability for any run worth doing.
const POISSON_COUNT_FACTOR: u64 = 4;
const POISSON_COUNT_SLACK: u64 = 1_000;

/// SplitMix64: a small, fast, well-mixed PRNG (Steele, Lea, Flood 2014), enough for arrival
/// times and reproducible on every platform.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1]` (53 random bits), so its logarithm is finite.
    fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// One sender's due instants (ns after the start), in order, all strictly before `total_ns`.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    sender: u64,
    senders: u64,
    rate: u64,
    total_ns: u64,
    /// Instants yielded so far.
    k: u64,
    /// Poisson only: the PRNG, the mean gap and the last instant (as `f64` ns, so gaps below a
    /// nanosecond still add up), and the bound on the count.
    poisson: Option<(SplitMix64, f64, f64, u64)>,
}

impl Schedule {
    /// Sender `sender`'s (of `senders`) schedule at `rate` messages per second in total, for the
    /// first `total_ns` nanoseconds. `rate` and `senders` are at least 1 (the command line
    /// enforces it).
    pub(crate) fn new(
        arrivals: Arrivals,
        sender: u64,
        senders: u64,
        rate: u64,
        total_ns: u64,
    ) -> Schedule {
        let (senders, rate) = (senders.max(1), rate.max(1));
        let poisson = match arrivals {
            Arrivals::Constant => None,
            Arrivals::Poisson { seed } => {
                // A distinct, well-mixed stream per sender.
                let mut mix = SplitMix64(seed ^ sender.wrapping_mul(0xd6e8_feb8_6659_fd93));
                let rng = SplitMix64(mix.next_u64());
                let mean_gap_ns = senders as f64 * 1e9 / rate as f64;
                let expected = (total_ns as f64 / mean_gap_ns).ceil() as u64;
                let cap = expected
                    .saturating_mul(POISSON_COUNT_FACTOR)
                    .saturating_add(POISSON_COUNT_SLACK);
                Some((rng, mean_gap_ns, 0.0, cap))
            }
        };
        Schedule {
            sender,
            senders,
            rate,
            total_ns,
            k: 0,
            poisson,
        }
    }
}

impl Iterator for Schedule {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let at = match &mut self.poisson {
            None => intended_ns(self.sender, self.k, self.senders, self.rate),
            Some((rng, mean_gap_ns, last_ns, cap)) => {
                if self.k >= *cap {
                    return None;
                }
                *last_ns += -rng.next_unit().ln() * *mean_gap_ns;
                if *last_ns >= self.total_ns as f64 {
                    return None;
                }
                *last_ns as u64
            }
        };
        if at >= self.total_ns {
            return None;
        }
        self.k += 1;
        Some(at)
    }
}

/// The global slot number of sender `sender`'s `k`-th message.
fn slot(sender: u64, k: u64, senders: u64) -> u128 {
    u128::from(k) * u128::from(senders) + u128::from(sender)
}

/// When sender `sender`'s `k`-th message (from 0) is due, in nanoseconds after the start.
///
/// `rate` and `senders` are at least 1 (the command line enforces it).
pub(crate) fn intended_ns(sender: u64, k: u64, senders: u64, rate: u64) -> u64 {
    let ns = slot(sender, k, senders) * NS_PER_S / u128::from(rate.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// How many messages sender `sender` sends in the first `total_ns` nanoseconds: the number of its
/// slots due strictly before `total_ns`.
pub(crate) fn messages_for(sender: u64, senders: u64, rate: u64, total_ns: u64) -> u64 {
    let senders = u128::from(senders.max(1));
    // Slot j is due before total_ns iff floor(j * 1e9 / rate) < total_ns iff j * 1e9 < total_ns *
    // rate, so the slots 0..slots are due, with slots = ceil(total_ns * rate / 1e9).
    let slots = (u128::from(total_ns) * u128::from(rate)).div_ceil(NS_PER_S);
    let sender = u128::from(sender);
    if sender >= slots {
        return 0;
    }
    let count = (slots - sender).div_ceil(senders);
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// How many messages [`Schedule::new`] with these arguments yields.
pub(crate) fn count(
    arrivals: Arrivals,
    sender: u64,
    senders: u64,
    rate: u64,
    total_ns: u64,
) -> u64 {
    match arrivals {
        Arrivals::Constant => messages_for(sender, senders, rate, total_ns),
        Arrivals::Poisson { .. } => {
            Schedule::new(arrivals, sender, senders, rate, total_ns).count() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn the_constant_schedule_is_the_slot_schedule() {
        let (senders, rate, total_ns) = (7, 3_000, 2 * SEC);
        for sender in 0..senders {
            let times: Vec<u64> =
                Schedule::new(Arrivals::Constant, sender, senders, rate, total_ns).collect();
            let count = messages_for(sender, senders, rate, total_ns);
            assert_eq!(times.len() as u64, count);
            assert_eq!(
                count,
                super::count(Arrivals::Constant, sender, senders, rate, total_ns)
            );
            for (k, &at) in times.iter().enumerate() {
                assert_eq!(at, intended_ns(sender, k as u64, senders, rate));
            }
        }
    }

    #[test]
    fn poisson_keeps_the_mean_rate_over_many_arrivals() {
        // 20 senders, 1000/s in total, 100 s: 100,000 arrivals expected; the count of a Poisson
        // stream has a standard deviation of sqrt(100,000) ≈ 316, so 1 % (1000) is > 3 sigma.
        let (senders, rate, total_ns) = (20, 1_000, 100 * SEC);
        let arrivals = Arrivals::Poisson { seed: 42 };
        let mut gaps = Vec::new();
        let mut count = 0u64;
        for sender in 0..senders {
            let times: Vec<u64> =
                Schedule::new(arrivals, sender, senders, rate, total_ns).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in order");
            assert!(times.iter().all(|&t| t < total_ns));
            gaps.extend(times.windows(2).map(|w| (w[1] - w[0]) as f64));
            count += times.len() as u64;
        }
        assert!((99_000..=101_000).contains(&count), "count {count}");
        // Exponential gaps: mean = standard deviation = senders / rate = 20 ms.
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((mean / 20e6 - 1.0).abs() < 0.02, "mean gap {mean}");
        assert!((var.sqrt() / 20e6 - 1.0).abs() < 0.03, "sd {}", var.sqrt());
    }

    #[test]
    fn poisson_is_deterministic_for_a_seed_and_differs_across_seeds_and_senders() {
        let draw = |seed, sender| -> Vec<u64> {
            Schedule::new(Arrivals::Poisson { seed }, sender, 4, 100, 10 * SEC).collect()
        };
        assert_eq!(draw(7, 0), draw(7, 0));
        let arrivals = Arrivals::Poisson { seed: 7 };
        assert_eq!(
            count(arrivals, 0, 4, 100, 10 * SEC),
            draw(7, 0).len() as u64
        );
        assert_ne!(draw(7, 0), draw(8, 0));
        assert_ne!(draw(7, 0), draw(7, 1));
    }

    #[test]
    fn poisson_schedules_are_bounded_in_count_and_time() {
        // A tiny window and a huge rate (10,000 expected): ends, within the window, near the
        // mean and under the cap.
        let times: Vec<u64> =
            Schedule::new(Arrivals::Poisson { seed: 1 }, 0, 1, 10_000_000, 1_000_000).collect();
        assert!((9_500..=10_500).contains(&times.len()), "{}", times.len());
        assert!(times.len() as u64 <= 10_000 * POISSON_COUNT_FACTOR + POISSON_COUNT_SLACK);
        assert!(times.iter().all(|&t| t < 1_000_000));
        assert!(
            Schedule::new(Arrivals::Poisson { seed: 1 }, 0, 1, 5, 0)
                .next()
                .is_none()
        );
        // A rate far below one message per window: mostly nothing, never past the window.
        let few: usize = (0..100)
            .map(|seed| Schedule::new(Arrivals::Poisson { seed }, 0, 1, 1, SEC / 10).count())
            .sum();
        assert!(few < 40, "{few} arrivals where 10 were expected");
    }

    #[test]
    fn senders_are_staggered_and_evenly_spaced() {
        // 1000 messages/s over 20 senders: each every 20 ms, neighbours 1 ms apart.
        assert_eq!(intended_ns(0, 0, 20, 1000), 0);
        assert_eq!(intended_ns(1, 0, 20, 1000), 1_000_000);
        assert_eq!(intended_ns(19, 0, 20, 1000), 19_000_000);
        assert_eq!(intended_ns(0, 1, 20, 1000), 20_000_000);
        assert_eq!(intended_ns(5, 7, 20, 1000), 145_000_000);
    }

    #[test]
    fn every_slot_is_used_once_in_time_order() {
        let (senders, rate) = (7, 3_000);
        let mut times = Vec::new();
        for sender in 0..senders {
            for k in 0..100 {
                times.push(intended_ns(sender, k, senders, rate));
            }
        }
        times.sort_unstable();
        times.dedup();
        assert_eq!(
            times.len(),
            700,
            "two messages were scheduled at the same instant"
        );
        // Consecutive slots are 1/rate apart (333,333 or 333,334 ns with integer rounding).
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!((333_333..=333_334).contains(&gap), "gap {gap}");
        }
    }

    #[test]
    fn message_counts_add_up_to_rate_times_duration() {
        for (senders, rate, secs) in [(20, 1_000, 10), (50, 5_000, 11), (3, 10, 1), (50, 7, 2)] {
            let total_ns = secs * 1_000_000_000;
            let sum: u64 = (0..senders)
                .map(|s| messages_for(s, senders, rate, total_ns))
                .sum();
            assert_eq!(
                sum,
                rate * secs,
                "senders {senders} rate {rate} secs {secs}"
            );
        }
    }

    #[test]
    fn counted_messages_are_exactly_those_due_before_the_end() {
        let (senders, rate, total_ns) = (4, 7, 1_500_000_000);
        for sender in 0..senders {
            let count = messages_for(sender, senders, rate, total_ns);
            if count > 0 {
                assert!(intended_ns(sender, count - 1, senders, rate) < total_ns);
            }
            assert!(intended_ns(sender, count, senders, rate) >= total_ns);
        }
    }

    #[test]
    fn a_rate_below_the_sender_count_leaves_some_senders_idle() {
        // 2 messages/s for 1 s over 5 senders: slots 0 and 1 only.
        let counts: Vec<u64> = (0..5)
            .map(|s| messages_for(s, 5, 2, 1_000_000_000))
            .collect();
        assert_eq!(counts, vec![1, 1, 0, 0, 0]);
    }
}
