//! Reconnect delays: exponential, capped, within a total budget. Pure: elapsed time comes in as
//! an argument.

use std::time::Duration;

use crate::config::ReconnectPolicy;

/// The delays between reconnect attempts after one connection loss.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: ReconnectPolicy,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(policy: ReconnectPolicy) -> Backoff {
        Backoff {
            policy,
            next: policy.initial_delay,
        }
    }

    /// How long to wait before the next attempt, given the time `elapsed` since the connection was
    /// lost; `None` once the budget is spent. The last delay is shortened to end at the budget, so
    /// a final attempt still happens just before giving up.
    pub(crate) fn next_delay(&mut self, elapsed: Duration) -> Option<Duration> {
        let remaining = self.policy.give_up_after.checked_sub(elapsed)?;
        if remaining.is_zero() {
            return None;
        }
        let delay = self.next.min(remaining);
        self.next = self
            .next
            .saturating_mul(2)
            .min(self.policy.max_delay)
            .max(self.policy.initial_delay);
        Some(delay)
    }

    /// Makes the next delay at least `floor` (the node said when to come back, with
    /// `RateLimited { retry_after_ms }`), still capped by `max_delay`.
    pub(crate) fn at_least(&mut self, floor: Duration) {
        self.next = self.next.max(floor.min(self.policy.max_delay));
    }
}

#[cfg(test)]
mod tests;
