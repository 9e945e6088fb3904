//! Reconnect delay schedule.

use std::time::Duration;

use super::Backoff;
use crate::config::ReconnectPolicy;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs the schedule assuming each attempt fails instantly (elapsed = sum of delays) and returns
/// the delays in milliseconds.
fn check(policy: ReconnectPolicy, expected_ms: &[u64]) {
    let mut backoff = Backoff::new(policy);
    let mut elapsed = Duration::ZERO;
    let mut got = Vec::new();
    // Bounded: the budget ends the schedule long before this.
    for _ in 0..1000 {
        let Some(delay) = backoff.next_delay(elapsed) else {
            break;
        };
        got.push(delay.as_millis() as u64);
        elapsed += delay;
    }
    assert_eq!(got, expected_ms);
}

#[test]
fn doubles_up_to_the_cap_then_stops_at_the_budget() {
    check(
        ReconnectPolicy {
            initial_delay: ms(100),
            max_delay: ms(1000),
            give_up_after: ms(3000),
        },
        // 100+200+400+800 = 1500, then 1000, then the last 500 to reach exactly 3000.
        &[100, 200, 400, 800, 1000, 500],
    );
}

#[test]
fn default_policy_gives_up_after_a_minute() {
    let mut backoff = Backoff::new(ReconnectPolicy::default());
    let mut elapsed = Duration::ZERO;
    let mut attempts = 0;
    while let Some(delay) = backoff.next_delay(elapsed) {
        assert!(delay <= Duration::from_secs(5));
        elapsed += delay;
        attempts += 1;
        assert!(attempts < 100, "schedule must end");
    }
    assert_eq!(elapsed, Duration::from_secs(60));
}

#[test]
fn zero_budget_means_no_attempt() {
    check(
        ReconnectPolicy {
            initial_delay: ms(100),
            max_delay: ms(1000),
            give_up_after: Duration::ZERO,
        },
        &[],
    );
}

#[test]
fn slow_attempts_count_against_the_budget() {
    // Each connect attempt itself can take up to the request timeout; that time is spent too.
    let mut backoff = Backoff::new(ReconnectPolicy {
        initial_delay: ms(100),
        max_delay: ms(5000),
        give_up_after: ms(1000),
    });
    assert_eq!(backoff.next_delay(Duration::ZERO), Some(ms(100)));
    assert_eq!(backoff.next_delay(ms(950)), Some(ms(50)));
    assert_eq!(backoff.next_delay(ms(1000)), None);
    assert_eq!(backoff.next_delay(ms(5000)), None);
}

#[test]
fn retry_after_raises_the_next_delay_within_the_cap() {
    let mut backoff = Backoff::new(ReconnectPolicy {
        initial_delay: ms(100),
        max_delay: ms(2000),
        give_up_after: ms(60_000),
    });
    backoff.at_least(ms(700));
    assert_eq!(backoff.next_delay(Duration::ZERO), Some(ms(700)));
    backoff.at_least(ms(10_000));
    assert_eq!(backoff.next_delay(Duration::ZERO), Some(ms(2000)));
}
