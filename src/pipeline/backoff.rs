//! Delays between attempts: exponential with full jitter, so that many
//! mailboxes that failed together do not reconnect together.

use std::time::Duration;

use rand::Rng;

/// Growing delays from `base` up to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts with delays up to `base`, doubling per attempt up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Returns the next delay: a uniform draw from zero to the current
    /// ceiling, never less than a tenth of `base`, so a failing peer is
    /// never hammered.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let floor = self.base / 10;
        let drawn = rand::rng().random_range(Duration::ZERO..=ceiling);

        drawn.max(floor)
    }

    /// Returns the current ceiling without drawing.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Number of delays drawn since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(backoff.ceiling().as_secs());
            let delay = backoff.next_delay();
            assert!(delay >= Duration::from_millis(100));
            assert!(delay <= Duration::from_secs(60));
        }

        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
        assert_eq!(backoff.attempts(), 0);
    }
}
