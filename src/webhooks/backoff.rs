//! When a failed delivery is tried again: exponential backoff with full jitter. After the
//! n-th failed attempt the next one waits a uniformly random time in
//! `[0, min(max_backoff_ms, initial_backoff_ms * 2^(n-1))]`. The randomness spreads the
//! retries of many deliveries that failed together (an endpoint that was down) instead of
//! sending them all back at the same instant.

use std::fmt::Debug;

use rand::Rng;

/// Where the random part of a delay comes from: a seam so that tests pick the extremes.
pub trait Jitter: Send + Sync + Debug {
    /// A value in `0..=ceiling`.
    fn pick(&self, ceiling: u64) -> u64;
}

/// Uniform randomness from the thread-local generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn pick(&self, ceiling: u64) -> u64 {
        rand::rng().random_range(0..=ceiling)
    }
}

/// The retry schedule of `[webhooks]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling after the first failure (ms).
    pub initial_ms: u64,
    /// The ceiling never exceeds this (ms).
    pub max_ms: u64,
    /// Attempts in all; after this many failures the delivery fails for good.
    pub max_attempts: u32,
}

impl Backoff {
    /// The longest wait after `failures` failed attempts (1-based):
    /// `min(max_ms, initial_ms * 2^(failures-1))`, without overflow.
    pub fn ceiling_ms(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        self.initial_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// How long to wait after `failures` failed attempts, or `None` when no attempt is left.
    pub fn delay_ms(&self, failures: u32, jitter: &dyn Jitter) -> Option<u64> {
        if failures >= self.max_attempts {
            return None;
        }
        let ceiling = self.ceiling_ms(failures);
        Some(jitter.pick(ceiling).min(ceiling))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Always the ceiling, or always zero: the two ends of the range.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Extreme(pub bool);

    impl Jitter for Extreme {
        fn pick(&self, ceiling: u64) -> u64 {
            if self.0 {
                ceiling
            } else {
                0
            }
        }
    }

    const SCHEDULE: Backoff = Backoff {
        initial_ms: 5_000,
        max_ms: 21_600_000,
        max_attempts: 15,
    };

    #[test]
    fn the_ceiling_doubles_from_the_initial_delay_up_to_the_maximum() {
        let ceilings: Vec<u64> = (1..=14).map(|n| SCHEDULE.ceiling_ms(n)).collect();
        assert_eq!(
            ceilings,
            vec![
                5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 1_280_000,
                2_560_000, 5_120_000, 10_240_000, 20_480_000, 21_600_000
            ]
        );
        assert_eq!(SCHEDULE.ceiling_ms(200), 21_600_000, "no overflow");
        assert_eq!(SCHEDULE.ceiling_ms(u32::MAX), 21_600_000, "no overflow");
    }

    #[test]
    fn a_delay_lies_between_zero_and_the_ceiling() {
        for failures in 1..15 {
            let ceiling = SCHEDULE.ceiling_ms(failures);
            assert_eq!(SCHEDULE.delay_ms(failures, &Extreme(true)), Some(ceiling));
            assert_eq!(SCHEDULE.delay_ms(failures, &Extreme(false)), Some(0));
            for _ in 0..50 {
                let delay = SCHEDULE.delay_ms(failures, &RandomJitter).expect("a retry");
                assert!(delay <= ceiling, "{delay} > {ceiling} after {failures}");
            }
        }
    }

    #[test]
    fn no_retry_is_left_after_max_attempts() {
        assert_eq!(SCHEDULE.delay_ms(15, &Extreme(true)), None);
        assert_eq!(SCHEDULE.delay_ms(16, &Extreme(true)), None);
        let once = Backoff {
            max_attempts: 1,
            ..SCHEDULE
        };
        assert_eq!(once.delay_ms(1, &Extreme(true)), None);
    }

    #[test]
    fn a_jitter_beyond_the_ceiling_is_clamped() {
        #[derive(Debug)]
        struct Wild;
        impl Jitter for Wild {
            fn pick(&self, _: u64) -> u64 {
                u64::MAX
            }
        }
        assert_eq!(SCHEDULE.delay_ms(1, &Wild), Some(5_000));
    }
}
