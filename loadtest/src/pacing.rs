//! The open-loop schedule: `rate` messages per second in total, spread evenly over `senders`.
//!
//! Slot `j` (0, 1, 2, …) is due at `j / rate` seconds after the start and belongs to sender
//! `j % senders`, so each sender sends every `senders / rate` seconds and the senders are staggered
//! by `1 / rate` seconds: the node sees a constant stream, not bursts of `senders` messages at
//! once. The schedule never adapts to how the node keeps up: a message due at `t` is measured from
//! `t`, however late it actually leaves (no coordinated omission).

const NS_PER_S: u128 = 1_000_000_000;

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

#[cfg(test)]
mod tests {
    use super::*;

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
