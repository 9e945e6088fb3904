//! A token bucket, pure: the caller passes the time in.

use std::time::{Duration, Instant};

/// Allows `rate_per_s` operations per second on average and bursts of up to `burst`.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A full bucket at `now`.
    pub(crate) fn new(rate_per_s: u32, burst: u32, now: Instant) -> RateLimiter {
        RateLimiter {
            rate_per_s: f64::from(rate_per_s.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            updated: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate_per_s,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 3, t0);
        for _ in 0..3 {
            assert!(limiter.try_acquire(t0).is_ok());
        }
        let wait = limiter.try_acquire(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(limiter.try_acquire(t0 + Duration::from_millis(100)).is_ok());
        assert!(
            limiter
                .try_acquire(t0 + Duration::from_millis(100))
                .is_err()
        );
        // Idle time refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.try_acquire(later).is_ok());
        }
        assert!(limiter.try_acquire(later).is_err());
    }
}
